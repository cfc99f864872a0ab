//! Crash tests: random put/delete/compaction sequences with a power cut at a random
//! request, a random subset of the unflushed sectors landing (torn writes), then a
//! remount that must show exactly the acknowledged state.
//!
//! Some phases also have a transient glitch: one request fails, the device carries on,
//! and the store must keep its promises across that error too.
//!
//! Shards belong to three owners, and the same bytes are often stored by several of
//! them: each `(owner, key)` is its own shard, and after every remount each owner's
//! usage (rebuilt from record headers) must match the model.
//!
//! The model tracks, per `(owner, key)`, what the store may show after a crash: `Present` (an
//! acknowledged put), `Absent` (an acknowledged delete, or never stored), or `Maybe`
//! (the last operation on it failed: either outcome is allowed, but bytes, if any, must
//! be the shard's). After each remount the model settles `Maybe` to what was observed.

mod common;

use common::OWNER;
use shardstore::{Owner, NODE_OWNER};

use std::collections::BTreeMap;

use blockdev::mem::MemDisk;
use common::{fresh, fresh_with_blocks, shard};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use shardstore::{Error, Key, OwnerUsage, ShardStore};

/// The owners of the crash tests' shards: `Op::Put::owner` indexes this.
const OWNERS: [Owner; 3] = [OWNER, [0x44; 32], NODE_OWNER];

/// A shard's name in the model.
type Name = (Owner, Key);

/// Disk size of the crash tests: small, so that the log wraps and compaction runs often.
const DISK_SECTORS: u64 = 96;
/// Crash-and-remount phases per test case.
const PHASES_PER_CASE: usize = 4;
/// Test cases per run; with `PHASES_PER_CASE` this gives the crash points per run.
const CASES: u32 = 500;
/// At least this many phases must end in a power cut that actually fired.
const CRASH_POINTS_MIN: u64 = 1000;

#[derive(Debug, Clone)]
enum Op {
    Put { seed: u64, len_bytes: usize, owner: usize },
    Delete { pick: usize },
    Reput { pick: usize },
    Compact { records: usize },
}

#[derive(Debug, Clone)]
struct Phase {
    ops: Vec<Op>,
    cut_after_requests: u64,
    landed_sectors: usize,
    keep_seed: u64,
    glitch: Option<(u64, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Present(Vec<u8>),
    Absent,
    Maybe(Vec<u8>),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..40, 0usize..3000, 0..OWNERS.len()).prop_map(|(seed, len_bytes, owner)| Op::Put { seed, len_bytes, owner }),
        3 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Reput { pick }),
        1 => (1usize..8).prop_map(|records| Op::Compact { records }),
    ]
}

fn phase_strategy() -> impl Strategy<Value = Phase> {
    let glitch = prop::option::weighted(0.4, (0u64..12, 0usize..8));
    (prop::collection::vec(op_strategy(), 4..12), 0u64..16, 0usize..8, any::<u64>(), glitch).prop_map(
        |(ops, cut_after_requests, landed_sectors, keep_seed, glitch)| Phase {
            ops,
            cut_after_requests,
            landed_sectors,
            keep_seed,
            glitch,
        },
    )
}

/// Shard contents depend on (seed, len): the same seed with another length is another key.
fn shard_for(seed: u64, len_bytes: usize) -> (Key, Vec<u8>) {
    shard(seed * 4096 + len_bytes as u64, len_bytes)
}

/// Runs the ops until the device dies (returns true) or to the end (false). A failed
/// request that leaves the device alive (a glitch) does not stop the run.
fn run_ops(store: &mut ShardStore<MemDisk>, model: &mut BTreeMap<Name, Expect>, ops: &[Op]) -> bool {
    for op in ops {
        let outcome = match op {
            Op::Put { seed, len_bytes, owner } => {
                let (key, bytes) = shard_for(*seed, *len_bytes);
                put(store, model, (OWNERS[*owner], key), bytes)
            }
            Op::Reput { pick } => {
                let known: Vec<(Name, Vec<u8>)> = model
                    .iter()
                    .filter_map(|(name, expect)| match expect {
                        Expect::Present(bytes) | Expect::Maybe(bytes) => Some((*name, bytes.clone())),
                        Expect::Absent => None,
                    })
                    .collect();
                if known.is_empty() {
                    continue;
                }
                let (name, bytes) = known[pick % known.len()].clone();
                put(store, model, name, bytes)
            }
            Op::Delete { pick } => {
                let present: Vec<Name> =
                    OWNERS.iter().flat_map(|owner| store.list(owner).into_iter().map(|key| (*owner, key))).collect();
                if present.is_empty() {
                    continue;
                }
                let name = present[pick % present.len()];
                let before = model.get(&name).cloned().unwrap_or(Expect::Absent);
                let result = store.delete(&name.0, &name.1);
                match (&result, before) {
                    (Ok(()), _) => {
                        model.insert(name, Expect::Absent);
                    }
                    (Err(Error::Device(_)), Expect::Present(bytes) | Expect::Maybe(bytes)) => {
                        model.insert(name, Expect::Maybe(bytes));
                    }
                    (Err(error), _) => assert!(matches!(error, Error::Device(_) | Error::NoSpace), "{error:?}"),
                }
                result.map(|_| ())
            }
            Op::Compact { records } => store.compact(*records).map(|_| ()),
        };
        match outcome {
            Ok(()) | Err(Error::NoSpace) => {}
            Err(Error::Device(_)) if store.device().is_failed() => return true,
            Err(Error::Device(_)) => {}
            Err(error) => panic!("unexpected error {error:?}"),
        }
    }
    false
}

