//! One overlay node: peers and their sessions, handshake policy, timers, rekeying, routing
//! over sealed sessions, and the data plane (send, forward, deliver).
//!
//! The node is generic over the underlay endpoint type `E` (a `SocketAddr` on the host, a
//! smoltcp endpoint in the kernel): it never interprets endpoints, only stores the last one a
//! peer authenticated from (so peers may roam). Inputs are `handle_datagram` and
//! `handle_timeout`; outputs are `poll_transmit`, `poll_deliver`, `poll_event`, and
//! `poll_timeout` says when to call `handle_timeout` next.
//!
//! The door (issue 11): every check on a handshake initiation that costs no public-key
//! operation runs first, and the signature check, the only expensive one, runs last:
//! 1. format and `mac1` (keyed by our public key);
//! 2. under load (more than `load_threshold_per_sec` initiations, or a budget ran dry, in
//!    the last second) a valid `mac2` from a cookie for the datagram's source address, or
//!    else a cookie reply and nothing more (see `handshake`; spoofed sources never get past
//!    this, since only the real address receives its cookie);
//! 3. policy (`accept_unknown_peers`), freshness against our clock (`init_age_max`) and
//!    against the newest timestamp verified for that key (`guard::TimestampMemory`, which
//!    outlives peer slots);
//! 4. a token from the source address's bucket (`guard::SourceLimiter`), then from the
//!    known-peer budget (a configured or linked key at its last authenticated address, so
//!    rekeys never compete with strangers) or else from the budget for everyone else;
//! 5. the signature.
//!
//! Only then is state created. A peer slot for a key that is neither configured nor linked
//! is half-open: it expires after `half_open_timeout`, each source address holds at most
//! `half_open_per_source_max` of them, and when the table is full the oldest half-open slot
//! gives way. Transport packets must open under a session we hold. All queues and tables
//! have fixed capacities from `Config`; when full, new items are dropped and counted in
//! `Stats`.
//!
//! Data is sealed twice: end to end between source and destination (`e2e`: a session per
//! destination, made by a handshake carried in routed packets), and hop by hop on every
//! link. A relay opens the link layer only to read the routed header (destination, source,
//! hop limit) and forwards the end-to-end datagram it cannot read. A packet is delivered
//! only when it opened under the end-to-end session with its sender, its routed source and
//! inner IPv6 source both name that sender and its inner destination is us; anything else
//! is counted (`dropped_spoofed_source`, `e2e::Stats`) and dropped.
//!
//! Except when there is no relay: a packet whose destination is the next hop itself goes
//! sealed once, under the link session (`wire::KIND_DIRECT`), since that session already
//! authenticates the same two keys as an end-to-end one would (handshake-proven key, its
//! address, counter nonces, the replay window). Its receiver delivers it under the same
//! rule: the inner IPv6 source must be the link peer's address, the destination ours.
//!
//! Route announcements are signed by their originators (`sign_origin`, checked by
//! `verify_origin` as the router's verifier, with hash-chain metrics: see `routing`); the
//! node signs its own address's announcement whenever its seqno changes, with a fresh chain.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::address::Address;
use crate::e2e::{self, E2e, Received};
use crate::endpoint::{Endpoint, SourceAddress};
use crate::guard::{CookieJar, SourceLimiter, TimestampMemory, TokenBucket, COOKIE_LEN, COOKIE_SECRET_LIFETIME};
use crate::handshake::{self, Initiator};
use crate::identity::{Identity, PublicKey};
use crate::rng::Rng;
use crate::routing::{self, Message as RouteMessage, Origin, Router, Target};
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
    /// Initiations whose signature we are willing to check per second from keys that are
    /// not known peers at their known address (all such keys together).
    pub handshake_rate_per_sec: u32,
    /// Burst allowance of that rate.
    pub handshake_burst: u32,
    /// Initiations per second from configured or linked keys at their last authenticated
    /// address (rekeys, reconnects): a budget strangers cannot drain.
    pub known_handshake_rate_per_sec: u32,
    /// Burst allowance of that rate.
    pub known_handshake_burst: u32,
    /// Initiations per second from one source address.
    pub source_handshake_rate_per_sec: u32,
    /// Burst allowance of that rate.
    pub source_handshake_burst: u32,
    /// Source addresses with a bucket (least recently used evicted).
    pub sources_max: usize,
    /// MAC1-valid initiations per second above which `mac2` (a cookie) is required.
    pub load_threshold_per_sec: u32,
    /// Initiations whose timestamp differs from our clock by more than this are refused.
    pub init_age_max: Duration,
    /// Keys whose newest verified initiation timestamp is remembered.
    pub init_timestamps_max: usize,
    /// A half-open peer (neither configured nor linked) is forgotten after this long.
    pub half_open_timeout: Duration,
    /// Most half-open peers one source address may hold.
    pub half_open_per_source_max: usize,
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
    /// End-to-end tunables and capacities.
    pub e2e: e2e::Config,
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
            // Signature checks are ~37 us each (27k/s on one core, DESIGN.md): 200/s for
            // strangers and 50/s for known peers keep the door under 1% of a core.
            handshake_rate_per_sec: 200,
            handshake_burst: 64,
            // 64 peers rekeying every 2 minutes need about 0.5/s; 50/s leaves room for a
            // whole table reconnecting after an outage within a few seconds.
            known_handshake_rate_per_sec: 50,
            known_handshake_burst: 64,
            // An honest host sends one initiation per peer per retry (5 s); 4/s with a burst
            // of 8 serves a few users behind one NAT and caps one attacker address at 2% of
            // the strangers' budget.
            source_handshake_rate_per_sec: 4,
            source_handshake_burst: 8,
            // 1,024 buckets of ~64 bytes: 64 KiB at most.
            sources_max: 1024,
            // Well above honest load (see above), well below the strangers' budget, so
            // cookies are asked for before that budget runs dry.
            load_threshold_per_sec: 100,
            // Two minutes either way tolerates clock skew between hosts (as WireGuard's
            // cookie lifetime) while limiting how long a captured initiation is worth anything.
            init_age_max: Duration::from_secs(120),
            // Covers 20 s of the strangers' budget at full rate; older entries only matter
            // within `init_age_max` (~40 bytes each: 160 KiB at most).
            init_timestamps_max: 4096,
            // Two handshake retries: an honest initiator confirms within one round trip.
            half_open_timeout: Duration::from_secs(10),
            // A few users behind one NAT; one address cannot hold more than 1/16 of the table.
            half_open_per_source_max: 4,
            max_transmit_queue: 4096,
            max_deliver_queue: 1024,
            max_events: 256,
            hop_limit: 64,
            link_cost: 1,
            max_routing_payload: 1200,
            max_packet_len: 1400,
            routing: routing::Config::default(),
            e2e: e2e::Config::default(),
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
    /// Origin: the peer of the end-to-end session the packet opened under.
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
    /// Packets to a linked peer sealed once, under the link session (`wire::KIND_DIRECT`).
    pub sealed_once: u64,
    /// Initiations refused because their timestamp is too far from our clock or not newer
    /// than the last one verified for their key.
    pub dropped_stale_inits: u64,
    /// Cookie replies sent (initiations under load without a valid mac2).
    pub cookie_replies_sent: u64,
    /// Cookie replies accepted from responders.
    pub cookie_replies_received: u64,
    /// Half-open peers dropped (expired, or evicted for a newer initiation).
    pub half_open_dropped: u64,
    /// Initiations refused because the peer table had no slot to give.
    pub dropped_table_full: u64,
    /// Delivered packets whose inner IPv6 header disagrees with the end-to-end authenticated
    /// sender or with our address.
    pub dropped_spoofed_source: u64,
    /// End-to-end counters.
    pub e2e: e2e::Stats,
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
    /// The last cookie this peer sent us as responder, and when.
    cookie: Option<([u8; COOKIE_LEN], Instant)>,
    /// Whether our initiation in flight carried a cookie (then a cookie reply waits for the
    /// retry timer instead of triggering an immediate resend: no ping-pong).
    init_had_cookie: bool,
    /// When the last verified initiation created or refreshed this slot.
    init_verified_at: Instant,
    last_received_at: Instant,
    last_sent_at: Instant,
    up: bool,
}

