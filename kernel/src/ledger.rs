//! The node on the ledger (issue 14): the kernel side of `nodeledger::Agent`.
//!
//! The agent (userland/nodeledger, sans-IO) decides what to ask the validators and checks
//! every answer (light client: quorum commits, proven reads). This module gives it I/O and
//! the node: one overlay TCP connection per validator (`ledger::rpc` frames on port
//! `ledger::rpc::PORT`), the node's identity key to sign with, its shard store for storage
//! proofs, its workloads' figures for usage reports, and the workload service to stop what
//! an ended contract ran. It also holds the node's answers to "may this owner deploy / put
//! shards here", which the control service asks ([`check_deploy`], [`storage_quota`]).
//!
//! Command line (bad values are reported and ignored, never stop the boot):
//! - `gridos.ledger=CHAINID`: the chain id (64 hex digits, the hash of its genesis). Without
//!   it the node is in development mode: deploys and shard puts need no contract (today's
//!   behaviour), and the boot log says so.
//! - `gridos.ledger.validators=KEY@HOST:PORT,...`: each validator's overlay key and UDP
//!   endpoint (the lines of `validator init`'s validators.txt), at most [`VALIDATORS_MAX`].
//!   They become static overlay peers (see [`overlay_peers`]).
//! - `gridos.farm=N` (see `crate::config`): the farm the node registers under.
//!
//! Bounds: one connection per validator; one request in flight on it (the agent's rule); a
//! response frame of at most [`RESPONSE_BYTES_MAX`] (refused from its length field, before
//! its bytes are buffered) and [`BUFFERS_BYTES_MAX`] of responses buffered over all
//! connections; [`CONNECT_MS`] to connect, [`ANSWER_MS`] (or [`SUBMIT_ANSWER_MS`] for a
//! submission, which validators answer once its block is durable) for an answer, else the
//! connection is reset; reconnects back off from [`BACKOFF_MS_MIN`] to [`BACKOFF_MS_MAX`].
//! Usage baselines are kept for at most [`USAGE_BASELINES_MAX`] contracts.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use control::BufferBudget;
use ledger::rpc::{self, Request, Response};
use ledger::{ContractId, Keypair, PublicKey};
use nodeledger::{Agent, ContractView};
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv6Address};
use spin::Mutex;

use crate::cmdline::Cmdline;
use crate::executor::{self, Event};
use crate::net::socket::{NetError, TcpStream};
use crate::overlay::hex;

/// Most validators `gridos.ledger.validators` may name (one connection each).
pub const VALIDATORS_MAX: usize = 16;
/// Largest response frame one connection takes (a batch of 64 light blocks of a
/// 4-validator chain is ~50 KiB; a state proof at most 20 KiB).
pub const RESPONSE_BYTES_MAX: usize = 1 << 20;
/// Response bytes buffered over all validator connections at once.
pub const BUFFERS_BYTES_MAX: u64 = 4 << 20;
/// Time to connect to a validator.
pub const CONNECT_MS: u64 = 15_000;
/// Time for an answer (from sending the request).
pub const ANSWER_MS: u64 = 20_000;
/// Time for the answer to a submission: validators answer once the block is durable and
/// give up after 60 s.
pub const SUBMIT_ANSWER_MS: u64 = 70_000;
/// First wait before reconnecting to a validator; doubled up to [`BACKOFF_MS_MAX`].
pub const BACKOFF_MS_MIN: u64 = 1_000;
/// Longest wait before reconnecting.
pub const BACKOFF_MS_MAX: u64 = 30_000;
/// A connection without a request for this long is closed (validators reset clients idle
/// for 60 s); the next request opens a new one.
pub const IDLE_MS_MAX: u64 = 45_000;
/// Longest a deploy naming a contract the node does not know yet waits for it.
pub const CONTRACT_WAIT_MS: u64 = 10_000;
/// Contracts whose CPU time at their last usage report is kept (the oldest go first).
pub const USAGE_BASELINES_MAX: usize = 256;
/// Longest an idle connection task sleeps before asking the agent again.
const POLL_MS_MAX: u64 = 1_000;
/// How often the housekeeping task looks at the agent (log lines, ended contracts).
const HOUSEKEEPING_MS: u64 = 2_000;

