//! Page tables and the kernel's mapping policy (W^X).
//!
//! Everything is identity-mapped (virtual = physical). The entry stub maps the first
//! 4 GiB writable and executable with 2 MiB pages; [`init`] then applies the policy:
//!
//! - page 0 is unmapped, so null pointers fault;
//! - the kernel image follows its (page-aligned, see `kernel/linker.ld`) sections:
//!   `.text` read-only and executable; `.boot`, `.note.Xen` and `.rodata` read-only
//!   and NX; `.data` and `.bss` (boot stack, IST stacks, boot page tables) writable
//!   and NX. The 2 MiB pages that hold the image are split into 4 KiB pages for this;
//! - every other mapping (the low MiB, free frames, the heap, RAM above 4 GiB and all
//!   device MMIO) is writable and NX;
//! - CR0.WP is set, so read-only pages bind ring 0 too.
//!
//! The one change at run time is wasmtime's code memory: heap pages that a code
//! object owns alone become read-only and executable in [`make_code`] when wasmtime
//! publishes them, and writable and NX again in [`make_data`] before they go back to
//! the heap (`wasm/platform.rs`, `mm/heap.rs`). A page is never writable and
//! executable at once.
//!
//! NX needs EFER.NXE, which the entry stub sets only when CPUID reports NX; without
//! it NX bits are reserved, so none are set and only the write protection holds.
//! A protection change is made visible with `invlpg` on the CPU that made it and,
//! once application processors are online, a TLB shootdown IPI to every other CPU
//! (`arch::x86_64::smp::flush_tlb_others`), sent while the paging lock is held and
//! only when some page's flags really changed.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Mutex;
use x86_64::registers::control::{Cr0, Cr0Flags, Cr3};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags as Flags};
use x86_64::{PhysAddr, VirtAddr};

use super::{frames, FRAME_SIZE_BYTES};

const PAGE_4KIB: u64 = FRAME_SIZE_BYTES;
const PAGE_2MIB: u64 = 2 << 20;
const LOW_IDENTITY_END: u64 = 4 << 30;

/// End of the contiguous identity map starting at address 0.
static MAPPED_END: AtomicU64 = AtomicU64::new(LOW_IDENTITY_END);
/// Extra MMIO windows mapped above `MAPPED_END`.
static MMIO_WINDOWS: Mutex<heapless::Vec<(u64, u64), 32>> = Mutex::new(heapless::Vec::new());
/// Serializes every page-table change.
static LOCK: Mutex<()> = Mutex::new(());
/// Whether EFER.NXE is on, so NX bits may be set (read once in [`init`]).
static NX_ENABLED: AtomicBool = AtomicBool::new(false);

/// Errors from mapping requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No frame left for a page table.
    OutOfFrames,
    /// The address is beyond the 47-bit identity map.
    NotCanonical,
    /// The MMIO window table is full.
    TooManyWindows,
    /// A protection change was asked for a range that does not start on a page.
    Unaligned,
    /// A protection change touched memory outside the RAM the kernel hands out
    /// (the kernel image, page 0, unmapped or MMIO addresses).
    NotHeapRam,
    /// A large page already maps the address where a page table was needed.
    LargePageInTheWay,
}

/// What a leaf mapping allows (for self-tests and fault reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// Size of the page that maps the address.
    pub page_bytes: u64,
    /// Writes are allowed (CR0.WP makes this bind ring 0 too).
    pub writable: bool,
    /// Instruction fetches are allowed (no NX bit, or the CPU has no NX).
    pub executable: bool,
}

/// Whether `[addr, addr + len)` is mapped (identity) and not the null page.
pub fn is_identity_mapped(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    if addr < PAGE_4KIB {
        return false;
    }
    if end <= MAPPED_END.load(Ordering::Relaxed) {
        return true;
    }
    MMIO_WINDOWS.lock().iter().any(|&(s, e)| addr >= s && end <= e)
}

/// Whether NX is in force (EFER.NXE on and the policy applied).
pub fn nx_enabled() -> bool {
    NX_ENABLED.load(Ordering::Relaxed)
}

/// The NX flag, or nothing when the CPU has no NX (the bit would be reserved).
fn nx() -> Flags {
    if nx_enabled() { Flags::NO_EXECUTE } else { Flags::empty() }
}

/// Flags of a data page: present, writable, NX.
fn data_flags() -> Flags {
    Flags::PRESENT | Flags::WRITABLE | nx()
}

