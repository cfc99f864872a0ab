//! The shard store on one disk: format, mount, put/get/delete, proofs; the log
//! replay at mount lives in `replay`, appends and compaction in `log`.
//!
//! State in memory: the superblock, an index `(owner, key) -> location`, each owner's
//! usage (shards and bytes, kept in step with the index) and the list of log records
//! between the durable head and the tail (oldest first). The disk is only
//! touched through [`BlockDevice`]; there is no clock and no background work:
//! compaction runs when a write needs space or when the caller asks for it.
//!
//! Durability rules (see the crate docs for why they make crashes safe):
//! - every record is one `write` followed by one `flush`, and the tail advances in
//!   memory only after both succeed, so one flush epoch holds at most one record;
//! - the head advances only after the checkpoint naming it is flushed, so log space is
//!   reused only once no replay can need it;
//! - on a device error nothing advances: the next write goes to the same place, and
//!   before the next operation is acknowledged the failed record's header sector is
//!   zeroed and flushed (the device could otherwise still write it back later).

mod log;
mod replay;

use alloc::collections::{BTreeMap, VecDeque};
use core::ops::Bound;
use alloc::vec;
use alloc::vec::Vec;

use blockdev::{BlockDevice, BlockError, SECTOR_SIZE};

use crate::error::{Error, FormatError, MountError};
use crate::layout::{
    align_up, record_sectors_for, Checkpoint, RecordKind, Superblock, BLOCK_SECTORS_ALLOWED,
    BLOCK_SECTORS_DEFAULT, CHECKPOINT_SECTORS, LOG_SECTORS_MAX, LOG_SECTORS_MIN, LOG_START_SECTORS,
    RECORD_PAYLOAD_OFFSET_BYTES, SUPERBLOCK_SECTOR,
};
use crate::merkle::{build_proof, StorageProof};

/// A shard key: the blake3 hash of the shard's bytes, which is also the root of its
/// storage proofs (see [`crate::verify_proof`]).
pub type Key = [u8; 32];

/// Whose shard it is: shards are namespaced by owner, so the same bytes stored by two
/// owners are two shards, each deleted, listed and counted on its own. The store
/// attaches no meaning to it (the shard service uses the signer's public key).
pub type Owner = [u8; 32];

/// The node's own data (workload files and tables). The store treats it like any other
/// owner; the shard service must never act in this namespace. No signer can be it (the
/// all-zero encoding is a small-order ed25519 point, which `ed25519-compact` never
/// verifies), but a request that *names* an owner (a storage proof) must refuse it.
pub const NODE_OWNER: Owner = [0u8; 32];

/// What one owner holds in a store: live shards and their payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnerUsage {
    /// Live shards.
    pub shards: u64,
    /// Payload bytes of those shards (what the owner stored, not the log space).
    pub bytes: u64,
}

/// The largest shard any store accepts.
pub const SHARD_SIZE_MAX_BYTES: usize = 16 << 20;

/// Most records a store keeps between head and tail, so most log entries (128 bytes
/// of RAM each) and index entries (about 190 bytes per live shard, plus about 75 per
/// owner) one disk costs, as `tests/memory.rs` measures: 2^19 records, each a live
/// shard of its own owner, is about 200 MiB of heap, which a node with a few GiB of
/// RAM can afford for a few disks. Every record is at least one block, and a forged
/// superblock can make blocks one sector, so without a bound a crafted disk of tiny
/// records would make mount allocate a fifth of the disk's size at every boot. A store
/// never writes more (puts and deletes answer `NoSpace`, compaction copies no further),
/// so mount refuses only disks no store wrote (`MountError::TooManyRecords`). An honest
/// store reaches it only with 2^19 live shards (2 GiB of 4 KiB shards); the booted
/// 100k-shard mount bench stays well below.
pub const RECORDS_MAX: usize = 1 << 19;

/// Records compaction handles per checkpoint when a write needs space.
const COMPACT_BATCH_RECORDS: usize = 16;

/// Records kept back from puts below the record limit, so deletes (and the copies
/// compaction makes before it drops records) can always be written.
const PUT_RESERVE_RECORDS: usize = 4 * COMPACT_BATCH_RECORDS;

/// Where a live shard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    offset_sectors: u64,
    seq: u64,
    record_sectors: u64,
    payload_len_bytes: u32,
}

/// One record of the log between head and tail.
#[derive(Debug, Clone, Copy)]
struct LogEntry {
    offset_sectors: u64,
    seq: u64,
    record_sectors: u64,
    kind: RecordKind,
    key: Key,
    owner: Owner,
    record_checksum: [u8; 32],
}

