//! NVMe controllers (NVM Express Base Specification 1.4): reset and enable, an
//! admin queue pair, Identify Controller, the active namespaces, and for each usable
//! namespace an I/O queue pair of its own carrying Read, Write and Flush, as a
//! [`Controller`] of the shared request engine (`blockq`): every namespace is a disk.
//!
//! Namespaces (7.x, 5.15.2): the active namespace ID list (Identify CNS 02h) on NVMe
//! 1.1 and later (or when the list fails), else Identify Namespace on IDs 1..=NN (at
//! most `nvmeid::NSID_SCAN_MAX`); inactive IDs (NSZE 0) are skipped. At most
//! `nvmeid::NAMESPACES_MAX` (16) namespaces per controller are used; more active ones
//! are reported and left alone. A namespace whose logical block is not 512 bytes
//! (4096-byte "4Kn" formats too: the block-device trait and the shard store work in
//! 512-byte sectors, and emulating them would need read-modify-write of neighbours'
//! acknowledged sectors), or that carries metadata, is reported and not used. The
//! Identify data is read with checks in `userland/nvmeid`.
//!
//! Each namespace gets I/O queue pair `i + 1` (Set Features Number of Queues asks for
//! one per usable namespace; namespaces beyond what the controller grants are
//! reported and not used), its own bounce buffer and PRP lists, so namespaces never
//! share a queue or a buffer and the engine's one-chunk-in-flight contract holds per
//! namespace. They share the controller's registers (each queue has its own
//! doorbells) and its interrupt: every completion queue raises MSI-X entry 0 (`msi`),
//! as AHCI ports share their HBA's. The shard store's synchronous requests poll their
//! own queue; asynchronous requests on several namespaces at once each register with
//! the shared event, which wakes every waiter (`executor::Event`), and each looks at
//! its own completion queue. A timed-out command shuts
//! the whole controller down (disabled, bus mastering off): every namespace of it then
//! fails at once.
//!
//! Data moves directly to and from the caller's buffer (`blockq`): PRP1 is the
//! buffer's address (dword-aligned, else the engine falls back to the bounce buffer),
//! PRP2 the next page or a PRP list (4.3; a page of 512 entries, refilled for every
//! command) naming each later page. One command moves at most the controller's MDTS
//! and at most `DIRECT_BYTES_MAX` (2 MiB); a chunk of up to `DIRECT_COMMANDS_MAX` (4)
//! such commands is in flight at once (each with its own PRP list), its outcome
//! reported once all have completed; longer requests are split by the engine. The
//! fallback is a bounce buffer of at most 512 KiB (and at most MDTS) described by PRP1
//! and a PRP list of its own filled once at start-up. Flush (6.8) is sent for every
//! `flush`: the shard store acknowledges a write only after it.
//! Shutting the controller down (a timeout) clears CC.EN, which aborts every command
//! (7.3.1), and turns bus mastering off, so no buffer is touched after it.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use blockdev::BlockError;
use nvmeid::{Namespace, Unsupported, Version, NAMESPACES_MAX};

use super::blockq::{Controller, DmaBuf, Op};
use super::msi::{self, Delivery};
use super::pci::{PciAddress, PciDevice};
use crate::arch::x86_64::{interrupts, time};
use crate::executor::Event;
use crate::mm::{frames, paging};

const PAGE_BYTES: u64 = 4096;
const _: () = assert!(nvmeid::IDENTIFY_BYTES as u64 == PAGE_BYTES);
/// Entries in each queue (one chunk, at most `DIRECT_COMMANDS_MAX` commands, is in flight at a time per queue).
const QUEUE_ENTRIES: u16 = 16;
/// Largest bounce buffer, in pages (the PRP list is one page: at most 512 entries).
const BOUNCE_PAGES_MAX: u64 = 128;
const _: () = assert!(BOUNCE_PAGES_MAX > 2 && BOUNCE_PAGES_MAX <= PRP_LIST_ENTRIES);
/// Entries in a one-page PRP list (lists are never chained).
const PRP_LIST_ENTRIES: u64 = PAGE_BYTES / 8;
/// Most bytes one command moves on the caller's buffer (MDTS may lower it): whatever
/// its offset in its first page, PRP1 and one PRP list name enough pages, and the
/// count fits NLB's 16 bits.
const DIRECT_BYTES_MAX: u64 = 2 << 20;
const _: () = assert!(DIRECT_BYTES_MAX <= PRP_LIST_ENTRIES * PAGE_BYTES && DIRECT_BYTES_MAX / 512 <= 1 << 16);
const _: () = assert!(DIRECT_BYTES_MAX >= BOUNCE_PAGES_MAX * PAGE_BYTES);
/// Commands one chunk on the caller's buffer is split into, in flight at once (each
/// with a PRP list of its own), so a request larger than MDTS is not one command at
/// a time (the queue holds QUEUE_ENTRIES - 1).
const DIRECT_COMMANDS_MAX: usize = 4;
const _: () = assert!(DIRECT_COMMANDS_MAX < QUEUE_ENTRIES as usize);
/// Bytes of the register window mapped at first (registers and the first doorbells).
const REGISTER_WINDOW_BYTES: u64 = 0x2000;

