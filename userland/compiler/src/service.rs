//! The service loop: one overlay stack (`hostnet::Stack`) on a UDP socket, a fixed
//! number of TCP connection slots listening on [`COMPILE_PORT`], and one compile thread fed
//! by a bounded queue.
//!
//! Bounds: at most [`Options::connections_max`] connections at once (a slot listens again
//! only when its connection is gone); a request frame of at most
//! `control::compile::COMPILE_REQUEST_MAX_BYTES` (refused from its header); at most
//! [`Options::queue_max`] requests waiting to compile (more are refused as busy); and
//! [`Options::request_time`] per phase of a connection (reading the request, waiting for
//! its compilation, sending the answer): past it, a waiting compilation is answered with a
//! refusal and a stalled transfer is reset. A compilation cannot be interrupted, so module
//! size is what bounds its time.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::compile::{self, CompileRequest, CompileResponse, COMPILE_PORT};
use control::FrameDecoder;
use hostnet::Stack;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use workloads::ed25519_compact::KeyPair;

/// TCP receive buffer of a slot (the request streams through it into the decoder).
const TCP_RX_BYTES: usize = 256 << 10;
/// TCP send buffer of a slot.
const TCP_TX_BYTES: usize = 256 << 10;
/// Longest wait of one loop round.
const POLL_SLICE: Duration = Duration::from_millis(10);

/// Limits of the service.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Connections served at once.
    pub connections_max: usize,
    /// Requests waiting for the compile thread at most.
    pub queue_max: usize,
    /// Time allowed for each network phase of a connection (reading the request,
    /// writing the answer).
    pub request_time: Duration,
    /// Time allowed for queueing and compiling one request.
    pub compile_time: Duration,
    /// Print one line per request on stderr.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections_max: 8,
            queue_max: 4,
            request_time: Duration::from_secs(60),
            compile_time: Duration::from_secs(60),
            verbose: true,
        }
    }
}

/// Why the service could not start or stopped.
#[derive(Debug)]
pub enum ServiceError {
    /// The UDP socket or the overlay stack failed.
    Io(std::io::Error),
    /// The compile thread could not start.
    Thread(std::io::Error),
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::Io(e) => write!(f, "overlay socket: {e}"),
            ServiceError::Thread(e) => write!(f, "cannot start the compile thread: {e}"),
        }
    }
}

impl std::error::Error for ServiceError {}

enum Phase {
    /// Waiting for a client.
    Listening,
    /// Reading the request frame.
    Reading(FrameDecoder),
    /// Queued or compiling.
    Compiling,
    /// Sending the answer; then the slot closes.
    Writing,
    /// Closed our side; waiting for the connection to end.
    Closing,
}

struct Slot {
    handle: SocketHandle,
    phase: Phase,
    /// Counts connections on this slot, so a late compile result for a connection that is
    /// gone is dropped.
    generation: u64,
    since: Instant,
    out: Vec<u8>,
}

/// What a slot needs from the service after a step.
enum Action {
    Nothing,
    Submit(CompileRequest),
    Refuse(String),
    /// Drop the connection (with a note for the log).
    Reset(Option<String>),
}

struct Job {
    slot: usize,
    generation: u64,
    request: CompileRequest,
}

struct Done {
    slot: usize,
    generation: u64,
    response: CompileResponse,
    took: Duration,
}

/// A running service: stack, slots, compile thread.
pub struct Service {
    stack: Stack,
    options: Options,
    slots: Vec<Slot>,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    worker: Option<JoinHandle<()>>,
    /// Answers sent so far (compiled and refused), for tests and logs.
    pub answered: u64,
}

fn new_slot(stack: &mut Stack) -> SocketHandle {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; TCP_RX_BYTES]), tcp::SocketBuffer::new(vec![0; TCP_TX_BYTES]));
    // A client that vanishes frees its slot once retransmissions give up.
    s.set_timeout(Some(smoltcp::time::Duration::from_secs(20)));
    let _ = s.listen(COMPILE_PORT);
    stack.sockets.add(s)
}

