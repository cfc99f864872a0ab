//! The wasmi side: untrusted modules run in the wasmi interpreter, which takes the
//! wasm itself and validates it, so a node never runs machine code a user supplied.
//!
//! [`config`] holds the interpreter's settings (fuel metering on, multi-memory and
//! start functions off, wasmi's strict limits on module shape); [`linker`] binds the
//! same WASI functions as the wasmtime linker (both expand `bind_wasi!`);
//! [`WorkloadState`] is the store data and the resource limiter, as for wasmtime.
//! [`run_start`] calls `_start` one chunk of fuel at a time through wasmi's resumable
//! calls and hands control to the embedder after each chunk, so time slicing works as
//! with wasmtime's epoch callback. What it leaves to the embedder: what happens between
//! chunks (looking at the clock, charging CPU time, checking limits, switching fibers)
//! and how big a chunk is.

use alloc::format;
use alloc::string::{String, ToString};

use wasmi::{Caller, CompilationMode, Config, EnforcedLimits, Engine, Error, Extern, ExternType, Instance, Linker, Module, Store, TypedResumableCall};

/// The interpreter crate, for the embedder's type names.
pub use wasmi;
use wasmi_core::LimiterError;

use super::{StopReason, WorkloadState, MAX_TABLES};
use crate::wasi::{self, WasiResult};

/// Deepest wasm call nesting a workload may reach before it traps (wasmi keeps its
/// call frames on the heap, not on the fiber's stack).
const MAX_RECURSION_DEPTH: usize = 16_384;

/// The interpreter's engine settings. Fuel metering is on (time slicing); multi-memory
/// is off, so the limiter's per-memory cap is the workload's whole memory; a module
/// with a `start` function is refused (it would run at instantiation, outside the time
/// slicing; WASI commands start at the `_start` export instead); wasmi's strict limits
/// bound what a hostile module can make the validator and translator do. Functions
/// are translated eagerly, when the module is loaded: wasmi charges lazy translation
/// to the fuel of the running call and reports running out there as a plain error, not
/// a resumable one.
pub fn config() -> Config {
    let mut c = Config::default();
    c.consume_fuel(true)
        .compilation_mode(CompilationMode::Eager)
        .wasm_multi_memory(false)
        .allow_start_fn(false)
        .set_max_recursion_depth(MAX_RECURSION_DEPTH)
        .enforced_limits(EnforcedLimits::strict());
    c
}

/// A new interpreter engine with [`config`].
pub fn engine() -> Engine {
    Engine::new(&config())
}

/// Validates `wasm` (wasmi checks the whole module) and checks its imports and
/// `_start`: the module a workload runs, or why it was refused.
pub fn load(engine: &Engine, wasm: &[u8]) -> Result<Module, String> {
    let module = Module::new(engine, wasm).map_err(|e| format!("invalid module: {e}"))?;
    check_imports(&module)?;
    Ok(module)
}

/// Checks that the module imports only WASI functions this host implements and
/// exports a `_start` function.
pub fn check_imports(module: &Module) -> Result<(), String> {
    for import in module.imports() {
        let ok = import.module() == wasi::MODULE
            && matches!(import.ty(), ExternType::Func(_))
            && wasi::SUPPORTED.contains(&import.name());
        if !ok {
            return Err(format!("unknown import {}::{}", import.module(), import.name()));
        }
    }
    if !matches!(module.get_export("_start"), Some(ExternType::Func(_))) {
        return Err("module has no _start export".to_string());
    }
    Ok(())
}

impl wasmi::ResourceLimiter for WorkloadState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool, LimiterError> {
        if self.memory_may_grow(desired) { Ok(true) } else { Err(LimiterError::ResourceLimiterDeniedAllocation) }
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool, LimiterError> {
        Ok(Self::table_may_grow(desired))
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        1
    }
}

fn with_memory(
    caller: &mut Caller<'_, WorkloadState>,
    f: impl FnOnce(&mut [u8], &mut WorkloadState) -> WasiResult,
) -> Result<i32, Error> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(Error::new("WASI call from a module without an exported memory"));
    };
    let (mem, state) = memory.data_and_store_mut(caller);
    let result = f(mem, state);
    finish(state, result)
}

fn finish(state: &mut WorkloadState, result: WasiResult) -> Result<i32, Error> {
    state.end_call(result).map_err(Error::new)
}

