//! Owner namespaces: the same bytes stored by two owners are two shards; each owner's
//! usage is rebuilt from record headers at mount and survives compaction; `list_after`
//! pages through one owner's shards; a disk of format version 1 (before owners) is
//! refused untouched.

mod common;

use std::collections::BTreeMap;

use blockdev::mem::MemDisk;
use blockdev::{BlockDevice, SECTOR_SIZE};
use common::{crash_and_remount, fresh, shard, OWNER};
use shardstore::{
    verify_proof, Error, Key, MountError, MultiStore, Owner, OwnerUsage, ShardInfo, ShardStore, NODE_OWNER,
};

const ALICE: Owner = OWNER;
const BOB: Owner = [0x44; 32];

#[test]
fn two_owners_storing_the_same_bytes_hold_two_shards() {
    let mut store = fresh(512);
    let (key, bytes) = shard(1, 3000);
    store.put(&ALICE, key, &bytes).unwrap();
    assert!(!store.contains(&BOB, &key));
    assert_eq!(store.get(&BOB, &key), Err(Error::NotFound));
    assert_eq!(store.delete(&BOB, &key), Err(Error::NotFound));
    assert_eq!(store.prove(&BOB, &key, 0), Err(Error::NotFound));
    assert_eq!(store.info(&BOB, &key), None);
    let used_one = store.stat().used_bytes;
    store.put(&BOB, key, &bytes).unwrap();
    // Bob's put wrote its own record (Alice's does not make it idempotent).
    assert!(store.stat().used_bytes > used_one);
    assert_eq!(store.stat().shard_count, 2);
    assert_eq!(store.stat().live_bytes, 6000);
    assert_eq!(store.owner_count(), 2);
    for owner in [&ALICE, &BOB] {
        assert_eq!(store.owner_usage(owner), OwnerUsage { shards: 1, bytes: 3000 });
        assert_eq!(store.list(owner), vec![key]);
        assert_eq!(store.get(owner, &key).unwrap(), bytes);
    }
    assert_eq!(store.owner_usage(&NODE_OWNER), OwnerUsage::default());

    store.delete(&ALICE, &key).unwrap();
    assert_eq!(store.get(&ALICE, &key), Err(Error::NotFound));
    assert_eq!(store.get(&BOB, &key).unwrap(), bytes);
    assert_eq!(store.owner_usage(&ALICE), OwnerUsage::default());
    assert_eq!(store.owner_count(), 1);
    assert!(store.list(&ALICE).is_empty());

    // The delete record names Alice only: after a remount Bob's shard is still there.
    let mut store = crash_and_remount(store);
    assert_eq!(store.get(&ALICE, &key), Err(Error::NotFound));
    assert_eq!(store.get(&BOB, &key).unwrap(), bytes);
    assert_eq!(store.owner_usage(&BOB), OwnerUsage { shards: 1, bytes: 3000 });
    assert_eq!(store.owner_count(), 1);
    let info = store.info(&BOB, &key).unwrap();
    let proof = store.prove(&BOB, &key, 7).unwrap();
    assert!(verify_proof(&info.merkle_root, info.len_bytes, 7, &proof));

    // Alice stores it again; Bob deletes his: again independent.
    store.put(&ALICE, key, &bytes).unwrap();
    store.delete(&BOB, &key).unwrap();
    let mut store = crash_and_remount(store);
    assert_eq!(store.get(&ALICE, &key).unwrap(), bytes);
    assert_eq!(store.get(&BOB, &key), Err(Error::NotFound));
    assert_eq!(store.stat().shard_count, 1);
}

#[test]
fn a_corrupt_record_is_one_owners_loss_only() {
    let mut store = fresh(512);
    let (key, bytes) = shard(2, 1500);
    store.put(&ALICE, key, &bytes).unwrap();
    store.put(&BOB, key, &bytes).unwrap();
    // Two records hold the same payload; damage the first (Alice's).
    let image = store.device().durable_image();
    let at = image.windows(64).position(|window| window == &bytes[..64]).unwrap();
    store.device_mut().flip_bits(at as u64 + 100, 1, 0x10);
    assert_eq!(store.get(&ALICE, &key), Err(Error::Corrupt));
    assert_eq!(store.get(&BOB, &key).unwrap(), bytes);
    assert_eq!(store.scrub().unwrap(), vec![(ALICE, key)]);
    // Alice's put repairs her copy.
    store.put(&ALICE, key, &bytes).unwrap();
    assert!(store.scrub().unwrap().is_empty());
    assert_eq!(store.owner_usage(&ALICE), OwnerUsage { shards: 1, bytes: 1500 });
}

