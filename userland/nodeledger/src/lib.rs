//! The node's ledger agent: what a node does on the grid's ledger, without any I/O.
//!
//! The kernel (or a test) connects to the configured validators, asks [`Agent::poll_request`]
//! what to send to each (one request in flight per validator), hands every answer to
//! [`Agent::on_response`], a lost connection to [`Agent::on_disconnect`], and sleeps until
//! [`Agent::poll_timeout`] or the next answer. Time is passed in (`now_ms`); node-side
//! capabilities (signing with the identity key, shard proofs, workload usage, stopping a
//! workload) come through the [`Local`] trait.
//!
//! What the agent does:
//! - **Trusts no validator.** It asks for the genesis and accepts it only if it hashes to the
//!   configured chain id; from there it follows the chain with [`ledger::LightClient`]
//!   (quorum-signed commits, validator-set changes). Every record it acts on (its account,
//!   its node record, the chain's `Meta`, contracts) is a proven read against a header it
//!   accepted. A validator that lies (a block that does not verify, a proof that does not,
//!   a wrong genesis, contracts it made up, an impossible commit height) is counted and left
//!   alone for a while (doubling back-off, shortened again by verified answers); the others
//!   take over. A malformed or unexpected answer is counted and costs a short pause.
//! - **Registers** the node under the configured farm (self-signed `RegisterNode`), updates
//!   its capacity when the measured one differs, or does nothing when the record matches.
//! - **Reports uptime** once per period (a report is applied in the period its block is in:
//!   nothing is ever back-dated; a period with no reachable validator is simply missed).
//! - **Answers storage challenges** each period for every shard that an active storage
//!   contract places on this node (challenge from the period seed of a proven `Meta` read),
//!   from the period after the contract's creation (the first one billed; its shards may
//!   still be arriving in the period it was made), and not in a period's last tenth (a
//!   proof carried into the next period would answer the wrong challenge).
//! - **Reports usage** per workload contract for each ended period.
//! - **Follows contracts**: its node's active contracts (a listing, each record then proven),
//!   re-listed at each new height; a workload contract that ended is handed to
//!   [`Local::contract_ended`]; the permits ([`Agent::workload_contract`],
//!   [`Agent::storage_quota`]) come from these records.
//!
//! Transactions: one in flight, a copy to every validator but one (each proposes from its
//! own mempool, so the next block carries it whoever proposes; the one left follows the
//! chain); the nonce comes from a proven read of the node's account. A copy's lost
//! connection or refusal waits for the others; with none left, or none carried for
//! [`STALE_BLOCKS`], the account's nonce says whether it landed (resent if not).
//! After a transaction commits, the records it changed are read again (at or above its
//! height) before the agent decides anything that depends on them, so a restarted agent
//! and a running one decide the same from the same chain: nothing is sent twice for a
//! period in which the ledger already has it.
//!
//! Bounds: at most [`CONTRACTS_FOLLOWED_MAX`] contracts followed (each at most
//! [`ledger::SHARDS_PER_CONTRACT_MAX`] shards), [`OTHER_VIEWS_MAX`] answers about other
//! contracts, [`ENDED_KEPT`] ended ids, [`EVENTS_MAX`] undrained events,
//! [`LISTED_PER_VALIDATOR_MAX`] unread listed ids per validator (so a validator that lists
//! made-up contracts cannot crowd out the real ones another lists); pending reads are
//! bounded by the sum of these. What does not fit is counted ([`Status::dropped`]).
//!
//! What it leaves to others: connections, framing (`ledger::rpc` frames), timeouts of a
//! silent connection (the caller closes it and calls [`Agent::on_disconnect`]; it may also
//! close one whose submission the agent gave up on, [`Agent::stale_request`]), printing.

#![no_std]
#![warn(missing_docs)]

extern crate alloc;

mod agent;

use alloc::string::String;

pub use agent::Agent;
use ledger::{Capacity, ContractId, FarmId, LightError, ProofData, PublicKey, ReadError, Resources, Signature, Usage};

