//! Workloads on the booted kernel (`gridos.test=workloads`, see kernel/src/wasm/selftest.rs):
//! C programs built for wasm32-wasi (tests/wasm/) run in the kernel's wasmi interpreter
//! (deployed without native code) under CPU, memory and log limits, 20 at once, and
//! from native code attested by the test compiler key, which the node is told to trust
//! (`gridos.compilers`); bad signatures, truncated modules, unknown imports and bundles
//! that do not verify are rejected. The benchmark prints fib(25) on wasmi against
//! native in the same boot, fib(30) native against wasmtime + cranelift 48 on the
//! host, and fib(30), checksum(1 MiB) and checksum(32 MiB) (memory-heavy) native in the
//! kernel against the same attested bundles run by wasmtime 48 (the static host runner)
//! in a Linux guest booted in the same QEMU configuration: ratios, not asserted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gridos_qemu::netns::{require_root, Netns};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, Outcome};
use workloads::artifact::{self, ArtifactError, Backend};
use workloads::manifest::Limits;

fn workloads_machine() -> Machine {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = format!("gridos.test=workloads gridos.compilers={}", gridos_tests::TEST_COMPILER_PUBKEY);
    m.timeout = Duration::from_secs(240);
    m
}

/// A blank 64 MiB disk image for one test.
fn blank_disk(name: &str) -> PathBuf {
    let dir = gridos_qemu::workspace_root().join("target/test-disks");
    std::fs::create_dir_all(&dir).expect("test dir");
    let path = dir.join(format!("workloads-{name}-{}.img", std::process::id()));
    let f = std::fs::File::create(&path).expect("create image");
    f.set_len(64 << 20).expect("size image");
    path
}

fn node_with_disk(disk: &Path, cmdline: &str) -> Machine {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = cmdline.into();
    m.disks = vec![disk.to_path_buf()];
    m.timeout = Duration::from_secs(180);
    m
}

/// Workloads deployed with restart-on-boot are durable once the deploy is
/// acknowledged: QEMU is killed right after the acknowledgements, and every later boot
/// restarts them from the node's disk. The file-area program counts its runs in
/// `/data/runs`: 1 on the first boot, then 2 and 3 after the reboots, so its files
/// survive (including the kill).
#[test]
fn deployed_workloads_survive_a_kill_and_restart_with_their_files() {
    let disk = blank_disk("restart");
    let trust = format!("gridos.compilers={}", gridos_tests::TEST_COMPILER_PUBKEY);
    let running = node_with_disk(&disk, &format!("gridos.test=workload-deploy {trust}")).spawn().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        running.wait_for("[files] runs=1", Duration::from_secs(150)),
        "the files workload did not run\n{}",
        running.serial()
    );
    assert!(
        running.wait_for("workloads: deployed hello-native (attested native code) as workload 2, durable", Duration::from_secs(60)),
        "the native deploy was not acknowledged\n{}",
        running.serial()
    );
    let serial = running.serial();
    assert!(serial.contains("workloads: deployed hello-restart as workload 0, durable"), "{serial}");
    assert!(serial.contains("workloads: deployed files as workload 1, durable"), "{serial}");
    let killed = running.kill();
    println!("boot 1: killed after the files workload counted run 1 ({:.1} s)", killed.elapsed.as_secs_f64());
    // Stored native code is verified again at every boot: it runs while the node trusts
    // its compiler (boot 2), and is not started once it does not (boot 3).
    for (boot, runs, trusted) in [(2, 2, true), (3, 3, false)] {
        let cmdline = if trusted { format!("gridos.test=workload-restart {trust}") } else { "gridos.test=workload-restart".into() };
        let out = node_with_disk(&disk, &cmdline).run().unwrap_or_else(|e| panic!("{e}"));
        let has = |needle: &str| assert!(out.serial.contains(needle), "boot {boot}: no {needle:?}\n{}", out.report());
        assert!(out.passed(), "boot {boot}: restart check failed\n{}", out.report());
        has("workload 0 (hello-restart): restarted at boot");
        has("workload 1 (files): restarted at boot");
        has("[hello-restart] argc=2 argv[0]=hello-restart argv[1]=restarted");
        has(&format!("[files] runs={runs}"));
        has("[files] big file ok");
        has("[files] files: big runs tmp");
        has("[files] unlink ok");
        // Issue 17: a directory tree under /data and relative paths, on the same area every boot.
        has("[files] tree: leaf2,moved");
        has("[files] tree ok (mkdir, rename, readdir, rmdir, relative paths)");
        // Symlinks (inside followed, outside refused), hard links and stored times; the
        // symlink boot 2's run left resolves at boot 3 (the table keeps its kind; boot 1
        // was killed before its run got that far).
        has("[files] links ok (symlink, readlink, lstat, escapes refused, hard link, times)");
        if boot == 3 {
            has("[files] previous run left last -> runs (resolves)");
        }
        has("[files] quota enforced");
        if trusted {
            has("workload hello-native: running on native x86_64 (attested by ");
            has("workloads: workload 2 (hello-native) restarted at boot on native x86_64");
        } else {
            has("workload 2 (hello-native): not restarted: native code refused: the bundle is signed by a compiler this node does not trust");
            has("workloads: workload 2 (hello-native) not restarted: no trusted compiler");
        }
        // The store on the disk was formatted with the node's key as its node id
        // (superblock at sector 2048, after the node area; node id at bytes 16..48).
        let key_line = out.serial.lines().find(|l| l.contains("identity: node key ")).unwrap_or_else(|| panic!("{}", out.report()));
        let key = key_line.split_whitespace().skip_while(|w| *w != "key").nth(1).expect("key");
        let image = std::fs::read(&disk).expect("read disk image");
        let superblock = &image[2048 * 512..2048 * 512 + 512];
        assert_eq!(&superblock[..8], b"GRIDSHRD");
        let node_id: String = superblock[16..48].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(node_id, key, "the store's superblock does not name this node");
    }
    let _ = std::fs::remove_file(&disk);
}

