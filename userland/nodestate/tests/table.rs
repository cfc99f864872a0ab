//! The workload table: encoding round trips, hostile bytes never panic, and shard
//! references are counted across entries.

use nodestate::workloads::{
    Desired, Entry, FileEntry, FileKind, FileMeta, TableError, WorkloadTable, ID_LIMIT, MAX_ENTRIES, MAX_FILES_PER_ENTRY,
    MAX_FILE_NAME_BYTES, MAX_NAME_BYTES_PER_ENTRY, MAX_SIGNED_MANIFEST_BYTES, MAX_TABLE_BYTES,
};
use proptest::prelude::*;

/// Cases per property: `default`, or `GRIDOS_FUZZ_CASES` for a long run (README "Fuzzing").
fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("GRIDOS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    ProptestConfig::with_cases(n)
}

fn entry(id: u64) -> Entry {
    Entry {
        id,
        signed_manifest: b"m".to_vec(),
        module_key: [1; 32],
        bundle_key: [2; 32],
        restart_on_boot: true,
        desired: Desired::Run,
        files: Vec::new(),
    }
}

fn table() -> WorkloadTable {
    let mut t = WorkloadTable::default();
    let a = t.add(b"manifest a".to_vec(), [1; 32], [2; 32], true);
    let b = t.add(b"manifest b".to_vec(), [1; 32], [3; 32], false);
    t.get_mut(a).unwrap().set_file("runs", [9; 32], 2);
    t.get_mut(b).unwrap().desired = Desired::Stopped;
    t
}

#[test]
fn round_trip_and_ids_never_reused() {
    let mut t = table();
    assert_eq!(WorkloadTable::decode(&t.encode()), Ok(t.clone()));
    let removed = t.remove(1).unwrap();
    assert_eq!(removed.bundle_key, [3; 32]);
    assert_eq!(t.add(Vec::new(), [4; 32], [5; 32], false), 2);
    assert_eq!(t.to_start_at_boot().map(|e| e.id).collect::<Vec<_>>(), vec![0]);
}

#[test]
fn shared_shards_stay_referenced() {
    let mut t = table();
    let removed = t.remove(0).unwrap();
    // The module shard is shared with workload 1; the bundle and the file are not.
    assert_eq!(t.unreferenced(removed.keys()), vec![[2; 32], [9; 32]]);
}

#[test]
fn files_replace_and_remove() {
    let mut t = table();
    let e = t.get_mut(0).unwrap();
    assert_eq!(e.set_file("runs", [7; 32], 3), Some([9; 32]));
    assert_eq!(e.set_file("a", [6; 32], 1), None);
    assert_eq!(e.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), vec!["a", "runs"]);
    assert_eq!(e.remove_file("a"), Some([6; 32]));
    assert_eq!(e.remove_file("a"), None);
}

/// The file area's rename (issue 17): names move, shards stay, all or nothing.
#[test]
fn renames_move_names_atomically() {
    let mut t = table();
    let e = t.get_mut(0).unwrap();
    e.set_file("d/", [8; 32], 0);
    e.set_file("d/x", [6; 32], 5);
    e.set_file("e/", [8; 32], 0);
    let mv = |a: &str, b: &str| (a.to_string(), b.to_string());
    // A directory onto an empty one: the marker replaced (same shard), the child moved.
    assert_eq!(e.rename_files(&[mv("d/", "e/"), mv("d/x", "e/x")]), Ok(vec![[8; 32]]));
    assert_eq!(e.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), vec!["e/", "e/x", "runs"]);
    assert_eq!(e.file("e/x").map(|f| (f.key, f.len_bytes)), Some(([6; 32], 5)));
    // A file onto a file returns the replaced shard.
    assert_eq!(e.rename_files(&[mv("e/x", "runs")]), Ok(vec![[9; 32]]));
    assert_eq!(e.file("runs").map(|f| f.key), Some([6; 32]));
    // A missing source or a bad target changes nothing.
    let before = e.clone();
    assert_eq!(e.rename_files(&[mv("e/", "f/"), mv("nope", "g")]), Err(TableError::BadFiles));
    assert_eq!(e.rename_files(&[mv("runs", &"n".repeat(MAX_FILE_NAME_BYTES + 1))]), Err(TableError::BadFiles));
    assert_eq!(e.rename_files(&[mv("runs", "dir/")]), Err(TableError::BadFiles));
    assert_eq!(e.rename_files(&[mv("runs", "")]), Err(TableError::BadFiles));
    assert_eq!(*e, before);
    assert_eq!(WorkloadTable::decode(&t.encode()), Ok(t.clone()));
}

