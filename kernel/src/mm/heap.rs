//! The kernel heap: talc over one contiguous block of frames, mapped writable and NX.
//!
//! Interrupt handlers must not allocate (the heap lock does not disable interrupts).
//!
//! Page-aligned blocks are also page-sized (their size is rounded up to whole 4 KiB
//! pages), so such a block never shares a page with other heap data. That is what
//! lets wasmtime's code memory (allocated with the page alignment that
//! `wasm/platform.rs` asks for) be made read-only and executable without touching
//! anyone else's data. When a page-aligned block is freed its pages are made writable
//! and NX again (a no-op unless they were code), so a page never returns to the heap
//! while it is executable, even if an owner forgot to unpublish it.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};

use talc::{ErrOnOom, Span, Talc, Talck};

use super::{frames, paging, FRAME_SIZE_BYTES};

const PAGE_BYTES: usize = FRAME_SIZE_BYTES as usize;

static TALC: Talck<spin::Mutex<()>, ErrOnOom> = Talc::new(ErrOnOom).lock();
static HEAP_BASE: AtomicU64 = AtomicU64::new(0);
static HEAP_END: AtomicU64 = AtomicU64::new(0);

/// The global allocator: talc, with page-aligned blocks kept to whole pages.
struct KernelHeap;

#[global_allocator]
static ALLOCATOR: KernelHeap = KernelHeap;

/// The layout talc sees: page-aligned requests grow to whole pages.
fn talc_layout(layout: Layout) -> Option<Layout> {
    if layout.align() < PAGE_BYTES {
        return Some(layout);
    }
    Layout::from_size_align(layout.size().checked_next_multiple_of(PAGE_BYTES)?, layout.align()).ok()
}

// SAFETY: every method forwards to talc (a sound GlobalAlloc) with the layout from
// `talc_layout`, which is a pure function of the caller's layout, so alloc and
// dealloc of one block always pass talc the same layout.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match talc_layout(layout) {
            // SAFETY: the caller's layout has a non-zero size; rounding keeps it non-zero.
            Some(layout) => unsafe { TALC.alloc(layout) },
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match talc_layout(layout) {
            // SAFETY: as in `alloc`.
            Some(layout) => unsafe { TALC.alloc_zeroed(layout) },
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The block was allocated with this layout, so rounding cannot fail now.
        let Some(talc_layout) = talc_layout(layout) else { return };
        if layout.align() >= PAGE_BYTES && paging::make_data(ptr as u64, talc_layout.size() as u64).is_err() {
            // Its pages could not be made data again: leak the block rather than hand
            // out pages that may be read-only or executable.
            return;
        }
        // SAFETY: the caller owns the block, allocated by `alloc` with `layout`, which
        // gave talc `talc_layout`.
        unsafe { TALC.dealloc(ptr, talc_layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() < PAGE_BYTES {
            // SAFETY: small alignments pass to talc unchanged, so talc allocated this
            // block with `layout`; the caller's promises carry over.
            return unsafe { TALC.realloc(ptr, layout, new_size) };
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else { return core::ptr::null_mut() };
        // SAFETY: a fresh block of the new layout, copied into, then the old block is
        // freed through `dealloc` (which restores its pages); the caller guarantees
        // `ptr` is live with `layout` and `new_size` is non-zero.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// Claims `size_bytes` (rounded to 2 MiB) from the frame allocator for the heap.
/// Returns the heap's base address and size.
pub fn init(size_bytes: u64) -> Option<(u64, u64)> {
    let size = size_bytes.next_multiple_of(2 << 20);
    let base = frames::alloc_contiguous_uninit(size / FRAME_SIZE_BYTES, 2 << 20)?;
    let span = Span::from_base_size(base as usize as *mut u8, size as usize);
    // SAFETY: the block is fresh, identity-mapped, and owned by the heap from now on.
    unsafe { TALC.lock().claim(span) }.ok()?;
    HEAP_BASE.store(base, Ordering::Relaxed);
    HEAP_END.store(base + size, Ordering::Relaxed);
    Some((base, size))
}

/// The heap's size (0 before [`init`]).
pub fn size_bytes() -> u64 {
    HEAP_END.load(Ordering::Relaxed).saturating_sub(HEAP_BASE.load(Ordering::Relaxed))
}

/// Whether `[addr, addr + len)` lies inside the heap.
pub fn contains(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    addr >= HEAP_BASE.load(Ordering::Relaxed) && end <= HEAP_END.load(Ordering::Relaxed) && addr < end
}

/// Bytes currently allocated from the heap.
pub fn allocated_bytes() -> usize {
    TALC.lock().get_counters().allocated_bytes
}
