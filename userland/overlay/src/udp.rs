//! Host helper (feature `std`): drives a `Node<SocketAddr>` over one `std::net::UdpSocket`.
//!
//! This is the only place in the crate that touches a clock or a socket; it exists for the
//! host CLI and for loopback tests. Time is wall-clock microseconds since the Unix epoch, as
//! in the kernel and gridctl: responders refuse initiations whose timestamp is too far from
//! their own clock (see `node`), so every host of one overlay must use that epoch.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::vec::Vec;

use crate::node::Node;
use crate::time::Instant;

/// Largest datagram read from the socket.
pub const MAX_DATAGRAM_LEN: usize = 2048;

/// A socket plus the clock the node is driven with.
pub struct UdpDriver {
    socket: UdpSocket,
    buf: Vec<u8>,
}

impl UdpDriver {
    /// Wraps a bound socket.
    pub fn new(socket: UdpSocket) -> UdpDriver {
        UdpDriver { socket, buf: std::vec![0; MAX_DATAGRAM_LEN] }
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Now, on the node's clock (wall-clock microseconds).
    pub fn now(&self) -> Instant {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Instant::from_micros(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }

    fn flush(&mut self, node: &mut Node<SocketAddr>) -> io::Result<()> {
        // Bounded by the node's transmit queue capacity.
        while let Some((to, bytes)) = node.poll_transmit() {
            self.socket.send_to(&bytes, to)?;
        }
        Ok(())
    }

    /// Sends what the node queued, waits up to `max_wait` (or the node's next timer) for one
    /// datagram, feeds it in, runs due timers and sends again.
    pub fn poll_once(&mut self, node: &mut Node<SocketAddr>, max_wait: std::time::Duration) -> io::Result<()> {
        self.flush(node)?;
        let now = self.now();
        let until_timer = node.poll_timeout().map(|t| std::time::Duration::from_micros(t.saturating_since(now).micros));
        let wait = until_timer.map_or(max_wait, |d| d.min(max_wait)).max(std::time::Duration::from_millis(1));
        self.socket.set_read_timeout(Some(wait))?;
        match self.socket.recv_from(&mut self.buf) {
            Ok((len, from)) => {
                let now = self.now();
                let datagram = self.buf.get(..len).unwrap_or(&[]);
                node.handle_datagram(now, from, datagram);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
        let now = self.now();
        if node.poll_timeout().is_some_and(|t| t <= now) {
            node.handle_timeout(now);
        }
        self.flush(node)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::node::{Config, Event};

    #[test]
    fn two_nodes_over_loopback_udp() {
        let mut d0 = UdpDriver::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let mut d1 = UdpDriver::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let now = d0.now();
        let mut n0: Node<SocketAddr> = Node::new([1; 32], [2; 32], Config::default(), now);
        let mut n1: Node<SocketAddr> = Node::new([3; 32], [4; 32], Config::default(), d1.now());
        n0.add_peer(now, d1.local_addr().unwrap(), n1.public_key()).unwrap();
        n1.add_peer(d1.now(), d0.local_addr().unwrap(), n0.public_key()).unwrap();
        let mut got = None;
        let mut sent = false;
        for _ in 0..400 {
            d0.poll_once(&mut n0, std::time::Duration::from_millis(5)).unwrap();
            d1.poll_once(&mut n1, std::time::Duration::from_millis(5)).unwrap();
            while let Some(Event::LinkUp { .. }) = n0.poll_event() {}
            if !sent && n0.router().next_hop(&n1.address()).is_some() {
                let packet = crate::wire::ipv6_packet(n0.address(), n1.address(), b"over udp");
                sent = n0.send(d0.now(), n1.address(), &packet).is_ok();
            }
            if let Some(d) = n1.poll_deliver() {
                got = d.packet.get(crate::wire::IPV6_HEADER_LEN..).map(<[u8]>::to_vec);
                break;
            }
        }
        assert_eq!(got.as_deref(), Some(&b"over udp"[..]));
    }
}