#[test]
fn other_versions_and_trailing_bytes_are_refused() {
    let mut bytes = table().encode();
    bytes[0] = 7;
    assert_eq!(WorkloadTable::decode(&bytes), Err(TableError::UnsupportedVersion(7)));
    let mut bytes = table().encode();
    bytes.push(0);
    assert_eq!(WorkloadTable::decode(&bytes), Err(TableError::Malformed));
}

/// Issue 10 item 8: a forged table with `next_id = u64::MAX` decoded, and the next
/// deploy wrapped the id (or panicked). It is refused now, and ids stop at the limit.
#[test]
fn forged_next_id_is_refused_and_ids_never_wrap() {
    let forged = WorkloadTable { next_id: u64::MAX, entries: vec![entry(5)] };
    assert_eq!(WorkloadTable::decode(&forged.encode()), Err(TableError::IdsExhausted));
    let forged = WorkloadTable { next_id: ID_LIMIT + 1, entries: vec![] };
    assert_eq!(WorkloadTable::decode(&forged.encode()), Err(TableError::IdsExhausted));
    // At the limit exactly the table is valid, but no id is left.
    let mut t = WorkloadTable::decode(&WorkloadTable { next_id: ID_LIMIT, entries: vec![entry(ID_LIMIT - 1)] }.encode()).unwrap();
    assert_eq!(t.try_add(Vec::new(), [0; 32], [0; 32], false), Err(TableError::IdsExhausted));
    assert_eq!(t.add(Vec::new(), [0; 32], [0; 32], false), u64::MAX);
    assert_eq!((t.next_id, t.entries.len()), (ID_LIMIT, 1));
    let mut t = WorkloadTable { next_id: ID_LIMIT - 1, entries: vec![] };
    assert_eq!(t.try_add(Vec::new(), [0; 32], [0; 32], false), Ok(ID_LIMIT - 1));
    assert_eq!(WorkloadTable::decode(&t.encode()), Ok(t));
}

#[test]
fn duplicate_unordered_and_future_ids_are_refused() {
    for ids in [&[3, 3][..], &[4, 2], &[1, 9]] {
        let t = WorkloadTable { next_id: 9, entries: ids.iter().map(|&id| entry(id)).collect() };
        assert_eq!(WorkloadTable::decode(&t.encode()), Err(TableError::BadIds), "{ids:?}");
    }
}

