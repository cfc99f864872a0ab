//! The committed test programs (tests/wasm/out) on the host: their bundles are attested
//! by the test compiler key for the committed modules and are reproducible from them,
//! and the WASI host functions and limits behave as in the kernel.

use std::path::PathBuf;

use workloads::artifact::{self, Backend};
use workloads::manifest::Limits;
use workloads::runtime::StopReason;

fn read(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/wasm/out").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const PROGRAMS: [&str; 8] = ["hello", "checksum", "spin", "membomb", "fib", "files", "echo_server", "sleep"];

fn test_key() -> workloads::ed25519_compact::KeyPair {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/wasm/test-compiler.key");
    wasm_precompile::load_key(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The module and its attested native code, verified as a node trusting only the test key would.
fn native(name: &str) -> (Vec<u8>, Vec<u8>) {
    let wasm = read(&format!("{name}.wasm"));
    let bundle = read(&format!("{name}.bundle"));
    let trusted = [*test_key().pk];
    let b = artifact::verify(&bundle, blake3::hash(&wasm).as_bytes(), &artifact::engine_fingerprint(), &trusted)
        .unwrap_or_else(|e| panic!("{name}.bundle: {e}; rerun tests/wasm/build.sh"));
    (wasm, b.code.to_vec())
}

#[test]
fn committed_bundles_are_attested_reproducible_and_load_with_current_settings() {
    let key = test_key();
    for name in PROGRAMS {
        let (wasm, code) = native(name);
        let engine = wasm_precompile::engine().unwrap();
        // SAFETY: verified above against the test compiler key.
        unsafe { wasmtime::Module::deserialize(&engine, &code) }
            .unwrap_or_else(|e| panic!("{name}: committed native code no longer matches the engine settings ({e}); rerun tests/wasm/build.sh"));
        let again = wasm_precompile::bundle(&wasm, &key).unwrap();
        assert!(again == read(&format!("{name}.bundle")), "{name}.bundle is not what the committed module compiles to; rerun tests/wasm/build.sh");
    }
}

/// The memory cap applies per memory, so the native engine (like wasmi, see
/// `workloads::runtime::interp`) refuses modules with more than one.
#[test]
fn modules_with_two_memories_do_not_compile() {
    // type () -> (); two memories of one page; func 0 exported as _start; body `end`.
    let wasm = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x05\x05\x02\0\x01\0\x01\
\x07\x0a\x01\x06_start\0\0\x0a\x04\x01\x02\0\x0b";
    let e = wasm_precompile::compile(wasm).unwrap_err();
    assert!(format!("{e:?}").contains("multiple memories"), "{e:?}");
    // One memory is fine.
    let one = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x02\x01\0\x05\x03\x01\0\x01\
\x07\x0a\x01\x06_start\0\0\x0a\x04\x01\x02\0\x0b";
    wasm_precompile::compile(one).unwrap();
}

#[test]
fn the_engine_description_names_every_setting() {
    let d = artifact::NATIVE_ENGINE;
    for f in workloads::runtime::NATIVE_FEATURES {
        assert!(d.contains(&format!(" {f}")), "NATIVE_ENGINE does not name feature {f}");
    }
    assert!(d.contains(wasm_precompile::NATIVE_TARGET));
    assert!(d.contains(&format!("max_wasm_stack={}", workloads::runtime::MAX_WASM_STACK)));
    assert!(d.contains("wasm_multi_memory=false"));
}

#[test]
fn compiler_key_files_are_checked() {
    assert!(wasm_precompile::key_from_text("# comment\n\nafc26374c53e26c04e5a534bc394f179b2f8c20095239343c75af0058d7b56f7\n").is_ok());
    for bad in ["", "# only a comment", "abc", &"0".repeat(64), &"g".repeat(64), &"a".repeat(66)] {
        assert_eq!(wasm_precompile::key_from_text(bad).err(), Some(wasm_precompile::KeyFileError::Format), "{bad:?}");
    }
}

#[test]
fn the_host_runner_has_no_interpreter() {
    let wasm = read("hello.wasm");
    let e = wasm_precompile::run(Backend::Wasmi, &wasm, None, &[], &[], &Limits::default()).unwrap_err();
    assert_eq!(e, "the host runner has no wasmi backend");
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
fn fib_runs_from_its_attested_code() {
    let (wasm, code) = native("fib");
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(&code), &["fib", "20"], &[], &Limits::default()).unwrap();
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
        // The directory tree (issue 17): relative and /data paths, rename, readdir, rmdir.
        assert_eq!(lines[4..7], ["tree: leaf2,moved", "tree/moved: b", "tree ok (mkdir, rename, readdir, rmdir, relative paths)"]);
        // Symlinks, hard links and times; the symlink the first run left (issue 17).
        let previous = if run == 1 { "no link from a previous run" } else { "previous run left last -> runs (resolves)" };
        assert_eq!(lines[7..9], [previous, "links ok (symlink, readlink, lstat, escapes refused, hard link, times)"]);
        assert!(lines[9].starts_with("quota enforced"), "{lines:?}");
    }
    let area = files.0.lock().unwrap();
    assert_eq!(area.get("runs"), Some(&b"2\n"[..]));
    assert_eq!(area.get("big").map(<[u8]>::len), Some(100 * 1024));
    assert_eq!((area.get("tmp"), area.get("hog")), (None, None));
    let mut names: Vec<String> = workloads::wasi::FileArea::list(&mut area.clone()).unwrap().into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["big", "last", "runs"]); // the tree left nothing behind but the link
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
    // A wall limit shorter than the sleeps ends it.
    let limits = Limits { wall_ms: 30, ..Limits::default() };
    let r = wasm_precompile::run(Backend::NativeX86_64, &wasm, Some(&code), &["sleep"], &[], &limits).unwrap();
    assert_eq!(r.reason, StopReason::WallDeadline);
}

#[test]
fn the_linker_defines_every_supported_function() {
    let engine = wasm_precompile::engine().unwrap();
    let linker = workloads::runtime::linker(&engine).unwrap();
    let host = Box::new(wasm_precompile::StdHost::default());
    let mut store = wasmtime::Store::new(&engine, workloads::runtime::WorkloadState::new(&[], &[], &Limits::default(), host));
    let defined: Vec<String> = linker.iter(&mut store).map(|(m, n, _)| format!("{m}::{n}")).collect();
    for f in workloads::wasi::SUPPORTED {
        assert!(defined.contains(&format!("{}::{f}", workloads::wasi::MODULE)), "{f} not in the linker");
    }
    assert_eq!(defined.len(), workloads::wasi::SUPPORTED.len());
}
