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

// Bounds on a table read from disk. The disk is outside input (a forged or damaged
// node area must not wrap a counter, panic the node or make it allocate without
// bound at boot), so [`WorkloadTable::decode`] checks every one of these, and
// [`WorkloadTable::try_add`]/[`Entry::try_set_file`] keep an honest table within
// them, so what the node writes always decodes again.

/// Largest encoded table: the kernel's table slot is 992 sectors (about 496 KiB), so
/// nothing larger can have been written by a node.
pub const MAX_TABLE_BYTES: usize = 512 << 10;
/// Most entries: a node refuses deploys long before this (per-owner quotas); it bounds
/// what a forged table can make the node start or scan at boot.
pub const MAX_ENTRIES: usize = 1024;
/// Most files per entry: a workload's file area holds at most 64 files.
pub const MAX_FILES_PER_ENTRY: usize = 64;
/// Longest file name: the file area's limit (64 bytes, the full path in the area;
/// a directory is recorded as an empty file named `path/`).
pub const MAX_FILE_NAME_BYTES: usize = 64;
/// Largest file length recorded: a file area is at most 64 MiB today; 4 GiB leaves
/// room to raise that and keeps the sum over 64 files far from overflow.
pub const MAX_FILE_LEN_BYTES: u64 = 1 << 32;
/// Largest signed manifest: the manifest decoder's own bound (64 KiB).
pub const MAX_SIGNED_MANIFEST_BYTES: usize = 64 << 10;
/// Ids stay below this. 2^48 deploys at one per millisecond take 8,900 years, so an
/// honest table never gets here; a `next_id` above it is forged, and ids can never
/// wrap (`try_add` refuses at the limit).
pub const ID_LIMIT: u64 = 1 << 48;

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

    /// [`Entry::set_file`] within the table's bounds: a name of 1 to
    /// [`MAX_FILE_NAME_BYTES`] bytes, a length up to [`MAX_FILE_LEN_BYTES`], at most
    /// [`MAX_FILES_PER_ENTRY`] files (`TableError::BadFiles` otherwise, nothing changed).
    pub fn try_set_file(&mut self, name: &str, key: Key, len_bytes: u64) -> Result<Option<Key>, TableError> {
        if name.is_empty() || name.len() > MAX_FILE_NAME_BYTES || len_bytes > MAX_FILE_LEN_BYTES {
            return Err(TableError::BadFiles);
        }
        if self.file(name).is_none() && self.files.len() >= MAX_FILES_PER_ENTRY {
            return Err(TableError::BadFiles);
        }
        Ok(self.set_file(name, key, len_bytes))
    }

    /// Checks one decoded entry: the manifest size and the file list (sorted, distinct,
    /// bounded names and lengths).
    fn validate(&self) -> Result<(), TableError> {
        if self.signed_manifest.len() > MAX_SIGNED_MANIFEST_BYTES {
            return Err(TableError::TooLarge);
        }
        if self.files.len() > MAX_FILES_PER_ENTRY {
            return Err(TableError::BadFiles);
        }
        for (i, f) in self.files.iter().enumerate() {
            if f.name.is_empty() || f.name.len() > MAX_FILE_NAME_BYTES || f.len_bytes > MAX_FILE_LEN_BYTES {
                return Err(TableError::BadFiles);
            }
            if i > 0 && self.files[i - 1].name >= f.name {
                return Err(TableError::BadFiles);
            }
        }
        Ok(())
    }

    /// Renames every `from` to its `to` (the file area's rename: a file, or every name
    /// under a directory), replacing a `to` that exists; the shards stay, only names
    /// move. All or nothing: if a `from` is missing or a `to` is out of bounds
    /// (`TableError::BadFiles`), nothing changes. Returns the keys of replaced files
    /// (the caller deletes those no longer referenced once this is durable).
    pub fn rename_files(&mut self, moves: &[(String, String)]) -> Result<Vec<Key>, TableError> {
        let mut taken = Vec::with_capacity(moves.len());
        for (from, to) in moves {
            let f = self.file(from).ok_or(TableError::BadFiles)?;
            if to.is_empty() || to.len() > MAX_FILE_NAME_BYTES {
                return Err(TableError::BadFiles);
            }
            taken.push((to.clone(), f.key, f.len_bytes));
        }
        let mut next = self.clone();
        for (from, _) in moves {
            next.remove_file(from);
        }
        let mut replaced = Vec::new();
        for (to, key, len_bytes) in taken {
            replaced.extend(next.set_file(&to, key, len_bytes));
        }
        if next.files.len() > MAX_FILES_PER_ENTRY {
            return Err(TableError::BadFiles);
        }
        *self = next;
        Ok(replaced)
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

/// Why a table could not be decoded, or a change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// Not a postcard-encoded table.
    Malformed,
    /// Written by another table version.
    UnsupportedVersion(u32),
    /// The encoding, or a signed manifest in it, is larger than any node writes.
    TooLarge,
    /// More than [`MAX_ENTRIES`] entries (decode), or the table is full (add).
    TooManyEntries,
    /// Ids not strictly increasing (a duplicate), or one not below `next_id`.
    BadIds,
    /// `next_id` above [`ID_LIMIT`] (decode), or ids used up (add).
    IdsExhausted,
    /// A file list that is unsorted, has duplicates, too many files, or a bad name or
    /// length.
    BadFiles,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Malformed => f.write_str("malformed workload table"),
            TableError::UnsupportedVersion(v) => write!(f, "workload table version {v} is not supported"),
            TableError::TooLarge => f.write_str("workload table or a manifest in it is larger than a node writes"),
            TableError::TooManyEntries => write!(f, "workload table has (or would have) more than {MAX_ENTRIES} entries"),
            TableError::BadIds => f.write_str("workload table ids are duplicated, unordered or not below next_id"),
            TableError::IdsExhausted => write!(f, "workload ids would pass the limit {ID_LIMIT}"),
            TableError::BadFiles => f.write_str("a workload's file list is unsorted, duplicated or out of bounds"),
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

    /// Decodes what [`WorkloadTable::encode`] wrote; anything else is an error. The
    /// input is bounded ([`MAX_TABLE_BYTES`]) before anything is allocated, and the
    /// decoded table must pass [`WorkloadTable::validate`].
    pub fn decode(bytes: &[u8]) -> Result<WorkloadTable, TableError> {
        if bytes.len() > MAX_TABLE_BYTES {
            return Err(TableError::TooLarge);
        }
        let (version, _) = postcard::take_from_bytes::<u32>(bytes).map_err(|_| TableError::Malformed)?;
        if version != TABLE_VERSION {
            return Err(TableError::UnsupportedVersion(version));
        }
        let (versioned, rest) = postcard::take_from_bytes::<Versioned>(bytes).map_err(|_| TableError::Malformed)?;
        if !rest.is_empty() {
            return Err(TableError::Malformed);
        }
        let table = versioned.table;
        table.validate()?;
        Ok(table)
    }

    /// Checks the table's invariants: `next_id` at most [`ID_LIMIT`], at most
    /// [`MAX_ENTRIES`] entries with strictly increasing ids below `next_id` (so no
    /// duplicates), and every entry's manifest and files within bounds. Decode checks
    /// this; the kernel may check it before writing a table.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.next_id > ID_LIMIT {
            return Err(TableError::IdsExhausted);
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(TableError::TooManyEntries);
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.id >= self.next_id || (i > 0 && self.entries[i - 1].id >= e.id) {
                return Err(TableError::BadIds);
            }
            e.validate()?;
        }
        Ok(())
    }

    /// Adds a workload with a fresh id, or refuses (nothing changed) when the table is
    /// full ([`MAX_ENTRIES`]), ids are used up ([`ID_LIMIT`]) or the manifest is larger
    /// than [`MAX_SIGNED_MANIFEST_BYTES`]. Ids never wrap and are never reused.
    pub fn try_add(&mut self, signed_manifest: Vec<u8>, module_key: Key, bundle_key: Key, restart_on_boot: bool) -> Result<u64, TableError> {
        if self.entries.len() >= MAX_ENTRIES {
            return Err(TableError::TooManyEntries);
        }
        if signed_manifest.len() > MAX_SIGNED_MANIFEST_BYTES {
            return Err(TableError::TooLarge);
        }
        let id = self.next_id;
        let next_id = id.checked_add(1).filter(|&n| n <= ID_LIMIT).ok_or(TableError::IdsExhausted)?;
        self.next_id = next_id;
        self.entries.push(Entry { id, signed_manifest, module_key, bundle_key, restart_on_boot, desired: Desired::Run, files: Vec::new() });
        Ok(id)
    }

    /// [`WorkloadTable::try_add`] for callers that compare the id with `next_id` read
    /// before: when it refuses, nothing is added and the id returned is `u64::MAX`,
    /// which is never a `next_id` (that stays at most [`ID_LIMIT`]). Prefer `try_add`.
    pub fn add(&mut self, signed_manifest: Vec<u8>, module_key: Key, bundle_key: Key, restart_on_boot: bool) -> u64 {
        self.try_add(signed_manifest, module_key, bundle_key, restart_on_boot).unwrap_or(u64::MAX)
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
