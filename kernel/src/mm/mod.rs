//! Memory management: physical frames, page tables, and the kernel heap.
//!
//! All of physical memory is identity-mapped (virtual = physical), so a frame's
//! address is usable as a pointer and a contiguous heap allocation is physically
//! contiguous (what DMA needs). The first 4 KiB stay unmapped so null pointers fault.
//!
//! Mapping policy (W^X, details in [`paging`]): no page is writable and executable at
//! once. Kernel `.text` is read-only and executable, `.rodata` read-only and NX;
//! `.data`, `.bss`, stacks, the heap, all other RAM and all device MMIO are writable
//! and NX (CR0.WP makes read-only bind the kernel too). The only executable pages
//! besides `.text` are wasmtime code pages, which the heap hands out whole
//! ([`heap`]) and which are read-only while executable (`wasm/platform.rs`).

pub mod frames;
pub mod heap;
pub mod paging;

pub use paging::is_identity_mapped;

/// Bytes in a 4 KiB frame.
pub const FRAME_SIZE_BYTES: u64 = 4096;
