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
//! Bounds: [`SLOTS_MAX`] connections at once, [`SLOTS_PER_PEER_MAX`] per overlay address;
//! a request frame of at most `ledger::rpc::REQUEST_BYTES_MAX` (refused from its header);
//! one request in flight per connection; [`IDLE`] without a request, [`ANSWER_WAIT`] for
//! an answer, and [`IDLE`] for the client to take an answer, then the connection is reset.

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

/// Where the service runs.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    /// Its UDP address (the overlay underlay port).
    pub listen: SocketAddr,
    /// Its overlay identity (a key of its own, not the validator's signing key).
    pub identity_seed: [u8; 32],
    /// Overlay peers to link to (other validators, nodes): key and UDP address.
    pub peers: Vec<([u8; 32], SocketAddr)>,
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
pub(crate) fn spawn(config: OverlayConfig, events: SyncSender<Event>, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
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
    std::thread::Builder::new().name("overlay".into()).spawn(move || serve(stack, events, &stop))
}

fn serve(mut stack: Stack, events: SyncSender<Event>, stop: &AtomicBool) {
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..SLOTS_MAX)
        .map(|_| Slot { handle: listening(&mut stack), peer: None, input: Vec::new(), waiting: None, output: Vec::new(), since: now })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = stack.poll(POLL_SLICE) {
            eprintln!("validator: overlay socket: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
        for i in 0..slots.len() {
            let peers: Vec<[u8; 16]> = slots.iter().filter_map(|s| s.peer).collect();
            if !step(&mut stack, &mut slots[i], &peers, &events) {
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
fn step(stack: &mut Stack, slot: &mut Slot, peers: &[[u8; 16]], events: &SyncSender<Event>) -> bool {
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
    let mut buf = [0u8; 16 << 10];
    while s.can_recv() && slot.input.len() < rpc::REQUEST_BYTES_MAX + rpc::FRAME_HEAD_BYTES {
        let room = (rpc::REQUEST_BYTES_MAX + rpc::FRAME_HEAD_BYTES - slot.input.len()).min(buf.len());
        match s.recv_slice(&mut buf[..room]) {
            Ok(0) | Err(_) => break,
            Ok(n) => slot.input.extend_from_slice(&buf[..n]),
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
            return slot.since.elapsed() <= IDLE;
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
