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
pub const CASES: &[&str] = &[
    "boot", "heap", "pagefault", "panic", "breakpoint", "timer", "hello", "disk-write", "disk-verify", "disk-bench",
    "serve", "echo-client", "workloads",
];

/// Cases that keep the node running (services, clients) instead of exiting at once.
const RUNNING_CASES: &[&str] = &["serve", "echo-client", "disk-async"];

/// Facts from boot that some cases check.
pub struct BootFacts {
    pub hello_status: i32,
    /// `gridos.seed=N`, for the disk pattern.
    pub seed: u64,
}

/// Runs test `name` and exits QEMU, unless it is a case that runs services and
/// clients on the executor (they exit themselves, or the host ends the VM).
pub fn run(name: &str, facts: &BootFacts) {
    log::info!("gridos test {name}: start");
    if name == "disk-async" {
        crate::executor::spawn("disk-async", disk_async(facts.seed));
    }
    if RUNNING_CASES.contains(&name) {
        return;
    }
    let result = match name {
        "boot" => Ok(()),
        "heap" => heap(),
        "pagefault" => page_fault(),
        "panic" => panic!("deliberate panic from the panic self-test"),
        "breakpoint" => breakpoint(),
        "timer" => timer(),
        "disk-write" => disk_write(facts.seed),
        "disk-verify" => disk_verify(facts.seed),
        "disk-bench" => disk_bench(),
        "workloads" => crate::wasm::selftest(),
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

/// The 8-byte word at byte `offset` of the disk test pattern (the host tests
/// compute the same function over the disk image).
pub fn disk_pattern_word(seed: u64, offset: u64) -> u64 {
    (offset ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (offset >> 7)
}

const DISK_CHUNK_BYTES: usize = 1 << 20;

fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, word) in buf.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&disk_pattern_word(seed, offset + 8 * i as u64).to_le_bytes());
    }
}

/// Writes the pattern over all of `vda`, then flushes.
fn disk_write(seed: u64) -> Result<(), &'static str> {
    use blockdev::{BlockDevice, SECTOR_SIZE};
    let mut buf = alloc::vec![0u8; DISK_CHUNK_BYTES];
    crate::disks::with_disk(0, |disk| {
        let size = disk.size_bytes();
        let start = time::since_boot_us();
        let mut offset = 0u64;
        while offset < size {
            let len = (size - offset).min(DISK_CHUNK_BYTES as u64) as usize;
            fill_pattern(seed, offset, &mut buf[..len]);
            disk.write(offset / SECTOR_SIZE as u64, &buf[..len]).map_err(|_| "write failed")?;
            offset += len as u64;
        }
        disk.flush().map_err(|_| "flush failed")?;
        log::info!("disk-write: wrote and flushed {} MiB on {} in {} us (seed {seed})",
            size >> 20, disk.name, time::since_boot_us() - start);
        Ok(())
    })
    .unwrap_or(Err("no disk"))
}

/// Reads all of `vda` back and compares it with the pattern.
fn disk_verify(seed: u64) -> Result<(), &'static str> {
    use blockdev::{BlockDevice, SECTOR_SIZE};
    let mut buf = alloc::vec![0u8; DISK_CHUNK_BYTES];
    let mut expected = alloc::vec![0u8; DISK_CHUNK_BYTES];
    crate::disks::with_disk(0, |disk| {
        let size = disk.size_bytes();
        let mut offset = 0u64;
        let mut bad_chunks = 0u64;
        while offset < size {
            let len = (size - offset).min(DISK_CHUNK_BYTES as u64) as usize;
            disk.read(offset / SECTOR_SIZE as u64, &mut buf[..len]).map_err(|_| "read failed")?;
            fill_pattern(seed, offset, &mut expected[..len]);
            if buf[..len] != expected[..len] {
                if bad_chunks < 4 {
                    log::error!("disk-verify: mismatch in the MiB at offset {offset:#x}");
                }
                bad_chunks += 1;
            }
            offset += len as u64;
        }
        log::info!("disk-verify: read {} MiB from {}, {bad_chunks} bad chunks (seed {seed})", size >> 20, disk.name);
        if bad_chunks == 0 { Ok(()) } else { Err("disk contents differ from the pattern") }
    })
    .unwrap_or(Err("no disk"))
}

