//! Workloads on the node: WebAssembly modules run under hard limits, with WASI
//! preview 1 from the `workloads` crate, by one of two engines.
//!
//! - Engines ([`engines`]): the wasmi interpreter (no_std; it takes the wasm itself and
//!   validates it) runs every module that comes without native code, which is what a
//!   user can deploy out of the box. An embedded no_std wasmtime 48 runs native x86-64
//!   code (the kernel's code-memory and CPUID hooks from [`platform`]) only when the
//!   bundle verifies as attested by a compiler the node trusts (`gridos.compilers`,
//!   `workloads::artifact::verify`); the kernel has no compiler and never loads code a
//!   user made. A non-empty bundle that does not verify refuses the deploy; it never
//!   falls back silently. Which engine runs a workload is logged and in [`Info`].
//! - Time slicing: every workload runs on its own [`fiber`]. Native code: the timer
//!   tick bumps the engine's epoch, and the epoch callback charges CPU time, checks the
//!   CPU, wall-clock and stop limits, and switches back to the round-robin scheduler.
//!   wasmi: `_start` runs in fuel chunks ([`INTERP_CHECK_FUEL`]) through resumable
//!   calls; after each, if a tick has come since the slice began, it does the same as
//!   the epoch callback. The scheduler
//!   is [`Manager::run_round`]; the node's scheduler task in [`service`] runs one round
//!   at a time between the other tasks. Slices go to the CPUs in service
//!   (`smp::in_service_cpus`); if a CPU is taken out of service in the middle of a
//!   slice (it stopped answering IPIs), that workload ends `Trapped` with the reason,
//!   its fiber (stack, store) is leaked rather than freed or resumed, and the other
//!   workloads move to the remaining CPUs.
//! - Blocking calls (socket waits, `poll_oneoff`) park the fiber (`sockets::park`) until
//!   its deadline or a change on the overlay's sockets; limits are checked on the way.
//! - Memory cap: the store's `ResourceLimiter` (both engines; one memory per module);
//!   log cap: the WASI log. Any limit ends the workload with a recorded [`StopReason`];
//!   the others carry on.
//! - Per workload, optionally: a persistent `/data` file area ([`files`]) and listening
//!   sockets on the overlay (`sockets`).
//! - Output: the node keeps the last lines of each workload's log, byte-bounded
//!   (`workloads::logstore::KeptLog`), and prints them through the bounded,
//!   rate-limited [`console_log`] queue. A removed workload is dropped with everything
//!   it held ([`Manager::remove`]).
//!
//! The node-wide service (deploy, status, logs, stop, remove, restart at boot) is in
//! [`service`], its admission policy in [`admission`]; what survives a reboot, in
//! [`persist`]. A restart at boot loads its code through the same path as a deploy, so
//! cached native code is verified again.

pub mod admission;
pub mod console_log;
pub mod fiber;
pub mod files;
pub mod persist;
pub mod platform;
mod selftest;
pub mod service;
mod sockets;

pub use selftest::{deploy_case, restart_case, run as selftest, serve_case, spread_case, wedge_case};

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use spin::Once;
use wasmtime::{Engine, Linker, Module, Store, UpdateDeadline};
use workloads::artifact::{self, Backend};
use workloads::runtime::interp::{self, wasmi};
use workloads::runtime::{self, StopReason, WorkloadState};
use workloads::wasi::FileArea;
use workloads::wasi::HostServices;
use workloads::{Limits, Manifest, SignedManifest};

use crate::arch::x86_64::{idt, smp, time};

/// The native engine (wasmtime) and its WASI linker.
pub struct Runner {
    pub engine: Engine,
    pub linker: Linker<WorkloadState>,
}

/// An interpreter (wasmi) engine and its WASI linker. Every workload gets its own:
/// a wasmi engine keeps the code of every module it translated until the engine
/// itself is dropped (its code map is append-only), so one shared engine would grow
/// with every deploy and a deploy-remove loop would exhaust the heap.
pub struct Interp {
    pub engine: wasmi::Engine,
    pub linker: wasmi::Linker<WorkloadState>,
}

pub struct Engines {
    /// `None` if the native engine could not be created (then only wasmi runs).
    pub native: Option<Runner>,
}

