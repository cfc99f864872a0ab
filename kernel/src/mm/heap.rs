//! The kernel heap: talc over blocks of frames, mapped writable and NX, grown on demand.
//!
//! The heap starts small ([`INITIAL_BYTES_MAX`]) and grows when talc finds no free
//! block: its out-of-memory handler takes more contiguous frames (at least
//! [`GROW_STEP_BYTES`], always enough for the request), extending the last block when
//! the new frames follow it and claiming a new block otherwise, up to a ceiling: the
//! heap never takes the frames' reserve ([`frame_reserve_bytes`], for DMA rings and
//! page tables) and never grows past `gridos.heap_mb` when that is given. Workloads
//! live in the heap (wasm linear memories, engines, logs), so the ceiling, not the
//! heap's size at boot, is what admission hands out (`wasm/admission.rs`); an idle
//! node holds only what it uses. The heap never shrinks: freed blocks stay in talc.
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

use talc::{OomHandler, Span, Talc, Talck};

use super::{frames, paging, FRAME_SIZE_BYTES};

const PAGE_BYTES: usize = FRAME_SIZE_BYTES as usize;
const MIB: u64 = 1 << 20;

/// The heap's first block at most: what a booted node uses with room to spare.
pub const INITIAL_BYTES_MAX: u64 = 48 * MIB;
/// Least the heap grows by at a time (fewer, larger blocks; 2 MiB aligned sizes).
pub const GROW_STEP_BYTES: u64 = 8 * MIB;
/// Blocks the heap may consist of (each growth that does not follow the last block
/// adds one; a full table stops growth, an allocation failure for that caller).
pub const BLOCKS_MAX: usize = 64;
/// Least frame memory kept out of the heap.
pub const FRAME_RESERVE_MIN_BYTES: u64 = 16 * MIB;

static TALC: Talck<spin::Mutex<()>, Grow> = Talc::new(Grow).lock();
/// One block of frames the heap holds.
#[derive(Clone, Copy)]
struct Block {
    /// The frames `[start, end)`.
    start: u64,
    end: u64,
    /// The heap talc made of them (`[base, acme)`, what claim/extend returned): talc's
    /// `extend` must be given exactly that.
    talc: (u64, u64),
}

impl Block {
    fn talc_span(&self) -> Span {
        Span::new(self.talc.0 as usize as *mut u8, self.talc.1 as usize as *mut u8)
    }
}

/// The span's bounds as addresses (an empty span has none).
fn bounds(span: Span) -> Option<(u64, u64)> {
    span.get_base_acme().map(|(base, acme)| (base as u64, acme as u64))
}

/// The heap's blocks, in the order claimed.
static BLOCKS: spin::Mutex<heapless::Vec<Block, BLOCKS_MAX>> = spin::Mutex::new(heapless::Vec::new());
/// Bytes of frames the heap holds (all blocks).
static CLAIMED_BYTES: AtomicU64 = AtomicU64::new(0);
/// The most the heap may hold (set once by [`init`]).
static CEILING_BYTES: AtomicU64 = AtomicU64::new(0);
/// Frame bytes growth leaves to the frame allocator (set once by [`init`]).
static RESERVE_BYTES: AtomicU64 = AtomicU64::new(0);
/// Times the heap grew.
static GROWTHS: AtomicU64 = AtomicU64::new(0);

/// Frame memory the heap leaves to DMA rings, device queues and page tables: a
/// sixteenth of RAM, at least [`FRAME_RESERVE_MIN_BYTES`].
pub fn frame_reserve_bytes(usable_ram_bytes: u64) -> u64 {
    (usable_ram_bytes / 16).max(FRAME_RESERVE_MIN_BYTES)
}

/// talc's out-of-memory handler: grows the heap by frames (see the module head).
struct Grow;

