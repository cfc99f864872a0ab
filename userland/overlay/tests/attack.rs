//! Issue 11's attacks on the overlay's door, each played against real nodes in the
//! deterministic simulation (real crypto, a fake clock, no sockets), with an honest node's
//! handshake and traffic required to succeed under it:
//! half-open floods from throwaway keys, replayed initiations, forged-initiation floods
//! (with a rekeying established peer and a new honest key), the cookie round trip under
//! load, spoofed inner sources, and discovery beacon floods.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use overlay::discovery::{self, BeaconError, Discovery, DiscoveryConfig};
use overlay::endpoint::{Endpoint, SourceAddress};
use overlay::handshake::{self, Initiator};
use overlay::node::{Config, Delivery, Event, Node};
use overlay::session::Session;
use overlay::time::{Duration, Instant};
use overlay::wire::{self, DataRepr, InitRepr};
use overlay::{Address, Identity, PublicKey};

type Endpoint32 = u32;
const LATENCY: Duration = Duration::from_millis(2);
/// Endpoints at or above this are attackers' (spoofed or real) addresses: no node there.
const ATTACKER_BASE: u32 = 1_000_000;

fn seed(tag: u8, i: u64) -> [u8; 32] {
    let mut s = [tag; 32];
    s[..8].copy_from_slice(&i.to_le_bytes());
    s
}

/// A small deterministic PRNG for attack traffic.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        b
    }
}

struct Sim {
    nodes: Vec<Node<Endpoint32>>,
    alive: Vec<bool>,
    wire: BTreeMap<(Instant, u64), (Endpoint32, Endpoint32, Vec<u8>)>,
    seq: u64,
    now: Instant,
    /// (from, to, bytes) of everything the nodes sent.
    tap: Vec<(Endpoint32, Endpoint32, Vec<u8>)>,
    events: Vec<(usize, Instant, Event<Endpoint32>)>,
    delivered: Vec<(usize, Delivery)>,
}

impl Sim {
    fn new(configs: &[Config]) -> Sim {
        let nodes = configs.iter().enumerate().map(|(i, c)| Node::new(seed(1, i as u64), seed(2, i as u64), *c, Instant::ZERO)).collect();
        Sim { nodes, alive: vec![true; configs.len()], wire: BTreeMap::new(), seq: 0, now: Instant::ZERO, tap: Vec::new(), events: Vec::new(), delivered: Vec::new() }
    }

    fn key(&self, i: usize) -> PublicKey {
        self.nodes[i].public_key()
    }

    fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some((to, bytes)) = self.nodes[i].poll_transmit() {
                self.tap.push((i as Endpoint32, to, bytes.clone()));
                // Datagrams to attackers' addresses leave the simulation.
                if self.alive[i] && (to as usize) < self.nodes.len() {
                    self.seq += 1;
                    self.wire.insert((self.now + LATENCY, self.seq), (to, i as Endpoint32, bytes));
                }
            }
            while let Some(event) = self.nodes[i].poll_event() {
                self.events.push((i, self.now, event));
            }
            while let Some(d) = self.nodes[i].poll_deliver() {
                self.delivered.push((i, d));
            }
        }
    }

    fn step(&mut self, until: Instant) -> bool {
        self.collect();
        let next_wire = self.wire.keys().next().map(|(t, _)| *t);
        let next_timer = (0..self.nodes.len()).filter(|i| self.alive[*i]).filter_map(|i| self.nodes[i].poll_timeout()).min();
        let Some(at) = [next_wire, next_timer].into_iter().flatten().min() else { return false };
        if at > until {
            return false;
        }
        self.now = self.now.max(at);
        let now = self.now;
        while let Some(entry) = self.wire.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (to, from, bytes) = entry.remove();
            if self.alive[to as usize] {
                self.nodes[to as usize].handle_datagram(now, from, &bytes);
            }
        }
        for i in 0..self.nodes.len() {
            if self.alive[i] && self.nodes[i].poll_timeout().is_some_and(|t| t <= now) {
                self.nodes[i].handle_timeout(now);
            }
        }
        self.collect();
        true
    }

    /// Runs everything due up to `until`, then sets the clock to `until`.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..1_000_000 {
            if !self.step(until) {
                self.now = self.now.max(until);
                return;
            }
        }
        let timers: Vec<_> = self.nodes.iter().map(|n| n.poll_timeout()).collect();
        panic!("step bound hit at {:?}; timers {timers:?}; wire {}", self.now, self.wire.len());
    }

    fn link_up_at(&self, node: usize, key: PublicKey) -> Option<Instant> {
        self.events.iter().find_map(|(i, at, e)| match e {
            Event::LinkUp { key: k, .. } if *i == node && *k == key => Some(*at),
            _ => None,
        })
    }

    fn link_downs(&self, node: usize, key: PublicKey) -> usize {
        self.events.iter().filter(|(i, _, e)| *i == node && matches!(e, Event::LinkDown { key: k, .. } if *k == key)).count()
    }
}

fn open_config() -> Config {
    Config { accept_unknown_peers: true, ..Config::default() }
}

/// A correctly signed initiation from `identity` to `responder` stamped `timestamp_us`.
fn signed_init(identity: &Identity, responder: PublicKey, timestamp_us: u64, nonce: u64) -> [u8; wire::INIT_LEN] {
    Initiator::start(identity, responder, seed(7, nonce), nonce as u32, timestamp_us, None).1
}

/// An initiation with a valid mac1 (anyone knowing the responder's key can make one)
/// claiming `claimed` with a signature that does not verify.
fn forged_init(responder: PublicKey, claimed: PublicKey, timestamp_us: u64, rng: &mut SplitMix) -> [u8; wire::INIT_LEN] {
    let mut repr = InitRepr {
        sender_index: rng.next() as u32,
        static_key: claimed,
        ephemeral: rng.bytes32(),
        timestamp_us,
        signature: [0x55; 64],
        mac1: [0; 16],
        mac2: [0; 16],
    };
    repr.signature[..32].copy_from_slice(&rng.bytes32());
    repr.mac1 = handshake::init_mac1(&responder, &repr.emit());
    repr.emit()
}