/// The ledger words of the command line.
pub struct LedgerConfig {
    pub chain_id: [u8; 32],
    /// Overlay key and underlay endpoint of each validator.
    pub validators: Vec<([u8; 32], IpEndpoint)>,
}

/// Reads `gridos.ledger` and `gridos.ledger.validators`; `None` (development mode) without
/// a valid chain id. Bad entries are reported and skipped.
pub fn from_cmdline(cmdline: &Cmdline<'_>) -> Option<LedgerConfig> {
    let value = cmdline.get("gridos.ledger")?;
    let Some(chain_id) = parse_hex32(value) else {
        log::warn!("config: ignoring gridos.ledger={value:?}: not a 64-hex-digit chain id; using the default (no ledger)");
        return None;
    };
    let mut validators: Vec<([u8; 32], IpEndpoint)> = Vec::new();
    for word in cmdline.get("gridos.ledger.validators").unwrap_or("").split(',').filter(|w| !w.is_empty()) {
        match crate::overlay::parse_peer(word) {
            Some(_) if validators.len() >= VALIDATORS_MAX => {
                log::warn!("config: gridos.ledger.validators: more than {VALIDATORS_MAX}; {word:?} and later ignored");
                break;
            }
            Some((key, _)) if validators.iter().any(|(k, _)| *k == key.0) => {
                log::warn!("config: gridos.ledger.validators: {word:?} names a key twice; ignored")
            }
            Some((key, endpoint)) => validators.push((key.0, endpoint)),
            None => log::warn!("config: gridos.ledger.validators: {word:?} is not KEY@HOST:PORT; ignored"),
        }
    }
    Some(LedgerConfig { chain_id, validators })
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The validators as static overlay peers (added to `gridos.overlay.peers`).
pub fn overlay_peers(config: Option<&LedgerConfig>) -> Vec<(::overlay::identity::PublicKey, IpEndpoint)> {
    config.map_or_else(Vec::new, |c| c.validators.iter().map(|(k, e)| (::overlay::identity::PublicKey(*k), *e)).collect())
}

/// Set once at start in ledger mode: the chain and how many validators.
static CHAIN: spin::Once<Chain> = spin::Once::new();

#[derive(Clone, Copy)]
struct Chain {
    chain_id: [u8; 32],
    validators: usize,
    farm: Option<u64>,
}

/// The agent, once started (ledger mode only).
static AGENT: Mutex<Option<Agent>> = Mutex::new(None);
/// The node's identity as a ledger signing key.
static SIGNER: spin::Once<Keypair> = spin::Once::new();
/// One wake-up per validator connection task (an [`Event`] holds one waker).
static WAKE: [Event; VALIDATORS_MAX] = [const { Event::new() }; VALIDATORS_MAX];
/// Response bytes buffered over all connections.
static BUFFERS: Mutex<BufferBudget> = Mutex::new(BufferBudget::new(BUFFERS_BYTES_MAX));
/// Validator connections up now, connects, and connections dropped for a bad or
/// oversized frame, a timeout or the node-wide buffer bound.
static CONNECTED: AtomicUsize = AtomicUsize::new(0);
static CONNECTS: AtomicU64 = AtomicU64::new(0);
static REFUSED_FRAMES: AtomicU64 = AtomicU64::new(0);
static TIMEOUTS: AtomicU64 = AtomicU64::new(0);
/// CPU time of each contract's workloads at their last usage report: (period, cpu_ms
/// then, the usage reported), bounded by [`USAGE_BASELINES_MAX`].
static USAGE: Mutex<BTreeMap<ContractId, (u64, u64, ledger::Usage)>> = Mutex::new(BTreeMap::new());

/// Whether the node is on a ledger (else development mode).
pub fn ledger_mode() -> bool {
    CHAIN.get().is_some()
}

fn with_agent<R>(f: impl FnOnce(&mut Agent) -> R) -> Option<R> {
    AGENT.lock().as_mut().map(f)
}

/// Milliseconds since the Unix epoch (the agent's clock: block times are in it).
fn unix_ms() -> u64 {
    let (secs, nanos) = crate::arch::x86_64::time::unix_time();
    secs.saturating_mul(1000).saturating_add(u64::from(nanos / 1_000_000))
}

fn boot_ms() -> u64 {
    executor::now_ns() / 1_000_000
}

/// The node's capacity as the inventory measured it.
fn capacity() -> ledger::Capacity {
    let inventory = crate::inventory::get().unwrap_or_default();
    ledger::Capacity {
        cores: inventory.cpu_count,
        memory_bytes: inventory.memory_bytes,
        disks_bytes: inventory.disks.iter().take(ledger::DISKS_MAX).map(|d| d.size_bytes).collect(),
        nics: inventory.nics.len() as u32,
    }
}

/// Starts the ledger client (ledger mode) or says the node is in development mode.
/// `identity` is the node's identity seed and public key (none without an overlay).
pub fn start(config: Option<LedgerConfig>, identity: Option<([u8; 32], [u8; 32])>) {
    let Some(config) = config else {
        log::info!("ledger: development mode (no ledger): deploys and shard puts need no contract");
        return;
    };
    let farm = crate::config::role_and_farm().1;
    // A node on a ledger never falls back to development mode: without a usable key or
    // validators it refuses what needs a contract.
    CHAIN.call_once(|| Chain { chain_id: config.chain_id, validators: config.validators.len(), farm });
    log::info!(
        "ledger: chain {} via {} validators, farm {}",
        hex(&config.chain_id[..8]),
        config.validators.len(),
        farm.map_or_else(|| String::from("none"), |f| format!("{f}"))
    );
    let Some((seed, node_key)) = identity else {
        log::error!("ledger: the node has no overlay identity: it cannot reach the validators; deploys and shard puts are refused");
        return;
    };
    let Some(key) = Keypair::try_from_seed(seed).filter(|k| k.public() == node_key) else {
        log::error!("ledger: the node's identity is not a ledger key; the ledger client does not start (contracts cannot be read)");
        return;
    };
    SIGNER.call_once(|| key);
    let agent = Agent::new(nodeledger::Config {
        chain_id: config.chain_id,
        node: node_key,
        farm,
        capacity: capacity(),
        validators: config.validators.len(),
    });
    *AGENT.lock() = Some(agent);
    for (index, (key, _)) in config.validators.iter().enumerate() {
        let address = ::overlay::address::Address::from_public_key(&::overlay::identity::PublicKey(*key));
        let remote = IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::from_octets(address.0)), rpc::PORT);
        executor::spawn("ledger-validator", validator_task(index, remote));
    }
    executor::spawn("ledger", housekeeping());
}

