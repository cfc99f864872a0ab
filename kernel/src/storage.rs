//! The node's shard store: one [`shardstore::ShardStore`] per data disk, grouped in a
//! [`shardstore::MultiStore`], and the typed kernel API services use to reach it.
//!
//! This module decides *which* disk regions hold a store and whether a disk may be
//! formatted; the on-disk format, crash safety and placement across disks are the
//! `shardstore` crate's. Redundancy across nodes, encryption and deciding what to
//! keep are left to the layers above.
//!
//! # Disks
//! - The first disk (`vda`, or the first NVMe or SATA disk without virtio) starts
//!   with the node area (`identity::NODE_AREA_SECTORS`, 1 MiB): its store lives in
//!   the sectors after it. Other disks are used whole.
//! - At boot ([`init`]) every disk selected by `gridos.disks` (default all; none on
//!   `gridos.role=compute`; names as `disks` gives them: `vda`, `nvme0n1`, `nvme0n2`
//!   or their controller `nvme0` (all its namespaces), `sda`, a `/dev/` prefix, or a
//!   serial number (an NVMe serial: all its controller's namespaces); a word that
//!   names no disk is reported) is mounted. A disk whose first 64 KiB of the store
//!   region are all zeros (and, on the first disk, whose node area holds zeros or a
//!   gridos node record) is formatted. Any other disk (another file system, garbage, a damaged
//!   store) is refused with a log line and never written, unless the command line
//!   says `gridos.format=NAME` (a comma-separated list of names is accepted too; the
//!   same word makes `identity` take over `vda`'s node area). The word only formats a
//!   disk that does not mount: a good store is never reformatted by it, so a command
//!   line that keeps the word does not wipe the store at every boot.
//! - One log line per disk: `storage vda: mounted|formatted|refused (...), N shards,
//!   U/F MiB used/free, mount took X us`.
//! - The disks stay in `disks`' table: the store reaches its disk by name through
//!   [`disks::with_disk_named`] for every request ([`DiskRange`]), so `identity` and
//!   the disk self-tests share them without a hand-over. A disk taken out of the table
//!   (`disks::take`) looks failed to the store while it is away.
//! - A disk that fails a request is marked failed and logged once; the store keeps
//!   serving from the others (the shards on the failed disk are unavailable).
//!
//! # API (for kernel services)
//! Shards are immutable byte strings named by their blake3 hash ([`Key`]) within an
//! owner's namespace ([`Owner`]): every call names the owner first, and the same bytes
//! stored by two owners are two shards. The node's own data (workload files, tables)
//! is [`NODE_OWNER`]'s; the shard service acts only in its signers' namespaces.
//! - [`put`]`(owner, bytes) -> Result<Key, Error>`: stores the shard on the healthy
//!   disk with the most free space; durable (flushed) when it returns `Ok`. The store
//!   hashes each byte once (key, proof root and integrity are one blake3);
//!   [`put_checked`]`(owner, &key, bytes)` skips even that when the caller has just
//!   checked `blake3(bytes) == key` (the shard service).
//! - [`get`]`(owner, &key) -> Result<Vec<u8>, Error>`: the bytes, checked against the key.
//! - [`delete`]`(owner, &key)`, [`list`]`(owner) -> Vec<Key>`,
//!   [`list_after`]`(owner, after, max)` (a page of keys with their [`ShardInfo`]),
//!   [`info`]`(owner, &key) -> Option<ShardInfo>` (length, Merkle root),
//!   [`prove`]`(owner, &key, challenge) -> Result<StorageProof, Error>` (check it with
//!   `shardstore::verify_proof`), [`owner_usage`]`(owner) -> OwnerUsage` (shards and
//!   payload bytes), [`owner_count`]`()`.
//! - [`stat`]`() -> Stat` (sum over the healthy disks, all owners).
//! - [`disks`]`() -> Vec<DiskStatus>`: each data disk and what became of it.
//!
//! A disk written by an older gridos (shard-store format version 1, before owners, or
//! 2, before the single hashing pass) does not mount (`unsupported shard-store format
//! version N`) and is refused like a foreign disk, untouched; `gridos.format=NAME`
//! reformats it (its shards are lost).
//!
//! Every call is synchronous (the CPU halts while a request is in flight) and takes
//! the store's lock, then the disks' lock: never call it while holding `disks`' lock.
//! Without any mounted disk, operations fail with `Error::Device(BlockError::Failed)`.

