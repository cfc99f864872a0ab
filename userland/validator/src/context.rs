//! The ledger's types as Malachite sees them: heights, validator addresses (ed25519 keys),
//! values (whole blocks, identified by their hash), proposals, votes and the ed25519
//! signing scheme.
//!
//! Signing messages are domain-separated. A precommit for a block is signed over
//! `ledger::block::vote_message`, so Malachite's commit certificates are ledger commits that
//! the light client verifies; prevotes, nil precommits and proposals have their own domains.

use std::fmt;
use std::sync::Arc;

use ledger::block::vote_message;
use ledger::{Block, Keypair};
use malachitebft_core_types::{self as mt, NilOrVal, Round, SignedExtension, VoteType};

/// Domain of prevotes and nil precommits.
pub const DOMAIN_CONSENSUS_VOTE: &[u8] = b"gridos-ledger/consensus-vote/v1\0";
/// Domain of proposals.
pub const DOMAIN_PROPOSAL: &[u8] = b"gridos-ledger/proposal/v1\0";

/// A block height.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl mt::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's address: its ed25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; 32]);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl mt::Address for Address {}

/// A block hash: what validators vote on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockHash(pub [u8; 32]);

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A proposed block (compared by hash).
#[derive(Clone, Debug)]
pub struct BlockValue {
    /// Its hash.
    pub hash: BlockHash,
    /// The block.
    pub block: Arc<Block>,
}

impl BlockValue {
    /// Wraps `block`.
    pub fn new(block: Block) -> BlockValue {
        BlockValue { hash: BlockHash(block.hash()), block: Arc::new(block) }
    }
}

impl PartialEq for BlockValue {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}
impl Eq for BlockValue {}
impl PartialOrd for BlockValue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for BlockValue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash.cmp(&other.hash)
    }
}

impl mt::Value for BlockValue {
    type Id = BlockHash;
    fn id(&self) -> BlockHash {
        self.hash
    }
}

/// A proposal: a block for a height and round, by the round's proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The block.
    pub value: BlockValue,
    /// The round of the proof of lock, if re-proposed.
    pub pol_round: Round,
    /// The proposer.
    pub proposer: Address,
}

impl mt::Proposal<LedgerContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &BlockValue {
        &self.value
    }
    fn take_value(self) -> BlockValue {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

/// Unused: values travel whole in proposals (`ValuePayload::ProposalOnly`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoPart;

impl mt::ProposalPart<LedgerContext> for NoPart {
    fn is_first(&self) -> bool {
        true
    }
    fn is_last(&self) -> bool {
        true
    }
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vote {
    /// Prevote or precommit.
    pub kind: VoteType,
    /// Height.
    pub height: Height,
    /// Round.
    pub round: Round,
    /// The block voted for, or nil.
    pub value: NilOrVal<BlockHash>,
    /// The voter.
    pub validator: Address,
}

impl mt::Vote<LedgerContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<BlockHash> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<BlockHash> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.kind
    }
    fn validator_address(&self) -> &Address {
        &self.validator
    }
    fn extension(&self) -> Option<&SignedExtension<LedgerContext>> {
        None
    }
    fn take_extension(&mut self) -> Option<SignedExtension<LedgerContext>> {
        None
    }
    fn extend(self, _extension: SignedExtension<LedgerContext>) -> Self {
        self
    }
}

/// A validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Its address (= its key).
    pub address: Address,
    /// Its key.
    pub public_key: [u8; 32],
    /// Voting power.
    pub power: u64,
}

impl mt::Validator<LedgerContext> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }
    fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }
    fn voting_power(&self) -> u64 {
        self.power
    }
}

/// The validator set of a height (the ledger's, sorted by key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    /// The members.
    pub validators: Vec<Validator>,
    /// The ledger's set it mirrors.
    pub ledger: ledger::ValidatorSet,
}

impl ValidatorSet {
    /// Mirrors the ledger's set.
    pub fn new(set: &ledger::ValidatorSet) -> ValidatorSet {
        let validators = set
            .validators()
            .iter()
            .map(|v| Validator { address: Address(v.key), public_key: v.key, power: v.power })
            .collect();
        ValidatorSet { validators, ledger: set.clone() }
    }
}

impl mt::ValidatorSet<LedgerContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }
    fn total_voting_power(&self) -> u64 {
        self.ledger.total_power()
    }
    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.validators.binary_search_by(|v| v.address.cmp(address)).ok().map(|i| &self.validators[i])
    }
    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// An ed25519 signature (ordered bytes, as Malachite wants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sig(pub [u8; 64]);

