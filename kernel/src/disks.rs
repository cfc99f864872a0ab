//! The node's disks, by the names farmers know from Linux: virtio-blk disks `vda`,
//! `vdb`, ...; NVMe namespaces `nvmeCnN` (controller C counted in PCI order, N the
//! namespace ID: `nvme0n1`, `nvme0n2`, ..., `nvme1n1`; every usable active namespace
//! of each controller, up to 16 a controller); SATA disks behind AHCI `sda`, `sdb`,
//! ... (controllers in PCI order, ports ascending). The table holds them in that order (virtio,
//! NVMe, SATA), so the first disk, which holds the node area, is `vda` when there
//! is one. Drivers are in `drivers`; what is stored on the disks is `storage`'s.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use blockdev::{AsyncBlockDevice, BlockDevice, BlockError};

use crate::drivers::ahci::{self, AhciPort};
use crate::drivers::blockq::Queued;
use crate::drivers::nvme::{self, NvmeNamespace};
use crate::drivers::pci::PciDevice;
use crate::drivers::virtio::Found;
use crate::drivers::virtio_blk::VirtioDisk;

/// Most disks the table holds (a bound on what a machine's PCI devices can add).
pub const DISKS_MAX: usize = 64;

/// Which driver a disk is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    Virtio,
    Nvme,
    Sata,
}

impl DiskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskKind::Virtio => "virtio-blk",
            DiskKind::Nvme => "NVMe",
            DiskKind::Sata => "SATA (AHCI)",
        }
    }
}

enum Driver {
    Virtio(VirtioDisk),
    Nvme(Queued<NvmeNamespace>),
    Sata(Queued<AhciPort>),
}

/// One disk of the table.
pub struct Disk {
    /// `vda`, `nvme0n1`, `sda`, ...
    pub name: String,
    /// Another name the configuration may use for it: an NVMe controller's (`nvme0`,
    /// which so names every namespace of that controller).
    pub alias: Option<String>,
    pub kind: DiskKind,
    pub model: String,
    /// The serial number the device reports (an NVMe controller's, shared by its namespaces).
    pub serial: String,
    /// An NVMe disk's namespace ID (the serial and this tell the disk apart).
    pub nsid: Option<u32>,
    driver: Driver,
}

impl Disk {
    /// Whether the disk is read-only.
    pub fn read_only(&self) -> bool {
        match &self.driver {
            Driver::Virtio(d) => d.read_only(),
            _ => false,
        }
    }

    /// Whether the configuration word `word` (a name, alias, serial or `/dev/NAME`) names
    /// this disk (an NVMe controller's name or serial names each of its namespaces).
    pub fn is_named(&self, word: &str) -> bool {
        let word = word.strip_prefix("/dev/").unwrap_or(word);
        word == self.name || self.alias.as_deref() == Some(word) || (!self.serial.is_empty() && word == self.serial)
    }
}

impl BlockDevice for Disk {
    fn sector_count(&self) -> u64 {
        match &self.driver {
            Driver::Virtio(d) => BlockDevice::sector_count(d),
            Driver::Nvme(d) => BlockDevice::sector_count(d),
            Driver::Sata(d) => BlockDevice::sector_count(d),
        }
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        match &mut self.driver {
            Driver::Virtio(d) => d.read(sector, buf),
            Driver::Nvme(d) => d.read(sector, buf),
            Driver::Sata(d) => d.read(sector, buf),
        }
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        match &mut self.driver {
            Driver::Virtio(d) => d.write(sector, buf),
            Driver::Nvme(d) => d.write(sector, buf),
            Driver::Sata(d) => d.write(sector, buf),
        }
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        match &mut self.driver {
            Driver::Virtio(d) => d.flush(),
            Driver::Nvme(d) => d.flush(),
            Driver::Sata(d) => d.flush(),
        }
    }
}

impl AsyncBlockDevice for Disk {
    fn sector_count(&self) -> u64 {
        BlockDevice::sector_count(self)
    }

    async fn read_async<'a>(&'a mut self, sector: u64, buf: &'a mut [u8]) -> Result<(), BlockError> {
        match &mut self.driver {
            Driver::Virtio(d) => d.read_async(sector, buf).await,
            Driver::Nvme(d) => d.read_async(sector, buf).await,
            Driver::Sata(d) => d.read_async(sector, buf).await,
        }
    }

    async fn write_async<'a>(&'a mut self, sector: u64, buf: &'a [u8]) -> Result<(), BlockError> {
        match &mut self.driver {
            Driver::Virtio(d) => d.write_async(sector, buf).await,
            Driver::Nvme(d) => d.write_async(sector, buf).await,
            Driver::Sata(d) => d.write_async(sector, buf).await,
        }
    }
}

static DISKS: Mutex<Vec<Disk>> = Mutex::new(Vec::new());

fn log_disk(disk: &Disk, at: &str, detail: &str) {
    log::info!(
        "disk {}: {} {at}, {} MiB ({} sectors), model {:?}, serial {:?}, {}{detail}",
        disk.name,
        disk.kind.as_str(),
        disk.size_bytes() >> 20,
        BlockDevice::sector_count(disk),
        disk.model,
        disk.serial,
        if disk.read_only() { "read-only" } else { "read-write" }
    );
}

fn push(disks: &mut Vec<Disk>, disk: Disk, at: &str, detail: &str) {
    if disks.len() >= DISKS_MAX {
        log::warn!("disk {}: more than {DISKS_MAX} disks; not used", disk.name);
        return;
    }
    log_disk(&disk, at, detail);
    disks.push(disk);
}

