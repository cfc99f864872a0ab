//! The workload control service: TCP [`control::PORT`] on the node's overlay address
//! only, speaking the `control` crate's protocol (signed, sequenced requests; owner-only
//! access) on top of the node's workload service ([`crate::wasm::service`]).
//!
//! The shard service (`Shard*`, `StoreInfo`, `Peers` requests) rides on the same
//! connections: its rules are `control::shard`'s, its backend is [`crate::shards`]; each
//! connection's shard state (one upload, one read) is closed with the connection, so its
//! buffers go back to the node-wide budget however the connection ends.
//!
//! A connection gets a fresh random challenge. The limits come from `control::guard`
//! (numbers and reasons there): at most `CONNECTIONS_MAX_DEFAULT` connections at once and
//! `CONNECTIONS_PER_PEER_MAX_DEFAULT` per overlay address (more are reset at once); the
//! first request must be complete within a deadline after connect, and every request
//! within a deadline from its first byte scaled by its announced size (bytes trickling in
//! do not extend it); a response must be taken by the client at the same minimum rate.
//! A connection past a deadline is reset (not closed: its socket must not wait on a
//! peer that stalls the close). Only one connection at a time receives a request larger
//! than [`SMALL_REQUEST_BYTES`]; the others wait for their turn (bounded) with TCP flow
//! control. A connection that breaks the protocol gets an error response and is closed;
//! the service and the node carry on.

use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use control::guard::{self, Admission, Deadlines, Expired, RequestTimer};
use control::{Backend, BackendError, Deployment, ErrorCode, LogChunk, NodeInfo, Session, WorkloadState, WorkloadSummary};
use spin::Mutex;
use workloads::admission::AdmissionError;
use workloads::runtime::StopReason;

use crate::arch::x86_64::time;
use crate::executor;
use crate::net::guard::{peer_of, RateLimitedLog};
use crate::net::socket::{NetError, TcpListener, TcpStream};
use crate::net::Network;
use crate::wasm::service::{self, ServiceError, Summary};
use crate::wasm::Status;

/// A connection may buffer this much of a request without the big-request token: a
/// shard piece's frame (a piece of `control::SHARD_PIECE_BYTES` and its envelope), so
/// shard uploads on several connections do not queue for the token.
pub const SMALL_REQUEST_BYTES: usize = control::shard::SHARD_PIECE_FRAME_BYTES_MAX + control::FRAME_HEADER_BYTES;

/// Connections being served, per peer and in all.
static ADMISSION: Mutex<Admission> =
    Mutex::new(Admission::new(guard::CONNECTIONS_MAX_DEFAULT, guard::CONNECTIONS_PER_PEER_MAX_DEFAULT));
/// Log of refused connections (a flood must not flood the console). Resets at a deadline
/// are logged each: admission bounds them (every admitted connection lives seconds).
static REFUSED_LOG: Mutex<RateLimitedLog> = Mutex::new(RateLimitedLog::new());
/// Held by the one connection receiving a large request (a deploy): a 32 MiB frame
/// takes several copies on its way to the store and the engine, so only one at a time.
static BIG_REQUEST: AtomicBool = AtomicBool::new(false);

/// Counters for `/metrics`: connections accepted and refused at admission, requests
/// answered and those answered with an error.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static CONNECTIONS_REFUSED: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static REQUESTS_REFUSED: AtomicU64 = AtomicU64::new(0);

/// The service's counters since boot.
pub fn counters() -> metrics::node::ServiceMetrics {
    metrics::node::ServiceMetrics {
        connections: CONNECTIONS.load(Ordering::Relaxed),
        connections_refused: CONNECTIONS_REFUSED.load(Ordering::Relaxed),
        requests: REQUESTS.load(Ordering::Relaxed),
        requests_refused: REQUESTS_REFUSED.load(Ordering::Relaxed),
    }
}

fn now_ms() -> u64 {
    executor::now_ns() / 1_000_000
}

/// The big-request token, released on drop.
struct BigRequest;

impl BigRequest {
    /// Waits for the token until `deadline_ms`; other connections' large uploads stall
    /// meanwhile (TCP flow control pushes back on their senders). `None` if it did not come.
    async fn acquire_until(deadline_ms: u64) -> Option<BigRequest> {
        while BIG_REQUEST.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            if now_ms() >= deadline_ms {
                return None;
            }
            executor::sleep_ms(20).await;
        }
        Some(BigRequest)
    }
}

