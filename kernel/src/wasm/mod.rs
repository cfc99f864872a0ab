//! Workloads on the node: WebAssembly modules run by an embedded no_std wasmtime 48
//! under hard limits, with WASI preview 1 from the `workloads` crate.
//!
//! - Engines ([`engines`]): native x86-64 (the kernel's code-memory and CPUID hooks from
//!   [`platform`]) and Pulley (wasmtime's interpreter). The kernel has no compiler:
//!   modules arrive with a bundle precompiled on the host by `wasm-precompile` with the
//!   same settings; a module runs natively when its native code deserializes (CPU
//!   features, settings and module hash match) and on Pulley otherwise.
//! - Time slicing: every workload runs on its own [`fiber`]; the timer tick bumps the
//!   engines' epoch, and the epoch callback charges CPU time, checks the CPU, wall-clock
//!   and stop limits, and switches back to the round-robin scheduler
//!   ([`Manager::run_round`]; the node's scheduler task in [`service`] runs one round
//!   at a time between the other tasks).
//! - Blocking calls (socket waits, `poll_oneoff`) park the fiber (`sockets::park`) until
//!   its deadline or a change on the overlay's sockets; limits are checked on the way.
//! - Memory cap: the store's `ResourceLimiter`; log cap: the WASI log. Any limit ends
//!   the workload with a recorded [`StopReason`]; the others carry on.
//! - Per workload, optionally: a persistent `/data` file area ([`files`]) and listening
//!   sockets on the overlay (`sockets`).
//! - Output: the node keeps the last lines of each workload's log, byte-bounded
//!   (`workloads::logstore::KeptLog`), and prints them through the bounded,
//!   rate-limited [`console_log`] queue. A removed workload is dropped with everything
//!   it held ([`Manager::remove`]).
//!
//! The node-wide service (deploy, status, logs, stop, remove, restart at boot) is in
//! [`service`], its admission policy in [`admission`]; what survives a reboot, in
//! [`persist`].

pub mod admission;
pub mod console_log;
pub mod fiber;
pub mod files;
pub mod persist;
pub mod platform;
mod selftest;
pub mod service;
mod sockets;

pub use selftest::{deploy_case, restart_case, run as selftest, serve_case};

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use spin::Once;
use wasmtime::{Engine, Linker, Module, Store, UpdateDeadline};
use workloads::artifact::{self, Backend};
use workloads::runtime::{self, StopReason, WorkloadState};
use workloads::wasi::FileArea;
use workloads::wasi::HostServices;
use workloads::{Limits, Manifest, SignedManifest};

use crate::arch::x86_64::{idt, time};

/// One engine and its WASI linker.
pub struct Runner {
    pub engine: Engine,
    pub linker: Linker<WorkloadState>,
}

pub struct Engines {
    /// `None` if the native engine could not be created.
    pub native: Option<Runner>,
    pub pulley: Runner,
}

// SAFETY: wasmtime runs on the boot CPU only; the tick handler touches only the
// engines' atomic epoch counters.
unsafe impl Sync for Engines {}
unsafe impl Send for Engines {}

static ENGINES: Once<Result<Engines, String>> = Once::new();

fn runner(backend: Backend) -> Result<Runner, String> {
    let mut c = runtime::base_config(backend);
    c.with_custom_code_memory(Some(platform::code_memory()));
    // SAFETY: the detector reads CPUID (and XCR0) and says false or unknown unless the
    // CPU and the kernel's control registers allow the instructions.
    unsafe { c.detect_host_feature(platform::detect_host_feature) };
    let engine = Engine::new(&c).map_err(|e| format!("{} engine: {e}", backend.name()))?;
    let linker = runtime::linker(&engine).map_err(|e| format!("{} linker: {e}", backend.name()))?;
    Ok(Runner { engine, linker })
}

fn tick(vector: u8) {
    time::on_tick(vector);
    if let Some(Ok(e)) = ENGINES.get() {
        e.pulley.engine.increment_epoch();
        if let Some(n) = &e.native {
            n.engine.increment_epoch();
        }
    }
}

