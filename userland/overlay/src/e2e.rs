//! End-to-end sessions: every data packet is sealed between its source and its destination,
//! inside the hop-by-hop link sealing, so relays forward bytes they cannot read or alter.
//!
//! An end-to-end session to a destination is made with the link handshake (signed ephemeral
//! X25519, see `handshake`), carried in routed packets: the initiator knows only the
//! destination's address, so its initiation binds that address and the response must come
//! from a key that hashes to it (`Initiator::start_e2e`). The routed payload is an overlay
//! datagram exactly as on a link (Init, Resp or Transport, see `wire`), so the session code
//! (`session`: counter nonces, replay window, rekeying by fresh handshakes) is the links'.
//! Packets wait in a short per-destination queue while the handshake runs.
//!
//! A sealed packet's authenticated sender is the session's peer: the node delivers it only
//! when the routed header's source and the inner IPv6 source both name that peer, so no
//! relay and no neighbour can make a packet appear to come from an address whose key it
//! does not hold.
//!
//! Bounds (outside input creates state here only through initiations, which arrive over
//! authenticated links): at most `max_sessions` destinations, least recently used first to
//! go when full (half-open ones before any other); an entry made by someone else's
//! initiation is half-open until its first packet opens and is forgotten after
//! `half_open_timeout`; each relaying neighbour may hold `half_open_per_neighbour_max` of
//! them; signature checks draw from a per-neighbour bucket and a node-wide one, after the
//! cheap checks (format, mac1, the sender's address matching its key, freshness); entries
//! that hear nothing go after `idle_timeout` (and a sender whose session went silent for
//! `silent_rehandshake` starts a new handshake, so a peer that forgot us is found out);
//! queued packets are bounded per destination and node-wide. The caller (`node`) routes what `poll_routed` yields and delivers what
//! `handle` returns.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::address::Address;
use crate::endpoint::SourceAddress;
use crate::guard::{SourceLimiter, TimestampMemory, TokenBucket};
use crate::handshake::{self, Initiator};
use crate::identity::Identity;
use crate::rng::Rng;
use crate::session::{Session, SessionError};
use crate::time::{earliest, Duration, Instant};
use crate::wire::{DatagramType, TransportPacket};