/// Item 2: 100 throwaway keys each leave a half-open handshake (no confirmation ever
/// comes); an honest new key still links at once, one source cannot hold more than its
/// share, and the half-open slots expire.
#[test]
fn half_open_flood_from_throwaway_keys_does_not_lock_out_an_honest_new_key() {
    let mut sim = Sim::new(&[open_config(), Config::default()]);
    let (responder, honest) = (sim.key(0), sim.key(1));
    // 100 keys from 100 addresses over one second: inside every budget, all verified.
    for k in 0..100u64 {
        let throwaway = Identity::from_seed(seed(9, k));
        sim.run_until(Instant::from_millis(10 * k));
        let init = signed_init(&throwaway, responder, sim.now.micros, k);
        let now = sim.now;
        sim.nodes[0].handle_datagram(now, ATTACKER_BASE + k as u32, &init);
    }
    assert_eq!(sim.nodes[0].peer_count(), Config::default().max_peers, "the table filled with half-open peers");
    // A peer the operator configures outranks them too.
    let listed = Identity::from_seed([200; 32]).public_key();
    assert!(sim.nodes[0].add_peer(sim.now, ATTACKER_BASE - 1, listed).is_ok(), "a configured peer must find a slot");
    // The honest new key: links within a round trip or two.
    let start = Instant::from_millis(1_000);
    sim.run_until(start);
    sim.nodes[1].add_peer(start, 0, responder).unwrap();
    sim.run_until(start + Duration::from_millis(100));
    let up = sim.link_up_at(0, honest).expect("the honest new key must link despite a table full of half-open peers");
    assert!(up < start + Duration::from_millis(20), "linked at {up:?}");
    // Half-open slots expire: only the honest peer remains.
    sim.run_until(start + Duration::from_secs(12));
    assert_eq!(sim.nodes[0].peer_count(), 2, "half-open peers must expire (the honest and the configured peer stay)");
    assert!(sim.nodes[0].stats().half_open_dropped >= 99);
    // One source with many keys holds at most its share of half-open slots.
    for k in 0..40u64 {
        let throwaway = Identity::from_seed(seed(10, k));
        sim.run_until(sim.now + Duration::from_millis(300));
        let init = signed_init(&throwaway, responder, sim.now.micros, k);
        let now = sim.now;
        sim.nodes[0].handle_datagram(now, ATTACKER_BASE, &init);
    }
    assert!(sim.nodes[0].peer_count() <= 2 + Config::default().half_open_per_source_max, "{} peers", sim.nodes[0].peer_count());
}

/// Item 2: a captured initiation is refused when replayed after its peer's slot is gone
/// (link down), and refused by the clock by a node that never saw it once it is older
/// than `init_age_max`.
#[test]
fn replayed_old_initiation_is_refused_after_link_down_and_by_the_clock() {
    let mut sim = Sim::new(&[open_config(), Config::default(), open_config()]);
    let (r, i) = (sim.key(0), sim.key(1));
    sim.nodes[1].add_peer(Instant::ZERO, 0, r).unwrap();
    sim.run_until(Instant::from_millis(100));
    assert!(sim.link_up_at(0, i).is_some());
    let captured = sim.tap.iter().find(|(from, to, b)| *from == 1 && *to == 0 && b[0] == 1).map(|(_, _, b)| b.clone()).unwrap();
    // The initiator goes away; the responder's link goes down and the slot is freed.
    sim.alive[1] = false;
    sim.run_until(Instant::from_millis(45_000));
    assert_eq!(sim.link_downs(0, i), 1);
    assert_eq!(sim.nodes[0].peer_count(), 0);
    sim.tap.clear();
    let now = sim.now;
    sim.nodes[0].handle_datagram(now, 1, &captured);
    sim.collect();
    assert!(sim.tap.iter().all(|(from, _, _)| *from != 0), "a replayed initiation got an answer");
    assert_eq!(sim.nodes[0].peer_count(), 0, "a replayed initiation took a slot");
    assert_eq!(sim.nodes[0].stats().dropped_stale_inits, 1);
    // An initiation from node 1 to node 2 stamped at time 0, recorded on the way and
    // withheld: node 2 never saw it, and refuses it once it is older than the window.
    let withheld = signed_init(&Identity::from_seed(seed(1, 1)), sim.key(2), 1, 3);
    sim.run_until(Instant::from_millis(130_000));
    let now = sim.now;
    sim.nodes[2].handle_datagram(now, 1, &withheld);
    sim.collect();
    assert!(sim.tap.iter().all(|(from, _, _)| *from != 2), "a stale initiation got an answer");
    assert_eq!(sim.nodes[2].stats().dropped_stale_inits, 1);
    // Within the window the same kind of message is accepted (the check is the clock).
    let fresh = signed_init(&Identity::from_seed(seed(1, 1)), sim.key(2), now.micros - 60_000_000, 5);
    sim.nodes[2].handle_datagram(now, 1, &fresh);
    sim.collect();
    assert!(sim.tap.iter().any(|(from, _, _)| *from == 2), "an initiation inside the window is answered");
}

fn flood_config() -> Config {
    Config {
        rekey_after: Duration::from_secs(3),
        reject_after: Duration::from_secs(6),
        keepalive_interval: Duration::from_secs(1),
        dead_after: Duration::from_secs(4),
        handshake_retry: Duration::from_secs(1),
        ..open_config()
    }
}

