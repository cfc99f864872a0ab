//! The heap a mounted store keeps, measured with a counting allocator: the figures the
//! crate docs and `RECORDS_MAX` quote (bytes per record, per live shard, per owner)
//! must hold for a log of many shards, each of its own owner (the worst case for the
//! per-owner usage map).

mod common;

use std::alloc::System;

use blockdev::mem::MemDisk;
use common::{crafted_log_image, CraftedRecord};
use shardstore::layout::RecordKind;
use shardstore::ShardStore;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// What the docs promise, in bytes of heap: a log entry (128 bytes; up to twice that
/// while the log's ring buffer has just doubled its capacity), an index entry with its
/// share of B-tree nodes, and a per-owner usage entry.
const RECORD_BYTES_MAX: isize = 130;
const SHARD_BYTES_MAX: isize = 200;
const OWNER_BYTES_MAX: isize = 80;

/// A log of `shards` one-sector puts of the empty shard, by `owners` owners in turn.
fn image_of_owners(shards: u64, owners: u64) -> Vec<u8> {
    crafted_log_image(shards, |index| {
        let mut owner = [0u8; 32];
        owner[..8].copy_from_slice(&blake3::hash(&(index % owners).to_le_bytes()).as_bytes()[..8]);
        // One owner holds the empty shard once: its other shards are other (forged) keys.
        // The last record is the empty shard's (mount checks the last payload against its key).
        let key = if owners == shards || index + 1 == shards {
            *blake3::hash(&[]).as_bytes()
        } else {
            *blake3::hash(&index.to_le_bytes()).as_bytes()
        };
        CraftedRecord { kind: RecordKind::Put, owner, key }
    })
}

/// Heap bytes a store mounted from `image` keeps, per shard.
fn heap_per_shard(image: Vec<u8>, shards: u64, owners: usize) -> isize {
    let disk = MemDisk::from_image(image).unwrap();
    let region = Region::new(GLOBAL);
    let store = ShardStore::mount(disk).unwrap();
    let change = region.change();
    let kept = change.bytes_allocated as isize - change.bytes_deallocated as isize;
    assert_eq!(store.stat().shard_count, shards);
    assert_eq!(store.owner_count(), owners);
    drop(store);
    kept / shards as isize
}

#[test]
fn a_mounted_store_keeps_the_documented_heap_per_record_shard_and_owner() {
    // 2^16 records fill the log's ring buffer exactly (as `RECORDS_MAX`, a power of
    // two, does); one more doubles it, the worst case per record.
    for (shards, ring_factor) in [(1u64 << 16, 1), ((1 << 16) + 1, 2)] {
        let one_owner = heap_per_shard(image_of_owners(shards, 1), shards, 1);
        let many_owners = heap_per_shard(image_of_owners(shards, shards), shards, shards as usize);
        let per_owner = many_owners - one_owner;
        println!(
            "mounted {shards} shards: {one_owner} bytes of heap per record and shard with one owner, {many_owners} with an owner each ({per_owner} per owner)"
        );
        assert!(one_owner <= ring_factor * RECORD_BYTES_MAX + SHARD_BYTES_MAX, "{one_owner} bytes per record and shard");
        assert!(per_owner <= OWNER_BYTES_MAX, "{per_owner} bytes per owner");
    }
}
