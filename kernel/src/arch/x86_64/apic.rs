//! Interrupt controllers: the legacy 8259 PICs (remapped and masked), the local
//! APIC (EOI, its timer, IPIs) and the I/O APICs found in the MADT.
//!
//! The local APIC runs in x2APIC mode when the CPU has it (CPUID.01H:ECX[21]) or the
//! firmware left it on (`IA32_APIC_BASE` bit 10), else in xAPIC mode; every CPU uses
//! the boot CPU's choice. Its registers are reached through one pair of functions
//! (`lapic_read`/`lapic_write`): MMIO at the `IA32_APIC_BASE` page in xAPIC mode, MSR
//! `0x800 + offset / 16` in x2APIC mode. The ICR is two MMIO writes (destination
//! first, 8-bit APIC ids) and a bounded poll of its delivery status in xAPIC mode, one
//! 64-bit MSR write (32-bit APIC ids, no status to poll) in x2APIC mode. The encodings
//! and the mode choice are in the host-tested `smpcore::apic`. Boot prints the mode
//! (`apic: xAPIC` / `apic: x2APIC`). QEMU's TCG has no x2APIC, so the booted tests
//! run the xAPIC path only.
//!
//! Device interrupts (I/O APIC entries, MSI) target the boot CPU by physical APIC id
//! in 8 bits ([`device_destination`]): a boot CPU whose x2APIC id is above 255 would
//! need interrupt remapping, which the kernel does not do, so then no GSI is routed and
//! message-signalled devices are polled (with a warning).

use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use smpcore::apic::{icr, reg, IcrError, Mode};
use spin::Mutex;
use x86_64::instructions::port::Port;

use super::cpu;

pub use smpcore::apic::Mode as ApicMode;

const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;

/// 0 before [`init_local`], then 1 (xAPIC) or 2 (x2APIC).
static MODE: AtomicU8 = AtomicU8::new(0);
/// The xAPIC register page (xAPIC mode only).
static LAPIC_BASE: AtomicUsize = AtomicUsize::new(0);
static LAPIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// The local APIC's mode (xAPIC before [`init_local`]).
pub fn mode() -> Mode {
    if MODE.load(Ordering::Relaxed) == 2 {
        Mode::X2Apic
    } else {
        Mode::XApic
    }
}

fn x2apic_msr(r: u16) -> u32 {
    let msr = smpcore::apic::x2apic_msr(r);
    assert!(msr.is_some(), "local APIC register {r:#x} has no x2APIC MSR");
    msr.unwrap_or(0)
}

fn lapic_read(r: u16) -> u32 {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: in x2APIC mode (enabled on this CPU before MODE was set, and on every
        // AP before it reads a register) the MSR of a register offset exists.
        2 => unsafe { cpu::rdmsr(x2apic_msr(r)) as u32 },
        _ => {
            let base = LAPIC_BASE.load(Ordering::Relaxed);
            assert!(base != 0, "local APIC not initialized");
            // SAFETY: `base` is the identity-mapped local APIC page; `r` is a register offset within it.
            unsafe { core::ptr::read_volatile((base + usize::from(r)) as *const u32) }
        }
    }
}

fn lapic_write(r: u16, value: u32) {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: as in `lapic_read`; writes configure only this CPU's local APIC.
        2 => unsafe { cpu::wrmsr(x2apic_msr(r), u64::from(value)) },
        _ => {
            let base = LAPIC_BASE.load(Ordering::Relaxed);
            assert!(base != 0, "local APIC not initialized");
            // SAFETY: as in `lapic_read`; writes configure only this CPU's local APIC.
            unsafe { core::ptr::write_volatile((base + usize::from(r)) as *mut u32, value) }
        }
    }
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

/// Turns this CPU's local APIC on in `mode` (disabled -> xAPIC -> x2APIC, the only
/// legal order), keeping the firmware's base address.
fn enable(mode: Mode) {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU with an APIC; only the enable
    // bits change, and x2APIC is entered only from xAPIC on a CPU that supports it
    // (the boot CPU checked CPUID or found it on; APs are the same model).
    unsafe {
        let current = cpu::rdmsr(smpcore::apic::IA32_APIC_BASE_MSR);
        let xapic = smpcore::apic::apic_base_for(Mode::XApic, current);
        if xapic != current && current & smpcore::apic::APIC_BASE_X2APIC == 0 {
            cpu::wrmsr(smpcore::apic::IA32_APIC_BASE_MSR, xapic);
        }
        if mode == Mode::X2Apic {
            let x2 = smpcore::apic::apic_base_for(Mode::X2Apic, current);
            if x2 != current {
                cpu::wrmsr(smpcore::apic::IA32_APIC_BASE_MSR, x2);
            }
        }
    }
}

/// Enables the local APIC of the boot CPU, choosing its mode. Returns its id.
pub fn init_local() -> u32 {
    disable_pic();
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU with an APIC.
    let base_msr = unsafe { cpu::rdmsr(smpcore::apic::IA32_APIC_BASE_MSR) };
    let mode = smpcore::apic::choose_mode(ecx, base_msr);
    if mode == Mode::XApic {
        let base = (base_msr & 0xf_ffff_f000) as usize;
        assert!(crate::mm::is_identity_mapped(base as u64, 4096), "local APIC outside mapped memory");
        LAPIC_BASE.store(base, Ordering::Relaxed);
    }
    enable(mode);
    MODE.store(if mode == Mode::X2Apic { 2 } else { 1 }, Ordering::Relaxed);
    lapic_write(reg::SVR, 0x100 | u32::from(super::idt::SPURIOUS_VECTOR));
    lapic_write(reg::LVT_TIMER, LVT_MASKED);
    lapic_id()
}