fn table(addr: PhysAddr) -> &'static mut PageTable {
    // SAFETY: page-table frames are identity-mapped, 4 KiB-aligned (the CPU requires
    // it of CR3 and of every table entry), and modified only under LOCK; the callers
    // hold LOCK, or only read (`protection`).
    unsafe { &mut *(addr.as_u64() as usize as *mut PageTable) }
}

fn level4() -> &'static mut PageTable {
    table(Cr3::read().0.start_address())
}

fn index(addr: u64, level: u32) -> usize {
    ((addr >> (12 + 9 * (level - 1))) & 511) as usize
}

/// The leaf entry that maps `addr`, with the size of the page it maps.
fn leaf(addr: u64) -> Option<(&'static mut PageTableEntry, u64)> {
    let mut entry = &mut level4()[index(addr, 4)];
    for (level, size) in [(3, 1u64 << 30), (2, PAGE_2MIB), (1, PAGE_4KIB)] {
        if !entry.flags().contains(Flags::PRESENT) {
            return None;
        }
        entry = &mut table(entry.addr())[index(addr, level)];
        if level == 1 || entry.flags().contains(Flags::HUGE_PAGE) {
            return entry.flags().contains(Flags::PRESENT).then_some((entry, size));
        }
    }
    None
}

/// Page-table frames taken from the frame allocator since boot (tables are never freed).
static TABLE_FRAMES: AtomicU64 = AtomicU64::new(0);

/// Bytes of page tables taken from the frame allocator (the boot stub's first tables
/// are in the kernel image's .bss and not counted here).
pub fn table_bytes() -> u64 {
    TABLE_FRAMES.load(Ordering::Relaxed) * FRAME_SIZE_BYTES
}

/// Returns the next-level table behind `entry`, allocating it if absent.
fn next_table(entry: &mut PageTableEntry) -> Result<&'static mut PageTable, MapError> {
    if !entry.flags().contains(Flags::PRESENT) {
        let frame = frames::alloc_frame().ok_or(MapError::OutOfFrames)?;
        TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
        entry.set_addr(PhysAddr::new(frame), Flags::PRESENT | Flags::WRITABLE);
    }
    if entry.flags().contains(Flags::HUGE_PAGE) {
        return Err(MapError::LargePageInTheWay);
    }
    Ok(table(entry.addr()))
}

fn map_2mib(phys: u64, flags: Flags) -> Result<(), MapError> {
    debug_assert!(phys % PAGE_2MIB == 0);
    if phys >= 1 << 47 {
        return Err(MapError::NotCanonical);
    }
    let l3 = next_table(&mut level4()[index(phys, 4)])?;
    let l2 = next_table(&mut l3[index(phys, 3)])?;
    let entry = &mut l2[index(phys, 2)];
    if !entry.flags().contains(Flags::PRESENT) {
        entry.set_addr(PhysAddr::new(phys), Flags::PRESENT | Flags::WRITABLE | Flags::HUGE_PAGE | nx() | flags);
        x86_64::instructions::tlb::flush(VirtAddr::new(phys));
    }
    Ok(())
}

/// Replaces the 2 MiB page that maps `addr` with a table of 512 4 KiB pages with the
/// same translation and permissions. Does nothing if `addr` is mapped by 4 KiB pages.
fn split_2mib(addr: u64) -> Result<(), MapError> {
    let Some((entry, size)) = leaf(addr) else { return Err(MapError::NotHeapRam) };
    if size == PAGE_4KIB {
        return Ok(());
    }
    if size != PAGE_2MIB {
        return Err(MapError::NotHeapRam);
    }
    let base = entry.addr().as_u64();
    // Bit 7 is HUGE in a directory entry but PAT in a page entry: drop it.
    let flags = entry.flags() - Flags::HUGE_PAGE;
    let pt_phys = frames::alloc_frame().ok_or(MapError::OutOfFrames)?;
    TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
    let pt = table(PhysAddr::new(pt_phys));
    for (i, e) in pt.iter_mut().enumerate() {
        e.set_addr(PhysAddr::new(base + i as u64 * PAGE_4KIB), flags);
    }
    // The directory entry must not be NX or read-only itself: the strictest level
    // wins, and some of the new pages may be executable or writable.
    entry.set_addr(PhysAddr::new(pt_phys), Flags::PRESENT | Flags::WRITABLE);
    x86_64::instructions::tlb::flush_all();
    Ok(())
}