#[test]
fn sizes_and_counts_from_disk_are_bounded() {
    // Too many entries, though each is tiny.
    let t = WorkloadTable { next_id: MAX_ENTRIES as u64 + 1, entries: (0..=MAX_ENTRIES as u64).map(entry).collect() };
    assert_eq!(WorkloadTable::decode(&t.encode()), Err(TableError::TooManyEntries));
    let mut t = WorkloadTable { next_id: MAX_ENTRIES as u64, entries: (0..MAX_ENTRIES as u64).map(entry).collect() };
    assert_eq!(WorkloadTable::decode(&t.encode()).map(|t| t.entries.len()), Ok(MAX_ENTRIES));
    assert_eq!(t.try_add(Vec::new(), [0; 32], [0; 32], false), Err(TableError::TooManyEntries));
    // Input longer than a slot, and a manifest larger than any signed manifest.
    assert_eq!(WorkloadTable::decode(&vec![1; MAX_TABLE_BYTES + 1]), Err(TableError::TooLarge));
    let mut big = entry(0);
    big.signed_manifest = vec![0; MAX_SIGNED_MANIFEST_BYTES + 1];
    let t = WorkloadTable { next_id: 1, entries: vec![big.clone()] };
    assert_eq!(WorkloadTable::decode(&t.encode()), Err(TableError::TooLarge));
    let mut t = WorkloadTable::default();
    assert_eq!(t.try_add(big.signed_manifest, [0; 32], [0; 32], false), Err(TableError::TooLarge));
    // Files: unsorted, duplicated, too many, bad names or lengths.
    let file = |name: &str, len_bytes| FileEntry { name: name.into(), key: [3; 32], len_bytes, meta: FileMeta::for_name(name) };
    let linked = |name: &str, key: u8, ino| FileEntry { name: name.into(), key: [key; 32], len_bytes: 1, meta: FileMeta { ino, ..FileMeta::default() } };
    let mut not_a_dir = file("d/", 0);
    not_a_dir.meta.kind = FileKind::Regular;
    let long = |c: char| c.to_string().repeat(MAX_FILE_NAME_BYTES);
    let bad_lists = [
        vec![file("b", 1), file("a", 1)],
        vec![file("a", 1), file("a", 2)],
        vec![file("", 1)],
        vec![file(&"n".repeat(MAX_FILE_NAME_BYTES + 1), 1)],
        vec![file("a", u64::MAX)],
        (0..=MAX_FILES_PER_ENTRY).map(|i| file(&format!("f{i:04}"), 1)).collect(),
        // Names within bounds one by one, too many bytes together.
        ('a'..='q').map(long).map(|n| file(&n, 1)).collect(),
        vec![not_a_dir, file("e", 0)],
        // Hard links that disagree on their contents.
        vec![linked("a", 1, 7), linked("b", 2, 7)],
    ];
    for files in bad_lists {
        let mut e = entry(0);
        e.files = files;
        let t = WorkloadTable { next_id: 1, entries: vec![e] };
        assert_eq!(WorkloadTable::decode(&t.encode()), Err(TableError::BadFiles));
    }
    // try_set_file keeps an honest entry decodable.
    let mut e = entry(0);
    for i in 0..MAX_FILES_PER_ENTRY {
        assert_eq!(e.try_set_file(&format!("f{i:04}"), [4; 32], 1), Ok(None));
    }
    assert_eq!(e.try_set_file("one-more", [4; 32], 1), Err(TableError::BadFiles));
    assert_eq!(e.try_set_file("f0000", [5; 32], 2), Ok(Some([4; 32])));
    assert_eq!(e.try_set_file("", [5; 32], 2), Err(TableError::BadFiles));
    assert_eq!(e.try_set_file("big", [5; 32], u64::MAX), Err(TableError::BadFiles));
    let t = WorkloadTable { next_id: 1, entries: vec![e] };
    assert_eq!(WorkloadTable::decode(&t.encode()), Ok(t));
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    let file = ("[a-z]{0,3}/?", any::<[u8; 32]>(), prop_oneof![0u64..10, Just(u64::MAX)], 0u64..3, any::<bool>())
        .prop_map(|(name, key, len_bytes, ino, symlink)| {
            let mut meta = FileMeta::for_name(&name);
            meta.ino = ino;
            if symlink {
                meta.kind = FileKind::Symlink;
            }
            FileEntry { name, key, len_bytes, meta }
        });
    (
        prop_oneof![0u64..6, Just(u64::MAX - 1)],
        proptest::collection::vec(any::<u8>(), 0..8),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(file, 0..4),
    )
        .prop_map(|(id, signed_manifest, restart_on_boot, stopped, files)| Entry {
            id,
            signed_manifest,
            module_key: [1; 32],
            bundle_key: [2; 32],
            restart_on_boot,
            desired: if stopped { Desired::Stopped } else { Desired::Run },
            files,
        })
}

