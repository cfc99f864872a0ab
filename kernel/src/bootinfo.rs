//! What the boot loader tells the kernel: protocol, command line, memory map and
//! the ACPI RSDP, copied out of loader memory before that memory is reused.
//!
//! Multiboot2 (GRUB) passes a tag list; PVH (QEMU `-kernel`) passes
//! `hvm_start_info`; Multiboot1 (iPXE, for the PXE copy built with the
//! `multiboot1` feature) passes a fixed structure with flag bits. All are read
//! with bounds on every size they declare.

use crate::arch::x86_64::multiboot1::MULTIBOOT1_BOOTLOADER_MAGIC;
use crate::arch::x86_64::start::MULTIBOOT2_BOOTLOADER_MAGIC;

const PVH_START_MAGIC: u32 = 0x336e_c578;
const CMDLINE_MAX_BYTES: usize = 1024;
const MB2_INFO_MAX_BYTES: u32 = 1 << 20;
/// Multiboot1 information: the fixed part up to and including `boot_loader_name`.
const MB1_INFO_BYTES: usize = 68;
const MB1_MMAP_MAX_BYTES: usize = 64 * 1024;

/// How the kernel was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Multiboot2,
    Pvh,
    Multiboot1,
}

/// Memory-map entry types (the E820 numbering both protocols use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Bad,
}

impl RegionKind {
    fn from_e820(kind: u32) -> RegionKind {
        match kind {
            1 => RegionKind::Usable,
            3 => RegionKind::AcpiReclaimable,
            4 => RegionKind::AcpiNvs,
            5 => RegionKind::Bad,
            _ => RegionKind::Reserved,
        }
    }
}

/// One range of physical memory.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub start: u64,
    pub len_bytes: u64,
    pub kind: RegionKind,
}

/// The boot information, owned by the kernel.
pub struct BootInfo {
    pub protocol: Protocol,
    cmdline: [u8; CMDLINE_MAX_BYTES],
    cmdline_len: usize,
    pub regions: heapless::Vec<Region, 128>,
    /// A copy of the RSDP structure, if the loader passed one (Multiboot2 tags 14/15).
    pub rsdp_copy: Option<[u8; 36]>,
    /// The RSDP's physical address, if the loader passed one (PVH).
    pub rsdp_address: Option<u64>,
    loader_name: [u8; 64],
    loader_name_len: usize,
}

/// Why the boot information could not be read.
#[derive(Debug)]
pub enum BootInfoError {
    UnknownProtocol {
        #[allow(dead_code)] // shown through Debug in the boot failure message
        magic: u32,
    },
    TooLarge,
}

/// Reads `len` bytes at physical address `addr` as a slice.
///
/// # Safety
/// The range must be identity-mapped memory the loader handed over, unchanged
/// while the slice lives.
unsafe fn phys_slice<'a>(addr: u64, len: usize) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len) }
}

/// Searches for the ACPI RSDP ("RSD PTR ", 16-byte aligned, checksum over the first
/// 20 bytes) in the first KiB of the EBDA and in 0xE0000..0x100000 (ACPI 6.5, 5.2.5.1).
///
/// # Safety
/// The first MiB of physical memory must be identity-mapped, including page 0.
unsafe fn find_bios_rsdp() -> Option<u64> {
    // SAFETY: the BIOS data area word at 0x40e holds the EBDA segment (guaranteed by the caller).
    let ebda = u64::from(u16::from_le_bytes(unsafe { phys_slice(0x40e, 2) }.try_into().ok()?)) << 4;
    let mut areas: [(u64, usize); 2] = [(0xe_0000, 0x2_0000), (0, 0)];
    if (0x8_0000..0xa_0000).contains(&ebda) {
        areas[1] = (ebda, 1024);
    }
    for (start, len) in areas.into_iter().rev() {
        if len == 0 {
            continue;
        }
        // SAFETY: a range in the first MiB (guaranteed mapped by the caller).
        let area = unsafe { phys_slice(start, len) };
        for (i, chunk) in area.chunks_exact(16).enumerate() {
            if &chunk[..8] != b"RSD PTR " || i * 16 + 20 > area.len() {
                continue;
            }
            let sum = area[i * 16..i * 16 + 20].iter().fold(0u8, |a, &b| a.wrapping_add(b));
            if sum == 0 {
                return Some(start + (i * 16) as u64);
            }
        }
    }
    None
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from(le_u32(b, off)) | (u64::from(le_u32(b, off + 4)) << 32)
}