/// Enables the local APIC of an application processor in the boot CPU's mode (the
/// PICs are already off), with its timer masked.
pub fn init_local_ap() {
    enable(mode());
    lapic_write(reg::SVR, 0x100 | u32::from(super::idt::SPURIOUS_VECTOR));
    lapic_write(reg::LVT_TIMER, LVT_MASKED);
}

/// Writes the interrupt command register. xAPIC: destination first (the low write
/// sends), then waits (bounded) for the local APIC to accept it. x2APIC: one MSR
/// write, after a fence (the write is not serializing, and the target must see the
/// stores made before the IPI).
fn send_icr(apic_id: u32, low: u32) -> Result<(), IcrError> {
    match mode() {
        Mode::X2Apic => {
            let value = smpcore::apic::x2apic_icr(apic_id, low);
            // SAFETY: MFENCE/LFENCE only order memory; the ICR MSR exists in x2APIC mode
            // and sends an IPI, which touches no memory of this CPU.
            unsafe {
                core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags));
                cpu::wrmsr(smpcore::apic::X2APIC_MSR_BASE + u32::from(reg::ICR_LOW >> 4), value);
            }
            Ok(())
        }
        Mode::XApic => {
            let (high, low) = smpcore::apic::xapic_icr(apic_id, low)?;
            super::interrupts::without(|| {
                lapic_write(reg::ICR_HIGH, high);
                lapic_write(reg::ICR_LOW, low);
                for _ in 0..1_000_000 {
                    if lapic_read(reg::ICR_LOW) & icr::DELIVERY_PENDING == 0 {
                        break;
                    }
                    core::hint::spin_loop();
                }
            });
            Ok(())
        }
    }
}

/// Sends INIT (level assert) to the CPU with local APIC id `apic_id`.
pub fn send_init(apic_id: u32) -> Result<(), IcrError> {
    send_icr(apic_id, icr::INIT)
}

/// Sends a STARTUP IPI: the CPU starts in real mode at `page << 12`.
pub fn send_startup(apic_id: u32, page: u8) -> Result<(), IcrError> {
    send_icr(apic_id, icr::startup(page))
}

/// Sends a fixed interrupt on `vector` to the CPU with local APIC id `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) -> Result<(), IcrError> {
    send_icr(apic_id, icr::fixed(vector))
}

/// Sends a non-maskable interrupt to the CPU with local APIC id `apic_id`.
pub fn send_nmi(apic_id: u32) -> Result<(), IcrError> {
    send_icr(apic_id, icr::NMI)
}

/// This CPU's local APIC id (32 bits in x2APIC mode).
pub fn lapic_id() -> u32 {
    smpcore::apic::apic_id(mode(), lapic_read(reg::ID))
}

/// This CPU's APIC id as the 8-bit physical destination that I/O APIC entries and MSI
/// addresses carry, or `None` if it is wider (an x2APIC id above 255 needs interrupt
/// remapping, which the kernel does not do: such devices are polled).
pub fn device_destination() -> Option<u8> {
    u8::try_from(lapic_id()).ok()
}

/// Signals end of interrupt to the local APIC.
pub fn end_of_interrupt() {
    lapic_write(reg::EOI, 0);
}

/// Measures the local APIC timer's rate (divide-by-16) against the calibrated TSC.
pub fn calibrate_timer(tsc_hz: u64) -> u64 {
    lapic_write(reg::TIMER_DIVIDE, 0x3);
    lapic_write(reg::LVT_TIMER, LVT_MASKED);
    lapic_write(reg::TIMER_INITIAL, u32::MAX);
    let start = cpu::rdtsc();
    let window = tsc_hz / 100; // 10 ms
    while cpu::rdtsc().wrapping_sub(start) < window {
        core::hint::spin_loop();
    }
    let elapsed_ticks = u64::from(u32::MAX - lapic_read(reg::TIMER_CURRENT));
    let elapsed_tsc = cpu::rdtsc().wrapping_sub(start);
    lapic_write(reg::TIMER_INITIAL, 0);
    let hz = elapsed_ticks.saturating_mul(tsc_hz) / elapsed_tsc.max(1);
    LAPIC_TIMER_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// Starts the periodic local APIC timer at `hz` interrupts per second on `vector`.
pub fn start_periodic_timer(vector: u8, hz: u32) {
    let timer_hz = LAPIC_TIMER_HZ.load(Ordering::Relaxed);
    assert!(timer_hz > 0, "calibrate the APIC timer first");
    let count = (timer_hz / u64::from(hz)).clamp(1, u64::from(u32::MAX)) as u32;
    lapic_write(reg::TIMER_DIVIDE, 0x3);
    lapic_write(reg::LVT_TIMER, LVT_PERIODIC | u32::from(vector));
    lapic_write(reg::TIMER_INITIAL, count);
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
    let Some(destination) = device_destination() else {
        log::warn!("ioapic: the boot CPU's APIC id {} does not fit an I/O APIC entry; GSI {gsi} not routed", lapic_id());
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
    ioapic_write(apic.address, 0x11 + 2 * entry, u32::from(destination) << 24);
    ioapic_write(apic.address, 0x10 + 2 * entry, low);
    true
}


/// Routes a PCI interrupt that the firmware steered to ISA IRQ `irq`:
/// level-triggered, active-low, as PCI INTx lines are.
pub fn route_isa_irq_level(irq: u8, vector: u8) -> bool {
    let gsi = IO_APICS.lock().overrides.iter().find(|o| o.isa_irq == irq).map_or(u32::from(irq), |o| o.gsi);
    route_gsi(gsi, vector, true, true)
}
