//! The machine's inventory, taken once at boot and printed one line per item
//! (`inventory: ...`): CPU model (CPUID brand string) and count (the MADT's
//! enabled CPUs), usable memory, each disk (kind, model, serial, an NVMe namespace's
//! ID, size), each NIC
//! (model, MAC, link), and every PCI function no driver claims (listed and left
//! alone). It is kept in [`get`] for the ledger's capacity report; measuring
//! capacity and reporting it are left to that report.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use blockdev::BlockDevice;

use crate::disks;
use crate::drivers::pci::PciDevice;

/// Most PCI functions listed as unknown (a bound on a machine's odd devices).
const UNKNOWN_MAX: usize = 64;

/// A disk as the inventory knows it.
#[derive(Debug, Clone)]
pub struct DiskInfo {
    pub name: String,
    pub kind: &'static str,
    pub model: String,
    pub serial: String,
    /// An NVMe namespace's ID: with the controller's serial, what names the disk.
    pub nsid: Option<u32>,
    pub size_bytes: u64,
}

/// Whether a NIC's link is up, as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Up,
    Down,
    /// The device does not report its link (virtio-net without the status feature).
    NotReported,
}

impl Link {
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Up => "up",
            Link::Down => "down",
            Link::NotReported => "not reported",
        }
    }
}

/// A NIC as the inventory knows it.
#[derive(Debug, Clone)]
pub struct NicInfo {
    pub name: String,
    pub model: &'static str,
    pub mac: [u8; 6],
    pub link: Link,
}

/// A PCI function that no driver claims.
#[derive(Debug, Clone, Copy)]
pub struct UnknownDevice {
    pub device: PciDevice,
}

/// What the node is made of.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub cpu_model: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
    pub unknown: Vec<UnknownDevice>,
}

static INVENTORY: Mutex<Option<Inventory>> = Mutex::new(None);

/// The inventory taken at boot (`None` before [`collect`]).
#[allow(dead_code)] // for the ledger's capacity report, which is not built yet
pub fn get() -> Option<Inventory> {
    INVENTORY.lock().clone()
}

/// Whether some driver of this kernel claims `d` (or it is the chipset's own bridge).
fn claimed(d: &PciDevice) -> bool {
    d.vendor_id == 0x1af4 || disks::is_nvme(d) || disks::is_ahci(d) || crate::drivers::e1000::Model::of(d).is_some() || d.class == 0x06
}

/// Records NIC `name`'s new link state (the network stack logs the change).
pub fn set_link(name: &str, link: Link) {
    if let Some(inventory) = INVENTORY.lock().as_mut() {
        if let Some(nic) = inventory.nics.iter_mut().find(|n| n.name == name) {
            nic.link = link;
        }
    }
}

/// Takes the inventory from what boot found (disks from `disks`' table), prints it
/// and keeps it.
pub fn collect(cpu_model: &str, cpu_count: u32, memory_bytes: u64, devices: &[PciDevice], nics: Vec<NicInfo>) {
    let mut inventory = Inventory { cpu_model: String::from(cpu_model), cpu_count, memory_bytes, nics, ..Inventory::default() };
    for index in 0..disks::count().min(disks::DISKS_MAX) {
        let info = disks::with_disk(index, |d| DiskInfo {
            name: d.name.clone(),
            kind: d.kind.as_str(),
            model: d.model.clone(),
            serial: d.serial.clone(),
            nsid: d.nsid,
            size_bytes: d.size_bytes(),
        });
        inventory.disks.extend(info);
    }
    for d in devices.iter().filter(|d| !claimed(d)) {
        if inventory.unknown.len() >= UNKNOWN_MAX {
            log::warn!("inventory: more than {UNKNOWN_MAX} unknown PCI functions; the rest are not listed");
            break;
        }
        inventory.unknown.push(UnknownDevice { device: *d });
    }
    print(&inventory);
    *INVENTORY.lock() = Some(inventory);
}

fn mac_text(mac: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5])
}

fn print(inv: &Inventory) {
    log::info!("inventory: cpu {:?} x {}", inv.cpu_model, inv.cpu_count);
    log::info!("inventory: memory {} MiB", inv.memory_bytes >> 20);
    for d in &inv.disks {
        let namespace = d.nsid.map(|n| format!(", namespace {n}")).unwrap_or_default();
        log::info!("inventory: disk {} {}, model {:?}, serial {:?}{namespace}, {} MiB", d.name, d.kind, d.model, d.serial, d.size_bytes >> 20);
    }
    for n in &inv.nics {
        log::info!("inventory: nic {} {}, mac {}, link {}", n.name, n.model, mac_text(&n.mac), n.link.as_str());
    }
    for u in &inv.unknown {
        let d = &u.device;
        log::info!("inventory: pci {} {:04x}:{:04x} class {:02x}.{:02x}.{:02x} ({}): no driver, left alone",
            d.address, d.vendor_id, d.device_id, d.class, d.subclass, d.prog_if, d.class_name());
    }
    let disk_bytes: u64 = inv.disks.iter().map(|d| d.size_bytes).sum();
    log::info!(
        "inventory: {} CPUs, {} MiB memory, {} disks ({} MiB), {} NICs, {} unknown PCI functions",
        inv.cpu_count,
        inv.memory_bytes >> 20,
        inv.disks.len(),
        disk_bytes >> 20,
        inv.nics.len(),
        inv.unknown.len()
    );
}
