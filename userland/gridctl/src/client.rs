//! A control connection to one node: the overlay link, a TCP connection to
//! `[node overlay address]:7070`, and `control::ClientSession` over it.
//!
//! Every wait is bounded: the link must come up, the connection open and the hello arrive
//! within the timeout, and a request fails when neither a byte is acknowledged nor a byte
//! received for that long (so a slow but moving upload of a big deploy does not time out).
//!
//! The shard helpers ([`Client::put_shard`], [`Client::get_shard`], ...) speak the shard
//! service (`control::shard`): uploads stream in pipelined pieces, reads come in pieces,
//! and a refusal is a typed [`ShardError`] (`NotFound`, `NoSpace`, ...).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use control::{ClientSession, ErrorCode, PeerInfo, Request, Response, ShardMeta};
use ed25519_compact::KeyPair;
use overlay::node::Config;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, Ipv6Address};

use crate::key::UserKey;
use hostnet::Stack;
use crate::target::Target;
use crate::{address_string, bail, hex, Context, Error, Result};

/// TCP buffers of the client's socket.
const TCP_RX_BYTES: usize = 256 << 10;
const TCP_TX_BYTES: usize = 512 << 10;
/// Bits of the mark a one-off client identity carries (see [`is_one_off_client_key`]).
const ONE_OFF_MARK_BITS: u32 = 12;

/// True when `key` carries the mark of gridctl's one-off overlay identities: the first
/// [`ONE_OFF_MARK_BITS`] bits of blake3("gridctl one-off" || key) are zero. A node's
/// `Peers` answer lists every overlay peer it links to, gridctl's own past and present
/// connections among them (one identity each, lingering on the node for 35 s after they
/// end); `gridctl store` skips marked keys instead of probing each as a possible node.
/// A node's key carries the mark by chance once in 4096; such a node is only left out of
/// placement, and may still be named in `--nodes`.
pub fn is_one_off_client_key(key: &[u8; 32]) -> bool {
    let mut h = blake3::Hasher::new();
    h.update(b"gridctl one-off");
    h.update(key);
    let d = h.finalize();
    let head = u32::from_be_bytes([d.as_bytes()[0], d.as_bytes()[1], d.as_bytes()[2], d.as_bytes()[3]]);
    head >> (32 - ONE_OFF_MARK_BITS) == 0
}

/// A fresh random identity seed whose public key carries the one-off mark (about 4096
/// tries, a few ms).
fn one_off_identity_seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    // Bounded: the mark is found in 4096 tries on average; 2^20 tries fail with
    // probability e^-256.
    for _ in 0..(1u32 << 20) {
        getrandom::fill(&mut seed).context(|| "no randomness from the operating system".into())?;
        let key = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed)).pk;
        if is_one_off_client_key(&key) {
            return Ok(seed);
        }
    }
    bail!("no marked one-off identity found (is the random source broken?)")
}

/// Held while a connection's overlay handshake is under way (see `Client::connect_via`).
static LINK_GATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
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
        let seed = if options.user_overlay_identity { user.seed() } else { one_off_identity_seed()? };
        let mut stack = Stack::new(seed, socket, config).map_err(|e| io_error("cannot start the overlay", e))?;
        let deadline = Instant::now() + options.timeout;
        {
            // One handshake at a time from this process: a node budgets handshakes per
            // source address (half-open slots, init tokens), so the fresh identities of
            // several parallel connections (`gridctl store`) would crowd each other out.
            let _gate = LINK_GATE.lock().unwrap_or_else(|e| e.into_inner());
            match stack.add_peer(gateway.endpoint, gateway.key) {
                Ok(()) => {}
                Err(overlay::NodeError::OwnKey) => bail!("the node key is your own key"),
                Err(e) => bail!("cannot add the node as an overlay peer: {e:?}"),
            }
            let gateway_address = overlay::Address(gateway.overlay_address());
            while !stack.has_route(&gateway_address) && Instant::now() < deadline {
                stack.poll(POLL_SLICE).map_err(|e| io_error("overlay socket", e))?;
            }
        }
        let node_address = overlay::Address(target.overlay_address());
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
        // Without congestion control smoltcp sends the peer's whole window at once; over
        // the overlay (one UDP datagram per segment) a burst of a few hundred datagrams
        // overflows the receiver's queues, and the losses stall a large upload in
        // retransmission back-offs.
        socket.set_congestion_control(tcp::CongestionControl::Reno);
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

    /// Changes the bound on each wait from now on (a connection opened with a short
    /// timeout to probe a node keeps working with the usual one).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.options.timeout = timeout;
        self.stack.sockets.get_mut::<tcp::Socket>(self.tcp).set_timeout(Some(smoltcp::time::Duration::from_secs(timeout.as_secs().max(1))));
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

