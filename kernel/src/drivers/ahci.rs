//! AHCI SATA disks (Serial ATA AHCI 1.3.1, ATA/ATAPI-8 ACS): the HBA in AHCI mode,
//! each implemented port with an ATA disk attached brought up with one command
//! slot, IDENTIFY DEVICE, then READ DMA EXT, WRITE DMA EXT and FLUSH CACHE EXT as a
//! [`Controller`] of the shared request engine (`blockq`).
//!
//! Each port owns one DMA page (command list, received-FIS area, command table
//! with up to `PRDS_MAX` PRD entries) and a 512 KiB bounce buffer. Data moves
//! directly to and from the caller's buffer (`blockq`): one PRD entry per 4 MiB
//! of it, at most `DIRECT_BYTES_MAX` (16 MiB) per command (longer requests are
//! split by the engine); a buffer at an odd address, or above 4 GiB on an HBA
//! without 64-bit DMA, goes through the bounce buffer instead (4.2.3.3). A port
//! is shut down (a timeout) by stopping its command engine (PxCMD.ST, then CR
//! clear: the port is idle, 10.1.2); if it does not stop while a command on a
//! caller's buffer is in flight, the HBA's bus mastering is turned off, so that
//! buffer is not touched after it. The HBA raises MSI when it
//! has one (`msi`); every port of an HBA shares its event. FLUSH CACHE EXT is sent
//! for every `flush`: the shard store acknowledges a write only after it. ATAPI
//! devices, port multipliers, and disks without 48-bit LBA or with logical sectors
//! other than 512 bytes are reported and not used.

use alloc::string::String;
use alloc::vec::Vec;

use blockdev::BlockError;

use super::blockq::{Controller, DmaBuf, Op};
use super::msi::{self, Delivery};
use super::pci::{PciAddress, PciDevice};
use crate::arch::x86_64::{interrupts, time};
use crate::executor::Event;
use crate::mm::{frames, paging};

const PAGE_BYTES: u64 = 4096;
const BOUNCE_PAGES: u64 = 128;
// One PRD entry moves at most 4 MiB, and a command at most 65536 sectors.
const _: () = assert!(BOUNCE_PAGES * PAGE_BYTES <= PRD_BYTES_MAX && BOUNCE_PAGES * PAGE_BYTES / 512 <= 65536);
/// Most bytes one PRD entry moves (4.2.3.3: DBC is 22 bits).
const PRD_BYTES_MAX: u64 = 4 << 20;
/// PRD entries in the command table (it starts at +2048 of the port's page, PRDs at +0x80).
const PRDS_MAX: usize = 4;
const _: () = assert!(0x80 + 16 * PRDS_MAX <= 2048);
/// Most bytes one command moves on the caller's buffer (the count stays below READ
/// DMA EXT's 65536-sector maximum).
const DIRECT_BYTES_MAX: u64 = PRDS_MAX as u64 * PRD_BYTES_MAX;
const _: () = assert!(DIRECT_BYTES_MAX / 512 < 65536);
/// Bytes of the HBA's register block (generic registers and 32 ports).
const ABAR_BYTES: u64 = 0x1100;

// HBA registers (3.1) and port registers (3.3).
const HBA_CAP: u64 = 0x00;
const HBA_GHC: u64 = 0x04;
const HBA_IS: u64 = 0x08;
const HBA_PI: u64 = 0x0c;
const PX_CLB: u64 = 0x00;
const PX_FB: u64 = 0x08;
const PX_IS: u64 = 0x10;
const PX_IE: u64 = 0x14;
const PX_CMD: u64 = 0x18;
const PX_TFD: u64 = 0x20;
const PX_SIG: u64 = 0x24;
const PX_SSTS: u64 = 0x28;
const PX_SERR: u64 = 0x30;
const PX_CI: u64 = 0x38;

const CMD_ST: u32 = 1 << 0;
const CMD_FRE: u32 = 1 << 4;
const CMD_FR: u32 = 1 << 14;
const CMD_CR: u32 = 1 << 15;
/// PxIS error bits: task-file, host-bus fatal/data, interface fatal, overflow.
const IS_ERRORS: u32 = (1 << 30) | (1 << 29) | (1 << 28) | (1 << 27) | (1 << 24);
const SIG_ATA: u32 = 0x0000_0101;

const ATA_IDENTIFY: u8 = 0xec;
const ATA_READ_DMA_EXT: u8 = 0x25;
const ATA_WRITE_DMA_EXT: u8 = 0x35;
const ATA_FLUSH_CACHE_EXT: u8 = 0xea;

