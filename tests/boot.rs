//! Boot tests: each boots the real kernel under QEMU (TCG) with an in-kernel test
//! selected by `gridos.test=NAME`, and asserts on the serial output and exit code.

use std::time::Duration;

use gridos_qemu::{ensure_qemu, kernel_elf, Machine, Outcome};

fn boot(test: &str) -> Outcome {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = format!("gridos.test={test}");
    m.timeout = Duration::from_secs(90);
    m.run().unwrap_or_else(|e| panic!("{e}"))
}

fn assert_passed(out: &Outcome) {
    assert!(out.passed(), "boot did not pass\n{}", out.report());
}

fn assert_contains(out: &Outcome, needle: &str) {
    assert!(out.serial.contains(needle), "serial output lacks {needle:?}\n{}", out.report());
}

#[test]
fn boots_to_the_ready_line_once() {
    let out = boot("boot");
    assert_passed(&out);
    assert_eq!(out.serial.matches("gridos ready in ").count(), 1, "{}", out.report());
    let ready_us = out.ready_us().unwrap_or_else(|| panic!("no ready line\n{}", out.report()));
    assert!(ready_us > 0 && ready_us < 60_000_000, "implausible boot time {ready_us} us");
    // Every log line carries a timestamp since boot.
    for line in out.serial.lines().filter(|l| l.contains(" INFO ")) {
        assert!(line.starts_with('[') && line.contains("] INFO "), "untimestamped log line {line:?}");
    }
    assert_contains(&out, "booting via PVH");
    assert_contains(&out, "cmdline: \"gridos.test=boot\"");
    assert_contains(&out, "gridos test boot: pass");
}

#[test]
fn reports_memory_acpi_and_pci() {
    let out = boot("boot");
    assert_passed(&out);
    // 512 MiB machine: the firmware keeps a little, the report must be close.
    let usable_mib: u64 = out
        .serial
        .lines()
        .find_map(|l| l.split("memory: ").nth(1)?.split(" MiB usable RAM").next()?.parse().ok())
        .unwrap_or_else(|| panic!("no memory report\n{}", out.report()));
    assert!((480..=512).contains(&usable_mib), "usable RAM {usable_mib} MiB for a 512 MiB machine");
    assert_contains(&out, "acpi: ");
    assert_contains(&out, "1 CPUs enabled");
    assert_contains(&out, "ioapic: id 0 at 0xfec00000");
    // The Q35 host bridge and LPC bridge are always there.
    assert_contains(&out, "8086:29c0 class 06.00 host bridge");
    assert_contains(&out, "8086:2918 class 06.01 ISA bridge");
}

#[test]
fn sees_every_cpu_and_virtio_devices() {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = "gridos.test=boot".into();
    m.cpus = 2;
    m.extra_args = ["-device", "virtio-net-pci,netdev=n0", "-netdev", "user,id=n0"].map(String::from).to_vec();
    let out = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_passed(&out);
    assert_contains(&out, "2 CPUs enabled");
    assert_contains(&out, "smp: cpu 1 online (local APIC id 1)");
    assert_contains(&out, "smp: 2 of 2 CPUs online");
    assert_contains(&out, "class 02.00 network virtio-net");
}

/// The number (KiB) after `label` in `line`, e.g. "kernel image 5872 KiB".
fn kib_after(line: &str, label: &str) -> u64 {
    line.split(label).nth(1).and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} figure in {line:?}"))
}

