//! Deployed workloads that outlive a reboot: the workload table (`nodestate`) in the
//! node area of the first disk, and the workloads' modules, bundles and files as
//! shards in the node's shard store.
//!
//! Node area layout (see `identity`): sectors 0-1 identity, 2..64 unused, then two
//! table slots of [`SLOT_SECTORS`] each up to the end of the node area.
//!
//! Every shard a workload owns is stored *wrapped*: `"GRIDWLD1" || workload id (u64
//! LE) || kind (1 module, 2 bundle, 3 file) || bytes`. Its key therefore never equals
//! the key of a user's shard or of another workload's, so deleting a workload's file
//! can never delete anybody else's data, whatever bytes the workload writes.
//!
//! Order of writes (nothing acknowledged is lost): new shards first (each durable when
//! `storage::put` returns), then the table naming them (durable when
//! [`commit`] returns), then deletion of shards the table no longer names. A crash
//! leaves at worst an orphan shard.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use nodestate::record::{Loaded, SlotPair};
use nodestate::workloads::{Key, WorkloadTable};

use crate::disks;
use crate::identity::{Origin, NODE_AREA_SECTORS};
use crate::storage::{self, DiskRange};

/// First sector of the table slots in the node area.
pub const TABLE_START_SECTOR: u64 = 64;
/// Sectors per table slot (496 KiB).
pub const SLOT_SECTORS: u64 = (NODE_AREA_SECTORS - TABLE_START_SECTOR) / 2;

const WRAP_MAGIC: &[u8; 8] = b"GRIDWLD1";
const WRAP_HEADER_BYTES: usize = 17;

/// What a workload shard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ShardKind {
    Module = 1,
    Bundle = 2,
    File = 3,
}

struct Persist {
    slots: SlotPair,
    dev: DiskRange,
    table: WorkloadTable,
}

static PERSIST: Mutex<Option<Persist>> = Mutex::new(None);

/// Opens the workload table when the node has its node area (`origin` not
/// ephemeral) and a shard store. A fresh identity wipes a table left by a previous
/// identity (its shards went with the old store).
pub fn init(origin: Origin) {
    if origin == Origin::Ephemeral {
        log::warn!("workloads: no node area; deployed workloads will not survive a reboot");
        return;
    }
    if storage::disks().iter().all(|d| !matches!(d.state, storage::DiskState::Mounted | storage::DiskState::Formatted)) {
        log::warn!("workloads: no shard store; deployed workloads will not survive a reboot");
        return;
    }
    let Some(name) = disks::with_disk(0, |d| d.name.clone()) else { return };
    let mut dev = DiskRange::new(&name, 0, NODE_AREA_SECTORS);
    let mut slots = SlotPair::new(TABLE_START_SECTOR, SLOT_SECTORS);
    if origin == Origin::Created {
        let zero = alloc::vec![0u8; blockdev::SECTOR_SIZE];
        use blockdev::BlockDevice;
        let wiped = dev
            .write(TABLE_START_SECTOR, &zero)
            .and_then(|()| dev.write(TABLE_START_SECTOR + SLOT_SECTORS, &zero))
            .and_then(|()| dev.flush());
        if let Err(e) = wiped {
            log::error!("workloads: cannot reset the workload table on {name}: {e}; not persisting workloads");
            return;
        }
    }
    let table = match slots.load(&mut dev) {
        Ok(Loaded::Empty) => WorkloadTable::default(),
        Ok(Loaded::Damaged) => {
            log::error!("workloads: the workload table on {name} is unreadable (torn first write or damage); starting empty");
            WorkloadTable::default()
        }
        Ok(Loaded::Value { generation, payload }) => match WorkloadTable::decode(&payload) {
            Ok(table) => {
                log::info!("workloads: table generation {generation}: {} deployed, {} to start at boot",
                    table.entries.len(), table.to_start_at_boot().count());
                table
            }
            Err(e) => {
                // Never overwrite what a newer gridos may have written.
                log::error!("workloads: {e} on {name}; not persisting workloads");
                return;
            }
        },
        Err(e) => {
            log::error!("workloads: cannot read the workload table on {name}: {e}; not persisting workloads");
            return;
        }
    };
    *PERSIST.lock() = Some(Persist { slots, dev, table });
}

