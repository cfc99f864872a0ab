//! Blocks, commits, validator sets and the genesis: the types consensus orders and the light
//! client checks.
//!
//! A block's header commits to its parent (hash chain), its transactions, the state root
//! after applying it, the validator set that signs it and the one that signs the next. A
//! [`Commit`] is what a consensus round produced for it: the block hash, height, round and
//! the validators' precommit signatures over [`vote_message`]. The consensus library itself
//! (Malachite, in the validator daemon) is outside this crate; it only has to sign precommits
//! with [`vote_message`] so its certificates convert to a [`Commit`].

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, Keypair, PublicKey, Signature, DOMAIN_GENESIS, DOMAIN_HEADER, DOMAIN_TXS, DOMAIN_VALIDATORS, DOMAIN_VOTE};
use crate::error::{ConfigError, LightError};
use crate::tx::{Amount, SignedTx, Validator};
use crate::{BLOCK_BYTES_MAX, BLOCK_TXS_MAX, NAME_BYTES_MAX, VALIDATORS_MAX};

/// A validator set: sorted by key, no duplicates, every power > 0, total power at most
/// `u64::MAX / 4` (so quorum arithmetic never overflows). Checked on every decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Validator>", into = "Vec<Validator>")]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total_power: u64,
}

impl ValidatorSet {
    /// Checks and sorts `validators`.
    pub fn new(mut validators: Vec<Validator>) -> Result<ValidatorSet, ConfigError> {
        if validators.is_empty() || validators.len() > VALIDATORS_MAX {
            return Err(ConfigError::BadValidatorSet);
        }
        validators.sort();
        let mut total_power = 0u64;
        for (i, v) in validators.iter().enumerate() {
            if v.power == 0 || (i > 0 && validators[i - 1].key == v.key) {
                return Err(ConfigError::BadValidatorSet);
            }
            total_power = total_power.checked_add(v.power).ok_or(ConfigError::BadValidatorSet)?;
        }
        if total_power > u64::MAX / 4 {
            return Err(ConfigError::BadValidatorSet);
        }
        Ok(ValidatorSet { validators, total_power })
    }

    /// The validators, sorted by key.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Sum of the powers.
    pub fn total_power(&self) -> u64 {
        self.total_power
    }

    /// The power of `key`, if it is a member.
    pub fn power_of(&self, key: &PublicKey) -> Option<u64> {
        self.validators.binary_search_by(|v| v.key.cmp(key)).ok().map(|i| self.validators[i].power)
    }

    /// The hash a header names.
    pub fn hash(&self) -> [u8; 32] {
        crypto::hash_parts(&[DOMAIN_VALIDATORS, &crypto::encode(self)])
    }

    /// Whether `signed` power is more than two thirds of the total.
    pub fn is_quorum(&self, signed: u64) -> bool {
        // Both sides fit: total_power <= u64::MAX / 4 and signed <= total_power.
        signed <= self.total_power && 3 * signed > 2 * self.total_power
    }
}

impl TryFrom<Vec<Validator>> for ValidatorSet {
    type Error = ConfigError;
    fn try_from(validators: Vec<Validator>) -> Result<Self, ConfigError> {
        ValidatorSet::new(validators)
    }
}

impl From<ValidatorSet> for Vec<Validator> {
    fn from(set: ValidatorSet) -> Self {
        set.validators
    }
}

/// The chain's first state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Human-readable chain name (part of the chain id).
    pub chain_name: String,
    /// Time of the genesis, in ms since the Unix epoch.
    pub time_ms: u64,
    /// The first validator set.
    pub validators: Vec<Validator>,
    /// Initial balances.
    pub balances: Vec<(PublicKey, Amount)>,
    /// The account allowed to change the validator set.
    pub governance: PublicKey,
    /// Length of a billing period in ms ([`crate::PERIOD_MS`], an hour, on a real chain;
    /// shorter on test chains). At least [`crate::PERIOD_MS_MIN`].
    pub period_ms: u64,
}

impl Genesis {
    /// The chain id: the hash of the genesis. Every signature of the chain covers it.
    pub fn chain_id(&self) -> [u8; 32] {
        crypto::hash_parts(&[DOMAIN_GENESIS, &crypto::encode(self)])
    }