/// Wakes every connection task (the agent may have something new for each).
fn wake_all() {
    let count = CHAIN.get().map_or(0, |c| c.validators).min(VALIDATORS_MAX);
    for event in &WAKE[..count] {
        event.signal();
    }
}

/// Connects to validator `index` and serves the agent's requests to it, reconnecting
/// with backoff.
async fn validator_task(index: usize, remote: IpEndpoint) {
    let mut backoff_ms = BACKOFF_MS_MIN;
    loop {
        let connected = match executor::timeout(CONNECT_MS, TcpStream::connect(remote)).await {
            Some(Ok(stream)) => Some(stream),
            Some(Err(e)) => {
                log::debug!("ledger: validator {index}: connect failed: {e:?}");
                None
            }
            None => {
                log::debug!("ledger: validator {index}: no connection within {CONNECT_MS} ms");
                None
            }
        };
        if let Some(stream) = connected {
            CONNECTS.fetch_add(1, Ordering::Relaxed);
            CONNECTED.fetch_add(1, Ordering::Relaxed);
            let (answered, end) = serve_validator(index, stream).await;
            CONNECTED.fetch_sub(1, Ordering::Relaxed);
            if answered {
                backoff_ms = BACKOFF_MS_MIN;
            }
            match end {
                End::Idle => backoff_ms = 0,
                End::Net(NetError::Closed) | End::Net(NetError::ConnectionReset) => {
                    log::debug!("ledger: validator {index}: connection ended")
                }
                e => log::info!("ledger: validator {index}: connection reset: {e}"),
            }
        }
        // (Closed for idling: nothing was in flight, the validator did nothing wrong.)
        if backoff_ms > 0 {
            let now = unix_ms();
            with_agent(|a| a.on_disconnect(index, now));
        }
        wake_all();
        if backoff_ms > 0 {
            executor::sleep_ms(backoff_ms).await;
        }
        backoff_ms = (backoff_ms.max(BACKOFF_MS_MIN / 2) * 2).min(BACKOFF_MS_MAX);
    }
}