// Controller registers (3.1).
const REG_CAP: u64 = 0x00;
const REG_VS: u64 = 0x08;
const REG_CC: u64 = 0x14;
const REG_CSTS: u64 = 0x1c;
const REG_AQA: u64 = 0x24;
const REG_ASQ: u64 = 0x28;
const REG_ACQ: u64 = 0x30;

// Admin opcodes (5) and NVM opcodes (6).
const ADMIN_CREATE_SQ: u8 = 0x01;
const ADMIN_CREATE_CQ: u8 = 0x05;
const ADMIN_IDENTIFY: u8 = 0x06;
const ADMIN_SET_FEATURES: u8 = 0x09;
const NVM_FLUSH: u8 = 0x00;
const NVM_WRITE: u8 = 0x01;
const NVM_READ: u8 = 0x02;
// Identify CNS values (5.15.1) and the Number of Queues feature (5.21.1.7).
const CNS_NAMESPACE: u32 = 0x00;
const CNS_CONTROLLER: u32 = 0x01;
const CNS_ACTIVE_LIST: u32 = 0x02;
const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

/// Why a controller, or one of its namespaces, could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmeError {
    NoBar,
    Map,
    OutOfMemory,
    /// CAP's memory page size range excludes 4 KiB.
    PageSize,
    /// CSTS.RDY did not follow CC.EN in CAP.TO.
    ReadyTimeout,
    /// The controller reports a fatal status (CSTS.CFS).
    Fatal,
    /// An admin command did not complete in time.
    AdminTimeout,
    /// An admin command completed with status (SCT << 8 | SC).
    AdminStatus(u16),
    /// The namespace's format is not one the driver uses.
    Unsupported(Unsupported),
    /// The controller granted fewer I/O queue pairs than it has usable namespaces.
    NoQueue { granted: u16 },
}

impl core::fmt::Display for NvmeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NvmeError::NoBar => f.write_str("no memory BAR 0"),
            NvmeError::Map => f.write_str("cannot map the registers"),
            NvmeError::OutOfMemory => f.write_str("out of DMA memory"),
            NvmeError::PageSize => f.write_str("4 KiB memory pages not supported"),
            NvmeError::ReadyTimeout => f.write_str("controller did not become ready"),
            NvmeError::Fatal => f.write_str("controller fatal status"),
            NvmeError::AdminTimeout => f.write_str("admin command timed out"),
            NvmeError::AdminStatus(s) => write!(f, "admin command failed with status {s:#x}"),
            NvmeError::Unsupported(why) => write!(f, "{why}"),
            NvmeError::NoQueue { granted } => write!(f, "the controller grants only {granted} I/O queue pairs"),
        }
    }
}

/// What every namespace of one controller shares: its registers and its interrupt.
struct Shared {
    address: PciAddress,
    regs: u64,
    doorbell_stride: u64,
    event: &'static Event,
    /// Set once the controller is shut down: every namespace fails at once from then on.
    dead: AtomicBool,
}

