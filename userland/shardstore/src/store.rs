//! The shard store on one disk: format, mount (log replay), put/get/delete, compaction.
//!
//! State in memory: the superblock, an index `key -> location` and the list of log
//! records between the durable head and the tail (oldest first). The disk is only
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

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use blockdev::{BlockDevice, BlockError, SECTOR_SIZE};

use crate::error::{Error, FormatError, MountError};
use crate::layout::{
    record_sectors_for, Checkpoint, RecordHeader, RecordKind, Superblock, SuperblockError,
    CHECKPOINT_SECTORS, LOG_SECTORS_MIN, LOG_START_SECTORS, RECORD_HEADER_SIZE_BYTES,
    SUPERBLOCK_SECTOR,
};
use crate::merkle::{build_proof, merkle_root, StorageProof};

/// A shard key: the blake3 hash of the shard's bytes.
pub type Key = [u8; 32];

/// The largest shard any store accepts.
pub const SHARD_SIZE_MAX_BYTES: usize = 16 << 20;

/// Records compaction handles per checkpoint when a write needs space.
const COMPACT_BATCH_RECORDS: usize = 16;

/// Where a live shard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    offset_sectors: u64,
    seq: u64,
    record_sectors: u64,
    payload_len_bytes: u32,
    merkle_root: [u8; 32],
}

/// One record of the log between head and tail.
#[derive(Debug, Clone, Copy)]
struct LogEntry {
    offset_sectors: u64,
    seq: u64,
    record_sectors: u64,
    kind: RecordKind,
    key: Key,
    payload_len_bytes: u32,
    merkle_root: [u8; 32],
    record_checksum: [u8; 32],
}

