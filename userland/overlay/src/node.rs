//! One overlay node: peers and their sessions, handshake policy, timers, rekeying, routing
//! over sealed sessions, and the data plane (send, forward, deliver).
//!
//! The node is generic over the underlay endpoint type `E` (a `SocketAddr` on the host, a
//! smoltcp endpoint in the kernel): it never interprets endpoints, only stores the last one a
//! peer authenticated from (so peers may roam). Inputs are `handle_datagram` and
//! `handle_timeout`; outputs are `poll_transmit`, `poll_deliver`, `poll_event`, and
//! `poll_timeout` says when to call `handle_timeout` next.
//!
//! Unauthenticated input never gets an answer and never allocates: a handshake initiation
//! must carry a MAC keyed by our public key, come from a configured key (or any key when
//! `accept_unknown_peers`), pass a global token bucket and then a signature check before a
//! peer slot or a session is created; transport packets must open under a session we hold.
//! All queues and tables have fixed capacities from `Config`; when full, new items are
//! dropped and counted in `Stats`.
//!
//! Data is sealed hop by hop: intermediate nodes see overlay packets in the clear and the
//! source address is only as trustworthy as the path. End-to-end sealing is left to a later
//! layer (or to the applications' own TLS/QUIC).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::address::Address;
use crate::handshake::{self, Initiator};
use crate::identity::{Identity, PublicKey};
use crate::rng::Rng;
use crate::routing::{self, Message as RouteMessage, Router, Target};
use crate::session::Session;
use crate::time::{earliest, Duration, Instant};
use crate::wire::{self, DataRepr, DatagramType, Inner, TransportPacket};

/// Tunables and capacities of a node.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Accept handshakes from keys that were never added with `add_peer`.
    pub accept_unknown_peers: bool,
    /// Capacity of the peer table (configured and accepted peers together).
    pub max_peers: usize,
    /// Start a new handshake after sealing this many messages in one session.
    pub rekey_after_messages: u64,
    /// Start a new handshake when the current session is this old.
    pub rekey_after: Duration,
    /// Never use a session older than this.
    pub reject_after: Duration,
    /// Resend an unanswered initiation after this long.
    pub handshake_retry: Duration,
    /// Send a keepalive when nothing was sent to an up peer for this long.
    pub keepalive_interval: Duration,
    /// Declare a link down when nothing authenticated arrived for this long.
    pub dead_after: Duration,
    /// Initiations whose signature we are willing to check per second (all peers together).
    pub handshake_rate_per_sec: u32,
    /// Burst allowance of that rate.
    pub handshake_burst: u32,
    /// Capacity of the transmit queue.
    pub max_transmit_queue: usize,
    /// Capacity of the delivery queue.
    pub max_deliver_queue: usize,
    /// Capacity of the event queue.
    pub max_events: usize,
    /// Hop limit given to packets we originate.
    pub hop_limit: u8,
    /// Routing metric of one link.
    pub link_cost: u16,
    /// Largest routing plaintext per datagram.
    pub max_routing_payload: usize,
    /// Largest IPv6 packet `send` accepts.
    pub max_packet_len: usize,
    /// Routing tunables.
    pub routing: routing::Config,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            accept_unknown_peers: false,
            max_peers: 64,
            rekey_after_messages: 1 << 40,
            rekey_after: Duration::from_secs(120),
            reject_after: Duration::from_secs(180),
            handshake_retry: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            dead_after: Duration::from_secs(35),
            handshake_rate_per_sec: 200,
            handshake_burst: 64,
            max_transmit_queue: 4096,
            max_deliver_queue: 1024,
            max_events: 256,
            hop_limit: 64,
            link_cost: 1,
            max_routing_payload: 1200,
            max_packet_len: 1400,
            routing: routing::Config::default(),
        }
    }
}

/// A peer slot's stable name (also its routing `NeighbourId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u32);

