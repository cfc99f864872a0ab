//! A learning Ethernet switch in user space for a cluster's L2 segment.
//!
//! Each node's NIC is a QEMU `-netdev socket,udp=SWITCH,localaddr=PORT` tunnel: one
//! Ethernet frame per UDP datagram on 127.0.0.1. The switch learns which port each source
//! MAC sits behind, sends unicast frames only to their port, and floods broadcast,
//! multicast and not-yet-learned frames to every other port it has heard from, and to its
//! uplink: the port of node 0's user-network (slirp) tunnel, known from the start and never
//! forgotten, since slirp speaks only when the host sends through it (without it the nodes'
//! ARP requests for the host's 10.0.2.2 went nowhere until then).
//!
//! This replaces QEMU's socket-multicast segment, which loops every frame back to its
//! sender (`IP_MULTICAST_LOOP`) and delivers every frame to every node: node 0's hub then
//! handed each frame between its NIC and the host's user-network port twice, and every
//! node's CPU (under TCG) saw all the segment's traffic. Needs no root.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ports (QEMU NICs) the switch keeps at most; the least recently heard is forgotten.
const MAX_PORTS: usize = 256;
/// MAC addresses the switch keeps at most (several per port are allowed: node 0's hub
/// also holds the host's user-network port).
const MAX_MACS: usize = 1024;
/// A port or MAC not heard from for this long is forgotten (a killed node).
const IDLE: Duration = Duration::from_secs(30);
/// Largest frame carried (QEMU sends at most 69 KiB with offloads; ours are 1514 B).
const MAX_FRAME: usize = 70 * 1024;

/// A running switch; stops when dropped.
pub struct Switch {
    port: u16,
    uplink_port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Switch {
    /// Starts a switch on an ephemeral UDP port of 127.0.0.1, with an uplink port (a free
    /// UDP port of 127.0.0.1 for node 0's user-network tunnel to bind) it floods to from
    /// the start.
    pub fn start() -> Result<Switch, String> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("switch: cannot bind a UDP port: {e}"))?;
        let port = socket.local_addr().map_err(|e| format!("switch: {e}"))?.port();
        socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| format!("switch: {e}"))?;
        let uplink_port = free_local_udp_port()?;
        let uplink = SocketAddr::from(([127, 0, 0, 1], uplink_port));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("l2-switch".into())
            .spawn(move || run(socket, uplink, &flag))
            .map_err(|e| format!("switch: cannot start its thread: {e}"))?;
        Ok(Switch { port, uplink_port, stop, thread: Some(thread) })
    }

    /// The UDP port on 127.0.0.1 the uplink (node 0's user-network tunnel) binds.
    pub fn uplink_port(&self) -> u16 {
        self.uplink_port
    }

    /// The UDP port on 127.0.0.1 the nodes' NICs send to.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The forwarding state: which ports exist and where each MAC was last seen.
#[derive(Default)]
struct Table {
    ports: HashMap<SocketAddr, Instant>,
    macs: HashMap<[u8; 6], (SocketAddr, Instant)>,
    /// The uplink: a port from the start, never forgotten (its MACs still expire).
    uplink: Option<SocketAddr>,
}

impl Table {
    /// Records that `from` sent a frame with source `mac`; returns where `dst` goes:
    /// `Some(port)` for a learned unicast MAC, `None` to flood.
    fn learn_and_route(&mut self, from: SocketAddr, src: [u8; 6], dst: [u8; 6], now: Instant) -> Option<SocketAddr> {
        if self.ports.len() >= MAX_PORTS && !self.ports.contains_key(&from) {
            self.forget_oldest_port();
        }
        self.ports.insert(from, now);
        let multicast_src = src[0] & 1 == 1;
        if !multicast_src {
            if self.macs.len() >= MAX_MACS && !self.macs.contains_key(&src) {
                self.macs.retain(|_, (_, seen)| now.duration_since(*seen) < IDLE);
                if self.macs.len() >= MAX_MACS {
                    self.macs.clear();
                }
            }
            self.macs.insert(src, (from, now));
        }
        if dst[0] & 1 == 1 {
            return None;
        }
        self.macs.get(&dst).map(|(port, _)| *port)
    }

    /// A table whose uplink is `uplink`.
    fn with_uplink(uplink: SocketAddr, now: Instant) -> Table {
        let mut t = Table { uplink: Some(uplink), ..Table::default() };
        t.ports.insert(uplink, now);
        t
    }

    fn forget_oldest_port(&mut self) {
        let uplink = self.uplink;
        if let Some(oldest) = self.ports.iter().filter(|(p, _)| Some(**p) != uplink).min_by_key(|(_, t)| **t).map(|(p, _)| *p) {
            self.ports.remove(&oldest);
            self.macs.retain(|_, (p, _)| *p != oldest);
        }
    }

    fn expire(&mut self, now: Instant) {
        let uplink = self.uplink;
        self.ports.retain(|p, seen| Some(*p) == uplink || now.duration_since(*seen) < IDLE);
        let ports = &self.ports;
        self.macs.retain(|_, (p, seen)| ports.contains_key(p) && now.duration_since(*seen) < IDLE);
    }
}

