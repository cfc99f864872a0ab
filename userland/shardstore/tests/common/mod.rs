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
