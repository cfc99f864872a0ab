//! PCI: configuration space through the legacy 0xCF8/0xCFC mechanism (present on
//! every PC chipset, i440FX and Q35 alike), and a full bus enumeration.
//!
//! PCI Local Bus Specification 3.0, section 3.2.2.3.2 (configuration mechanism #1).

use alloc::vec::Vec;
use spin::Mutex;
use x86_64::instructions::port::Port;

static CONFIG_LOCK: Mutex<()> = Mutex::new(());

/// A bus/device/function address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAddress {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl core::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

impl PciAddress {
    /// The mechanism-#1 address word selecting register `offset` of this function.
    fn config_address(&self, offset: u8) -> u32 {
        assert!(offset % 4 == 0);
        0x8000_0000u32
            | (u32::from(self.bus) << 16)
            | (u32::from(self.device & 31) << 11)
            | (u32::from(self.function & 7) << 8)
            | u32::from(offset)
    }

    /// Reads the 32-bit configuration register at `offset` (4-byte aligned).
    pub fn read_config(&self, offset: u8) -> u32 {
        let address = self.config_address(offset);
        let _guard = CONFIG_LOCK.lock();
        // SAFETY: configuration mechanism #1 ports; the lock keeps address/data pairs together.
        unsafe {
            Port::<u32>::new(0xcf8).write(address);
            Port::<u32>::new(0xcfc).read()
        }
    }

    /// Writes the 32-bit configuration register at `offset` (4-byte aligned).
    pub fn write_config(&self, offset: u8, value: u32) {
        let address = self.config_address(offset);
        let _guard = CONFIG_LOCK.lock();
        // SAFETY: as in `read_config`.
        unsafe {
            Port::<u32>::new(0xcf8).write(address);
            Port::<u32>::new(0xcfc).write(value);
        }
    }
}

/// A function found on the bus.
#[derive(Debug, Clone, Copy)]
pub struct PciDevice {
    pub address: PciAddress,
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub header_type: u8,
}

impl PciDevice {
    /// A short human name for the class.
    pub fn class_name(&self) -> &'static str {
        match (self.class, self.subclass) {
            (0x01, 0x00) => "SCSI storage",
            (0x01, 0x01) => "IDE storage",
            (0x01, 0x06) => "SATA storage",
            (0x01, 0x08) => "NVMe storage",
            (0x01, _) => "storage",
            (0x02, _) => "network",
            (0x03, _) => "display",
            (0x06, 0x00) => "host bridge",
            (0x06, 0x01) => "ISA bridge",
            (0x06, 0x04) => "PCI bridge",
            (0x06, _) => "bridge",
            (0x0c, 0x03) => "USB controller",
            (0x0c, 0x05) => "SMBus",
            (0x00, _) => "unclassified",
            (0xff, _) => "vendor specific",
            _ => "other",
        }
    }

    /// A name for well-known vendor/device pairs.
    pub fn device_name(&self) -> &'static str {
        match (self.vendor_id, self.device_id) {
            (0x1af4, 0x1000 | 0x1041) => "virtio-net",
            (0x1af4, 0x1001 | 0x1042) => "virtio-blk",
            (0x1af4, 0x1005 | 0x1044) => "virtio-rng",
            (0x1af4, _) => "virtio",
            (0x8086, 0x1237) => "Intel 440FX host bridge",
            (0x8086, 0x29c0) => "Intel Q35 host bridge",
            (0x8086, 0x7000) => "Intel PIIX3 ISA bridge",
            (0x8086, 0x2918) => "Intel ICH9 LPC bridge",
            (0x8086, 0x2922) => "Intel ICH9 AHCI",
            (0x8086, 0x2930) => "Intel ICH9 SMBus",
            (0x8086, 0x100e) => "Intel e1000",
            (0x8086, 0x10d3) => "Intel e1000e (82574L)",
            (0x1b36, 0x0010) => "QEMU NVMe",
            (0x1b36, 0x000d) => "QEMU xHCI",
            (0x1234, 0x1111) => "QEMU VGA",
            _ => "",
        }
    }
}

impl PciAddress {
    /// The base address of memory BAR `bar` (0..=5), 64-bit BARs included; `None`
    /// for an I/O BAR, an unassigned one or a bad index.
    pub fn memory_bar(&self, bar: u8) -> Option<u64> {
        if bar > 5 {
            return None;
        }
        let low = self.read_config(0x10 + bar * 4);
        if low & 1 != 0 {
            return None;
        }
        let mut base = u64::from(low & !0xf);
        if (low >> 1) & 3 == 2 {
            if bar == 5 {
                return None;
            }
            base |= u64::from(self.read_config(0x10 + (bar + 1) * 4)) << 32;
        }
        (base != 0).then_some(base)
    }

    /// Turns memory decoding and bus mastering on, and INTx off (the drivers that
    /// call this take MSI or MSI-X, or poll).
    pub fn enable_dma(&self) {
        let command = self.read_config(0x04) & 0xffff;
        self.write_config(0x04, command | 0b110 | (1 << 10));
    }

    /// Turns bus mastering off: the function can no longer read or write memory
    /// (a device taken out of service).
    pub fn disable_dma(&self) {
        let command = self.read_config(0x04) & 0xffff;
        self.write_config(0x04, command & !0b100);
    }

    /// The configuration-space offset of the first capability with `id`, if any
    /// (PCI 3.0, 6.7; at most 48 links are followed).
    pub fn capability(&self, id: u8) -> Option<u8> {
        if (self.read_config(0x04) >> 16) & (1 << 4) == 0 {
            return None;
        }
        let mut cap = (self.read_config(0x34) & 0xfc) as u8;
        for _ in 0..48 {
            if cap == 0 {
                return None;
            }
            let header = self.read_config(cap);
            if header as u8 == id {
                return Some(cap);
            }
            cap = (header >> 8) as u8 & 0xfc;
        }
        None
    }
}

fn probe(address: PciAddress) -> Option<PciDevice> {
    let id = address.read_config(0x00);
    let vendor_id = (id & 0xffff) as u16;
    if vendor_id == 0xffff {
        return None;
    }
    let class_reg = address.read_config(0x08);
    let header = address.read_config(0x0c);
    Some(PciDevice {
        address,
        vendor_id,
        device_id: (id >> 16) as u16,
        class: (class_reg >> 24) as u8,
        subclass: (class_reg >> 16) as u8,
        prog_if: (class_reg >> 8) as u8,
        header_type: (header >> 16) as u8,
    })
}

/// Enumerates every function on every bus.
pub fn enumerate() -> Vec<PciDevice> {
    let mut found = Vec::new();
    for bus in 0..=255u8 {
        for device in 0..32u8 {
            let Some(first) = probe(PciAddress { bus, device, function: 0 }) else { continue };
            let multifunction = first.header_type & 0x80 != 0;
            found.push(first);
            if multifunction {
                for function in 1..8u8 {
                    if let Some(d) = probe(PciAddress { bus, device, function }) {
                        found.push(d);
                    }
                }
            }
        }
    }
    found
}