impl Shared {
    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: `regs` is the controller's BAR 0, mapped uncached at probe for
        // REGISTER_WINDOW_BYTES and, before any queue's doorbell is used, up to that
        // queue's doorbells (`probe_namespaces`); offsets used are within it.
        unsafe { core::ptr::read_volatile((self.regs + offset) as usize as *const u32) }
    }

    fn write32(&self, offset: u64, value: u32) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.regs + offset) as usize as *mut u32, value) }
    }

    fn read64(&self, offset: u64) -> u64 {
        u64::from(self.read32(offset)) | (u64::from(self.read32(offset + 4)) << 32)
    }

    fn write64(&self, offset: u64, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }

    /// Bytes of register window the doorbells of queues 0..=`queue` need.
    fn window_bytes(&self, queue: u16) -> u64 {
        0x1000 + (2 * u64::from(queue) + 2) * self.doorbell_stride
    }

    /// Disables the controller and its bus mastering for good (idempotent).
    fn shut_down(&self) {
        if !self.dead.swap(true, Ordering::AcqRel) {
            self.write32(REG_CC, self.read32(REG_CC) & !1);
            self.address.disable_dma();
        }
    }
}

/// A completion queue entry's fields the driver reads (4.6).
struct Completion {
    cid: u16,
    status: u16,
    dw0: u32,
}

/// A submission/completion queue pair in DMA memory (one page each).
struct QueuePair {
    id: u16,
    sq: u64,
    cq: u64,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    next_cid: u16,
}

impl QueuePair {
    fn new(id: u16, pages: u64) -> QueuePair {
        QueuePair { id, sq: pages, cq: pages + PAGE_BYTES, sq_tail: 0, cq_head: 0, phase: true, next_cid: 0 }
    }

    /// Writes a 64-byte command into the next submission slot, rings the doorbell
    /// and returns the command's id.
    fn submit(&mut self, shared: &Shared, opcode: u8, nsid: u32, prp1: u64, prp2: u64, cdw: [u32; 4]) -> u16 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let mut entry = [0u32; 16];
        entry[0] = u32::from(opcode) | (u32::from(cid) << 16);
        entry[1] = nsid;
        entry[6] = prp1 as u32;
        entry[7] = (prp1 >> 32) as u32;
        entry[8] = prp2 as u32;
        entry[9] = (prp2 >> 32) as u32;
        entry[10..14].copy_from_slice(&cdw);
        let slot = (self.sq + u64::from(self.sq_tail) * 64) as usize as *mut u32;
        for (i, word) in entry.iter().enumerate() {
            // SAFETY: the submission queue is a page of ours holding QUEUE_ENTRIES
            // 64-byte slots; `sq_tail < QUEUE_ENTRIES`. The device reads a slot only
            // after the doorbell below moves past it.
            unsafe { core::ptr::write_volatile(slot.add(i), *word) };
        }
        self.sq_tail = (self.sq_tail + 1) % QUEUE_ENTRIES;
        let doorbell = 0x1000 + u64::from(self.id) * 2 * shared.doorbell_stride;
        core::sync::atomic::fence(Ordering::SeqCst);
        shared.write32(doorbell, u32::from(self.sq_tail));
        cid
    }

    /// The next completion, if the device has posted one.
    fn reap(&mut self, shared: &Shared) -> Option<Completion> {
        let entry = (self.cq + u64::from(self.cq_head) * 16) as usize as *const u32;
        // SAFETY: the completion queue is a page of ours with QUEUE_ENTRIES 16-byte
        // entries; `cq_head < QUEUE_ENTRIES`; the device writes dword 3 (with the
        // phase bit) last, so a matching phase means the entry is complete.
        let dw3 = unsafe { core::ptr::read_volatile(entry.add(3)) };
        if (dw3 >> 16) & 1 != u32::from(self.phase) {
            return None;
        }
        // SAFETY: as above; dword 0 of the same complete entry.
        let dw0 = unsafe { core::ptr::read_volatile(entry) };
        self.cq_head += 1;
        if self.cq_head == QUEUE_ENTRIES {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        let doorbell = 0x1000 + (u64::from(self.id) * 2 + 1) * shared.doorbell_stride;
        shared.write32(doorbell, u32::from(self.cq_head));
        Some(Completion { cid: dw3 as u16, status: ((dw3 >> 17) & 0x7ff) as u16, dw0 })
    }
}

/// What the controller said about itself.
#[derive(Debug, Clone)]
pub struct Identity {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub version: Version,
    /// NN: the largest namespace ID it may have.
    pub namespace_count: u32,
    pub volatile_cache: bool,
}

/// One namespace of a controller, as probing left it.
pub enum Found {
    /// A disk of `sectors` 512-byte sectors.
    Disk(NvmeNamespace, u64),
    /// Active but not used, and why.
    Unusable { nsid: u32, why: NvmeError },
}

