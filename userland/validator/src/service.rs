//! The validator's client service on the overlay: a `hostnet::Stack` with the validator's
//! overlay identity on its UDP port, and [`SLOTS_MAX`] TCP connection slots listening on
//! `ledger::rpc::PORT` of its overlay address. Each connection carries request frames, one
//! at a time, answered in order (`ledger::rpc`): submit a transaction (answered once its
//! block is decided and durable), status, light blocks with their commit certificates,
//! state reads with proofs, node listings.
//!
//! This is only transport: every request goes to the daemon's loop as an `Event::Request`
//! (the same path as the plain TCP listener), which answers from the sans-IO [`crate::Node`].
//!
//! Consensus between validators rides the same port: for each validator in
//! [`OverlayConfig::consensus`] the service keeps one outgoing connection to its overlay
//! address and writes the daemon's consensus frames on it; consensus frames coming in are
//! taken only on connections from those validators' overlay addresses (the overlay
//! authenticates a packet's source address), and go to the loop as `Event::Message`.
//!
//! Bounds: [`SLOTS_MAX`] connections at once (one per validator kept free of clients),
//! [`SLOTS_PER_PEER_MAX`] per overlay address;
//! a request frame of at most `ledger::rpc::REQUEST_BYTES_MAX` (refused from its header);
//! one request in flight per connection; [`IDLE`] without a request, [`ANSWER_WAIT`] for
//! an answer, and [`IDLE`] for the client to take an answer, then the connection is reset.
//! A validator's connection may carry frames up to `wire::MESSAGE_BYTES_MAX` (a block);
//! outgoing consensus bytes wait at most [`OUTGOING_BYTES_MAX`] per validator (more frames
//! are dropped: consensus rebroadcasts).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostnet::Stack;
use ledger::rpc::{self, Response};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::daemon::Event;

/// Connections served at once.
pub const SLOTS_MAX: usize = 32;
/// Connections from one overlay address at once.
pub const SLOTS_PER_PEER_MAX: usize = 4;
/// A connection without a request (or not taking its answer) for this long is reset.
pub const IDLE: Duration = Duration::from_secs(60);
/// Longest wait for the daemon's answer (a submission waits for its block).
pub const ANSWER_WAIT: Duration = Duration::from_secs(60);
const TCP_RX_BYTES: usize = 128 << 10;
const TCP_TX_BYTES: usize = 256 << 10;
const POLL_SLICE: Duration = Duration::from_millis(5);
/// Consensus bytes waiting to be sent to one validator at most.
pub const OUTGOING_BYTES_MAX: usize = 4 * crate::wire::MESSAGE_BYTES_MAX;

/// Where the service runs.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    /// Its UDP address (the overlay underlay port).
    pub listen: SocketAddr,
    /// Its overlay identity (a key of its own, not the validator's signing key).
    pub identity_seed: [u8; 32],
    /// Overlay peers to link to (other validators, nodes): key and UDP address.
    pub peers: Vec<([u8; 32], SocketAddr)>,
    /// Validators reached over the overlay for consensus: validator key, overlay key.
    pub consensus: Vec<([u8; 32], [u8; 32])>,
}

/// A validator the daemon sends consensus frames to over the overlay.
pub(crate) struct ConsensusPeer {
    /// Its overlay key (its overlay address follows from it).
    pub overlay_key: [u8; 32],
    /// The daemon's encoded messages for it.
    pub frames: Receiver<Vec<u8>>,
}

struct Outgoing {
    address: [u8; 16],
    frames: Receiver<Vec<u8>>,
    handle: Option<SocketHandle>,
    pending: Vec<u8>,
}

struct Slot {
    handle: SocketHandle,
    /// The connection's peer, once one connected.
    peer: Option<[u8; 16]>,
    input: Vec<u8>,
    waiting: Option<Receiver<Response>>,
    output: Vec<u8>,
    since: Instant,
}

fn listening(stack: &mut Stack) -> SocketHandle {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; TCP_RX_BYTES]), tcp::SocketBuffer::new(vec![0; TCP_TX_BYTES]));
    s.set_timeout(Some(smoltcp::time::Duration::from_secs(20)));
    s.set_nagle_enabled(false);
    let _ = s.listen(rpc::PORT);
    stack.sockets.add(s)
}

