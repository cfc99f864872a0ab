//! In-kernel test cases, chosen with `gridos.test=NAME` on the command line.
//!
//! Each case prints `gridos test NAME: pass` and exits QEMU with the success code,
//! or reports what went wrong and exits with the failure code. The fault cases
//! (`pagefault`, `panic`) are expected to end in the fault reporter instead.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::arch::x86_64::time;
use crate::power;

/// Names accepted by `gridos.test=`.
pub const CASES: &[&str] = &["boot", "heap", "pagefault", "panic", "breakpoint", "timer", "hello"];

/// Facts from boot that some cases check.
pub struct BootFacts {
    pub hello_status: i32,
}

/// Runs test `name` and exits QEMU.
pub fn run(name: &str, facts: &BootFacts) -> ! {
    log::info!("gridos test {name}: start");
    let result = match name {
        "boot" => Ok(()),
        "heap" => heap(),
        "pagefault" => page_fault(),
        "panic" => panic!("deliberate panic from the panic self-test"),
        "breakpoint" => breakpoint(),
        "timer" => timer(),
        "hello" => {
            if facts.hello_status == 0 { Ok(()) } else { Err("userland hello returned an error") }
        }
        _ => {
            crate::kprintln!("unknown test {name:?}; known tests: {CASES:?}");
            Err("unknown test")
        }
    };
    match result {
        Ok(()) => {
            crate::kprintln!("gridos test {name}: pass");
            power::exit_qemu(power::EXIT_SUCCESS_VALUE)
        }
        Err(reason) => {
            crate::kprintln!("gridos test {name}: FAIL: {reason}");
            power::exit_qemu(power::EXIT_FAILURE_VALUE)
        }
    }
}

/// 100k small objects with distinct contents, a large block, frees, and a reuse check.
fn heap() -> Result<(), &'static str> {
    const OBJECTS: usize = 100_000;
    let before = crate::mm::heap::allocated_bytes();
    let mut objects: Vec<Box<[u64; 4]>> = Vec::with_capacity(OBJECTS);
    for i in 0..OBJECTS as u64 {
        objects.push(Box::new([i, !i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i ^ 0x5555]));
    }
    let peak = crate::mm::heap::allocated_bytes();
    for (i, o) in objects.iter().enumerate() {
        let i = i as u64;
        if **o != [i, !i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i ^ 0x5555] {
            return Err("object contents changed");
        }
    }
    // Free every other object, then allocate into the holes and check again.
    for o in objects.iter_mut().step_by(2) {
        *o = Box::new([7; 4]);
    }
    if !objects.iter().step_by(2).all(|o| **o == [7; 4]) {
        return Err("reallocated objects are wrong");
    }
    let big: Vec<u8> = (0..16 << 20).map(|i: usize| (i % 251) as u8).collect();
    if !big.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8) {
        return Err("16 MiB block contents changed");
    }
    drop(big);
    drop(objects);
    let after = crate::mm::heap::allocated_bytes();
    log::info!(
        "heap: {OBJECTS} objects allocated and checked; peak {} KiB in use, {} B before, {} B after",
        (peak - before) / 1024,
        before,
        after
    );
    if after != before {
        return Err("heap usage did not return to its starting value");
    }
    Ok(())
}

fn page_fault() -> Result<(), &'static str> {
    let address = 0x5eed_0000_0000u64 as *const u64;
    log::info!("reading unmapped address {:p}", address);
    // SAFETY: deliberately unsound: this test checks that the fault is reported.
    let value = unsafe { core::ptr::read_volatile(address) };
    log::error!("read {value:#x} from an unmapped address");
    Err("the page fault did not happen")
}

fn breakpoint() -> Result<(), &'static str> {
    x86_64::instructions::interrupts::int3();
    log::info!("resumed after breakpoint");
    Ok(())
}

/// The tick advances and the clock agrees with it over 300 ms of halting.
fn timer() -> Result<(), &'static str> {
    let ticks_before = time::ticks();
    let us_before = time::since_boot_us();
    time::sleep_us(300_000);
    let ticks = time::ticks() - ticks_before;
    let us = time::since_boot_us() - us_before;
    log::info!("timer: {ticks} ticks at {} Hz in {us} us", time::TICK_HZ);
    if us < 300_000 {
        return Err("slept less than asked");
    }
    let expected = us * u64::from(time::TICK_HZ) / 1_000_000;
    if ticks == 0 || ticks * 2 < expected {
        return Err("the timer interrupt is not ticking at its rate");
    }
    Ok(())
}
