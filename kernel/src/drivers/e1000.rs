//! Intel gigabit NICs of the e1000 family as smoltcp `Device`s: the 82540EM (QEMU
//! `-device e1000`) and the 82574L (QEMU `-device e1000e`), with legacy descriptors.
//!
//! References: Intel PCI/PCI-X Family of Gigabit Ethernet Controllers Software
//! Developer's Manual (8254x, rev 4.0): 3.2 (receive descriptors), 3.3 (transmit
//! descriptors), 13 (registers), 14 (initialization); Intel 82574 GbE Controller
//! datasheet: 10.2 (registers, IVAR 10.2.4.9), 7.4.2 (MSI-X).
//!
//! One receive ring and one transmit ring of 16-byte descriptors in DMA memory
//! from the frame allocator, each descriptor with a 2 KiB buffer of its own.
//! Received frames are handed to smoltcp in place and their descriptor goes back
//! to the device afterwards; transmitted frames are built in the slot's buffer.
//! Only this driver's memory is named in descriptors, and a descriptor's length
//! is checked against its buffer before the frame is read.
//!
//! Interrupts: MSI-X where the function offers it (82574L: every cause on entry 0
//! through IVAR), else MSI, through `msi`; the 82540EM has neither (in QEMU), so it
//! shares the INTx vector with virtio (`virtio::attach_intel_intx`). Transmit
//! completions raise no interrupt: slots are reclaimed when frames are sent.
//!
//! Health: the link state comes from STATUS.LU, read on a link-status-change cause
//! and at least once a second, and the network stack logs changes. A transmit ring
//! with frames queued that makes no progress for [`TX_HANG_NS`] is a hang: the NIC
//! stops (interrupts masked, DMA off) and is reported out of service; the node runs
//! on with its other NICs. What is left to others: multicast filtering (the NIC
//! accepts all multicast, the stack filters), offloads, jumbo frames.

use alloc::vec;
use core::marker::PhantomData;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use super::msi::{self, Delivery};
use super::nic::NicCounters;
use super::pci::{PciAddress, PciDevice};
use crate::arch::x86_64::time;
use crate::executor::Event;
use crate::inventory::Link;
use crate::mm::{frames, paging};

const PAGE_BYTES: u64 = 4096;
/// Receive descriptors (a multiple of 8: RDLEN is 128-byte aligned).
const RX_COUNT: usize = 256;
/// Transmit descriptors (a multiple of 8).
const TX_COUNT: usize = 128;
/// Bytes of each descriptor's buffer (RCTL.BSIZE = 2048, the reset value).
const BUFFER_BYTES: usize = 2048;
const DESCRIPTOR_BYTES: usize = 16;
const _: () = assert!(RX_COUNT % 8 == 0 && TX_COUNT % 8 == 0);
const _: () = assert!(RX_COUNT * DESCRIPTOR_BYTES <= PAGE_BYTES as usize && TX_COUNT * DESCRIPTOR_BYTES <= PAGE_BYTES as usize);
const _: () = assert!(BUFFER_BYTES >= super::virtio_net::MTU_BYTES + 14 + 4);
/// Bytes of the register window mapped (BAR 0 is 128 KiB on both models).
const REGISTER_WINDOW_BYTES: u64 = 0x2_0000;
/// A transmit ring that has not moved for this long, with frames queued, has hung.
pub const TX_HANG_NS: u64 = 5_000_000_000;
/// Longest between two reads of the link state.
const LINK_CHECK_NS: u64 = 1_000_000_000;

