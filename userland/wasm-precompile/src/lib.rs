//! Host side of gridos workloads: compiles WebAssembly modules to attested native code
//! for the kernel, and runs them on the host with the same WASI host functions and
//! limits (for tests and the host half of the benchmark).
//!
//! Code for the kernel is compiled with [`host_config`]: the kernel's native engine
//! settings ([`workloads::runtime::base_config`]) plus an explicit target, so no CPU
//! feature of the build machine leaks into it; it uses exactly
//! [`workloads::runtime::NATIVE_FEATURES`], the engine that
//! [`workloads::artifact::NATIVE_ENGINE`] describes. [`bundle`] signs the code with a
//! compiler key ([`workloads::artifact::attest`]); a node runs it only if it trusts that key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Config, Engine, Module, Store};
use workloads::artifact::Backend;
use workloads::ed25519_compact::{KeyPair, Seed};
use workloads::log::Stream;
use workloads::manifest::Limits;
use workloads::runtime::{self, StopReason, WorkloadState};
use workloads::wasi::{ConnId, ConnReadiness, FileArea, FileAreaError, HostServices, Interrupt, MemFileArea, MemSockets, Shutdown, SockError, Sockets};

/// The target native code is compiled for.
pub const NATIVE_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The engine configuration that produces code for the kernel's native engine.
pub fn host_config() -> wasmtime::Result<Config> {
    #[cfg_attr(not(feature = "compiler"), allow(unused_mut))]
    let mut c = runtime::base_config();
    #[cfg(feature = "compiler")]
    {
        c.target(NATIVE_TARGET)?;
        for flag in runtime::NATIVE_CRANELIFT_FLAGS {
            // SAFETY: code compiled here runs only where the kernel's CPUID check (or, on
            // the host, wasmtime's own feature check at load) confirms these features.
            unsafe { c.cranelift_flag_enable(flag) };
        }
    }
    Ok(c)
}

/// An engine with [`host_config`].
pub fn engine() -> wasmtime::Result<Engine> {
    Engine::new(&host_config()?)
}

/// Compiles `wasm` to native code for the kernel's engine (unsigned: only for
/// [`bundle`] and host runs).
#[cfg(feature = "compiler")]
pub fn compile(wasm: &[u8]) -> wasmtime::Result<Vec<u8>> {
    engine()?.precompile_module(wasm)
}

/// Compiles `wasm` and returns a v2 bundle attested by `key` for
/// [`workloads::artifact::engine_fingerprint`]. Deterministic: the same module and key give the
/// same bytes (Cranelift's output and ed25519 signatures are both deterministic).
#[cfg(feature = "compiler")]
pub fn bundle(wasm: &[u8], key: &KeyPair) -> wasmtime::Result<Vec<u8>> {
    let code = compile(wasm)?;
    Ok(workloads::artifact::attest(key, *blake3::hash(wasm).as_bytes(), workloads::artifact::engine_fingerprint(), &code))
}

/// Why a compiler key file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// The file could not be read.
    Read(String),
    /// It does not hold 64 hex digits (a 32-byte seed), or the seed is all zeros.
    Format,
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyFileError::Read(e) => write!(f, "cannot read the compiler key: {e}"),
            KeyFileError::Format => f.write_str("the compiler key file does not hold a 32-byte seed as 64 hex digits"),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// Parses a compiler key file's text: the first non-comment line holds 64 hex digits
/// (a 32-byte ed25519 seed); lines starting with `#` are comments.
pub fn key_from_text(text: &str) -> Result<KeyPair, KeyFileError> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).ok_or(KeyFileError::Format)?;
    let seed = parse_seed(line).ok_or(KeyFileError::Format)?;
    if seed == [0; 32] {
        return Err(KeyFileError::Format);
    }
    Ok(KeyPair::from_seed(Seed::new(seed)))
}

/// Reads a compiler key file (see [`key_from_text`]).
pub fn load_key(path: &std::path::Path) -> Result<KeyPair, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyFileError::Read(format!("{}: {e}", path.display())))?;
    key_from_text(&text)
}

