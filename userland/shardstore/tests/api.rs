//! Unit tests of each public operation and its error paths, on a `MemDisk`.

mod common;

use common::OWNER;

use blockdev::mem::MemDisk;
use blockdev::{BlockDevice, BlockError, SECTOR_SIZE};
use common::{crash_and_remount, fresh, shard, DISK_ID, NODE_ID};
use shardstore::{verify_proof, Error, FormatError, FormatOptions, MountError, MultiStore, ShardStore};

#[test]
fn format_then_mount_is_empty() {
    let store = fresh(256);
    assert_eq!(store.list(&OWNER), Vec::<[u8; 32]>::new());
    let stat = store.stat();
    assert_eq!(stat.shard_count, 0);
    assert_eq!(stat.used_bytes, 0);
    assert_eq!(stat.capacity_bytes, 232 * SECTOR_SIZE as u64);
    let store = crash_and_remount(store);
    assert_eq!(store.node_id(), NODE_ID);
    assert_eq!(store.disk_id(), DISK_ID);
    assert_eq!(store.stat().shard_count, 0);
}

#[test]
fn format_refuses_tiny_device() {
    let result = ShardStore::format(MemDisk::new(10), NODE_ID, DISK_ID);
    assert_eq!(result.err(), Some(FormatError::DeviceTooSmall));
    // The default 4 KiB blocks need 16 of them in the log.
    assert_eq!(ShardStore::format(MemDisk::new(24 + 127), NODE_ID, DISK_ID).err(), Some(FormatError::DeviceTooSmall));
    assert!(ShardStore::format(MemDisk::new(24 + 128), NODE_ID, DISK_ID).is_ok());
    let options = FormatOptions { block_sectors: 3, ..FormatOptions::default() };
    let result = ShardStore::format_with(MemDisk::new(1024), NODE_ID, DISK_ID, options);
    assert_eq!(result.err(), Some(FormatError::InvalidOptions));
    let mut disk = MemDisk::new(1024);
    disk.set_failed(true);
    let result = ShardStore::format(disk, NODE_ID, DISK_ID);
    assert_eq!(result.err(), Some(FormatError::Device(BlockError::Failed)));
}

#[test]
fn put_get_delete_round_trip() {
    let mut store = fresh(512);
    let (key_a, bytes_a) = shard(1, 1000);
    let (key_b, bytes_b) = shard(2, 0);
    let (key_c, bytes_c) = shard(3, 5000);
    store.put(&OWNER, key_a, &bytes_a).unwrap();
    store.put(&OWNER, key_b, &bytes_b).unwrap();
    store.put(&OWNER, key_c, &bytes_c).unwrap();
    assert_eq!(store.get(&OWNER, &key_a).unwrap(), bytes_a);
    assert_eq!(store.get(&OWNER, &key_b).unwrap(), bytes_b);
    assert_eq!(store.get(&OWNER, &key_c).unwrap(), bytes_c);
    let mut keys = vec![key_a, key_b, key_c];
    keys.sort();
    assert_eq!(store.list(&OWNER), keys);
    let stat = store.stat();
    assert_eq!(stat.shard_count, 3);
    assert_eq!(stat.live_bytes, 6000);
    assert!(stat.used_bytes >= 6000);
    assert_eq!(stat.used_bytes + stat.free_bytes, stat.capacity_bytes - SECTOR_SIZE as u64);
    assert_eq!(store.info(&OWNER, &key_c).unwrap().len_bytes, 5000);

    store.delete(&OWNER, &key_a).unwrap();
    assert_eq!(store.get(&OWNER, &key_a), Err(Error::NotFound));
    assert_eq!(store.delete(&OWNER, &key_a), Err(Error::NotFound));
    assert_eq!(store.stat().shard_count, 2);

    let mut store = crash_and_remount(store);
    assert_eq!(store.get(&OWNER, &key_a), Err(Error::NotFound));
    assert_eq!(store.get(&OWNER, &key_b).unwrap(), bytes_b);
    assert_eq!(store.get(&OWNER, &key_c).unwrap(), bytes_c);
    assert_eq!(store.stat().live_bytes, 5000);
    assert!(!store.mount_report().torn_tail_dropped);
}