// Registers (8254x manual, 13.4; 82574 datasheet, 10.2).
const REG_CTRL: u64 = 0x0000;
const REG_STATUS: u64 = 0x0008;
const REG_EERD: u64 = 0x0014;
const REG_CTRL_EXT: u64 = 0x0018;
const REG_ICR: u64 = 0x00c0;
const REG_ITR: u64 = 0x00c4;
const REG_IMS: u64 = 0x00d0;
const REG_IMC: u64 = 0x00d8;
const REG_IVAR: u64 = 0x00e4;
const REG_RCTL: u64 = 0x0100;
const REG_TCTL: u64 = 0x0400;
const REG_TIPG: u64 = 0x0410;
const REG_RDBAL: u64 = 0x2800;
const REG_RDBAH: u64 = 0x2804;
const REG_RDLEN: u64 = 0x2808;
const REG_RDH: u64 = 0x2810;
const REG_RDT: u64 = 0x2818;
const REG_RDTR: u64 = 0x2820;
const REG_TDBAL: u64 = 0x3800;
const REG_TDBAH: u64 = 0x3804;
const REG_TDLEN: u64 = 0x3808;
const REG_TDH: u64 = 0x3810;
const REG_TDT: u64 = 0x3818;
const REG_MTA: u64 = 0x5200;
const REG_RAL0: u64 = 0x5400;
const REG_RAH0: u64 = 0x5404;

const CTRL_LRST: u32 = 1 << 3;
const CTRL_ASDE: u32 = 1 << 5;
const CTRL_SLU: u32 = 1 << 6;
const CTRL_ILOS: u32 = 1 << 7;
const CTRL_RST: u32 = 1 << 26;
const CTRL_VME: u32 = 1 << 30;
const CTRL_PHY_RST: u32 = 1 << 31;
const STATUS_LU: u32 = 1 << 1;
const CTRL_EXT_PBA_SUPPORT: u32 = 1 << 31;

const RCTL_EN: u32 = 1 << 1;
const RCTL_MPE: u32 = 1 << 4;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
const TCTL_CT: u32 = 0x0f << 4;
const TCTL_COLD_FULL_DUPLEX: u32 = 0x3f << 12;
/// IPGT 10, IPGR1 8, IPGR2 6 (13.4.34, copper).
const TIPG_COPPER: u32 = 10 | (8 << 10) | (6 << 20);

// Interrupt causes (ICR/IMS bits).
const INT_LSC: u32 = 1 << 2;
const INT_RXSEQ: u32 = 1 << 3;
const INT_RXDMT0: u32 = 1 << 4;
const INT_RXO: u32 = 1 << 6;
const INT_RXT0: u32 = 1 << 7;
/// 82574 in MSI-X mode: receive queue 0 and "other" causes.
const INT_RXQ0: u32 = 1 << 20;
const INT_OTHER: u32 = 1 << 24;
/// IVAR: receive queues 0/1, transmit queues 0/1 and other causes all on MSI-X
/// entry 0, each marked valid (bits 3, 7, 11, 15, 19).
const IVAR_ALL_ON_ENTRY_0: u32 = 0x0008_8888;

// Descriptor bits.
const RX_STATUS_DD: u8 = 1 << 0;
const RX_STATUS_EOP: u8 = 1 << 1;
const TX_CMD_EOP: u8 = 1 << 0;
const TX_CMD_IFCS: u8 = 1 << 1;
const TX_CMD_RS: u8 = 1 << 3;
const TX_STATUS_DD: u8 = 1 << 0;

/// Test-only fault (`gridos.fault=e1000-tx-hang`, honoured only with `gridos.test`):
/// transmit completions are ignored, as if the device had stopped sending, so the
/// hang handling runs under QEMU (whose NICs never hang).
static FAULT_TX_HANG: AtomicBool = AtomicBool::new(false);

/// Turns the transmit-hang fault on for every NIC of this driver (tests only).
pub fn inject_tx_hang() {
    log::warn!("e1000: fault injected: transmit completions are ignored (test mode)");
    FAULT_TX_HANG.store(true, Ordering::Relaxed);
}

/// The models this driver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// 82540EM, PCI, INTx only in QEMU.
    I82540Em,
    /// 82574L, PCIe, MSI and MSI-X.
    I82574L,
}

impl Model {
    /// The model of PCI function `d`, if this driver takes it.
    pub fn of(d: &PciDevice) -> Option<Model> {
        match (d.vendor_id, d.device_id) {
            (0x8086, 0x100e) => Some(Model::I82540Em),
            (0x8086, 0x10d3) => Some(Model::I82574L),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Model::I82540Em => "Intel 82540EM (e1000)",
            Model::I82574L => "Intel 82574L (e1000e)",
        }
    }

