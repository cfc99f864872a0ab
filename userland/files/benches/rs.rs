//! Prints figures (not a criterion bench; `cargo bench -p files [--features simd-accel]`):
//! Reed-Solomon encode and decode GB/s of reed-solomon-erasure (its SIMD C kernels with
//! `--features simd-accel`, pure Rust without) next to reed-solomon-simd, on the same shards in
//! the same run; XChaCha20-Poly1305 MB/s; and the files pipeline per stage (seal, RS, shard
//! hashes and Merkle roots) and end to end in memory.
//!
//! GB/s counts the data bytes (K shards) per second; decode rebuilds M lost data shards.
//! Each figure is the best of several rounds (the machine is shared).

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
    let reps = (64 << 20) / data_bytes + 1;

    // reed-solomon-erasure: encode into K + M shards, then rebuild the first M data shards.
    let rse = match ReedSolomon::new(k, m) {
        Ok(rs) => rs,
        Err(e) => return println!("reed-solomon-erasure refused k={k} m={m}: {e:?}"),
    };
    let mut shards: Vec<Vec<u8>> = data.clone();
    shards.resize(k + m, vec![0; shard_bytes]);
    let rse_encode = best(reps, || {
        if rse.encode(black_box(&mut shards)).is_err() {
            panic!("bench: encode refused");
        }
    });
    let rse_decode = best(reps, || {
        let mut slots: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        for slot in slots.iter_mut().take(m.min(k)) {
            *slot = None;
        }
        if rse.reconstruct_data(black_box(&mut slots)).is_err() {
            panic!("bench: reconstruct refused");
        }
    });
    // The clone of K + M shards inside the decode loop is not decoding: time it alone and subtract.
    let clone_only = best(reps, || {
        let slots: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        black_box(slots);
    });
    let rse_decode = rse_decode.saturating_sub(clone_only);

    // reed-solomon-simd on the same data.
    let parity_rse = shards[k..].to_vec();
    let mut encoder = match ReedSolomonEncoder::new(k, m, shard_bytes) {
        Ok(e) => e,
        Err(e) => return println!("reed-solomon-simd refused k={k} m={m}: {e:?}"),
    };
    let mut recovery: Vec<Vec<u8>> = Vec::new();
    let simd_encode = best(reps, || {
        let ok = encoder.reset(k, m, shard_bytes).is_ok() && data.iter().all(|d| encoder.add_original_shard(d).is_ok());
        assert!(ok, "bench: reed-solomon-simd refused a shard");
        match encoder.encode() {
            Ok(result) => recovery = result.recovery_iter().map(<[u8]>::to_vec).collect(),
            Err(e) => panic!("bench: reed-solomon-simd encode: {e:?}"),
        }
    });
    let mut decoder = match ReedSolomonDecoder::new(k, m, shard_bytes) {
        Ok(d) => d,
        Err(e) => return println!("reed-solomon-simd decoder refused: {e:?}"),
    };
    let lost = m.min(k);
    let mut restored_ok = true;
    let simd_decode = best(reps, || {
        let ok = decoder.reset(k, m, shard_bytes).is_ok()
            && data.iter().enumerate().skip(lost).all(|(i, d)| decoder.add_original_shard(i, d).is_ok())
            && recovery.iter().enumerate().all(|(i, r)| decoder.add_recovery_shard(i, r).is_ok());
        assert!(ok, "bench: reed-solomon-simd refused a shard");
        match decoder.decode() {
            Ok(result) => {
                for (i, shard) in result.restored_original_iter() {
                    restored_ok &= shard == data[i].as_slice();
                }
            }
            Err(e) => panic!("bench: reed-solomon-simd decode: {e:?}"),
        }
    });
    assert!(restored_ok, "reed-solomon-simd restored wrong bytes");
    assert_ne!(parity_rse, recovery, "different codes (distinct generator matrices), same work");

    let flavour = if cfg!(feature = "simd-accel") { "simd-accel" } else { "pure Rust" };
    println!(
        "RS k={k:>2} m={m} shard {:>5} KiB | reed-solomon-erasure ({flavour}): encode {:5.2} GB/s, decode {:5.2} GB/s | reed-solomon-simd 3.1: encode {:5.2} GB/s, decode {:5.2} GB/s",
        shard_bytes >> 10,
        gbps(data_bytes, rse_encode),
        gbps(data_bytes, rse_decode),
        gbps(data_bytes, simd_encode),
        gbps(data_bytes, simd_decode),
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

    let seal = best(reps, || {
        let cipher = XChaCha20Poly1305::new(&[7u8; 32].into());
        let mut buf = plain.clone();
        black_box(cipher.encrypt_in_place_detached(&XNonce::from([1u8; 24]), b"ad", &mut buf).is_ok());
    });
    let encoded = match encode_segment(&key, &params, 0, &plain) {
        Ok(e) => e,
        Err(e) => return println!("encode refused: {e}"),
    };
    let encode = best(reps, || {
        black_box(encode_segment(&key, &params, 0, black_box(&plain)).is_ok());
    });
    let hash = best(reps, || {
        for s in &encoded.shards {
            black_box(shard_ref(s, [0; 32]));
        }
    });
    let entry = SegmentEntry {
        index: 0,
        plain_len: encoded.plain_len,
        shards: encoded.shards.iter().map(|s| shard_ref(s, [0; 32])).collect(),
    };
    let lose = usize::from(params.parity_shards);
    let decode = best(reps, || {
        let mut slots: Vec<Option<Vec<u8>>> = encoded.shards.iter().cloned().map(Some).collect();
        for slot in slots.iter_mut().take(lose) {
            *slot = None;
        }
        black_box(decode_segment(&key, &params, &entry, &mut slots).is_ok());
    });
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
    println!(
        "pipeline in memory, 64 MiB: put {:6.1} MB/s, get {:6.1} MB/s (one thread)",
        mbps(file.len(), put),
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
