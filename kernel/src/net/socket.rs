//! The socket API for kernel services: async TCP listen/accept/connect/read/write
//! and UDP send/receive over the shared smoltcp socket set.
//!
//! Every operation locks the stack briefly, registers the task's waker with the
//! smoltcp socket when it cannot proceed, and kicks the network task so that
//! queued data is transmitted without waiting for a timer.

use alloc::vec;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::task::Poll;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use super::{guard, with_stack, Network};

const TCP_BUFFER_BYTES: usize = 128 * 1024;
const UDP_PACKETS: usize = 64;
const UDP_BUFFER_BYTES: usize = 64 * 1024;
/// Datagrams a sender socket queues: as many as its bytes hold of full-size overlay
/// datagrams (about 1.4 KiB), so that a free slot mostly means room.
const SENDER_PACKETS: usize = 48;
/// Bytes a sender socket queues: a relayed burst beyond them waits in the overlay's
/// outbox (kernel/src/overlay.rs) until the stack has sent some.
const SENDER_BYTES: usize = 64 * 1024;
const LISTEN_BACKLOG: usize = 4;

/// Why a socket operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// No network interface is up.
    NoNetwork,
    /// The port is taken or invalid.
    AddressInUse,
    /// The remote end reset or the connection could not be made.
    ConnectionReset,
    /// The connection is closed for writing.
    Closed,
    /// The destination cannot be reached or the datagram is too large.
    Unreachable,
}

/// Runs `f` on the socket set of `network`.
fn with_set<R>(network: Network, f: impl FnOnce(&mut smoltcp::iface::SocketSet<'static>) -> R) -> Result<R, NetError> {
    with_stack(|s| s.sockets(network).map(f)).flatten().ok_or(NetError::NoNetwork)
}

fn new_tcp_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
    );
    s.set_nagle_enabled(false);
    guard::tune_connection(&mut s);
    s
}

/// A TCP listening port with a small backlog of listening sockets. The sockets live in
/// the stack ([`super::guard::Backlog`]), which recycles half-open ones by the node's
/// policy after every poll, whether or not the owner is accepting.
pub struct TcpListener {
    network: Network,
    id: u64,
}

/// What a backlog socket offers: a connection ready for `accept`, tuned as one and
/// replaced by a fresh listening socket.
fn take_ready(id: u64, waker: Option<&core::task::Waker>) -> Result<Option<SocketHandle>, NetError> {
    with_stack(|s| {
        let (backlog, set) = s.backlog(id).ok_or(NetError::NoNetwork)?;
        let port = backlog.port;
        let ready = backlog.slots.iter().position(|slot| guard::is_ready(set.get::<tcp::Socket>(slot.handle).state()));
        let Some(index) = ready else {
            if let Some(waker) = waker {
                for slot in &backlog.slots {
                    set.get_mut::<tcp::Socket>(slot.handle).register_recv_waker(waker);
                }
            }
            return Ok(None);
        };
        let replacement = listening_socket(set, port)?;
        let handle = core::mem::replace(&mut backlog.slots[index].handle, replacement);
        backlog.slots[index].half_open_since_ms = None;
        guard::tune_connection(set.get_mut::<tcp::Socket>(handle));
        Ok(Some(handle))
    })
    .unwrap_or(Err(NetError::NoNetwork))
}