#[test]
fn put_rejects_wrong_key_and_large_shards() {
    let mut store = fresh(256);
    let (key, bytes) = shard(1, 100);
    assert_eq!(store.put(&OWNER, [0; 32], &bytes), Err(Error::KeyMismatch));
    let mut other = bytes.clone();
    other[0] ^= 1;
    assert_eq!(store.put(&OWNER, key, &other), Err(Error::KeyMismatch));
    // 232 log sectors: records up to 29 sectors.
    let (big_key, big) = shard(2, 31 * SECTOR_SIZE);
    assert_eq!(store.put(&OWNER, big_key, &big), Err(Error::TooLarge));
    assert_eq!(store.stat().used_bytes, 0);
}

#[test]
fn put_is_idempotent() {
    let mut store = fresh(256);
    let (key, bytes) = shard(1, 700);
    store.put(&OWNER, key, &bytes).unwrap();
    let used = store.stat().used_bytes;
    store.put(&OWNER, key, &bytes).unwrap();
    assert_eq!(store.stat().used_bytes, used);
    assert_eq!(store.stat().shard_count, 1);
}

#[test]
fn operations_fail_cleanly_on_device_errors() {
    let mut store = fresh(256);
    let (key, bytes) = shard(1, 700);
    store.put(&OWNER, key, &bytes).unwrap();
    store.device_mut().set_failed(true);
    let (key2, bytes2) = shard(2, 700);
    assert_eq!(store.put(&OWNER, key2, &bytes2), Err(Error::Device(BlockError::Failed)));
    assert_eq!(store.get(&OWNER, &key), Err(Error::Device(BlockError::Failed)));
    assert_eq!(store.delete(&OWNER, &key), Err(Error::Device(BlockError::Failed)));
    store.device_mut().set_failed(false);
    // Nothing advanced: the store goes on where it was.
    assert_eq!(store.get(&OWNER, &key).unwrap(), bytes);
    store.put(&OWNER, key2, &bytes2).unwrap();
    let mut store = crash_and_remount(store);
    assert_eq!(store.get(&OWNER, &key).unwrap(), bytes);
    assert_eq!(store.get(&OWNER, &key2).unwrap(), bytes2);
}

#[test]
fn mount_refuses_garbage_and_never_writes() {
    let mut image = vec![0u8; 128 * SECTOR_SIZE];
    for (index, byte) in image.iter_mut().enumerate() {
        *byte = (index * 31 % 251) as u8;
    }
    let disk = MemDisk::from_image(image.clone()).unwrap();
    let (error, disk) = ShardStore::try_mount(disk).err().unwrap();
    assert_eq!(error, MountError::NotFormatted);
    assert_eq!(disk.stats().write_count, 0);
    assert_eq!(disk.durable_image(), &image[..]);

    let blank = MemDisk::new(64);
    assert_eq!(ShardStore::mount(blank).err(), Some(MountError::NotFormatted));
    let mut failed = MemDisk::new(64);
    failed.set_failed(true);
    assert_eq!(ShardStore::mount(failed).err(), Some(MountError::Device(BlockError::Failed)));
}

#[test]
fn mount_refuses_bad_superblock_version_and_size() {
    let store = fresh(128);
    let image = store.into_device().durable_image().to_vec();

    let mut bad = image.clone();
    bad[30] ^= 4; // inside the node id: checksum fails
    assert_eq!(ShardStore::mount(MemDisk::from_image(bad).unwrap()).err(), Some(MountError::BadSuperblock));

    let mut newer = image.clone();
    newer[8] = 4;
    assert_eq!(
        ShardStore::mount(MemDisk::from_image(newer).unwrap()).err(),
        Some(MountError::UnsupportedVersion(4))
    );
    // Version 2 (payload hashed twice, a separate Merkle tree) is refused untouched.
    let mut older = image.clone();
    older[8] = 2;
    let (error, disk) = ShardStore::try_mount(MemDisk::from_image(older).unwrap()).unwrap_err();
    assert_eq!(error, MountError::UnsupportedVersion(2));
    assert_eq!(disk.stats().write_count, 0);

    let shorter = image[..100 * SECTOR_SIZE].to_vec();
    assert_eq!(ShardStore::mount(MemDisk::from_image(shorter).unwrap()).err(), Some(MountError::DeviceTooSmall));

    let mut no_checkpoint = image.clone();
    no_checkpoint[8 * SECTOR_SIZE..24 * SECTOR_SIZE].fill(0);
    assert_eq!(
        ShardStore::mount(MemDisk::from_image(no_checkpoint).unwrap()).err(),
        Some(MountError::BadCheckpoint)
    );
}

