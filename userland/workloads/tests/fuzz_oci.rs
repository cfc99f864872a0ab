//! Fuzz target for the OCI tar reader (proptest: short in `cargo test`, long with
//! `GRIDOS_FUZZ_CASES=N`, see the README's "Fuzzing" section).
//!
//! Invariants: any bytes give entries or a typed [`OciError`], never a panic; every
//! entry's data lies inside the archive and there are at most 4096 of them; a layout
//! built around a module gives that module back exactly; whatever a tampered layout
//! still yields is a module whose sha256 is the layer digest it names.

use proptest::prelude::*;
use workloads::oci::{build_layout, sha256_hex, tar_append, tar_entries, wasm_from_layout, OciError, WASM_LAYER_TYPES};

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("GRIDOS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// One tar member as the fuzzer shapes it: a path, a type flag, data, and whether its
/// header checksum is left valid (so the reader gets past the checksum wall).
#[derive(Debug, Clone)]
struct Member {
    path: String,
    typeflag: u8,
    data: Vec<u8>,
    size_override: Option<u64>,
    good_checksum: bool,
}

fn member() -> impl Strategy<Value = Member> {
    (
        prop_oneof!["[a-z./]{0,12}", Just("index.json".to_string()), Just("blobs/sha256/00".to_string())],
        prop::sample::select(vec![b'0', 0, b'7', b'L', b'x', b'g', b'5', b'2', b'K', 0xff]),
        proptest::collection::vec(any::<u8>(), 0..700),
        prop_oneof![4 => Just(None), 1 => (0u64..0o77_777_777_777).prop_map(Some)],
        prop_oneof![4 => Just(true), 1 => Just(false)],
    )
        .prop_map(|(path, typeflag, data, size_override, good_checksum)| Member { path, typeflag, data, size_override, good_checksum })
}

fn archive(members: &[Member], end_marker: bool) -> Vec<u8> {
    let mut tar = Vec::new();
    for m in members {
        let at = tar.len();
        let data = if m.typeflag == b'x' {
            // A pax record, sometimes well formed.
            let mut rec = format!("{} path=", 6 + m.path.len() + 6).into_bytes();
            rec.extend_from_slice(m.path.as_bytes());
            rec.push(b'\n');
            rec.extend_from_slice(&m.data);
            rec
        } else {
            m.data.clone()
        };
        tar_append(&mut tar, &m.path, &data);
        let header = &mut tar[at..at + 512];
        header[156] = m.typeflag;
        if let Some(size) = m.size_override {
            header[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        }
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum::<u32>() + u32::from(!m.good_checksum);
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
    if end_marker {
        tar.extend_from_slice(&[0u8; 1024]);
    }
    tar
}

/// Checks what the reader says about `tar`.
fn check(tar: &[u8]) -> Result<(), TestCaseError> {
    match tar_entries(tar) {
        Ok(entries) => {
            prop_assert!(entries.len() <= 4096);
            let range = tar.as_ptr_range();
            for e in &entries {
                let inside = e.data.is_empty() || (range.contains(&e.data.as_ptr()) && e.data.as_ptr_range().end <= range.end);
                prop_assert!(inside, "entry {} points outside the archive", e.path);
            }
        }
        Err(e) => prop_assert!(matches!(e, OciError::Tar(at, _) if at <= tar.len()), "{:?}", e),
    }
    if let Ok(image) = wasm_from_layout(tar) {
        prop_assert_eq!(format!("sha256:{}", sha256_hex(&image.module)), image.layer_digest);
        prop_assert!(WASM_LAYER_TYPES.contains(&image.layer_media_type.as_str()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_bytes_give_entries_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        check(&bytes)?;
    }

    #[test]
    fn forged_members_with_valid_checksums_never_panic(members in proptest::collection::vec(member(), 0..8), end in any::<bool>()) {
        check(&archive(&members, end))?;
    }

    #[test]
    fn layouts_round_trip_their_module(module in proptest::collection::vec(any::<u8>(), 0..2000), ty in 0usize..2) {
        let tar = build_layout(&module, WASM_LAYER_TYPES[ty]);
        let image = wasm_from_layout(&tar).expect("a layout we built");
        prop_assert_eq!(image.module, module);
        prop_assert_eq!(image.layer_media_type, WASM_LAYER_TYPES[ty]);
    }

    #[test]
    fn tampered_layouts_never_yield_an_unverified_module(
        module in proptest::collection::vec(any::<u8>(), 1..600),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
    ) {
        let mut tar = build_layout(&module, WASM_LAYER_TYPES[0]);
        for (at, x) in &flips {
            let i = at.index(tar.len());
            tar[i] ^= x;
        }
        check(&tar)?;
        // The module bytes themselves can only come back unchanged.
        if let Ok(image) = wasm_from_layout(&tar) {
            prop_assert_eq!(image.module, module);
        }
    }
}