fn run(socket: UdpSocket, uplink: SocketAddr, stop: &AtomicBool) {
    let mut table = Table::with_uplink(uplink, Instant::now());
    let mut buf = vec![0u8; MAX_FRAME];
    let mut last_expiry = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now.duration_since(last_expiry) > Duration::from_secs(1) {
            table.expire(now);
            last_expiry = now;
        }
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue, // timeout (to check `stop`) or a transient error
        };
        if len < 14 {
            continue;
        }
        let frame = &buf[..len];
        let (dst, src) = (mac(&frame[0..6]), mac(&frame[6..12]));
        match table.learn_and_route(from, src, dst, now) {
            Some(port) if port == from => {} // both ends behind one port (node 0's hub)
            Some(port) => {
                let _ = socket.send_to(frame, port);
            }
            None => {
                for port in table.ports.keys().filter(|p| **p != from) {
                    let _ = socket.send_to(frame, port);
                }
            }
        }
    }
}

fn mac(bytes: &[u8]) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&bytes[..6]);
    m
}

/// A UDP port on 127.0.0.1 that was free a moment ago (for a NIC's end of the tunnel).
pub fn free_local_udp_port() -> Result<u16, String> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free UDP port: {e}"))
}

#[cfg(test)]
mod test {
    use super::*;

    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
    const BCAST: [u8; 6] = [0xff; 6];

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn unicast_goes_only_to_the_learned_port_and_broadcast_floods() {
        let mut t = Table::default();
        let now = Instant::now();
        assert_eq!(t.learn_and_route(addr(1), A, BCAST, now), None);
        assert_eq!(t.learn_and_route(addr(2), B, A, now), Some(addr(1)));
        assert_eq!(t.learn_and_route(addr(1), A, B, now), Some(addr(2)));
        // Unknown unicast floods.
        assert_eq!(t.learn_and_route(addr(1), A, [0x52, 0x54, 0, 0, 0, 9], now), None);
        assert_eq!(t.ports.len(), 2);
    }

    #[test]
    fn idle_ports_and_their_macs_are_forgotten_and_tables_stay_bounded() {
        let mut t = Table::default();
        let start = Instant::now();
        t.learn_and_route(addr(1), A, BCAST, start);
        t.learn_and_route(addr(2), B, BCAST, start + IDLE);
        t.expire(start + IDLE + Duration::from_secs(1));
        assert!(!t.ports.contains_key(&addr(1)) && !t.macs.contains_key(&A));
        assert!(t.ports.contains_key(&addr(2)) && t.macs.contains_key(&B));
        for i in 0..(MAX_PORTS as u16 + 10) {
            let m = [0x52, 0x54, 1, 0, (i >> 8) as u8, i as u8];
            t.learn_and_route(addr(1000 + i), m, BCAST, start + IDLE);
        }
        assert!(t.ports.len() <= MAX_PORTS && t.macs.len() <= MAX_MACS);
    }

    #[test]
    fn the_uplink_gets_floods_before_it_speaks_and_is_never_forgotten() {
        let start = Instant::now();
        let mut t = Table::with_uplink(addr(7), start);
        // A node's first broadcast (an ARP request for the host) floods to the uplink.
        assert_eq!(t.learn_and_route(addr(1), A, BCAST, start), None);
        assert!(t.ports.contains_key(&addr(7)));
        t.expire(start + 10 * IDLE);
        assert!(t.ports.contains_key(&addr(7)) && !t.ports.contains_key(&addr(1)));
        for i in 0..(MAX_PORTS as u16 + 10) {
            let m = [0x52, 0x54, 1, 0, (i >> 8) as u8, i as u8];
            t.learn_and_route(addr(1000 + i), m, BCAST, start + IDLE + Duration::from_millis(u64::from(i)));
        }
        assert!(t.ports.contains_key(&addr(7)) && t.ports.len() <= MAX_PORTS);
        // On a real switch: a broadcast reaches a socket bound to the uplink port that never sent.
        let sw = Switch::start().expect("switch");
        let up = UdpSocket::bind(("127.0.0.1", sw.uplink_port())).expect("uplink");
        up.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let a = UdpSocket::bind("127.0.0.1:0").expect("a");
        a.send_to(&[&BCAST[..], &A[..], &[0x08, 0x06, 1][..]].concat(), addr(sw.port())).expect("send");
        let mut buf = [0u8; 64];
        assert!(up.recv_from(&mut buf).is_ok(), "the uplink did not get the broadcast");
    }

    #[test]
    fn frames_cross_a_real_switch_without_echo_to_the_sender() {
        let sw = Switch::start().expect("switch");
        let a = UdpSocket::bind("127.0.0.1:0").expect("a");
        let b = UdpSocket::bind("127.0.0.1:0").expect("b");
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        }
        let to = addr(sw.port());
        let frame = |dst: [u8; 6], src: [u8; 6]| [&dst[..], &src[..], &[0x86, 0xdd, 1, 2, 3][..]].concat();
        // b announces itself; a broadcasts; b gets it, a gets no echo.
        b.send_to(&frame(BCAST, B), to).expect("send");
        std::thread::sleep(Duration::from_millis(100));
        a.send_to(&frame(BCAST, A), to).expect("send");
        let mut buf = [0u8; 64];
        let (n, _) = b.recv_from(&mut buf).expect("b receives the broadcast");
        assert_eq!(&buf[6..12], &A, "{:?}", &buf[..n]);
        assert!(a.recv_from(&mut buf).is_err(), "the sender got its own frame back");
        // Unicast a -> b reaches b only.
        a.send_to(&frame(B, A), to).expect("send");
        assert!(b.recv_from(&mut buf).is_ok());
        assert!(a.recv_from(&mut buf).is_err());
    }
}