    /// EERD: (address shift, done bit) differ between the two generations.
    fn eerd_layout(self) -> (u32, u32) {
        match self {
            Model::I82540Em => (8, 1 << 4),
            Model::I82574L => (2, 1 << 1),
        }
    }
}

/// Why a NIC could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E1000Error {
    NoBar,
    Map,
    OutOfMemory,
    /// CTRL.RST did not clear.
    ResetTimeout,
    /// Neither the receive address register nor the EEPROM holds a usable MAC.
    NoMacAddress,
}

impl core::fmt::Display for E1000Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            E1000Error::NoBar => "no memory BAR 0",
            E1000Error::Map => "cannot map the registers",
            E1000Error::OutOfMemory => "out of DMA memory",
            E1000Error::ResetTimeout => "reset did not complete",
            E1000Error::NoMacAddress => "no usable MAC address",
        })
    }
}

/// Why a NIC was taken out of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Frames queued for transmission made no progress for [`TX_HANG_NS`].
    TransmitHang,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Failure::TransmitHang => write!(f, "transmit hang (no progress in {} s)", TX_HANG_NS / 1_000_000_000),
        }
    }
}

/// What changed on a NIC since the last look, for the network stack to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicNews {
    Link(Link),
    OutOfService(Failure),
}

/// How the NIC's interrupts arrive.
#[derive(Debug, Clone, Copy)]
pub enum Interrupts {
    Message(Delivery),
    /// The shared INTx vector; the handler keeps the causes it read here.
    Intx(&'static AtomicU32),
    /// No interrupt: the stack polls this NIC on a short timer.
    Polled,
}

impl core::fmt::Display for Interrupts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Interrupts::Message(delivery) => write!(f, "{delivery}"),
            Interrupts::Intx(_) => f.write_str("INTx (shared)"),
            Interrupts::Polled => f.write_str("none, polled"),
        }
    }
}

/// One e1000-family NIC. NICs live as long as the kernel: the device keeps DMA
/// access to the rings and buffers below unless taken out of service.
pub struct E1000Nic {
    pub address: PciAddress,
    pub model: Model,
    regs: u64,
    rx_ring: u64,
    rx_buffers: u64,
    tx_ring: u64,
    tx_buffers: u64,
    /// The next receive descriptor the device completes (in order).
    rx_next: usize,
    /// Set while dropping the rest of a frame that spans descriptors.
    rx_discarding: bool,
    /// The next transmit slot to fill, and the oldest one not yet completed.
    tx_tail: usize,
    tx_clean: usize,
    /// Since when the transmit ring has had frames queued without progress.
    tx_stalled_since_ns: Option<u64>,
    mac: [u8; 6],
    link: Link,
    link_checked_ns: u64,
    failure: Option<Failure>,
    pub event: &'static Event,
    pub interrupts: Interrupts,
    /// Frames dropped because the ring was full or the frame too long.
    pub tx_errors: u64,
    /// Frames the device completed with errors, or that did not fit one buffer.
    pub rx_errors: u64,
    /// Receive overruns the device reported (ICR.RXO).
    pub rx_overruns: u64,
    /// When set, only frames the overlay's underlay filter accepts reach the stack.
    pub ingress_filter_port: Option<u16>,
    pub rx_filtered: u64,
    pub counters: NicCounters,
}

/// Legacy receive descriptor (3.2.3).
#[repr(C)]
#[derive(Clone, Copy)]
struct RxDescriptor {
    buffer: u64,
    length: u16,
    checksum: u16,
    status: u8,
    errors: u8,
    special: u16,
}

/// Legacy transmit descriptor (3.3.3).
#[repr(C)]
#[derive(Clone, Copy)]
struct TxDescriptor {
    buffer: u64,
    length: u16,
    cso: u8,
    cmd: u8,
    status: u8,
    css: u8,
    special: u16,
}

const _: () = assert!(core::mem::size_of::<RxDescriptor>() == DESCRIPTOR_BYTES);
const _: () = assert!(core::mem::size_of::<TxDescriptor>() == DESCRIPTOR_BYTES);

