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

//!
//! [`footprint`] sums what the node holds (the boot log's idle `memory:` line).

pub mod frames;
pub mod heap;
pub mod paging;

pub use paging::is_identity_mapped;

/// Bytes in a 4 KiB frame.
pub const FRAME_SIZE_BYTES: u64 = 4096;

/// What the node's memory holds, in bytes. The parts add up to `ram_bytes`: the frame
/// allocator's frames are either free, the heap's, page tables or DMA and device
/// buffers (everything else drivers took), and the rest of RAM is the kernel image and
/// what the allocator never managed (the first MiB, ranges it had no room for).
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    pub ram_bytes: u64,
    pub kernel_image_bytes: u64,
    pub heap_size_bytes: u64,
    pub heap_used_bytes: u64,
    pub heap_ceiling_bytes: u64,
    /// Times the heap grew, and the blocks it is made of.
    pub heap_growths: (u64, usize),
    pub page_table_bytes: u64,
    pub dma_bytes: u64,
    pub free_bytes: u64,
    pub unmanaged_bytes: u64,
}

/// The footprint now, for `ram_bytes` of usable RAM.
pub fn footprint(ram_bytes: u64) -> Footprint {
    let managed = frames::managed_bytes();
    let free = frames::free_bytes();
    let heap_size = heap::size_bytes();
    let page_tables = paging::table_bytes();
    let taken = managed.saturating_sub(free);
    let kernel_image = frames::kernel_image_bytes();
    Footprint {
        ram_bytes,
        kernel_image_bytes: kernel_image,
        heap_size_bytes: heap_size,
        heap_used_bytes: heap::allocated_bytes() as u64,
        heap_ceiling_bytes: heap::ceiling_bytes(),
        heap_growths: heap::growths(),
        page_table_bytes: page_tables,
        dma_bytes: taken.saturating_sub(heap_size + page_tables),
        free_bytes: free,
        unmanaged_bytes: ram_bytes.saturating_sub(managed + kernel_image),
    }
}

impl Footprint {
    /// Bytes in use: everything but free frames and what was never managed.
    pub fn in_use_bytes(&self) -> u64 {
        self.kernel_image_bytes + self.heap_used_bytes + self.page_table_bytes + self.dma_bytes
    }
}

impl core::fmt::Display for Footprint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kib = |b: u64| b >> 10;
        write!(
            f,
            "in use {} KiB of {} KiB RAM: kernel image {} KiB, heap {} KiB in use of {} KiB held \
             (grows up to {} KiB; grew {} times, {} blocks), page tables {} KiB, DMA and device buffers {} KiB; free frames {} KiB, \
             first MiB and unmanaged {} KiB",
            kib(self.in_use_bytes()), kib(self.ram_bytes), kib(self.kernel_image_bytes), kib(self.heap_used_bytes),
            kib(self.heap_size_bytes), kib(self.heap_ceiling_bytes), self.heap_growths.0, self.heap_growths.1, kib(self.page_table_bytes), kib(self.dma_bytes),
            kib(self.free_bytes), kib(self.unmanaged_bytes)
        )
    }
}