impl BootInfo {
    fn empty(protocol: Protocol) -> BootInfo {
        BootInfo {
            protocol,
            cmdline: [0; CMDLINE_MAX_BYTES],
            cmdline_len: 0,
            regions: heapless::Vec::new(),
            rsdp_copy: None,
            rsdp_address: None,
            loader_name: [0; 64],
            loader_name_len: 0,
        }
    }

    /// Parses the boot information the entry stub received.
    ///
    /// # Safety
    /// `magic`/`info` must be the registers the boot loader entered with, and the
    /// memory they describe must not have been reused yet.
    pub unsafe fn parse(magic: u32, info: u32) -> Result<BootInfo, BootInfoError> {
        if magic == MULTIBOOT2_BOOTLOADER_MAGIC {
            // SAFETY: forwarded from the caller.
            return unsafe { Self::parse_multiboot2(u64::from(info)) };
        }
        if magic == MULTIBOOT1_BOOTLOADER_MAGIC {
            // SAFETY: forwarded from the caller.
            return unsafe { Self::parse_multiboot1(u64::from(info)) };
        }
        // SAFETY: PVH passes a pointer to hvm_start_info in ebx; reading its magic is
        // how the protocol is recognized (see ../shared/DESIGN.md).
        if info != 0 && unsafe { phys_slice(u64::from(info), 4) } == PVH_START_MAGIC.to_le_bytes() {
            // SAFETY: forwarded from the caller.
            return unsafe { Self::parse_pvh(u64::from(info)) };
        }
        Err(BootInfoError::UnknownProtocol { magic })
    }