impl TcpListener {
    /// Listens on `port` on every address of `network`.
    pub fn bind(network: Network, port: u16) -> Result<TcpListener, NetError> {
        let id = with_stack(|s| {
            let set = s.sockets(network).ok_or(NetError::NoNetwork)?;
            let mut handles = Vec::new();
            for _ in 0..LISTEN_BACKLOG {
                match listening_socket(set, port) {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        for h in handles {
                            set.remove(h);
                        }
                        return Err(e);
                    }
                }
            }
            Ok(s.add_backlog(network, port, handles))
        })
        .unwrap_or(Err(NetError::NoNetwork))?;
        Ok(TcpListener { network, id })
    }

    /// Waits for a connection.
    pub async fn accept(&mut self) -> Result<TcpStream, NetError> {
        let id = self.id;
        let handle = poll_fn(|cx| match take_ready(id, Some(cx.waker())) {
            Ok(Some(h)) => Poll::Ready(Ok(h)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        })
        .await?;
        Ok(TcpStream { network: self.network, handle })
    }

    /// A connection if one is waiting, without blocking (for wasm workloads, which poll
    /// from their own stacks).
    pub fn try_accept(&mut self) -> Result<Option<TcpStream>, NetError> {
        Ok(take_ready(self.id, None)?.map(|handle| TcpStream { network: self.network, handle }))
    }

    /// How many connections [`TcpListener::try_accept`] would hand out now.
    pub fn pending(&self) -> Result<usize, NetError> {
        with_stack(|s| {
            let (backlog, set) = s.backlog(self.id).ok_or(NetError::NoNetwork)?;
            Ok(backlog.slots.iter().filter(|slot| guard::is_ready(set.get::<tcp::Socket>(slot.handle).state())).count())
        })
        .unwrap_or(Err(NetError::NoNetwork))
    }
}

/// What a TCP connection could do now, without doing it.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    pub recv_bytes: usize,
    pub recv_eof: bool,
    pub send_bytes: usize,
    pub send_closed: bool,
    pub reset: bool,
}

fn listening_socket(set: &mut smoltcp::iface::SocketSet<'static>, port: u16) -> Result<SocketHandle, NetError> {
    let mut socket = new_tcp_socket();
    socket.listen(IpListenEndpoint { addr: None, port }).map_err(|_| NetError::AddressInUse)?;
    guard::tune_listening(&mut socket);
    Ok(set.add(socket))
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let id = self.id;
        with_stack(|s| s.remove_backlog(id));
    }
}

/// A TCP connection.
pub struct TcpStream {
    network: Network,
    handle: SocketHandle,
}

impl TcpStream {
    /// Connects to `remote` from an ephemeral port, over the overlay when `remote`
    /// is an overlay address and over the underlay otherwise.
    pub async fn connect(remote: IpEndpoint) -> Result<TcpStream, NetError> {
        let network = Network::for_address(remote.addr);
        let local_port = 49152 + (crate::entropy::u64() % 16384) as u16;
        let handle = with_stack(|s| {
            let mut socket = new_tcp_socket();
            let (iface, set) = s.parts(network).ok_or(NetError::NoNetwork)?;
            socket.connect(iface.context(), remote, local_port).map_err(|_| NetError::Unreachable)?;
            Ok(set.add(socket))
        })
        .unwrap_or(Err(NetError::NoNetwork))?;
        super::kick(network);
        let stream = TcpStream { network, handle };
        poll_fn(|cx| {
            with_set(network, |set| {
                let socket = set.get_mut::<tcp::Socket>(handle);
                match socket.state() {
                    tcp::State::Established => Poll::Ready(Ok(())),
                    tcp::State::Closed | tcp::State::TimeWait | tcp::State::Closing => {
                        Poll::Ready(Err(NetError::ConnectionReset))
                    }
                    _ => {
                        socket.register_send_waker(cx.waker());
                        Poll::Pending
                    }
                }
            })
            .unwrap_or_else(|e| Poll::Ready(Err(e)))
        })
        .await?;
        Ok(stream)
    }


    /// The peer's address and port (`None` once the connection is gone).
    pub fn remote(&self) -> Option<IpEndpoint> {
        with_set(self.network, |set| set.get::<tcp::Socket>(self.handle).remote_endpoint()).ok().flatten()
    }

    /// Aborts the connection (RST) instead of closing it: for a peer the node gives up on,
    /// so the socket does not wait in a close handshake the peer may stall.
    pub fn abort(&mut self) {
        let _ = with_set(self.network, |set| set.get_mut::<tcp::Socket>(self.handle).abort());
        super::kick(self.network);
    }

