//! The hermit-abi system-call surface: the `sys_*` functions that userland reaches
//! through `hermit_abi::*` (see ../shared/DESIGN.md, "The kernel/userland line").
//!
//! Implemented so far: console write, clocks, entropy, memory, pid, exit, sleep.

use core::alloc::Layout;

use hermit_abi::{clockid_t, timespec, CLOCK_MONOTONIC, CLOCK_REALTIME};

use crate::arch::x86_64::time;

const EINVAL: i32 = 22;
const EBADF: i32 = 9;
const EFAULT: i32 = 14;

/// Writes to the console for fds 1 and 2.
#[no_mangle]
pub extern "C" fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
    if fd != 1 && fd != 2 {
        return -(EBADF as isize);
    }
    if buf.is_null() || !crate::mm::is_identity_mapped(buf as u64, len as u64) {
        return -(EFAULT as isize);
    }
    // SAFETY: the range is mapped (checked above); hermit-abi callers pass a readable buffer.
    let bytes = unsafe { core::slice::from_raw_parts(buf, len) };
    crate::console::write_bytes(bytes);
    len as isize
}

/// `CLOCK_MONOTONIC` (since boot) and `CLOCK_REALTIME` (RTC-based).
#[no_mangle]
pub extern "C" fn sys_clock_gettime(clock_id: clockid_t, tp: *mut timespec) -> i32 {
    if tp.is_null() || !crate::mm::is_identity_mapped(tp as u64, core::mem::size_of::<timespec>() as u64) {
        return -EFAULT;
    }
    let (sec, nsec) = match clock_id {
        CLOCK_MONOTONIC => {
            let ns = time::since_boot_ns();
            (ns / 1_000_000_000, (ns % 1_000_000_000) as u32)
        }
        CLOCK_REALTIME => time::unix_time(),
        _ => return -EINVAL,
    };
    // SAFETY: `tp` is non-null and mapped (checked above).
    unsafe { tp.write(timespec { tv_sec: sec as i64, tv_nsec: nsec as i32 }) };
    0
}

/// Fills `buf` from the hardware random source.
#[no_mangle]
pub extern "C" fn sys_read_entropy(buf: *mut u8, len: usize, _flags: u32) -> isize {
    if buf.is_null() || !crate::mm::is_identity_mapped(buf as u64, len as u64) {
        return -(EFAULT as isize);
    }
    // SAFETY: the range is mapped (checked above) and the caller owns it.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    crate::entropy::fill(out);
    len as isize
}

/// Allocates from the kernel heap.
#[no_mangle]
pub extern "C" fn sys_malloc(size: usize, align: usize) -> *mut u8 {
    match Layout::from_size_align(size.max(1), align.max(1)) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { alloc::alloc::alloc(layout) },
        Err(_) => core::ptr::null_mut(),
    }
}

/// Frees memory from [`sys_malloc`].
#[no_mangle]
pub extern "C" fn sys_free(ptr: *mut u8, size: usize, align: usize) {
    if ptr.is_null() {
        return;
    }
    if let Ok(layout) = Layout::from_size_align(size.max(1), align.max(1)) {
        // SAFETY: the hermit-abi contract: `ptr` came from sys_malloc with this size and align.
        unsafe { alloc::alloc::dealloc(ptr, layout) };
    }
}

/// The current task id (one task so far).
#[no_mangle]
pub extern "C" fn sys_getpid() -> i32 {
    0
}

/// Ends the system: in test mode QEMU exits with a code reflecting `status`.
#[no_mangle]
pub extern "C" fn sys_exit(status: i32) -> ! {
    log::info!("sys_exit({status})");
    if status == 0 {
        crate::power::exit_qemu(crate::power::EXIT_SUCCESS_VALUE)
    }
    crate::power::fatal("userland exited with an error status")
}

/// Sleeps for `usecs` microseconds (halting, not spinning).
#[no_mangle]
pub extern "C" fn sys_usleep(usecs: u64) {
    time::sleep_us(usecs);
}