fn parse_seed(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Clock and entropy of the host process; a waiting workload sleeps the thread.
pub struct StdHost {
    start: Instant,
    seed: u64,
    /// Wall-clock limit from `start`: a wait that reaches it ends the workload
    /// (`WallDeadline`). Only waits check it (the host has no time slicing).
    wall_limit_ns: u64,
}

impl Default for StdHost {
    fn default() -> Self {
        StdHost { start: Instant::now(), seed: 0x243f_6a88_85a3_08d3, wall_limit_ns: u64::MAX }
    }
}

impl StdHost {
    /// Longest single sleep of [`HostServices::wait_until`].
    pub const MAX_SLEEP: Duration = Duration::from_millis(10);

    /// A host whose waits end the workload once `wall_ms` have passed since now.
    pub fn with_wall_limit(wall_ms: u64) -> Self {
        StdHost { wall_limit_ns: wall_ms.saturating_mul(1_000_000), ..StdHost::default() }
    }
}

impl HostServices for StdHost {
    fn realtime_ns(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn random(&mut self, buf: &mut [u8]) {
        // Not for keys: deterministic mixing, good enough for host tests.
        for b in buf {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            *b = self.seed as u8;
        }
    }
    /// Sleeps toward the deadline in steps of at most [`Self::MAX_SLEEP`]. Without a
    /// deadline nothing can wake a host run (its sockets are scripted and play only in
    /// [`Sockets::wait`]), so it stops the workload instead of hanging.
    fn wait_until(&mut self, monotonic_deadline_ns: Option<u64>) -> Result<(), Interrupt> {
        let deadline_ns = monotonic_deadline_ns.ok_or(Interrupt::Stopped)?;
        let now_ns = self.monotonic_ns();
        if now_ns >= self.wall_limit_ns {
            return Err(Interrupt::WallDeadline);
        }
        let until_ns = deadline_ns.min(self.wall_limit_ns);
        let step = Duration::from_nanos(until_ns.saturating_sub(now_ns)).min(Self::MAX_SLEEP);
        std::thread::sleep(step);
        if self.monotonic_ns() >= self.wall_limit_ns {
            return Err(Interrupt::WallDeadline);
        }
        Ok(())
    }
}

/// What one host run did.
#[derive(Debug)]
pub struct HostRun {
    pub reason: StopReason,
    pub lines: Vec<(Stream, String)>,
    pub instantiate: Duration,
    pub run: Duration,
}

/// A [`MemFileArea`] that outlives a run (clones share the files), so tests can run
/// a program again on the same files and look at them.
#[derive(Debug, Clone, Default)]
pub struct SharedFiles(pub Arc<Mutex<MemFileArea>>);

impl SharedFiles {
    fn area(&self) -> std::sync::MutexGuard<'_, MemFileArea> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FileArea for SharedFiles {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, FileAreaError> {
        self.area().read(name)
    }
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FileAreaError> {
        self.area().write(name, bytes)
    }
    fn remove(&mut self, name: &str) -> Result<bool, FileAreaError> {
        self.area().remove(name)
    }
    fn list(&mut self) -> Result<Vec<(String, u64)>, FileAreaError> {
        self.area().list()
    }
    fn rename(&mut self, moves: &[(String, String)]) -> Result<(), FileAreaError> {
        self.area().rename(moves)
    }
    fn list_meta(&mut self) -> Result<Vec<(String, u64, workloads::wasi::FileMeta)>, FileAreaError> {
        self.area().list_meta()
    }
    fn write_meta(&mut self, name: &str, bytes: &[u8], meta: &workloads::wasi::FileMeta) -> Result<(), FileAreaError> {
        self.area().write_meta(name, bytes, meta)
    }
    fn set_meta(&mut self, name: &str, meta: &workloads::wasi::FileMeta) -> Result<(), FileAreaError> {
        self.area().set_meta(name, meta)
    }
    fn link(&mut self, from: &str, to: &str, meta: &workloads::wasi::FileMeta) -> Result<(), FileAreaError> {
        self.area().link(from, to, meta)
    }
}

/// A [`MemSockets`] the caller keeps a handle on (to script connections and read
/// what the program sent).
#[derive(Debug, Clone, Default)]
pub struct SharedSockets(pub Arc<Mutex<MemSockets>>);

impl SharedSockets {
    fn sockets(&self) -> std::sync::MutexGuard<'_, MemSockets> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sockets for SharedSockets {
    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, SockError> {
        self.sockets().accept(port)
    }
    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, SockError> {
        self.sockets().recv(conn, buf)
    }
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, SockError> {
        self.sockets().send(conn, data)
    }
    fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), SockError> {
        self.sockets().shutdown(conn, how)
    }
    fn close(&mut self, conn: ConnId) {
        self.sockets().close(conn)
    }
    fn wait(&mut self) -> Result<(), Interrupt> {
        self.sockets().wait()
    }
    fn pending(&mut self, port: u16) -> Result<usize, SockError> {
        self.sockets().pending(port)
    }
    fn readiness(&mut self, conn: ConnId) -> Result<ConnReadiness, SockError> {
        self.sockets().readiness(conn)
    }
}