impl Service {
    /// A service with `key` (its attestation key and overlay identity) on `socket`.
    pub fn new(key: &KeyPair, socket: UdpSocket, options: Options) -> Result<Service, ServiceError> {
        let config = overlay::Config { accept_unknown_peers: true, ..overlay::Config::default() };
        let mut stack = Stack::new(*key.sk.seed(), socket, config).map_err(ServiceError::Io)?;
        let now = Instant::now();
        let slots = (0..options.connections_max.max(1))
            .map(|_| Slot { handle: new_slot(&mut stack), phase: Phase::Listening, generation: 0, since: now, out: Vec::new() })
            .collect();
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(options.queue_max.max(1));
        let (done_tx, done) = mpsc::channel::<Done>();
        let worker_key = key.clone();
        let worker = std::thread::Builder::new()
            .name("compile".into())
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    let t0 = Instant::now();
                    let response = crate::compile_request(&worker_key, &job.request);
                    let done = Done { slot: job.slot, generation: job.generation, response, took: t0.elapsed() };
                    if done_tx.send(done).is_err() {
                        return;
                    }
                }
            })
            .map_err(ServiceError::Thread)?;
        Ok(Service { stack, options, slots, jobs: Some(jobs), done, worker: Some(worker), answered: 0 })
    }

    /// The overlay stack (key, address, socket).
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// Serves until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), ServiceError> {
        while !stop.load(Ordering::Relaxed) {
            self.poll()?;
        }
        Ok(())
    }

    /// One round: network, slots, finished compilations.
    pub fn poll(&mut self) -> Result<(), ServiceError> {
        self.stack.poll(POLL_SLICE).map_err(ServiceError::Io)?;
        while let Ok(done) = self.done.try_recv() {
            self.finished(done);
        }
        for i in 0..self.slots.len() {
            self.serve_slot(i);
        }
        Ok(())
    }

    fn log(&self, line: std::fmt::Arguments<'_>) {
        if self.options.verbose {
            eprintln!("gridos-compiler: {line}");
        }
    }

    fn finished(&mut self, done: Done) {
        let Some(slot) = self.slots.get_mut(done.slot) else { return };
        if slot.generation != done.generation || !matches!(slot.phase, Phase::Compiling) {
            return;
        }
        let what = match &done.response {
            CompileResponse::Compiled { bundle } => format!("compiled: {} bytes attested", bundle.len()),
            CompileResponse::Refused { reason } => format!("refused: {reason}"),
        };
        slot.out = compile::response_frame(&done.response);
        slot.phase = Phase::Writing;
        slot.since = Instant::now();
        self.log(format_args!("slot {}: {what} in {} ms", done.slot, done.took.as_millis()));
    }

    /// Answers the connection in slot `i` with a refusal.
    fn refuse(&mut self, i: usize, reason: String) {
        self.log(format_args!("slot {i}: refused: {reason}"));
        let slot = &mut self.slots[i];
        slot.out = compile::response_frame(&CompileResponse::Refused { reason });
        slot.phase = Phase::Writing;
        slot.since = Instant::now();
    }

    /// Drops the connection in slot `i` at once and listens again.
    fn reset(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let s = self.stack.sockets.get_mut::<tcp::Socket>(slot.handle);
        s.abort();
        slot.phase = Phase::Listening;
        slot.generation += 1;
        slot.out = Vec::new();
    }

    fn serve_slot(&mut self, i: usize) {
        match self.step_slot(i) {
            Action::Nothing => {}
            Action::Submit(request) => self.submit(i, request),
            Action::Refuse(reason) => self.refuse(i, reason),
            Action::Reset(why) => {
                if let Some(why) = why {
                    self.log(format_args!("slot {i}: {why}; reset"));
                }
                self.reset(i);
            }
        }
    }

    /// Advances slot `i` as far as its socket allows; what needs the whole service is returned.
    fn step_slot(&mut self, i: usize) -> Action {
        let request_time = self.options.request_time;
        let compile_time = self.options.compile_time;
        let slot = &mut self.slots[i];
        let s = self.stack.sockets.get_mut::<tcp::Socket>(slot.handle);
        // A finished connection: listen again.
        if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
            if !matches!(slot.phase, Phase::Listening) {
                slot.phase = Phase::Listening;
                slot.generation += 1;
                slot.out = Vec::new();
            }
            s.abort();
            let _ = s.listen(COMPILE_PORT);
            return Action::Nothing;
        }
        if matches!(slot.phase, Phase::Listening) {
            if !s.is_active() {
                return Action::Nothing;
            }
            slot.phase = Phase::Reading(compile::request_decoder());
            slot.since = Instant::now();
        }
        let elapsed = slot.since.elapsed();
        let overdue = elapsed > request_time;
        match &mut slot.phase {
            Phase::Listening => Action::Nothing,
            Phase::Reading(decoder) => {
                let mut buf = [0u8; 16 << 10];
                while s.can_recv() {
                    let n = s.recv_slice(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    match decoder.push(&buf[..n]).and_then(|()| decoder.pop()) {
                        Ok(None) => {}
                        Ok(Some(body)) => {
                            return match compile::decode_request(&body) {
                                Ok(request) => Action::Submit(request),
                                Err(e) => Action::Refuse(format!("bad request: {e}")),
                            }
                        }
                        Err(e) => return Action::Refuse(format!("bad request: {}", compile::CompileProtocolError::from(e))),
                    }
                }
                if overdue {
                    Action::Reset(Some(format!("no complete request within {} s", request_time.as_secs())))
                } else if matches!(s.state(), tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing) {
                    Action::Reset(Some("the client left before sending a whole request".into()))
                } else {
                    Action::Nothing
                }
            }
            Phase::Compiling if elapsed > compile_time => {
                // The compile thread finishes it anyway; its result is then dropped.
                slot.generation += 1;
                Action::Refuse(format!("compiling took longer than {} s", compile_time.as_secs()))
            }
            Phase::Compiling => Action::Nothing,
            Phase::Writing => {
                if !slot.out.is_empty() && s.can_send() {
                    let n = s.send_slice(&slot.out).unwrap_or(0);
                    slot.out.drain(..n);
                }
                if slot.out.is_empty() {
                    s.close();
                    slot.phase = Phase::Closing;
                    slot.since = Instant::now();
                    self.answered += 1;
                    Action::Nothing
                } else if overdue {
                    Action::Reset(Some("the client did not take the answer in time".into()))
                } else {
                    Action::Nothing
                }
            }
            Phase::Closing if overdue => Action::Reset(None),
            Phase::Closing => Action::Nothing,
        }
    }

    fn submit(&mut self, i: usize, request: CompileRequest) {
        if let Some(reason) = crate::precheck(&request) {
            return self.refuse(i, reason);
        }
        let slot = &mut self.slots[i];
        let job = Job { slot: i, generation: slot.generation, request };
        let module_bytes = job.request.module.len();
        let sent = match &self.jobs {
            Some(jobs) => jobs.try_send(job),
            None => return self.refuse(i, "the compile service is stopping".into()),
        };
        match sent {
            Ok(()) => {
                slot.phase = Phase::Compiling;
                slot.since = Instant::now();
                self.log(format_args!("slot {i}: compiling a {module_bytes}-byte module"));
            }
            Err(TrySendError::Full(_)) => self.refuse(i, "the compile service is busy; try again later".into()),
            Err(TrySendError::Disconnected(_)) => self.refuse(i, "the compile thread stopped".into()),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Closing the queue ends the compile thread after its current job.
        self.jobs = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A service on its own thread, for tests and tools that embed one.
pub struct Running {
    /// The service's public key (also its overlay key).
    pub key: [u8; 32],
    /// Its UDP endpoint.
    pub endpoint: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ServiceError>>>,
}

impl Running {
    /// `KEY@HOST:PORT`, as `gridctl deploy --compiler` takes it.
    pub fn address(&self) -> String {
        format!("{}@{}", crate::hex(&self.key), self.endpoint)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a service with `key` on `socket` on a new thread; it stops when the handle drops.
pub fn spawn(key: &KeyPair, socket: UdpSocket, options: Options) -> Result<Running, ServiceError> {
    let endpoint = socket.local_addr().map_err(ServiceError::Io)?;
    let mut service = Service::new(key, socket, options)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("compile-service".into())
        .spawn(move || service.run(&stop2))
        .map_err(ServiceError::Thread)?;
    Ok(Running { key: *key.pk, endpoint, stop, thread: Some(thread) })
}
