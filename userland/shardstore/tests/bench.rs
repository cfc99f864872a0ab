//! Throughput on a `MemDisk` (ignored by default; run with
//! `cargo test -p shardstore --release --test bench -- --ignored --nocapture`).
//! Measures the store's own cost (hashing, copying, Merkle roots), not a disk's.

mod common;

use common::OWNER;

use std::time::Instant;

use common::{fresh, shard};

#[test]
#[ignore]
fn bench_put_get_mount_compact() {
    const SHARD_BYTES: usize = 256 << 10;
    const SHARDS: u64 = 400;
    let mut store = fresh((256 << 20) / 512);
    let shards: Vec<_> = (0..SHARDS).map(|seed| shard(seed, SHARD_BYTES)).collect();
    let total_mb = (SHARDS as f64) * SHARD_BYTES as f64 / 1e6;

    let started = Instant::now();
    for (key, bytes) in &shards {
        store.put(&OWNER, *key, bytes).unwrap();
    }
    let put_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for (key, bytes) in &shards {
        assert_eq!(store.get(&OWNER, key).unwrap().len(), bytes.len());
    }
    let get_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for (index, (key, _)) in shards.iter().enumerate() {
        store.prove(&OWNER, key, index as u64).unwrap();
    }
    let prove_s = started.elapsed().as_secs_f64();

    for (key, _) in shards.iter().step_by(2) {
        store.delete(&OWNER, key).unwrap();
    }
    let started = Instant::now();
    store.compact(usize::MAX).unwrap();
    let compact_s = started.elapsed().as_secs_f64();

    let disk = store.into_device();
    let started = Instant::now();
    let store = shardstore::ShardStore::mount(disk).unwrap();
    let mount_s = started.elapsed().as_secs_f64();
    assert_eq!(store.stat().shard_count, SHARDS / 2);

    eprintln!("put    {:8.1} MB/s", total_mb / put_s);
    eprintln!("get    {:8.1} MB/s", total_mb / get_s);
    eprintln!("prove  {:8.1} proofs/s (256 KiB shards)", SHARDS as f64 / prove_s);
    eprintln!("compact {:7.1} MB/s of live data copied", total_mb / 2.0 / compact_s);
    eprintln!("mount  {:8.3} ms for {} records", mount_s * 1e3, SHARDS / 2);
}
