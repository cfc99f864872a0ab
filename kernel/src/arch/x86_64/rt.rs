//! The few symbols a libc-free static link needs: `mem*`, `bcmp`, `strlen`, and the
//! unwinding entry points that the precompiled `alloc` references (panics abort here).
//!
//! The `mem*` functions use inline assembly (an SSE loop for whole 64-byte blocks, then
//! `rep movsb`/`rep stosb`) or volatile reads, so the compiler can never turn their
//! bodies back into calls to themselves.

use core::arch::asm;

/// # Safety
/// Standard `memcpy` contract: valid, non-overlapping regions of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // Whole 64-byte blocks through four SSE registers, then the rest with `rep movsb`.
    // QEMU's TCG runs `rep movsb` one byte per loop turn (about 25 MB/s: a 1 MiB copy
    // cost more than hashing it, store-bench showed); the SSE loop moves 64 bytes per
    // turn there and is as fast as `rep movsb` on hardware for these sizes.
    let bulk = n & !63;
    // SAFETY: the caller guarantees both regions are valid for `n` bytes; the loop
    // touches `bulk <= n` bytes of each, the tail the remaining `n - bulk`. SSE is on
    // before any Rust runs, and interrupt entry saves the XMM registers.
    unsafe {
        if bulk != 0 {
            asm!(
                "2:",
                "movdqu xmm0, [{s}]",
                "movdqu xmm1, [{s} + 16]",
                "movdqu xmm2, [{s} + 32]",
                "movdqu xmm3, [{s} + 48]",
                "movdqu [{d}], xmm0",
                "movdqu [{d} + 16], xmm1",
                "movdqu [{d} + 32], xmm2",
                "movdqu [{d} + 48], xmm3",
                "add {s}, 64",
                "add {d}, 64",
                "sub {n}, 64",
                "jnz 2b",
                s = inout(reg) src => _,
                d = inout(reg) dest => _,
                n = inout(reg) bulk => _,
                out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                options(nostack),
            );
        }
        asm!("rep movsb", inout("rcx") n - bulk => _, inout("rdi") dest.add(bulk) => _, inout("rsi") src.add(bulk) => _,
            options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// Standard `memmove` contract: valid regions of `n` bytes, possibly overlapping.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: forward copy is correct when dest is below src or the regions are disjoint.
        unsafe { memcpy(dest, src, n) }
    } else {
        // SAFETY: copy backwards with the direction flag set, cleared again afterwards.
        unsafe {
            asm!("std", "rep movsb", "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack));
        }
        dest
    }
}

/// # Safety
/// Standard `memset` contract: a valid region of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // As `memcpy`: whole 64-byte blocks from one SSE register holding 16 copies of the
    // byte, the rest with `rep stosb`.
    let bulk = n & !63;
    // SAFETY: the caller guarantees the region is valid for `n` bytes; the loop writes
    // `bulk <= n` of them, the tail the rest. SSE is on (see `memcpy`).
    unsafe {
        if bulk != 0 {
            asm!(
                "movd xmm0, {c:e}",
                "punpcklbw xmm0, xmm0",
                "punpcklwd xmm0, xmm0",
                "pshufd xmm0, xmm0, 0",
                "2:",
                "movdqu [{d}], xmm0",
                "movdqu [{d} + 16], xmm0",
                "movdqu [{d} + 32], xmm0",
                "movdqu [{d} + 48], xmm0",
                "add {d}, 64",
                "sub {n}, 64",
                "jnz 2b",
                c = in(reg) c as u8 as u32,
                d = inout(reg) dest => _,
                n = inout(reg) bulk => _,
                out("xmm0") _,
                options(nostack),
            );
        }
        asm!("rep stosb", inout("rcx") n - bulk => _, inout("rdi") dest.add(bulk) => _, in("al") c as u8,
            options(nostack, preserves_flags));
    }
    dest
}

/// # Safety
/// Standard `memcmp` contract: two valid regions of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // Word-wise first: volatile reads keep the compiler from turning this loop back into
    // a call to memcmp; the first differing word is finished byte by byte.
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n` and the caller guarantees `n` readable bytes at both pointers.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i) as *const [u8; 8]),
                core::ptr::read_volatile(b.add(i) as *const [u8; 8]),
            )
        };
        if x != y {
            break;
        }
        i += 8;
    }
    while i < n {
        // SAFETY: `i < n` and the caller guarantees `n` readable bytes at both pointers.
        let (x, y) = unsafe { (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i))) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// Standard `bcmp` contract: two valid regions of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// `s` must point to a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the caller guarantees a terminating NUL within the allocation.
    while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    n
}

/// Referenced by the precompiled `alloc`; unreachable with `panic = "abort"`.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::kprintln!("gridos: _Unwind_Resume called: unwinding is not supported");
    super::interrupts::halt_forever()
}

/// Referenced by the precompiled `alloc`; unreachable with `panic = "abort"`.
#[no_mangle]
pub extern "C" fn rust_eh_personality() -> ! {
    crate::kprintln!("gridos: rust_eh_personality called: unwinding is not supported");
    super::interrupts::halt_forever()
}