/// What a host run gives the program besides clock and entropy.
#[derive(Default)]
pub struct Services {
    /// The `/data` file area (capped by the limits' `storage_bytes`).
    pub files: Option<Box<dyn FileArea + Send>>,
    /// Sockets and the listening ports, in fd order.
    pub sockets: Option<(Box<dyn Sockets + Send>, Vec<u16>)>,
}

/// Loads `code` (native code from [`compile`] or a verified bundle, or wasm to compile
/// if `None`) and runs `_start` with WASI under `limits` on this thread (no CPU limit on the host;
/// the wall limit ends only a workload that waits in `poll_oneoff`), with a fresh
/// in-memory file area and no sockets.
pub fn run(backend: Backend, wasm: &[u8], code: Option<&[u8]>, args: &[&str], env: &[&str], limits: &Limits) -> Result<HostRun, String> {
    let services = Services { files: Some(Box::new(MemFileArea::new())), sockets: None };
    run_with(backend, wasm, code, args, env, limits, services)
}

/// [`run`] with the given file area and sockets.
pub fn run_with(
    backend: Backend,
    wasm: &[u8],
    code: Option<&[u8]>,
    args: &[&str],
    env: &[&str],
    limits: &Limits,
    services: Services,
) -> Result<HostRun, String> {
    if backend != Backend::NativeX86_64 {
        return Err(format!("the host runner has no {} backend", backend.name()));
    }
    let engine = engine().map_err(|e| e.to_string())?;
    let module = match code {
        // SAFETY: callers pass code compiled on this machine or taken from a bundle that
        // `artifact::verify` accepted (trusted input).
        Some(code) => unsafe { Module::deserialize(&engine, code) },
        #[cfg(feature = "compiler")]
        None => Module::new(&engine, wasm),
        #[cfg(not(feature = "compiler"))]
        None => {
            let _ = wasm;
            Err(wasmtime::Error::msg("this runner was built without a compiler: it runs attested bundles only"))
        }
    }
    .map_err(|e| format!("invalid module: {e}"))?;
    runtime::check_imports(&module)?;
    let linker = runtime::linker(&engine).map_err(|e| e.to_string())?;
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<String> = env.iter().map(|s| s.to_string()).collect();
    let mut state = WorkloadState::new(&args, &env, limits, Box::new(StdHost::with_wall_limit(limits.wall_ms)));
    if let Some(files) = services.files {
        let clock = Box::new(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        state = state.with_files_at(files, workloads::wasi::fs::PREOPEN_NAME, clock);
    }
    if let Some((sockets, ports)) = services.sockets {
        state = state.with_sockets(sockets, &ports);
    }
    let mut store = Store::new(&engine, state);
    store.limiter(|s| s);
    store.set_epoch_deadline(u64::MAX / 2);
    let t0 = Instant::now();
    let instance = linker.instantiate(&mut store, &module);
    let instantiate = t0.elapsed();
    let t1 = Instant::now();
    let result = instance.and_then(|i| i.get_typed_func::<(), ()>(&mut store, "_start")?.call(&mut store, ()));
    let run = t1.elapsed();
    let reason = store.data_mut().classify(result);
    store.data_mut().wasi.log.flush();
    let lines = store.data_mut().wasi.log.take_lines();
    Ok(HostRun { reason, lines, instantiate, run })
}