fn alloc_pages(pages: u64) -> Result<u64, E1000Error> {
    frames::alloc_contiguous(pages, PAGE_BYTES).ok_or(E1000Error::OutOfMemory)
}

impl E1000Nic {
    /// Resets the NIC at `device`, sets up its rings and interrupts and starts it.
    pub fn new(device: &PciDevice, model: Model) -> Result<E1000Nic, E1000Error> {
        let address = device.address;
        let regs = address.memory_bar(0).ok_or(E1000Error::NoBar)?;
        paging::map_mmio(regs, REGISTER_WINDOW_BYTES).map_err(|_| E1000Error::Map)?;
        let has_msi = address.capability(0x11).is_some() || address.capability(0x05).is_some();
        // Memory decoding and bus mastering on; INTx stays on for functions without MSI.
        let command = address.read_config(0x04) & 0xffff;
        address.write_config(0x04, (command | 0b110) & !(1 << 10));
        let mut nic = E1000Nic {
            address,
            model,
            regs,
            rx_ring: 0,
            rx_buffers: 0,
            tx_ring: 0,
            tx_buffers: 0,
            rx_next: 0,
            rx_discarding: false,
            tx_tail: 0,
            tx_clean: 0,
            tx_stalled_since_ns: None,
            mac: [0; 6],
            link: Link::Down,
            link_checked_ns: 0,
            failure: None,
            event: &NEVER,
            interrupts: Interrupts::Polled,
            tx_errors: 0,
            rx_errors: 0,
            rx_overruns: 0,
            ingress_filter_port: None,
            rx_filtered: 0,
            counters: NicCounters::default(),
        };
        // Reset first: firmware (a PXE ROM) may have left the NIC running on its own rings.
        if let Err(e) = nic.reset() {
            address.disable_dma();
            return Err(e);
        }
        let ring_pages = |count: usize| (count * BUFFER_BYTES) as u64 / PAGE_BYTES;
        nic.rx_ring = alloc_pages(1)?;
        nic.rx_buffers = alloc_pages(ring_pages(RX_COUNT))?;
        nic.tx_ring = alloc_pages(1)?;
        nic.tx_buffers = alloc_pages(ring_pages(TX_COUNT))?;
        nic.mac = match nic.read_mac() {
            Some(mac) => mac,
            None => {
                address.disable_dma();
                return Err(E1000Error::NoMacAddress);
            }
        };
        if has_msi {
            address.enable_dma();
            let (event, delivery) = msi::attach(address);
            nic.event = event;
            nic.interrupts = if delivery == Delivery::Tick { Interrupts::Polled } else { Interrupts::Message(delivery) };
        } else if let Some((event, causes)) = super::virtio::attach_intel_intx(address, regs + REG_ICR) {
            nic.event = event;
            nic.interrupts = Interrupts::Intx(causes);
        }
        nic.start();
        Ok(nic)
    }

    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: `regs` is the NIC's BAR 0, mapped uncached for REGISTER_WINDOW_BYTES
        // in `new`; every offset used is a register within it.
        unsafe { core::ptr::read_volatile((self.regs + offset) as usize as *const u32) }
    }

    fn write32(&self, offset: u64, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.regs + offset) as usize as *mut u32, value) }
    }

    /// Global reset (14.3 / 82574 4.6.1), interrupts masked before and after.
    fn reset(&mut self) -> Result<(), E1000Error> {
        self.write32(REG_IMC, u32::MAX);
        self.write32(REG_RCTL, 0);
        self.write32(REG_TCTL, 0);
        self.write32(REG_CTRL, self.read32(REG_CTRL) | CTRL_RST);
        time::sleep_us(1000);
        let deadline = time::since_boot_ns() + 100_000_000;
        while self.read32(REG_CTRL) & CTRL_RST != 0 {
            if time::since_boot_ns() > deadline {
                return Err(E1000Error::ResetTimeout);
            }
            core::hint::spin_loop();
        }
        self.write32(REG_IMC, u32::MAX);
        let _ = self.read32(REG_ICR);
        Ok(())
    }

    /// The MAC from receive address 0 (loaded from the EEPROM at reset), else from
    /// the EEPROM's first three words.
    fn read_mac(&self) -> Option<[u8; 6]> {
        let (low, high) = (self.read32(REG_RAL0), self.read32(REG_RAH0));
        let mut mac = [0u8; 6];
        mac[..4].copy_from_slice(&low.to_le_bytes());
        mac[4..].copy_from_slice(&high.to_le_bytes()[..2]);
        if high & (1 << 31) == 0 || !usable_mac(&mac) {
            for word in 0..3u32 {
                let value = self.read_eeprom(word)?;
                mac[word as usize * 2..word as usize * 2 + 2].copy_from_slice(&value.to_le_bytes());
            }
            if !usable_mac(&mac) {
                return None;
            }
            self.write32(REG_RAL0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
            self.write32(REG_RAH0, u32::from(u16::from_le_bytes([mac[4], mac[5]])) | (1 << 31));
        }
        Some(mac)
    }

    /// One EEPROM word through EERD (13.4.4), with a 10 ms limit.
    fn read_eeprom(&self, word: u32) -> Option<u16> {
        let (shift, done) = self.model.eerd_layout();
        self.write32(REG_EERD, (word << shift) | 1);
        let deadline = time::since_boot_ns() + 10_000_000;
        loop {
            let value = self.read32(REG_EERD);
            if value & done != 0 {
                return Some((value >> 16) as u16);
            }
            if time::since_boot_ns() > deadline {
                return None;
            }
            core::hint::spin_loop();
        }
    }

    fn rx_descriptor(&self, index: usize) -> *mut RxDescriptor {
        debug_assert!(index < RX_COUNT);
        (self.rx_ring as usize as *mut RxDescriptor).wrapping_add(index % RX_COUNT)
    }

    fn tx_descriptor(&self, index: usize) -> *mut TxDescriptor {
        debug_assert!(index < TX_COUNT);
        (self.tx_ring as usize as *mut TxDescriptor).wrapping_add(index % TX_COUNT)
    }

    /// Fills the rings, programs receive, transmit and interrupts (14.4-14.5), and
    /// reads the link.
    fn start(&mut self) {
        let ctrl = self.read32(REG_CTRL);
        self.write32(REG_CTRL, (ctrl | CTRL_SLU | CTRL_ASDE) & !(CTRL_LRST | CTRL_PHY_RST | CTRL_ILOS | CTRL_VME));
        for i in 0..128 {
            self.write32(REG_MTA + 4 * i, 0);
        }
        for i in 0..RX_COUNT {
            let descriptor = RxDescriptor {
                buffer: self.rx_buffers + (i * BUFFER_BYTES) as u64,
                length: 0,
                checksum: 0,
                status: 0,
                errors: 0,
                special: 0,
            };
            // SAFETY: descriptor i of our receive ring page (i < RX_COUNT fits one
            // page); the device does not own it yet (receive is disabled).
            unsafe { core::ptr::write_volatile(self.rx_descriptor(i), descriptor) };
        }
        for i in 0..TX_COUNT {
            let descriptor = TxDescriptor { buffer: 0, length: 0, cso: 0, cmd: 0, status: 0, css: 0, special: 0 };
            // SAFETY: descriptor i of our transmit ring page; transmit is disabled.
            unsafe { core::ptr::write_volatile(self.tx_descriptor(i), descriptor) };
        }
        self.write32(REG_RDBAL, self.rx_ring as u32);
        self.write32(REG_RDBAH, (self.rx_ring >> 32) as u32);
        self.write32(REG_RDLEN, (RX_COUNT * DESCRIPTOR_BYTES) as u32);
        self.write32(REG_RDH, 0);
        // All but one descriptor belong to the device (head == tail means empty).
        self.write32(REG_RDT, (RX_COUNT - 1) as u32);
        self.write32(REG_RDTR, 0);
        self.write32(REG_ITR, 0);
        self.write32(REG_TDBAL, self.tx_ring as u32);
        self.write32(REG_TDBAH, (self.tx_ring >> 32) as u32);
        self.write32(REG_TDLEN, (TX_COUNT * DESCRIPTOR_BYTES) as u32);
        self.write32(REG_TDH, 0);
        self.write32(REG_TDT, 0);
        self.write32(REG_TIPG, TIPG_COPPER);
        self.write32(REG_TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD_FULL_DUPLEX);
        // Broadcast and all multicast (IPv6 neighbour discovery), CRC stripped, 2 KiB buffers.
        self.write32(REG_RCTL, RCTL_EN | RCTL_BAM | RCTL_MPE | RCTL_SECRC);
        let mut mask = INT_LSC | INT_RXSEQ | INT_RXDMT0 | INT_RXO | INT_RXT0;
        if matches!(self.interrupts, Interrupts::Message(Delivery::MsiX)) {
            self.write32(REG_CTRL_EXT, self.read32(REG_CTRL_EXT) | CTRL_EXT_PBA_SUPPORT);
            self.write32(REG_IVAR, IVAR_ALL_ON_ENTRY_0);
            mask |= INT_RXQ0 | INT_OTHER;
        }
        if !matches!(self.interrupts, Interrupts::Polled) {
            self.write32(REG_IMS, mask);
        }
        let _ = self.read32(REG_ICR);
        self.link = self.read_link();
        self.link_checked_ns = time::since_boot_ns();
    }

    fn read_link(&self) -> Link {
        if self.read32(REG_STATUS) & STATUS_LU != 0 { Link::Up } else { Link::Down }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn link(&self) -> Link {
        self.link
    }

    pub fn failure(&self) -> Option<Failure> {
        self.failure
    }

    /// Whether the stack must poll this NIC on a timer (no interrupt reaches it).
    pub fn polled(&self) -> bool {
        matches!(self.interrupts, Interrupts::Polled)
    }

    /// Acknowledges interrupt causes, reads the link when it may have changed and
    /// checks the transmit ring for a hang. Call before each poll of the NIC; the
    /// causes are cleared before the rings are looked at, so a frame that arrives
    /// later raises a new interrupt.
    pub fn service(&mut self, now_ns: u64) -> Option<NicNews> {
        if self.failure.is_some() {
            return None;
        }
        let mut causes = self.read32(REG_ICR);
        if causes != 0 {
            // Reading clears on the 82540EM; the 82574L in MSI-X mode wants a write of ones.
            self.write32(REG_ICR, causes);
        }
        if let Interrupts::Intx(cell) = self.interrupts {
            causes |= cell.swap(0, Ordering::Relaxed);
        }
        if causes & INT_RXO != 0 {
            self.rx_overruns += 1;
        }
        let mut news = None;
        if causes & (INT_LSC | INT_RXSEQ | INT_OTHER) != 0 || now_ns.saturating_sub(self.link_checked_ns) >= LINK_CHECK_NS {
            self.link_checked_ns = now_ns;
            let link = self.read_link();
            if link != self.link {
                self.link = link;
                news = Some(NicNews::Link(link));
            }
        }
        self.reclaim_tx(now_ns);
        if self.link != Link::Up && self.tx_stalled_since_ns.is_some() {
            // A NIC without link may hold its frames: only a hang with link up counts.
            self.tx_stalled_since_ns = Some(now_ns);
        }
        if let Some(since) = self.tx_stalled_since_ns {
            if now_ns.saturating_sub(since) >= TX_HANG_NS {
                self.take_out_of_service(Failure::TransmitHang);
                return Some(NicNews::OutOfService(Failure::TransmitHang));
            }
        }
        news
    }

    /// Stops the NIC for good: interrupts masked, receive and transmit off, bus
    /// mastering off (it no longer reads or writes memory).
    fn take_out_of_service(&mut self, failure: Failure) {
        self.write32(REG_IMC, u32::MAX);
        self.write32(REG_RCTL, 0);
        self.write32(REG_TCTL, 0);
        self.address.disable_dma();
        self.failure = Some(failure);
        self.link = Link::Down;
    }

    fn usable(&self) -> bool {
        self.failure.is_none() && self.link == Link::Up
    }

    fn tx_in_flight(&self) -> usize {
        (self.tx_tail + TX_COUNT - self.tx_clean) % TX_COUNT
    }

    /// Takes back the slots of frames the device has sent.
    fn reclaim_tx(&mut self, now_ns: u64) {
        let mut progressed = false;
        while self.tx_clean != self.tx_tail && !FAULT_TX_HANG.load(Ordering::Relaxed) {
            // SAFETY: descriptor `tx_clean` of our transmit ring page; the device writes
            // only its status byte, which is read volatile.
            let status = unsafe { core::ptr::read_volatile(&raw const (*self.tx_descriptor(self.tx_clean)).status) };
            if status & TX_STATUS_DD == 0 {
                break;
            }
            self.tx_clean = (self.tx_clean + 1) % TX_COUNT;
            progressed = true;
        }
        if self.tx_in_flight() == 0 {
            self.tx_stalled_since_ns = None;
        } else if progressed || self.tx_stalled_since_ns.is_none() {
            self.tx_stalled_since_ns = Some(now_ns);
        }
    }

    /// The next completed receive descriptor holding a whole good frame:
    /// (index, length). Bad ones go back to the device on the way (at most a
    /// ring's worth per call).
    fn next_rx(&mut self) -> Option<(usize, usize)> {
        for _ in 0..RX_COUNT {
            let index = self.rx_next;
            // SAFETY: descriptor `index` (< RX_COUNT) of our receive ring page; read
            // as a whole, volatile, because the device writes it back.
            let descriptor = unsafe { core::ptr::read_volatile(self.rx_descriptor(index)) };
            if descriptor.status & RX_STATUS_DD == 0 {
                return None;
            }
            // The buffer is read only after the status said it is complete.
            fence(Ordering::Acquire);
            let length = usize::from(descriptor.length);
            let end_of_packet = descriptor.status & RX_STATUS_EOP != 0;
            let discarding = self.rx_discarding;
            self.rx_discarding = !end_of_packet;
            if discarding || !end_of_packet || descriptor.errors != 0 || length > BUFFER_BYTES || length < 14 {
                self.rx_errors += 1;
                self.rx_return(index);
                continue;
            }
            return Some((index, length));
        }
        None
    }

    /// Received frame `index`'s bytes (its buffer, `length` <= BUFFER_BYTES).
    fn rx_frame(&self, index: usize, length: usize) -> &[u8] {
        debug_assert!(length <= BUFFER_BYTES && index < RX_COUNT);
        // SAFETY: buffer `index` is ours (BUFFER_BYTES at rx_buffers + index *
        // BUFFER_BYTES, identity-mapped); the device completed it (DD) and does not
        // own it again until `rx_return`; `length` was checked against its size.
        unsafe {
            core::slice::from_raw_parts((self.rx_buffers as usize + (index % RX_COUNT) * BUFFER_BYTES) as *const u8, length.min(BUFFER_BYTES))
        }
    }

    /// Gives receive descriptor `index` (the oldest one) back to the device.
    fn rx_return(&mut self, index: usize) {
        debug_assert_eq!(index, self.rx_next);
        // SAFETY: descriptor `index` of our receive ring page; the device does not own
        // it until RDT moves past it below.
        unsafe { core::ptr::write_volatile(&raw mut (*self.rx_descriptor(index)).status, 0) };
        fence(Ordering::Release);
        self.rx_next = (index + 1) % RX_COUNT;
        // Tail = the descriptor just freed: the device owns everything before it.
        self.write32(REG_RDT, index as u32);
    }

    /// Queues one frame built by `f` into the next transmit slot.
    fn send_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        if len > BUFFER_BYTES || self.tx_in_flight() >= TX_COUNT - 1 || !self.usable() {
            self.tx_errors += 1;
            return f(&mut vec![0u8; len]);
        }
        let slot = self.tx_tail;
        let buffer = self.tx_buffers + (slot * BUFFER_BYTES) as u64;
        // SAFETY: slot `slot`'s buffer is ours and the device is done with it (the slot
        // is not in flight); `len` <= BUFFER_BYTES.
        let frame = unsafe { core::slice::from_raw_parts_mut(buffer as usize as *mut u8, len) };
        let result = f(frame);
        let descriptor = TxDescriptor {
            buffer,
            length: len as u16,
            cso: 0,
            cmd: TX_CMD_EOP | TX_CMD_IFCS | TX_CMD_RS,
            status: 0,
            css: 0,
            special: 0,
        };
        // SAFETY: descriptor `slot` of our transmit ring page; not owned by the device
        // until TDT moves past it below.
        unsafe { core::ptr::write_volatile(self.tx_descriptor(slot), descriptor) };
        fence(Ordering::Release);
        self.tx_tail = (slot + 1) % TX_COUNT;
        if self.tx_stalled_since_ns.is_none() {
            self.tx_stalled_since_ns = Some(time::since_boot_ns());
        }
        self.write32(REG_TDT, self.tx_tail as u32);
        self.counters.tx_frames += 1;
        self.counters.tx_bytes += len as u64;
        result
    }
}