    /// Checks names, validators and balances.
    pub fn check(&self) -> Result<ValidatorSet, ConfigError> {
        if self.chain_name.len() > NAME_BYTES_MAX {
            return Err(ConfigError::Invalid("chain_name"));
        }
        if self.period_ms < crate::PERIOD_MS_MIN {
            return Err(ConfigError::Invalid("period_ms"));
        }
        let mut keys: Vec<&PublicKey> = self.balances.iter().map(|(k, _)| k).collect();
        keys.sort();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigError::BadBalances);
        }
        let mut total = 0u64;
        for (_, amount) in &self.balances {
            total = total.checked_add(*amount).ok_or(ConfigError::BadBalances)?;
        }
        ValidatorSet::new(self.validators.clone())
    }
}

/// A block header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The chain id.
    pub chain_id: [u8; 32],
    /// Height (the genesis is 0).
    pub height: u64,
    /// Proposer's time, ms since the Unix epoch (never before the parent's).
    pub time_ms: u64,
    /// Hash of the previous header (zero for the genesis).
    pub parent_hash: [u8; 32],
    /// [`txs_hash`] of the block's transactions.
    pub txs_hash: [u8; 32],
    /// State root after applying this block.
    pub state_root: [u8; 32],
    /// Hash of the set that signs this block.
    pub validators_hash: [u8; 32],
    /// Hash of the set that signs the next block.
    pub next_validators_hash: [u8; 32],
    /// Who proposed it.
    pub proposer: PublicKey,
}

impl Header {
    /// The block hash.
    pub fn hash(&self) -> [u8; 32] {
        crypto::hash_parts(&[DOMAIN_HEADER, &crypto::encode(self)])
    }
}

/// The hash a header names for `txs`: over their ids, in order.
pub fn txs_hash(txs: &[SignedTx]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(DOMAIN_TXS);
    hasher.update(&(txs.len() as u64).to_le_bytes());
    for tx in txs {
        hasher.update(&tx.id());
    }
    *hasher.finalize().as_bytes()
}

/// A block: header, transactions, and the new validator set when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// Transactions, applied in order.
    pub txs: Vec<SignedTx>,
    /// The set that signs the next block, present exactly when it differs from this one's.
    pub next_validators: Option<ValidatorSet>,
}

impl Block {
    /// Decodes untrusted bytes (bounded by [`BLOCK_BYTES_MAX`] and [`BLOCK_TXS_MAX`]).
    pub fn decode(bytes: &[u8]) -> Option<Block> {
        if bytes.len() > BLOCK_BYTES_MAX {
            return None;
        }
        let block: Block = postcard::from_bytes(bytes).ok()?;
        (block.txs.len() <= BLOCK_TXS_MAX).then_some(block)
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        crypto::encode(self)
    }

    /// The block hash (its header's).
    pub fn hash(&self) -> [u8; 32] {
        self.header.hash()
    }
}

/// The bytes a validator signs to precommit `block_hash` at `height` and `round`.
pub fn vote_message(chain_id: &[u8; 32], height: u64, round: u32, block_hash: &[u8; 32]) -> [u8; 22 + 32 + 8 + 4 + 32] {
    let mut message = [0u8; 22 + 32 + 8 + 4 + 32];
    message[..22].copy_from_slice(DOMAIN_VOTE);
    message[22..54].copy_from_slice(chain_id);
    message[54..62].copy_from_slice(&height.to_le_bytes());
    message[62..66].copy_from_slice(&round.to_le_bytes());
    message[66..].copy_from_slice(block_hash);
    message
}

const _: () = assert!(DOMAIN_VOTE.len() == 22);

/// One validator's precommit signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSig {
    /// The validator.
    pub validator: PublicKey,
    /// Its signature over [`vote_message`].
    pub signature: Signature,
}

/// The proof that consensus decided a block: >2/3 of the power precommitted its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The block's height.
    pub height: u64,
    /// The consensus round that decided it.
    pub round: u32,
    /// The block hash.
    pub block_hash: [u8; 32],
    /// Precommit signatures.
    pub signatures: Vec<CommitSig>,
}

impl Commit {
    /// An empty commit for `header` at `round`.
    pub fn new(header: &Header, round: u32) -> Commit {
        Commit { height: header.height, round, block_hash: header.hash(), signatures: Vec::new() }
    }

    /// Adds `key`'s precommit signature.
    pub fn sign(&mut self, chain_id: &[u8; 32], key: &Keypair) {
        let signature = key.sign(&vote_message(chain_id, self.height, self.round, &self.block_hash));
        self.signatures.push(CommitSig { validator: key.public(), signature });
    }