impl OomHandler for Grow {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        // Room for the block, its alignment and talc's chunk tags.
        let need = (layout.size() as u64)
            .checked_add(layout.align() as u64 + 4 * PAGE_BYTES as u64)
            .and_then(|n| n.checked_next_multiple_of(2 * MIB))
            .ok_or(())?;
        let claimed = CLAIMED_BYTES.load(Ordering::Relaxed);
        let room = CEILING_BYTES.load(Ordering::Relaxed).saturating_sub(claimed);
        let spare = frames::free_bytes().saturating_sub(RESERVE_BYTES.load(Ordering::Relaxed));
        let step = need.max(GROW_STEP_BYTES).min(room).min(spare) & !(2 * MIB - 1);
        if step < need {
            return Err(());
        }
        let base = frames::alloc_contiguous_uninit(step / FRAME_SIZE_BYTES, PAGE_BYTES as u64).ok_or(())?;
        let mut blocks = BLOCKS.lock();
        match blocks.last_mut() {
            Some(last) if last.end == base => {
                let wanted = Span::new(last.talc.0 as usize as *mut u8, (base + step) as usize as *mut u8);
                // SAFETY: `talc_span` is what talc's claim or extend returned for this
                // block (recorded in BLOCKS), and `wanted` contains it; the frames after
                // the block up to `base + step` are fresh from the frame allocator,
                // identity-mapped, and owned by the heap from now on.
                let grown = unsafe { talc.extend(last.talc_span(), wanted) };
                last.end = base + step;
                if let Some(b) = bounds(grown) {
                    last.talc = b;
                }
            }
            _ => {
                if blocks.is_full() {
                    drop(blocks);
                    // SAFETY: the frames came from the allocator just now and nobody
                    // else has seen them.
                    unsafe { frames::free(base, step / FRAME_SIZE_BYTES) };
                    return Err(());
                }
                let span = Span::from_base_size(base as usize as *mut u8, step as usize);
                // SAFETY: fresh frames, identity-mapped, owned by the heap from now on.
                let Some(heap) = unsafe { talc.claim(span) }.ok().and_then(bounds) else {
                    drop(blocks);
                    // SAFETY: talc refused the block, so nobody uses these frames.
                    unsafe { frames::free(base, step / FRAME_SIZE_BYTES) };
                    return Err(());
                };
                // Cannot fail: checked not full above, under the same lock.
                let _ = blocks.push(Block { start: base, end: base + step, talc: heap });
            }
        }
        CLAIMED_BYTES.fetch_add(step, Ordering::Relaxed);
        GROWTHS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

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

/// Sets up the heap: its first block (at most [`INITIAL_BYTES_MAX`], rounded to 2 MiB)
/// and its ceiling: `ceiling_bytes` when given (`gridos.heap_mb`), else every frame but
/// the reserve for `usable_ram_bytes`. Returns the first block's base and size.
pub fn init(usable_ram_bytes: u64, ceiling_bytes: Option<u64>) -> Option<(u64, u64)> {
    let reserve = frame_reserve_bytes(usable_ram_bytes);
    let available = frames::free_bytes().saturating_sub(reserve);
    let ceiling = ceiling_bytes.unwrap_or(available).min(available).max(16 * MIB) & !(2 * MIB - 1);
    let largest = frames::largest_contiguous_bytes().saturating_sub(2 * MIB) & !(2 * MIB - 1);
    let size = ceiling.min(INITIAL_BYTES_MAX).min(largest);
    let base = frames::alloc_contiguous_uninit(size / FRAME_SIZE_BYTES, 2 * MIB)?;
    let span = Span::from_base_size(base as usize as *mut u8, size as usize);
    // SAFETY: the block is fresh, identity-mapped, and owned by the heap from now on.
    let heap = unsafe { TALC.lock().claim(span) }.ok().and_then(bounds)?;
    BLOCKS.lock().push(Block { start: base, end: base + size, talc: heap }).ok()?;
    CLAIMED_BYTES.store(size, Ordering::Relaxed);
    CEILING_BYTES.store(ceiling, Ordering::Relaxed);
    RESERVE_BYTES.store(reserve, Ordering::Relaxed);
    Some((base, size))
}

/// The heap's size now: the frames it holds (0 before [`init`]).
pub fn size_bytes() -> u64 {
    CLAIMED_BYTES.load(Ordering::Relaxed)
}

/// The most the heap may grow to (0 before [`init`]).
pub fn ceiling_bytes() -> u64 {
    CEILING_BYTES.load(Ordering::Relaxed)
}

/// Frame bytes the heap leaves to the frame allocator.
pub fn reserve_bytes() -> u64 {
    RESERVE_BYTES.load(Ordering::Relaxed)
}

/// Times the heap grew since boot, and its blocks.
pub fn growths() -> (u64, usize) {
    (GROWTHS.load(Ordering::Relaxed), BLOCKS.lock().len())
}

/// Whether `[addr, addr + len)` lies inside one heap block.
pub fn contains(addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    addr < end && BLOCKS.lock().iter().any(|b| addr >= b.start && end <= b.end)
}

/// Bytes currently allocated from the heap.
pub fn allocated_bytes() -> usize {
    TALC.lock().get_counters().allocated_bytes
}
