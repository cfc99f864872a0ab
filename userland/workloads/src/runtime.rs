//! The engine side shared by the kernel and the host tools: wasmtime for attested
//! native code (feature `runtime`) and wasmi for everything else (feature `interp`,
//! module [`interp`]).
//!
//! [`base_config`] is the one place native engine settings live: the kernel adds its
//! platform hooks (code memory, CPU features) and the compile service adds the target
//! and its CPU-feature flags, so attested code always matches the kernel's engine
//! (described by [`crate::artifact::NATIVE_ENGINE`], which compilers sign).
//! [`linker`] binds the [`crate::wasi`] functions; [`WorkloadState`] is the store data,
//! and also the memory limiter (the same decisions for both engines). Both engines bind
//! the WASI functions from one list (the `bind_wasi!` macro), so they cannot drift.
//! What it leaves to the embedder: stacks, time slicing
//! (epoch callback), clocks, entropy and parking a waiting workload (a
//! [`HostServices`]), printing the log, and the optional file area ([`FileArea`]) and
//! sockets ([`Sockets`]) attached with [`WorkloadState::with_files`] and
//! [`WorkloadState::with_sockets`].

use alloc::boxed::Box;
#[cfg(feature = "runtime")]
use alloc::format;
use alloc::string::String;
#[cfg(feature = "runtime")]
use alloc::string::ToString;
use core::fmt;

#[cfg(feature = "runtime")]
use wasmtime::{Caller, Config, Engine, Error, Extern, ExternType, Linker, Module, ResourceLimiter};

use crate::manifest::Limits;
#[cfg(feature = "runtime")]
use crate::wasi;
use crate::wasi::{FileArea, HostServices, Interrupt, Sockets, Stop, WasiCtx, WasiResult};

#[cfg(any(feature = "interp", test))]
pub mod interp;

/// Stack the wasm code of one workload may use (the embedder's stacks must be larger).
pub const MAX_WASM_STACK: usize = 256 << 10;
/// CPU features native code is compiled for (x86-64-v2): the kernel checks each with
/// CPUID when loading (through `Config::detect_host_feature`) and runs the module in
/// the interpreter if one is missing.
pub const NATIVE_FEATURES: &[&str] = &["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"];
/// The same features as Cranelift x86 settings, for the compile service.
pub const NATIVE_CRANELIFT_FLAGS: &[&str] = &["has_sse3", "has_ssse3", "has_sse41", "has_sse42", "has_popcnt"];
/// Largest table a workload may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Tables one workload may have in wasmi (clang's output has one, for indirect calls).
#[cfg(any(feature = "interp", test))]
const MAX_TABLES: usize = 4;

/// Native engine settings common to the kernel and the compile service (see
/// ../shared/DESIGN.md, wasmtime notes). Signals-based traps are off, so Cranelift
/// emits explicit bounds checks and every trap is an ordinary error; memories are
/// plain heap allocations (no reservation, no guard pages, no copy-on-write images);
/// epoch interruption is on, so the embedder can slice time between workloads;
/// multi-memory is off, so the memory cap (which the limiter applies per memory) is
/// the workload's whole linear memory. Changing any of them must change
/// [`crate::artifact::NATIVE_ENGINE`].
#[cfg(feature = "runtime")]
pub fn base_config() -> Config {
    let mut c = Config::new();
    c.signals_based_traps(false)
        .memory_guard_size(0)
        .memory_reservation(0)
        .memory_reservation_for_growth(1 << 20)
        .memory_init_cow(false)
        .guard_before_linear_memory(false)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .wasm_multi_memory(false);
    c
}

/// Why a workload is no longer running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// It returned from `_start` (code 0) or called `proc_exit(code)`.
    Exited(u32),
    /// A wasm trap (out-of-bounds access, unreachable, stack overflow, ...) or a host error.
    Trapped(String),
    /// Used up its CPU time.
    CpuLimit { used_ms: u64 },
    /// Passed its wall-clock deadline.
    WallDeadline,
    /// Tried to grow linear memory past its cap.
    MemoryLimit { wanted: u64, cap: u64 },
    /// Wrote more than its log cap.
    LogLimit,
    /// Stopped by its owner.
    Stopped,
    /// Refused before it ran (bad module, unknown import, ...).
    Rejected(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Exited(c) => write!(f, "exited with status {c}"),
            StopReason::Trapped(t) => write!(f, "trapped: {t}"),
            StopReason::CpuLimit { used_ms } => write!(f, "CPU limit reached after {used_ms} ms"),
            StopReason::WallDeadline => f.write_str("wall-clock deadline passed"),
            StopReason::MemoryLimit { wanted, cap } => write!(f, "memory limit: wanted {wanted} B, cap {cap} B"),
            StopReason::LogLimit => f.write_str("log limit reached"),
            StopReason::Stopped => f.write_str("stopped by owner"),
            StopReason::Rejected(why) => write!(f, "rejected: {why}"),
        }
    }
}

