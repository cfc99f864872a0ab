//! In-kernel test cases, chosen with `gridos.test=NAME` on the command line.
//!
//! Each case prints `gridos test NAME: pass` and exits QEMU with the success code,
//! or reports what went wrong and exits with the failure code. The fault cases
//! (`pagefault`, `panic`, `wx-write-code`, `wx-exec-heap`) are expected to end in the
//! fault reporter instead.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::arch::x86_64::time;
use crate::power;

/// Names accepted by `gridos.test=`.
pub const CASES: &[&str] = &[
    "boot", "heap", "pagefault", "panic", "breakpoint", "timer", "smp", "hello", "disk-write", "disk-verify", "disk-bench",
    "disks-bench", "disk-async", "serve", "echo-client", "workloads", "store-stream", "store-verify", "store-bench", "store-smoke",
    "workload-deploy", "workload-restart", "workload-serve", "wx-code", "wx-write-code", "wx-exec-heap",
];

/// Cases that keep the node running (services, clients) instead of exiting at once.
const RUNNING_CASES: &[&str] = &["serve", "echo-client", "disk-async", "workload-deploy", "workload-restart", "workload-serve"];

/// Facts from boot that some cases check.
pub struct BootFacts {
    pub hello_status: i32,
    /// `gridos.seed=N`, for the disk pattern.
    pub seed: u64,
    /// `gridos.store_expect=N`: `store-verify` checks stream shards `0..=N`.
    pub store_expect: Option<u64>,
}

/// Runs test `name` and exits QEMU, unless it is a case that runs services and
/// clients on the executor (they exit themselves, or the host ends the VM).
pub fn run(name: &str, facts: &BootFacts) {
    log::info!("gridos test {name}: start");
    match name {
        "disk-async" => crate::executor::spawn("disk-async", disk_async(facts.seed)),
        "workload-deploy" => crate::executor::spawn("workload-deploy", crate::wasm::deploy_case()),
        "workload-restart" => crate::executor::spawn("workload-restart", crate::wasm::restart_case()),
        "workload-serve" => crate::executor::spawn("workload-serve", crate::wasm::serve_case()),
        _ => {}
    }
    if RUNNING_CASES.contains(&name) {
        return;
    }
    let result = match name {
        "boot" => Ok(()),
        "heap" => heap(),
        "pagefault" => page_fault(),
        "wx-code" => wx_code(),
        "wx-write-code" => wx_write_code(),
        "wx-exec-heap" => wx_exec_heap(),
        "panic" => panic!("deliberate panic from the panic self-test"),
        "breakpoint" => breakpoint(),
        "timer" => timer(),
        "smp" => smp_check(),
        "disk-write" => disk_write(facts.seed),
        "disk-verify" => disk_verify(facts.seed),
        "disk-bench" => disk_bench(),
        "disks-bench" => disks_bench(),
        "store-stream" => store_stream(facts.seed),
        "store-verify" => store_verify(facts.seed, facts.store_expect),
        "store-bench" => crate::storebench::run(),
        "store-smoke" => store_smoke(facts.seed),
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
    // A block larger than the heap's first block: the heap grows on demand.
    let size_before = crate::mm::heap::size_bytes();
    let (grew_before, _) = crate::mm::heap::growths();
    let large = alloc::vec![0x5au8; 128 << 20];
    if large.iter().step_by(4096).any(|&b| b != 0x5a) || large.last() != Some(&0x5a) {
        return Err("128 MiB block contents changed");
    }
    let (grew_after, blocks) = crate::mm::heap::growths();
    let size_after = crate::mm::heap::size_bytes();
    if grew_after == grew_before || size_after < size_before + (128 << 20) || size_after > crate::mm::heap::ceiling_bytes() {
        return Err("the heap did not grow within its ceiling for a 128 MiB block");
    }
    drop(large);
    log::info!("heap: grew from {} KiB to {} KiB for a 128 MiB block ({} growths, {blocks} blocks, ceiling {} KiB)",
        size_before >> 10, size_after >> 10, grew_after - grew_before, crate::mm::heap::ceiling_bytes() >> 10);
    // Larger than any free block now: the heap grows again (extending its last block
    // when the frames after it are free, which joins them with its free tail).
    let huge = alloc::vec![0xa5u8; 256 << 20];
    if huge.iter().step_by(4096).any(|&b| b != 0xa5) || huge.last() != Some(&0xa5) {
        return Err("256 MiB block contents changed");
    }
    drop(huge);
    let (grew, blocks) = crate::mm::heap::growths();
    log::info!("heap: then {} KiB for a 256 MiB block ({} growths, {blocks} blocks)", crate::mm::heap::size_bytes() >> 10,
        grew - grew_before);
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

/// W^X: writes one byte of kernel `.text` (the byte already there, so nothing changes
/// if the write wrongly succeeds); the page fault must end the boot.
fn wx_write_code() -> Result<(), &'static str> {
    let target = wx_write_code as *const () as *mut u8;
    crate::kprintln!("wx-write-code: writing to kernel code at {:#x}", target as u64);
    // SAFETY: deliberately unsound: this test checks that .text is read-only. The byte
    // written is the one read, so a missing fault leaves the code unchanged.
    unsafe { core::ptr::write_volatile(target, core::ptr::read_volatile(target)) };
    Err("writing to kernel code did not fault")
}

/// W^X: places a `ret` in a heap allocation and calls it; the fetch must fault.
fn wx_exec_heap() -> Result<(), &'static str> {
    let code = Box::new([0xc3u8; 64]);
    let target = code.as_ptr();
    crate::kprintln!("wx-exec-heap: calling a ret instruction in the heap at {:#x}", target as u64);
    // SAFETY: deliberately unsound: this test checks that heap memory is NX. Were it
    // executable, the call would run `ret` and return normally.
    let f = unsafe { core::mem::transmute::<*const u8, extern "C" fn()>(target) };
    f();
    drop(code);
    Err("executing heap memory did not fault")
}