use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use blockdev::{check_request, BlockDevice, BlockError, SECTOR_SIZE};
pub use shardstore::{Error, Key, Owner, OwnerUsage, ShardInfo, Stat, StorageProof, NODE_OWNER};
use shardstore::{FormatOptions, MountError, MultiStore, ShardStore};

use crate::arch::x86_64::time;
use crate::cmdline::Cmdline;
use crate::config::{Disks, NodeConfig, Role};
use crate::disks;
use crate::identity::NODE_AREA_SECTORS;

/// Bytes at the start of a store region that must be zero for it to count as blank.
const BLANK_CHECK_BYTES: usize = 64 << 10;
/// Magic of `identity`'s node record (sector 0 of `vda`).
const NODE_RECORD_MAGIC: &[u8; 8] = b"GRIDOSND";
const MIB: u64 = 1 << 20;

/// Bytes a mount-time read-ahead fetches at once (see [`DiskRange::set_read_ahead`]).
const READ_AHEAD_BYTES: usize = 128 << 10;
/// Reads up to this size are served from the read-ahead window.
const READ_AHEAD_SMALL_BYTES: usize = 4 << 10;

/// Requests a [`DiskRange`] sent to its disk (what `/metrics` shows per disk).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskIo {
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Requests (reads, writes, flushes) the disk failed.
    pub errors: u64,
}

/// A run of sectors of one disk, reached by the disk's name through `disks`' table.
pub struct DiskRange {
    name: String,
    start_sector: u64,
    sector_count: u64,
    /// While mounting: a window of sectors read ahead (first sector, bytes).
    read_ahead: Option<(u64, Vec<u8>)>,
    io: DiskIo,
}

impl DiskRange {
    /// Sectors `start_sector..start_sector + sector_count` of disk `name`.
    pub fn new(name: &str, start_sector: u64, sector_count: u64) -> DiskRange {
        DiskRange { name: String::from(name), start_sector, sector_count, read_ahead: None, io: DiskIo::default() }
    }

    /// Turns read-ahead for small reads on or off. Mount reads one header sector per
    /// record, in order; fetching 128 KiB at a time turns those into a few large
    /// requests. Any write drops the window, and it is meant for mount only: writes
    /// to the disk that bypass this range would not be seen.
    pub fn set_read_ahead(&mut self, on: bool) {
        self.read_ahead = on.then(|| (0, Vec::new()));
    }

    fn read_raw(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let at = self.start_sector + sector;
        let result = disks::with_disk_named(&self.name, |disk| disk.read(at, buf)).unwrap_or(Err(BlockError::Failed));
        self.io.reads += 1;
        self.io.read_bytes += buf.len() as u64;
        self.io.errors += u64::from(result.is_err());
        result
    }

    /// The requests sent to the disk so far.
    pub fn io(&self) -> DiskIo {
        self.io
    }

    /// Serves a small read from the read-ahead window, refilling it on a miss.
    fn read_through_window(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let sector_bytes = SECTOR_SIZE as u64;
        let covered = |(first, window): &(u64, Vec<u8>)| {
            sector >= *first && (sector - first) * sector_bytes + buf.len() as u64 <= window.len() as u64
        };
        if !self.read_ahead.as_ref().is_some_and(covered) {
            let sectors = (READ_AHEAD_BYTES as u64 / sector_bytes).min(self.sector_count - sector);
            let mut window = alloc::vec![0u8; (sectors * sector_bytes) as usize];
            if let Err(e) = self.read_raw(sector, &mut window) {
                self.read_ahead = Some((0, Vec::new()));
                return Err(e);
            }
            self.read_ahead = Some((sector, window));
        }
        let (first, window) = self.read_ahead.as_ref().ok_or(BlockError::Failed)?;
        let offset = ((sector - first) * sector_bytes) as usize;
        buf.copy_from_slice(&window[offset..offset + buf.len()]);
        Ok(())
    }

