//! Applies the node's TCP policy (`control::guard`) to the stack after every poll: the
//! listeners' backlogs (half-open sockets past the handshake timeout, a peer's beyond its
//! share, the oldest when none is left listening) and the sockets the node closed (past
//! the closing timeout, the oldest beyond the bound). Also the smoltcp timeouts and
//! keep-alive every TCP socket gets, and the rate-limited log lines of every eviction.
//!
//! What a socket *carries* (requests, deadlines per request, connections per peer) is
//! its owner's business: `kernel/src/control.rs` for the control service.

use alloc::vec::Vec;

use control::guard::{self, BacklogEviction, BacklogPolicy, ClosingEviction, ClosingPolicy, Peer, Slot};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpListenEndpoint};

use super::Network;

/// Keep-alive of an accepted or connected socket: a silent peer's TCP answers one every
/// 10 s, so a peer that vanished is noticed by [`CONNECTION_TIMEOUT`].
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A connection whose peer sends nothing (not even the answer to two keep-alives) for
/// this long is aborted by smoltcp; also bounds SYN-SENT and retransmissions.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// A listening socket's timeout: the backstop for SYN-RECEIVED (the policy drops a
/// handshake after 5 s) and for a connection not yet accepted whose peer went silent.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive of a connection waiting to be accepted: its honest, idle peer answers
/// within [`LISTEN_TIMEOUT`].
pub const LISTEN_KEEP_ALIVE: Duration = Duration::from_secs(3);

/// Timeouts of a socket that listens (and may become a connection waiting for accept).
pub fn tune_listening(socket: &mut tcp::Socket<'_>) {
    socket.set_timeout(Some(LISTEN_TIMEOUT));
    socket.set_keep_alive(Some(LISTEN_KEEP_ALIVE));
}

/// Timeouts and congestion control of a connection (accepted, or connecting).
///
/// Reno: without congestion control smoltcp sends the peer's whole window at once.
/// Over the overlay every segment becomes a datagram queued on a sender socket of
/// 32 KiB (`net::socket::UdpSocket::bind_sender`): a 128 KiB burst lost its tail there,
/// and a 1 MiB shard read stalled in retransmission back-offs past its deadline.
pub fn tune_connection(socket: &mut tcp::Socket<'_>) {
    socket.set_timeout(Some(CONNECTION_TIMEOUT));
    socket.set_keep_alive(Some(KEEP_ALIVE));
    socket.set_congestion_control(tcp::CongestionControl::Reno);
}

/// A peer's address as the policy's key: IPv6 as is, IPv4 mapped (`::ffff:a.b.c.d`).
pub fn peer_of(addr: IpAddress) -> Peer {
    match addr {
        IpAddress::Ipv6(a) => a.octets(),
        IpAddress::Ipv4(a) => {
            let mut p = [0u8; 16];
            p[10] = 0xff;
            p[11] = 0xff;
            p[12..].copy_from_slice(&a.octets());
            p
        }
    }
}

/// One log line per second per kind at most; the rest are counted and reported with
/// the next line (a flood must not become a flood of serial output).
pub struct RateLimitedLog {
    last_ms: Option<u64>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub const fn new() -> RateLimitedLog {
        RateLimitedLog { last_ms: None, suppressed: 0 }
    }

    /// Logs `args` (at warn) unless a line went out less than a second ago.
    pub fn warn(&mut self, now_ms: u64, args: core::fmt::Arguments<'_>) {
        if self.last_ms.is_some_and(|last| now_ms.saturating_sub(last) < 1000) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            log::warn!("{args} (and {} more like it)", self.suppressed);
        } else {
            log::warn!("{args}");
        }
        self.last_ms = Some(now_ms);
        self.suppressed = 0;
    }
}

/// One socket of a listener's backlog.
pub(crate) struct BacklogSlot {
    pub handle: SocketHandle,
    /// When the node first saw it in SYN-RECEIVED.
    pub half_open_since_ms: Option<u64>,
}

/// A listener's sockets, kept in the stack so the policy runs whether or not the
/// listener's owner is polling it.
pub(crate) struct Backlog {
    pub id: u64,
    pub network: Network,
    pub port: u16,
    pub slots: Vec<BacklogSlot>,
}

/// A socket the node closed, until its close handshake is over.
pub(crate) struct Closing {
    pub network: Network,
    pub handle: SocketHandle,
    pub closed_at_ms: u64,
}

/// Whether a backlog socket holds a connection for `accept`.
pub fn is_ready(state: tcp::State) -> bool {
    !matches!(state, tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed)
}

/// A fresh listening socket on `port` with the listening timeouts.
pub fn listen_again(socket: &mut tcp::Socket<'_>, port: u16) {
    if socket.is_open() {
        socket.abort();
    }
    // `listen` on a closed socket resets it (no RST goes out for a half-open one: its
    // peer's next segment finds no socket and gets one from the interface).
    let _ = socket.listen(IpListenEndpoint { addr: None, port });
    tune_listening(socket);
}

/// Log state of the guard: a rate limit per kind of eviction, and counts so far.
pub(crate) struct GuardLog {
    half_open: [RateLimitedLog; 3],
    closing: [RateLimitedLog; 2],
    pub half_open_evictions: u64,
    pub closing_evictions: u64,
}

impl GuardLog {
    pub const fn new() -> GuardLog {
        GuardLog {
            half_open: [RateLimitedLog::new(), RateLimitedLog::new(), RateLimitedLog::new()],
            closing: [RateLimitedLog::new(), RateLimitedLog::new()],
            half_open_evictions: 0,
            closing_evictions: 0,
        }
    }