impl<E> Peer<E> {
    /// Neither configured nor linked: unauthenticated state that must expire.
    fn half_open(&self) -> bool {
        !self.configured && !self.up
    }

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
    stranger_budget: TokenBucket,
    known_budget: TokenBucket,
    sources: SourceLimiter,
    cookies: CookieJar,
    init_timestamps: TimestampMemory,
    load_window_at: Instant,
    load_window_count: u32,
    under_load_until: Instant,
    last_timestamp_us: u64,
    e2e: E2e,
    /// What this node forwarded for others, as it saw it after opening the link layer (off
    /// unless `mirror_forwarded` turned it on: a diagnostic tap, as tcpdump on a relay).
    mirror: Option<VecDeque<Vec<u8>>>,
    mirror_capacity: usize,
    stats: Stats,
}

impl<E: Endpoint> Node<E> {
    /// A node with the identity from `identity_seed` (secret) and randomness from `rng_seed`.
    pub fn new(identity_seed: [u8; 32], rng_seed: [u8; 32], config: Config, now: Instant) -> Node<E> {
        assert!(config.max_peers > 0 && config.max_peers <= config.routing.max_neighbours);
        assert!(config.rekey_after < config.reject_after);
        assert!(config.keepalive_interval < config.dead_after);
        assert!(config.max_routing_payload > wire::UPDATE_TLV_LEN, "room for the kind byte and one TLV");
        assert!(config.half_open_per_source_max > 0 && config.sources_max > 0 && config.init_timestamps_max > 0);
        let mut rng = Rng::from_seed(rng_seed);
        let cookies = CookieJar::new(&mut rng, now);
        let identity = Identity::from_seed(identity_seed);
        let key = identity.public_key();
        let address = Address::from_public_key(&key);
        Node {
            identity,
            key,
            address,
            config,
            rng,
            peers: Vec::new(),
            next_peer_id: 1,
            router: {
                let mut router = Router::new(address, config.routing, now);
                router.set_verifier(verify_origin);
                router
            },
            transmits: VecDeque::new(),
            deliveries: VecDeque::new(),
            events: VecDeque::new(),
            stranger_budget: TokenBucket::full(config.handshake_burst, now),
            known_budget: TokenBucket::full(config.known_handshake_burst, now),
            sources: SourceLimiter::new(config.sources_max, config.source_handshake_rate_per_sec, config.source_handshake_burst),
            cookies,
            init_timestamps: TimestampMemory::new(config.init_timestamps_max),
            load_window_at: now,
            load_window_count: 0,
            under_load_until: now,
            last_timestamp_us: 0,
            e2e: E2e::new(address, config.e2e, now),
            mirror: None,
            mirror_capacity: 0,
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
        Stats { e2e: self.e2e.stats(), ..self.stats }
    }

    /// The end-to-end layer (read-only).
    pub fn e2e(&self) -> &E2e {
        &self.e2e
    }

    /// Turns the forwarding mirror on (keeping at most `capacity` packets) or off (`0`):
    /// `poll_mirrored` then yields every routed payload this node forwards for others, as
    /// the relay sees it. For tests and diagnostics.
    pub fn mirror_forwarded(&mut self, capacity: usize) {
        self.mirror = (capacity > 0).then(|| VecDeque::with_capacity(capacity.min(1024)));
        self.mirror_capacity = capacity;
    }

    /// The next mirrored payload (see `mirror_forwarded`).
    pub fn poll_mirrored(&mut self) -> Option<Vec<u8>> {
        self.mirror.as_mut()?.pop_front()
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

    /// The overlay address of a peer.
    pub fn peer_address(&self, peer: PeerId) -> Option<Address> {
        self.peers.iter().find(|p| p.id == peer).map(|p| p.address)
    }

    /// The key of a peer.
    pub fn peer_key(&self, peer: PeerId) -> Option<PublicKey> {
        self.peers.iter().find(|p| p.id == peer).map(|p| p.key)
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
            // A configured peer outranks unauthenticated state: the oldest half-open slot
            // gives way (else a flood of half-open handshakes could keep peers out).
            let oldest = self.peers.iter().enumerate().filter(|(_, p)| p.half_open()).min_by_key(|(_, p)| p.init_verified_at).map(|(i, _)| i);
            let Some(victim) = oldest else { return Err(NodeError::PeerTableFull) };
            self.peers.remove(victim);
            self.stats.half_open_dropped += 1;
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
            cookie: None,
            init_had_cookie: false,
            init_verified_at: now,
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
        let cookie = self.peers[i].cookie.filter(|(_, at)| now.saturating_since(*at) < COOKIE_SECRET_LIFETIME).map(|(c, _)| c);
        let (state, init) = Initiator::start(&self.identity, self.peers[i].key, ephemeral_seed, index, timestamp_us, cookie.as_ref());
        self.peers[i].initiator = Some((state, now));
        self.peers[i].init_had_cookie = cookie.is_some();
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
            Ok(DatagramType::CookieReply) => self.handle_cookie_reply(now, datagram),
            Ok(DatagramType::Transport) => self.handle_transport(now, from, datagram),
            Err(_) => false,
        };
        if !handled {
            self.stats.dropped_unauthenticated += 1;
        }
        self.pump_routing(now);
    }

    /// Counts a MAC1-valid initiation towards the load estimate; true when under load.
    fn note_init_load(&mut self, now: Instant) -> bool {
        const LOAD_WINDOW: Duration = Duration::from_secs(1);
        if now.saturating_since(self.load_window_at) >= LOAD_WINDOW {
            self.load_window_at = now;
            self.load_window_count = 0;
        }
        self.load_window_count = self.load_window_count.saturating_add(1);
        if self.load_window_count > self.config.load_threshold_per_sec {
            self.under_load_until = now + LOAD_WINDOW;
        }
        now < self.under_load_until
    }

    /// Whether `init` comes from a configured or linked key at its last authenticated address.
    fn known_at_home(&self, key: &PublicKey, source: SourceAddress) -> Option<usize> {
        self.peers.iter().position(|p| p.key == *key && !p.half_open() && p.endpoint.source_address() == source)
    }

    /// Takes the tokens an initiation needs: its source's, then its budget's. A dry budget
    /// puts the node under load for a second, so cookies are asked for from then on (a dry
    /// source bucket does not: one noisy address must not slow everyone's handshakes).
    fn take_init_tokens(&mut self, now: Instant, source: SourceAddress, known: bool) -> bool {
        let c = self.config;
        if !self.sources.take(now, source) {
            self.stats.dropped_rate_limited += 1;
            return false;
        }
        let granted = if known {
            self.known_budget.take(now, c.known_handshake_rate_per_sec, c.known_handshake_burst)
        } else {
            self.stranger_budget.take(now, c.handshake_rate_per_sec, c.handshake_burst)
        };
        if !granted {
            self.stats.dropped_rate_limited += 1;
            self.under_load_until = now + Duration::from_secs(1);
        }
        granted
    }

    fn send_cookie_reply(&mut self, now: Instant, from: E, init: &wire::InitRepr) {
        self.cookies.maybe_rotate(&mut self.rng, now);
        let cookie = self.cookies.cookie(from.source_address());
        let mut nonce = [0u8; wire::COOKIE_NONCE_LEN];
        self.rng.fill(&mut nonce);
        let reply = handshake::cookie_reply(&self.key, init, &cookie, nonce);
        if self.push_transmit(from, reply.to_vec()).is_ok() {
            self.stats.cookie_replies_sent += 1;
        }
    }

    fn handle_init(&mut self, now: Instant, from: E, datagram: &[u8]) -> bool {
        // 1. Format and mac1: a keyed hash.
        let Ok(init) = handshake::check_init_mac(&self.key, datagram) else { return false };
        if init.static_key == self.key {
            return false;
        }
        let source = from.source_address();
        // 2. Under load, proof that the source receives at its address.
        if self.note_init_load(now) {
            self.cookies.maybe_rotate(&mut self.rng, now);
            if !handshake::check_mac2(datagram, &self.cookies.valid_cookies(source)) {
                self.send_cookie_reply(now, from, &init);
                return true;
            }
        }
        // 3. Policy and freshness.
        let known = self.known_at_home(&init.static_key, source);
        let in_table = self.peers.iter().position(|p| p.key == init.static_key);
        if in_table.is_none() && !self.config.accept_unknown_peers {
            return false;
        }
        if init.timestamp_us.abs_diff(now.micros) > self.config.init_age_max.micros
            || !self.init_timestamps.is_fresh(&init.static_key, init.timestamp_us)
        {
            self.stats.dropped_stale_inits += 1;
            return true;
        }
        // 4. Tokens, spent only now that every cheap check passed.
        if !self.take_init_tokens(now, source, known.is_some()) {
            return true;
        }
        // 5. The signature.
        if handshake::check_init_signature(&self.key, &init).is_err() {
            return false;
        }
        self.init_timestamps.record(now, init.static_key, init.timestamp_us);
        let local_index = self.fresh_index();
        let ephemeral_seed = self.rng.bytes32();
        let Ok((resp, keys)) = handshake::respond(&self.identity, &init, ephemeral_seed, local_index) else {
            return false;
        };
        let i = match self.peers.iter().position(|p| p.key == init.static_key) {
            Some(i) => i,
            None => {
                if !self.make_room_for_half_open(source) {
                    self.stats.dropped_table_full += 1;
                    return true;
                }
                self.insert_peer(now, from, init.static_key, false)
            }
        };
        let peer = &mut self.peers[i];
        peer.init_verified_at = now;
        peer.endpoint = from;
        peer.pending = Some(Session::new(&keys, local_index, init.sender_index, false, now));
        peer.last_sent_at = now;
        let _ = self.push_transmit(from, resp.to_vec());
        true
    }

    /// Frees a slot for a new half-open peer from `source`: that source's oldest half-open
    /// peer when it holds its maximum, else the oldest half-open peer when the table is full.
    /// False when the table is full of configured or linked peers.
    fn make_room_for_half_open(&mut self, source: SourceAddress) -> bool {
        let oldest = |peers: &[Peer<E>], same_source: bool| {
            peers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.half_open() && (!same_source || p.endpoint.source_address() == source))
                .min_by_key(|(_, p)| p.init_verified_at)
                .map(|(i, _)| i)
        };
        let from_source = self.peers.iter().filter(|p| p.half_open() && p.endpoint.source_address() == source).count();
        let victim = if from_source >= self.config.half_open_per_source_max {
            oldest(&self.peers, true)
        } else if self.peers.len() >= self.config.max_peers {
            oldest(&self.peers, false)
        } else {
            return true;
        };
        let Some(i) = victim else { return false };
        debug_assert!(self.peers[i].half_open());
        self.peers.remove(i);
        self.stats.half_open_dropped += 1;
        self.peers.len() < self.config.max_peers
    }