impl Location {
    /// What the ledger needs of shard `key` stored here (the proof root is the key).
    fn info(&self, key: &Key) -> ShardInfo {
        ShardInfo { len_bytes: u64::from(self.payload_len_bytes), merkle_root: *key }
    }
}

impl LogEntry {
    /// Where the shard of this put record is, given what only its header holds.
    fn location(&self, payload_len_bytes: u32) -> Location {
        assert_eq!(self.kind, RecordKind::Put);
        Location { offset_sectors: self.offset_sectors, seq: self.seq, record_sectors: self.record_sectors, payload_len_bytes }
    }
}

/// Whether a fully read record holds what its header promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Whole,
    Torn,
}

/// A point of the hash chain: where the next record goes and what it must link to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChainPos {
    offset_sectors: u64,
    seq: u64,
    prev_checksum: [u8; 32],
}

/// What a shard is, as the ledger needs it for proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard length.
    pub len_bytes: u64,
    /// Root of its storage proofs over 4 KiB chunks (see [`crate::verify_proof`]): the
    /// shard's blake3 hash, which is its key.
    pub merkle_root: [u8; 32],
}

/// Space and content of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    /// Bytes of the log region.
    pub capacity_bytes: u64,
    /// Bytes of log between head and tail (live and not yet reclaimed records).
    pub used_bytes: u64,
    /// Bytes a new record may still use before compaction must run.
    pub free_bytes: u64,
    /// Payload bytes of live shards.
    pub live_bytes: u64,
    /// Live shards.
    pub shard_count: u64,
}

/// What mount found while replaying the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountReport {
    /// Checkpoint generation the replay started from.
    pub checkpoint_generation: u64,
    /// Records replayed (lost ones included).
    pub records_replayed: u64,
    /// The last record was incomplete (a write torn by a crash) and was discarded.
    pub torn_tail_dropped: bool,
    /// Records whose header was unreadable and were skipped (their shard is lost).
    pub lost_records: u64,
}

/// A checksummed, crash-safe shard store on one block device.
pub struct ShardStore<D: BlockDevice> {
    dev: D,
    superblock: Superblock,
    checksum_key: [u8; 32],
    index: BTreeMap<(Owner, Key), Location>,
    /// Per owner with at least one live shard: the sums over its index entries.
    usage: BTreeMap<Owner, OwnerUsage>,
    log: VecDeque<LogEntry>,
    head: ChainPos,
    tail: ChainPos,
    used_sectors: u64,
    live_bytes: u64,
    checkpoint_generation: u64,
    record_sectors_max: u64,
    block_sectors: u64,
    report: MountReport,
    corrupt_dropped_count: u64,
    /// A record write at the tail failed: the device may still make it durable.
    tail_unclean: bool,
    /// Most records between head and tail ([`RECORDS_MAX`] unless lowered).
    records_max: usize,
}

impl<D: BlockDevice> core::fmt::Debug for ShardStore<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ShardStore")
            .field("disk_id", &self.superblock.disk_id)
            .field("shards", &self.index.len())
            .field("head", &self.head)
            .field("tail", &self.tail)
            .field("used_sectors", &self.used_sectors)
            .finish()
    }
}

fn read_sectors<D: BlockDevice>(dev: &mut D, sector: u64, count: u64) -> Result<Vec<u8>, BlockError> {
    let len_bytes = usize::try_from(count)
        .ok()
        .and_then(|count| count.checked_mul(SECTOR_SIZE))
        .ok_or(BlockError::OutOfRange)?;
    let mut buf = vec![0u8; len_bytes];
    dev.read(sector, &mut buf)?;
    Ok(buf)
}

/// A payload length as the record header holds it (callers checked the size limit).
fn entry_len_bytes(bytes: &[u8]) -> u32 {
    const _: () = assert!(SHARD_SIZE_MAX_BYTES <= u32::MAX as usize);
    assert!(bytes.len() <= SHARD_SIZE_MAX_BYTES);
    bytes.len() as u32
}

/// The largest record a store with a log of `log_sectors` accepts: an eighth of the log
/// (so compaction always has room to copy), at least one block.
fn record_sectors_max_for(log_sectors: u64, block_sectors: u64) -> u64 {
    let shard_max_sectors = align_up(record_sectors_for(SHARD_SIZE_MAX_BYTES as u64), block_sectors);
    let eighth_sectors = (log_sectors / 8) / block_sectors * block_sectors;
    eighth_sectors.min(shard_max_sectors).max(block_sectors)
}