/// A shard request that failed: the node's refusal, or the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardError {
    /// The node answered with an error.
    Node {
        /// Its code: `NotFound` (not the caller's, or absent), `NoSpace` (owner quota or
        /// node reserve), `Busy`, `Rejected` (hash mismatch), `BadRequest`.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The node answered something other than what the request calls for.
    Unexpected(String),
    /// The connection failed (it is unusable afterwards).
    Connection(Error),
}

impl ShardError {
    /// The node's error code, if the node refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ShardError::Node { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The node said the shard is not there (for this key).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }
}

impl std::fmt::Display for ShardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardError::Node { code, message } => write!(f, "{code}: {message}"),
            ShardError::Unexpected(what) => write!(f, "unexpected answer from the node: {what}"),
            ShardError::Connection(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ShardError {}

impl From<ShardError> for Error {
    fn from(e: ShardError) -> Error {
        Error(e.to_string())
    }
}

impl From<Error> for ShardError {
    fn from(e: Error) -> ShardError {
        ShardError::Connection(e)
    }
}

/// Result of the shard helpers.
pub type ShardResult<T> = std::result::Result<T, ShardError>;

/// A storage proof as a node answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardProofReply {
    /// The shard's length and Merkle root *as the node claims them*.
    pub len: u64,
    /// See `len`.
    pub merkle_root: [u8; 32],
    /// The chunk and its path.
    pub proof: shardstore::StorageProof,
}

impl ShardProofReply {
    /// Checks the proof for `challenge` against the length and root the verifier trusts
    /// (from its manifest, not from the node).
    pub fn verify(&self, merkle_root: &[u8; 32], len: u64, challenge: u64) -> bool {
        shardstore::verify_proof(merkle_root, len, challenge, &self.proof)
    }
}

/// The caller's usage of a node's shard store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    /// Bytes the caller's shards count against the quota.
    pub used_bytes: u64,
    /// The caller's shards.
    pub shards: u64,
    /// The caller's quota.
    pub quota_bytes: u64,
    /// Bytes the node still has for shards (its reserve set aside).
    pub node_free_bytes: u64,
}

/// Pieces of a shard upload in flight at once: enough to keep the link busy while the
/// node takes a piece, few enough that a refusal at the first piece wastes little.
pub const PUT_WINDOW_PIECES: usize = 4;
/// Pages of `list_shards` followed at most (a million shards).
const LIST_PAGES_MAX: usize = 1024;

fn node_error(response: Response) -> ShardError {
    match response {
        Response::Error { code, message } => ShardError::Node { code, message },
        other => ShardError::Unexpected(format!("{other:?}").chars().take(200).collect()),
    }
}

impl Client {
    fn shard_call(&mut self, request: &Request) -> ShardResult<Response> {
        self.call(request).map_err(ShardError::Connection)
    }

    /// Uploads `bytes` as one of the user's shards (key: its blake3) and returns it once
    /// the node has it durably.
    pub fn put_shard(&mut self, bytes: &[u8]) -> ShardResult<ShardMeta> {
        self.put_shard_with(bytes, &mut |_, _| {})
    }

