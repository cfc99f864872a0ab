//! The state machine: balances, farms, nodes and contracts, changed only by transactions
//! and by hourly billing, deterministically (ordered maps only, no clock, no randomness).
//!
//! - [`State::apply_block`] checks a block against the state (chain, height, parent, time,
//!   validator sets, transaction root), settles the periods (hours) that ended before it,
//!   applies every transaction in order, and requires the header's state root to be the
//!   result. Any failure leaves the state as it was (an undo journal, not a copy).
//! - [`State::check_tx`] is the mempool check: the transaction applies to the current state.
//! - [`State::build_block`] is the proposer's side: it keeps the transactions that apply and
//!   fills in the header's roots, without changing the state.
//!
//! Billing (once per ended period `p`, for contracts created before `p`): a node is *up* in
//! `p` if it sent an uptime report in `p`; it *failed a proof* if a shard it holds under an
//! active storage contract has no valid proof for `p`'s challenge. A node that is not up or
//! failed a proof is marked for `p` and not paid for it, and the owner is not charged for
//! its part. Otherwise the owner pays the price (a storage contract's price is split evenly
//! over its shards) to the farm: credited to the farm owner's account and counted in the
//! farm's `earned`. An owner who cannot pay the period's due has the contract ended (unpaid).
//!
//! Storage challenges: each period's seed is the hash of the block before the period's first
//! block, so no node knows it in advance or can choose it; a shard's challenge is derived
//! from the seed, the contract and the shard index ([`storage_challenge`]), and the proof is
//! checked with `shardstore::verify_proof`, the same code the nodes' stores answer with.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::block::{txs_hash, Block, Genesis, Header, ValidatorSet};
use crate::crypto::{self, PublicKey, DOMAIN_CHALLENGE};
use crate::error::{BlockError, ConfigError, ProofError, TxError};
use crate::smt::{StateKey, StateProof, StateTree};
use crate::tx::{Amount, Capacity, Resources, ShardPlacement, SignedTx, Usage};
use crate::{ContractId, FarmId, BLOCK_BYTES_MAX, BLOCK_TXS_MAX, SETTLE_PERIODS_MAX};

/// An account: balance and next nonce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Tokens.
    pub balance: Amount,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
}

/// A farm: an owner's group of nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Farm {
    /// The owner (paid for its nodes' contracts).
    pub owner: PublicKey,
    /// Display name.
    pub name: String,
    /// Nodes registered in it.
    pub nodes: u32,
    /// Total paid to it by contracts.
    pub earned: Amount,
}

/// Why a node was marked for a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MarkReason {
    /// No uptime report in the period.
    MissedUptime,
    /// A shard it holds had no valid proof in the period.
    FailedProof,
    /// Both.
    MissedUptimeAndFailedProof,
}

/// A node's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its farm.
    pub farm: FarmId,
    /// What it offers.
    pub capacity: Capacity,
    /// What active workload contracts reserve on it.
    pub reserved: Resources,
    /// The period it registered in (it is judged from the next one).
    pub registered_period: u64,
    /// The last period it reported uptime in.
    pub last_uptime_period: Option<u64>,
    /// Its uptime at that report.
    pub last_uptime_secs: u64,
    /// Periods it was up and proved all its shards.
    pub periods_good: u64,
    /// Periods it was marked.
    pub periods_marked: u64,
    /// Valid storage proofs it sent.
    pub proofs_ok: u64,
    /// Shard-periods it left unproven.
    pub proofs_missed: u64,
    /// The last period it was marked in, and why.
    pub last_mark: Option<(u64, MarkReason)>,
}

/// Why a contract ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContractStatus {
    /// Running and billed.
    Active,
    /// Cancelled by its owner in this period.
    Cancelled(u64),
    /// Its owner could not pay this period.
    Unpaid(u64),
}