/// The engines, created on first use (which also hooks the timer tick).
pub fn engines() -> Result<&'static Engines, String> {
    let e = ENGINES.call_once(|| {
        let native = match runner(Backend::NativeX86_64) {
            Ok(r) => Some(r),
            Err(e) => {
                log::warn!("wasm: no native engine ({e}); workloads run on Pulley");
                None
            }
        };
        let pulley = runner(Backend::Pulley64)?;
        Ok(Engines { native, pulley })
    });
    let e = e.as_ref().map_err(Clone::clone)?;
    idt::register(time::TIMER_VECTOR, tick);
    Ok(e)
}

/// Clock, entropy and timed waits for a workload.
struct KernelHost {
    slot: Arc<Mutex<Slot>>,
    /// The workload has sockets: a wait must also look at them every poll interval.
    has_sockets: bool,
}

impl HostServices for KernelHost {
    fn wait_until(&mut self, monotonic_deadline_ns: Option<u64>) -> Result<(), workloads::wasi::Interrupt> {
        // Sleep to the deadline; a workload with sockets is also woken by their changes,
        // and looks again at least every fallback poll interval.
        let wake_at = match (self.has_sockets, monotonic_deadline_ns) {
            (true, Some(deadline)) => Some(deadline.min(time::since_boot_ns() + BLOCKED_POLL_NS)),
            (_, deadline) => deadline,
        };
        sockets::park(&self.slot, wake_at)
    }
    fn realtime_ns(&mut self) -> u64 {
        let (s, ns) = time::unix_time();
        s.saturating_mul(1_000_000_000).saturating_add(u64::from(ns))
    }
    fn monotonic_ns(&mut self) -> u64 {
        time::since_boot_ns()
    }
    fn random(&mut self, buf: &mut [u8]) {
        crate::entropy::fill(buf);
    }
}

/// Where a workload is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ready,
    Running,
    Done(StopReason),
}

/// Shared between the scheduler and the workload's fiber.
struct Slot {
    name: String,
    limits: Limits,
    status: Status,
    /// The last lines of its output, byte-bounded ([`console_log::kept_log_bytes`]).
    kept: workloads::logstore::KeptLog,
    /// Names this workload in the console queue (unique per boot).
    console_source: u64,
    cpu_ns: u64,
    slice_start_ns: u64,
    started_ns: u64,
    finished_ns: u64,
    instantiate_us: u64,
    run_us: u64,
    stop_requested: bool,
    /// Parked in a blocking call (socket or `poll_oneoff`, see `sockets::park`).
    blocked: bool,
    /// While parked in a timed wait without sockets: when to look again.
    wake_at_ns: Option<u64>,
}

/// The limit `slot` has passed at `now`, if any (or the owner's stop).
fn limit_reached(s: &Slot, now: u64) -> Option<StopReason> {
    let cpu_ns = s.cpu_ns + now.saturating_sub(s.slice_start_ns);
    if s.stop_requested {
        Some(StopReason::Stopped)
    } else if cpu_ns > s.limits.cpu_ms.saturating_mul(1_000_000) {
        Some(StopReason::CpuLimit { used_ms: cpu_ns / 1_000_000 })
    } else if now.saturating_sub(s.started_ns) > s.limits.wall_ms.saturating_mul(1_000_000) {
        Some(StopReason::WallDeadline)
    } else {
        None
    }
}

/// What a workload gets besides its module: its file area, if the node keeps one.
#[derive(Default)]
pub struct Extras {
    pub files: Option<Box<dyn FileArea + Send>>,
}

struct Workload {
    slot: Arc<Mutex<Slot>>,
    fiber: Box<fiber::Fiber>,
    backend: Backend,
    /// Removed by its owner: dropped (stack, slot, kept log) once its fiber finished.
    removed: bool,
}

/// What [`Manager::info`] reports.
#[derive(Debug, Clone)]
pub struct Info {
    pub status: Status,
    pub backend: Backend,
    pub cpu_ms: u64,
    pub instantiate_us: u64,
    pub run_us: u64,
    pub finished_ns: u64,
}

/// What [`Manager::run_round`] found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Round {
    pub unfinished: usize,
    pub blocked: usize,
    /// When the earliest parked workload wants to look again.
    pub next_wake_ns: Option<u64>,
}