/// Something the caller may want to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<E> {
    /// A session with a peer was established; it now routes through us.
    LinkUp {
        /// The peer.
        peer: PeerId,
        /// Where it was last seen.
        endpoint: E,
        /// Its proven key.
        key: PublicKey,
        /// Its address (derived from the key).
        address: Address,
    },
    /// A peer's link went down (silence, removal, or failed rekeying).
    LinkDown {
        /// The peer.
        peer: PeerId,
        /// Its key.
        key: PublicKey,
        /// Its address.
        address: Address,
    },
}

/// A packet addressed to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Claimed origin (authenticated hop by hop only).
    pub source: Address,
    /// Our address.
    pub destination: Address,
    /// The IPv6 packet.
    pub packet: Vec<u8>,
}

/// Why a call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// The peer table is full.
    PeerTableFull,
    /// That key is already a configured peer.
    DuplicatePeer,
    /// That is our own key.
    OwnKey,
    /// No such peer.
    UnknownPeer,
    /// No route to the destination (yet).
    NoRoute,
    /// The destination is outside the overlay prefix.
    NotOverlayAddress,
    /// The transmit or delivery queue is full.
    QueueFull,
    /// The packet exceeds `max_packet_len`.
    PacketTooLarge,
    /// The session's nonces are used up.
    SessionExhausted,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Initiations sent.
    pub handshakes_initiated: u64,
    /// Sessions that became usable (as initiator on response, as responder on confirmation).
    pub handshakes_completed: u64,
    /// Datagrams dropped without any answer (malformed, unauthenticated, not for a peer we accept).
    pub dropped_unauthenticated: u64,
    /// Transport packets refused by the replay window.
    pub dropped_replays: u64,
    /// Initiations dropped by the rate limit.
    pub dropped_rate_limited: u64,
    /// Packets dropped because a queue was full or no route existed while forwarding.
    pub dropped_no_route_or_queue: u64,
    /// Packets dropped at hop limit.
    pub dropped_hop_limit: u64,
    /// Packets forwarded for others.
    pub forwarded: u64,
    /// Packets delivered to us.
    pub delivered: u64,
    /// Transport datagrams sealed.
    pub sealed: u64,
}

struct Peer<E> {
    id: PeerId,
    endpoint: E,
    key: PublicKey,
    address: Address,
    configured: bool,
    initiator: Option<(Initiator, Instant)>,
    next_attempt_at: Option<Instant>,
    current: Option<Session>,
    previous: Option<Session>,
    pending: Option<Session>,
    last_init_timestamp_us: Option<u64>,
    last_received_at: Instant,
    last_sent_at: Instant,
    up: bool,
}

impl<E> Peer<E> {
    fn uses_index(&self, index: u32) -> bool {
        self.initiator.as_ref().is_some_and(|(h, _)| h.sender_index == index)
            || [&self.current, &self.previous, &self.pending].iter().any(|s| s.as_ref().is_some_and(|s| s.local_index == index))
    }
}

/// Which of a peer's sessions a packet opened under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Current,
    Previous,
    Pending,
}

/// An overlay node.
pub struct Node<E> {
    identity: Identity,
    key: PublicKey,
    address: Address,
    config: Config,
    rng: Rng,
    peers: Vec<Peer<E>>,
    next_peer_id: u32,
    router: Router,
    transmits: VecDeque<(E, Vec<u8>)>,
    deliveries: VecDeque<Delivery>,
    events: VecDeque<Event<E>>,
    tokens: u32,
    tokens_at: Instant,
    last_timestamp_us: u64,
    stats: Stats,
}

