//! The shard service's node side: `control::ShardBackend` over the node's shard store
//! ([`crate::storage`], owners' namespaces) and the overlay's routing table
//! ([`crate::overlay::ROUTES`]). The rules (namespaces, ordered pieces, hash check, quota
//! and reserve checks, buffer bounds) are the `control` crate's (`control::shard`); this
//! module only answers its questions and holds the node-wide numbers.
//!
//! Command line:
//! - `gridos.store.owner_quota_mib=N`: bytes one owner's shards may take (each shard
//!   counts its length plus `control::SHARD_OVERHEAD_BYTES`); default a third of the
//!   store's capacity (as the workloads' fair share: three owners fill the node).
//! - `gridos.store.reserve_mib=N` (default 64): store bytes kept free for the node's own
//!   data (workload files and tables); a shard that would eat into it is refused.
//!
//! Buffers: shard uploads and reads in progress hold at most an eighth of the kernel
//! heap's ceiling over all connections ([`BUFFERS`]), at least one largest shard
//! (`control::SHARD_BYTES_MAX`) and at most `control::shard::BUFFER_BYTES_MAX_DEFAULT`
//! (48 MiB): 48 MiB on a 512 MiB node. (The workloads' admission keeps the larger of an
//! eighth of the ceiling and 32 MiB for the kernel; these buffers are part of that.)

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use control::shard::{BUFFER_BYTES_MAX_DEFAULT, RESERVED_OWNER};
use control::{BackendError, BufferBudget, ErrorCode, PeerInfo, ShardBackend, ShardMeta, ShardProof, StoreRoom};
use spin::Mutex;

use crate::cmdline::Cmdline;
use crate::control::KernelBackend;
use crate::storage::{self, Error};

const MIB: u64 = 1 << 20;
/// Default of `gridos.store.reserve_mib`.
pub const RESERVE_MIB_DEFAULT: u64 = 64;
/// `gridos.store.owner_quota_mib` when given (else a third of the capacity).
static OWNER_QUOTA_BYTES: AtomicU64 = AtomicU64::new(u64::MAX);
static RESERVE_BYTES: AtomicU64 = AtomicU64::new(RESERVE_MIB_DEFAULT * MIB);
/// Shard bytes buffered by all connections' uploads and reads (sized at [`init`]).
static BUFFERS: Mutex<BufferBudget> = Mutex::new(BufferBudget::new(control::SHARD_BYTES_MAX));

// The service's owners are the store's, and its largest shard fits the store.
const _: () = assert!(matches!(RESERVED_OWNER, storage::NODE_OWNER));
const _: () = assert!(control::SHARD_BYTES_MAX <= shardstore::SHARD_SIZE_MAX_BYTES as u64);

/// Reads the command line's numbers and logs them (call after `storage::init`).
pub fn init(cmdline: &Cmdline<'_>) {
    if let Some(mib) = cmdline.get_u64("gridos.store.owner_quota_mib") {
        OWNER_QUOTA_BYTES.store(mib.saturating_mul(MIB), Ordering::Relaxed);
    }
    if let Some(mib) = cmdline.get_u64("gridos.store.reserve_mib") {
        RESERVE_BYTES.store(mib.saturating_mul(MIB), Ordering::Relaxed);
    }
    let buffers = (crate::mm::heap::ceiling_bytes() / 8).clamp(control::SHARD_BYTES_MAX, BUFFER_BYTES_MAX_DEFAULT);
    *BUFFERS.lock() = BufferBudget::new(buffers);
    let capacity = storage::stat().capacity_bytes;
    log::info!(
        "shards: owner quota {} MiB{}, node reserve {} MiB, {} MiB of buffers for transfers",
        owner_quota_bytes(capacity) / MIB,
        if OWNER_QUOTA_BYTES.load(Ordering::Relaxed) == u64::MAX { " (a third of the store)" } else { "" },
        RESERVE_BYTES.load(Ordering::Relaxed) / MIB,
        buffers / MIB,
    );
}

fn owner_quota_bytes(capacity_bytes: u64) -> u64 {
    match OWNER_QUOTA_BYTES.load(Ordering::Relaxed) {
        u64::MAX => capacity_bytes / 3,
        set => set,
    }
}

