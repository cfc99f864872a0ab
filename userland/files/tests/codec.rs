//! Segment and manifest properties: any K of K + M rebuild a segment, M + 1 losses fail with a
//! typed error, a flipped bit in any shard is caught by its hash, a wrong key is refused, the
//! manifest round-trips and a tampered one is refused.

use files::{
    decode_segment, decode_segment_report, encode_segment, file_id, rebuild_shards, shard_ref, FileKey,
    FilesError, Manifest, Params, SegmentEntry,
};
use proptest::prelude::*;

const SEED: [u8; 32] = [7; 32];
const NONCE: [u8; 24] = [9; 24];

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt) ^ (i >> 8) as u8).collect()
}

fn encode(params: &Params, index: u64, plain: &[u8]) -> (SegmentEntry, Vec<Vec<u8>>) {
    let key = FileKey::derive(&SEED, &NONCE);
    let seg = encode_segment(&key, params, index, plain).expect("encode");
    let refs = seg.shards.iter().map(|s| shard_ref(s, [0; 32])).collect();
    (SegmentEntry { index, plain_len: seg.plain_len, shards: refs }, seg.shards)
}

fn with_missing(shards: &[Vec<u8>], missing_mask: u32) -> Vec<Option<Vec<u8>>> {
    shards.iter().enumerate().map(|(i, s)| (missing_mask & (1 << i) == 0).then(|| s.clone())).collect()
}

/// Every subset of losses for small K + M: up to M lost decode, more than M fail cleanly.
#[test]
fn any_k_of_k_plus_m_rebuild_exhaustive() {
    let key = FileKey::derive(&SEED, &NONCE);
    for (k, m) in [(1u8, 1u8), (2, 1), (3, 2), (4, 2), (4, 4), (6, 3)] {
        let params = Params { data_shards: k, parity_shards: m, segment_bytes: 10_000 };
        let plain = pattern(9_999, k ^ m);
        let (entry, shards) = encode(&params, 3, &plain);
        let total = usize::from(k + m);
        for mask in 0u32..(1 << total) {
            let lost = mask.count_ones() as usize;
            let mut slots = with_missing(&shards, mask);
            let result = decode_segment(&key, &params, &entry, &mut slots);
            if lost <= usize::from(m) {
                assert_eq!(result.as_deref(), Ok(&plain[..]), "k={k} m={m} mask={mask:b}");
            } else {
                assert_eq!(
                    result,
                    Err(FilesError::TooFewShards { segment: 3, usable: total - lost, needed: usize::from(k), corrupt: vec![] }),
                    "k={k} m={m} mask={mask:b}"
                );
            }
        }
    }
}

/// A flipped bit anywhere in any shard is caught by its hash and reported; with M corrupt the
/// segment still decodes, with M + 1 it fails naming them.
#[test]
fn flipped_bit_in_any_shard_is_caught() {
    let key = FileKey::derive(&SEED, &NONCE);
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 4096 };
    let plain = pattern(4000, 1);
    let (entry, shards) = encode(&params, 0, &plain);
    let len = shards[0].len();
    for shard in 0..5 {
        for bit in [0, 7, len * 4, len * 8 - 1] {
            let mut slots = with_missing(&shards, 0);
            if let Some(s) = slots[shard].as_mut() {
                s[bit / 8] ^= 1 << (bit % 8);
            }
            let decoded = decode_segment_report(&key, &params, &entry, &mut slots).expect("decode");
            assert_eq!(decoded.plaintext, plain);
            assert_eq!(decoded.corrupt, vec![shard]);
        }
    }
    // Three corrupt (M + 1): lost, and the report names them.
    let mut slots = with_missing(&shards, 0);
    for i in [0, 2, 4] {
        if let Some(s) = slots[i].as_mut() {
            s[0] ^= 0x80;
        }
    }
    let err = decode_segment(&key, &params, &entry, &mut slots).unwrap_err();
    assert_eq!(err, FilesError::TooFewShards { segment: 0, usable: 2, needed: 3, corrupt: vec![0, 2, 4] });
    // A truncated shard is corrupt too.
    let mut slots = with_missing(&shards, 0);
    if let Some(s) = slots[1].as_mut() {
        s.pop();
    }
    let decoded = decode_segment_report(&key, &params, &entry, &mut slots).expect("decode");
    assert_eq!(decoded.corrupt, vec![1]);
}

