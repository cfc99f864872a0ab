//! wasmtime's "custom" platform on gridos: the hooks a no_std wasmtime needs from its
//! embedder (see ../shared/DESIGN.md, wasmtime notes).
//!
//! - `wasmtime_tls_get`/`wasmtime_tls_set`: two pointer slots. gridos runs wasm on the
//!   boot CPU only, so they are globals; [`super::fiber`] saves and restores them on
//!   every switch, which makes them per-fiber (per-workload) as wasmtime requires.
//! - Code memory: all RAM is identity-mapped with 2 MiB pages and NX is set nowhere
//!   (mm/paging.rs), so heap pages holding code are already executable: publishing is
//!   no page-table change, only a serializing CPUID so no stale prefetched bytes run.
//!   The cost is that code memory is not W^X; a later mm with NX would flip bits here.
//! - CPU features: answered from CPUID (and XCR0 for AVX state), never blindly true.

use alloc::sync::Arc;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use core::sync::atomic::{AtomicPtr, Ordering};

use wasmtime::CustomCodeMemory;

/// The two TLS slots wasmtime uses (current activation state, and a second one).
pub static TLS: [AtomicPtr<u8>; 2] = [AtomicPtr::new(core::ptr::null_mut()), AtomicPtr::new(core::ptr::null_mut())];

#[no_mangle]
extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    match TLS.get(slot) {
        Some(s) => s.load(Ordering::Relaxed),
        None => core::ptr::null_mut(),
    }
}

#[no_mangle]
extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    if let Some(s) = TLS.get(slot) {
        s.store(ptr, Ordering::Relaxed);
    }
}

/// Code pages: already executable (identity map, no NX); see the module docs.
pub struct KernelCodeMemory;

impl CustomCodeMemory for KernelCodeMemory {
    fn required_alignment(&self) -> usize {
        4096
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        let end = (ptr as u64).checked_add(len as u64).ok_or_else(|| wasmtime::Error::msg("code range overflows"))?;
        if !crate::mm::paging::is_identity_mapped(ptr as u64, end - ptr as u64) {
            return Err(wasmtime::Error::msg("code memory is outside the identity map"));
        }
        // x86 keeps instruction fetch coherent with stores to the same address space;
        // CPUID serializes so nothing fetched before the copy finished can run.
        let _ = __cpuid(0);
        Ok(())
    }

    fn unpublish_executable(&self, _ptr: *const u8, _len: usize) -> wasmtime::Result<()> {
        Ok(())
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
    // AVX state must be enabled by the OS (CR4.OSXSAVE and XCR0 SSE|AVX); gridos's boot
    // stub does not enable XSAVE, so on gridos these answer false.
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
