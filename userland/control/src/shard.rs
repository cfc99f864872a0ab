//! The shard service: owners put, get (whole or a range), delete, list and stat opaque
//! shards on the node, anyone may ask for a storage proof, and a client may ask which
//! overlay nodes the node routes to. Sans-IO: the node's store, its usage figures and its
//! routing table are behind [`ShardBackend`]; the rules are here.
//!
//! # Rules
//! - **Namespaces.** The request's signer is the owner: every shard operation acts in
//!   the signer's namespace only, so another key's shard answers `NotFound`, exactly as a
//!   shard that does not exist (keys are free: "not yours" would tell a stranger what the
//!   node holds). [`RESERVED_OWNER`] (all zeros, the node's own data in the store) is
//!   never reachable. `ShardProve` names its owner and is open to any signer (public
//!   audits); `Peers` and `StoreInfo` are open to any signer (the latter speaks of the
//!   signer only).
//! - **Uploads** ([`Connection`]). A shard streams in `ShardPut` pieces of at most
//!   [`SHARD_PIECE_BYTES`], in order, on one connection: offset 0 starts an upload (and
//!   drops one in progress), every other piece must continue it exactly (same signer,
//!   key and length, offset = bytes received), else `BadRequest` and the upload is
//!   dropped. The node buffers one upload per connection, of at most [`SHARD_BYTES_MAX`],
//!   and all connections' buffers together within a node-wide budget
//!   ([`ShardBackend::buffer_reserve`], [`BufferBudget`]): beyond it, `Busy`. Quota and
//!   reserve are checked at the first piece and again before storing. The last piece is
//!   answered `ShardStored` only after blake3 of the bytes equals the key (`Rejected`
//!   otherwise) and the store's put returned (durable). A shard the owner already holds
//!   is answered `ShardStored` at its first piece; the rest of its pieces are taken
//!   without buffering and answered `ShardStored` too.
//! - **Quota and reserve.** A shard counts its length plus [`SHARD_OVERHEAD_BYTES`] (its
//!   record on disk, rounded up). An owner's shards together stay within the owner's
//!   quota (`NoSpace`, "owner quota ..."); a put that would leave the store with less
//!   free than the node's reserve is refused (`NoSpace`, "node reserve ...").
//! - **Reads.** `ShardGet` answers at most [`SHARD_PIECE_BYTES`]. The store reads and
//!   checks a shard whole, so a connection keeps the shard it reads (within the same
//!   node-wide budget as uploads) for the next ranges of it, until the read reaches the
//!   shard's end or the connection asks anything but the next range; without room in the
//!   budget the read is refused `Busy`.
//! - **Lists** are in key order, [`SHARD_LIST_MAX`] per page; **peers** at most
//!   [`PEERS_MAX`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::message::{ErrorCode, PeerInfo, Response, ShardMeta};
use crate::serve::BackendError;

/// Most shard bytes in one `ShardPut` or `ShardData` frame.
pub const SHARD_PIECE_BYTES: usize = 1 << 20;
/// Longest shard the service accepts.
pub const SHARD_BYTES_MAX: u64 = 16 << 20;
/// Entries per `ShardList` response.
pub const SHARD_LIST_MAX: usize = 1024;
/// Entries per `Peers` response.
pub const PEERS_MAX: usize = 256;
/// What a shard costs beyond its length in the quota: its record header and the
/// rounding of the record to the store's 4 KiB blocks, at most.
pub const SHARD_OVERHEAD_BYTES: u64 = 4096;
/// Frame body of a `ShardPut` (or `ShardData`) carrying a full piece, at most: the piece
/// plus the request's other fields, the signature and the encoding's lengths. A node
/// lets a connection buffer this much without treating it as a large upload.
pub const SHARD_PIECE_FRAME_BYTES_MAX: usize = SHARD_PIECE_BYTES + 1024;
/// Most node-wide bytes of shard uploads and reads buffered at once: three largest
/// shards (the kernel takes an eighth of its heap, within `SHARD_BYTES_MAX..=` this).
pub const BUFFER_BYTES_MAX_DEFAULT: u64 = 48 << 20;
/// The owner of the node's own data in its store (workload files and tables): never
/// reachable through this service (equal to `shardstore::NODE_OWNER`).
pub const RESERVED_OWNER: [u8; 32] = [0; 32];

const _: () = assert!(SHARD_PIECE_BYTES as u64 <= SHARD_BYTES_MAX);
const _: () = assert!(BUFFER_BYTES_MAX_DEFAULT >= SHARD_BYTES_MAX);
const _: () = assert!(SHARD_PIECE_FRAME_BYTES_MAX < crate::MAX_FRAME_BYTES);

/// An owner's usage and the room the node has, as the backend sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StoreRoom {
    /// Sum of the owner's shard lengths.
    pub bytes: u64,
    /// The owner's shards.
    pub shards: u64,
    /// The owner's quota (bytes, overhead included).
    pub quota_bytes: u64,
    /// The store's free bytes over all healthy disks.
    pub free_bytes: u64,
    /// Free bytes the node keeps for its own data.
    pub reserve_bytes: u64,
}

impl StoreRoom {
    /// What the owner's shards count against the quota.
    pub fn charged_bytes(&self) -> u64 {
        self.bytes.saturating_add(self.shards.saturating_mul(SHARD_OVERHEAD_BYTES))
    }

    /// Free bytes shards may still take (the reserve set aside).
    pub fn shard_free_bytes(&self) -> u64 {
        self.free_bytes.saturating_sub(self.reserve_bytes)
    }

