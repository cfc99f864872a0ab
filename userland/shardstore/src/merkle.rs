//! Storage proofs over BLAKE3's own tree: the shard key is the proof root.
//!
//! BLAKE3 hashes its input as a binary tree of 1 KiB chunks (the "left-complete" tree:
//! a node over `n` bytes splits after the largest power-of-two number of chunks below
//! `n`). Groups of four chunks, [`CHUNK_SIZE_BYTES`] (4 KiB) starting at multiples of
//! 4 KiB, are subtrees of that tree (every split of a node longer than 4 KiB falls on a
//! 4 KiB boundary), so, as in Bao and the `bao-tree` crate, a 4 KiB group with the
//! chaining values of its siblings up to the root proves that the bytes hash to the
//! root. The root is `blake3::hash(shard)`: the store's key, so one hashing pass over a
//! shard at `put` gives its key, its proof root and its integrity check at once.
//!
//! A shard of `len` bytes has `max(1, ceil(len / 4096))` proof chunks (the last may be
//! short; an empty shard has one empty chunk). A proof for challenge `c` is chunk
//! `c mod chunk_count`, its bytes, and the sibling chaining values from the chunk up
//! (levels where it has none contribute nothing). Anyone holding `(root, shard_len)`
//! checks it with [`verify_proof`]: the tree's shape and the chunk's place (its offset
//! enters its chaining value) follow from `shard_len`, so a proof cannot pick another
//! chunk or a shorter path. The root commits to the bytes, and so to their length, but
//! a proof of a chunk away from the tree's right edge may also verify under another
//! claimed length whose tree has the same path (its siblings are taken as given), so a
//! verifier takes the length from the same trusted record as the root.

use alloc::vec::Vec;

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode};

use crate::layout::CHUNK_SIZE_BYTES;

/// Levels of a tree over at most 2^64 bytes; bounds every loop here.
const TREE_LEVELS_MAX: usize = 65;

const CHUNK_BYTES: u64 = CHUNK_SIZE_BYTES as u64;

// A proof chunk is a whole number of BLAKE3 chunks and a power of two of them, so every
// aligned one is a subtree of BLAKE3's tree.
const _: () = assert!(CHUNK_SIZE_BYTES.is_multiple_of(blake3::CHUNK_LEN));
const _: () = assert!((CHUNK_SIZE_BYTES / blake3::CHUNK_LEN).is_power_of_two());

/// Proof that a node holds chunk `chunk_index` of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageProof {
    /// Which chunk: `challenge mod chunk_count`.
    pub chunk_index: u64,
    /// The chunk's bytes.
    pub chunk: Vec<u8>,
    /// Sibling chaining values from the chunk's level upwards.
    pub path: Vec<[u8; 32]>,
}

/// Number of proof chunks of a shard of `shard_len_bytes`.
pub fn chunk_count(shard_len_bytes: u64) -> u64 {
    shard_len_bytes.div_ceil(CHUNK_BYTES).max(1)
}

/// The proof root of `shard`: its BLAKE3 hash, which is also its key in the store.
pub fn merkle_root(shard: &[u8]) -> [u8; 32] {
    *blake3::hash(shard).as_bytes()
}

/// The chaining value of the subtree holding `bytes` at `offset` of the shard
/// (`offset` a multiple of 4 KiB, `bytes` one node of the tree, not the root).
fn subtree_cv(offset: u64, bytes: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// Bytes of the left child of a node over `len_bytes` (> one chunk): the largest power
/// of two of chunks below `len_bytes` (BLAKE3's split, a multiple of 4 KiB here).
fn left_len(len_bytes: u64) -> u64 {
    // As `blake3::hazmat::left_subtree_len`, without its `len + 1` (which overflows on
    // a hostile `u64::MAX` length): the chunks after the first, rounded down to a power
    // of two.
    let more_chunks = (len_bytes - 1) / blake3::CHUNK_LEN as u64;
    (blake3::CHUNK_LEN as u64) << more_chunks.ilog2()
}

/// One step down from the root towards a chunk: the node split there and which side
/// the chunk is on.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// The node's first byte and its left child's length.
    offset: u64,
    left_bytes: u64,
    len_bytes: u64,
    /// The chunk is in the left child.
    went_left: bool,
}