/// Bytes of shard transfers buffered now (for diagnostics and tests).
pub fn buffered_bytes() -> u64 {
    BUFFERS.lock().used_bytes()
}

fn meta(key: &[u8; 32], info: storage::ShardInfo) -> ShardMeta {
    ShardMeta { key: *key, len: info.len_bytes, merkle_root: info.merkle_root }
}

/// The store's error as the service's, typed (no matching on text).
fn refusal(key: &[u8; 32], e: Error) -> BackendError {
    match e {
        Error::NotFound => control::shard::not_found(key),
        Error::NoSpace => BackendError::new(ErrorCode::NoSpace, "no room in the node's store for this shard (space or records)"),
        Error::TooLarge => BackendError::new(ErrorCode::BadRequest, "the shard is larger than the store accepts"),
        Error::KeyMismatch => BackendError::new(ErrorCode::Rejected, "hash mismatch: the bytes do not hash to the key"),
        Error::Corrupt => BackendError::new(ErrorCode::Internal, "the node's copy of the shard is corrupt"),
        Error::Device(d) => BackendError::new(ErrorCode::Internal, format!("storage device: {d}")),
    }
}

impl ShardBackend for KernelBackend {
    fn shard_room(&mut self, owner: &[u8; 32]) -> StoreRoom {
        let stat = storage::stat();
        let usage = storage::owner_usage(owner);
        // On a ledger the quota is the bytes the owner's active storage contracts place
        // here; `StoreRoom` charges each shard its overhead too, which the contracts do
        // not count, so that is added for the stored shards and the one being put.
        let quota_bytes = match crate::ledger::storage_quota(owner) {
            Some(contracted) => contracted.saturating_add(usage.shards.saturating_add(1).saturating_mul(control::SHARD_OVERHEAD_BYTES)),
            None => owner_quota_bytes(stat.capacity_bytes),
        };
        StoreRoom {
            bytes: usage.bytes,
            shards: usage.shards,
            quota_bytes,
            free_bytes: stat.free_bytes,
            reserve_bytes: RESERVE_BYTES.load(Ordering::Relaxed),
        }
    }

    fn shard_meta(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Option<ShardMeta> {
        storage::info(owner, key).map(|info| meta(key, info))
    }

    fn shard_put(&mut self, owner: &[u8; 32], key: &[u8; 32], bytes: &[u8]) -> Result<ShardMeta, BackendError> {
        // `control` checked blake3(bytes) == key: the store does not hash them again.
        storage::put_checked(owner, key, bytes).map_err(|e| refusal(key, e))?;
        let info = storage::info(owner, key).ok_or_else(|| BackendError::new(ErrorCode::Internal, "the stored shard is not listed"))?;
        Ok(meta(key, info))
    }

    fn shard_get(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Result<Vec<u8>, BackendError> {
        storage::get(owner, key).map_err(|e| refusal(key, e))
    }

    fn shard_delete(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Result<(), BackendError> {
        storage::delete(owner, key).map_err(|e| refusal(key, e))
    }

    fn shard_list(&mut self, owner: &[u8; 32], after: Option<&[u8; 32]>, max: usize) -> Vec<ShardMeta> {
        storage::list_after(owner, after, max).into_iter().map(|(key, info)| meta(&key, info)).collect()
    }

    fn shard_prove(&mut self, owner: &[u8; 32], key: &[u8; 32], challenge: u64) -> Result<ShardProof, BackendError> {
        let info = storage::info(owner, key).ok_or_else(|| control::shard::not_found(key))?;
        let proof = storage::prove(owner, key, challenge).map_err(|e| refusal(key, e))?;
        Ok(ShardProof { meta: meta(key, info), chunk_index: proof.chunk_index, chunk: proof.chunk, path: proof.path })
    }

    fn buffer_reserve(&mut self, bytes: u64) -> bool {
        BUFFERS.lock().reserve(bytes)
    }

    fn buffer_release(&mut self, bytes: u64) {
        BUFFERS.lock().release(bytes)
    }

    fn peers(&mut self) -> Vec<PeerInfo> {
        crate::overlay::ROUTES
            .lock()
            .iter()
            .map(|p| PeerInfo { address: p.address, key: p.key, direct: p.direct })
            .collect()
    }
}