/// Item 3: 4,000 forged initiations per simulated second (a fifth with random bytes for
/// mac1, the rest with a valid mac1 and a bad signature, claiming random keys or the
/// established peer's key, from spoofed addresses including that peer's own) for 20 s,
/// while an established peer rekeys every 3 s and a new honest key connects: the link
/// never drops, every rekey succeeds, and the new key links within a second.
#[test]
fn forged_initiation_flood_spares_honest_handshakes_and_rekeys() {
    let mut sim = Sim::new(&[flood_config(), flood_config(), flood_config()]);
    let (r, p, h) = (sim.key(0), sim.key(1), sim.key(2));
    sim.nodes[0].add_peer(Instant::ZERO, 1, p).unwrap();
    sim.nodes[1].add_peer(Instant::ZERO, 0, r).unwrap();
    sim.run_until(Instant::from_millis(500));
    assert!(sim.link_up_at(0, p).is_some());
    let rekeys_before = sim.nodes[1].stats().handshakes_completed + sim.nodes[0].stats().handshakes_completed;
    let mut rng = SplitMix(11);
    let flood_per_ms: u64 = 4;
    let honest_at = Instant::from_millis(3_000);
    let end = Instant::from_millis(20_500);
    let mut t = sim.now;
    let mut forged = 0u64;
    while t < end {
        if t == honest_at {
            sim.nodes[2].add_peer(t, 0, r).unwrap();
        }
        // This millisecond's forgeries go on the wire spread over it, so they compete with
        // honest datagrams in arrival order, as on a real link.
        for k in 0..flood_per_ms {
            let source = match k {
                0 => 1, // spoofing the established peer's address
                _ => ATTACKER_BASE + (rng.next() % 100_000) as u32,
            };
            let bytes = match rng.next() % 5 {
                0 => {
                    let mut b = forged_init(r, p, t.micros, &mut rng);
                    b[144..160].copy_from_slice(&rng.bytes32()[..16]);
                    b
                }
                1 | 2 => forged_init(r, p, t.micros, &mut rng),
                _ => forged_init(r, PublicKey(rng.bytes32()), t.micros, &mut rng),
            };
            let at = t + Duration::from_micros(k * 1000 / flood_per_ms + rng.next() % (1000 / flood_per_ms));
            sim.seq += 1;
            sim.wire.insert((at, sim.seq), (0, source, bytes.to_vec()));
            forged += 1;
        }
        t = t + Duration::from_millis(1);
        sim.run_until(t);
    }
    let stats = sim.nodes[0].stats();
    let rekeys = sim.nodes[1].stats().handshakes_completed + sim.nodes[0].stats().handshakes_completed - rekeys_before;
    println!("flood: {forged} forged inits over 20 s; responder {stats:?}; {rekeys} handshakes completed on the established link");
    assert_eq!(sim.link_downs(0, p), 0, "the established peer's link dropped under the flood");
    assert_eq!(sim.link_downs(1, r), 0);
    assert!(rekeys >= 2 * 6, "the established link rekeyed every 3 s ({rekeys} handshakes completed)");
    let up = sim.link_up_at(0, h).expect("the honest new key never linked under the flood");
    assert!(up < honest_at + Duration::from_secs(1), "the honest new key linked only at {up:?}");
    assert!(stats.cookie_replies_sent > 0);
    assert_eq!(sim.nodes[0].peer_count(), 2, "no forged initiation got a slot");
}

/// Item 3: the cookie round trip. Under load, an initiation without mac2 gets a cookie
/// reply and no signature check; the initiator opens it and retries at once with mac2,
/// which is accepted. A cookie is bound to its address: mac2 made with another
/// address's cookie gets another cookie reply.
#[test]
fn cookie_reply_round_trip_under_load() {
    let mut sim = Sim::new(&[open_config(), Config::default()]);
    let (r, h) = (sim.key(0), sim.key(1));
    let mut rng = SplitMix(3);
    // Load: 150 valid-mac1 initiations in one instant from spoofed addresses.
    for k in 0..150u32 {
        let bytes = forged_init(r, PublicKey(rng.bytes32()), 0, &mut rng);
        sim.nodes[0].handle_datagram(Instant::ZERO, ATTACKER_BASE + k, &bytes);
    }
    let before = sim.nodes[0].stats();
    assert!(before.cookie_replies_sent > 0, "not under load");
    sim.nodes[1].add_peer(Instant::ZERO, 0, r).unwrap();
    sim.run_until(Instant::from_millis(50));
    let (rs, hs) = (sim.nodes[0].stats(), sim.nodes[1].stats());
    assert_eq!(rs.cookie_replies_sent, before.cookie_replies_sent + 1, "the honest init got a cookie reply");
    assert_eq!(hs.cookie_replies_received, 1);
    assert_eq!(hs.handshakes_initiated, 2, "one retry, with mac2");
    let up = sim.link_up_at(0, h).expect("the retry with mac2 must be accepted under load");
    assert!(up <= Instant::from_millis(10), "linked at {up:?}");
    // The cookie for address 1 is worth nothing from address 77.
    let cookie_reply = sim.tap.iter().find(|(from, to, b)| *from == 0 && *to == 1 && b[0] == 3).map(|(_, _, b)| b.clone()).unwrap();
    let stranger = Identity::from_seed([42; 32]);
    let (state, init) = Initiator::start(&stranger, r, [1; 32], 9, 20_000, None);
    sim.nodes[0].handle_datagram(Instant::from_millis(20), 77, &init);
    let (to, reply) = sim.nodes[0].poll_transmit().expect("a cookie reply");
    assert_eq!((to, reply[0]), (77, 3));
    let cookie77 = state.open_cookie(&reply).unwrap();
    assert!(state.open_cookie(&cookie_reply).is_err(), "a reply to another init does not open");
    let (_, with_mac2) = Initiator::start(&stranger, r, [2; 32], 10, 20_001, Some(&cookie77));
    sim.nodes[0].handle_datagram(Instant::from_millis(21), 78, &with_mac2);
    let (_, reply) = sim.nodes[0].poll_transmit().expect("an answer");
    assert_eq!(reply[0], 3, "mac2 from address 77's cookie is refused at address 78");
    sim.nodes[0].handle_datagram(Instant::from_millis(22), 77, &with_mac2);
    let (_, resp) = sim.nodes[0].poll_transmit().expect("an answer");
    assert_eq!(resp[0], 2, "mac2 from its own address's cookie gets the response");
}

