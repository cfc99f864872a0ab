//! Page tables. The entry stub identity-maps the first 4 GiB with 2 MiB pages;
//! here the first 2 MiB are split so page 0 is unmapped, RAM above 4 GiB is
//! mapped, and device MMIO outside the low 4 GiB (64-bit PCI BARs) is mapped on request.

use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use x86_64::registers::control::Cr3;

use super::frames;

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
const PAGE_2MIB: u64 = 2 << 20;
const LOW_IDENTITY_END: u64 = 4 << 30;

/// End of the contiguous identity map starting at address 0.
static MAPPED_END: AtomicU64 = AtomicU64::new(LOW_IDENTITY_END);
/// Extra MMIO windows mapped above `MAPPED_END`.
static MMIO_WINDOWS: Mutex<heapless::Vec<(u64, u64), 32>> = Mutex::new(heapless::Vec::new());
static LOCK: Mutex<()> = Mutex::new(());

/// Errors from mapping requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    OutOfFrames,
    NotCanonical,
    TooManyWindows,
}

/// Whether `[addr, addr + len)` is mapped (identity) and not the null page.
pub fn is_identity_mapped(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    if addr < 4096 {
        return false;
    }
    if end <= MAPPED_END.load(Ordering::Relaxed) {
        return true;
    }
    MMIO_WINDOWS.lock().iter().any(|&(s, e)| addr >= s && end <= e)
}

fn table(phys: u64) -> &'static mut [u64; 512] {
    // SAFETY: page-table frames are identity-mapped and only modified under LOCK.
    unsafe { &mut *((phys & ADDRESS_MASK) as usize as *mut [u64; 512]) }
}

/// Returns the next-level table behind `entry`, allocating it if absent.
fn next_table(entry: &mut u64) -> Result<&'static mut [u64; 512], MapError> {
    if *entry & PRESENT == 0 {
        let frame = frames::alloc_frame().ok_or(MapError::OutOfFrames)?;
        *entry = frame | PRESENT | WRITABLE;
    }
    assert!(*entry & HUGE == 0, "walking through a huge page");
    Ok(table(*entry))
}

fn map_2mib(phys: u64, flags: u64) -> Result<(), MapError> {
    assert!(phys % PAGE_2MIB == 0);
    if phys >= 1 << 47 {
        return Err(MapError::NotCanonical);
    }
    let l4 = table(Cr3::read().0.start_address().as_u64());
    let l3 = next_table(&mut l4[((phys >> 39) & 511) as usize])?;
    let l2 = next_table(&mut l3[((phys >> 30) & 511) as usize])?;
    let entry = &mut l2[((phys >> 21) & 511) as usize];
    if *entry & PRESENT == 0 {
        *entry = phys | PRESENT | WRITABLE | HUGE | flags;
        x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(phys));
    }
    Ok(())
}

/// Unmaps the null page and maps RAM up to `highest_ram_address`.
pub fn init(highest_ram_address: u64) -> Result<(), MapError> {
    let _guard = LOCK.lock();
    // Split the first 2 MiB into 4 KiB pages, leaving page 0 unmapped.
    let l4 = table(Cr3::read().0.start_address().as_u64());
    let l3 = table(l4[0]);
    let l2 = table(l3[0]);
    let pt_phys = frames::alloc_frame().ok_or(MapError::OutOfFrames)?;
    let pt = table(pt_phys);
    for (i, e) in pt.iter_mut().enumerate().skip(1) {
        *e = (i as u64) * 4096 | PRESENT | WRITABLE;
    }
    l2[0] = pt_phys | PRESENT | WRITABLE;
    x86_64::instructions::tlb::flush_all();

    let end = highest_ram_address.next_multiple_of(PAGE_2MIB);
    let mut phys = LOW_IDENTITY_END;
    while phys < end {
        map_2mib(phys, 0)?;
        phys += PAGE_2MIB;
    }
    MAPPED_END.store(end.max(LOW_IDENTITY_END), Ordering::Relaxed);
    Ok(())
}

/// Identity-maps device memory `[phys, phys + len)` uncached, so drivers can use it.
pub fn map_mmio(phys: u64, len: u64) -> Result<(), MapError> {
    if is_identity_mapped(phys, len) {
        return Ok(());
    }
    let _guard = LOCK.lock();
    let start = phys & !(PAGE_2MIB - 1);
    let end = phys.checked_add(len).ok_or(MapError::NotCanonical)?.next_multiple_of(PAGE_2MIB);
    let mut page = start;
    while page < end {
        map_2mib(page, WRITE_THROUGH | CACHE_DISABLE)?;
        page += PAGE_2MIB;
    }
    MMIO_WINDOWS.lock().push((start, end)).map_err(|_| MapError::TooManyWindows)
}