/// Initializes the virtio disks behind `found`, then every NVMe controller and
/// AHCI HBA among `devices`, and logs each disk.
pub fn init(found: Vec<Found>, devices: &[PciDevice]) {
    let mut disks = DISKS.lock();
    for f in found {
        let name = format!("vd{}", (b'a' + disks.len().min(25) as u8) as char);
        let address = f.address;
        match VirtioDisk::new(f) {
            Ok(d) => {
                let serial = d.serial.clone();
                let disk = Disk { name, alias: None, kind: DiskKind::Virtio, model: String::from("virtio-blk"), serial, nsid: None, driver: Driver::Virtio(d) };
                push(&mut disks, disk, &format!("{address}"), "");
            }
            Err(e) => log::warn!("disk at {address}: virtio-blk init failed: {e}"),
        }
    }
    for (index, d) in devices.iter().filter(|d| is_nvme(d)).enumerate() {
        push_nvme(&mut disks, d, &format!("nvme{index}"));
    }
    let mut sata_index = 0usize;
    for d in devices.iter().filter(|d| is_ahci(d)) {
        for port in ahci::probe(d) {
            match port {
                ahci::Found::Disk(port, id) => {
                    let name = format!("sd{}", (b'a' + sata_index.min(25) as u8) as char);
                    sata_index += 1;
                    let at = format!("{} port {}", d.address, port.port);
                    let detail = format!(", firmware {:?}, {}", id.firmware, port.delivery);
                    let disk = Disk {
                        name: name.clone(),
                        alias: None,
                        kind: DiskKind::Sata,
                        model: id.model,
                        serial: id.serial,
                        nsid: None,
                        driver: Driver::Sata(Queued::new(port, id.sectors, name)),
                    };
                    push(&mut disks, disk, &at, &detail);
                }
                ahci::Found::Unusable { port, why } => log::warn!("ahci {} port {port}: not used: {why}", d.address),
            }
        }
    }
    if disks.is_empty() {
        log::info!("disks: none");
    }
}

/// Brings up the NVMe controller `d` (named `controller`, e.g. `nvme0`) and adds a
/// disk per usable namespace; reports the namespaces it leaves alone.
fn push_nvme(disks: &mut Vec<Disk>, d: &PciDevice, controller: &str) {
    let probed = match nvme::probe(d) {
        Ok(p) => p,
        Err(e) => return log::warn!("disk {controller}: NVMe controller at {} not usable: {e}", d.address),
    };
    let id = &probed.identity;
    let disks_found = probed.namespaces.iter().filter(|n| matches!(n, nvme::Found::Disk(..))).count();
    log::info!("nvme {} ({controller}): NVMe {}, model {:?}, serial {:?}, firmware {:?}, up to {} namespaces, {} used, {}{}",
        d.address, id.version, id.model, id.serial, id.firmware, id.namespace_count, disks_found, probed.delivery,
        if id.volatile_cache { ", volatile write cache (flushed)" } else { "" });
    if probed.more > 0 {
        log::warn!("nvme {} ({controller}): {} more active namespaces past the first {}; not used",
            d.address, probed.more, nvmeid::NAMESPACES_MAX);
    }
    for found in probed.namespaces {
        match found {
            nvme::Found::Disk(ns, sectors) => {
                let name = format!("{controller}n{}", ns.nsid);
                let detail = format!(", namespace {} of controller {controller}, {}", ns.nsid, probed.delivery);
                let disk = Disk {
                    name: name.clone(),
                    alias: Some(String::from(controller)),
                    kind: DiskKind::Nvme,
                    model: id.model.clone(),
                    serial: id.serial.clone(),
                    nsid: Some(ns.nsid),
                    driver: Driver::Nvme(Queued::new(ns, sectors, name)),
                };
                push(disks, disk, &format!("{}", d.address), &detail);
            }
            nvme::Found::Unusable { nsid, why } => {
                log::warn!("disk {controller}n{nsid}: NVMe namespace {nsid} at {} not used: {why}", d.address);
            }
        }
    }
}

/// An NVMe controller (class 01, subclass 08, interface 02).
pub fn is_nvme(d: &PciDevice) -> bool {
    (d.class, d.subclass, d.prog_if) == (0x01, 0x08, 0x02)
}

/// An AHCI HBA (class 01, subclass 06, interface 01).
pub fn is_ahci(d: &PciDevice) -> bool {
    (d.class, d.subclass, d.prog_if) == (0x01, 0x06, 0x01)
}

/// Runs `f` on disk `index` (0 = the first disk), if present.
pub fn with_disk<R>(index: usize, f: impl FnOnce(&mut Disk) -> R) -> Option<R> {
    DISKS.lock().get_mut(index).map(f)
}

/// Runs `f` on the disk named `name` (e.g. `vdb`), if it is in the table. Unlike an
/// index, a name stays with its disk while another disk is [`take`]n out.
pub fn with_disk_named<R>(name: &str, f: impl FnOnce(&mut Disk) -> R) -> Option<R> {
    DISKS.lock().iter_mut().find(|disk| disk.name == name).map(f)
}

/// Number of disks.
pub fn count() -> usize {
    DISKS.lock().len()
}

/// Takes disk `index` out of the table, for a task that uses it across `await`s
/// (a lock cannot be held there); give it back with [`restore`].
pub fn take(index: usize) -> Option<Disk> {
    let mut disks = DISKS.lock();
    (index < disks.len()).then(|| disks.remove(index))
}

/// Puts a disk taken with [`take`] back at `index`.
pub fn restore(index: usize, disk: Disk) {
    let mut disks = DISKS.lock();
    let at = index.min(disks.len());
    disks.insert(at, disk);
}