/// Checks one address's page protection against the policy.
fn expect_protection(what: &str, addr: u64, writable: bool, executable: bool) -> Result<(), &'static str> {
    let Some(p) = crate::mm::paging::protection(addr) else {
        crate::kprintln!("wx-code: {what} at {addr:#x} is not mapped");
        return Err("an address the policy maps is unmapped");
    };
    if p.writable != writable || p.executable != executable {
        crate::kprintln!("wx-code: {what} at {addr:#x}: {p:?}, expected writable={writable} executable={executable}");
        return Err("a page has the wrong protection");
    }
    Ok(())
}

/// W^X without faulting: the protection of every kind of kernel memory, and a code
/// page's round trip through wasmtime's code-memory hooks (published, run,
/// unpublished, written, and freed while published).
fn wx_code() -> Result<(), &'static str> {
    use crate::wasm::platform::KernelCodeMemory;
    use core::alloc::Layout;
    use wasmtime::CustomCodeMemory;
    static READ_ONLY: [u8; 8] = *b"rodata!!";
    static WRITABLE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);
    if !crate::mm::paging::nx_enabled() {
        return Err("NX is off (the CPU has no NX, or EFER.NXE was not set)");
    }
    let stack_byte = 0u8;
    let heap_block = Box::new(0u64);
    expect_protection(".text", wx_code as *const () as u64, false, true)?;
    expect_protection(".rodata", READ_ONLY.as_ptr() as u64, false, false)?;
    expect_protection(".data/.bss", core::ptr::addr_of!(WRITABLE) as u64, true, false)?;
    expect_protection("the stack", core::ptr::addr_of!(stack_byte) as u64, true, false)?;
    expect_protection("the heap", &*heap_block as *const u64 as u64, true, false)?;
    expect_protection("local APIC MMIO", 0xfee0_0000, true, false)?;
    if crate::mm::paging::protection(0).is_some() {
        return Err("page 0 is mapped");
    }
    crate::kprintln!("wx-code: .text read-only+exec; .rodata read-only+NX; data, stack, heap, MMIO writable+NX; page 0 unmapped");

    // mov eax, 42; ret
    const CODE: [u8; 6] = [0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3];
    let hooks = KernelCodeMemory;
    let layout = Layout::from_size_align(100, hooks.required_alignment()).map_err(|_| "bad layout")?;
    // SAFETY: a non-zero-sized layout; the block is freed below with the same layout.
    let block = unsafe { alloc::alloc::alloc(layout) };
    if block.is_null() {
        return Err("no heap for a code page");
    }
    // SAFETY: `block` is a fresh allocation of 100 bytes, writable (heap) until published.
    unsafe { core::ptr::copy_nonoverlapping(CODE.as_ptr(), block, CODE.len()) };
    let addr = block as u64;
    let result = (|| {
        // Ranges the hooks must refuse, leaving the pages as they were.
        // SAFETY: one byte into the 100-byte allocation.
        let unaligned = unsafe { block.add(1) };
        if hooks.publish_executable(unaligned, CODE.len()).is_ok() {
            return Err("publish_executable accepted a range that does not start on a page");
        }
        let kernel_data = core::ptr::addr_of!(WRITABLE) as u64 & !4095;
        if hooks.publish_executable(kernel_data as *const u8, 4096).is_ok()
            || hooks.publish_executable(0x1000 as *const u8, 4096).is_ok()
            || crate::mm::paging::make_code(0x10_0000, 4096).is_ok()
        {
            return Err("code memory outside the heap was accepted");
        }
        expect_protection("a refused code page", addr, true, false)?;
        expect_protection(".data/.bss after a refused publish", kernel_data, true, false)?;
        hooks.publish_executable(block, CODE.len()).map_err(|_| "publish_executable failed")?;
        expect_protection("a published code page", addr, false, true)?;
        expect_protection("the page after a code page", addr + 4096, true, false)?;
        // SAFETY: the page holds `mov eax, 42; ret` and is now executable; the
        // function takes nothing and follows the C ABI (result in eax).
        let f = unsafe { core::mem::transmute::<*mut u8, extern "C" fn() -> u32>(block) };
        let value = f();
        if value != 42 {
            return Err("published code returned the wrong value");
        }
        hooks.unpublish_executable(block, CODE.len()).map_err(|_| "unpublish_executable failed")?;
        expect_protection("an unpublished code page", addr, true, false)?;
        // SAFETY: writable again (checked just above), and still our allocation.
        unsafe { core::ptr::write_volatile(block, 0xc3) };
        hooks.publish_executable(block, CODE.len()).map_err(|_| "second publish failed")?;
        crate::kprintln!("wx-code: unaligned, kernel-image and low-memory code ranges refused");
        crate::kprintln!("wx-code: published code page ran (returned {value}); unpublished it is writable+NX again");
        Ok(())
    })();
    // Freed while published: the heap must make the page data again.
    // SAFETY: allocated above with `layout`; nothing runs from it any more.
    unsafe { alloc::alloc::dealloc(block, layout) };
    result?;
    expect_protection("a code page freed while published", addr, true, false)?;
    crate::kprintln!("wx-code: a code page freed while published is writable+NX again");
    drop(heap_block);
    Ok(())
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