/// Why a validator connection ended.
enum End {
    /// No request for [`IDLE_MS_MAX`]: closed by the node.
    Idle,
    Net(NetError),
    /// No (whole) answer in time.
    Timeout,
    /// A frame the node refuses (length, kind, decoding, trailing bytes).
    Frame(&'static str),
    /// The node-wide response buffer bound was reached.
    Buffers,
}

impl core::fmt::Display for End {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            End::Idle => f.write_str("idle"),
            End::Net(e) => write!(f, "network: {e:?}"),
            End::Timeout => f.write_str("no answer in time"),
            End::Frame(why) => write!(f, "refused frame: {why}"),
            End::Buffers => write!(f, "the node's {} MiB of ledger response buffers are in use", BUFFERS_BYTES_MAX >> 20),
        }
    }
}

/// Serves the agent's requests for validator `index` on `stream` until it breaks or
/// idles; returns whether any answer came, and why it ended.
async fn serve_validator(index: usize, mut stream: TcpStream) -> (bool, End) {
    let mut answered = false;
    let mut idle_since_ms = boot_ms();
    loop {
        let request = loop {
            let now = unix_ms();
            if let Some(request) = with_agent(|a| a.poll_request(index, now)).flatten() {
                break request;
            }
            if boot_ms().saturating_sub(idle_since_ms) >= IDLE_MS_MAX {
                stream.shutdown();
                return (answered, End::Idle);
            }
            let next_ms = with_agent(|a| a.poll_timeout()).flatten();
            let wait_ms = next_ms.map_or(POLL_MS_MAX, |at| at.saturating_sub(now)).clamp(5, POLL_MS_MAX);
            let deadline_ns = executor::now_ns().saturating_add(wait_ms * 1_000_000);
            let wake = &WAKE[index];
            executor::wait_then_yield(Some(deadline_ns), |waker| {
                wake.register_waker(waker);
                wake.is_pending()
            })
            .await;
            let _ = wake.take();
        };
        let answer_ms = if matches!(request, Request::Submit(_)) { SUBMIT_ANSWER_MS } else { ANSWER_MS };
        let frame = rpc::request_frame(&request);
        let exchange = async {
            stream.write_all(&frame).await.map_err(End::Net)?;
            read_response(&mut stream).await
        };
        let response = match executor::timeout(answer_ms, exchange).await {
            Some(Ok(response)) => response,
            Some(Err(end)) => {
                if matches!(end, End::Frame(_) | End::Buffers) {
                    REFUSED_FRAMES.fetch_add(1, Ordering::Relaxed);
                }
                stream.abort();
                return (answered, end);
            }
            None => {
                TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                stream.abort();
                return (answered, End::Timeout);
            }
        };
        answered = true;
        idle_since_ms = boot_ms();
        on_response(index, response);
    }
}

/// Node-wide buffer bytes held by one response being read; given back on drop.
struct Reserved(u64);

impl Drop for Reserved {
    fn drop(&mut self) {
        BUFFERS.lock().release(self.0);
    }
}

