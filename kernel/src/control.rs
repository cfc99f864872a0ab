//! The workload control service: TCP [`control::PORT`] on the node's overlay address
//! only, speaking the `control` crate's protocol (signed, sequenced requests; owner-only
//! access) on top of the node's workload service ([`crate::wasm::service`]).
//!
//! A connection gets a fresh random challenge. At most [`CONNECTIONS_MAX`] connections
//! are served at once (a frame can be 32 MiB: this bounds the memory they can pin);
//! more are closed at once, and one idle for [`IDLE_TIMEOUT_MS`] is closed. Only one
//! connection at a time receives a request larger than [`SMALL_REQUEST_BYTES`]; the
//! others wait for their turn with TCP flow control. A connection that breaks the protocol gets an error
//! response and is closed; the service and the node carry on.

use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use control::{Backend, BackendError, Deployment, ErrorCode, LogChunk, NodeInfo, Session, WorkloadState, WorkloadSummary};
use workloads::runtime::StopReason;

use crate::arch::x86_64::time;
use crate::executor;
use crate::net::socket::{NetError, TcpListener, TcpStream};
use crate::net::Network;
use crate::wasm::service::{self, ServiceError, Summary};
use crate::wasm::Status;

/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 4;
/// A connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT_MS: u64 = 60_000;
/// A connection may buffer this much of a request without the big-request token.
pub const SMALL_REQUEST_BYTES: usize = 1 << 20;

static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Held by the one connection receiving a large request (a deploy): a 32 MiB frame
/// takes several copies on its way to the store and the engine, so only one at a time.
static BIG_REQUEST: AtomicBool = AtomicBool::new(false);

/// The big-request token, released on drop.
struct BigRequest;

impl BigRequest {
    /// Waits for the token; other connections' large uploads stall meanwhile (TCP
    /// flow control pushes back on their senders).
    async fn acquire() -> BigRequest {
        while BIG_REQUEST.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            executor::sleep_ms(20).await;
        }
        BigRequest
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
    log::info!("control: workload control on overlay tcp port {}", control::PORT);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if ACTIVE.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
                    ACTIVE.fetch_sub(1, Ordering::AcqRel);
                    log::warn!("control: {CONNECTIONS_MAX} connections busy; refusing one");
                    drop(stream);
                    continue;
                }
                executor::spawn("control-conn", async move {
                    if let Err(e) = connection(stream, node_key, address).await {
                        log::info!("control: connection ended: {e}");
                    }
                    ACTIVE.fetch_sub(1, Ordering::AcqRel);
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
    Idle,
    Net(NetError),
    Protocol(control::SessionError),
}

impl core::fmt::Display for ConnectionEnd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectionEnd::Idle => write!(f, "idle for {} s", IDLE_TIMEOUT_MS / 1000),
            ConnectionEnd::Net(e) => write!(f, "network: {e:?}"),
            ConnectionEnd::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

async fn connection(mut stream: TcpStream, node_key: [u8; 32], address: [u8; 16]) -> Result<(), ConnectionEnd> {
    let mut entropy = [0u8; 40];
    crate::entropy::fill(&mut entropy[..32]);
    entropy[32..].copy_from_slice(&time::since_boot_ns().to_le_bytes());
    let mut session = Session::new(node_key, control::challenge(&entropy));
    stream.write_all(&session.hello_frame()).await.map_err(ConnectionEnd::Net)?;
    let mut backend = KernelBackend { node_key, address };
    let mut buf = vec![0u8; 16 * 1024];
    let mut big: Option<BigRequest> = None;
    loop {
        // A request growing past the small size continues only with the token.
        if session.buffered_bytes() >= SMALL_REQUEST_BYTES && big.is_none() {
            big = Some(BigRequest::acquire().await);
        }
        let Some(read) = executor::timeout(IDLE_TIMEOUT_MS, stream.read(&mut buf)).await else {
            // A client that vanished without closing must not hold a slot forever.
            stream.shutdown();
            return Err(ConnectionEnd::Idle);
        };
        let n = read.map_err(ConnectionEnd::Net)?;
        if n == 0 {
            stream.shutdown();
            return Ok(());
        }
        match session.push(&buf[..n]) {
            Ok(requests) => {
                for request in requests {
                    let response = control::serve(&mut backend, request);
                    stream.write_all(&session.response_frame(&response)).await.map_err(ConnectionEnd::Net)?;
                }
                if session.buffered_bytes() < SMALL_REQUEST_BYTES {
                    big = None;
                }
            }
            Err(e) => {
                let _ = stream.write_all(&session.response_frame(&e.response())).await;
                stream.shutdown();
                return Err(ConnectionEnd::Protocol(e));
            }
        }
    }
}

/// The control protocol's view of the node's workload service.
struct KernelBackend {
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

fn to_summary(s: Summary) -> WorkloadSummary {
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
        ServiceError::Quota(_) => ErrorCode::NoSpace,
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

    fn logs(&mut self, _owner: &[u8; 32], id: u64, from_line: u64, max_lines: usize) -> Result<LogChunk, BackendError> {
        let from = usize::try_from(from_line).unwrap_or(usize::MAX);
        let (mut lines, finished) = service::logs(id, from).map_err(refusal)?;
        let complete = lines.len() <= max_lines;
        lines.truncate(max_lines);
        let next_line = from_line + lines.len() as u64;
        Ok(LogChunk { lines, next_line, finished: finished && complete })
    }

    fn stop(&mut self, _owner: &[u8; 32], id: u64) -> Result<(), BackendError> {
        service::stop(id).map_err(refusal)
    }

    fn remove(&mut self, _owner: &[u8; 32], id: u64) -> Result<(), BackendError> {
        service::remove(id).map_err(refusal)
    }

    fn node_info(&mut self, _owner: &[u8; 32]) -> NodeInfo {
        NodeInfo {
            key: self.node_key,
            address: self.address,
            uptime_ms: time::since_boot_ns() / 1_000_000,
            workloads: service::list().len() as u32,
            storage_free_bytes: crate::storage::stat().free_bytes,
        }
    }
}