fn usable_mac(mac: &[u8; 6]) -> bool {
    *mac != [0; 6] && *mac != [0xff; 6] && mac[0] & 1 == 0
}

/// The event of a NIC with no interrupt (never signalled).
static NEVER: Event = Event::new();

/// Receive token: the frame stays in its descriptor's buffer until consumed. Holds
/// a raw pointer because smoltcp consumes the transmit token for a reply *inside*
/// the receive closure: both tokens point at the same NIC.
pub struct E1000RxToken<'a> {
    nic: *mut E1000Nic,
    index: usize,
    length: usize,
    _nic: PhantomData<&'a mut E1000Nic>,
}

/// Transmit token; see [`E1000RxToken`] for why it holds a raw pointer.
pub struct E1000TxToken<'a> {
    nic: *mut E1000Nic,
    _nic: PhantomData<&'a mut E1000Nic>,
}

impl RxToken for E1000RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // SAFETY: the NIC outlives the token ('a). The frame slice is in the receive
        // buffer, which the transmit token (used inside `f`) never touches; the
        // transmit path changes only transmit state and counters, not `rx_next`.
        let nic = unsafe { &mut *self.nic };
        nic.counters.rx_frames += 1;
        nic.counters.rx_bytes += self.length as u64;
        let frame: *const [u8] = nic.rx_frame(self.index, self.length);
        // SAFETY: see above: the buffer stays valid and unchanged until `rx_return`.
        let result = f(unsafe { &*frame });
        // SAFETY: the NIC outlives the token; `f` (and the transmit token's use) is over.
        unsafe { &mut *self.nic }.rx_return(self.index);
        result
    }
}