/// Plays the far end of an end-to-end handshake with `node` over the link session of
/// `evil_link` (the library's pieces, driven by hand): announces `evil`'s own address so
/// the node can answer, sends an end-to-end initiation and opens the node's response.
fn evil_e2e(node: &mut Node<Endpoint32>, evil: &Identity, link: &mut Session, now: Instant) -> Session {
    let own = Address::from_public_key(&evil.public_key());
    let mut plain = vec![wire::KIND_ROUTING];
    let origin = overlay::node::sign_origin(evil, &own, 1, [0x33; 32]);
    wire::emit_route_message(&overlay::routing::Message::Update { destination: own, seqno: 1, metric: 0, origin }, &mut plain);
    node.handle_datagram(now, 9, &link.seal(&plain).unwrap());
    while node.poll_transmit().is_some() {}
    let (state, init) = Initiator::start_e2e(evil, node.address(), [8; 32], 77, now.micros);
    let mut plain = Vec::new();
    DataRepr { destination: node.address(), source: own, hop_limit: 9, payload: &init }.emit(&mut plain);
    node.handle_datagram(now, 9, &link.seal(&plain).unwrap());
    // The node's response comes back routed over the link.
    let mut answer = None;
    while let Some((to, datagram)) = node.poll_transmit() {
        assert_eq!(to, 9);
        let packet = wire::TransportPacket::new_checked(&datagram).unwrap();
        let opened = link.open(&packet).unwrap();
        if let Ok(wire::Inner::Data(data)) = wire::Inner::parse(&opened) {
            assert_eq!(data.destination, own);
            answer = Some(data.payload.to_vec());
        }
    }
    let resp = answer.expect("the node answers an end-to-end initiation over the link");
    let (keys, remote) = state.finish(&evil.public_key(), &resp).expect("a response proving the node's key");
    Session::new(&keys, 77, remote, true, now)
}

/// Item 5 with item 1: a linked peer that holds an end-to-end session with us sends
/// packets whose inner IPv6 source is someone else's, whose routed source names another
/// address than its session's, that are not end-to-end sealed at all, or an end-to-end
/// initiation claiming another node's address: each is dropped and counted, and an honest
/// packet is delivered with the session's peer as its source.
#[test]
fn spoofed_inner_source_is_dropped_and_counted() {
    let mut node: Node<Endpoint32> = Node::new(seed(1, 0), seed(2, 0), Config::default(), Instant::ZERO);
    let evil = Identity::from_seed([66; 32]);
    let victim_id = Identity::from_seed([67; 32]);
    let victim = Address::from_public_key(&victim_id.public_key());
    let now = Instant::from_millis(1);
    let mut link = evil_link(&mut node, &evil, now);
    let mut e2e = evil_e2e(&mut node, &evil, &mut link, now);
    let (own, me) = (Address::from_public_key(&evil.public_key()), node.address());
    let mut send = |node: &mut Node<Endpoint32>, routed_source: Address, payload: &[u8]| {
        let mut plain = Vec::new();
        DataRepr { destination: me, source: routed_source, hop_limit: 9, payload }.emit(&mut plain);
        node.handle_datagram(now, 9, &link.seal(&plain).unwrap());
        while node.poll_transmit().is_some() {}
        node.poll_deliver()
    };
    // Sealed end to end by evil, but the IPv6 header says "victim".
    assert_eq!(send(&mut node, own, &e2e.seal(&wire::ipv6_packet(victim, me, b"x")).unwrap()), None);
    // Not an IPv6 packet at all, or a wrong inner destination.
    assert_eq!(send(&mut node, own, &e2e.seal(b"not ipv6").unwrap()), None);
    assert_eq!(send(&mut node, own, &e2e.seal(&wire::ipv6_packet(own, victim, b"x")).unwrap()), None);
    assert_eq!(node.stats().dropped_spoofed_source, 3);
    // Sealed by evil, routed under the victim's name (headers agreeing with each other).
    assert_eq!(send(&mut node, victim, &e2e.seal(&wire::ipv6_packet(victim, me, b"x")).unwrap()), None);
    assert_eq!(node.stats().e2e.dropped_wrong_source, 1);
    // A raw IPv6 packet claiming the victim, as a relay could inject before end-to-end sealing.
    let unauthenticated = node.stats().e2e.dropped_unauthenticated;
    assert_eq!(send(&mut node, victim, &wire::ipv6_packet(victim, me, b"x")), None);
    assert_eq!(node.stats().e2e.dropped_unauthenticated, unauthenticated + 1);
    // An end-to-end initiation signed by evil that claims to come from the victim.
    let (_, init) = Initiator::start_e2e(&evil, me, [9; 32], 78, now.micros + 1);
    assert_eq!(send(&mut node, victim, &init), None);
    assert_eq!(node.stats().e2e.dropped_wrong_source, 2);
    assert_eq!(node.stats().delivered, 0);
    let ok = send(&mut node, own, &e2e.seal(&wire::ipv6_packet(own, me, b"honest")).unwrap()).expect("an honest packet is delivered");
    assert_eq!((ok.source, &ok.packet[40..]), (own, &b"honest"[..]));
    // A replayed end-to-end packet is refused (the link layer is fresh, the inner one is not).
    let sealed = e2e.seal(&wire::ipv6_packet(own, me, b"once")).unwrap();
    assert!(send(&mut node, own, &sealed).is_some());
    assert_eq!(send(&mut node, own, &sealed), None);
    assert_eq!(node.stats().e2e.dropped_replays, 1);
}

