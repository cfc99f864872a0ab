//! Durable decided blocks: each block and its commit in a redb table keyed by height, written
//! in one redb transaction that is durable when [`BlockStore::append`] returns. A validator
//! restarts by replaying them from the genesis ([`crate::Node::restore`]), checking every
//! commit against the validator set of its height. The same database holds what the
//! validator signed at undecided heights ([`BlockStore::record_signed`], for
//! [`crate::wal`]). (State snapshots, to avoid the replay, are not written yet.)

use std::path::Path;

use ledger::{Block, Commit};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// A signed message's slot: height, round (as Malachite's `i64`, -1 for none), kind.
pub type SignedSlot = (u64, i64, u8);

/// What this validator signed and sent: (height, round, kind) -> the message's encoding
/// (see [`crate::wal`]).
const SIGNED: TableDefinition<(u64, i64, u8), &[u8]> = TableDefinition::new("signed");

/// Why the store failed.
#[derive(Debug)]
pub enum StoreError {
    /// The database failed (I/O, corruption).
    Db(String),
    /// A stored record does not decode.
    Corrupt(u64),
    /// A block is appended out of height order.
    NotNext {
        /// The height the store expects.
        expected: u64,
        /// The block's height.
        got: u64,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for StoreError {}

fn db_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Db(error.to_string())
}

/// Decided blocks on disk.
pub struct BlockStore {
    db: Database,
}

impl BlockStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<BlockStore, StoreError> {
        let db = Database::create(path).map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(BLOCKS).map_err(db_error)?;
        txn.open_table(SIGNED).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(BlockStore { db })
    }

    /// The number of stored blocks (= the last height).
    pub fn height(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(BLOCKS).map_err(db_error)?;
        let last = table.last().map_err(db_error)?;
        Ok(last.map(|(height, _)| height.value()).unwrap_or(0))
    }

    /// Appends the next decided block; durable when this returns `Ok`.
    pub fn append(&self, block: &Block, commit: &Commit) -> Result<(), StoreError> {
        let expected = self.height()? + 1;
        if block.header.height != expected {
            return Err(StoreError::NotNext { expected, got: block.header.height });
        }
        let bytes = postcard::to_allocvec(&(block, commit)).map_err(db_error)?;
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = txn.open_table(BLOCKS).map_err(db_error)?;
            table.insert(block.header.height, bytes.as_slice()).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    /// Every stored block with its commit, in height order.
    pub fn load(&self) -> Result<Vec<(Block, Commit)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(BLOCKS).map_err(db_error)?;
        let mut blocks = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (height, bytes) = entry.map_err(db_error)?;
            let record: (Block, Commit) = postcard::from_bytes(bytes.value()).map_err(|_| StoreError::Corrupt(height.value()))?;
            blocks.push(record);
        }
        Ok(blocks)
    }

    /// Records that this validator signed `bytes` for `slot` (height, round, kind), durably,
    /// unless it already signed something for that slot: then nothing is written and the
    /// earlier bytes are returned.
    pub fn record_signed(&self, slot: SignedSlot, bytes: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        {
            let txn = self.db.begin_read().map_err(db_error)?;
            let table = txn.open_table(SIGNED).map_err(db_error)?;
            if let Some(existing) = table.get(slot).map_err(db_error)? {
                return Ok(Some(existing.value().to_vec()));
            }
        }
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = txn.open_table(SIGNED).map_err(db_error)?;
            table.insert(slot, bytes).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        Ok(None)
    }

    /// Everything recorded as signed at `height` and above, in slot order.
    pub fn signed_from(&self, height: u64) -> Result<Vec<(SignedSlot, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(SIGNED).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in table.range((height, i64::MIN, 0)..).map_err(db_error)? {
            let (slot, bytes) = entry.map_err(db_error)?;
            out.push((slot.value(), bytes.value().to_vec()));
        }
        Ok(out)
    }

    /// Forgets what was signed below `height` (decided heights need no guard).
    pub fn prune_signed_below(&self, height: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = txn.open_table(SIGNED).map_err(db_error)?;
            table.retain_in((0u64, i64::MIN, 0u8)..(height, i64::MIN, 0u8), |_, _| false).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }
}