/// Starts the stack on `config.listen`; the returned thread serves until `stop` is set.
pub(crate) fn spawn(config: OverlayConfig, consensus: Vec<ConsensusPeer>, events: SyncSender<Event>, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let socket = UdpSocket::bind(config.listen)?;
    let overlay_config = overlay::Config { accept_unknown_peers: true, ..overlay::Config::default() };
    let mut stack = Stack::new(config.identity_seed, socket, overlay_config)?;
    for (key, endpoint) in &config.peers {
        // A peer that is our own key or a bad key is skipped; the rest still serves.
        let _ = stack.add_peer(*endpoint, *key);
    }
    eprintln!(
        "validator: overlay {} on udp {} serving the ledger on tcp port {}",
        std::net::Ipv6Addr::from(stack.address().0),
        config.listen,
        rpc::PORT
    );
    let outgoing = consensus
        .into_iter()
        .map(|p| Outgoing { address: overlay::Address::from_public_key(&overlay::PublicKey(p.overlay_key)).0, frames: p.frames, handle: None, pending: Vec::new() })
        .collect();
    std::thread::Builder::new().name("overlay".into()).spawn(move || serve(stack, outgoing, events, &stop))
}

/// Moves the daemon's consensus frames for one validator onto its connection (made anew
/// when there is none or it broke).
fn send_consensus(stack: &mut Stack, out: &mut Outgoing, next_port: &mut u16) {
    while out.pending.len() < OUTGOING_BYTES_MAX {
        let Ok(frame) = out.frames.try_recv() else { break };
        out.pending.extend_from_slice(&rpc::frame(rpc::FRAME_CONSENSUS, &frame));
    }
    // Beyond the bound, frames are dropped (consensus rebroadcasts what matters).
    while out.frames.try_recv().is_ok() {}
    if let Some(handle) = out.handle {
        let s = stack.sockets.get_mut::<tcp::Socket>(handle);
        if !s.is_open() || matches!(s.state(), tcp::State::CloseWait | tcp::State::TimeWait) {
            s.abort();
            stack.sockets.remove(handle);
            out.handle = None;
            // A frame cut by the broken connection is lost with it; the next one starts whole.
            out.pending.clear();
        }
    }
    if out.pending.is_empty() {
        return;
    }
    let handle = match out.handle {
        Some(handle) => handle,
        None => {
            let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 4 << 10]), tcp::SocketBuffer::new(vec![0; TCP_TX_BYTES]));
            s.set_timeout(Some(smoltcp::time::Duration::from_secs(20)));
            s.set_nagle_enabled(false);
            *next_port = if *next_port >= 65000 { 49152 } else { *next_port + 1 };
            let remote = smoltcp::wire::IpEndpoint::new(smoltcp::wire::IpAddress::Ipv6(smoltcp::wire::Ipv6Address::from_octets(out.address)), rpc::PORT);
            if s.connect(stack.iface.context(), remote, *next_port).is_err() {
                return;
            }
            let handle = stack.sockets.add(s);
            out.handle = Some(handle);
            handle
        }
    };
    let s = stack.sockets.get_mut::<tcp::Socket>(handle);
    if s.can_send() {
        let n = s.send_slice(&out.pending).unwrap_or(0);
        out.pending.drain(..n);
    }
    // Whatever the validator writes back (nothing, normally) is read and dropped.
    let mut sink = [0u8; 4 << 10];
    while s.can_recv() && s.recv_slice(&mut sink).unwrap_or(0) > 0 {}
}

fn serve(mut stack: Stack, mut outgoing: Vec<Outgoing>, events: SyncSender<Event>, stop: &AtomicBool) {
    let validators: Vec<[u8; 16]> = outgoing.iter().map(|o| o.address).collect();
    let mut next_port: u16 = 49152;
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..SLOTS_MAX)
        .map(|_| Slot { handle: listening(&mut stack), peer: None, input: Vec::new(), waiting: None, output: Vec::new(), since: now })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = stack.poll(POLL_SLICE) {
            eprintln!("validator: overlay socket: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
        for out in &mut outgoing {
            send_consensus(&mut stack, out, &mut next_port);
        }
        for i in 0..slots.len() {
            let peers: Vec<[u8; 16]> = slots.iter().filter_map(|s| s.peer).collect();
            if !step(&mut stack, &mut slots[i], &peers, &validators, &events) {
                let slot = &mut slots[i];
                stack.sockets.get_mut::<tcp::Socket>(slot.handle).abort();
                slot.peer = None;
                slot.input.clear();
                slot.waiting = None;
                slot.output.clear();
            }
        }
    }
}