/// How often a workload parked on sockets looks again when nothing else runs and the
/// overlay's sockets did not change (a fallback: changes wake the scheduler at once).
pub const BLOCKED_POLL_NS: u64 = 50_000_000;

/// Deploys, schedules and reports on workloads. Indices are stable while a workload
/// is kept; a removed workload's index is free again once it is dropped.
#[derive(Default)]
pub struct Manager {
    workloads: Vec<Option<Workload>>,
}

/// A precompiled module and which engine it belongs to.
fn load_code(engines: &'static Engines, name: &str, manifest: &Manifest, bundle: &[u8]) -> Result<(Module, &'static Runner, Backend), String> {
    let bundle = artifact::parse(bundle, Some(&manifest.module_blake3))
        .map_err(|e| format!("no usable precompiled code ({e}); the kernel has no compiler"))?;
    let mut why = String::new();
    for (backend, code) in &bundle.sections {
        let runner = match backend {
            Backend::NativeX86_64 => match &engines.native {
                Some(r) => r,
                None => continue,
            },
            Backend::Pulley64 => &engines.pulley,
        };
        let t0 = time::since_boot_us();
        // SAFETY: the bundle is bound to the module hash the owner signed; wasmtime
        // checks its header (engine settings, target, CPU features) before using it.
        match unsafe { Module::deserialize(&runner.engine, code) } {
            Ok(m) => {
                log::info!("workload {name}: loaded {} code ({} KiB) in {} us", backend.name(), code.len() / 1024,
                    time::since_boot_us() - t0);
                return Ok((m, runner, *backend));
            }
            Err(e) => {
                log::warn!("workload {name}: {} code not usable here: {e:#}", backend.name());
                why = format!("{e}");
            }
        }
    }
    Err(format!("no precompiled code loads on this node ({why})"))
}

impl Manager {
    pub fn new() -> Self {
        Manager::default()
    }

    /// Verifies a signed manifest and its module and prepares the workload; it runs in
    /// [`Manager::run`]. Errors are the reason it was rejected.
    pub fn deploy(&mut self, signed_manifest: &[u8], module: &[u8], bundle: &[u8]) -> Result<usize, String> {
        self.deploy_with(signed_manifest, module, bundle, Extras::default())
    }

    /// [`Manager::deploy`] with a file area; listeners for the manifest's `listen`
    /// ports are bound on the overlay here (a port in use refuses the deploy).
    pub fn deploy_with(&mut self, signed_manifest: &[u8], module: &[u8], bundle: &[u8], extras: Extras) -> Result<usize, String> {
        let engines = engines()?;
        let manifest = SignedManifest::from_bytes(signed_manifest)
            .and_then(|s| s.verify())
            .map_err(|e| format!("{e}"))?;
        let name = manifest.name.clone();
        let imports = workloads::module::check_structure(module)?;
        workloads::module::check_imports(&imports)?;
        manifest.check_module(module).map_err(|e| format!("{e}"))?;
        let (module, runner, backend) = load_code(engines, &name, &manifest, bundle)?;
        runtime::check_imports(&module)?;
        let slot = Arc::new(Mutex::new(Slot {
            name: name.clone(),
            limits: manifest.limits,
            status: Status::Ready,
            kept: workloads::logstore::KeptLog::new(console_log::kept_log_bytes(&manifest.limits)),
            console_source: console_log::new_source(),
            cpu_ns: 0,
            slice_start_ns: 0,
            started_ns: 0,
            finished_ns: 0,
            instantiate_us: 0,
            run_us: 0,
            stop_requested: false,
            blocked: false,
            wake_at_ns: None,
        }));
        let sockets = if manifest.listen.is_empty() {
            None
        } else {
            let bound = sockets::WorkloadSockets::bind(&manifest.listen, Arc::clone(&slot))?;
            log::info!("workload {name}: listening on overlay tcp {}", sockets::describe(&manifest.listen));
            Some(bound)
        };
        let body_slot = Arc::clone(&slot);
        let fiber = fiber::Fiber::new(Box::new(move || run_workload(runner, module, manifest, body_slot, extras, sockets)));
        let workload = Workload { slot, fiber, backend, removed: false };
        match self.workloads.iter().position(Option::is_none) {
            Some(free) => {
                self.workloads[free] = Some(workload);
                Ok(free)
            }
            None => {
                self.workloads.push(Some(workload));
                Ok(self.workloads.len() - 1)
            }
        }
    }

