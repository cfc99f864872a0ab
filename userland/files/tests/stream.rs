//! The std pipelines against in-memory nodes: round trips of several shapes, lost and corrupt
//! shards reported, and every failure (more than M lost, wrong key) leaves no output file.

use std::path::PathBuf;

use files::stream::{GetError, Getter, MemoryNodes, Putter};
use files::{FilesError, Manifest, Params};
use proptest::prelude::*;

const SEED: [u8; 32] = [3; 32];

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gridos-files-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn entries(dir: &PathBuf) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn put(nodes: &mut MemoryNodes, bytes: &[u8], params: Params) -> (Manifest, Vec<u8>, [u8; 32]) {
    let putter = Putter::new(bytes, &SEED, [5; 24], "f.bin".into(), params).expect("putter");
    let done = putter.run(nodes).expect("put");
    (done.manifest, done.sealed, done.file_id)
}

#[test]
fn round_trips_of_several_shapes() {
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 1000 };
    for len in [0usize, 1, 999, 1000, 1001, 3000, 7777] {
        let mut nodes = MemoryNodes::new(5);
        let bytes = data(len);
        let (manifest, sealed, id) = put(&mut nodes, &bytes, params);
        assert_eq!(manifest.size, len as u64);
        assert_eq!(manifest.segments.len(), len.div_ceil(1000));
        // A fresh machine: only the id, the sealed manifest (from a node) and the seed.
        let opened = Manifest::open_checked(&id, &sealed, &SEED).expect("open");
        let mut out = Vec::new();
        let mut getter = Getter::new(opened, &SEED);
        getter.write_to(&mut nodes, &mut out).expect("get");
        assert_eq!(out, bytes, "len {len}");
        assert_eq!(getter.report().missing_count + getter.report().corrupt_count, 0);
    }
}

#[test]
fn lost_and_corrupt_shards_are_reported_and_survived() {
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 4096 };
    let mut nodes = MemoryNodes::new(6);
    let bytes = data(40_000);
    let (manifest, _, _) = put(&mut nodes, &bytes, params);
    // One node down and one shard of segment 0 corrupted on another node: at most 2 bad per segment.
    nodes.down.insert(1);
    let victim = manifest.segments[0].shards[0].clone();
    let node = usize::from(victim.node[0]);
    if let Some(shard) = nodes.shards[node].get_mut(&victim.key) {
        shard[17] ^= 4;
    }
    let dir = scratch("survive");
    let out = dir.join("out.bin");
    let mut getter = Getter::new(manifest.clone(), &SEED);
    let report = getter.get_to_path(&mut nodes, &out).expect("get");
    assert_eq!(std::fs::read(&out).expect("read"), bytes);
    assert_eq!(report.corrupt, vec![(0, 0)]);
    assert!(report.missing_count > 0);
    assert!(report.missing.iter().all(|&(s, i)| manifest.segments[s as usize].shards[i].node == [1; 32]));
    assert_eq!(entries(&dir), vec!["out.bin".to_string()], "no temporary left");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn more_than_m_lost_leaves_no_output() {
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 4096 };
    let mut nodes = MemoryNodes::new(5);
    let bytes = data(20_000);
    let (manifest, _, _) = put(&mut nodes, &bytes, params);
    nodes.down.extend([0, 2, 4]);
    let dir = scratch("lost");
    let out = dir.join("out.bin");
    let err = Getter::new(manifest, &SEED).get_to_path(&mut nodes, &out).unwrap_err();
    assert!(matches!(err, GetError::Files(FilesError::TooFewShards { segment: 0, usable: 2, needed: 3, .. })), "{err}");
    assert!(entries(&dir).is_empty(), "no output, no temporary: {:?}", entries(&dir));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn wrong_key_leaves_no_output_and_keeps_an_existing_file() {
    let params = Params { data_shards: 2, parity_shards: 1, segment_bytes: 4096 };
    let mut nodes = MemoryNodes::new(3);
    let (manifest, sealed, id) = put(&mut nodes, &data(10_000), params);
    assert_eq!(Manifest::open_checked(&id, &sealed, &[4; 32]), Err(FilesError::ManifestSeal));
    // Even holding the manifest, another seed derives another file key.
    let dir = scratch("wrongkey");
    let out = dir.join("out.bin");
    std::fs::write(&out, b"previous").expect("write");
    let err = Getter::new(manifest, &[4; 32]).get_to_path(&mut nodes, &out).unwrap_err();
    assert!(matches!(err, GetError::Files(FilesError::WrongKey { segment: 0 })), "{err}");
    assert_eq!(entries(&dir), vec!["out.bin".to_string()]);
    assert_eq!(std::fs::read(&out).expect("read"), b"previous");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn pipelined_put_builds_the_same_manifest() {
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 1000 };
    let bytes = data(25_500);
    let (manifest, sealed, id) = put(&mut MemoryNodes::new(5), &bytes, params);
    for ahead in [0, 1, 3, 100] {
        let mut nodes = MemoryNodes::new(5);
        let putter = Putter::new(&bytes[..], &SEED, [5; 24], "f.bin".into(), params).expect("putter");
        let done = putter.run_pipelined(&mut nodes, ahead).expect("put");
        assert_eq!((&done.manifest, &done.sealed, &done.file_id), (&manifest, &sealed, &id), "ahead {ahead}");
        let mut out = Vec::new();
        Getter::new(done.manifest, &SEED).write_to(&mut nodes, &mut out).expect("get");
        assert_eq!(out, bytes);
    }
}