/// Sets the flags of the 4 KiB page at `addr` (already split) and flushes it from
/// this CPU's TLB. Returns whether the flags changed (then other CPUs need a flush).
fn set_4kib(addr: u64, flags: Flags) -> Result<bool, MapError> {
    let Some((entry, PAGE_4KIB)) = leaf(addr) else { return Err(MapError::NotHeapRam) };
    if entry.flags() != flags {
        entry.set_flags(flags);
        x86_64::instructions::tlb::flush(VirtAddr::new(addr));
        return Ok(true);
    }
    Ok(false)
}

/// Section bounds of the kernel image, from the linker script.
#[derive(Clone, Copy)]
struct KernelImage {
    start: u64,
    text_start: u64,
    text_end: u64,
    rodata_end: u64,
    end: u64,
}

fn kernel_image() -> KernelImage {
    extern "C" {
        static __kernel_start: u8;
        static __text_start: u8;
        static __text_end: u8;
        static __rodata_end: u8;
        static __kernel_end: u8;
    }
    let at = |p: *const u8| p as u64;
    KernelImage {
        start: at(core::ptr::addr_of!(__kernel_start)),
        text_start: at(core::ptr::addr_of!(__text_start)),
        text_end: at(core::ptr::addr_of!(__text_end)),
        rodata_end: at(core::ptr::addr_of!(__rodata_end)),
        end: at(core::ptr::addr_of!(__kernel_end)),
    }
}

/// The policy for a 4 KiB page below the end of the kernel image's last 2 MiB page.
fn image_page_flags(image: &KernelImage, addr: u64) -> Option<Flags> {
    let read_only = Flags::PRESENT;
    Some(match addr {
        0..PAGE_4KIB => return None,
        a if a < image.start => data_flags(),
        a if a < image.text_start => read_only | nx(),
        a if a < image.text_end => read_only,
        a if a < image.rodata_end => read_only | nx(),
        _ => data_flags(),
    })
}

/// Applies the mapping policy (module docs) and maps RAM up to `highest_ram_address`.
pub fn init(highest_ram_address: u64) -> Result<(), MapError> {
    let guard = LOCK.lock();
    NX_ENABLED.store(Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE), Ordering::Relaxed);
    let image = kernel_image();
    let image_2mib_end = image.end.next_multiple_of(PAGE_2MIB);
    // 1. Split the 2 MiB pages from 0 to the image's end; translations and
    //    permissions stay as the stub made them, so the running code is unaffected.
    let mut addr = 0;
    while addr < image_2mib_end {
        split_2mib(addr)?;
        addr += PAGE_2MIB;
    }
    // 2. Per-page permissions there.
    let mut addr = 0;
    while addr < image_2mib_end {
        match image_page_flags(&image, addr) {
            Some(flags) => {
                set_4kib(addr, flags)?;
            }
            None => {
                if let Some((entry, PAGE_4KIB)) = leaf(addr) {
                    entry.set_unused();
                }
            }
        }
        addr += PAGE_4KIB;
    }
    // 3. Every other 2 MiB page of the low 4 GiB (RAM and MMIO) becomes NX.
    let mut addr = image_2mib_end;
    while addr < LOW_IDENTITY_END {
        if let Some((entry, PAGE_2MIB)) = leaf(addr) {
            entry.set_flags(entry.flags() | nx());
        }
        addr += PAGE_2MIB;
    }
    x86_64::instructions::tlb::flush_all();
    // SAFETY: the kernel image's writable data is on writable pages (above), so
    // enforcing read-only pages in ring 0 breaks no write the kernel makes on purpose.
    unsafe { Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT)) };

    // 4. RAM above 4 GiB.
    let end = highest_ram_address.next_multiple_of(PAGE_2MIB);
    let mut phys = LOW_IDENTITY_END;
    while phys < end {
        map_2mib(phys, Flags::empty())?;
        phys += PAGE_2MIB;
    }
    MAPPED_END.store(end.max(LOW_IDENTITY_END), Ordering::Relaxed);
    drop(guard);
    let (text_kib, rodata_kib, data_kib) =
        ((image.text_end - image.text_start) / 1024, (image.rodata_end - image.text_end) / 1024, (image.end - image.rodata_end) / 1024);
    if nx_enabled() {
        log::info!(
            "paging: W^X: kernel .text {text_kib} KiB read-only+exec, .rodata {rodata_kib} KiB read-only, data+bss {data_kib} KiB, all other memory writable+NX"
        );
    } else {
        log::warn!(
            "paging: the CPU has no NX, so data is executable (no W^X): kernel .text {text_kib} KiB and .rodata {rodata_kib} KiB read-only, all other memory writable"
        );
    }
    Ok(())
}

