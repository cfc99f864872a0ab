//! How long and how many: the node's policy against clients that hold its TCP services
//! without using them, sans-IO (every call takes `now_ms`; nothing here reads a clock or
//! touches a socket). The kernel applies it to the control service and, for the parts
//! that are not about the control protocol ([`backlog_evictions`], [`closing_evictions`]), to every
//! TCP listener and socket of the overlay (workloads' included).
//!
//! - [`Admission`]: connections served at once, in all and per peer (overlay source
//!   address). Overlay addresses are authenticated, but keys are free: the per-peer cap
//!   stops one key from taking every slot, the total caps what many keys can pin.
//! - [`RequestTimer`]: the deadlines of one control connection. The first signed request
//!   must arrive within [`Deadlines::first_request_ms`]; a request, once its first byte has
//!   arrived, must be complete within [`Deadlines::request_base_ms`] plus its declared size
//!   at [`Deadlines::min_rate_bytes_per_s`], and must keep that rate on average after the
//!   base time (a client that announces 32 MiB and stalls after one loses the slot, and the
//!   big-request token, within seconds, not at the 266 s its size allows). Bytes arriving
//!   move the deadline only by what they are worth at the minimum rate, so a byte a minute
//!   loses the slot as surely as silence.
//! - [`backlog_evictions`]: which half-open (SYN-RECEIVED) sockets of a listener to recycle: those
//!   past the handshake timeout, a peer's beyond its share, and the oldest when no socket
//!   is left listening (so a new SYN, an honest one perhaps, always finds a listener).
//! - [`closing_evictions`]: which sockets the node already closed to abort: any past
//!   [`ClosingPolicy::timeout_ms`] (a peer stalling in FIN-WAIT-2 or LAST-ACK), and the
//!   oldest beyond [`ClosingPolicy::sockets_max`] (each pins its buffers, 256 KiB).
//!
//! The numbers (the `*_DEFAULT` constants) are chosen here, with their reasons.

use alloc::vec::Vec;

/// A peer's overlay (IPv6) address.
pub type Peer = [u8; 16];

/// Control connections served at once. Each can buffer [`crate::MAX_FRAME_BYTES`] only
/// with the kernel's single big-request token, otherwise one shard piece's frame (just
/// over 1 MiB, [`crate::shard::SHARD_PIECE_FRAME_BYTES_MAX`]), plus 256 KiB of socket
/// buffers: eight cost about 10 MiB at worst, and leave room for honest users while a
/// few keys misbehave. (Shard uploads and reads buffer more, within the node-wide
/// budget of [`crate::shard`].)
pub const CONNECTIONS_MAX_DEFAULT: usize = 8;
/// Control connections per peer address. `gridctl` opens one per command; two lets a
/// user run a `logs --follow` next to another command.
pub const CONNECTIONS_PER_PEER_MAX_DEFAULT: usize = 2;

// One peer never takes every slot, and a peer can always hold at least one.
const _: () = assert!(CONNECTIONS_PER_PEER_MAX_DEFAULT >= 1 && CONNECTIONS_PER_PEER_MAX_DEFAULT < CONNECTIONS_MAX_DEFAULT);

/// Why a connection is not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    Full {
        /// Connections served at once.
        connections_max: usize,
    },
    /// This peer holds its share already.
    PeerLimit {
        /// Connections per peer.
        per_peer_max: usize,
    },
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::Full { connections_max } => write!(f, "all {connections_max} connection slots are busy"),
            Refusal::PeerLimit { per_peer_max } => write!(f, "the peer already has {per_peer_max} connections"),
        }
    }
}

/// Connections served at once, in all and per peer.
#[derive(Debug)]
pub struct Admission {
    connections_max: usize,
    per_peer_max: usize,
    /// Peers with at least one connection, and how many.
    active: Vec<(Peer, usize)>,
}

impl Admission {
    /// A table admitting `connections_max` connections, `per_peer_max` per peer.
    pub const fn new(connections_max: usize, per_peer_max: usize) -> Admission {
        Admission { connections_max, per_peer_max, active: Vec::new() }
    }