impl<E: Copy + PartialEq + core::fmt::Debug> Node<E> {
    /// A node with the identity from `identity_seed` (secret) and randomness from `rng_seed`.
    pub fn new(identity_seed: [u8; 32], rng_seed: [u8; 32], config: Config, now: Instant) -> Node<E> {
        assert!(config.max_peers > 0 && config.max_peers <= config.routing.max_neighbours);
        assert!(config.rekey_after < config.reject_after);
        assert!(config.keepalive_interval < config.dead_after);
        assert!(config.max_routing_payload > wire::UPDATE_TLV_LEN, "room for the kind byte and one TLV");
        let identity = Identity::from_seed(identity_seed);
        let key = identity.public_key();
        let address = Address::from_public_key(&key);
        Node {
            identity,
            key,
            address,
            config,
            rng: Rng::from_seed(rng_seed),
            peers: Vec::new(),
            next_peer_id: 1,
            router: Router::new(address, config.routing, now),
            transmits: VecDeque::new(),
            deliveries: VecDeque::new(),
            events: VecDeque::new(),
            tokens: config.handshake_burst,
            tokens_at: now,
            last_timestamp_us: 0,
            stats: Stats::default(),
        }
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    /// Our overlay address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The routing state (read-only).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Mixes fresh entropy into the node's generator.
    pub fn reseed(&mut self, entropy: &[u8]) {
        self.rng.reseed(entropy);
    }

    /// Number of peer slots in use.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether the peer's link is up.
    pub fn is_up(&self, peer: PeerId) -> bool {
        self.peers.iter().any(|p| p.id == peer && p.up)
    }

    /// The peer slot holding `key`.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.peers.iter().find(|p| p.key == *key).map(|p| p.id)
    }

    fn index_of(&self, peer: PeerId) -> Option<usize> {
        self.peers.iter().position(|p| p.id == peer)
    }

    /// Adds a peer we expect to hold `key` at `endpoint` and starts a handshake with it.
    pub fn add_peer(&mut self, now: Instant, endpoint: E, key: PublicKey) -> Result<PeerId, NodeError> {
        if key == self.key {
            return Err(NodeError::OwnKey);
        }
        if let Some(i) = self.peers.iter().position(|p| p.key == key) {
            if self.peers[i].configured {
                return Err(NodeError::DuplicatePeer);
            }
            self.peers[i].configured = true;
            self.peers[i].endpoint = endpoint;
            return Ok(self.peers[i].id);
        }
        if self.peers.len() >= self.config.max_peers {
            return Err(NodeError::PeerTableFull);
        }
        let i = self.insert_peer(now, endpoint, key, true);
        self.start_handshake(now, i);
        Ok(self.peers[i].id)
    }