/// The ed25519 signing scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519;

impl mt::SigningScheme for Ed25519 {
    type DecodingError = &'static str;
    type Signature = Sig;
    type PublicKey = [u8; 32];
    type PrivateKey = Keypair;

    fn decode_signature(bytes: &[u8]) -> Result<Sig, &'static str> {
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| "signature length")?;
        Ok(Sig(bytes))
    }

    fn encode_signature(signature: &Sig) -> Vec<u8> {
        signature.0.to_vec()
    }
}

/// The Malachite context of one chain.
#[derive(Clone, Debug)]
pub struct LedgerContext {
    /// The chain id (covered by every consensus signature).
    pub chain_id: [u8; 32],
}

impl mt::Context for LedgerContext {
    type Address = Address;
    type Height = Height;
    type ProposalPart = NoPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Value = BlockValue;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Ed25519;

    fn select_proposer<'a>(&self, set: &'a ValidatorSet, height: Height, round: Round) -> &'a Validator {
        // Round-robin over the sorted set (a set is never empty: the ledger checks it).
        let round = u64::from(round.as_u32().unwrap_or(0));
        let index = height.0.wrapping_add(round) % set.validators.len().max(1) as u64;
        &set.validators[index as usize]
    }

    fn new_proposal(&self, height: Height, round: Round, value: BlockValue, pol_round: Round, address: Address) -> Proposal {
        Proposal { height, round, value, pol_round, proposer: address }
    }

    fn new_prevote(&self, height: Height, round: Round, value: NilOrVal<BlockHash>, address: Address) -> Vote {
        Vote { kind: VoteType::Prevote, height, round, value, validator: address }
    }

    fn new_precommit(&self, height: Height, round: Round, value: NilOrVal<BlockHash>, address: Address) -> Vote {
        Vote { kind: VoteType::Precommit, height, round, value, validator: address }
    }
}

fn round_bytes(round: Round) -> [u8; 8] {
    round.as_i64().to_le_bytes()
}

impl LedgerContext {
    /// The bytes a validator signs for `vote`. A precommit for a block is the ledger's
    /// commit vote, so the decision's certificate is a ledger `Commit`.
    pub fn vote_bytes(&self, vote: &Vote) -> Vec<u8> {
        let round = vote.round.as_u32();
        match (vote.kind, &vote.value, round) {
            (VoteType::Precommit, NilOrVal::Val(hash), Some(round)) => vote_message(&self.chain_id, vote.height.0, round, &hash.0).to_vec(),
            _ => {
                let mut bytes = Vec::with_capacity(128);
                bytes.extend_from_slice(DOMAIN_CONSENSUS_VOTE);
                bytes.extend_from_slice(&self.chain_id);
                bytes.push(match vote.kind {
                    VoteType::Prevote => 0,
                    VoteType::Precommit => 1,
                });
                bytes.extend_from_slice(&vote.height.0.to_le_bytes());
                bytes.extend_from_slice(&round_bytes(vote.round));
                match &vote.value {
                    NilOrVal::Nil => bytes.push(0),
                    NilOrVal::Val(hash) => {
                        bytes.push(1);
                        bytes.extend_from_slice(&hash.0);
                    }
                }
                bytes
            }
        }
    }

    /// The bytes a proposer signs for `proposal`.
    pub fn proposal_bytes(&self, proposal: &Proposal) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(128);
        bytes.extend_from_slice(DOMAIN_PROPOSAL);
        bytes.extend_from_slice(&self.chain_id);
        bytes.extend_from_slice(&proposal.height.0.to_le_bytes());
        bytes.extend_from_slice(&round_bytes(proposal.round));
        bytes.extend_from_slice(&round_bytes(proposal.pol_round));
        bytes.extend_from_slice(&proposal.value.hash.0);
        bytes.extend_from_slice(&proposal.proposer.0);
        bytes
    }

    /// Signs `bytes`.
    pub fn sign(key: &Keypair, bytes: &[u8]) -> Sig {
        Sig(key.sign(bytes).0)
    }

    /// Verifies `signature` by `key` over `bytes`.
    pub fn verify(key: &[u8; 32], bytes: &[u8], signature: &Sig) -> bool {
        ledger::crypto::verify(key, bytes, &ledger::Signature(signature.0))
    }
}
