//! Transactions: what an account, a farmer or a node asks the ledger to do, signed by the
//! account with its next nonce.
//!
//! The signing message is `DOMAIN_TX || chain_id || postcard(Transaction)`: the chain id
//! (the genesis hash) keeps a transaction from being replayed on another chain, the nonce
//! from being replayed on this one. Checks that need no state (size, bounds, signature)
//! are here ([`SignedTx::check_stateless`]); the rest is in [`crate::state`].

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, PublicKey, Signature, DOMAIN_TX, DOMAIN_TX_ID};
use crate::error::TxError;
use crate::{
    ContractId, FarmId, DISKS_MAX, NAME_BYTES_MAX, PROOF_CHUNK_BYTES_MAX, PROOF_PATH_MAX, SHARDS_PER_CONTRACT_MAX,
    TX_BYTES_MAX,
};

/// Token amounts, in the token's smallest unit.
pub type Amount = u64;

/// What a node offers, as it measured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU cores.
    pub cores: u32,
    /// Memory.
    pub memory_bytes: u64,
    /// Each data disk's size.
    pub disks_bytes: Vec<u64>,
    /// Network interfaces.
    pub nics: u32,
}

impl Capacity {
    /// Total disk bytes (saturating).
    pub fn disk_bytes(&self) -> u64 {
        self.disks_bytes.iter().fold(0u64, |sum, d| sum.saturating_add(*d))
    }
}

/// What a workload contract reserves on its node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores.
    pub cores: u32,
    /// Memory.
    pub memory_bytes: u64,
    /// Disk.
    pub disk_bytes: u64,
}

/// One shard of a storage contract and the node that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlacement {
    /// The node that stores it.
    pub node: PublicKey,
    /// The shard's key in the node's store (blake3 of its bytes).
    pub key: [u8; 32],
    /// Merkle root over its chunks (`shardstore::merkle_root`).
    pub merkle_root: [u8; 32],
    /// Its length.
    pub len_bytes: u64,
}

/// A node's answer to a storage challenge, as `shardstore` builds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofData {
    /// Which chunk.
    pub chunk_index: u64,
    /// The chunk's bytes.
    pub chunk: Vec<u8>,
    /// Sibling hashes from the leaf level upwards.
    pub path: Vec<[u8; 32]>,
}

impl From<shardstore::StorageProof> for ProofData {
    fn from(p: shardstore::StorageProof) -> Self {
        ProofData { chunk_index: p.chunk_index, chunk: p.chunk, path: p.path }
    }
}

/// What a workload used in one period, as its node measured it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time.
    pub cpu_ms: u64,
    /// Peak memory.
    pub memory_peak_bytes: u64,
    /// Bytes on disk at the end of the period.
    pub disk_bytes: u64,
    /// Network bytes received.
    pub net_rx_bytes: u64,
    /// Network bytes sent.
    pub net_tx_bytes: u64,
}

/// A validator and its voting power.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Validator {
    /// Its ed25519 key (signs votes).
    pub key: PublicKey,
    /// Voting power (> 0).
    pub power: u64,
}

/// What a transaction does. Variant order is wire format: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxKind {
    /// Create a farm owned by the signer.
    CreateFarm {
        /// Display name (at most [`NAME_BYTES_MAX`] bytes).
        name: String,
    },
    /// Register a node in a farm: signed by the farm's owner, or by the node itself (a
    /// node registers itself at first boot under the farm its image names).
    RegisterNode {
        /// The node's key (it signs its uptime reports, proofs and usage reports).
        node: PublicKey,
        /// The farm.
        farm: FarmId,
        /// What it offers.
        capacity: Capacity,
    },
    /// New measured capacity (signed by the node or its farm's owner).
    UpdateCapacity {
        /// The node.
        node: PublicKey,
        /// What it offers now.
        capacity: Capacity,
    },
    /// The signing node is up (one per period is enough to be paid for it).
    UptimeReport {
        /// Seconds since the node booted.
        uptime_secs: u64,
    },
    /// Move tokens.
    Transfer {
        /// Receiver.
        to: PublicKey,
        /// Amount.
        amount: Amount,
    },
    /// Rent resources on a node, billed per hour.
    CreateWorkloadContract {
        /// The node.
        node: PublicKey,
        /// What is reserved.
        resources: Resources,
        /// Price per period (hour).
        price_per_hour: Amount,
    },
    /// End the signer's workload contract.
    CancelWorkloadContract {
        /// The contract.
        contract: ContractId,
    },
    /// Pay nodes to keep shards, billed per hour.
    CreateStorageContract {
        /// The shards and their nodes.
        shards: Vec<ShardPlacement>,
        /// Price per period (hour) for all shards together.
        price_per_hour: Amount,
    },
    /// End the signer's storage contract.
    CancelStorageContract {
        /// The contract.
        contract: ContractId,
    },
    /// The signing node's answer to this period's challenge for one shard.
    StorageProof {
        /// The contract.
        contract: ContractId,
        /// Index into the contract's shards.
        shard: u32,
        /// The answer.
        proof: ProofData,
    },
    /// The signing node reports a workload contract's usage for one period.
    UsageReport {
        /// The contract.
        contract: ContractId,
        /// The period measured.
        period: u64,
        /// What it used.
        usage: Usage,
    },
    /// Replace the validator set from the next block on (signed by the governance account
    /// named in the genesis: a development stand-in for an on-chain vote).
    SetValidators {
        /// The new set.
        validators: Vec<Validator>,
    },
}