/// A workload serves TCP on the node's overlay address (WASI sockets on a preopened
/// listener): node B runs the C echo server on overlay port 8080, node A (on the same
/// L2 segment, linked by discovery) sends 1 MiB through it and gets it back intact.
#[test]
fn workload_serves_tcp_over_the_overlay() {
    require_root();
    let disk_a = blank_disk("serve-a");
    let disk_b = blank_disk("serve-b");
    // B's identity (and overlay address) first.
    let mut first = node_with_disk(&disk_b, "gridos.test=boot");
    first.extra_args = ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"].map(String::from).to_vec();
    let out = first.run().unwrap_or_else(|e| panic!("{e}"));
    let line = out.serial.lines().find(|l| l.contains("overlay: key ")).unwrap_or_else(|| panic!("{}", out.report()));
    let addr_b = line.split_whitespace().skip_while(|w| *w != "address").nth(1).expect("address").to_string();

    let ns = Netns::create(&format!("gridos-{}-wls", std::process::id()), &[]).unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tapwa").unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tapwb").unwrap_or_else(|e| panic!("{e}"));
    let mut mb = node_with_disk(&disk_b, "gridos.test=workload-serve gridos.ip4=none");
    mb.netns = Some(ns.name.clone());
    mb.extra_args = Netns::nic_args("tapwb", "52:54:00:00:03:0b");
    let node_b = mb.spawn().unwrap_or_else(|e| panic!("{e}"));
    assert!(node_b.wait_for("listening on overlay tcp 8080", Duration::from_secs(120)), "{}", node_b.serial());
    let bytes = 1u64 << 20;
    let mut ma = node_with_disk(&disk_a, &format!(
        "gridos.test=echo-client gridos.ip4=none gridos.echo_client=[{addr_b}]:8080 gridos.echo_bytes={bytes}"
    ));
    ma.netns = Some(ns.name.clone());
    ma.extra_args = Netns::nic_args("tapwa", "52:54:00:00:03:0a");
    let out = ma.run().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.passed(), "A could not use B's workload over the overlay\n{}\n--- B ---\n{}", out.report(), node_b.serial());
    assert!(out.serial.contains(&format!("echo client: {bytes} bytes echoed intact by [{addr_b}]:8080")), "{}", out.report());
    if let Some(line) = out.serial.lines().find(|l| l.contains("bytes echoed intact")) {
        println!("bench: workload echo server over the overlay: {line}");
    }
    let b = node_b.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(b.passed(), "{}", b.report());
    assert!(b.serial.contains(&format!("[echo-server] served 1 connections, {bytes} bytes")), "{}", b.report());
    assert!(b.serial.contains("workloads: second listener on port 8080 refused"), "{}", b.report());
    assert!(b.serial.contains("workloads: listener on the control port refused"), "{}", b.report());
    assert!(b.serial.contains("workloads: deploy 17 of one owner refused: the owner holds 16 workloads and asks 1: an owner's share is at most 16 (1/3 of the node)"), "{}", b.report());
    assert!(b.serial.contains("workloads: second 50 KiB manifest of one owner refused: the owner holds"), "{}", b.report());
    for d in [&disk_a, &disk_b] {
        let _ = std::fs::remove_file(d);
    }
}