/// Item 1: in a line 0 - 1 - 2, node 1 relays everything between 0 and 2, and what it
/// sees after opening its links (the routed payloads it forwards, mirrored) never holds
/// the plaintext: neither the payload nor the inner IPv6 header, in either direction,
/// across an end-to-end rekey. The traffic still arrives, with the right sources.
#[test]
fn relay_in_a_three_node_line_forwards_only_ciphertext() {
    let config = Config { rekey_after: Duration::from_secs(20), reject_after: Duration::from_secs(30), ..Config::default() };
    let mut sim = Sim::new(&[config, config, config]);
    let (k0, k1, k2) = (sim.key(0), sim.key(1), sim.key(2));
    sim.nodes[0].add_peer(Instant::ZERO, 1, k1).unwrap();
    sim.nodes[1].add_peer(Instant::ZERO, 0, k0).unwrap();
    sim.nodes[1].add_peer(Instant::ZERO, 2, k2).unwrap();
    sim.nodes[2].add_peer(Instant::ZERO, 1, k1).unwrap();
    sim.nodes[1].mirror_forwarded(100_000);
    sim.run_until(Instant::from_millis(500));
    let (a0, a2) = (sim.nodes[0].address(), sim.nodes[2].address());
    assert!(sim.nodes[0].router().next_hop(&a2).is_some(), "0 has no route to 2");
    const MARKER: &[u8] = b"the plaintext a relay must never see";
    let mut sent = 0;
    for k in 0..60u64 {
        let t = Instant::from_millis(1_000 + 1_000 * k);
        sim.run_until(t);
        let (from, to, src, dst) = if k % 2 == 0 { (0, 2, a0, a2) } else { (2, 0, a2, a0) };
        let mut payload = MARKER.to_vec();
        payload.extend_from_slice(&k.to_be_bytes());
        sim.nodes[from].send(t, dst, &wire::ipv6_packet(src, dst, &payload)).unwrap();
        let _ = to;
        sent += 1;
    }
    sim.run_until(Instant::from_millis(62_000));
    let delivered: Vec<_> = sim.delivered.iter().filter(|(_, d)| d.packet.windows(MARKER.len()).any(|w| w == MARKER)).collect();
    assert_eq!(delivered.len(), sent, "every packet arrives");
    for (at, d) in &delivered {
        let expected = if *at == 2 { a0 } else { a2 };
        assert_eq!(d.source, expected);
    }
    let mut mirrored = Vec::new();
    while let Some(p) = sim.nodes[1].poll_mirrored() {
        mirrored.push(p);
    }
    let relay = sim.nodes[1].stats();
    assert!(relay.forwarded as usize >= sent && mirrored.len() == relay.forwarded as usize, "{relay:?}");
    let header_0_to_2 = &wire::ipv6_packet(a0, a2, b"")[8..40];
    let header_2_to_0 = &wire::ipv6_packet(a2, a0, b"")[8..40];
    for p in &mirrored {
        assert!(!p.windows(MARKER.len()).any(|w| w == MARKER), "the relay saw the plaintext payload");
        assert!(!p.windows(32).any(|w| w == header_0_to_2 || w == header_2_to_0), "the relay saw an inner IPv6 header");
        assert_ne!(p.first(), Some(&0x60), "the relay saw a bare IPv6 packet");
    }
    let e2e = [sim.nodes[0].stats().e2e, sim.nodes[2].stats().e2e];
    assert!(e2e[0].handshakes_completed + e2e[1].handshakes_completed >= 4, "end-to-end sessions were renewed: {e2e:?}");
    assert_eq!(relay.e2e.opened, 0, "the relay opened nothing end to end");
}

/// A linked peer's direct packets (sealed once, under the link session: source and
/// destination are the link's ends) are held to the end-to-end rule: delivered only when
/// the inner IPv6 source is the peer's own address and the destination ours, never twice;
/// and a node sends its own packets to a linked peer that way, sealed once.
#[test]
fn direct_packets_from_a_linked_peer_carry_only_its_own_address() {
    let mut node: Node<Endpoint32> = Node::new(seed(1, 0), seed(2, 0), Config::default(), Instant::ZERO);
    let evil = Identity::from_seed([66; 32]);
    let victim = Address::from_public_key(&Identity::from_seed([67; 32]).public_key());
    let now = Instant::from_millis(1);
    let mut link = evil_link(&mut node, &evil, now);
    let (own, me) = (Address::from_public_key(&evil.public_key()), node.address());
    let send = |node: &mut Node<Endpoint32>, datagram: &[u8]| {
        node.handle_datagram(now, 9, datagram);
        while node.poll_transmit().is_some() {}
        node.poll_deliver()
    };
    let direct = |link: &mut Session, packet: &[u8]| link.seal_parts(&[wire::KIND_DIRECT], packet).unwrap();
    // Another node's address as the inner source, a wrong destination, not IPv6.
    assert_eq!(send(&mut node, &direct(&mut link, &wire::ipv6_packet(victim, me, b"x"))), None);
    assert_eq!(send(&mut node, &direct(&mut link, &wire::ipv6_packet(own, victim, b"x"))), None);
    assert_eq!(send(&mut node, &direct(&mut link, b"not ipv6")), None);
    assert_eq!(node.stats().dropped_spoofed_source, 3);
    assert_eq!(node.stats().delivered, 0);
    // Honest: delivered with the link peer as its source; a replay of it is refused.
    let honest = direct(&mut link, &wire::ipv6_packet(own, me, b"honest"));
    let ok = send(&mut node, &honest).expect("an honest direct packet is delivered");
    assert_eq!((ok.source, ok.destination, &ok.packet[40..]), (own, me, &b"honest"[..]));
    assert_eq!(send(&mut node, &honest), None);
    assert_eq!(node.stats().dropped_replays, 1);
    // Tampered: does not open.
    let mut tampered = direct(&mut link, &wire::ipv6_packet(own, me, b"honest"));
    let last = tampered.len() - 20;
    tampered[last] ^= 1;
    assert_eq!(send(&mut node, &tampered), None);
    assert_eq!(node.stats().delivered, 1);
    // The node's own packets to its linked peer go sealed once, and open as direct.
    let mut plain = vec![wire::KIND_ROUTING];
    let origin = overlay::node::sign_origin(&evil, &own, 1, [0x33; 32]);
    wire::emit_route_message(&overlay::routing::Message::Update { destination: own, seqno: 1, metric: 0, origin }, &mut plain);
    node.handle_datagram(now, 9, &link.seal(&plain).unwrap());
    while node.poll_transmit().is_some() {}
    let e2e_before = node.stats().e2e;
    node.send(now, own, &wire::ipv6_packet(me, own, b"to you")).unwrap();
    let (to, datagram) = node.poll_transmit().expect("a datagram for the peer");
    assert_eq!(to, 9);
    let plain = link.open(&wire::TransportPacket::new_checked(&datagram).unwrap()).unwrap();
    assert_eq!(wire::Inner::parse(&plain), Ok(wire::Inner::Direct(&wire::ipv6_packet(me, own, b"to you")[..])));
    assert_eq!(node.stats().sealed_once, 1);
    assert_eq!((node.stats().e2e.sealed, node.stats().e2e.handshakes_initiated), (e2e_before.sealed, e2e_before.handshakes_initiated));
}