/// Why a port could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AhciError {
    OutOfMemory,
    /// The port's command engine did not stop or start.
    EngineTimeout,
    /// IDENTIFY DEVICE did not complete or failed.
    Identify,
    /// No 48-bit LBA.
    NoLba48,
    /// Logical sectors of this many bytes.
    SectorSize(u32),
    /// The HBA has 32-bit DMA only and the buffers landed above 4 GiB.
    DmaAbove4GiB,
}

impl core::fmt::Display for AhciError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AhciError::OutOfMemory => f.write_str("out of DMA memory"),
            AhciError::EngineTimeout => f.write_str("port engine did not stop or start"),
            AhciError::Identify => f.write_str("IDENTIFY DEVICE failed"),
            AhciError::NoLba48 => f.write_str("no 48-bit LBA"),
            AhciError::SectorSize(b) => write!(f, "{b}-byte logical sectors (only 512 are supported)"),
            AhciError::DmaAbove4GiB => f.write_str("32-bit DMA only, and its buffers are above 4 GiB"),
        }
    }
}

/// What IDENTIFY DEVICE said.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub sectors: u64,
}

/// An ATA disk on one port of an AHCI HBA.
pub struct AhciPort {
    pub address: PciAddress,
    pub port: u32,
    abar: u64,
    /// Command list (1 KiB) at +0, received FIS (256 B) at +1024, command table at +2048.
    dma: u64,
    bounce: u64,
    event: &'static Event,
    pub delivery: Delivery,
    busy: bool,
    /// The command in flight moves data to or from a caller's buffer.
    direct: bool,
    /// CAP.S64A: the HBA reaches memory above 4 GiB.
    dma_64bit: bool,
}

/// A port found on an HBA: a disk ready to use, or why not.
pub enum Found {
    Disk(AhciPort, Identity),
    Unusable { port: u32, why: String },
}

