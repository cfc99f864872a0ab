//! Files over many nodes, the user's side: the sans-IO core that turns a file into encrypted,
//! erasure-coded shards and a sealed manifest, and back.
//!
//! A file is cut into segments of [`Params::segment_bytes`]. Each segment is sealed with
//! XChaCha20-Poly1305 under a per-file key ([`FileKey`], derived from the owner's secret seed and
//! the file's random nonce: the key never leaves the user's machine), then split with
//! reed-solomon-erasure into K data and M parity shards ([`encode_segment`]). Any K shards of a
//! segment rebuild it ([`decode_segment`]); each shard is checked against its blake3 key first,
//! so a corrupt shard counts as missing. The [`Manifest`] records every shard's key, length,
//! Merkle root (as `shardstore` computes it, so a node's storage proofs check against it) and
//! node; it is sealed under a key derived from the owner seed ([`Manifest::seal`]) and its
//! file id is the blake3 of the sealed bytes ([`file_id`]), i.e. the key of the manifest shard.
//!
//! This crate does no I/O and picks no nodes: placement, transport and randomness (the file
//! nonce) are the caller's. With feature `std`, [`stream`] adds bounded-memory `Putter` and
//! `Getter` pipelines over `std::io`, generic over a shard transport ([`stream::ShardSink`],
//! [`stream::ShardSource`]) that gridctl backs with the network and tests back with memory.

#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

extern crate alloc;

mod error;
mod key;
mod manifest;
mod segment;
#[cfg(feature = "std")]
pub mod stream;

pub use error::FilesError;
pub use key::FileKey;
pub use manifest::{
    file_id, Manifest, SegmentEntry, ShardRef, MANIFEST_CONTRACTS_MAX, MANIFEST_SEALED_BYTES_MAX, MANIFEST_VERSION,
    NAME_BYTES_MAX,
};
pub use segment::{
    ciphertext_len, decode_segment, decode_segment_report, encode_segment, rebuild_shards, seal_segment, shard_len,
    shard_ref, split_segment, verify_shards, DecodedSegment, EncodedSegment, TAG_BYTES,
};
/// Storage proofs as the nodes build them (checked against [`ShardRef::merkle_root`]).
pub use shardstore::{merkle_root, verify_proof, StorageProof};

use serde::{Deserialize, Serialize};

/// Largest shard the node's shard service accepts (`control::SHARD_BYTES_MAX`): [`Params`]
/// whose shards would be larger are refused.
pub const SHARD_BYTES_MAX: u64 = 16 << 20;
/// Largest segment: bounds the memory one segment takes while it is encoded or decoded.
pub const SEGMENT_BYTES_MAX: u32 = 64 << 20;
/// Most shards per segment (K + M) that GF(2^8) Reed-Solomon allows.
pub const SHARDS_PER_SEGMENT_MAX: usize = 256;

/// How a file is cut and coded: K data shards, M parity shards, segment size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// K: shards needed to rebuild a segment.
    pub data_shards: u8,
    /// M: shards of a segment that may be lost.
    pub parity_shards: u8,
    /// Plaintext bytes per segment (the last one may be shorter).
    pub segment_bytes: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params { data_shards: 4, parity_shards: 2, segment_bytes: 4 << 20 }
    }
}

impl Params {
    /// K + M.
    pub fn total_shards(&self) -> usize {
        usize::from(self.data_shards) + usize::from(self.parity_shards)
    }

    /// Checks K >= 1, M >= 1, K + M <= 256, 1 <= segment <= 64 MiB, and that a full segment's
    /// shards fit the node's shard limit.
    pub fn validate(&self) -> Result<(), FilesError> {
        let bad = self.data_shards == 0
            || self.parity_shards == 0
            || self.total_shards() > SHARDS_PER_SEGMENT_MAX
            || self.segment_bytes == 0
            || self.segment_bytes > SEGMENT_BYTES_MAX;
        if bad {
            return Err(FilesError::BadParams);
        }
        if shard_len(self, self.segment_bytes) > SHARD_BYTES_MAX {
            return Err(FilesError::BadParams);
        }
        Ok(())
    }
}