/// Tunables and capacities of the end-to-end layer.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Destinations with end-to-end state (sessions, handshake, queue).
    pub max_sessions: usize,
    /// Half-open entries (made by a remote initiation, not yet confirmed) one relaying
    /// neighbour may hold.
    pub half_open_per_neighbour_max: usize,
    /// A half-open entry is forgotten after this long.
    pub half_open_timeout: Duration,
    /// An entry that received nothing for this long (and has no handshake in flight) is
    /// forgotten.
    pub idle_timeout: Duration,
    /// Sending on a session that received nothing for this long starts a new handshake
    /// (the peer may have forgotten it), while still sending on it.
    pub silent_rehandshake: Duration,
    /// Packets queued for one destination while its handshake runs.
    pub queue_per_destination_max: usize,
    /// Packets queued for all destinations together.
    pub queued_packets_max: usize,
    /// Initiations sent for one burst of queued packets before they are dropped.
    pub handshake_attempts_max: u32,
    /// Initiation signatures checked per second, node-wide.
    pub handshake_rate_per_sec: u32,
    /// Burst allowance of that rate.
    pub handshake_burst: u32,
    /// Initiation signatures checked per second for initiations relayed by one neighbour.
    pub neighbour_handshake_rate_per_sec: u32,
    /// Burst allowance of that rate.
    pub neighbour_handshake_burst: u32,
    /// Neighbours with a bucket (least recently used evicted).
    pub neighbours_max: usize,
    /// Keys whose newest end-to-end initiation timestamp is remembered.
    pub init_timestamps_max: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            // A node talks to a few hundred others at most (gridctl users, peers holding
            // its shards); each entry is ~1 KiB plus its queue.
            max_sessions: 512,
            half_open_per_neighbour_max: 32,
            half_open_timeout: Duration::from_secs(10),
            // A client (every `gridctl` call is a new key) leaves an entry behind: forget it
            // about when its link would go (`node::Config::dead_after`), not minutes later.
            // Active sessions send far more often than this.
            idle_timeout: Duration::from_secs(30),
            // As WireGuard's keepalive + rekey timeouts: a peer that forgot the session is
            // found out within seconds of sending into it.
            silent_rehandshake: Duration::from_secs(15),
            queue_per_destination_max: 16,
            queued_packets_max: 512,
            handshake_attempts_max: 4,
            // As the link door (node::Config): ~37 us per check keeps this under 1% of a core.
            handshake_rate_per_sec: 200,
            handshake_burst: 128,
            // A leaf node hears every initiation through its one neighbour, so one
            // neighbour's share is most of the node's: it only keeps one neighbour from
            // taking all of a node with many.
            neighbour_handshake_rate_per_sec: 100,
            neighbour_handshake_burst: 64,
            neighbours_max: 256,
            init_timestamps_max: 4096,
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// End-to-end initiations sent.
    pub handshakes_initiated: u64,
    /// End-to-end sessions established (initiator on response, responder on confirmation).
    pub handshakes_completed: u64,
    /// Packets sealed end to end.
    pub sealed: u64,
    /// Packets opened end to end.
    pub opened: u64,
    /// Routed payloads for us that did not authenticate (or answer nothing of ours).
    pub dropped_unauthenticated: u64,
    /// Initiations refused by a budget.
    pub dropped_rate_limited: u64,
    /// Initiations refused as stale or replayed.
    pub dropped_stale_inits: u64,
    /// Initiations whose key does not hash to the routed source address.
    pub dropped_wrong_source: u64,
    /// Replayed transport packets.
    pub dropped_replays: u64,
    /// Packets dropped from (or refused by) a full queue, or after the handshake gave up.
    pub dropped_queued: u64,
    /// Entries forgotten (expired, idle, or evicted for room).
    pub entries_dropped: u64,
}

/// What `handle` made of a routed payload addressed to us.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Handled (handshake, keepalive) or dropped and counted: nothing to deliver.
    Nothing,
    /// A packet opened under the session with `peer`: its authenticated sender.
    Packet {
        /// The session's peer address.
        peer: Address,
        /// The plaintext (an IPv6 packet).
        packet: Vec<u8>,
    },
}

struct Entry {
    address: Address,
    initiator: Option<(Initiator, Instant)>,
    attempts: u32,
    current: Option<Session>,
    previous: Option<Session>,
    pending: Option<Session>,
    queue: VecDeque<Vec<u8>>,
    /// Made by a remote initiation and never confirmed (`via`: the neighbour it came through).
    half_open_via: Option<SourceAddress>,
    created_at: Instant,
    last_used_at: Instant,
    last_received_at: Instant,
}

impl Entry {
    fn new(address: Address, now: Instant) -> Entry {
        Entry {
            address,
            initiator: None,
            attempts: 0,
            current: None,
            previous: None,
            pending: None,
            queue: VecDeque::new(),
            half_open_via: None,
            created_at: now,
            last_used_at: now,
            last_received_at: now,
        }
    }

    fn uses_index(&self, index: u32) -> bool {
        let s = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.local_index == index);
        self.initiator.as_ref().is_some_and(|(h, _)| h.sender_index == index) || s(&self.current) || s(&self.previous) || s(&self.pending)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Current,
    Previous,
    Pending,
}

/// The end-to-end layer of one node.
pub struct E2e {
    config: Config,
    own: Address,
    entries: Vec<Entry>,
    queued: usize,
    routed: VecDeque<(Address, Vec<u8>)>,
    budget: TokenBucket,
    neighbours: SourceLimiter,
    timestamps: TimestampMemory,
    stats: Stats,
}