/// How `format_with` lays out a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatOptions {
    /// Mixed into the format salt; random bytes here make every format's checksum key
    /// unique even on a disk whose first sectors were wiped.
    pub entropy: [u8; 16],
    /// Record alignment in sectors: 1, 2, 4 or 8 (the default, 4 KiB). Set it to the
    /// disk's physical sector size so an append never rewrites a block of older records.
    pub block_sectors: u32,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions { entropy: [0; 16], block_sectors: BLOCK_SECTORS_DEFAULT }
    }
}

impl<D: BlockDevice> ShardStore<D> {
    /// Writes a new, empty store on `dev` (superblock and checkpoints) and returns it.
    /// Whatever the disk held before is gone: no old record verifies under the new format.
    /// Same as [`format_with`](Self::format_with) with default options.
    pub fn format(dev: D, node_id: [u8; 32], disk_id: [u8; 16]) -> Result<Self, FormatError> {
        Self::format_with(dev, node_id, disk_id, FormatOptions::default())
    }

    /// [`format`](Self::format) with options. The format salt hashes the disk's old first
    /// sectors (superblock, checkpoints, first log sector) and `options.entropy`, so each
    /// format of a used disk gets a new checksum key.
    pub fn format_with(
        mut dev: D,
        node_id: [u8; 32],
        disk_id: [u8; 16],
        options: FormatOptions,
    ) -> Result<Self, FormatError> {
        if !BLOCK_SECTORS_ALLOWED.contains(&options.block_sectors) {
            return Err(FormatError::InvalidOptions);
        }
        let block_sectors = u64::from(options.block_sectors);
        let sector_count = dev.sector_count();
        let log_sectors = sector_count
            .checked_sub(LOG_START_SECTORS)
            .map(|log| log.min(LOG_SECTORS_MAX) / block_sectors * block_sectors)
            .filter(|&log| log >= LOG_SECTORS_MIN * block_sectors)
            .ok_or(FormatError::DeviceTooSmall)?;
        let old_sectors = read_sectors(&mut dev, SUPERBLOCK_SECTOR, LOG_START_SECTORS + 1)?;
        let mut hasher = blake3::Hasher::new_derive_key("gridos shardstore v2 format salt");
        hasher.update(&old_sectors);
        hasher.update(&node_id);
        hasher.update(&disk_id);
        hasher.update(&options.entropy);
        let mut format_salt = [0u8; 16];
        format_salt.copy_from_slice(&hasher.finalize().as_bytes()[..16]);

        let superblock = Superblock {
            node_id,
            disk_id,
            format_salt,
            sector_count,
            log_start_sectors: LOG_START_SECTORS,
            log_sectors,
            block_sectors: options.block_sectors,
        };
        let checksum_key = superblock.checksum_key();
        let head = ChainPos { offset_sectors: 0, seq: 1, prev_checksum: [0; 32] };
        let checkpoint = Checkpoint {
            generation: 1,
            head_offset_sectors: head.offset_sectors,
            head_seq: head.seq,
            head_prev_checksum: head.prev_checksum,
        };
        // Whole blocks everywhere, so the disk never has to read-modify-write.
        let block = |sector: &[u8]| {
            let mut bytes = vec![0u8; block_sectors as usize * SECTOR_SIZE];
            bytes[..sector.len()].copy_from_slice(sector);
            bytes
        };
        dev.write(CHECKPOINT_SECTORS[1], &block(&checkpoint.encode(&checksum_key)))?;
        dev.write(CHECKPOINT_SECTORS[0], &block(&[]))?;
        // The log starts empty: nothing at the head's place may continue the new chain.
        dev.write(LOG_START_SECTORS, &block(&[]))?;
        dev.flush()?;
        dev.write(SUPERBLOCK_SECTOR, &block(&superblock.encode()))?;
        dev.flush()?;
        Ok(Self::empty(dev, superblock, head, checkpoint.generation))
    }

