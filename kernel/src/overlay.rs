//! The overlay in the kernel: the sans-IO `overlay::Node` driven over a UDP socket
//! on the underlay, with its delivered packets fed to the overlay smoltcp interface
//! and that interface's packets sent through the node.
//!
//! Command line: `gridos.overlay=off` disables it (it is on by default);
//! `gridos.overlay.peers=KEY@HOST:PORT,...` lists static peers (KEY: 64 hex digits
//! of an ed25519 public key; HOST an IPv4 address or `[IPv6]`);
//! `gridos.overlay.port=N` (default 7443); handshakes from keys not on the list are
//! accepted (users' agents and new nodes are not known in advance; every service
//! authorizes its own requests) unless `gridos.overlay.accept_any=0` closes the node
//! to all but its listed peers; `gridos.overlay.discovery=off` stops the
//! link-local beacons (`overlay::discovery`) that find peers on the same segment.
//!
//! The node is driven with `core::net::SocketAddr` endpoints (converted from and to
//! smoltcp's `IpEndpoint` at the socket), because the node keys its per-source limits
//! and cookies on the source IP address (`overlay::endpoint`). Every check on what
//! arrives (handshake door, beacon door, signed route announcements, end-to-end sealing
//! and the inner source of delivered packets) is in the `overlay` crate, so the host stack
//! in gridctl gets the same: what this node relays for others it cannot read.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write;
use core::net::SocketAddr;

use overlay::address::Address;
use overlay::discovery::{BeaconError, Discovery, DiscoveryConfig};
use overlay::endpoint::SourceAddress;
use overlay::identity::PublicKey;
use overlay::node::{Config, Event, Node};
use overlay::outbox::{Limits, Outbox, Sent};
use overlay::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv6Address};

use crate::cmdline::Cmdline;
use crate::executor;
use crate::net::socket::{SendOutcome, UdpSocket};
use crate::net::timing::{self, Stage};
use crate::net::{self, Network, OVERLAY_OUT};

/// Datagrams (and bytes) the overlay's UDP socket holds until the overlay task reads them.
const RECEIVE_QUEUE_DATAGRAMS: usize = 512;
const RECEIVE_QUEUE_BYTES: usize = 1 << 20;

/// Overlay settings from the command line.
pub struct OverlayConfig {
    pub enabled: bool,
    pub port: u16,
    pub peers: Vec<(PublicKey, IpEndpoint)>,
    pub accept_any: bool,
    pub discovery: bool,
}

impl OverlayConfig {
    pub fn from_cmdline(cmdline: &Cmdline<'_>) -> OverlayConfig {
        let enabled = !matches!(cmdline.get("gridos.overlay"), Some("off") | Some("0"));
        let port = match cmdline.get("gridos.overlay.port") {
            None => overlay::filter::DEFAULT_PORT,
            Some(v) => v.parse().unwrap_or_else(|_| {
                log::warn!("gridos.overlay.port={v:?} is not a port; using {}", overlay::filter::DEFAULT_PORT);
                overlay::filter::DEFAULT_PORT
            }),
        };
        let mut peers = Vec::new();
        for word in cmdline.get("gridos.overlay.peers").unwrap_or("").split(',').filter(|w| !w.is_empty()) {
            match parse_peer(word) {
                Some(p) => peers.push(p),
                None => log::warn!("gridos.overlay.peers: {word:?} is not KEY@HOST:PORT; ignored"),
            }
        }
        let accept_any = !matches!(cmdline.get("gridos.overlay.accept_any"), Some("0") | Some("no") | Some("off"));
        let discovery = !matches!(cmdline.get("gridos.overlay.discovery"), Some("off") | Some("0"));
        OverlayConfig { enabled, port, peers, accept_any, discovery }
    }
}