    /// The disk's name (`vda`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl BlockDevice for DiskRange {
    fn sector_count(&self) -> u64 {
        self.sector_count
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_request(self.sector_count, sector, buf.len())?;
        if self.read_ahead.is_some() && buf.len() <= READ_AHEAD_SMALL_BYTES {
            return self.read_through_window(sector, buf);
        }
        self.read_raw(sector, buf)
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        check_request(self.sector_count, sector, buf.len())?;
        if self.read_ahead.is_some() {
            self.read_ahead = Some((0, Vec::new()));
        }
        let at = self.start_sector + sector;
        let result = disks::with_disk_named(&self.name, |disk| disk.write(at, buf)).unwrap_or(Err(BlockError::Failed));
        self.io.writes += 1;
        self.io.written_bytes += buf.len() as u64;
        self.io.errors += u64::from(result.is_err());
        result
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        let result = disks::with_disk_named(&self.name, |disk| disk.flush()).unwrap_or(Err(BlockError::Failed));
        self.io.errors += u64::from(result.is_err());
        result
    }
}

/// What boot did with a data disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    /// An existing store, mounted.
    Mounted,
    /// Blank (or `gridos.format=NAME`), formatted now.
    Formatted,
    /// Not a usable store; left untouched.
    Refused,
    /// Mounted, then failed a request; no longer used.
    Failed,
}

/// A data disk and its state.
#[derive(Debug, Clone)]
pub struct DiskStatus {
    pub name: String,
    pub state: DiskState,
    /// Its store's figures (zero unless mounted or formatted).
    pub stat: Stat,
    /// Requests its store sent to it (zero unless mounted or formatted).
    pub io: DiskIo,
}

struct Store {
    multi: MultiStore<DiskRange>,
    /// State of each disk at boot, by name (refused ones included).
    boot_states: Vec<(String, DiskState)>,
    /// Failures already logged, by index into `multi`.
    failed_logged: Vec<bool>,
}

static STORE: Mutex<Option<Store>> = Mutex::new(None);

fn no_store() -> Error {
    Error::Device(BlockError::Failed)
}

/// Runs `f` on the store, then logs disks that failed during it.
fn with_store<R>(f: impl FnOnce(&mut MultiStore<DiskRange>) -> Result<R, Error>) -> Result<R, Error> {
    let mut guard = STORE.lock();
    let store = guard.as_mut().ok_or_else(no_store)?;
    let result = f(&mut store.multi);
    for index in store.multi.failed_disks() {
        if !store.failed_logged[index] {
            store.failed_logged[index] = true;
            let name = store.multi.store(index).map(|s| s.device().name()).unwrap_or("?");
            log::error!("storage {name}: failed a request; serving from the other disks");
        }
    }
    result
}

/// Stores `bytes` as `owner`'s shard; returns its key (blake3, which the store
/// computes in its one hashing pass over the bytes) once it is durable.
pub fn put(owner: &Owner, bytes: &[u8]) -> Result<Key, Error> {
    with_store(|multi| multi.put_bytes(owner, bytes)).map(|(key, _disk)| key)
}

/// Stores `bytes`, whose blake3 the caller has just checked to be `key` (the shard
/// service checks every upload), as `owner`'s shard without hashing them again;
/// durable when it returns `Ok`.
pub fn put_checked(owner: &Owner, key: &Key, bytes: &[u8]) -> Result<(), Error> {
    with_store(|multi| multi.put_prehashed(owner, *key, bytes)).map(|_disk| ())
}