/// What the layer needs from its node for one call.
pub struct Context<'a> {
    /// The node's identity (signs initiations and responses).
    pub identity: &'a Identity,
    /// The node's random generator (indices, ephemeral keys).
    pub rng: &'a mut Rng,
    /// The last handshake timestamp the node used (strictly increasing across all handshakes).
    pub last_timestamp_us: &'a mut u64,
    /// The time.
    pub now: Instant,
    /// Sessions older than this are not used.
    pub reject_after: Duration,
    /// Sessions this old are renewed by a new handshake when used.
    pub rekey_after: Duration,
    /// An unanswered initiation is resent after this long.
    pub handshake_retry: Duration,
    /// Initiations further than this from our clock are refused.
    pub init_age_max: Duration,
}

impl E2e {
    /// An empty layer for the node whose address is `own`.
    pub fn new(own: Address, config: Config, now: Instant) -> E2e {
        assert!(config.max_sessions > 0 && config.queue_per_destination_max > 0);
        E2e {
            config,
            own,
            entries: Vec::new(),
            queued: 0,
            routed: VecDeque::new(),
            budget: TokenBucket::full(config.handshake_burst, now),
            neighbours: SourceLimiter::new(config.neighbours_max, config.neighbour_handshake_rate_per_sec, config.neighbour_handshake_burst),
            timestamps: TimestampMemory::new(config.init_timestamps_max),
            stats: Stats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Destinations with end-to-end state.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no destination has state.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a usable session with `address` exists.
    pub fn has_session(&self, address: &Address) -> bool {
        self.entries.iter().any(|e| e.address == *address && e.current.is_some())
    }

    /// Packets queued for destinations whose handshake runs.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// The next payload to route: (destination, overlay datagram).
    pub fn poll_routed(&mut self) -> Option<(Address, Vec<u8>)> {
        self.routed.pop_front()
    }

    fn index_of(&self, address: &Address) -> Option<usize> {
        self.entries.iter().position(|e| e.address == *address)
    }

    /// The entry for `address`, made (evicting when full) if needed.
    fn entry_for(&mut self, address: Address, now: Instant) -> usize {
        if let Some(i) = self.index_of(&address) {
            return i;
        }
        if self.entries.len() >= self.config.max_sessions {
            // Half-open entries go first, then the least recently used.
            let victim = self.entries.iter().enumerate().min_by_key(|(_, e)| (e.half_open_via.is_none(), e.last_used_at)).map(|(i, _)| i);
            if let Some(v) = victim {
                self.remove(v);
            }
        }
        self.entries.push(Entry::new(address, now));
        debug_assert!(self.entries.len() <= self.config.max_sessions);
        self.entries.len() - 1
    }

    fn remove(&mut self, i: usize) {
        let entry = self.entries.swap_remove(i);
        self.queued = self.queued.saturating_sub(entry.queue.len());
        self.stats.dropped_queued += entry.queue.len() as u64;
        self.stats.entries_dropped += 1;
    }

    fn fresh_index(&self, rng: &mut Rng) -> u32 {
        let mut index = rng.next_u32();
        // Bounded retries; a collision after 16 draws from 2^32 is practically impossible.
        for _ in 0..16 {
            if index != 0 && !self.entries.iter().any(|e| e.uses_index(index)) {
                break;
            }
            index = rng.next_u32();
        }
        index
    }

    fn start_handshake(&mut self, cx: &mut Context<'_>, i: usize) {
        let index = self.fresh_index(cx.rng);
        let timestamp_us = cx.now.micros.max(cx.last_timestamp_us.saturating_add(1));
        *cx.last_timestamp_us = timestamp_us;
        let address = self.entries[i].address;
        let (state, init) = Initiator::start_e2e(cx.identity, address, cx.rng.bytes32(), index, timestamp_us);
        let entry = &mut self.entries[i];
        entry.initiator = Some((state, cx.now));
        entry.attempts = entry.attempts.saturating_add(1);
        self.stats.handshakes_initiated += 1;
        self.routed.push_back((address, init.to_vec()));
    }

    /// Seals `packet` for `destination`, or queues it while a handshake runs.
    pub fn send(&mut self, cx: &mut Context<'_>, destination: Address, packet: &[u8]) {
        let i = self.entry_for(destination, cx.now);
        let now = cx.now;
        let entry = &mut self.entries[i];
        entry.last_used_at = now;
        let usable = entry.current.as_ref().is_some_and(|s| now.saturating_since(s.created_at) < cx.reject_after);
        if usable {
            if let Some(session) = entry.current.as_mut() {
                let due = if session.initiator { cx.rekey_after } else { Duration::from_micros(cx.rekey_after.micros + cx.handshake_retry.micros) };
                let silent = now.saturating_since(entry.last_received_at) >= self.config.silent_rehandshake;
                let wants_rekey = (now.saturating_since(session.created_at) >= due || silent) && entry.initiator.is_none();
                if let Ok(datagram) = session.seal(packet) {
                    self.stats.sealed += 1;
                    self.routed.push_back((destination, datagram));
                }
                if wants_rekey {
                    self.entries[i].attempts = 0;
                    self.start_handshake(cx, i);
                }
                return;
            }
        }
        if entry.queue.len() >= self.config.queue_per_destination_max || self.queued >= self.config.queued_packets_max {
            self.stats.dropped_queued += 1;
        } else {
            entry.queue.push_back(packet.to_vec());
            self.queued += 1;
        }
        if self.entries[i].initiator.is_none() {
            self.entries[i].attempts = 0;
            self.start_handshake(cx, i);
        }
    }

    /// Seals what waits for entry `i` under its current session.
    fn flush(&mut self, i: usize) {
        let entry = &mut self.entries[i];
        let Some(session) = entry.current.as_mut() else { return };
        let address = entry.address;
        self.queued = self.queued.saturating_sub(entry.queue.len());
        // Bounded by the queue's capacity.
        while let Some(packet) = entry.queue.pop_front() {
            if let Ok(datagram) = session.seal(&packet) {
                self.stats.sealed += 1;
                self.routed.push_back((address, datagram));
            }
        }
    }

    /// Handles a routed payload addressed to us that came from `source` (the routed header's
    /// claim) through the neighbour whose overlay address is `via`.
    pub fn handle(&mut self, cx: &mut Context<'_>, source: Address, via: Address, payload: &[u8]) -> Received {
        match DatagramType::of(payload) {
            Ok(DatagramType::HandshakeInit) => self.handle_init(cx, source, via, payload),
            Ok(DatagramType::HandshakeResp) => self.handle_resp(cx, source, payload),
            Ok(DatagramType::Transport) => return self.handle_transport(cx, source, payload),
            Ok(DatagramType::CookieReply) | Err(_) => self.stats.dropped_unauthenticated += 1,
        }
        Received::Nothing
    }

    fn handle_init(&mut self, cx: &mut Context<'_>, source: Address, via: Address, payload: &[u8]) {
        // Cheap checks first: format and mac1, the key's address, freshness.
        let Ok(init) = handshake::check_e2e_init_mac(&self.own, payload) else {
            self.stats.dropped_unauthenticated += 1;
            return;
        };
        if !source.verify(&init.static_key) || source == self.own {
            self.stats.dropped_wrong_source += 1;
            return;
        }
        if init.timestamp_us.abs_diff(cx.now.micros) > cx.init_age_max.micros || !self.timestamps.is_fresh(&init.static_key, init.timestamp_us) {
            self.stats.dropped_stale_inits += 1;
            return;
        }
        // Then the budgets: the relaying neighbour's, then everyone's.
        let (c, now) = (self.config, cx.now);
        if !self.neighbours.take(now, SourceAddress(via.0)) || !self.budget.take(now, c.handshake_rate_per_sec, c.handshake_burst) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        if handshake::check_e2e_init_signature(&self.own, &init).is_err() {
            self.stats.dropped_unauthenticated += 1;
            return;
        }
        self.timestamps.record(now, init.static_key, init.timestamp_us);
        let local_index = self.fresh_index(cx.rng);
        let Ok((resp, keys)) = handshake::respond(cx.identity, &init, cx.rng.bytes32(), local_index) else {
            self.stats.dropped_unauthenticated += 1;
            return;
        };
        let known = self.index_of(&source);
        if known.is_none() && !self.make_room_for_half_open(SourceAddress(via.0)) {
            self.stats.dropped_rate_limited += 1;
            return;
        }
        let i = self.entry_for(source, now);
        let entry = &mut self.entries[i];
        if known.is_none() {
            entry.half_open_via = Some(SourceAddress(via.0));
            entry.created_at = now;
        }
        entry.pending = Some(Session::new(&keys, local_index, init.sender_index, false, now));
        self.routed.push_back((source, resp.to_vec()));
    }

    /// Frees room for a half-open entry relayed by `via`: its oldest when it holds its share.
    fn make_room_for_half_open(&mut self, via: SourceAddress) -> bool {
        let mine = |e: &&Entry| e.half_open_via == Some(via);
        if self.entries.iter().filter(mine).count() < self.config.half_open_per_neighbour_max {
            return true;
        }
        let oldest = self.entries.iter().enumerate().filter(|(_, e)| e.half_open_via == Some(via)).min_by_key(|(_, e)| e.created_at).map(|(i, _)| i);
        match oldest {
            Some(i) => {
                self.remove(i);
                true
            }
            None => false,
        }
    }

    fn handle_resp(&mut self, cx: &mut Context<'_>, source: Address, payload: &[u8]) {
        let Ok(repr) = crate::wire::RespRepr::parse(payload) else {
            self.stats.dropped_unauthenticated += 1;
            return;
        };
        let found = self.entries.iter().position(|e| e.address == source && e.initiator.as_ref().is_some_and(|(h, _)| h.sender_index == repr.receiver_index));
        let Some(i) = found else {
            self.stats.dropped_unauthenticated += 1;
            return;
        };
        let Some((state, _)) = self.entries[i].initiator.as_ref() else { return };
        let own_key = cx.identity.public_key();
        let Ok((keys, remote_index)) = state.finish(&own_key, payload) else {
            self.stats.dropped_unauthenticated += 1;
            return;
        };
        let local_index = state.sender_index;
        let entry = &mut self.entries[i];
        entry.initiator = None;
        entry.attempts = 0;
        entry.half_open_via = None;
        entry.previous = entry.current.take();
        entry.current = Some(Session::new(&keys, local_index, remote_index, true, cx.now));
        entry.last_used_at = cx.now;
        entry.last_received_at = cx.now;
        self.stats.handshakes_completed += 1;
        let had_queue = !entry.queue.is_empty();
        self.flush(i);
        if !had_queue {
            // Key confirmation: the responder uses the session only once one packet opened.
            self.seal_keepalive(i);
        }
    }

    fn seal_keepalive(&mut self, i: usize) {
        let entry = &mut self.entries[i];
        let address = entry.address;
        if let Some(Ok(datagram)) = entry.current.as_mut().map(|s| s.seal(&[])) {
            self.stats.sealed += 1;
            self.routed.push_back((address, datagram));
        }
    }

    fn find_session(&self, index: u32) -> Option<(usize, Slot)> {
        self.entries.iter().enumerate().find_map(|(i, e)| {
            let matches = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.local_index == index);
            if matches(&e.current) {
                Some((i, Slot::Current))
            } else if matches(&e.previous) {
                Some((i, Slot::Previous))
            } else if matches(&e.pending) {
                Some((i, Slot::Pending))
            } else {
                None
            }
        })
    }

    fn handle_transport(&mut self, cx: &mut Context<'_>, source: Address, payload: &[u8]) -> Received {
        let Ok(packet) = TransportPacket::new_checked(payload) else {
            self.stats.dropped_unauthenticated += 1;
            return Received::Nothing;
        };
        let Some((i, slot)) = self.find_session(packet.receiver_index()) else {
            self.stats.dropped_unauthenticated += 1;
            return Received::Nothing;
        };
        let entry = &mut self.entries[i];
        let session = match slot {
            Slot::Current => entry.current.as_mut(),
            Slot::Previous => entry.previous.as_mut(),
            Slot::Pending => entry.pending.as_mut(),
        };
        let Some(session) = session else { return Received::Nothing };
        if cx.now.saturating_since(session.created_at) >= cx.reject_after {
            self.stats.dropped_unauthenticated += 1;
            return Received::Nothing;
        }
        let plain = match session.open(&packet) {
            Ok(plain) => plain,
            Err(SessionError::Replay) => {
                self.stats.dropped_replays += 1;
                return Received::Nothing;
            }
            Err(_) => {
                self.stats.dropped_unauthenticated += 1;
                return Received::Nothing;
            }
        };
        self.stats.opened += 1;
        entry.last_used_at = cx.now;
        entry.last_received_at = cx.now;
        entry.half_open_via = None;
        if slot == Slot::Pending {
            entry.previous = entry.current.take();
            entry.current = entry.pending.take();
            self.stats.handshakes_completed += 1;
            self.flush(i);
        }
        let peer = self.entries[i].address;
        if source != peer {
            // Sealed by `peer`, routed under another name: not what the peer sent.
            self.stats.dropped_wrong_source += 1;
            return Received::Nothing;
        }
        if plain.is_empty() {
            return Received::Nothing;
        }
        Received::Packet { peer, packet: plain }
    }

    /// Runs the timers due at `now`: handshake retries, expiry of half-open, idle and old state.
    pub fn handle_timeout(&mut self, cx: &mut Context<'_>) {
        let now = cx.now;
        let c = self.config;
        let mut i = 0;
        // Bounded by the table's length; each step keeps or removes one entry.
        while i < self.entries.len() {
            let entry = &mut self.entries[i];
            for slot in [&mut entry.current, &mut entry.previous, &mut entry.pending] {
                if slot.as_ref().is_some_and(|s| now.saturating_since(s.created_at) >= cx.reject_after) {
                    *slot = None;
                }
            }
            let half_open_expired = entry.half_open_via.is_some() && now >= entry.created_at + c.half_open_timeout;
            let idle = now >= entry.last_received_at + c.idle_timeout && entry.initiator.is_none();
            let retry_due = entry.initiator.as_ref().is_some_and(|(_, sent_at)| now >= *sent_at + cx.handshake_retry);
            let retry = retry_due && entry.attempts < c.handshake_attempts_max && (!entry.queue.is_empty() || entry.current.is_some());
            let give_up = retry_due && !retry;
            if give_up {
                entry.initiator = None;
            }
            let orphan = give_up && entry.current.is_none() && entry.pending.is_none();
            if half_open_expired || idle || orphan {
                self.remove(i);
                continue;
            }
            if retry {
                self.start_handshake(cx, i);
            }
            i += 1;
        }
    }

    /// When `handle_timeout` should run next.
    pub fn poll_timeout(&self, reject_after: Duration, handshake_retry: Duration) -> Option<Instant> {
        let c = &self.config;
        let mut at = None;
        for e in &self.entries {
            let reject = |s: &Option<Session>| s.as_ref().map(|s| s.created_at + reject_after);
            at = earliest(at, reject(&e.current));
            at = earliest(at, reject(&e.previous));
            at = earliest(at, reject(&e.pending));
            if e.half_open_via.is_some() {
                at = earliest(at, Some(e.created_at + c.half_open_timeout));
            }
            match e.initiator {
                Some((_, sent_at)) => at = earliest(at, Some(sent_at + handshake_retry)),
                None => at = earliest(at, Some(e.last_received_at + c.idle_timeout)),
            }
        }
        at
    }

}
