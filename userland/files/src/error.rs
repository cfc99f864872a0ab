//! The one error type of the files core: every refusal is a variant, never a panic.

use alloc::vec::Vec;
use core::fmt;

/// Why encoding, decoding or opening a manifest failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilesError {
    /// K = 0, M = 0, K + M > 256, a segment of 0 or more than 64 MiB, or shards beyond the node limit.
    BadParams,
    /// A segment's plaintext is longer than `Params::segment_bytes`.
    SegmentTooLarge {
        /// The plaintext length given.
        len_bytes: u64,
        /// The segment size of the file.
        max_bytes: u32,
    },
    /// The caller passed a shard slice whose length is not K + M (or the manifest's count).
    ShardCount {
        /// K + M.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// Fewer than K shards of a segment are present and intact: the segment is lost.
    TooFewShards {
        /// The segment.
        segment: u64,
        /// Shards present whose hash matched.
        usable: usize,
        /// K.
        needed: usize,
        /// Indices of shards that were present but failed their hash (counted as missing).
        corrupt: Vec<usize>,
    },
    /// The AEAD refused a segment whose shards all matched the manifest: the key is wrong
    /// (another owner's seed, or a manifest that does not belong to this file).
    WrongKey {
        /// The segment that failed.
        segment: u64,
    },
    /// The sealed manifest did not open: wrong owner seed, or its bytes were altered.
    ManifestSeal,
    /// The sealed manifest's blake3 is not the file id asked for.
    ManifestId,
    /// The manifest opened but does not describe a well-formed file (version, counts, lengths).
    ManifestFormat(&'static str),
    /// The sealed manifest is larger than [`crate::MANIFEST_SEALED_BYTES_MAX`].
    ManifestTooLarge,
    /// Reed-Solomon refused the shards (inconsistent lengths after the checks: a bug, not input).
    Erasure,
}

impl fmt::Display for FilesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilesError::BadParams => write!(f, "bad erasure parameters (need K>=1, M>=1, K+M<=256, shards within the node limit)"),
            FilesError::SegmentTooLarge { len_bytes, max_bytes } => {
                write!(f, "segment of {len_bytes} bytes exceeds the segment size {max_bytes}")
            }
            FilesError::ShardCount { expected, got } => write!(f, "expected {expected} shard slots, got {got}"),
            FilesError::TooFewShards { segment, usable, needed, corrupt } => write!(
                f,
                "segment {segment} is lost: {usable} intact shards, {needed} needed (corrupt: {corrupt:?})"
            ),
            FilesError::WrongKey { segment } => {
                write!(f, "segment {segment} does not decrypt: wrong key for this file")
            }
            FilesError::ManifestSeal => write!(f, "manifest does not open: wrong key or altered bytes"),
            FilesError::ManifestId => write!(f, "manifest bytes do not hash to the file id"),
            FilesError::ManifestFormat(why) => write!(f, "malformed manifest: {why}"),
            FilesError::ManifestTooLarge => write!(f, "sealed manifest too large"),
            FilesError::Erasure => write!(f, "reed-solomon refused the shards"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FilesError {}