    fn get(&self, id: usize) -> Option<&Workload> {
        self.workloads.get(id).and_then(Option::as_ref)
    }

    /// Forgets workload `id`: at once if it never ran or has finished, else it is asked
    /// to stop and dropped when its fiber finishes (a fiber is never dropped suspended:
    /// its stack holds the engine's store). Everything it held goes back to the heap:
    /// stack, store and linear memory, logs, sockets.
    pub fn remove(&mut self, id: usize) {
        let Some(entry) = self.workloads.get_mut(id) else { return };
        let Some(w) = entry.as_mut() else { return };
        let unstarted = w.slot.lock().status == Status::Ready;
        if w.fiber.is_done() || unstarted {
            *entry = None;
        } else {
            w.removed = true;
            w.slot.lock().stop_requested = true;
        }
        self.trim();
    }

    /// Gives back the tail of free entries.
    fn trim(&mut self) {
        while matches!(self.workloads.last(), Some(None)) {
            self.workloads.pop();
        }
        if self.workloads.is_empty() {
            self.workloads = Vec::new();
        }
    }

    /// Number of workloads kept (running, finished, or removed and still finishing).
    pub fn kept(&self) -> usize {
        self.workloads.iter().flatten().count()
    }

    /// Like [`Manager::deploy`], with the module taken from an OCI image layout tar.
    pub fn deploy_oci(&mut self, signed_manifest: &[u8], image_tar: &[u8], bundle: &[u8]) -> Result<usize, String> {
        let image = workloads::oci::wasm_from_layout(image_tar).map_err(|e| format!("OCI image: {e}"))?;
        log::info!("oci: image manifest {}, layer {} ({}, {} bytes)", image.manifest_digest, image.layer_digest,
            image.layer_media_type, image.module.len());
        self.deploy(signed_manifest, &image.module, bundle)
    }

    pub fn info(&self, id: usize) -> Option<Info> {
        let w = self.get(id)?;
        let s = w.slot.lock();
        Some(Info {
            status: s.status.clone(),
            backend: w.backend,
            cpu_ms: s.cpu_ns / 1_000_000,
            instantiate_us: s.instantiate_us,
            run_us: s.run_us,
            finished_ns: s.finished_ns,
        })
    }

    /// The first lines kept of `id`, at most [`console_log::LOG_READ_BYTES_MAX`] of
    /// them (for self-tests; the control service reads with [`Manager::read_log`]).
    pub fn logs(&self, id: usize) -> Vec<String> {
        self.read_log(id, 0, usize::MAX, console_log::LOG_READ_BYTES_MAX).map(|r| r.lines).unwrap_or_default()
    }

    /// Lines of `id` from `from_line` on, at most `max_lines` and `max_bytes` (copied
    /// only that much), as [`workloads::logstore::KeptLog::read`].
    pub fn read_log(&self, id: usize, from_line: u64, max_lines: usize, max_bytes: usize) -> Option<workloads::logstore::LogRead> {
        self.get(id).map(|w| w.slot.lock().kept.read(from_line, max_lines, max_bytes))
    }

    /// Drops a workload that has not run yet (a deploy that could not be completed);
    /// other ids stay valid.
    pub fn discard_unstarted(&mut self, id: usize) {
        if self.get(id).is_some_and(|w| w.slot.lock().status == Status::Ready) {
            self.remove(id);
        }
    }

    /// Asks a workload to stop; it does at its next time-slice check.
    pub fn stop(&mut self, id: usize) {
        if let Some(w) = self.get(id) {
            w.slot.lock().stop_requested = true;
        }
    }

    /// Runs every unfinished workload round-robin, one time slice each, until all are
    /// done, then prints what the console queue still holds.
    pub fn run(&mut self) {
        while self.run_round().unfinished > 0 {}
        console_log::flush();
    }

