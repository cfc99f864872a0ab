//! The host network stack: an `overlay::Node<SocketAddr>` over one std `UdpSocket`, and a
//! smoltcp interface (medium IP, the overlay address as `fd67::/16`) whose packets go
//! through the node, as `kernel/src/overlay.rs` and `kernel/src/net/overlay_device.rs`
//! do in the kernel.
//!
//! Clock: wall-clock microseconds since the Unix epoch, for both the node and smoltcp
//! (like the kernel). `overlay::udp::UdpDriver` counts from the driver's creation instead,
//! which breaks a CLI: handshake initiations carry `now` as a freshness stamp and a node
//! drops an initiation from a key whose stamp is not above the last one it saw from that
//! key, so the second `gridctl` run with the same key would be ignored (for a configured
//! peer, until the node reboots). So this module drives the node itself; it reads every
//! queued datagram per poll, where `UdpDriver` reads one.
//!
//! Polling order per [`Stack::poll`]: timers, deliveries into smoltcp, smoltcp, its packets
//! into the node, the node's datagrams out; then wait (bounded) for datagrams and repeat.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use overlay::node::{Config, Node};
use overlay::time::Instant;
use overlay::{Address, PublicKey};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv6Address};

/// Overlay MTU, as in the kernel (`overlay::wire::OVERLAY_MTU_BYTES`): overlay packets
/// plus their encapsulation fit a 1500-byte underlay.
pub const MTU_BYTES: usize = overlay::wire::OVERLAY_MTU_BYTES;
/// Packets queued in each direction between smoltcp and the node; more are dropped.
const QUEUE_PACKETS_MAX: usize = 1024;
/// Largest underlay datagram read.
const DATAGRAM_BYTES_MAX: usize = 2048;
/// Datagrams read per poll at most, so a flood cannot starve the rest of the loop.
const DATAGRAMS_PER_POLL_MAX: usize = 512;
/// Receive buffer asked of the UDP socket. The node sends a TCP window (its 128 KiB send
/// buffer: about a hundred overlay datagrams) at once; Linux's default buffer (208 KiB
/// of kernel accounting, about 90 such datagrams) drops the tail of every burst while a
/// debug build decrypts, and each loss stalls a download in retransmission back-off.
/// The system caps it at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER_BYTES: usize = 4 << 20;

/// Now, as the overlay sees it: Unix microseconds.
pub fn wall_clock() -> Instant {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Instant::from_micros(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

fn smol_instant(t: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(t.micros).unwrap_or(i64::MAX))
}

/// Queues between smoltcp and the node.
#[derive(Default)]
pub struct QueueDevice {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

/// A received packet.
pub struct QueueRxToken(Vec<u8>);
/// Room for a packet to send.
pub struct QueueTxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for QueueRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for QueueTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0u8; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = QueueRxToken;
    type TxToken<'a> = QueueTxToken<'a>;

    fn receive(&mut self, _timestamp: smoltcp::time::Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.outgoing.len() >= QUEUE_PACKETS_MAX {
            return None;
        }
        let packet = self.incoming.pop_front()?;
        Some((QueueRxToken(packet), QueueTxToken(&mut self.outgoing)))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        (self.outgoing.len() < QUEUE_PACKETS_MAX).then_some(QueueTxToken(&mut self.outgoing))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU_BYTES;
        caps
    }
}

/// Destination address of an IPv6 packet.
fn ipv6_destination(packet: &[u8]) -> Option<Address> {
    let mut a = [0u8; 16];
    a.copy_from_slice(packet.get(24..40)?);
    (packet.first()? >> 4 == 6).then_some(Address(a))
}

/// Overlay node, underlay socket and overlay TCP/IP interface, driven together.
pub struct Stack {
    node: Node<SocketAddr>,
    socket: UdpSocket,
    /// The overlay interface.
    pub iface: Interface,
    device: QueueDevice,
    /// smoltcp sockets on the overlay interface.
    pub sockets: SocketSet<'static>,
    buf: Vec<u8>,
    /// Overlay packets dropped (no route, queue full) — for diagnostics.
    pub dropped_packets: u64,
    /// In packet mode ([`Stack::deliver_packets_to_host`]): packets delivered to us, for
    /// the host's TUN interface, instead of smoltcp's.
    host_packets: Option<VecDeque<Vec<u8>>>,
}

/// Why [`Stack::send_packet`] did not send a packet from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// Not an IPv6 packet, or shorter than its header.
    NotIpv6,
    /// Its source is not our overlay address (the overlay would not carry it).
    ForeignSource,
    /// The overlay refused it (no route yet, not an overlay destination, too large...).
    Overlay(overlay::NodeError),
}

