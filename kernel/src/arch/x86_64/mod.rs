//! x86-64: entry, descriptor tables, interrupts, APICs, time, ports.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod interrupts;
pub mod multiboot1;
pub mod rt;
pub mod smp;
pub mod start;
pub mod time;