/// Identity-maps device memory `[phys, phys + len)` uncached and NX, so drivers can use it.
pub fn map_mmio(phys: u64, len: u64) -> Result<(), MapError> {
    if is_identity_mapped(phys, len) {
        return Ok(());
    }
    let _guard = LOCK.lock();
    let start = phys & !(PAGE_2MIB - 1);
    let end = phys.checked_add(len).ok_or(MapError::NotCanonical)?.next_multiple_of(PAGE_2MIB);
    let mut page = start;
    while page < end {
        map_2mib(page, Flags::WRITE_THROUGH | Flags::NO_CACHE)?;
        page += PAGE_2MIB;
    }
    MMIO_WINDOWS.lock().push((start, end)).map_err(|_| MapError::TooManyWindows)
}

/// The pages `[addr, addr + len rounded up to a page)`, if `addr` is page-aligned,
/// the range does not wrap and it lies in RAM above the kernel image.
fn ram_pages(addr: u64, len: u64) -> Result<(u64, u64), MapError> {
    if addr % PAGE_4KIB != 0 {
        return Err(MapError::Unaligned);
    }
    let end = addr.checked_add(len).and_then(|e| e.checked_next_multiple_of(PAGE_4KIB)).ok_or(MapError::NotHeapRam)?;
    let image_end = kernel_image().end;
    if addr < image_end || end > MAPPED_END.load(Ordering::Relaxed) {
        return Err(MapError::NotHeapRam);
    }
    Ok((addr, end))
}

/// Makes the whole pages of `[addr, addr + len)` read-only and executable, splitting
/// 2 MiB pages as needed (the page tables for a split stay allocated: at most one
/// 4 KiB table per 2 MiB of heap). The caller owns these pages alone (no other data may share
/// them, since they stop being writable) and has finished writing them.
///
/// # Errors
/// [`MapError::Unaligned`] if `addr` is not page-aligned, [`MapError::NotHeapRam`] if
/// the range is not RAM above the kernel image, [`MapError::OutOfFrames`] if a page
/// table could not be allocated (then some pages may already have changed: undo
/// with [`make_data`]).
pub fn make_code(addr: u64, len: u64) -> Result<(), MapError> {
    let (start, end) = ram_pages(addr, len)?;
    let _guard = LOCK.lock();
    let mut page = start;
    let mut changed = false;
    let result = loop {
        if page >= end {
            break Ok(());
        }
        // A split keeps translations and permissions, so only flag changes count.
        if let Err(e) = split_2mib(page).and_then(|()| set_4kib(page, Flags::PRESENT).map(|c| changed |= c)) {
            break Err(e);
        }
        page += PAGE_4KIB;
    };
    if changed {
        // Another CPU may still hold a writable translation of these pages.
        crate::arch::x86_64::smp::flush_tlb_others();
    }
    result
}

/// Makes the whole pages of `[addr, addr + len)` writable and NX again (a no-op for
/// pages that already are). Never splits a page, so it needs no memory.
///
/// # Errors
/// As [`make_code`], without `OutOfFrames`.
pub fn make_data(addr: u64, len: u64) -> Result<(), MapError> {
    let (start, end) = ram_pages(addr, len)?;
    let _guard = LOCK.lock();
    let mut page = start;
    let mut changed = false;
    let result = loop {
        if page >= end {
            break Ok(());
        }
        match leaf(page) {
            Some((entry, PAGE_4KIB)) => {
                if entry.flags() != data_flags() {
                    entry.set_flags(data_flags());
                    x86_64::instructions::tlb::flush(VirtAddr::new(page));
                    changed = true;
                }
                page += PAGE_4KIB;
            }
            // A 2 MiB page outside the kernel image is data by policy.
            Some((_, PAGE_2MIB)) => page = (page + 1).next_multiple_of(PAGE_2MIB),
            _ => break Err(MapError::NotHeapRam),
        }
    };
    if changed {
        // An AP that ran this code must not keep executing it once it is data again.
        crate::arch::x86_64::smp::flush_tlb_others();
    }
    result
}

/// The protection of the page that maps `addr`, or `None` if it is unmapped (or the
/// page tables are being changed right now, e.g. when a fault hit the paging code).
pub fn protection(addr: u64) -> Option<Protection> {
    // Identity map: nothing at or above 2^47 is mapped (and the walk would alias it).
    if addr >= 1 << 47 {
        return None;
    }
    let _guard = LOCK.try_lock()?;
    let (entry, page_bytes) = leaf(addr)?;
    let flags = entry.flags();
    Some(Protection {
        page_bytes,
        writable: flags.contains(Flags::WRITABLE),
        executable: !flags.contains(Flags::NO_EXECUTE),
    })
}
