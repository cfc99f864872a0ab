//! virtio over PCI with the `virtio-drivers` crate: the kernel's `Hal` (DMA from
//! the frame allocator, identity-mapped MMIO), configuration access through the
//! legacy ports, device discovery, and interrupts.
//!
//! Interrupts are PCI INTx lines (the crate does not program MSI-X vectors): every
//! line a virtio function can raise is routed to one vector. The handler reads each
//! device's ISR status register (virtio 1.2, 4.1.4.5: reading it acknowledges the
//! interrupt and deasserts the line) and signals that device's [`Event`], which
//! wakes the task waiting on it. virtio-net moves to MSI-X once its queues are
//! set up ([`move_to_msix`]). Other functions without MSI that share the lines
//! (the 82540EM NIC, `e1000.rs`) register here too with [`attach_intel_intx`]: for
//! them the handler reads the Interrupt Cause Read register, which acknowledges.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use super::pci::{PciAddress, PciDevice};
use super::msi;
use crate::arch::x86_64::{apic, idt};
use crate::executor::Event;
use crate::mm::{frames, paging};

/// The vector every virtio INTx line is routed to.
pub const VIRTIO_VECTOR: u8 = 0x40;
/// Most virtio functions the kernel drives.
pub const MAX_DEVICES: usize = 16;

/// The kernel's `Hal` for virtio-drivers.
pub struct KernelHal;