// SAFETY: a workload's fiber runs on one CPU at a time (`Manager::run_round` hands a
// slice to one CPU and waits for it; fibers may change CPU between slices, with their
// wasmtime TLS), and the boot CPU's tick handler touches only the native engine's
// atomic epoch counter, which ends slices on every CPU. wasmtime's Engine is Sync. wasmi's
// engine guards its own shared state (type registry, stack pool) with its locks, none
// of which is held while a host function runs (where a fiber may switch), and the
// linkers are not changed after creation.
unsafe impl Sync for Engines {}
unsafe impl Send for Engines {}

static ENGINES: Once<Result<Engines, String>> = Once::new();

/// Fuel wasmi runs between two looks at the clock. wasmi charges about one unit per
/// executed instruction; under QEMU TCG on these machines the `workloads` self-test's
/// endless loop ran 300,000 units in about 2.1 ms (243 of them in 507 ms of CPU), so a
/// look comes every 1-2 ms there, and far more often on real hardware (each costs a
/// return from and a resume of the interpreter, a few microseconds). A slice ends at
/// the first timer tick after it began, as the native engine's epoch callback does, so
/// workloads share the CPU by time whatever their instructions cost (fixed fuel slices
/// gave a loop of cheap instructions more time than a checksum of dearer ones).
pub const INTERP_CHECK_FUEL: u64 = 250_000;

fn native_runner() -> Result<Runner, String> {
    let mut c = runtime::base_config();
    c.with_custom_code_memory(Some(platform::code_memory()));
    // SAFETY: the detector reads CPUID (and XCR0) and says false or unknown unless the
    // CPU and the kernel's control registers allow the instructions.
    unsafe { c.detect_host_feature(platform::detect_host_feature) };
    let engine = Engine::new(&c).map_err(|e| format!("native engine: {e}"))?;
    let linker = runtime::linker(&engine).map_err(|e| format!("native linker: {e}"))?;
    Ok(Runner { engine, linker })
}

fn interp() -> Result<Interp, String> {
    let engine = interp::engine();
    let linker = interp::linker(&engine).map_err(|e| format!("wasmi linker: {e}"))?;
    Ok(Interp { engine, linker })
}

fn tick(vector: u8) {
    time::on_tick(vector);
    if let Some(Ok(Engines { native: Some(n), .. })) = ENGINES.get() {
        n.engine.increment_epoch();
    }
}