/// Every CPU is online, takes its own timer ticks, runs a job posted to it, and
/// drops its TLB entries when a page's permissions change (shootdown).
fn smp_check() -> Result<(), &'static str> {
    use crate::arch::x86_64::smp;
    let online = smp::online() as usize;
    crate::kprintln!("smp: {online} CPUs online");
    // Each AP's own timer: wait (bounded) until every AP has ticked.
    let deadline = time::since_boot_ns() + 2_000_000_000;
    while (1..online).any(|i| smp::cpu(i).is_none_or(|c| c.ticks.load(core::sync::atomic::Ordering::Relaxed) == 0)) {
        if time::since_boot_ns() > deadline {
            return Err("an application processor takes no timer ticks");
        }
        time::sleep_us(10_000);
    }
    // A job on every AP at once: each sums a different range.
    fn job(arg: u64) -> u64 {
        (0..1_000_000u64).fold(arg, |acc, x| acc.wrapping_mul(31).wrapping_add(x ^ arg))
    }
    for i in 1..online {
        smp::run_on(i, job, i as u64).map_err(|_| "could not post a job to an AP")?;
    }
    let deadline = time::since_boot_ns() + 20_000_000_000;
    let mut pending: Vec<usize> = (1..online).collect();
    while !pending.is_empty() {
        if time::since_boot_ns() > deadline {
            return Err("an application processor did not finish its job");
        }
        let mut still = Vec::new();
        for i in pending {
            match smp::poll_result(i) {
                Some(r) if r == job(i as u64) => crate::kprintln!("smp: cpu {i} ran its job"),
                Some(_) => return Err("an application processor computed a wrong result"),
                None => still.push(i),
            }
        }
        pending = still;
        time::sleep_us(1000);
    }
    // TLB shootdown: a heap page made code and data again reaches every other CPU.
    let before: Vec<u64> = (0..online).map(|i| smp::cpu(i).map_or(0, |c| c.shootdowns_seen())).collect();
    let layout = core::alloc::Layout::from_size_align(4096, 4096).map_err(|_| "layout")?;
    // SAFETY: a fresh, page-aligned, page-sized block that nothing else uses; freed below.
    let page = unsafe { alloc::alloc::alloc(layout) };
    if page.is_null() {
        return Err("no page for the shootdown check");
    }
    let flipped = crate::mm::paging::make_code(page as u64, 4096).and_then(|()| crate::mm::paging::make_data(page as u64, 4096));
    // SAFETY: allocated above with this layout; its pages are data again.
    unsafe { alloc::alloc::dealloc(page, layout) };
    flipped.map_err(|_| "could not flip a heap page's permissions")?;
    for i in 1..online {
        let seen = smp::cpu(i).map_or(0, |c| c.shootdowns_seen());
        if seen < before[i] + 2 {
            return Err("an application processor missed a TLB shootdown");
        }
    }
    crate::kprintln!("smp: {} application processors took ticks, ran jobs and took TLB shootdowns", online - 1);
    crate::wasm::spread_case().map_err(|e| {
        log::error!("smp: workloads: {e}");
        "workloads did not spread over the CPUs"
    })?;
    smp_wedge()
}

/// Flips a fresh heap page to code and back: two permission changes, each followed by
/// a TLB shootdown. Returns how long the two took (us).
fn flip_heap_page() -> Result<u64, &'static str> {
    let layout = core::alloc::Layout::from_size_align(4096, 4096).map_err(|_| "layout")?;
    // SAFETY: a fresh, page-aligned, page-sized block that nothing else uses; freed below.
    let page = unsafe { alloc::alloc::alloc(layout) };
    if page.is_null() {
        return Err("no page for the shootdown check");
    }
    let t0 = time::since_boot_us();
    let flipped = crate::mm::paging::make_code(page as u64, 4096).and_then(|()| crate::mm::paging::make_data(page as u64, 4096));
    let took_us = time::since_boot_us() - t0;
    // SAFETY: allocated above with this layout; its pages are data again.
    unsafe { alloc::alloc::dealloc(page, layout) };
    flipped.map_err(|_| "could not flip a heap page's permissions")?;
    Ok(took_us)
}

