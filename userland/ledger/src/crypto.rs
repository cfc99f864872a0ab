//! Hashes and signatures: every hash and every signed message of the ledger starts with its
//! own domain string, so bytes signed or hashed for one purpose never verify for another.
//!
//! Keys are ed25519 (`ed25519-compact`); hashes are blake3. Encodings are postcard.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Domain of a transaction's signing message.
pub const DOMAIN_TX: &[u8] = b"gridos-ledger/tx/v1\0";
/// Domain of a precommit vote's signing message.
pub const DOMAIN_VOTE: &[u8] = b"gridos-ledger/vote/v1\0";
/// Domain of a block header's hash.
pub const DOMAIN_HEADER: &[u8] = b"gridos-ledger/header/v1\0";
/// Domain of the hash over a block's transactions.
pub const DOMAIN_TXS: &[u8] = b"gridos-ledger/txs/v1\0";
/// Domain of a transaction id.
pub const DOMAIN_TX_ID: &[u8] = b"gridos-ledger/tx-id/v1\0";
/// Domain of a validator set's hash.
pub const DOMAIN_VALIDATORS: &[u8] = b"gridos-ledger/validators/v1\0";
/// Domain of the chain id (hash of the genesis).
pub const DOMAIN_GENESIS: &[u8] = b"gridos-ledger/genesis/v1\0";
/// Domain of a storage challenge.
pub const DOMAIN_CHALLENGE: &[u8] = b"gridos-ledger/challenge/v1\0";
/// Domain of a state key's position in the tree.
pub const DOMAIN_STATE_KEY: &[u8] = b"gridos-ledger/state-key/v1\0";
/// Domain of a state record's leaf value.
pub const DOMAIN_STATE_VALUE: &[u8] = b"gridos-ledger/state-value/v1\0";
/// blake3 key-derivation context of the state tree's inner nodes.
pub const CONTEXT_TREE: &str = "gridos-ledger 2026 state tree v1";

/// An ed25519 public key: an account, a node or a validator.
pub type PublicKey = [u8; 32];

/// blake3 over the concatenation of `parts`.
pub fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    *hasher.finalize().as_bytes()
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "serde_big_array::BigArray")] pub [u8; 64]);

impl core::fmt::Debug for Signature {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Signature({:02x}{:02x}{:02x}{:02x}..)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// Whether `signature` is `key`'s over `message`. Never panics on any bytes.
pub fn verify(key: &PublicKey, message: &[u8], signature: &Signature) -> bool {
    let Ok(key) = ed25519_compact::PublicKey::from_slice(key) else {
        return false;
    };
    let Ok(signature) = ed25519_compact::Signature::from_slice(&signature.0) else {
        return false;
    };
    key.verify(message, &signature).is_ok()
}

/// A signing key held by an account, a node or a validator (tools and tests; the kernel
/// keeps its own identity).
#[derive(Clone)]
pub struct Keypair(ed25519_compact::KeyPair);

impl Keypair {
    /// The key pair of a 32-byte secret seed; `None` for the all-zero seed, which
    /// ed25519-compact refuses. Use this for seeds read from outside (key files).
    pub fn try_from_seed(seed: [u8; 32]) -> Option<Keypair> {
        ed25519_compact::KeyPair::try_from_seed(ed25519_compact::Seed::new(seed)).ok().map(Keypair)
    }

    /// The key pair of a 32-byte secret seed (tests and tools with known seeds).
    ///
    /// # Panics
    /// On the all-zero seed; [`Keypair::try_from_seed`] does not.
    pub fn from_seed(seed: [u8; 32]) -> Keypair {
        match Keypair::try_from_seed(seed) {
            Some(key) => key,
            None => panic!("the all-zero ed25519 seed is refused"),
        }
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        *self.0.pk
    }

    /// Signs `message` (deterministic).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(*self.0.sk.sign(message, None))
    }
}

/// postcard encoding of a value the ledger itself built (encoding into a Vec cannot fail
/// for these types; an allocation failure aborts like any other).
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

/// The state tree's inner-node hasher: blake3 in key-derivation mode, so tree nodes never
/// collide with any other hash of the ledger.
pub struct TreeHasher(blake3::Hasher);

impl Default for TreeHasher {
    fn default() -> Self {
        TreeHasher(blake3::Hasher::new_derive_key(CONTEXT_TREE))
    }
}

impl sparse_merkle_tree::traits::Hasher for TreeHasher {
    fn write_h256(&mut self, h: &sparse_merkle_tree::H256) {
        self.0.update(h.as_slice());
    }

    fn write_byte(&mut self, b: u8) {
        self.0.update(&[b]);
    }

    fn finish(self) -> sparse_merkle_tree::H256 {
        (*self.0.finalize().as_bytes()).into()
    }
}