    /// Connections admitted and not yet released.
    pub fn active(&self) -> usize {
        self.active.iter().map(|(_, n)| n).sum()
    }

    /// Connections of `peer`.
    pub fn of(&self, peer: &Peer) -> usize {
        self.active.iter().find(|(p, _)| p == peer).map_or(0, |(_, n)| *n)
    }

    /// Admits one connection of `peer`, or says why not. Each admission needs one
    /// [`Admission::release`].
    pub fn admit(&mut self, peer: Peer) -> Result<(), Refusal> {
        if self.of(&peer) >= self.per_peer_max {
            return Err(Refusal::PeerLimit { per_peer_max: self.per_peer_max });
        }
        if self.active() >= self.connections_max {
            return Err(Refusal::Full { connections_max: self.connections_max });
        }
        match self.active.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, n)) => *n += 1,
            None => self.active.push((peer, 1)),
        }
        debug_assert!(self.active() <= self.connections_max);
        Ok(())
    }

    /// Ends one admitted connection of `peer` (a peer with none is left alone).
    pub fn release(&mut self, peer: &Peer) {
        if let Some(i) = self.active.iter().position(|(p, _)| p == peer) {
            self.active[i].1 -= 1;
            if self.active[i].1 == 0 {
                self.active.swap_remove(i);
            }
        }
    }
}

/// The deadlines of a control connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// From connect to the first complete request (plus its size allowance).
    pub first_request_ms: u64,
    /// From one answered request to the first byte of the next.
    pub idle_ms: u64,
    /// Fixed part of the time a request may take from its first byte.
    pub request_base_ms: u64,
    /// Slowest transfer the node waits for: a request (or response) of `n` bytes gets
    /// `n / min_rate_bytes_per_s` seconds on top of the base.
    pub min_rate_bytes_per_s: u64,
    /// Longest wait for the big-request token (another connection is uploading).
    pub token_wait_ms: u64,
}

/// `gridctl` sends its request right after the hello, and has built and signed it
/// before connecting: 10 s covers seconds of overlay round trips; a client that opens a
/// connection and sends nothing frees the slot after that.
pub const FIRST_REQUEST_MS_DEFAULT: u64 = 10_000;
/// Between requests: `logs --follow` asks again every second; 30 s of nothing is a
/// client that went away (or never meant to ask).
pub const IDLE_MS_DEFAULT: u64 = 30_000;
/// A small request (a few hundred bytes) takes one round trip or a few: 10 s.
pub const REQUEST_BASE_MS_DEFAULT: u64 = 10_000;
/// 128 KiB/s (1 Mbit/s): a largest frame (32 MiB) gets 256 s. An uplink slower than that
/// cannot deploy the largest modules; a client sending a byte a minute is cut off after
/// the base time.
pub const MIN_RATE_BYTES_PER_S_DEFAULT: u64 = 128 << 10;

impl Default for Deadlines {
    fn default() -> Self {
        let largest = transfer_ms_with(REQUEST_BASE_MS_DEFAULT, MIN_RATE_BYTES_PER_S_DEFAULT, crate::MAX_FRAME_BYTES as u64);
        Deadlines {
            first_request_ms: FIRST_REQUEST_MS_DEFAULT,
            idle_ms: IDLE_MS_DEFAULT,
            request_base_ms: REQUEST_BASE_MS_DEFAULT,
            min_rate_bytes_per_s: MIN_RATE_BYTES_PER_S_DEFAULT,
            // The token holder finishes within its own deadline, at most `largest`: one
            // holder's worth of waiting, then `Busy`.
            token_wait_ms: largest,
        }
    }
}

fn transfer_ms_with(base_ms: u64, rate_bytes_per_s: u64, bytes: u64) -> u64 {
    base_ms.saturating_add(bytes.saturating_mul(1000) / rate_bytes_per_s.max(1))
}