    fn handle_cookie_reply(&mut self, now: Instant, datagram: &[u8]) -> bool {
        let Ok(repr) = wire::CookieReplyRepr::parse(datagram) else { return false };
        let Some(i) = self.peers.iter().position(|p| p.initiator.as_ref().is_some_and(|(h, _)| h.sender_index == repr.receiver_index))
        else {
            return false;
        };
        let Some((state, _)) = self.peers[i].initiator.as_ref() else { return false };
        let Ok(cookie) = state.open_cookie(datagram) else { return false };
        self.stats.cookie_replies_received += 1;
        let peer = &mut self.peers[i];
        peer.cookie = Some((cookie, now));
        // Retry at once with mac2, unless this initiation already carried a cookie (then the
        // retry timer paces us: a responder that keeps refusing cannot make us loop).
        if !peer.init_had_cookie {
            self.start_handshake(now, i);
        }
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
        if plain.first() == Some(&wire::KIND_DIRECT) {
            // The packet is the rest of the plaintext: delivered without another copy.
            let mut packet = plain;
            packet.remove(0);
            let peer = self.peers[i].address;
            self.deliver(peer, packet);
            return true;
        }
        match Inner::parse(&plain) {
            Ok(Inner::Keepalive) | Err(_) => {}
            Ok(Inner::Routing(tlvs)) => {
                let (id, address) = (self.peers[i].id, self.peers[i].address);
                // Bounded by the datagram length: each TLV takes at least two bytes.
                for message in tlvs {
                    let Ok(message) = message else { break };
                    // Address binding: a neighbour claims distance 0 only to its own address
                    // (origins are checked by the router's verifier, `verify_origin`).
                    if let RouteMessage::Update { destination, metric: 0, .. } = message {
                        if destination != address {
                            continue;
                        }
                    }
                    self.router.handle_message(now, id.0, message);
                }
            }
            Ok(Inner::Data(data)) => {
                let via = self.peers[i].address;
                self.handle_data(now, via, data)
            }
            // Handled above.
            Ok(Inner::Direct(_)) => {}
        }
        true
    }