    /// Checks that this commit is for `header` and carries precommits of more than two
    /// thirds of `set`'s power; returns the power that signed. Every signature must verify
    /// and belong to a distinct member.
    pub fn verify(&self, chain_id: &[u8; 32], header: &Header, set: &ValidatorSet) -> Result<u64, LightError> {
        if header.chain_id != *chain_id {
            return Err(LightError::WrongChain);
        }
        if self.height != header.height || self.block_hash != header.hash() {
            return Err(LightError::CommitMismatch);
        }
        if self.signatures.len() > set.validators().len() {
            return Err(LightError::TooLarge);
        }
        let message = vote_message(chain_id, self.height, self.round, &self.block_hash);
        let mut seen: Vec<PublicKey> = Vec::with_capacity(self.signatures.len());
        let mut signed = 0u64;
        for sig in &self.signatures {
            let Some(power) = set.power_of(&sig.validator) else {
                return Err(LightError::UnknownSigner(sig.validator));
            };
            if seen.contains(&sig.validator) {
                return Err(LightError::DuplicateSigner(sig.validator));
            }
            seen.push(sig.validator);
            if !crypto::verify(&sig.validator, &message, &sig.signature) {
                return Err(LightError::ForgedSignature(sig.validator));
            }
            // Distinct members: the sum is at most total_power, which cannot overflow.
            signed += power;
        }
        if !set.is_quorum(signed) {
            return Err(LightError::NoQuorum { signed, total: set.total_power() });
        }
        Ok(signed)
    }
}

/// What a light client needs of a block: its header, its commit and, when the validator
/// set changes, the new set (whose hash the header names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LightBlock {
    /// The header.
    pub header: Header,
    /// Its commit.
    pub commit: Commit,
    /// The block's `next_validators`.
    pub next_validators: Option<ValidatorSet>,
}

impl LightBlock {
    /// Decodes untrusted bytes (bounded by [`BLOCK_BYTES_MAX`]).
    pub fn decode(bytes: &[u8]) -> Option<LightBlock> {
        if bytes.len() > BLOCK_BYTES_MAX {
            return None;
        }
        postcard::from_bytes(bytes).ok()
    }

    /// The light part of a committed block.
    pub fn of(block: &Block, commit: Commit) -> LightBlock {
        LightBlock { header: block.header.clone(), commit, next_validators: block.next_validators.clone() }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn v(key: u8, power: u64) -> Validator {
        Validator { key: [key; 32], power }
    }

    #[test]
    fn validator_sets_are_checked_on_build_and_decode() {
        let set = ValidatorSet::new(alloc::vec![v(3, 1), v(1, 2)]).expect("set");
        assert_eq!(set.validators()[0].key, [1; 32], "sorted by key");
        assert_eq!((set.total_power(), set.power_of(&[3; 32]), set.power_of(&[2; 32])), (3, Some(1), None));
        assert_eq!(ValidatorSet::new(alloc::vec![]), Err(ConfigError::BadValidatorSet));
        assert_eq!(ValidatorSet::new(alloc::vec![v(1, 0)]), Err(ConfigError::BadValidatorSet));
        assert_eq!(ValidatorSet::new(alloc::vec![v(1, 1), v(1, 2)]), Err(ConfigError::BadValidatorSet));
        assert_eq!(ValidatorSet::new(alloc::vec![v(1, u64::MAX / 4), v(2, 1)]), Err(ConfigError::BadValidatorSet));
        let too_many: Vec<Validator> = (0..=VALIDATORS_MAX as u64)
            .map(|i| {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&i.to_le_bytes());
                Validator { key, power: 1 }
            })
            .collect();
        assert_eq!(ValidatorSet::new(too_many), Err(ConfigError::BadValidatorSet));
        // Decoding goes through the same checks.
        let bytes = postcard::to_allocvec(&alloc::vec![v(1, 1), v(1, 1)]).expect("encode");
        assert!(postcard::from_bytes::<ValidatorSet>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&set).expect("encode");
        assert_eq!(postcard::from_bytes::<ValidatorSet>(&bytes), Ok(set));
    }

    #[test]
    fn quorum_is_more_than_two_thirds() {
        let set = ValidatorSet::new(alloc::vec![v(1, 1), v(2, 1), v(3, 1)]).expect("set");
        assert!(!set.is_quorum(2));
        assert!(set.is_quorum(3));
        assert!(!set.is_quorum(4), "more than the total is no quorum");
    }

    #[test]
    fn vote_message_layout() {
        let m = vote_message(&[7; 32], 0x0102, 3, &[9; 32]);
        assert_eq!(&m[..22], DOMAIN_VOTE);
        assert_eq!(&m[22..54], &[7; 32]);
        assert_eq!(&m[54..62], &0x0102u64.to_le_bytes());
        assert_eq!(&m[62..66], &3u32.to_le_bytes());
        assert_eq!(&m[66..], &[9; 32]);
    }
}