/// One shard under a storage contract and its proof record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredShard {
    /// Where it is and what it is.
    pub placement: ShardPlacement,
    /// The last period a valid proof for it landed in.
    pub last_proven_period: Option<u64>,
}

/// What a contract is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContractTerms {
    /// Resources on one node.
    Workload {
        /// The node.
        node: PublicKey,
        /// What it reserves.
        resources: Resources,
        /// Usage reported so far, summed.
        usage_total: Usage,
        /// The last period reported.
        last_usage_period: Option<u64>,
    },
    /// Shards on nodes.
    Storage {
        /// The shards.
        shards: Vec<StoredShard>,
    },
}

/// A contract's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    /// Who pays.
    pub owner: PublicKey,
    /// Price per period.
    pub price_per_hour: Amount,
    /// The period it was created in (billed from the next one).
    pub created_period: u64,
    /// Running or why it ended.
    pub status: ContractStatus,
    /// Total paid so far.
    pub paid: Amount,
    /// What it is for.
    pub terms: ContractTerms,
}

/// Chain-wide values (one record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The chain id.
    pub chain_id: [u8; 32],
    /// Height of the last applied block.
    pub height: u64,
    /// Its time.
    pub time_ms: u64,
    /// Its parent's hash (the state cannot hold its own block's hash, which covers the root).
    pub parent_hash: [u8; 32],
    /// The current period (`time_ms / period_ms`).
    pub period: u64,
    /// Length of a period in ms (from the genesis).
    pub period_ms: u64,
    /// Seed of this period's storage challenges.
    pub period_seed: [u8; 32],
    /// The next farm id.
    pub next_farm_id: FarmId,
    /// The next contract id.
    pub next_contract_id: ContractId,
    /// The set that signs the next block.
    pub validators: ValidatorSet,
    /// A change requested in the block being applied (empty between blocks).
    pub pending_validators: Option<ValidatorSet>,
    /// The account allowed to change the validator set.
    pub governance: PublicKey,
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxOutcome {
    /// Applied.
    Done,
    /// A farm was created with this id.
    FarmCreated(FarmId),
    /// A contract was created with this id.
    ContractCreated(ContractId),
}

/// A transaction's receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The transaction id.
    pub tx_id: [u8; 32],
    /// What it did.
    pub outcome: TxOutcome,
}

/// What billing did at a period's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillingEvent {
    /// The owner paid `amount` for `period`.
    Charged {
        /// Contract.
        contract: ContractId,
        /// Period.
        period: u64,
        /// Amount.
        amount: Amount,
    },
    /// A node was marked and not paid for `period`.
    NodeMarked {
        /// Node.
        node: PublicKey,
        /// Period.
        period: u64,
        /// Why.
        reason: MarkReason,
    },
    /// The owner could not pay: the contract ended.
    ContractEnded {
        /// Contract.
        contract: ContractId,
        /// Period.
        period: u64,
    },
}

/// What applying a block produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutcome {
    /// The state root after the block (equal to the header's).
    pub state_root: [u8; 32],
    /// One receipt per transaction, in order.
    pub receipts: Vec<Receipt>,
    /// What billing did before the transactions.
    pub billing: Vec<BillingEvent>,
}

