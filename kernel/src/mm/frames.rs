//! The physical frame allocator, fed by the boot memory map.
//!
//! Usable regions (minus the first MiB and the kernel image) are handed out
//! contiguously from their low end; freed frames go to a list threaded through the
//! frames themselves and are reused first for single-frame requests.

use spin::Mutex;

use super::FRAME_SIZE_BYTES;
use crate::bootinfo::{BootInfo, RegionKind};

const LOW_MEMORY_END: u64 = 0x10_0000;

#[derive(Clone, Copy)]
struct Range {
    start: u64,
    end: u64,
}

struct Frames {
    ranges: heapless::Vec<Range, 64>,
    free_list_head: u64,
    free_list_len: u64,
    total_usable_bytes: u64,
    /// Bytes the allocator managed right after `init` (all ranges).
    managed_bytes: u64,
}

static FRAMES: Mutex<Frames> =
    Mutex::new(Frames {
        ranges: heapless::Vec::new(),
        free_list_head: 0,
        free_list_len: 0,
        total_usable_bytes: 0,
        managed_bytes: 0,
    });

/// Memory figures for the boot report.
#[derive(Debug, Clone, Copy)]
pub struct MemoryReport {
    /// RAM the firmware reports as usable.
    pub usable_bytes: u64,
    /// Highest usable physical address.
    pub highest_address: u64,
}

fn kernel_image_range() -> (u64, u64) {
    extern "C" {
        static __kernel_start: u8;
        static __kernel_end: u8;
    }
    (core::ptr::addr_of!(__kernel_start) as u64, core::ptr::addr_of!(__kernel_end) as u64)
}

/// Builds the allocator from the memory map.
pub fn init(boot: &BootInfo) -> MemoryReport {
    let (kernel_start, kernel_end) = kernel_image_range();
    let mut frames = FRAMES.lock();
    let mut highest_address = 0;
    for region in boot.regions.iter().filter(|r| r.kind == RegionKind::Usable) {
        frames.total_usable_bytes += region.len_bytes;
        let start = region.start.max(LOW_MEMORY_END).next_multiple_of(FRAME_SIZE_BYTES);
        let end = (region.start.saturating_add(region.len_bytes)) & !(FRAME_SIZE_BYTES - 1);
        highest_address = highest_address.max(end);
        // Split around the kernel image.
        for (s, e) in [(start, end.min(kernel_start)), (start.max(kernel_end.next_multiple_of(FRAME_SIZE_BYTES)), end)] {
            if s < e && frames.ranges.push(Range { start: s, end: e }).is_err() {
                log::warn!("too many memory ranges; {:#x}..{:#x} unused", s, e);
            }
        }
    }
    frames.managed_bytes = frames.ranges.iter().map(|r| r.end - r.start).sum();
    MemoryReport { usable_bytes: frames.total_usable_bytes, highest_address }
}

/// Bytes the allocator managed after `init`: usable RAM minus the first MiB and the
/// kernel image (and ranges it had no room for).
pub fn managed_bytes() -> u64 {
    FRAMES.lock().managed_bytes
}

/// The kernel image's bytes (`__kernel_start..__kernel_end`: code, data, bss).
pub fn kernel_image_bytes() -> u64 {
    let (start, end) = kernel_image_range();
    end - start
}

/// Allocates `count` physically contiguous frames aligned to `align_bytes` (a power
/// of two, at least 4 KiB), zeroed. Returns the physical (= virtual) address.
pub fn alloc_contiguous(count: u64, align_bytes: u64) -> Option<u64> {
    let addr = alloc_contiguous_uninit(count, align_bytes)?;
    zero(addr, count * FRAME_SIZE_BYTES);
    Some(addr)
}

/// Like [`alloc_contiguous`], without zeroing (for the heap, which never reads
/// memory it has not handed out and written).
pub fn alloc_contiguous_uninit(count: u64, align_bytes: u64) -> Option<u64> {
    assert!(count > 0 && align_bytes.is_power_of_two() && align_bytes >= FRAME_SIZE_BYTES);
    let size = count.checked_mul(FRAME_SIZE_BYTES)?;
    let mut frames = FRAMES.lock();
    if count == 1 && frames.free_list_head != 0 {
        let frame = frames.free_list_head;
        // SAFETY: frames on the free list are identity-mapped, owned by the allocator,
        // and their first word holds the next entry.
        frames.free_list_head = unsafe { *(frame as *const u64) };
        frames.free_list_len -= 1;
        return Some(frame);
    }
    let found = frames.ranges.iter_mut().find_map(|r| {
        let aligned = r.start.checked_next_multiple_of(align_bytes)?;
        let end = aligned.checked_add(size)?;
        (end <= r.end).then(|| {
            // Frames skipped for alignment stay in this range's prefix only if
            // nothing else is there; keep it simple and give them up.
            r.start = end;
            aligned
        })
    });
    found
}

/// Allocates one zeroed frame.
pub fn alloc_frame() -> Option<u64> {
    alloc_contiguous(1, FRAME_SIZE_BYTES)
}

/// Returns `count` frames starting at `addr` to the allocator.
///
/// # Safety
/// The frames must come from this allocator and no longer be used.
pub unsafe fn free(addr: u64, count: u64) {
    let mut frames = FRAMES.lock();
    for i in 0..count {
        let frame = addr + i * FRAME_SIZE_BYTES;
        // SAFETY: the caller hands the frame back; its first word becomes the list link.
        unsafe { *(frame as *mut u64) = frames.free_list_head };
        frames.free_list_head = frame;
        frames.free_list_len += 1;
    }
}

/// Bytes the allocator can still hand out.
pub fn free_bytes() -> u64 {
    let frames = FRAMES.lock();
    frames.ranges.iter().map(|r| r.end - r.start).sum::<u64>() + frames.free_list_len * FRAME_SIZE_BYTES
}

/// The largest block `alloc_contiguous` could currently satisfy, in bytes.
pub fn largest_contiguous_bytes() -> u64 {
    FRAMES.lock().ranges.iter().map(|r| r.end - r.start).max().unwrap_or(0)
}

fn zero(addr: u64, len: u64) {
    // SAFETY: freshly allocated, identity-mapped frames owned by the caller.
    unsafe { core::ptr::write_bytes(addr as usize as *mut u8, 0, len as usize) };
}