fn put(store: &mut ShardStore<MemDisk>, model: &mut BTreeMap<Name, Expect>, name: Name, bytes: Vec<u8>) -> Result<(), Error> {
    let result = store.put(&name.0, name.1, &bytes);
    let before = model.get(&name).cloned().unwrap_or(Expect::Absent);
    match (&result, before) {
        (Ok(()), _) => {
            model.insert(name, Expect::Present(bytes));
        }
        (Err(Error::Device(_)), Expect::Present(_)) => {}
        (Err(Error::Device(_)), _) => {
            model.insert(name, Expect::Maybe(bytes));
        }
        (Err(_), _) => {}
    }
    result
}

/// Remount checks; settles `Maybe` entries to what the store shows.
fn check(store: &mut ShardStore<MemDisk>, model: &mut BTreeMap<Name, Expect>) -> Result<(), TestCaseError> {
    for owner in &OWNERS {
        for key in store.list(owner) {
            prop_assert!(model.contains_key(&(*owner, key)), "a shard that was never put appeared");
        }
    }
    for (name, expect) in model.iter_mut() {
        let got = store.get(&name.0, &name.1);
        match expect.clone() {
            Expect::Present(bytes) => prop_assert_eq!(got, Ok(bytes), "acknowledged shard lost"),
            Expect::Absent => prop_assert_eq!(got, Err(Error::NotFound), "deleted shard came back"),
            Expect::Maybe(bytes) => match got {
                Ok(read) => {
                    prop_assert_eq!(read, bytes.clone());
                    *expect = Expect::Present(bytes);
                }
                Err(Error::NotFound) => *expect = Expect::Absent,
                Err(error) => return Err(TestCaseError::fail(format!("unacknowledged shard: {error:?}"))),
            },
        }
    }
    let live = model.values().filter(|expect| matches!(expect, Expect::Present(_))).count() as u64;
    prop_assert_eq!(store.stat().shard_count, live);
    // Each owner's usage, rebuilt from record headers, is what the model holds.
    let mut owners_holding = 0;
    for owner in &OWNERS {
        let mut expected = OwnerUsage::default();
        for ((_, _), expect) in model.range((*owner, [0u8; 32])..=(*owner, [0xff; 32])) {
            if let Expect::Present(bytes) = expect {
                expected.shards += 1;
                expected.bytes += bytes.len() as u64;
            }
        }
        prop_assert_eq!(store.owner_usage(owner), expected, "owner usage differs from the model");
        owners_holding += usize::from(expected.shards > 0);
    }
    prop_assert_eq!(store.owner_count(), owners_holding);
    Ok(())
}

/// Disk shape of a crash-test run.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    disk_sectors: u64,
    block_sectors: u32,
    /// Shard lengths of the generated ops are multiplied by this.
    len_scale: usize,
}

/// Single-sector records on a 96-sector disk (72 log sectors).
const SMALL_SECTORS: Geometry = Geometry { disk_sectors: DISK_SECTORS, block_sectors: 1, len_scale: 1 };
/// 4 KiB records on a disk of 93 log blocks, with shards of up to 3 blocks.
const BLOCKS_4K: Geometry = Geometry { disk_sectors: 24 + 93 * 8, block_sectors: 8, len_scale: 4 };