#[test]
fn reformat_invalidates_old_records() {
    let mut store = fresh(256);
    let (key, bytes) = shard(1, 300);
    store.put(&OWNER, key, &bytes).unwrap();
    let disk = store.into_device();
    let store = ShardStore::format(disk, NODE_ID, DISK_ID).unwrap();
    let store = crash_and_remount(store);
    assert_eq!(store.stat().shard_count, 0);
}

#[test]
fn reformat_after_superblock_wipe_invalidates_old_records() {
    let mut store = fresh(256);
    let (key, bytes) = shard(1, 300);
    store.put(&OWNER, key, &bytes).unwrap();
    let (key2, bytes2) = shard(2, 300);
    store.put(&OWNER, key2, &bytes2).unwrap();
    let mut disk = store.into_device();
    // Wipe the superblock and checkpoints: the first format's salt inputs come back.
    disk.write(0, &[0u8; 24 * SECTOR_SIZE]).unwrap();
    disk.flush().unwrap();
    let mut store = ShardStore::format(disk, NODE_ID, DISK_ID).unwrap();
    // The same first record as before must not pull the old second one back in.
    store.put(&OWNER, key, &bytes).unwrap();
    let mut store = crash_and_remount(store);
    assert_eq!(store.list(&OWNER), vec![key]);
    assert_eq!(store.get(&OWNER, &key2), Err(Error::NotFound));
    let options = FormatOptions { entropy: [9; 16], block_sectors: 1 };
    let store = ShardStore::format_with(store.into_device(), NODE_ID, DISK_ID, options).unwrap();
    assert_eq!(crash_and_remount(store).stat().shard_count, 0);
}

#[test]
fn prove_and_verify() {
    let mut store = fresh(1024);
    let (key, bytes) = shard(9, 5 * 4096 + 100);
    store.put(&OWNER, key, &bytes).unwrap();
    let info = store.info(&OWNER, &key).unwrap();
    assert_eq!(info.merkle_root, shardstore::merkle_root(&bytes));
    for challenge in [0u64, 1, 5, 6, 7, u64::MAX] {
        let proof = store.prove(&OWNER, &key, challenge).unwrap();
        assert_eq!(proof.chunk_index, challenge % 6);
        assert!(verify_proof(&info.merkle_root, info.len_bytes, challenge, &proof));
        assert!(!verify_proof(&info.merkle_root, info.len_bytes, challenge.wrapping_add(1), &proof));
    }
    assert_eq!(store.prove(&OWNER, &[7; 32], 0), Err(Error::NotFound));
    // The root survives a remount.
    let mut store = crash_and_remount(store);
    let proof = store.prove(&OWNER, &key, 3).unwrap();
    assert!(verify_proof(&store.info(&OWNER, &key).unwrap().merkle_root, info.len_bytes, 3, &proof));
}

#[test]
fn compaction_reclaims_deleted_space_across_many_laps() {
    let mut store = fresh(128);
    let mut live = Vec::new();
    for round in 0..200u64 {
        let (key, bytes) = shard(round, 300 + (round as usize * 37) % 2000);
        store.put(&OWNER, key, &bytes).unwrap();
        live.push((key, bytes));
        if live.len() > 4 {
            let (old_key, _) = live.remove((round as usize * 7) % live.len());
            store.delete(&OWNER, &old_key).unwrap();
        }
    }
    for (key, bytes) in &live {
        assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
    }
    let mut store = crash_and_remount(store);
    assert_eq!(store.stat().shard_count, live.len() as u64);
    for (key, bytes) in &live {
        assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
    }
    let freed = store.compact(1000).unwrap();
    // Four live records of at most 2,300 bytes: a header sector and five payload sectors each.
    assert!(store.stat().used_bytes <= 24 * SECTOR_SIZE as u64, "freed {freed}");
    let mut store = crash_and_remount(store);
    for (key, bytes) in &live {
        assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
    }
}