    /// Whether a packet opened under the end-to-end session with `peer` may be delivered:
    /// its IPv6 header must name `peer` as source and us as destination, so the host stack
    /// sees the origin the overlay authenticated.
    fn deliverable(&self, peer: &Address, packet: &[u8]) -> bool {
        let Some(header) = packet.get(..wire::IPV6_HEADER_LEN) else { return false };
        header[0] >> 4 == 6 && header[8..24] == peer.0 && header[24..40] == self.address.0 && peer.is_overlay() && *peer != self.address
    }

    /// Delivers `packet`, authenticated as sent by `peer` (end to end, or by the link's peer
    /// for a direct packet), if its IPv6 header agrees (`deliverable`).
    fn deliver(&mut self, peer: Address, packet: Vec<u8>) {
        if !self.deliverable(&peer, &packet) {
            self.stats.dropped_spoofed_source += 1;
            return;
        }
        if self.deliveries.len() >= self.config.max_deliver_queue {
            self.stats.dropped_no_route_or_queue += 1;
            return;
        }
        self.stats.delivered += 1;
        self.deliveries.push_back(Delivery { source: peer, destination: self.address, packet });
    }

    fn handle_data(&mut self, now: Instant, via: Address, data: DataRepr<'_>) {
        if data.destination == self.address {
            let mut cx = e2e_context(&self.identity, &mut self.rng, &mut self.last_timestamp_us, &self.config, now);
            let received = self.e2e.handle(&mut cx, data.source, via, data.payload);
            self.pump_e2e(now);
            let Received::Packet { peer, packet } = received else { return };
            self.deliver(peer, packet);
            return;
        }
        if data.hop_limit <= 1 {
            self.stats.dropped_hop_limit += 1;
            return;
        }
        if let Some(mirror) = self.mirror.as_mut() {
            if mirror.len() < self.mirror_capacity {
                mirror.push_back(data.payload.to_vec());
            }
        }
        let forwarded = DataRepr { hop_limit: data.hop_limit - 1, ..data };
        if self.send_data(now, &forwarded).is_ok() {
            self.stats.forwarded += 1;
        } else {
            self.stats.dropped_no_route_or_queue += 1;
        }
    }