    unsafe fn parse_multiboot2(addr: u64) -> Result<BootInfo, BootInfoError> {
        let mut bi = BootInfo::empty(Protocol::Multiboot2);
        // SAFETY: the first 8 bytes are the fixed header (total size, reserved).
        let total = le_u32(unsafe { phys_slice(addr, 8) }, 0);
        if total > MB2_INFO_MAX_BYTES || total < 8 {
            return Err(BootInfoError::TooLarge);
        }
        // SAFETY: the loader says the structure is `total` bytes long (bounded above).
        let info = unsafe { phys_slice(addr, total as usize) };
        let mut off = 8usize;
        while off + 8 <= info.len() {
            let tag_type = le_u32(info, off);
            let tag_size = le_u32(info, off + 4) as usize;
            if tag_type == 0 || tag_size < 8 || off + tag_size > info.len() {
                break;
            }
            let body = &info[off + 8..off + tag_size];
            match tag_type {
                1 => bi.set_cmdline(body),
                2 => {
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len()).min(64);
                    bi.loader_name[..end].copy_from_slice(&body[..end]);
                    bi.loader_name_len = end;
                }
                6 => {
                    let entry_size = le_u32(body, 0) as usize;
                    if entry_size >= 24 {
                        let mut e = 8;
                        while e + 24 <= body.len() {
                            bi.push_region(le_u64(body, e), le_u64(body, e + 8), le_u32(body, e + 16));
                            e += entry_size;
                        }
                    }
                }
                14 | 15 => {
                    let mut rsdp = [0u8; 36];
                    let n = body.len().min(36);
                    rsdp[..n].copy_from_slice(&body[..n]);
                    if tag_type == 15 || bi.rsdp_copy.is_none() {
                        bi.rsdp_copy = Some(rsdp);
                    }
                }
                _ => {}
            }
            off += (tag_size + 7) & !7;
        }
        Ok(bi)
    }

    /// Multiboot1 information (Multiboot Specification 0.6.96, section 3.3): flag
    /// bit 2 = `cmdline`, bit 6 = `mmap_length`/`mmap_addr`, bit 9 = `boot_loader_name`.
    unsafe fn parse_multiboot1(addr: u64) -> Result<BootInfo, BootInfoError> {
        let mut bi = BootInfo::empty(Protocol::Multiboot1);
        if addr == 0 {
            return Err(BootInfoError::TooLarge);
        }
        // SAFETY: the loader passes the fixed-size information structure in ebx.
        let info = unsafe { phys_slice(addr, MB1_INFO_BYTES) };
        let flags = le_u32(info, 0);
        if flags & (1 << 2) != 0 {
            let cmdline_paddr = u64::from(le_u32(info, 16));
            if cmdline_paddr != 0 {
                // SAFETY: a NUL-terminated string the loader placed; read at most the buffer size.
                let raw = unsafe { phys_slice(cmdline_paddr, CMDLINE_MAX_BYTES) };
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                bi.set_cmdline(&raw[..end]);
            }
        }
        if flags & (1 << 6) != 0 {
            let mmap_len = le_u32(info, 44) as usize;
            let mmap_paddr = u64::from(le_u32(info, 48));
            if mmap_len > MB1_MMAP_MAX_BYTES {
                return Err(BootInfoError::TooLarge);
            }
            if mmap_paddr != 0 {
                // SAFETY: the loader says the map is `mmap_len` bytes long (bounded above).
                let map = unsafe { phys_slice(mmap_paddr, mmap_len) };
                // Each entry is `size` (u32, not counting itself), base u64, length u64, type u32.
                let mut e = 0usize;
                while e + 24 <= map.len() {
                    let size = le_u32(map, e) as usize;
                    if size < 20 {
                        break;
                    }
                    bi.push_region(le_u64(map, e + 4), le_u64(map, e + 12), le_u32(map, e + 20));
                    e += size + 4;
                }
            }
        } else if flags & 1 != 0 {
            // Only mem_lower/mem_upper (KiB below 640 KiB and from 1 MiB).
            bi.push_region(0, u64::from(le_u32(info, 4)) * 1024, 1);
            bi.push_region(0x10_0000, u64::from(le_u32(info, 8)) * 1024, 1);
        }
        // Multiboot1 passes no RSDP. Find it in the BIOS areas now, while page 0 (which
        // holds the EBDA pointer) is still mapped; the ACPI code later unmaps page 0.
        // SAFETY: reads the BIOS data area and ROM ranges, identity-mapped by the entry stub.
        bi.rsdp_address = unsafe { find_bios_rsdp() };
        if flags & (1 << 9) != 0 {
            let name_paddr = u64::from(le_u32(info, 64));
            if name_paddr != 0 {
                // SAFETY: a NUL-terminated string the loader placed; read at most 64 bytes.
                let raw = unsafe { phys_slice(name_paddr, 64) };
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                bi.loader_name[..end].copy_from_slice(&raw[..end]);
                bi.loader_name_len = end;
            }
        }
        Ok(bi)
    }

    unsafe fn parse_pvh(addr: u64) -> Result<BootInfo, BootInfoError> {
        let mut bi = BootInfo::empty(Protocol::Pvh);
        // SAFETY: hvm_start_info version 1 is 56 bytes.
        let start = unsafe { phys_slice(addr, 56) };
        let version = le_u32(start, 4);
        let cmdline_paddr = le_u64(start, 24);
        let rsdp_paddr = le_u64(start, 32);
        if cmdline_paddr != 0 {
            // SAFETY: a NUL-terminated string the loader placed; read at most the buffer size.
            let raw = unsafe { phys_slice(cmdline_paddr, CMDLINE_MAX_BYTES) };
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            bi.set_cmdline(&raw[..end]);
        }
        if rsdp_paddr != 0 {
            bi.rsdp_address = Some(rsdp_paddr);
        }
        if version >= 1 {
            let memmap_paddr = le_u64(start, 40);
            let entries = (le_u32(start, 48) as usize).min(256);
            if memmap_paddr != 0 {
                // SAFETY: `entries` records of 24 bytes each, as the loader declared (bounded).
                let map = unsafe { phys_slice(memmap_paddr, entries * 24) };
                for e in map.chunks_exact(24) {
                    bi.push_region(le_u64(e, 0), le_u64(e, 8), le_u32(e, 16));
                }
            }
        }
        let name = b"QEMU PVH";
        bi.loader_name[..name.len()].copy_from_slice(name);
        bi.loader_name_len = name.len();
        Ok(bi)
    }

    fn set_cmdline(&mut self, raw: &[u8]) {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len()).min(CMDLINE_MAX_BYTES);
        self.cmdline[..end].copy_from_slice(&raw[..end]);
        self.cmdline_len = end;
    }

    fn push_region(&mut self, start: u64, len_bytes: u64, kind: u32) {
        if len_bytes == 0 {
            return;
        }
        if self.regions.push(Region { start, len_bytes, kind: RegionKind::from_e820(kind) }).is_err() {
            log::warn!("memory map has more than 128 entries; the rest is ignored");
        }
    }

    /// The kernel command line (non-UTF-8 bytes make it empty).
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// The boot loader's name, as it reported it.
    pub fn loader_name(&self) -> &str {
        core::str::from_utf8(&self.loader_name[..self.loader_name_len]).unwrap_or("?")
    }
}