pub(crate) fn parse_peer(word: &str) -> Option<(PublicKey, IpEndpoint)> {
    let (key_hex, endpoint) = word.split_once('@')?;
    if key_hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(key_hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let endpoint: IpEndpoint = endpoint.parse().ok()?;
    Some((PublicKey(key), endpoint))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The overlay's clock: wall-clock microseconds (from the RTC), so handshake
/// timestamps keep rising across reboots and old handshakes cannot be replayed.
fn now() -> Instant {
    let (secs, nanos) = crate::arch::x86_64::time::unix_time();
    Instant::from_micros(secs.saturating_mul(1_000_000) + u64::from(nanos / 1000))
}

/// Converts an overlay instant to the executor's boot-relative nanoseconds.
fn to_boot_ns(at: Instant) -> u64 {
    let offset_us = now().micros.saturating_sub(executor::now_ns() / 1000);
    at.micros.saturating_sub(offset_us).saturating_mul(1000)
}

/// Starts the overlay: identity, interface, underlay socket and the overlay task.
/// Returns the node's overlay address.
pub fn start(seed: [u8; 32], origin: &str, config: OverlayConfig) -> Option<Ipv6Address> {
    let mut rng_seed = [0u8; 32];
    crate::entropy::fill(&mut rng_seed);
    let node_config = Config { accept_unknown_peers: config.accept_any, ..Config::default() };
    let mut node: Node<SocketAddr> = Node::new(seed, rng_seed, node_config, now());
    let address = Ipv6Address::from_octets(node.address().0);
    if !net::attach_overlay(address) {
        log::warn!("overlay: no network stack (no NIC); overlay not started");
        return None;
    }
    // Room for several TCP windows of overlay traffic (128 KiB each, ~100 datagrams).
    let socket = match UdpSocket::bind_first(config.port, RECEIVE_QUEUE_DATAGRAMS, RECEIVE_QUEUE_BYTES) {
        Ok(s) => s,
        Err(e) => {
            log::error!("overlay: cannot bind udp port {}: {e:?}", config.port);
            return None;
        }
    };
    for (key, endpoint) in &config.peers {
        if let Err(e) = node.add_peer(now(), SocketAddr::from(*endpoint), *key) {
            log::warn!("overlay: peer {} at {endpoint}: {e:?}", hex(&key.0));
        }
    }
    log::info!(
        "overlay: key {} address {address} ({origin}), udp port {}, {} static peers{}{}",
        hex(&node.public_key().0),
        config.port,
        config.peers.len(),
        if config.accept_any { ", accepting any key" } else { "" },
        if config.discovery { ", link-local discovery on" } else { "" }
    );
    IDENTITY.call_once(|| (node.public_key().0, address.octets(), config.port));
    let discovery = config.discovery.then(|| overlay::identity::Identity::from_seed(seed));
    executor::spawn("overlay", run(node, socket, config.port, config.peers, discovery));
    Some(address)
}

/// Destination address of an IPv6 packet.
fn ipv6_destination(packet: &[u8]) -> Option<Address> {
    let mut a = [0u8; 16];
    a.copy_from_slice(packet.get(24..40)?);
    (packet.first()? >> 4 == 6).then_some(Address(a))
}

/// The node's overlay key, address and UDP port, once the overlay has started.
pub static IDENTITY: spin::Once<([u8; 32], [u8; 16], u16)> = spin::Once::new();

/// The overlay node's counters, refreshed by the overlay task (for diagnostics).
pub static STATS: spin::Mutex<Option<overlay::node::Stats>> = spin::Mutex::new(None);

/// An overlay node this node routes to, as the shard service's `Peers` lists it.
#[derive(Clone, Copy, Debug)]
pub struct RoutedPeer {
    pub address: [u8; 16],
    /// Known for direct links (the handshake proved it); `None` for nodes reached
    /// through another node.
    pub key: Option<[u8; 32]>,
    pub direct: bool,
}

/// Most entries of [`ROUTES`].
pub const ROUTES_MAX: usize = 256;
/// How often the overlay task refreshes [`ROUTES`].
const ROUTES_REFRESH_NS: u64 = 1_000_000_000;

/// The routing table's destinations, refreshed by the overlay task every second and at
/// every link up or down: direct
/// links first (with their keys), then the destinations routed through them, at most
/// [`ROUTES_MAX`]. Any overlay member with a route is listed (users' agents too: the
/// node cannot tell them from nodes); a client checks by connecting.
pub static ROUTES: spin::Mutex<Vec<RoutedPeer>> = spin::Mutex::new(Vec::new());

fn routes_of(node: &Node<SocketAddr>) -> Vec<RoutedPeer> {
    let router = node.router();
    let mut out: Vec<RoutedPeer> = Vec::new();
    for &(neighbour, _) in router.neighbours() {
        let peer = overlay::node::PeerId(neighbour);
        if let (Some(address), Some(key)) = (node.peer_address(peer), node.peer_key(peer)) {
            if node.is_up(peer) && out.len() < ROUTES_MAX {
                out.push(RoutedPeer { address: address.0, key: Some(key.0), direct: true });
            }
        }
    }
    for (address, _) in router.routes() {
        if out.len() >= ROUTES_MAX {
            break;
        }
        if !out.iter().any(|p| p.address == address.0) {
            out.push(RoutedPeer { address: address.0, key: None, direct: false });
        }
    }
    out
}

/// Most per-destination sender sockets kept (the least recently used is closed beyond
/// this). Each holds about 51 KiB of buffers (16 KiB receive, 32 KiB send, packet
/// metadata), so this bounds them at about 6.5 MiB.
const SENDERS_MAX: usize = 128;
/// A sender socket not used for this long is closed. Every endpoint the node ever
/// answered gets one, and a client reaches the node from a fresh UDP port each time it
/// starts (every `gridctl` call; an attacker can pick any port), so without this each
/// call kept ~51 KiB until [`SENDERS_MAX`] were held: 150-200 KiB per honest
/// deploy-logs-remove round. Longer than the overlay's keepalive interval (10 s) plus
/// its handshake retry (5 s), so a live peer's socket is not closed and made again.
const SENDER_IDLE_NS: u64 = 15_000_000_000;

/// A sender socket for one destination, and when it last sent.
struct Sender {
    to: IpEndpoint,
    socket: UdpSocket,
    used_ns: u64,
}

/// The sender socket for `to`, made on first use.
fn sender(senders: &mut Vec<Sender>, to: IpEndpoint, port: u16, now_ns: u64) -> Option<&mut UdpSocket> {
    if let Some(i) = senders.iter().position(|s| s.to == to) {
        senders[i].used_ns = now_ns;
        return Some(&mut senders[i].socket);
    }
    if senders.len() >= SENDERS_MAX {
        if let Some(lru) = senders.iter().enumerate().min_by_key(|(_, s)| s.used_ns).map(|(i, _)| i) {
            senders.swap_remove(lru);
        }
    }
    match UdpSocket::bind_sender(Network::Underlay, port) {
        Ok(socket) => {
            senders.push(Sender { to, socket, used_ns: now_ns });
            senders.last_mut().map(|s| &mut s.socket)
        }
        Err(e) => {
            log::warn!("overlay: no sender socket for {to}: {e:?}");
            None
        }
    }
}

/// Queues the overlay's datagrams for the outbox (`overlay::outbox`: bounded
/// node-wide and per destination), logging drops at powers of two.
fn push_out(outbox: &mut Outbox<IpEndpoint>, to: IpEndpoint, datagram: Vec<u8>) {
    if let Err(why) = outbox.push(to, datagram) {
        let stats = outbox.stats();
        let dropped = stats.dropped_full + stats.dropped_destination_full;
        if dropped.is_power_of_two() {
            log::debug!("overlay: outbox: datagram to {to} dropped ({why:?}); {dropped} dropped so far");
        }
    }
}

/// Hands the outbox's datagrams to their sender sockets, in order per destination.
fn flush_out(outbox: &mut Outbox<IpEndpoint>, senders: &mut Vec<Sender>, port: u16, now_ns: u64) {
    outbox.flush(|to, datagram| {
        let Some(out) = sender(senders, to, port, now_ns) else { return Sent::Discard };
        match out.send_or_full(datagram, to) {
            SendOutcome::Queued => Sent::Taken,
            SendOutcome::Full => Sent::Full,
            SendOutcome::Unreachable => {
                log::debug!("overlay: datagram to {to} dropped (unreachable)");
                Sent::Discard
            }
        }
    });
}

/// Closes the sender sockets idle for [`SENDER_IDLE_NS`] (call right after reading
/// them: a datagram for the port may have landed in one). A datagram still queued in
/// one after that long has a destination that does not answer ARP; it is dropped.
fn close_idle_senders(senders: &mut Vec<Sender>, now_ns: u64) {
    senders.retain(|s| now_ns.saturating_sub(s.used_ns) < SENDER_IDLE_NS);
    if senders.capacity() > 2 * senders.len().max(4) {
        senders.shrink_to_fit();
    }
}

/// How often peers whose link is down get an ARP probe (see `net::arp_probe`).
const PROBE_INTERVAL_NS: u64 = 2_000_000_000;
/// How often a discovery beacon goes to `ff02::1`.
const BEACON_INTERVAL_NS: u64 = 5_000_000_000;
/// How often the door's counters are logged, when they changed: often enough that an
/// operator (and the booted flood test) sees a flood being absorbed, rare enough that a
/// flood cannot fill the log.
const GUARD_LOG_INTERVAL_NS: u64 = 5_000_000_000;

/// The counters that show what the door refused or absorbed (handshake guard and
/// discovery), in a fixed order for comparison and logging.
fn guard_counters(s: &overlay::node::Stats, d: &overlay::discovery::DiscoveryStats) -> [u64; 11] {
    [
        s.handshakes_completed,
        s.dropped_unauthenticated,
        s.dropped_rate_limited,
        s.cookie_replies_sent,
        s.dropped_stale_inits,
        s.half_open_dropped,
        s.dropped_table_full,
        d.refused_cheap,
        d.rate_limited,
        d.verified,
        d.removed,
    ]
}

/// Logs the door's counters, the peer table's size and the kernel heap in use (one line,
/// `overlay: guard: ...`), so a flood's cost in state and memory is visible.
fn log_guard(c: &[u64; 11], peers: usize, discovered: usize) {
    let heap_kib = crate::mm::heap::allocated_bytes() / 1024;
    log::info!(
        "overlay: guard: {} handshakes completed, {} unauthenticated dropped, {} inits rate-limited, \
         {} cookie replies, {} stale inits, {} half-open dropped, {} table full; beacons: {} refused unverified, \
         {} rate-limited, {} verified, {} discovered removed; {peers} peers, {discovered} discovered, \
         heap {heap_kib} KiB",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
    );
}

/// Handles a discovery beacon from `from`: `overlay::discovery::Discovery` checks it
/// (link-local source bound to the signed sender, rate limit, then the signature) and
/// adds a new key as a peer (its handshake then authenticates it like any peer).
fn on_beacon(node: &mut Node<SocketAddr>, discovery: &mut Discovery, from: SocketAddr, datagram: &[u8], t: Instant) {
    let result = discovery.handle_beacon(node, t, from, datagram);
    // Logged in smoltcp's endpoint form, as before the node took `SocketAddr`s.
    let from = IpEndpoint::from(from);
    match result {
        Ok(Some(peer)) => {
            let address = node.peer_address(peer).map(|a| Ipv6Address::from_octets(a.0));
            log::info!("overlay: discovered {} at {from}", address.map_or(String::from("?"), |a| alloc::format!("{a}")));
        }
        Ok(None) | Err(BeaconError::OwnKey) => {}
        Err(e) => log::debug!("overlay: beacon from {from} ignored: {e:?}"),
    }
}

async fn run(
    mut node: Node<SocketAddr>,
    mut socket: UdpSocket,
    port: u16,
    peers: Vec<(PublicKey, IpEndpoint)>,
    discovery: Option<overlay::identity::Identity>,
) {
    let mut buf = vec![0u8; 2048];
    let mut senders: Vec<Sender> = Vec::new();
    let mut outbox = Outbox::new(Limits::DEFAULT);
    let mut next_probe_ns = 0;
    let mut next_beacon_ns = 0;
    let mut next_guard_log_ns = GUARD_LOG_INTERVAL_NS;
    let mut next_routes_ns = 0;
    let mut logged_guard = [0u64; 11];
    let mut logged_traffic = (0u64, 0u64, 0u64, 0u64);
    let mut discovered = Discovery::new(DiscoveryConfig::default(), now());
    let all_nodes = IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1)), port);
    loop {
        let round_start_ns = executor::now_ns();
        // Time spent in the stages timed below (the rest of the round is "other").
        let mut staged_ns = 0u64;
        let mut stage = |stage: Stage, items: u64, start_ns: u64| {
            let ns = executor::now_ns().saturating_sub(start_ns);
            staged_ns += ns;
            timing::add(stage, ns, items);
        };
        timing::overlay_round();
        let t = now();
        if let Some(identity) = &discovery {
            if executor::now_ns() >= next_beacon_ns {
                next_beacon_ns = executor::now_ns() + BEACON_INTERVAL_NS;
                // Receivers check that the beacon's signed sender is its source address.
                match net::underlay_link_local() {
                    Some(ll) => {
                        let beacon = overlay::discovery::beacon(identity, t.micros / 1_000_000, SourceAddress(ll.octets()));
                        if !socket.try_send_to(&beacon, all_nodes) {
                            log::debug!("overlay: discovery beacon not sent");
                        }
                    }
                    None => log::debug!("overlay: no link-local address; no discovery beacon"),
                }
            }
        }
        if executor::now_ns() >= next_probe_ns {
            next_probe_ns = executor::now_ns() + PROBE_INTERVAL_NS;
            for (key, endpoint) in &peers {
                let up = node.peer_by_key(key).is_some_and(|p| node.is_up(p));
                if let (false, IpAddress::Ipv4(v4)) = (up, endpoint.addr) {
                    net::arp_probe(v4);
                }
            }
        }
        let mut receive = |n: usize, from: IpEndpoint, buf: &[u8], node: &mut Node<SocketAddr>, stage: &mut dyn FnMut(Stage, u64, u64)| {
            let from = SocketAddr::from(from);
            if overlay::discovery::is_beacon(&buf[..n]) {
                if discovery.is_some() {
                    on_beacon(node, &mut discovered, from, &buf[..n], t);
                }
            } else {
                let start_ns = executor::now_ns();
                node.handle_datagram(t, from, &buf[..n]);
                stage(Stage::OverlayReceive, 1, start_ns);
            }
        };
        loop {
            let start_ns = executor::now_ns();
            let Some((n, from)) = socket.try_recv_from(&mut buf) else { break };
            stage(Stage::UdpRead, 1, start_ns);
            receive(n, from, &buf, &mut node, &mut stage);
        }
        for sender in senders.iter_mut() {
            while let Some((n, from)) = sender.socket.try_recv_from(&mut buf) {
                receive(n, from, &buf, &mut node, &mut stage);
            }
        }
        close_idle_senders(&mut senders, executor::now_ns());
        let _ = OVERLAY_OUT.take();
        let start_ns = executor::now_ns();
        let outgoing = net::overlay_take_outgoing();
        stage(Stage::TakeOutgoing, outgoing.len() as u64, start_ns);
        for packet in outgoing {
            if let Some(dst) = ipv6_destination(&packet) {
                let start_ns = executor::now_ns();
                let sent = node.send(t, dst, &packet);
                stage(Stage::OverlaySend, 1, start_ns);
                if let Err(e) = sent {
                    log::debug!("overlay: packet to {} dropped: {e:?}", Ipv6Address::from_octets(dst.0));
                }
            }
        }
        if node.poll_timeout().is_some_and(|at| at <= t) {
            node.handle_timeout(t);
        }
        if discovered.poll_timeout().is_some_and(|at| at <= t) {
            discovered.handle_timeout(&mut node, t);
        }
        let start_ns = executor::now_ns();
        let mut datagrams = 0;
        while let Some((to, datagram)) = node.poll_transmit() {
            let to = IpEndpoint::from(to);
            log::trace!("overlay: {} bytes to {to}", datagram.len());
            push_out(&mut outbox, to, datagram);
            datagrams += 1;
        }
        flush_out(&mut outbox, &mut senders, port, executor::now_ns());
        stage(Stage::UdpWrite, datagrams, start_ns);
        let start_ns = executor::now_ns();
        let mut delivered = 0;
        while let Some(delivery) = node.poll_deliver() {
            net::overlay_deliver(delivery.packet);
            delivered += 1;
        }
        stage(Stage::Deliver, delivered, start_ns);
        while let Some(event) = node.poll_event() {
            // A link that comes or goes shows in `ROUTES` at once (a client asking for
            // peers right after the links came up must see them all).
            next_routes_ns = 0;
            match event {
                Event::LinkUp { endpoint, address, .. } => log::info!(
                    "overlay: link up with {} via {}",
                    Ipv6Address::from_octets(address.0),
                    IpEndpoint::from(endpoint)
                ),
                Event::LinkDown { address, .. } => {
                    log::info!("overlay: link down with {}", Ipv6Address::from_octets(address.0))
                }
            }
        }
        let stats = node.stats();
        if executor::now_ns() >= next_guard_log_ns {
            next_guard_log_ns = executor::now_ns() + GUARD_LOG_INTERVAL_NS;
            let counters = guard_counters(&stats, &discovered.stats());
            if counters != logged_guard {
                logged_guard = counters;
                log_guard(&counters, node.peer_count(), discovered.len());
            }
            // What the node forwarded, delivered and dropped (`gridos.log=debug`).
            let traffic = (stats.forwarded, stats.delivered, stats.dropped_no_route_or_queue, stats.dropped_replays);
            if traffic != logged_traffic {
                logged_traffic = traffic;
                log::debug!(
                    "overlay: traffic: {} forwarded, {} delivered, {} dropped (no route or queue full), {} replays, \
                     {} hop limit, {} spoofed; e2e {:?}",
                    stats.forwarded,
                    stats.delivered,
                    stats.dropped_no_route_or_queue,
                    stats.dropped_replays,
                    stats.dropped_hop_limit,
                    stats.dropped_spoofed_source,
                    stats.e2e
                );
            }
        }
        *STATS.lock() = Some(stats);
        if executor::now_ns() >= next_routes_ns {
            next_routes_ns = executor::now_ns() + ROUTES_REFRESH_NS;
            *ROUTES.lock() = routes_of(&node);
        }
        let timer_ns = if discovery.is_some() { next_probe_ns.min(next_beacon_ns) } else { next_probe_ns };
        let timer_ns = timer_ns.min(next_guard_log_ns);
        let next_at = overlay::time::earliest(node.poll_timeout(), discovered.poll_timeout());
        let deadline_ns = Some(next_at.map_or(timer_ns, |at| to_boot_ns(at).min(timer_ns)));
        let round_ns = executor::now_ns().saturating_sub(round_start_ns);
        timing::add(Stage::OverlayTaskOther, round_ns.saturating_sub(staged_ns), 0);
        executor::wait_then_yield(deadline_ns, |waker| {
            socket.register_recv_waker(waker);
            OVERLAY_OUT.register_waker(waker);
            let mut ready = socket.can_recv();
            for sender in senders.iter_mut() {
                sender.socket.register_recv_waker(waker);
                ready |= sender.socket.can_recv();
                if outbox.is_blocked_on(sender.to) {
                    sender.socket.register_send_waker(waker);
                    ready |= sender.socket.can_send();
                }
            }
            OVERLAY_OUT.is_pending() || ready
        })
        .await;
    }
}