/// A transaction before signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The signing account.
    pub account: PublicKey,
    /// The account's next nonce.
    pub nonce: u64,
    /// What it does.
    pub kind: TxKind,
}

impl Transaction {
    /// The exact bytes the account signs.
    pub fn signing_message(&self, chain_id: &[u8; 32]) -> Vec<u8> {
        let mut message = Vec::with_capacity(DOMAIN_TX.len() + 32 + 64);
        message.extend_from_slice(DOMAIN_TX);
        message.extend_from_slice(chain_id);
        message.extend_from_slice(&crypto::encode(self));
        message
    }

    /// Signs with `key` (whose public key must be `self.account` for the result to verify).
    pub fn sign(self, chain_id: &[u8; 32], key: &crypto::Keypair) -> SignedTx {
        let signature = key.sign(&self.signing_message(chain_id));
        SignedTx { tx: self, signature }
    }
}

/// A signed transaction, as carried in blocks and submitted to validators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    /// The transaction.
    pub tx: Transaction,
    /// The account's signature over [`Transaction::signing_message`].
    pub signature: Signature,
}

impl SignedTx {
    /// Decodes untrusted bytes (bounded by [`TX_BYTES_MAX`]).
    pub fn decode(bytes: &[u8]) -> Result<SignedTx, TxError> {
        if bytes.len() > TX_BYTES_MAX {
            return Err(TxError::Decode);
        }
        match postcard::from_bytes::<SignedTx>(bytes) {
            Ok(tx) => Ok(tx),
            Err(_) => Err(TxError::Decode),
        }
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        crypto::encode(self)
    }

    /// The transaction id: blake3 over the domain and the signed encoding.
    pub fn id(&self) -> [u8; 32] {
        crypto::hash_parts(&[DOMAIN_TX_ID, &self.encode()])
    }

    /// Checks that need no state: size, field bounds and the signature.
    pub fn check_stateless(&self, chain_id: &[u8; 32]) -> Result<(), TxError> {
        if self.encode().len() > TX_BYTES_MAX {
            return Err(TxError::Invalid("transaction size"));
        }
        check_bounds(&self.tx.kind)?;
        if !crypto::verify(&self.tx.account, &self.tx.signing_message(chain_id), &self.signature) {
            return Err(TxError::BadSignature);
        }
        Ok(())
    }
}

fn check_capacity(capacity: &Capacity) -> Result<(), TxError> {
    if capacity.disks_bytes.len() > DISKS_MAX {
        return Err(TxError::Invalid("disks"));
    }
    Ok(())
}

fn check_bounds(kind: &TxKind) -> Result<(), TxError> {
    match kind {
        TxKind::CreateFarm { name } => {
            if name.len() > NAME_BYTES_MAX {
                return Err(TxError::Invalid("name"));
            }
        }
        TxKind::RegisterNode { capacity, .. } | TxKind::UpdateCapacity { capacity, .. } => check_capacity(capacity)?,
        TxKind::CreateStorageContract { shards, .. } => {
            if shards.is_empty() || shards.len() > SHARDS_PER_CONTRACT_MAX {
                return Err(TxError::Invalid("shards"));
            }
            if shards.iter().any(|s| s.len_bytes > shardstore::SHARD_SIZE_MAX_BYTES as u64) {
                return Err(TxError::Invalid("shard length"));
            }
        }
        TxKind::StorageProof { proof, .. } => {
            if proof.chunk.len() > PROOF_CHUNK_BYTES_MAX || proof.path.len() > PROOF_PATH_MAX {
                return Err(TxError::Invalid("proof size"));
            }
        }
        TxKind::SetValidators { validators } => {
            if crate::block::ValidatorSet::new(validators.clone()).is_err() {
                return Err(TxError::Invalid("validator set"));
            }
        }
        TxKind::UptimeReport { .. }
        | TxKind::Transfer { .. }
        | TxKind::CreateWorkloadContract { .. }
        | TxKind::CancelWorkloadContract { .. }
        | TxKind::CancelStorageContract { .. }
        | TxKind::UsageReport { .. } => {}
    }
    Ok(())
}
