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

/// Table format version, the first field of the encoding. Version 2 added
/// [`FileMeta`] to every file; version 1 tables still decode (see
/// [`WorkloadTable::decode`]) and are written back as version 2.
pub const TABLE_VERSION: u32 = 2;

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
/// Most names (files, directories, symlinks, hard links) per entry. The table holds
/// every area's names and is rewritten whole at each commit (a file's close, a
/// rename), so each name costs every later commit about 75 bytes plus its length;
/// 1024 names of ordinary length are about 100 KiB, a fifth of the table slot that
/// all workloads of the node share (the node-wide bound: a commit that would not fit
/// is refused, and the program sees `ENOSPC`).
pub const MAX_FILES_PER_ENTRY: usize = 1024;
/// Longest file name: a full path in the area (POSIX `PATH_MAX`, 4096 bytes), plus the
/// `/` of a directory's marker (a directory is recorded as an empty file `path/`).
pub const MAX_FILE_NAME_BYTES: usize = 4096 + 1;
/// Most bytes of names per entry, all names together: long paths cost table space
/// (see [`MAX_FILES_PER_ENTRY`]), so one area cannot fill the slot with them (1024
/// names of 4 KiB would be 4 MiB); 64 KiB is 1024 names of 64 bytes.
pub const MAX_NAME_BYTES_PER_ENTRY: usize = 64 << 10;
/// Largest file length recorded: a file area is at most 64 MiB today; 4 GiB leaves
/// room to raise that and keeps the sum over all files far from overflow.
pub const MAX_FILE_LEN_BYTES: u64 = 1 << 32;
/// Largest signed manifest: the manifest decoder's own bound (64 KiB).
pub const MAX_SIGNED_MANIFEST_BYTES: usize = 64 << 10;
/// Ids stay below this. 2^48 deploys at one per millisecond take 8,900 years, so an
/// honest table never gets here; a `next_id` above it is forged, and ids can never
/// wrap (`try_add` refuses at the limit).
pub const ID_LIMIT: u64 = 1 << 48;

/// What a name of a file area is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file: the shard holds its contents.
    #[default]
    Regular,
    /// A directory: the name ends with `/` and the shard is empty.
    Directory,
    /// A symbolic link: the shard holds the target path.
    Symlink,
}

/// What the file area keeps about a name besides its contents (table version 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileMeta {
    /// Its kind; [`FileKind::Directory`] exactly when the name ends with `/`.
    pub kind: FileKind,
    /// Inode number: names with the same nonzero `ino` are hard links of one file and
    /// share its shard, length and metadata. 0: none assigned (version 1 tables, files
    /// put from outside); such a name is a file of its own.
    pub ino: u64,
    /// Last access, nanoseconds since the Unix epoch (set by the program only).
    pub atim_ns: u64,
    /// Last change of the contents.
    pub mtim_ns: u64,
    /// Last change of the contents or the metadata.
    pub ctim_ns: u64,
}

impl FileMeta {
    /// The metadata of a name nothing is known about: a directory when it ends with
    /// `/`, else a regular file; no inode number, times 0.
    pub fn for_name(name: &str) -> FileMeta {
        let kind = if name.ends_with('/') { FileKind::Directory } else { FileKind::Regular };
        FileMeta { kind, ..FileMeta::default() }
    }
}

