//! Mount: superblock and checkpoint checks, then replay of the log's hash chain.
//!
//! Replay follows records from the checkpoint's head while each header continues the
//! chain (sequence number, previous checksum, fits ahead of the tail); an unreadable
//! header is skipped only if the next sequence number is found within one maximum
//! record length. The last record is read whole and dropped if torn. Nothing is
//! written here.

use alloc::vec::Vec;

use blockdev::{BlockDevice, BlockError, SECTOR_SIZE};

use super::{read_sectors, ChainPos, LogEntry, ShardStore, Verdict};
use crate::error::MountError;
use crate::layout::{
    align_up, record_sectors_for, Checkpoint, RecordHeader, RecordKind, Superblock, SuperblockError,
    CHECKPOINT_SECTORS,
    RECORD_PAYLOAD_OFFSET_BYTES, SUPERBLOCK_SECTOR,
};

impl<D: BlockDevice> ShardStore<D> {
    pub(super) fn read_superblock(dev: &mut D) -> Result<Superblock, MountError> {
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

    pub(super) fn read_checkpoint(dev: &mut D, superblock: &Superblock) -> Result<Checkpoint, MountError> {
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
        let block_sectors = u64::from(superblock.block_sectors);
        if checkpoint.head_offset_sectors >= superblock.log_sectors
            || !checkpoint.head_offset_sectors.is_multiple_of(block_sectors)
        {
            return Err(MountError::BadCheckpoint);
        }
        Ok(checkpoint)
    }

    /// Follows the hash chain from the head and rebuilds the index (see the crate docs).
    /// Each record reaches the index once its successor is found; the last one only
    /// after it has been read whole.
    pub(super) fn replay(&mut self) -> Result<(), MountError> {
        let log_sectors = self.superblock.log_sectors;
        let mut pending: Option<(LogEntry, RecordHeader)> = None;
        for _ in 0..log_sectors {
            if self.tail.seq == u64::MAX {
                break;
            }
            if let Some(header) = self.chain_header_at(self.tail.offset_sectors)? {
                self.room_for_records(1)?;
                let entry = self.push_entry(&header);
                if let Some((entry, header)) = pending.replace((entry, header)) {
                    self.apply(&entry, &header);
                }
                continue;
            }
            let Some((lost_sectors, next)) = self.resync()? else { break };
            self.room_for_records(2)?;
            if let Some((entry, header)) = pending.take() {
                self.apply(&entry, &header);
            }
            self.push_lost(lost_sectors, &next);
            let entry = self.push_entry(&next);
            pending = Some((entry, next));
        }
        // The last record has no successor vouching that it was flushed whole: check it.
        if let Some((entry, header)) = pending {
            assert_eq!(self.log.back().map(|last| last.seq), Some(entry.seq));
            if self.verify_entry(&entry)? == Verdict::Torn {
                self.pop_back_entry();
                self.report.torn_tail_dropped = true;
            } else {
                self.apply(&entry, &header);
            }
        }
        self.report.records_replayed = self.log.len() as u64;
        self.check_invariants();
        Ok(())
    }

    /// Refuses the disk before replay keeps more than `records_max` records in RAM. The
    /// last record counts even though it may turn out torn and be dropped: a store
    /// counts the record it is writing against the same limit, so only a log no store
    /// wrote is refused, and the log never holds more than `records_max` entries.
    fn room_for_records(&self, more: usize) -> Result<(), MountError> {
        if self.log.len() + more > self.records_max {
            return Err(MountError::TooManyRecords { records_max: self.records_max as u64 });
        }
        Ok(())
    }

    /// What a replayed record does to the index.
    fn apply(&mut self, entry: &LogEntry, header: &RecordHeader) {
        assert_eq!(entry.seq, header.seq);
        match entry.kind {
            RecordKind::Put => {
                let location = entry.location(header.payload_len_bytes);
                self.set_live(entry.owner, entry.key, location);
            }
            RecordKind::Delete => self.set_dead(&entry.owner, &entry.key),
            RecordKind::Pad => {}
        }
    }

    /// The header at `offset_sectors` if it continues the chain at the tail.
    pub(super) fn chain_header_at(&mut self, offset_sectors: u64) -> Result<Option<RecordHeader>, BlockError> {
        let Some(header) = self.header_at(offset_sectors)? else { return Ok(None) };
        let fits = ShardProbe::from(&*self).fits(offset_sectors, &header);
        let linked = header.seq == self.tail.seq && header.prev_checksum == self.tail.prev_checksum;
        Ok((fits && linked && offset_sectors == self.tail.offset_sectors).then_some(header))
    }

    pub(super) fn header_at(&mut self, offset_sectors: u64) -> Result<Option<RecordHeader>, BlockError> {
        let sector = self.absolute_sector(offset_sectors);
        let bytes = read_sectors(&mut self.dev, sector, 1)?;
        Ok(RecordHeader::decode(&bytes, &self.checksum_key))
    }

    /// After an unreadable header at the tail: looks a bounded distance ahead for the
    /// record with the next sequence number. Finding it proves the unreadable record was
    /// once written whole (records are flushed one at a time), so it is skipped as lost
    /// rather than taken for the end of the log.
    pub(super) fn resync(&mut self) -> Result<Option<(u64, RecordHeader)>, BlockError> {
        let log_sectors = self.superblock.log_sectors;
        let Some(next_seq) = self.tail.seq.checked_add(1) else { return Ok(None) };
        let tail = self.tail.offset_sectors;
        let block = self.block_sectors;
        // Candidates: where the next record starts if the lost one was 1..=max blocks long
        // (read in one request), and offset 0 if the lost one was a pad.
        let first_sectors = tail + block;
        let last_sectors = tail.saturating_add(self.record_sectors_max).min(log_sectors - block);
        let window = if first_sectors <= last_sectors {
            let first_sector = self.absolute_sector(first_sectors);
            read_sectors(&mut self.dev, first_sector, last_sectors - first_sectors + 1)?
        } else {
            Vec::new()
        };
        let block_bytes = block as usize * SECTOR_SIZE;
        for (index, sector) in window.chunks(block_bytes).enumerate() {
            let offset_sectors = first_sectors + index as u64 * block;
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

    pub(super) fn push_lost(&mut self, lost_sectors: u64, next: &RecordHeader) {
        let entry = LogEntry {
            offset_sectors: self.tail.offset_sectors,
            seq: self.tail.seq,
            record_sectors: lost_sectors,
            kind: RecordKind::Pad,
            key: [0; 32],
            owner: [0; 32],
            record_checksum: next.prev_checksum,
        };
        self.report.lost_records += 1;
        self.push_log_entry(entry);
    }

    pub(super) fn push_entry(&mut self, header: &RecordHeader) -> LogEntry {
        assert_eq!(header.seq, self.tail.seq);
        let entry = LogEntry {
            offset_sectors: self.tail.offset_sectors,
            seq: header.seq,
            record_sectors: header.record_sectors,
            kind: header.kind,
            key: header.key,
            owner: header.owner,
            record_checksum: header.record_checksum,
        };
        self.push_log_entry(entry);
        entry
    }

    pub(super) fn push_log_entry(&mut self, entry: LogEntry) {
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

    pub(super) fn pop_back_entry(&mut self) {
        let Some(entry) = self.log.pop_back() else { return };
        self.used_sectors -= entry.record_sectors;
        let prev_checksum = self.log.back().map_or(self.head.prev_checksum, |prev| prev.record_checksum);
        self.tail = ChainPos { offset_sectors: entry.offset_sectors, seq: entry.seq, prev_checksum };
    }

    pub(super) fn verify_entry(&mut self, entry: &LogEntry) -> Result<Verdict, MountError> {
        let record_sectors = if entry.kind == RecordKind::Pad { 1 } else { entry.record_sectors };
        let sector = self.absolute_sector(entry.offset_sectors);
        let buf = read_sectors(&mut self.dev, sector, record_sectors)?;
        let Some(header) = RecordHeader::decode(&buf, &self.checksum_key) else {
            return Ok(Verdict::Torn);
        };
        if header.seq != entry.seq || header.record_checksum != entry.record_checksum {
            return Ok(Verdict::Torn);
        }
        if header.kind != RecordKind::Put {
            // No payload: the header (checked above) is the whole record.
            return Ok(Verdict::Whole);
        }
        let payload_end_bytes = RECORD_PAYLOAD_OFFSET_BYTES + header.payload_len_bytes as usize;
        let Some(payload) = buf.get(RECORD_PAYLOAD_OFFSET_BYTES..payload_end_bytes) else {
            return Ok(Verdict::Torn);
        };
        // A put's key is its payload's blake3: the payload reached the disk whole.
        let whole = *blake3::hash(payload).as_bytes() == header.key;
        Ok(if whole { Verdict::Whole } else { Verdict::Torn })
    }

}

/// The slice of store state that decides whether a header found on disk can be the
/// next record: it must lie ahead of the tail, inside the log and the free space.
struct ShardProbe {
    log_sectors: u64,
    tail_offset_sectors: u64,
    used_sectors: u64,
    record_sectors_max: u64,
    block_sectors: u64,
}

impl<D: BlockDevice> From<&ShardStore<D>> for ShardProbe {
    fn from(store: &ShardStore<D>) -> Self {
        ShardProbe {
            log_sectors: store.superblock.log_sectors,
            tail_offset_sectors: store.tail.offset_sectors,
            used_sectors: store.used_sectors,
            record_sectors_max: store.record_sectors_max,
            block_sectors: store.block_sectors,
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
        if offset_sectors >= self.log_sectors || !offset_sectors.is_multiple_of(self.block_sectors) {
            return false;
        }
        let Some(end_sectors) = offset_sectors.checked_add(header.record_sectors) else {
            return false;
        };
        let used_after = self
            .used_sectors
            .checked_add(self.gap_to(offset_sectors))
            .and_then(|used| used.checked_add(header.record_sectors));
        let exact_sectors =
            align_up(record_sectors_for(u64::from(header.payload_len_bytes)), self.block_sectors);
        let shaped = match header.kind {
            RecordKind::Pad => end_sectors == self.log_sectors,
            RecordKind::Put => {
                header.record_sectors == exact_sectors && header.record_sectors <= self.record_sectors_max
            }
            RecordKind::Delete => header.record_sectors == self.block_sectors,
        };
        // The last sequence number is never used, so the tail's successor always exists.
        let seq_ok = header.seq < u64::MAX;
        seq_ok && shaped && end_sectors <= self.log_sectors && used_after.is_some_and(|used| used < self.log_sectors)
    }
}
