//! The validator daemon's I/O around [`Node`]: TCP between validators (length-prefixed
//! frames of [`Message::encode`]), a client port on the same listener (submit a transaction,
//! status, a light block, a state read with its proof), timers from the wall clock, and the
//! block store. A submitted transaction is acknowledged only once a block holding it is
//! decided and durable in the store.
//!
//! With [`Config::overlay`] set, the daemon is also on the overlay ([`crate::service`]):
//! clients send the same requests (`ledger::rpc`) there, and the validators it names
//! (`OverlayConfig::consensus`) exchange consensus frames with it over overlay TCP instead
//! of plain TCP; the plain TCP listener stays for local clients and TCP-only peers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ledger::{Genesis, Keypair, LightBlock};
use malachitebft_core_types::Timeout;

use crate::context::Address;
use crate::node::{Message, Node, Output, Timeouts};
use crate::store::BlockStore;
use crate::wire::MESSAGE_BYTES_MAX;

use ledger::rpc::{self, FRAME_CONSENSUS, FRAME_REQUEST, FRAME_RESPONSE};
/// Frames queued per peer before new ones are dropped (consensus rebroadcasts).
pub const PEER_QUEUE_FRAMES_MAX: usize = 1024;
/// Client connections served at once.
pub const CLIENTS_MAX: usize = 64;
/// Transactions waiting for their block's acknowledgement.
pub const PENDING_ACKS_MAX: usize = 10_000;

pub use ledger::rpc::{Request, Response};

/// A validator's configuration.
pub struct Config {
    /// Its key.
    pub key: Keypair,
    /// The chain.
    pub genesis: Genesis,
    /// Where it listens (validators and clients).
    pub listen: SocketAddr,
    /// The other validators: key and address.
    pub peers: Vec<([u8; 32], SocketAddr)>,
    /// Its block store.
    pub store: PathBuf,
    /// Consensus timeouts.
    pub timeouts: Timeouts,
    /// The client service on the overlay, if any.
    pub overlay: Option<crate::service::OverlayConfig>,
}

/// Why the daemon stopped.
#[derive(Debug)]
pub enum DaemonError {
    /// The listener, a socket or the store failed.
    Io(String),
    /// The stored blocks do not replay.
    Restore(crate::node::RestoreError),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for DaemonError {}

/// What the loop handles: a consensus message from a peer, or a client's request with the
/// channel its answer goes back on.
pub(crate) enum Event {
    Message(Message),
    Request(Request, Sender<Response>),
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Writes one frame.
pub fn write_frame(stream: &mut TcpStream, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len() + 1).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.push(kind);
    frame.extend_from_slice(payload);
    stream.write_all(&frame)
}

/// Reads one frame (bounded by the largest message).
pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MESSAGE_BYTES_MAX + 1 {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame)?;
    let kind = frame[0];
    frame.remove(0);
    Ok((kind, frame))
}

/// A client call: one request, one response, on a fresh connection.
pub fn call(addr: SocketAddr, request: &Request, timeout: Duration) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let bytes = postcard::to_allocvec(request).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    write_frame(&mut stream, FRAME_REQUEST, &bytes)?;
    let (kind, payload) = read_frame(&mut stream)?;
    if kind != FRAME_RESPONSE {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    postcard::from_bytes(&payload).map_err(|_| std::io::ErrorKind::InvalidData.into())
}