    /// Routes what the end-to-end layer has to send.
    fn pump_e2e(&mut self, now: Instant) {
        // Bounded: the layer queues a handful of datagrams per input or timer.
        while let Some((destination, payload)) = self.e2e.poll_routed() {
            let data = DataRepr { destination, source: self.address, hop_limit: self.config.hop_limit, payload: &payload };
            if self.send_data(now, &data).is_err() {
                self.stats.dropped_no_route_or_queue += 1;
            }
        }
    }

    fn send_data(&mut self, now: Instant, data: &DataRepr<'_>) -> Result<(), NodeError> {
        let next = self.router.next_hop(&data.destination).ok_or(NodeError::NoRoute)?;
        let i = self.index_of(PeerId(next)).ok_or(NodeError::NoRoute)?;
        self.seal_parts_to(now, i, &data.header(), data.payload)
    }

    /// Sends an IPv6 packet to `destination` through the best next hop.
    pub fn send(&mut self, now: Instant, destination: Address, packet: &[u8]) -> Result<(), NodeError> {
        if !destination.is_overlay() {
            return Err(NodeError::NotOverlayAddress);
        }
        if packet.len() > self.config.max_packet_len {
            return Err(NodeError::PacketTooLarge);
        }
        if destination == self.address {
            if self.deliveries.len() >= self.config.max_deliver_queue {
                return Err(NodeError::QueueFull);
            }
            self.deliveries.push_back(Delivery { source: self.address, destination, packet: packet.to_vec() });
            return Ok(());
        }
        let next = self.router.next_hop(&destination).ok_or(NodeError::NoRoute)?;
        // The destination is the link's peer: the link session is the end-to-end session
        // (both authenticate the same two keys), so the packet is sealed once.
        if let Some(i) = self.index_of(PeerId(next)).filter(|i| self.peers[*i].address == destination) {
            if self.seal_parts_to(now, i, &[wire::KIND_DIRECT], packet).is_ok() {
                self.stats.sealed_once += 1;
                return Ok(());
            }
        }
        let mut cx = e2e_context(&self.identity, &mut self.rng, &mut self.last_timestamp_us, &self.config, now);
        self.e2e.send(&mut cx, destination, packet);
        self.pump_e2e(now);
        Ok(())
    }