/// Store data of one workload: WASI state, host services, limits, and the stop reason
/// recorded by whichever limit or call ended it.
pub struct WorkloadState {
    pub wasi: WasiCtx,
    pub host: Box<dyn HostServices + Send>,
    pub memory_cap: u64,
    pub memory_peak: u64,
    pub stop: Option<StopReason>,
    storage_cap: u64,
}

impl WorkloadState {
    pub fn new(args: &[String], env: &[String], limits: &Limits, host: Box<dyn HostServices + Send>) -> Self {
        WorkloadState {
            wasi: WasiCtx::new(args, env, usize::try_from(limits.log_bytes).unwrap_or(usize::MAX)),
            host,
            memory_cap: limits.memory_bytes,
            memory_peak: 0,
            stop: None,
            storage_cap: limits.storage_bytes,
        }
    }

    /// Gives the workload `area` as its `/data` directory (fd 3), capped at the
    /// limits' `storage_bytes`; with `storage_bytes == 0` the area is dropped and the
    /// workload has no file area. Call before instantiating.
    pub fn with_files(mut self, area: Box<dyn FileArea + Send>) -> Self {
        if self.storage_cap > 0 {
            self.wasi.attach_files(area, self.storage_cap);
        }
        self
    }

    /// [`Self::with_files`] preopened as `guest_dir` (the manifest's `data_dir`, or
    /// `/data`) with `clock` (the node's realtime, nanoseconds since the Unix epoch)
    /// for file times.
    pub fn with_files_at(mut self, area: Box<dyn FileArea + Send>, guest_dir: &str, clock: crate::wasi::fs::FileClock) -> Self {
        if self.storage_cap > 0 {
            self.wasi.attach_files_at(area, self.storage_cap, guest_dir);
            self.wasi.set_file_clock(clock);
        }
        self
    }

    /// Gives the workload one preopened listener per port of `listen` (the manifest's
    /// `listen`), after `/data` and `.`: fds 5, 6, ... with a file area, 3, 4, ... without.
    /// Call before instantiating (in either order with [`Self::with_files`]).
    pub fn with_sockets(mut self, sockets: Box<dyn Sockets + Send>, listen: &[u16]) -> Self {
        self.wasi.attach_sockets(sockets, listen);
        self
    }

    /// The reason the call into the workload ended with `result`.
    #[cfg(feature = "runtime")]
    pub fn classify(&mut self, result: Result<(), Error>) -> StopReason {
        let trap = result.err().map(|e| match e.downcast_ref::<wasmtime::Trap>() {
            Some(t) => format!("{t}"),
            None => format!("{e}"),
        });
        self.stop_reason(trap)
    }

    /// The reason a workload ended, whatever the engine: the limit or call that
    /// recorded one, else the engine's trap message, else a normal exit.
    pub fn stop_reason(&mut self, trap: Option<String>) -> StopReason {
        if let Some(s) = self.stop.take() {
            return s;
        }
        match trap {
            None => StopReason::Exited(0),
            Some(t) => StopReason::Trapped(t),
        }
    }

    /// The memory limiter's decision for both engines: growing to `desired` bytes past
    /// the cap ends the workload (recorded here; the engine gets an error and traps).
    fn memory_may_grow(&mut self, desired: usize) -> bool {
        let desired = desired as u64;
        if desired > self.memory_cap {
            self.stop = Some(StopReason::MemoryLimit { wanted: desired, cap: self.memory_cap });
            return false;
        }
        self.memory_peak = self.memory_peak.max(desired);
        self.host.memory_granted(desired);
        true
    }

    /// The table limiter's decision for both engines (a refused `table.grow` returns -1).
    fn table_may_grow(desired: usize) -> bool {
        desired <= MAX_TABLE_ELEMENTS
    }