fn random_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(seed)
}

impl Stack {
    /// A stack with the overlay identity `identity_seed` on `socket` (bound already).
    pub fn new(identity_seed: [u8; 32], socket: UdpSocket, config: Config) -> io::Result<Stack> {
        // Best effort: a smaller buffer only makes large transfers slower.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, UDP_RECEIVE_BUFFER_BYTES);
        let now = wall_clock();
        let node = Node::new(identity_seed, random_seed()?, config, now);
        let mut device = QueueDevice::default();
        let mut iface_config = IfaceConfig::new(HardwareAddress::Ip);
        iface_config.random_seed = u64::from_le_bytes(random_seed()?[..8].try_into().unwrap_or_default());
        let mut iface = Interface::new(iface_config, &mut device, smol_instant(now));
        let address = Ipv6Address::from_octets(node.address().0);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(address), overlay::address::PREFIX_LEN_BITS));
        });
        Ok(Stack {
            node,
            socket,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            buf: vec![0; DATAGRAM_BYTES_MAX],
            dropped_packets: 0,
            host_packets: None,
        })
    }

    /// The overlay node.
    pub fn node(&self) -> &Node<SocketAddr> {
        &self.node
    }

    /// Our overlay address.
    pub fn address(&self) -> Address {
        self.node.address()
    }

    /// The underlay socket's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Adds a peer to handshake with.
    pub fn add_peer(&mut self, endpoint: SocketAddr, key: [u8; 32]) -> std::result::Result<(), overlay::NodeError> {
        self.node.add_peer(wall_clock(), endpoint, PublicKey(key)).map(|_| ())
    }

    /// True once packets to `address` have a next hop.
    pub fn has_route(&self, address: &Address) -> bool {
        self.node.router().next_hop(address).is_some()
    }

    /// Runs everything that is due without waiting.
    fn pump(&mut self) -> io::Result<()> {
        let now = wall_clock();
        if self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
        }
        while let Some(delivery) = self.node.poll_deliver() {
            let queue = self.host_packets.as_mut().unwrap_or(&mut self.device.incoming);
            if queue.len() < QUEUE_PACKETS_MAX {
                queue.push_back(delivery.packet);
            } else {
                self.dropped_packets += 1;
            }
        }
        // Bounded: each round consumes queued packets or produces at most a window.
        for _ in 0..4 {
            let _ = self.iface.poll(smol_instant(now), &mut self.device, &mut self.sockets);
            if self.device.outgoing.is_empty() {
                break;
            }
            for packet in self.device.outgoing.drain(..) {
                let sent = ipv6_destination(&packet).map(|dst| self.node.send(now, dst, &packet));
                if !matches!(sent, Some(Ok(()))) {
                    self.dropped_packets += 1;
                }
            }
            self.flush()?;
        }
        while let Some(event) = self.node.poll_event() {
            let _ = event;
        }
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        while let Some((to, datagram)) = self.node.poll_transmit() {
            if let Err(e) = self.socket.send_to(&datagram, to) {
                // A full socket buffer or an unreachable peer loses the datagram, as a
                // link would; the overlay and TCP above retransmit.
                if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// How long nothing needs doing, capped by `max_wait`.
    pub fn idle_for(&mut self, max_wait: Duration) -> Duration {
        let now = wall_clock();
        let mut wait = max_wait;
        if let Some(t) = self.node.poll_timeout() {
            wait = wait.min(Duration::from_micros(t.saturating_since(now).micros));
        }
        if let Some(d) = self.iface.poll_delay(smol_instant(now), &self.sockets) {
            wait = wait.min(Duration::from_micros(d.total_micros()));
        }
        if !self.device.incoming.is_empty() {
            wait = Duration::ZERO;
        }
        wait
    }

    /// One round: does what is due, waits at most `max_wait` for underlay datagrams,
    /// feeds them all to the node and does what is due again.
    pub fn poll(&mut self, max_wait: Duration) -> io::Result<()> {
        self.pump()?;
        let wait = self.idle_for(max_wait);
        let mut received = 0;
        if wait > Duration::ZERO {
            self.socket.set_read_timeout(Some(wait))?;
            received += self.receive_one()?;
        }
        if received > 0 || wait == Duration::ZERO {
            self.socket.set_nonblocking(true)?;
            let result = (|| {
                while received < DATAGRAMS_PER_POLL_MAX {
                    if self.receive_one()? == 0 {
                        break;
                    }
                    received += 1;
                }
                Ok::<_, io::Error>(())
            })();
            self.socket.set_nonblocking(false)?;
            result?;
        }
        self.pump()
    }

    /// Packet mode, for a host TUN interface (`gridctl overlay up`): from now on packets
    /// the overlay delivers to us wait in a queue (at most [`QUEUE_PACKETS_MAX`]; more are
    /// dropped and counted) for [`Stack::take_packet`] instead of going to smoltcp.
    pub fn deliver_packets_to_host(&mut self) {
        self.host_packets.get_or_insert_with(VecDeque::new);
    }

    /// The next packet delivered to us (packet mode).
    pub fn take_packet(&mut self) -> Option<Vec<u8>> {
        self.host_packets.as_mut()?.pop_front()
    }

    /// Sends an IPv6 packet from the host (packet mode) into the overlay, sealed to its
    /// destination. Its source must be our overlay address.
    pub fn send_packet(&mut self, packet: &[u8]) -> Result<(), PacketError> {
        if packet.len() < 40 || packet[0] >> 4 != 6 {
            return Err(PacketError::NotIpv6);
        }
        if packet[8..24] != self.node.address().0 {
            return Err(PacketError::ForeignSource);
        }
        let destination = ipv6_destination(packet).ok_or(PacketError::NotIpv6)?;
        let sent = self.node.send(wall_clock(), destination, packet).map_err(PacketError::Overlay);
        // Best effort: a datagram the socket refuses is lost as on a link.
        let _ = self.flush();
        sent
    }

    /// The underlay socket (to wait on it together with other descriptors).
    pub fn underlay_socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Peers linked directly now: (overlay address, key).
    pub fn linked_peers(&self) -> Vec<(Address, [u8; 32])> {
        let mut out = Vec::new();
        for &(neighbour, _) in self.node.router().neighbours() {
            let peer = overlay::node::PeerId(neighbour);
            if let (true, Some(address), Some(key)) = (self.node.is_up(peer), self.node.peer_address(peer), self.node.peer_key(peer)) {
                out.push((address, key.0));
            }
        }
        out
    }

    /// Reads and handles one datagram if one comes (0 or 1).
    fn receive_one(&mut self) -> io::Result<usize> {
        match self.socket.recv_from(&mut self.buf) {
            Ok((len, from)) => {
                let datagram = self.buf.get(..len).unwrap_or(&[]);
                self.node.handle_datagram(wall_clock(), from, datagram);
                Ok(1)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(0),
            // ICMP port unreachable from an earlier send surfaces here on some systems.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(0),
            Err(e) => Err(e),
        }
    }
}
