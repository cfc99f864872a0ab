//! Bit rot: flipped bits in a record's payload or header, and random flips anywhere in
//! the log. A damaged record must read as `Corrupt` or be gone, never as wrong bytes,
//! and the rest of the disk must stay readable and writable.

mod common;

use common::OWNER;

use blockdev::mem::MemDisk;
use common::{crash_and_remount, fresh, shard};
use proptest::prelude::*;
use shardstore::{Error, Key, ShardStore};

/// From a record's first byte (its header) to its payload.
const HEADER_SIZE_BYTES: u64 = shardstore::layout::RECORD_PAYLOAD_OFFSET_BYTES as u64;

/// Byte offset of a shard's payload in the disk image (its bytes are unique).
fn payload_offset(disk: &MemDisk, bytes: &[u8]) -> u64 {
    let needle = &bytes[..64];
    disk.durable_image().windows(needle.len()).position(|window| window == needle).expect("payload on disk") as u64
}

fn store_with(count: u64, len_bytes: usize) -> (ShardStore<MemDisk>, Vec<(Key, Vec<u8>)>) {
    let mut store = fresh(512);
    let shards: Vec<_> = (0..count).map(|seed| shard(seed, len_bytes)).collect();
    for (key, bytes) in &shards {
        store.put(&OWNER, *key, bytes).unwrap();
    }
    (store, shards)
}

#[test]
fn flipped_payload_reads_corrupt_and_others_are_fine() {
    let (mut store, shards) = store_with(5, 1500);
    let offset = payload_offset(store.device(), &shards[2].1);
    store.device_mut().flip_bits(offset + 700, 1, 0x08);
    for (index, (key, bytes)) in shards.iter().enumerate() {
        if index == 2 {
            assert_eq!(store.get(&OWNER, key), Err(Error::Corrupt));
            assert_eq!(store.prove(&OWNER, key, 0), Err(Error::Corrupt));
        } else {
            assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
        }
    }
    let mut store = crash_and_remount(store);
    assert_eq!(store.get(&OWNER, &shards[2].0), Err(Error::Corrupt));
    assert_eq!(store.scrub().unwrap(), vec![(OWNER, shards[2].0)]);
    // Storing the shard again repairs it.
    store.put(&OWNER, shards[2].0, &shards[2].1).unwrap();
    assert_eq!(store.get(&OWNER, &shards[2].0).unwrap(), shards[2].1);
    assert!(store.scrub().unwrap().is_empty());
    let mut store = crash_and_remount(store);
    for (key, bytes) in &shards {
        assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
    }
}

#[test]
fn flipped_header_in_the_middle_loses_only_that_shard() {
    let (store, shards) = store_with(5, 1500);
    let mut disk = store.into_device();
    let offset = payload_offset(&disk, &shards[1].1);
    disk.flip_bits(offset - HEADER_SIZE_BYTES + 20, 1, 0x01); // the sequence number
    let mut store = ShardStore::mount(disk).unwrap();
    assert_eq!(store.mount_report().lost_records, 1);
    assert_eq!(store.get(&OWNER, &shards[1].0), Err(Error::NotFound));
    for (index, (key, bytes)) in shards.iter().enumerate() {
        if index != 1 {
            assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
        }
    }
    // New writes land after the last record, not over the ones behind the damage.
    let (key, bytes) = shard(99, 1500);
    store.put(&OWNER, key, &bytes).unwrap();
    let mut store = crash_and_remount(store);
    assert_eq!(store.get(&OWNER, &key).unwrap(), bytes);
    for (key, bytes) in shards.iter().skip(2) {
        assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
    }
}

#[test]
fn flipped_last_record_is_taken_for_a_torn_write() {
    let (store, shards) = store_with(3, 1500);
    let mut disk = store.into_device();
    let offset = payload_offset(&disk, &shards[2].1);
    disk.flip_bits(offset + 10, 1, 0x80);
    let mut store = ShardStore::mount(disk).unwrap();
    assert!(store.mount_report().torn_tail_dropped);
    assert_eq!(store.get(&OWNER, &shards[2].0), Err(Error::NotFound));
    assert_eq!(store.get(&OWNER, &shards[0].0).unwrap(), shards[0].1);
    store.put(&OWNER, shards[2].0, &shards[2].1).unwrap();
    assert_eq!(store.get(&OWNER, &shards[2].0).unwrap(), shards[2].1);
}

#[test]
fn compaction_drops_a_corrupt_live_shard_and_keeps_the_rest() {
    let (mut store, shards) = store_with(4, 1500);
    let offset = payload_offset(store.device(), &shards[0].1);
    store.device_mut().flip_bits(offset, 4, 0xff);
    store.compact(100).unwrap();
    assert_eq!(store.corrupt_dropped_count(), 1);
    assert_eq!(store.get(&OWNER, &shards[0].0), Err(Error::NotFound));
    let mut store = crash_and_remount(store);
    for (key, bytes) in shards.iter().skip(1) {
        assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random flips in the log region: reads give the right bytes, `Corrupt` or
    /// `NotFound`, never other bytes; after more writes, what was readable still is.
    #[test]
    fn random_flips_never_return_wrong_bytes(
        flips in prop::collection::vec((0u64..120 * 512, 1u64..40, 1u8..=255), 1..4),
        extra in 0u64..6,
    ) {
        let mut store = fresh(128);
        let shards: Vec<_> = (0..8).map(|seed| shard(seed, 700 + seed as usize * 300)).collect();
        for (key, bytes) in &shards {
            store.put(&OWNER, *key, bytes).unwrap();
        }
        let mut disk = store.into_device();
        for (offset, len, mask) in &flips {
            disk.flip_bits(3 * 512 + offset, *len, *mask);
        }
        let Ok(mut store) = ShardStore::mount(disk) else { return Ok(()) };
        let mut readable = Vec::new();
        for (key, bytes) in &shards {
            match store.get(&OWNER, key) {
                Ok(read) => {
                    prop_assert_eq!(&read, bytes);
                    readable.push((*key, bytes.clone()));
                }
                Err(error) => prop_assert!(matches!(error, Error::Corrupt | Error::NotFound)),
            }
        }
        for seed in 100..100 + extra {
            let (key, bytes) = shard(seed, 900);
            match store.put(&OWNER, key, &bytes) {
                Ok(()) | Err(Error::NoSpace) => {}
                Err(error) => prop_assert!(false, "put failed: {:?}", error),
            }
        }
        let mut store = ShardStore::mount(store.into_device()).unwrap();
        for (key, bytes) in &readable {
            // Compaction may have dropped a shard only if it was corrupt; these were not.
            prop_assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
        }
    }
}
