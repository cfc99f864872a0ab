//! The overlay's door under flood, booted (issue 11, booted test): one node under TCG on
//! a bridge in a network namespace, reached from this process through a veth pair whose
//! host end holds two addresses: one for the honest user, one for the attacker (the node
//! budgets unauthenticated work per source address, so they must differ, as two hosts
//! would). The attacker floods the node's overlay UDP port with, crafted from the overlay
//! crate's own wire and handshake types:
//!
//! - random bytes shaped as initiations (right type and length, random MACs);
//! - initiations with a valid `mac1` for the node's key but a bad signature;
//! - real initiations from throwaway keys that never finish (no transport packet ever
//!   confirms them), answering cookie replies with `mac2` as a real host can, and
//!   replays of such an initiation once the node answered it (refused as stale);
//! - bogus discovery beacons: unicast over IPv4 (refused: discovery is link-local only),
//!   link-local multicast with a signed sender that is not the source, with a broken
//!   signature, and valid ones from throwaway keys (rate-limited, bounded).
//!
//! Meanwhile an honest `gridctl` user deploys hello.wasm (no bundle: wasmi) and reads its
//! exact log through the node. Afterwards the node is still reachable and its periodic
//! `overlay: guard:` line shows the flood refused and bounded. Prints (bench style, not
//! asserted): the attacker's send rate and the honest overlay link time with and without
//! the flood in the same run.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostnet::Stack;
use gridctl::target::Target;
use gridos_qemu::netns::{require_root, Netns};
use gridos_tests::{gridctl, wasm};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, RunningMachine};
use overlay::endpoint::SourceAddress;
use overlay::handshake::{self, Initiator};
use overlay::identity::{Identity, PublicKey};
use overlay::wire::{self, InitRepr};

/// The node's port and the bounds this test expects (`overlay::node::Config` and
/// `overlay::discovery::DiscoveryConfig` defaults, which the kernel uses).
const PORT: u16 = 7443;
const PEERS_MAX: u64 = 64;
const DISCOVERED_MAX: u64 = 32;
/// Datagrams per second the attacker aims at (the 2,000 forged inits a second).
const FLOOD_RATE: u64 = 2_000;
/// The flood lasts at least this long, and as long as the honest deploy takes.
const FLOOD_MIN: Duration = Duration::from_secs(15);

