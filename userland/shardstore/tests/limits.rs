//! The RAM a store keeps is bounded by its record limit (`RECORDS_MAX`): a disk whose
//! log holds more records is refused at mount with a typed error and left untouched,
//! and a store never writes more records than it would mount.

mod common;

use common::OWNER;

use blockdev::mem::MemDisk;
use blockdev::SECTOR_SIZE;
use common::{fresh, shard};
use common::{crafted_log_image, CraftedRecord};
use shardstore::layout::{RecordKind, LOG_START_SECTORS};
use shardstore::{Error, MountError, ShardStore, RECORDS_MAX};

/// Issue 10 item 8: a crafted disk of the smallest records (one-sector deletes, a
/// forged superblock with one-sector blocks) just past `RECORDS_MAX`. Mount kept about
/// 100 bytes of RAM per record with no bound; now it refuses the disk, typed, and
/// hands it back unwritten. (The disk is 256 MiB of headers with valid checksums, as
/// anyone who reads the superblock can compute them.)
#[test]
fn a_crafted_disk_of_tiny_records_past_records_max_is_refused() {
    let records = RECORDS_MAX as u64 + 1;
    let image = crafted_log_image(records, |_| CraftedRecord {
        kind: RecordKind::Delete,
        owner: OWNER,
        key: [9; 32],
    });
    let disk = MemDisk::from_image(image).unwrap();
    let (error, disk) = ShardStore::try_mount(disk).expect_err("a disk past RECORDS_MAX was mounted");
    assert_eq!(error, MountError::TooManyRecords { records_max: RECORDS_MAX as u64 });
    assert!(error.to_string().contains("more than 524288 records"), "{error}");
    assert_eq!(disk.stats().write_count, 0);
    // One record fewer is an honest store's worst case: it mounts.
    let mut image = disk.durable_image().to_vec();
    let last = (LOG_START_SECTORS + records - 1) as usize * SECTOR_SIZE;
    image[last..last + SECTOR_SIZE].fill(0);
    let store = ShardStore::mount(MemDisk::from_image(image).unwrap()).unwrap();
    assert_eq!(store.record_count(), RECORDS_MAX);
}

/// A lowered limit is enforced on both sides: the store stops taking puts before the
/// limit (deletes still work, then puts again after compaction), so what it wrote
/// always mounts with the same limit; a stricter limit refuses the same disk.
#[test]
fn a_store_never_writes_more_records_than_it_would_mount() {
    const LIMIT: usize = 150;
    let mut store = fresh(4096);
    store.limit_records(LIMIT);
    let mut keys = Vec::new();
    let refused = loop {
        let (key, bytes) = shard(keys.len() as u64, 40);
        match store.put(&OWNER, key, &bytes) {
            Ok(()) => keys.push(key),
            Err(error) => break error,
        }
        assert!(keys.len() <= LIMIT, "puts went past the record limit");
    };
    assert_eq!(refused, Error::NoSpace);
    assert!(store.record_count() <= LIMIT && store.record_count() + 64 >= LIMIT - 2, "{}", store.record_count());
    // Deletes still go in (the reserve), compaction then makes room for puts again.
    for key in &keys[..40] {
        store.delete(&OWNER, key).unwrap();
        assert!(store.record_count() <= LIMIT);
    }
    let (key, bytes) = shard(10_000, 40);
    store.put(&OWNER, key, &bytes).unwrap();
    assert!(store.record_count() <= LIMIT);
    let disk = store.into_device();
    let store = ShardStore::try_mount_with_records_max(disk, LIMIT).map_err(|(e, _)| e).unwrap();
    assert_eq!(store.list(&OWNER).len(), keys.len() - 40 + 1);
    let count = store.record_count();
    let disk = store.into_device();
    let (error, _) = ShardStore::try_mount_with_records_max(disk, count - 1).err().unwrap();
    assert_eq!(error, MountError::TooManyRecords { records_max: count as u64 - 1 });
}

/// Found by `fuzz_mount` (mutated images): a log of `LIMIT + 1` records whose last one
/// is torn mounts as `LIMIT` records without a limit, but the limit counts the last
/// record before it is found torn (a store counts the record it writes against the
/// limit too, so no store wrote this log): refused, typed and untouched, and the log
/// in RAM never held more than `LIMIT` entries. Under a limit one higher it mounts.
#[test]
fn the_limit_counts_a_torn_last_record() {
    const LIMIT: usize = 6;
    let mut store = fresh(256);
    let shards: Vec<_> = (0..=LIMIT as u64).map(|seed| shard(seed, 200)).collect();
    for (key, bytes) in &shards {
        store.put(&OWNER, *key, bytes).unwrap();
    }
    let mut disk = store.into_device();
    let last = &shards[LIMIT].1;
    let at = disk.durable_image().windows(64).position(|window| window == &last[..64]).unwrap();
    disk.flip_bits(at as u64 + 10, 1, 0x40);
    let full = ShardStore::mount(disk.clone()).unwrap();
    assert!(full.mount_report().torn_tail_dropped);
    assert_eq!(full.record_count(), LIMIT);
    let writes = disk.stats().write_count;
    let (error, disk) = ShardStore::try_mount_with_records_max(disk, LIMIT).err().unwrap();
    assert_eq!(error, MountError::TooManyRecords { records_max: LIMIT as u64 });
    assert_eq!(disk.stats().write_count, writes);
    let store = ShardStore::try_mount_with_records_max(disk, LIMIT + 1).map_err(|(e, _)| e).unwrap();
    assert_eq!(store.record_count(), LIMIT);
    assert_eq!(store.list(&OWNER).len(), LIMIT);
}