fn link_local(n: u16) -> SocketAddr {
    SocketAddr::new(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n).into(), 7443)
}

/// Item 6: beacons from 200 keys on 200 link-local addresses within a second, replays
/// from other addresses and beacons from a routable (off-link) address: only the budget's
/// worth of signatures is checked, at most `discovered_max` peers are added, the off-link
/// and replayed ones are refused before any signature check, and discovered peers that
/// stop beaconing are removed again.
#[test]
fn beacon_flood_is_bounded_off_link_refused_and_discovered_peers_expire() {
    let config = DiscoveryConfig::default();
    let start = Instant::from_millis(1_000_000);
    let mut node: Node<SocketAddr> = Node::new([1; 32], [2; 32], open_config(), start);
    let mut disco = Discovery::new(config, start);
    let now_s = start.micros / 1_000_000;
    let mut added = 0;
    for k in 0..200u16 {
        let at = start + Duration::from_millis(5 * u64::from(k));
        let from = link_local(k + 1);
        let b = discovery::beacon(&Identity::from_seed(seed(5, u64::from(k))), now_s, from.source_address());
        added += usize::from(matches!(disco.handle_beacon(&mut node, at, from, &b), Ok(Some(_))));
        while node.poll_transmit().is_some() {}
    }
    let stats = disco.stats();
    assert!(stats.verified <= u64::from(config.verify_burst + config.verify_rate_per_sec) + 1, "{stats:?}");
    assert_eq!(added as u64, stats.verified, "each verified new key is added, evicting the least recently heard");
    assert_eq!(stats.removed, stats.added - config.discovered_max as u64);
    assert!(disco.len() <= config.discovered_max && node.peer_count() <= config.discovered_max);
    // Off-link and replayed beacons: refused before the signature.
    let verified = disco.stats().verified;
    let at = start + Duration::from_secs(2);
    let id = Identity::from_seed([77; 32]);
    let routable: SocketAddr = "[2001:db8::1]:7443".parse().unwrap();
    let v4: SocketAddr = "10.0.0.9:7443".parse().unwrap();
    for from in [routable, v4] {
        let b = discovery::beacon(&id, now_s, from.source_address());
        assert_eq!(disco.handle_beacon(&mut node, at, from, &b), Err(BeaconError::NotLinkLocal));
    }
    let b = discovery::beacon(&id, now_s, link_local(9000).source_address());
    assert_eq!(disco.handle_beacon(&mut node, at, link_local(9001), &b), Err(BeaconError::WrongSender));
    assert_eq!(disco.stats().verified, verified, "no signature checked for those");
    // Nobody answers or beacons again: the discovered peers expire.
    let later = at + config.expire_after + Duration::from_secs(1);
    node.handle_timeout(later);
    disco.handle_timeout(&mut node, later);
    assert_eq!(disco.len(), 0);
    assert_eq!(node.peer_count(), 0, "discovered peers must be removed when they stop beaconing");
    // An honest beacon afterwards is accepted (the budget refilled).
    let honest = discovery::beacon(&id, later.micros / 1_000_000, link_local(9000).source_address());
    assert!(matches!(disco.handle_beacon(&mut node, later, link_local(9000), &honest), Ok(Some(_))));
    let _ = SourceAddress([0; 16]);
}

/// Plays a linked peer by hand (the library's handshake and session pieces), to send what
/// a well-behaved node never would. Returns the peer's session and its endpoint.
fn evil_link(node: &mut Node<Endpoint32>, evil: &Identity, now: Instant) -> Session {
    node.add_peer(now, 9, evil.public_key()).unwrap();
    let (_, init) = node.poll_transmit().unwrap();
    let init = handshake::check_init_mac(&evil.public_key(), &init).unwrap();
    let (resp, keys) = handshake::respond(evil, &init, [5; 32], 42).unwrap();
    node.handle_datagram(now, 9, &resp);
    while node.poll_transmit().is_some() {}
    Session::new(&keys, 42, init.sender_index, false, now)
}

/// Item 4 (cheaper parts): one linked peer announces 6,000 destinations and sends 1,000
/// seqno requests for our address within a second: it holds no more than its quota of the
/// table, and our seqno rises a bounded number of times, not a thousand.
#[test]
fn one_neighbour_cannot_fill_the_route_table_or_spin_our_seqno() {
    use overlay::routing::Message;
    let mut node: Node<Endpoint32> = Node::new(seed(1, 0), seed(2, 0), Config::default(), Instant::ZERO);
    let evil = Identity::from_seed([66; 32]);
    let now = Instant::from_millis(1);
    let mut session = evil_link(&mut node, &evil, now);
    let quota = Config::default().routing.max_destinations_per_neighbour;
    let mut rng = SplitMix(5);
    for batch in 0..120 {
        let mut plain = vec![wire::KIND_ROUTING];
        for _ in 0..50 {
            let mut a = rng.bytes32();
            a[..2].copy_from_slice(&overlay::address::PREFIX);
            // Addresses of fresh keys, correctly signed: the quota, not the verifier, stops them.
            let key = Identity::from_seed(a);
            let destination = Address::from_public_key(&key.public_key());
            let mut origin = overlay::node::sign_origin(&key, &destination, 1, [0x33; 32]);
            origin.element = overlay::routing::chain(&origin.element, 1); // metric 1
            wire::emit_route_message(&Message::Update { destination, seqno: 1, metric: 1, origin }, &mut plain);
        }
        let at = now + Duration::from_millis(batch);
        node.handle_datagram(at, 9, &session.seal(&plain).unwrap());
        while node.poll_transmit().is_some() {}
    }
    let routes = node.router().reachable_count();
    assert!(routes <= quota, "one neighbour holds {routes} routes (quota {quota})");
    let stats = node.router().stats();
    assert!(stats.dropped_over_quota + stats.dropped_unverified >= 6_000 - quota as u64, "{stats:?}");
    let seqno_before = node.router().own_seqno();
    let me = node.address();
    for k in 0..1_000u64 {
        let mut plain = vec![wire::KIND_ROUTING];
        let seqno = node.router().own_seqno().wrapping_add(1);
        wire::emit_route_message(&Message::SeqnoRequest { destination: me, seqno, hop_count: 5 }, &mut plain);
        let at = now + Duration::from_millis(200 + k);
        node.handle_datagram(at, 9, &session.seal(&plain).unwrap());
        while node.poll_transmit().is_some() {}
    }
    let raised = node.router().own_seqno().wrapping_sub(seqno_before);
    // 16 in a burst, then one a second (src/routing.rs); before, every request raised it.
    assert!(raised <= 16 + 2, "1,000 requests in a second raised our seqno {raised} times");
}

