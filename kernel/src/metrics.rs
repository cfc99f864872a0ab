//! The `/metrics` service: Prometheus' text format over HTTP on TCP [`metrics::PORT`] of
//! the node's overlay address only (the underlay never answers it: the overlay network
//! is the only one it listens on).
//!
//! The HTTP reading and the rendering are the `metrics` crate's (sans-IO); this module
//! gathers the figures from the kernel's services and owns the sockets and the bounds:
//! at most [`CONNECTIONS_MAX`] connections at once and [`CONNECTIONS_PER_PEER_MAX`] per
//! overlay address (more are reset at once); a request head must arrive within
//! [`REQUEST_MS_MAX`] of connecting, and the response must be taken at
//! `control::guard`'s minimum rate, or the connection is reset. One request per
//! connection; the response closes it.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use control::guard::{Admission, Deadlines};
use control::WorkloadState;
use metrics::http::{self, RequestReader, Route, Status};
use metrics::node::{DiskMetrics, NicMetrics, NodeMetrics, OverlayMetrics, ServiceMetrics, WorkloadMetrics};
use spin::Mutex;

use crate::executor;
use crate::net::guard::{peer_of, RateLimitedLog};
use crate::net::socket::{NetError, TcpListener, TcpStream};
use crate::net::Network;

/// Connections served at once, node-wide (a scrape takes milliseconds).
pub const CONNECTIONS_MAX: usize = 4;
/// Connections served at once per overlay address.
pub const CONNECTIONS_PER_PEER_MAX: usize = 2;
/// Time from connect to a complete request head.
pub const REQUEST_MS_MAX: u64 = 5_000;

static ADMISSION: Mutex<Admission> = Mutex::new(Admission::new(CONNECTIONS_MAX, CONNECTIONS_PER_PEER_MAX));
static REFUSED_LOG: Mutex<RateLimitedLog> = Mutex::new(RateLimitedLog::new());
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static CONNECTIONS_REFUSED: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static REQUESTS_REFUSED: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    executor::now_ns() / 1_000_000
}

/// Starts the service for the node with overlay key `node_key`.
pub fn start(node_key: [u8; 32]) {
    executor::spawn("metrics", listen(node_key));
}

async fn listen(node_key: [u8; 32]) {
    let mut listener = match TcpListener::bind(Network::Overlay, metrics::PORT) {
        Ok(l) => l,
        Err(e) => return log::error!("metrics: cannot listen on overlay tcp {}: {e:?}", metrics::PORT),
    };
    log::info!(
        "metrics: prometheus /metrics on overlay tcp port {} (at most {CONNECTIONS_MAX} connections, {CONNECTIONS_PER_PEER_MAX} per peer)",
        metrics::PORT
    );
    loop {
        match listener.accept().await {
            Ok(mut stream) => {
                let Some(remote) = stream.remote() else { continue };
                let peer = peer_of(remote.addr);
                if let Err(why) = ADMISSION.lock().admit(peer) {
                    CONNECTIONS_REFUSED.fetch_add(1, Ordering::Relaxed);
                    REFUSED_LOG.lock().warn(now_ms(), format_args!("metrics: refused a connection from {}: {why}", remote.addr));
                    stream.abort();
                    continue;
                }
                CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                executor::spawn("metrics-conn", async move {
                    if let Err(e) = serve(stream, node_key).await {
                        log::info!("metrics: connection from {} ended: {e}", remote.addr);
                    }
                    ADMISSION.lock().release(&peer);
                });
            }
            Err(e) => {
                log::warn!("metrics: accept failed: {e:?}");
                executor::sleep_ms(100).await;
            }
        }
    }
}

/// Why a connection ended without a full answer.
enum End {
    Timeout(&'static str),
    Net(NetError),
}

impl core::fmt::Display for End {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            End::Timeout(what) => write!(f, "reset: {what}"),
            End::Net(e) => write!(f, "network: {e:?}"),
        }
    }
}

async fn serve(mut stream: TcpStream, node_key: [u8; 32]) -> Result<(), End> {
    let deadline_ms = now_ms() + REQUEST_MS_MAX;
    let mut reader = RequestReader::new();
    let mut buf = [0u8; 1024];
    let parsed = loop {
        let wait_ms = deadline_ms.saturating_sub(now_ms());
        let Some(read) = executor::timeout(wait_ms, stream.read(&mut buf)).await else {
            REQUESTS.fetch_add(1, Ordering::Relaxed);
            REQUESTS_REFUSED.fetch_add(1, Ordering::Relaxed);
            // Answered and closed (the stack bounds closing sockets); reset if even the
            // answer is not taken.
            match executor::timeout(1_000, stream.write_all(&http::refusal(Status::RequestTimeout))).await {
                Some(Ok(())) => stream.shutdown(),
                _ => stream.abort(),
            }
            return Err(End::Timeout("no complete request in time"));
        };
        let n = read.map_err(End::Net)?;
        if n == 0 {
            stream.shutdown();
            return Ok(());
        }
        match reader.push(&buf[..n]) {
            Ok(None) => continue,
            Ok(Some(request)) => break Ok(request),
            Err(e) => break Err(e),
        }
    };
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    let response = match parsed.as_ref().map(http::route) {
        Ok(Route::Metrics { body }) => {
            let text = gather(node_key).render();
            http::response(Status::Ok, http::CONTENT_TYPE_TEXT, text.as_bytes(), body)
        }
        Ok(Route::Refuse(status)) => {
            REQUESTS_REFUSED.fetch_add(1, Ordering::Relaxed);
            http::refusal(status)
        }
        Err(e) => {
            REQUESTS_REFUSED.fetch_add(1, Ordering::Relaxed);
            log::info!("metrics: refused a request: {e}");
            http::refusal(Status::from(*e))
        }
    };
    let send_ms = Deadlines::default().transfer_ms(response.len() as u64);
    match executor::timeout(send_ms, stream.write_all(&response)).await {
        Some(result) => result.map_err(End::Net)?,
        None => {
            stream.abort();
            return Err(End::Timeout("the response was not taken in time"));
        }
    }
    stream.shutdown();
    Ok(())
}