/// A controller brought up: what it is and its namespaces in ID order.
pub struct Probed {
    pub identity: Identity,
    pub delivery: Delivery,
    pub namespaces: Vec<Found>,
    /// Active namespaces past the first `NAMESPACES_MAX` (not used).
    pub more: usize,
}

/// One namespace of an NVMe controller, driven through its own I/O queue pair.
pub struct NvmeNamespace {
    shared: &'static Shared,
    pub nsid: u32,
    io: QueuePair,
    bounce: u64,
    bounce_bytes: usize,
    /// The bounce buffer's PRP list (filled once).
    prp_list: u64,
    /// The PRP lists of the commands on the caller's buffer, one per command in
    /// flight (filled per command).
    direct_prp_lists: [u64; DIRECT_COMMANDS_MAX],
    /// Most bytes one command moves (MDTS and `DIRECT_BYTES_MAX`).
    transfer_bytes_max: u64,
    /// The ids of the commands in flight (one, or up to `DIRECT_COMMANDS_MAX` on the caller's buffer).
    pending: heapless::Vec<u16, DIRECT_COMMANDS_MAX>,
    /// A command in flight completed with an error (reported once all have completed).
    pending_error: bool,
}

fn alloc_pages(pages: u64) -> Result<u64, NvmeError> {
    frames::alloc_contiguous(pages, PAGE_BYTES).ok_or(NvmeError::OutOfMemory)
}

/// The admin side of a controller during probing.
struct Admin {
    shared: &'static Shared,
    queue: QueuePair,
    /// One page Identify data lands in.
    buffer: u64,
    /// Largest transfer (MDTS), in bytes.
    transfer_bytes_max: u64,
    /// An admin command timed out: every later one fails at once (a hung controller
    /// costs one deadline, not one per namespace), and the controller is not used.
    hung: bool,
}

/// Resets and enables the controller at `device`, identifies it and its active
/// namespaces, and gives every usable namespace (at most `NAMESPACES_MAX`) an I/O
/// queue pair. A controller with no usable namespace is shut down again.
pub fn probe(device: &PciDevice) -> Result<Probed, NvmeError> {
    let address = device.address;
    let regs = address.memory_bar(0).ok_or(NvmeError::NoBar)?;
    paging::map_mmio(regs, REGISTER_WINDOW_BYTES).map_err(|_| NvmeError::Map)?;
    address.enable_dma();
    let (event, delivery) = msi::attach(address);
    let mut shared = Shared { address, regs, doorbell_stride: 4, event, dead: AtomicBool::new(false) };
    shared.doorbell_stride = 4 << ((shared.read64(REG_CAP) >> 32) & 0xf);
    let shared: &'static Shared = Box::leak(Box::new(shared));
    let probed = alloc_pages(2).and_then(|queue| {
        let buffer = alloc_pages(1)?;
        let transfer_bytes_max = DIRECT_BYTES_MAX;
        let mut admin = Admin { shared, queue: QueuePair::new(0, queue), buffer, transfer_bytes_max, hung: false };
        let identity = admin.bring_up()?;
        let (namespaces, more) = admin.probe_namespaces(&identity)?;
        if admin.hung {
            return Err(NvmeError::AdminTimeout);
        }
        Ok(Probed { identity, delivery, namespaces, more })
    });
    match probed {
        Ok(p) if p.namespaces.iter().any(|n| matches!(n, Found::Disk(..))) => Ok(p),
        other => {
            // Not used: it must not touch memory the kernel may hand out later
            // (the queues and buffers above stay allocated all the same).
            shared.shut_down();
            other
        }
    }
}

impl Admin {
    /// Spins (up to `timeout_ns`) until CSTS.RDY equals `ready`.
    fn wait_ready(&self, ready: bool, timeout_ns: u64) -> Result<(), NvmeError> {
        let deadline = time::since_boot_ns() + timeout_ns;
        loop {
            let csts = self.shared.read32(REG_CSTS);
            if csts & 2 != 0 && ready {
                return Err(NvmeError::Fatal);
            }
            if (csts & 1 != 0) == ready {
                return Ok(());
            }
            if time::since_boot_ns() > deadline {
                return Err(NvmeError::ReadyTimeout);
            }
            core::hint::spin_loop();
        }
    }