    /// As [`Client::put_shard`], with `progress(acknowledged_bytes, total_bytes)`.
    ///
    /// Pieces of [`control::SHARD_PIECE_BYTES`] go out pipelined, at most
    /// [`PUT_WINDOW_PIECES`] unanswered. On a refusal (or a `ShardStored` before the last
    /// piece: the node held the shard already) no further piece is sent, and the answers
    /// to the pieces in flight are read before returning, so the connection stays usable.
    pub fn put_shard_with(&mut self, bytes: &[u8], progress: &mut dyn FnMut(u64, u64)) -> ShardResult<ShardMeta> {
        let total_len = bytes.len() as u64;
        if total_len > control::SHARD_BYTES_MAX {
            return Err(ShardError::Node {
                code: ErrorCode::BadRequest,
                message: format!("a shard of {total_len} bytes exceeds the {}-byte maximum", control::SHARD_BYTES_MAX),
            });
        }
        let key = *blake3::hash(bytes).as_bytes();
        let pieces = bytes.len().div_ceil(control::SHARD_PIECE_BYTES).max(1);
        let mut framed = 0usize; // pieces signed and (being) sent
        let mut answered = 0usize;
        let mut sending: Option<(Vec<u8>, usize)> = None;
        let mut outcome: Option<ShardResult<ShardMeta>> = None;
        let mut last_progress = Instant::now();
        loop {
            let received = self.poll_once()?;
            while let Some(response) = self.session.poll_response() {
                answered += 1;
                match response {
                    Response::ShardPartial { received } => progress(received.min(total_len), total_len),
                    Response::ShardStored { key: k, len, merkle_root } if k == key && len == total_len => {
                        progress(total_len, total_len);
                        outcome.get_or_insert(Ok(ShardMeta { key, len, merkle_root }));
                    }
                    other => {
                        outcome.get_or_insert(Err(node_error(other)));
                    }
                }
            }
            if sending.is_none() && answered == framed && (outcome.is_some() || framed == pieces) {
                return outcome.unwrap_or_else(|| Err(ShardError::Unexpected("no answer to the last piece".into())));
            }
            if sending.is_none() && outcome.is_none() && framed < pieces && framed - answered < PUT_WINDOW_PIECES {
                let start = framed * control::SHARD_PIECE_BYTES;
                let end = (start + control::SHARD_PIECE_BYTES).min(bytes.len());
                let request = Request::ShardPut { key, total_len, offset: start as u64, data: bytes[start..end].to_vec() };
                let frame = self
                    .session
                    .request_frame(&request)
                    .map_err(|e| Error(format!("cannot send a shard piece: {e}")))?;
                framed += 1;
                sending = Some((frame, 0));
            }
            let socket = self.stack.sockets.get_mut::<tcp::Socket>(self.tcp);
            let mut wrote = 0;
            if let Some((frame, written)) = sending.as_mut() {
                if socket.can_send() {
                    wrote = socket.send_slice(&frame[*written..]).unwrap_or(0);
                    *written += wrote;
                }
                if *written == frame.len() {
                    sending = None;
                }
            }
            if !socket.may_recv() && !socket.can_recv() {
                return Err(Error("the node closed the control connection during a shard upload".into()).into());
            }
            if !socket.is_open() {
                return Err(Error("the control connection to the node was lost".into()).into());
            }
            if received > 0 || wrote > 0 {
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= self.options.timeout {
                return Err(Error(format!("no progress with the node for {} s", self.options.timeout.as_secs())).into());
            }
        }
    }

    /// The user's shard `key`, whole (`range: None`) or bytes `range` of it, read in
    /// pieces of [`control::SHARD_PIECE_BYTES`]. The bytes are checked against `key`
    /// when the whole shard was asked for.
    pub fn get_shard(&mut self, key: &[u8; 32], range: Option<std::ops::Range<u64>>) -> ShardResult<Vec<u8>> {
        let (mut at, mut end) = range.clone().map_or((0, u64::MAX), |r| (r.start, r.end));
        let mut out = Vec::new();
        loop {
            let want = end.saturating_sub(at).min(control::SHARD_PIECE_BYTES as u64);
            let response = self.shard_call(&Request::ShardGet { key: *key, offset: at, len: want })?;
            let Response::ShardData { total_len, offset, data } = response else { return Err(node_error(response)) };
            if offset != at || data.len() as u64 > want || total_len > control::SHARD_BYTES_MAX {
                return Err(ShardError::Unexpected(format!("{} bytes at {offset} for a read at {at}", data.len())));
            }
            end = end.min(total_len);
            if out.is_empty() {
                out.reserve(end.saturating_sub(at) as usize);
            }
            out.extend_from_slice(&data);
            at += data.len() as u64;
            if at >= end {
                break;
            }
            if data.is_empty() {
                return Err(ShardError::Unexpected(format!("no bytes at {at} of a {total_len}-byte shard")));
            }
        }
        if range.is_none() && blake3::hash(&out).as_bytes() != key {
            return Err(ShardError::Unexpected("the shard's bytes do not hash to its key".into()));
        }
        Ok(out)
    }

    /// Deletes the user's shard `key`.
    pub fn delete_shard(&mut self, key: &[u8; 32]) -> ShardResult<()> {
        match self.shard_call(&Request::ShardDelete { key: *key })? {
            Response::ShardDeleted => Ok(()),
            other => Err(node_error(other)),
        }
    }

    /// All of the user's shards on the node, in key order (following the pages).
    pub fn list_shards(&mut self) -> ShardResult<Vec<ShardMeta>> {
        let mut all: Vec<ShardMeta> = Vec::new();
        for _ in 0..LIST_PAGES_MAX {
            let after = all.last().map(|s| s.key);
            match self.shard_call(&Request::ShardList { after })? {
                Response::ShardList { shards, more } => {
                    if shards.iter().any(|s| after.is_some_and(|a| s.key <= a)) {
                        return Err(ShardError::Unexpected("a list page out of order".into()));
                    }
                    let empty = shards.is_empty();
                    all.extend(shards);
                    if !more || empty {
                        return Ok(all);
                    }
                }
                other => return Err(node_error(other)),
            }
        }
        Err(ShardError::Unexpected(format!("more than {LIST_PAGES_MAX} pages of shards")))
    }

    /// Length and Merkle root of the user's shard `key`.
    pub fn stat_shard(&mut self, key: &[u8; 32]) -> ShardResult<ShardMeta> {
        match self.shard_call(&Request::ShardStat { key: *key })? {
            Response::ShardStat(meta) if meta.key == *key => Ok(meta),
            other => Err(node_error(other)),
        }
    }

    /// A storage proof of `owner`'s shard `key` for `challenge` (check it with
    /// [`ShardProofReply::verify`] against the root and length you trust).
    pub fn prove_shard(&mut self, owner: &[u8; 32], key: &[u8; 32], challenge: u64) -> ShardResult<ShardProofReply> {
        match self.shard_call(&Request::ShardProve { owner: *owner, key: *key, challenge })? {
            Response::ShardProof { len, merkle_root, chunk_index, chunk, path } => {
                Ok(ShardProofReply { len, merkle_root, proof: shardstore::StorageProof { chunk_index, chunk, path } })
            }
            other => Err(node_error(other)),
        }
    }

    /// The user's usage and quota on the node, and its free room for shards.
    pub fn store_info(&mut self) -> ShardResult<StoreInfo> {
        match self.shard_call(&Request::StoreInfo)? {
            Response::StoreInfo { used_bytes, shards, quota_bytes, node_free_bytes } => {
                Ok(StoreInfo { used_bytes, shards, quota_bytes, node_free_bytes })
            }
            other => Err(node_error(other)),
        }
    }

    /// The overlay nodes the node routes to.
    pub fn peers(&mut self) -> ShardResult<Vec<PeerInfo>> {
        match self.shard_call(&Request::Peers)? {
            Response::Peers(peers) => Ok(peers),
            other => Err(node_error(other)),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn one_off_identities_carry_the_mark_and_random_keys_rarely_do() {
        for _ in 0..4 {
            let seed = one_off_identity_seed().unwrap();
            let key = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed)).pk;
            assert!(is_one_off_client_key(&key));
        }
        let marked = (0..20_000u32).filter(|i| is_one_off_client_key(blake3::hash(&i.to_le_bytes()).as_bytes())).count();
        assert!(marked < 20, "{marked} of 20000 random keys marked (expected about 5)");
    }
}