    /// Reads into `buf`; `Ok(0)` at end of stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        let (network, handle) = (self.network, self.handle);
        let result = poll_fn(|cx| {
            with_set(network, |set| {
                let socket = set.get_mut::<tcp::Socket>(handle);
                if socket.can_recv() {
                    return Poll::Ready(socket.recv_slice(buf).map_err(|_| NetError::ConnectionReset));
                }
                if !socket.may_recv() {
                    return Poll::Ready(if socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none() {
                        Err(NetError::ConnectionReset)
                    } else {
                        Ok(0)
                    });
                }
                socket.register_recv_waker(cx.waker());
                Poll::Pending
            })
            .unwrap_or_else(|e| Poll::Ready(Err(e)))
        })
        .await;
        // Reading opens the receive window: let the stack advertise it.
        super::kick(self.network);
        result
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), NetError> {
        let (network, handle) = (self.network, self.handle);
        while !data.is_empty() {
            let sent = poll_fn(|cx| {
                with_set(network, |set| {
                    let socket = set.get_mut::<tcp::Socket>(handle);
                    if !socket.may_send() {
                        return Poll::Ready(Err(NetError::Closed));
                    }
                    if socket.can_send() {
                        return Poll::Ready(socket.send_slice(data).map_err(|_| NetError::Closed));
                    }
                    socket.register_send_waker(cx.waker());
                    Poll::Pending
                })
                .unwrap_or_else(|e| Poll::Ready(Err(e)))
            })
            .await?;
            data = &data[sent..];
            super::kick(self.network);
        }
        Ok(())
    }

    /// Reads what has arrived, without blocking: `Some(0)` at end of stream, `None`
    /// when nothing is there yet.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        let result = with_set(self.network, |set| {
            let socket = set.get_mut::<tcp::Socket>(self.handle);
            if socket.can_recv() {
                return socket.recv_slice(buf).map(Some).map_err(|_| NetError::ConnectionReset);
            }
            if !socket.may_recv() {
                return if socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none() {
                    Err(NetError::ConnectionReset)
                } else {
                    Ok(Some(0))
                };
            }
            Ok(None)
        })?;
        if matches!(result, Ok(Some(n)) if n > 0) {
            super::kick(self.network);
        }
        result
    }

    /// What a read or write could do now (nothing is taken or sent).
    pub fn readiness(&self) -> Result<Readiness, NetError> {
        with_set(self.network, |set| {
            let socket = set.get_mut::<tcp::Socket>(self.handle);
            let recv_bytes = socket.recv_queue();
            let reset = socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none() && recv_bytes == 0;
            Readiness {
                recv_bytes,
                recv_eof: !socket.may_recv() && recv_bytes == 0,
                send_bytes: if socket.can_send() { socket.send_capacity() - socket.send_queue() } else { 0 },
                send_closed: !socket.may_send(),
                reset,
            }
        })
    }

    /// Queues a prefix of `data` without blocking: `None` when the send buffer is full.
    pub fn try_write(&mut self, data: &[u8]) -> Result<Option<usize>, NetError> {
        let result = with_set(self.network, |set| {
            let socket = set.get_mut::<tcp::Socket>(self.handle);
            if !socket.may_send() {
                return Err(NetError::Closed);
            }
            if !socket.can_send() {
                return Ok(None);
            }
            socket.send_slice(data).map(Some).map_err(|_| NetError::Closed)
        })?;
        if matches!(result, Ok(Some(n)) if n > 0) {
            super::kick(self.network);
        }
        result
    }

    /// Closes the sending half (FIN); reads may continue.
    pub fn shutdown(&mut self) {
        let _ = with_set(self.network, |set| set.get_mut::<tcp::Socket>(self.handle).close());
        super::kick(self.network);
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let (network, handle) = (self.network, self.handle);
        with_stack(|s| {
            if let Some(set) = s.sockets(network) {
                set.get_mut::<tcp::Socket>(handle).close();
            }
            s.close_later(network, handle);
        });
        super::kick(self.network);
    }
}

