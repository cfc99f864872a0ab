//! Writing the log: appends (with pads at the wrap), checkpoints and compaction.
//!
//! Each record is written (header sector, whole payload sectors straight from the
//! caller's buffer, the last partial sector) and then flushed once; the in-memory tail
//! moves only after the flush.
//! Compaction moves the head: dead records are dropped, live ones copied to the tail,
//! and the head advances only once a checkpoint naming it is flushed.

use alloc::vec;
use alloc::vec::Vec;

use blockdev::{BlockDevice, BlockError, SECTOR_SIZE};

use super::{ChainPos, Key, Location, LogEntry, Owner, ShardStore, COMPACT_BATCH_RECORDS};
use crate::error::Error;
use crate::layout::{Checkpoint, RecordHeader, RecordKind, CHECKPOINT_SECTORS, RECORD_PAYLOAD_OFFSET_BYTES};

/// Appends, checkpoints and compaction.
impl<D: BlockDevice> ShardStore<D> {
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
            let location = self.index.get(&(entry.owner, entry.key)).copied();
            let live = location.filter(|location| entry.kind == RecordKind::Put && location.seq == entry.seq);
            if let Some(location) = live {
                // A copy (and maybe a pad) must not take the log past its record limit.
                if self.log.len() + 2 > self.records_max {
                    break;
                }
                match self.read_payload(entry.offset_sectors, location.payload_len_bytes, &entry.key) {
                    Ok(bytes) => {
                        if self.room_sectors(entry.record_sectors) > self.free_sectors() {
                            break;
                        }
                        // The copy keeps its owner: it is the same shard in the same namespace.
                        let copy = self.append(RecordKind::Put, entry.owner, entry.key, &bytes)?;
                        let location = copy.location(location.payload_len_bytes);
                        self.set_live(copy.owner, copy.key, location);
                    }
                    Err(Error::Corrupt) => {
                        // Nothing good to copy: the shard is lost either way.
                        self.set_dead(&entry.owner, &entry.key);
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
    pub(super) fn clean_tail(&mut self) -> Result<(), Error> {
        if !self.tail_unclean {
            return Ok(());
        }
        let sector = self.absolute_sector(self.tail.offset_sectors);
        self.dev.write(sector, &self.block_of(&[]))?;
        self.dev.flush()?;
        self.tail_unclean = false;
        Ok(())
    }

    pub(super) fn write_checkpoint(&mut self, head: ChainPos) -> Result<(), Error> {
        // The generation came from disk: a forged one may be at the end of its range.
        let generation = self.checkpoint_generation.checked_add(1).ok_or(Error::NoSpace)?;
        let checkpoint = Checkpoint {
            generation,
            head_offset_sectors: head.offset_sectors,
            head_seq: head.seq,
            head_prev_checksum: head.prev_checksum,
        };
        // Slot `generation % 2` never holds the durable checkpoint (that one is in the other).
        let slot_sector = CHECKPOINT_SECTORS[(generation % 2) as usize];
        let bytes = self.block_of(&checkpoint.encode(&self.checksum_key));
        self.dev.write(slot_sector, &bytes)?;
        self.dev.flush()?;
        self.checkpoint_generation = generation;
        Ok(())
    }

    /// One zero-filled block starting with `sector`: whole-block writes never make the
    /// disk read-modify-write a physical sector.
    fn block_of(&self, sector: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; self.block_sectors as usize * SECTOR_SIZE];
        bytes[..sector.len()].copy_from_slice(sector);
        bytes
    }

    /// Points the index at a put record, replacing what it said about `owner`'s `key`,
    /// and keeps the owner's usage and the live bytes in step.
    pub(super) fn set_live(&mut self, owner: Owner, key: Key, location: Location) {
        let added_bytes = u64::from(location.payload_len_bytes);
        let old = self.index.insert((owner, key), location);
        let usage = self.usage.entry(owner).or_default();
        if let Some(old) = old {
            let old_bytes = u64::from(old.payload_len_bytes);
            usage.bytes -= old_bytes;
            self.live_bytes -= old_bytes;
        } else {
            usage.shards += 1;
        }
        usage.bytes += added_bytes;
        self.live_bytes += added_bytes;
    }

    /// Removes `owner`'s `key` from the index (and the owner, once it holds nothing).
    pub(super) fn set_dead(&mut self, owner: &Owner, key: &Key) {
        let Some(old) = self.index.remove(&(*owner, *key)) else { return };
        let old_bytes = u64::from(old.payload_len_bytes);
        self.live_bytes -= old_bytes;
        // Every index entry is counted in its owner's usage (`check_invariants`).
        let emptied = match self.usage.get_mut(owner) {
            Some(usage) => {
                usage.shards -= 1;
                usage.bytes -= old_bytes;
                usage.shards == 0
            }
            None => false,
        };
        if emptied {
            self.usage.remove(owner);
        }
    }

    pub(super) fn free_sectors(&self) -> u64 {
        self.superblock.log_sectors - 1 - self.used_sectors
    }

    /// Sectors an append of a `record_sectors` record takes now, pad included.
    pub(super) fn room_sectors(&self, record_sectors: u64) -> u64 {
        let log_sectors = self.superblock.log_sectors;
        let pad_sectors = if self.tail.offset_sectors + record_sectors > log_sectors {
            log_sectors - self.tail.offset_sectors
        } else {
            0
        };
        record_sectors + pad_sectors
    }

    /// Space kept back from new shards, so deletes and compaction can always proceed.
    pub(super) fn put_reserve_sectors(&self) -> u64 {
        2 * self.record_sectors_max + 4 * self.block_sectors
    }

    /// Space kept back from deletes, so compaction can always copy one record.
    pub(super) fn delete_reserve_sectors(&self) -> u64 {
        2 * self.record_sectors_max
    }

    /// Compacts until an append of `record_sectors` leaves `reserve_sectors` free and
    /// the append (with a pad) leaves `reserve_records` below the record limit.
    ///
    /// One lap of compaction is not always enough: copying live records to the tail can
    /// wrap it and leave a pad, which only the next lap frees. So this goes on as long as
    /// free space keeps growing, and gives up with `NoSpace` after a whole lap (plus one
    /// batch) without a gain.
    pub(super) fn make_room(&mut self, record_sectors: u64, reserve_sectors: u64, reserve_records: usize) -> Result<(), Error> {
        let fits = |store: &Self| {
            store.room_sectors(record_sectors) + reserve_sectors <= store.free_sectors()
                && store.log.len() + 2 + reserve_records <= store.records_max
        };
        let mut best_free_sectors = self.free_sectors();
        let mut handled_without_gain = 0usize;
        while !fits(self) {
            if self.log.is_empty() || handled_without_gain > self.log.len() + COMPACT_BATCH_RECORDS {
                return Err(Error::NoSpace);
            }
            handled_without_gain += COMPACT_BATCH_RECORDS.min(self.log.len());
            self.compact(COMPACT_BATCH_RECORDS)?;
            if self.free_sectors() > best_free_sectors {
                best_free_sectors = self.free_sectors();
                handled_without_gain = 0;
            }
        }
        Ok(())
    }

    /// Appends one record at the tail (after a pad if it would cross the end of the log),
    /// each written and flushed on its own. The tail moves only after the flush.
    pub(super) fn append(
        &mut self,
        kind: RecordKind,
        owner: Owner,
        key: Key,
        payload: &[u8],
    ) -> Result<LogEntry, Error> {
        let record_sectors = self.record_sectors_of(payload.len());
        assert!(self.room_sectors(record_sectors) <= self.free_sectors());
        let log_sectors = self.superblock.log_sectors;
        if self.tail.offset_sectors + record_sectors > log_sectors {
            let pad_sectors = log_sectors - self.tail.offset_sectors;
            self.write_record(RecordKind::Pad, [0; 32], [0; 32], &[], pad_sectors)?;
        }
        assert!(self.tail.offset_sectors + record_sectors <= log_sectors);
        self.write_record(kind, owner, key, payload, record_sectors)
    }

    /// Writes one record at the tail and flushes it. The header goes in its own first
    /// block (zero after it, or the payload's first sectors when the payload is short
    /// enough to be copied), the payload's whole sectors straight from `payload` (no
    /// copy: the device reads the caller's buffer), and its last partial sector from a
    /// zero-padded copy. All of it in one flush epoch, so after a crash the record is
    /// whole or fails its check (header checksum, or the key's hash over the payload).
    pub(super) fn write_record(
        &mut self,
        kind: RecordKind,
        owner: Owner,
        key: Key,
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
            owner,
            prev_checksum: self.tail.prev_checksum,
            record_checksum: [0; 32],
        };
        header.record_checksum = header.compute_record_checksum(&self.checksum_key);
        let sector = self.absolute_sector(self.tail.offset_sectors);
        let written = self.write_record_parts(sector, &header.encode(&self.checksum_key), payload);
        let written = written.and_then(|()| self.dev.flush());
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
            owner,
            record_checksum: header.record_checksum,
        };
        self.push_log_entry(entry);
        Ok(entry)
    }
}