    /// Records how a WASI call ended: the errno for the module, or the stop reason
    /// and `Err` with a short message for the engine to turn into a trap.
    fn end_call(&mut self, result: WasiResult) -> Result<i32, &'static str> {
        match result {
            Ok(errno) => Ok(errno as i32),
            Err(Stop::Exit(code)) => {
                self.stop = Some(StopReason::Exited(code));
                Err("proc_exit")
            }
            Err(Stop::LogFull) => {
                self.stop = Some(StopReason::LogLimit);
                Err("log limit")
            }
            Err(Stop::Interrupted(i)) => {
                self.stop = Some(match i {
                    Interrupt::CpuLimit { used_ms } => StopReason::CpuLimit { used_ms },
                    Interrupt::WallDeadline => StopReason::WallDeadline,
                    Interrupt::Stopped => StopReason::Stopped,
                });
                Err("workload limit")
            }
        }
    }
}

#[cfg(feature = "runtime")]
impl ResourceLimiter for WorkloadState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool, Error> {
        if self.memory_may_grow(desired) { Ok(true) } else { Err(Error::msg("memory limit")) }
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> Result<bool, Error> {
        Ok(Self::table_may_grow(desired))
    }
}

/// Checks that the module imports only WASI functions this host implements.
#[cfg(feature = "runtime")]
pub fn check_imports(module: &Module) -> Result<(), String> {
    for import in module.imports() {
        let ok = import.module() == wasi::MODULE
            && matches!(import.ty(), ExternType::Func(_))
            && wasi::SUPPORTED.contains(&import.name());
        if !ok {
            return Err(format!("unknown import {}::{}", import.module(), import.name()));
        }
    }
    if module.get_export("_start").is_none() {
        return Err("module has no _start export".to_string());
    }
    Ok(())
}

#[cfg(feature = "runtime")]
fn with_memory(
    caller: &mut Caller<'_, WorkloadState>,
    f: impl FnOnce(&mut [u8], &mut WorkloadState) -> WasiResult,
) -> Result<i32, Error> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(Error::msg("WASI call from a module without an exported memory"));
    };
    let (mem, state) = memory.data_and_store_mut(caller);
    let result = f(mem, state);
    finish(state, result)
}

#[cfg(feature = "runtime")]
fn finish(state: &mut WorkloadState, result: WasiResult) -> Result<i32, Error> {
    state.end_call(result).map_err(Error::msg)
}