    /// Resets, programs the admin queue, enables, and reads Identify Controller.
    fn bring_up(&mut self) -> Result<Identity, NvmeError> {
        let shared = self.shared;
        let cap = shared.read64(REG_CAP);
        let timeout_ns = ((cap >> 24) & 0xff).max(1) * 500_000_000;
        let (mps_min, mps_max) = ((cap >> 48) & 0xf, (cap >> 52) & 0xf);
        if mps_min > 0 || mps_max < mps_min {
            return Err(NvmeError::PageSize);
        }
        if shared.window_bytes(0) > REGISTER_WINDOW_BYTES {
            paging::map_mmio(shared.regs, shared.window_bytes(0)).map_err(|_| NvmeError::Map)?;
        }
        // 7.6.1: disable, wait for RDY=0, program the admin queue, enable.
        let cc = shared.read32(REG_CC);
        if cc & 1 != 0 {
            shared.write32(REG_CC, cc & !1);
        }
        self.wait_ready(false, timeout_ns)?;
        let entries = u32::from(QUEUE_ENTRIES - 1);
        shared.write32(REG_AQA, (entries << 16) | entries);
        shared.write64(REG_ASQ, self.queue.sq);
        shared.write64(REG_ACQ, self.queue.cq);
        // IOCQES 16 bytes (2^4), IOSQES 64 bytes (2^6), MPS 4 KiB, NVM command set, enable.
        shared.write32(REG_CC, (4 << 20) | (6 << 16) | 1);
        self.wait_ready(true, timeout_ns)?;

        self.command(ADMIN_IDENTIFY, 0, self.buffer, [CNS_CONTROLLER, 0, 0])?;
        let c = nvmeid::controller(self.buffer());
        if c.mdts != 0 {
            self.transfer_bytes_max = self.transfer_bytes_max.min(PAGE_BYTES << c.mdts.min(20));
        }
        let version = Version::from_register(shared.read32(REG_VS));
        Ok(Identity {
            model: c.model,
            serial: c.serial,
            firmware: c.firmware,
            version,
            namespace_count: c.namespace_count,
            volatile_cache: c.volatile_cache,
        })
    }

    /// The Identify data in the buffer (valid after an Identify command completed).
    fn buffer(&self) -> &[u8] {
        // SAFETY: `buffer` is a page of ours (identity-mapped); no command is in
        // flight while the CPU reads it.
        unsafe { core::slice::from_raw_parts(self.buffer as usize as *const u8, PAGE_BYTES as usize) }
    }

    /// Runs one admin command to completion (halting between checks): its dword 0.
    fn command(&mut self, opcode: u8, nsid: u32, prp1: u64, cdw: [u32; 3]) -> Result<u32, NvmeError> {
        if self.hung {
            return Err(NvmeError::AdminTimeout);
        }
        let shared = self.shared;
        let cid = self.queue.submit(shared, opcode, nsid, prp1, 0, [cdw[0], cdw[1], cdw[2], 0]);
        let deadline = time::since_boot_ns() + super::blockq::COMMAND_TIMEOUT_NS;
        loop {
            interrupts::disable();
            if let Some(done) = self.queue.reap(shared) {
                interrupts::enable();
                let _ = shared.event.take();
                if done.cid != cid {
                    continue; // a stale completion (cannot happen with one command at a time)
                }
                return if done.status == 0 { Ok(done.dw0) } else { Err(NvmeError::AdminStatus(done.status)) };
            }
            if time::since_boot_ns() > deadline {
                interrupts::enable();
                self.hung = true;
                return Err(NvmeError::AdminTimeout);
            }
            interrupts::enable_and_wait();
        }
    }

    /// Identify Namespace `nsid`, read with checks.
    fn identify_namespace(&mut self, nsid: u32) -> Result<Namespace, NvmeError> {
        self.command(ADMIN_IDENTIFY, nsid, self.buffer, [CNS_NAMESPACE, 0, 0])?;
        Ok(nvmeid::namespace(self.buffer()))
    }