/// `owner`'s shard's bytes (checked against its key).
pub fn get(owner: &Owner, key: &Key) -> Result<Vec<u8>, Error> {
    with_store(|multi| multi.get(owner, key))
}

/// Removes `owner`'s shard from every disk holding it; durable when it returns `Ok`.
pub fn delete(owner: &Owner, key: &Key) -> Result<(), Error> {
    with_store(|multi| multi.delete(owner, key))
}

/// Keys of `owner`'s shards on healthy disks, ascending.
pub fn list(owner: &Owner) -> Vec<Key> {
    with_store(|multi| Ok(multi.list(owner))).unwrap_or_default()
}

/// Up to `max` of `owner`'s shards with keys above `after` (from the first when
/// `None`), ascending, with their length and Merkle root: one page of a listing.
pub fn list_after(owner: &Owner, after: Option<&Key>, max: usize) -> Vec<(Key, ShardInfo)> {
    with_store(|multi| Ok(multi.list_after(owner, after, max))).unwrap_or_default()
}

/// Shards and payload bytes `owner` holds on the healthy disks.
pub fn owner_usage(owner: &Owner) -> OwnerUsage {
    with_store(|multi| Ok(multi.owner_usage(owner))).unwrap_or_default()
}

/// Owners holding at least one shard on the healthy disks.
pub fn owner_count() -> usize {
    with_store(|multi| Ok(multi.owner_count())).unwrap_or_default()
}

/// Space and content figures, summed over healthy disks (all owners).
pub fn stat() -> Stat {
    with_store(|multi| Ok(multi.stat())).unwrap_or_default()
}

/// Length and Merkle root of `owner`'s shard, from the first healthy disk that holds it.
pub fn info(owner: &Owner, key: &Key) -> Option<ShardInfo> {
    with_store(|multi| Ok(multi.info(owner, key))).ok().flatten()
}

/// A storage proof over `owner`'s shard for `challenge`.
pub fn prove(owner: &Owner, key: &Key, challenge: u64) -> Result<StorageProof, Error> {
    with_store(|multi| multi.prove(owner, key, challenge))
}

/// Each data disk and what became of it.
pub fn disks() -> Vec<DiskStatus> {
    let guard = STORE.lock();
    let Some(store) = guard.as_ref() else { return Vec::new() };
    let failed = store.multi.failed_disks();
    let mut out = Vec::new();
    for (name, state) in &store.boot_states {
        let index = (0..store.multi.disk_count())
            .find(|&i| store.multi.store(i).is_some_and(|s| s.device().name() == name.as_str()));
        let io = index.and_then(|i| store.multi.store(i)).map(|s| s.device().io()).unwrap_or_default();
        let (state, stat) = match index {
            Some(i) if failed.contains(&i) => (DiskState::Failed, Stat::default()),
            Some(i) => (*state, store.multi.store(i).map(|s| s.stat()).unwrap_or_default()),
            None => (*state, Stat::default()),
        };
        out.push(DiskStatus { name: name.clone(), state, stat, io });
    }
    out
}

/// Takes every mounted store out (for a self-test that needs the raw disk); the API
/// fails until [`install`] puts stores back.
pub fn take_all() -> Vec<ShardStore<DiskRange>> {
    STORE.lock().take().map(|store| store.multi.into_stores()).unwrap_or_default()
}

/// Serves from `stores` (e.g. the ones [`take_all`] returned).
pub fn install(stores: Vec<ShardStore<DiskRange>>) {
    let boot_states = stores.iter().map(|s| (String::from(s.device().name()), DiskState::Mounted)).collect();
    let failed_logged = alloc::vec![false; stores.len()];
    *STORE.lock() = Some(Store { multi: MultiStore::new(stores), boot_states, failed_logged });
}

