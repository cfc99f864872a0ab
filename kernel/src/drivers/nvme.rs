//! NVMe controllers (NVM Express Base Specification 1.4): reset and enable, an
//! admin queue pair, Identify Controller and Identify Namespace, and one I/O queue
//! pair carrying Read, Write and Flush for namespace 1, as a [`Controller`] of the
//! shared request engine (`blockq`).
//!
//! One command is in flight at a time (the engine's contract): submission queue
//! overflow cannot happen and the completion queue is read in order. Data moves
//! through a bounce buffer of at most 512 KiB (and at most the controller's MDTS)
//! described by PRP1 and a PRP list filled once at start-up (4.3). Completions
//! raise MSI-X entry 0 (`msi`). Flush (6.8) is sent for every `flush`: the shard
//! store acknowledges a write only after it. Namespaces other than 1, and
//! namespaces whose logical block is not 512 bytes, are reported and not used.

use alloc::string::String;

use blockdev::BlockError;

use super::blockq::{Controller, Op};
use super::msi::{self, Delivery};
use super::pci::{PciAddress, PciDevice};
use crate::arch::x86_64::{interrupts, time};
use crate::executor::Event;
use crate::mm::{frames, paging};

const PAGE_BYTES: u64 = 4096;
/// Entries in each queue (one command is in flight at a time).
const QUEUE_ENTRIES: u16 = 16;
/// Largest bounce buffer, in pages (the PRP list is one page: at most 512 entries).
const BOUNCE_PAGES_MAX: u64 = 128;
const _: () = assert!(BOUNCE_PAGES_MAX > 2 && BOUNCE_PAGES_MAX <= 512);
/// Bytes of the register window mapped (registers and the first doorbells).
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
const NVM_FLUSH: u8 = 0x00;
const NVM_WRITE: u8 = 0x01;
const NVM_READ: u8 = 0x02;

/// Why a controller could not be brought up.
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
    /// Namespace 1 is missing or empty.
    NoNamespace,
    /// Namespace 1's logical block is not 512 bytes (its size in bytes).
    BlockSize(u32),
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
            NvmeError::NoNamespace => f.write_str("namespace 1 is not active"),
            NvmeError::BlockSize(b) => write!(f, "namespace 1 has {b}-byte blocks (only 512 are supported)"),
        }
    }
}

/// A submission/completion queue pair in DMA memory.
struct QueuePair {
    id: u16,
    sq: u64,
    cq: u64,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
}

/// What the controller and namespace said about themselves.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub sectors: u64,
    pub namespaces: u32,
    pub volatile_cache: bool,
}

/// One NVMe controller driving namespace 1.
pub struct Nvme {
    pub address: PciAddress,
    regs: u64,
    doorbell_stride: u64,
    admin: QueuePair,
    io: QueuePair,
    bounce: u64,
    bounce_bytes: usize,
    prp_list: u64,
    event: &'static Event,
    pub delivery: Delivery,
    next_cid: u16,
    pending: Option<u16>,
}

fn alloc_pages(pages: u64) -> Result<u64, NvmeError> {
    frames::alloc_contiguous(pages, PAGE_BYTES).ok_or(NvmeError::OutOfMemory)
}

fn ascii(bytes: &[u8]) -> String {
    let text: String = bytes.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' }).collect();
    String::from(text.trim())
}

impl Nvme {
    /// Resets and enables the controller at `device`, identifies it and namespace 1,
    /// and creates the I/O queue pair.
    pub fn new(device: &PciDevice) -> Result<(Nvme, Identity), NvmeError> {
        let address = device.address;
        let regs = address.memory_bar(0).ok_or(NvmeError::NoBar)?;
        paging::map_mmio(regs, REGISTER_WINDOW_BYTES).map_err(|_| NvmeError::Map)?;
        address.enable_dma();
        let (event, delivery) = msi::attach(address);
        let queues = alloc_pages(4)?;
        let prp_list = alloc_pages(1)?;
        let bounce = alloc_pages(BOUNCE_PAGES_MAX)?;
        let mut nvme = Nvme {
            address,
            regs,
            doorbell_stride: 4,
            admin: QueuePair { id: 0, sq: queues, cq: queues + PAGE_BYTES, sq_tail: 0, cq_head: 0, phase: true },
            io: QueuePair { id: 1, sq: queues + 2 * PAGE_BYTES, cq: queues + 3 * PAGE_BYTES, sq_tail: 0, cq_head: 0, phase: true },
            bounce,
            bounce_bytes: (BOUNCE_PAGES_MAX * PAGE_BYTES) as usize,
            prp_list,
            event,
            delivery,
            next_cid: 0,
            pending: None,
        };
        match nvme.bring_up() {
            Ok(identity) => Ok((nvme, identity)),
            Err(e) => {
                // Not used: it must not touch memory the kernel may hand out later
                // (the queues and buffers above stay allocated all the same).
                nvme.shut_down();
                Err(e)
            }
        }
    }

    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: `regs` is the controller's BAR 0, mapped uncached for
        // REGISTER_WINDOW_BYTES at construction; offsets used are within it.
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

