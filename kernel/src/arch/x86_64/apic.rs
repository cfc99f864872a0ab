//! Interrupt controllers: the legacy 8259 PICs (remapped and masked), the local
//! APIC (EOI and its timer) and the I/O APICs found in the MADT.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;
use x86_64::instructions::port::Port;

use super::cpu;

const IA32_APIC_BASE: u32 = 0x1b;
const LAPIC_ID: usize = 0x20;
const LAPIC_EOI: usize = 0xb0;
const LAPIC_SVR: usize = 0xf0;
const LAPIC_ICR_LOW: usize = 0x300;
const LAPIC_ICR_HIGH: usize = 0x310;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_TIMER_INITIAL: usize = 0x380;
const LAPIC_TIMER_CURRENT: usize = 0x390;
const LAPIC_TIMER_DIVIDE: usize = 0x3e0;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;

static LAPIC_BASE: AtomicUsize = AtomicUsize::new(0);
static LAPIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);

fn lapic_read(reg: usize) -> u32 {
    let base = LAPIC_BASE.load(Ordering::Relaxed);
    assert!(base != 0, "local APIC not initialized");
    // SAFETY: `base` is the identity-mapped local APIC page; `reg` is a register offset within it.
    unsafe { core::ptr::read_volatile((base + reg) as *const u32) }
}

fn lapic_write(reg: usize, value: u32) {
    let base = LAPIC_BASE.load(Ordering::Relaxed);
    assert!(base != 0, "local APIC not initialized");
    // SAFETY: as in `lapic_read`; writes configure only this CPU's local APIC.
    unsafe { core::ptr::write_volatile((base + reg) as *mut u32, value) }
}

/// Remaps the 8259 PICs away from the exception vectors and masks every line.
fn disable_pic() {
    // SAFETY: standard 8259 initialization sequence on its fixed ports.
    unsafe {
        let mut cmd1 = Port::<u8>::new(0x20);
        let mut data1 = Port::<u8>::new(0x21);
        let mut cmd2 = Port::<u8>::new(0xa0);
        let mut data2 = Port::<u8>::new(0xa1);
        cmd1.write(0x11);
        cmd2.write(0x11);
        data1.write(0x20);
        data2.write(0x28);
        data1.write(4);
        data2.write(2);
        data1.write(1);
        data2.write(1);
        data1.write(0xff);
        data2.write(0xff);
    }
}

/// Enables the local APIC of the boot CPU. Returns its id.
pub fn init_local() -> u32 {
    disable_pic();
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU with an APIC.
    let base_msr = unsafe { cpu::rdmsr(IA32_APIC_BASE) };
    let base = (base_msr & 0xf_ffff_f000) as usize;
    assert!(crate::mm::is_identity_mapped(base as u64, 4096), "local APIC outside mapped memory");
    // SAFETY: sets the global-enable bit, keeping the firmware's base address.
    unsafe { cpu::wrmsr(IA32_APIC_BASE, base_msr | (1 << 11)) };
    LAPIC_BASE.store(base, Ordering::Relaxed);
    lapic_write(LAPIC_SVR, 0x100 | u32::from(super::idt::SPURIOUS_VECTOR));
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
    lapic_id()
}

/// Enables the local APIC of an application processor (the PICs are already off),
/// with its timer masked.
pub fn init_local_ap() {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU with an APIC; every CPU's local
    // APIC sits at the same address (the one the BSP mapped), only the enable bit is set.
    unsafe {
        let base_msr = cpu::rdmsr(IA32_APIC_BASE);
        cpu::wrmsr(IA32_APIC_BASE, base_msr | (1 << 11));
    }
    lapic_write(LAPIC_SVR, 0x100 | u32::from(super::idt::SPURIOUS_VECTOR));
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
}

/// Writes the interrupt command register (destination first: the low write sends)
/// and waits (bounded) for the local APIC to accept it.
fn send_icr(apic_id: u32, low: u32) {
    super::interrupts::without(|| {
        lapic_write(LAPIC_ICR_HIGH, apic_id << 24);
        lapic_write(LAPIC_ICR_LOW, low);
        for _ in 0..1_000_000 {
            if lapic_read(LAPIC_ICR_LOW) & ICR_DELIVERY_PENDING == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    });
}

/// Sends INIT (level assert) to the CPU with local APIC id `apic_id`.
pub fn send_init(apic_id: u32) {
    send_icr(apic_id, 0x4500);
}

/// Sends a STARTUP IPI: the CPU starts in real mode at `vector << 12`.
pub fn send_startup(apic_id: u32, vector: u8) {
    send_icr(apic_id, 0x4600 | u32::from(vector));
}

/// Sends a fixed interrupt on `vector` to the CPU with local APIC id `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    send_icr(apic_id, 0x4000 | u32::from(vector));
}

/// This CPU's local APIC id.
pub fn lapic_id() -> u32 {
    lapic_read(LAPIC_ID) >> 24
}

/// Signals end of interrupt to the local APIC.
pub fn end_of_interrupt() {
    lapic_write(LAPIC_EOI, 0);
}

