//! Helpers shared by the integration tests: deterministic shards and fresh stores.
#![allow(dead_code)]

use blockdev::mem::MemDisk;
use shardstore::{FormatOptions, Key, ShardStore};

pub const NODE_ID: [u8; 32] = [0x11; 32];
pub const DISK_ID: [u8; 16] = [0x22; 16];
/// The owner of the tests' shards (not the node's zero owner, so nothing relies on it).
pub const OWNER: [u8; 32] = [0x33; 32];

/// A shard of `len_bytes` whose content depends on `seed`, and its key.
pub fn shard(seed: u64, len_bytes: usize) -> (Key, Vec<u8>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let bytes: Vec<u8> = (0..len_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    (*blake3::hash(&bytes).as_bytes(), bytes)
}

/// A freshly formatted store on a zeroed disk of `sector_count` sectors, with records
/// aligned to single sectors (so that small test disks hold many records).
pub fn fresh(sector_count: u64) -> ShardStore<MemDisk> {
    fresh_with_blocks(sector_count, 1)
}

/// A freshly formatted store whose records are aligned to `block_sectors`.
pub fn fresh_with_blocks(sector_count: u64, block_sectors: u32) -> ShardStore<MemDisk> {
    let options = FormatOptions { block_sectors, ..FormatOptions::default() };
    ShardStore::format_with(MemDisk::new(sector_count), NODE_ID, DISK_ID, options).expect("format")
}

/// Simulates power loss (unflushed writes lost) and mounts again.
pub fn crash_and_remount(store: ShardStore<MemDisk>) -> ShardStore<MemDisk> {
    let mut disk = store.into_device();
    disk.crash();
    ShardStore::mount(disk).expect("remount")
}

/// What a crafted one-sector record says (see [`crafted_log_image`]).
pub struct CraftedRecord {
    pub kind: shardstore::layout::RecordKind,
    pub owner: [u8; 32],
    pub key: Key,
}

/// A disk image whose log holds `records` one-sector records with valid checksums and
/// chain links (as anyone who reads the superblock can compute them), record `i` as
/// `record(i)` says, plus 64 free sectors: the crafted disks of the memory and limit tests.
pub fn crafted_log_image(records: u64, record: impl Fn(u64) -> CraftedRecord) -> Vec<u8> {
    use blockdev::SECTOR_SIZE;
    use shardstore::layout::{
        Checkpoint, RecordHeader, Superblock, CHECKPOINT_SECTORS, LOG_START_SECTORS, RECORD_HEADER_SIZE_BYTES,
    };
    let log_sectors = records + 64;
    let sector_count = LOG_START_SECTORS + log_sectors;
    let superblock = Superblock {
        node_id: [1; 32],
        disk_id: [2; 16],
        format_salt: [3; 16],
        sector_count,
        log_start_sectors: LOG_START_SECTORS,
        log_sectors,
        block_sectors: 1,
    };
    let key = superblock.checksum_key();
    let mut image = vec![0u8; sector_count as usize * SECTOR_SIZE];
    image[..SECTOR_SIZE].copy_from_slice(&superblock.encode());
    let checkpoint = Checkpoint { generation: 1, head_offset_sectors: 0, head_seq: 1, head_prev_checksum: [0; 32] };
    let at = CHECKPOINT_SECTORS[1] as usize * SECTOR_SIZE;
    image[at..at + SECTOR_SIZE].copy_from_slice(&checkpoint.encode(&key));
    let mut prev_checksum = [0u8; 32];
    for index in 0..records {
        let CraftedRecord { kind, owner, key: shard_key } = record(index);
        let mut header = RecordHeader {
            kind,
            payload_len_bytes: 0,
            seq: 1 + index,
            record_sectors: 1,
            key: shard_key,
            owner,
            prev_checksum,
            record_checksum: [0; 32],
        };
        header.record_checksum = header.compute_record_checksum(&key);
        prev_checksum = header.record_checksum;
        let at = (LOG_START_SECTORS + index) as usize * SECTOR_SIZE;
        image[at..at + RECORD_HEADER_SIZE_BYTES].copy_from_slice(&header.encode(&key));
    }
    image
}