/// The splits from the root down to the proof chunk at `chunk_start_bytes` of a shard
/// of `shard_len` bytes (> one chunk), root first. At most [`TREE_LEVELS_MAX`].
fn descent(shard_len: u64, chunk_start_bytes: u64) -> Vec<Step> {
    let mut steps = Vec::new();
    let (mut offset, mut len_bytes) = (0u64, shard_len);
    for _ in 0..TREE_LEVELS_MAX {
        if len_bytes <= CHUNK_BYTES {
            break;
        }
        let left_bytes = left_len(len_bytes);
        let went_left = chunk_start_bytes < offset + left_bytes;
        steps.push(Step { offset, left_bytes, len_bytes, went_left });
        if went_left {
            len_bytes = left_bytes;
        } else {
            offset += left_bytes;
            len_bytes -= left_bytes;
        }
    }
    steps
}

/// The proof for `challenge` over `shard` (whose bytes the caller has verified), as a
/// node answers it. Hashes every byte but the chunk's once (the siblings' subtrees).
pub fn build_proof(shard: &[u8], challenge: u64) -> StorageProof {
    let len = shard.len() as u64;
    let chunk_index = challenge % chunk_count(len);
    let chunk_start_bytes = chunk_index * CHUNK_BYTES;
    let chunk_end_bytes = (chunk_start_bytes + CHUNK_BYTES).min(len);
    let chunk = shard[chunk_start_bytes as usize..chunk_end_bytes as usize].to_vec();
    let mut path: Vec<[u8; 32]> = descent(len, chunk_start_bytes)
        .iter()
        .map(|step| {
            let (start, end) = if step.went_left {
                (step.offset + step.left_bytes, step.offset + step.len_bytes)
            } else {
                (step.offset, step.offset + step.left_bytes)
            };
            subtree_cv(start, &shard[start as usize..end as usize])
        })
        .collect();
    path.reverse();
    StorageProof { chunk_index, chunk, path }
}

