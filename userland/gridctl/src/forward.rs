//! `gridctl forward LOCALPORT NODE:PORT`: a local TCP port whose connections are carried
//! to `[node's overlay address]:PORT` over gridctl's own overlay stack, for users who
//! cannot create a TUN interface (no root). One thread drives the overlay stack and
//! every connection, without blocking: the local sockets are non-blocking.
//!
//! Bounds: at most [`CONNECTIONS_MAX`] forwarded connections at once (more are closed at
//! once), each with fixed socket buffers; a connection whose overlay side does not
//! connect within the timeout is closed.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use overlay::node::Config;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv6Address};

use hostnet::Stack;
use crate::target::Target;
use crate::{bail, hex, Context, Error, Result};

/// Forwarded connections at once.
pub const CONNECTIONS_MAX: usize = 16;
const BUFFER_BYTES: usize = 64 << 10;
const POLL_SLICE: Duration = Duration::from_millis(5);

/// Parses `NODE:PORT` where NODE is `KEY@HOST:UDPPORT` (or `KEY@HOST`): the last
/// `:PORT` is the overlay TCP port.
pub fn parse_destination(s: &str) -> Result<(Target, u16)> {
    let Some((node, port)) = s.trim().rsplit_once(':') else { bail!("{s:?} is not NODE:PORT") };
    let Ok(port) = port.parse::<u16>() else { bail!("{port:?} is not a TCP port") };
    if port == 0 {
        bail!("port 0 is not a destination");
    }
    Ok((Target::parse(node)?, port))
}

struct Forwarded {
    local: TcpStream,
    remote: SocketHandle,
    opened: Instant,
    /// Bytes read from the local side not yet taken by the overlay socket.
    pending: Vec<u8>,
    local_eof: bool,
}

/// Accepts on `listener` and forwards each connection to `[target]:port` until `stop`
/// is set. Returns an error only if the overlay link cannot be made or breaks.
pub fn run(listener: TcpListener, target: &Target, port: u16, timeout: Duration, stop: &AtomicBool, log: &mut dyn Write) -> Result<()> {
    listener.set_nonblocking(true).context(|| "cannot make the listener non-blocking".into())?;
    let socket = UdpSocket::bind(if target.endpoint.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
        .context(|| "cannot open a UDP socket".into())?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context(|| "no randomness".into())?;
    let mut stack = Stack::new(seed, socket, Config { accept_unknown_peers: false, ..Config::default() })
        .context(|| "cannot start the overlay".into())?;
    if let Err(e) = stack.add_peer(target.endpoint, target.key) {
        bail!("cannot add the node as an overlay peer: {e:?}");
    }
    let address = overlay::Address(target.overlay_address());
    let deadline = Instant::now() + timeout;
    while !stack.has_route(&address) {
        if Instant::now() >= deadline {
            bail!("no overlay link to node {}.. at {} within {} s", hex(&target.key[..8]), target.endpoint, timeout.as_secs());
        }
        stack.poll(POLL_SLICE).context(|| "overlay socket".into())?;
    }
    let _ = writeln!(log, "forwarding {} to [{}]:{port}", listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        crate::address_string(&address.0));
    let remote = IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::from_octets(address.0)), port);
    let mut conns: Vec<Forwarded> = Vec::new();
    let mut next_port: u16 = 49152;
    while !stop.load(Ordering::Relaxed) {
        accept(&listener, &mut stack, &mut conns, remote, &mut next_port, timeout, log)?;
        stack.poll(POLL_SLICE).context(|| "overlay socket".into())?;
        conns.retain_mut(|c| pump(&mut stack, c, timeout));
    }
    for c in conns {
        stack.sockets.get_mut::<tcp::Socket>(c.remote).abort();
    }
    let _ = stack.poll(POLL_SLICE);
    Ok(())
}

fn accept(
    listener: &TcpListener,
    stack: &mut Stack,
    conns: &mut Vec<Forwarded>,
    remote: IpEndpoint,
    next_port: &mut u16,
    timeout: Duration,
    log: &mut dyn Write,
) -> Result<()> {
    loop {
        let (local, from) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(Error(format!("accept: {e}"))),
        };
        if conns.len() >= CONNECTIONS_MAX {
            let _ = writeln!(log, "refused {from}: {CONNECTIONS_MAX} connections are forwarded already");
            continue;
        }
        if local.set_nonblocking(true).is_err() {
            continue;
        }
        let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; BUFFER_BYTES]), tcp::SocketBuffer::new(vec![0; BUFFER_BYTES]));
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(timeout.as_secs().max(1))));
        *next_port = if *next_port >= 65000 { 49152 } else { *next_port + 1 };
        if socket.connect(stack.iface.context(), remote, *next_port).is_err() {
            continue;
        }
        let handle = stack.sockets.add(socket);
        conns.push(Forwarded { local, remote: handle, opened: Instant::now(), pending: Vec::new(), local_eof: false });
    }
}

/// Moves bytes both ways; false when the connection is over (its socket removed).
fn pump(stack: &mut Stack, c: &mut Forwarded, timeout: Duration) -> bool {
    let s = stack.sockets.get_mut::<tcp::Socket>(c.remote);
    let established = s.may_send() || s.may_recv();
    if !established && s.state() == tcp::State::SynSent && c.opened.elapsed() > timeout {
        s.abort();
    }
    // Overlay -> local.
    let mut alive = true;
    while s.can_recv() {
        let result = s.recv(|data| match c.local.write(data) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match result {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => break,
        }
    }
    if !s.may_recv() && !s.can_recv() && established {
        let _ = c.local.shutdown(std::net::Shutdown::Write);
    }
    // Local -> overlay.
    if s.may_send() {
        if c.pending.is_empty() && !c.local_eof {
            let mut buf = [0u8; 16 << 10];
            match c.local.read(&mut buf) {
                Ok(0) => c.local_eof = true,
                Ok(n) => c.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    s.abort();
                    alive = false;
                }
            }
        }
        if !c.pending.is_empty() {
            if let Ok(n) = s.send_slice(&c.pending) {
                c.pending.drain(..n);
            }
        }
        if c.local_eof && c.pending.is_empty() {
            s.close();
        }
    }
    let finished = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) && !s.can_recv();
    if finished || !alive {
        stack.sockets.remove(c.remote);
        return false;
    }
    true
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn destinations() {
        let key = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
        let (t, port) = parse_destination(&format!("{key}@127.0.0.1:7443:8080")).expect("ok");
        assert_eq!((t.endpoint.port(), port), (7443, 8080));
        assert!(parse_destination(&format!("{key}@127.0.0.1:7443")).is_ok_and(|(t, p)| p == 7443 && t.endpoint.port() == 7443));
        assert!(parse_destination("nonsense").is_err());
        assert!(parse_destination(&format!("{key}@127.0.0.1:7443:0")).is_err());
        assert!(parse_destination(&format!("{key}@127.0.0.1:7443:x")).is_err());
    }
}
