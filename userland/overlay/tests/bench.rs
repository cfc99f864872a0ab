//! Benchmarks (run with `cargo test --release -p overlay --test bench -- --ignored --nocapture`):
//! complete handshakes per second between two nodes, sealed-data throughput through one
//! link (end to end inside hop by hop), and honest handshakes a node completes while it
//! absorbs a flood of forged initiations.

use std::time::Instant as Clock;

use overlay::node::{Config, Event, Node};
use overlay::time::Instant;

type Pair = (Node<u8>, Node<u8>);

/// Two nodes that know each other; returns them once the link is up.
fn linked_pair(i: u64) -> Option<Pair> {
    let seed = |tag: u64| {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&(i * 4 + tag + 1).to_le_bytes());
        s
    };
    let mut now = Instant::from_millis(1);
    let mut a: Node<u8> = Node::new(seed(0), seed(1), Config::default(), now);
    let mut b: Node<u8> = Node::new(seed(2), seed(3), Config::default(), now);
    a.add_peer(now, 1, b.public_key()).ok()?;
    b.add_peer(now, 0, a.public_key()).ok()?;
    let (mut a_up, mut b_up) = (false, false);
    for _ in 0..200 {
        for n in [&mut a, &mut b] {
            if n.poll_timeout().is_some_and(|at| at <= now) {
                n.handle_timeout(now);
            }
        }
        shuttle(&mut a, &mut b, now);
        while let Some(e) = a.poll_event() {
            a_up |= matches!(e, Event::LinkUp { .. });
        }
        while let Some(e) = b.poll_event() {
            b_up |= matches!(e, Event::LinkUp { .. });
        }
        if a_up && b_up {
            return Some((a, b));
        }
        now = now + overlay::time::Duration::from_millis(1);
    }
    None
}

/// Moves every queued datagram to the other node once; returns how many moved.
fn shuttle(a: &mut Node<u8>, b: &mut Node<u8>, now: Instant) -> usize {
    let mut moved = 0;
    while let Some((_, d)) = a.poll_transmit() {
        b.handle_datagram(now, 0, &d);
        moved += 1;
    }
    while let Some((_, d)) = b.poll_transmit() {
        a.handle_datagram(now, 1, &d);
        moved += 1;
    }
    moved
}

#[test]
#[ignore = "benchmark: prints figures"]
fn handshakes_per_second_and_sealed_throughput() {
    let start = Clock::now();
    let mut handshakes = 0u64;
    while start.elapsed().as_secs_f64() < 2.0 {
        assert!(linked_pair(handshakes).is_some(), "handshake {handshakes} did not complete");
        handshakes += 1;
    }
    let per_sec = handshakes as f64 / start.elapsed().as_secs_f64();
    println!("overlay bench: {per_sec:.0} complete handshakes/s (both sides, key agreement and signatures)");

    let (mut a, mut b) = linked_pair(u64::MAX / 8).expect("pair");
    let dst = b.address();
    let mtu = overlay::wire::OVERLAY_MTU_BYTES;
    let packet = overlay::wire::ipv6_packet(a.address(), dst, &vec![0x42u8; mtu - overlay::wire::IPV6_HEADER_LEN]);
    let now = Instant::from_millis(2);
    let total_bytes = 64u64 << 20;
    let start = Clock::now();
    let (mut sent, mut delivered) = (0u64, 0u64);
    while sent < total_bytes {
        for _ in 0..64 {
            a.send(now, dst, &packet).expect("send");
            sent += packet.len() as u64;
        }
        shuttle(&mut a, &mut b, now);
        while let Some(d) = b.poll_deliver() {
            delivered += d.packet.len() as u64;
        }
    }
    assert_eq!(delivered, sent);
    let sealed = delivered as f64 / 1e6 / start.elapsed().as_secs_f64();
    println!("overlay bench: {mtu}-byte packets (the overlay MTU) through one link {sealed:.0} MB/s (to the link's peer: sealed once, one core)");
}

/// A responder takes forged initiations (valid mac1, bad signature, random keys and source
/// addresses) as fast as one core can make and feed them, while fresh honest nodes keep
/// handshaking with it; the clock is the wall clock, so its budgets and cookies run as in
/// a node. Prints the forged initiations absorbed per second and the honest handshakes
/// completed per second beside them.
#[test]
#[ignore = "benchmark: prints figures"]
fn honest_handshakes_per_second_under_a_forged_initiation_flood() {
    let config = Config { accept_unknown_peers: true, ..Config::default() };
    let start = Clock::now();
    let wall = || Instant::from_micros(1_000_000 + start.elapsed().as_micros() as u64);
    let mut r: Node<u32> = Node::new([1; 32], [2; 32], config, wall());
    let responder = r.public_key();
    let mut x = 0x1234_5678_u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut forged, mut honest, mut honest_tried) = (0u64, 0u64, 0u64);
    while start.elapsed().as_secs_f64() < 3.0 {
        for _ in 0..200 {
            let mut repr = overlay::wire::InitRepr {
                sender_index: next() as u32,
                static_key: overlay::PublicKey([0x11; 32].map(|b: u8| b ^ next() as u8)),
                ephemeral: [0x22; 32],
                timestamp_us: wall().micros,
                signature: [0x55; 64],
                mac1: [0; 16],
                mac2: [0; 16],
            };
            repr.mac1 = overlay::handshake::init_mac1(&responder, &repr.emit());
            r.handle_datagram(wall(), 1_000_000 + (next() % 100_000) as u32, &repr.emit());
            while r.poll_transmit().is_some() {}
            forged += 1;
        }
        // One honest newcomer: a fresh key from its own address, to completion or 20 rounds.
        honest_tried += 1;
        let endpoint = honest_tried as u32;
        let mut seed = [3u8; 32];
        seed[..8].copy_from_slice(&honest_tried.to_le_bytes());
        let mut h: Node<u32> = Node::new(seed, seed, Config::default(), wall());
        let _ = h.add_peer(wall(), 0, responder);
        for _ in 0..20 {
            let mut moved = 0;
            while let Some((_, d)) = h.poll_transmit() {
                r.handle_datagram(wall(), endpoint, &d);
                moved += 1;
            }
            while let Some((to, d)) = r.poll_transmit() {
                if to == endpoint {
                    h.handle_datagram(wall(), 0, &d);
                    moved += 1;
                }
            }
            if moved == 0 {
                break;
            }
        }
        if h.stats().handshakes_completed > 0 {
            honest += 1;
        }
        if let Some(p) = r.peer_by_key(&h.public_key()) {
            let _ = r.remove_peer(wall(), p);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let s = r.stats();
    println!(
        "overlay bench: under {:.0} forged initiations/s, {:.0} honest handshakes/s completed ({honest} of {honest_tried} newcomers); responder: {} cookie replies, {} rate-limited, {} dropped unauthenticated",
        forged as f64 / secs,
        honest as f64 / secs,
        s.cookie_replies_sent,
        s.dropped_rate_limited,
        s.dropped_unauthenticated
    );
    assert!(honest > 0, "no honest handshake completed under the flood");
}