    /// Spins (up to `timeout_ns`) until CSTS.RDY equals `ready`.
    fn wait_ready(&self, ready: bool, timeout_ns: u64) -> Result<(), NvmeError> {
        let deadline = time::since_boot_ns() + timeout_ns;
        loop {
            let csts = self.read32(REG_CSTS);
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

    fn bring_up(&mut self) -> Result<Identity, NvmeError> {
        let cap = self.read64(REG_CAP);
        let timeout_ns = ((cap >> 24) & 0xff).max(1) * 500_000_000;
        self.doorbell_stride = 4 << ((cap >> 32) & 0xf);
        let (mps_min, mps_max) = ((cap >> 48) & 0xf, (cap >> 52) & 0xf);
        if mps_min > 0 || mps_max < mps_min {
            return Err(NvmeError::PageSize);
        }
        if 0x1000 + 4 * self.doorbell_stride > REGISTER_WINDOW_BYTES {
            paging::map_mmio(self.regs, 0x1000 + 4 * self.doorbell_stride).map_err(|_| NvmeError::Map)?;
        }
        // 7.6.1: disable, wait for RDY=0, program the admin queue, enable.
        let cc = self.read32(REG_CC);
        if cc & 1 != 0 {
            self.write32(REG_CC, cc & !1);
        }
        self.wait_ready(false, timeout_ns)?;
        let entries = u32::from(QUEUE_ENTRIES - 1);
        self.write32(REG_AQA, (entries << 16) | entries);
        self.write64(REG_ASQ, self.admin.sq);
        self.write64(REG_ACQ, self.admin.cq);
        // IOCQES 16 bytes (2^4), IOSQES 64 bytes (2^6), MPS 4 KiB, NVM command set, enable.
        self.write32(REG_CC, (4 << 20) | (6 << 16) | 1);
        self.wait_ready(true, timeout_ns)?;

        // Identify Controller (CNS 1) and Namespace 1 (CNS 0) into the bounce buffer.
        self.admin_command(ADMIN_IDENTIFY, 0, self.bounce, [1, 0, 0])?;
        let data = self.bounce_slice(4096);
        let mut identity = Identity {
            serial: ascii(&data[4..24]),
            model: ascii(&data[24..64]),
            firmware: ascii(&data[64..72]),
            namespaces: u32::from_le_bytes([data[516], data[517], data[518], data[519]]),
            volatile_cache: data[525] & 1 != 0,
            sectors: 0,
        };
        let mdts = data[77];
        if mdts != 0 {
            let max_bytes = (PAGE_BYTES << mps_min) << mdts.min(20);
            self.bounce_bytes = self.bounce_bytes.min(max_bytes as usize);
        }
        self.admin_command(ADMIN_IDENTIFY, 1, self.bounce, [0, 0, 0])?;
        let data = self.bounce_slice(4096);
        let nsze = u64::from_le_bytes(data[0..8].try_into().unwrap_or([0; 8]));
        let format = usize::from(data[26] & 0xf);
        let lbads = data[128 + 4 * format + 2];
        if nsze == 0 {
            return Err(NvmeError::NoNamespace);
        }
        if lbads != 9 {
            return Err(NvmeError::BlockSize(1u32.checked_shl(u32::from(lbads)).unwrap_or(0)));
        }
        identity.sectors = nsze;

        // The I/O queue pair: completion queue 1 (interrupts on, vector 0), then
        // submission queue 1 bound to it (5.3, 5.4). Both physically contiguous.
        let size = u32::from(QUEUE_ENTRIES - 1) << 16;
        self.admin_command(ADMIN_CREATE_CQ, 0, self.io.cq, [size | 1, 0b11, 0])?;
        self.admin_command(ADMIN_CREATE_SQ, 0, self.io.sq, [size | 1, (1 << 16) | 1, 0])?;

        // The PRP list: every bounce page after the first, in order (4.3).
        for i in 1..BOUNCE_PAGES_MAX {
            // SAFETY: `prp_list` is a page of ours; entry i - 1 is within it (i < BOUNCE_PAGES_MAX <= 512).
            unsafe { core::ptr::write_volatile((self.prp_list as usize as *mut u64).add((i - 1) as usize), self.bounce + i * PAGE_BYTES) };
        }
        let vs = self.read32(REG_VS);
        log::debug!("nvme {}: version {}.{}, doorbell stride {}, {} ({})", self.address, vs >> 16, (vs >> 8) & 0xff,
            self.doorbell_stride, self.delivery, identity.model);
        Ok(identity)
    }

    fn bounce_slice(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: the bounce buffer is BOUNCE_PAGES_MAX pages of ours (identity-mapped);
        // no command is in flight while the CPU reads or fills it.
        unsafe { core::slice::from_raw_parts_mut(self.bounce as usize as *mut u8, len) }
    }

    /// Writes a 64-byte command into `queue`'s next submission slot and rings its doorbell.
    fn submit(&mut self, admin: bool, opcode: u8, nsid: u32, prp1: u64, prp2: u64, cdw: [u32; 4]) -> u16 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let stride = self.doorbell_stride;
        let queue = if admin { &mut self.admin } else { &mut self.io };
        let mut entry = [0u32; 16];
        entry[0] = u32::from(opcode) | (u32::from(cid) << 16);
        entry[1] = nsid;
        entry[6] = prp1 as u32;
        entry[7] = (prp1 >> 32) as u32;
        entry[8] = prp2 as u32;
        entry[9] = (prp2 >> 32) as u32;
        entry[10..14].copy_from_slice(&cdw);
        let slot = (queue.sq + u64::from(queue.sq_tail) * 64) as usize as *mut u32;
        for (i, word) in entry.iter().enumerate() {
            // SAFETY: the submission queue is a page of ours holding QUEUE_ENTRIES
            // 64-byte slots; `sq_tail < QUEUE_ENTRIES`. The device reads a slot only
            // after the doorbell below moves past it.
            unsafe { core::ptr::write_volatile(slot.add(i), *word) };
        }
        queue.sq_tail = (queue.sq_tail + 1) % QUEUE_ENTRIES;
        let doorbell = 0x1000 + u64::from(queue.id) * 2 * stride;
        let tail = u32::from(queue.sq_tail);
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.write32(doorbell, tail);
        cid
    }

    /// The next completion of `queue`, if the device has posted one: (command id, status).
    fn reap(&mut self, admin: bool) -> Option<(u16, u16)> {
        let stride = self.doorbell_stride;
        let queue = if admin { &mut self.admin } else { &mut self.io };
        let entry = (queue.cq + u64::from(queue.cq_head) * 16) as usize as *const u32;
        // SAFETY: the completion queue is a page of ours with QUEUE_ENTRIES 16-byte
        // entries; `cq_head < QUEUE_ENTRIES`; the device writes dword 3 (with the
        // phase bit) last, so a matching phase means the entry is complete.
        let dw3 = unsafe { core::ptr::read_volatile(entry.add(3)) };
        if (dw3 >> 16) & 1 != u32::from(queue.phase) {
            return None;
        }
        queue.cq_head += 1;
        if queue.cq_head == QUEUE_ENTRIES {
            queue.cq_head = 0;
            queue.phase = !queue.phase;
        }
        let doorbell = 0x1000 + (u64::from(queue.id) * 2 + 1) * stride;
        let head = u32::from(queue.cq_head);
        self.write32(doorbell, head);
        Some((dw3 as u16, ((dw3 >> 17) & 0x7ff) as u16))
    }

    /// Runs one admin command to completion (halting between checks).
    fn admin_command(&mut self, opcode: u8, nsid: u32, prp1: u64, cdw: [u32; 3]) -> Result<(), NvmeError> {
        let cid = self.submit(true, opcode, nsid, prp1, 0, [cdw[0], cdw[1], cdw[2], 0]);
        let deadline = time::since_boot_ns() + super::blockq::COMMAND_TIMEOUT_NS;
        loop {
            interrupts::disable();
            if let Some((done, status)) = self.reap(true) {
                interrupts::enable();
                let _ = self.event.take();
                if done != cid {
                    continue; // a stale completion (cannot happen with one command at a time)
                }
                return if status == 0 { Ok(()) } else { Err(NvmeError::AdminStatus(status)) };
            }
            if time::since_boot_ns() > deadline {
                interrupts::enable();
                return Err(NvmeError::AdminTimeout);
            }
            interrupts::enable_and_wait();
        }
    }
}

impl Controller for Nvme {
    fn bounce(&mut self) -> &mut [u8] {
        let len = self.bounce_bytes;
        self.bounce_slice(len)
    }

