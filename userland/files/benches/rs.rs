//! Prints figures (not a criterion bench; `cargo bench -p files [--features simd-accel]`):
//! Reed-Solomon encode and decode GB/s of reed-solomon-erasure (its SIMD C kernels with
//! `--features simd-accel`, pure Rust without) next to reed-solomon-simd, on the same shards in
//! the same run; XChaCha20-Poly1305 MB/s; and the files pipeline per stage (seal, RS, shard
//! hashes and Merkle roots) and end to end in memory.
//!
//! GB/s counts the data bytes (K shards) per second; decode rebuilds M lost data shards
//! (reed-solomon-simd's decode includes handing it the shards, which its API copies).
//! Figures compared on one line are measured interleaved, round by round, and each is the best
//! of its rounds, so a busy machine slows them alike.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use files::stream::{Getter, MemoryNodes, Putter};
use files::{decode_segment, encode_segment, shard_ref, FileKey, Params, SegmentEntry};
use reed_solomon_erasure::galois_8::ReedSolomon;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

const ROUNDS: usize = 5;

/// Best time of `ROUNDS` rounds of `reps` calls.
fn best(reps: usize, mut f: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            start.elapsed() / reps as u32
        })
        .min()
        .unwrap_or_default()
}

/// Runs each job `reps` times per round, the jobs interleaved, for `ROUNDS` rounds; the best
/// per-call time of each job.
fn interleaved(reps: usize, jobs: &mut [&mut dyn FnMut()]) -> Vec<Duration> {
    let mut bests = vec![Duration::MAX; jobs.len()];
    for _ in 0..ROUNDS {
        for (job, best) in jobs.iter_mut().zip(bests.iter_mut()) {
            let start = Instant::now();
            for _ in 0..reps {
                job();
            }
            *best = (*best).min(start.elapsed() / reps as u32);
        }
    }
    bests
}

fn gbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e9
}