impl Deadlines {
    /// Time allowed to move `bytes` (a request's body, or a response): the base plus the
    /// bytes at the minimum rate.
    pub fn transfer_ms(&self, bytes: u64) -> u64 {
        transfer_ms_with(self.request_base_ms, self.min_rate_bytes_per_s, bytes)
    }
}

/// Which deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// No complete request in time after connect.
    FirstRequest,
    /// Nothing sent after the last answer.
    Idle,
    /// A request started and was not complete in time.
    Request {
        /// The size its frame header announced (when it had arrived).
        declared_bytes: Option<u64>,
    },
    /// The big-request token did not come in time.
    TokenWait,
}

impl core::fmt::Display for Expired {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Expired::FirstRequest => f.write_str("no complete request in time after connecting"),
            Expired::Idle => f.write_str("idle"),
            Expired::Request { declared_bytes: Some(n) } => write!(f, "a request of {n} bytes was not complete in time"),
            Expired::Request { declared_bytes: None } => f.write_str("a request's header was not complete in time"),
            Expired::TokenWait => f.write_str("waited too long for another connection's large upload"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Connected, no request complete yet.
    First,
    /// Between requests, nothing of the next one received.
    Idle,
    /// Part of a request received.
    Receiving,
    /// Waiting for the big-request token.
    Token,
}

/// The deadlines of one control connection (see the module docs). Feed it what happens
/// ([`RequestTimer::on_received`], [`RequestTimer::on_request_done`], token wait and
/// grant); wait on the socket no longer than [`RequestTimer::deadline_ms`]; close when
/// [`RequestTimer::check`] fails.
#[derive(Clone, Debug)]
pub struct RequestTimer {
    deadlines: Deadlines,
    phase: Phase,
    /// When the current phase began.
    since_ms: u64,
    /// The pending request's announced size, once its header arrived.
    declared_bytes: Option<u64>,
    /// The hard deadline of the phase (for a request: base plus its size at the rate).
    deadline_ms: u64,
    /// Bytes of the pending request held, as last reported.
    buffered_bytes: usize,
    /// `buffered_bytes` when the request's clock (re)started: progress counts from there.
    progress_from_bytes: usize,
}

impl RequestTimer {
    /// The timer of a connection accepted at `now_ms`.
    pub fn new(now_ms: u64, deadlines: Deadlines) -> RequestTimer {
        let deadline_ms = now_ms.saturating_add(deadlines.first_request_ms);
        RequestTimer {
            deadlines,
            phase: Phase::First,
            since_ms: now_ms,
            declared_bytes: None,
            deadline_ms,
            buffered_bytes: 0,
            progress_from_bytes: 0,
        }
    }

    /// When the connection must be closed unless something completes (or, for a request
    /// of known size, more bytes arrive) first: the phase's hard deadline, and for a
    /// request whose size is known, the earlier of that and the time its bytes so far
    /// are worth at the minimum rate (after the base time).
    pub fn deadline_ms(&self) -> u64 {
        let base_ms = match (self.phase, self.declared_bytes) {
            (Phase::First, Some(_)) => self.deadlines.first_request_ms,
            (Phase::Receiving, Some(_)) => self.deadlines.request_base_ms,
            _ => return self.deadline_ms,
        };
        let moved = self.buffered_bytes.saturating_sub(self.progress_from_bytes) as u64;
        let by_rate = self
            .since_ms
            .saturating_add(base_ms)
            .saturating_add(moved.saturating_mul(1000) / self.deadlines.min_rate_bytes_per_s.max(1));
        self.deadline_ms.min(by_rate)
    }

    /// `Err` once the current deadline has passed.
    pub fn check(&self, now_ms: u64) -> Result<(), Expired> {
        if now_ms < self.deadline_ms() {
            return Ok(());
        }
        Err(match self.phase {
            Phase::First => Expired::FirstRequest,
            Phase::Idle => Expired::Idle,
            Phase::Receiving => Expired::Request { declared_bytes: self.declared_bytes },
            Phase::Token => Expired::TokenWait,
        })
    }