/// Contracts followed at most (active contracts on this node). Worst case memory: each
/// holds at most [`ledger::SHARDS_PER_CONTRACT_MAX`] shards of ~80 bytes, ~5 MiB in all.
pub const CONTRACTS_FOLLOWED_MAX: usize = 256;
/// Answers kept about contracts that are not this node's (asked by [`Agent::want_contract`]).
pub const OTHER_VIEWS_MAX: usize = 64;
/// Ended contract ids remembered (so each is handed to [`Local::contract_ended`] once).
pub const ENDED_KEPT: usize = 256;
/// Events kept until [`Agent::take_events`] (the oldest are dropped beyond).
pub const EVENTS_MAX: usize = 256;
/// Listed contract ids not yet read (or absent and to be read again) per validator.
pub const LISTED_PER_VALIDATOR_MAX: usize = CONTRACTS_FOLLOWED_MAX;
/// Wait between two "any new blocks?" requests when caught up.
pub const FOLLOW_INTERVAL_MS: u64 = 1_000;
/// Back-off of a validator that refused a read or was behind.
pub const BUSY_BACKOFF_MS: u64 = 1_000;
/// First back-off of a validator that lied (doubles per lie).
pub const DISTRUST_MS_MIN: u64 = 5_000;
/// Longest back-off of a validator that lied.
pub const DISTRUST_MS_MAX: u64 = 300_000;
/// Verified answers (blocks, proofs) that make a validator's back-off one step shorter.
pub const GOOD_ANSWERS_PER_LIE_FORGIVEN: u32 = 32;
/// Submissions of one transaction purpose per period at most (a refusal is retried once).
pub const TX_ATTEMPTS_PER_PERIOD: u8 = 2;
/// How long a refused transaction waits for its other copies to land before it counts as
/// refused (a validator behind the others refuses what the chain accepts).
pub const REFUSAL_GRACE_MS: u64 = 3_000;
/// Blocks after which a submitted transaction no block carried is given up on (the
/// account's nonce then says whether it landed).
pub const STALE_BLOCKS: u64 = 8;
/// A validator that held a copy no block carried gets copies only after the others, for
/// this long (it may be censoring; a transaction that went invalid is rare).
pub const STALE_SUBMIT_BACKOFF_MS: u64 = 60_000;
/// No proof is sent in the last tenth of a period, and at most this long before its end.
pub const PERIOD_END_MARGIN_MS_MAX: u64 = 30_000;
/// Blocks to wait before reading the account after a submission's connection was lost.
pub const UNSURE_BLOCKS: u64 = 2;
/// Blocks after which a listed contract read as absent is read again (still absent: the
/// validator that listed it made it up).
pub const SUSPECT_BLOCKS: u64 = 16;
/// Longest refusal text kept in an event.
pub const WHY_BYTES_MAX: usize = 200;

/// The agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The chain id (`Genesis::chain_id`).
    pub chain_id: [u8; 32],
    /// The node's identity key (the account that signs its transactions).
    pub node: PublicKey,
    /// The farm it registers under (`None`: it does not register itself).
    pub farm: Option<FarmId>,
    /// What it measured.
    pub capacity: Capacity,
    /// How many validators the caller connects to (indexes `0..validators`).
    pub validators: usize,
}

/// What the node provides (the kernel implements it; tests fake it).
pub trait Local {
    /// Signs `message` with the node's identity key.
    fn sign(&mut self, message: &[u8]) -> Signature;
    /// Seconds since the node booted.
    fn uptime_secs(&mut self) -> u64;
    /// The store's answer to `challenge` for `owner`'s shard `key`, or why not.
    fn prove_shard(&mut self, owner: &PublicKey, key: &[u8; 32], challenge: u64) -> Result<ProofData, String>;
    /// What the workload(s) under `contract` used in `period` (`None`: none here).
    fn usage(&mut self, contract: ContractId, period: u64) -> Option<Usage>;
    /// `contract` ended (cancelled or unpaid): stop the workload(s) under it.
    fn contract_ended(&mut self, contract: ContractId);
}

/// What the agent knows of a workload contract (the deploy gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractView {
    /// Not read yet (or absent when read): ask [`Agent::want_contract`] and wait.
    Unknown,
    /// Active, for this node.
    Active {
        /// Who may deploy under it.
        owner: PublicKey,
        /// What it reserves.
        resources: Resources,
    },
    /// Not a workload contract for this node (another node's, or a storage contract).
    NotThisNode,
    /// Ended (cancelled or unpaid).
    Ended,
}

/// The agent's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Waiting for a genesis that hashes to the chain id.
    Genesis,
    /// Following the chain.
    Following,
}