fn serve_connection(mut stream: TcpStream, events: SyncSender<Event>, clients: Arc<std::sync::atomic::AtomicUsize>) {
    while let Ok((kind, payload)) = read_frame(&mut stream) {
        match kind {
            FRAME_CONSENSUS => {
                if let Some(message) = Message::decode(&payload) {
                    // A full queue drops the message (consensus rebroadcasts); a stopped
                    // daemon closes the connection, so the peer reconnects to its successor.
                    if let Err(mpsc::TrySendError::Disconnected(_)) = events.try_send(Event::Message(message)) {
                        break;
                    }
                }
            }
            FRAME_REQUEST => {
                let Ok(request) = postcard::from_bytes::<Request>(&payload) else { break };
                let (reply, answer) = mpsc::channel();
                if events.send(Event::Request(request, reply)).is_err() {
                    break;
                }
                // A submission waits for its block; the client's own timeout bounds it.
                let Ok(response) = answer.recv() else { break };
                let Ok(bytes) = postcard::to_allocvec(&response) else { break };
                if write_frame(&mut stream, FRAME_RESPONSE, &bytes).is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    clients.fetch_sub(1, Ordering::Relaxed);
}

fn peer_writer(addr: SocketAddr, frames: Receiver<Vec<u8>>, stop: Arc<AtomicBool>) {
    let mut stream: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok(frame) = frames.recv_timeout(Duration::from_millis(200)) else { continue };
        if stream.is_none() {
            stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok();
            if let Some(s) = &stream {
                let _ = s.set_nodelay(true);
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            }
        }
        if let Some(s) = &mut stream {
            if write_frame(s, FRAME_CONSENSUS, &frame).is_err() {
                stream = None;
            }
        }
    }
}

/// Runs a validator until `stop` is set.
pub fn run(config: Config, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    let io = |e: std::io::Error| DaemonError::Io(e.to_string());
    let store = BlockStore::open(&config.store).map_err(|e| DaemonError::Io(e.to_string()))?;
    let blocks = store.load().map_err(|e| DaemonError::Io(e.to_string()))?;
    let mut node = Node::restore(config.key.clone(), &config.genesis, config.timeouts, blocks).map_err(DaemonError::Restore)?;
    let mut stored = node.decided().len();
    let own = Address(config.key.public());
    let store_error = |e: crate::store::StoreError| DaemonError::Io(e.to_string());
    node.restore_signed(crate::wal::recorded_proposals(&store, stored as u64 + 1).map_err(store_error)?);

    // A restarted validator may wait for its old listener to close.
    let mut bound = TcpListener::bind(config.listen);
    for _ in 0..20 {
        if bound.is_ok() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        bound = TcpListener::bind(config.listen);
    }
    let listener = bound.map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let (events_tx, events) = mpsc::sync_channel::<Event>(4096);
    let clients = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let stop = stop.clone();
        let events_tx = events_tx.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if clients.load(Ordering::Relaxed) >= CLIENTS_MAX {
                            continue;
                        }
                        clients.fetch_add(1, Ordering::Relaxed);
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_nodelay(true);
                        let (events, clients) = (events_tx.clone(), clients.clone());
                        thread::spawn(move || serve_connection(stream, events, clients));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }
    let mut peers: BTreeMap<Address, SyncSender<Vec<u8>>> = BTreeMap::new();
    if let Some(overlay) = config.overlay.clone() {
        // Validators named with an overlay key get their consensus frames over the overlay.
        let mut consensus = Vec::new();
        for (key, overlay_key) in &overlay.consensus {
            let (tx, rx) = mpsc::sync_channel(PEER_QUEUE_FRAMES_MAX);
            peers.insert(Address(*key), tx);
            consensus.push(crate::service::ConsensusPeer { overlay_key: *overlay_key, frames: rx });
        }
        crate::service::spawn(overlay, consensus, events_tx.clone(), stop.clone()).map_err(io)?;
    }
    for (key, addr) in &config.peers {
        if peers.contains_key(&Address(*key)) {
            continue;
        }
        let (tx, rx) = mpsc::sync_channel(PEER_QUEUE_FRAMES_MAX);
        let (addr, stop) = (*addr, stop.clone());
        thread::spawn(move || peer_writer(addr, rx, stop));
        peers.insert(Address(*key), tx);
    }

    let mut timers: Vec<(Instant, Timeout)> = Vec::new();
    let mut wake: Option<Instant> = None;
    let mut acks: Vec<([u8; 32], Sender<Response>)> = Vec::new();
    let outputs = node.start(now_ms());
    let mut loop_state = Loop { peers: &peers, timers: &mut timers, wake: &mut wake, store: &store, own };
    loop_state.apply(outputs).map_err(store_error)?;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = timers.iter().map(|(at, _)| *at).chain(wake).map(|at| at.saturating_duration_since(now)).min().unwrap_or(Duration::from_millis(100));
        match events.recv_timeout(wait.min(Duration::from_millis(100))) {
            Ok(Event::Message(message)) => {
                let outputs = node.on_message(message, now_ms());
                Loop { peers: &peers, timers: &mut timers, wake: &mut wake, store: &store, own }.apply(outputs).map_err(store_error)?;
            }
            Ok(Event::Request(request, reply)) => answer(&mut node, request, reply, &mut acks),
            Err(_) => {}
        }
        let now = Instant::now();
        let due: Vec<Timeout> = timers.iter().filter(|(at, _)| *at <= now).map(|(_, t)| *t).collect();
        timers.retain(|(at, _)| *at > now);
        for timeout in due {
            let outputs = node.on_timeout(timeout, now_ms());
            Loop { peers: &peers, timers: &mut timers, wake: &mut wake, store: &store, own }.apply(outputs).map_err(store_error)?;
        }
        if wake.is_some_and(|at| at <= now) {
            wake = None;
            let outputs = node.on_wake(now_ms());
            Loop { peers: &peers, timers: &mut timers, wake: &mut wake, store: &store, own }.apply(outputs).map_err(store_error)?;
        }
        // Durable first, then acknowledged.
        while stored < node.decided().len() {
            let (block, commit) = &node.decided()[stored];
            store.append(block, commit).map_err(|e| DaemonError::Io(e.to_string()))?;
            stored += 1;
            store.prune_signed_below(block.header.height + 1).map_err(store_error)?;
            let height = block.header.height;
            let ids: Vec<[u8; 32]> = block.txs.iter().map(|tx| tx.id()).collect();
            acks.retain(|(id, reply)| {
                if ids.contains(id) {
                    let _ = reply.send(Response::Committed(height));
                    false
                } else {
                    true
                }
            });
        }
    }
    Ok(())
}