fn mbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / 1e6
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn rs_compare(k: usize, m: usize, shard_bytes: usize) {
    let data: Vec<Vec<u8>> = (0..k).map(|i| pseudo_random(shard_bytes, i as u64 + 1)).collect();
    let data_bytes = k * shard_bytes;
    let reps = (32 << 20) / data_bytes + 1;
    let lost = m.min(k);

    let rse = match ReedSolomon::new(k, m) {
        Ok(rs) => rs,
        Err(e) => return println!("reed-solomon-erasure refused k={k} m={m}: {e:?}"),
    };
    let mut encoded: Vec<Vec<u8>> = data.clone();
    encoded.resize(k + m, vec![0; shard_bytes]);
    if rse.encode(&mut encoded).is_err() {
        return println!("reed-solomon-erasure encode refused");
    }
    let (Ok(mut encoder), Ok(mut decoder)) =
        (ReedSolomonEncoder::new(k, m, shard_bytes), ReedSolomonDecoder::new(k, m, shard_bytes))
    else {
        return println!("reed-solomon-simd refused k={k} m={m}");
    };
    if !data.iter().all(|d| encoder.add_original_shard(d).is_ok()) {
        return println!("reed-solomon-simd refused a shard");
    }
    let recovery: Vec<Vec<u8>> = match encoder.encode() {
        Ok(result) => result.recovery_iter().map(<[u8]>::to_vec).collect(),
        Err(e) => return println!("reed-solomon-simd encode: {e:?}"),
    };

    // Each job works on its own buffers. Decode jobs start from clones of the survivors; the
    // clone alone is a fifth job, subtracted from reed-solomon-erasure's decode.
    let mut rse_shards = encoded.clone();
    let mut rse_encode = || {
        if rse.encode(black_box(&mut rse_shards)).is_err() {
            panic!("bench: encode refused");
        }
    };
    let mut rse_decode = || {
        let mut slots: Vec<Option<Vec<u8>>> = encoded.iter().cloned().map(Some).collect();
        for slot in slots.iter_mut().take(lost) {
            *slot = None;
        }
        if rse.reconstruct_data(black_box(&mut slots)).is_err() || slots[0].as_ref() != Some(&data[0]) {
            panic!("bench: reconstruct failed");
        }
    };
    let mut clone_only = || {
        let mut slots: Vec<Option<Vec<u8>>> = encoded.iter().cloned().map(Some).collect();
        for slot in slots.iter_mut().take(lost) {
            *slot = None;
        }
        black_box(slots);
    };
    let mut simd_encode = || {
        let ok = encoder.reset(k, m, shard_bytes).is_ok() && data.iter().all(|d| encoder.add_original_shard(d).is_ok());
        assert!(ok, "bench: reed-solomon-simd refused a shard");
        match encoder.encode() {
            Ok(result) => black_box(result.recovery(0).map(<[u8]>::len)),
            Err(e) => panic!("bench: reed-solomon-simd encode: {e:?}"),
        };
    };
    let mut simd_decode = || {
        let ok = decoder.reset(k, m, shard_bytes).is_ok()
            && data.iter().enumerate().skip(lost).all(|(i, d)| decoder.add_original_shard(i, d).is_ok())
            && recovery.iter().enumerate().all(|(i, r)| decoder.add_recovery_shard(i, r).is_ok());
        assert!(ok, "bench: reed-solomon-simd refused a shard");
        match decoder.decode() {
            Ok(result) => assert!(result.restored_original(0) == Some(data[0].as_slice()), "rs-simd restored wrong bytes"),
            Err(e) => panic!("bench: reed-solomon-simd decode: {e:?}"),
        }
    };
    let t = interleaved(
        reps,
        &mut [&mut rse_encode, &mut rse_decode, &mut clone_only, &mut simd_encode, &mut simd_decode],
    );
    let flavour = if cfg!(feature = "simd-accel") { "simd-accel" } else { "pure Rust" };
    println!(
        "RS k={k:>2} m={m} shard {:>5} KiB | reed-solomon-erasure ({flavour}): encode {:5.2} GB/s, decode {:5.2} GB/s | reed-solomon-simd 3.1: encode {:5.2} GB/s, decode {:5.2} GB/s",
        shard_bytes >> 10,
        gbps(data_bytes, t[0]),
        gbps(data_bytes, t[1].saturating_sub(t[2])),
        gbps(data_bytes, t[3]),
        gbps(data_bytes, t[4]),
    );
}

fn aead(len: usize) {
    let cipher = XChaCha20Poly1305::new(&[7u8; 32].into());
    let mut buf = pseudo_random(len, 9);
    let reps = (64 << 20) / len + 1;
    let t = best(reps, || {
        let tag = cipher.encrypt_in_place_detached(&XNonce::from([1u8; 24]), b"ad", black_box(&mut buf));
        black_box(tag.is_ok());
    });
    println!("XChaCha20-Poly1305 seal {:>7} B: {:7.1} MB/s", len, mbps(len, t));
}