impl LogEntry {
    fn location(&self) -> Location {
        Location {
            offset_sectors: self.offset_sectors,
            seq: self.seq,
            record_sectors: self.record_sectors,
            payload_len_bytes: self.payload_len_bytes,
            merkle_root: self.merkle_root,
        }
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
    /// Merkle root over its 4 KiB chunks (see [`crate::verify_proof`]).
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
    index: BTreeMap<Key, Location>,
    log: VecDeque<LogEntry>,
    head: ChainPos,
    tail: ChainPos,
    used_sectors: u64,
    live_bytes: u64,
    checkpoint_generation: u64,
    record_sectors_max: u64,
    report: MountReport,
    corrupt_dropped_count: u64,
    /// A record write at the tail failed: the device may still make it durable.
    tail_unclean: bool,
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

/// The largest record a store with a log of `log_sectors` accepts.
fn record_sectors_max_for(log_sectors: u64) -> u64 {
    (log_sectors / 8).min(record_sectors_for(SHARD_SIZE_MAX_BYTES as u64))
}

impl<D: BlockDevice> ShardStore<D> {
    /// Writes a new, empty store on `dev` (superblock and checkpoints) and returns it.
    /// Whatever the disk held before is gone: no old record verifies under the new format.
    pub fn format(mut dev: D, node_id: [u8; 32], disk_id: [u8; 16]) -> Result<Self, FormatError> {
        let sector_count = dev.sector_count();
        let log_sectors = sector_count
            .checked_sub(LOG_START_SECTORS)
            .filter(|&log| log >= LOG_SECTORS_MIN)
            .ok_or(FormatError::DeviceTooSmall)?;
        // The salt hashes the old superblock sector, so each format of a disk gets a new
        // checksum key even with the same ids.
        let old_sector = read_sectors(&mut dev, SUPERBLOCK_SECTOR, 1)?;
        let mut hasher = blake3::Hasher::new_derive_key("gridos shardstore v1 format salt");
        hasher.update(&old_sector);
        hasher.update(&node_id);
        hasher.update(&disk_id);
        let mut format_salt = [0u8; 16];
        format_salt.copy_from_slice(&hasher.finalize().as_bytes()[..16]);

        let superblock = Superblock {
            node_id,
            disk_id,
            format_salt,
            sector_count,
            log_start_sectors: LOG_START_SECTORS,
            log_sectors,
        };
        let checksum_key = superblock.checksum_key();
        let head = ChainPos { offset_sectors: 0, seq: 1, prev_checksum: [0; 32] };
        let checkpoint = Checkpoint {
            generation: 1,
            head_offset_sectors: head.offset_sectors,
            head_seq: head.seq,
            head_prev_checksum: head.prev_checksum,
        };
        dev.write(CHECKPOINT_SECTORS[1], &checkpoint.encode(&checksum_key))?;
        dev.write(CHECKPOINT_SECTORS[0], &[0u8; SECTOR_SIZE])?;
        dev.flush()?;
        dev.write(SUPERBLOCK_SECTOR, &superblock.encode())?;
        dev.flush()?;
        Ok(Self::empty(dev, superblock, head, checkpoint.generation))
    }

    fn empty(dev: D, superblock: Superblock, head: ChainPos, checkpoint_generation: u64) -> Self {
        let checksum_key = superblock.checksum_key();
        let record_sectors_max = record_sectors_max_for(superblock.log_sectors);
        ShardStore {
            dev,
            superblock,
            checksum_key,
            index: BTreeMap::new(),
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
        }
    }

    /// Opens a formatted disk: checks the superblock, picks the newest checkpoint and
    /// replays the log from it. Never writes. A refused disk is dropped with the error;
    /// see [`try_mount`](Self::try_mount) to get it back.
    pub fn mount(dev: D) -> Result<Self, MountError> {
        Self::try_mount(dev).map_err(|(error, _dev)| error)
    }

    /// Like [`mount`](Self::mount), but a refused device is handed back with the error.
    pub fn try_mount(mut dev: D) -> Result<Self, (MountError, D)> {
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
        match store.replay() {
            Ok(()) => Ok(store),
            Err(error) => Err((error, store.dev)),
        }
    }

    fn read_superblock(dev: &mut D) -> Result<Superblock, MountError> {
        let sector = read_sectors(dev, SUPERBLOCK_SECTOR, 1)?;
        let superblock = Superblock::decode(&sector).map_err(|error| match error {
            SuperblockError::NotFormatted => MountError::NotFormatted,
            SuperblockError::UnsupportedVersion(version) => MountError::UnsupportedVersion(version),
            SuperblockError::Invalid => MountError::BadSuperblock,
        })?;
        if dev.sector_count() < superblock.sector_count {
            return Err(MountError::DeviceTooSmall);
        }
        Ok(superblock)
    }

    fn read_checkpoint(dev: &mut D, superblock: &Superblock) -> Result<Checkpoint, MountError> {
        let key = superblock.checksum_key();
        let mut best: Option<Checkpoint> = None;
        for (slot, &sector) in CHECKPOINT_SECTORS.iter().enumerate() {
            let bytes = read_sectors(dev, sector, 1)?;
            let Some(checkpoint) = Checkpoint::decode(&bytes, &key) else { continue };
            if checkpoint.generation % 2 != slot as u64 {
                continue;
            }
            if best.is_none_or(|best| checkpoint.generation > best.generation) {
                best = Some(checkpoint);
            }
        }
        let checkpoint = best.ok_or(MountError::BadCheckpoint)?;
        if checkpoint.head_offset_sectors >= superblock.log_sectors {
            return Err(MountError::BadCheckpoint);
        }
        Ok(checkpoint)
    }

    /// Follows the hash chain from the head and rebuilds the index (see the crate docs).
    fn replay(&mut self) -> Result<(), MountError> {
        let log_sectors = self.superblock.log_sectors;
        for _ in 0..log_sectors {
            if self.tail.seq == u64::MAX {
                break;
            }
            if let Some(header) = self.chain_header_at(self.tail.offset_sectors)? {
                self.push_entry(&header);
                continue;
            }
            match self.resync()? {
                Some((lost_sectors, next)) => {
                    self.push_lost(lost_sectors, &next);
                    self.push_entry(&next);
                }
                None => break,
            }
        }
        // The last record has no successor vouching that it was flushed whole: check it.
        if let Some(&last) = self.log.back() {
            if self.verify_entry(&last)? == Verdict::Torn {
                self.pop_back_entry();
                self.report.torn_tail_dropped = true;
            }
        }
        self.report.records_replayed = self.log.len() as u64;
        self.rebuild_index();
        self.check_invariants();
        Ok(())
    }


    /// The header at `offset_sectors` if it continues the chain at the tail.
    fn chain_header_at(&mut self, offset_sectors: u64) -> Result<Option<RecordHeader>, BlockError> {
        let Some(header) = self.header_at(offset_sectors)? else { return Ok(None) };
        let fits = ShardProbe::from(&*self).fits(offset_sectors, &header);
        let linked = header.seq == self.tail.seq && header.prev_checksum == self.tail.prev_checksum;
        Ok((fits && linked && offset_sectors == self.tail.offset_sectors).then_some(header))
    }

    fn header_at(&mut self, offset_sectors: u64) -> Result<Option<RecordHeader>, BlockError> {
        let sector = self.absolute_sector(offset_sectors);
        let bytes = read_sectors(&mut self.dev, sector, 1)?;
        Ok(RecordHeader::decode(&bytes, &self.checksum_key))
    }

    fn absolute_sector(&self, offset_sectors: u64) -> u64 {
        assert!(offset_sectors < self.superblock.log_sectors);
        self.superblock.log_start_sectors + offset_sectors
    }

    /// After an unreadable header at the tail: looks a bounded distance ahead for the
    /// record with the next sequence number. Finding it proves the unreadable record was
    /// once written whole (records are flushed one at a time), so it is skipped as lost
    /// rather than taken for the end of the log.
    fn resync(&mut self) -> Result<Option<(u64, RecordHeader)>, BlockError> {
        let log_sectors = self.superblock.log_sectors;
        let Some(next_seq) = self.tail.seq.checked_add(1) else { return Ok(None) };
        let tail = self.tail.offset_sectors;
        let window_end = tail.saturating_add(self.record_sectors_max).min(log_sectors - 1);
        // Candidates: the sectors after a lost record (read in one request), and offset 0
        // after a lost pad.
        let window_sectors = window_end.saturating_sub(tail);
        let window = if window_sectors > 0 {
            let first_sector = self.absolute_sector(tail + 1);
            read_sectors(&mut self.dev, first_sector, window_sectors)?
        } else {
            Vec::new()
        };
        for (index, sector) in window.chunks_exact(SECTOR_SIZE).enumerate() {
            let offset_sectors = tail + 1 + index as u64;
            let Some(header) = RecordHeader::decode(sector, &self.checksum_key) else { continue };
            if header.seq == next_seq && ShardProbe::from(&*self).fits(offset_sectors, &header) {
                return Ok(Some((offset_sectors - tail, header)));
            }
        }
        if tail > 0 {
            if let Some(header) = self.header_at(0)? {
                if header.seq == next_seq && ShardProbe::from(&*self).fits(0, &header) {
                    return Ok(Some((log_sectors - tail, header)));
                }
            }
        }
        Ok(None)
    }

    fn push_lost(&mut self, lost_sectors: u64, next: &RecordHeader) {
        let entry = LogEntry {
            offset_sectors: self.tail.offset_sectors,
            seq: self.tail.seq,
            record_sectors: lost_sectors,
            kind: RecordKind::Pad,
            key: [0; 32],
            payload_len_bytes: 0,
            merkle_root: [0; 32],
            record_checksum: next.prev_checksum,
        };
        self.report.lost_records += 1;
        self.push_log_entry(entry);
    }

    fn push_entry(&mut self, header: &RecordHeader) {
        assert_eq!(header.seq, self.tail.seq);
        let entry = LogEntry {
            offset_sectors: self.tail.offset_sectors,
            seq: header.seq,
            record_sectors: header.record_sectors,
            kind: header.kind,
            key: header.key,
            payload_len_bytes: header.payload_len_bytes,
            merkle_root: header.merkle_root,
            record_checksum: header.record_checksum,
        };
        self.push_log_entry(entry);
    }

    fn push_log_entry(&mut self, entry: LogEntry) {
        let log_sectors = self.superblock.log_sectors;
        assert_eq!(entry.offset_sectors, self.tail.offset_sectors);
        assert!(entry.record_sectors >= 1);
        assert!(entry.seq < u64::MAX);
        assert!(entry.offset_sectors + entry.record_sectors <= log_sectors);
        self.used_sectors += entry.record_sectors;
        assert!(self.used_sectors < log_sectors);
        self.tail = ChainPos {
            offset_sectors: (entry.offset_sectors + entry.record_sectors) % log_sectors,
            seq: entry.seq + 1,
            prev_checksum: entry.record_checksum,
        };
        self.log.push_back(entry);
    }

    fn pop_back_entry(&mut self) {
        let Some(entry) = self.log.pop_back() else { return };
        self.used_sectors -= entry.record_sectors;
        let prev_checksum = self.log.back().map_or(self.head.prev_checksum, |prev| prev.record_checksum);
        self.tail = ChainPos { offset_sectors: entry.offset_sectors, seq: entry.seq, prev_checksum };
    }

    fn rebuild_index(&mut self) {
        self.index.clear();
        self.live_bytes = 0;
        for entry in &self.log {
            match entry.kind {
                RecordKind::Put => {
                    if let Some(old) = self.index.insert(entry.key, entry.location()) {
                        self.live_bytes -= u64::from(old.payload_len_bytes);
                    }
                    self.live_bytes += u64::from(entry.payload_len_bytes);
                }
                RecordKind::Delete => {
                    if let Some(old) = self.index.remove(&entry.key) {
                        self.live_bytes -= u64::from(old.payload_len_bytes);
                    }
                }
                RecordKind::Pad => {}
            }
        }
    }

    /// Reads a whole record and checks it: header again (same place in the chain) and
    /// the keyed checksum over header and payload.
    fn read_record(&mut self, offset_sectors: u64, seq: u64, record_sectors: u64) -> Result<Vec<u8>, Error> {
        let sector = self.absolute_sector(offset_sectors);
        // Pads are not written beyond their header sector.
        let mut buf = read_sectors(&mut self.dev, sector, record_sectors)?;
        let header = RecordHeader::decode(&buf, &self.checksum_key).ok_or(Error::Corrupt)?;
        if header.seq != seq || header.record_sectors != record_sectors {
            return Err(Error::Corrupt);
        }
        let payload_end_bytes = RECORD_HEADER_SIZE_BYTES + header.payload_len_bytes as usize;
        if payload_end_bytes > buf.len() {
            return Err(Error::Corrupt);
        }
        let payload = &buf[RECORD_HEADER_SIZE_BYTES..payload_end_bytes];
        if header.compute_record_checksum(&self.checksum_key, payload) != header.record_checksum {
            return Err(Error::Corrupt);
        }
        buf.truncate(payload_end_bytes);
        buf.drain(..RECORD_HEADER_SIZE_BYTES);
        Ok(buf)
    }

    fn verify_entry(&mut self, entry: &LogEntry) -> Result<Verdict, MountError> {
        let record_sectors = if entry.kind == RecordKind::Pad { 1 } else { entry.record_sectors };
        let sector = self.absolute_sector(entry.offset_sectors);
        let buf = read_sectors(&mut self.dev, sector, record_sectors)?;
        let Some(header) = RecordHeader::decode(&buf, &self.checksum_key) else {
            return Ok(Verdict::Torn);
        };
        let payload_end_bytes = RECORD_HEADER_SIZE_BYTES + header.payload_len_bytes as usize;
        let Some(payload) = buf.get(RECORD_HEADER_SIZE_BYTES..payload_end_bytes) else {
            return Ok(Verdict::Torn);
        };
        let whole = header.compute_record_checksum(&self.checksum_key, payload) == header.record_checksum;
        Ok(if whole { Verdict::Whole } else { Verdict::Torn })
    }

    fn check_invariants(&self) {
        let log_sectors = self.superblock.log_sectors;
        assert!(self.used_sectors < log_sectors);
        assert_eq!(self.tail.offset_sectors, (self.head.offset_sectors + self.used_sectors) % log_sectors);
        assert_eq!(self.log.is_empty(), self.used_sectors == 0);
        if let Some(first) = self.log.front() {
            assert_eq!(first.offset_sectors, self.head.offset_sectors);
            assert_eq!(first.seq, self.head.seq);
        }
        debug_assert_eq!(self.log.iter().map(|entry| entry.record_sectors).sum::<u64>(), self.used_sectors);
    }
}

/// Shard operations and compaction.
impl<D: BlockDevice> ShardStore<D> {
    /// Stores `bytes` under `key`, which must be `blake3(bytes)`. Returns once the record
    /// is flushed. Storing a key that is already present (and readable) writes nothing.
    pub fn put(&mut self, key: Key, bytes: &[u8]) -> Result<(), Error> {
        if bytes.len() > SHARD_SIZE_MAX_BYTES {
            return Err(Error::TooLarge);
        }
        let record_sectors = record_sectors_for(bytes.len() as u64);
        if record_sectors > self.record_sectors_max {
            return Err(Error::TooLarge);
        }
        if *blake3::hash(bytes).as_bytes() != key {
            return Err(Error::KeyMismatch);
        }
        self.clean_tail()?;
        if self.index.contains_key(&key) {
            match self.get(&key) {
                Ok(_) => return Ok(()),
                Err(Error::Corrupt) => {} // Write a fresh copy; it supersedes the bad one.
                Err(error) => return Err(error),
            }
        }
        self.make_room(record_sectors, self.put_reserve_sectors())?;
        let root = merkle_root(bytes);
        let entry = self.append(RecordKind::Put, key, root, bytes)?;
        self.set_live(entry);
        self.check_invariants();
        Ok(())
    }

    /// The bytes of shard `key`, checked against the record checksum.
    pub fn get(&mut self, key: &Key) -> Result<Vec<u8>, Error> {
        let location = *self.index.get(key).ok_or(Error::NotFound)?;
        let bytes = self.read_record(location.offset_sectors, location.seq, location.record_sectors)?;
        // The record checksum already covers the bytes; the key check also catches a
        // record that was written wrong (or forged by someone holding the disk's key).
        if bytes.len() != location.payload_len_bytes as usize || *blake3::hash(&bytes).as_bytes() != *key {
            return Err(Error::Corrupt);
        }
        Ok(bytes)
    }

    /// Removes shard `key`. Returns once the delete record is flushed.
    pub fn delete(&mut self, key: &Key) -> Result<(), Error> {
        self.clean_tail()?;
        if !self.index.contains_key(key) {
            return Err(Error::NotFound);
        }
        self.make_room(1, self.delete_reserve_sectors())?;
        self.append(RecordKind::Delete, *key, [0; 32], &[])?;
        if let Some(old) = self.index.remove(key) {
            self.live_bytes -= u64::from(old.payload_len_bytes);
        }
        self.check_invariants();
        Ok(())
    }

    /// Whether shard `key` is in the index (without reading it).
    pub fn contains(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    /// Keys of all live shards, in ascending order.
    pub fn list(&self) -> Vec<Key> {
        self.index.keys().copied().collect()
    }

    /// Length and Merkle root of shard `key`.
    pub fn info(&self, key: &Key) -> Option<ShardInfo> {
        self.index.get(key).map(|location| ShardInfo {
            len_bytes: u64::from(location.payload_len_bytes),
            merkle_root: location.merkle_root,
        })
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

    /// A storage proof for `challenge` over shard `key` (reads and checks the whole shard).
    pub fn prove(&mut self, key: &Key, challenge: u64) -> Result<StorageProof, Error> {
        let location = *self.index.get(key).ok_or(Error::NotFound)?;
        let bytes = self.get(key)?;
        // The root came from disk: a proof against a wrong root would fail verification.
        if merkle_root(&bytes) != location.merkle_root {
            return Err(Error::Corrupt);
        }
        let proof = build_proof(&bytes, challenge);
        debug_assert!(crate::merkle::verify_proof(&location.merkle_root, bytes.len() as u64, challenge, &proof));
        Ok(proof)
    }

    /// Reads every live shard and returns the keys whose records fail their checksum.
    pub fn scrub(&mut self) -> Result<Vec<Key>, Error> {
        let mut corrupt = Vec::new();
        for key in self.list() {
            match self.get(&key) {
                Ok(_) => {}
                Err(Error::Corrupt) => corrupt.push(key),
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

    /// Reclaims log space: handles up to `records_max` records at the head, dropping dead
    /// ones and copying live ones to the tail, then flushes one checkpoint naming the new
    /// head. Returns the sectors freed. A crash at any point loses nothing: until the
    /// checkpoint is durable, mount replays from the old head and finds both copies.
    pub fn compact(&mut self, records_max: usize) -> Result<u64, Error> {
        self.clean_tail()?;
        let initial_len = self.log.len();
        let mut advanced = 0usize;
        while advanced < records_max.min(initial_len) {
            let entry = self.log[advanced];
            let live = entry.kind == RecordKind::Put
                && self.index.get(&entry.key).is_some_and(|location| location.seq == entry.seq);
            if live {
                match self.read_record(entry.offset_sectors, entry.seq, entry.record_sectors) {
                    Ok(bytes) => {
                        if self.room_sectors(entry.record_sectors) > self.free_sectors() {
                            break;
                        }
                        let copy = self.append(RecordKind::Put, entry.key, entry.merkle_root, &bytes)?;
                        self.set_live(copy);
                    }
                    Err(Error::Corrupt) => {
                        // Nothing good to copy: the shard is lost either way.
                        if let Some(old) = self.index.remove(&entry.key) {
                            self.live_bytes -= u64::from(old.payload_len_bytes);
                        }
                        self.corrupt_dropped_count += 1;
                    }
                    Err(error) => return Err(error),
                }
            }
            advanced += 1;
        }
        if advanced == 0 {
            return Ok(0);
        }
        let last_dropped = self.log[advanced - 1];
        let new_head = match self.log.get(advanced) {
            Some(next) => ChainPos {
                offset_sectors: next.offset_sectors,
                seq: next.seq,
                prev_checksum: last_dropped.record_checksum,
            },
            None => self.tail,
        };
        assert_eq!(new_head.prev_checksum, last_dropped.record_checksum);
        self.write_checkpoint(new_head)?;
        let mut freed_sectors = 0;
        for _ in 0..advanced {
            if let Some(entry) = self.log.pop_front() {
                freed_sectors += entry.record_sectors;
            }
        }
        self.used_sectors -= freed_sectors;
        self.head = new_head;
        self.check_invariants();
        Ok(freed_sectors)
    }

    /// After a failed record write, the tail may hold a record that was never
    /// acknowledged and that the device may still write back from its cache. Before
    /// anything else is acknowledged, its header sector is zeroed and flushed, so a later
    /// acknowledgement can never be contradicted by it after a crash.
    fn clean_tail(&mut self) -> Result<(), Error> {
        if !self.tail_unclean {
            return Ok(());
        }
        let sector = self.absolute_sector(self.tail.offset_sectors);
        self.dev.write(sector, &[0u8; SECTOR_SIZE])?;
        self.dev.flush()?;
        self.tail_unclean = false;
        Ok(())
    }

    fn write_checkpoint(&mut self, head: ChainPos) -> Result<(), Error> {
        let generation = self.checkpoint_generation + 1;
        let checkpoint = Checkpoint {
            generation,
            head_offset_sectors: head.offset_sectors,
            head_seq: head.seq,
            head_prev_checksum: head.prev_checksum,
        };
        // Slot `generation % 2` never holds the durable checkpoint (that one is in the other).
        let slot_sector = CHECKPOINT_SECTORS[(generation % 2) as usize];
        self.dev.write(slot_sector, &checkpoint.encode(&self.checksum_key))?;
        self.dev.flush()?;
        self.checkpoint_generation = generation;
        Ok(())
    }

    fn set_live(&mut self, entry: LogEntry) {
        assert_eq!(entry.kind, RecordKind::Put);
        if let Some(old) = self.index.insert(entry.key, entry.location()) {
            self.live_bytes -= u64::from(old.payload_len_bytes);
        }
        self.live_bytes += u64::from(entry.payload_len_bytes);
    }

    fn free_sectors(&self) -> u64 {
        self.superblock.log_sectors - 1 - self.used_sectors
    }

    /// Sectors an append of a `record_sectors` record takes now, pad included.
    fn room_sectors(&self, record_sectors: u64) -> u64 {
        let log_sectors = self.superblock.log_sectors;
        let pad_sectors = if self.tail.offset_sectors + record_sectors > log_sectors {
            log_sectors - self.tail.offset_sectors
        } else {
            0
        };
        record_sectors + pad_sectors
    }

    /// Space kept back from new shards, so deletes and compaction can always proceed.
    fn put_reserve_sectors(&self) -> u64 {
        2 * self.record_sectors_max + 8
    }

    /// Space kept back from deletes, so compaction can always copy one record.
    fn delete_reserve_sectors(&self) -> u64 {
        2 * self.record_sectors_max
    }

    /// Compacts until an append of `record_sectors` leaves `reserve_sectors` free.
    fn make_room(&mut self, record_sectors: u64, reserve_sectors: u64) -> Result<(), Error> {
        // One lap of the log at most: every record at the head is handled once.
        let rounds_max = self.log.len() / COMPACT_BATCH_RECORDS + 2;
        for _ in 0..rounds_max {
            if self.room_sectors(record_sectors) + reserve_sectors <= self.free_sectors() {
                return Ok(());
            }
            if self.log.is_empty() {
                break;
            }
            self.compact(COMPACT_BATCH_RECORDS)?;
        }
        if self.room_sectors(record_sectors) + reserve_sectors <= self.free_sectors() {
            return Ok(());
        }
        Err(Error::NoSpace)
    }

    /// Appends one record at the tail (after a pad if it would cross the end of the log),
    /// each written and flushed on its own. The tail moves only after the flush.
    fn append(&mut self, kind: RecordKind, key: Key, merkle_root: [u8; 32], payload: &[u8]) -> Result<LogEntry, Error> {
        let record_sectors = record_sectors_for(payload.len() as u64);
        assert!(self.room_sectors(record_sectors) <= self.free_sectors());
        let log_sectors = self.superblock.log_sectors;
        if self.tail.offset_sectors + record_sectors > log_sectors {
            let pad_sectors = log_sectors - self.tail.offset_sectors;
            self.write_record(RecordKind::Pad, [0; 32], [0; 32], &[], pad_sectors)?;
        }
        assert!(self.tail.offset_sectors + record_sectors <= log_sectors);
        self.write_record(kind, key, merkle_root, payload, record_sectors)
    }

    fn write_record(
        &mut self,
        kind: RecordKind,
        key: Key,
        merkle_root: [u8; 32],
        payload: &[u8],
        record_sectors: u64,
    ) -> Result<LogEntry, Error> {
        if self.tail.seq >= u64::MAX - 1 {
            return Err(Error::NoSpace);
        }
        let payload_len_bytes = u32::try_from(payload.len()).map_err(|_| Error::TooLarge)?;
        let mut header = RecordHeader {
            kind,
            payload_len_bytes,
            seq: self.tail.seq,
            record_sectors,
            key,
            merkle_root,
            prev_checksum: self.tail.prev_checksum,
            record_checksum: [0; 32],
        };
        header.record_checksum = header.compute_record_checksum(&self.checksum_key, payload);
        // A pad is written as its header sector only; its other sectors are never read.
        let written_sectors = if kind == RecordKind::Pad { 1 } else { record_sectors };
        let mut buf = vec![0u8; written_sectors as usize * SECTOR_SIZE];
        buf[..RECORD_HEADER_SIZE_BYTES].copy_from_slice(&header.encode(&self.checksum_key));
        buf[RECORD_HEADER_SIZE_BYTES..RECORD_HEADER_SIZE_BYTES + payload.len()].copy_from_slice(payload);
        let sector = self.absolute_sector(self.tail.offset_sectors);
        let written = self.dev.write(sector, &buf).and_then(|()| self.dev.flush());
        if let Err(error) = written {
            self.tail_unclean = true;
            return Err(Error::Device(error));
        }
        let entry = LogEntry {
            offset_sectors: self.tail.offset_sectors,
            seq: header.seq,
            record_sectors,
            kind,
            key,
            payload_len_bytes,
            merkle_root,
            record_checksum: header.record_checksum,
        };
        self.push_log_entry(entry);
        Ok(entry)
    }
}

/// The slice of store state that decides whether a header found on disk can be the
/// next record: it must lie ahead of the tail, inside the log and the free space.
struct ShardProbe {
    log_sectors: u64,
    tail_offset_sectors: u64,
    used_sectors: u64,
    record_sectors_max: u64,
}

impl<D: BlockDevice> From<&ShardStore<D>> for ShardProbe {
    fn from(store: &ShardStore<D>) -> Self {
        ShardProbe {
            log_sectors: store.superblock.log_sectors,
            tail_offset_sectors: store.tail.offset_sectors,
            used_sectors: store.used_sectors,
            record_sectors_max: store.record_sectors_max,
        }
    }
}

impl ShardProbe {
    /// Sectors from the tail forward to `offset_sectors` (< log size), circularly.
    fn gap_to(&self, offset_sectors: u64) -> u64 {
        assert!(offset_sectors < self.log_sectors);
        let tail = self.tail_offset_sectors;
        if offset_sectors >= tail {
            offset_sectors - tail
        } else {
            self.log_sectors - tail + offset_sectors
        }
    }

    /// Whether `header` at `offset_sectors` fits in the free space, counting the sectors
    /// between the tail and it as used.
    fn fits(&self, offset_sectors: u64, header: &RecordHeader) -> bool {
        if offset_sectors >= self.log_sectors {
            return false;
        }
        let Some(end_sectors) = offset_sectors.checked_add(header.record_sectors) else {
            return false;
        };
        let used_after = self
            .used_sectors
            .checked_add(self.gap_to(offset_sectors))
            .and_then(|used| used.checked_add(header.record_sectors));
        let shaped = match header.kind {
            RecordKind::Pad => end_sectors == self.log_sectors,
            RecordKind::Put => header.record_sectors <= self.record_sectors_max,
            RecordKind::Delete => true,
        };
        // The last sequence number is never used, so the tail's successor always exists.
        let seq_ok = header.seq < u64::MAX;
        seq_ok && shaped && end_sectors <= self.log_sectors && used_after.is_some_and(|used| used < self.log_sectors)
    }
}