/// Reads one response frame: its length is checked against [`RESPONSE_BYTES_MAX`] and
/// the node-wide budget as soon as its head is in, before its bytes are buffered.
async fn read_response(stream: &mut TcpStream) -> Result<Response, End> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut reserved: Option<Reserved> = None;
    loop {
        // The whole frame is `need` bytes once the head is known.
        let need = match rpc::split_frame(&buf, RESPONSE_BYTES_MAX) {
            Err(_) => return Err(End::Frame("length out of bounds")),
            Ok(Some((kind, payload, used))) => {
                if used != buf.len() {
                    return Err(End::Frame("bytes after the answer"));
                }
                if kind != rpc::FRAME_RESPONSE {
                    return Err(End::Frame("not a response"));
                }
                return postcard::from_bytes::<Response>(payload).map_err(|_| End::Frame("does not decode"));
            }
            Ok(None) => buf.get(..4).map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize + 4),
        };
        if let (Some(need), None) = (need, &reserved) {
            let bytes = need as u64;
            if !BUFFERS.lock().reserve(bytes) {
                return Err(End::Buffers);
            }
            reserved = Some(Reserved(bytes));
            buf.reserve_exact(need.saturating_sub(buf.len()));
        }
        // Never read past the frame (a validator answers one request with one frame).
        let want = need.map_or(4 - buf.len(), |n| n - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..want]).await.map_err(End::Net)?;
        if n == 0 {
            return Err(End::Net(NetError::Closed));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Hands `response` to the agent, then acts on what it did.
fn on_response(index: usize, response: Response) {
    let Some(signer) = SIGNER.get() else { return };
    let mut local = KernelLocal { key: signer, ended: Vec::new() };
    let now = unix_ms();
    let events = with_agent(|a| {
        a.on_response(index, response, now, &mut local);
        a.take_events()
    });
    for event in events.unwrap_or_default() {
        log_event(&event);
    }
    stop_ended(&local.ended);
    wake_all();
}

/// `C cores, memory M MiB, disks D MiB` of a capacity (disks summed).
fn capacity_text(c: &ledger::Capacity) -> String {
    format!("cores {}, memory {} MiB, disks {} MiB", c.cores, c.memory_bytes >> 20, c.disk_bytes() >> 20)
}

/// The agent's event as its log line (the prefixes tests and operators read).
fn log_event(event: &nodeledger::Event) {
    use nodeledger::Event as E;
    let node = SIGNER.get().map(|k| hex(&k.public()[..8])).unwrap_or_default();
    match event {
        E::ChainAccepted { period_ms } => log::info!("ledger: genesis accepted (billing period {period_ms} ms)"),
        E::Height { height, period } => log::info!("ledger: height {height} period {period}"),
        E::Registered { farm, capacity } => {
            log::info!("ledger: registered node {node} in farm {farm} ({})", capacity_text(capacity))
        }
        E::CapacityUpdated { farm, capacity } => {
            log::info!("ledger: capacity updated for node {node} in farm {farm} ({})", capacity_text(capacity))
        }
        E::AlreadyRegistered { farm } => log::info!("ledger: node already registered in farm {farm}"),
        E::NoFarm => log::warn!("ledger: node {node} is not registered and no farm is configured (gridos.farm): not registering"),
        E::UptimeReported { period } => log::info!("ledger: uptime reported for period {period}"),
        E::ProofOk { contract, shard, period } => log::info!("ledger: proof ok contract {contract} shard {shard} period {period}"),
        E::ProofFailed { contract, shard, period, why } => {
            log::warn!("ledger: proof FAILED contract {contract} shard {shard} period {period}: {why}")
        }
        E::UsageReported { contract, period } => log::info!("ledger: usage reported contract {contract} period {period}"),
        E::ContractEnded { contract } => log::info!("ledger: workload contract {contract} ended"),
        E::StorageContractEnded { contract } => log::info!("ledger: storage contract {contract} ended: its shard quota is gone"),
        E::TxRefused { purpose, why } => log::warn!("ledger: transaction refused ({purpose:?}): {why}"),
        E::ValidatorDistrusted { validator, why, until_ms } => log::warn!(
            "ledger: validator {validator} distrusted for {} s: {why:?}",
            until_ms.saturating_sub(unix_ms()) / 1000
        ),
    }
}

/// Stops every workload that runs under one of `contracts` (ended on the ledger).
fn stop_ended(contracts: &[ContractId]) {
    if contracts.is_empty() {
        return;
    }
    for w in crate::wasm::service::under_contracts() {
        if w.running && contracts.contains(&w.contract) {
            log::info!("ledger: workload contract {} ended: stopping {}", w.contract, w.name);
            if let Err(e) = crate::wasm::service::stop(w.id) {
                log::warn!("ledger: could not stop workload {} ({}): {e}", w.id, w.name);
            }
        }
    }
}

/// What the agent asks of the node while it handles an answer.
struct KernelLocal<'a> {
    key: &'a Keypair,
    /// Contracts the agent found ended (their workloads are stopped after it returns).
    ended: Vec<ContractId>,
}

