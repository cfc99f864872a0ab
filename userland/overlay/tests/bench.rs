//! Benchmarks (run with `cargo test --release -p overlay --test bench -- --ignored --nocapture`):
//! complete handshakes per second between two nodes, and sealed-data throughput
//! through one link.

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
    let packet = overlay::wire::ipv6_packet(a.address(), dst, &[0x42u8; 1400 - overlay::wire::IPV6_HEADER_LEN]);
    let now = Instant::from_millis(2);
    let total_bytes = 64u64 << 20;
    let start = Clock::now();
    let mut sent = 0u64;
    while sent < total_bytes {
        for _ in 0..64 {
            a.send(now, dst, &packet).expect("send");
            sent += packet.len() as u64;
        }
        shuttle(&mut a, &mut b, now);
        while b.poll_deliver().is_some() {}
    }
    let sealed = sent as f64 / 1e6 / start.elapsed().as_secs_f64();
    println!("overlay bench: 1400-byte packets through one link {sealed:.0} MB/s (seal, then open and check, one core)");
}