#[test]
fn heap_self_test_allocates_and_frees_100k_objects() {
    let out = boot("heap");
    // The idle footprint printed after the ready line adds up.
    let idle = out.serial.lines().find_map(|l| l.split("INFO  memory: idle: ").nth(1))
        .unwrap_or_else(|| panic!("no idle memory line\n{}", out.report()));
    println!("idle footprint: {idle}");
    let ram = kib_after(idle, " KiB of ");
    let in_use = kib_after(idle, "in use ");
    let kernel = kib_after(idle, "kernel image ");
    let heap_used = kib_after(idle, "heap ");
    let heap_held = kib_after(idle, "KiB in use of ");
    let ceiling = kib_after(idle, "grows up to ");
    let tables = kib_after(idle, "page tables ");
    let dma = kib_after(idle, "device buffers ");
    let free = kib_after(idle, "free frames ");
    let unmanaged = kib_after(idle, "unmanaged ");
    assert!(heap_used < heap_held && heap_held <= ceiling && ceiling < ram, "{idle}");
    assert_eq!(in_use, kernel + heap_used + tables + dma, "{idle}");
    let sum = kernel + heap_held + tables + dma + free + unmanaged;
    assert!(sum <= ram && ram - sum <= 8, "the parts ({sum} KiB) do not add up to RAM: {idle}");
    // The heap does not take half of RAM up front: it starts small and grows.
    assert!(heap_held <= 64 << 10, "the heap holds {heap_held} KiB at boot: {idle}");
    assert!(ceiling >= ram * 3 / 4, "workloads cannot have most of RAM: {idle}");
    assert!(in_use < 32 << 10, "an idle node uses {in_use} KiB: {idle}");
    assert_contains(&out, "heap: grew from ");
    assert_passed(&out);
    assert_contains(&out, "heap: 100000 objects allocated and checked");
    assert_contains(&out, "gridos test heap: pass");
}

#[test]
fn page_fault_is_reported_and_fails_the_boot() {
    let out = boot("pagefault");
    assert!(out.failed_in_kernel(), "expected the kernel's failure exit\n{}", out.report());
    assert_contains(&out, "FATAL EXCEPTION: page fault (vector 14)");
    assert_contains(&out, "cr2=0x00005eed00000000 (page not present on read in kernel mode)");
    assert_contains(&out, "rip=0x");
    assert_contains(&out, "stack walk:");
    assert!(!out.serial.contains("gridos test pagefault: pass"), "{}", out.report());
}

/// The serial output has exactly this line.
fn assert_line(out: &Outcome, line: &str) {
    assert!(out.serial.lines().any(|l| l == line), "serial output lacks the line {line:?}\n{}", out.report());
}

/// The address in the self-test's line `<prefix><0x...>`.
fn announced_address(out: &Outcome, prefix: &str) -> u64 {
    out.serial
        .lines()
        .find_map(|l| u64::from_str_radix(l.strip_prefix(prefix)?.strip_prefix("0x")?, 16).ok())
        .unwrap_or_else(|| panic!("no line starting {prefix:?}\n{}", out.report()))
}

#[test]
fn boot_log_states_the_wx_mapping_policy() {
    let out = boot("boot");
    assert_passed(&out);
    let line = out
        .serial
        .lines()
        .find(|l| l.contains("INFO  paging: W^X: kernel .text "))
        .unwrap_or_else(|| panic!("no W^X line\n{}", out.report()));
    assert!(line.ends_with(" KiB, all other memory writable+NX"), "{line:?}");
    assert!(line.contains(" KiB read-only+exec, .rodata "), "{line:?}");
}

#[test]
fn boots_on_a_cpu_without_nx_and_says_data_is_executable() {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = "gridos.test=boot".into();
    // A later -cpu replaces the runner's `-cpu max`: the same CPU without NX. Setting
    // EFER.NXE there would #GP in the entry stub, and NX bits would be reserved bits.
    m.extra_args = ["-cpu", "max,-nx"].map(String::from).to_vec();
    let out = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert_passed(&out);
    assert_contains(&out, "WARN  paging: the CPU has no NX, so data is executable (no W^X): kernel .text ");
    assert!(!out.serial.contains("paging: W^X: "), "{}", out.report());
}

#[test]
fn wx_kernel_memory_and_code_pages_have_the_right_protection() {
    let out = boot("wx-code");
    assert_passed(&out);
    assert_line(&out, "wx-code: .text read-only+exec; .rodata read-only+NX; data, stack, heap, MMIO writable+NX; page 0 unmapped");
    assert_line(&out, "wx-code: unaligned, kernel-image and low-memory code ranges refused");
    assert_line(&out, "wx-code: published code page ran (returned 42); unpublished it is writable+NX again");
    assert_line(&out, "wx-code: a code page freed while published is writable+NX again");
    assert_line(&out, "gridos test wx-code: pass");
}