/// A snapshot for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Phase.
    pub mode: Mode,
    /// Latest accepted height.
    pub height: u64,
    /// Its period.
    pub period: u64,
    /// Whether the node's record exists (as last read).
    pub registered: bool,
    /// The farm of the node's record (or the configured one before registration).
    pub farm: Option<FarmId>,
    /// The last period the ledger has an uptime report of the node in (as last read).
    pub last_uptime_period: Option<u64>,
    /// Storage proofs committed.
    pub proofs_ok: u64,
    /// Storage proofs that could not be made or were refused.
    pub proofs_failed: u64,
    /// Usage reports committed.
    pub usage_reported: u64,
    /// Transactions committed.
    pub txs_committed: u64,
    /// Transactions refused.
    pub txs_refused: u64,
    /// Contracts followed.
    pub contracts_followed: usize,
    /// Answers that were malformed, unexpected or refused (not lies).
    pub bad_responses: u64,
    /// Lies: blocks, proofs or a genesis that did not verify.
    pub lies: u64,
    /// Things dropped at a bound (events, reads, contracts beyond the limits).
    pub dropped: u64,
    /// Blocks accepted by the light client.
    pub blocks_followed: u64,
    /// Validators left alone for a lie right now.
    pub validators_distrusted: usize,
}

/// What a transaction was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TxPurpose {
    /// `RegisterNode`.
    Register,
    /// `UpdateCapacity`.
    UpdateCapacity,
    /// `UptimeReport` in a period.
    Uptime {
        /// The period it was decided in.
        period: u64,
    },
    /// `StorageProof`.
    Proof {
        /// Contract.
        contract: ContractId,
        /// Shard index in it.
        shard: u32,
        /// Period of the challenge.
        period: u64,
    },
    /// `UsageReport`.
    Usage {
        /// Contract.
        contract: ContractId,
        /// Period measured.
        period: u64,
    },
}

/// Why a validator is distrusted for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distrust {
    /// Its genesis does not hash to the chain id (or is invalid).
    WrongGenesis,
    /// A block it served was refused by the light client (forged, under-signed, not next).
    BadBlock(LightError),
    /// A proof it served does not verify against the accepted header.
    BadProof(ReadError),
    /// It answered about another record than asked.
    WrongRecord,
    /// More items than the protocol allows, a listing out of order, or a commit height
    /// far beyond the chain.
    OutOfBounds,
    /// It listed a contract as this node's that a proven read shows is not.
    BadListing,
}

/// What happened, for the caller's log lines (see PLAN: `ledger: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The genesis was accepted; following from it.
    ChainAccepted {
        /// Billing period of the chain.
        period_ms: u64,
    },
    /// The chain's height once caught up in a new period (at most once per period; the
    /// first one after the genesis too).
    Height {
        /// Height.
        height: u64,
        /// Period.
        period: u64,
    },
    /// `RegisterNode` committed.
    Registered {
        /// Farm.
        farm: FarmId,
        /// Capacity registered.
        capacity: Capacity,
    },
    /// `UpdateCapacity` committed.
    CapacityUpdated {
        /// Farm.
        farm: FarmId,
        /// New capacity.
        capacity: Capacity,
    },
    /// The node's record matches: nothing to register.
    AlreadyRegistered {
        /// Farm (the record's).
        farm: FarmId,
    },
    /// Not registered and no farm configured: the node does not register itself.
    NoFarm,
    /// An uptime report committed.
    UptimeReported {
        /// Period it was decided in.
        period: u64,
    },
    /// A storage proof committed.
    ProofOk {
        /// Contract.
        contract: ContractId,
        /// Shard index.
        shard: u32,
        /// Period.
        period: u64,
    },
    /// A storage proof could not be made or was refused (the ledger will mark the node).
    ProofFailed {
        /// Contract.
        contract: ContractId,
        /// Shard index.
        shard: u32,
        /// Period.
        period: u64,
        /// Why.
        why: String,
    },
    /// A usage report committed.
    UsageReported {
        /// Contract.
        contract: ContractId,
        /// Period measured.
        period: u64,
    },
    /// A workload contract ended; [`Local::contract_ended`] was called.
    ContractEnded {
        /// Contract.
        contract: ContractId,
    },
    /// A storage contract on this node ended (its quota is gone).
    StorageContractEnded {
        /// Contract.
        contract: ContractId,
    },
    /// A transaction was refused by a validator.
    TxRefused {
        /// What it was for.
        purpose: TxPurpose,
        /// The validator's reason.
        why: String,
    },
    /// A validator lied and is left alone for a while.
    ValidatorDistrusted {
        /// Its index.
        validator: usize,
        /// What it did.
        why: Distrust,
        /// Until when (ms).
        until_ms: u64,
    },
}