/// CPUs that stop answering (last, since they stay out of service): the last AP
/// spins with interrupts disabled in a job, first for a third of the answer bound (it
/// answers late and stays in service), then for 10 s, and a page-permission change's
/// shootdown gives up on it; then the one before stops in the middle of a workload's time slice
/// and the scheduler's liveness probe gives up on it. The node carries on with the
/// others. Needs four CPUs (skipped with fewer).
fn smp_wedge() -> Result<(), &'static str> {
    use crate::arch::x86_64::smp;
    let cpus = smp::in_service_cpus();
    if cpus.len() < 4 {
        crate::kprintln!("smp: wedge: skipped ({} CPUs in service)", cpus.len());
        return Ok(());
    }
    let (job_cpu, slice_cpu, worker) = (cpus[3], cpus[2], cpus[1]);
    crate::kprintln!("smp: wedge: slowest shootdown answer so far {} us", smp::slowest_answer_us());
    fn echo(arg: u64) -> u64 {
        arg
    }
    let wedge = |cpu: usize, spin_ms: u64| -> Result<(), &'static str> {
        smp::wedge_next_job_on(cpu, spin_ms);
        smp::run_on(cpu, echo, 7).map_err(|_| "could not post the wedging job")?;
        let deadline = time::since_boot_ns() + 2_000_000_000;
        while smp::wedge_armed() {
            if time::since_boot_ns() > deadline {
                return Err("the CPU to wedge did not take its job");
            }
            time::sleep_us(1000);
        }
        Ok(())
    };
    // A CPU that is late (interrupts off for a third of the answer bound) but answers
    // in the end (resent IPIs) stays in service.
    let late_ms = smp::answer_bound_ms() / 3;
    wedge(job_cpu, late_ms)?;
    let took_us = flip_heap_page()?;
    if !smp::in_service(job_cpu) || smp::wait_result(job_cpu) != Ok(7) {
        return Err("a CPU that answered a shootdown late was taken out of service");
    }
    crate::kprintln!("smp: wedge: cpu {job_cpu} spun {late_ms} ms with interrupts off, answered the page flip's shootdowns \
        after {} ms, and stays in service", took_us / 1000);
    // A CPU that does not answer: interrupts off for 10 s.
    wedge(job_cpu, 10_000)?;
    let took_us = flip_heap_page()?;
    if smp::in_service(job_cpu) {
        return Err("a CPU that did not answer a shootdown is still in service");
    }
    let parked = |index: usize| {
        let deadline = time::since_boot_ns() + 2_000_000_000;
        while smp::cpu(index).is_some_and(|c| !c.is_parked()) {
            if time::since_boot_ns() > deadline {
                return false;
            }
            time::sleep_us(1000);
        }
        smp::cpu(index).is_some_and(|c| c.is_out_of_service())
    };
    if !parked(job_cpu) {
        return Err("the CPU taken out of service did not park");
    }
    crate::kprintln!("smp: wedge: page flip with cpu {job_cpu} wedged took {} ms; cpu {job_cpu} out of service and parked (CR3 reloaded)",
        took_us / 1000);
    // The others still take shootdowns, and no wait goes to the parked CPU.
    let before: Vec<u64> = cpus.iter().map(|&i| smp::cpu(i).map_or(0, |c| c.shootdowns_seen())).collect();
    let took_us = flip_heap_page()?;
    for (k, &i) in cpus.iter().enumerate().filter(|&(_, &i)| i != 0 && i != job_cpu) {
        if smp::cpu(i).map_or(0, |c| c.shootdowns_seen()) < before[k] + 2 {
            return Err("a CPU in service missed a TLB shootdown after the wedge");
        }
    }
    crate::kprintln!("smp: wedge: next page flip took {took_us} us");
    if smp::run_on(job_cpu, echo, 1) != Err(smp::RunError::OutOfService) {
        return Err("a job was posted to a CPU out of service");
    }
    smp::run_on(worker, echo, 42).map_err(|_| "could not post a job after the wedge")?;
    if smp::wait_result(worker) != Ok(42) {
        return Err("a CPU in service did not run its job after the wedge");
    }
    crate::kprintln!("smp: wedge: cpu {worker} still runs jobs");
    // A CPU lost in the middle of a workload's slice.
    smp::wedge_next_job_on(slice_cpu, 10_000);
    crate::wasm::wedge_case(slice_cpu).map_err(|e| {
        log::error!("smp: wedge: workloads: {e}");
        "workloads did not survive a CPU taken out of service"
    })?;
    if !parked(slice_cpu) {
        return Err("the CPU lost in a workload slice did not park");
    }
    crate::kprintln!("smp: wedge: node carries on with {} of {} CPUs in service", smp::in_service_cpus().len(), smp::online());
    Ok(())
}