    /// The active namespaces (at most `NAMESPACES_MAX`, ID order) with what Identify
    /// Namespace says of each, and how many more active ones there are.
    fn active_namespaces(&mut self, id: &Identity) -> (Vec<(u32, Result<Namespace, NvmeError>)>, usize) {
        let address = self.shared.address;
        let mut found = Vec::new();
        if id.version.has_active_list() {
            match self.command(ADMIN_IDENTIFY, 0, self.buffer, [CNS_ACTIVE_LIST, 0, 0]) {
                Ok(_) => {
                    let list = nvmeid::active_list(self.buffer(), id.namespace_count);
                    if list.malformed {
                        log::warn!("nvme {address}: the active namespace list is malformed; read up to the bad entry");
                    }
                    for nsid in list.ids {
                        let namespace = self.identify_namespace(nsid);
                        found.push((nsid, namespace));
                    }
                    return (found, list.more);
                }
                Err(e) => log::warn!("nvme {address}: no active namespace list ({e}); probing namespace IDs one by one"),
            }
        }
        let scan = nvmeid::scan_ids(id.namespace_count);
        if id.namespace_count > *scan.end() {
            log::warn!("nvme {address}: {} namespace IDs; only IDs 1..={} are probed", id.namespace_count, scan.end());
        }
        let mut more = 0;
        for nsid in scan {
            match self.identify_namespace(nsid) {
                Ok(Namespace::Inactive) => {}
                Ok(_) if found.len() >= NAMESPACES_MAX => more += 1,
                Err(_) if found.len() >= NAMESPACES_MAX || self.hung => {}
                // An ID the controller refuses to identify is reported with the namespaces.
                namespace => found.push((nsid, namespace)),
            }
        }
        (found, more)
    }

    /// Gives every usable active namespace an I/O queue pair.
    fn probe_namespaces(&mut self, id: &Identity) -> Result<(Vec<Found>, usize), NvmeError> {
        let (active, more) = self.active_namespaces(id);
        let usable = active.iter().filter(|(_, n)| matches!(n, Ok(Namespace::Usable { .. }))).count() as u16;
        let granted = if usable == 0 { 0 } else { self.set_queue_count(usable) };
        if granted > 0 {
            let window = self.shared.window_bytes(granted);
            if window > REGISTER_WINDOW_BYTES {
                paging::map_mmio(self.shared.regs, window).map_err(|_| NvmeError::Map)?;
            }
        }
        let mut namespaces = Vec::new();
        let mut next_queue = 1u16;
        for (nsid, namespace) in active {
            let found = match namespace {
                Ok(Namespace::Usable { blocks }) if next_queue <= granted => {
                    let queue = next_queue;
                    next_queue += 1;
                    match self.create_io_queue(queue, nsid) {
                        Ok(ns) => Found::Disk(ns, blocks),
                        Err(why) => Found::Unusable { nsid, why },
                    }
                }
                Ok(Namespace::Usable { .. }) => Found::Unusable { nsid, why: NvmeError::NoQueue { granted } },
                Ok(Namespace::Unsupported(why)) => Found::Unusable { nsid, why: NvmeError::Unsupported(why) },
                Ok(Namespace::Inactive) => continue,
                Err(why) => Found::Unusable { nsid, why },
            };
            namespaces.push(found);
        }
        Ok((namespaces, more))
    }

    /// Asks for `count` I/O queue pairs (Set Features, Number of Queues): how many
    /// the controller grants (at most `count`). One if the command fails: every
    /// controller has at least one.
    fn set_queue_count(&mut self, count: u16) -> u16 {
        let want = u32::from(count - 1);
        match self.command(ADMIN_SET_FEATURES, 0, 0, [FEATURE_NUMBER_OF_QUEUES, (want << 16) | want, 0]) {
            Ok(dw0) => {
                let (submission, completion) = ((dw0 & 0xffff) as u16, (dw0 >> 16) as u16);
                submission.min(completion).saturating_add(1).min(count)
            }
            Err(e) => {
                log::warn!("nvme {}: Set Features (Number of Queues) failed ({e}); one I/O queue pair", self.shared.address);
                1
            }
        }
    }