    fn seal_to(&mut self, now: Instant, i: usize, plaintext: &[u8]) -> Result<(), NodeError> {
        self.seal_parts_to(now, i, &[], plaintext)
    }

    /// Seals `prefix` then `body` (one plaintext) for peer `i`'s link and queues it.
    fn seal_parts_to(&mut self, now: Instant, i: usize, prefix: &[u8], body: &[u8]) -> Result<(), NodeError> {
        let reject_after = self.config.reject_after;
        let peer = &mut self.peers[i];
        let session = peer.current.as_mut().filter(|s| now.saturating_since(s.created_at) < reject_after).ok_or(NodeError::NoRoute)?;
        let datagram = session.seal_parts(prefix, body).map_err(|_| NodeError::SessionExhausted)?;
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
        let mut cx = e2e_context(&self.identity, &mut self.rng, &mut self.last_timestamp_us, &self.config, now);
        self.e2e.handle_timeout(&mut cx);
        self.pump_e2e(now);
        let ids: Vec<PeerId> = self.peers.iter().map(|p| p.id).collect();
        for id in ids {
            self.peer_timers(now, id);
        }
        self.pump_routing(now);
    }

    fn peer_timers(&mut self, now: Instant, id: PeerId) {
        let Some(i) = self.index_of(id) else { return };
        let c = self.config;
        if self.peers[i].half_open() && now >= self.peers[i].init_verified_at + c.half_open_timeout {
            self.peers.remove(i);
            self.stats.half_open_dropped += 1;
            return;
        }
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
                    self.peers[i].initiator = None;
                }
            }
            // A rekey in flight (slow under load) must not starve keepalives: `poll_timeout`
            // reports the keepalive deadline of every up peer, so it must be served here too.
            self.keepalive_if_due(now, i);
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
        self.keepalive_if_due(now, i);
    }

    fn keepalive_if_due(&mut self, now: Instant, i: usize) {
        let peer = &self.peers[i];
        if peer.up && now >= peer.last_sent_at + self.config.keepalive_interval && self.seal_to(now, i, &[wire::KIND_KEEPALIVE]).is_err() {
            // Not sendable now (no usable session): the dead timer decides; do not spin.
            self.peers[i].last_sent_at = now;
        }
    }

    /// When `handle_timeout` should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let c = &self.config;
        let mut at = earliest(self.router.poll_timeout(), self.e2e.poll_timeout(c.reject_after, c.handshake_retry));
        for peer in &self.peers {
            let reject = |s: &Option<Session>| s.as_ref().map(|s| s.created_at + c.reject_after);
            at = earliest(at, reject(&peer.previous));
            at = earliest(at, reject(&peer.pending));
            at = earliest(at, reject(&peer.current));
            if peer.half_open() {
                at = earliest(at, Some(peer.init_verified_at + c.half_open_timeout));
            }
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
        let seqno = self.router.own_seqno();
        if self.router.own_origin_seqno() != Some(seqno) {
            let origin = sign_origin(&self.identity, &self.address, seqno, self.rng.bytes32());
            self.router.set_own_origin(seqno, origin);
        }
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

/// The end-to-end layer's view of the node for one call.
fn e2e_context<'a>(identity: &'a Identity, rng: &'a mut Rng, last_timestamp_us: &'a mut u64, c: &Config, now: Instant) -> e2e::Context<'a> {
    e2e::Context {
        identity,
        rng,
        last_timestamp_us,
        now,
        reject_after: c.reject_after,
        rekey_after: c.rekey_after,
        handshake_retry: c.handshake_retry,
        init_age_max: c.init_age_max,
    }
}