/// The 8-byte word at byte `offset` of the disk test pattern (the host tests
/// compute the same function over the disk image).
pub fn disk_pattern_word(seed: u64, offset: u64) -> u64 {
    (offset ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (offset >> 7)
}

const DISK_CHUNK_BYTES: usize = 1 << 20;

pub(crate) fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
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

/// Every disk of the table, raw (it overwrites them: boot with `gridos.disks=none`):
/// sequential write (1 MiB requests, then a flush) and read of up to 32 MiB, and
/// 4 KiB random writes (then a flush) and reads at seeded offsets in that span.
/// Prints one `bench disk NAME (KIND): ...` line per disk; asserts nothing.
fn disks_bench() -> Result<(), &'static str> {
    use blockdev::{BlockDevice, SECTOR_SIZE};
    const SPAN_BYTES_MAX: u64 = 32 << 20;
    const RANDOM_OPS: u64 = 512;
    const SMALL_BYTES: usize = 4096;
    let big = alloc::vec![0x5au8; DISK_CHUNK_BYTES];
    let mut back = alloc::vec![0u8; DISK_CHUNK_BYTES];
    for index in 0..crate::disks::count() {
        crate::disks::with_disk(index, |disk| -> Result<(), &'static str> {
            let span = disk.size_bytes().min(SPAN_BYTES_MAX) / DISK_CHUNK_BYTES as u64 * DISK_CHUNK_BYTES as u64;
            if span == 0 || disk.read_only() {
                return Ok(());
            }
            let chunks = span / DISK_CHUNK_BYTES as u64;
            let chunk_sectors = (DISK_CHUNK_BYTES / SECTOR_SIZE) as u64;
            let start = time::since_boot_ns();
            for i in 0..chunks {
                disk.write(i * chunk_sectors, &big).map_err(|_| "write failed")?;
            }
            disk.flush().map_err(|_| "flush failed")?;
            let seq_write_ns = time::since_boot_ns() - start;
            let start = time::since_boot_ns();
            for i in 0..chunks {
                disk.read(i * chunk_sectors, &mut back).map_err(|_| "read failed")?;
            }
            let seq_read_ns = time::since_boot_ns() - start;
            let slots = span / SMALL_BYTES as u64;
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ index as u64;
            let mut next_sector = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % slots) * (SMALL_BYTES / SECTOR_SIZE) as u64
            };
            let start = time::since_boot_ns();
            for _ in 0..RANDOM_OPS {
                disk.write(next_sector(), &big[..SMALL_BYTES]).map_err(|_| "random write failed")?;
            }
            disk.flush().map_err(|_| "flush failed")?;
            let random_write_ns = time::since_boot_ns() - start;
            let start = time::since_boot_ns();
            for _ in 0..RANDOM_OPS {
                disk.read(next_sector(), &mut back[..SMALL_BYTES]).map_err(|_| "random read failed")?;
            }
            let random_read_ns = time::since_boot_ns() - start;
            let mbps = |bytes: u64, ns: u64| bytes as f64 / 1e6 / (ns.max(1) as f64 / 1e9);
            let small_total = RANDOM_OPS * SMALL_BYTES as u64;
            crate::kprintln!(
                "bench disk {} ({}): {} MiB sequential, 1 MiB requests: write {:.1} MB/s, read {:.1} MB/s; {} x 4 KiB random: write {:.1} MB/s, read {:.1} MB/s",
                disk.name,
                disk.kind.as_str(),
                span >> 20,
                mbps(span, seq_write_ns),
                mbps(span, seq_read_ns),
                RANDOM_OPS,
                mbps(small_total, random_write_ns),
                mbps(small_total, random_read_ns),
            );
            Ok(())
        })
        .unwrap_or(Err("disk vanished"))?;
    }
    Ok(())
}