impl Drop for BigRequest {
    fn drop(&mut self) {
        BIG_REQUEST.store(false, Ordering::Release);
    }
}

/// Starts the service for the node with overlay key `node_key` at `address`.
pub fn start(node_key: [u8; 32], address: [u8; 16]) {
    executor::spawn("control", listen(node_key, address));
}

async fn listen(node_key: [u8; 32], address: [u8; 16]) {
    let mut listener = match TcpListener::bind(Network::Overlay, control::PORT) {
        Ok(l) => l,
        Err(e) => return log::error!("control: cannot listen on overlay tcp {}: {e:?}", control::PORT),
    };
    log::info!(
        "control: workload control on overlay tcp port {} (at most {} connections, {} per peer)",
        control::PORT,
        guard::CONNECTIONS_MAX_DEFAULT,
        guard::CONNECTIONS_PER_PEER_MAX_DEFAULT
    );
    loop {
        match listener.accept().await {
            Ok(mut stream) => {
                // Gone already (reset before accept): nothing to serve.
                let Some(remote) = stream.remote() else { continue };
                let peer = peer_of(remote.addr);
                if let Err(why) = ADMISSION.lock().admit(peer) {
                    CONNECTIONS_REFUSED.fetch_add(1, Ordering::Relaxed);
                    REFUSED_LOG.lock().warn(now_ms(), format_args!("control: refused a connection from {}: {why}", remote.addr));
                    // A reset, so the refused socket does not wait in a close handshake.
                    stream.abort();
                    continue;
                }
                CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                executor::spawn("control-conn", async move {
                    match connection(stream, node_key, address).await {
                        Ok(()) => {}
                        Err(ConnectionEnd::Deadline(why)) => log::warn!("control: reset the connection from {}: {why}", remote.addr),
                        Err(e) => log::info!("control: connection from {} ended: {e}", remote.addr),
                    }
                    ADMISSION.lock().release(&peer);
                });
            }
            Err(e) => {
                log::warn!("control: accept failed: {e:?}");
                executor::sleep_ms(100).await;
            }
        }
    }
}

/// Why a connection ended early.
enum ConnectionEnd {
    /// A deadline of `control::guard` passed.
    Deadline(Expired),
    /// The client did not take a response at the minimum rate.
    ResponseStalled { bytes: usize },
    Net(NetError),
    Protocol(control::SessionError),
}

impl core::fmt::Display for ConnectionEnd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectionEnd::Deadline(e) => write!(f, "{e}"),
            ConnectionEnd::ResponseStalled { bytes } => write!(f, "a response of {bytes} bytes was not taken in time"),
            ConnectionEnd::Net(e) => write!(f, "network: {e:?}"),
            ConnectionEnd::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

/// Writes `frame` within the time the minimum rate allows for it; resets the
/// connection otherwise (a client that does not read must not hold the slot).
async fn send(stream: &mut TcpStream, deadlines: &Deadlines, frame: &[u8]) -> Result<(), ConnectionEnd> {
    match executor::timeout(deadlines.transfer_ms(frame.len() as u64), stream.write_all(frame)).await {
        Some(result) => result.map_err(ConnectionEnd::Net),
        None => {
            stream.abort();
            Err(ConnectionEnd::ResponseStalled { bytes: frame.len() })
        }
    }
}

async fn connection(stream: TcpStream, node_key: [u8; 32], address: [u8; 16]) -> Result<(), ConnectionEnd> {
    let mut backend = KernelBackend { node_key, address };
    let mut shards = control::Connection::new();
    let result = serve_connection(stream, node_key, &mut backend, &mut shards).await;
    // Whatever ended the connection, its shard buffers go back to the node-wide budget.
    let held = shards.held_bytes();
    shards.close(&mut backend);
    if held > 0 {
        log::info!(
            "control: a connection ended with {held} bytes of shard transfers buffered; {} bytes stay buffered node-wide",
            crate::shards::buffered_bytes()
        );
    }
    result
}

