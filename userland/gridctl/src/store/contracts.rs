//! The store's contracts on the ledger (issue 14). On a grid with a ledger, a node keeps an
//! owner's shards only within the room the owner's active storage contracts give it there
//! (the sum of the lengths of the shards they place on it), so every shard placement is
//! named in a contract, created and paid before the shard goes up:
//!
//! - `put` runs the file through the encoder twice: a first pass computes every shard's key,
//!   length and Merkle root and the node of each (encryption is deterministic for a file
//!   nonce and segment index), then one contract per group of segments of at most
//!   `ledger::SHARDS_PER_CONTRACT_MAX` shards is created, then the second pass stores the
//!   same shards on the planned nodes. A shard moved to another node (its planned node
//!   failed) gets a contract of its own first. The sealed manifest's copies get a contract
//!   of their own after sealing (their key is the file id, which the manifest cannot
//!   contain); the manifest records every other contract id (`files::Manifest::contracts`).
//! - `repair` creates a contract for each rebuilt shard's new placement, records it in the
//!   new manifest, and moves the manifest copies' contract to the new manifest.
//! - `rm` cancels the file's contracts and its manifest copies' contract (found among the
//!   contracts created after the file's last one: the user's, naming only the file id).
//! - `verify` shows, per shard, the last period the ledger recorded a valid proof for it.
//!
//! Placement takes only nodes registered on the ledger, those with free disk first.
//! [`StoreLedger`] is what the engine needs; [`LedgerStore`] backs it with gridctl's
//! verified ledger client (over the network, or an in-process chain in tests).

use std::path::PathBuf;
use std::time::Duration;

use ledger::state::{Contract, ContractStatus, ContractTerms};
use ledger::{Amount, ContractId, Keypair, PublicKey, ShardPlacement};

use super::nodes::NodeKey;
use crate::key::UserKey;
use crate::ledger::{free_resources, Ledger, Transport};
use crate::Result;

/// Contracts looked at after a file's last contract to find its manifest copies' contract.
pub const MANIFEST_CONTRACT_SCAN_MAX: u64 = 256;
/// How long a node may take to see a contract just created (it re-reads its contracts on
/// each new block): puts refused with `no contract:` are retried this long.
pub const CONTRACT_VISIBLE_WAIT: Duration = Duration::from_secs(20);

/// The ledger as the store commands use it.
pub trait StoreLedger {
    /// The user's key (the owner of the contracts).
    fn owner(&self) -> PublicKey;
    /// Registered nodes and their free disk bytes, each record verified.
    fn nodes(&mut self) -> Result<Vec<(NodeKey, u64)>>;
    /// Creates and pays a storage contract naming `shards` at `price` per period; its id
    /// once committed.
    fn create(&mut self, shards: Vec<ShardPlacement>, price: Amount) -> Result<ContractId>;
    /// Cancels contract `id`; `Ok(false)` if it had ended already.
    fn cancel(&mut self, id: ContractId) -> Result<bool>;
    /// Contract `id`, verified (`None`: no such contract).
    fn contract(&mut self, id: ContractId) -> Result<Option<Contract>>;
    /// The next contract id and the current period, verified.
    fn meta(&mut self) -> Result<(ContractId, u64)>;
}

/// [`StoreLedger`] on gridctl's verified ledger client.
pub struct LedgerStore<T: Transport> {
    /// The client.
    pub ledger: Ledger<T>,
    /// The user's ledger key.
    pub key: Keypair,
}

impl<T: Transport> StoreLedger for LedgerStore<T> {
    fn owner(&self) -> PublicKey {
        self.key.public()
    }

    fn nodes(&mut self) -> Result<Vec<(NodeKey, u64)>> {
        Ok(self.ledger.nodes()?.into_iter().map(|(k, n)| (k, free_resources(&n).disk_bytes)).collect())
    }

    fn create(&mut self, shards: Vec<ShardPlacement>, price: Amount) -> Result<ContractId> {
        self.ledger.create_storage_contract(&self.key, shards, price).map(|(id, _)| id)
    }

    fn cancel(&mut self, id: ContractId) -> Result<bool> {
        self.ledger.cancel_contract(&self.key, id)
    }

    fn contract(&mut self, id: ContractId) -> Result<Option<Contract>> {
        self.ledger.contract(id)
    }

    fn meta(&mut self) -> Result<(ContractId, u64)> {
        self.ledger.meta().map(|(_, m)| (m.next_contract_id, m.period))
    }
}

/// Makes the ledger session of a store command for the user.
pub type LedgerFactory<'a> = &'a dyn Fn(&UserKey) -> Result<Box<dyn StoreLedger>>;

/// Sessions on the ledger trusted in `dir`, over the network.
pub fn network(dir: PathBuf, timeout: Duration) -> impl Fn(&UserKey) -> Result<Box<dyn StoreLedger>> {
    move |user: &UserKey| -> Result<Box<dyn StoreLedger>> {
        let key = crate::ledger::ledger_key(user)?;
        let ledger = crate::ledger::connect(&dir, timeout)?;
        Ok(Box::new(LedgerStore { ledger, key }))
    }
}

/// One period's price of a contract naming `shards`: `per_mib` per started MiB of them.
pub fn storage_price(shards: &[ShardPlacement], per_mib: Amount) -> Amount {
    let bytes = shards.iter().fold(0u64, |sum, s| sum.saturating_add(s.len_bytes));
    bytes.div_ceil(1 << 20).max(1).saturating_mul(per_mib)
}

/// The user's active storage contracts created after `after` (at most
/// [`MANIFEST_CONTRACT_SCAN_MAX`] looked at) that name only `file_id`'s manifest copies.
pub fn manifest_contracts(ledger: &mut dyn StoreLedger, file_id: &[u8; 32], after: Option<ContractId>) -> Result<Vec<ContractId>> {
    let (next, _) = ledger.meta()?;
    let first = after.map_or(0, |a| a.saturating_add(1));
    let last = next.min(first.saturating_add(MANIFEST_CONTRACT_SCAN_MAX));
    let owner = ledger.owner();
    let mut found = Vec::new();
    for id in first..last {
        let Some(c) = ledger.contract(id)? else { continue };
        let only_manifest = match &c.terms {
            ContractTerms::Storage { shards } => !shards.is_empty() && shards.iter().all(|s| s.placement.key == *file_id),
            ContractTerms::Workload { .. } => false,
        };
        if c.owner == owner && c.status == ContractStatus::Active && only_manifest {
            found.push(id);
        }
    }
    Ok(found)
}

/// Whether a node's refusal means it has not seen a covering contract (yet).
pub fn is_no_contract(message: &str) -> bool {
    message.contains("no contract")
}