/// The region of disk `index` that holds its store: after the node area on the first disk.
pub fn region(index: usize, name: &str, sector_count: u64) -> Option<DiskRange> {
    let start = if index == 0 { NODE_AREA_SECTORS } else { 0 };
    (sector_count > start).then(|| DiskRange::new(name, start, sector_count - start))
}

/// Mounts (or formats, when blank) a store on every data disk and logs one line per disk.
/// `node_id` (the node's public key, when it has one) goes into the superblock of
/// every disk formatted now; a mounted disk with another node's id is logged.
pub fn init(cmdline: &Cmdline<'_>, node_id: Option<[u8; 32]>) {
    // `config::load` already reported bad values; parse quietly here.
    let config = NodeConfig::from_cmdline(cmdline, &mut |_, _, _| {});
    if config.role == Role::Compute {
        log::info!("storage: none (gridos.role=compute)");
        return;
    }
    let format_names = cmdline.get("gridos.format").unwrap_or("");
    let mut stores = Vec::new();
    let mut boot_states = Vec::new();
    for index in 0..disks::count() {
        let Some((name, sectors, chosen)) =
            disks::with_disk(index, |d| (d.name.clone(), d.sector_count(), selected(config.disks, d)))
        else {
            continue;
        };
        if !chosen {
            log::info!("storage {name}: not used (gridos.disks)");
            continue;
        }
        let forced = format_names.split(',').any(|n| n == name);
        let started_us = time::since_boot_us();
        let Some(range) = region(index, &name, sectors) else {
            log::warn!("storage {name}: refused (no room after the node area)");
            boot_states.push((name, DiskState::Refused));
            continue;
        };
        let (state, detail, store) = attach(index, range, forced, node_id.unwrap_or([0; 32]));
        if let (Some(store), Some(id)) = (&store, node_id) {
            if store.node_id() != id && store.node_id() != [0; 32] {
                log::warn!("storage {name}: formatted by node {}; serving it here", crate::overlay::hex(&store.node_id()[..8]));
            }
        }
        let took_us = time::since_boot_us() - started_us;
        let stat = store.as_ref().map(|s| s.stat()).unwrap_or_default();
        let line = alloc::format!(
            "storage {name}: {} ({detail}), {} shards, {}/{} MiB used/free, mount took {took_us} us",
            state_word(state),
            stat.shard_count,
            stat.used_bytes / MIB,
            stat.free_bytes / MIB,
        );
        if state == DiskState::Refused {
            log::warn!("{line}");
        } else {
            log::info!("{line}");
        }
        boot_states.push((name, state));
        stores.extend(store);
    }
    warn_unmatched(config.disks);
    let serving = stores.len();
    let failed_logged = alloc::vec![false; serving];
    let store = Store { multi: MultiStore::new(stores), boot_states, failed_logged };
    let total = store.multi.stat();
    log::info!(
        "storage: {serving} of {} data disks serving, {} shards, {}/{} MiB used/free",
        store.boot_states.len(),
        total.shard_count,
        total.used_bytes / MIB,
        total.free_bytes / MIB
    );
    *STORE.lock() = Some(store);
}

fn state_word(state: DiskState) -> &'static str {
    match state {
        DiskState::Mounted => "mounted",
        DiskState::Formatted => "formatted",
        DiskState::Refused => "refused",
        DiskState::Failed => "failed",
    }
}

/// Whether `gridos.disks` selects `disk`: by its name (`nvme0n1`, `sda`, `vdb`, also
/// as `/dev/sda`), its NVMe controller's name (`nvme0`) or its serial number.
fn selected(disks: Disks<'_>, disk: &disks::Disk) -> bool {
    match disks {
        Disks::All => true,
        Disks::None => false,
        Disks::List(list) => list.split(',').any(|word| disk.is_named(word)),
    }
}