async fn serve_connection(
    mut stream: TcpStream,
    node_key: [u8; 32],
    backend: &mut KernelBackend,
    shards: &mut control::Connection,
) -> Result<(), ConnectionEnd> {
    let deadlines = Deadlines::default();
    let mut timer = RequestTimer::new(now_ms(), deadlines);
    let mut entropy = [0u8; 40];
    crate::entropy::fill(&mut entropy[..32]);
    entropy[32..].copy_from_slice(&time::since_boot_ns().to_le_bytes());
    let mut session = Session::new(node_key, control::challenge(&entropy));
    send(&mut stream, &deadlines, &session.hello_frame()).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut big: Option<BigRequest> = None;
    let expired = |stream: &mut TcpStream, why| {
        stream.abort();
        ConnectionEnd::Deadline(why)
    };
    loop {
        timer.check(now_ms()).map_err(|why| expired(&mut stream, why))?;
        // A request growing past the small size continues only with the token.
        if session.buffered_bytes() >= SMALL_REQUEST_BYTES && big.is_none() {
            timer.on_token_wait(now_ms());
            let Some(token) = BigRequest::acquire_until(timer.deadline_ms()).await else {
                // Not the client's fault: it gets an answer and a close, not a reset (the
                // closing socket is bounded by the stack's policy either way).
                let busy = control::Response::error(ErrorCode::Busy, "another large request is uploading; try again");
                let _ = executor::timeout(deadlines.request_base_ms, stream.write_all(&session.response_frame(&busy))).await;
                stream.shutdown();
                return Err(ConnectionEnd::Deadline(Expired::TokenWait));
            };
            big = Some(token);
            let announced = session.pending_request_bytes().map_or(0, |n| n + control::FRAME_HEADER_BYTES);
            timer.on_token_granted(now_ms(), announced.saturating_sub(session.buffered_bytes()) as u64);
        }
        let wait_ms = timer.deadline_ms().saturating_sub(now_ms());
        let Some(read) = executor::timeout(wait_ms, stream.read(&mut buf)).await else { continue };
        let n = read.map_err(ConnectionEnd::Net)?;
        if n == 0 {
            stream.shutdown();
            return Ok(());
        }
        match session.push(&buf[..n]) {
            Ok(requests) => {
                let answered = !requests.is_empty();
                for request in requests {
                    let response = match ledger_gate(&request).await {
                        Some(refusal) => refusal,
                        None => control::serve(backend, shards, request),
                    };
                    REQUESTS.fetch_add(1, Ordering::Relaxed);
                    if matches!(response, control::Response::Error { .. }) {
                        REQUESTS_REFUSED.fetch_add(1, Ordering::Relaxed);
                    }
                    send(&mut stream, &deadlines, &session.response_frame(&response)).await?;
                }
                if answered {
                    timer.on_request_done(now_ms());
                }
                timer.on_received(now_ms(), session.buffered_bytes(), session.pending_request_bytes());
                if session.buffered_bytes() < SMALL_REQUEST_BYTES {
                    big = None;
                }
            }
            Err(e) => {
                REQUESTS.fetch_add(1, Ordering::Relaxed);
                REQUESTS_REFUSED.fetch_add(1, Ordering::Relaxed);
                let _ = executor::timeout(deadlines.request_base_ms, stream.write_all(&session.response_frame(&e.response()))).await;
                stream.shutdown();
                return Err(ConnectionEnd::Protocol(e));
            }
        }
    }
}

/// What a node on a ledger asks before serving `request` (`crate::ledger`): a deploy
/// naming a contract the node has not read yet waits for it (bounded); a shard upload
/// from an owner without a storage contract placing shards here is refused at its
/// first piece. `Some` is the refusal.
async fn ledger_gate(request: &control::Authorized) -> Option<control::Response> {
    if !crate::ledger::ledger_mode() {
        return None;
    }
    match &request.request {
        control::Request::Deploy { signed_manifest, .. } | control::Request::DeployHeld { signed_manifest, .. } => {
            let contract = workloads::SignedManifest::from_bytes(signed_manifest).ok().and_then(|s| s.verify().ok()).and_then(|m| m.contract);
            if let Some(id) = contract {
                crate::ledger::await_contract(id).await;
            }
            None
        }
        control::Request::ShardPut { offset: 0, .. } if crate::ledger::storage_quota(&request.owner) == Some(0) => {
            Some(control::Response::error(ErrorCode::Rejected, crate::ledger::NO_STORAGE_CONTRACT))
        }
        _ => None,
    }
}

/// The control protocol's view of the node's workload service (and, in
/// [`crate::shards`], of its shard store).
pub(crate) struct KernelBackend {
    node_key: [u8; 32],
    address: [u8; 16],
}

