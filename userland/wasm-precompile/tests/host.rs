//! The committed test programs (tests/wasm/out) on the host: their bundles are bound to
//! the committed modules, and the WASI host functions and limits behave as in the kernel.

use std::path::PathBuf;

use workloads::artifact::{self, Backend};
use workloads::manifest::Limits;
use workloads::runtime::StopReason;

fn read(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/wasm/out").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn native(name: &str) -> (Vec<u8>, Vec<u8>) {
    let wasm = read(&format!("{name}.wasm"));
    let bundle = read(&format!("{name}.bundle"));
    let b = artifact::parse(&bundle, Some(blake3::hash(&wasm).as_bytes()))
        .unwrap_or_else(|e| panic!("{name}.bundle: {e}; rerun tests/wasm/build.sh"));
    let code = b.sections.iter().find(|(k, _)| *k == Backend::NativeX86_64).expect("native section").1.to_vec();
    assert!(b.sections.iter().any(|(k, _)| *k == Backend::Pulley64), "{name}: no pulley section");
    (wasm, code)
}

#[test]
fn committed_bundles_match_modules_and_load_with_current_settings() {
    for name in ["hello", "checksum", "spin", "membomb", "fib", "files", "echo_server", "sleep"] {
        let (wasm, code) = native(name);
        let engine = wasm_precompile::engine(Backend::NativeX86_64).unwrap();
        // SAFETY: produced by this crate's `bundle` from the committed module.
        unsafe { wasmtime::Module::deserialize(&engine, &code) }
            .unwrap_or_else(|e| panic!("{name}: committed native code no longer matches the engine settings ({e}); rerun tests/wasm/build.sh"));
        let _ = wasm;
    }
}

#[test]
fn hello_and_checksum_print_their_lines() {
    let (wasm, code) = native("hello");
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(&code), &["hello", "x"], &["GREETING=g"], &Limits::default()).unwrap();
    assert_eq!(r.reason, StopReason::Exited(0));
    let lines: Vec<&str> = r.lines.iter().map(|(_, l)| l.as_str()).collect();
    assert!(lines.contains(&"hello, world from wasm32-wasi"), "{lines:?}");
    assert!(lines.contains(&"argc=2 argv[0]=hello argv[1]=x"), "{lines:?}");
    assert!(lines.contains(&"env GREETING=g"), "{lines:?}");
    assert!(lines.contains(&"clock ok, random ok"), "{lines:?}");
    let (wasm, code) = native("checksum");
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(&code), &["checksum"], &[], &Limits::default()).unwrap();
    assert_eq!(r.lines[0].1, "checksum of 1048576 bytes: fnv1a64=c828023b1075ab48 sum=133591155");
}

#[test]
fn memory_and_log_caps_stop_the_workload() {
    let (wasm, code) = native("membomb");
    let limits = Limits { memory_bytes: 16 << 20, ..Limits::default() };
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(&code), &["membomb"], &[], &limits).unwrap();
    assert!(matches!(r.reason, StopReason::MemoryLimit { cap, .. } if cap == 16 << 20), "{:?}", r.reason);
    let (wasm, code) = native("hello");
    let limits = Limits { log_bytes: 40, ..Limits::default() };
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(&code), &["hello"], &[], &limits).unwrap();
    assert_eq!(r.reason, StopReason::LogLimit);
}

#[test]
fn pulley_code_runs_the_same_program() {
    let wasm = read("fib.wasm");
    let bundle = read("fib.bundle");
    let b = artifact::parse(&bundle, None).unwrap();
    let code = b.sections.iter().find(|(k, _)| *k == Backend::Pulley64).unwrap().1;
    let r = wasm_precompile::run(Backend::Pulley64, &wasm, Some(code), &["fib", "20"], &[], &Limits::default()).unwrap();
    assert_eq!(r.lines[0].1, "fib(20) = 6765");
}

#[test]
fn unknown_imports_and_garbage_are_refused() {
    let alien = workloads::module::module_importing("env", "launch_missiles");
    let e = wasm_precompile::run(Backend::NativeX86_64, &alien, None, &[], &[], &Limits::default()).unwrap_err();
    assert_eq!(e, "unknown import env::launch_missiles");
    let hello = read("hello.wasm");
    let e = wasm_precompile::run(Backend::NativeX86_64, &hello[..hello.len() / 2], None, &[], &[], &Limits::default()).unwrap_err();
    assert!(e.starts_with("invalid module"), "{e}");
}

#[test]
fn files_persist_across_runs_on_the_same_area() {
    let (wasm, code) = native("files");
    let files = wasm_precompile::SharedFiles::default();
    for run in 1..=2 {
        let services = wasm_precompile::Services { files: Some(Box::new(files.clone())), sockets: None };
        let r = wasm_precompile::run_with(Backend::NativeX86_64, &wasm, Some(&code), &["files"], &[], &Limits::default(), services)
            .unwrap();
        let lines: Vec<&str> = r.lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(r.reason, StopReason::Exited(0), "{lines:?}");
        assert_eq!(lines[..4], [format!("runs={run}").as_str(), "big file ok", "files: big runs tmp", "unlink ok"]);
        assert!(lines[4].starts_with("quota enforced"), "{lines:?}");
    }
    let area = files.0.lock().unwrap();
    assert_eq!(area.get("runs"), Some(&b"2\n"[..]));
    assert_eq!(area.get("big").map(<[u8]>::len), Some(100 * 1024));
    assert_eq!((area.get("tmp"), area.get("hog")), (None, None));
}

