//! wasmtime's "custom" platform on gridos: the hooks a no_std wasmtime needs from its
//! embedder (see ../shared/DESIGN.md, wasmtime notes).
//!
//! - `wasmtime_tls_get`/`wasmtime_tls_set`: two pointer slots per CPU (in the CPU's
//!   `smp::PerCpu`); [`super::fiber`] saves and restores them on every switch, which
//!   makes them per-fiber (per-workload) as wasmtime requires, on whichever CPU the
//!   fiber's slice runs.
//! - Code memory (W^X, see mm/paging.rs): wasmtime copies a module's code image into
//!   a heap block aligned to [`KernelCodeMemory::required_alignment`] (4 KiB); the
//!   heap sizes page-aligned blocks to whole pages, so the code's pages hold nothing
//!   else. They are writable and NX (like all heap) while wasmtime fills them;
//!   `publish_executable` makes the text pages read-only and executable, and
//!   `unpublish_executable` (called by wasmtime before it frees or edits the code)
//!   makes them writable and NX again. Only heap ranges are accepted.
//! - CPU features: answered from CPUID (and XCR0 for AVX state), never blindly true.

use alloc::sync::Arc;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::sync::atomic::{AtomicPtr, Ordering};

use wasmtime::CustomCodeMemory;

/// The two TLS slots wasmtime uses before per-CPU records exist (early boot).
static EARLY_TLS: [AtomicPtr<u8>; 2] = [AtomicPtr::new(core::ptr::null_mut()), AtomicPtr::new(core::ptr::null_mut())];

/// This CPU's two wasmtime TLS slots (current activation state, and a second one).
pub fn tls() -> &'static [AtomicPtr<u8>; 2] {
    crate::arch::x86_64::smp::this_cpu().map_or(&EARLY_TLS, |c| &c.wasm_tls)
}

#[no_mangle]
extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    match tls().get(slot) {
        Some(s) => s.load(Ordering::Relaxed),
        None => core::ptr::null_mut(),
    }
}

#[no_mangle]
extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    if let Some(s) = tls().get(slot) {
        s.store(ptr, Ordering::Relaxed);
    }
}

/// Flips wasmtime's code pages between writable+NX and read-only+executable.
pub struct KernelCodeMemory;

/// The page range `[ptr, ptr + len)` after checking it is page-aligned heap memory.
fn code_pages(ptr: *const u8, len: usize) -> wasmtime::Result<(u64, u64)> {
    let addr = ptr as u64;
    let len = len as u64;
    if addr % crate::mm::FRAME_SIZE_BYTES != 0 {
        return Err(wasmtime::Error::msg("code memory does not start on a page"));
    }
    let len_pages = len.checked_next_multiple_of(crate::mm::FRAME_SIZE_BYTES)
        .ok_or_else(|| wasmtime::Error::msg("code range overflows"))?;
    // Rounded up to whole pages: the heap gives a page-aligned block whole pages.
    if !crate::mm::heap::contains(addr, len_pages) {
        return Err(wasmtime::Error::msg("code memory is not in the kernel heap"));
    }
    Ok((addr, len_pages))
}

impl CustomCodeMemory for KernelCodeMemory {
    fn required_alignment(&self) -> usize {
        crate::mm::FRAME_SIZE_BYTES as usize
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (addr, len) = code_pages(ptr, len)?;
        if let Err(e) = crate::mm::paging::make_code(addr, len) {
            // Leave no page half-published.
            let _ = crate::mm::paging::make_data(addr, len);
            return Err(wasmtime::Error::msg(alloc::format!("cannot make code memory executable: {e:?}")));
        }
        // x86 keeps instruction fetch coherent with earlier stores; CPUID serializes so
        // nothing fetched before the permission change runs.
        let _ = __cpuid(0);
        Ok(())
    }

    /// Never fails for a range that `publish_executable` accepted. wasmtime calls this
    /// from `Drop` (and panics on an error) even after a failed or empty publish, so
    /// a range that publish would have refused changed nothing and is fine as it is.
    fn unpublish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let Ok((addr, len)) = code_pages(ptr, len) else { return Ok(()) };
        crate::mm::paging::make_data(addr, len)
            .map_err(|e| wasmtime::Error::msg(alloc::format!("cannot make code memory writable: {e:?}")))
    }
}

pub fn code_memory() -> Arc<dyn CustomCodeMemory> {
    Arc::new(KernelCodeMemory)
}

fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called when CPUID reports OSXSAVE, so XGETBV is enabled.
    unsafe { core::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// `Config::detect_host_feature`: Rust feature names, from CPUID.
pub fn detect_host_feature(name: &str) -> Option<bool> {
    let leaf1 = __cpuid(1);
    let max = __cpuid(0).eax;
    let leaf7 = if max >= 7 { __cpuid_count(7, 0) } else { __cpuid(0) };
    let (b7, c7) = if max >= 7 { (leaf7.ebx, leaf7.ecx) } else { (0, 0) };
    let ext1c = if __cpuid(0x8000_0000).eax >= 0x8000_0001 { __cpuid(0x8000_0001).ecx } else { 0 };
    let c1 = leaf1.ecx;
    let bit = |r: u32, b: u32| r & (1 << b) != 0;
    // AVX state must be enabled by the OS (CR4.OSXSAVE and XCR0 SSE|AVX): gridos turns
    // it on at boot where the CPU has it (`cpu::enable_extended_state`).
    let avx_os = bit(c1, 27) && (xcr0() & 0b110) == 0b110;
    let avx512_os = avx_os && (xcr0() & 0xe0) == 0xe0;
    Some(match name {
        "sse3" => bit(c1, 0),
        "ssse3" => bit(c1, 9),
        "sse4.1" => bit(c1, 19),
        "sse4.2" => bit(c1, 20),
        "popcnt" => bit(c1, 23),
        "cmpxchg16b" => bit(c1, 13),
        "avx" => avx_os && bit(c1, 28),
        "fma" => avx_os && bit(c1, 12),
        "avx2" => avx_os && bit(b7, 5),
        "bmi1" => bit(b7, 3),
        "bmi2" => bit(b7, 8),
        "lzcnt" => bit(ext1c, 5),
        "avx512f" => avx512_os && bit(b7, 16),
        "avx512dq" => avx512_os && bit(b7, 17),
        "avx512vl" => avx512_os && bit(b7, 31),
        "avx512vbmi" => avx512_os && bit(c7, 1),
        "avx512bitalg" => avx512_os && bit(c7, 12),
        "avx512vnni" => avx512_os && bit(c7, 11),
        "avxvnni" => false,
        _ => return None,
    })
}