/// The challenge a shard answers in the period whose seed is `period_seed`.
pub fn storage_challenge(period_seed: &[u8; 32], contract: ContractId, shard: u32) -> u64 {
    let hash = crypto::hash_parts(&[DOMAIN_CHALLENGE, period_seed, &contract.to_le_bytes(), &shard.to_le_bytes()]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

/// A record's previous value, to undo a failed transaction or block.
#[derive(Clone)]
enum Undo {
    Meta(Meta),
    Account(PublicKey, Option<Account>),
    Farm(FarmId, Option<Farm>),
    Node(PublicKey, Option<Node>),
    Contract(ContractId, Option<Contract>),
    Active(ContractId, bool),
}

/// The ledger state and its Merkle tree.
#[derive(Clone)]
pub struct State {
    meta: Meta,
    accounts: BTreeMap<PublicKey, Account>,
    farms: BTreeMap<FarmId, Farm>,
    nodes: BTreeMap<PublicKey, Node>,
    contracts: BTreeMap<ContractId, Contract>,
    /// Index of the active contracts (derived from `contracts`, not in the tree).
    active: BTreeSet<ContractId>,
    /// The last applied block's hash (not in the tree: it covers the root).
    last_block_hash: [u8; 32],
    /// Records changed since the tree was last updated.
    dirty: BTreeSet<StateKey>,
    journal: Vec<Undo>,
    tree: StateTree,
}

mod apply;
mod billing;

impl State {
    /// The state after `genesis` (height 0), and the genesis header.
    pub fn genesis(genesis: &Genesis) -> Result<(State, Header), ConfigError> {
        let validators = genesis.check()?;
        let chain_id = genesis.chain_id();
        let period = genesis.time_ms / genesis.period_ms;
        let meta = Meta {
            chain_id,
            height: 0,
            time_ms: genesis.time_ms,
            parent_hash: [0; 32],
            period,
            period_ms: genesis.period_ms,
            period_seed: chain_id,
            next_farm_id: 0,
            next_contract_id: 0,
            validators: validators.clone(),
            pending_validators: None,
            governance: genesis.governance,
        };
        let mut state = State {
            meta,
            accounts: BTreeMap::new(),
            farms: BTreeMap::new(),
            nodes: BTreeMap::new(),
            contracts: BTreeMap::new(),
            active: BTreeSet::new(),
            last_block_hash: [0; 32],
            dirty: BTreeSet::new(),
            journal: Vec::new(),
            tree: StateTree::default(),
        };
        state.dirty.insert(StateKey::Meta);
        for (key, amount) in &genesis.balances {
            state.account_mut(key).balance = *amount;
        }
        state.journal.clear();
        let state_root = state.flush().map_err(|_| ConfigError::Invalid("state tree"))?;
        let header = Header {
            chain_id,
            height: 0,
            time_ms: genesis.time_ms,
            parent_hash: [0; 32],
            txs_hash: txs_hash(&[]),
            state_root,
            validators_hash: validators.hash(),
            next_validators_hash: validators.hash(),
            proposer: [0; 32],
        };
        state.last_block_hash = header.hash();
        Ok((state, header))
    }

    /// Chain-wide values.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The state root (of the last applied block).
    pub fn root(&self) -> [u8; 32] {
        self.tree.root()
    }

    /// The last applied block's hash.
    pub fn last_block_hash(&self) -> [u8; 32] {
        self.last_block_hash
    }

    /// An account (a key never seen has balance 0 and nonce 0).
    pub fn account(&self, key: &PublicKey) -> Account {
        self.accounts.get(key).cloned().unwrap_or_default()
    }

    /// A farm.
    pub fn farm(&self, id: FarmId) -> Option<&Farm> {
        self.farms.get(&id)
    }

    /// A node.
    pub fn node(&self, key: &PublicKey) -> Option<&Node> {
        self.nodes.get(key)
    }

    /// Registered node keys after `after`, in key order (for listings; each record is
    /// proven on its own).
    pub fn node_keys(&self, after: Option<&PublicKey>) -> impl Iterator<Item = &PublicKey> {
        let start = match after {
            Some(key) => core::ops::Bound::Excluded(*key),
            None => core::ops::Bound::Unbounded,
        };
        self.nodes.range((start, core::ops::Bound::Unbounded)).map(|(key, _)| key)
    }

    /// A contract.
    pub fn contract(&self, id: ContractId) -> Option<&Contract> {
        self.contracts.get(&id)
    }

    /// Ids of the active contracts.
    pub fn active_contracts(&self) -> impl Iterator<Item = &ContractId> {
        self.active.iter()
    }

    /// Ids of the active contracts that reserve resources on `node` or place shards on
    /// it, after `after`, in order (a scan of the active contracts: a listing for nodes,
    /// each record then read with its proof).
    pub fn node_contracts<'a>(&'a self, node: &'a PublicKey, after: Option<ContractId>) -> impl Iterator<Item = ContractId> + 'a {
        let start = after.map_or(core::ops::Bound::Unbounded, core::ops::Bound::Excluded);
        self.active.range((start, core::ops::Bound::Unbounded)).copied().filter(move |id| {
            self.contracts.get(id).is_some_and(|c| match &c.terms {
                ContractTerms::Workload { node: n, .. } => n == node,
                ContractTerms::Storage { shards } => shards.iter().any(|s| s.placement.node == *node),
            })
        })
    }

    /// A record (or its absence) with the proof against [`State::root`].
    pub fn prove(&self, key: &StateKey) -> Result<StateProof, BlockError> {
        let proof = self.tree.prove(key).map_err(|_| BlockError::Tree)?;
        Ok(StateProof { key: *key, record: self.record_bytes(key), proof })
    }

    /// Mempool check: whether `tx` applies to the current state (as the next block's first
    /// transaction, in the current period). The state is left unchanged.
    pub fn check_tx(&mut self, tx: &SignedTx) -> Result<TxOutcome, TxError> {
        let mark = self.journal.len();
        let result = tx.check_stateless(&self.meta.chain_id).and_then(|()| self.apply_tx(tx));
        self.rollback(mark);
        result
    }

    /// Mempool re-check of a sequence (an account's pending transactions in nonce order,
    /// or a whole pool after a block): each is checked after the ones before it that apply;
    /// the state is left unchanged.
    pub fn check_sequence(&mut self, txs: &[SignedTx]) -> Vec<Result<TxOutcome, TxError>> {
        let start = self.journal.len();
        let mut results = Vec::with_capacity(txs.len());
        for tx in txs {
            let mark = self.journal.len();
            let result = tx.check_stateless(&self.meta.chain_id).and_then(|()| self.apply_tx(tx));
            if result.is_err() {
                self.rollback(mark);
            }
            results.push(result);
        }
        self.rollback(start);
        results
    }

    /// Applies a block decided by consensus (see the module docs). On error the state is
    /// unchanged.
    pub fn apply_block(&mut self, block: &Block) -> Result<BlockOutcome, BlockError> {
        debug_assert!(self.journal.is_empty());
        self.check_header(&block.header)?;
        if block.txs.len() > BLOCK_TXS_MAX || block.encode().len() > BLOCK_BYTES_MAX {
            return Err(BlockError::TooLarge);
        }
        if txs_hash(&block.txs) != block.header.txs_hash {
            return Err(BlockError::TxsRootMismatch);
        }
        let result = self.execute(block);
        match result {
            Ok(outcome) => {
                self.journal.clear();
                self.last_block_hash = block.header.hash();
                Ok(outcome)
            }
            Err(error) => {
                self.rollback(0);
                // Restores the tree to the old records, hence the old root.
                self.flush().map_err(|_| BlockError::Tree)?;
                Err(error)
            }
        }
    }

    /// Whether `block` would apply (a proposal check before voting for it): the state root it
    /// gives, or why not. The state is left unchanged.
    pub fn check_block(&mut self, block: &Block) -> Result<[u8; 32], BlockError> {
        debug_assert!(self.journal.is_empty());
        self.check_header(&block.header)?;
        if block.txs.len() > BLOCK_TXS_MAX || block.encode().len() > BLOCK_BYTES_MAX {
            return Err(BlockError::TooLarge);
        }
        if txs_hash(&block.txs) != block.header.txs_hash {
            return Err(BlockError::TxsRootMismatch);
        }
        let result = self.execute(block).map(|outcome| outcome.state_root);
        self.rollback(0);
        self.flush().map_err(|_| BlockError::Tree)?;
        result
    }

    /// The proposer's side: a block at `time_ms` with the transactions of `candidates` that
    /// apply in order (the others are returned with their errors), its roots filled in. The
    /// state is left unchanged; consensus decides, then [`State::apply_block`] applies.
    pub fn build_block(
        &mut self,
        candidates: Vec<SignedTx>,
        time_ms: u64,
        proposer: PublicKey,
    ) -> Result<(Block, Vec<(SignedTx, TxError)>), BlockError> {
        let mut header = Header {
            chain_id: self.meta.chain_id,
            height: self.meta.height + 1,
            time_ms: time_ms.max(self.meta.time_ms),
            parent_hash: self.last_block_hash,
            txs_hash: [0; 32],
            state_root: [0; 32],
            validators_hash: self.meta.validators.hash(),
            next_validators_hash: [0; 32],
            proposer,
        };
        self.start_block(&header);
        let mut txs = Vec::new();
        let mut refused = Vec::new();
        let mut bytes = 0usize;
        for tx in candidates {
            let size = tx.encode().len();
            if txs.len() >= BLOCK_TXS_MAX || bytes + size > BLOCK_BYTES_MAX / 2 {
                refused.push((tx, TxError::Invalid("block full")));
                continue;
            }
            let mark = self.journal.len();
            match tx.check_stateless(&header.chain_id).and_then(|()| self.apply_tx(&tx)) {
                Ok(_) => {
                    bytes += size;
                    txs.push(tx);
                }
                Err(error) => {
                    self.rollback(mark);
                    refused.push((tx, error));
                }
            }
        }
        let next_validators = self.finish_block(&header);
        let root = self.flush();
        header.txs_hash = txs_hash(&txs);
        header.next_validators_hash = self.meta.validators.hash();
        header.state_root = root.unwrap_or([0; 32]);
        self.rollback(0);
        self.flush().map_err(|_| BlockError::Tree)?;
        root.map_err(|_| BlockError::Tree)?;
        Ok((Block { header, txs, next_validators }, refused))
    }

    fn check_header(&self, header: &Header) -> Result<(), BlockError> {
        if header.chain_id != self.meta.chain_id {
            return Err(BlockError::WrongChain);
        }
        let expected = self.meta.height + 1;
        if header.height != expected {
            return Err(BlockError::WrongHeight { expected, got: header.height });
        }
        if header.parent_hash != self.last_block_hash {
            return Err(BlockError::WrongParent);
        }
        if header.time_ms < self.meta.time_ms {
            return Err(BlockError::TimeWentBack);
        }
        if header.validators_hash != self.meta.validators.hash() {
            return Err(BlockError::WrongValidators);
        }
        if self.meta.validators.power_of(&header.proposer).is_none() {
            return Err(BlockError::UnknownProposer);
        }
        Ok(())
    }

    fn execute(&mut self, block: &Block) -> Result<BlockOutcome, BlockError> {
        let header = &block.header;
        let billing = self.start_block(header);
        let mut receipts = Vec::with_capacity(block.txs.len());
        for (index, tx) in block.txs.iter().enumerate() {
            let outcome = tx
                .check_stateless(&header.chain_id)
                .and_then(|()| self.apply_tx(tx))
                .map_err(|error| BlockError::Tx { index: index as u32, error })?;
            receipts.push(Receipt { tx_id: tx.id(), outcome });
        }
        let next_validators = self.finish_block(header);
        if header.next_validators_hash != self.meta.validators.hash() || next_validators != block.next_validators {
            return Err(BlockError::WrongNextValidators);
        }
        let state_root = self.flush().map_err(|_| BlockError::Tree)?;
        if state_root != header.state_root {
            return Err(BlockError::StateRootMismatch { computed: state_root, claimed: header.state_root });
        }
        Ok(BlockOutcome { state_root, receipts, billing })
    }

    /// Height, time and period of the new block; settles the periods that ended.
    fn start_block(&mut self, header: &Header) -> Vec<BillingEvent> {
        let period = header.time_ms / self.meta.period_ms.max(1);
        let mut events = Vec::new();
        if period > self.meta.period {
            let first = self.meta.period.max(period.saturating_sub(SETTLE_PERIODS_MAX));
            for ended in first..period {
                self.settle(ended, &mut events);
            }
        }
        let meta = self.meta_mut();
        if period > meta.period {
            meta.period = period;
            meta.period_seed = header.parent_hash;
        }
        meta.height = header.height;
        meta.time_ms = header.time_ms;
        meta.parent_hash = header.parent_hash;
        events
    }

    /// Rotates the validator set; returns the block's `next_validators`.
    fn finish_block(&mut self, _header: &Header) -> Option<ValidatorSet> {
        let pending = self.meta.pending_validators.clone()?;
        let meta = self.meta_mut();
        meta.pending_validators = None;
        if pending == meta.validators {
            return None;
        }
        meta.validators = pending.clone();
        Some(pending)
    }

    /// Writes the changed records into the tree; returns the root.
    fn flush(&mut self) -> Result<[u8; 32], crate::smt::TreeError> {
        let dirty = core::mem::take(&mut self.dirty);
        let mut changes = Vec::with_capacity(dirty.len());
        for key in dirty {
            if let StateKey::Account(id) = key {
                if self.accounts.get(&id).is_some_and(|a| *a == Account::default()) {
                    self.accounts.remove(&id);
                }
            }
            changes.push((key, self.record_bytes(&key)));
        }
        self.tree.update(changes)
    }

    fn record_bytes(&self, key: &StateKey) -> Option<Vec<u8>> {
        match key {
            StateKey::Meta => Some(crypto::encode(&self.meta)),
            StateKey::Account(id) => self.accounts.get(id).map(crypto::encode),
            StateKey::Farm(id) => self.farms.get(id).map(crypto::encode),
            StateKey::Node(id) => self.nodes.get(id).map(crypto::encode),
            StateKey::Contract(id) => self.contracts.get(id).map(crypto::encode),
        }
    }

    fn rollback(&mut self, mark: usize) {
        while self.journal.len() > mark {
            let Some(undo) = self.journal.pop() else { break };
            // Restored records are dirty again: a tree already updated from the undone
            // values gets the old ones back at the next flush.
            match undo {
                Undo::Meta(meta) => {
                    self.meta = meta;
                    self.dirty.insert(StateKey::Meta);
                }
                Undo::Account(id, old) => {
                    restore(&mut self.accounts, id, old);
                    self.dirty.insert(StateKey::Account(id));
                }
                Undo::Farm(id, old) => {
                    restore(&mut self.farms, id, old);
                    self.dirty.insert(StateKey::Farm(id));
                }
                Undo::Node(id, old) => {
                    restore(&mut self.nodes, id, old);
                    self.dirty.insert(StateKey::Node(id));
                }
                Undo::Contract(id, old) => {
                    restore(&mut self.contracts, id, old);
                    self.dirty.insert(StateKey::Contract(id));
                }
                Undo::Active(id, was) => {
                    if was {
                        self.active.insert(id);
                    } else {
                        self.active.remove(&id);
                    }
                }
            }
        }
    }

    fn meta_mut(&mut self) -> &mut Meta {
        self.journal.push(Undo::Meta(self.meta.clone()));
        self.dirty.insert(StateKey::Meta);
        &mut self.meta
    }

    fn account_mut(&mut self, id: &PublicKey) -> &mut Account {
        self.journal.push(Undo::Account(*id, self.accounts.get(id).cloned()));
        self.dirty.insert(StateKey::Account(*id));
        self.accounts.entry(*id).or_default()
    }

    fn farm_insert(&mut self, id: FarmId, farm: Farm) {
        self.journal.push(Undo::Farm(id, self.farms.get(&id).cloned()));
        self.dirty.insert(StateKey::Farm(id));
        self.farms.insert(id, farm);
    }

    fn farm_mut(&mut self, id: FarmId) -> Option<&mut Farm> {
        let old = self.farms.get(&id).cloned()?;
        self.journal.push(Undo::Farm(id, Some(old)));
        self.dirty.insert(StateKey::Farm(id));
        self.farms.get_mut(&id)
    }

    fn node_insert(&mut self, id: PublicKey, node: Node) {
        self.journal.push(Undo::Node(id, self.nodes.get(&id).cloned()));
        self.dirty.insert(StateKey::Node(id));
        self.nodes.insert(id, node);
    }

    fn node_mut(&mut self, id: &PublicKey) -> Option<&mut Node> {
        let old = self.nodes.get(id).cloned()?;
        self.journal.push(Undo::Node(*id, Some(old)));
        self.dirty.insert(StateKey::Node(*id));
        self.nodes.get_mut(id)
    }

    fn contract_insert(&mut self, id: ContractId, contract: Contract) {
        self.journal.push(Undo::Contract(id, self.contracts.get(&id).cloned()));
        self.dirty.insert(StateKey::Contract(id));
        self.set_active(id, contract.status == ContractStatus::Active);
        self.contracts.insert(id, contract);
    }

    fn contract_mut(&mut self, id: ContractId) -> Option<&mut Contract> {
        let old = self.contracts.get(&id).cloned()?;
        self.journal.push(Undo::Contract(id, Some(old)));
        self.dirty.insert(StateKey::Contract(id));
        self.contracts.get_mut(&id)
    }

    fn set_active(&mut self, id: ContractId, active: bool) {
        self.journal.push(Undo::Active(id, self.active.contains(&id)));
        if active {
            self.active.insert(id);
        } else {
            self.active.remove(&id);
        }
    }
}

fn restore<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, old: Option<V>) {
    match old {
        Some(value) => map.insert(key, value),
        None => map.remove(&key),
    };
}

/// The free function validators call: applies `block` to `state`; returns the new root and
/// the receipts. On error the state is unchanged.
pub fn apply_block(state: &mut State, block: &Block) -> Result<([u8; 32], Vec<Receipt>), BlockError> {
    let outcome = state.apply_block(block)?;
    Ok((outcome.state_root, outcome.receipts))
}

fn verify_record<T: DeserializeOwned>(root: &[u8; 32], key: &StateKey, proof: &StateProof) -> Result<Option<T>, ProofError> {
    match proof.verify(root, key)? {
        None => Ok(None),
        Some(bytes) => postcard::from_bytes(bytes).map(Some).map_err(|_| ProofError::Decode),
    }
}

/// A proven account read (a never-used account proves as absent: balance 0, nonce 0).
pub fn verify_account(root: &[u8; 32], key: &PublicKey, proof: &StateProof) -> Result<Account, ProofError> {
    Ok(verify_record(root, &StateKey::Account(*key), proof)?.unwrap_or_default())
}

/// A proven farm read.
pub fn verify_farm(root: &[u8; 32], id: FarmId, proof: &StateProof) -> Result<Option<Farm>, ProofError> {
    verify_record(root, &StateKey::Farm(id), proof)
}

/// A proven node read.
pub fn verify_node(root: &[u8; 32], key: &PublicKey, proof: &StateProof) -> Result<Option<Node>, ProofError> {
    verify_record(root, &StateKey::Node(*key), proof)
}

/// A proven contract read.
pub fn verify_contract(root: &[u8; 32], id: ContractId, proof: &StateProof) -> Result<Option<Contract>, ProofError> {
    verify_record(root, &StateKey::Contract(id), proof)
}

/// A proven read of the chain-wide values.
pub fn verify_meta(root: &[u8; 32], proof: &StateProof) -> Result<Meta, ProofError> {
    verify_record(root, &StateKey::Meta, proof)?.ok_or(ProofError::Invalid)
}
