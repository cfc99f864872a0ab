//! The state tree: a 256-level sparse Merkle tree over every state record, whose root each
//! block header commits to, so any read (present or absent) can be proven.
//!
//! The tree is nervos' `sparse-merkle-tree` 0.6 with its `trie` layout (branches stored
//! only where paths fork). `jmt` 0.12 was the first choice but does not build without std:
//! with `default-features = false` it still enables the default (std) features of
//! `anyhow`, `borsh`, `serde`, `hex`, `num-traits`, `tracing` and `digest`/`sha2`, so a
//! `#![no_std]` crate that links it gets std's `panic_impl` twice (checked with a probe
//! crate for this target). The nervos tree is `no_std` with `default-features = false`,
//! takes its hasher as a trait (blake3 here) and verifies compact compiled proofs without
//! panicking on malformed ones (we bound their size first).
//!
//! Position of a record: `blake3(DOMAIN_STATE_KEY || postcard(StateKey))`; leaf value:
//! `blake3(DOMAIN_STATE_VALUE || record bytes)`; an absent record is the zero leaf. This
//! module knows bytes only; [`crate::state`] knows the record types.

use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use sparse_merkle_tree::{default_store::DefaultStore, CompiledMerkleProof, SparseMerkleTree, H256};

use crate::crypto::{self, PublicKey, TreeHasher, DOMAIN_STATE_KEY, DOMAIN_STATE_VALUE};
use crate::error::ProofError;
use crate::{ContractId, FarmId, RECORD_BYTES_MAX, STATE_PROOF_BYTES_MAX};

/// Names one record of the state. Variant order is wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StateKey {
    /// Chain-wide values: height, period, counters, validator sets.
    Meta,
    /// An account's balance and nonce.
    Account(PublicKey),
    /// A farm.
    Farm(FarmId),
    /// A registered node.
    Node(PublicKey),
    /// A contract.
    Contract(ContractId),
}

impl StateKey {
    /// The record's position in the tree.
    pub fn path(&self) -> [u8; 32] {
        crypto::hash_parts(&[DOMAIN_STATE_KEY, &crypto::encode(self)])
    }
}

/// The leaf value of a record's bytes.
pub fn leaf_value(record: &[u8]) -> [u8; 32] {
    crypto::hash_parts(&[DOMAIN_STATE_VALUE, record])
}

/// A record (or its absence) and the proof that a state root commits to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProof {
    /// Which record.
    pub key: StateKey,
    /// Its postcard bytes, or `None` if the state has no such record.
    pub record: Option<Vec<u8>>,
    /// The compiled sparse-Merkle proof.
    pub proof: Vec<u8>,
}

impl StateProof {
    /// Checks the proof for `key` against `root` and returns the proven record bytes.
    /// Never panics, whatever the proof contains.
    pub fn verify(&self, root: &[u8; 32], key: &StateKey) -> Result<Option<&[u8]>, ProofError> {
        if self.key != *key {
            return Err(ProofError::WrongKey);
        }
        if self.proof.len() > STATE_PROOF_BYTES_MAX {
            return Err(ProofError::Decode);
        }
        let value = match &self.record {
            Some(bytes) if bytes.len() > RECORD_BYTES_MAX => return Err(ProofError::Decode),
            Some(bytes) => leaf_value(bytes),
            None => [0u8; 32],
        };
        let compiled = CompiledMerkleProof(self.proof.clone());
        let leaves = vec![(H256::from(key.path()), H256::from(value))];
        match compiled.verify::<TreeHasher>(&H256::from(*root), leaves) {
            Ok(true) => Ok(self.record.as_deref()),
            Ok(false) | Err(_) => Err(ProofError::Invalid),
        }
    }
}

/// The tree of leaf values (the records themselves live in [`crate::state::State`]).
#[derive(Default)]
pub struct StateTree {
    tree: SparseMerkleTree<TreeHasher, H256, DefaultStore<H256>>,
}

impl Clone for StateTree {
    fn clone(&self) -> Self {
        StateTree { tree: SparseMerkleTree::new(*self.tree.root(), self.tree.store().clone()) }
    }
}

/// The tree failed: a bug or memory exhaustion, never input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeError;

impl StateTree {
    /// Sets (`Some`) or removes (`None`) the records at once; returns the new root.
    pub fn update(&mut self, changes: Vec<(StateKey, Option<Vec<u8>>)>) -> Result<[u8; 32], TreeError> {
        let leaves: Vec<(H256, H256)> = changes
            .iter()
            .map(|(key, record)| {
                let value = record.as_deref().map(leaf_value).unwrap_or([0u8; 32]);
                (H256::from(key.path()), H256::from(value))
            })
            .collect();
        if !leaves.is_empty() {
            self.tree.update_all(leaves).map_err(|_| TreeError)?;
        }
        Ok(self.root())
    }

    /// The root over every record.
    pub fn root(&self) -> [u8; 32] {
        let mut root = [0u8; 32];
        root.copy_from_slice(self.tree.root().as_slice());
        root
    }

    /// The compiled proof for `key` (present or absent).
    pub fn prove(&self, key: &StateKey) -> Result<Vec<u8>, TreeError> {
        let path = H256::from(key.path());
        let proof = self.tree.merkle_proof(vec![path]).map_err(|_| TreeError)?;
        let compiled = proof.compile(vec![path]).map_err(|_| TreeError)?;
        Ok(compiled.0)
    }
}