/// What the model says each owner holds.
fn expected_usage(model: &BTreeMap<(Owner, Key), Vec<u8>>, owner: &Owner) -> OwnerUsage {
    let held = model.iter().filter(|((holder, _), _)| holder == owner);
    held.fold(OwnerUsage::default(), |sum, (_, bytes)| OwnerUsage {
        shards: sum.shards + 1,
        bytes: sum.bytes + bytes.len() as u64,
    })
}

fn check_owners(store: &mut ShardStore<MemDisk>, model: &BTreeMap<(Owner, Key), Vec<u8>>, owners: &[Owner]) {
    let holding = owners.iter().filter(|owner| expected_usage(model, owner).shards > 0).count();
    assert_eq!(store.owner_count(), holding);
    for owner in owners {
        assert_eq!(store.owner_usage(owner), expected_usage(model, owner), "owner {:?}", owner[0]);
        let keys: Vec<Key> = model.keys().filter(|(holder, _)| holder == owner).map(|(_, key)| *key).collect();
        assert_eq!(store.list(owner), keys);
    }
    for ((owner, key), bytes) in model {
        assert_eq!(&store.get(owner, key).unwrap(), bytes);
    }
}

#[test]
fn owner_usage_survives_remount_and_compaction() {
    // A small log, so that puts and deletes go round it many times and compaction
    // copies live shards (with their owners) again and again.
    let owners: Vec<Owner> = (1..=5u8).map(|n| [n; 32]).collect();
    let mut store = fresh(160);
    let mut model: BTreeMap<(Owner, Key), Vec<u8>> = BTreeMap::new();
    for round in 0..300u64 {
        // Few distinct contents, so owners often hold the same bytes.
        let (key, bytes) = shard(round % 7, 200 + (round % 7) as usize * 300);
        let owner = owners[(round * 3 % 5) as usize];
        store.put(&owner, key, &bytes).unwrap();
        model.insert((owner, key), bytes);
        if model.len() > 6 {
            let victim = *model.keys().nth((round as usize * 11) % model.len()).unwrap();
            store.delete(&victim.0, &victim.1).unwrap();
            model.remove(&victim);
        }
        if round % 50 == 49 {
            store = crash_and_remount(store);
            check_owners(&mut store, &model, &owners);
        }
    }
    assert!(store.device().stats().written_sectors > 5 * 160, "the log went round only a few times");
    check_owners(&mut store, &model, &owners);
    let before = store.stat();
    store.compact(10_000).unwrap();
    assert!(store.stat().used_bytes <= before.used_bytes);
    assert_eq!(store.corrupt_dropped_count(), 0);
    check_owners(&mut store, &model, &owners);
    let mut store = crash_and_remount(store);
    check_owners(&mut store, &model, &owners);
}