type C<'a> = Caller<'a, WorkloadState>;

/// A linker with every function of [`wasi::SUPPORTED`] (the same list as
/// [`super::linker`]).
pub fn linker(engine: &Engine) -> Result<Linker<WorkloadState>, Error> {
    let mut l = Linker::new(engine);
    super::bind_wasi!(l, C, Error, with_memory, finish);
    Ok(l)
}

/// A new store for one workload, with the limiter installed and no fuel yet.
pub fn store(engine: &Engine, state: WorkloadState) -> Store<WorkloadState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| s);
    store
}

/// Instantiates `module` for `store` (no wasm code runs: start functions are refused).
pub fn instantiate(store: &mut Store<WorkloadState>, linker: &Linker<WorkloadState>, module: &Module) -> Result<Instance, Error> {
    linker.instantiate_and_start(&mut *store, module)
}

/// Instantiates `module` and runs its `_start` in slices of `slice_fuel` fuel (see
/// [`run_start_of`]). Returns why the workload ended.
pub fn run_start(
    store: &mut Store<WorkloadState>,
    linker: &Linker<WorkloadState>,
    module: &Module,
    slice_fuel: u64,
    between: impl FnMut(&mut WorkloadState) -> Result<(), StopReason>,
) -> StopReason {
    match instantiate(store, linker, module) {
        Ok(instance) => run_start_of(store, instance, slice_fuel, between),
        Err(e) => store.data_mut().stop_reason(Some(format!("{e}"))),
    }
}

/// Runs `_start` of `instance` in slices of `slice_fuel` fuel. After each slice,
/// `between` gets the store data: `Ok(())` refuels and resumes, `Err(stop)` ends the
/// workload with `stop`. Returns why the workload ended.
pub fn run_start_of(
    store: &mut Store<WorkloadState>,
    instance: Instance,
    slice_fuel: u64,
    mut between: impl FnMut(&mut WorkloadState) -> Result<(), StopReason>,
) -> StopReason {
    let trap = call_start(store, instance, slice_fuel, &mut between).err();
    store.data_mut().stop_reason(trap)
}