    /// Bytes arrived: `buffered_bytes` of an incomplete request are held, and its header
    /// announced `declared_bytes` (once it is complete). The first byte of a request
    /// starts its clock; the announced size sets its hard deadline, once; the bytes held
    /// count towards the minimum rate.
    pub fn on_received(&mut self, now_ms: u64, buffered_bytes: usize, declared_bytes: Option<usize>) {
        if buffered_bytes == 0 {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Receiving;
            self.since_ms = now_ms;
            self.declared_bytes = None;
            self.progress_from_bytes = 0;
            self.deadline_ms = now_ms.saturating_add(self.deadlines.request_base_ms);
        }
        self.buffered_bytes = buffered_bytes;
        if let (None, Some(n)) = (self.declared_bytes, declared_bytes) {
            let n = n as u64;
            self.declared_bytes = Some(n);
            let base = if self.phase == Phase::First { self.deadlines.first_request_ms } else { self.deadlines.request_base_ms };
            let allowance = self.deadlines.transfer_ms(n) - self.deadlines.request_base_ms;
            self.deadline_ms = self.since_ms.saturating_add(base).saturating_add(allowance);
        }
    }

    /// A request was answered at `now_ms`: the next one has [`Deadlines::idle_ms`] to begin.
    pub fn on_request_done(&mut self, now_ms: u64) {
        self.phase = Phase::Idle;
        self.since_ms = now_ms;
        self.declared_bytes = None;
        self.buffered_bytes = 0;
        self.progress_from_bytes = 0;
        self.deadline_ms = now_ms.saturating_add(self.deadlines.idle_ms);
    }

    /// The connection starts waiting for the big-request token: the request's clock stops
    /// (the client is not at fault), the token wait's starts.
    pub fn on_token_wait(&mut self, now_ms: u64) {
        self.phase = Phase::Token;
        self.deadline_ms = now_ms.saturating_add(self.deadlines.token_wait_ms);
    }

    /// The token came at `now_ms` with `remaining_bytes` of the request still to arrive:
    /// they get the base time plus their size at the minimum rate, and must keep the rate
    /// counted from now.
    pub fn on_token_granted(&mut self, now_ms: u64, remaining_bytes: u64) {
        self.phase = Phase::Receiving;
        self.since_ms = now_ms;
        self.progress_from_bytes = self.buffered_bytes;
        self.deadline_ms = now_ms.saturating_add(self.deadlines.transfer_ms(remaining_bytes));
    }
}

/// Backlog settings of a TCP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BacklogPolicy {
    /// Half-open sockets one peer may hold.
    pub half_open_per_peer_max: usize,
    /// A handshake not complete after this long is dropped.
    pub handshake_timeout_ms: u64,
}

/// A listener has four sockets (each with 256 KiB of buffers): one peer gets half.
pub const HALF_OPEN_PER_PEER_MAX_DEFAULT: usize = 2;
/// The SYN-ACK goes out at 0, 1 and 3 s (smoltcp's RTO starts at 1 s and doubles): an
/// honest client's ACK has three chances in 5 s.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 5_000;

const _: () = assert!(HALF_OPEN_PER_PEER_MAX_DEFAULT >= 1);

impl Default for BacklogPolicy {
    fn default() -> Self {
        BacklogPolicy { half_open_per_peer_max: HALF_OPEN_PER_PEER_MAX_DEFAULT, handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT }
    }
}

/// What a listener's socket is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Waiting for a SYN.
    Listening,
    /// SYN received, handshake not complete.
    HalfOpen {
        /// Who sent the SYN.
        peer: Peer,
        /// When the node first saw it half-open.
        since_ms: u64,
    },
    /// A connection waiting to be accepted (or anything else: left alone).
    Ready,
}

/// Why a half-open socket is recycled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BacklogEviction {
    /// The handshake took too long.
    TimedOut,
    /// Its peer holds more than its share.
    PeerLimit,
    /// No socket was left listening: the oldest half-open one makes room.
    Full,
}

impl core::fmt::Display for BacklogEviction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            BacklogEviction::TimedOut => "handshake timed out",
            BacklogEviction::PeerLimit => "peer holds its share of half-open sockets",
            BacklogEviction::Full => "backlog full, oldest half-open socket dropped",
        })
    }
}

