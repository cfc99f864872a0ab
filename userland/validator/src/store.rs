//! Durable decided blocks: each block and its commit in a redb table keyed by height, written
//! in one redb transaction that is durable when [`BlockStore::append`] returns. A validator
//! restarts by replaying them from the genesis ([`crate::Node::restore`]), checking every
//! commit against the validator set of its height. (State snapshots, to avoid the replay,
//! and a consensus write-ahead log come with the daemon.)

use std::path::Path;

use ledger::{Block, Commit};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");

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
}
