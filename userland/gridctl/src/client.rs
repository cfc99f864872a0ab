//! A control connection to one node: the overlay link, a TCP connection to
//! `[node overlay address]:7070`, and `control::ClientSession` over it.
//!
//! Every wait is bounded: the link must come up, the connection open and the hello arrive
//! within the timeout, and a request fails when neither a byte is acknowledged nor a byte
//! received for that long (so a slow but moving upload of a big deploy does not time out).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use control::{ClientSession, Request, Response};
use ed25519_compact::KeyPair;
use overlay::node::Config;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv6Address};

use crate::key::UserKey;
use crate::stack::Stack;
use crate::target::Target;
use crate::{address_string, bail, hex, Context, Error, Result};

/// TCP buffers of the client's socket.
const TCP_RX_BYTES: usize = 256 << 10;
const TCP_TX_BYTES: usize = 512 << 10;
/// Longest single wait inside the loops (keeps them responsive).
const POLL_SLICE: Duration = Duration::from_millis(20);

/// Connection settings.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Bound on each wait (link, connect, hello, silence during a request).
    pub timeout: Duration,
    /// Join the overlay as the user's key instead of a fresh one-off identity.
    ///
    /// A fresh identity needs a node that accepts unknown overlay peers
    /// (`gridos.overlay.accept_any=1`); the user's key can instead be listed in the node's
    /// `gridos.overlay.peers`. Its catch: a node that still holds the link of an earlier
    /// run with the same key (for about 35 s after it) does not resend its routes to the
    /// new run, which then waits for the node's periodic route update (up to 16 s).
    /// Requests are signed by the user's key either way.
    pub user_overlay_identity: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { timeout: Duration::from_secs(20), user_overlay_identity: false }
    }
}

/// An open control connection.
pub struct Client {
    stack: Stack,
    tcp: SocketHandle,
    session: ClientSession,
    target: Target,
    options: Options,
    closed: bool,
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error(format!("{what}: {e}"))
}

impl Client {
    /// Joins the overlay as the user's key, links to the node and opens the control port.
    pub fn connect(target: &Target, user: &UserKey, options: Options) -> Result<Client> {
        Client::connect_via(target, target.key, user, options)
    }

