//! The kernel heap: talc over one contiguous block of frames.
//!
//! Interrupt handlers must not allocate (the heap lock does not disable interrupts).

use talc::{ErrOnOom, Span, Talc, Talck};

use super::frames;

#[global_allocator]
static ALLOCATOR: Talck<spin::Mutex<()>, ErrOnOom> = Talc::new(ErrOnOom).lock();

/// Claims `size_bytes` (rounded to 2 MiB) from the frame allocator for the heap.
/// Returns the heap's base address and size.
pub fn init(size_bytes: u64) -> Option<(u64, u64)> {
    let size = size_bytes.next_multiple_of(2 << 20);
    let base = frames::alloc_contiguous_uninit(size / super::FRAME_SIZE_BYTES, 2 << 20)?;
    let span = Span::from_base_size(base as usize as *mut u8, size as usize);
    // SAFETY: the block is fresh, identity-mapped, and owned by the heap from now on.
    unsafe { ALLOCATOR.lock().claim(span) }.ok()?;
    Some((base, size))
}

/// Bytes currently allocated from the heap.
pub fn allocated_bytes() -> usize {
    ALLOCATOR.lock().get_counters().allocated_bytes
}