/// Which sockets of a listener's backlog to recycle (abort and listen again), by index
/// into `slots`, each once. Order of the rules: timed out; a peer's youngest beyond
/// its share; then, if no socket would be left listening, the oldest half-open one.
pub fn backlog_evictions(slots: &[Slot], now_ms: u64, policy: &BacklogPolicy) -> Vec<(usize, BacklogEviction)> {
    let mut out: Vec<(usize, BacklogEviction)> = Vec::new();
    let evicted = |out: &Vec<(usize, BacklogEviction)>, i: usize| out.iter().any(|(j, _)| *j == i);
    for (i, slot) in slots.iter().enumerate() {
        if let Slot::HalfOpen { since_ms, .. } = slot {
            if now_ms.saturating_sub(*since_ms) >= policy.handshake_timeout_ms {
                out.push((i, BacklogEviction::TimedOut));
            }
        }
    }
    // Per peer: keep the oldest `half_open_per_peer_max`, evict the rest (youngest first
    // in age order does not matter: all beyond the share go).
    let mut half_open: Vec<(usize, Peer, u64)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Slot::HalfOpen { peer, since_ms } if !evicted(&out, i) => Some((i, *peer, *since_ms)),
            _ => None,
        })
        .collect();
    half_open.sort_by_key(|&(i, _, since)| (since, i));
    let mut kept: Vec<(Peer, usize)> = Vec::new();
    for &(i, peer, _) in &half_open {
        let count = match kept.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                kept.push((peer, 1));
                1
            }
        };
        if count > policy.half_open_per_peer_max {
            out.push((i, BacklogEviction::PeerLimit));
        }
    }
    let listening = slots.iter().enumerate().filter(|(i, s)| **s == Slot::Listening || evicted(&out, *i)).count();
    if listening == 0 {
        if let Some(&(i, _, _)) = half_open.iter().find(|(i, _, _)| !evicted(&out, *i)) {
            out.push((i, BacklogEviction::Full));
        }
    }
    debug_assert!(out.iter().all(|(i, _)| matches!(slots[*i], Slot::HalfOpen { .. })));
    out
}

/// Bounds on sockets the node closed and whose peer has not finished the close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosingPolicy {
    /// Closing sockets kept; the oldest beyond are aborted.
    pub sockets_max: usize,
    /// A close not finished after this long is aborted.
    pub timeout_ms: u64,
}

/// 16 closing sockets pin at most 4 MiB of buffers.
pub const CLOSING_SOCKETS_MAX_DEFAULT: usize = 16;
/// A socket closes with at most its 128 KiB send buffer still queued: 20 s drains that at
/// 6.4 KB/s. (Linux gives an orphan in FIN-WAIT-2 60 s; a node has less memory to spare.)
pub const CLOSING_TIMEOUT_MS_DEFAULT: u64 = 20_000;

impl Default for ClosingPolicy {
    fn default() -> Self {
        ClosingPolicy { sockets_max: CLOSING_SOCKETS_MAX_DEFAULT, timeout_ms: CLOSING_TIMEOUT_MS_DEFAULT }
    }
}

/// Why a closing socket is aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClosingEviction {
    /// Its close took too long.
    TimedOut,
    /// More closing sockets than the bound; it is among the oldest.
    TooMany,
}

impl core::fmt::Display for ClosingEviction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ClosingEviction::TimedOut => "close not finished in time",
            ClosingEviction::TooMany => "too many closing sockets, oldest aborted",
        })
    }
}

