//! Helpers shared by the integration tests: deterministic shards and fresh stores.
#![allow(dead_code)]

use blockdev::mem::MemDisk;
use shardstore::{Key, ShardStore};

pub const NODE_ID: [u8; 32] = [0x11; 32];
pub const DISK_ID: [u8; 16] = [0x22; 16];

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

/// A freshly formatted store on a zeroed disk of `sector_count` sectors.
pub fn fresh(sector_count: u64) -> ShardStore<MemDisk> {
    ShardStore::format(MemDisk::new(sector_count), NODE_ID, DISK_ID).expect("format")
}

/// Simulates power loss (unflushed writes lost) and mounts again.
pub fn crash_and_remount(store: ShardStore<MemDisk>) -> ShardStore<MemDisk> {
    let mut disk = store.into_device();
    disk.crash();
    ShardStore::mount(disk).expect("remount")
}