fn state_word(state: &WorkloadState) -> &'static str {
    match state {
        WorkloadState::Ready => "ready",
        WorkloadState::Running => "running",
        WorkloadState::Exited(_) => "exited",
        WorkloadState::Stopped(_) => "stopped",
        WorkloadState::Failed(_) => "failed",
    }
}

/// The node's figures now.
fn gather(node_key: [u8; 32]) -> NodeMetrics {
    let disks = crate::storage::disks()
        .into_iter()
        .map(|d| DiskMetrics {
            name: d.name,
            state: format!("{:?}", d.state).to_lowercase(),
            capacity_bytes: d.stat.capacity_bytes,
            used_bytes: d.stat.used_bytes,
            free_bytes: d.stat.free_bytes,
            live_bytes: d.stat.live_bytes,
            shards: d.stat.shard_count,
            reads: d.io.reads,
            writes: d.io.writes,
            read_bytes: d.io.read_bytes,
            written_bytes: d.io.written_bytes,
            errors: d.io.errors,
        })
        .collect();
    let nics = crate::net::nic_counters()
        .into_iter()
        .map(|(name, c, tx_errors, rx_filtered)| NicMetrics {
            name,
            rx_frames: c.rx_frames,
            tx_frames: c.tx_frames,
            rx_bytes: c.rx_bytes,
            tx_bytes: c.tx_bytes,
            tx_errors,
            rx_filtered,
        })
        .collect();
    let workloads: Vec<WorkloadMetrics> = crate::wasm::service::list()
        .into_iter()
        .map(|s| {
            let (log_bytes, log_lines) = s.info.as_ref().map_or((0, 0), |i| (i.log_bytes, i.log_lines));
            let (memory_bytes, memory_peak_bytes, memory_limit_bytes) =
                s.info.as_ref().map_or((0, 0, 0), |i| (i.memory_bytes, i.memory_peak_bytes, i.memory_limit_bytes));
            let summary = crate::control::to_summary(s);
            WorkloadMetrics {
                id: summary.id,
                name: summary.name,
                owner: crate::overlay::hex(&summary.owner[..8]),
                state: state_word(&summary.state).to_string(),
                cpu_ms: summary.cpu_ms,
                log_bytes,
                log_lines,
                memory_bytes,
                memory_peak_bytes,
                memory_limit_bytes,
            }
        })
        .collect();
    NodeMetrics {
        version: String::from(env!("CARGO_PKG_VERSION")),
        node_key: crate::overlay::hex(&node_key),
        uptime_ms: executor::now_ns() / 1_000_000,
        cpus: 1,
        cpu_idle_ms: executor::idle_ns() / 1_000_000,
        heap_size_bytes: crate::mm::heap::size_bytes(),
        heap_used_bytes: crate::mm::heap::allocated_bytes() as u64,
        frames_free_bytes: crate::mm::frames::free_bytes(),
        disks,
        store_owners: crate::storage::owner_count() as u64,
        nics,
        workloads,
        overlay: overlay(),
        ledger: crate::ledger::metrics(),
        control: crate::control::counters(),
        metrics: ServiceMetrics {
            connections: CONNECTIONS.load(Ordering::Relaxed),
            connections_refused: CONNECTIONS_REFUSED.load(Ordering::Relaxed),
            requests: REQUESTS.load(Ordering::Relaxed),
            requests_refused: REQUESTS_REFUSED.load(Ordering::Relaxed),
        },
    }
}

fn overlay() -> Option<OverlayMetrics> {
    let stats = (*crate::overlay::STATS.lock())?;
    let routes = crate::overlay::ROUTES.lock();
    Some(OverlayMetrics {
        peers_direct: routes.iter().filter(|r| r.direct).count() as u64,
        routes: routes.len() as u64,
        handshakes_initiated: stats.handshakes_initiated,
        handshakes_completed: stats.handshakes_completed,
        forwarded_packets: stats.forwarded,
        delivered_packets: stats.delivered,
        dropped: alloc::vec![
            ("unauthenticated", stats.dropped_unauthenticated),
            ("replay", stats.dropped_replays),
            ("rate_limited", stats.dropped_rate_limited),
            ("no_route_or_queue_full", stats.dropped_no_route_or_queue),
            ("hop_limit", stats.dropped_hop_limit),
            ("stale_initiation", stats.dropped_stale_inits),
            ("peer_table_full", stats.dropped_table_full),
            ("spoofed_source", stats.dropped_spoofed_source),
            ("half_open_expired", stats.half_open_dropped),
        ],
    })
}