/// Test randomness (unique, not secret): blake3 of the process, a counter and the time.
fn random32() -> [u8; 32] {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(&format!("{:?}", SystemTime::now()).into_bytes());
    *h.finalize().as_bytes()
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn ok(key: &Path, args: &[&str], node: &RunningMachine) -> String {
    gridctl(key, args).unwrap_or_else(|e| panic!("gridctl {args:?} failed: {e}\n{}", node.serial()))
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// How long a fresh honest identity takes from its first initiation to a route to the
/// node (handshake, confirmation and the first routing update).
fn honest_link_time(bind: SocketAddr, target: &Target) -> Option<Duration> {
    let socket = UdpSocket::bind(bind).expect("honest socket");
    let config = overlay::node::Config { accept_unknown_peers: false, ..overlay::node::Config::default() };
    let mut stack = Stack::new(random32(), socket, config).expect("stack");
    let start = Instant::now();
    stack.add_peer(target.endpoint, target.key).expect("peer");
    let node = overlay::Address(target.overlay_address());
    while start.elapsed() < Duration::from_secs(30) {
        stack.poll(Duration::from_millis(5)).expect("poll");
        if stack.has_route(&node) {
            return Some(start.elapsed());
        }
    }
    None
}

#[derive(Default)]
struct Sent {
    random_inits: AtomicU64,
    bad_signature_inits: AtomicU64,
    throwaway_inits: AtomicU64,
    replayed_inits: AtomicU64,
    beacons: AtomicU64,
    responses: AtomicU64,
    cookie_replies: AtomicU64,
}

/// A throwaway initiation to `node`; returns its state (to answer a cookie) and bytes.
fn throwaway(node: PublicKey, cookie: Option<&[u8; 16]>, identity: &Identity) -> (Initiator, [u8; wire::INIT_LEN]) {
    let index = u32::from_le_bytes(random32()[..4].try_into().expect("4 bytes"));
    Initiator::start(identity, node, random32(), index, now_us(), cookie)
}

/// Floods `to` from `socket` (and link-local beacons from `ll`) until `stop`.
fn flood(socket: UdpSocket, ll: Option<(UdpSocket, SocketAddrV6)>, to: SocketAddr, node: PublicKey, stop: Arc<AtomicBool>, sent: Arc<Sent>) {
    socket.set_nonblocking(true).expect("nonblocking");
    let v4_source = match socket.local_addr().expect("local").ip() {
        std::net::IpAddr::V4(v4) => SourceAddress(v4.to_ipv6_mapped().octets()),
        std::net::IpAddr::V6(v6) => SourceAddress(v6.octets()),
    };
    let mut pending: HashMap<u32, (Identity, Initiator, [u8; wire::INIT_LEN])> = HashMap::new();
    // An initiation the node answered (so it verified it and recorded its timestamp).
    let mut answered: Option<[u8; wire::INIT_LEN]> = None;
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        // Paced: datagram n leaves at n / FLOOD_RATE seconds.
        let due = Duration::from_micros(n * 1_000_000 / FLOOD_RATE);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait.min(Duration::from_millis(2)));
            continue;
        }
        let r = random32();
        match n % 8 {
            // Random bytes shaped as an init: type and length right, everything else noise.
            0..=2 => {
                let mut init = [0u8; wire::INIT_LEN];
                for chunk in init.chunks_mut(32) {
                    let r = random32();
                    chunk.copy_from_slice(&r[..chunk.len()]);
                }
                init[0] = wire::DatagramType::HandshakeInit.code();
                let _ = socket.send_to(&init, to);
                sent.random_inits.fetch_add(1, Ordering::Relaxed);
            }
            // A valid mac1 for the node's key over a garbage signature.
            3..=5 => {
                let mut repr = InitRepr {
                    sender_index: u32::from_le_bytes([r[0], r[1], r[2], r[3]]),
                    static_key: PublicKey(random32()),
                    ephemeral: random32(),
                    timestamp_us: now_us(),
                    signature: [0x5a; 64],
                    mac1: [0; 16],
                    mac2: [0; 16],
                };
                repr.signature[..32].copy_from_slice(&r);
                repr.mac1 = handshake::init_mac1(&node, &repr.emit());
                let _ = socket.send_to(&repr.emit(), to);
                sent.bad_signature_inits.fetch_add(1, Ordering::Relaxed);
            }
            // A replay of an answered initiation (with its still valid mac2).
            6 if (n / 8) % 2 == 1 && answered.is_some() => {
                if let Some(init) = &answered {
                    let _ = socket.send_to(init, to);
                    sent.replayed_inits.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A real handshake from a throwaway key, never confirmed.
            6 => {
                let identity = Identity::from_seed(r);
                let (initiator, init) = throwaway(node, None, &identity);
                let _ = socket.send_to(&init, to);
                if pending.len() > 4096 {
                    pending.clear();
                }
                pending.insert(initiator.sender_index, (identity, initiator, init));
                sent.throwaway_inits.fetch_add(1, Ordering::Relaxed);
            }
            // Bogus beacons, in turn of their kind.
            _ => {
                let kind = (n / 8) % 4;
                let identity = Identity::from_seed(r);
                let now_s = now_us() / 1_000_000;
                match (&ll, kind) {
                    (Some((ll_socket, ll_addr)), 1) => {
                        // Signed for another link-local sender than its source.
                        let forged = SourceAddress(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xdead, 1).octets());
                        let _ = ll_socket.send_to(&overlay::discovery::beacon(&identity, now_s, forged), *ll_addr);
                    }
                    (Some((ll_socket, ll_addr)), 2) => {
                        let own = ll_socket.local_addr().map(|a| match a.ip() {
                            std::net::IpAddr::V6(v6) => v6.octets(),
                            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                        });
                        let mut b = overlay::discovery::beacon(&identity, now_s, SourceAddress(own.unwrap_or([0; 16])));
                        let last = b.len() - 1;
                        b[last] ^= 0xff;
                        let _ = ll_socket.send_to(&b, *ll_addr);
                    }
                    (Some((ll_socket, ll_addr)), 3) => {
                        // Valid, from a throwaway key: only rate limits and the bound on
                        // discovered peers stand in its way.
                        let own = ll_socket.local_addr().map(|a| match a.ip() {
                            std::net::IpAddr::V6(v6) => v6.octets(),
                            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                        });
                        let b = overlay::discovery::beacon(&identity, now_s, SourceAddress(own.unwrap_or([0; 16])));
                        let _ = ll_socket.send_to(&b, *ll_addr);
                    }
                    _ => {
                        // Unicast over IPv4, correctly signed for its source.
                        let _ = socket.send_to(&overlay::discovery::beacon(&identity, now_s, v4_source), to);
                    }
                }
                sent.beacons.fetch_add(1, Ordering::Relaxed);
            }
        }
        n += 1;
        // Answers: responses are counted and never confirmed; a cookie reply is used as a
        // real host would (it proves only that we receive at our address).
        while let Ok((len, _)) = socket.recv_from(&mut buf) {
            let reply = &buf[..len];
            match wire::DatagramType::of(reply) {
                Ok(wire::DatagramType::HandshakeResp) => {
                    sent.responses.fetch_add(1, Ordering::Relaxed);
                    if let Ok(resp) = wire::RespRepr::parse(reply) {
                        if let Some((_, _, init)) = pending.remove(&resp.receiver_index) {
                            answered = Some(init);
                        }
                    }
                }
                Ok(wire::DatagramType::CookieReply) => {
                    sent.cookie_replies.fetch_add(1, Ordering::Relaxed);
                    let Ok(parsed) = wire::CookieReplyRepr::parse(reply) else { continue };
                    let Some((identity, initiator, _)) = pending.remove(&parsed.receiver_index) else { continue };
                    if let Ok(cookie) = initiator.open_cookie(reply) {
                        let (again, init) = throwaway(node, Some(&cookie), &identity);
                        let _ = socket.send_to(&init, to);
                        pending.insert(again.sender_index, (identity, again, init));
                        sent.throwaway_inits.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The numbers of the node's last `overlay: guard:` line, in order.
fn last_guard(serial: &str) -> Option<Vec<u64>> {
    let line = serial.lines().rev().find(|l| l.contains("overlay: guard: "))?;
    let tail = line.split("overlay: guard: ").nth(1)?;
    let numbers: Vec<u64> = tail
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers.len() == 14).then_some(numbers)
}

#[test]
fn overlay_door_holds_under_flood_while_an_honest_user_deploys() {
    require_root();
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let pid = std::process::id();
    let dir = gridos_qemu::workspace_root().join("target/test-disks").join(format!("flood-{pid}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let disk = dir.join("node.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(64 << 20)).expect("disk");
    let user = dir.join("user.key");
    gridctl(&user, &["key", "new"]).expect("key");

    // A subnet of our own, so concurrent runs and other tests do not collide.
    let net = 64 + pid % 128;
    let (honest_ip, attacker_ip, node_ip) = (format!("10.242.{net}.1"), format!("10.242.{net}.2"), format!("10.242.{net}.10"));
    let ns = Netns::create(&format!("gridos-{pid}-flood"), &[]).unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tapf").unwrap_or_else(|e| panic!("{e}"));
    // The veth's host end stays in our namespace; the other end joins the bridge (and
    // the pair goes away with the namespace).
    let (host_if, ns_if) = (format!("fh{}", pid % 100_000), format!("fn{}", pid % 100_000));
    ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
    ip(&["link", "set", &ns_if, "netns", &ns.name]);
    ns.exec_ok(&["ip", "link", "set", &ns_if, "master", "br0"]).unwrap_or_else(|e| panic!("{e}"));
    ns.exec_ok(&["ip", "link", "set", &ns_if, "up"]).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::process::Command::new("sysctl").args(["-qw", &format!("net.ipv6.conf.{host_if}.accept_dad=0")]).status();
    ip(&["addr", "add", &format!("{honest_ip}/24"), "dev", &host_if]);
    ip(&["addr", "add", &format!("{attacker_ip}/24"), "dev", &host_if]);
    let attacker_ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xf1, 2);
    ip(&["-6", "addr", "add", &format!("{attacker_ll}/64"), "dev", &host_if, "nodad"]);
    ip(&["link", "set", &host_if, "up"]);
    let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{host_if}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("ifindex");

    let mut m = Machine::new(&kernel);
    m.cmdline = format!("gridos.test=serve gridos.ip4={node_ip}/24");
    m.disks = vec![disk.clone()];
    m.timeout = Duration::from_secs(240);
    m.netns = Some(ns.name.clone());
    m.extra_args = Netns::nic_args("tapf", "52:54:00:00:0f:10");
    let node = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    assert!(node.wait_for("control: workload control on overlay tcp port 7070", Duration::from_secs(120)), "{}", node.serial());
    let serial = node.serial();
    let line = serial.lines().find(|l| l.contains("overlay: key ")).unwrap_or_else(|| panic!("{serial}"));
    let key_hex = line.split_whitespace().skip_while(|w| *w != "key").nth(1).expect("key").to_string();
    let t = format!("{key_hex}@{node_ip}:{PORT}");
    let target = Target::parse(&t).expect("target");
    let node_key = PublicKey(target.key);
    let honest_bind: SocketAddr = format!("{honest_ip}:0").parse().expect("bind");

    // Baseline: an honest link and a gridctl call without the flood.
    // (gridctl first, so both link times start with the neighbours' ARP entries known.)
    let info = ok(&user, &["info", "--node", &t], &node);
    assert!(info.contains(&key_hex), "{info}");
    let quiet = honest_link_time(honest_bind, &target).unwrap_or_else(|| panic!("no honest link without flood\n{}", node.serial()));

    // The flood.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Sent::default());
    let attacker_socket = UdpSocket::bind(format!("{attacker_ip}:0")).expect("attacker socket");
    let ll_socket = UdpSocket::bind(SocketAddrV6::new(attacker_ll, 0, 0, ifindex)).expect("link-local socket");
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), PORT, 0, ifindex);
    let to: SocketAddr = format!("{node_ip}:{PORT}").parse().expect("node");
    let attacker = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || flood(attacker_socket, Some((ll_socket, all_nodes)), to, node_key, stop, sent))
    };
    let flood_start = Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    // The honest user under flood: a new overlay link, a deploy and the exact log.
    let under_flood = honest_link_time(honest_bind, &target);
    let hello = wasm("hello.wasm");
    let id = ok(&user, &["deploy", "--node", &t, "--name", "flood-hello", "--arg", "under-flood", hello.to_str().expect("path")], &node);
    let id = id.trim().to_string();
    let logs = ok(&user, &["logs", &id, "--follow", "--node", &t], &node);
    let stdout: Vec<&str> = logs.lines().filter(|l| !l.starts_with("stderr: ")).collect();
    assert_eq!(
        stdout,
        [
            "hello, world from wasm32-wasi",
            "argc=2 argv[0]=flood-hello argv[1]=under-flood",
            "env GREETING=(unset)",
            "clock ok, random ok"
        ],
        "{logs}\n{}",
        node.serial()
    );
    assert!(logs.lines().any(|l| l == "stderr: hello on stderr"), "{logs}");
    let deployed_after = flood_start.elapsed();
    if let Some(rest) = FLOOD_MIN.checked_sub(flood_start.elapsed()) {
        std::thread::sleep(rest);
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().expect("attacker");
    let flood_time = flood_start.elapsed();

    // Afterwards: reachable, and a new link as quick as before (no state left behind).
    let info = ok(&user, &["info", "--node", &t], &node);
    assert!(info.contains(&key_hex), "{info}");
    let after = honest_link_time(honest_bind, &target).unwrap_or_else(|| panic!("no honest link after the flood\n{}", node.serial()));
    // Let the node log its counters (every 5 s while they change).
    std::thread::sleep(Duration::from_secs(6));
    let serial = node.serial();
    let _ = node.kill();

    let g = last_guard(&serial).unwrap_or_else(|| panic!("no overlay: guard: line\n{serial}"));
    let [completed, unauthenticated, rate_limited, cookies, stale, half_open, table_full, beacons_cheap, beacons_limited, beacons_verified, discovered_removed, peers, discovered, _heap_kib] =
        g[..]
    else {
        unreachable!()
    };
    for l in serial.lines().filter(|l| l.contains("overlay: guard: ")) {
        eprintln!("node: {}", l.trim());
    }
    let s = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let inits = s(&sent.random_inits) + s(&sent.bad_signature_inits) + s(&sent.throwaway_inits) + s(&sent.replayed_inits);
    let secs = flood_time.as_secs_f64();
    eprintln!(
        "flood bench: attacker sent {inits} inits in {secs:.1} s ({:.0} inits/s: {} random, {} valid mac1 bad signature, {} throwaway keys, {} replays) and {} beacons; got {} responses, {} cookie replies",
        inits as f64 / secs,
        s(&sent.random_inits),
        s(&sent.bad_signature_inits),
        s(&sent.throwaway_inits),
        s(&sent.replayed_inits),
        s(&sent.beacons),
        s(&sent.responses),
        s(&sent.cookie_replies)
    );
    eprintln!(
        "flood bench: honest overlay link (handshake to first route): {:.0} ms without flood, {} under flood, {:.0} ms after; deploy + logs done {:.1} s into the flood",
        quiet.as_secs_f64() * 1e3,
        under_flood.map_or("none in 30 s".to_string(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
        after.as_secs_f64() * 1e3,
        deployed_after.as_secs_f64()
    );

    assert!(under_flood.is_some(), "no honest overlay link under flood\n{serial}");
    // Forged inits die at the MAC or the signature; the door went under load and asked
    // for cookies, and budgets refused the excess throwaway handshakes.
    assert!(unauthenticated >= s(&sent.random_inits) / 2, "random inits not dropped as unauthenticated: {g:?}");
    assert!(cookies > 0, "no cookie replies under flood: {g:?}");
    assert!(rate_limited > 0 || table_full > 0 || cookies > 0, "{g:?}");
    // Throwaway keys never confirm: their half-open slots were dropped, and the table
    // stayed within its bound.
    assert!(half_open > 0, "no half-open peer dropped: {g:?}");
    assert!(peers <= PEERS_MAX, "peer table beyond its bound: {g:?}");
    // Beacons: unicast and forged senders refused before any signature check; the rest
    // rate-limited; what discovery added stayed bounded.
    assert!(beacons_cheap > 0, "no beacon refused by the cheap checks: {g:?}");
    assert!(beacons_limited > 0, "no beacon rate-limited: {g:?}");
    assert!(discovered <= DISCOVERED_MAX, "{g:?}");
    assert!(beacons_verified < s(&sent.beacons), "{g:?}");
    // Replays of an answered initiation are refused before any budget or signature.
    assert!(s(&sent.replayed_inits) > 0, "the node answered no throwaway handshake to replay");
    assert!(stale > 0, "replayed initiations not refused as stale: {g:?}");
    // Memory: the kernel heap over the whole flood (guard lines) moved by less than 4 MiB
    // (its half-open state, buckets and timestamps are bounded tables of a few hundred KiB).
    let heaps: Vec<u64> = serial.lines().filter(|l| l.contains("overlay: guard: ")).filter_map(last_guard).map(|g| g[13]).collect();
    let (low, high) = (heaps.iter().min().copied().unwrap_or(0), heaps.iter().max().copied().unwrap_or(0));
    eprintln!("flood bench: kernel heap over the flood {low} KiB to {high} KiB");
    assert!(high - low < 4096, "heap grew from {low} KiB to {high} KiB under flood");
    let _ = (completed, discovered_removed);
    let _ = std::fs::remove_dir_all(&dir);
}