    /// Whether a shard of `len` bytes fits, or the refusal.
    pub fn check(&self, len: u64) -> Result<(), BackendError> {
        let cost = len.saturating_add(SHARD_OVERHEAD_BYTES);
        let used = self.charged_bytes();
        if used.saturating_add(cost) > self.quota_bytes {
            return Err(BackendError::new(
                ErrorCode::NoSpace,
                format!(
                    "owner quota: a shard of {len} bytes does not fit ({used} of {} bytes used, {} shards)",
                    self.quota_bytes, self.shards
                ),
            ));
        }
        if self.free_bytes < cost.saturating_add(self.reserve_bytes) {
            return Err(BackendError::new(
                ErrorCode::NoSpace,
                format!(
                    "node reserve: a shard of {len} bytes would leave less than the node's {} MiB reserve free ({} bytes free)",
                    self.reserve_bytes >> 20,
                    self.free_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// A storage proof as the backend returns it (`shardstore::StorageProof` and the shard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardProof {
    /// The shard.
    pub meta: ShardMeta,
    /// Index of the chunk proved.
    pub chunk_index: u64,
    /// The chunk.
    pub chunk: Vec<u8>,
    /// Sibling hashes, leaf to root.
    pub path: Vec<[u8; 32]>,
}

/// The node's store and overlay, as the shard service needs them. `owner` is always the
/// namespace `serve` chose (the signer, or a `ShardProve`'s named owner), never
/// [`RESERVED_OWNER`].
pub trait ShardBackend {
    /// The owner's usage, quota and the node's free room.
    fn shard_room(&mut self, owner: &[u8; 32]) -> StoreRoom;
    /// One of the owner's shards.
    fn shard_meta(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Option<ShardMeta>;
    /// Stores `bytes` (whose blake3 is `key`, checked) for the owner; durable on `Ok`.
    fn shard_put(&mut self, owner: &[u8; 32], key: &[u8; 32], bytes: &[u8]) -> Result<ShardMeta, BackendError>;
    /// The whole shard, checked against its key.
    fn shard_get(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Result<Vec<u8>, BackendError>;
    /// Deletes the owner's shard (`NotFound` if absent).
    fn shard_delete(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Result<(), BackendError>;
    /// The owner's shards after `after` in key order, at most `max`.
    fn shard_list(&mut self, owner: &[u8; 32], after: Option<&[u8; 32]>, max: usize) -> Vec<ShardMeta>;
    /// A storage proof of the owner's shard.
    fn shard_prove(&mut self, owner: &[u8; 32], key: &[u8; 32], challenge: u64) -> Result<ShardProof, BackendError>;
    /// Takes `bytes` of the node-wide buffer budget; false when it has not that much left.
    fn buffer_reserve(&mut self, bytes: u64) -> bool;
    /// Gives back bytes taken by [`ShardBackend::buffer_reserve`].
    fn buffer_release(&mut self, bytes: u64);
    /// The overlay nodes the node routes to.
    fn peers(&mut self) -> Vec<PeerInfo>;
}

/// The node-wide buffer budget (the kernel keeps one behind a lock; tests use it too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferBudget {
    used_bytes: u64,
    max_bytes: u64,
}

impl BufferBudget {
    /// A budget of `max_bytes`.
    pub const fn new(max_bytes: u64) -> BufferBudget {
        BufferBudget { used_bytes: 0, max_bytes }
    }

    /// Bytes taken.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// Takes `bytes` if that many are left.
    pub fn reserve(&mut self, bytes: u64) -> bool {
        match self.used_bytes.checked_add(bytes) {
            Some(n) if n <= self.max_bytes => {
                self.used_bytes = n;
                true
            }
            _ => false,
        }
    }

    /// Gives back `bytes` (never below zero).
    pub fn release(&mut self, bytes: u64) {
        debug_assert!(bytes <= self.used_bytes);
        self.used_bytes = self.used_bytes.saturating_sub(bytes);
    }
}

/// An upload in progress.
#[derive(Debug)]
struct PendingPut {
    owner: [u8; 32],
    key: [u8; 32],
    total_len: u64,
    received: u64,
    /// The bytes so far, or `None` when the owner holds the shard already (the pieces
    /// are counted, not kept).
    data: Option<Vec<u8>>,
    /// Budget taken for `data`.
    reserved: u64,
}

/// The last shard a connection read, kept for its next ranges.
#[derive(Debug)]
struct CachedShard {
    owner: [u8; 32],
    key: [u8; 32],
    bytes: Vec<u8>,
    reserved: u64,
}

/// The shard service's state of one connection: the upload in progress and the last
/// shard read. Call [`Connection::close`] when the connection ends, so its buffers'
/// budget goes back to the node.
#[derive(Debug, Default)]
pub struct Connection {
    put: Option<PendingPut>,
    read: Option<CachedShard>,
    /// The file upload in progress ([`crate::files`]).
    pub(crate) file_put: Option<crate::files::PendingFile>,
    /// The last file read, kept for its next ranges ([`crate::files`]).
    pub(crate) file_read: Option<crate::files::CachedFile>,
}

impl Connection {
    /// A connection with nothing buffered.
    pub fn new() -> Connection {
        Connection::default()
    }

    /// Budget bytes this connection holds.
    pub fn held_bytes(&self) -> u64 {
        self.put.as_ref().map_or(0, |p| p.reserved)
            + self.read.as_ref().map_or(0, |r| r.reserved)
            + self.file_put.as_ref().map_or(0, |p| p.reserved())
            + self.file_read.as_ref().map_or(0, |r| r.reserved())
    }

    /// Bytes of the upload in progress received so far.
    pub fn upload_received(&self) -> Option<u64> {
        self.put.as_ref().map(|p| p.received)
    }

    /// Drops everything buffered and gives its budget back.
    pub fn close(&mut self, backend: &mut impl ShardBackend) {
        self.drop_put(backend);
        self.drop_read(backend);
        self.drop_file_put(backend);
        self.drop_file_read(backend);
        debug_assert_eq!(self.held_bytes(), 0);
    }

    /// Drops the file upload in progress, if any.
    pub(crate) fn drop_file_put(&mut self, backend: &mut impl ShardBackend) {
        if let Some(p) = self.file_put.take() {
            backend.buffer_release(p.reserved());
        }
    }

    /// Drops the file kept for a read in pieces, if any.
    pub(crate) fn drop_file_read(&mut self, backend: &mut impl ShardBackend) {
        if let Some(r) = self.file_read.take() {
            backend.buffer_release(r.reserved());
        }
    }

    /// Drops the shard kept for a read in pieces (`serve` calls it for every request
    /// that is not a `ShardGet`, so a kept shard never outlives its read).
    pub fn end_read(&mut self, backend: &mut impl ShardBackend) {
        self.drop_read(backend);
    }

    fn drop_put(&mut self, backend: &mut impl ShardBackend) {
        if let Some(p) = self.put.take() {
            backend.buffer_release(p.reserved);
        }
    }

    fn drop_read(&mut self, backend: &mut impl ShardBackend) {
        if let Some(r) = self.read.take() {
            backend.buffer_release(r.reserved);
        }
    }
}

fn refuse(e: BackendError) -> Response {
    Response::Error { code: e.code, message: e.message }
}

fn short(key: &[u8; 32]) -> String {
    key[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The one answer for a shard the caller cannot see, whether it exists for someone
/// else or not at all.
pub fn not_found(key: &[u8; 32]) -> BackendError {
    BackendError::new(ErrorCode::NotFound, format!("no shard {}..", short(key)))
}

fn stored(meta: ShardMeta) -> Response {
    Response::ShardStored { key: meta.key, len: meta.len, merkle_root: meta.merkle_root }
}

/// Handles one `ShardPut` piece of `owner`.
pub fn put(
    backend: &mut impl ShardBackend,
    conn: &mut Connection,
    owner: [u8; 32],
    key: [u8; 32],
    total_len: u64,
    offset: u64,
    data: Vec<u8>,
) -> Response {
    if owner == RESERVED_OWNER {
        conn.drop_put(backend);
        return refuse(BackendError::new(ErrorCode::Unauthorized, "the all-zero key owns nothing here"));
    }
    if data.len() > SHARD_PIECE_BYTES {
        conn.drop_put(backend);
        return refuse(BackendError::new(
            ErrorCode::BadRequest,
            format!("a piece of {} bytes exceeds the {SHARD_PIECE_BYTES}-byte maximum", data.len()),
        ));
    }
    if offset == 0 {
        conn.drop_put(backend);
        return match start_put(backend, owner, key, total_len, data) {
            Ok(p) => advance(backend, conn, p),
            Err(e) => refuse(e),
        };
    }
    let Some(mut p) = conn.put.take() else {
        return refuse(BackendError::new(
            ErrorCode::BadRequest,
            format!("no upload of shard {}.. in progress on this connection: pieces start at offset 0", short(&key)),
        ));
    };
    let continues = p.owner == owner && p.key == key && p.total_len == total_len && p.received == offset;
    let fits = !data.is_empty() && offset.saturating_add(data.len() as u64) <= total_len;
    if !continues || !fits {
        let expected = p.received;
        backend.buffer_release(p.reserved);
        return refuse(BackendError::new(
            ErrorCode::BadRequest,
            format!(
                "piece out of order: expected offset {expected} of shard {}.. ({total_len} bytes), got {} bytes at {offset} of {}..; upload dropped",
                short(&p.key),
                data.len(),
                short(&key)
            ),
        ));
    }
    if let Some(buf) = p.data.as_mut() {
        buf.extend_from_slice(&data);
    }
    p.received += data.len() as u64;
    advance(backend, conn, p)
}

/// Checks a new upload's first piece and sets up its buffer.
fn start_put(backend: &mut impl ShardBackend, owner: [u8; 32], key: [u8; 32], total_len: u64, data: Vec<u8>) -> Result<PendingPut, BackendError> {
    if total_len > SHARD_BYTES_MAX {
        return Err(BackendError::new(
            ErrorCode::BadRequest,
            format!("a shard of {total_len} bytes exceeds the {SHARD_BYTES_MAX}-byte maximum"),
        ));
    }
    if data.len() as u64 > total_len {
        return Err(BackendError::new(ErrorCode::BadRequest, format!("a piece of {} bytes is longer than its shard ({total_len})", data.len())));
    }
    let received = data.len() as u64;
    if let Some(meta) = backend.shard_meta(&owner, &key) {
        if meta.len != total_len {
            return Err(BackendError::new(ErrorCode::Rejected, format!("shard {}.. has {} bytes, not {total_len}", short(&key), meta.len)));
        }
        return Ok(PendingPut { owner, key, total_len, received, data: None, reserved: 0 });
    }
    backend.shard_room(&owner).check(total_len)?;
    if !backend.buffer_reserve(total_len) {
        return Err(BackendError::new(ErrorCode::Busy, "the node is buffering as many shard transfers as it can; try again"));
    }
    let mut buf = Vec::new();
    if buf.try_reserve_exact(total_len as usize).is_err() {
        backend.buffer_release(total_len);
        return Err(BackendError::new(ErrorCode::Busy, "no memory for the shard's buffer; try again"));
    }
    buf.extend_from_slice(&data);
    Ok(PendingPut { owner, key, total_len, received, data: Some(buf), reserved: total_len })
}

/// Keeps an unfinished upload, or finishes it.
fn advance(backend: &mut impl ShardBackend, conn: &mut Connection, p: PendingPut) -> Response {
    debug_assert!(p.received <= p.total_len);
    if p.data.is_none() {
        // Held already: the same answer for every piece; done at the last one.
        let meta = backend.shard_meta(&p.owner, &p.key);
        if p.received < p.total_len {
            conn.put = Some(p);
        }
        return match meta {
            Some(meta) => stored(meta),
            // Deleted meanwhile (from another connection): the client uploads again.
            None => {
                conn.put = None;
                refuse(BackendError::new(ErrorCode::Busy, "the shard was deleted during its upload; try again"))
            }
        };
    }
    if p.received < p.total_len {
        let received = p.received;
        conn.put = Some(p);
        return Response::ShardPartial { received };
    }
    let result = finish_put(backend, &p);
    backend.buffer_release(p.reserved);
    result.map_or_else(refuse, stored)
}

/// Checks a complete upload and stores it.
fn finish_put(backend: &mut impl ShardBackend, p: &PendingPut) -> Result<ShardMeta, BackendError> {
    let data = p.data.as_deref().unwrap_or_default();
    debug_assert_eq!(data.len() as u64, p.total_len);
    let hash = *blake3::hash(data).as_bytes();
    if hash != p.key {
        return Err(BackendError::new(
            ErrorCode::Rejected,
            format!("hash mismatch: the {} bytes received hash to {}.., not to the key {}..", data.len(), short(&hash), short(&p.key)),
        ));
    }
    if let Some(meta) = backend.shard_meta(&p.owner, &p.key) {
        return Ok(meta);
    }
    // Other connections of the owner may have stored shards since the first piece.
    backend.shard_room(&p.owner).check(p.total_len)?;
    let meta = backend.shard_put(&p.owner, &p.key, data)?;
    debug_assert_eq!(meta.key, p.key);
    Ok(meta)
}

/// Handles a `ShardGet` of `owner`.
pub fn get(backend: &mut impl ShardBackend, conn: &mut Connection, owner: [u8; 32], key: [u8; 32], offset: u64, len: u64) -> Response {
    if owner == RESERVED_OWNER {
        return refuse(not_found(&key));
    }
    let cached = conn.read.as_ref().is_some_and(|r| r.owner == owner && r.key == key);
    if !cached {
        conn.drop_read(backend);
        let Some(meta) = backend.shard_meta(&owner, &key) else { return refuse(not_found(&key)) };
        if !backend.buffer_reserve(meta.len) {
            return refuse(BackendError::new(ErrorCode::Busy, "the node is buffering as many shard transfers as it can; try again"));
        }
        match backend.shard_get(&owner, &key) {
            Ok(bytes) => {
                let reserved = meta.len;
                if bytes.len() as u64 != reserved {
                    backend.buffer_release(reserved);
                    return refuse(BackendError::new(ErrorCode::Internal, "the store returned a shard of another length"));
                }
                conn.read = Some(CachedShard { owner, key, bytes, reserved });
            }
            Err(e) => {
                backend.buffer_release(meta.len);
                return refuse(e);
            }
        }
    }
    let Some(shard) = conn.read.as_ref() else { return refuse(not_found(&key)) };
    let total_len = shard.bytes.len() as u64;
    if offset > total_len {
        return refuse(BackendError::new(ErrorCode::BadRequest, format!("offset {offset} is past the shard's end ({total_len} bytes)")));
    }
    let take = len.min(SHARD_PIECE_BYTES as u64).min(total_len - offset);
    let data = shard.bytes[offset as usize..(offset + take) as usize].to_vec();
    // Keep the shard only while someone reads it in pieces: a read that reached the end
    // (or took it whole) gives the budget back now.
    if offset + take >= total_len {
        conn.drop_read(backend);
    }
    Response::ShardData { total_len, offset, data }
}

/// Handles a `ShardDelete` of `owner`.
pub fn delete(backend: &mut impl ShardBackend, conn: &mut Connection, owner: [u8; 32], key: [u8; 32]) -> Response {
    if conn.read.as_ref().is_some_and(|r| r.key == key) {
        conn.drop_read(backend);
    }
    if owner == RESERVED_OWNER || backend.shard_meta(&owner, &key).is_none() {
        return refuse(not_found(&key));
    }
    match backend.shard_delete(&owner, &key) {
        Ok(()) => Response::ShardDeleted,
        Err(e) => refuse(e),
    }
}

/// Handles a `ShardList` of `owner`.
pub fn list(backend: &mut impl ShardBackend, owner: [u8; 32], after: Option<[u8; 32]>) -> Response {
    if owner == RESERVED_OWNER {
        return Response::ShardList { shards: Vec::new(), more: false };
    }
    let mut shards = backend.shard_list(&owner, after.as_ref(), SHARD_LIST_MAX + 1);
    // A backend that ignores `after` or the order is put right here.
    shards.retain(|s| after.is_none_or(|a| s.key > a));
    shards.sort_unstable_by_key(|s| s.key);
    let more = shards.len() > SHARD_LIST_MAX;
    shards.truncate(SHARD_LIST_MAX);
    Response::ShardList { shards, more }
}

/// Handles a `ShardStat` of `owner`.
pub fn stat(backend: &mut impl ShardBackend, owner: [u8; 32], key: [u8; 32]) -> Response {
    if owner == RESERVED_OWNER {
        return refuse(not_found(&key));
    }
    match backend.shard_meta(&owner, &key) {
        Some(meta) => Response::ShardStat(meta),
        None => refuse(not_found(&key)),
    }
}

/// Handles a `ShardProve` of `owner`'s shard (any signer may ask).
pub fn prove(backend: &mut impl ShardBackend, owner: [u8; 32], key: [u8; 32], challenge: u64) -> Response {
    if owner == RESERVED_OWNER || backend.shard_meta(&owner, &key).is_none() {
        return refuse(not_found(&key));
    }
    match backend.shard_prove(&owner, &key, challenge) {
        Ok(p) => Response::ShardProof { len: p.meta.len, merkle_root: p.meta.merkle_root, chunk_index: p.chunk_index, chunk: p.chunk, path: p.path },
        Err(e) => refuse(e),
    }
}

/// Handles a `StoreInfo` of `owner`.
pub fn store_info(backend: &mut impl ShardBackend, owner: [u8; 32]) -> Response {
    let room = if owner == RESERVED_OWNER { StoreRoom::default() } else { backend.shard_room(&owner) };
    Response::StoreInfo {
        used_bytes: room.charged_bytes(),
        shards: room.shards,
        quota_bytes: room.quota_bytes,
        node_free_bytes: room.shard_free_bytes(),
    }
}

/// Handles `Peers`.
pub fn peers(backend: &mut impl ShardBackend) -> Response {
    let mut peers = backend.peers();
    peers.truncate(PEERS_MAX);
    Response::Peers(peers)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::message::Request;
    use alloc::collections::BTreeMap;
    use alloc::vec;

    /// An in-memory store with a quota, a capacity and the node-wide buffer budget.
    struct Mem {
        shards: BTreeMap<([u8; 32], [u8; 32]), Vec<u8>>,
        quota_bytes: u64,
        capacity_bytes: u64,
        reserve_bytes: u64,
        budget: BufferBudget,
        gets: usize,
        puts: usize,
    }

    impl Mem {
        fn new() -> Mem {
            Mem {
                shards: BTreeMap::new(),
                quota_bytes: 64 << 20,
                capacity_bytes: 256 << 20,
                reserve_bytes: 8 << 20,
                budget: BufferBudget::new(BUFFER_BYTES_MAX_DEFAULT),
                gets: 0,
                puts: 0,
            }
        }
        fn meta(key: &[u8; 32], bytes: &[u8]) -> ShardMeta {
            ShardMeta { key: *key, len: bytes.len() as u64, merkle_root: *blake3::hash(key).as_bytes() }
        }
    }

    impl ShardBackend for Mem {
        fn shard_room(&mut self, owner: &[u8; 32]) -> StoreRoom {
            let mine = self.shards.iter().filter(|((o, _), _)| o == owner);
            let (shards, bytes) = mine.fold((0, 0), |(n, b), (_, v)| (n + 1, b + v.len() as u64));
            let used: u64 = self.shards.values().map(|v| v.len() as u64 + SHARD_OVERHEAD_BYTES).sum();
            StoreRoom { bytes, shards, quota_bytes: self.quota_bytes, free_bytes: self.capacity_bytes - used, reserve_bytes: self.reserve_bytes }
        }
        fn shard_meta(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Option<ShardMeta> {
            assert_ne!(*owner, RESERVED_OWNER);
            self.shards.get(&(*owner, *key)).map(|v| Mem::meta(key, v))
        }
        fn shard_put(&mut self, owner: &[u8; 32], key: &[u8; 32], bytes: &[u8]) -> Result<ShardMeta, BackendError> {
            assert_eq!(blake3::hash(bytes).as_bytes(), key, "serve must check the hash first");
            self.puts += 1;
            self.shards.insert((*owner, *key), bytes.to_vec());
            Ok(Mem::meta(key, bytes))
        }
        fn shard_get(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Result<Vec<u8>, BackendError> {
            self.gets += 1;
            self.shards.get(&(*owner, *key)).cloned().ok_or_else(|| not_found(key))
        }
        fn shard_delete(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Result<(), BackendError> {
            self.shards.remove(&(*owner, *key)).map(|_| ()).ok_or_else(|| not_found(key))
        }
        fn shard_list(&mut self, owner: &[u8; 32], after: Option<&[u8; 32]>, max: usize) -> Vec<ShardMeta> {
            self.shards
                .iter()
                .filter(|((o, k), _)| o == owner && after.is_none_or(|a| k > a))
                .take(max)
                .map(|((_, k), v)| Mem::meta(k, v))
                .collect()
        }
        fn shard_prove(&mut self, owner: &[u8; 32], key: &[u8; 32], challenge: u64) -> Result<ShardProof, BackendError> {
            let v = self.shards.get(&(*owner, *key)).ok_or_else(|| not_found(key))?;
            Ok(ShardProof { meta: Mem::meta(key, v), chunk_index: challenge, chunk: v[..v.len().min(4096)].to_vec(), path: vec![[7; 32]] })
        }
        fn buffer_reserve(&mut self, bytes: u64) -> bool {
            self.budget.reserve(bytes)
        }
        fn buffer_release(&mut self, bytes: u64) {
            self.budget.release(bytes)
        }
        fn peers(&mut self) -> Vec<PeerInfo> {
            (0..300u16).map(|i| PeerInfo { address: [i as u8; 16], key: None, direct: false }).collect()
        }
    }

    const ALICE: [u8; 32] = [1; 32];
    const BOB: [u8; 32] = [2; 32];

    fn shard(len: usize, seed: u8) -> (Vec<u8>, [u8; 32]) {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let key = *blake3::hash(&bytes).as_bytes();
        (bytes, key)
    }

    fn code(r: &Response) -> Option<ErrorCode> {
        match r {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn message(r: &Response) -> &str {
        match r {
            Response::Error { message, .. } => message,
            _ => "",
        }
    }

    /// Uploads `bytes` in full pieces; returns every answer.
    fn upload(b: &mut Mem, c: &mut Connection, owner: [u8; 32], bytes: &[u8], key: [u8; 32]) -> Vec<Response> {
        let total_len = bytes.len() as u64;
        if bytes.is_empty() {
            return vec![put(b, c, owner, key, 0, 0, Vec::new())];
        }
        bytes
            .chunks(SHARD_PIECE_BYTES)
            .enumerate()
            .map(|(i, piece)| put(b, c, owner, key, total_len, (i * SHARD_PIECE_BYTES) as u64, piece.to_vec()))
            .collect()
    }

    fn read_all(b: &mut Mem, c: &mut Connection, owner: [u8; 32], key: [u8; 32]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        loop {
            match get(b, c, owner, key, out.len() as u64, u64::MAX) {
                Response::ShardData { total_len, offset, data } => {
                    assert_eq!(offset, out.len() as u64);
                    assert!(data.len() <= SHARD_PIECE_BYTES);
                    out.extend_from_slice(&data);
                    if out.len() as u64 == total_len {
                        return Ok(out);
                    }
                }
                other => return Err(format!("{other:?}")),
            }
        }
    }

    #[test]
    fn a_multi_piece_shard_is_stored_once_complete_and_reads_back() {
        let (mut b, mut c) = (Mem::new(), Connection::new());
        let (bytes, key) = shard(5 * SHARD_PIECE_BYTES / 2, 3);
        let answers = upload(&mut b, &mut c, ALICE, &bytes, key);
        assert_eq!(answers[0], Response::ShardPartial { received: SHARD_PIECE_BYTES as u64 });
        assert_eq!(answers[1], Response::ShardPartial { received: 2 * SHARD_PIECE_BYTES as u64 });
        assert!(matches!(answers[2], Response::ShardStored { key: k, len, .. } if k == key && len == bytes.len() as u64));
        assert_eq!((b.puts, b.budget.used_bytes(), c.held_bytes()), (1, 0, 0));
        // Whole, in pieces: the store is read once for all of them, and the buffer goes
        // back when the end is reached.
        assert_eq!(read_all(&mut b, &mut c, ALICE, key).unwrap(), bytes);
        assert_eq!((b.gets, b.budget.used_bytes()), (1, 0));
        // A range in the middle.
        let Response::ShardData { total_len, offset, data } = get(&mut b, &mut c, ALICE, key, 1000, 5000) else { panic!() };
        assert_eq!((total_len, offset, &data[..]), (bytes.len() as u64, 1000, &bytes[1000..6000]));
        assert_eq!(c.held_bytes(), bytes.len() as u64, "kept for the next range");
        // Anything but the next range ends the read (serve calls end_read).
        c.end_read(&mut b);
        assert_eq!((c.held_bytes(), b.budget.used_bytes()), (0, 0));
        let _ = get(&mut b, &mut c, ALICE, key, 1000, 5000);
        // Past the end: refused; at the end: empty.
        assert_eq!(code(&get(&mut b, &mut c, ALICE, key, bytes.len() as u64 + 1, 1)), Some(ErrorCode::BadRequest));
        assert!(matches!(get(&mut b, &mut c, ALICE, key, bytes.len() as u64, 9), Response::ShardData { data, .. } if data.is_empty()));
        assert_eq!(stat(&mut b, ALICE, key), Response::ShardStat(Mem::meta(&key, &bytes)));
        assert_eq!(list(&mut b, ALICE, None), Response::ShardList { shards: vec![Mem::meta(&key, &bytes)], more: false });
        assert_eq!(delete(&mut b, &mut c, ALICE, key), Response::ShardDeleted);
        assert_eq!(code(&stat(&mut b, ALICE, key)), Some(ErrorCode::NotFound));
        assert_eq!(code(&delete(&mut b, &mut c, ALICE, key)), Some(ErrorCode::NotFound));
        c.close(&mut b);
        assert_eq!(b.budget.used_bytes(), 0);
    }

    #[test]
    fn single_piece_and_empty_shards() {
        let (mut b, mut c) = (Mem::new(), Connection::new());
        for len in [0, 1, 4096, SHARD_PIECE_BYTES] {
            let (bytes, key) = shard(len, 9);
            let answers = upload(&mut b, &mut c, ALICE, &bytes, key);
            assert!(matches!(answers[..], [Response::ShardStored { len: l, .. }] if l == len as u64), "{len}: {answers:?}");
            assert_eq!(read_all(&mut b, &mut c, ALICE, key).unwrap(), bytes);
        }
        assert_eq!(b.budget.used_bytes(), 0);
    }

    #[test]
    fn another_owner_sees_nothing_and_touches_nothing() {
        let (mut b, mut c) = (Mem::new(), Connection::new());
        let (bytes, key) = shard(3000, 1);
        upload(&mut b, &mut c, ALICE, &bytes, key);
        let (_, absent) = shard(10, 77);
        // Bob's view of Alice's shard is the view of a shard that does not exist.
        for k in [key, absent] {
            let answers = [
                get(&mut b, &mut c, BOB, k, 0, 10),
                stat(&mut b, BOB, k),
                delete(&mut b, &mut c, BOB, k),
            ];
            for a in &answers {
                assert_eq!(code(a), Some(ErrorCode::NotFound), "{a:?}");
                assert_eq!(message(a), message(&answers[0]));
            }
        }
        assert_eq!(message(&stat(&mut b, BOB, key)).len(), message(&stat(&mut b, BOB, absent)).len());
        assert_eq!(list(&mut b, BOB, None), Response::ShardList { shards: vec![], more: false });
        assert!(matches!(store_info(&mut b, BOB), Response::StoreInfo { used_bytes: 0, shards: 0, .. }));
        assert!(b.shards.contains_key(&(ALICE, key)));
        // Anyone may ask for a proof of Alice's shard, naming her.
        assert!(matches!(prove(&mut b, ALICE, key, 5), Response::ShardProof { len: 3000, chunk_index: 5, .. }));
        assert_eq!(code(&prove(&mut b, BOB, key, 5)), Some(ErrorCode::NotFound));
        // The same bytes stored by Bob are Bob's own shard.
        upload(&mut b, &mut c, BOB, &bytes, key);
        assert_eq!(delete(&mut b, &mut c, BOB, key), Response::ShardDeleted);
        assert_eq!(read_all(&mut b, &mut c, ALICE, key).unwrap(), bytes);
    }

    #[test]
    fn the_node_namespace_is_unreachable() {
        let (mut b, mut c) = (Mem::new(), Connection::new());
        let (bytes, key) = shard(100, 4);
        b.shards.insert((RESERVED_OWNER, key), bytes.clone());
        assert_eq!(code(&put(&mut b, &mut c, RESERVED_OWNER, key, 100, 0, bytes)), Some(ErrorCode::Unauthorized));
        assert_eq!(code(&get(&mut b, &mut c, RESERVED_OWNER, key, 0, 100)), Some(ErrorCode::NotFound));
        assert_eq!(code(&stat(&mut b, RESERVED_OWNER, key)), Some(ErrorCode::NotFound));
        assert_eq!(code(&delete(&mut b, &mut c, RESERVED_OWNER, key)), Some(ErrorCode::NotFound));
        assert_eq!(code(&prove(&mut b, RESERVED_OWNER, key, 0)), Some(ErrorCode::NotFound));
        assert_eq!(list(&mut b, RESERVED_OWNER, None), Response::ShardList { shards: vec![], more: false });
        assert!(b.shards.contains_key(&(RESERVED_OWNER, key)));
    }

    #[test]
    fn quota_and_reserve_are_refused_with_their_names() {
        let (mut b, mut c) = (Mem::new(), Connection::new());
        b.quota_bytes = 3 << 20;
        let (one, k1) = shard(2 << 20, 1);
        assert!(matches!(upload(&mut b, &mut c, ALICE, &one, k1).last(), Some(Response::ShardStored { .. })));
        // 2 MiB + overhead used of 3 MiB: another MiB does not fit (the overheads count).
        let (two, k2) = shard(1 << 20, 2);
        let r = put(&mut b, &mut c, ALICE, k2, two.len() as u64, 0, two[..1000].to_vec());
        assert_eq!(code(&r), Some(ErrorCode::NoSpace));
        assert!(message(&r).starts_with("owner quota"), "{r:?}");
        assert_eq!((c.held_bytes(), b.budget.used_bytes()), (0, 0), "refused at the first piece, nothing buffered");
        // Bob has his own quota.
        assert!(matches!(upload(&mut b, &mut c, BOB, &two, k2).last(), Some(Response::ShardStored { .. })));
        // The node's reserve.
        b.quota_bytes = 1 << 40;
        b.capacity_bytes = (12 << 20) + 3 * SHARD_OVERHEAD_BYTES;
        let (three, k3) = shard(2 << 20, 3);
        let r = put(&mut b, &mut c, ALICE, k3, three.len() as u64, 0, three[..10].to_vec());
        assert_eq!(code(&r), Some(ErrorCode::NoSpace));
        assert!(message(&r).starts_with("node reserve"), "{r:?}");
        assert!(matches!(store_info(&mut b, ALICE), Response::StoreInfo { shards: 1, used_bytes, node_free_bytes, .. }
            if used_bytes == (2 << 20) + SHARD_OVERHEAD_BYTES && node_free_bytes == (1 << 20) + SHARD_OVERHEAD_BYTES));
    }

    #[test]
    fn quota_is_checked_again_before_storing() {
        let mut b = Mem::new();
        b.quota_bytes = (3 << 20) + 2 * SHARD_OVERHEAD_BYTES;
        let (mut c1, mut c2) = (Connection::new(), Connection::new());
        let (x, kx) = shard(2 << 20, 1);
        let (y, ky) = shard(2 << 20, 2);
        // Both uploads start while both fit on their own...
        assert!(matches!(put(&mut b, &mut c1, ALICE, kx, x.len() as u64, 0, x[..SHARD_PIECE_BYTES].to_vec()), Response::ShardPartial { .. }));
        assert!(matches!(put(&mut b, &mut c2, ALICE, ky, y.len() as u64, 0, y[..SHARD_PIECE_BYTES].to_vec()), Response::ShardPartial { .. }));
        // ...the first to finish is stored, the second no longer fits.
        let n = SHARD_PIECE_BYTES as u64;
        assert!(matches!(put(&mut b, &mut c1, ALICE, kx, x.len() as u64, n, x[SHARD_PIECE_BYTES..].to_vec()), Response::ShardStored { .. }));
        let r = put(&mut b, &mut c2, ALICE, ky, y.len() as u64, n, y[SHARD_PIECE_BYTES..].to_vec());
        assert!(message(&r).starts_with("owner quota"), "{r:?}");
        assert_eq!((b.puts, b.budget.used_bytes(), c2.held_bytes()), (1, 0, 0));
    }

    #[test]
    fn pieces_must_come_in_order_on_one_connection() {
        let (bytes, key) = shard(3 * SHARD_PIECE_BYTES, 5);
        let (_, other) = shard(3 * SHARD_PIECE_BYTES, 6);
        let total = bytes.len() as u64;
        let p = |i: usize| bytes[i * SHARD_PIECE_BYTES..(i + 1) * SHARD_PIECE_BYTES].to_vec();
        let n = SHARD_PIECE_BYTES as u64;
        // (what, signer, key, announced length, offset, piece) after the first piece.
        type Case = (&'static str, [u8; 32], [u8; 32], u64, u64, Vec<u8>);
        let cases: [Case; 5] = [
            ("a gap", ALICE, key, total, 2 * n, p(2)),
            ("another key", ALICE, other, total, n, p(1)),
            ("another length", ALICE, key, total + 1, n, p(1)),
            ("another signer", BOB, key, total, n, p(1)),
            ("an empty piece", ALICE, key, total, n, Vec::new()),
        ];
        for case in cases {
            let what = case.0;
            let (mut b, mut c) = (Mem::new(), Connection::new());
            assert!(matches!(put(&mut b, &mut c, ALICE, key, total, 0, p(0)), Response::ShardPartial { .. }));
            let (_, signer, k, t, offset, piece) = case.clone();
            let r = put(&mut b, &mut c, signer, k, t, offset, piece);
            assert_eq!(code(&r), Some(ErrorCode::BadRequest), "{what}: {r:?}");
            // The upload is dropped with its buffer; a continuation finds nothing.
            assert_eq!((c.held_bytes(), b.budget.used_bytes()), (0, 0), "{what}");
            assert_eq!(code(&put(&mut b, &mut c, ALICE, key, total, n, p(1))), Some(ErrorCode::BadRequest), "{what}");
            assert_eq!(b.puts, 0, "{what}");
            // Starting over works.
            let answers = upload(&mut b, &mut c, ALICE, &bytes, key);
            assert!(matches!(answers.last(), Some(Response::ShardStored { .. })), "{what}");
        }
        // Without any upload, a piece past 0 is refused; oversize pieces and shards too.
        let (mut b, mut c) = (Mem::new(), Connection::new());
        assert_eq!(code(&put(&mut b, &mut c, ALICE, key, total, n, p(1))), Some(ErrorCode::BadRequest));
        assert_eq!(code(&put(&mut b, &mut c, ALICE, key, total, 0, vec![0; SHARD_PIECE_BYTES + 1])), Some(ErrorCode::BadRequest));
        assert_eq!(code(&put(&mut b, &mut c, ALICE, key, SHARD_BYTES_MAX + 1, 0, vec![0; 10])), Some(ErrorCode::BadRequest));
        assert_eq!(code(&put(&mut b, &mut c, ALICE, key, 10, 0, vec![0; 11])), Some(ErrorCode::BadRequest));
        assert_eq!(b.budget.used_bytes(), 0);
    }

    #[test]
    fn a_repeated_or_overlong_piece_is_refused() {
        let (bytes, key) = shard(3 * SHARD_PIECE_BYTES, 5);
        let total = bytes.len() as u64;
        let n = SHARD_PIECE_BYTES as u64;
        let (mut b, mut c) = (Mem::new(), Connection::new());
        put(&mut b, &mut c, ALICE, key, total, 0, bytes[..SHARD_PIECE_BYTES].to_vec());
        put(&mut b, &mut c, ALICE, key, total, n, bytes[SHARD_PIECE_BYTES..2 * SHARD_PIECE_BYTES].to_vec());
        // The second piece again.
        let r = put(&mut b, &mut c, ALICE, key, total, n, bytes[SHARD_PIECE_BYTES..2 * SHARD_PIECE_BYTES].to_vec());
        assert_eq!(code(&r), Some(ErrorCode::BadRequest));
        assert_eq!(b.budget.used_bytes(), 0);
        // A last piece running past the announced length.
        let short_total = total - 10;
        put(&mut b, &mut c, ALICE, key, short_total, 0, bytes[..SHARD_PIECE_BYTES].to_vec());
        put(&mut b, &mut c, ALICE, key, short_total, n, bytes[SHARD_PIECE_BYTES..2 * SHARD_PIECE_BYTES].to_vec());
        let r = put(&mut b, &mut c, ALICE, key, short_total, 2 * n, bytes[2 * SHARD_PIECE_BYTES..].to_vec());
        assert_eq!(code(&r), Some(ErrorCode::BadRequest));
        assert_eq!((b.budget.used_bytes(), b.puts), (0, 0));
    }

    #[test]
    fn a_hash_mismatch_is_rejected_and_nothing_is_stored() {
        let (mut b, mut c) = (Mem::new(), Connection::new());
        let (mut bytes, key) = shard(2 * SHARD_PIECE_BYTES + 7, 8);
        bytes[SHARD_PIECE_BYTES + 3] ^= 1;
        let answers = upload(&mut b, &mut c, ALICE, &bytes, key);
        let last = answers.last().unwrap();
        assert_eq!(code(last), Some(ErrorCode::Rejected), "{last:?}");
        assert!(message(last).starts_with("hash mismatch"));
        assert_eq!((b.puts, b.shards.len(), b.budget.used_bytes(), c.held_bytes()), (0, 0, 0, 0));
    }

    #[test]
    fn a_held_shard_is_acknowledged_at_once_and_not_buffered() {
        let (mut b, mut c) = (Mem::new(), Connection::new());
        let (bytes, key) = shard(3 * SHARD_PIECE_BYTES, 2);
        upload(&mut b, &mut c, ALICE, &bytes, key);
        let answers = upload(&mut b, &mut c, ALICE, &bytes, key);
        assert!(answers.iter().all(|a| matches!(a, Response::ShardStored { key: k, .. } if *k == key)), "{answers:?}");
        assert_eq!((b.puts, b.budget.used_bytes()), (1, 0));
        // A client that stops after the first answer leaves nothing buffered either.
        let first = put(&mut b, &mut c, ALICE, key, bytes.len() as u64, 0, bytes[..SHARD_PIECE_BYTES].to_vec());
        assert!(matches!(first, Response::ShardStored { .. }));
        assert_eq!(c.held_bytes(), 0);
        // Claiming another length for a held key is refused.
        assert_eq!(code(&put(&mut b, &mut c, ALICE, key, 5, 0, vec![1; 5])), Some(ErrorCode::Rejected));
    }

    #[test]
    fn the_node_wide_buffer_budget_turns_uploads_and_reads_busy() {
        let mut b = Mem::new();
        b.budget = BufferBudget::new(2 * SHARD_BYTES_MAX);
        let mut conns: Vec<Connection> = (0..3).map(|_| Connection::new()).collect();
        let (big, kbig) = shard(SHARD_BYTES_MAX as usize, 1);
        let first = big[..SHARD_PIECE_BYTES].to_vec();
        for c in conns.iter_mut().take(2) {
            assert!(matches!(put(&mut b, c, ALICE, kbig, SHARD_BYTES_MAX, 0, first.clone()), Response::ShardPartial { .. }));
        }
        assert_eq!(b.budget.used_bytes(), 2 * SHARD_BYTES_MAX);
        let r = put(&mut b, &mut conns[2], BOB, kbig, SHARD_BYTES_MAX, 0, first.clone());
        assert_eq!(code(&r), Some(ErrorCode::Busy), "{r:?}");
        // Reads take from the same budget.
        let (small, ksmall) = shard(SHARD_PIECE_BYTES + 1, 2);
        b.shards.insert((BOB, ksmall), small);
        assert_eq!(code(&get(&mut b, &mut conns[2], BOB, ksmall, 0, 1)), Some(ErrorCode::Busy));
        // A connection that goes away gives its share back.
        let mut gone = conns.remove(0);
        gone.close(&mut b);
        assert_eq!(b.budget.used_bytes(), SHARD_BYTES_MAX);
        assert!(matches!(get(&mut b, &mut conns[1], BOB, ksmall, 0, 1), Response::ShardData { .. }));
        for mut c in conns {
            c.close(&mut b);
        }
        assert_eq!(b.budget.used_bytes(), 0);
    }

    #[test]
    fn lists_page_in_key_order() {
        let (mut b, mut c) = (Mem::new(), Connection::new());
        let mut keys = Vec::new();
        for i in 0..(SHARD_LIST_MAX + 5) {
            let bytes = (i as u32).to_le_bytes().to_vec();
            let key = *blake3::hash(&bytes).as_bytes();
            assert!(matches!(put(&mut b, &mut c, ALICE, key, bytes.len() as u64, 0, bytes), Response::ShardStored { .. }));
            keys.push(key);
        }
        keys.sort_unstable();
        let Response::ShardList { shards, more } = list(&mut b, ALICE, None) else { panic!() };
        assert_eq!((shards.len(), more), (SHARD_LIST_MAX, true));
        assert!(shards.windows(2).all(|w| w[0].key < w[1].key));
        let Response::ShardList { shards: rest, more } = list(&mut b, ALICE, shards.last().map(|s| s.key)) else { panic!() };
        assert_eq!((rest.len(), more), (5, false));
        let all: Vec<[u8; 32]> = shards.iter().chain(rest.iter()).map(|s| s.key).collect();
        assert_eq!(all, keys);
    }

    #[test]
    fn peers_are_capped() {
        let mut b = Mem::new();
        assert!(matches!(peers(&mut b), Response::Peers(p) if p.len() == PEERS_MAX));
    }

    #[test]
    fn a_full_piece_fits_the_piece_frame_bound() {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([3; 32]));
        let request = Request::ShardPut { key: [0xff; 32], total_len: u64::MAX, offset: u64::MAX, data: vec![0xff; SHARD_PIECE_BYTES] };
        let body = postcard::to_allocvec(&request).unwrap();
        let signed = crate::SignedRequest { owner: *kp.pk, seq: u64::MAX, request: body, signature: vec![0xff; 64] };
        let frame = postcard::to_allocvec(&signed).unwrap();
        assert!(frame.len() <= SHARD_PIECE_FRAME_BYTES_MAX, "{}", frame.len());
        let data = Response::ShardData { total_len: u64::MAX, offset: u64::MAX, data: vec![0xff; SHARD_PIECE_BYTES] };
        assert!(postcard::to_allocvec(&data).unwrap().len() <= SHARD_PIECE_FRAME_BYTES_MAX);
    }

    proptest::proptest! {
        /// Any mix of pieces, reads, deletes, stats and ends of reads, from two signers
        /// on three connections, with closes in between: nothing panics, the budget never
        /// goes past its bound, what the connections hold is what the budget counts,
        /// every stored shard's bytes hash to its key, and a read returns the bytes of the
        /// signer's own shard or nothing.
        #[test]
        fn random_requests_keep_the_books(
            steps in proptest::collection::vec(
                (0usize..3, proptest::prelude::any::<bool>(), 0u8..4, 0u64..5, 0usize..5, 0u8..8),
                0..60,
            ),
        ) {
            let mut b = Mem::new();
            b.budget = BufferBudget::new(3 * 4096);
            let mut conns: Vec<Connection> = (0..3).map(|_| Connection::new()).collect();
            let shards: Vec<(Vec<u8>, [u8; 32])> = (0..4).map(|i| shard(3 * 1024 + i, i as u8)).collect();
            for (ci, bob, si, piece, len_k, op) in steps {
                let c = &mut conns[ci];
                let (bytes, key) = &shards[si as usize];
                let owner = if bob { BOB } else { ALICE };
                let offset = piece * 1024;
                match op {
                    0 => c.close(&mut b),
                    1 => {
                        let held = b.shards.get(&(owner, *key)).cloned();
                        match get(&mut b, c, owner, *key, offset, len_k as u64 * 700) {
                            Response::ShardData { total_len, offset: at, data } => {
                                let held = held.unwrap_or_default();
                                proptest::prop_assert_eq!(total_len, held.len() as u64);
                                proptest::prop_assert_eq!(&held[at as usize..at as usize + data.len()], &data[..]);
                            }
                            other => proptest::prop_assert!(code(&other).is_some()),
                        }
                    }
                    2 => {
                        let _ = delete(&mut b, c, owner, *key);
                    }
                    3 => {
                        let _ = stat(&mut b, owner, *key);
                        c.end_read(&mut b);
                    }
                    _ => {
                        let end = (offset as usize + len_k * 512).min(bytes.len());
                        let data = bytes.get(offset as usize..end).map(<[u8]>::to_vec).unwrap_or_default();
                        let _ = put(&mut b, c, owner, *key, bytes.len() as u64, offset, data);
                    }
                }
                let held: u64 = conns.iter().map(Connection::held_bytes).sum();
                proptest::prop_assert_eq!(held, b.budget.used_bytes());
                proptest::prop_assert!(b.budget.used_bytes() <= 3 * 4096);
            }
            for ((_, key), v) in &b.shards {
                proptest::prop_assert_eq!(*blake3::hash(v).as_bytes(), *key);
            }
            for mut c in conns {
                c.close(&mut b);
            }
            proptest::prop_assert_eq!(b.budget.used_bytes(), 0);
        }
    }
}