/// One file of a workload's file area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Full path in the area (a directory's ends with `/`).
    pub name: String,
    /// Shard holding the contents.
    pub key: Key,
    /// Length in bytes.
    pub len_bytes: u64,
    /// Kind, inode number and times.
    pub meta: FileMeta,
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
        self.files.binary_search_by(|f| f.name.as_str().cmp(name)).ok().map(|i| &self.files[i])
    }

    /// Bytes of all names together (bounded by [`MAX_NAME_BYTES_PER_ENTRY`]).
    pub fn name_bytes(&self) -> usize {
        self.files.iter().map(|f| f.name.len()).sum()
    }

    /// Sets `name` to the shard `key` of `len_bytes`; returns the key it replaced. An
    /// existing name keeps its metadata, and its hard links (same nonzero inode number)
    /// get the same contents; a new name gets [`FileMeta::for_name`].
    pub fn set_file(&mut self, name: &str, key: Key, len_bytes: u64) -> Option<Key> {
        let meta = self.file(name).map_or_else(|| FileMeta::for_name(name), |f| f.meta);
        self.put(name, key, len_bytes, meta)
    }

    /// Sets `name` (and its hard links) to `key`, `len_bytes` and `meta`; returns the
    /// key it replaced.
    fn put(&mut self, name: &str, key: Key, len_bytes: u64, meta: FileMeta) -> Option<Key> {
        if meta.ino != 0 {
            for f in self.files.iter_mut().filter(|f| f.meta.ino == meta.ino && f.name != name) {
                f.key = key;
                f.len_bytes = len_bytes;
                f.meta = meta;
            }
        }
        let entry = FileEntry { name: name.into(), key, len_bytes, meta };
        match self.files.binary_search_by(|f| f.name.as_str().cmp(name)) {
            Ok(i) => Some(core::mem::replace(&mut self.files[i], entry).key),
            Err(i) => {
                self.files.insert(i, entry);
                None
            }
        }
    }

    /// Whether one more name `name` fits: 1 to [`MAX_FILE_NAME_BYTES`] bytes, at most
    /// [`MAX_FILES_PER_ENTRY`] names and [`MAX_NAME_BYTES_PER_ENTRY`] bytes of names.
    fn check_new_name(&self, name: &str) -> Result<(), TableError> {
        if name.is_empty() || name.len() > MAX_FILE_NAME_BYTES {
            return Err(TableError::BadFiles);
        }
        if self.file(name).is_none()
            && (self.files.len() >= MAX_FILES_PER_ENTRY || self.name_bytes() + name.len() > MAX_NAME_BYTES_PER_ENTRY)
        {
            return Err(TableError::BadFiles);
        }
        Ok(())
    }

    /// [`Entry::set_file`] within the table's bounds: a name of 1 to
    /// [`MAX_FILE_NAME_BYTES`] bytes, a length up to [`MAX_FILE_LEN_BYTES`], at most
    /// [`MAX_FILES_PER_ENTRY`] files and [`MAX_NAME_BYTES_PER_ENTRY`] bytes of names
    /// (`TableError::BadFiles` otherwise, nothing changed).
    pub fn try_set_file(&mut self, name: &str, key: Key, len_bytes: u64) -> Result<Option<Key>, TableError> {
        if len_bytes > MAX_FILE_LEN_BYTES {
            return Err(TableError::BadFiles);
        }
        self.check_new_name(name)?;
        Ok(self.set_file(name, key, len_bytes))
    }

    /// [`Entry::try_set_file`] with the metadata too (kind, inode number, times), given
    /// to every hard link of `name`. The kind must match the name (a directory's ends
    /// with `/`), and a name cannot change kind.
    pub fn try_set_file_meta(&mut self, name: &str, key: Key, len_bytes: u64, meta: FileMeta) -> Result<Option<Key>, TableError> {
        if len_bytes > MAX_FILE_LEN_BYTES || (meta.kind == FileKind::Directory) != name.ends_with('/') {
            return Err(TableError::BadFiles);
        }
        if self.file(name).is_some_and(|f| f.meta.kind != meta.kind || (f.meta.ino != 0 && f.meta.ino != meta.ino)) {
            return Err(TableError::BadFiles);
        }
        self.check_new_name(name)?;
        Ok(self.put(name, key, len_bytes, meta))
    }

    /// Sets the metadata of `name` and its hard links, keeping contents and kind
    /// (`BadFiles` for a missing name or another kind or inode number).
    pub fn set_meta(&mut self, name: &str, meta: FileMeta) -> Result<(), TableError> {
        let f = self.file(name).ok_or(TableError::BadFiles)?;
        if f.meta.kind != meta.kind || (f.meta.ino != 0 && f.meta.ino != meta.ino) {
            return Err(TableError::BadFiles);
        }
        let (key, len_bytes) = (f.key, f.len_bytes);
        self.put(name, key, len_bytes, meta);
        Ok(())
    }

    /// Makes `to` a hard link of `from`: both (and `from`'s other links) get `meta`,
    /// whose inode number must be nonzero and `from`'s own if it has one. `from` must
    /// be a file or a symlink, `to` a new name within bounds (`BadFiles` otherwise,
    /// nothing changed). One table change, so atomic like a rename.
    pub fn link_file(&mut self, from: &str, to: &str, meta: FileMeta) -> Result<(), TableError> {
        let f = self.file(from).ok_or(TableError::BadFiles)?;
        if meta.ino == 0 || (f.meta.ino != 0 && f.meta.ino != meta.ino) || f.meta.kind != meta.kind {
            return Err(TableError::BadFiles);
        }
        if meta.kind == FileKind::Directory || to.ends_with('/') || self.file(to).is_some() {
            return Err(TableError::BadFiles);
        }
        self.check_new_name(to)?;
        let (key, len_bytes) = (f.key, f.len_bytes);
        self.put(from, key, len_bytes, meta);
        self.put(to, key, len_bytes, meta);
        Ok(())
    }

    /// Checks one decoded entry: the manifest size and the file list (sorted, distinct,
    /// bounded names and lengths, kinds matching names, hard links agreeing).
    fn validate(&self) -> Result<(), TableError> {
        if self.signed_manifest.len() > MAX_SIGNED_MANIFEST_BYTES {
            return Err(TableError::TooLarge);
        }
        if self.files.len() > MAX_FILES_PER_ENTRY || self.name_bytes() > MAX_NAME_BYTES_PER_ENTRY {
            return Err(TableError::BadFiles);
        }
        for (i, f) in self.files.iter().enumerate() {
            if f.name.is_empty() || f.name.len() > MAX_FILE_NAME_BYTES || f.len_bytes > MAX_FILE_LEN_BYTES {
                return Err(TableError::BadFiles);
            }
            if (f.meta.kind == FileKind::Directory) != f.name.ends_with('/') {
                return Err(TableError::BadFiles);
            }
            if i > 0 && self.files[i - 1].name >= f.name {
                return Err(TableError::BadFiles);
            }
        }
        // Hard links: every name of one inode has the same contents and metadata.
        let mut linked: Vec<&FileEntry> = self.files.iter().filter(|f| f.meta.ino != 0).collect();
        linked.sort_unstable_by_key(|f| f.meta.ino);
        for w in linked.windows(2) {
            if w[0].meta.ino == w[1].meta.ino
                && (w[0].key != w[1].key || w[0].len_bytes != w[1].len_bytes || w[0].meta != w[1].meta || w[0].meta.kind == FileKind::Directory)
            {
                return Err(TableError::BadFiles);
            }
        }
        Ok(())
    }

    /// Renames every `from` to its `to` (the file area's rename: a file, or every name
    /// under a directory), replacing a `to` that exists; the shards and metadata stay,
    /// only names move. All or nothing: if a `from` is missing or a `to` is out of
    /// bounds (`TableError::BadFiles`), nothing changes. Returns the keys of replaced
    /// files (the caller deletes those no longer referenced once this is durable).
    pub fn rename_files(&mut self, moves: &[(String, String)]) -> Result<Vec<Key>, TableError> {
        let mut taken = Vec::with_capacity(moves.len());
        for (from, to) in moves {
            let f = self.file(from).ok_or(TableError::BadFiles)?;
            if to.is_empty() || to.len() > MAX_FILE_NAME_BYTES || to.ends_with('/') != from.ends_with('/') {
                return Err(TableError::BadFiles);
            }
            taken.push((to.clone(), f.key, f.len_bytes, f.meta));
        }
        let mut next = self.clone();
        for (from, _) in moves {
            next.remove_file(from);
        }
        let mut replaced = Vec::new();
        for (to, key, len_bytes, meta) in taken {
            let entry = FileEntry { name: to.clone(), key, len_bytes, meta };
            match next.files.binary_search_by(|f| f.name.as_str().cmp(&to)) {
                Ok(i) => replaced.push(core::mem::replace(&mut next.files[i], entry).key),
                Err(i) => next.files.insert(i, entry),
            }
        }
        if next.files.len() > MAX_FILES_PER_ENTRY || next.name_bytes() > MAX_NAME_BYTES_PER_ENTRY {
            return Err(TableError::BadFiles);
        }
        *self = next;
        Ok(replaced)
    }

    /// Removes `name`; returns its key.
    pub fn remove_file(&mut self, name: &str) -> Option<Key> {
        let i = self.files.binary_search_by(|f| f.name.as_str().cmp(name)).ok()?;
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

/// Table version 1: files without [`FileMeta`]; decoded and upgraded (every name
/// gets [`FileMeta::for_name`]).
mod v1 {
    use alloc::string::String;
    use alloc::vec::Vec;
    use serde::Deserialize;

    use super::{Desired, FileMeta, Key};

    #[derive(Deserialize)]
    pub(super) struct FileEntry {
        name: String,
        key: Key,
        len_bytes: u64,
    }

    #[derive(Deserialize)]
    pub(super) struct Entry {
        id: u64,
        signed_manifest: Vec<u8>,
        module_key: Key,
        bundle_key: Key,
        restart_on_boot: bool,
        desired: Desired,
        files: Vec<FileEntry>,
    }

    #[derive(Deserialize)]
    pub(super) struct WorkloadTable {
        next_id: u64,
        entries: Vec<Entry>,
    }

    #[derive(Deserialize)]
    pub(super) struct Versioned {
        #[allow(dead_code)]
        pub(super) version: u32,
        pub(super) table: WorkloadTable,
    }

    impl WorkloadTable {
        pub(super) fn upgrade(self) -> super::WorkloadTable {
            let entries = self
                .entries
                .into_iter()
                .map(|e| super::Entry {
                    id: e.id,
                    signed_manifest: e.signed_manifest,
                    module_key: e.module_key,
                    bundle_key: e.bundle_key,
                    restart_on_boot: e.restart_on_boot,
                    desired: e.desired,
                    files: e
                        .files
                        .into_iter()
                        .map(|f| super::FileEntry { meta: FileMeta::for_name(&f.name), name: f.name, key: f.key, len_bytes: f.len_bytes })
                        .collect(),
                })
                .collect();
            super::WorkloadTable { next_id: self.next_id, entries }
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
        let table = match version {
            TABLE_VERSION => {
                let (versioned, rest) = postcard::take_from_bytes::<Versioned>(bytes).map_err(|_| TableError::Malformed)?;
                if !rest.is_empty() {
                    return Err(TableError::Malformed);
                }
                versioned.table
            }
            1 => {
                let (versioned, rest) = postcard::take_from_bytes::<v1::Versioned>(bytes).map_err(|_| TableError::Malformed)?;
                if !rest.is_empty() {
                    return Err(TableError::Malformed);
                }
                versioned.table.upgrade()
            }
            _ => return Err(TableError::UnsupportedVersion(version)),
        };
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