proptest! {
    #![proptest_config(cases(256))]

    /// Fuzz target (workload table decoder), structured: any table, valid or not,
    /// encodes; it decodes back to itself exactly when it is valid, and to the
    /// validation error otherwise.
    #[test]
    fn decode_of_encode_is_identity_for_valid_tables_and_typed_error_otherwise(
        next_id in prop_oneof![0u64..8, Just(ID_LIMIT), Just(u64::MAX)],
        entries in proptest::collection::vec(arb_entry(), 0..5),
    ) {
        let t = WorkloadTable { next_id, entries };
        match t.validate() {
            Ok(()) => prop_assert_eq!(WorkloadTable::decode(&t.encode()), Ok(t)),
            Err(e) => prop_assert_eq!(WorkloadTable::decode(&t.encode()), Err(e)),
        }
    }

    /// Fuzz target (workload table decoder), raw bytes: never panics; whatever decodes
    /// is valid and survives a round trip (bytes may differ: postcard varints).
    #[test]
    fn decode_never_panics_and_accepts_only_valid_tables(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(t) = WorkloadTable::decode(&bytes) {
            prop_assert_eq!(t.validate(), Ok(()));
            prop_assert_eq!(WorkloadTable::decode(&t.encode()), Ok(t));
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = WorkloadTable::decode(&bytes);
    }

    /// Fuzz target (workload table decoder), near-valid bytes: flips in a real
    /// encoding never panic, and whatever still decodes is valid.
    #[test]
    fn decode_of_mutated_encodings_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = table().encode();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        if let Ok(t) = WorkloadTable::decode(&bytes) {
            prop_assert_eq!(t.validate(), Ok(()));
        }
    }
}

/// Long names, many names: the bounds of issue 17 hold one by one and together.
#[test]
fn long_names_and_many_names_are_bounded_per_entry() {
    let mut e = entry(0);
    let long = "p".repeat(MAX_FILE_NAME_BYTES);
    assert_eq!(e.try_set_file(&long, [1; 32], 1), Ok(None));
    assert_eq!(e.try_set_file(&(long.clone() + "q"), [1; 32], 1), Err(TableError::BadFiles));
    // Names of the longest length until the bytes of names run out.
    let fit = MAX_NAME_BYTES_PER_ENTRY / MAX_FILE_NAME_BYTES;
    for i in 1..fit {
        let name = format!("{i:02}{}", &long[2..]);
        assert_eq!(e.try_set_file(&name, [1; 32], 1), Ok(None), "{i}");
    }
    assert_eq!(e.try_set_file(&format!("zz{}", &long[2..]), [1; 32], 1), Err(TableError::BadFiles));
    assert!(e.name_bytes() <= MAX_NAME_BYTES_PER_ENTRY);
    // A rename past the bytes of names is refused too, changing nothing.
    let before = e.clone();
    assert_eq!(e.rename_files(&[(long.clone(), "short".into())]), Ok(vec![]));
    assert_eq!(e.try_set_file(&long, [1; 32], 1), Ok(None));
    assert_eq!(e.rename_files(&[("short".into(), format!("zz{}", &long[2..]))]), Err(TableError::BadFiles));
    assert_eq!(e.files.len(), before.files.len() + 1);
    let t = WorkloadTable { next_id: 1, entries: vec![e] };
    assert_eq!(WorkloadTable::decode(&t.encode()), Ok(t));
}