/// Sealing alone, for the echo bench's breakdown: microseconds to seal and to open one
/// full-size overlay packet (the overlay MTU plus the routed header) with the session
/// code the overlay uses, in this boot. One "line" of `net::timing::report`.
pub fn seal_bench() -> String {
    use overlay::session::{Session, SessionKeys};
    use overlay::wire::TransportPacket;
    const ROUNDS: usize = 200;
    let t = Instant::ZERO;
    let mut a = Session::new(&SessionKeys { send: [1; 32], recv: [2; 32] }, 1, 2, true, t);
    let mut b = Session::new(&SessionKeys { send: [2; 32], recv: [1; 32] }, 2, 1, false, t);
    let packet = vec![0x5au8; net::overlay_device::MTU_BYTES + overlay::wire::DATA_HEADER_LEN + 1];
    let start_ns = executor::now_ns();
    let sealed: Vec<Vec<u8>> = (0..ROUNDS).filter_map(|_| a.seal(&packet).ok()).collect();
    let seal_ns = executor::now_ns().saturating_sub(start_ns);
    let start_ns = executor::now_ns();
    let opened = sealed.iter().filter(|d| TransportPacket::new_checked(d).is_ok_and(|p| b.open(&p).is_ok())).count();
    let open_ns = executor::now_ns().saturating_sub(start_ns);
    let per = |ns: u64| {
        let tenths = ns * 10 / (ROUNDS as u64 * 1000);
        alloc::format!("{}.{}", tenths / 10, tenths % 10)
    };
    alloc::format!(
        "breakdown: sealing alone ({} bytes, {opened}/{ROUNDS} opened): seal {} us, open {} us per packet",
        packet.len(),
        per(seal_ns),
        per(open_ns)
    )
}