/// Async completion: writes and reads back the first 16 MiB of every disk (virtio,
/// NVMe, SATA), all disks at once, through `AsyncBlockDevice` while another task keeps
/// running, then exits QEMU.
async fn disk_async(seed: u64) {
    use core::sync::atomic::{AtomicU64, Ordering};
    static OTHER_TASK_TURNS: AtomicU64 = AtomicU64::new(0);
    crate::executor::spawn("disk-async-ticker", async {
        loop {
            OTHER_TASK_TURNS.fetch_add(1, Ordering::Relaxed);
            crate::executor::sleep_ms(1).await;
        }
    });
    // Every disk at once, one task each: the namespaces of an NVMe controller and the
    // ports of an AHCI HBA share one interrupt, so their requests wait on one event.
    // The disks leave the table while their tasks own them, and go back in order.
    static FINISHED: AtomicU64 = AtomicU64::new(0);
    static FAILURE: spin::Mutex<Option<&'static str>> = spin::Mutex::new(None);
    static RETURNED: spin::Mutex<Vec<(usize, crate::disks::Disk)>> = spin::Mutex::new(Vec::new());
    let disks = crate::disks::count();
    for index in 0..disks {
        let Some(disk) = crate::disks::take(0) else { break };
        crate::executor::spawn("disk-async", async move {
            let (disk, outcome) = disk_async_one(disk, seed, &OTHER_TASK_TURNS).await;
            if let Err(reason) = outcome {
                FAILURE.lock().get_or_insert(reason);
            }
            RETURNED.lock().push((index, disk));
            FINISHED.fetch_add(1, Ordering::AcqRel);
        });
    }
    while (FINISHED.load(Ordering::Acquire) as usize) < disks {
        crate::executor::sleep_ms(10).await;
    }
    let mut returned = core::mem::take(&mut *RETURNED.lock());
    returned.sort_by_key(|(index, _)| *index);
    for (index, disk) in returned {
        crate::disks::restore(index, disk);
    }
    let failure = *FAILURE.lock();
    let result = match failure {
        _ if disks == 0 => Err("no disk"),
        Some(reason) => Err(reason),
        None => Ok(()),
    };
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

/// `disk-async` on `disk`: the first 16 MiB written and read back; the disk is handed
/// back with the outcome.
async fn disk_async_one(
    mut disk: crate::disks::Disk,
    seed: u64,
    other_task_turns: &core::sync::atomic::AtomicU64,
) -> (crate::disks::Disk, Result<(), &'static str>) {
    use blockdev::{AsyncBlockDevice, BlockDevice, SECTOR_SIZE};
    use core::sync::atomic::Ordering;
    let total = disk.size_bytes().min(16 << 20);
    let mut buf = alloc::vec![0u8; DISK_CHUNK_BYTES];
    let mut back = alloc::vec![0u8; DISK_CHUNK_BYTES];
    let turns_before = other_task_turns.load(Ordering::Relaxed);
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
        disk_buffer_cases(&mut disk, seed).await?;
        BlockDevice::flush(&mut disk).map_err(|_| "flush failed")
    }
    .await;
    let turns = other_task_turns.load(Ordering::Relaxed) - turns_before;
    log::info!("disk-async: {} MiB written and read back asynchronously on {}; the other task ran {turns} times meanwhile",
        total >> 20, disk.name);
    let outcome = outcome.and_then(|()| if turns == 0 { Err("no other task ran while the disk worked") } else { Ok(()) });
    (disk, outcome)
}

/// `disk-async`'s buffer cases: what is written from one buffer reads back the same
/// into another, at addresses the controllers take as they are (page, dword and word
/// offsets: NVMe needs 4-byte, AHCI 2-byte alignment) and at ones they cannot (odd
/// ones go through the bounce buffer), across page ends and per-command limits (up to
/// 3 MiB: several NVMe commands), synchronously and asynchronously (in pieces of at
/// most 1 MiB: virtio-blk's asynchronous limit); and a read dropped
/// while a command of it is in flight waits for it, so the next request works.
async fn disk_buffer_cases(disk: &mut crate::disks::Disk, seed: u64) -> Result<(), &'static str> {
    use blockdev::{AsyncBlockDevice, BlockDevice};
    use core::future::Future;
    const PAGE: usize = 4096;
    // (write buffer's offset from a page start, read buffer's offset, bytes)
    const CASES: [(usize, usize, usize); 7] = [
        (0, 1, 512),
        (1, 0, PAGE + 512),
        (4, 2, 2 * PAGE + 1024),
        (PAGE - 4, 4, 64 << 10),
        (2, PAGE - 8, 1 << 20),
        (3, 0, 3 << 20),
        (4, 4, (3 << 20) + 512),
    ];
    const BUFFER_BYTES: usize = (3 << 20) + 512 + 2 * PAGE;
    const ASYNC_BYTES_MAX: usize = 1 << 20;
    // The cases overwrite the first 4 MiB; the pattern `disk-async` wrote is put back after.
    const SPAN_BYTES: usize = 4 << 20;
    if disk.size_bytes() < SPAN_BYTES as u64 {
        log::info!("disk-async: {}: smaller than {} MiB, no buffer cases", disk.name, SPAN_BYTES >> 20);
        return Ok(());
    }
    let mut out = alloc::vec![0u8; BUFFER_BYTES.max(SPAN_BYTES)];
    let mut back = alloc::vec![0u8; BUFFER_BYTES];
    let page_start = |v: &[u8]| (PAGE - v.as_ptr() as usize % PAGE) % PAGE;
    let (out_page, back_page) = (page_start(&out), page_start(&back));
    let mut last = 0..0;
    for (i, &(w_at, r_at, bytes)) in CASES.iter().enumerate() {
        let (w, r) = (out_page + w_at..out_page + w_at + bytes, back_page + r_at..back_page + r_at + bytes);
        fill_pattern(seed ^ (i as u64 + 1), 0, &mut out[w.clone()]);
        back[r.clone()].fill(0);
        // Asynchronous requests in pieces of at most ASYNC_BYTES_MAX (virtio-blk's limit).
        if i % 2 == 0 {
            for (k, piece) in out[w.clone()].chunks(ASYNC_BYTES_MAX).enumerate() {
                let sector = (k * ASYNC_BYTES_MAX / blockdev::SECTOR_SIZE) as u64;
                disk.write_async(sector, piece).await.map_err(|_| "buffer cases: async write failed")?;
            }
            BlockDevice::read(disk, 0, &mut back[r.clone()]).map_err(|_| "buffer cases: read failed")?;
        } else {
            BlockDevice::write(disk, 0, &out[w.clone()]).map_err(|_| "buffer cases: write failed")?;
            for (k, piece) in back[r.clone()].chunks_mut(ASYNC_BYTES_MAX).enumerate() {
                let sector = (k * ASYNC_BYTES_MAX / blockdev::SECTOR_SIZE) as u64;
                disk.read_async(sector, piece).await.map_err(|_| "buffer cases: async read failed")?;
            }
        }
        if back[r] != out[w.clone()] {
            log::error!("disk-async: {}: {bytes} bytes written from page offset {w_at} read back differently into offset {r_at}", disk.name);
            return Err("buffer cases: read back differs from what was written");
        }
        last = w;
    }
    {
        let mut read = core::pin::pin!(disk.read_async(0, &mut back[..ASYNC_BYTES_MAX]));
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        let _ = read.as_mut().poll(&mut cx);
    }
    back[..ASYNC_BYTES_MAX].fill(0);
    disk.read_async(0, &mut back[..ASYNC_BYTES_MAX]).await.map_err(|_| "buffer cases: read after a dropped read failed")?;
    if back[..ASYNC_BYTES_MAX] != out[last.start..last.start + ASYNC_BYTES_MAX] {
        return Err("buffer cases: read after a dropped read differs");
    }
    fill_pattern(seed, 0, &mut out[..SPAN_BYTES]);
    BlockDevice::write(disk, 0, &out[..SPAN_BYTES]).map_err(|_| "buffer cases: restoring the pattern failed")?;
    log::info!("disk-async: {}: {} buffer cases and a dropped read passed", disk.name, CASES.len());
    Ok(())
}