/// Binds every function of [`wasi::SUPPORTED`] in `$l` (a wasmtime or wasmi
/// `Linker<WorkloadState>`): `$C` is the engine's `Caller` type, `$Error` its error,
/// `$with_memory` runs a call on the caller's exported memory and `$finish` turns a
/// [`WasiResult`] into the engine's result. The one list both engines use.
macro_rules! bind_wasi {
    ($l:ident, $C:ident, $Error:ty, $with_memory:ident, $finish:ident) => {{
        let m = $crate::wasi::MODULE;
        $l.func_wrap(m, "args_get", |mut c: $C<'_>, a: i32, b: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.args_get(mem, a as u32, b as u32))
        })?;
        $l.func_wrap(m, "args_sizes_get", |mut c: $C<'_>, a: i32, b: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.args_sizes_get(mem, a as u32, b as u32))
        })?;
        $l.func_wrap(m, "environ_get", |mut c: $C<'_>, a: i32, b: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.environ_get(mem, a as u32, b as u32))
        })?;
        $l.func_wrap(m, "environ_sizes_get", |mut c: $C<'_>, a: i32, b: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.environ_sizes_get(mem, a as u32, b as u32))
        })?;
        $l.func_wrap(m, "clock_res_get", |mut c: $C<'_>, id: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.clock_res_get(mem, id as u32, out as u32))
        })?;
        $l.func_wrap(m, "clock_time_get", |mut c: $C<'_>, id: i32, _precision: i64, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.clock_time_get(&mut *s.host, mem, id as u32, out as u32))
        })?;
        $l.func_wrap(m, "random_get", |mut c: $C<'_>, buf: i32, len: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.random_get(&mut *s.host, mem, buf as u32, len as u32))
        })?;
        $l.func_wrap(m, "fd_write", |mut c: $C<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_write(mem, fd as u32, iovs as u32, n as u32, out as u32))
        })?;
        $l.func_wrap(m, "fd_read", |mut c: $C<'_>, fd: i32, iovs: i32, n: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_read(mem, fd as u32, iovs as u32, n as u32, out as u32))
        })?;
        $l.func_wrap(m, "fd_pread", |mut c: $C<'_>, fd: i32, iovs: i32, n: i32, off: i64, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_pread(mem, fd as u32, iovs as u32, n as u32, off as u64, out as u32))
        })?;
        $l.func_wrap(m, "fd_pwrite", |mut c: $C<'_>, fd: i32, iovs: i32, n: i32, off: i64, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_pwrite(mem, fd as u32, iovs as u32, n as u32, off as u64, out as u32))
        })?;
        $l.func_wrap(m, "fd_close", |mut c: $C<'_>, fd: i32| {
            let r = c.data_mut().wasi.fd_close(fd as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "fd_seek", |mut c: $C<'_>, fd: i32, off: i64, whence: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_seek(mem, fd as u32, off, whence as u32, out as u32))
        })?;
        $l.func_wrap(m, "fd_tell", |mut c: $C<'_>, fd: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_tell(mem, fd as u32, out as u32))
        })?;
        $l.func_wrap(m, "fd_sync", |mut c: $C<'_>, fd: i32| {
            let r = c.data_mut().wasi.fd_sync(fd as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "fd_datasync", |mut c: $C<'_>, fd: i32| {
            let r = c.data_mut().wasi.fd_sync(fd as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "fd_fdstat_get", |mut c: $C<'_>, fd: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_fdstat_get(mem, fd as u32, out as u32))
        })?;
        $l.func_wrap(m, "fd_fdstat_set_flags", |mut c: $C<'_>, fd: i32, flags: i32| {
            let r = c.data_mut().wasi.fd_fdstat_set_flags(fd as u32, flags as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "fd_filestat_get", |mut c: $C<'_>, fd: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_filestat_get(mem, fd as u32, out as u32))
        })?;
        $l.func_wrap(m, "fd_filestat_set_size", |mut c: $C<'_>, fd: i32, size: i64| {
            let r = c.data_mut().wasi.fd_filestat_set_size(fd as u32, size as u64);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "fd_prestat_get", |mut c: $C<'_>, fd: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_prestat_get(mem, fd as u32, out as u32))
        })?;
        $l.func_wrap(m, "fd_prestat_dir_name", |mut c: $C<'_>, fd: i32, p: i32, len: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_prestat_dir_name(mem, fd as u32, p as u32, len as u32))
        })?;
        $l.func_wrap(m, "fd_readdir", |mut c: $C<'_>, fd: i32, buf: i32, len: i32, cookie: i64, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.fd_readdir(mem, fd as u32, buf as u32, len as u32, cookie as u64, out as u32))
        })?;
        $l.func_wrap(
            m,
            "path_open",
            |mut c: $C<'_>, fd: i32, dirflags: i32, p: i32, len: i32, oflags: i32, base: i64, _inh: i64, fdflags: i32, out: i32| {
                $with_memory(&mut c, |mem, s| {
                    s.wasi.path_open(mem, fd as u32, dirflags as u32, p as u32, len as u32, oflags as u32, base as u64, fdflags as u32, out as u32)
                })
            },
        )?;
        $l.func_wrap(m, "path_filestat_get", |mut c: $C<'_>, fd: i32, flags: i32, p: i32, len: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.path_filestat_get(mem, fd as u32, flags as u32, p as u32, len as u32, out as u32))
        })?;
        $l.func_wrap(m, "path_unlink_file", |mut c: $C<'_>, fd: i32, p: i32, len: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.path_unlink_file(mem, fd as u32, p as u32, len as u32))
        })?;
        $l.func_wrap(m, "path_create_directory", |mut c: $C<'_>, fd: i32, p: i32, len: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.path_create_directory(mem, fd as u32, p as u32, len as u32))
        })?;
        $l.func_wrap(m, "path_remove_directory", |mut c: $C<'_>, fd: i32, p: i32, len: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.path_remove_directory(mem, fd as u32, p as u32, len as u32))
        })?;
        $l.func_wrap(m, "path_rename", |mut c: $C<'_>, fd: i32, p: i32, len: i32, nfd: i32, np: i32, nlen: i32| {
            $with_memory(&mut c, |mem, s| {
                s.wasi.path_rename(mem, fd as u32, p as u32, len as u32, nfd as u32, np as u32, nlen as u32)
            })
        })?;
        $l.func_wrap(m, "path_symlink", |mut c: $C<'_>, p: i32, len: i32, fd: i32, np: i32, nlen: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.path_symlink(mem, p as u32, len as u32, fd as u32, np as u32, nlen as u32))
        })?;
        $l.func_wrap(
            m,
            "path_link",
            |mut c: $C<'_>, fd: i32, flags: i32, p: i32, len: i32, nfd: i32, np: i32, nlen: i32| {
                $with_memory(&mut c, |mem, s| {
                    s.wasi.path_link(mem, fd as u32, flags as u32, p as u32, len as u32, nfd as u32, np as u32, nlen as u32)
                })
            },
        )?;
        $l.func_wrap(m, "path_readlink", |mut c: $C<'_>, fd: i32, p: i32, len: i32, buf: i32, buf_len: i32, out: i32| {
            $with_memory(&mut c, |mem, s| {
                s.wasi.path_readlink(mem, fd as u32, p as u32, len as u32, buf as u32, buf_len as u32, out as u32)
            })
        })?;
        $l.func_wrap(
            m,
            "path_filestat_set_times",
            |mut c: $C<'_>, fd: i32, flags: i32, p: i32, len: i32, atim: i64, mtim: i64, fst: i32| {
                $with_memory(&mut c, |mem, s| {
                    s.wasi.path_filestat_set_times(mem, fd as u32, flags as u32, p as u32, len as u32, atim as u64, mtim as u64, fst as u32)
                })
            },
        )?;
        $l.func_wrap(m, "fd_filestat_set_times", |mut c: $C<'_>, fd: i32, atim: i64, mtim: i64, fst: i32| {
            let r = c.data_mut().wasi.fd_filestat_set_times(fd as u32, atim as u64, mtim as u64, fst as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "fd_renumber", |mut c: $C<'_>, from: i32, to: i32| {
            let r = c.data_mut().wasi.fd_renumber(from as u32, to as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "fd_allocate", |mut c: $C<'_>, fd: i32, _off: i64, _len: i64| {
            let r = c.data_mut().wasi.fd_allocate(fd as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "fd_advise", |mut c: $C<'_>, fd: i32, _off: i64, _len: i64, advice: i32| {
            let r = c.data_mut().wasi.fd_advise(fd as u32, advice as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "fd_fdstat_set_rights", |mut c: $C<'_>, fd: i32, base: i64, inheriting: i64| {
            let r = c.data_mut().wasi.fd_fdstat_set_rights(fd as u32, base as u64, inheriting as u64);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "proc_raise", |mut c: $C<'_>, sig: i32| {
            let r = c.data_mut().wasi.proc_raise(sig as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "sock_accept", |mut c: $C<'_>, fd: i32, flags: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.sock_accept(mem, fd as u32, flags as u32, out as u32))
        })?;
        $l.func_wrap(m, "sock_recv", |mut c: $C<'_>, fd: i32, iovs: i32, n: i32, flags: i32, out_len: i32, out_flags: i32| {
            $with_memory(&mut c, |mem, s| {
                s.wasi.sock_recv(mem, fd as u32, iovs as u32, n as u32, flags as u32, out_len as u32, out_flags as u32)
            })
        })?;
        $l.func_wrap(m, "sock_send", |mut c: $C<'_>, fd: i32, iovs: i32, n: i32, flags: i32, out: i32| {
            $with_memory(&mut c, |mem, s| s.wasi.sock_send(mem, fd as u32, iovs as u32, n as u32, flags as u32, out as u32))
        })?;
        $l.func_wrap(m, "sock_shutdown", |mut c: $C<'_>, fd: i32, how: i32| {
            let r = c.data_mut().wasi.sock_shutdown(fd as u32, how as u32);
            $finish(c.data_mut(), r)
        })?;
        $l.func_wrap(m, "poll_oneoff", |mut c: $C<'_>, subs: i32, events: i32, n: i32, nevents: i32| {
            $with_memory(&mut c, |mem, s| {
                s.wasi.poll_oneoff(&mut *s.host, mem, subs as u32, events as u32, n as u32, nevents as u32)
            })
        })?;
        $l.func_wrap(m, "proc_exit", |mut c: $C<'_>, code: i32| -> Result<(), $Error> {
            let r = c.data_mut().wasi.proc_exit(code as u32);
            $finish(c.data_mut(), r).map(|_| ())
        })?;
        $l.func_wrap(m, "sched_yield", |_c: $C<'_>| -> i32 { 0 })?;
    }};
}
#[cfg(any(feature = "interp", test))]
pub(crate) use bind_wasi;

#[cfg(feature = "runtime")]
type C<'a> = Caller<'a, WorkloadState>;

/// A linker with every function of [`wasi::SUPPORTED`].
#[cfg(feature = "runtime")]
pub fn linker(engine: &Engine) -> Result<Linker<WorkloadState>, Error> {
    let mut l = Linker::new(engine);
    bind_wasi!(l, C, Error, with_memory, finish);
    Ok(l)
}