    /// Gives every unfinished workload one time slice (at most one timer tick), prints
    /// new log lines as `[name] line`, and returns how many are still unfinished and
    /// how many of those are parked in a blocking socket call.
    pub fn run_round(&mut self) -> Round {
        let mut round = Round::default();
        for entry in &mut self.workloads {
            let Some(w) = entry.as_mut() else { continue };
            if w.fiber.is_done() {
                if w.removed {
                    *entry = None;
                }
                continue;
            }
            let now = time::since_boot_ns();
            {
                let mut s = w.slot.lock();
                if s.status == Status::Ready {
                    s.status = Status::Running;
                    s.started_ns = now;
                }
                s.slice_start_ns = now;
            }
            w.fiber.resume();
            let mut s = w.slot.lock();
            s.cpu_ns += time::since_boot_ns() - s.slice_start_ns;
            if let Status::Done(reason) = &s.status {
                log::info!("workload {}: {reason} (cpu {} ms)", s.name, s.cpu_ns / 1_000_000);
            } else {
                round.unfinished += 1;
                if s.blocked {
                    round.blocked += 1;
                    let wake = s.wake_at_ns.unwrap_or(now + BLOCKED_POLL_NS);
                    round.next_wake_ns = Some(round.next_wake_ns.map_or(wake, |w| w.min(wake)));
                }
            }
            if w.removed && w.fiber.is_done() {
                let name = core::mem::take(&mut s.name);
                drop(s);
                *entry = None;
                log::info!("workload {name}: dropped after its removal; kernel heap {} KiB in use",
                    crate::mm::heap::allocated_bytes() >> 10);
            }
        }
        self.trim();
        // Workload output reaches the console here, at the queue's rate.
        if let Some(next) = console_log::drain(time::since_boot_ns()) {
            round.next_wake_ns = Some(round.next_wake_ns.map_or(next, |w| w.min(next)));
        }
        round
    }
}

/// Moves the workload's complete lines (cleaned by its log) to the slot's kept log
/// and the console queue, a bounded batch at a time so the copy in flight stays small.
fn drain_log(state: &mut WorkloadState, slot: &mut Slot) {
    loop {
        let batch = state.wasi.log.take_lines_max(console_log::DRAIN_BATCH_BYTES);
        if batch.is_empty() {
            break;
        }
        for (stream, line) in batch {
            let line = workloads::logstore::display_line(stream, &line);
            console_log::push(slot.console_source, &slot.name, &line);
            slot.kept.push(&line);
        }
    }
}

/// The body of a workload's fiber.
fn run_workload(runner: &'static Runner, module: Module, manifest: Manifest, slot: Arc<Mutex<Slot>>, extras: Extras,
    sockets: Option<sockets::WorkloadSockets>) {
    let host = KernelHost { slot: Arc::clone(&slot), has_sockets: sockets.is_some() };
    let mut state = WorkloadState::new(&manifest.args, &manifest.env, &manifest.limits, Box::new(host));
    if let Some(files) = extras.files {
        state = state.with_files(files);
    }
    if let Some(sockets) = sockets {
        state = state.with_sockets(Box::new(sockets), &manifest.listen);
    }
    let mut store = Store::new(&runner.engine, state);
    store.limiter(|s| s);
    store.set_epoch_deadline(1);
    let cb_slot = Arc::clone(&slot);
    store.epoch_deadline_callback(move |mut ctx| {
        let now = time::since_boot_ns();
        {
            let mut s = cb_slot.lock();
            drain_log(ctx.data_mut(), &mut s);
            if let Some(stop) = limit_reached(&s, now) {
                ctx.data_mut().stop = Some(stop);
                return Err(wasmtime::Error::msg("workload limit"));
            }
        }
        fiber::suspend();
        Ok(UpdateDeadline::Continue(1))
    });
    let t0 = time::since_boot_us();
    let instance = runner.linker.instantiate(&mut store, &module);
    let t1 = time::since_boot_us();
    let result = instance.and_then(|i| i.get_typed_func::<(), ()>(&mut store, "_start")?.call(&mut store, ()));
    let t2 = time::since_boot_us();
    let reason = store.data_mut().classify(result);
    store.data_mut().wasi.log.flush();
    let mut s = slot.lock();
    drain_log(store.data_mut(), &mut s);
    s.instantiate_us = t1 - t0;
    s.run_us = t2 - t1;
    s.finished_ns = time::since_boot_ns();
    s.status = Status::Done(reason);
}