/// Whether deployed workloads are persisted.
pub fn available() -> bool {
    PERSIST.lock().is_some()
}

/// A copy of the table (empty when not persisting).
pub fn snapshot() -> WorkloadTable {
    PERSIST.lock().as_ref().map(|p| p.table.clone()).unwrap_or_default()
}

/// Runs `f` on the table (an empty one when not persisting) without copying it.
pub fn with_table<R>(f: impl FnOnce(&WorkloadTable) -> R) -> R {
    match PERSIST.lock().as_ref() {
        Some(p) => f(&p.table),
        None => f(&WorkloadTable::default()),
    }
}

/// Why a table commit failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// The node keeps no workload table (no node area or no shard store).
    NotPersisting,
    /// The changed table does not fit in its slot: the node-wide bound on everything
    /// the table holds (workloads, their file names); a file area sees `ENOSPC`.
    TableFull,
    /// The disk failed.
    Device(String),
}

impl core::fmt::Display for CommitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CommitError::NotPersisting => f.write_str("the node does not persist workloads"),
            CommitError::TableFull => f.write_str("workload table: full (the change does not fit in its slot)"),
            CommitError::Device(e) => write!(f, "workload table: {e}"),
        }
    }
}

/// Applies `change` to a copy of the table and stores it; the table changes (here and
/// on disk) only when it is durable. Returns what `change` returned.
pub fn commit<R>(change: impl FnOnce(&mut WorkloadTable) -> R) -> Result<R, String> {
    commit_typed(change).map_err(|e| format!("{e}"))
}

/// [`commit`] with a typed error.
pub fn commit_typed<R>(change: impl FnOnce(&mut WorkloadTable) -> R) -> Result<R, CommitError> {
    let mut guard = PERSIST.lock();
    let p = guard.as_mut().ok_or(CommitError::NotPersisting)?;
    let mut table = p.table.clone();
    let result = change(&mut table);
    p.slots.store(&mut p.dev, &table.encode()).map_err(|e| match e {
        nodestate::record::RecordError::TooLarge { .. } => CommitError::TableFull,
        e => CommitError::Device(format!("{e}")),
    })?;
    p.table = table;
    Ok(result)
}

/// The bytes of a workload shard, wrapped (see the module docs).
pub fn wrap(id: u64, kind: ShardKind, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WRAP_HEADER_BYTES + bytes.len());
    out.extend_from_slice(WRAP_MAGIC);
    out.extend_from_slice(&id.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(bytes);
    out
}

/// Stores a workload shard; durable when it returns.
pub fn put(id: u64, kind: ShardKind, bytes: &[u8]) -> Result<Key, String> {
    storage::put(&storage::NODE_OWNER, &wrap(id, kind, bytes)).map_err(|e| format!("storage: {e:?}"))
}

/// Reads a workload shard back, checking that it belongs to `id` and is a `kind`.
pub fn get(id: u64, kind: ShardKind, key: &Key) -> Result<Vec<u8>, String> {
    let mut bytes = storage::get(&storage::NODE_OWNER, key).map_err(|e| format!("storage: {e:?}"))?;
    let header = wrap(id, kind, &[]);
    if bytes.get(..WRAP_HEADER_BYTES) != Some(&header[..]) {
        return Err(format!("shard {} is not workload {id}'s", crate::overlay::hex(&key[..8])));
    }
    bytes.drain(..WRAP_HEADER_BYTES);
    Ok(bytes)
}

/// Deletes the shards of `keys` that the table no longer names (after a commit).
pub fn delete_unreferenced(keys: impl IntoIterator<Item = Key>) {
    let unreferenced = with_table(|t| t.unreferenced(keys));
    for key in unreferenced {
        if let Err(e) = storage::delete(&storage::NODE_OWNER, &key) {
            log::warn!("workloads: shard {} left behind: {e:?}", crate::overlay::hex(&key[..8]));
        }
    }
}
