//! Message-signalled interrupts for the storage controllers (NVMe, AHCI), the
//! e1000e NIC and virtio-net (after its queues are set up, `virtio::move_to_msix`): one
//! vector per PCI function, delivered to the boot CPU's local APIC, signalling that
//! function's [`Event`].
//!
//! MSI-X (PCI 3.0, 6.8.2) is used when the function offers it (NVMe does: table
//! entry 0 carries the vector), plain MSI (6.8.1) otherwise (ICH9 AHCI). A function
//! with neither gets no vector; its driver still completes requests, woken by the
//! timer tick instead. Other virtio devices keep the shared INTx line (`virtio.rs`).

use core::sync::atomic::{AtomicUsize, Ordering};

use super::pci::PciAddress;
use crate::arch::x86_64::{apic, idt};
use crate::executor::Event;
use crate::mm::paging;

/// First vector handed out (virtio has 0x40, the timer 0x20).
const FIRST_VECTOR: u8 = 0x50;
/// Most functions with a vector of their own.
pub const MAX_FUNCTIONS: usize = 16;

static EVENTS: [Event; MAX_FUNCTIONS] = [const { Event::new() }; MAX_FUNCTIONS];
static USED: AtomicUsize = AtomicUsize::new(0);
/// MSI and MSI-X interrupts taken, all functions (for `net::timing`).
pub static INTERRUPTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn on_interrupt(vector: u8) {
    INTERRUPTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    if let Some(event) = EVENTS.get(usize::from(vector.wrapping_sub(FIRST_VECTOR))) {
        event.signal();
    }
}

/// How a function's completions reach the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    MsiX,
    Msi,
    /// No vector: the driver's waits are woken by the timer tick.
    Tick,
}

impl core::fmt::Display for Delivery {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Delivery::MsiX => "MSI-X",
            Delivery::Msi => "MSI",
            Delivery::Tick => "polled on the timer tick",
        })
    }
}

/// Gives `address` a vector of its own (MSI-X entry 0 or MSI) and returns the event
/// its interrupts signal. Without MSI/MSI-X, or with all vectors taken, the event
/// is never signalled by the device and the delivery is [`Delivery::Tick`].
pub fn attach(address: PciAddress) -> (&'static Event, Delivery) {
    let index = USED.fetch_add(1, Ordering::Relaxed);
    let Some(event) = EVENTS.get(index) else {
        USED.store(MAX_FUNCTIONS, Ordering::Relaxed);
        log::warn!("pci {address}: more than {MAX_FUNCTIONS} message-signalled functions; this one is polled");
        return (&EVENTS[MAX_FUNCTIONS - 1], Delivery::Tick);
    };
    let vector = FIRST_VECTOR + index as u8;
    idt::register(vector, on_interrupt);
    let Some(destination) = apic::device_destination() else {
        log::warn!("pci {address}: the boot CPU's APIC id does not fit an MSI address; this function is polled");
        return (event, Delivery::Tick);
    };
    let message_address = 0xfee0_0000u32 | (u32::from(destination) << 12);
    let delivery = if enable_msix(address, message_address, vector) {
        Delivery::MsiX
    } else if enable_msi(address, message_address, vector) {
        Delivery::Msi
    } else {
        Delivery::Tick
    };
    (event, delivery)
}

/// Programs MSI-X table entry 0 with `vector` and enables MSI-X (other entries stay masked).
fn enable_msix(address: PciAddress, message_address: u32, vector: u8) -> bool {
    let Some(cap) = address.capability(0x11) else { return false };
    let control = address.read_config(cap) >> 16;
    let table = address.read_config(cap + 4);
    let Some(bar_base) = address.memory_bar((table & 7) as u8) else { return false };
    let entries = u64::from(control & 0x7ff) + 1;
    let table_base = bar_base + u64::from(table & !7);
    if paging::map_mmio(table_base, entries * 16).is_err() {
        return false;
    }
    // Enable with the function masked while the entries are written (6.8.2.3).
    address.write_config(cap, (address.read_config(cap) & 0xffff) | (1 << 31) | (1 << 30));
    let entry = table_base as usize as *mut u32;
    // SAFETY: `table_base` is the MSI-X table the capability names, just mapped
    // (uncached); entry 0 is 16 bytes: address low/high, data, vector control.
    unsafe {
        core::ptr::write_volatile(entry, message_address);
        core::ptr::write_volatile(entry.add(1), 0);
        core::ptr::write_volatile(entry.add(2), u32::from(vector));
        core::ptr::write_volatile(entry.add(3), 0);
    }
    address.write_config(cap, ((address.read_config(cap) & 0xffff) | (1 << 31)) & !(1 << 30));
    true
}

/// Programs the MSI capability with `vector` (one message) and enables it.
fn enable_msi(address: PciAddress, message_address: u32, vector: u8) -> bool {
    let Some(cap) = address.capability(0x05) else { return false };
    let control = address.read_config(cap) >> 16;
    let is_64bit = control & (1 << 7) != 0;
    address.write_config(cap + 4, message_address);
    if is_64bit {
        address.write_config(cap + 8, 0);
        address.write_config(cap + 12, u32::from(vector));
    } else {
        address.write_config(cap + 8, u32::from(vector));
    }
    // Enable, one message (multiple message enable = 0).
    let control = (control & !(0b111 << 4)) | 1;
    address.write_config(cap, (address.read_config(cap) & 0xffff) | (control << 16));
    true
}