/// Item 1's bounds: a linked peer relays end-to-end initiations from 300 throwaway keys
/// (each correctly signed, each claiming its own address) within a second: the node checks no
/// more signatures than its budgets allow, holds at most one neighbour's share of
/// half-open end-to-end entries, forgets them after `half_open_timeout`, and its honest
/// end-to-end traffic with another node (node 2, through node 1: a neighbour's own
/// packets go sealed once, without an end-to-end session) flows throughout.
#[test]
fn end_to_end_initiation_flood_is_bounded_and_expires() {
    let mut sim = Sim::new(&[Config::default(), Config::default(), Config::default()]);
    let evil = Identity::from_seed([66; 32]);
    let mut link = evil_link(&mut sim.nodes[0], &evil, Instant::ZERO);
    let (k0, k1, k2) = (sim.key(0), sim.key(1), sim.key(2));
    sim.nodes[0].add_peer(Instant::ZERO, 1, k1).unwrap();
    sim.nodes[1].add_peer(Instant::ZERO, 0, k0).unwrap();
    sim.nodes[1].add_peer(Instant::ZERO, 2, k2).unwrap();
    sim.nodes[2].add_peer(Instant::ZERO, 1, k1).unwrap();
    sim.run_until(Instant::from_millis(500));
    let (a0, a1) = (sim.nodes[0].address(), sim.nodes[2].address());
    assert!(sim.nodes[2].router().next_hop(&a0).is_some(), "2 has no route to 0");
    let e2e = Config::default().e2e;
    let mut delivered_honest = 0;
    for k in 0..300u64 {
        let t = Instant::from_millis(600 + 3 * k);
        sim.run_until(t);
        let throwaway = Identity::from_seed(seed(12, k));
        let source = Address::from_public_key(&throwaway.public_key());
        let (_, init) = Initiator::start_e2e(&throwaway, a0, seed(13, k), k as u32, t.micros);
        let mut plain = Vec::new();
        DataRepr { destination: a0, source, hop_limit: 9, payload: &init }.emit(&mut plain);
        sim.nodes[0].handle_datagram(t, 9, &link.seal(&plain).unwrap());
        if k % 10 == 0 {
            sim.nodes[2].send(t, a0, &wire::ipv6_packet(a1, a0, b"honest")).unwrap();
        }
        assert!(sim.nodes[0].e2e().len() <= e2e.half_open_per_neighbour_max + 1, "{} entries", sim.nodes[0].e2e().len());
    }
    sim.run_until(Instant::from_millis(10_800));
    delivered_honest += sim.delivered.iter().filter(|(i, d)| *i == 0 && d.source == a1).count();
    let stats = sim.nodes[0].stats().e2e;
    println!("e2e flood: {stats:?}");
    assert_eq!(delivered_honest, 30, "honest end-to-end traffic flows under the flood");
    // Signatures checked: one per entry made (the flood's all went, the honest one stays).
    let checked = stats.entries_dropped + sim.nodes[0].e2e().len() as u64;
    assert!(checked <= u64::from(e2e.neighbour_handshake_burst + e2e.neighbour_handshake_rate_per_sec) + 1, "{stats:?}");
    assert_eq!(stats.dropped_rate_limited + checked, 300 + 1, "{stats:?}");
    sim.run_until(Instant::from_millis(25_300));
    assert_eq!(sim.nodes[0].e2e().len(), 1, "half-open end-to-end entries expire; the honest one stays");
}

