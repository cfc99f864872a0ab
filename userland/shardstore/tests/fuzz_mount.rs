//! Fuzzing the mount path with proptest: random images, random mutations of valid
//! images, and structurally valid but hostile contents (superblocks, checkpoints and
//! record headers with correct checksums and arbitrary fields). Mount must return Ok or
//! an error, never panic; a mounted store must then serve every call without panicking,
//! and any bytes it returns must hash to their key. Every image is also mounted with a
//! small record limit: the store then holds at most that many records, before and
//! after writes, or mount refuses with `TooManyRecords`. Forged records name several
//! owners, and every mounted store's per-owner usage must add up to its index.
//!
//! Cases: 300 per property, or `GRIDOS_FUZZ_CASES=N` for a long run (README "Fuzzing").

mod common;

use common::OWNER;

use blockdev::mem::MemDisk;
use blockdev::SECTOR_SIZE;
use common::{fresh, shard};
use proptest::prelude::*;
use shardstore::layout::{
    align_up, record_sectors_for, Checkpoint, RecordHeader, RecordKind, Superblock, CHECKPOINT_SECTORS,
    LOG_START_SECTORS, RECORD_PAYLOAD_OFFSET_BYTES,
};
use shardstore::{Error, MountError, Owner, OwnerUsage, ShardStore};

/// A small record limit, so forged logs reach it.
const SMALL_RECORDS_MAX: usize = 6;