fn wasm_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wasm/out")
}

fn number_after(serial: &str, prefix: &str, unit: &str) -> Option<u64> {
    serial.lines().find_map(|l| l.split(prefix).nth(1)?.split(unit).next()?.trim().parse().ok())
}

#[test]
fn workloads_run_under_limits_on_the_booted_kernel() {
    let machine = workloads_machine();
    let out = machine.run().unwrap_or_else(|e| panic!("{e}"));
    let has = |needle: &str| assert!(out.serial.contains(needle), "serial output lacks {needle:?}\n{}", out.report());
    assert!(out.passed(), "workloads self-test failed\n{}", out.report());
    // C hello world and the checksum print to their workload logs (on wasmi).
    has("[hello] hello, world from wasm32-wasi");
    has("[hello] argc=2 argv[0]=hello argv[1]=first-arg");
    has("[hello] env GREETING=hi from the manifest");
    has("[hello] clock ok, random ok");
    has("[hello] stderr: hello on stderr");
    has("[checksum] checksum of 1048576 bytes: fnv1a64=c828023b1075ab48 sum=133591155");
    // Which engine ran: wasmi without a bundle, native code only when attested.
    has("workload hello: running on wasmi");
    has("workloads: hello and checksum ran on wasmi");
    // The endless loop hits its CPU limit after the checksum finished next to it.
    has("workload spin: CPU limit reached after");
    has("workloads: spin stopped (CPU limit reached after");
    has("workloads: membomb memory limit: wanted");
    has("B, cap 33554432 B on wasmi");
    has("workload spin-stopped: stopped by owner");
    has("workloads: bad-signature module rejected: bad manifest signature");
    has("workloads: truncated module rejected: malformed module");
    has("workloads: unknown import rejected: unknown import env::launch_missiles");
    has("workloads: module not matching its manifest rejected");
    for (what, e) in [
        ("bundle without an attestation", ArtifactError::BadMagic),
        ("bundle of another module", ArtifactError::WrongModule),
        ("truncated bundle", ArtifactError::Truncated),
        ("bundle for another engine", ArtifactError::WrongEngine),
        ("bundle by an untrusted compiler", ArtifactError::UntrustedCompiler),
        ("bundle with a forged signature", ArtifactError::BadSignature),
        ("bundle whose code does not match its attested hash", ArtifactError::CodeMismatch),
    ] {
        has(&format!("workloads: {what} rejected: native code refused: {e}"));
    }
    has("[hello-oci] hello, world from wasm32-wasi");
    has("[sleep] slept ok");
    has("[sleep] abstime ok");
    has("[sleep] sleep(0) ok");
    has("workloads: 20 of 20 concurrent workloads finished correctly");
    assert_eq!(out.serial.matches("checksum of 65536 bytes: fnv1a64=8bd22e8266b124dd sum=8348054").count(), 20, "{}", out.report());
    // Attested native code, trusted through gridos.compilers.
    has("compilers: 1 trusted");
    has("workload hello-native: running on native x86_64 (attested by ");
    has("[hello-native] hello, world from wasm32-wasi");
    has("[checksum-native] checksum of 1048576 bytes: fnv1a64=c828023b1075ab48 sum=133591155");
    has("workloads: attested hello and checksum ran on native x86_64");
    has("workloads: attested files ran on native x86_64 with /data (runs, big file, listing, unlink, tree, links, quota)");
    has("gridos test workloads: pass");
    for line in out.serial.lines().filter(|l| l.contains("workloads: spin used ") || l.starts_with("bench: ")) {
        println!("kernel: {line}");
    }

    // Bench: wasmi against native in the kernel, and the kernel's native number against
    // the same module compiled by wasmtime + cranelift on the host.
    let interp_us = number_after(&out.serial, "bench: fib(25) in kernel on wasmi: run ", "us")
        .unwrap_or_else(|| panic!("no wasmi fib bench line\n{}", out.report()));
    let native25_us = number_after(&out.serial, "bench: fib(25) in kernel on native x86_64: run ", "us")
        .unwrap_or_else(|| panic!("no native fib(25) bench line\n{}", out.report()));
    let kernel_us = number_after(&out.serial, "bench: fib(30) in kernel on native x86_64: run ", "us")
        .unwrap_or_else(|| panic!("no fib(30) bench line\n{}", out.report()));
    let dir = wasm_dir();
    let wasm = std::fs::read(dir.join("fib.wasm")).expect("fib.wasm");
    let bundle = std::fs::read(dir.join("fib.bundle")).expect("fib.bundle");
    let trusted = [gridos_tests::test_compiler_pubkey()];
    let native = artifact::verify(&bundle, blake3::hash(&wasm).as_bytes(), &artifact::engine_fingerprint(), &trusted)
        .expect("fib.bundle is attested by the test compiler key for fib.wasm")
        .code;
    let limits = Limits { memory_bytes: 64 << 20, ..Limits::default() };
    let mut best = u128::MAX;
    for _ in 0..3 {
        let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(native), &["fib", "30"], &[], &limits).expect("host run");
        assert!(r.lines.iter().any(|(_, l)| l == "fib(30) = 832040"), "{:?}", r.lines);
        best = best.min(r.run.as_micros());
    }
    println!(
        "bench: fib(25) in the booted kernel (QEMU TCG): wasmi {interp_us} us, attested native {native25_us} us ({:.1}x)",
        interp_us as f64 / native25_us.max(1) as f64
    );
    println!(
        "bench: fib(30) native: booted kernel (QEMU TCG) {kernel_us} us, host wasmtime+cranelift {best} us, ratio {:.1}x",
        kernel_us as f64 / best.max(1) as f64
    );
    compare_with_linux_guest(&machine, &out);
}