// --- Shard store cases (storage.rs): stream + verify for the host's crash test, bench, smoke.

/// Shard `index` of the `store-stream` sequence: 64 KiB to 1 MiB of pattern bytes
/// derived from (`seed`, `index`) alone, so a later boot (or the host) can rebuild it.
pub fn stream_shard(seed: u64, index: u64) -> Vec<u8> {
    let mix = disk_pattern_word(seed ^ 0x5eed_0000_5eed, index.wrapping_mul(0x0100_0000_01b3));
    let len = (64 << 10) + (mix % (960 << 10)) as usize;
    let mut bytes = alloc::vec![0u8; (len + 7) & !7];
    fill_pattern(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93), 0, &mut bytes);
    bytes.truncate(len);
    bytes
}

fn key_hex(key: &[u8; 32]) -> alloc::string::String {
    use core::fmt::Write;
    let mut s = alloc::string::String::with_capacity(64);
    for b in key {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Puts stream shards one after another, printing `store acked <index> <key>` as each
/// `put` returns (durable), until the store is full; the host pulls the plug meanwhile.
/// Resumes after the shards an earlier run left.
fn store_stream(seed: u64) -> Result<(), &'static str> {
    use crate::storage::{self, NODE_OWNER};
    const SHARDS_MAX: u64 = 100_000;
    let mut index = 0;
    while index < SHARDS_MAX && storage::info(&NODE_OWNER, blake3::hash(&stream_shard(seed, index)).as_bytes()).is_some() {
        index += 1;
    }
    crate::kprintln!("store stream: seed {seed}, starting at shard {index}");
    while index < SHARDS_MAX {
        let bytes = stream_shard(seed, index);
        match storage::put(&NODE_OWNER, &bytes) {
            Ok(key) => crate::kprintln!("store acked {index} {}", key_hex(&key)),
            Err(storage::Error::NoSpace) => break,
            Err(e) => {
                log::error!("store stream: put of shard {index} failed: {e}");
                return Err("put failed");
            }
        }
        index += 1;
    }
    crate::kprintln!("store stream: stopped before shard {index} (store full)");
    Ok(())
}

/// Checks stream shards `0..=expect` byte for byte, then writes and reads back one more.
fn store_verify(seed: u64, expect: Option<u64>) -> Result<(), &'static str> {
    use crate::storage::{self, NODE_OWNER};
    let expect = expect.ok_or("gridos.store_expect=N is missing")?;
    let started_us = time::since_boot_us();
    for index in 0..=expect {
        let bytes = stream_shard(seed, index);
        match storage::get(&NODE_OWNER, blake3::hash(&bytes).as_bytes()) {
            Ok(got) if got == bytes => {}
            Ok(_) => {
                crate::kprintln!("store verify: shard {index} is corrupt");
                return Err("a shard differs from what was acked");
            }
            Err(e) => {
                crate::kprintln!("store verify: shard {index} is missing ({e})");
                return Err("an acked shard is missing");
            }
        }
    }
    crate::kprintln!("store verify: {} shards intact ({} us)", expect + 1, time::since_boot_us() - started_us);
    let extra = stream_shard(!seed, time::since_boot_ns());
    let key = storage::put(&NODE_OWNER, &extra).map_err(|_| "put after verify failed")?;
    if storage::get(&NODE_OWNER, &key).map_err(|_| "get after verify failed")? != extra {
        return Err("the new shard reads back wrong");
    }
    crate::kprintln!("store verify: new shard {} written and read back", key_hex(&key));
    for d in storage::disks() {
        crate::kprintln!("store verify: {} {:?}, {} shards", d.name, d.state, d.stat.shard_count);
    }
    Ok(())
}

