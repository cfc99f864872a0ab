//! A plain TCP connection to a port on a node's overlay address, over gridctl's host
//! overlay stack (`hostnet::Stack`): what `gridctl node metrics` uses to GET `/metrics`
//! (any HTTP-speaking service on the overlay can be reached the same way).
//!
//! Every wait is bounded by the timeout: the link, the connect, and silence while
//! exchanging bytes. Received bytes are bounded by the caller's limit.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use overlay::node::Config;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv6Address};

use hostnet::Stack;
use crate::target::Target;
use crate::{address_string, bail, hex, Context, Error, Result};

const POLL_SLICE: Duration = Duration::from_millis(20);
const TCP_BUFFER_BYTES: usize = 256 << 10;

/// An open TCP connection to `[node]:port` on the overlay.
pub struct OverlayTcp {
    stack: Stack,
    tcp: SocketHandle,
    timeout: Duration,
}

impl OverlayTcp {
    /// Links to `target` with a fresh overlay identity and connects to `port` on its
    /// overlay address.
    pub fn connect(target: &Target, port: u16, timeout: Duration) -> Result<OverlayTcp> {
        let bind: SocketAddr = if target.endpoint.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .map_err(|_| Error("bad bind address".into()))?;
        let socket = UdpSocket::bind(bind).context(|| "cannot open a UDP socket".into())?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).context(|| "no randomness from the operating system".into())?;
        let config = Config { accept_unknown_peers: false, ..Config::default() };
        let mut stack = Stack::new(seed, socket, config).context(|| "cannot start the overlay".into())?;
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
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER_BYTES]),
        );
        let tcp = stack.sockets.add(socket);
        let mut port_bytes = [0u8; 2];
        getrandom::fill(&mut port_bytes).context(|| "no randomness".into())?;
        let local_port = 49152 + u16::from_le_bytes(port_bytes) % 16384;
        let remote = IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::from_octets(address.0)), port);
        let s = stack.sockets.get_mut::<tcp::Socket>(tcp);
        s.set_nagle_enabled(false);
        s.set_timeout(Some(smoltcp::time::Duration::from_secs(timeout.as_secs().max(1))));
        s.connect(stack.iface.context(), remote, local_port).map_err(|e| Error(format!("cannot connect: {e}")))?;
        let mut conn = OverlayTcp { stack, tcp, timeout };
        let where_ = format!("[{}]:{port}", address_string(&address.0));
        loop {
            conn.stack.poll(POLL_SLICE).context(|| "overlay socket".into())?;
            let s = conn.stack.sockets.get_mut::<tcp::Socket>(conn.tcp);
            if s.may_send() {
                return Ok(conn);
            }
            if !s.is_open() {
                bail!("{where_} refused the connection");
            }
            if Instant::now() >= deadline {
                bail!("cannot connect to {where_} within {} s", timeout.as_secs());
            }
        }
    }

    /// Sends `request` (all of it, or as much as the peer takes before it closes), then
    /// reads until the peer closes, at most `limit_bytes`; returns what was read.
    pub fn exchange(&mut self, request: &[u8], limit_bytes: usize) -> Result<Vec<u8>> {
        self.exchange_until(request, limit_bytes, &mut |_| false)
    }

    /// As [`OverlayTcp::exchange`], but also returns (leaving the connection open) as soon
    /// as `whole(received)` says the answer is complete, once the request is sent.
    pub fn exchange_until(&mut self, request: &[u8], limit_bytes: usize, whole: &mut dyn FnMut(&[u8]) -> bool) -> Result<Vec<u8>> {
        let mut sent = 0;
        let mut received = Vec::new();
        let mut last_progress = Instant::now();
        loop {
            let s = self.stack.sockets.get_mut::<tcp::Socket>(self.tcp);
            let mut progress = false;
            if sent < request.len() && s.can_send() {
                if let Ok(n) = s.send_slice(&request[sent..]) {
                    sent += n;
                    progress |= n > 0;
                }
            }
            while s.can_recv() {
                let mut buf = [0u8; 16 << 10];
                match s.recv_slice(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        received.extend_from_slice(&buf[..n]);
                        progress = true;
                        if received.len() > limit_bytes {
                            s.abort();
                            bail!("the answer is larger than {limit_bytes} bytes");
                        }
                    }
                }
            }
            if sent == request.len() && !received.is_empty() && whole(&received) {
                return Ok(received);
            }
            if !s.may_recv() && !s.can_recv() && s.state() != tcp::State::SynSent {
                s.close();
                return Ok(received);
            }
            if progress {
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= self.timeout {
                s.abort();
                bail!("no progress for {} s ({} bytes sent, {} received)", self.timeout.as_secs(), sent, received.len());
            }
            self.stack.poll(POLL_SLICE).context(|| "overlay socket".into())?;
        }
    }

    /// Closes our side and lets the FIN go out (briefly).
    pub fn close(mut self) {
        self.stack.sockets.get_mut::<tcp::Socket>(self.tcp).close();
        for _ in 0..5 {
            if self.stack.poll(POLL_SLICE).is_err() {
                break;
            }
        }
    }
}

/// One HTTP/1.1 GET of `path` on `[node]:port` over the overlay: (status, body).
pub fn http_get(target: &Target, port: u16, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>)> {
    let mut conn = OverlayTcp::connect(target, port, timeout)?;
    let host = address_string(&target.overlay_address());
    let request = format!("GET {path} HTTP/1.1\r\nHost: [{host}]:{port}\r\nUser-Agent: gridctl\r\nConnection: close\r\n\r\n");
    let answer = conn.exchange(request.as_bytes(), 64 << 20)?;
    conn.close();
    parse_response(&answer)
}

/// Splits an HTTP/1.x response into (status, body).
pub fn parse_response(answer: &[u8]) -> Result<(u16, Vec<u8>)> {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("not an HTTP response ({} bytes)", answer.len());
    };
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Error(format!("not an HTTP status line: {:?}", head.lines().next().unwrap_or(""))))?;
    Ok((status, answer[split + 4..].to_vec()))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parses_responses() {
        let (status, body) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi").expect("ok");
        assert_eq!((status, body.as_slice()), (200, &b"hi"[..]));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