/// The engines, created on first use (which also hooks the timer tick).
pub fn engines() -> Result<&'static Engines, String> {
    let e = ENGINES.call_once(|| {
        let native = match native_runner() {
            Ok(r) => Some(r),
            Err(e) => {
                log::warn!("wasm: no native engine ({e}); every workload runs on wasmi");
                None
            }
        };
        Ok(Engines { native })
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
    fn memory_granted(&mut self, bytes: u64) {
        let mut s = self.slot.lock();
        s.memory_bytes = bytes;
        s.memory_peak_bytes = s.memory_peak_bytes.max(bytes);
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
    /// Every byte it wrote to stdout and stderr, as written (`logs --raw`): at most its
    /// log cap in all, since its log refuses writes past the cap, and charged for in
    /// admission (`workloads::admission::memory_charge_bytes`).
    raw: [Vec<u8>; 2],
    /// Names this workload in the console queue (unique per boot).
    console_source: u64,
    cpu_ns: u64,
    slice_start_ns: u64,
    started_ns: u64,
    finished_ns: u64,
    instantiate_us: u64,
    run_us: u64,
    /// Time slices used up (epoch callbacks or wasmi ticks).
    slices: u64,
    stop_requested: bool,
    /// Parked in a blocking call (socket or `poll_oneoff`, see `sockets::park`).
    blocked: bool,
    /// While parked in a timed wait without sockets: when to look again.
    wake_at_ns: Option<u64>,
    /// Bytes of linear memory the workload holds now (0 once it has finished and its
    /// store is dropped), as the memory limiter granted them.
    memory_bytes: u64,
    /// The most it held.
    memory_peak_bytes: u64,
    /// The CPUs that ran its slices (bit i = CPU index i, as in `smp::PerCpu::index`).
    cpus_mask: u64,
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

/// What a workload gets besides its module: its file area, if the node keeps one, and
/// what its standard input reads (empty by default).
#[derive(Default)]
pub struct Extras {
    pub files: Option<Box<dyn FileArea + Send>>,
    pub stdin: Vec<u8>,
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
    /// Time slices used up (epoch callbacks or wasmi ticks).
    pub slices: u64,
    /// Bytes of log kept (charged to the workload).
    pub log_bytes: u64,
    /// Log lines written (the next line's number).
    pub log_lines: u64,
    /// Linear memory held now (0 once finished), the most it held, and its cap.
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub memory_limit_bytes: u64,
    /// The CPUs that ran its slices (bit i = CPU index i).
    pub cpus_mask: u64,
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

/// A workload's code, ready for its engine.
enum Code {
    Native(&'static Runner, Module),
    Interp(Interp, wasmi::Module),
}

impl Code {
    fn backend(&self) -> Backend {
        match self {
            Code::Native(..) => Backend::NativeX86_64,
            Code::Interp(..) => Backend::Wasmi,
        }
    }
}

/// The code a workload runs: with an empty bundle, `wasm` in wasmi (validated by
/// wasmi itself); else the bundle's native code, only if it verifies as attested by a
/// trusted compiler for exactly this module and engine (a bundle that does not verify
/// refuses the deploy). Verified code that this node cannot load (no native engine, a
/// CPU feature missing) runs in wasmi instead, with a warning. Also the restart path.
fn load_code(engines: &'static Engines, name: &str, manifest: &Manifest, wasm: &[u8], bundle: &[u8]) -> Result<Code, String> {
    let t0 = time::since_boot_us();
    if !bundle.is_empty() {
        let attested = artifact::verify(bundle, &manifest.module_blake3, &artifact::engine_fingerprint(),
            crate::config::trusted_compilers())
            .map_err(|e| format!("native code refused: {e}"))?;
        let by = crate::overlay::hex(&attested.compiler_key[..8]);
        match &engines.native {
            Some(native) => {
                // SAFETY: `verify` checked that a compiler key the node's configuration
                // trusts signed (module hash, engine fingerprint, code hash) for this
                // manifest's module and this engine's settings, and that `attested.code`
                // hashes to the signed code hash: these bytes are what a trusted compiler
                // produced for this engine. wasmtime also checks its own header (settings,
                // target, CPU features) before using them.
                match unsafe { Module::deserialize(&native.engine, attested.code) } {
                    Ok(module) => {
                        runtime::check_imports(&module)?;
                        log::info!("workload {name}: running on native x86_64 (attested by {by}), {} KiB loaded in {} us",
                            attested.code.len() / 1024, time::since_boot_us() - t0);
                        return Ok(Code::Native(native, module));
                    }
                    Err(e) => log::warn!("workload {name}: native code attested by {by} does not load here ({e}); using wasmi"),
                }
            }
            None => log::warn!("workload {name}: native code attested by {by}, but no native engine; using wasmi"),
        }
    }
    let fresh = interp()?;
    let module = interp::load(&fresh.engine, wasm)?;
    log::info!("workload {name}: running on wasmi (validated and translated in {} us)", time::since_boot_us() - t0);
    Ok(Code::Interp(fresh, module))
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
        let code = load_code(engines, &name, &manifest, module, bundle)?;
        let backend = code.backend();
        let slot = Arc::new(Mutex::new(Slot {
            name: name.clone(),
            limits: manifest.limits,
            status: Status::Ready,
            kept: workloads::logstore::KeptLog::new(console_log::kept_log_bytes(&manifest.limits)),
            raw: [Vec::new(), Vec::new()],
            console_source: console_log::new_source(),
            cpu_ns: 0,
            slice_start_ns: 0,
            started_ns: 0,
            finished_ns: 0,
            instantiate_us: 0,
            run_us: 0,
            slices: 0,
            stop_requested: false,
            blocked: false,
            wake_at_ns: None,
            memory_bytes: 0,
            memory_peak_bytes: 0,
            cpus_mask: 0,
        }));
        let sockets = if manifest.listen.is_empty() {
            None
        } else {
            let bound = sockets::WorkloadSockets::bind(&manifest.listen, Arc::clone(&slot))?;
            log::info!("workload {name}: listening on overlay tcp {}", sockets::describe(&manifest.listen));
            Some(bound)
        };
        let body_slot = Arc::clone(&slot);
        let fiber = fiber::Fiber::new(Box::new(move || run_workload(code, manifest, body_slot, extras, sockets)));
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
            slices: s.slices,
            log_bytes: s.kept.charged_bytes() as u64,
            log_lines: s.kept.end_line(),
            memory_bytes: s.memory_bytes,
            memory_peak_bytes: s.memory_peak_bytes,
            memory_limit_bytes: s.limits.memory_bytes,
            cpus_mask: s.cpus_mask,
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

    /// Raw bytes `offset..` of `id`'s stdout or stderr (at most `max_bytes`), the
    /// stream's length so far, and whether the run has ended.
    pub fn read_raw(&self, id: usize, stream: workloads::log::Stream, offset: u64, max_bytes: usize) -> Option<(Vec<u8>, u64, bool)> {
        let w = self.get(id)?;
        let s = w.slot.lock();
        let bytes = &s.raw[raw_index(stream)];
        let from = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let to = from.saturating_add(max_bytes).min(bytes.len());
        Some((bytes[from..to].to_vec(), bytes.len() as u64, matches!(s.status, Status::Done(_))))
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
        // The unfinished workloads, in batches of one per CPU: the application
        // processors take one slice each, the boot CPU the last, then it waits for them.
        let mut runnable: Vec<usize> = Vec::new();
        for (i, entry) in self.workloads.iter_mut().enumerate() {
            let Some(w) = entry.as_mut() else { continue };
            if w.fiber.is_done() {
                if w.removed {
                    *entry = None;
                }
                continue;
            }
            runnable.push(i);
        }
        // Each workload has a home CPU (its table index modulo the CPUs taking
        // slices), so it keeps running there; a batch holds at most one per CPU. Only
        // CPUs in service take slices: a workload whose home CPU was taken out of
        // service moves to another at its next slice.
        let cpus = slice_cpus();
        let mut homes: Vec<Vec<usize>> = alloc::vec![Vec::new(); cpus.len()];
        for &i in &runnable {
            homes[i % cpus.len()].push(i);
        }
        let batches = homes.iter().map(Vec::len).max().unwrap_or(0);
        for b in 0..batches {
            // Application processors' slices first, the boot CPU's (position 0) last.
            let batch: Vec<(usize, usize)> = (1..cpus.len())
                .chain(core::iter::once(0))
                .filter_map(|p| homes[p].get(b).map(|&i| (cpus[p], i)))
                .collect();
            // Per workload of the batch: the CPU that ran its slice, when it ended, and
            // whether that CPU was lost in the middle of it.
            let mut ran: Vec<(usize, u64, bool)> = Vec::with_capacity(batch.len());
            for &(home, i) in &batch {
                let Some(w) = self.workloads[i].as_mut() else {
                    ran.push((0, 0, false));
                    continue;
                };
                let now = time::since_boot_ns();
                {
                    let mut s = w.slot.lock();
                    if s.status == Status::Ready {
                        s.status = Status::Running;
                        s.started_ns = now;
                    }
                    s.slice_start_ns = now;
                }
                let fiber = &mut *w.fiber as *mut fiber::Fiber as u64;
                if home != 0 && smp::run_on(home, resume_fiber_job, fiber).is_ok() {
                    ran.push((home, 0, false));
                } else {
                    w.fiber.resume();
                    ran.push((0, time::since_boot_ns(), false));
                }
            }
            // The boot CPU waits for the slices it handed out (each ends at the next
            // timer tick, as its own did), so no fiber is touched by two CPUs at once.
            // The wait is bounded: a CPU that stops answering is taken out of service.
            for (cpu, end_ns, lost) in ran.iter_mut().filter(|(cpu, _, _)| *cpu != 0) {
                *end_ns = match smp::wait_result(*cpu) {
                    Ok(end_ns) => end_ns,
                    Err(smp::WaitError::OutOfService) => {
                        *lost = true;
                        time::since_boot_ns()
                    }
                    Err(smp::WaitError::NoJob) => time::since_boot_ns(),
                };
            }
            for (&(_, i), &(cpu, end_ns, lost)) in batch.iter().zip(&ran) {
                let entry = &mut self.workloads[i];
                let Some(w) = entry.as_mut() else { continue };
                if lost {
                    // The stopped CPU may still hold the fiber's stack and store: never
                    // resume, never free them (leaked, at most one workload per CPU).
                    Box::leak(core::mem::replace(&mut w.fiber, fiber::Fiber::finished()));
                    let mut s = w.slot.lock();
                    s.status = Status::Done(StopReason::Trapped(format!(
                        "cpu {cpu} stopped answering during its time slice and was taken out of service; the workload's state is lost")));
                    s.finished_ns = end_ns;
                    s.blocked = false;
                }
                let mut s = w.slot.lock();
                let now = s.slice_start_ns;
                s.cpu_ns += end_ns.saturating_sub(s.slice_start_ns);
                s.cpus_mask |= 1u64 << (cpu % 64);
                if let Status::Done(reason) = &s.status {
                    log::info!("workload {}: {reason} (cpu {} ms)", s.name, s.cpu_ns / 1_000_000);
                    if smp::online() > 1 {
                        log::info!("workload {}: ran on cpus {}", s.name, CpuList(s.cpus_mask));
                    }
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
        }
        self.trim();
        // Workload output reaches the console here, at the queue's rate.
        if let Some(next) = console_log::drain(time::since_boot_ns()) {
            round.next_wake_ns = Some(round.next_wake_ns.map_or(next, |w| w.min(next)));
        }
        round
    }
}

/// CPU indices of a mask, as "0,2,3".
pub struct CpuList(pub u64);

impl core::fmt::Display for CpuList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        for cpu in (0..64).filter(|c| self.0 & (1u64 << c) != 0) {
            write!(f, "{}{cpu}", if first { "" } else { "," })?;
            first = false;
        }
        Ok(())
    }
}

/// Whether workload slices go to the application processors (off: the boot CPU runs
/// them all, as with one CPU; the SMP self-test compares the two).
static SLICES_ON_APS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Hands workload slices to the application processors (`true`, the default) or
/// keeps them on the boot CPU.
pub fn set_slices_on_aps(on: bool) {
    SLICES_ON_APS.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// CPUs that take workload slices in one batch, by index, the boot CPU first: every
/// CPU in service, or the boot CPU alone.
fn slice_cpus() -> heapless::Vec<usize, { smp::MAX_CPUS }> {
    if SLICES_ON_APS.load(core::sync::atomic::Ordering::Relaxed) {
        smp::in_service_cpus()
    } else {
        heapless::Vec::from_slice(&[0]).unwrap_or_default()
    }
}

/// Runs one slice of the fiber at `fiber` on an application processor; returns when
/// the slice ended (ns since boot).
fn resume_fiber_job(fiber: u64) -> u64 {
    // SAFETY: `run_round` posts the address of a live, boxed fiber of its manager and
    // waits (holding the manager mutably) until this job is done, so the fiber is
    // neither freed nor touched by another CPU meanwhile.
    let fiber = unsafe { &mut *(fiber as *mut fiber::Fiber) };
    fiber.resume();
    time::since_boot_ns()
}

/// Moves the workload's complete lines (cleaned by its log) to the slot's kept log
/// and the console queue, a bounded batch at a time so the copy in flight stays small.
fn drain_log(state: &mut WorkloadState, slot: &mut Slot) {
    for stream in [workloads::log::Stream::Stdout, workloads::log::Stream::Stderr] {
        let raw = state.wasi.log.take_raw(stream);
        let kept = &mut slot.raw[raw_index(stream)];
        if kept.is_empty() {
            *kept = raw;
        } else if kept.try_reserve(raw.len()).is_ok() {
            kept.extend_from_slice(&raw);
        } else {
            log::warn!("workload {}: no heap for {} bytes of raw output; they are missing from logs --raw", slot.name, raw.len());
        }
    }
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

fn raw_index(stream: workloads::log::Stream) -> usize {
    match stream {
        workloads::log::Stream::Stdout => 0,
        workloads::log::Stream::Stderr => 1,
    }
}

/// The body of a workload's fiber.
fn run_workload(code: Code, manifest: Manifest, slot: Arc<Mutex<Slot>>, extras: Extras,
    sockets: Option<sockets::WorkloadSockets>) {
    let host = KernelHost { slot: Arc::clone(&slot), has_sockets: sockets.is_some() };
    let mut state = WorkloadState::new(&manifest.args, &manifest.env, &manifest.limits, Box::new(host));
    if let Some(files) = extras.files {
        // File times come from the node's realtime clock, as clock_time_get's.
        let clock = Box::new(|| {
            let (s, ns) = time::unix_time();
            s.saturating_mul(1_000_000_000).saturating_add(u64::from(ns))
        });
        state = state.with_files_at(files, manifest.guest_data_dir(), clock);
    }
    state.wasi.set_stdin(extras.stdin);
    if let Some(sockets) = sockets {
        state = state.with_sockets(Box::new(sockets), &manifest.listen);
    }
    let (reason, mut state, instantiate_us, run_us) = match code {
        Code::Native(runner, module) => run_native(runner, &module, state, &slot),
        Code::Interp(interp, module) => run_interp(&interp, &module, state, &slot),
    };
    state.wasi.log.flush();
    let mut s = slot.lock();
    drain_log(&mut state, &mut s);
    s.instantiate_us = instantiate_us;
    s.run_us = run_us;
    s.finished_ns = time::since_boot_ns();
    // The store (with the linear memory) was dropped when the engine returned.
    s.memory_bytes = 0;
    s.status = Status::Done(reason);
}

/// What the scheduler needs at the end of a time slice: prints the log so far, and
/// ends the workload if a limit has passed (`Err`); else switches back to the scheduler
/// and returns when the workload's next slice begins.
fn end_of_slice(state: &mut WorkloadState, slot: &Mutex<Slot>) -> Result<(), StopReason> {
    let now = time::since_boot_ns();
    {
        let mut s = slot.lock();
        s.slices += 1;
        drain_log(state, &mut s);
        if let Some(stop) = limit_reached(&s, now) {
            return Err(stop);
        }
    }
    fiber::suspend();
    Ok(())
}

/// Runs native code: the epoch callback (every timer tick) ends a slice.
fn run_native(runner: &'static Runner, module: &Module, state: WorkloadState, slot: &Arc<Mutex<Slot>>)
    -> (StopReason, WorkloadState, u64, u64) {
    let mut store = Store::new(&runner.engine, state);
    store.limiter(|s| s);
    store.set_epoch_deadline(1);
    let cb_slot = Arc::clone(slot);
    store.epoch_deadline_callback(move |mut ctx| match end_of_slice(ctx.data_mut(), &cb_slot) {
        Ok(()) => Ok(UpdateDeadline::Continue(1)),
        Err(stop) => {
            ctx.data_mut().stop = Some(stop);
            Err(wasmtime::Error::msg("workload limit"))
        }
    });
    let t0 = time::since_boot_us();
    let instance = runner.linker.instantiate(&mut store, module);
    let t1 = time::since_boot_us();
    let result = instance.and_then(|i| i.get_typed_func::<(), ()>(&mut store, "_start")?.call(&mut store, ()));
    let t2 = time::since_boot_us();
    let reason = store.data_mut().classify(result);
    (reason, store.into_data(), t1 - t0, t2 - t1)
}

/// Runs a module in wasmi: the first fuel chunk to end after a timer tick ends a slice.
fn run_interp(interp: &Interp, module: &wasmi::Module, state: WorkloadState, slot: &Arc<Mutex<Slot>>)
    -> (StopReason, WorkloadState, u64, u64) {
    let mut store = interp::store(&interp.engine, state);
    let t0 = time::since_boot_us();
    let instance = interp::instantiate(&mut store, &interp.linker, module);
    let t1 = time::since_boot_us();
    // The fiber starts (and resumes after each suspend) at the start of a slice.
    let mut slice_tick = time::ticks();
    let mut between = |state: &mut WorkloadState| {
        if time::ticks() == slice_tick {
            return Ok(());
        }
        let r = end_of_slice(state, slot);
        slice_tick = time::ticks();
        r
    };
    let reason = match instance {
        Ok(instance) => interp::run_start_of(&mut store, instance, INTERP_CHECK_FUEL, &mut between),
        Err(e) => store.data_mut().stop_reason(Some(format!("{e}"))),
    };
    let t2 = time::since_boot_us();
    (reason, store.into_data(), t1 - t0, t2 - t1)
}