/// put/get/list/info/prove/delete on a few shards of odd sizes, over whatever disks mounted.
fn store_smoke(seed: u64) -> Result<(), &'static str> {
    use crate::storage::{self, NODE_OWNER};
    const SIZES: &[usize] = &[1, 511, 512, 4095, 4096, 4097, 100_000, 1 << 20];
    let mut keys = Vec::new();
    for (i, &size) in SIZES.iter().enumerate() {
        let mut bytes = stream_shard(seed ^ 0x5a0c, i as u64 + time::since_boot_ns());
        bytes.resize(size, 0xa5);
        let key = storage::put(&NODE_OWNER, &bytes).map_err(|e| {
            log::error!("store smoke: put of {size} bytes failed: {e}");
            "put failed"
        })?;
        keys.push((key, bytes));
    }
    let listed = storage::list(&NODE_OWNER);
    for (i, (key, bytes)) in keys.iter().enumerate() {
        if storage::get(&NODE_OWNER, key).map_err(|_| "get failed")? != *bytes {
            return Err("a shard reads back wrong");
        }
        if !listed.contains(key) {
            return Err("list misses a shard");
        }
        let info = storage::info(&NODE_OWNER, key).ok_or("info misses a shard")?;
        if info.len_bytes != bytes.len() as u64 {
            return Err("info has the wrong length");
        }
        let challenge = seed.wrapping_add(i as u64);
        let proof = storage::prove(&NODE_OWNER, key, challenge).map_err(|_| "prove failed")?;
        if !shardstore::verify_proof(&info.merkle_root, info.len_bytes, challenge, &proof) {
            return Err("a storage proof does not verify");
        }
    }
    store_smoke_owners(&keys)?;
    let (gone, _) = &keys[0];
    storage::delete(&NODE_OWNER, gone).map_err(|_| "delete failed")?;
    if storage::get(&NODE_OWNER, gone) != Err(storage::Error::NotFound) {
        return Err("a deleted shard is still there");
    }
    let disks = storage::disks();
    for d in &disks {
        crate::kprintln!("store smoke: {} {:?}, {} shards", d.name, d.state, d.stat.shard_count);
    }
    let stat = storage::stat();
    crate::kprintln!("store smoke: {} shards ok; {} shards on the serving disks", SIZES.len(), stat.shard_count);
    Ok(())
}

/// Owner namespaces: another owner storing the node's bytes gets its own shard (its
/// usage grows, the node's does not), deleting it leaves the node's copy, and
/// `list_after` pages through the node's shards in key order.
fn store_smoke_owners(keys: &[([u8; 32], Vec<u8>)]) -> Result<(), &'static str> {
    use crate::storage::{self, NODE_OWNER};
    let stranger = [0x5au8; 32];
    let (key, bytes) = &keys[1];
    let failed_count = || storage::disks().iter().filter(|d| d.state == storage::DiskState::Failed).count();
    // Usage counts healthy disks only: a disk failing during the put (a test that
    // injects write errors) changes the node's figure too, so measure again then.
    // Each disk fails at most once, so this ends.
    let mut measured = None;
    for _ in 0..=storage::disks().len() {
        let failed_before = failed_count();
        let node_before = storage::owner_usage(&NODE_OWNER);
        let stranger_before = storage::owner_usage(&stranger);
        if storage::get(&stranger, key) != Err(storage::Error::NotFound) {
            return Err("another owner reads the node's shard");
        }
        if storage::put(&stranger, bytes).map_err(|_| "put by another owner failed")? != *key {
            return Err("put by another owner returned another key");
        }
        if failed_count() != failed_before {
            storage::delete(&stranger, key).map_err(|_| "delete by another owner failed")?;
            continue;
        }
        let stranger_after = storage::owner_usage(&stranger);
        if stranger_after.shards != stranger_before.shards + 1
            || stranger_after.bytes != stranger_before.bytes + bytes.len() as u64
            || storage::owner_usage(&NODE_OWNER) != node_before
        {
            return Err("owner usage did not count the other owner's shard apart");
        }
        measured = Some(stranger_before);
        break;
    }
    let stranger_before = measured.ok_or("disks kept failing during the owners check")?;
    if storage::owner_count() < 2 {
        return Err("owner count misses an owner");
    }
    storage::delete(&stranger, key).map_err(|_| "delete by another owner failed")?;
    if storage::get(&NODE_OWNER, key).map_err(|_| "the node's copy went with the other owner's")? != *bytes {
        return Err("the node's copy reads back wrong");
    }
    if storage::owner_usage(&stranger) != stranger_before {
        return Err("owner usage did not drop after the delete");
    }
    let mut paged = Vec::new();
    let mut after: Option<[u8; 32]> = None;
    for _ in 0..100_000 {
        let page = storage::list_after(&NODE_OWNER, after.as_ref(), 3);
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        paged.extend(page.iter().map(|(key, _)| *key));
    }
    if paged != storage::list(&NODE_OWNER) {
        return Err("list_after pages differ from list");
    }
    crate::kprintln!("store smoke: owners ok ({} owners, {} node shards paged 3 at a time)", storage::owner_count(), paged.len());
    Ok(())
}