/// Another owner's key (or another file's nonce) is refused with a typed error.
#[test]
fn wrong_key_is_refused() {
    let params = Params::default();
    let plain = pattern(100_000, 3);
    let (entry, shards) = encode(&params, 5, &plain);
    for key in [FileKey::derive(&[8; 32], &NONCE), FileKey::derive(&SEED, &[1; 24])] {
        let mut slots = with_missing(&shards, 0b1);
        assert_eq!(decode_segment(&key, &params, &entry, &mut slots), Err(FilesError::WrongKey { segment: 5 }));
    }
    // The same shards presented as another segment index do not open either.
    let mut moved = entry.clone();
    moved.index = 6;
    let mut slots = with_missing(&shards, 0);
    let key = FileKey::derive(&SEED, &NONCE);
    assert_eq!(decode_segment(&key, &params, &moved, &mut slots), Err(FilesError::WrongKey { segment: 6 }));
}

/// Repair without the key: any K rebuild every lost shard byte-identical.
#[test]
fn rebuild_restores_every_shard() {
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 1 << 16 };
    let (entry, shards) = encode(&params, 2, &pattern(50_000, 4));
    let mut slots = with_missing(&shards, 0b10010);
    if let Some(s) = slots[0].as_mut() {
        s[10] ^= 1;
    }
    // Three bad of five with M = 2: refused.
    assert!(matches!(rebuild_shards(&params, &entry, &mut slots.clone()), Err(FilesError::TooFewShards { .. })));
    slots[0] = Some(shards[0].clone());
    assert_eq!(rebuild_shards(&params, &entry, &mut slots), Ok(vec![]));
    let rebuilt: Vec<Vec<u8>> = slots.into_iter().map(|s| s.expect("rebuilt")).collect();
    assert_eq!(rebuilt, shards);
}

/// Shard Merkle roots are the store's tree: a one-chunk shard's proof (the chunk, no path)
/// checks against the manifest root, and a wrong chunk does not.
#[test]
fn shard_roots_are_the_stores_merkle_roots() {
    let params = Params { data_shards: 2, parity_shards: 1, segment_bytes: 8000 };
    let (entry, shards) = encode(&params, 0, &pattern(8000, 5));
    for (r, bytes) in entry.shards.iter().zip(&shards) {
        assert!(bytes.len() <= shardstore::CHUNK_SIZE_BYTES);
        assert_eq!(r.merkle_root, files::merkle_root(bytes));
        let proof = files::StorageProof { chunk_index: 0, chunk: bytes.clone(), path: vec![] };
        assert!(files::verify_proof(&r.merkle_root, r.len, 12345, &proof));
        let mut forged = proof.clone();
        forged.chunk[0] ^= 1;
        assert!(!files::verify_proof(&r.merkle_root, r.len, 12345, &forged));
    }
}

fn sample_manifest(params: Params, size: u64) -> Manifest {
    let mut manifest = Manifest::new("photo.jpg".into(), params, NONCE);
    let key = manifest.file_key(&SEED);
    let plain = pattern(size as usize, 6);
    for (index, chunk) in plain.chunks(params.segment_bytes as usize).enumerate() {
        let seg = encode_segment(&key, &params, index as u64, chunk).expect("encode");
        let shards = seg.shards.iter().enumerate().map(|(i, s)| shard_ref(s, [i as u8; 32])).collect();
        manifest.segments.push(SegmentEntry { index: index as u64, plain_len: seg.plain_len, shards });
        manifest.size += chunk.len() as u64;
    }
    manifest
}

