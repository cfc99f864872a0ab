//! Manifests forged with a valid seal: the test seals arbitrary and mutated bodies under the
//! owner's real manifest key (it knows the format), so `Manifest::open` is exercised past the
//! AEAD wall, on the decoder and the validation behind it. Opening never panics; whatever opens
//! is well formed (validates, and decodes its segments' shard lengths consistently).
//! Runs briefly in `cargo test`; `GRIDOS_FUZZ_CASES=N` for a long run (README "Fuzzing").

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use files::{encode_segment, shard_ref, FilesError, Manifest, Params, SegmentEntry};
use proptest::prelude::*;

const SEED: [u8; 32] = [21; 32];

/// Seals `body` exactly as `Manifest::seal` does (format in src/manifest.rs).
fn forge(body: &[u8]) -> Vec<u8> {
    let key = blake3::derive_key("gridos files v1 2026-11 manifest key", &SEED);
    let nonce = [0x5a; 24];
    let mut sealed = b"GFM1".to_vec();
    sealed.extend_from_slice(&nonce);
    let mut ct = body.to_vec();
    let tag = XChaCha20Poly1305::new(&key.into())
        .encrypt_in_place_detached(&XNonce::from(nonce), b"GFM1", &mut ct)
        .expect("seal");
    sealed.extend_from_slice(&ct);
    sealed.extend_from_slice(&tag);
    sealed
}

fn valid_manifest() -> Manifest {
    let params = Params { data_shards: 2, parity_shards: 1, segment_bytes: 64 };
    let mut m = Manifest::new("a".into(), params, [1; 24]);
    let key = m.file_key(&SEED);
    for index in 0..3u64 {
        let plain = vec![index as u8; if index == 2 { 10 } else { 64 }];
        let seg = encode_segment(&key, &params, index, &plain).expect("encode");
        let shards = seg.shards.iter().map(|s| shard_ref(s, [index as u8; 32])).collect();
        m.segments.push(SegmentEntry { index, plain_len: seg.plain_len, shards });
        m.size += plain.len() as u64;
    }
    m
}

#[test]
fn forging_helper_matches_the_format() {
    let m = valid_manifest();
    let body = postcard::to_allocvec(&m).expect("postcard");
    assert_eq!(Manifest::open(&forge(&body), &SEED), Ok(m));
    assert_eq!(Manifest::open(&forge(b""), &SEED), Err(FilesError::ManifestFormat("not a manifest")));
}

fn config() -> ProptestConfig {
    let cases = std::env::var("GRIDOS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_bodies_never_panic(edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..8)) {
        let mut body = postcard::to_allocvec(&valid_manifest()).expect("postcard");
        for (at, byte, op) in edits {
            let at = usize::from(at) % (body.len() + 1);
            match op {
                0 if at < body.len() => body[at] ^= byte | 1,
                1 => body.insert(at, byte),
                2 if at < body.len() => { body.remove(at); }
                _ => body.truncate(at),
            }
        }
        if let Ok(m) = Manifest::open(&forge(&body), &SEED) {
            prop_assert!(m.validate().is_ok());
            for seg in &m.segments {
                prop_assert_eq!(seg.shards.len(), m.params.total_shards());
                prop_assert!(seg.shards.iter().all(|r| r.len == files::shard_len(&m.params, seg.plain_len)));
            }
        }
    }

    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Manifest::open(&forge(&body), &SEED);
        let _ = Manifest::open(&body, &SEED);
    }
}