#[test]
fn list_after_pages_through_one_owner() {
    let mut store = fresh(4096);
    for seed in 0..50 {
        let (key, bytes) = shard(seed, 100 + seed as usize);
        store.put(&ALICE, key, &bytes).unwrap();
        // Bob holds every third of Alice's shards and some of his own.
        if seed % 3 == 0 {
            store.put(&BOB, key, &bytes).unwrap();
        }
        let (key, bytes) = shard(1000 + seed, 80);
        store.put(&BOB, key, &bytes).unwrap();
    }
    let all = store.list(&ALICE);
    assert_eq!(all.len(), 50);
    assert!(all.windows(2).all(|pair| pair[0] < pair[1]), "list is not sorted");
    for page_len in [1, 7, 49, 50, 100] {
        let mut paged: Vec<(Key, ShardInfo)> = Vec::new();
        let mut after: Option<Key> = None;
        for _ in 0..=50 {
            let page = store.list_after(&ALICE, after.as_ref(), page_len);
            assert!(page.len() <= page_len);
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            paged.extend(page);
        }
        let keys: Vec<Key> = paged.iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, all, "pages of {page_len}");
        for (key, info) in &paged {
            assert_eq!(Some(*info), store.info(&ALICE, key));
        }
    }
    // Any key is a bound, held or not, and the ends are empty, not errors.
    let middle = all[20];
    let mut just_below = middle;
    just_below[31] = just_below[31].wrapping_sub(1);
    if !all.contains(&just_below) && just_below < middle {
        assert_eq!(store.list_after(&ALICE, Some(&just_below), 1)[0].0, middle);
    }
    assert_eq!(store.list_after(&ALICE, Some(&middle), 1)[0].0, all[21]);
    assert!(store.list_after(&ALICE, Some(&[0xff; 32]), 10).is_empty());
    assert!(store.list_after(&ALICE, Some(&all[49]), 10).is_empty());
    assert!(store.list_after(&ALICE, None, 0).is_empty());
    assert_eq!(store.list_after(&ALICE, Some(&[0; 32]), 1)[0].0, all[0]);
    assert!(store.list_after(&NODE_OWNER, None, 10).is_empty());
    assert_eq!(store.list_after(&BOB, None, usize::MAX).len(), 50 + 17);

    // Over several disks: one sorted page without duplicates.
    let mut multi = MultiStore::new((0..3).map(|_| fresh(2048)).collect());
    for seed in 0..30 {
        let (key, bytes) = shard(seed, 300);
        multi.put(&ALICE, key, &bytes).unwrap();
        multi.put(&BOB, key, &bytes).unwrap();
    }
    let all = multi.list(&ALICE);
    assert_eq!(all.len(), 30);
    let mut paged = Vec::new();
    let mut after: Option<Key> = None;
    for _ in 0..=30 {
        let page = multi.list_after(&ALICE, after.as_ref(), 4);
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        paged.extend(page.into_iter().map(|(key, _)| key));
    }
    assert_eq!(paged, all);
    assert_eq!(multi.owner_usage(&ALICE), OwnerUsage { shards: 30, bytes: 9000 });
    assert_eq!(multi.owner_count(), 2);
    assert!(multi.contains(&BOB, &all[3]));
    multi.delete(&BOB, &all[3]).unwrap();
    assert!(!multi.contains(&BOB, &all[3]));
    assert_eq!(multi.info(&ALICE, &all[3]).map(|info| info.len_bytes), Some(300));
    assert_eq!(multi.owner_usage(&BOB), OwnerUsage { shards: 29, bytes: 8700 });
}

/// Rewrites a store's superblock as format version `version` wrote it (same layout,
/// blake3 over bytes 0..112).
fn as_version(image: &mut [u8], version: u32) {
    image[8..12].copy_from_slice(&version.to_le_bytes());
    let checksum = blake3::hash(&image[..112]);
    image[112..144].copy_from_slice(checksum.as_bytes());
}

/// Version 1 (before owners) and version 2 (before the one hashing pass) disks.
#[test]
fn version_1_and_2_disks_are_refused_untouched() {
    for version in [1, 2] {
        let mut store = fresh(256);
        let (key, bytes) = shard(3, 900);
        store.put(&NODE_OWNER, key, &bytes).unwrap();
        let mut image = store.into_device().durable_image().to_vec();
        as_version(&mut image, version);
        let disk = MemDisk::from_image(image.clone()).unwrap();
        let (error, disk) = ShardStore::try_mount(disk).err().unwrap();
        assert_eq!(error, MountError::UnsupportedVersion(version));
        assert_eq!(error.to_string(), format!("unsupported shard-store format version {version}"));
        assert_eq!(disk.stats().write_count, 0);
        assert_eq!(disk.durable_image(), &image[..]);
        let (multi, refused) = MultiStore::mount_all(vec![disk]);
        assert_eq!(multi.disk_count(), 0);
        assert_eq!(refused[0].error, MountError::UnsupportedVersion(version));
        // Reformatting (the kernel's `gridos.format=NAME`) makes it an empty current store.
        let disk = MemDisk::from_image(image).unwrap();
        let store = ShardStore::format(disk, common::NODE_ID, common::DISK_ID).unwrap();
        let store = crash_and_remount(store);
        assert_eq!(store.stat().shard_count, 0);
        assert_eq!(store.device().durable_image()[8], shardstore::layout::FORMAT_VERSION as u8);
        assert_eq!(store.device().sector_count() * SECTOR_SIZE as u64, 256 * 512);
    }
}
