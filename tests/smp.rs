//! SMP on the booted kernel: every CPU the MADT lists comes online with its own
//! stacks, descriptor tables and APIC timer (xAPIC: QEMU's TCG has no x2APIC), runs
//! work, and takes TLB shootdowns, and four CPU-bound workloads run one per CPU
//! (`gridos.test=smp`, kernel/src/selftest.rs and `wasm::spread_case`). Then, in the
//! same boot, CPUs stop answering: one spins with interrupts disabled in a job, first
//! for a third of the answer bound (it answers the resent shootdown late and stays in
//! service), then for good, and a page-permission change's shootdown takes it out of
//! service; one stops in the
//! middle of a workload's time slice and the scheduler's probe takes it out; both
//! park, that workload is reported lost, and the node carries on with two CPUs
//! (`smp_wedge`, `wasm::wedge_case`). `gridos.smp=off` keeps one CPU.

use std::time::Duration;

use gridos_qemu::{ensure_qemu, kernel_elf, Machine, Outcome};

fn boot(cpus: u32, cmdline: &str) -> Outcome {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = cmdline.into();
    m.cpus = cpus;
    m.timeout = Duration::from_secs(120);
    m.run().unwrap_or_else(|e| panic!("{e}"))
}

fn has(out: &Outcome, needle: &str) {
    assert!(out.serial.contains(needle), "serial output lacks {needle:?}\n{}", out.report());
}

#[test]
fn four_cpus_come_online_tick_run_jobs_take_shootdowns_and_survive_two_wedging() {
    let out = boot(4, &format!("gridos.test=smp gridos.compilers={}", gridos_tests::TEST_COMPILER_PUBKEY));
    assert!(out.passed(), "boot did not pass\n{}", out.report());
    has(&out, "4 CPUs enabled");
    has(&out, "apic: xAPIC, local APIC id 0");
    // QEMU reports a hypervisor (CPUID.01H:ECX[31]): the answer bound is 1 s, not 100 ms.
    has(&out, "smp: a CPU that does not answer an IPI within 1000 ms is taken out of service");
    for cpu in 1..4 {
        has(&out, &format!("smp: cpu {cpu} online (local APIC id {cpu})"));
        has(&out, &format!("smp: cpu {cpu} ran its job"));
    }
    has(&out, "smp: 4 of 4 CPUs online");
    has(&out, "inventory: 4 CPUs");
    has(&out, "smp: 3 application processors took ticks, ran jobs and took TLB shootdowns");
    // Four CPU-bound wasm workloads (fib(30)) on wasmi, then natively (attested by
    // the test compiler), each on a CPU of its own.
    for (prefix, engine) in [("fib", "wasmi"), ("fibn", "native x86_64")] {
        let mut cpus_used = Vec::new();
        for k in 0..4 {
            let line = out
                .serial
                .lines()
                .find_map(|l| l.strip_prefix(&format!("smp: {prefix}-{k} ran on cpus ")))
                .unwrap_or_else(|| panic!("no CPU line for {prefix}-{k}\n{}", out.report()));
            let cpu: u32 =
                line.trim().parse().unwrap_or_else(|_| panic!("{prefix}-{k} ran on several CPUs: {line}\n{}", out.report()));
            cpus_used.push(cpu);
        }
        cpus_used.sort_unstable();
        assert_eq!(cpus_used, [0, 1, 2, 3], "the four {engine} workloads did not each run on a CPU of their own\n{}", out.report());
        // The speedup is printed, not asserted (MTTCG on a shared 2-core host).
        let speedup = out.serial.lines().find(|l| l.contains(&format!("fib(30) workloads on {engine}:")));
        println!("{}", speedup.unwrap_or_else(|| panic!("no {engine} speedup line\n{}", out.report())));
        has(&out, &format!("smp: every CPU ran {engine} workload slices"));
    }
    // Two runs (boot CPU only, spread) of four workloads on each engine.
    assert_eq!(out.serial.matches("fib(30) = 832040").count(), 16, "{}", out.report());
    // CPU 3 is late (interrupts off for a third of the bound): the resent shootdown is
    // answered late, and it stays in service.
    has(&out, "smp: wedge: cpu 3 spun 333 ms with interrupts off, answered the page flip's shootdowns after ");
    has(&out, "smp: a TLB shootdown was answered only after ");
    // CPU 3 wedges in a job (interrupts off): the shootdown gives up on it.
    has(&out, "smp: cpu 3 (apic 3) did not answer a TLB shootdown in ");
    has(&out, "ms: taken out of service");
    has(&out, "cpu 3 out of service and parked (CR3 reloaded)");
    has(&out, "smp: wedge: cpu 1 still runs jobs");
    // CPU 2 wedges in a workload's slice: the probe gives up on it, that workload is lost.
    has(&out, "smp: cpu 2 (apic 2) did not answer a liveness probe during its job in ");
    has(&out, "smp: wedge-2: trapped: cpu 2 stopped answering during its time slice and was taken out of service");
    has(&out, "smp: wedge-0: exited with status 0");
    has(&out, "smp: wedge-1: exited with status 0");
    let after = out
        .serial
        .lines()
        .find_map(|l| l.split("smp: wedge: 3 workloads after it ran on cpus ").nth(1))
        .unwrap_or_else(|| panic!("no line for the workloads after the wedge\n{}", out.report()));
    assert!(after.trim().split(',').all(|c| c == "0" || c == "1"), "a workload ran on a CPU out of service: {after}");
    has(&out, "smp: wedge: node carries on with 2 of 4 CPUs in service");
    for line in out.serial.lines().filter(|l| {
        (l.contains("smp: wedge:") && (l.contains("took") || l.contains("slowest") || l.contains("spun")))
            || l.contains("answered only after")
            || l.contains("taken out of service")
    }) {
        println!("{line}");
    }
    has(&out, "gridos test smp: pass");
}

#[test]
fn smp_off_keeps_one_cpu() {
    let out = boot(2, "gridos.test=smp gridos.smp=off");
    assert!(out.passed(), "boot did not pass\n{}", out.report());
    has(&out, "smp: off (gridos.smp=off): 1 of 2 CPUs online");
    for k in 0..4 {
        has(&out, &format!("smp: fib-{k} ran on cpus 0"));
        assert!(!out.serial.contains(&format!("smp: fibn-{k}")), "native workloads ran without a trusted compiler");
    }
    assert!(!out.serial.contains("smp: cpu 1 online"), "an AP came up with gridos.smp=off\n{}", out.report());
    has(&out, "smp: wedge: skipped (1 CPUs in service)");
    has(&out, "gridos test smp: pass");
}