    fn empty(dev: D, superblock: Superblock, head: ChainPos, checkpoint_generation: u64) -> Self {
        let checksum_key = superblock.checksum_key();
        let block_sectors = u64::from(superblock.block_sectors);
        let record_sectors_max = record_sectors_max_for(superblock.log_sectors, block_sectors);
        ShardStore {
            block_sectors,
            dev,
            superblock,
            checksum_key,
            index: BTreeMap::new(),
            usage: BTreeMap::new(),
            log: VecDeque::new(),
            head,
            tail: head,
            used_sectors: 0,
            live_bytes: 0,
            checkpoint_generation,
            record_sectors_max,
            report: MountReport { checkpoint_generation, ..MountReport::default() },
            corrupt_dropped_count: 0,
            tail_unclean: false,
            records_max: RECORDS_MAX,
        }
    }

    /// Opens a formatted disk: checks the superblock, picks the newest checkpoint and
    /// replays the log from it. Never writes. A refused disk is dropped with the error;
    /// see [`try_mount`](Self::try_mount) to get it back.
    pub fn mount(dev: D) -> Result<Self, MountError> {
        Self::try_mount(dev).map_err(|(error, _dev)| error)
    }

    /// Like [`mount`](Self::mount), but a refused device is handed back with the error.
    pub fn try_mount(dev: D) -> Result<Self, (MountError, D)> {
        Self::try_mount_with_records_max(dev, RECORDS_MAX)
    }

    /// [`try_mount`](Self::try_mount) keeping at most `records_max` records (at most
    /// [`RECORDS_MAX`]): a log with more is refused with
    /// [`MountError::TooManyRecords`], and the mounted store writes no more.
    pub fn try_mount_with_records_max(mut dev: D, records_max: usize) -> Result<Self, (MountError, D)> {
        let superblock = match Self::read_superblock(&mut dev) {
            Ok(superblock) => superblock,
            Err(error) => return Err((error, dev)),
        };
        let checkpoint = match Self::read_checkpoint(&mut dev, &superblock) {
            Ok(checkpoint) => checkpoint,
            Err(error) => return Err((error, dev)),
        };
        let head = ChainPos {
            offset_sectors: checkpoint.head_offset_sectors,
            seq: checkpoint.head_seq,
            prev_checksum: checkpoint.head_prev_checksum,
        };
        let mut store = Self::empty(dev, superblock, head, checkpoint.generation);
        store.records_max = records_max.min(RECORDS_MAX);
        match store.replay() {
            Ok(()) => Ok(store),
            Err(error) => Err((error, store.dev)),
        }
    }

    /// Lowers the most records this store keeps (and writes) to `records_max`; it can
    /// never be raised above [`RECORDS_MAX`]. For tests of the bound and small nodes.
    pub fn limit_records(&mut self, records_max: usize) {
        self.records_max = records_max.min(RECORDS_MAX);
    }

    /// Records between head and tail now (each costs RAM; see [`RECORDS_MAX`]).
    pub fn record_count(&self) -> usize {
        self.log.len()
    }

    fn absolute_sector(&self, offset_sectors: u64) -> u64 {
        assert!(offset_sectors < self.superblock.log_sectors);
        self.superblock.log_start_sectors + offset_sectors
    }

    /// Reads the payload of the put record at `offset_sectors` straight into the buffer
    /// it is returned in (one device request, no copy) and checks that it hashes to
    /// `key`: one blake3 pass, the only check a read needs (the key commits to the bytes,
    /// and the index, rebuilt from keyed headers, says whose they are and where).
    fn read_payload(&mut self, offset_sectors: u64, payload_len_bytes: u32, key: &Key) -> Result<Vec<u8>, Error> {
        let payload_sectors = u64::from(payload_len_bytes).div_ceil(SECTOR_SIZE as u64);
        let first_sector = self.absolute_sector(offset_sectors) + (RECORD_PAYLOAD_OFFSET_BYTES / SECTOR_SIZE) as u64;
        let mut bytes = read_sectors(&mut self.dev, first_sector, payload_sectors)?;
        bytes.truncate(payload_len_bytes as usize);
        if *blake3::hash(&bytes).as_bytes() != *key {
            return Err(Error::Corrupt);
        }
        Ok(bytes)
    }

    /// Sectors a record with `payload_len_bytes` of payload occupies on this disk.
    fn record_sectors_of(&self, payload_len_bytes: usize) -> u64 {
        align_up(record_sectors_for(payload_len_bytes as u64), self.block_sectors)
    }