/// The same attested bundles, run by wasmtime 48 (the static host runner) in a Linux
/// guest booted in the same QEMU machine: the comparison that measures gridos rather
/// than TCG. Prints kernel/guest run-time ratios; asserts only the guest's results.
fn compare_with_linux_guest(machine: &Machine, out: &Outcome) {
    let dir = wasm_dir();
    let (fib, checksum) = (dir.join("fib.wasm"), dir.join("checksum.wasm"));
    let programs = [
        ("fib(30)", &fib, &["30"][..], "fib(30) = 832040"),
        ("checksum(1 MiB)", &checksum, &[][..], "checksum of 1048576 bytes: fnv1a64=c828023b1075ab48 sum=133591155"),
        ("checksum(32 MiB)", &checksum, &["33554432"][..], "checksum of 33554432 bytes: "),
    ];
    let list: Vec<gridos_qemu::linux::WasmProgram<'_>> = programs
        .iter()
        .map(|(label, wasm, args, _)| gridos_qemu::linux::WasmProgram { label, wasm, args })
        .collect();
    let timings = gridos_qemu::linux::wasm_bench(machine, &list, gridos_tests::TEST_COMPILER_PUBKEY)
        .unwrap_or_else(|e| panic!("the Linux comparison guest: {e}"));
    println!(
        "bench: wasm native in the same QEMU ({:?}): gridos kernel vs Linux guest (Debian cloud kernel, wasmtime 48 static runner), fastest of {} runs each",
        machine.accel,
        gridos_qemu::linux::RUNS
    );
    for ((label, _, _, want), t) in programs.iter().zip(&timings) {
        assert!(t.lines.iter().any(|l| l.starts_with(want)), "{label} in the Linux guest printed {:?}", t.lines);
        let prefix = format!("bench: {label} in kernel on native x86_64: run ");
        let kernel_us = out
            .serial
            .lines()
            .filter_map(|l| l.split(prefix.as_str()).nth(1)?.split("us").next()?.trim().parse::<u64>().ok())
            .min()
            .unwrap_or_else(|| panic!("no {prefix:?} line\n{}", out.report()));
        println!(
            "bench:   {label:<18} kernel {kernel_us:>9} us   Linux guest {:>9} us (instantiate {:>6} us)   kernel/Linux {:.2}x",
            t.run_us,
            t.instantiate_us,
            kernel_us as f64 / t.run_us.max(1) as f64
        );
    }
    // The memory-heavy program computed the same result in both.
    let guest_line = timings[2].lines.iter().find(|l| l.starts_with("checksum of 33554432")).cloned().unwrap_or_default();
    assert!(out.serial.contains(&guest_line), "the kernel and the guest disagree on checksum(32 MiB): {guest_line}");
}