fn state_of(summary: &Summary) -> WorkloadState {
    match summary.info.as_ref().map(|i| &i.status) {
        None => WorkloadState::Stopped("not running since the node restarted".into()),
        Some(Status::Ready) => WorkloadState::Ready,
        Some(Status::Running) => WorkloadState::Running,
        Some(Status::Done(StopReason::Exited(code))) => WorkloadState::Exited(*code as i32),
        Some(Status::Done(reason @ (StopReason::Trapped(_) | StopReason::Rejected(_)))) => WorkloadState::Failed(reason.to_string()),
        Some(Status::Done(reason)) => WorkloadState::Stopped(reason.to_string()),
    }
}

pub(crate) fn to_summary(s: Summary) -> WorkloadSummary {
    WorkloadSummary {
        id: s.id,
        name: s.name.clone(),
        owner: s.owner,
        state: state_of(&s),
        backend: s.info.as_ref().map(|i| i.backend.name().to_string()).unwrap_or_default(),
        cpu_ms: s.info.as_ref().map_or(0, |i| i.cpu_ms),
        restart_on_boot: s.restart_on_boot,
    }
}

fn refusal(e: ServiceError) -> BackendError {
    let code = match &e {
        ServiceError::NotFound => ErrorCode::NotFound,
        ServiceError::Rejected(_) => ErrorCode::Rejected,
        ServiceError::Storage(why) if why.contains("NoSpace") || why.contains("TooLarge") => ErrorCode::NoSpace,
        ServiceError::Storage(_) => ErrorCode::Internal,
        ServiceError::Admission(
            AdmissionError::ReservedPort(_) | AdmissionError::PortTaken(_) | AdmissionError::OwnerPorts { .. },
        ) => ErrorCode::Rejected,
        ServiceError::Admission(_) => ErrorCode::NoSpace,
        ServiceError::Running => ErrorCode::Busy,
    };
    match e {
        // The code already says "rejected"; the message is the reason alone.
        ServiceError::Rejected(why) => BackendError::new(code, why),
        e => BackendError::new(code, format!("{e}")),
    }
}

impl Backend for KernelBackend {
    fn deploy(&mut self, d: Deployment) -> Result<u64, BackendError> {
        service::deploy(&d.signed_manifest, &d.module, &d.bundle).map_err(refusal)
    }

    fn list(&mut self, owner: &[u8; 32]) -> Vec<WorkloadSummary> {
        service::list().into_iter().filter(|s| s.owner == *owner).map(to_summary).collect()
    }

    fn status(&mut self, _owner: &[u8; 32], id: u64) -> Option<WorkloadSummary> {
        service::status(id).map(to_summary)
    }

    /// At most `max_lines` and `wasm::console_log::LOG_READ_BYTES_MAX` bytes of text
    /// per answer (copied from the kept log, nothing more). The node keeps only the last
    /// `KEPT_LOG_BYTES_MAX` of a log: when lines asked for are gone, the answer starts
    /// with one line saying how many (it is not counted in the line numbers).
    fn logs(&mut self, _owner: &[u8; 32], id: u64, from_line: u64, max_lines: usize) -> Result<LogChunk, BackendError> {
        let (read, finished) = service::logs(id, from_line, max_lines.saturating_sub(1).max(1)).map_err(refusal)?;
        let mut lines = read.lines;
        if read.dropped_before > 0 {
            lines.insert(0, format!(
                "[gridos: lines {from_line}..{} are no longer kept: the node keeps the last {} KiB of a workload's log]",
                read.start_line,
                crate::wasm::console_log::KEPT_LOG_BYTES_MAX >> 10
            ));
        }
        Ok(LogChunk { lines, next_line: read.next_line, finished: finished && !read.more })
    }

    fn stop(&mut self, _owner: &[u8; 32], id: u64) -> Result<(), BackendError> {
        service::stop(id).map_err(refusal)
    }

    fn remove(&mut self, _owner: &[u8; 32], id: u64) -> Result<(), BackendError> {
        service::remove(id).map_err(refusal)
    }

    /// What a caller learns of the node: its identity and uptime, *their own* workload
    /// count, and the storage *they* could still be granted in MiB steps (the smaller of
    /// their fair share's room and the node's, capped by the store's free bytes). Other
    /// owners' workloads are neither counted nor listed: keys are free, so a stranger
    /// is anyone, and the node's tenants are not theirs to enumerate. That the node is
    /// near full is visible (room shrinks), as a refused deploy would show anyway.
    fn node_info(&mut self, owner: &[u8; 32]) -> NodeInfo {
        let (workloads, room) = service::owner_view(owner);
        let free = crate::storage::stat().free_bytes.min(room);
        NodeInfo {
            key: self.node_key,
            address: self.address,
            uptime_ms: time::since_boot_ns() / 1_000_000,
            workloads,
            storage_free_bytes: free & !((1 << 20) - 1),
        }
    }