    fn check_invariants(&self) {
        let log_sectors = self.superblock.log_sectors;
        assert!(self.used_sectors < log_sectors);
        assert!(self.used_sectors.is_multiple_of(self.block_sectors));
        assert!(self.tail.offset_sectors.is_multiple_of(self.block_sectors));
        assert_eq!(self.tail.offset_sectors, (self.head.offset_sectors + self.used_sectors) % log_sectors);
        assert_eq!(self.log.is_empty(), self.used_sectors == 0);
        if let Some(first) = self.log.front() {
            assert_eq!(first.offset_sectors, self.head.offset_sectors);
            assert_eq!(first.seq, self.head.seq);
        }
        debug_assert_eq!(self.log.iter().map(|entry| entry.record_sectors).sum::<u64>(), self.used_sectors);
        assert!(self.usage.len() <= self.index.len());
        debug_assert_eq!(self.usage.values().map(|usage| usage.shards).sum::<u64>(), self.index.len() as u64);
        debug_assert_eq!(self.usage.values().map(|usage| usage.bytes).sum::<u64>(), self.live_bytes);
    }
}

/// Shard operations. Every shard belongs to an owner: `(owner, key)` names it.
impl<D: BlockDevice> ShardStore<D> {
    /// Stores `bytes` as `owner`'s shard `key`, which must be `blake3(bytes)`. Returns
    /// once the record is flushed. Storing a shard the owner already holds (readable)
    /// writes nothing; another owner's copy of the same bytes does not count. Hashes the
    /// bytes once (the key check; the key is also the proof root).
    pub fn put(&mut self, owner: &Owner, key: Key, bytes: &[u8]) -> Result<(), Error> {
        self.check_size(bytes)?;
        if *blake3::hash(bytes).as_bytes() != key {
            return Err(Error::KeyMismatch);
        }
        self.put_prehashed(owner, key, bytes)
    }

    /// Stores `bytes` as `owner`'s shard and returns its key (`blake3(bytes)`, hashed
    /// once here), once the record is flushed. As [`put`](Self::put) otherwise.
    pub fn put_bytes(&mut self, owner: &Owner, bytes: &[u8]) -> Result<Key, Error> {
        self.check_size(bytes)?;
        let key = *blake3::hash(bytes).as_bytes();
        self.put_prehashed(owner, key, bytes).map(|()| key)
    }

    fn check_size(&self, bytes: &[u8]) -> Result<(), Error> {
        if bytes.len() > SHARD_SIZE_MAX_BYTES || self.record_sectors_of(bytes.len()) > self.record_sectors_max {
            return Err(Error::TooLarge);
        }
        Ok(())
    }

    /// [`put`](Self::put) of bytes whose key the caller has just computed over these
    /// very bytes (`blake3(bytes)`, e.g. the shard service's upload check), so that a
    /// put hashes each byte once in all. Not checked again here: a wrong key is not
    /// returned as good data later (every read checks the bytes against the key and
    /// answers `Corrupt`), but the record is wasted, and if it is the log's last at a
    /// crash, mount drops it as torn.
    pub fn put_prehashed(&mut self, owner: &Owner, key: Key, bytes: &[u8]) -> Result<(), Error> {
        self.check_size(bytes)?;
        self.clean_tail()?;
        if self.contains(owner, &key) {
            match self.get(owner, &key) {
                Ok(_) => return Ok(()),
                Err(Error::Corrupt) => {} // Write a fresh copy; it supersedes the bad one.
                Err(error) => return Err(error),
            }
        }
        let record_sectors = self.record_sectors_of(bytes.len());
        self.make_room(record_sectors, self.put_reserve_sectors(), PUT_RESERVE_RECORDS)?;
        let entry = self.append(RecordKind::Put, *owner, key, bytes)?;
        assert_eq!((entry.owner, entry.key), (*owner, key));
        self.set_live(entry.owner, entry.key, entry.location(entry_len_bytes(bytes)));
        self.check_invariants();
        Ok(())
    }

    /// The bytes of `owner`'s shard `key`, checked against the key (one read request
    /// into the returned buffer, one blake3 pass).
    pub fn get(&mut self, owner: &Owner, key: &Key) -> Result<Vec<u8>, Error> {
        let location = *self.index.get(&(*owner, *key)).ok_or(Error::NotFound)?;
        self.read_payload(location.offset_sectors, location.payload_len_bytes, key)
    }

    /// Removes `owner`'s shard `key` (other owners' copies stay). Returns once the
    /// delete record is flushed.
    pub fn delete(&mut self, owner: &Owner, key: &Key) -> Result<(), Error> {
        self.clean_tail()?;
        if !self.contains(owner, key) {
            return Err(Error::NotFound);
        }
        self.make_room(self.block_sectors, self.delete_reserve_sectors(), 0)?;
        self.append(RecordKind::Delete, *owner, *key, &[])?;
        self.set_dead(owner, key);
        self.check_invariants();
        Ok(())
    }

