//! The node's disks: every virtio-blk device found at boot, by name (`vda`, `vdb`, ...).

use alloc::format;
use alloc::vec::Vec;
use spin::Mutex;

use blockdev::BlockDevice;

use crate::drivers::virtio::Found;
use crate::drivers::virtio_blk::VirtioDisk;

static DISKS: Mutex<Vec<VirtioDisk>> = Mutex::new(Vec::new());

/// Initializes the disks behind `found` and logs each one.
pub fn init(found: Vec<Found>) {
    let mut disks = DISKS.lock();
    for f in found {
        let name = format!("vd{}", (b'a' + disks.len() as u8) as char);
        let address = f.address;
        match VirtioDisk::new(f, name) {
            Ok(disk) => {
                log::info!(
                    "disk {}: virtio-blk {}, {} MiB ({} sectors), serial {:?}, {}",
                    disk.name,
                    address,
                    disk.size_bytes() >> 20,
                    disk.sector_count(),
                    disk.serial,
                    if disk.read_only() { "read-only" } else { "read-write" }
                );
                disks.push(disk);
            }
            Err(e) => log::warn!("disk at {address}: virtio-blk init failed: {e}"),
        }
    }
    if disks.is_empty() {
        log::info!("disks: none");
    }
}

/// Runs `f` on disk `index` (0 = vda), if present.
pub fn with_disk<R>(index: usize, f: impl FnOnce(&mut VirtioDisk) -> R) -> Option<R> {
    DISKS.lock().get_mut(index).map(f)
}

/// Runs `f` on the disk named `name` (e.g. `vdb`), if it is in the table. Unlike an
/// index, a name stays with its disk while another disk is [`take`]n out.
pub fn with_disk_named<R>(name: &str, f: impl FnOnce(&mut VirtioDisk) -> R) -> Option<R> {
    DISKS.lock().iter_mut().find(|disk| disk.name == name).map(f)
}

/// Number of disks.
pub fn count() -> usize {
    DISKS.lock().len()
}

/// Takes disk `index` out of the table, for a task that uses it across `await`s
/// (a lock cannot be held there); give it back with [`restore`].
pub fn take(index: usize) -> Option<VirtioDisk> {
    let mut disks = DISKS.lock();
    (index < disks.len()).then(|| disks.remove(index))
}

/// Puts a disk taken with [`take`] back at `index`.
pub fn restore(index: usize, disk: VirtioDisk) {
    let mut disks = DISKS.lock();
    let at = index.min(disks.len());
    disks.insert(at, disk);
}