    /// Links to `gateway` only and opens the control port of the node whose overlay key is
    /// `node_key`, which the overlay routes to through the gateway (the node itself when
    /// `node_key == gateway.key`). This is how `gridctl store` reaches every node of
    /// `./gridos run --nodes N` through the first node's forwarded port.
    pub fn connect_via(gateway: &Target, node_key: [u8; 32], user: &UserKey, options: Options) -> Result<Client> {
        let target = &Target { key: node_key, endpoint: gateway.endpoint };
        let bind: SocketAddr = if target.endpoint.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .map_err(|_| Error("bad bind address".into()))?;
        let socket = UdpSocket::bind(bind).map_err(|e| io_error("cannot open a UDP socket", e))?;
        let config = Config { accept_unknown_peers: false, ..Config::default() };
        let seed = if options.user_overlay_identity {
            user.seed()
        } else {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).context(|| "no randomness from the operating system".into())?;
            seed
        };
        let mut stack = Stack::new(seed, socket, config).map_err(|e| io_error("cannot start the overlay", e))?;
        match stack.add_peer(gateway.endpoint, gateway.key) {
            Ok(()) => {}
            Err(overlay::NodeError::OwnKey) => bail!("the node key is your own key"),
            Err(e) => bail!("cannot add the node as an overlay peer: {e:?}"),
        }
        let node_address = overlay::Address(target.overlay_address());
        let deadline = Instant::now() + options.timeout;
        while !stack.has_route(&node_address) {
            if Instant::now() >= deadline {
                let accepts = if options.user_overlay_identity {
                    format!("your key {} (gridos.overlay.peers or gridos.overlay.accept_any=1)", hex(&user.public_key()))
                } else {
                    "unknown overlay keys (gridos.overlay.accept_any=1; or use --user-overlay-key)".to_string()
                };
                if !stack.has_route(&overlay::Address(gateway.overlay_address())) || node_key == gateway.key {
                    bail!(
                        "no overlay link to node {}.. at {} within {} s: is the node up, is UDP port {} reachable, \
                         and does the node accept {accepts}?",
                        hex(&gateway.key[..8]),
                        gateway.endpoint,
                        options.timeout.as_secs(),
                        gateway.endpoint.port(),
                    );
                }
                bail!(
                    "node {}.. linked, but it has no overlay route to node {}.. within {} s (is that node up?)",
                    hex(&gateway.key[..8]),
                    hex(&node_key[..8]),
                    options.timeout.as_secs(),
                );
            }
            stack.poll(POLL_SLICE).map_err(|e| io_error("overlay socket", e))?;
        }
        let tcp = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_RX_BYTES]),
            tcp::SocketBuffer::new(vec![0; TCP_TX_BYTES]),
        );
        let tcp = stack.sockets.add(tcp);
        let mut client = Client {
            stack,
            tcp,
            session: ClientSession::new(user.keypair().clone(), Some(target.key)),
            target: *target,
            options,
            closed: false,
        };
        client.open(node_address)?;
        Ok(client)
    }

    fn open(&mut self, node_address: overlay::Address) -> Result<()> {
        let remote = IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::from_octets(node_address.0)), control::PORT);
        let mut port_bytes = [0u8; 2];
        getrandom::fill(&mut port_bytes).context(|| "no randomness".into())?;
        let local_port = 49152 + u16::from_le_bytes(port_bytes) % 16384;
        let socket = self.stack.sockets.get_mut::<tcp::Socket>(self.tcp);
        socket.set_nagle_enabled(false);
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(self.options.timeout.as_secs().max(1))));
        socket
            .connect(self.stack.iface.context(), remote, local_port)
            .map_err(|e| Error(format!("cannot connect: {e}")))?;
        let deadline = Instant::now() + self.options.timeout;
        let where_ = format!("[{}]:{}", address_string(&node_address.0), control::PORT);
        while self.session.hello().is_none() {
            self.poll_once()?;
            let socket = self.stack.sockets.get_mut::<tcp::Socket>(self.tcp);
            if !socket.is_open() {
                bail!("node refused or dropped the control connection to {where_} (is the control service running?)");
            }
            if Instant::now() >= deadline {
                let what = if socket.state() == tcp::State::Established { "no hello from" } else { "cannot connect to" };
                bail!("{what} the control service at {where_} within {} s", self.options.timeout.as_secs());
            }
        }
        Ok(())
    }

    /// Polls the stack once and feeds received bytes to the session; returns the number of
    /// bytes received.
    fn poll_once(&mut self) -> Result<usize> {
        self.stack.poll(POLL_SLICE).map_err(|e| io_error("overlay socket", e))?;
        let socket = self.stack.sockets.get_mut::<tcp::Socket>(self.tcp);
        let mut received = 0;
        let mut buf = [0u8; 16 << 10];
        while socket.can_recv() {
            match socket.recv_slice(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    received += n;
                    self.session
                        .push(&buf[..n])
                        .map_err(|e| Error(format!("bad data from the node: {e}")))?;
                }
                Err(_) => break,
            }
        }
        Ok(received)
    }

    /// The node this client talks to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends `request` signed with the user's key and waits for its response.
    pub fn call(&mut self, request: &Request) -> Result<Response> {
        self.call_with(None, request, &mut |_, _| {})
    }

    /// As [`Client::call`], signed by `keypair` instead of the user's key (when given),
    /// with `progress(acknowledged_bytes, total_bytes)` called while the request uploads.
    pub fn call_with(
        &mut self,
        keypair: Option<&KeyPair>,
        request: &Request,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Response> {
        let frame = match keypair {
            Some(k) => self.session.request_frame_signed_by(k, request),
            None => self.session.request_frame(request),
        }
        .map_err(|e| Error(format!("cannot send request: {e}")))?;
        let total = frame.len() as u64;
        let mut written = 0usize;
        let mut last_progress = Instant::now();
        let mut last_acked = 0u64;
        loop {
            let received = self.poll_once()?;
            if let Some(response) = self.session.poll_response() {
                progress(total, total);
                return Ok(response);
            }
            let socket = self.stack.sockets.get_mut::<tcp::Socket>(self.tcp);
            if written < frame.len() && socket.can_send() {
                written += socket.send_slice(&frame[written..]).unwrap_or(0);
            }
            let acked = (written - socket.send_queue().min(written)) as u64;
            if !socket.may_recv() && !socket.can_recv() {
                bail!("the node closed the control connection before answering");
            }
            if !socket.is_open() {
                bail!("the control connection to the node was lost");
            }
            if received > 0 || acked > last_acked {
                last_progress = Instant::now();
                last_acked = acked;
                progress(acked, total);
            } else if last_progress.elapsed() >= self.options.timeout {
                bail!("no answer from the node for {} s", self.options.timeout.as_secs());
            }
        }
    }

    /// Keeps the connection alive for `duration` (between polls of `logs --follow`).
    pub fn idle(&mut self, duration: Duration) -> Result<()> {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            self.poll_once()?;
            if !self.stack.sockets.get::<tcp::Socket>(self.tcp).is_open() {
                bail!("the control connection to the node was lost");
            }
        }
        Ok(())
    }

    /// Closes the connection, waiting briefly for the node to see it.
    pub fn close(mut self) {
        self.closed = true;
        self.stack.sockets.get_mut::<tcp::Socket>(self.tcp).close();
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if self.stack.poll(POLL_SLICE).is_err() {
                return;
            }
            // Wait for the node's FIN and acknowledge it, so its socket does not linger in
            // LAST-ACK after we are gone.
            let state = self.stack.sockets.get::<tcp::Socket>(self.tcp).state();
            if matches!(state, tcp::State::Closed | tcp::State::TimeWait) {
                let _ = self.stack.poll(Duration::ZERO);
                return;
            }
        }
    }
}

impl Drop for Client {
    /// A client dropped without [`Client::close`] (an error path) resets the connection,
    /// so the node frees it at once instead of waiting for a timeout.
    fn drop(&mut self) {
        if !self.closed {
            self.stack.sockets.get_mut::<tcp::Socket>(self.tcp).abort();
            let _ = self.stack.poll(Duration::ZERO);
        }
    }
}