/// Warns about each `gridos.disks` word that names no disk of this machine (a typo,
/// a partition, a disk that is gone), listing the names the disks have.
fn warn_unmatched(disks: Disks<'_>) {
    let Disks::List(list) = disks else { return };
    for word in list.split(',') {
        let mut names = String::new();
        let mut matched = false;
        for index in 0..disks::count() {
            disks::with_disk(index, |d| {
                matched |= d.is_named(word);
                if !names.is_empty() {
                    names.push_str(", ");
                }
                names.push_str(&d.name);
                if !d.serial.is_empty() {
                    names.push_str(&alloc::format!(" (serial {})", d.serial));
                }
            });
        }
        if !matched {
            log::warn!("storage: gridos.disks names {word:?}, which no disk here has; the disks are: {names}");
        }
    }
}

/// Mounts `range`, or formats it when it is blank or `forced`; never writes otherwise.
fn attach(index: usize, range: DiskRange, forced: bool, node_id: [u8; 32]) -> (DiskState, String, Option<ShardStore<DiskRange>>) {
    let name = String::from(range.name());
    let mut range = range;
    range.set_read_ahead(true);
    let error = match ShardStore::try_mount(range) {
        Ok(mut store) => {
            store.device_mut().set_read_ahead(false);
            let r = store.mount_report();
            let detail = alloc::format!(
                "checkpoint generation {}, {} records replayed{}{}",
                r.checkpoint_generation,
                r.records_replayed,
                if r.torn_tail_dropped { ", torn tail dropped" } else { "" },
                if r.lost_records > 0 { alloc::format!(", {} records lost", r.lost_records) } else { String::new() },
            );
            return (DiskState::Mounted, detail, Some(store));
        }
        Err((MountError::Device(e), _)) => {
            return (DiskState::Refused, alloc::format!("cannot read: {e}"), None);
        }
        Err((error, range)) => (error, range),
    };
    let (error, mut range) = error;
    range.set_read_ahead(false);
    let why = if forced {
        "gridos.format"
    } else {
        match blank(index, &mut range) {
            Ok(true) => "blank",
            Ok(false) => {
                let detail = match error {
                    MountError::UnsupportedVersion(version) if version < shardstore::layout::FORMAT_VERSION => alloc::format!(
                        "{error}: a store of an older gridos, not touched; boot with gridos.format={name} to reformat it (its shards are lost)"
                    ),
                    _ => alloc::format!(
                        "{error}; the disk holds other data and is not touched; boot with gridos.format={name} to take it over"
                    ),
                };
                return (DiskState::Refused, detail, None);
            }
            Err(e) => return (DiskState::Refused, alloc::format!("cannot read: {e}"), None),
        }
    };
    let mut disk_id = [0u8; 16];
    crate::entropy::fill(&mut disk_id);
    let mut options = FormatOptions::default();
    crate::entropy::fill(&mut options.entropy);
    // The node id is informational (zero when the node has no identity).
    match ShardStore::format_with(range, node_id, disk_id, options) {
        Ok(store) => (DiskState::Formatted, String::from(why), Some(store)),
        Err(e) => (DiskState::Refused, alloc::format!("format failed: {e}"), None),
    }
}

/// Whether the store region starts with zeros (and, on the first disk, the node area
/// holds zeros or a node record).
fn blank(index: usize, range: &mut DiskRange) -> Result<bool, BlockError> {
    if index == 0 {
        let mut sector = [0u8; SECTOR_SIZE];
        disks::with_disk_named(range.name(), |disk| disk.read(0, &mut sector)).unwrap_or(Err(BlockError::Failed))?;
        if !(sector.starts_with(NODE_RECORD_MAGIC) || sector.iter().all(|&b| b == 0)) {
            return Ok(false);
        }
    }
    let len = BLANK_CHECK_BYTES.min((range.sector_count() as usize).saturating_mul(SECTOR_SIZE));
    let mut buf = alloc::vec![0u8; len];
    range.read(0, &mut buf)?;
    Ok(buf.iter().all(|&b| b == 0))
}