fn pipeline(params: Params) {
    let seg = params.segment_bytes as usize;
    let key = FileKey::derive(&[1; 32], &[2; 24]);
    let plain = pseudo_random(seg, 3);
    let reps = (64 << 20) / seg + 1;

    let encoded = match encode_segment(&key, &params, 0, &plain) {
        Ok(e) => e,
        Err(e) => return println!("encode refused: {e}"),
    };
    let entry = SegmentEntry {
        index: 0,
        plain_len: encoded.plain_len,
        shards: encoded.shards.iter().map(|s| shard_ref(s, [0; 32])).collect(),
    };
    let lose = usize::from(params.parity_shards);
    let cipher = XChaCha20Poly1305::new(&[7u8; 32].into());
    let mut seal_job = || {
        let mut buf = plain.clone();
        black_box(cipher.encrypt_in_place_detached(&XNonce::from([1u8; 24]), b"ad", &mut buf).is_ok());
    };
    let mut encode_job = || {
        black_box(encode_segment(&key, &params, 0, black_box(&plain)).is_ok());
    };
    let mut hash_job = || {
        for s in &encoded.shards {
            black_box(shard_ref(s, [0; 32]));
        }
    };
    let mut decode_job = || {
        let mut slots: Vec<Option<Vec<u8>>> = encoded.shards.iter().cloned().map(Some).collect();
        for slot in slots.iter_mut().take(lose) {
            *slot = None;
        }
        black_box(decode_segment(&key, &params, &entry, &mut slots).is_ok());
    };
    let t = interleaved(reps, &mut [&mut seal_job, &mut encode_job, &mut hash_job, &mut decode_job]);
    let (seal, encode, hash, decode) = (t[0], t[1], t[2], t[3]);
    let put_segment = encode + hash;
    println!(
        "segment {} MiB k={} m={}: encode_segment {:6.1} MB/s (seal {:4.1}% + RS and copies {:4.1}%), shard hashes+Merkle roots {:6.1} MB/s of plaintext ({:4.1}% of a put's CPU); decode_segment with {} data shards lost {:6.1} MB/s",
        seg >> 20,
        params.data_shards,
        params.parity_shards,
        mbps(seg, encode),
        100.0 * seal.as_secs_f64() / encode.as_secs_f64(),
        100.0 * (encode.as_secs_f64() - seal.as_secs_f64()) / encode.as_secs_f64(),
        mbps(seg, hash),
        100.0 * hash.as_secs_f64() / put_segment.as_secs_f64(),
        lose,
        mbps(seg, decode),
    );

    // End to end in memory (the "network" is a HashMap insert).
    let file = pseudo_random(64 << 20, 5);
    let mut nodes = MemoryNodes::new(params.data_shards + params.parity_shards);
    let start = Instant::now();
    let done = match Putter::new(&file[..], &[1; 32], [4; 24], "bench".into(), params).map(|p| p.run(&mut nodes)) {
        Ok(Ok(done)) => done,
        _ => return println!("pipeline put failed"),
    };
    let put = start.elapsed();
    let start = Instant::now();
    let mut out = Vec::with_capacity(file.len());
    let mut getter = Getter::new(done.manifest, &[1; 32]);
    if getter.write_to(&mut nodes, &mut out).is_err() || out != file {
        return println!("pipeline get failed");
    }
    let get = start.elapsed();
    let mut nodes = MemoryNodes::new(params.data_shards + params.parity_shards);
    let start = Instant::now();
    let piped = Putter::new(&file[..], &[1; 32], [4; 24], "bench".into(), params).map(|p| p.run_pipelined(&mut nodes, 1));
    if !matches!(piped, Ok(Ok(_))) {
        return println!("pipelined put failed");
    }
    let piped = start.elapsed();
    println!(
        "pipeline in memory, 64 MiB: put {:6.1} MB/s (pipelined, 2 threads: {:6.1} MB/s), get {:6.1} MB/s",
        mbps(file.len(), put),
        mbps(file.len(), piped),
        mbps(file.len(), get)
    );
}

fn main() {
    // `cargo test` runs benches with --bench only under `cargo bench`; stay quiet otherwise.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("== Reed-Solomon, same data, same run ==");
    for (k, m, shard) in [(4, 2, 1 << 20), (3, 2, 1 << 20), (16, 4, 1 << 20), (16, 4, 64 << 10), (10, 4, 256 << 10)] {
        rs_compare(k, m, shard);
    }
    println!("== AEAD ==");
    for len in [1500, 64 << 10, 4 << 20] {
        aead(len);
    }
    println!("== files pipeline ==");
    pipeline(Params::default());
    pipeline(Params { data_shards: 3, parity_shards: 2, segment_bytes: 4 << 20 });
}