/// Which closing sockets to abort, by index into `closed_at_ms` (when each was closed),
/// each once: those past the timeout, then the oldest until at most `sockets_max` remain.
pub fn closing_evictions(closed_at_ms: &[u64], now_ms: u64, policy: &ClosingPolicy) -> Vec<(usize, ClosingEviction)> {
    let mut out: Vec<(usize, ClosingEviction)> = closed_at_ms
        .iter()
        .enumerate()
        .filter(|(_, &at)| now_ms.saturating_sub(at) >= policy.timeout_ms)
        .map(|(i, _)| (i, ClosingEviction::TimedOut))
        .collect();
    let remaining = closed_at_ms.len() - out.len();
    if remaining > policy.sockets_max {
        let mut by_age: Vec<(u64, usize)> = closed_at_ms
            .iter()
            .enumerate()
            .filter(|(i, _)| !out.iter().any(|(j, _)| j == i))
            .map(|(i, &at)| (at, i))
            .collect();
        by_age.sort_unstable();
        for &(_, i) in by_age.iter().take(remaining - policy.sockets_max) {
            out.push((i, ClosingEviction::TooMany));
        }
    }
    debug_assert!(closed_at_ms.len() - out.len() <= policy.sockets_max);
    out
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::vec;

    const A: Peer = [0xa; 16];
    const B: Peer = [0xb; 16];
    const C: Peer = [0xc; 16];

    #[test]
    fn admission_caps_per_peer_and_in_all() {
        let mut a = Admission::new(3, 2);
        assert_eq!(a.admit(A), Ok(()));
        assert_eq!(a.admit(A), Ok(()));
        assert_eq!(a.admit(A), Err(Refusal::PeerLimit { per_peer_max: 2 }));
        assert_eq!(a.admit(B), Ok(()));
        assert_eq!(a.admit(C), Err(Refusal::Full { connections_max: 3 }));
        assert_eq!((a.active(), a.of(&A), a.of(&B)), (3, 2, 1));
        a.release(&A);
        assert_eq!(a.admit(C), Ok(()));
        a.release(&C);
        a.release(&C); // one too many: ignored
        a.release(&B);
        a.release(&A);
        assert_eq!(a.active(), 0);
        assert!(a.active.is_empty());
    }

    fn deadlines() -> Deadlines {
        Deadlines { first_request_ms: 10_000, idle_ms: 30_000, request_base_ms: 10_000, min_rate_bytes_per_s: 1000, token_wait_ms: 50_000 }
    }

    #[test]
    fn silence_after_connect_ends_at_the_first_request_deadline() {
        let t = RequestTimer::new(1000, deadlines());
        assert_eq!(t.check(10_999), Ok(()));
        assert_eq!(t.check(11_000), Err(Expired::FirstRequest));
    }

    #[test]
    fn a_byte_at_a_time_does_not_move_the_deadline() {
        let mut t = RequestTimer::new(0, deadlines());
        for now in (0..10_000).step_by(3000) {
            t.on_received(now, 1 + now as usize / 3000, None);
            assert_eq!(t.deadline_ms(), 10_000);
        }
        assert_eq!(t.check(10_000), Err(Expired::FirstRequest));
        // Between requests: the first byte starts the request clock, later bytes do not.
        let mut t = RequestTimer::new(0, deadlines());
        t.on_request_done(500);
        assert_eq!(t.deadline_ms(), 30_500);
        t.on_received(20_000, 1, None);
        assert_eq!(t.deadline_ms(), 30_000);
        t.on_received(29_000, 3, None);
        assert_eq!(t.check(30_000), Err(Expired::Request { declared_bytes: None }));
    }

    #[test]
    fn the_declared_size_sets_the_hard_deadline_at_the_minimum_rate() {
        let mut t = RequestTimer::new(0, deadlines());
        // 20 000 bytes at 1000 B/s: at most 20 s on top of the 10 s; the 4 header bytes
        // so far are worth 4 ms.
        t.on_received(100, 4, Some(20_000));
        assert_eq!(t.deadline_ms(), 10_004);
        // Everything but the last byte at once: the size's deadline caps the rate's.
        t.on_received(200, 20_003, None);
        assert_eq!(t.deadline_ms(), 30_000);
        assert_eq!(t.check(29_999), Ok(()));
        assert_eq!(t.check(30_000), Err(Expired::FirstRequest));
        t.on_request_done(25_000);
        t.on_received(26_000, 10, Some(5000));
        assert_eq!(t.deadline_ms(), 26_000 + 10_000 + 10);
        t.on_received(27_000, 5004, None);
        assert_eq!(t.deadline_ms(), 26_000 + 10_000 + 5000);
        assert_eq!(t.check(41_000), Err(Expired::Request { declared_bytes: Some(5000) }));
    }

    #[test]
    fn a_request_of_known_size_must_keep_the_minimum_rate() {
        let mut t = RequestTimer::new(0, deadlines());
        t.on_request_done(0);
        // 100 000 bytes announced: 110 s by size; 5 000 received so far are worth 5 s.
        t.on_received(1000, 5000, Some(100_000));
        assert_eq!(t.deadline_ms(), 1000 + 10_000 + 5000);
        assert_eq!(t.check(15_999), Ok(()));
        assert_eq!(t.check(16_000), Err(Expired::Request { declared_bytes: Some(100_000) }));
        // More bytes buy time at the rate; never past the hard deadline.
        t.on_received(15_000, 50_000, None);
        assert_eq!(t.deadline_ms(), 1000 + 10_000 + 50_000);
        t.on_received(60_000, 99_999, None);
        assert_eq!(t.deadline_ms(), 1000 + 10_000 + 99_999);
        t.on_received(61_000, 100_003, None);
        assert_eq!(t.deadline_ms(), 1000 + 10_000 + 100_000);
        // After the token wait, progress counts from the grant.
        let mut t = RequestTimer::new(0, deadlines());
        t.on_received(0, 2000, Some(100_000));
        t.on_token_wait(100);
        t.on_token_granted(5000, 98_000);
        assert_eq!(t.deadline_ms(), 5000 + 10_000);
        t.on_received(6000, 7000, None);
        assert_eq!(t.deadline_ms(), 5000 + 10_000 + 5000);
    }

    #[test]
    fn waiting_for_the_token_has_its_own_bound() {
        let mut t = RequestTimer::new(0, deadlines());
        t.on_received(0, 1 << 20, Some(4 << 20));
        t.on_token_wait(2000);
        assert_eq!(t.check(51_999), Ok(()));
        assert_eq!(t.check(52_000), Err(Expired::TokenWait));
        t.on_token_granted(40_000, 3 << 20);
        // The base time from the grant; bytes from then on buy more, up to the size's share.
        assert_eq!(t.deadline_ms(), 40_000 + 10_000);
        t.on_received(41_000, (4 << 20) + 3, None);
        assert_eq!(t.deadline_ms(), 40_000 + 10_000 + (3 << 20) as u64);
    }

    /// Streams `pieces` shard-piece frames back to back at `rate` bytes/s, as `gridctl`
    /// does (each request whole and at once, the next one behind it), in 16 KiB reads,
    /// with the node taking `serve_ms` to answer each; the first deadline missed, if any.
    fn stream_pieces(pieces: usize, rate: u64, serve_ms: u64) -> Result<(), Expired> {
        let frame = (crate::shard::SHARD_PIECE_FRAME_BYTES_MAX + crate::FRAME_HEADER_BYTES) as u64;
        let read = 16 << 10;
        let mut t = RequestTimer::new(0, Deadlines::default());
        let mut now_ms = 200; // the hello's round trip
        for _ in 0..pieces {
            let mut got = 0u64;
            while got < frame {
                let n = read.min(frame - got);
                now_ms += n * 1000 / rate;
                t.check(now_ms)?;
                got += n;
                if got < frame {
                    t.on_received(now_ms, got as usize, Some(frame as usize - crate::FRAME_HEADER_BYTES));
                }
            }
            // Complete: the node answers (storing the last piece takes a while).
            now_ms += serve_ms;
            t.on_request_done(now_ms);
        }
        Ok(())
    }

    #[test]
    fn a_largest_shard_streams_in_pieces_within_the_deadlines() {
        let pieces = (crate::shard::SHARD_BYTES_MAX / crate::shard::SHARD_PIECE_BYTES as u64) as usize;
        // At the minimum rate, and well above it, with a slow node.
        assert_eq!(stream_pieces(pieces, MIN_RATE_BYTES_PER_S_DEFAULT, 5000), Ok(()));
        assert_eq!(stream_pieces(pieces, 10 << 20, 5000), Ok(()));
        // A piece frame needs no big-request token: it fits the connection's own buffer.
        assert!(crate::shard::SHARD_PIECE_FRAME_BYTES_MAX < crate::MAX_FRAME_BYTES / 16);
        // Below the minimum rate, the first piece already loses the connection.
        let slow = stream_pieces(pieces, MIN_RATE_BYTES_PER_S_DEFAULT / 4, 0);
        assert!(matches!(slow, Err(Expired::FirstRequest)), "{slow:?}");
    }

    #[test]
    fn default_numbers_relate() {
        let d = Deadlines::default();
        assert_eq!(d.transfer_ms(crate::MAX_FRAME_BYTES as u64), 10_000 + 256_000);
        assert!(d.token_wait_ms >= d.transfer_ms(crate::MAX_FRAME_BYTES as u64));
    }

    fn half(peer: Peer, since_ms: u64) -> Slot {
        Slot::HalfOpen { peer, since_ms }
    }

    #[test]
    fn backlog_recycles_timed_out_and_a_peers_excess() {
        let p = BacklogPolicy { half_open_per_peer_max: 2, handshake_timeout_ms: 5000 };
        let slots = [half(A, 0), half(A, 100), half(A, 200), Slot::Listening];
        assert_eq!(backlog_evictions(&slots, 1000, &p), vec![(2, BacklogEviction::PeerLimit)]);
        assert_eq!(
            backlog_evictions(&slots, 5000, &p),
            vec![(0, BacklogEviction::TimedOut)]
        );
        assert_eq!(
            backlog_evictions(&slots, 5200, &p),
            vec![(0, BacklogEviction::TimedOut), (1, BacklogEviction::TimedOut), (2, BacklogEviction::TimedOut)]
        );
        assert!(backlog_evictions(&[Slot::Ready, half(B, 0), Slot::Listening], 10, &p).is_empty());
    }

    #[test]
    fn a_full_backlog_drops_its_oldest_half_open_socket() {
        let p = BacklogPolicy { half_open_per_peer_max: 2, handshake_timeout_ms: 5000 };
        // Four peers, one half-open each: nobody exceeds a share, but nothing listens.
        let slots = [half(A, 300), half(B, 100), half(C, 200), half([0xd; 16], 400)];
        assert_eq!(backlog_evictions(&slots, 1000, &p), vec![(1, BacklogEviction::Full)]);
        // Connections waiting to be accepted are never dropped.
        assert!(backlog_evictions(&[Slot::Ready; 4], 1_000_000, &p).is_empty());
        // A peer's excess already frees a socket: no second eviction.
        let slots = [half(A, 0), half(A, 1), half(A, 2), Slot::Ready];
        assert_eq!(backlog_evictions(&slots, 10, &p), vec![(2, BacklogEviction::PeerLimit)]);
    }

    #[test]
    fn closing_sockets_time_out_and_are_bounded() {
        let p = ClosingPolicy { sockets_max: 2, timeout_ms: 1000 };
        assert!(closing_evictions(&[0, 10], 999, &p).is_empty());
        assert_eq!(closing_evictions(&[0, 10], 1005, &p), vec![(0, ClosingEviction::TimedOut)]);
        // Five closing, bound two: the three oldest go (closed at 5, 7, 8).
        assert_eq!(
            closing_evictions(&[8, 5, 9, 7, 10], 100, &p),
            vec![(1, ClosingEviction::TooMany), (3, ClosingEviction::TooMany), (0, ClosingEviction::TooMany)]
        );
        // Timed-out ones count towards the bound.
        assert_eq!(
            closing_evictions(&[0, 900, 950, 990], 1000, &p),
            vec![(0, ClosingEviction::TimedOut), (1, ClosingEviction::TooMany)]
        );
        assert!(closing_evictions(&[], 5, &p).is_empty());
    }
}