/// Item 4: in a line 0 - 1 - 2 - 3, a peer linked to node 0 tries to take over the route
/// to node 3 (honest metric 3) with (victim, newer seqno, metric 1): with no valid
/// origin, with its own key, with the victim's key and a made-up signature, and with the
/// victim's genuine origin of another seqno; then it retracts. None of it is taken (each
/// refused origin is counted), the route keeps going through node 1, its seqno never moves
/// past what the victim signed, and traffic to the victim still arrives. Last, the peer
/// replays the genuine origin node 0 itself sent it (metric 3 and its chain element) with
/// metric 1: the hash chain refuses it; repeating metric 3 (not adding its own hop, the
/// one lie a chain cannot catch) is taken but is no better than the honest route.
#[test]
fn signed_announcements_stop_route_hijacks() {
    use overlay::routing::{Message, Origin, INFINITY};
    let mut sim = Sim::new(&[Config::default(), Config::default(), Config::default(), Config::default()]);
    let evil = Identity::from_seed([66; 32]);
    let mut link = evil_link(&mut sim.nodes[0], &evil, Instant::ZERO);
    for (a, b) in [(0usize, 1usize), (1, 2), (2, 3)] {
        let (ka, kb) = (sim.key(a), sim.key(b));
        sim.nodes[a].add_peer(Instant::ZERO, b as u32, kb).unwrap();
        sim.nodes[b].add_peer(Instant::ZERO, a as u32, ka).unwrap();
    }
    sim.run_until(Instant::from_millis(500));
    let (a0, victim) = (sim.nodes[0].address(), sim.nodes[3].address());
    let honest = sim.nodes[0].router().route(&victim).expect("a route to the victim");
    assert_eq!(honest.metric, 3);
    let victim_id = Identity::from_seed(seed(1, 3));
    assert_eq!(Address::from_public_key(&victim_id.public_key()), victim);
    let other_genuine = overlay::node::sign_origin(&victim_id, &victim, honest.seqno.wrapping_sub(1), [0x33; 32]);
    let mut forged = other_genuine;
    forged.signature[0] ^= 1;
    let attempts = [
        (honest.seqno.wrapping_add(5), Origin::NONE),
        (honest.seqno.wrapping_add(5), overlay::node::sign_origin(&evil, &victim, honest.seqno.wrapping_add(5), [0x33; 32])),
        (honest.seqno.wrapping_add(5), Origin { key: victim_id.public_key().0, ..forged }),
        (honest.seqno.wrapping_add(1), other_genuine),
        (honest.seqno.wrapping_add(100), forged),
    ];
    let bad_before = sim.nodes[0].router().stats().dropped_bad_origin;
    for (k, (seqno, origin)) in attempts.iter().enumerate() {
        let t = Instant::from_millis(600 + 10 * k as u64);
        sim.run_until(t);
        let mut plain = vec![wire::KIND_ROUTING];
        wire::emit_route_message(&Message::Update { destination: victim, seqno: *seqno, metric: 1, origin: *origin }, &mut plain);
        sim.nodes[0].handle_datagram(t, 9, &link.seal(&plain).unwrap());
        let route = sim.nodes[0].router().route(&victim).expect("the route survives");
        assert_eq!((route.next_hop, route.seqno, route.metric), (honest.next_hop, honest.seqno, 3), "attempt {k} moved the route");
    }
    assert_eq!(sim.nodes[0].router().stats().dropped_bad_origin - bad_before, attempts.len() as u64);
    // The hijacker retracts; the honest route stays selected and usable.
    let mut plain = vec![wire::KIND_ROUTING];
    wire::emit_route_message(&Message::Update { destination: victim, seqno: honest.seqno.wrapping_add(5), metric: INFINITY, origin: Origin::NONE }, &mut plain);
    sim.nodes[0].handle_datagram(sim.now, 9, &link.seal(&plain).unwrap());
    sim.run_until(Instant::from_millis(2_000));
    let route = sim.nodes[0].router().route(&victim).expect("the route survives the retraction");
    assert_eq!(route.next_hop, honest.next_hop);
    let fd = sim.nodes[0].router().feasibility_distance(&victim).unwrap();
    assert!(!overlay::routing::seqno_newer(fd.seqno, sim.nodes[3].router().own_seqno()), "a seqno the victim never signed got in");
    sim.nodes[0].send(sim.now, victim, &wire::ipv6_packet(a0, victim, b"still here")).unwrap();
    sim.run_until(Instant::from_millis(2_500));
    assert!(sim.delivered.iter().any(|(i, d)| *i == 3 && d.source == a0 && d.packet.ends_with(b"still here")));
    // What node 0 told the peer about the victim: metric 3 and the chain element for it.
    let mut heard = None;
    for (from, to, bytes) in &sim.tap {
        if (*from, *to) != (0, 9) {
            continue;
        }
        let Ok(packet) = wire::TransportPacket::new_checked(bytes) else { continue };
        let Ok(plain) = link.open(&packet) else { continue };
        if let Ok(wire::Inner::Routing(tlvs)) = wire::Inner::parse(&plain) {
            for m in tlvs.flatten() {
                if let Message::Update { destination, seqno, metric: 3, origin } = m {
                    if destination == victim && seqno == route.seqno {
                        heard = Some(origin);
                    }
                }
            }
        }
    }
    let heard = heard.expect("node 0 announced the victim to its peer");
    let bad_metric = sim.nodes[0].router().stats().dropped_bad_metric;
    for metric in [1u16, 2, 3] {
        let mut plain = vec![wire::KIND_ROUTING];
        wire::emit_route_message(&Message::Update { destination: victim, seqno: route.seqno, metric, origin: heard }, &mut plain);
        sim.nodes[0].handle_datagram(sim.now, 9, &link.seal(&plain).unwrap());
        assert_eq!(sim.nodes[0].router().next_hop(&victim), Some(honest.next_hop), "metric {metric} with a replayed chain element moved the route");
    }
    assert_eq!(sim.nodes[0].router().stats().dropped_bad_metric - bad_metric, 2, "metrics 1 and 2 need a hash preimage");
}

/// Item 1, recovery: a peer that restarts forgets its end-to-end sessions while we still
/// hold ours. Our packets into the dead session go unanswered; once it has been silent for
/// `silent_rehandshake` our next send starts a new handshake, and traffic flows again.
#[test]
fn end_to_end_sessions_recover_after_the_peer_restarts() {
    let mut sim = Sim::new(&[Config::default(), Config::default()]);
    let (k0, k1) = (sim.key(0), sim.key(1));
    sim.nodes[0].add_peer(Instant::ZERO, 1, k1).unwrap();
    sim.nodes[1].add_peer(Instant::ZERO, 0, k0).unwrap();
    sim.run_until(Instant::from_millis(200));
    let (a0, a1) = (sim.nodes[0].address(), sim.nodes[1].address());
    let send = |sim: &mut Sim, k: u64| {
        let t = sim.now;
        sim.nodes[0].send(t, a1, &wire::ipv6_packet(a0, a1, &k.to_be_bytes())).unwrap();
    };
    send(&mut sim, 0);
    sim.run_until(Instant::from_millis(400));
    assert_eq!(sim.delivered.len(), 1);
    // Node 1 restarts (same identity, nothing else) and links again.
    let restart = Instant::from_millis(1_000);
    sim.run_until(restart);
    sim.nodes[1] = Node::new(seed(1, 1), seed(3, 1), Config::default(), restart);
    sim.nodes[1].add_peer(restart, 0, k0).unwrap();
    sim.delivered.clear();
    for k in 1..=40u64 {
        sim.run_until(restart + Duration::from_millis(500 * k));
        send(&mut sim, k);
    }
    sim.run_until(restart + Duration::from_secs(21));
    let first = sim.delivered.iter().filter(|(i, _)| *i == 1).map(|(_, d)| u64::from_be_bytes(d.packet[40..48].try_into().unwrap())).min();
    let first = first.expect("traffic never resumed after the restart");
    let silent = Config::default().e2e.silent_rehandshake;
    assert!(first * 500 <= silent.as_millis() + 2_000, "resumed only with packet {first}");
    assert!(sim.delivered.iter().filter(|(i, _)| *i == 1).count() as u64 >= 40 - first, "traffic flows after it resumed");
}