/// Hard links share contents and metadata; symlinks and directories keep their kind.
#[test]
fn hard_links_share_contents_and_metadata() {
    let mut t = table();
    let e = t.get_mut(0).unwrap();
    let meta = FileMeta { kind: FileKind::Regular, ino: 5, atim_ns: 1, mtim_ns: 2, ctim_ns: 3 };
    e.link_file("runs", "alias", meta).unwrap();
    assert_eq!(e.file("alias").map(|f| (f.key, f.len_bytes, f.meta)), Some(([9; 32], 2, meta)));
    assert_eq!(e.file("runs").map(|f| f.meta), Some(meta));
    // Writing through one name (set_file, as `gridctl files put` and the area do)
    // changes both; the old shard is replaced once, and is unreferenced afterwards.
    assert_eq!(e.set_file("alias", [7; 32], 4), Some([9; 32]));
    assert_eq!(e.file("runs").map(|f| (f.key, f.len_bytes)), Some(([7; 32], 4)));
    assert!(!t.references(&[9; 32]));
    let e = t.get_mut(0).unwrap();
    let later = FileMeta { mtim_ns: 9, ..meta };
    e.set_meta("runs", later).unwrap();
    assert_eq!(e.file("alias").map(|f| f.meta), Some(later));
    // Removing one name leaves the other.
    assert_eq!(e.remove_file("runs"), Some([7; 32]));
    assert!(t.references(&[7; 32]));
    let e = t.get_mut(0).unwrap();
    // Refused: missing source, existing target, a directory, inode 0 or another inode,
    // a kind change, a directory kind without the slash.
    let dir = FileMeta { kind: FileKind::Directory, ..FileMeta::default() };
    assert_eq!(e.try_set_file_meta("d/", [8; 32], 0, dir), Ok(None));
    assert_eq!(e.link_file("nope", "x", meta), Err(TableError::BadFiles));
    assert_eq!(e.link_file("alias", "d/", meta), Err(TableError::BadFiles));
    assert_eq!(e.link_file("d/", "x", FileMeta { ino: 6, ..dir }), Err(TableError::BadFiles));
    assert_eq!(e.link_file("alias", "x", FileMeta { ino: 0, ..later }), Err(TableError::BadFiles));
    assert_eq!(e.link_file("alias", "x", FileMeta { ino: 6, ..later }), Err(TableError::BadFiles));
    assert_eq!(e.set_meta("alias", FileMeta { kind: FileKind::Symlink, ..later }), Err(TableError::BadFiles));
    assert_eq!(e.try_set_file_meta("f", [8; 32], 0, dir), Err(TableError::BadFiles));
    let link = FileMeta { kind: FileKind::Symlink, ino: 11, ..FileMeta::default() };
    assert_eq!(e.try_set_file_meta("l", [6; 32], 3, link), Ok(None));
    assert_eq!(e.try_set_file_meta("l", [6; 32], 3, FileMeta { kind: FileKind::Regular, ..link }), Err(TableError::BadFiles));
    assert_eq!(WorkloadTable::decode(&t.encode()), Ok(t.clone()));
}

/// A version 1 table (before file metadata) decodes and upgrades.
#[test]
fn version_1_tables_upgrade() {
    #[derive(serde::Serialize)]
    struct F1 {
        name: String,
        key: [u8; 32],
        len_bytes: u64,
    }
    #[derive(serde::Serialize)]
    struct E1 {
        id: u64,
        signed_manifest: Vec<u8>,
        module_key: [u8; 32],
        bundle_key: [u8; 32],
        restart_on_boot: bool,
        desired: Desired,
        files: Vec<F1>,
    }
    #[derive(serde::Serialize)]
    struct T1 {
        version: u32,
        next_id: u64,
        entries: Vec<E1>,
    }
    let files = vec![F1 { name: "d/".into(), key: [8; 32], len_bytes: 0 }, F1 { name: "d/x".into(), key: [6; 32], len_bytes: 5 }];
    let e = E1 { id: 0, signed_manifest: b"m".to_vec(), module_key: [1; 32], bundle_key: [2; 32], restart_on_boot: true, desired: Desired::Run, files };
    let bytes = postcard::to_allocvec(&T1 { version: 1, next_id: 1, entries: vec![e] }).unwrap();
    let t = WorkloadTable::decode(&bytes).unwrap();
    let e = t.get(0).unwrap();
    assert_eq!(e.file("d/").map(|f| f.meta.kind), Some(FileKind::Directory));
    assert_eq!(e.file("d/x").map(|f| (f.key, f.len_bytes, f.meta)), Some(([6; 32], 5, FileMeta::default())));
    // Written back as the current version.
    assert_eq!(WorkloadTable::decode(&t.encode()), Ok(t.clone()));
    assert_eq!(t.encode()[0], 2);
    let mut bytes = bytes;
    bytes.push(0);
    assert_eq!(WorkloadTable::decode(&bytes), Err(TableError::Malformed));
}