/// Runs the phases (each ends in a crash and a checked remount); returns the store and
/// the number of power cuts that fired.
fn run_phases(phases: &[Phase], geometry: Geometry) -> Result<(ShardStore<MemDisk>, u64), TestCaseError> {
    let mut store = fresh_with_blocks(geometry.disk_sectors, geometry.block_sectors);
    let scaled: Vec<Phase> = phases
        .iter()
        .map(|phase| Phase {
            ops: phase
                .ops
                .iter()
                .map(|op| match op {
                    Op::Put { seed, len_bytes, owner } => {
                        Op::Put { seed: *seed, len_bytes: len_bytes * geometry.len_scale, owner: *owner }
                    }
                    other => other.clone(),
                })
                .collect(),
            ..phase.clone()
        })
        .collect();
    let phases = &scaled[..];
    let mut model = BTreeMap::new();
    let mut crash_points = 0;
    for phase in phases {
        store.device_mut().power_cut_after(phase.cut_after_requests, phase.landed_sectors);
        if let Some((after_requests, landed_sectors)) = phase.glitch {
            store.device_mut().glitch_after(after_requests, landed_sectors);
        }
        if run_ops(&mut store, &mut model, &phase.ops) {
            crash_points += 1;
        }
        let mut disk = store.into_device();
        disk.crash_keeping(phase.keep_seed);
        store = match ShardStore::mount(disk) {
            Ok(store) => store,
            Err(error) => return Err(TestCaseError::fail(format!("remount failed: {error:?}"))),
        };
        check(&mut store, &mut model)?;
    }
    Ok((store, crash_points))
}

fn run_case(phases: &[Phase], geometry: Geometry) -> Result<u64, TestCaseError> {
    let (mut store, crash_points) = run_phases(phases, geometry)?;
    // The store still takes writes after the last crash: at once, or once shards are
    // deleted to make room (at the latest when it is empty).
    let (key, bytes) = shard(u64::MAX, 700);
    loop {
        match store.put(&OWNER, key, &bytes) {
            Ok(()) => break,
            // Any owner's shard makes room (the other owners' shards fill a small log too).
            Err(Error::NoSpace) => {
                let owners: Vec<_> = store.owners().copied().collect();
                let Some((owner, victim)) =
                    owners.iter().find_map(|owner| store.list(owner).first().map(|key| (*owner, *key)))
                else {
                    return Err(TestCaseError::fail("NoSpace on an empty store"));
                };
                store.delete(&owner, &victim).map_err(|error| TestCaseError::fail(format!("{error:?}")))?;
            }
            Err(error) => return Err(TestCaseError::fail(format!("put after crash: {error:?}"))),
        }
    }
    prop_assert_eq!(store.get(&OWNER, &key), Ok(bytes));
    Ok(crash_points)
}

#[test]
fn crash_at_random_points_keeps_acknowledged_state() {
    crash_at_random_points(SMALL_SECTORS, CASES, CRASH_POINTS_MIN);
}

#[test]
fn crash_at_random_points_with_4k_blocks() {
    crash_at_random_points(BLOCKS_4K, CASES / 2, CRASH_POINTS_MIN / 2);
}