/// What became of a datagram handed to [`UdpSocket::send_or_full`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Queued,
    /// The send buffer is full: try again once the stack has sent.
    Full,
    /// No route or address to send it to: retrying would not help.
    Unreachable,
}

/// An unbound UDP socket with no buffers: it never receives (see `net::init`).
pub(crate) fn placeholder_udp() -> udp::Socket<'static> {
    udp::Socket::new(udp::PacketBuffer::new(Vec::new(), Vec::new()), udp::PacketBuffer::new(Vec::new(), Vec::new()))
}

/// A UDP socket.
pub struct UdpSocket {
    network: Network,
    handle: SocketHandle,
}

impl UdpSocket {
    /// Binds `port` on every address of `network`.
    pub fn bind(network: Network, port: u16) -> Result<UdpSocket, NetError> {
        Self::bind_with_receive_queue(network, port, UDP_PACKETS, UDP_BUFFER_BYTES)
    }

    /// Like [`UdpSocket::bind`], with room for `packets` datagrams (`bytes` in all)
    /// waiting to be read: a socket that carries TCP windows for others (the overlay's)
    /// must hold a whole window's burst, or it drops packets and TCP falls back to
    /// retransmission timeouts.
    pub fn bind_with_receive_queue(network: Network, port: u16, packets: usize, bytes: usize) -> Result<UdpSocket, NetError> {
        with_set(network, |set| {
            let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
            let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; UDP_PACKETS], vec![0; UDP_BUFFER_BYTES]);
            let mut socket = udp::Socket::new(rx, tx);
            socket.bind(port).map_err(|_| NetError::AddressInUse)?;
            Ok(UdpSocket { network, handle: set.add(socket) })
        })?
    }

    /// Like [`UdpSocket::bind_with_receive_queue`] on the underlay, in the socket set's
    /// first slot (held since `net::init`), so that this socket, not a sender socket
    /// bound to the same port ([`UdpSocket::bind_sender`]), receives the port's
    /// datagrams: smoltcp gives a datagram to the first matching socket in slot order,
    /// and a sender made later in a lower freed slot used to take every incoming
    /// datagram into its small queue and drop bursts (relayed transfers then crawled
    /// through retransmission timeouts). Falls back to any slot if the first is taken.
    pub fn bind_first(port: u16, packets: usize, bytes: usize) -> Result<UdpSocket, NetError> {
        let reserved = with_stack(|s| s.first_slot.take()).flatten();
        if let Some(handle) = reserved {
            with_set(Network::Underlay, |set| {
                set.remove(handle);
            })?;
        }
        let socket = Self::bind_with_receive_queue(Network::Underlay, port, packets, bytes)?;
        if reserved.is_some_and(|h| h != socket.handle) {
            log::warn!("net: the overlay socket did not get the first slot; bursts may be dropped");
        }
        Ok(socket)
    }

    /// A socket on `port` for sending: datagrams arriving on the port go to the
    /// first socket in the set that is bound to it, which may be this one (smoltcp
    /// reuses freed slots), so its owner must read it too. One per destination keeps a destination whose neighbour
    /// never answers from holding up datagrams to every other one (smoltcp sends
    /// a socket's datagrams in order).
    pub fn bind_sender(network: Network, port: u16) -> Result<UdpSocket, NetError> {
        with_set(network, |set| {
            let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 16 * 1024]);
            let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; SENDER_PACKETS], vec![0; SENDER_BYTES]);
            let mut socket = udp::Socket::new(rx, tx);
            socket.bind(port).map_err(|_| NetError::AddressInUse)?;
            Ok(UdpSocket { network, handle: set.add(socket) })
        })?
    }

    /// Takes one waiting datagram, if any, without blocking.
    pub fn try_recv_from(&mut self, buf: &mut [u8]) -> Option<(usize, IpEndpoint)> {
        with_set(self.network, |set| {
            let (data, meta) = set.get_mut::<udp::Socket>(self.handle).recv().ok()?;
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            Some((n, meta.endpoint))
        })
        .ok()
        .flatten()
    }

    /// Queues one datagram without blocking; `false` if the send buffer is full or
    /// the destination cannot be reached.
    pub fn try_send_to(&mut self, data: &[u8], to: IpEndpoint) -> bool {
        let sent = with_set(self.network, |set| set.get_mut::<udp::Socket>(self.handle).send_slice(data, to).is_ok())
            .unwrap_or(false);
        super::kick(self.network);
        sent
    }

    /// Queues one datagram without blocking, telling a full send buffer (worth retrying
    /// once the stack has sent some) from a destination that cannot be reached.
    pub fn send_or_full(&mut self, data: &[u8], to: IpEndpoint) -> SendOutcome {
        let outcome = with_set(self.network, |set| match set.get_mut::<udp::Socket>(self.handle).send_slice(data, to) {
            Ok(()) => SendOutcome::Queued,
            Err(udp::SendError::BufferFull) => SendOutcome::Full,
            Err(udp::SendError::Unaddressable) => SendOutcome::Unreachable,
        })
        .unwrap_or(SendOutcome::Unreachable);
        super::kick(self.network);
        outcome
    }

    /// Whether the send buffer has a free datagram slot (its bytes may still be short:
    /// sender sockets size their slots to their bytes, see [`UdpSocket::bind_sender`]).
    pub fn can_send(&mut self) -> bool {
        with_set(self.network, |set| set.get::<udp::Socket>(self.handle).can_send()).unwrap_or(false)
    }

    /// Wakes `waker` when the send buffer has room again.
    pub fn register_send_waker(&mut self, waker: &core::task::Waker) {
        let _ = with_set(self.network, |set| set.get_mut::<udp::Socket>(self.handle).register_send_waker(waker));
    }

    /// Whether a datagram is waiting.
    pub fn can_recv(&mut self) -> bool {
        with_set(self.network, |set| set.get::<udp::Socket>(self.handle).can_recv()).unwrap_or(false)
    }

    /// Wakes `waker` when a datagram arrives.
    pub fn register_recv_waker(&mut self, waker: &core::task::Waker) {
        let _ = with_set(self.network, |set| set.get_mut::<udp::Socket>(self.handle).register_recv_waker(waker));
    }

    /// Receives one datagram into `buf` (truncated if larger); returns its length and sender.
    pub async fn recv_from(&mut self, buf: &mut [u8]) -> Result<(usize, IpEndpoint), NetError> {
        let (network, handle) = (self.network, self.handle);
        poll_fn(|cx| {
            with_set(network, |set| {
                let socket = set.get_mut::<udp::Socket>(handle);
                match socket.recv() {
                    Ok((data, meta)) => {
                        let n = data.len().min(buf.len());
                        buf[..n].copy_from_slice(&data[..n]);
                        Poll::Ready(Ok((n, meta.endpoint)))
                    }
                    Err(_) => {
                        socket.register_recv_waker(cx.waker());
                        Poll::Pending
                    }
                }
            })
            .unwrap_or_else(|e| Poll::Ready(Err(e)))
        })
        .await
    }

    /// Sends one datagram to `to`.
    pub async fn send_to(&mut self, data: &[u8], to: IpEndpoint) -> Result<(), NetError> {
        let (network, handle) = (self.network, self.handle);
        let result = poll_fn(|cx| {
            with_set(network, |set| {
                let socket = set.get_mut::<udp::Socket>(handle);
                match socket.send_slice(data, to) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(udp::SendError::BufferFull) => {
                        socket.register_send_waker(cx.waker());
                        Poll::Pending
                    }
                    Err(udp::SendError::Unaddressable) => Poll::Ready(Err(NetError::Unreachable)),
                }
            })
            .unwrap_or_else(|e| Poll::Ready(Err(e)))
        })
        .await;
        super::kick(self.network);
        result
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let handle = self.handle;
        let _ = with_set(self.network, |set| {
            set.remove(handle);
        });
    }
}
