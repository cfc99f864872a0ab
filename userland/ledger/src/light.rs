//! The light client: follows the chain header by header, trusting no single validator.
//!
//! It starts from a trusted point (the genesis, or a header and the set that signs the block
//! after it) and accepts a block only if it is the next one on the trusted chain (height,
//! parent hash, chain id, time), is signed by the validator set the trusted chain announced
//! (`next_validators_hash`), and its commit carries valid precommits of more than two thirds
//! of that set's power. It learns a new validator set only from a block it accepted, whose
//! header names the new set's hash. State reads (accounts, farms, nodes, contracts) are
//! verified against the state root of a header it accepted. It keeps the last
//! [`LIGHT_HEADERS_KEPT`] headers for reads at recent heights; everything else is the
//! caller's (fetching blocks and proofs from validators over the network).

use alloc::collections::VecDeque;

use crate::block::{Genesis, Header, LightBlock, ValidatorSet};
use crate::crypto::PublicKey;
use crate::error::{ConfigError, LightError, ProofError};
use crate::smt::StateProof;
use crate::state::{self, Account, Contract, Farm, Meta, Node, State};
use crate::{ContractId, FarmId, LIGHT_HEADERS_KEPT};

/// Why a read at a height was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// No trusted header at that height.
    Light(LightError),
    /// The proof does not verify against that header's state root.
    Proof(ProofError),
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self, f)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReadError {}

/// A light client of one chain.
#[derive(Debug, Clone)]
pub struct LightClient {
    chain_id: [u8; 32],
    /// The last accepted headers, oldest first; never empty.
    headers: VecDeque<Header>,
    /// The set that must sign the block after the latest header.
    validators: ValidatorSet,
}

impl LightClient {
    /// Trusts `genesis` (computes its state root like a validator does).
    pub fn from_genesis(genesis: &Genesis) -> Result<LightClient, ConfigError> {
        let (state, header) = State::genesis(genesis)?;
        LightClient::from_trusted(header, state.meta().validators.clone())
    }

    /// Trusts `header` (obtained out of band) and `validators`, the set that signs the next
    /// block, which must be the one the header names.
    pub fn from_trusted(header: Header, validators: ValidatorSet) -> Result<LightClient, ConfigError> {
        if validators.hash() != header.next_validators_hash {
            return Err(ConfigError::BadValidatorSet);
        }
        let mut headers = VecDeque::with_capacity(LIGHT_HEADERS_KEPT);
        let chain_id = header.chain_id;
        headers.push_back(header);
        Ok(LightClient { chain_id, headers, validators })
    }

    /// The chain id.
    pub fn chain_id(&self) -> [u8; 32] {
        self.chain_id
    }

    /// The latest trusted header.
    pub fn latest(&self) -> &Header {
        // Never empty: built with one header, and accept pops only beyond the bound.
        &self.headers[self.headers.len() - 1]
    }

    /// The set that must sign the next block.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// The trusted header at `height`, if still held.
    pub fn header(&self, height: u64) -> Option<&Header> {
        let first = self.headers.front()?.height;
        let index = usize::try_from(height.checked_sub(first)?).ok()?;
        self.headers.get(index)
    }

    /// Accepts `block` if it extends the trusted chain with a valid quorum (see module docs).
    pub fn accept(&mut self, block: &LightBlock) -> Result<(), LightError> {
        let latest = self.latest();
        let header = &block.header;
        if header.chain_id != self.chain_id {
            return Err(LightError::WrongChain);
        }
        if Some(header.height) != latest.height.checked_add(1) || header.parent_hash != latest.hash() {
            return Err(LightError::NotNext);
        }
        if header.time_ms < latest.time_ms {
            return Err(LightError::TimeWentBack);
        }
        if header.validators_hash != self.validators.hash() || header.validators_hash != latest.next_validators_hash {
            return Err(LightError::WrongValidators);
        }
        let next = match &block.next_validators {
            None if header.next_validators_hash == header.validators_hash => None,
            Some(set) if set.hash() == header.next_validators_hash && header.next_validators_hash != header.validators_hash => {
                Some(set.clone())
            }
            _ => return Err(LightError::WrongNextValidators),
        };
        block.commit.verify(&self.chain_id, header, &self.validators)?;
        if let Some(set) = next {
            self.validators = set;
        }
        if self.headers.len() >= LIGHT_HEADERS_KEPT {
            self.headers.pop_front();
        }
        self.headers.push_back(header.clone());
        Ok(())
    }

    fn root_at(&self, height: u64) -> Result<[u8; 32], ReadError> {
        self.header(height).map(|h| h.state_root).ok_or(ReadError::Light(LightError::UnknownHeight(height)))
    }

    /// A proven account read at `height`.
    pub fn account(&self, height: u64, key: &PublicKey, proof: &StateProof) -> Result<Account, ReadError> {
        state::verify_account(&self.root_at(height)?, key, proof).map_err(ReadError::Proof)
    }

    /// A proven farm read at `height`.
    pub fn farm(&self, height: u64, id: FarmId, proof: &StateProof) -> Result<Option<Farm>, ReadError> {
        state::verify_farm(&self.root_at(height)?, id, proof).map_err(ReadError::Proof)
    }

    /// A proven node read at `height`.
    pub fn node(&self, height: u64, key: &PublicKey, proof: &StateProof) -> Result<Option<Node>, ReadError> {
        state::verify_node(&self.root_at(height)?, key, proof).map_err(ReadError::Proof)
    }

    /// A proven contract read at `height`.
    pub fn contract(&self, height: u64, id: ContractId, proof: &StateProof) -> Result<Option<Contract>, ReadError> {
        state::verify_contract(&self.root_at(height)?, id, proof).map_err(ReadError::Proof)
    }

    /// A proven read of the chain-wide values at `height`.
    pub fn meta(&self, height: u64, proof: &StateProof) -> Result<Meta, ReadError> {
        state::verify_meta(&self.root_at(height)?, proof).map_err(ReadError::Proof)
    }
}