/// The files of entry 0 as (name, key), to compare states.
fn names(t: &WorkloadTable) -> Vec<(String, [u8; 32])> {
    t.get(0).map(|e| e.files.iter().map(|f| (f.name.clone(), f.key)).collect()).unwrap_or_default()
}

proptest! {
    #![proptest_config(cases(200))]

    /// Issue 17: a kill in the middle of a rename or a link loses no name. The area's
    /// renames (a whole directory, a file onto another) and links are table commits in
    /// the A/B slots; the power is cut after a random request with a random part of the
    /// unflushed sectors landing. After the crash the table is exactly the state before
    /// the operation in flight or after it, so every file is under its old name or its
    /// new one (never neither), and a link is there whole or not at all.
    #[test]
    fn a_crash_during_renames_and_links_loses_no_name(cut_after in 0u64..24, landed in 0usize..64, keep_seed in any::<u64>()) {
        use blockdev::mem::MemDisk;
        use nodestate::record::{Loaded, SlotPair};
        const SLOT_SECTORS: u64 = 64;
        let mut disk = MemDisk::new(2 + 2 * SLOT_SECTORS);
        let mut slots = SlotPair::new(2, SLOT_SECTORS);
        let mut t = WorkloadTable::default();
        let id = t.add(b"m".to_vec(), [1; 32], [2; 32], true);
        let e = t.get_mut(id).unwrap();
        e.set_file("tree/", [3; 32], 0);
        for i in 0..40u8 {
            e.set_file(&format!("tree/f{i:02}"), [i + 10; 32], 1);
        }
        e.set_file("x", [99; 32], 1);
        slots.store(&mut disk, &t.encode()).unwrap();
        disk.power_cut_after(cut_after, landed);
        let mv = |a: &str, b: &str| (a.to_string(), b.to_string());
        let mut states = vec![t.clone()];
        let mut in_flight = false;
        let link = FileMeta { ino: 4, ..FileMeta::default() };
        for step in 0..6 {
            let mut next = states.last().unwrap().clone();
            let e = next.get_mut(id).unwrap();
            match step % 3 {
                0 => {
                    let (from, to) = if step == 0 { ("tree", "moved") } else { ("moved", "tree") };
                    let moves: Vec<(String, String)> = e.files.iter().filter(|f| f.name.starts_with(&format!("{from}/")))
                        .map(|f| mv(&f.name, &format!("{to}{}", &f.name[from.len()..]))).collect();
                    e.rename_files(&moves).unwrap();
                }
                1 => e.link_file("x", &format!("x{step}"), link).unwrap(),
                _ => { e.rename_files(&[mv(&format!("x{}", step - 1), "x")]).unwrap(); }
            }
            match slots.store(&mut disk, &next.encode()) {
                Ok(()) => states.push(next),
                Err(_) => {
                    states.push(next);
                    in_flight = true;
                    break;
                }
            }
        }
        disk.crash_keeping(keep_seed);
        let got = match SlotPair::new(2, SLOT_SECTORS).load(&mut disk).unwrap() {
            Loaded::Value { payload, .. } => WorkloadTable::decode(&payload).unwrap(),
            other => panic!("{other:?}"),
        };
        // The last acknowledged state or the one in flight, nothing else.
        let n = states.len();
        let ok = names(&got) == names(&states[n - 1]) || (in_flight && names(&got) == names(&states[n - 2]));
        prop_assert!(ok, "a state that was never committed: {:?}", names(&got));
        // So every file's shard is still named: 40 tree files, the tree, x.
        for key in (10..50u8).map(|i| [i; 32]).chain([[3; 32], [99; 32]]) {
            prop_assert!(got.references(&key), "shard {} lost its name", key[0]);
        }
    }
}