// SAFETY: DMA memory comes from the frame allocator, zeroed, page-aligned and
// exclusively owned until `dma_dealloc`; all memory is identity-mapped, so the
// physical address is the pointer; MMIO ranges are mapped before use.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match frames::alloc_contiguous(pages as u64, PAGE_SIZE as u64) {
            Some(addr) => match NonNull::new(addr as usize as *mut u8) {
                Some(ptr) => (addr, ptr),
                None => (0, NonNull::dangling()),
            },
            None => {
                log::error!("virtio: out of DMA memory ({pages} pages)");
                (0, NonNull::dangling())
            }
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the crate returns memory it got from `dma_alloc` and no longer uses it.
        unsafe { frames::free(paddr, pages as u64) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        if let Err(e) = paging::map_mmio(paddr, size as u64) {
            panic!("virtio: cannot map MMIO {paddr:#x}+{size:#x}: {e:?}");
        }
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Identity mapping: the buffer's address is its physical address, and heap
        // allocations are physically contiguous.
        buffer.as_ptr() as *mut u8 as u64
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// PCI configuration access through ports 0xCF8/0xCFC.
pub struct PortCam;

impl ConfigurationAccess for PortCam {
    fn read_word(&self, f: DeviceFunction, offset: u8) -> u32 {
        PciAddress { bus: f.bus, device: f.device, function: f.function }.read_config(offset)
    }

    fn write_word(&mut self, f: DeviceFunction, offset: u8, data: u32) {
        PciAddress { bus: f.bus, device: f.device, function: f.function }.write_config(offset, data)
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// How the handler acknowledges a source.
const KIND_VIRTIO_ISR: u8 = 0;
const KIND_INTEL_ICR: u8 = 1;

struct IrqSource {
    /// The register the handler reads (ISR status byte or ICR), 0 when unused.
    isr_address: AtomicU64,
    kind: AtomicU8,
    /// Intel NICs: the causes the handler read (reading ICR clears them), for the driver.
    causes: AtomicU32,
}

static SOURCES: [IrqSource; MAX_DEVICES] = [const {
    IrqSource { isr_address: AtomicU64::new(0), kind: AtomicU8::new(KIND_VIRTIO_ISR), causes: AtomicU32::new(0) }
}; MAX_DEVICES];
static EVENTS: [Event; MAX_DEVICES] = [const { Event::new() }; MAX_DEVICES];
static DEVICE_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Interrupts taken on the virtio vector (for diagnostics).
pub static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

fn on_interrupt(_vector: u8) {
    let count = DEVICE_COUNT.load(Ordering::Acquire).min(MAX_DEVICES);
    for (source, event) in SOURCES.iter().zip(EVENTS.iter()).take(count) {
        let addr = source.isr_address.load(Ordering::Relaxed);
        if addr == 0 {
            continue;
        }
        if source.kind.load(Ordering::Relaxed) == KIND_INTEL_ICR {
            // SAFETY: `addr` is the ICR of an Intel NIC whose register window the driver
            // mapped before registering it (`attach_intel_intx`); reading it acknowledges.
            let causes = unsafe { core::ptr::read_volatile(addr as usize as *const u32) };
            if causes != 0 {
                source.causes.fetch_or(causes, Ordering::Relaxed);
                event.signal();
            }
            continue;
        }
        // SAFETY: `addr` is the mapped ISR status byte of a virtio function (found in
        // its capability list at probe time); reading it is the acknowledgement.
        let status = unsafe { core::ptr::read_volatile(addr as usize as *const u8) };
        if status != 0 {
            event.signal();
        }
        INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Address of the ISR status byte from the virtio vendor capability (cfg_type 3).
fn isr_address(address: PciAddress) -> Option<u64> {
    struct_address(address, 3)
}

/// Address of the virtio structure of `cfg_type` (1 common configuration, 3 ISR
/// status) from the vendor capabilities (virtio 1.2, 4.1.4).
fn struct_address(address: PciAddress, wanted_type: u8) -> Option<u64> {
    let status = address.read_config(0x04) >> 16;
    if status & (1 << 4) == 0 {
        return None;
    }
    let mut cap = (address.read_config(0x34) & 0xfc) as u8;
    for _ in 0..48 {
        if cap == 0 {
            break;
        }
        let header = address.read_config(cap);
        let (id, next, cfg_type) = (header as u8, (header >> 8) as u8 & 0xfc, (header >> 24) as u8);
        if id == 0x09 && cfg_type == wanted_type {
            let bar = (address.read_config(cap + 4) & 0xff) as u8;
            let offset = u64::from(address.read_config(cap + 8));
            if bar > 5 {
                return None;
            }
            let low = address.read_config(0x10 + bar * 4);
            if low & 1 != 0 {
                return None; // I/O BAR: not used by modern virtio
            }
            let mut base = u64::from(low & !0xf);
            if (low >> 1) & 3 == 2 && bar < 5 {
                base |= u64::from(address.read_config(0x10 + (bar + 1) * 4)) << 32;
            }
            return Some(base + offset);
        }
        cap = next;
    }
    None
}

// Common configuration structure offsets (virtio 1.2, 4.1.4.3).
const COMMON_MSIX_CONFIG: u64 = 0x10;
const COMMON_NUM_QUEUES: u64 = 0x12;
const COMMON_QUEUE_SELECT: u64 = 0x16;
const COMMON_QUEUE_MSIX_VECTOR: u64 = 0x1a;
const COMMON_BYTES: u64 = 0x38;
/// Most queues given a vector (virtio-net has 2, or 3 with a control queue).
const MSIX_QUEUES_MAX: u16 = 16;

/// Moves a virtio function whose driver has set up its queues from the shared
/// INTx line to MSI-X table entry 0 (every queue and configuration changes on that
/// entry, 4.1.5.1.2), and returns the event its interrupts now signal. `None`, with
/// INTx kept, when the function has no MSI-X or the device refuses the vector.
/// virtio-drivers' transport leaves the vectors alone, so they are written here
/// through the common configuration structure.
pub fn move_to_msix(address: PciAddress, source: usize) -> Option<&'static Event> {
    address.capability(0x11)?;
    let common = struct_address(address, 1)?;
    paging::map_mmio(common, COMMON_BYTES).ok()?;
    let read16 = |offset: u64| {
        // SAFETY: `common` is the function's common configuration structure (from its
        // capability), mapped above for COMMON_BYTES; offsets are fields within it.
        unsafe { core::ptr::read_volatile((common + offset) as usize as *const u16) }
    };
    let write16 = |offset: u64, value: u16| {
        // SAFETY: as in `read16`.
        unsafe { core::ptr::write_volatile((common + offset) as usize as *mut u16, value) }
    };
    let queues = read16(COMMON_NUM_QUEUES).min(MSIX_QUEUES_MAX);
    for queue in 0..queues {
        write16(COMMON_QUEUE_SELECT, queue);
        write16(COMMON_QUEUE_MSIX_VECTOR, 0);
        // The device answers NO_VECTOR (0xffff) when it cannot use the entry.
        if read16(COMMON_QUEUE_MSIX_VECTOR) != 0 {
            log::warn!("virtio {address}: queue {queue} refused MSI-X entry 0; staying on INTx");
            for q in 0..=queue {
                write16(COMMON_QUEUE_SELECT, q);
                write16(COMMON_QUEUE_MSIX_VECTOR, 0xffff);
            }
            return None;
        }
    }
    write16(COMMON_MSIX_CONFIG, 0);
    let (event, delivery) = msi::attach(address);
    if delivery != msi::Delivery::MsiX {
        log::warn!("virtio {address}: MSI-X not enabled ({delivery}); staying on INTx");
        return None;
    }
    // The function no longer raises INTx: stop reading its ISR on the shared line
    // (one last read acknowledges anything raised before the switch).
    if let Some(source) = SOURCES.get(source) {
        let isr = source.isr_address.swap(0, Ordering::Relaxed);
        if isr != 0 {
            // SAFETY: the function's mapped ISR status byte (see `on_interrupt`).
            let _ = unsafe { core::ptr::read_volatile(isr as usize as *const u8) };
        }
    }
    Some(event)
}

/// A virtio function ready for a device driver.
pub struct Found {
    pub transport: PciTransport,
    pub device_type: DeviceType,
    pub address: PciAddress,
    /// Its slot on the shared INTx line (for [`move_to_msix`]).
    pub source: usize,
    /// Signalled when this device raises an interrupt.
    pub event: &'static Event,
}

static ROUTED_PCI_GSIS: AtomicBool = AtomicBool::new(false);

/// Routes `address`'s INTx line to [`VIRTIO_VECTOR`]: PCI INTx arrive at GSIs 16-23
/// on I/O APIC systems (Q35), or at the ISA IRQ the firmware wrote into the
/// interrupt-line register (i440FX).
fn route_line(address: PciAddress) {
    let line = (address.read_config(0x3c) & 0xff) as u8;
    if !ROUTED_PCI_GSIS.load(Ordering::Relaxed) {
        let routed = (16..24).all(|gsi| apic::route_gsi(gsi, VIRTIO_VECTOR, true, true));
        ROUTED_PCI_GSIS.store(routed, Ordering::Relaxed);
    }
    if matches!(line, 3 | 5..=7 | 9..=12 | 14 | 15) {
        apic::route_isa_irq_level(line, VIRTIO_VECTOR);
    }
}

/// Shares the INTx vector with an Intel NIC that has no MSI: the handler reads its
/// Interrupt Cause Read register at `icr_address` (already mapped), keeps the
/// causes in the returned cell and signals the returned event. `None` when all
/// sources are taken. Call after [`probe`] (which installs the handler).
pub fn attach_intel_intx(address: PciAddress, icr_address: u64) -> Option<(&'static Event, &'static AtomicU32)> {
    let index = DEVICE_COUNT.load(Ordering::Relaxed);
    let source = SOURCES.get(index)?;
    source.kind.store(KIND_INTEL_ICR, Ordering::Relaxed);
    source.isr_address.store(icr_address, Ordering::Relaxed);
    DEVICE_COUNT.store(index + 1, Ordering::Release);
    route_line(address);
    Some((&EVENTS[index], &source.causes))
}

/// Sets up the PCI transport and interrupt routing of every virtio function.
pub fn probe(devices: &[PciDevice]) -> alloc::vec::Vec<Found> {
    let mut found = alloc::vec::Vec::new();
    let mut root = PciRoot::new(PortCam);
    idt::register(VIRTIO_VECTOR, on_interrupt);
    for d in devices.iter().filter(|d| d.vendor_id == 0x1af4) {
        let index = DEVICE_COUNT.load(Ordering::Relaxed);
        if index >= MAX_DEVICES {
            log::warn!("virtio: more than {MAX_DEVICES} devices; {} ignored", d.address);
            continue;
        }
        let df = DeviceFunction { bus: d.address.bus, device: d.address.device, function: d.address.function };
        // Memory space + bus mastering on, INTx not disabled.
        let command = d.address.read_config(0x04);
        d.address.write_config(0x04, (command & 0xffff & !(1 << 10)) | 0b110);
        let transport = match PciTransport::new::<KernelHal, _>(&mut root, df) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("virtio {}: not usable: {e}", d.address);
                continue;
            }
        };
        let Some(isr) = isr_address(d.address) else {
            log::warn!("virtio {}: no ISR capability; ignored", d.address);
            continue;
        };
        if let Err(e) = paging::map_mmio(isr, 1) {
            log::warn!("virtio {}: cannot map ISR ({e:?}); ignored", d.address);
            continue;
        }
        log::debug!("virtio {}: ISR status at {isr:#x}, interrupt line {}", d.address, d.address.read_config(0x3c) & 0xff);
        SOURCES[index].isr_address.store(isr, Ordering::Relaxed);
        DEVICE_COUNT.store(index + 1, Ordering::Release);
        route_line(d.address);
        let device_type = transport.device_type();
        found.push(Found { transport, device_type, address: d.address, source: index, event: &EVENTS[index] });
    }
    found
}