/// Sequential write and read throughput on `vda` (prints figures, asserts nothing).
fn disk_bench() -> Result<(), &'static str> {
    use blockdev::{BlockDevice, SECTOR_SIZE};
    let buf = alloc::vec![0x5au8; DISK_CHUNK_BYTES];
    let mut rbuf = alloc::vec![0u8; DISK_CHUNK_BYTES];
    crate::disks::with_disk(0, |disk| {
        let total = disk.size_bytes().min(128 << 20) / DISK_CHUNK_BYTES as u64 * DISK_CHUNK_BYTES as u64;
        let start = time::since_boot_ns();
        for i in 0..total / DISK_CHUNK_BYTES as u64 {
            disk.write(i * (DISK_CHUNK_BYTES / SECTOR_SIZE) as u64, &buf).map_err(|_| "write failed")?;
        }
        disk.flush().map_err(|_| "flush failed")?;
        let write_ns = time::since_boot_ns() - start;
        let start = time::since_boot_ns();
        for i in 0..total / DISK_CHUNK_BYTES as u64 {
            disk.read(i * (DISK_CHUNK_BYTES / SECTOR_SIZE) as u64, &mut rbuf).map_err(|_| "read failed")?;
        }
        let read_ns = time::since_boot_ns() - start;
        let mbps = |ns: u64| total as f64 / 1e6 / (ns as f64 / 1e9);
        crate::kprintln!("bench disk: {} MiB sequential, 1 MiB requests: write {:.1} MB/s, read {:.1} MB/s",
            total >> 20, mbps(write_ns), mbps(read_ns));
        Ok(())
    })
    .unwrap_or(Err("no disk"))
}

/// Async completion: writes and reads back 16 MiB of `vda` through
/// `AsyncBlockDevice` while another task keeps running, then exits QEMU.
async fn disk_async(seed: u64) {
    use blockdev::{AsyncBlockDevice, BlockDevice, SECTOR_SIZE};
    use core::sync::atomic::{AtomicU64, Ordering};
    static OTHER_TASK_TURNS: AtomicU64 = AtomicU64::new(0);
    crate::executor::spawn("disk-async-ticker", async {
        loop {
            OTHER_TASK_TURNS.fetch_add(1, Ordering::Relaxed);
            crate::executor::sleep_ms(1).await;
        }
    });
    let result: Result<(), &'static str> = async {
        let mut disk = crate::disks::take(0).ok_or("no disk")?;
        let total = disk.size_bytes().min(16 << 20);
        let mut buf = alloc::vec![0u8; DISK_CHUNK_BYTES];
        let mut back = alloc::vec![0u8; DISK_CHUNK_BYTES];
        let turns_before = OTHER_TASK_TURNS.load(Ordering::Relaxed);
        let mut offset = 0;
        let outcome = async {
            while offset < total {
                fill_pattern(seed, offset, &mut buf);
                let sector = offset / SECTOR_SIZE as u64;
                disk.write_async(sector, &buf).await.map_err(|_| "async write failed")?;
                disk.read_async(sector, &mut back).await.map_err(|_| "async read failed")?;
                if back != buf {
                    return Err("read back differs from what was written");
                }
                offset += DISK_CHUNK_BYTES as u64;
            }
            BlockDevice::flush(&mut disk).map_err(|_| "flush failed")
        }
        .await;
        let turns = OTHER_TASK_TURNS.load(Ordering::Relaxed) - turns_before;
        log::info!("disk-async: {} MiB written and read back asynchronously; the other task ran {turns} times meanwhile", total >> 20);
        crate::disks::restore(0, disk);
        outcome?;
        if turns == 0 {
            return Err("no other task ran while the disk worked");
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            crate::kprintln!("gridos test disk-async: pass");
            power::exit_qemu(power::EXIT_SUCCESS_VALUE)
        }
        Err(reason) => {
            crate::kprintln!("gridos test disk-async: FAIL: {reason}");
            power::exit_qemu(power::EXIT_FAILURE_VALUE)
        }
    }
}
