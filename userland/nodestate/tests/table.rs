//! The workload table: encoding round trips, hostile bytes never panic, and shard
//! references are counted across entries.

use nodestate::workloads::{Desired, TableError, WorkloadTable};
use proptest::prelude::*;

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

#[test]
fn other_versions_and_trailing_bytes_are_refused() {
    let mut bytes = table().encode();
    bytes[0] = 7;
    assert_eq!(WorkloadTable::decode(&bytes), Err(TableError::UnsupportedVersion(7)));
    let mut bytes = table().encode();
    bytes.push(0);
    assert_eq!(WorkloadTable::decode(&bytes), Err(TableError::Malformed));
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = WorkloadTable::decode(&bytes);
    }

    #[test]
    fn decode_of_mutated_encodings_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = table().encode();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        let _ = WorkloadTable::decode(&bytes);
    }
}
