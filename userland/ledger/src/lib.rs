//! The grid's ledger core: transactions, the state machine, the state root, blocks and the
//! light client. Sans-IO and `#![no_std]` + `alloc`, so validators (std daemons), gridctl and
//! the kernel share it.
//!
//! - [`tx`]: transactions signed by their account with its next nonce (ed25519).
//! - [`state`]: balances, farms, nodes, contracts; hourly billing; `apply_block`, `check_tx`,
//!   `build_block` for the validator daemon; proven reads.
//! - [`smt`]: the sparse Merkle tree over the state whose root every header commits to.
//! - [`block`]: headers, blocks, commits (block hash + height + round + precommit
//!   signatures), validator sets, the genesis.
//! - [`light`]: the light client (quorum checks, validator-set changes, verified reads).
//! - [`rpc`]: the validators' client protocol (requests, responses, frames).
//!
//! What it leaves to others: consensus (Malachite in the validator daemon), networking,
//! persistence, clocks (block times come from headers) and key storage. All input from the
//! network is untrusted: decoding is bounded and every refusal is a typed error.
//!
//! Encoding is postcard; every signed or hashed message starts with its own domain string
//! ([`crypto`]).

#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod block;
pub mod crypto;
pub mod error;
pub mod light;
pub mod rpc;
pub mod smt;
pub mod state;
pub mod tx;

pub use block::{Block, Commit, CommitSig, Genesis, Header, LightBlock, ValidatorSet};
pub use crypto::{Keypair, PublicKey, Signature};
pub use error::{BlockError, ConfigError, LightError, ProofError, TxError};
pub use light::{LightClient, ReadError};
pub use smt::{StateKey, StateProof};
pub use state::{apply_block, BlockOutcome, Receipt, State, TxOutcome};
pub use tx::{Amount, Capacity, ProofData, Resources, ShardPlacement, SignedTx, Transaction, TxKind, Usage, Validator};

/// A farm's id (assigned in order).
pub type FarmId = u64;
/// A contract's id (assigned in order).
pub type ContractId = u64;

/// Length of a billing period: one hour.
pub const PERIOD_MS: u64 = 3_600_000;
/// Shortest billing period a genesis may set (test chains).
pub const PERIOD_MS_MIN: u64 = 1_000;
/// Periods settled at most by one block (a chain stalled longer settles only the last ones).
pub const SETTLE_PERIODS_MAX: u64 = 24 * 7;
/// Largest encoded signed transaction.
pub const TX_BYTES_MAX: usize = 64 << 10;
/// Most transactions in a block.
pub const BLOCK_TXS_MAX: usize = 10_000;
/// Largest encoded block.
pub const BLOCK_BYTES_MAX: usize = 8 << 20;
/// Longest name (farm, chain).
pub const NAME_BYTES_MAX: usize = 64;
/// Most disks in a node's capacity.
pub const DISKS_MAX: usize = 32;
/// Most shards in one storage contract.
pub const SHARDS_PER_CONTRACT_MAX: usize = 256;
/// Largest chunk in a storage proof (the store's chunk size).
pub const PROOF_CHUNK_BYTES_MAX: usize = shardstore::CHUNK_SIZE_BYTES;
/// Longest Merkle path in a storage proof.
pub const PROOF_PATH_MAX: usize = 64;
/// Most validators in a set.
pub const VALIDATORS_MAX: usize = 128;
/// Largest state record a proof may carry.
pub const RECORD_BYTES_MAX: usize = 64 << 10;
/// Largest compiled state proof (a 256-level path is at most ~17 KiB).
pub const STATE_PROOF_BYTES_MAX: usize = 20 << 10;
/// Headers the light client keeps for reads at recent heights.
pub const LIGHT_HEADERS_KEPT: usize = 64;

const _: () = assert!(SHARDS_PER_CONTRACT_MAX * 200 < RECORD_BYTES_MAX);
const _: () = assert!(PROOF_CHUNK_BYTES_MAX + PROOF_PATH_MAX * 32 + 1024 < TX_BYTES_MAX);
const _: () = assert!(TX_BYTES_MAX < BLOCK_BYTES_MAX / 2);