/// Advances one slot; false when its connection must be reset.
fn step(stack: &mut Stack, slot: &mut Slot, peers: &[[u8; 16]], validators: &[[u8; 16]], events: &SyncSender<Event>) -> bool {
    let s = stack.sockets.get_mut::<tcp::Socket>(slot.handle);
    if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
        s.abort();
        let _ = s.listen(rpc::PORT);
        slot.peer = None;
        slot.input.clear();
        slot.waiting = None;
        slot.output.clear();
        return true;
    }
    if !s.is_active() {
        return true;
    }
    if slot.peer.is_none() {
        let Some(remote) = s.remote_endpoint() else { return true };
        #[allow(unreachable_patterns)]
        let address = match remote.addr {
            smoltcp::wire::IpAddress::Ipv6(a) => a.octets(),
            _ => return false,
        };
        if peers.iter().filter(|p| **p == address).count() >= SLOTS_PER_PEER_MAX {
            return false;
        }
        // Clients never take the slots the validators need for consensus.
        let clients = peers.iter().filter(|p| !validators.contains(p)).count();
        if !validators.contains(&address) && clients >= SLOTS_MAX.saturating_sub(validators.len()) {
            return false;
        }
        slot.peer = Some(address);
        slot.since = Instant::now();
    }
    if let Some(answer) = &slot.waiting {
        match answer.try_recv() {
            Ok(response) => {
                slot.output = rpc::response_frame(&response);
                slot.waiting = None;
                slot.since = Instant::now();
            }
            Err(TryRecvError::Empty) if slot.since.elapsed() > ANSWER_WAIT => {
                slot.output = rpc::response_frame(&Response::Refused(format!("no answer within {} s", ANSWER_WAIT.as_secs())));
                slot.waiting = None;
                slot.since = Instant::now();
            }
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
    if !slot.output.is_empty() {
        if s.can_send() {
            let n = s.send_slice(&slot.output).unwrap_or(0);
            slot.output.drain(..n);
            if n > 0 {
                slot.since = Instant::now();
            }
        }
        return slot.output.is_empty() || slot.since.elapsed() <= IDLE;
    }
    // Read at most one frame's worth: the rest waits in the socket (one request at a time).
    let validator = slot.peer.is_some_and(|p| validators.contains(&p));
    let payload_max = if validator { crate::wire::MESSAGE_BYTES_MAX } else { rpc::REQUEST_BYTES_MAX };
    let mut buf = [0u8; 16 << 10];
    while s.can_recv() && slot.input.len() < payload_max + rpc::FRAME_HEAD_BYTES {
        let room = (payload_max + rpc::FRAME_HEAD_BYTES - slot.input.len()).min(buf.len());
        match s.recv_slice(&mut buf[..room]) {
            Ok(0) | Err(_) => break,
            Ok(n) => slot.input.extend_from_slice(&buf[..n]),
        }
    }
    // Consensus frames from a validator, as many as are whole.
    while validator && !slot.input.is_empty() {
        match rpc::split_frame(&slot.input, payload_max) {
            Ok(Some((rpc::FRAME_CONSENSUS, payload, used))) => {
                if let Some(message) = crate::node::Message::decode(payload) {
                    // A full loop drops it (consensus rebroadcasts).
                    if let Err(TrySendError::Disconnected(_)) = events.try_send(Event::Message(message)) {
                        return false;
                    }
                }
                slot.input.drain(..used);
                slot.since = Instant::now();
            }
            // Part of a frame (which may be larger than any request): wait for the rest.
            Ok(None) => {
                if s.state() == tcp::State::CloseWait {
                    s.close();
                }
                return true;
            }
            Ok(Some(_)) => break,
            Err(_) => return false,
        }
    }
    match rpc::take_request(&slot.input) {
        Err(_) => return false,
        Ok(None) => {
            // The client finished (its FIN came): finish ours. (`may_recv` is also false
            // during the handshake, so the state is asked.)
            if s.state() == tcp::State::CloseWait {
                s.close();
            }
            // A validator's connection stays open while it is quiet.
            return validator || slot.since.elapsed() <= IDLE;
        }
        Ok(Some((request, used))) => {
            slot.input.drain(..used);
            let (reply, answer) = mpsc::channel();
            match events.try_send(Event::Request(request, reply)) {
                Ok(()) => slot.waiting = Some(answer),
                Err(TrySendError::Full(_)) => slot.output = rpc::response_frame(&Response::Refused("the validator is busy".into())),
                Err(TrySendError::Disconnected(_)) => return false,
            }
            slot.since = Instant::now();
        }
    }
    true
}