    fn is_farmer(&mut self, owner: &[u8; 32]) -> bool {
        crate::config::farmer().is_some_and(|farmer| farmer == *owner)
    }

    /// The farmer's view; `control::serve` cuts it down for anyone else.
    fn node_status(&mut self) -> control::NodeStatus {
        let (role, farm) = crate::config::role_and_farm();
        let counters = crate::net::nic_counters();
        let nics = crate::net::nic_macs()
            .into_iter()
            .map(|(name, mac)| {
                let c = counters.iter().find(|(n, ..)| *n == name).map(|(_, c, ..)| *c).unwrap_or_default();
                control::NicInfo { name, mac, rx_frames: c.rx_frames, tx_frames: c.tx_frames }
            })
            .collect();
        let disks = crate::storage::disks()
            .into_iter()
            .map(|d| control::DiskInfo {
                name: d.name,
                state: format!("{:?}", d.state).to_lowercase(),
                capacity_bytes: d.stat.capacity_bytes,
                free_bytes: d.stat.free_bytes,
                shards: d.stat.shard_count,
            })
            .collect();
        let mut peers = control::ShardBackend::peers(self);
        peers.truncate(control::shard::PEERS_MAX);
        control::NodeStatus {
            key: self.node_key,
            address: self.address,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_ms: time::since_boot_ns() / 1_000_000,
            role: role.as_str().to_string(),
            farm,
            farmer_view: false,
            peers,
            workloads: service::list().into_iter().map(to_summary).collect(),
            disks,
            nics,
            heap_used_bytes: crate::mm::heap::allocated_bytes() as u64,
            heap_size_bytes: crate::mm::heap::size_bytes(),
        }
    }

    fn node_logs(&mut self, from_line: u64, max_lines: usize) -> (Vec<alloc::string::String>, u64, u64) {
        crate::console::recent_lines(from_line, max_lines)
    }
}


fn area_refusal(e: workloads::wasi::FileAreaError) -> BackendError {
    match e {
        workloads::wasi::FileAreaError::NoSpace => BackendError::new(ErrorCode::NoSpace, "the node's storage is full"),
        workloads::wasi::FileAreaError::Io => BackendError::new(ErrorCode::Internal, "the node's storage failed"),
        workloads::wasi::FileAreaError::Unsupported => BackendError::new(ErrorCode::Rejected, "the area does not keep that"),
    }
}

/// Files of a workload's area, held deploys, starts and raw output (`control::files`
/// has the rules; the area is the one its program sees, `crate::wasm::files`).
impl control::FileBackend for KernelBackend {
    fn area(&mut self, id: u64) -> Result<control::AreaView, BackendError> {
        service::area(id).map_err(refusal)
    }

    fn file_read(&mut self, id: u64, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        use workloads::wasi::FileArea;
        crate::wasm::files::StoredFiles::for_id(id).read(name).map_err(area_refusal)
    }

    fn file_write(&mut self, id: u64, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
        use workloads::wasi::FileArea;
        crate::wasm::files::StoredFiles::for_id(id).write(name, bytes).map_err(area_refusal)
    }

    fn file_remove(&mut self, id: u64, name: &str) -> Result<bool, BackendError> {
        use workloads::wasi::FileArea;
        crate::wasm::files::StoredFiles::for_id(id).remove(name).map_err(area_refusal)
    }

    fn deploy_held(&mut self, d: Deployment) -> Result<u64, BackendError> {
        service::deploy_held(&d.signed_manifest, &d.module, &d.bundle).map_err(refusal)
    }

    fn start(&mut self, id: u64, stdin: Vec<u8>) -> Result<(), BackendError> {
        service::start_run(id, stdin).map_err(refusal)
    }

    fn raw_log(&mut self, id: u64, stream: control::OutputStream, offset: u64, max_bytes: usize) -> Result<control::RawChunk, BackendError> {
        let stream = match stream {
            control::OutputStream::Stdout => workloads::log::Stream::Stdout,
            control::OutputStream::Stderr => workloads::log::Stream::Stderr,
        };
        let (data, end, finished) = service::raw_log(id, stream, offset, max_bytes).map_err(refusal)?;
        Ok(control::RawChunk { data, end, finished })
    }
}