#[test]
fn wx_writing_kernel_code_faults() {
    let out = boot("wx-write-code");
    assert!(out.failed_in_kernel(), "expected the kernel's failure exit\n{}", out.report());
    let addr = announced_address(&out, "wx-write-code: writing to kernel code at ");
    assert_line(&out, "FATAL EXCEPTION: page fault (vector 14) error_code=0x3");
    assert_line(&out, &format!("  cr2={addr:#018x} (protection violation on write in kernel mode)"));
    assert_line(&out, "  page at cr2: 4 KiB, read-only, executable");
    assert!(!out.serial.contains("writing to kernel code did not fault"), "{}", out.report());
}

#[test]
fn wx_executing_heap_memory_faults() {
    let out = boot("wx-exec-heap");
    assert!(out.failed_in_kernel(), "expected the kernel's failure exit\n{}", out.report());
    let addr = announced_address(&out, "wx-exec-heap: calling a ret instruction in the heap at ");
    assert_line(&out, "FATAL EXCEPTION: page fault (vector 14) error_code=0x11");
    assert_contains(&out, &format!("  rip={addr:#018x} "));
    assert_line(&out, &format!("  cr2={addr:#018x} (protection violation on instruction fetch in kernel mode)"));
    assert_line(&out, "  page at cr2: 2048 KiB, writable, NX");
    assert!(!out.serial.contains("executing heap memory did not fault"), "{}", out.report());
}

#[test]
fn panic_is_reported_and_fails_the_boot() {
    let out = boot("panic");
    assert!(out.failed_in_kernel(), "expected the kernel's failure exit\n{}", out.report());
    assert_contains(&out, "PANIC at kernel/src/selftest.rs:");
    assert_contains(&out, "deliberate panic from the panic self-test");
    assert_contains(&out, "stack walk:");
}

#[test]
fn breakpoint_is_handled_and_execution_continues() {
    let out = boot("breakpoint");
    assert_passed(&out);
    assert_contains(&out, "breakpoint at rip=");
    assert_contains(&out, "resumed after breakpoint");
}

#[test]
fn timer_ticks_and_clock_advances() {
    let out = boot("timer");
    assert_passed(&out);
    let (ticks, us): (u64, u64) = out
        .serial
        .lines()
        .find_map(|l| {
            let rest = l.split("timer: ").nth(1)?;
            let ticks = rest.split(' ').next()?.parse().ok()?;
            let us = rest.split(" in ").nth(1)?.strip_suffix(" us")?.parse().ok()?;
            Some((ticks, us))
        })
        .unwrap_or_else(|| panic!("no timer report\n{}", out.report()));
    assert!(us >= 300_000, "slept {us} us, asked for 300000");
    assert!(ticks >= 15, "only {ticks} ticks in {us} us at 100 Hz");
}

#[test]
fn userland_hello_uses_hermit_abi() {
    let out = boot("hello");
    assert_passed(&out);
    let line = out
        .serial
        .lines()
        .find(|l| l.starts_with("hello from userland: pid 0, "))
        .unwrap_or_else(|| panic!("no greeting\n{}", out.report()));
    // The wall clock comes from the RTC: the year must be plausible.
    let year: u32 = line["hello from userland: pid 0, ".len()..][..4].parse().unwrap_or(0);
    assert!((2024..2100).contains(&year), "implausible year in {line:?}");
    assert!(line.contains("random 0x"), "{line:?}");
    assert_contains(&out, "hello: malloc'd memory intact, usleep(20000) took ");
}

#[test]
fn two_boots_draw_different_random_numbers() {
    let random = |out: &Outcome| out.serial.lines().find_map(|l| l.split("random ").nth(1).map(str::to_owned));
    let (a, b) = (boot("hello"), boot("hello"));
    assert_passed(&a);
    assert_passed(&b);
    assert_ne!(random(&a), random(&b), "entropy repeated across boots");
}

#[test]
fn unknown_test_name_fails_with_a_clear_message() {
    let out = boot("no-such-test");
    assert!(out.failed_in_kernel(), "{}", out.report());
    assert_contains(&out, "unknown test \"no-such-test\"");
}