#[test]
fn manifest_round_trips_and_refuses_tampering() {
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 1000 };
    let manifest = sample_manifest(params, 2500);
    manifest.validate().expect("valid");
    let sealed = manifest.seal(&SEED);
    assert_eq!(sealed, manifest.seal(&SEED), "sealing is deterministic");
    let id = file_id(&sealed);
    assert_eq!(Manifest::open(&sealed, &SEED), Ok(manifest.clone()));
    assert_eq!(Manifest::open_checked(&id, &sealed, &SEED), Ok(manifest.clone()));

    // Wrong owner seed.
    assert_eq!(Manifest::open(&sealed, &[8; 32]), Err(FilesError::ManifestSeal));
    assert_eq!(Manifest::open_checked(&id, &sealed, &[8; 32]), Err(FilesError::ManifestSeal));
    // Any flipped bit, anywhere.
    for at in (0..sealed.len()).step_by(7).chain([sealed.len() - 1]) {
        let mut bad = sealed.clone();
        bad[at] ^= 0x10;
        assert_eq!(Manifest::open(&bad, &SEED), Err(FilesError::ManifestSeal), "byte {at}");
        assert_eq!(Manifest::open_checked(&id, &bad, &SEED), Err(FilesError::ManifestId));
    }
    // Truncated and empty.
    for len in [0, 1, 27, 44, sealed.len() - 1] {
        assert_eq!(Manifest::open(&sealed[..len], &SEED), Err(FilesError::ManifestSeal), "len {len}");
    }
    // A changed manifest seals under a different nonce and id.
    let mut repaired = manifest.clone();
    repaired.segments[0].shards[0].node = [99; 32];
    let resealed = repaired.seal(&SEED);
    assert_ne!(resealed[4..28], sealed[4..28], "synthetic nonce differs");
    assert_ne!(file_id(&resealed), id);
    assert_eq!(Manifest::open(&resealed, &SEED), Ok(repaired));
}

#[test]
fn malformed_manifests_are_refused_after_opening() {
    let params = Params { data_shards: 2, parity_shards: 1, segment_bytes: 1000 };
    let good = sample_manifest(params, 2100);
    let mut cases: Vec<Manifest> = Vec::new();
    let mut m = good.clone();
    m.version = 2;
    cases.push(m);
    let mut m = good.clone();
    m.size += 1;
    cases.push(m);
    let mut m = good.clone();
    m.segments.swap(0, 1);
    cases.push(m);
    let mut m = good.clone();
    m.segments[2].shards.pop();
    cases.push(m);
    let mut m = good.clone();
    m.segments[1].shards[0].len += 1;
    cases.push(m);
    let mut m = good.clone();
    m.params.parity_shards = 0;
    cases.push(m);
    let mut m = good.clone();
    m.segments.pop();
    cases.push(m);
    for (i, bad) in cases.iter().enumerate() {
        let sealed = bad.seal(&SEED);
        assert!(matches!(Manifest::open(&sealed, &SEED), Err(FilesError::ManifestFormat(_))), "case {i}");
    }
    assert!(matches!(Manifest::open(&vec![0; 17 << 20], &SEED), Err(FilesError::ManifestTooLarge)));
}