/// [`run_start_of`] without the final classification: `Err` carries the trap message
/// (the stop reason, if a limit or call recorded one, is in the store data).
fn call_start(
    store: &mut Store<WorkloadState>,
    instance: Instance,
    slice_fuel: u64,
    between: &mut impl FnMut(&mut WorkloadState) -> Result<(), StopReason>,
) -> Result<(), String> {
    let slice_fuel = slice_fuel.max(1);
    let start = instance.get_typed_func::<(), ()>(&mut *store, "_start").map_err(|e| format!("{e}"))?;
    store.set_fuel(slice_fuel).map_err(|e| format!("{e}"))?;
    let mut call = start.call_resumable(&mut *store, ()).map_err(|e| format!("{e}"))?;
    loop {
        match call {
            TypedResumableCall::Finished(()) => return Ok(()),
            // A host function failed (proc_exit, a limit, a bad call): the workload
            // ends here; its reason, if any, is recorded in the store data.
            TypedResumableCall::HostTrap(trap) => return Err(format!("{}", trap.host_error())),
            TypedResumableCall::OutOfFuel(out) => {
                if let Err(stop) = between(store.data_mut()) {
                    store.data_mut().stop = Some(stop);
                    return Err("workload limit".to_string());
                }
                // One instruction may need more than a slice (bulk memory operations
                // cost fuel per byte): give it what it needs.
                store.set_fuel(slice_fuel.max(out.required_fuel())).map_err(|e| format!("{e}"))?;
                call = out.resume(&mut *store).map_err(|e| format!("{e}"))?;
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::log::Stream;
    use crate::manifest::Limits;
    use crate::wasi::HostServices;
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// The committed test programs (tests/wasm/*.c built by tests/wasm/build.sh).
    fn program(name: &str) -> Vec<u8> {
        let path = format!("{}/../../tests/wasm/out/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    struct TestHost(u64);
    impl HostServices for TestHost {
        fn realtime_ns(&mut self) -> u64 {
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        }
        fn monotonic_ns(&mut self) -> u64 {
            self.0 += 1000;
            self.0
        }
        fn random(&mut self, buf: &mut [u8]) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(37).wrapping_add(11);
            }
        }
    }

    struct Run {
        reason: StopReason,
        lines: Vec<(Stream, String)>,
        slices: u64,
    }

    /// Runs `wasm` with `args` under `limits` in slices of `slice_fuel`, stopping it
    /// with `CpuLimit` once it has used `max_slices` slices.
    fn run(wasm: &[u8], args: &[&str], limits: Limits, slice_fuel: u64, max_slices: u64) -> Result<Run, String> {
        let engine = engine();
        let linker = linker(&engine).map_err(|e| format!("{e}"))?;
        let module = load(&engine, wasm)?;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = ["GREETING=hi from the test".to_string()];
        let state = WorkloadState::new(&args, &env, &limits, Box::new(TestHost(0)));
        let mut store = store(&engine, state);
        let mut slices = 0;
        let reason = run_start(&mut store, &linker, &module, slice_fuel, |_| {
            slices += 1;
            if slices >= max_slices { Err(StopReason::CpuLimit { used_ms: slices }) } else { Ok(()) }
        });
        store.data_mut().wasi.log.flush();
        Ok(Run { reason, lines: store.data_mut().wasi.log.take_lines(), slices })
    }

    /// A file area shared between runs (the context owns its box).
    #[derive(Clone, Default)]
    struct SharedArea(std::sync::Arc<std::sync::Mutex<crate::wasi::MemFileArea>>);

    impl crate::wasi::FileArea for SharedArea {
        fn read(&mut self, n: &str) -> Result<Option<Vec<u8>>, crate::wasi::FileAreaError> {
            self.0.lock().unwrap().read(n)
        }
        fn write(&mut self, n: &str, b: &[u8]) -> Result<(), crate::wasi::FileAreaError> {
            self.0.lock().unwrap().write(n, b)
        }
        fn remove(&mut self, n: &str) -> Result<bool, crate::wasi::FileAreaError> {
            self.0.lock().unwrap().remove(n)
        }
        fn list(&mut self) -> Result<Vec<(String, u64)>, crate::wasi::FileAreaError> {
            self.0.lock().unwrap().list()
        }
        fn rename(&mut self, moves: &[(String, String)]) -> Result<(), crate::wasi::FileAreaError> {
            self.0.lock().unwrap().rename(moves)
        }
        fn list_meta(&mut self) -> Result<Vec<(String, u64, crate::wasi::FileMeta)>, crate::wasi::FileAreaError> {
            self.0.lock().unwrap().list_meta()
        }
        fn write_meta(&mut self, n: &str, b: &[u8], m: &crate::wasi::FileMeta) -> Result<(), crate::wasi::FileAreaError> {
            self.0.lock().unwrap().write_meta(n, b, m)
        }
        fn set_meta(&mut self, n: &str, m: &crate::wasi::FileMeta) -> Result<(), crate::wasi::FileAreaError> {
            self.0.lock().unwrap().set_meta(n, m)
        }
        fn link(&mut self, a: &str, b: &str, m: &crate::wasi::FileMeta) -> Result<(), crate::wasi::FileAreaError> {
            self.0.lock().unwrap().link(a, b, m)
        }
    }

    /// Every WASI preview 1 function is bound (issue 17): none is refused at load.
    #[test]
    fn every_preview1_function_is_bound() {
        let mut all = [
            "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get", "clock_time_get",
            "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get", "fd_fdstat_set_flags",
            "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size", "fd_filestat_set_times", "fd_pread",
            "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite", "fd_read", "fd_readdir", "fd_renumber", "fd_seek",
            "fd_sync", "fd_tell", "fd_write", "path_create_directory", "path_filestat_get", "path_filestat_set_times",
            "path_link", "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
            "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get", "sock_accept",
            "sock_recv", "sock_send", "sock_shutdown",
        ];
        let mut supported = wasi::SUPPORTED.to_vec();
        all.sort_unstable();
        supported.sort_unstable();
        assert_eq!(supported, all);
        let engine = engine();
        let l = linker(&engine).unwrap();
        // A module importing each name as `() -> ()`: the linker has a definition for
        // every one (the instantiation fails on the type, not on a missing name).
        for name in all {
            let state = WorkloadState::new(&[], &[], &Limits::default(), Box::new(TestHost(0)));
            let mut st = store(&engine, state);
            let m = Module::new(&engine, &crate::module::module_importing(wasi::MODULE, name)[..]).unwrap();
            let Err(e) = instantiate(&mut st, &l, &m) else { panic!("{name}: instantiated with the wrong type") };
            let e = format!("{e}");
            assert!(!e.contains("cannot find") && !e.contains("missing") && !e.contains("unknown"), "{name}: {e}");
        }
        let state = WorkloadState::new(&[], &[], &Limits::default(), Box::new(TestHost(0)));
        let mut st = store(&engine, state);
        let m = Module::new(&engine, &crate::module::module_importing(wasi::MODULE, "fd_nope")[..]).unwrap();
        let Err(e) = instantiate(&mut st, &l, &m) else { panic!("fd_nope was bound") };
        let e = format!("{e}");
        assert!(e.contains("cannot find"), "{e}");
    }

    /// The C file program (tests/wasm/files.c) twice on one area under wasmi: the
    /// directory tree with relative and /data paths, and nothing left behind.
    #[test]
    fn files_program_walks_a_directory_tree_twice_on_one_area() {
        let area = SharedArea::default();
        for run in 1..=2 {
            let engine = engine();
            let linker = linker(&engine).unwrap();
            let module = load(&engine, &program("files")).unwrap();
            let limits = Limits { storage_bytes: 512 << 10, ..Limits::default() };
            let state = WorkloadState::new(&["files".to_string()], &[], &limits, Box::new(TestHost(0)))
                .with_files_at(Box::new(area.clone()), "/data", Box::new(|| TestHost(0).realtime_ns()));
            let mut st = store(&engine, state);
            let reason = run_start(&mut st, &linker, &module, 1 << 20, |_| Ok(()));
            st.data_mut().wasi.log.flush();
            let lines = st.data_mut().wasi.log.take_lines();
            let out: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
            assert_eq!(reason, StopReason::Exited(0), "{out:?}");
            assert_eq!(out[0], format!("runs={run}"));
            assert_eq!(out[4..7], ["tree: leaf2,moved", "tree/moved: b", "tree ok (mkdir, rename, readdir, rmdir, relative paths)"]);
            // The symlink the first run left is found by the second (issue 17).
            let previous = if run == 1 { "no link from a previous run" } else { "previous run left last -> runs (resolves)" };
            assert_eq!(out[7], previous);
            assert_eq!(out[8], "links ok (symlink, readlink, lstat, escapes refused, hard link, times)");
            assert!(out[9].starts_with("quota enforced"), "{out:?}");
        }
        let mut names: Vec<String> = crate::wasi::FileArea::list(&mut area.clone()).unwrap().into_iter().map(|(n, _)| n).collect();
        names.sort();
        assert_eq!(names, ["big", "last", "runs"]);
    }

    fn stdout(r: &Run) -> Vec<&str> {
        r.lines.iter().filter(|(s, _)| *s == Stream::Stdout).map(|(_, l)| l.as_str()).collect()
    }

    #[test]
    fn hello_prints_exactly_its_lines() {
        let r = run(&program("hello"), &["hello", "first-arg"], Limits::default(), 1 << 20, u64::MAX).unwrap();
        assert_eq!(r.reason, StopReason::Exited(0));
        assert_eq!(
            stdout(&r),
            [
                "hello, world from wasm32-wasi",
                "argc=2 argv[0]=hello argv[1]=first-arg",
                "env GREETING=hi from the test",
                "clock ok, random ok",
            ]
        );
        assert!(r.lines.contains(&(Stream::Stderr, "hello on stderr".to_string())), "{:?}", r.lines);
    }

    #[test]
    fn checksum_matches_and_fib_is_the_same_in_any_slice_size() {
        let r = run(&program("checksum"), &["checksum", "65536"], Limits::default(), 1 << 20, u64::MAX).unwrap();
        assert_eq!(r.reason, StopReason::Exited(0));
        assert_eq!(stdout(&r), ["checksum of 65536 bytes: fnv1a64=8bd22e8266b124dd sum=8348054"]);
        let mut slices = Vec::new();
        for fuel in [1_000, 100_000, 10_000_000] {
            let r = run(&program("fib"), &["fib", "20"], Limits::default(), fuel, u64::MAX).unwrap();
            assert_eq!(r.reason, StopReason::Exited(0), "slice {fuel}");
            assert_eq!(stdout(&r), ["fib(20) = 6765"], "slice {fuel}");
            slices.push(r.slices);
        }
        // Smaller slices mean more of them; fib(20) fits in one 10M slice.
        assert!(slices[0] > 10 * slices[1] && slices[1] > slices[2], "{slices:?}");
        assert_eq!(slices[2], 0, "{slices:?}");
    }

    #[test]
    fn an_endless_loop_is_sliced_and_stopped_between_slices() {
        let r = run(&program("spin"), &["spin"], Limits::default(), 10_000, 50).unwrap();
        assert_eq!(r.reason, StopReason::CpuLimit { used_ms: 50 });
        assert_eq!(r.slices, 50);
        assert_eq!(stdout(&r), ["spin: starting an endless loop"]);
    }

    #[test]
    fn memory_bomb_stops_at_its_cap() {
        let limits = Limits { memory_bytes: 32 << 20, ..Limits::default() };
        let r = run(&program("membomb"), &["membomb"], limits, 1 << 20, u64::MAX).unwrap();
        assert!(matches!(r.reason, StopReason::MemoryLimit { cap, wanted } if cap == 32 << 20 && wanted > cap), "{:?}", r.reason);
        assert!(stdout(&r).contains(&"membomb: 24 MiB"), "{:?}", r.lines);
        assert!(!stdout(&r).contains(&"membomb: 32 MiB"), "{:?}", r.lines);
    }

    /// The host hears of every growth the limiter allows (its first allocation too),
    /// never of a refused one: what it reports is what the workload holds.
    #[test]
    fn the_host_hears_each_granted_memory_size() {
        struct Grants(std::sync::Arc<std::sync::Mutex<Vec<u64>>>, TestHost);
        impl HostServices for Grants {
            fn realtime_ns(&mut self) -> u64 {
                self.1.realtime_ns()
            }
            fn monotonic_ns(&mut self) -> u64 {
                self.1.monotonic_ns()
            }
            fn random(&mut self, buf: &mut [u8]) {
                self.1.random(buf)
            }
            fn memory_granted(&mut self, bytes: u64) {
                self.0.lock().unwrap().push(bytes);
            }
        }
        let grants = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let engine = engine();
        let linker = linker(&engine).unwrap();
        let module = load(&engine, &program("membomb")).unwrap();
        let limits = Limits { memory_bytes: 32 << 20, ..Limits::default() };
        let state = WorkloadState::new(&["membomb".to_string()], &[], &limits, Box::new(Grants(grants.clone(), TestHost(0))));
        let mut store = store(&engine, state);
        let reason = run_start(&mut store, &linker, &module, 1 << 20, |_| Ok(()));
        assert!(matches!(reason, StopReason::MemoryLimit { .. }), "{reason:?}");
        let grants = grants.lock().unwrap().clone();
        assert!(grants.len() >= 3, "{grants:?}");
        assert!(grants.windows(2).all(|w| w[0] < w[1]), "{grants:?}");
        assert!(grants.iter().all(|g| *g <= 32 << 20), "{grants:?}");
        assert!(grants.last().is_some_and(|g| *g >= 24 << 20), "{grants:?}");
        assert_eq!(store.data().memory_peak, *grants.last().unwrap());
    }

    #[test]
    fn log_cap_ends_a_chatty_workload() {
        let limits = Limits { log_bytes: 40, ..Limits::default() };
        let r = run(&program("hello"), &["hello"], limits, 1 << 20, u64::MAX).unwrap();
        assert_eq!(r.reason, StopReason::LogLimit);
    }

    /// A module with `_start` (type 0, `() -> ()`, body `end`) and `extra` sections,
    /// each `(id, body)`, placed by id among type (1), function (3), export (7), code (10).
    fn module_with(extra: &[(u8, &[u8])]) -> Vec<u8> {
        let mut sections: Vec<(u8, Vec<u8>)> = alloc::vec![
            (1, alloc::vec![1, 0x60, 0, 0]),
            (3, alloc::vec![1, 0]),
            (7, alloc::vec![1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 0]),
            (10, alloc::vec![1, 2, 0, 0x0b]),
        ];
        sections.extend(extra.iter().map(|(id, b)| (*id, b.to_vec())));
        // Section order: type 1, function 3, memory 5, export 7, start 8, code 10.
        sections.sort_by_key(|(id, _)| *id);
        let mut w = Vec::from(&b"\0asm\x01\0\0\0"[..]);
        for (id, body) in sections {
            w.push(id);
            w.push(body.len() as u8);
            w.extend_from_slice(&body);
        }
        w
    }

    #[test]
    fn hostile_modules_are_refused() {
        let engine = engine();
        let e = load(&engine, &crate::module::module_importing("env", "launch_missiles")).unwrap_err();
        assert_eq!(e, "unknown import env::launch_missiles");
        let hello = program("hello");
        assert!(load(&engine, &hello[..hello.len() / 2]).unwrap_err().starts_with("invalid module: "));
        let mut garbage = hello.clone();
        let at = garbage.len() / 2;
        garbage[at..at + 64].fill(0xff);
        assert!(load(&engine, &garbage).is_err());
        // The minimal module itself is fine.
        assert!(load(&engine, &module_with(&[])).is_ok());
        // Two memories (multi-memory is off: the cap is per memory).
        let e = load(&engine, &module_with(&[(5, &[2, 0, 1, 0, 1])])).unwrap_err();
        assert!(e.starts_with("invalid module: "), "{e}");
        // A start function would run outside the time slicing.
        let e = load(&engine, &module_with(&[(8, &[0])])).unwrap_err();
        assert!(e.starts_with("invalid module: "), "{e}");
        // No _start.
        let mut no_start = module_with(&[]);
        let i = no_start.windows(6).position(|w| w == b"_start").unwrap();
        no_start[i + 1] = b'S';
        assert_eq!(load(&engine, &no_start).unwrap_err(), "module has no _start export");
    }

    /// Sections in order, each `(id, body)`.
    fn module(sections: &[(u8, &[u8])]) -> Vec<u8> {
        let mut w = Vec::from(&b"\0asm\x01\0\0\0"[..]);
        for (id, body) in sections {
            w.push(*id);
            w.push(body.len() as u8);
            w.extend_from_slice(body);
        }
        w
    }

    #[test]
    fn proc_exit_and_traps_end_the_workload_with_their_reason() {
        // Imports wasi proc_exit (i32) -> (); _start calls it with 7.
        let mut import = alloc::vec![1, 22];
        import.extend_from_slice(b"wasi_snapshot_preview1");
        import.push(9);
        import.extend_from_slice(b"proc_exit");
        import.extend_from_slice(&[0, 0]);
        let exit7 = module(&[
            (1, &[2, 0x60, 1, 0x7f, 0, 0x60, 0, 0]),
            (2, &import),
            (3, &[1, 1]),
            (7, &[1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 1]),
            (10, &[1, 6, 0, 0x41, 7, 0x10, 0, 0x0b]),
        ]);
        let r = run(&exit7, &[], Limits::default(), 1000, u64::MAX).unwrap();
        assert_eq!(r.reason, StopReason::Exited(7));
        // _start is `unreachable`.
        let trap = module(&[
            (1, &[1, 0x60, 0, 0]),
            (3, &[1, 0]),
            (7, &[1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 0]),
            (10, &[1, 3, 0, 0x00, 0x0b]),
        ]);
        let r = run(&trap, &[], Limits::default(), 1000, u64::MAX).unwrap();
        assert!(matches!(&r.reason, StopReason::Trapped(t) if t.contains("unreachable")), "{:?}", r.reason);
    }

    #[test]
    fn initial_memory_past_the_cap_is_refused_at_instantiation() {
        // One memory of 1000 pages (62.5 MiB), exported, against an 8 MiB cap.
        let wasm = module_with(&[(5, &[1, 0, 0xe8, 0x07])]);
        let limits = Limits { memory_bytes: 8 << 20, ..Limits::default() };
        let r = run(&wasm, &[], limits, 1000, u64::MAX).unwrap();
        assert_eq!(r.reason, StopReason::MemoryLimit { wanted: 1000 << 16, cap: 8 << 20 });
        let r = run(&wasm, &[], Limits { memory_bytes: 64 << 20, ..limits }, 1000, u64::MAX).unwrap();
        assert_eq!(r.reason, StopReason::Exited(0));
    }
}