struct Loop<'a> {
    peers: &'a BTreeMap<Address, SyncSender<Vec<u8>>>,
    store: &'a BlockStore,
    own: Address,
    timers: &'a mut Vec<(Instant, Timeout)>,
    wake: &'a mut Option<Instant>,
}

impl Loop<'_> {
    /// Carries out `outputs`; the validator's own proposals and votes only once recorded
    /// ([`crate::wal::guard`]).
    fn apply(&mut self, outputs: Vec<Output>) -> Result<(), crate::store::StoreError> {
        for output in crate::wal::guard(self.store, &self.own, outputs)? {
            match output {
                Output::Broadcast(message) => {
                    let bytes = message.encode();
                    for peer in self.peers.values() {
                        let _ = peer.try_send(bytes.clone());
                    }
                }
                Output::Send(address, message) => {
                    if let Some(peer) = self.peers.get(&address) {
                        let _ = peer.try_send(message.encode());
                    }
                }
                Output::ScheduleTimeout(timeout, after_ms) => {
                    self.timers.retain(|(_, t)| *t != timeout);
                    self.timers.push((Instant::now() + Duration::from_millis(after_ms), timeout));
                }
                Output::CancelTimeout(timeout) => self.timers.retain(|(_, t)| *t != timeout),
                Output::CancelAllTimeouts => self.timers.clear(),
                Output::Wake(after_ms) => *self.wake = Some(Instant::now() + Duration::from_millis(after_ms)),
            }
        }
        Ok(())
    }
}

fn answer(node: &mut Node, request: Request, reply: Sender<Response>, acks: &mut Vec<([u8; 32], Sender<Response>)>) {
    let response = match request {
        Request::Submit(tx) => {
            if acks.len() >= PENDING_ACKS_MAX {
                Response::Refused("too many pending transactions".into())
            } else {
                let id = tx.id();
                match node.submit(tx) {
                    Ok(()) => {
                        acks.push((id, reply));
                        return;
                    }
                    Err(error) => Response::Refused(format!("{error:?}")),
                }
            }
        }
        Request::Status => Response::Status { height: node.ledger().meta().height, state_root: node.ledger().root() },
        Request::LightBlock(height) => {
            let index = usize::try_from(height.saturating_sub(1)).unwrap_or(usize::MAX);
            let block = if height == 0 { None } else { node.decided().get(index).map(|(b, c)| Box::new(LightBlock::of(b, c.clone()))) };
            Response::LightBlock(block)
        }
        Request::Prove(key) => match node.ledger().prove(&key) {
            Ok(proof) => Response::Proof { height: node.ledger().meta().height, proof },
            Err(error) => Response::Refused(format!("{error:?}")),
        },
        Request::LightBlocks { from, count } => {
            let first = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
            let count = count.min(rpc::LIGHT_BLOCKS_PER_RESPONSE_MAX) as usize;
            Response::LightBlocks(node.decided().iter().skip(first).take(count).map(|(b, c)| LightBlock::of(b, c.clone())).collect())
        }
        Request::NodeKeys { after } => {
            let mut keys: Vec<[u8; 32]> = node.ledger().node_keys(after.as_ref()).take(rpc::NODE_KEYS_PER_RESPONSE_MAX + 1).copied().collect();
            let more = keys.len() > rpc::NODE_KEYS_PER_RESPONSE_MAX;
            keys.truncate(rpc::NODE_KEYS_PER_RESPONSE_MAX);
            Response::NodeKeys { keys, more }
        }
        Request::Genesis => Response::Genesis(Box::new(node.genesis().clone())),
        Request::NodeContracts { node: of, after } => {
            let mut ids: Vec<u64> = node.ledger().node_contracts(&of, after).take(rpc::CONTRACT_IDS_PER_RESPONSE_MAX + 1).collect();
            let more = ids.len() > rpc::CONTRACT_IDS_PER_RESPONSE_MAX;
            ids.truncate(rpc::CONTRACT_IDS_PER_RESPONSE_MAX);
            Response::ContractIds { ids, more }
        }
    };
    let _ = reply.send(response);
}
