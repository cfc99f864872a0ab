//! Nodes over the network: a [`Connector`] that opens control connections
//! ([`crate::client::Client`]) and a [`NodeConn`] on the shard-service requests.
//!
//! Which way to a node: a node named in `--nodes` is linked directly at its underlay
//! address; any other node (learned from a node's `Peers` answer, or from a manifest) is
//! reached through the overlay via the first named node that links (the gateway), as
//! `./gridos run --nodes N` needs: only node 0's port is forwarded to the host.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use control::{ErrorCode, Request, Response};

use super::nodes::{Connector, Meta, NodeConn, NodeError, NodeKey, Peer, Proof, Room, ShardKey};
use crate::client::{Client, Options};
use crate::key::UserKey;
use crate::target::Target;

/// Bytes per `ShardPut` piece. Smaller than `control::SHARD_PIECE_BYTES`: a node resets a
/// request that arrives slower than its minimum rate (128 KiB/s after a 10 s base), and
/// shards to several nodes share one slow path through the gateway (a few hundred KB/s
/// under QEMU TCG), so each request is kept small enough to arrive in time.
pub const PUT_PIECE_BYTES: usize = 256 << 10;
/// Bytes asked per `ShardGet`.
pub const GET_PIECE_BYTES: u64 = 512 << 10;
/// Waits for a node that answers Busy (its buffer budget for uploads is taken).
const BUSY_WAITS_MAX: usize = 20;
const BUSY_WAIT: Duration = Duration::from_millis(500);

/// Connects to nodes as the user.
pub struct RemoteConnector {
    seeds: Vec<Target>,
    user: UserKey,
    options: Options,
    /// Index in `seeds` of the gateway that last worked.
    gateway: AtomicUsize,
}

impl RemoteConnector {
    /// A connector for `user`, reaching nodes directly when in `seeds`, else through them.
    pub fn new(seeds: Vec<Target>, user: UserKey, options: Options) -> RemoteConnector {
        RemoteConnector { seeds, user, options, gateway: AtomicUsize::new(0) }
    }
}

/// How long a probe waits for a node it only heard of (a node through the gateway
/// answers in well under a second; another user's client never does).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

impl Connector for RemoteConnector {
    fn connect(&self, key: &NodeKey, probe: bool) -> Result<Box<dyn NodeConn>, NodeError> {
        if let Some(t) = self.seeds.iter().find(|t| t.key == *key) {
            return Client::connect(t, &self.user, self.options)
                .map(|c| Box::new(RemoteConn(Some(c))) as Box<dyn NodeConn>)
                .map_err(|e| NodeError::Unreachable(e.0));
        }
        let options = if probe { Options { timeout: self.options.timeout.min(PROBE_TIMEOUT), ..self.options } } else { self.options };
        let first = self.gateway.load(Ordering::Relaxed);
        let mut last = NodeError::Unreachable("no --nodes to reach it through".into());
        for n in 0..self.seeds.len() {
            let i = (first + n) % self.seeds.len();
            match Client::connect_via(&self.seeds[i], *key, &self.user, options) {
                Ok(mut c) => {
                    self.gateway.store(i, Ordering::Relaxed);
                    c.set_timeout(self.options.timeout);
                    return Ok(Box::new(RemoteConn(Some(c))));
                }
                Err(e) => last = NodeError::Unreachable(e.0),
            }
        }
        Err(last)
    }
}

/// A connection; closed cleanly when dropped.
struct RemoteConn(Option<Client>);

fn refused(response: Response) -> NodeError {
    match response {
        Response::Error { code: ErrorCode::NotFound, .. } => NodeError::NotFound,
        Response::Error { code, message } => NodeError::Refused(format!("{code}: {message}")),
        other => NodeError::Refused(format!("unexpected answer {other:?}")),
    }
}

impl RemoteConn {
    fn call(&mut self, request: &Request) -> Result<Response, NodeError> {
        let client = self.0.as_mut().ok_or_else(|| NodeError::Unreachable("closed".into()))?;
        client.call(request).map_err(|e| NodeError::Unreachable(e.0))
    }
}