fn crash_at_random_points(geometry: Geometry, cases: u32, crash_points_min: u64) {
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let crash_points = std::cell::Cell::new(0u64);
    let strategy = prop::collection::vec(phase_strategy(), PHASES_PER_CASE);
    let result = runner.run(&strategy, |phases| {
        let fired = run_case(&phases, geometry)?;
        crash_points.set(crash_points.get() + fired);
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!("{geometry:?}: {} crash points", crash_points.get());
    assert!(crash_points.get() >= crash_points_min, "only {} crash points", crash_points.get());
}

/// A put/delete/re-put/compact history that goes round the 96-sector log several times.
fn fixed_history(length: u64) -> Vec<Op> {
    (0..length)
        .flat_map(|index| {
            // Consecutive puts store the same bytes for two owners.
            let seed = index / 2;
            let len_bytes = 200 + (seed as usize * 613) % 2800;
            let mut ops = vec![Op::Put { seed, len_bytes, owner: (index % 2) as usize }];
            if index % 2 == 1 {
                ops.push(Op::Delete { pick: index as usize * 5 });
            }
            if index % 3 == 2 {
                ops.push(Op::Reput { pick: index as usize });
            }
            if index % 7 == 0 {
                ops.push(Op::Compact { records: 5 });
            }
            ops
        })
        .collect()
}

/// A transient failure at every single request of a fixed history; the store carries
/// on, then loses power with a random part of its cache written back.
#[test]
fn glitch_at_every_request_then_crash() {
    let history = fixed_history(24);
    let mut store = fresh(DISK_SECTORS);
    let formatted = store.device().stats();
    assert!(!run_ops(&mut store, &mut BTreeMap::new(), &history));
    let stats = store.device().stats();
    let requests = stats.write_count + stats.flush_count - formatted.write_count - formatted.flush_count;
    let mut crash_points = 0;
    for glitch in 0..requests {
        for landed_sectors in [0, 100] {
            // Lose power soon after the glitch (the riskiest moment) or at the very end.
            let soon = (glitch as usize / 2 + 2).min(history.len());
            for end in [soon, history.len()] {
                let mut store = fresh(DISK_SECTORS);
                let mut model = BTreeMap::new();
                store.device_mut().glitch_after(glitch, landed_sectors);
                assert!(!run_ops(&mut store, &mut model, &history[..end]));
                for keep_seed in 0..2 {
                    let mut disk = store.device().clone();
                    disk.crash_keeping(keep_seed ^ (glitch << 1));
                    let mut remounted = ShardStore::mount(disk).expect("remount");
                    let mut model = model.clone();
                    if let Err(error) = check(&mut remounted, &mut model) {
                        panic!("glitch {glitch} landed {landed_sectors} end {end}: {error}");
                    }
                    crash_points += 1;
                }
            }
        }
    }
    eprintln!("glitch history: {crash_points} crash points");
}

/// Crashes at every single request of one fixed, compaction-heavy history.
#[test]
fn crash_at_every_request_of_a_fixed_history() {
    let history = fixed_history(32);
    // Count the requests of the full history without faults.
    let mut store = fresh(DISK_SECTORS);
    let formatted = store.device().stats();
    let mut model = BTreeMap::new();
    assert!(!run_ops(&mut store, &mut model, &history));
    let stats = store.device().stats();
    let requests = stats.write_count + stats.flush_count - formatted.write_count - formatted.flush_count;
    assert!(requests > 60, "{requests}");
    // The history goes round the log several times, so pads and compaction copies occur.
    assert!(stats.written_sectors > 3 * DISK_SECTORS, "{}", stats.written_sectors);
    for cut in 0..requests {
        for (landed_sectors, keep_seed) in [(0, 0), (3, cut), (100, !cut)] {
            let mut store = fresh(DISK_SECTORS);
            let mut model = BTreeMap::new();
            store.device_mut().power_cut_after(cut, landed_sectors);
            assert!(run_ops(&mut store, &mut model, &history), "cut {cut} did not fire");
            let mut disk = store.into_device();
            disk.crash_keeping(keep_seed);
            let mut store = ShardStore::mount(disk).expect("remount");
            if let Err(error) = check(&mut store, &mut model) {
                panic!("cut {cut} landed {landed_sectors}: {error}");
            }
        }
    }
    eprintln!("fixed history: {} crash points", requests * 3);
}

/// The case CI's proptest shrank to: after four crash phases the log held 42 sectors of
/// live shards in 72, and a put failed with `NoSpace` even after a delete, because one
/// lap of compaction left a pad at the wrap that only a second lap frees. (Lengths
/// shifted by 32 bytes and the delete's pick adjusted for format version 2's 208-byte
/// header, so the records keep their sector counts and the state is reached again.)
#[test]
fn regression_second_compaction_lap_frees_the_wrap_pad() {
    let put = |seed, len_bytes| Op::Put { seed, len_bytes, owner: 0 };
    let phase = |ops, cut_after_requests, glitch| Phase { ops, cut_after_requests, landed_sectors: 0, keep_seed: 0, glitch };
    let phases = [
        phase(vec![put(3, 1841), put(0, 305), Op::Delete { pick: 5493600865914617082 }, put(0, 0)], 8, None),
        phase(vec![Op::Compact { records: 4 }, put(0, 817), put(0, 0), put(0, 0)], 8, None),
        phase(
            vec![put(0, 1329), put(0, 1330), put(0, 2353), put(0, 2865), put(0, 1), put(0, 818), put(4, 2073)],
            15,
            Some((8, 0)),
        ),
        phase(vec![put(2, 2354), put(8, 827), put(0, 816), put(0, 0)], 6, None),
    ];
    let mut store = match run_phases(&phases, SMALL_SECTORS) {
        Ok((store, _)) => store,
        Err(error) => panic!("{error}"),
    };
    let (key, bytes) = shard(u64::MAX, 700);
    assert_eq!(store.put(&OWNER, key, &bytes), Err(Error::NoSpace), "{:?}", store.stat());
    // Deleting a 2073-byte shard (5 sectors) makes room for this 2-sector one.
    let victim = store.list(&OWNER).into_iter().find(|key| store.info(&OWNER, key).map(|info| info.len_bytes) == Some(2073));
    let victim = victim.expect("the 5-sector shard");
    assert_eq!(store.delete(&OWNER, &victim), Ok(()));
    assert_eq!(store.put(&OWNER, key, &bytes), Ok(()), "{:?}", store.stat());
    assert_eq!(store.get(&OWNER, &key), Ok(bytes));
}