    /// Forgets a peer: its link goes down and its sessions are erased.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerId) -> Result<(), NodeError> {
        let i = self.index_of(peer).ok_or(NodeError::UnknownPeer)?;
        self.peers[i].configured = false;
        if self.peers[i].up {
            self.link_down(now, i);
        }
        if let Some(i) = self.index_of(peer) {
            self.peers.remove(i);
        }
        debug_assert!(self.index_of(peer).is_none());
        Ok(())
    }

    fn insert_peer(&mut self, now: Instant, endpoint: E, key: PublicKey, configured: bool) -> usize {
        assert!(self.peers.len() < self.config.max_peers);
        let id = PeerId(self.next_peer_id);
        self.next_peer_id = self.next_peer_id.wrapping_add(1).max(1);
        self.peers.push(Peer {
            id,
            endpoint,
            key,
            address: Address::from_public_key(&key),
            configured,
            initiator: None,
            next_attempt_at: None,
            current: None,
            previous: None,
            pending: None,
            last_init_timestamp_us: None,
            last_received_at: now,
            last_sent_at: now,
            up: false,
        });
        self.peers.len() - 1
    }

    fn fresh_index(&mut self) -> u32 {
        // Bounded retries; a collision after 16 draws from 2^32 is practically impossible.
        let mut index = self.rng.next_u32();
        for _ in 0..16 {
            if index != 0 && !self.peers.iter().any(|p| p.uses_index(index)) {
                break;
            }
            index = self.rng.next_u32();
        }
        index
    }

    fn push_transmit(&mut self, endpoint: E, datagram: Vec<u8>) -> Result<(), NodeError> {
        if self.transmits.len() >= self.config.max_transmit_queue {
            self.stats.dropped_no_route_or_queue += 1;
            return Err(NodeError::QueueFull);
        }
        self.transmits.push_back((endpoint, datagram));
        Ok(())
    }

    fn push_event(&mut self, event: Event<E>) {
        if self.events.len() < self.config.max_events {
            self.events.push_back(event);
        }
    }

    fn start_handshake(&mut self, now: Instant, i: usize) {
        let index = self.fresh_index();
        let ephemeral_seed = self.rng.bytes32();
        let timestamp_us = now.micros.max(self.last_timestamp_us.saturating_add(1));
        self.last_timestamp_us = timestamp_us;
        let (state, init) = Initiator::start(&self.identity, self.peers[i].key, ephemeral_seed, index, timestamp_us);
        self.peers[i].initiator = Some((state, now));
        self.peers[i].next_attempt_at = None;
        self.stats.handshakes_initiated += 1;
        let endpoint = self.peers[i].endpoint;
        let _ = self.push_transmit(endpoint, init.to_vec());
    }

    /// Feeds one datagram received from `from` on the underlay.
    pub fn handle_datagram(&mut self, now: Instant, from: E, datagram: &[u8]) {
        let handled = match DatagramType::of(datagram) {
            Ok(DatagramType::HandshakeInit) => self.handle_init(now, from, datagram),
            Ok(DatagramType::HandshakeResp) => self.handle_resp(now, from, datagram),
            Ok(DatagramType::Transport) => self.handle_transport(now, from, datagram),
            Err(_) => false,
        };
        if !handled {
            self.stats.dropped_unauthenticated += 1;
        }
        self.pump_routing(now);
    }

    fn take_token(&mut self, now: Instant) -> bool {
        let per_token_us = 1_000_000 / u64::from(self.config.handshake_rate_per_sec.max(1));
        let earned = now.saturating_since(self.tokens_at).micros / per_token_us.max(1);
        if earned > 0 {
            let tokens = u64::from(self.tokens).saturating_add(earned).min(u64::from(self.config.handshake_burst));
            self.tokens = tokens as u32;
            self.tokens_at = now;
        }
        if self.tokens == 0 {
            self.stats.dropped_rate_limited += 1;
            return false;
        }
        self.tokens -= 1;
        true
    }

    fn handle_init(&mut self, now: Instant, from: E, datagram: &[u8]) -> bool {
        let Ok(init) = handshake::check_init_mac(&self.key, datagram) else { return false };
        if init.static_key == self.key {
            return false;
        }
        let known = self.peers.iter().position(|p| p.key == init.static_key);
        match known {
            None if !self.config.accept_unknown_peers || self.peers.len() >= self.config.max_peers => return false,
            Some(i) if self.peers[i].last_init_timestamp_us.is_some_and(|t| init.timestamp_us <= t) => return false,
            _ => {}
        }
        if !self.take_token(now) {
            return true; // counted as rate limited
        }
        if handshake::check_init_signature(&self.key, &init).is_err() {
            return false;
        }
        let local_index = self.fresh_index();
        let ephemeral_seed = self.rng.bytes32();
        let Ok((resp, keys)) = handshake::respond(&self.identity, &init, ephemeral_seed, local_index) else {
            return false;
        };
        let i = match known {
            Some(i) => i,
            None => self.insert_peer(now, from, init.static_key, false),
        };
        let peer = &mut self.peers[i];
        peer.last_init_timestamp_us = Some(init.timestamp_us);
        peer.endpoint = from;
        peer.pending = Some(Session::new(&keys, local_index, init.sender_index, false, now));
        peer.last_sent_at = now;
        let _ = self.push_transmit(from, resp.to_vec());
        true
    }

    fn handle_resp(&mut self, now: Instant, from: E, datagram: &[u8]) -> bool {
        let Ok(repr) = wire::RespRepr::parse(datagram) else { return false };
        let Some(i) = self.peers.iter().position(|p| p.initiator.as_ref().is_some_and(|(h, _)| h.sender_index == repr.receiver_index))
        else {
            return false;
        };
        let Some((state, _)) = self.peers[i].initiator.as_ref() else { return false };
        let Ok((keys, remote_index)) = state.finish(&self.key, datagram) else { return false };
        let local_index = state.sender_index;
        let peer = &mut self.peers[i];
        peer.initiator = None;
        peer.previous = peer.current.take();
        peer.current = Some(Session::new(&keys, local_index, remote_index, true, now));
        peer.endpoint = from;
        peer.last_received_at = now;
        self.stats.handshakes_completed += 1;
        if self.peers[i].up {
            self.router.resend_dump(self.peers[i].id.0);
        } else {
            self.link_up(i);
        }
        // Key confirmation for the responder, who sends nothing until it hears from us.
        let _ = self.seal_to(now, i, &[wire::KIND_KEEPALIVE]);
        true
    }

    fn find_session(&self, index: u32) -> Option<(usize, Slot)> {
        self.peers.iter().enumerate().find_map(|(i, p)| {
            let matches = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.local_index == index);
            if matches(&p.current) {
                Some((i, Slot::Current))
            } else if matches(&p.previous) {
                Some((i, Slot::Previous))
            } else if matches(&p.pending) {
                Some((i, Slot::Pending))
            } else {
                None
            }
        })
    }

    fn handle_transport(&mut self, now: Instant, from: E, datagram: &[u8]) -> bool {
        let Ok(packet) = TransportPacket::new_checked(datagram) else { return false };
        let Some((i, slot)) = self.find_session(packet.receiver_index()) else { return false };
        let peer = &mut self.peers[i];
        let session = match slot {
            Slot::Current => peer.current.as_mut(),
            Slot::Previous => peer.previous.as_mut(),
            Slot::Pending => peer.pending.as_mut(),
        };
        let Some(session) = session else { return false };
        let plain = match session.open(&packet) {
            Ok(plain) => plain,
            Err(crate::session::SessionError::Replay) => {
                self.stats.dropped_replays += 1;
                return true;
            }
            Err(_) => return false,
        };
        let renewed = slot == Slot::Pending;
        if renewed {
            peer.previous = peer.current.take();
            peer.current = peer.pending.take();
            self.stats.handshakes_completed += 1;
        }
        peer.endpoint = from;
        peer.last_received_at = now;
        if !peer.up {
            self.link_up(i);
        } else if renewed {
            // The peer started this handshake: it may have restarted and lost its routes.
            let id = peer.id.0;
            self.router.resend_dump(id);
        }
        match Inner::parse(&plain) {
            Ok(Inner::Keepalive) | Err(_) => {}
            Ok(Inner::Routing(tlvs)) => {
                let (id, address) = (self.peers[i].id, self.peers[i].address);
                // Bounded by the datagram length: each TLV takes at least two bytes.
                for message in tlvs {
                    let Ok(message) = message else { break };
                    // Address binding: only the key's owner may claim to be the origin.
                    if let RouteMessage::Update { destination, metric: 0, .. } = message {
                        if destination != address {
                            continue;
                        }
                    }
                    self.router.handle_message(now, id.0, message);
                }
            }
            Ok(Inner::Data(data)) => self.handle_data(now, data),
        }
        true
    }

    fn handle_data(&mut self, now: Instant, data: DataRepr<'_>) {
        if data.destination == self.address {
            if self.deliveries.len() >= self.config.max_deliver_queue {
                self.stats.dropped_no_route_or_queue += 1;
                return;
            }
            self.stats.delivered += 1;
            let delivery = Delivery { source: data.source, destination: data.destination, packet: data.payload.to_vec() };
            self.deliveries.push_back(delivery);
            return;
        }
        if data.hop_limit <= 1 {
            self.stats.dropped_hop_limit += 1;
            return;
        }
        let forwarded = DataRepr { hop_limit: data.hop_limit - 1, ..data };
        if self.send_data(now, &forwarded).is_ok() {
            self.stats.forwarded += 1;
        } else {
            self.stats.dropped_no_route_or_queue += 1;
        }
    }

    fn send_data(&mut self, now: Instant, data: &DataRepr<'_>) -> Result<(), NodeError> {
        let next = self.router.next_hop(&data.destination).ok_or(NodeError::NoRoute)?;
        let i = self.index_of(PeerId(next)).ok_or(NodeError::NoRoute)?;
        let mut plain = Vec::with_capacity(1 + wire::DATA_HEADER_LEN + data.payload.len());
        data.emit(&mut plain);
        self.seal_to(now, i, &plain)
    }

    /// Sends an IPv6 packet to `destination` through the best next hop.
    pub fn send(&mut self, now: Instant, destination: Address, packet: &[u8]) -> Result<(), NodeError> {
        if !destination.is_overlay() {
            return Err(NodeError::NotOverlayAddress);
        }
        if packet.len() > self.config.max_packet_len {
            return Err(NodeError::PacketTooLarge);
        }
        let data = DataRepr { destination, source: self.address, hop_limit: self.config.hop_limit, payload: packet };
        if destination == self.address {
            if self.deliveries.len() >= self.config.max_deliver_queue {
                return Err(NodeError::QueueFull);
            }
            self.deliveries.push_back(Delivery { source: self.address, destination, packet: packet.to_vec() });
            return Ok(());
        }
        self.send_data(now, &data)
    }

    fn seal_to(&mut self, now: Instant, i: usize, plaintext: &[u8]) -> Result<(), NodeError> {
        let reject_after = self.config.reject_after;
        let peer = &mut self.peers[i];
        let session = peer.current.as_mut().filter(|s| now.saturating_since(s.created_at) < reject_after).ok_or(NodeError::NoRoute)?;
        let datagram = session.seal(plaintext).map_err(|_| NodeError::SessionExhausted)?;
        let wants_rekey = session.sent_count() >= self.config.rekey_after_messages && peer.initiator.is_none();
        peer.last_sent_at = now;
        let endpoint = peer.endpoint;
        self.stats.sealed += 1;
        self.push_transmit(endpoint, datagram)?;
        if wants_rekey {
            self.start_handshake(now, i);
        }
        Ok(())
    }

    fn link_up(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        debug_assert!(!peer.up);
        peer.up = true;
        let (id, endpoint, key, address) = (peer.id, peer.endpoint, peer.key, peer.address);
        // The router's capacity equals or exceeds ours (asserted in `new`), so this cannot fail.
        let _ = self.router.neighbour_up(id.0, self.config.link_cost);
        self.push_event(Event::LinkUp { peer: id, endpoint, key, address });
    }

    fn link_down(&mut self, now: Instant, i: usize) {
        let peer = &mut self.peers[i];
        peer.up = false;
        peer.current = None;
        peer.previous = None;
        peer.pending = None;
        peer.initiator = None;
        let (id, key, address, configured) = (peer.id, peer.key, peer.address, peer.configured);
        peer.next_attempt_at = configured.then_some(now + self.config.handshake_retry);
        self.router.neighbour_down(now, id.0);
        self.push_event(Event::LinkDown { peer: id, key, address });
        if !configured {
            self.peers.remove(i);
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.router.handle_timeout(now);
        let ids: Vec<PeerId> = self.peers.iter().map(|p| p.id).collect();
        for id in ids {
            self.peer_timers(now, id);
        }
        self.pump_routing(now);
    }

    fn peer_timers(&mut self, now: Instant, id: PeerId) {
        let Some(i) = self.index_of(id) else { return };
        let c = self.config;
        let peer = &mut self.peers[i];
        let too_old = |s: &Option<Session>| s.as_ref().is_some_and(|s| now.saturating_since(s.created_at) >= c.reject_after);
        if too_old(&peer.previous) {
            peer.previous = None;
        }
        if too_old(&peer.pending) {
            peer.pending = None;
        }
        if too_old(&peer.current) {
            peer.current = None;
        }
        if peer.up && (peer.current.is_none() || now.saturating_since(peer.last_received_at) >= c.dead_after) {
            self.link_down(now, i);
            return;
        }
        if let Some((_, sent_at)) = peer.initiator {
            if now >= sent_at + c.handshake_retry {
                if peer.configured || peer.up {
                    self.start_handshake(now, i);
                } else {
                    peer.initiator = None;
                }
            }
            return;
        }
        if !peer.up {
            if peer.configured && peer.next_attempt_at.is_some_and(|t| now >= t) {
                self.start_handshake(now, i);
            }
            return;
        }
        if let Some(current) = &peer.current {
            let age = now.saturating_since(current.created_at);
            let due = if current.initiator { c.rekey_after } else { Duration::from_micros(c.rekey_after.micros + c.handshake_retry.micros) };
            if age >= due {
                self.start_handshake(now, i);
                return;
            }
        }
        if now >= self.peers[i].last_sent_at + c.keepalive_interval {
            let _ = self.seal_to(now, i, &[wire::KIND_KEEPALIVE]);
        }
    }

    /// When `handle_timeout` should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c = &self.config;
        let mut at = self.router.poll_timeout();
        for peer in &self.peers {
            let reject = |s: &Option<Session>| s.as_ref().map(|s| s.created_at + c.reject_after);
            at = earliest(at, reject(&peer.previous));
            at = earliest(at, reject(&peer.pending));
            at = earliest(at, reject(&peer.current));
            if let Some((_, sent_at)) = peer.initiator {
                at = earliest(at, Some(sent_at + c.handshake_retry));
            } else if !peer.up {
                at = earliest(at, peer.next_attempt_at.filter(|_| peer.configured));
            } else if let Some(current) = &peer.current {
                let due = if current.initiator { c.rekey_after } else { Duration::from_micros(c.rekey_after.micros + c.handshake_retry.micros) };
                at = earliest(at, Some(current.created_at + due));
            }
            if peer.up {
                at = earliest(at, Some(peer.last_received_at + c.dead_after));
                at = earliest(at, Some(peer.last_sent_at + c.keepalive_interval));
            }
        }
        at
    }

    fn pump_routing(&mut self, now: Instant) {
        let mut outputs = Vec::new();
        while let Some(output) = self.router.poll_output() {
            outputs.push(output);
        }
        if outputs.is_empty() {
            return;
        }
        let mut buffers: Vec<(usize, Vec<u8>)> = Vec::new();
        for output in outputs {
            let targets: Vec<usize> = match output.to {
                Target::One(n) => self.index_of(PeerId(n)).filter(|i| self.peers[*i].up).into_iter().collect(),
                Target::All => (0..self.peers.len()).filter(|i| self.peers[*i].up).collect(),
            };
            for i in targets {
                let b = match buffers.iter().position(|(p, _)| *p == i) {
                    Some(b) => b,
                    None => {
                        buffers.push((i, alloc::vec![wire::KIND_ROUTING]));
                        buffers.len() - 1
                    }
                };
                if buffers[b].1.len() + wire::UPDATE_TLV_LEN > self.config.max_routing_payload {
                    let full = core::mem::replace(&mut buffers[b].1, alloc::vec![wire::KIND_ROUTING]);
                    let _ = self.seal_to(now, i, &full);
                }
                wire::emit_route_message(&output.message, &mut buffers[b].1);
            }
        }
        for (i, buffer) in buffers {
            let _ = self.seal_to(now, i, &buffer);
        }
    }

    /// The next datagram to send: (endpoint, bytes).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(E, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next packet addressed to us.
    #[must_use]
    pub fn poll_deliver(&mut self) -> Option<Delivery> {
        self.deliveries.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<E>> {
        self.events.pop_front()
    }
}