impl NodeConn for RemoteConn {
    fn put(&mut self, bytes: &[u8]) -> Result<Meta, NodeError> {
        let key = *blake3::hash(bytes).as_bytes();
        let total_len = bytes.len() as u64;
        let mut offset = 0usize;
        let mut busy_waits = 0;
        // Bounded: each round sends a piece or waits on a busy node (at most BUSY_WAITS_MAX).
        for _ in 0..=(bytes.len() / PUT_PIECE_BYTES + BUSY_WAITS_MAX) {
            let end = (offset + PUT_PIECE_BYTES).min(bytes.len());
            let data = bytes.get(offset..end).unwrap_or_default().to_vec();
            match self.call(&Request::ShardPut { key, total_len, offset: offset as u64, data })? {
                Response::ShardPartial { received } if end < bytes.len() && received == end as u64 => offset = end,
                Response::ShardStored { key, len, merkle_root } => return Ok(Meta { key, len, merkle_root }),
                Response::Error { code: ErrorCode::Busy, .. } if offset == 0 && busy_waits < BUSY_WAITS_MAX => {
                    busy_waits += 1;
                    std::thread::sleep(BUSY_WAIT);
                }
                other => return Err(refused(other)),
            }
        }
        Err(NodeError::Refused("the node stayed busy".into()))
    }

    fn get(&mut self, key: &ShardKey) -> Result<Vec<u8>, NodeError> {
        let mut out: Vec<u8> = Vec::new();
        // Bounded: each round adds a piece or fails; a shard is at most SHARD_BYTES_MAX.
        for _ in 0..=(control::SHARD_BYTES_MAX / GET_PIECE_BYTES + 1) {
            let request = Request::ShardGet { key: *key, offset: out.len() as u64, len: GET_PIECE_BYTES };
            match self.call(&request)? {
                Response::ShardData { total_len, offset, data } if offset == out.len() as u64 && total_len <= control::SHARD_BYTES_MAX => {
                    if data.is_empty() && out.len() as u64 != total_len {
                        return Err(NodeError::Refused("an empty piece before the shard's end".into()));
                    }
                    out.extend_from_slice(&data);
                    if out.len() as u64 >= total_len {
                        out.truncate(total_len as usize);
                        return Ok(out);
                    }
                }
                other => return Err(refused(other)),
            }
        }
        Err(NodeError::Refused("the shard did not end".into()))
    }

    fn delete(&mut self, key: &ShardKey) -> Result<(), NodeError> {
        match self.call(&Request::ShardDelete { key: *key })? {
            Response::ShardDeleted => Ok(()),
            other => Err(refused(other)),
        }
    }

    fn prove(&mut self, owner: &[u8; 32], key: &ShardKey, challenge: u64) -> Result<Proof, NodeError> {
        match self.call(&Request::ShardProve { owner: *owner, key: *key, challenge })? {
            Response::ShardProof { len, merkle_root, chunk_index, chunk, path } => {
                Ok(Proof { len, merkle_root, proof: shardstore::StorageProof { chunk_index, chunk, path } })
            }
            other => Err(refused(other)),
        }
    }

    fn list(&mut self) -> Result<Vec<Meta>, NodeError> {
        let mut out = Vec::new();
        let mut after = None;
        // Bounded by the pages a node may hold for one owner at SHARD_LIST_MAX each.
        for _ in 0..4096 {
            match self.call(&Request::ShardList { after })? {
                Response::ShardList { shards, more } => {
                    after = shards.last().map(|m| m.key);
                    out.extend(shards.into_iter().map(|m| Meta { key: m.key, len: m.len, merkle_root: m.merkle_root }));
                    if !more || after.is_none() {
                        return Ok(out);
                    }
                }
                other => return Err(refused(other)),
            }
        }
        Ok(out)
    }

    fn room(&mut self) -> Result<Room, NodeError> {
        match self.call(&Request::StoreInfo)? {
            Response::StoreInfo { used_bytes, quota_bytes, node_free_bytes, .. } => {
                Ok(Room { used_bytes, quota_bytes, node_free_bytes })
            }
            other => Err(refused(other)),
        }
    }

    fn peers(&mut self) -> Result<Vec<Peer>, NodeError> {
        match self.call(&Request::Peers)? {
            Response::Peers(peers) => Ok(peers.into_iter().map(|p| Peer { address: p.address, key: p.key }).collect()),
            other => Err(refused(other)),
        }
    }
}

impl Drop for RemoteConn {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            client.close();
        }
    }
}
