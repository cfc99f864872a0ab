//! Sans-IO pieces of the kernel's SMP and local-APIC code (`kernel/src/arch/x86_64/apic.rs`
//! and `smp.rs`), kept here so they are tested on the host:
//!
//! - [`apic`]: register offsets, how a register is reached in xAPIC mode (MMIO at the
//!   offset) and in x2APIC mode (MSR `0x800 + offset / 16`), the interrupt command
//!   register in both encodings, and the choice between the two modes from CPUID and
//!   `IA32_APIC_BASE` (Intel SDM vol. 3, 11.12 "Extended XAPIC (x2APIC)").
//! - [`answer`]: the policy of a wait for other CPUs to answer an IPI (a TLB shootdown,
//!   a liveness probe): resend to the CPUs that have not answered after a short wait,
//!   and give up on them after a bounded total, except the CPUs the caller must keep
//!   waiting for. Time is passed in; the kernel reads its clock and does the I/O.
//!
//! It leaves to the kernel every register access, the clock, and what "giving up on a
//! CPU" means (taking it out of service).
#![cfg_attr(not(test), no_std)]

pub mod answer;
pub mod apic;