#[test]
fn full_store_reports_no_space_and_recovers_after_delete() {
    let mut store = fresh(128);
    let mut stored = Vec::new();
    let mut seed = 0;
    loop {
        seed += 1;
        let (key, bytes) = shard(seed, 1500);
        match store.put(&OWNER, key, &bytes) {
            Ok(()) => stored.push(key),
            Err(Error::NoSpace) => break,
            Err(error) => panic!("unexpected {error:?}"),
        }
        assert!(seed < 1000);
    }
    assert!(stored.len() >= 10, "stored {}", stored.len());
    for key in &stored[..3] {
        store.delete(&OWNER, key).unwrap();
    }
    let (key, bytes) = shard(seed, 1500);
    store.put(&OWNER, key, &bytes).unwrap();
    let mut store = crash_and_remount(store);
    assert_eq!(store.get(&OWNER, &key).unwrap(), bytes);
}

#[test]
fn multistore_places_by_free_space_and_survives_a_failed_disk() {
    let stores: Vec<_> = (0..3).map(|_| fresh(256)).collect();
    let mut multi = MultiStore::new(stores);
    let mut placed = Vec::new();
    for seed in 0..12 {
        let (key, bytes) = shard(seed, 900);
        let disk = multi.put(&OWNER, key, &bytes).unwrap();
        placed.push((key, bytes, disk));
    }
    for disk in 0..3 {
        assert!(placed.iter().any(|(_, _, placed_disk)| *placed_disk == disk));
    }
    assert_eq!(multi.list(&OWNER).len(), 12);
    multi.store_mut(1).unwrap().device_mut().set_failed(true);
    for (key, bytes, disk) in &placed {
        match multi.get(&OWNER, key) {
            Ok(read) => assert_eq!(&read, bytes),
            Err(error) => {
                assert_eq!(*disk, 1);
                assert!(matches!(error, Error::Device(_) | Error::NotFound));
            }
        }
    }
    assert_eq!(multi.failed_disks(), vec![1]);
    // New shards go to the healthy disks.
    for seed in 100..106 {
        let (key, bytes) = shard(seed, 900);
        let disk = multi.put(&OWNER, key, &bytes).unwrap();
        assert_ne!(disk, 1);
        assert_eq!(multi.get(&OWNER, &key).unwrap(), bytes);
        let proof = multi.prove(&OWNER, &key, seed).unwrap();
        assert!(verify_proof(&shardstore::merkle_root(&bytes), 900, seed, &proof));
    }
    let (key, _, _) = placed.iter().find(|(_, _, disk)| *disk != 1).unwrap();
    multi.delete(&OWNER, key).unwrap();
    assert_eq!(multi.get(&OWNER, key), Err(Error::NotFound));
    assert!(multi.stat().shard_count >= 12);
    assert_eq!(multi.disk_count(), 3);
    assert!(multi.store(0).unwrap().device().sector_count() == 256);
}

#[test]
fn multistore_mount_all_skips_refused_disks() {
    let mut store = fresh(256);
    let (key, bytes) = shard(5, 800);
    store.put(&OWNER, key, &bytes).unwrap();
    let good = store.into_device();
    let blank = MemDisk::new(256);
    let mut dead = MemDisk::new(256);
    dead.set_failed(true);
    let (mut multi, refused) = MultiStore::mount_all(vec![blank, good, dead]);
    assert_eq!(refused.len(), 2);
    assert_eq!((refused[0].index, refused[0].error), (0, MountError::NotFormatted));
    assert_eq!((refused[1].index, refused[1].error), (2, MountError::Device(BlockError::Failed)));
    assert_eq!(refused[0].device.stats().write_count, 0);
    assert_eq!(multi.disk_count(), 1);
    assert_eq!(multi.get(&OWNER, &key).unwrap(), bytes);
}

#[test]
fn block_aligned_store_round_trip() {
    let mut store = common::fresh_with_blocks(24 + 512, 8);
    let mut shards = Vec::new();
    for seed in 0..40 {
        let (key, bytes) = shard(seed, 100 + (seed as usize * 1100) % 9000);
        store.put(&OWNER, key, &bytes).unwrap();
        shards.push((key, bytes));
        if seed % 2 == 1 {
            let (old, _) = shards.remove(0);
            store.delete(&OWNER, &old).unwrap();
        }
    }
    assert_eq!(store.stat().used_bytes % 4096, 0);
    let mut store = crash_and_remount(store);
    for (key, bytes) in &shards {
        assert_eq!(&store.get(&OWNER, key).unwrap(), bytes);
    }
    // Every write is whole 4 KiB blocks at 4 KiB offsets.
    assert_eq!(store.device().stats().written_sectors % 8, 0);
}
