//! The few symbols a libc-free static link needs: `mem*`, `bcmp`, `strlen`, and the
//! unwinding entry points that the precompiled `alloc` references (panics abort here).
//!
//! The `mem*` functions use `rep movsb`/`rep stosb`/`repe cmpsb` so the compiler can
//! never turn their bodies back into calls to themselves.

use core::arch::asm;

/// # Safety
/// Standard `memcpy` contract: valid, non-overlapping regions of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both regions are valid for `n` bytes.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
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
    // SAFETY: the caller guarantees the region is valid for `n` bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8,
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