/// Checks `proof` for `challenge` against a shard known by its root (its BLAKE3 hash,
/// the store key) and length. Never panics, whatever the proof contains.
pub fn verify_proof(root: &[u8; 32], shard_len: u64, challenge: u64, proof: &StorageProof) -> bool {
    let count = chunk_count(shard_len);
    let chunk_index = challenge % count;
    if proof.chunk_index != chunk_index {
        return false;
    }
    let chunk_start_bytes = chunk_index * CHUNK_BYTES;
    let chunk_len_bytes = (shard_len - chunk_start_bytes).min(CHUNK_BYTES);
    if proof.chunk.len() as u64 != chunk_len_bytes {
        return false;
    }
    if shard_len <= CHUNK_BYTES {
        // One chunk: it is the whole shard, hashed as the root.
        return proof.path.is_empty() && blake3::hash(&proof.chunk).as_bytes() == root;
    }
    let steps = descent(shard_len, chunk_start_bytes);
    if proof.path.len() != steps.len() {
        return false;
    }
    let mut cv = subtree_cv(chunk_start_bytes, &proof.chunk);
    // Bottom-up: the last step is the chunk's parent; the first is the root.
    for (level, (step, sibling)) in steps.iter().rev().zip(&proof.path).enumerate() {
        let (left, right) = if step.went_left { (&cv, sibling) } else { (sibling, &cv) };
        if level + 1 == steps.len() {
            return merge_subtrees_root(left, right, Mode::Hash).as_bytes() == root;
        }
        cv = merge_subtrees_non_root(left, right, Mode::Hash);
    }
    false
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::vec;

    fn shard(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// Every chunk of many shapes verifies under the true length. Under another
    /// claimed length a proof may verify only if that length selects the same chunk
    /// with the same length; the last chunk's proof (whose length and place in the
    /// tree follow from the shard length) never does. The proof alone does not commit
    /// to the length: chunk 0 of a 3-chunk shard has the same path as in a 4-chunk
    /// tree (the right subtree's chaining value is taken as given), so that proof also
    /// verifies as 4 chunks; verifiers must take the length from where they take the
    /// root (the ledger).
    #[test]
    fn every_chunk_of_many_shapes_verifies() {
        let mut accepted_elsewhere = 0;
        for len in [0, 1, 4095, 4096, 4097, 3 * 4096, 5 * 4096 + 17, 8 * 4096, 9 * 4096] {
            let data = shard(len);
            let root = merkle_root(&data);
            let count = chunk_count(len as u64);
            for challenge in 0..count + 3 {
                let proof = build_proof(&data, challenge);
                assert_eq!(proof.chunk_index, challenge % count);
                assert!(verify_proof(&root, len as u64, challenge, &proof), "len {len} c {challenge}");
                let len = len as u64;
                let others = [len + 1, len.saturating_sub(1), len + 4096, len.saturating_sub(4096), len + 4095, 2 * len + 1];
                for other in others.into_iter().filter(|&o| o != len) {
                    if !verify_proof(&root, other, challenge, &proof) {
                        continue;
                    }
                    accepted_elsewhere += 1;
                    let start = proof.chunk_index * CHUNK_SIZE_BYTES as u64;
                    assert_eq!(challenge % chunk_count(other), proof.chunk_index, "len {len} as {other}");
                    assert_eq!((other - start).min(CHUNK_SIZE_BYTES as u64), proof.chunk.len() as u64, "len {len} as {other}");
                    assert_ne!(proof.chunk_index, count - 1, "the last chunk of {len} verified as {other}");
                }
            }
        }
        // The case the docs above name is seen (so the loop checked something).
        let data = shard(3 * 4096);
        let proof = build_proof(&data, 0);
        assert!(verify_proof(&merkle_root(&data), 3 * 4096 + 1, 0, &proof));
        assert!(accepted_elsewhere > 0);
    }

    #[test]
    fn forged_proofs_fail() {
        let data = shard(5 * 4096 + 17);
        let len = data.len() as u64;
        let root = merkle_root(&data);
        let proof = build_proof(&data, 2);
        assert!(verify_proof(&root, len, 2, &proof));
        assert!(!verify_proof(&root, len, 3, &proof));
        let mut bad = proof.clone();
        bad.chunk[0] ^= 1;
        assert!(!verify_proof(&root, len, 2, &bad));
        let mut bad = proof.clone();
        bad.path.push([0; 32]);
        assert!(!verify_proof(&root, len, 2, &bad));
        let mut bad = proof.clone();
        bad.path.pop();
        assert!(!verify_proof(&root, len, 2, &bad));
        let mut bad = proof.clone();
        bad.path[0][0] ^= 1;
        assert!(!verify_proof(&root, len, 2, &bad));
        let mut bad = proof.clone();
        bad.chunk_index = 7;
        assert!(!verify_proof(&root, len, 2, &bad));
        let bad = StorageProof { chunk_index: 2, chunk: vec![0; 4096], path: vec![] };
        assert!(!verify_proof(&root, len, 2, &bad));
        assert!(!verify_proof(&[0; 32], len, 2, &proof));
        // A single-chunk shard: the root is the leaf hash and the path is empty.
        let small = shard(10);
        let proof = build_proof(&small, 99);
        assert!(proof.path.is_empty());
        assert!(verify_proof(&merkle_root(&small), 10, 99, &proof));
        assert!(!verify_proof(&merkle_root(&small), u64::MAX, 99, &proof));
    }

    /// The root is the shard's BLAKE3 hash (its store key), and the subtrees the proofs
    /// use rebuild it: the 4 KiB groups are nodes of BLAKE3's own tree.
    #[test]
    fn roots_are_blake3_hashes() {
        for len in [0, 1, 1024, 1025, 4096, 4097, 12 * 1024 + 5, 64 * 1024, 1 << 20] {
            let data = shard(len);
            assert_eq!(merkle_root(&data), *blake3::hash(&data).as_bytes(), "len {len}");
        }
        for len in [0u64, 1, 4095, 4096, 4097, 1 << 20, 1 << 40] {
            let more_chunks = len.saturating_sub(1) / 1024;
            if more_chunks > 0 {
                assert_eq!(left_len(len), blake3::hazmat::left_subtree_len(len), "len {len}");
            }
        }
    }

    /// Identical chunks at other places do not stand in for each other: a chunk's
    /// offset enters its chaining value.
    #[test]
    fn proofs_are_bound_to_their_place() {
        let data = vec![7u8; 6 * 4096];
        let root = merkle_root(&data);
        let len = data.len() as u64;
        for challenge in 0..6 {
            let proof = build_proof(&data, challenge);
            assert!(verify_proof(&root, len, challenge, &proof));
            for other in (0..6).filter(|&o| o != challenge) {
                let moved = StorageProof { chunk_index: other, ..proof.clone() };
                assert!(!verify_proof(&root, len, other, &moved), "chunk {challenge} as {other}");
            }
        }
        // Hostile lengths: no panic, no acceptance.
        let proof = build_proof(&data, 1);
        for len in [u64::MAX, u64::MAX - 4095, 1 << 63, (1 << 63) + 1] {
            for challenge in [0, 1, u64::MAX] {
                assert!(!verify_proof(&root, len, challenge, &proof));
            }
        }
    }
}