    fn start(&mut self, op: Op, sector: u64, sectors: u32) -> Result<(), BlockError> {
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
        let cid = match op {
            Op::Read => self.submit(false, NVM_READ, 1, self.bounce, prp2, cdw),
            Op::Write => self.submit(false, NVM_WRITE, 1, self.bounce, prp2, cdw),
            Op::Flush => self.submit(false, NVM_FLUSH, 1, 0, 0, [0; 4]),
        };
        self.pending = Some(cid);
        Ok(())
    }

    fn poll(&mut self) -> Option<Result<(), BlockError>> {
        let pending = self.pending?;
        // Bounded: at most a queue's worth of stale entries is skipped.
        for _ in 0..QUEUE_ENTRIES {
            let (cid, status) = self.reap(false)?;
            if cid != pending {
                continue;
            }
            self.pending = None;
            if status != 0 {
                log::warn!("nvme {}: command {cid} failed: status type {}, code {:#04x}", self.address, status >> 8, status & 0xff);
                return Some(Err(BlockError::Io));
            }
            return Some(Ok(()));
        }
        None
    }

    fn event(&self) -> &'static Event {
        self.event
    }

    fn shut_down(&mut self) {
        self.write32(REG_CC, self.read32(REG_CC) & !1);
        self.address.disable_dma();
        self.pending = None;
    }
}