    /// Allocates and creates I/O queue pair `queue` for namespace `nsid`: completion
    /// queue (interrupts on, vector 0), then its submission queue (5.3, 5.4).
    fn create_io_queue(&mut self, queue: u16, nsid: u32) -> Result<NvmeNamespace, NvmeError> {
        let io = QueuePair::new(queue, alloc_pages(2)?);
        let prp_list = alloc_pages(1)?;
        let mut direct_prp_lists = [0; DIRECT_COMMANDS_MAX];
        for list in direct_prp_lists.iter_mut() {
            *list = alloc_pages(1)?;
        }
        let bounce = alloc_pages(BOUNCE_PAGES_MAX)?;
        let size = u32::from(QUEUE_ENTRIES - 1) << 16;
        let qid = u32::from(queue);
        self.command(ADMIN_CREATE_CQ, 0, io.cq, [size | qid, 0b11, 0])?;
        self.command(ADMIN_CREATE_SQ, 0, io.sq, [size | qid, (qid << 16) | 1, 0])?;
        // The PRP list: every bounce page after the first, in order (4.3).
        for i in 1..BOUNCE_PAGES_MAX {
            // SAFETY: `prp_list` is a page of ours; entry i - 1 is within it (i < BOUNCE_PAGES_MAX <= 512).
            unsafe { core::ptr::write_volatile((prp_list as usize as *mut u64).add((i - 1) as usize), bounce + i * PAGE_BYTES) };
        }
        let bounce_bytes = (BOUNCE_PAGES_MAX * PAGE_BYTES).min(self.transfer_bytes_max) as usize;
        let transfer_bytes_max = self.transfer_bytes_max;
        Ok(NvmeNamespace {
            shared: self.shared,
            nsid,
            io,
            bounce,
            bounce_bytes,
            prp_list,
            direct_prp_lists,
            transfer_bytes_max,
            pending: heapless::Vec::new(),
            pending_error: false,
        })
    }
}

impl NvmeNamespace {
    /// Submits one Read or Write of `bytes` (whole sectors, at most
    /// `transfer_bytes_max`) at `sector` on the memory at `addr` (dword-aligned),
    /// described by PRP1, PRP2 and, past two pages, the PRP list page `list`; its id.
    fn submit_direct(&mut self, opcode: u8, sector: u64, addr: u64, bytes: u64, list: u64) -> u16 {
        debug_assert!(addr % 4 == 0 && bytes > 0 && bytes % 512 == 0 && bytes <= self.transfer_bytes_max);
        let offset = addr % PAGE_BYTES;
        let first_page = addr - offset;
        // At most PRP_LIST_ENTRIES + 1 pages: bytes <= DIRECT_BYTES_MAX, a whole
        // number of pages no larger than the list covers, and offset < one page.
        let pages = (offset + bytes).div_ceil(PAGE_BYTES).min(PRP_LIST_ENTRIES + 1);
        let prp2 = match pages {
            1 => 0,
            2 => first_page + PAGE_BYTES,
            _ => {
                for i in 1..pages {
                    // SAFETY: `list` is a PRP list page of this namespace's alone and
                    // entry i - 1 is within it (i <= PRP_LIST_ENTRIES); no command in
                    // flight uses it (each command of a chunk has its own list, and
                    // the previous chunk has completed), so the device is not reading it.
                    unsafe { core::ptr::write_volatile((list as usize as *mut u64).add((i - 1) as usize), first_page + i * PAGE_BYTES) };
                }
                list
            }
        };
        let sectors = (bytes / 512) as u32;
        let cdw = [sector as u32, (sector >> 32) as u32, (sectors - 1) & 0xffff, 0];
        self.io.submit(self.shared, opcode, self.nsid, addr, prp2, cdw)
    }
}

// SAFETY: a command's memory is untouched by the device once its completion entry
// is posted (`poll` reports a chunk only after every command of it has completed),
// and `shut_down` clears CC.EN (which
// aborts every outstanding command, 7.3.1) and turns bus mastering off, after which
// the function issues no memory requests (PCI 3.0, 6.2.2). `start_direct` names
// exactly the pages of the sectors it reports: each command's PRP1 and PRP entries
// cover its piece of `[buf.addr, buf.addr + bytes)` and its NLB is its bytes / 512.
unsafe impl Controller for NvmeNamespace {
    fn bounce(&mut self) -> &mut [u8] {
        // SAFETY: the bounce buffer is BOUNCE_PAGES_MAX pages of this namespace's
        // alone (identity-mapped), `bounce_bytes` at most that; no command is in
        // flight on its queue while the CPU reads or fills it.
        unsafe { core::slice::from_raw_parts_mut(self.bounce as usize as *mut u8, self.bounce_bytes) }
    }