fn cases() -> u32 {
    std::env::var("GRIDOS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

/// Every owner's usage and listing agree with the store's totals.
fn check_usage(store: &ShardStore<MemDisk>) -> Vec<Owner> {
    let owners: Vec<Owner> = store.owners().copied().collect();
    assert_eq!(owners.len(), store.owner_count());
    let mut total = OwnerUsage::default();
    for owner in &owners {
        let usage = store.owner_usage(owner);
        let listed = store.list_after(owner, None, usize::MAX);
        assert!(usage.shards > 0, "an owner without shards is counted");
        assert_eq!(usage.shards, listed.len() as u64);
        assert_eq!(usage.bytes, listed.iter().map(|(_, info)| info.len_bytes).sum::<u64>());
        total.shards += usage.shards;
        total.bytes += usage.bytes;
    }
    let stat = store.stat();
    assert_eq!((total.shards, total.bytes), (stat.shard_count, stat.live_bytes), "usage does not add up");
    owners
}

/// Exercises a mounted store; panics only on a broken promise.
fn exercise(mut store: ShardStore<MemDisk>) {
    for owner in check_usage(&store) {
        for key in store.list(&owner) {
            match store.get(&owner, &key) {
                Ok(bytes) => assert_eq!(*blake3::hash(&bytes).as_bytes(), key, "bytes do not match their key"),
                Err(error) => assert!(matches!(error, Error::Corrupt | Error::Device(_)), "{error:?}"),
            }
            let _ = store.prove(&owner, &key, 3);
        }
    }
    let _ = store.stat();
    let _ = store.scrub();
    let (key, bytes) = shard(77, 600);
    let _ = store.put(&OWNER, key, &bytes);
    if let Some(first) = store.list(&OWNER).first().copied() {
        let _ = store.delete(&OWNER, &first);
    }
    let _ = store.compact(50);
    check_usage(&store);
    let disk = store.into_device();
    if let Ok(mut store) = ShardStore::mount(disk) {
        for owner in check_usage(&store) {
            for key in store.list(&owner) {
                if let Ok(bytes) = store.get(&owner, &key) {
                    assert_eq!(*blake3::hash(&bytes).as_bytes(), key);
                }
            }
        }
    }
}

fn mount_and_exercise(image: Vec<u8>) {
    let disk = MemDisk::from_image(image.clone()).expect("whole sectors");
    let full = ShardStore::mount(disk);
    let full_records = full.as_ref().map(|store| store.record_count()).ok();
    let full_torn_tail = full.as_ref().is_ok_and(|store| store.mount_report().torn_tail_dropped);
    if let Ok(store) = full {
        exercise(store);
    }
    // The same image under a small record limit.
    let disk = MemDisk::from_image(image).expect("whole sectors");
    match ShardStore::try_mount_with_records_max(disk, SMALL_RECORDS_MAX) {
        Ok(mut store) => {
            assert!(store.record_count() <= SMALL_RECORDS_MAX);
            assert_eq!(Some(store.record_count()), full_records, "the limit changed what mount replays");
            for seed in 0..4 {
                let (key, bytes) = shard(100 + seed, 300);
                let _ = store.put(&OWNER, key, &bytes);
                assert!(store.record_count() <= SMALL_RECORDS_MAX, "a put went past the record limit");
            }
            if let Some(first) = store.list(&OWNER).first().copied() {
                let _ = store.delete(&OWNER, &first);
            }
            let _ = store.compact(50);
            assert!(store.record_count() <= SMALL_RECORDS_MAX);
            let disk = store.into_device();
            if let Ok(again) = ShardStore::try_mount_with_records_max(disk, SMALL_RECORDS_MAX) {
                assert!(again.record_count() <= SMALL_RECORDS_MAX);
            }
        }
        Err((MountError::TooManyRecords { records_max }, disk)) => {
            assert_eq!(records_max, SMALL_RECORDS_MAX as u64);
            // The limit counts the last record before it is found torn (a store never
            // writes past the limit, the record it is writing included).
            let limit_counted = full_records.map(|n| n + usize::from(full_torn_tail));
            assert!(limit_counted.is_some_and(|n| n > SMALL_RECORDS_MAX), "refused a log of {full_records:?} records");
            assert_eq!(disk.stats().write_count, 0, "a refused disk was written");
        }
        Err((error, _)) => assert!(full_records.is_none(), "{error:?} under the small limit only"),
    }
}

/// A valid image with puts, deletes and a wrapped log.
fn valid_image() -> Vec<u8> {
    let mut store = fresh(64);
    for seed in 0..30u64 {
        let (key, bytes) = shard(seed, 200 + (seed as usize * 397) % 1800);
        let _ = store.put(&OWNER, key, &bytes);
        if seed % 3 == 2 {
            let victim = store.list(&OWNER)[seed as usize % store.list(&OWNER).len()];
            store.delete(&OWNER, &victim).unwrap();
        }
    }
    store.into_device().durable_image().to_vec()
}

fn write_sector(image: &mut [u8], sector: u64, bytes: &[u8]) {
    let start = sector as usize * SECTOR_SIZE;
    if start + bytes.len() <= image.len() {
        image[start..start + bytes.len()].copy_from_slice(bytes);
    }
}

#[derive(Debug, Clone)]
struct ForgedRecord {
    offset_sectors: u64,
    kind: u8,
    seq_delta: u64,
    record_sectors: u64,
    payload_len_bytes: u32,
    link: usize,
}

fn forged_record() -> impl Strategy<Value = ForgedRecord> {
    (0u64..128, 1u8..=3, 0u64..4, 0u64..70, 0u32..3000, 0usize..4).prop_map(
        |(offset_sectors, kind, seq_delta, record_sectors, payload_len_bytes, link)| ForgedRecord {
            offset_sectors,
            kind,
            seq_delta,
            record_sectors,
            payload_len_bytes,
            link,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_images_never_panic(sectors in 1usize..40, fill in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut image = vec![0u8; sectors * SECTOR_SIZE];
        for (index, byte) in fill.iter().enumerate() {
            let at = index * 7 % image.len();
            image[at] = *byte;
        }
        mount_and_exercise(image);
    }

    #[test]
    fn mutated_valid_images_never_panic(
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
    ) {
        let mut image = valid_image();
        for (at, byte) in &mutations {
            let index = at.index(image.len());
            image[index] = *byte;
        }
        mount_and_exercise(image);
    }

    #[test]
    fn hostile_superblock_and_checkpoints_never_panic(
        sector_count in 0u64..200,
        log_start_sectors in 0u64..8,
        log_sectors in prop_oneof![0u64..200, Just(u64::MAX), Just(u64::MAX - 2)],
        image_sectors in 3u64..120,
        head_offset_sectors in prop_oneof![0u64..200, Just(u64::MAX)],
        head_seq in prop_oneof![0u64..5, Just(u64::MAX), Just(u64::MAX - 1)],
        generations in (any::<u64>(), any::<u64>()),
        block_sectors in prop::sample::select(vec![0u32, 1, 2, 3, 4, 8, 16]),
    ) {
        let superblock = Superblock {
            node_id: [1; 32],
            disk_id: [2; 16],
            format_salt: [3; 16],
            sector_count,
            log_start_sectors,
            log_sectors,
            block_sectors,
        };
        let key = superblock.checksum_key();
        let mut image = vec![0u8; image_sectors as usize * SECTOR_SIZE];
        write_sector(&mut image, 0, &superblock.encode());
        for (slot, generation) in [generations.0, generations.1].into_iter().enumerate() {
            let checkpoint = Checkpoint { generation, head_offset_sectors, head_seq, head_prev_checksum: [0; 32] };
            write_sector(&mut image, CHECKPOINT_SECTORS[slot], &checkpoint.encode(&key));
        }
        mount_and_exercise(image);
    }

    /// A valid store whose checkpoints carry extreme generations (as only a forger with
    /// the disk's key could write): mount, writes and compaction must not overflow.
    #[test]
    fn extreme_checkpoint_generations_never_panic(generation in prop_oneof![Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]) {
        let store = fresh(64);
        let disk = store.into_device();
        let mut image = disk.durable_image().to_vec();
        let superblock = Superblock::decode(&image[..SECTOR_SIZE]).unwrap();
        let key = superblock.checksum_key();
        let checkpoint = Checkpoint { generation, head_offset_sectors: 0, head_seq: 1, head_prev_checksum: [0; 32] };
        write_sector(&mut image, CHECKPOINT_SECTORS[(generation % 2) as usize], &checkpoint.encode(&key));
        let disk = MemDisk::from_image(image).unwrap();
        let mut store = ShardStore::mount(disk).unwrap();
        for seed in 0..6 {
            let (key, bytes) = shard(seed, 900);
            let _ = store.put(&OWNER, key, &bytes);
        }
        for key in store.list(&OWNER).iter().take(3) {
            let _ = store.delete(&OWNER, key);
        }
        let _ = store.compact(100);
        exercise(store);
    }

    /// Record headers with valid keyed checksums but arbitrary fields and links.
    #[test]
    fn forged_records_never_panic(
        records in prop::collection::vec(forged_record(), 1..24),
        head_seq in prop_oneof![1u64..4, Just(u64::MAX - 2)],
        head_offset_sectors in 0u64..128,
        block_sectors in prop::sample::select(vec![1u32, 2, 4, 8]),
    ) {
        let image_sectors = LOG_START_SECTORS + 128;
        let superblock = Superblock {
            node_id: [1; 32],
            disk_id: [2; 16],
            format_salt: [3; 16],
            sector_count: image_sectors,
            log_start_sectors: LOG_START_SECTORS,
            log_sectors: image_sectors - LOG_START_SECTORS,
            block_sectors,
        };
        let key = superblock.checksum_key();
        let mut image = vec![0u8; image_sectors as usize * SECTOR_SIZE];
        write_sector(&mut image, 0, &superblock.encode());
        let checkpoint = Checkpoint { generation: 1, head_offset_sectors, head_seq, head_prev_checksum: [0; 32] };
        write_sector(&mut image, CHECKPOINT_SECTORS[1], &checkpoint.encode(&key));
        // Links: zero (valid at the head) or an earlier forged record's checksum.
        let mut checksums = vec![[0u8; 32]];
        for forged in &records {
            let kind = match forged.kind {
                1 => RecordKind::Put,
                2 => RecordKind::Delete,
                _ => RecordKind::Pad,
            };
            let (shard_key, payload) = shard(forged.seq_delta, forged.payload_len_bytes as usize);
            let payload: &[u8] = if kind == RecordKind::Put { &payload } else { &[] };
            // Half of the records sit on block boundaries, where the store looks.
            let offset_sectors = if forged.link % 2 == 0 {
                forged.offset_sectors / u64::from(block_sectors) * u64::from(block_sectors)
            } else {
                forged.offset_sectors
            };
            let block = u64::from(block_sectors);
            let record_sectors = match (kind, forged.record_sectors % 3) {
                (RecordKind::Put, 0) => align_up(record_sectors_for(payload.len() as u64), block),
                (RecordKind::Delete, 0) => block,
                (RecordKind::Pad, 0) => superblock.log_sectors.saturating_sub(offset_sectors),
                _ => forged.record_sectors,
            };
            let mut header = RecordHeader {
                kind,
                payload_len_bytes: payload.len() as u32,
                seq: head_seq.saturating_add(forged.seq_delta),
                record_sectors,
                key: shard_key,
                // Three owners; the same shard (seed) under several of them.
                owner: [forged.link as u8 % 3; 32],
                prev_checksum: checksums[forged.link % checksums.len()],
                record_checksum: [0; 32],
            };
            header.record_checksum = header.compute_record_checksum(&key);
            checksums.push(header.record_checksum);
            let mut bytes = header.encode(&key).to_vec();
            bytes.resize(RECORD_PAYLOAD_OFFSET_BYTES, 0);
            bytes.extend_from_slice(payload);
            bytes.resize(bytes.len().div_ceil(SECTOR_SIZE) * SECTOR_SIZE, 0);
            let start = (LOG_START_SECTORS + offset_sectors) as usize * SECTOR_SIZE;
            let end = (start + bytes.len()).min(image.len());
            image[start..end].copy_from_slice(&bytes[..end - start]);
        }
        mount_and_exercise(image);
    }
}