/// A sink that fails at its third segment: the pipelined put stops with that error (and its
/// encoding thread ends: the call returns).
#[test]
fn pipelined_put_stops_on_a_sink_error() {
    struct FailThird(MemoryNodes, u32);
    impl files::stream::ShardSink for FailThird {
        type Error = String;
        fn put_segment(&mut self, s: &files::EncodedSegment, r: &mut [files::ShardRef]) -> Result<(), String> {
            self.1 += 1;
            if self.1 == 3 {
                return Err("node gone".into());
            }
            self.0.put_segment(s, r).map_err(|e| format!("{e:?}"))
        }
    }
    let params = Params { data_shards: 2, parity_shards: 1, segment_bytes: 100 };
    let bytes = data(100_000);
    let putter = Putter::new(&bytes[..], &SEED, [5; 24], "f".into(), params).expect("putter");
    let err = putter.run_pipelined(&mut FailThird(MemoryNodes::new(3), 0), 2).unwrap_err();
    assert!(matches!(err, files::stream::PutError::Sink(ref m) if m == "node gone"), "{err}");
}

/// A reader that fails mid-file: the error comes back as Io.
#[test]
fn pipelined_put_reports_read_errors() {
    struct Broken(usize);
    impl std::io::Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0).min(300);
            self.0 -= n;
            Ok(n)
        }
    }
    let params = Params { data_shards: 2, parity_shards: 1, segment_bytes: 1000 };
    let putter = Putter::new(Broken(2500), &SEED, [5; 24], "f".into(), params).expect("putter");
    let err = putter.run_pipelined(&mut MemoryNodes::new(3), 1).unwrap_err();
    assert!(matches!(err, files::stream::PutError::Io(_)), "{err}");
    let putter = Putter::new(Broken(2500), &SEED, [5; 24], "f".into(), params).expect("putter");
    assert!(matches!(putter.run(&mut MemoryNodes::new(3)), Err(files::stream::PutError::Io(_))));
}

/// The pipelined get writes the same bytes and report, and fails the same way, leaving nothing.
#[test]
fn pipelined_get_matches_and_fails_cleanly() {
    let params = Params { data_shards: 3, parity_shards: 2, segment_bytes: 1000 };
    let bytes = data(30_500);
    let mut nodes = MemoryNodes::new(5);
    let (manifest, _, _) = put(&mut nodes, &bytes, params);
    nodes.down.insert(2);
    let dir = scratch("pipelined-get");
    let out = dir.join("out.bin");
    let sequential = Getter::new(manifest.clone(), &SEED).get_to_path(&mut nodes, &out).expect("get");
    for ahead in [0, 1, 4] {
        std::fs::remove_file(&out).expect("rm");
        let report = Getter::new(manifest.clone(), &SEED).get_to_path_pipelined(&mut nodes, &out, ahead).expect("get");
        assert_eq!(report, sequential, "ahead {ahead}");
        assert_eq!(std::fs::read(&out).expect("read"), bytes);
        assert_eq!(entries(&dir), vec!["out.bin".to_string()]);
    }
    std::fs::remove_file(&out).expect("rm");
    // Wrong key: the decoder thread fails at segment 0; nothing is left.
    let err = Getter::new(manifest.clone(), &[4; 32]).get_to_path_pipelined(&mut nodes, &out, 2).unwrap_err();
    assert!(matches!(err, GetError::Files(FilesError::WrongKey { segment: 0 })), "{err}");
    assert!(entries(&dir).is_empty());
    // Three of five nodes down: the fetch side fails; nothing is left.
    nodes.down.extend([0, 4]);
    let err = Getter::new(manifest, &SEED).get_to_path_pipelined(&mut nodes, &out, 2).unwrap_err();
    assert!(matches!(err, GetError::Files(FilesError::TooFewShards { segment: 0, usable: 2, needed: 3, .. })), "{err}");
    assert!(entries(&dir).is_empty());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn too_few_nodes_is_a_sink_error() {
    let params = Params { data_shards: 4, parity_shards: 2, segment_bytes: 4096 };
    let mut nodes = MemoryNodes::new(5);
    let bytes = data(100);
    let putter = Putter::new(&bytes[..], &SEED, [5; 24], "f".into(), params).expect("putter");
    assert!(putter.run(&mut nodes).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random sizes and parameters; a random set of up to M nodes down (placement rotates, so
    /// each segment loses at most M shards) or M + 1 nodes down (some segment is then lost,
    /// unless the file is empty): the bytes come back exactly, or the get fails with a typed error.
    #[test]
    fn put_get_with_random_losses(
        len in 0usize..20_000,
        k in 1u8..=5,
        m in 1u8..=3,
        segment_bytes in 64u32..5000,
        down_seed in any::<u64>(),
        too_many in any::<bool>(),
    ) {
        let params = Params { data_shards: k, parity_shards: m, segment_bytes };
        let total = k + m;
        let mut nodes = MemoryNodes::new(total);
        let bytes = data(len);
        let (manifest, _, _) = put(&mut nodes, &bytes, params);
        let lose = if too_many { usize::from(m) + 1 } else { down_seed as usize % (usize::from(m) + 1) };
        let first = (down_seed >> 8) as usize % usize::from(total);
        nodes.down.extend((0..lose).map(|i| (first + i) % usize::from(total)));
        let mut out = Vec::new();
        let result = Getter::new(manifest, &SEED).write_to(&mut nodes, &mut out);
        if lose <= usize::from(m) || len == 0 {
            prop_assert!(result.is_ok(), "{:?}", result.err());
            prop_assert_eq!(out, bytes);
        } else {
            let lost = matches!(result, Err(GetError::Files(FilesError::TooFewShards { .. })));
            prop_assert!(lost);
        }
    }
}
