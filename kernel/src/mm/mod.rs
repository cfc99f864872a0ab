//! Memory management: physical frames, page tables, and the kernel heap.
//!
//! All of physical memory is identity-mapped (virtual = physical), so a frame's
//! address is usable as a pointer and a contiguous heap allocation is physically
//! contiguous (what DMA needs). The first 4 KiB stay unmapped so null pointers fault.

pub mod frames;
pub mod heap;
pub mod paging;

pub use paging::is_identity_mapped;

/// Bytes in a 4 KiB frame.
pub const FRAME_SIZE_BYTES: u64 = 4096;