impl nodeledger::Local for KernelLocal<'_> {
    fn sign(&mut self, message: &[u8]) -> ledger::Signature {
        self.key.sign(message)
    }

    fn uptime_secs(&mut self) -> u64 {
        executor::now_ns() / 1_000_000_000
    }

    fn prove_shard(&mut self, owner: &PublicKey, key: &[u8; 32], challenge: u64) -> Result<ledger::ProofData, String> {
        crate::storage::prove(owner, key, challenge).map(ledger::ProofData::from).map_err(|e| format!("{e:?}"))
    }

    fn usage(&mut self, contract: ContractId, period: u64) -> Option<ledger::Usage> {
        usage(contract, period)
    }

    fn contract_ended(&mut self, contract: ContractId) {
        if self.ended.len() < VALIDATORS_MAX * 16 && !self.ended.contains(&contract) {
            self.ended.push(contract);
        }
    }
}

/// The usage of `contract`'s workloads in `period`: CPU time since the last report
/// (since the workload started for the first one), their peak memory and their file
/// areas' bytes now. `None` when no workload here names the contract.
fn usage(contract: ContractId, period: u64) -> Option<ledger::Usage> {
    let workloads: Vec<_> = crate::wasm::service::under_contracts().into_iter().filter(|w| w.contract == contract).collect();
    if workloads.is_empty() {
        return None;
    }
    let cpu_ms: u64 = workloads.iter().map(|w| w.cpu_ms).sum();
    let mut baselines = USAGE.lock();
    if let Some((at, _, usage)) = baselines.get(&contract) {
        if *at == period {
            return Some(*usage);
        }
    }
    let before = baselines.get(&contract).map_or(0, |(_, cpu, _)| *cpu);
    let usage = ledger::Usage {
        cpu_ms: cpu_ms.saturating_sub(before),
        memory_peak_bytes: workloads.iter().map(|w| w.memory_peak_bytes).max().unwrap_or(0),
        disk_bytes: workloads.iter().map(|w| w.disk_bytes).sum(),
        net_rx_bytes: 0,
        net_tx_bytes: 0,
    };
    if baselines.len() >= USAGE_BASELINES_MAX && !baselines.contains_key(&contract) {
        let oldest = baselines.iter().min_by_key(|(_, (at, _, _))| *at).map(|(id, _)| *id);
        if let Some(oldest) = oldest {
            baselines.remove(&oldest);
        }
    }
    baselines.insert(contract, (period, cpu_ms, usage));
    Some(usage)
}

/// Watches the agent: stops workloads whose contract ended (also those deployed before a
/// reboot, which the agent's listing of active contracts no longer names), and asks the
/// agent to read contracts it does not know.
async fn housekeeping() {
    loop {
        executor::sleep_ms(HOUSEKEEPING_MS).await;
        let Some(status) = with_agent(|a| a.status()) else { continue };
        if status.height == 0 {
            continue;
        }
        let mut ended = Vec::new();
        let mut want = false;
        for w in crate::wasm::service::under_contracts().into_iter().filter(|w| w.running) {
            match with_agent(|a| a.workload_contract(w.contract)) {
                Some(ContractView::Ended) | Some(ContractView::NotThisNode) => ended.push(w.contract),
                Some(ContractView::Unknown) => {
                    with_agent(|a| a.want_contract(w.contract));
                    want = true;
                }
                _ => {}
            }
        }
        stop_ended(&ended);
        if want {
            wake_all();
        }
    }
}