#[test]
fn without_storage_there_is_no_data_directory() {
    let (wasm, code) = native("files");
    let limits = Limits { storage_bytes: 0, ..Limits::default() };
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(&code), &["files"], &[], &limits).unwrap();
    assert_eq!(r.reason, StopReason::Exited(1));
    assert!(r.lines[0].1.starts_with("open runs for writing"), "{:?}", r.lines);
}

#[test]
fn echo_server_serves_scripted_connections_on_its_listener() {
    use workloads::wasi::MemEvent;
    let (wasm, code) = native("echo_server");
    let sockets = wasm_precompile::SharedSockets::default();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let (a, b) = {
        let mut s = sockets.0.lock().unwrap();
        let a = s.connect(8080, b"hello", true);
        // The second peer connects later and sends in two parts, so the server blocks.
        s.later.push_back(MemEvent::Connect { port: 8080, input: big[..60_000].to_vec(), eof: false });
        let b = workloads::wasi::ConnId(2);
        s.later.push_back(MemEvent::Data { conn: b, bytes: big[60_000..].to_vec(), eof: true });
        (a, b)
    };
    let services = wasm_precompile::Services {
        files: Some(Box::new(workloads::wasi::MemFileArea::new())),
        sockets: Some((Box::new(sockets.clone()), vec![8080, 9090])),
    };
    let r = wasm_precompile::run_with(Backend::NativeX86_64, &wasm, Some(&code), &["echo", "2"], &[], &Limits::default(), services)
        .unwrap();
    assert_eq!(r.reason, StopReason::Exited(0), "{:?}", r.lines);
    assert_eq!(r.lines[0].1, "served 2 connections, 100005 bytes");
    let s = sockets.0.lock().unwrap();
    assert_eq!(s.conns[&a].output, b"hello");
    assert_eq!(s.conns[&b].output, big);
    assert!(s.conns[&a].closed && s.conns[&b].closed && s.conns[&b].shut_write);
    drop(s);
    // A third connection never comes: the blocked accept is interrupted and the
    // workload stops instead of hanging.
    let sockets = wasm_precompile::SharedSockets::default();
    let services = wasm_precompile::Services { files: None, sockets: Some((Box::new(sockets), vec![8080])) };
    let r = wasm_precompile::run_with(Backend::NativeX86_64, &wasm, Some(&code), &["echo"], &[], &Limits::default(), services)
        .unwrap();
    assert_eq!(r.reason, StopReason::Stopped);
}

#[test]
fn sleep_waits_in_poll_oneoff_for_the_time_asked() {
    let (wasm, code) = native("sleep");
    let t0 = std::time::Instant::now();
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(&code), &["sleep"], &[], &Limits::default()).unwrap();
    let lines: Vec<&str> = r.lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(r.reason, StopReason::Exited(0), "{lines:?}");
    assert_eq!(lines, ["slept ok", "abstime ok", "sleep(0) ok"]);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(80), "{:?}", t0.elapsed());
    // The same program on Pulley; a wall limit shorter than the sleeps ends it.
    let bundle = read("sleep.bundle");
    let b = artifact::parse(&bundle, None).unwrap();
    let pulley = b.sections.iter().find(|(k, _)| *k == Backend::Pulley64).unwrap().1;
    let r = wasm_precompile::run(Backend::Pulley64, &wasm, Some(pulley), &["sleep"], &[], &Limits::default()).unwrap();
    assert_eq!(r.reason, StopReason::Exited(0), "{:?}", r.lines);
    let limits = Limits { wall_ms: 30, ..Limits::default() };
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(&code), &["sleep"], &[], &limits).unwrap();
    assert_eq!(r.reason, StopReason::WallDeadline);
}

#[test]
fn the_linker_defines_every_supported_function() {
    let engine = wasm_precompile::engine(Backend::Pulley64).unwrap();
    let linker = workloads::runtime::linker(&engine).unwrap();
    let host = Box::new(wasm_precompile::StdHost::default());
    let mut store = wasmtime::Store::new(&engine, workloads::runtime::WorkloadState::new(&[], &[], &Limits::default(), host));
    let defined: Vec<String> = linker.iter(&mut store).map(|(m, n, _)| format!("{m}::{n}")).collect();
    for f in workloads::wasi::SUPPORTED {
        assert!(defined.contains(&format!("{}::{f}", workloads::wasi::MODULE)), "{f} not in the linker");
    }
    assert_eq!(defined.len(), workloads::wasi::SUPPORTED.len());
}
