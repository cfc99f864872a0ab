//! Typed errors of the ledger core: why a transaction, a block, a commit or a state read
//! was refused. Every refusal of untrusted input is one of these, never a panic.

use core::fmt;

/// Why a transaction was refused (by `check_tx` or inside a block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxError {
    /// The bytes do not decode as a signed transaction, or exceed [`crate::TX_BYTES_MAX`].
    Decode,
    /// The signature does not verify for the transaction's account.
    BadSignature,
    /// The nonce is not the account's next one (replayed or skipped).
    BadNonce {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The account cannot pay.
    InsufficientBalance {
        /// What the transaction needs.
        needed: u64,
        /// What the account has.
        available: u64,
    },
    /// No farm with this id.
    UnknownFarm(u64),
    /// No node registered with this key.
    UnknownNode([u8; 32]),
    /// No contract with this id.
    UnknownContract(u64),
    /// The node key is already registered.
    NodeExists([u8; 32]),
    /// The signer may not do this (not the farm's owner, the contract's owner or its node...).
    NotAuthorized,
    /// The contract has ended (cancelled or unpaid).
    ContractEnded(u64),
    /// The contract is of the other kind (workload vs storage).
    WrongContractKind(u64),
    /// The node has not this much free capacity.
    CapacityExceeded,
    /// The storage proof does not verify for this period's challenge.
    ProofInvalid,
    /// The shard index is outside the contract's shards.
    UnknownShard(u32),
    /// This shard was already proven in the current period.
    AlreadyProven,
    /// A usage report for a period that is in the future or already reported.
    StalePeriod {
        /// The report's period.
        period: u64,
    },
    /// A field is out of its bounds (names the field).
    Invalid(&'static str),
    /// A counter or a balance would overflow.
    Overflow,
}

/// Why a block was refused by `apply_block`; the state is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockError {
    /// The block is for another chain.
    WrongChain,
    /// Not the next height.
    WrongHeight {
        /// The height the state expects.
        expected: u64,
        /// The block's height.
        got: u64,
    },
    /// The parent hash is not the hash of the state's last block.
    WrongParent,
    /// The block's time is before its parent's.
    TimeWentBack,
    /// The header names another validator set than the state's current one.
    WrongValidators,
    /// The header's proposer is not in the validator set that signs the block.
    UnknownProposer,
    /// The header's next validator set is not what the block's transactions produce, or
    /// the block's `next_validators` does not match the header's hash.
    WrongNextValidators,
    /// The header's transaction root does not match the block's transactions.
    TxsRootMismatch,
    /// Too many transactions or too many bytes.
    TooLarge,
    /// Transaction `index` does not apply.
    Tx {
        /// Position in the block.
        index: u32,
        /// Why.
        error: TxError,
    },
    /// The state root after the block is not the header's.
    StateRootMismatch {
        /// What applying the block gave.
        computed: [u8; 32],
        /// What the header claims.
        claimed: [u8; 32],
    },
    /// The Merkle tree failed (a bug or memory exhaustion, never input).
    Tree,
}

/// Why the light client refused a block or a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LightError {
    /// The block is for another chain.
    WrongChain,
    /// The block does not extend the trusted chain (height or parent hash).
    NotNext,
    /// The block's time is before the trusted block's.
    TimeWentBack,
    /// The block names another validator set than the one the trusted chain announced.
    WrongValidators,
    /// The validator-set change carried with the block is missing or does not match.
    WrongNextValidators,
    /// The commit is for another block, height or chain.
    CommitMismatch,
    /// A signature in the commit does not verify.
    ForgedSignature([u8; 32]),
    /// A commit signer is not in the validator set.
    UnknownSigner([u8; 32]),
    /// A validator signed twice in one commit.
    DuplicateSigner([u8; 32]),
    /// The signers hold two thirds or less of the voting power.
    NoQuorum {
        /// Power that signed.
        signed: u64,
        /// Total power of the set.
        total: u64,
    },
    /// Too many signatures or validators.
    TooLarge,
    /// The trusted header for the requested height is not held (too old or not yet seen).
    UnknownHeight(u64),
}

/// Why a state read was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The proof is for another key than the one asked.
    WrongKey,
    /// The proof does not verify against the trusted state root.
    Invalid,
    /// The record does not decode as the key's type, or the proof is too large.
    Decode,
}

/// Why a validator set, genesis or commit could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// No validators, a zero power, duplicates, too many or a total power overflow.
    BadValidatorSet,
    /// A genesis balance is listed twice or the total overflows.
    BadBalances,
    /// A name is too long.
    Invalid(&'static str),
}

macro_rules! display_debug {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
        #[cfg(feature = "std")]
        impl std::error::Error for $ty {}
    )*};
}

display_debug!(TxError, BlockError, LightError, ProofError, ConfigError);