/// The bytes an originator signs for a route announcement: a context, its address, the
/// seqno and the anchor of the seqno's metric hash chain.
pub fn route_signature_message(destination: &Address, seqno: u16, anchor: &[u8; 32]) -> [u8; 23 + 16 + 2 + 32] {
    let mut m = [0u8; 23 + 16 + 2 + 32];
    m[..23].copy_from_slice(b"gridos-overlay v1 route");
    m[23..39].copy_from_slice(&destination.0);
    m[39..41].copy_from_slice(&seqno.to_be_bytes());
    m[41..].copy_from_slice(anchor);
    m
}

/// Our proof for announcing our own address at `seqno` (metric 0), with a fresh metric chain
/// from `chain_seed` (secret randomness: whoever knows it can claim any metric).
pub fn sign_origin(identity: &Identity, address: &Address, seqno: u16, chain_seed: [u8; 32]) -> Origin {
    let anchor = routing::chain(&chain_seed, routing::METRIC_CHAIN_LEN);
    let signature = identity.sign(&route_signature_message(address, seqno, &anchor));
    Origin { key: identity.public_key().0, anchor, signature, element: chain_seed }
}

/// The node's route verifier: the key hashes to the destination and signed (destination,
/// seqno, anchor). (The router checks the metric's chain element against the anchor.)
pub fn verify_origin(destination: &Address, seqno: u16, origin: &Origin) -> bool {
    let key = PublicKey(origin.key);
    destination.verify(&key) && key.verify(&route_signature_message(destination, seqno, &origin.anchor), &origin.signature)
}