    fn half_open(&mut self, why: BacklogEviction) -> &mut RateLimitedLog {
        &mut self.half_open[match why {
            BacklogEviction::TimedOut => 0,
            BacklogEviction::PeerLimit => 1,
            BacklogEviction::Full => 2,
        }]
    }

    fn closing(&mut self, why: ClosingEviction) -> &mut RateLimitedLog {
        &mut self.closing[match why {
            ClosingEviction::TimedOut => 0,
            ClosingEviction::TooMany => 1,
        }]
    }
}

/// Applies the backlog policy to `backlog` (whose sockets are in `set`); returns when it
/// next needs a look (ms since boot), if ever.
pub(crate) fn guard_backlog(backlog: &mut Backlog, set: &mut SocketSet<'static>, now_ms: u64, log: &mut GuardLog) -> Option<u64> {
    let policy = BacklogPolicy::default();
    // The common case, checked without allocating: nothing half-open or dead.
    let mut listening = 0;
    let quiet = backlog.slots.iter().all(|slot| {
        let state = set.get::<tcp::Socket>(slot.handle).state();
        listening += usize::from(state == tcp::State::Listen);
        state == tcp::State::Listen || (slot.half_open_since_ms.is_none() && is_ready(state))
    });
    if quiet && listening > 0 {
        return None;
    }
    let mut slots = Vec::with_capacity(backlog.slots.len());
    for slot in &mut backlog.slots {
        let socket = set.get_mut::<tcp::Socket>(slot.handle);
        let state = socket.state();
        if state != tcp::State::SynReceived {
            slot.half_open_since_ms = None;
        }
        slots.push(match state {
            tcp::State::Listen => Slot::Listening,
            tcp::State::SynReceived => match socket.remote_endpoint() {
                Some(remote) => Slot::HalfOpen { peer: peer_of(remote.addr), since_ms: *slot.half_open_since_ms.get_or_insert(now_ms) },
                None => Slot::Ready,
            },
            // Timed out (smoltcp) or reset before accept: listen again.
            tcp::State::Closed => {
                listen_again(socket, backlog.port);
                Slot::Listening
            }
            _ => Slot::Ready,
        });
    }
    for (i, why) in guard::backlog_evictions(&slots, now_ms, &policy) {
        let slot = &mut backlog.slots[i];
        let socket = set.get_mut::<tcp::Socket>(slot.handle);
        let from = socket.remote_endpoint();
        listen_again(socket, backlog.port);
        slot.half_open_since_ms = None;
        log.half_open_evictions += 1;
        let (port, total) = (backlog.port, log.half_open_evictions);
        match from {
            Some(from) => log.half_open(why).warn(now_ms, format_args!("net: tcp port {port}: dropped half-open connection from {}: {why} ({total} so far)", from.addr)),
            None => log.half_open(why).warn(now_ms, format_args!("net: tcp port {port}: dropped half-open connection: {why} ({total} so far)")),
        }
    }
    backlog
        .slots
        .iter()
        .filter_map(|s| s.half_open_since_ms)
        .map(|since| since.saturating_add(policy.handshake_timeout_ms))
        .min()
}

/// The stack's two socket sets, borrowed together.
pub(crate) struct Sets<'a> {
    pub underlay: &'a mut SocketSet<'static>,
    pub overlay: Option<&'a mut SocketSet<'static>>,
}

impl Sets<'_> {
    fn get(&mut self, network: Network) -> Option<&mut SocketSet<'static>> {
        match network {
            Network::Underlay => Some(&mut *self.underlay),
            Network::Overlay => self.overlay.as_deref_mut(),
        }
    }
}

/// Drops closing sockets whose close is over, aborts those the closing policy evicts
/// (they are dropped once their RST is out, at the next call); returns whether any was
/// aborted (the stack must poll again at once to send the resets) and when the policy
/// next needs a look.
pub(crate) fn guard_closing(closing: &mut Vec<Closing>, mut sets: Sets<'_>, now_ms: u64, log: &mut GuardLog) -> (bool, Option<u64>) {
    let policy = ClosingPolicy::default();
    if closing.is_empty() {
        return (false, None);
    }
    closing.retain(|c| {
        let Some(set) = sets.get(c.network) else { return false };
        let done = matches!(set.get::<tcp::Socket>(c.handle).state(), tcp::State::Closed | tcp::State::TimeWait);
        if done {
            set.remove(c.handle);
        }
        !done
    });
    let closed_at: Vec<u64> = closing.iter().map(|c| c.closed_at_ms).collect();
    let evictions = guard::closing_evictions(&closed_at, now_ms, &policy);
    for &(i, why) in &evictions {
        let c = &closing[i];
        let Some(set) = sets.get(c.network) else { continue };
        let socket = set.get_mut::<tcp::Socket>(c.handle);
        let (state, from) = (socket.state(), socket.remote_endpoint());
        socket.abort();
        log.closing_evictions += 1;
        let total = log.closing_evictions;
        let held_s = now_ms.saturating_sub(c.closed_at_ms) / 1000;
        match from {
            Some(from) => log.closing(why).warn(now_ms, format_args!("net: aborted closing socket to {} in {state} after {held_s} s: {why} ({total} so far)", from.addr)),
            None => log.closing(why).warn(now_ms, format_args!("net: aborted closing socket in {state} after {held_s} s: {why} ({total} so far)")),
        }
    }
    let next = closing.iter().map(|c| c.closed_at_ms.saturating_add(policy.timeout_ms)).min();
    (!evictions.is_empty(), next)
}