    fn start(&mut self, op: Op, sector: u64, sectors: u32) -> Result<(), BlockError> {
        if self.shared.dead.load(Ordering::Acquire) {
            return Err(BlockError::Failed);
        }
        let bytes = u64::from(sectors) * 512;
        if bytes > self.bounce_bytes as u64 || (op != Op::Flush && sectors == 0) {
            return Err(BlockError::OutOfRange);
        }
        let prp2 = match bytes {
            0..=4096 => 0,
            4097..=8192 => self.bounce + PAGE_BYTES,
            _ => self.prp_list,
        };
        let cdw = [sector as u32, (sector >> 32) as u32, sectors.saturating_sub(1) & 0xffff, 0];
        let (shared, nsid, bounce) = (self.shared, self.nsid, self.bounce);
        let cid = match op {
            Op::Read => self.io.submit(shared, NVM_READ, nsid, bounce, prp2, cdw),
            Op::Write => self.io.submit(shared, NVM_WRITE, nsid, bounce, prp2, cdw),
            Op::Flush => self.io.submit(shared, NVM_FLUSH, nsid, 0, 0, [0; 4]),
        };
        self.pending.clear();
        self.pending_error = false;
        let _ = self.pending.push(cid);
        Ok(())
    }

    unsafe fn start_direct(&mut self, op: Op, sector: u64, buf: DmaBuf) -> Result<Option<u32>, BlockError> {
        if self.shared.dead.load(Ordering::Acquire) {
            return Err(BlockError::Failed);
        }
        let opcode = match op {
            Op::Read => NVM_READ,
            Op::Write => NVM_WRITE,
            Op::Flush => return Ok(None),
        };
        // 4.3: PRP1 is dword-aligned and may start inside a page; every later entry
        // names a whole page. Every command below starts at the same dword offset.
        if buf.addr % 4 != 0 {
            return Ok(None);
        }
        let per_command = self.transfer_bytes_max / 512 * 512;
        let bytes = (buf.bytes as u64).min(per_command * DIRECT_COMMANDS_MAX as u64) / 512 * 512;
        if bytes == 0 {
            return Ok(None);
        }
        self.pending.clear();
        self.pending_error = false;
        let mut at = 0;
        // Bounded: DIRECT_COMMANDS_MAX commands of `per_command` bytes cover `bytes`.
        for list in self.direct_prp_lists {
            if at >= bytes {
                break;
            }
            let piece = (bytes - at).min(per_command);
            let cid = self.submit_direct(opcode, sector + at / 512, buf.addr + at, piece, list);
            // Cannot fail: one push per list, DIRECT_COMMANDS_MAX of each.
            let _ = self.pending.push(cid);
            at += piece;
        }
        Ok(Some((at / 512) as u32))
    }

    fn poll(&mut self) -> Option<Result<(), BlockError>> {
        if self.pending.is_empty() {
            return None;
        }
        if self.shared.dead.load(Ordering::Acquire) {
            // Another namespace's timeout shut the controller down: these commands never complete.
            self.pending.clear();
            return Some(Err(BlockError::Failed));
        }
        // Bounded: at most a queue's worth of entries per call.
        for _ in 0..QUEUE_ENTRIES {
            let Some(done) = self.io.reap(self.shared) else { break };
            let Some(i) = self.pending.iter().position(|&cid| cid == done.cid) else { continue };
            self.pending.swap_remove(i);
            if done.status != 0 {
                log::warn!("nvme {} namespace {}: command {} failed: status type {}, code {:#04x}",
                    self.shared.address, self.nsid, done.cid, done.status >> 8, done.status & 0xff);
                self.pending_error = true;
            }
        }
        // The outcome only once every command of the chunk is done with its memory.
        if !self.pending.is_empty() {
            return None;
        }
        Some(if core::mem::take(&mut self.pending_error) { Err(BlockError::Io) } else { Ok(()) })
    }

    fn event(&self) -> &'static Event {
        self.shared.event
    }

    fn shut_down(&mut self) {
        if !self.shared.dead.load(Ordering::Acquire) {
            log::error!("nvme {}: controller shut down (namespace {} timed out); all its namespaces fail from now on",
                self.shared.address, self.nsid);
        }
        self.shared.shut_down();
        self.pending.clear();
    }
}
