//! Storage proofs: a blake3 Merkle tree over a shard's fixed-size chunks.
//!
//! A shard of `len` bytes is cut into `max(1, ceil(len / 4096))` chunks of
//! [`CHUNK_SIZE_BYTES`] (the last one may be short; an empty shard has one empty chunk).
//! - leaf `i` = `blake3(0x00 || chunk_i)`;
//! - parent   = `blake3(0x01 || left || right)`;
//! - a level with an odd number of nodes carries its last node up unchanged.
//!
//! The store computes the root at `put` and keeps it in the record header. A proof for
//! challenge `c` is chunk `c mod chunk_count`, its bytes, and the sibling hashes from the
//! leaf up (levels where the node has no sibling contribute nothing). Anyone holding
//! `(root, shard_len)` checks it with [`verify_proof`]; the tree's shape follows from
//! `shard_len`, so a proof cannot pick another chunk or a shorter path. The root does
//! not commit to `shard_len` by itself (some proofs also verify under another length
//! with the same chunk), so a verifier takes both from the same trusted record.

use alloc::vec::Vec;

use crate::layout::CHUNK_SIZE_BYTES;

/// Levels of a tree over at most 2^64 chunks; bounds every loop here.
const TREE_LEVELS_MAX: usize = 65;

/// Proof that a node holds chunk `chunk_index` of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageProof {
    /// Which chunk: `challenge mod chunk_count`.
    pub chunk_index: u64,
    /// The chunk's bytes.
    pub chunk: Vec<u8>,
    /// Sibling hashes from the leaf level upwards.
    pub path: Vec<[u8; 32]>,
}

/// Number of chunks of a shard of `shard_len_bytes`.
pub fn chunk_count(shard_len_bytes: u64) -> u64 {
    shard_len_bytes.div_ceil(CHUNK_SIZE_BYTES as u64).max(1)
}

fn leaf_hash(chunk: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0x00]);
    hasher.update(chunk);
    *hasher.finalize().as_bytes()
}

fn parent_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[0x01]);
    hasher.update(left);
    hasher.update(right);
    *hasher.finalize().as_bytes()
}

fn leaves(shard: &[u8]) -> Vec<[u8; 32]> {
    if shard.is_empty() {
        return alloc::vec![leaf_hash(&[])];
    }
    shard.chunks(CHUNK_SIZE_BYTES).map(leaf_hash).collect()
}

fn next_level(level: &[[u8; 32]]) -> Vec<[u8; 32]> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [left, right] => parent_hash(left, right),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two nodes"),
        })
        .collect()
}

/// The Merkle root of `shard`.
pub fn merkle_root(shard: &[u8]) -> [u8; 32] {
    let mut level = leaves(shard);
    for _ in 0..TREE_LEVELS_MAX {
        if level.len() == 1 {
            return level[0];
        }
        level = next_level(&level);
    }
    unreachable!("a tree over at most 2^64 leaves has at most 65 levels")
}

/// The proof for `challenge` over `shard` (whose bytes the caller has verified).
pub fn build_proof(shard: &[u8], challenge: u64) -> StorageProof {
    let count = chunk_count(shard.len() as u64);
    let chunk_index = challenge % count;
    let chunk_start_bytes = (chunk_index as usize) * CHUNK_SIZE_BYTES;
    let chunk_end_bytes = (chunk_start_bytes + CHUNK_SIZE_BYTES).min(shard.len());
    let chunk = shard[chunk_start_bytes..chunk_end_bytes].to_vec();

    let mut path = Vec::new();
    let mut level = leaves(shard);
    let mut index = chunk_index as usize;
    for _ in 0..TREE_LEVELS_MAX {
        if level.len() == 1 {
            break;
        }
        if let Some(sibling) = level.get(index ^ 1) {
            path.push(*sibling);
        }
        level = next_level(&level);
        index /= 2;
    }
    assert!(level.len() == 1);
    StorageProof { chunk_index, chunk, path }
}

/// Checks `proof` for `challenge` against a shard known by its Merkle `root` and length.
/// Never panics, whatever the proof contains.
pub fn verify_proof(root: &[u8; 32], shard_len: u64, challenge: u64, proof: &StorageProof) -> bool {
    let count = chunk_count(shard_len);
    let chunk_index = challenge % count;
    if proof.chunk_index != chunk_index {
        return false;
    }
    let chunk_start_bytes = chunk_index * CHUNK_SIZE_BYTES as u64;
    let chunk_len_bytes = (shard_len - chunk_start_bytes).min(CHUNK_SIZE_BYTES as u64);
    if proof.chunk.len() as u64 != chunk_len_bytes {
        return false;
    }

    let mut hash = leaf_hash(&proof.chunk);
    let mut siblings = proof.path.iter();
    let mut index = chunk_index;
    let mut level_len = count;
    for _ in 0..TREE_LEVELS_MAX {
        if level_len == 1 {
            break;
        }
        let sibling_index = index ^ 1;
        if sibling_index < level_len {
            let Some(sibling) = siblings.next() else {
                return false;
            };
            hash = if index.is_multiple_of(2) {
                parent_hash(&hash, sibling)
            } else {
                parent_hash(sibling, &hash)
            };
        }
        index /= 2;
        level_len = level_len.div_ceil(2);
    }
    siblings.next().is_none() && hash == *root
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
    /// tree follow from the shard length) never does. The root alone does not commit
    /// to the length: chunk 0 of a 3-chunk shard has the same path as in a 4-chunk
    /// tree (an odd node is carried up), so that proof also verifies as 4 chunks;
    /// verifiers must take the length from where they take the root (the ledger).
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
}
