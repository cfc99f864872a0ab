//! The first userland program: it reaches the OS only through `hermit_abi::*`
//! (console, clocks, entropy, memory, sleep), so it runs unchanged on Hermit.
//!
//! It prints one greeting line with the wall-clock time, the uptime, its pid and a
//! random number, then checks that memory from `malloc` holds what it wrote and
//! that `usleep` really waits.
#![no_std]

use core::fmt::Write;

use hermit_abi::{timespec, CLOCK_MONOTONIC, CLOCK_REALTIME};

struct Stdout;

impl Write for Stdout {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // SAFETY: `s` is a valid buffer of `s.len()` bytes for the duration of the call.
        let written = unsafe { hermit_abi::write(1, s.as_ptr(), s.len()) };
        if written == s.len() as isize {
            Ok(())
        } else {
            Err(core::fmt::Error)
        }
    }
}

fn clock(id: hermit_abi::clockid_t) -> Option<(i64, i32)> {
    let mut ts = timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { hermit_abi::clock_gettime(id, &mut ts) };
    (rc == 0).then_some((ts.tv_sec, ts.tv_nsec))
}

/// (year, month, day, hour, minute, second) in UTC for Unix seconds.
fn civil_from_unix(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, (rem / 3600) as u32, ((rem % 3600) / 60) as u32, (rem % 60) as u32)
}

/// Runs the program. Returns 0 on success.
pub fn main() -> i32 {
    let mut out = Stdout;
    let (Some(real), Some(mono)) = (clock(CLOCK_REALTIME), clock(CLOCK_MONOTONIC)) else {
        let _ = writeln!(out, "hello: clock_gettime failed");
        return 1;
    };
    let mut random = [0u8; 8];
    // SAFETY: `random` is a valid, writable 8-byte buffer.
    let got = unsafe { hermit_abi::read_entropy(random.as_mut_ptr(), random.len(), 0) };
    if got != random.len() as isize {
        let _ = writeln!(out, "hello: read_entropy failed ({got})");
        return 1;
    }
    // SAFETY: no preconditions.
    let pid = unsafe { hermit_abi::getpid() };
    let (y, mo, d, h, mi, s) = civil_from_unix(real.0);
    let _ = writeln!(
        out,
        "hello from userland: pid {pid}, {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC, up {}.{:03} s, random {:#018x}",
        mono.0,
        mono.1 / 1_000_000,
        u64::from_le_bytes(random)
    );

    // Memory: write a pattern through sys_malloc'd memory and read it back.
    const LEN: usize = 64 * 1024;
    // SAFETY: size and alignment are valid; the result is checked for null.
    let p = unsafe { hermit_abi::malloc(LEN, 16) };
    if p.is_null() {
        let _ = writeln!(out, "hello: malloc failed");
        return 1;
    }
    // SAFETY: `p` points to LEN writable bytes until freed below.
    let buf = unsafe { core::slice::from_raw_parts_mut(p, LEN) };
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let intact = buf.iter().enumerate().all(|(i, &b)| b == (i * 7 + 3) as u8);
    // SAFETY: `p` came from malloc with this size and alignment and is not used afterwards.
    unsafe { hermit_abi::free(p, LEN, 16) };

    // Sleep: 20 ms must pass on the monotonic clock.
    // SAFETY: no preconditions.
    unsafe { hermit_abi::usleep(20_000) };
    let after = clock(CLOCK_MONOTONIC).unwrap_or(mono);
    let slept_us = (after.0 - mono.0) * 1_000_000 + i64::from(after.1 - mono.1) / 1000;
    let _ = writeln!(out, "hello: malloc'd memory {}, usleep(20000) took {slept_us} us", if intact { "intact" } else { "CORRUPT" });
    if intact && slept_us >= 20_000 {
        0
    } else {
        1
    }
}
