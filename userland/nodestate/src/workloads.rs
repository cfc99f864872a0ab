//! The table of workloads deployed on the node, kept in a [`crate::record::SlotPair`].
//!
//! A workload's bulk data lives in the shard store, named by content hash: the wasm
//! module, the precompiled bundle, and each file of its file area. The table holds the
//! owner-signed manifest, those keys, and what the owner last asked for (run or stop).
//! Updating the table is the commit point: new shards are stored (durably) first, then
//! the table naming them; shards the table no longer names are deleted afterwards
//! ([`WorkloadTable::unreferenced`]), so a crash leaves at worst an orphan shard, never
//! a table entry naming a missing one.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

/// A shard key (blake3 of the shard's bytes).
pub type Key = [u8; 32];

/// Table format version, the first field of the encoding.
pub const TABLE_VERSION: u32 = 1;

/// One file of a workload's file area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Flat file name.
    pub name: String,
    /// Shard holding the contents.
    pub key: Key,
    /// Length in bytes.
    pub len_bytes: u64,
}

/// What the owner last asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Desired {
    /// Run it (again at boot, if its manifest asks for restart-on-boot).
    Run,
    /// Stopped by its owner: not started at boot.
    Stopped,
}

/// One deployed workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Node-local id, never reused.
    pub id: u64,
    /// The signed manifest as received (verified again at every start).
    pub signed_manifest: Vec<u8>,
    /// Shard of the wasm module.
    pub module_key: Key,
    /// Shard of the precompiled bundle.
    pub bundle_key: Key,
    /// Restart after a reboot (copied from the manifest).
    pub restart_on_boot: bool,
    /// What the owner last asked for.
    pub desired: Desired,
    /// The file area, sorted by name.
    pub files: Vec<FileEntry>,
}

impl Entry {
    /// Every shard this entry names.
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        [self.module_key, self.bundle_key].into_iter().chain(self.files.iter().map(|f| f.key))
    }

    /// The file named `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Sets `name` to the shard `key` of `len_bytes`; returns the key it replaced.
    pub fn set_file(&mut self, name: &str, key: Key, len_bytes: u64) -> Option<Key> {
        match self.files.binary_search_by(|f| f.name.as_str().cmp(name)) {
            Ok(i) => Some(core::mem::replace(&mut self.files[i], FileEntry { name: name.into(), key, len_bytes }).key),
            Err(i) => {
                self.files.insert(i, FileEntry { name: name.into(), key, len_bytes });
                None
            }
        }
    }

    /// Removes `name`; returns its key.
    pub fn remove_file(&mut self, name: &str) -> Option<Key> {
        let i = self.files.iter().position(|f| f.name == name)?;
        Some(self.files.remove(i).key)
    }
}

/// All deployed workloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadTable {
    /// The next id to hand out.
    pub next_id: u64,
    /// Entries in id order.
    pub entries: Vec<Entry>,
}

/// Why a table could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// Not a postcard-encoded table.
    Malformed,
    /// Written by another table version.
    UnsupportedVersion(u32),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Malformed => f.write_str("malformed workload table"),
            TableError::UnsupportedVersion(v) => write!(f, "workload table version {v} is not supported"),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Versioned {
    version: u32,
    table: WorkloadTable,
}

impl WorkloadTable {
    /// The encoding stored in the slots.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct VersionedRef<'a> {
            version: u32,
            table: &'a WorkloadTable,
        }
        // Serializing plain data into a Vec cannot fail.
        postcard::to_allocvec(&VersionedRef { version: TABLE_VERSION, table: self }).unwrap_or_default()
    }

    /// Decodes what [`WorkloadTable::encode`] wrote; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<WorkloadTable, TableError> {
        let (version, _) = postcard::take_from_bytes::<u32>(bytes).map_err(|_| TableError::Malformed)?;
        if version != TABLE_VERSION {
            return Err(TableError::UnsupportedVersion(version));
        }
        let (versioned, rest) = postcard::take_from_bytes::<Versioned>(bytes).map_err(|_| TableError::Malformed)?;
        if !rest.is_empty() {
            return Err(TableError::Malformed);
        }
        let table = versioned.table;
        if table.entries.iter().any(|e| e.id >= table.next_id) {
            return Err(TableError::Malformed);
        }
        Ok(table)
    }

    /// Adds a workload with a fresh id.
    pub fn add(&mut self, signed_manifest: Vec<u8>, module_key: Key, bundle_key: Key, restart_on_boot: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Entry { id, signed_manifest, module_key, bundle_key, restart_on_boot, desired: Desired::Run, files: Vec::new() });
        id
    }

    /// The entry with `id`.
    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The entry with `id`, mutable.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.id == id)
    }

    /// Removes and returns the entry with `id`.
    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.id == id)?;
        Some(self.entries.remove(i))
    }

    /// Whether any entry names shard `key`.
    pub fn references(&self, key: &Key) -> bool {
        self.entries.iter().any(|e| e.keys().any(|k| k == *key))
    }

    /// Of `keys`, those no entry names any more (to delete after the table is stored).
    pub fn unreferenced(&self, keys: impl IntoIterator<Item = Key>) -> Vec<Key> {
        let mut out: Vec<Key> = keys.into_iter().filter(|k| !self.references(k)).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Entries to start at boot: restart-on-boot and not stopped by the owner.
    pub fn to_start_at_boot(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.restart_on_boot && e.desired == Desired::Run)
    }
}