impl TxToken for E1000TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // SAFETY: the NIC outlives the token ('a); the receive token does not touch
        // the transmit state while this one is in use.
        unsafe { &mut *self.nic }.send_with(len, f)
    }
}

impl Device for E1000Nic {
    type RxToken<'a> = E1000RxToken<'a>;
    type TxToken<'a> = E1000TxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.usable() {
            return None;
        }
        self.reclaim_tx(time::since_boot_ns());
        if self.tx_in_flight() >= TX_COUNT - 1 {
            return None;
        }
        let mut dropped = 0;
        let (index, length) = loop {
            let (index, length) = self.next_rx()?;
            match self.ingress_filter_port {
                Some(port) if !overlay::filter::underlay_accepts(self.rx_frame(index, length), port) => {
                    self.rx_filtered += 1;
                    self.rx_return(index);
                    dropped += 1;
                    if dropped == RX_COUNT {
                        return None;
                    }
                }
                _ => break (index, length),
            }
        };
        let nic: *mut E1000Nic = self;
        Some((
            E1000RxToken { nic, index, length, _nic: PhantomData },
            E1000TxToken { nic, _nic: PhantomData },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if !self.usable() {
            return None;
        }
        self.reclaim_tx(time::since_boot_ns());
        if self.tx_in_flight() >= TX_COUNT - 1 {
            return None;
        }
        Some(E1000TxToken { nic: self, _nic: PhantomData })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = super::virtio_net::MTU_BYTES + 14;
        caps.max_burst_size = Some(TX_COUNT / 2);
        caps
    }
}