/// Whether `manifest` may be deployed (or started) here: always in development mode; in
/// ledger mode it must name an active workload contract for this node owned by its
/// owner, whose resources cover its memory and storage limits. The refusal starts with
/// `no contract:`.
pub fn check_deploy(manifest: &workloads::Manifest) -> Result<(), String> {
    if !ledger_mode() {
        return Ok(());
    }
    let Some(id) = manifest.contract else {
        return Err("no contract: this node is on a ledger; the manifest must name a workload contract for it".into());
    };
    let view = with_agent(|a| a.workload_contract(id)).unwrap_or(ContractView::Unknown);
    match view {
        ContractView::Active { owner, resources } => {
            if owner != manifest.owner {
                return Err(format!("no contract: contract {id} is not yours"));
            }
            if manifest.limits.memory_bytes > resources.memory_bytes {
                return Err(format!(
                    "no contract: the workload's memory limit ({} bytes) exceeds contract {id}'s {} bytes",
                    manifest.limits.memory_bytes, resources.memory_bytes
                ));
            }
            if manifest.limits.storage_bytes > resources.disk_bytes {
                return Err(format!(
                    "no contract: the workload's storage limit ({} bytes) exceeds contract {id}'s {} disk bytes",
                    manifest.limits.storage_bytes, resources.disk_bytes
                ));
            }
            Ok(())
        }
        ContractView::NotThisNode => Err(format!("no contract: contract {id} is not for this node")),
        ContractView::Ended => Err(format!("no contract: contract {id} has ended")),
        ContractView::Unknown => Err(format!("no contract: contract {id} is not an active workload contract this node can read on the ledger")),
    }
}

/// In ledger mode, waits (at most [`CONTRACT_WAIT_MS`]) until the node has read contract
/// `id` from the ledger, asking the agent to read it now.
pub async fn await_contract(id: ContractId) {
    if !ledger_mode() {
        return;
    }
    let deadline_ms = boot_ms() + CONTRACT_WAIT_MS;
    let mut asked = false;
    while boot_ms() < deadline_ms {
        match with_agent(|a| a.workload_contract(id)) {
            Some(ContractView::Unknown) => {}
            _ => return,
        }
        if !asked {
            with_agent(|a| a.want_contract(id));
            wake_all();
            asked = true;
        }
        executor::sleep_ms(200).await;
    }
}

/// `owner`'s shard quota on this node in ledger mode (the bytes its active storage
/// contracts place here, 0 without one); `None` in development mode.
pub fn storage_quota(owner: &PublicKey) -> Option<u64> {
    if !ledger_mode() {
        return None;
    }
    Some(with_agent(|a| a.storage_quota(owner)).unwrap_or(0))
}

/// The refusal of a shard put without a covering contract.
pub const NO_STORAGE_CONTRACT: &str = "no contract: no active storage contract of yours places shards on this node";

/// The ledger client's figures for `/metrics` (`None` in development mode).
pub fn metrics() -> Option<metrics::node::LedgerMetrics> {
    CHAIN.get()?;
    let status = with_agent(|a| a.status());
    Some(metrics::node::LedgerMetrics {
        height: status.as_ref().map_or(0, |s| s.height),
        period: status.as_ref().map_or(0, |s| s.period),
        last_uptime_period: status.as_ref().and_then(|s| s.last_uptime_period),
        proofs_ok: status.as_ref().map_or(0, |s| s.proofs_ok),
        proofs_failed: status.as_ref().map_or(0, |s| s.proofs_failed),
        validators_connected: CONNECTED.load(Ordering::Relaxed) as u64,
        refused_frames: REFUSED_FRAMES.load(Ordering::Relaxed),
    })
}

/// One line for the console screen.
pub fn screen_line() -> String {
    let Some(chain) = CHAIN.get() else {
        return String::from("development mode (no ledger): no contracts needed");
    };
    let farm = chain.farm.map_or_else(|| String::from("none"), |f| format!("{f}"));
    let connected = CONNECTED.load(Ordering::Relaxed);
    match with_agent(|a| a.status()) {
        None => format!("chain {}, farm {farm}: client not running", hex(&chain.chain_id[..4])),
        Some(s) => format!(
            "chain {} period {}, farm {farm}{}, {connected}/{} validators, proofs {} ok {} failed",
            hex(&chain.chain_id[..4]),
            s.period,
            if s.registered { ", registered" } else { ", not registered" },
            chain.validators,
            s.proofs_ok,
            s.proofs_failed
        ),
    }
}