    /// Whether `owner` holds shard `key` (from the index, without reading it).
    pub fn contains(&self, owner: &Owner, key: &Key) -> bool {
        self.index.contains_key(&(*owner, *key))
    }

    /// Keys of `owner`'s live shards, in ascending order.
    pub fn list(&self, owner: &Owner) -> Vec<Key> {
        self.owner_range(owner, None).map(|((_, key), _)| *key).collect()
    }

    /// Up to `max` of `owner`'s shards with keys above `after` (from the first when
    /// `None`), ascending: pass the last key of one page to get the next.
    pub fn list_after(&self, owner: &Owner, after: Option<&Key>, max: usize) -> Vec<(Key, ShardInfo)> {
        self.owner_range(owner, after).take(max).map(|((_, key), location)| (*key, location.info(key))).collect()
    }

    /// `owner`'s index entries with keys above `after` (all when `None`), ascending.
    fn owner_range(&self, owner: &Owner, after: Option<&Key>) -> impl Iterator<Item = (&(Owner, Key), &Location)> {
        let start = match after {
            Some(key) => Bound::Excluded((*owner, *key)),
            None => Bound::Included((*owner, [0u8; 32])),
        };
        // Excluded(x)..Included(x) (after the largest key) is an empty range, not a panic.
        self.index.range((start, Bound::Included((*owner, [0xff; 32]))))
    }

    /// Length and Merkle root of `owner`'s shard `key`.
    pub fn info(&self, owner: &Owner, key: &Key) -> Option<ShardInfo> {
        self.index.get(&(*owner, *key)).map(|location| location.info(key))
    }

    /// Live shards and payload bytes `owner` holds here (zero for an unknown owner).
    pub fn owner_usage(&self, owner: &Owner) -> OwnerUsage {
        self.usage.get(owner).copied().unwrap_or_default()
    }

    /// Owners holding at least one live shard.
    pub fn owner_count(&self) -> usize {
        self.usage.len()
    }

    /// Owners holding at least one live shard, ascending.
    pub fn owners(&self) -> impl Iterator<Item = &Owner> + '_ {
        self.usage.keys()
    }

    /// Space and content figures.
    pub fn stat(&self) -> Stat {
        let sector_bytes = SECTOR_SIZE as u64;
        Stat {
            capacity_bytes: self.superblock.log_sectors * sector_bytes,
            used_bytes: self.used_sectors * sector_bytes,
            free_bytes: self.free_sectors() * sector_bytes,
            live_bytes: self.live_bytes,
            shard_count: self.index.len() as u64,
        }
    }

    /// A storage proof for `challenge` over `owner`'s shard `key`, whose root is the key
    /// (reads and checks the whole shard, then hashes the chunk's siblings).
    pub fn prove(&mut self, owner: &Owner, key: &Key, challenge: u64) -> Result<StorageProof, Error> {
        let bytes = self.get(owner, key)?;
        let proof = build_proof(&bytes, challenge);
        debug_assert!(crate::merkle::verify_proof(key, bytes.len() as u64, challenge, &proof));
        Ok(proof)
    }

    /// Reads every live shard and returns the `(owner, key)` of those whose records
    /// fail their checksum, ascending.
    pub fn scrub(&mut self) -> Result<Vec<(Owner, Key)>, Error> {
        let mut corrupt = Vec::new();
        let names: Vec<(Owner, Key)> = self.index.keys().copied().collect();
        for (owner, key) in names {
            match self.get(&owner, &key) {
                Ok(_) => {}
                Err(Error::Corrupt) => corrupt.push((owner, key)),
                Err(error) => return Err(error),
            }
        }
        Ok(corrupt)
    }

    /// What mount found.
    pub fn mount_report(&self) -> MountReport {
        self.report
    }

    /// Live shards whose record was found corrupt by compaction and dropped.
    pub fn corrupt_dropped_count(&self) -> u64 {
        self.corrupt_dropped_count
    }

    /// The node id written at format.
    pub fn node_id(&self) -> [u8; 32] {
        self.superblock.node_id
    }

    /// The disk id written at format.
    pub fn disk_id(&self) -> [u8; 16] {
        self.superblock.disk_id
    }

    /// The underlying device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The underlying device, mutably (tests inject faults through it).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Gives the device back.
    pub fn into_device(self) -> D {
        self.dev
    }
}