#[test]
fn bad_params_and_sizes_are_refused() {
    let key = FileKey::derive(&SEED, &NONCE);
    for params in [
        Params { data_shards: 0, parity_shards: 1, segment_bytes: 10 },
        Params { data_shards: 1, parity_shards: 0, segment_bytes: 10 },
        Params { data_shards: 200, parity_shards: 57, segment_bytes: 10 },
        Params { data_shards: 1, parity_shards: 1, segment_bytes: 0 },
        Params { data_shards: 1, parity_shards: 1, segment_bytes: 32 << 20 },
    ] {
        assert_eq!(encode_segment(&key, &params, 0, b"x"), Err(FilesError::BadParams), "{params:?}");
    }
    let params = Params { data_shards: 2, parity_shards: 1, segment_bytes: 10 };
    assert_eq!(
        encode_segment(&key, &params, 0, &[0; 11]),
        Err(FilesError::SegmentTooLarge { len_bytes: 11, max_bytes: 10 })
    );
    let (entry, shards) = encode(&params, 0, b"0123456789");
    let mut slots = with_missing(&shards, 0);
    slots.pop();
    assert_eq!(decode_segment(&key, &params, &entry, &mut slots), Err(FilesError::ShardCount { expected: 3, got: 2 }));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random parameters, data and losses: up to M losses decode to the plaintext, more fail
    /// with TooFewShards; an empty segment works too.
    #[test]
    fn encode_decode_round_trip(
        k in 1u8..=8,
        m in 1u8..=4,
        plain in proptest::collection::vec(any::<u8>(), 0..5000),
        index in any::<u64>(),
        lost_seed in any::<u64>(),
        lose in 0usize..=12,
    ) {
        let params = Params { data_shards: k, parity_shards: m, segment_bytes: 5000 };
        let key = FileKey::derive(&SEED, &NONCE);
        let (entry, shards) = encode(&params, index, &plain);
        let total = usize::from(k + m);
        prop_assert!(shards.iter().all(|s| s.len() == shards[0].len()));
        let lose = lose.min(total);
        let mut order: Vec<usize> = (0..total).collect();
        let mut x = lost_seed | 1;
        for i in (1..total).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut slots: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        for &i in &order[..lose] {
            slots[i] = None;
        }
        let result = decode_segment(&key, &params, &entry, &mut slots);
        if lose <= usize::from(m) {
            prop_assert_eq!(result, Ok(plain));
        } else {
            let is_too_few = matches!(result, Err(FilesError::TooFewShards { .. }));
            prop_assert!(is_too_few);
        }
    }
}

#[test]
fn seal_then_split_is_encode_and_a_wrong_length_is_refused() {
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 1 << 16 };
    let key = FileKey::derive(&[5; 32], &[6; 24]);
    let plain = pattern(50_001, 3);
    let sealed = files::seal_segment(&key, &params, 4, &plain).expect("seal");
    let split = files::split_segment(&params, 4, plain.len() as u32, &sealed).expect("split");
    let whole = files::encode_segment(&key, &params, 4, &plain).expect("encode");
    assert_eq!(split.shards, whole.shards);
    assert!(files::split_segment(&params, 4, plain.len() as u32, &sealed[1..]).is_err());
    let entry = SegmentEntry { index: 4, plain_len: plain.len() as u32, shards: split.shards.iter().map(|s| files::shard_ref(s, [0; 32])).collect() };
    let mut shards = with_missing(&split.shards, 0b1);
    assert_eq!(files::decode_segment(&key, &params, &entry, &mut shards).expect("decode"), plain);
}

#[test]
fn contract_ids_round_trip_and_a_manifest_without_them_keeps_its_bytes() {
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 1000 };
    let mut manifest = sample_manifest(params, 2500);
    let plain = manifest.seal(&SEED);
    // Sealed as before the field existed: postcard of the fields alone.
    let opened = Manifest::open(&plain, &SEED).expect("open");
    assert!(opened.contracts.is_empty());
    manifest.contracts = vec![7, 9, 300];
    let sealed = manifest.seal(&SEED);
    assert_ne!(file_id(&sealed), file_id(&plain));
    assert_eq!(Manifest::open(&sealed, &SEED).expect("open").contracts, vec![7, 9, 300]);
    manifest.contracts = vec![1; files::MANIFEST_CONTRACTS_MAX + 1];
    assert!(Manifest::open(&manifest.seal(&SEED), &SEED).is_err());
}