impl<D: BlockDevice> ShardStore<D> {
    /// Payloads up to this size are copied into the header's block and written with it
    /// (one request); larger ones go to the device from the caller's buffer.
    const INLINE_PAYLOAD_BYTES_MAX: usize = 32 << 10;

    /// The device writes of one record starting at `sector`: header sector, payload.
    fn write_record_parts(&mut self, sector: u64, header: &[u8], payload: &[u8]) -> Result<(), BlockError> {
        let block_bytes = self.block_sectors as usize * SECTOR_SIZE;
        let payload_start_sectors = (RECORD_PAYLOAD_OFFSET_BYTES / SECTOR_SIZE) as u64;
        if payload.len() <= Self::INLINE_PAYLOAD_BYTES_MAX {
            let len_bytes = (RECORD_PAYLOAD_OFFSET_BYTES + payload.len()).div_ceil(block_bytes).max(1) * block_bytes;
            let mut buf = vec![0u8; len_bytes];
            buf[..header.len()].copy_from_slice(header);
            buf[RECORD_PAYLOAD_OFFSET_BYTES..RECORD_PAYLOAD_OFFSET_BYTES + payload.len()].copy_from_slice(payload);
            return self.dev.write(sector, &buf);
        }
        // The header sector alone: the payload follows in the same flush epoch.
        let mut first = vec![0u8; SECTOR_SIZE];
        first[..header.len()].copy_from_slice(header);
        self.dev.write(sector, &first)?;
        let whole_bytes = payload.len() / SECTOR_SIZE * SECTOR_SIZE;
        self.dev.write(sector + payload_start_sectors, &payload[..whole_bytes])?;
        let rest = &payload[whole_bytes..];
        if !rest.is_empty() {
            let mut last = vec![0u8; SECTOR_SIZE];
            last[..rest.len()].copy_from_slice(rest);
            let at = sector + payload_start_sectors + (whole_bytes / SECTOR_SIZE) as u64;
            self.dev.write(at, &last)?;
        }
        Ok(())
    }
}