fn ata_string(words: &[u8]) -> String {
    // ATA strings hold two characters per 16-bit word, high byte first.
    let mut text = String::new();
    for pair in words.chunks_exact(2) {
        for &b in [pair[1], pair[0]].iter() {
            text.push(if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' });
        }
    }
    String::from(text.trim())
}

fn read32(addr: u64) -> u32 {
    // SAFETY: every caller passes an address inside an HBA's ABAR, mapped uncached
    // for ABAR_BYTES in `probe` before any port is touched.
    unsafe { core::ptr::read_volatile(addr as usize as *const u32) }
}

fn write32(addr: u64, value: u32) {
    // SAFETY: as in `read32`.
    unsafe { core::ptr::write_volatile(addr as usize as *mut u32, value) }
}

fn spin_until(timeout_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = time::since_boot_ns() + timeout_ns;
    while !done() {
        if time::since_boot_ns() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// BIOS/OS handoff (10.6.3): when the HBA supports it (CAP2.BOH), ask the firmware
/// to let go (BOHC.OOS) and wait for it (BOS clear; up to 2 s more while BB says the
/// firmware is busy). A firmware that does not answer is reported and the HBA used anyway.
fn take_from_firmware(abar: u64, address: PciAddress) {
    const HBA_CAP2: u64 = 0x24;
    const HBA_BOHC: u64 = 0x28;
    if read32(abar + HBA_CAP2) & 1 == 0 {
        return;
    }
    write32(abar + HBA_BOHC, read32(abar + HBA_BOHC) | (1 << 1));
    let released = spin_until(25_000_000, || read32(abar + HBA_BOHC) & 1 == 0)
        || (read32(abar + HBA_BOHC) & (1 << 4) != 0 && spin_until(2_000_000_000, || read32(abar + HBA_BOHC) & 1 == 0));
    if !released {
        log::warn!("ahci {address}: the firmware did not hand the HBA over (BOHC {:#x}); using it anyway", read32(abar + HBA_BOHC));
    }
}

/// Brings up the HBA at `device` and every port with an ATA disk behind it.
pub fn probe(device: &PciDevice) -> Vec<Found> {
    let mut found = Vec::new();
    let address = device.address;
    let Some(abar) = address.memory_bar(5) else {
        log::warn!("ahci {address}: no memory BAR 5; not used");
        return found;
    };
    if paging::map_mmio(abar, ABAR_BYTES).is_err() {
        log::warn!("ahci {address}: cannot map its registers; not used");
        return found;
    }
    address.enable_dma();
    take_from_firmware(abar, address);
    // AHCI mode on (GHC.AE), then interrupts on (GHC.IE).
    write32(abar + HBA_GHC, read32(abar + HBA_GHC) | (1 << 31));
    let (event, delivery) = msi::attach(address);
    let cap = read32(abar + HBA_CAP);
    let implemented = read32(abar + HBA_PI);
    log::debug!("ahci {address}: {} ports implemented (mask {implemented:#x}), 64-bit {}, {delivery}", cap & 0x1f, cap >> 31);
    write32(abar + HBA_IS, u32::MAX);
    write32(abar + HBA_GHC, read32(abar + HBA_GHC) | (1 << 1));
    for port in 0..32u32 {
        if implemented & (1 << port) == 0 {
            continue;
        }
        let base = abar + 0x100 + u64::from(port) * 0x80;
        let ssts = read32(base + PX_SSTS);
        let signature = read32(base + PX_SIG);
        if ssts & 0xf != 3 || signature != SIG_ATA {
            // Not ours to drive: stop its engines, so the firmware's command list and
            // FIS area (memory the kernel may reuse) are no longer DMA targets.
            let idle = AhciPort { address, port, abar, dma: 0, bounce: 0, event, delivery, busy: false, direct: false, dma_64bit: false };
            let stopped = idle.stop();
            if ssts & 0xf == 3 {
                found.push(Found::Unusable { port, why: alloc::format!("not an ATA disk (signature {signature:#010x})") });
            } else if !stopped {
                log::warn!("ahci {address} port {port}: empty port did not stop its engines");
            }
            continue;
        }
        let mut disk = AhciPort {
            address,
            port,
            abar,
            dma: 0,
            bounce: 0,
            event,
            delivery,
            busy: false,
            direct: false,
            dma_64bit: cap & (1 << 31) != 0,
        };
        match disk.bring_up() {
            Ok(identity) => found.push(Found::Disk(disk, identity)),
            Err(e) => {
                disk.shut_down();
                found.push(Found::Unusable { port, why: alloc::format!("{e}") });
            }
        }
    }
    found
}

impl AhciPort {
    fn reg(&self, offset: u64) -> u64 {
        self.abar + 0x100 + u64::from(self.port) * 0x80 + offset
    }

    fn stop(&self) -> bool {
        let cmd = self.reg(PX_CMD);
        write32(cmd, read32(cmd) & !CMD_ST);
        let stopped = spin_until(500_000_000, || read32(cmd) & CMD_CR == 0);
        write32(cmd, read32(cmd) & !CMD_FRE);
        stopped && spin_until(500_000_000, || read32(cmd) & CMD_FR == 0)
    }

    fn bring_up(&mut self) -> Result<Identity, AhciError> {
        // 10.3.1: stop the engines before moving the command list and FIS area.
        if !self.stop() {
            return Err(AhciError::EngineTimeout);
        }
        self.dma = frames::alloc_contiguous(1, PAGE_BYTES).ok_or(AhciError::OutOfMemory)?;
        self.bounce = frames::alloc_contiguous(BOUNCE_PAGES, PAGE_BYTES).ok_or(AhciError::OutOfMemory)?;
        if !self.dma_64bit && (self.dma + PAGE_BYTES > 1 << 32 || self.bounce + BOUNCE_PAGES * PAGE_BYTES > 1 << 32) {
            return Err(AhciError::DmaAbove4GiB);
        }
        write32(self.reg(PX_CLB), self.dma as u32);
        write32(self.reg(PX_CLB) + 4, (self.dma >> 32) as u32);
        write32(self.reg(PX_FB), (self.dma + 1024) as u32);
        write32(self.reg(PX_FB) + 4, ((self.dma + 1024) >> 32) as u32);
        write32(self.reg(PX_SERR), u32::MAX);
        write32(self.reg(PX_IS), u32::MAX);
        // Interrupts: D2H register, PIO setup, DMA setup, set device bits, and errors.
        write32(self.reg(PX_IE), 0b1111 | IS_ERRORS);
        let cmd = self.reg(PX_CMD);
        write32(cmd, read32(cmd) | CMD_FRE);
        if !spin_until(1_000_000_000, || read32(self.reg(PX_TFD)) & 0x88 == 0) {
            return Err(AhciError::EngineTimeout);
        }
        write32(cmd, read32(cmd) | CMD_ST);

        self.issue(ATA_IDENTIFY, 0, 1, false, Some((self.bounce, 512)));
        if self.wait_polled() != Some(Ok(())) {
            return Err(AhciError::Identify);
        }
        // SAFETY: the bounce buffer is ours and the command has completed.
        let id = unsafe { core::slice::from_raw_parts(self.bounce as usize as *const u8, 512) };
        let word = |w: usize| u16::from_le_bytes([id[2 * w], id[2 * w + 1]]);
        if word(83) & (1 << 10) == 0 {
            return Err(AhciError::NoLba48);
        }
        // Words 117-118: the logical sector size in words, when word 106 says it is set.
        let w106 = word(106);
        if w106 & 0xc000 == 0x4000 && w106 & (1 << 12) != 0 {
            let words = u32::from(word(117)) | (u32::from(word(118)) << 16);
            if words != 256 {
                return Err(AhciError::SectorSize(words.saturating_mul(2)));
            }
        }
        let sectors = (0..4).fold(0u64, |acc, i| acc | (u64::from(word(100 + i)) << (16 * i)));
        Ok(Identity { serial: ata_string(&id[20..40]), firmware: ata_string(&id[46..54]), model: ata_string(&id[54..94]), sectors })
    }

    /// Turns the HBA's bus mastering off (every port of it stops): for a port whose
    /// engine does not stop while a command on a caller's buffer is in flight.
    fn cut_off(&self) {
        log::error!("ahci {} port {}: the command engine did not stop; bus mastering turned off (the whole HBA stops)",
            self.address, self.port);
        self.address.disable_dma();
    }

    /// Fills slot 0's command header and table with `command` and issues it; `data`
    /// is the memory it moves (address, even bytes, at most `DIRECT_BYTES_MAX`), one
    /// PRD entry per 4 MiB.
    fn issue(&mut self, command: u8, lba: u64, count: u32, write: bool, data: Option<(u64, u32)>) {
        let table = self.dma + 2048;
        let mut fis = [0u8; 20];
        fis[0] = 0x27; // H2D register FIS
        fis[1] = 0x80; // command, not control
        fis[2] = command;
        fis[4] = lba as u8;
        fis[5] = (lba >> 8) as u8;
        fis[6] = (lba >> 16) as u8;
        fis[7] = 0x40; // LBA mode
        fis[8] = (lba >> 24) as u8;
        fis[9] = (lba >> 32) as u8;
        fis[10] = (lba >> 40) as u8;
        fis[12] = count as u8;
        fis[13] = (count >> 8) as u8;
        let mut prds = [[0u32; 4]; PRDS_MAX];
        let mut prdt_entries = 0usize;
        if let Some((addr, bytes)) = data {
            let mut at = 0u64;
            // Bounded: PRDS_MAX entries (callers pass at most DIRECT_BYTES_MAX bytes).
            while at < u64::from(bytes) && prdt_entries < PRDS_MAX {
                let piece = (u64::from(bytes) - at).min(PRD_BYTES_MAX);
                let base = addr + at;
                prds[prdt_entries] = [base as u32, (base >> 32) as u32, 0, (piece as u32 - 1) & 0x3f_ffff];
                prdt_entries += 1;
                at += piece;
            }
        }
        let header = [
            5 | if write { 1 << 6 } else { 0 } | ((prdt_entries as u32) << 16), // CFL 5 dwords, W, PRDTL
            0,
            table as u32,
            (table >> 32) as u32,
        ];
        // SAFETY: `dma` is a page of ours: slot 0's header at +0 (32 bytes), the
        // command table at +2048 (CFIS at +0, PRDs at +0x80, PRDS_MAX of 16 bytes
        // fit before the page ends). The HBA reads them only after CI is set below,
        // and no command is in flight now.
        unsafe {
            let base = self.dma as usize as *mut u32;
            for (i, w) in header.iter().enumerate() {
                core::ptr::write_volatile(base.add(i), *w);
            }
            core::ptr::write_volatile(base.add(1), 0);
            let cfis = table as usize as *mut u8;
            for (i, b) in fis.iter().enumerate() {
                core::ptr::write_volatile(cfis.add(i), *b);
            }
            let prd_ptr = (table + 0x80) as usize as *mut u32;
            for (i, w) in prds[..prdt_entries].iter().flatten().enumerate() {
                core::ptr::write_volatile(prd_ptr.add(i), *w);
            }
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.busy = true;
        write32(self.reg(PX_CI), 1);
    }

    /// Halts until slot 0 completes (for IDENTIFY at start-up), with a deadline.
    fn wait_polled(&mut self) -> Option<Result<(), BlockError>> {
        let deadline = time::since_boot_ns() + super::blockq::COMMAND_TIMEOUT_NS;
        loop {
            interrupts::disable();
            if let Some(result) = self.poll() {
                interrupts::enable();
                return Some(result);
            }
            if time::since_boot_ns() > deadline {
                interrupts::enable();
                return None;
            }
            interrupts::enable_and_wait();
        }
    }
}

// SAFETY: a command's memory is untouched once `poll` reports it: PxCI's bit clears
// when the HBA has finished the command, and after an error the port's engine is
// stopped (CR clear: idle, 10.1.2) or, if it does not stop, the HBA's bus mastering
// is turned off (`cut_off`); `shut_down` does the same. `start_direct`'s
// PRD entries cover exactly `[buf.addr, buf.addr + bytes)` for the sectors it reports.
unsafe impl Controller for AhciPort {
    fn bounce(&mut self) -> &mut [u8] {
        // SAFETY: the bounce buffer is BOUNCE_PAGES pages of ours; the engine touches
        // it only while no command is in flight.
        unsafe { core::slice::from_raw_parts_mut(self.bounce as usize as *mut u8, (BOUNCE_PAGES * PAGE_BYTES) as usize) }
    }

    fn start(&mut self, op: Op, sector: u64, sectors: u32) -> Result<(), BlockError> {
        let bytes = sectors.saturating_mul(512);
        if u64::from(bytes) > BOUNCE_PAGES * PAGE_BYTES || (op != Op::Flush && sectors == 0) {
            return Err(BlockError::OutOfRange);
        }
        let data = Some((self.bounce, bytes));
        self.direct = false;
        match op {
            Op::Read => self.issue(ATA_READ_DMA_EXT, sector, sectors, false, data),
            Op::Write => self.issue(ATA_WRITE_DMA_EXT, sector, sectors, true, data),
            Op::Flush => self.issue(ATA_FLUSH_CACHE_EXT, 0, 0, false, None),
        }
        Ok(())
    }

    unsafe fn start_direct(&mut self, op: Op, sector: u64, buf: DmaBuf) -> Result<Option<u32>, BlockError> {
        let (command, write) = match op {
            Op::Read => (ATA_READ_DMA_EXT, false),
            Op::Write => (ATA_WRITE_DMA_EXT, true),
            Op::Flush => return Ok(None),
        };
        // 4.2.3.3: a PRD's data base address is word-aligned (its byte count, whole
        // sectors, is even); a 32-bit HBA reaches only the low 4 GiB.
        if buf.addr % 2 != 0 || (!self.dma_64bit && buf.end() > 1 << 32) {
            return Ok(None);
        }
        let bytes = (buf.bytes as u64).min(DIRECT_BYTES_MAX) / 512 * 512;
        if bytes == 0 {
            return Ok(None);
        }
        let sectors = (bytes / 512) as u32;
        self.direct = true;
        self.issue(command, sector, sectors, write, Some((buf.addr, bytes as u32)));
        Ok(Some(sectors))
    }

    fn poll(&mut self) -> Option<Result<(), BlockError>> {
        if !self.busy {
            return None;
        }
        let is = read32(self.reg(PX_IS));
        let tfd = read32(self.reg(PX_TFD));
        let failed = is & IS_ERRORS != 0 || (read32(self.reg(PX_CI)) & 1 == 0 && tfd & 1 != 0);
        if !failed && read32(self.reg(PX_CI)) & 1 != 0 {
            return None;
        }
        write32(self.reg(PX_IS), is);
        write32(self.abar + HBA_IS, 1 << self.port);
        self.busy = false;
        if failed {
            log::warn!("ahci {} port {}: command failed: status {:#04x}, error {:#04x}, interrupt status {is:#010x}",
                self.address, self.port, tfd & 0xff, (tfd >> 8) & 0xff);
            // 6.2.2.1: restart the engine to clear the error (CI goes to 0 with ST off).
            write32(self.reg(PX_SERR), u32::MAX);
            if self.stop() {
                let cmd = self.reg(PX_CMD);
                write32(cmd, read32(cmd) | CMD_FRE);
                write32(cmd, read32(cmd) | CMD_ST);
            } else if self.direct {
                // The caller's buffer is handed back with this outcome: the HBA must
                // not reach it any more.
                self.cut_off();
            }
            return Some(Err(BlockError::Io));
        }
        Some(Ok(()))
    }

    fn event(&self) -> &'static Event {
        self.event
    }

    fn shut_down(&mut self) {
        if !self.stop() && self.direct {
            self.cut_off();
        }
        self.busy = false;
    }
}
