//! The host stack's packet mode (what `gridctl overlay up` carries between its TUN
//! interface and the overlay), two stacks on loopback UDP: an IPv6 packet sent by one
//! arrives whole at the other, sealed end to end on the way; a packet whose source is not
//! the sender's overlay address, or that is not IPv6, never enters the overlay; and the
//! linked peers are listed with their keys.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use hostnet::stack::{PacketError, Stack};
use overlay::node::Config;

fn stack(seed: u8) -> Stack {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut stack = Stack::new([seed; 32], socket, Config { accept_unknown_peers: true, ..Config::default() }).expect("stack");
    stack.deliver_packets_to_host();
    stack
}

/// An ICMPv6-looking packet from `src` to `dst` with `payload`.
fn packet(src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(payload.len()).expect("len").to_be_bytes());
    p.extend_from_slice(&[58, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

#[test]
fn packets_cross_between_two_stacks_and_foreign_ones_stay_out() {
    let mut a = stack(1);
    let mut b = stack(2);
    let b_key = overlay::Identity::from_seed([2; 32]).public_key().0;
    a.add_peer(b.local_addr().expect("addr"), b_key).expect("peer");
    let (a_addr, b_addr) = (a.address().0, b.address().0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.has_route(&b.address()) && Instant::now() < deadline {
        a.poll(Duration::from_millis(5)).expect("poll a");
        b.poll(Duration::from_millis(5)).expect("poll b");
    }
    assert!(a.has_route(&b.address()), "no link");
    assert_eq!(a.linked_peers(), vec![(b.address(), b_key)]);

    // Refused at the door: foreign source, not IPv6, too short.
    assert_eq!(a.send_packet(&packet(b_addr, b_addr, b"x")), Err(PacketError::ForeignSource));
    let mut v4 = packet(a_addr, b_addr, b"x");
    v4[0] = 0x45;
    assert_eq!(a.send_packet(&v4), Err(PacketError::NotIpv6));
    assert_eq!(a.send_packet(&[0x60; 20]), Err(PacketError::NotIpv6));
    // Not an overlay destination (a link-local multicast the host sends on any interface).
    let mut multicast = [0u8; 16];
    multicast[..2].copy_from_slice(&[0xff, 0x02]);
    assert!(matches!(a.send_packet(&packet(a_addr, multicast, b"x")), Err(PacketError::Overlay(_))));

    let sent = packet(a_addr, b_addr, b"hello through the overlay");
    let mut got = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent_once = false;
    while got.is_none() && Instant::now() < deadline {
        if !sent_once {
            sent_once = a.send_packet(&sent).is_ok();
        }
        a.poll(Duration::from_millis(5)).expect("poll a");
        b.poll(Duration::from_millis(5)).expect("poll b");
        got = b.take_packet();
    }
    assert_eq!(got.as_deref(), Some(&sent[..]), "the packet did not arrive whole");
    assert!(a.take_packet().is_none());
}

/// A flood towards a host whose TUN side does not read: the packets waiting for it stay
/// within the stack's queue bound, and the rest are dropped and counted, not buffered.
#[test]
fn packets_waiting_for_the_host_are_bounded() {
    let mut a = stack(3);
    let mut b = stack(4);
    let b_key = overlay::Identity::from_seed([4; 32]).public_key().0;
    a.add_peer(b.local_addr().expect("addr"), b_key).expect("peer");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.has_route(&b.address()) && Instant::now() < deadline {
        a.poll(Duration::from_millis(5)).expect("poll a");
        b.poll(Duration::from_millis(5)).expect("poll b");
    }
    assert!(a.has_route(&b.address()), "no link");
    let flood = 3000;
    let mut sent = 0;
    for i in 0..flood {
        let p = packet(a.address().0, b.address().0, format!("packet {i}").as_bytes());
        sent += usize::from(a.send_packet(&p).is_ok());
        if i % 64 == 0 {
            a.poll(Duration::ZERO).expect("poll a");
            b.poll(Duration::ZERO).expect("poll b");
        }
    }
    for _ in 0..200 {
        a.poll(Duration::ZERO).expect("poll a");
        b.poll(Duration::from_millis(2)).expect("poll b");
    }
    let mut waiting = 0;
    while b.take_packet().is_some() {
        waiting += 1;
    }
    assert!(waiting > 0 && waiting <= 1024, "{waiting} packets waited for the host");
    assert!(b.dropped_packets > 0, "{sent} sent, {waiting} kept, none counted as dropped");
}