/// Measures the local APIC timer's rate (divide-by-16) against the calibrated TSC.
pub fn calibrate_timer(tsc_hz: u64) -> u64 {
    lapic_write(LAPIC_TIMER_DIVIDE, 0x3);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
    lapic_write(LAPIC_TIMER_INITIAL, u32::MAX);
    let start = cpu::rdtsc();
    let window = tsc_hz / 100; // 10 ms
    while cpu::rdtsc().wrapping_sub(start) < window {
        core::hint::spin_loop();
    }
    let elapsed_ticks = u64::from(u32::MAX - lapic_read(LAPIC_TIMER_CURRENT));
    let elapsed_tsc = cpu::rdtsc().wrapping_sub(start);
    lapic_write(LAPIC_TIMER_INITIAL, 0);
    let hz = elapsed_ticks.saturating_mul(tsc_hz) / elapsed_tsc.max(1);
    LAPIC_TIMER_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// Starts the periodic local APIC timer at `hz` interrupts per second on `vector`.
pub fn start_periodic_timer(vector: u8, hz: u32) {
    let timer_hz = LAPIC_TIMER_HZ.load(Ordering::Relaxed);
    assert!(timer_hz > 0, "calibrate the APIC timer first");
    let count = (timer_hz / u64::from(hz)).clamp(1, u64::from(u32::MAX)) as u32;
    lapic_write(LAPIC_TIMER_DIVIDE, 0x3);
    lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | u32::from(vector));
    lapic_write(LAPIC_TIMER_INITIAL, count);
}

/// An I/O APIC from the MADT.
#[derive(Debug, Clone, Copy)]
pub struct IoApic {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
    pub redirection_entries: u32,
}

/// An ISA IRQ that the MADT routes to a different GSI or polarity.
#[derive(Debug, Clone, Copy)]
pub struct SourceOverride {
    pub isa_irq: u8,
    pub gsi: u32,
    /// Polarity and trigger mode from the MADT; PCI lines are routed active-low,
    /// level-triggered whatever the override says.
    #[allow(dead_code)]
    pub active_low: bool,
    #[allow(dead_code)]
    pub level_triggered: bool,
}

struct IoApics {
    list: heapless::Vec<IoApic, 8>,
    overrides: heapless::Vec<SourceOverride, 16>,
}

static IO_APICS: Mutex<IoApics> =
    Mutex::new(IoApics { list: heapless::Vec::new(), overrides: heapless::Vec::new() });

fn ioapic_read(address: u32, reg: u32) -> u32 {
    // SAFETY: `address` is an I/O APIC from the MADT in the identity-mapped low 4 GiB;
    // IOREGSEL at +0 selects the register, IOWIN at +0x10 reads it.
    unsafe {
        core::ptr::write_volatile(address as usize as *mut u32, reg);
        core::ptr::read_volatile((address as usize + 0x10) as *const u32)
    }
}

fn ioapic_write(address: u32, reg: u32, value: u32) {
    // SAFETY: as in `ioapic_read`.
    unsafe {
        core::ptr::write_volatile(address as usize as *mut u32, reg);
        core::ptr::write_volatile((address as usize + 0x10) as *mut u32, value);
    }
}

/// Registers an I/O APIC and masks all its inputs.
pub fn add_io_apic(id: u8, address: u32, gsi_base: u32) -> Option<IoApic> {
    if !crate::mm::is_identity_mapped(u64::from(address), 0x20) {
        log::warn!("I/O APIC {id} at {address:#x} is outside mapped memory, ignored");
        return None;
    }
    let redirection_entries = ((ioapic_read(address, 1) >> 16) & 0xff) + 1;
    for entry in 0..redirection_entries {
        ioapic_write(address, 0x10 + 2 * entry, LVT_MASKED);
        ioapic_write(address, 0x11 + 2 * entry, 0);
    }
    let apic = IoApic { id, address, gsi_base, redirection_entries };
    if IO_APICS.lock().list.push(apic).is_err() {
        log::warn!("too many I/O APICs, {id} ignored");
        return None;
    }
    Some(apic)
}

/// Records an interrupt source override from the MADT.
pub fn add_source_override(o: SourceOverride) {
    if IO_APICS.lock().overrides.push(o).is_err() {
        log::warn!("too many interrupt source overrides, ISA IRQ {} ignored", o.isa_irq);
    }
}

/// Routes global system interrupt `gsi` to `vector` on the boot CPU, unmasked.
pub fn route_gsi(gsi: u32, vector: u8, active_low: bool, level_triggered: bool) -> bool {
    debug_assert!(super::smp::on_boot_cpu(), "device interrupts go to the boot CPU");
    let apics = IO_APICS.lock();
    let Some(apic) = apics.list.iter().find(|a| gsi >= a.gsi_base && gsi < a.gsi_base + a.redirection_entries) else {
        return false;
    };
    let entry = gsi - apic.gsi_base;
    let mut low = u32::from(vector);
    if active_low {
        low |= 1 << 13;
    }
    if level_triggered {
        low |= 1 << 15;
    }
    ioapic_write(apic.address, 0x11 + 2 * entry, lapic_id() << 24);
    ioapic_write(apic.address, 0x10 + 2 * entry, low);
    true
}


/// Routes a PCI interrupt that the firmware steered to ISA IRQ `irq`:
/// level-triggered, active-low, as PCI INTx lines are.
pub fn route_isa_irq_level(irq: u8, vector: u8) -> bool {
    let gsi = IO_APICS.lock().overrides.iter().find(|o| o.isa_irq == irq).map_or(u32::from(irq), |o| o.gsi);
    route_gsi(gsi, vector, true, true)
}
