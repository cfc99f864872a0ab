//! The signing record (`validator::wal`): a validator killed after signing and recording its
//! proposal and prevote but before sending them restarts with a different clock (so it
//! would build a different block) and never sends a conflicting proposal or vote for the
//! same height, round and kind. Without the record it would: the control case shows the
//! scenario is real.

mod common;

use std::collections::BTreeMap;

use common::{genesis, keys, GENESIS_MS};
use ledger::Keypair;
use validator::node::{Message, Output};
use validator::wal::{self, guard};
use validator::store::SignedSlot;
use validator::{BlockStore, Node, Timeouts};

fn temp_path(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("gridos-validator-wal-{name}-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The proposer of height 1, round 0 (the second key in key order).
fn proposer() -> Keypair {
    let mut keys = keys();
    keys.sort_by_key(|k| k.public());
    keys[1].clone()
}

/// The validator's own signed messages among `outputs`, by slot, as encoded.
fn signed(outputs: &[Output], own: &validator::context::Address) -> Vec<(SignedSlot, Vec<u8>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Broadcast(m) | Output::Send(_, m) => wal::slot(m, own).map(|(slot, canonical)| (slot, canonical.encode())),
            _ => None,
        })
        .collect()
}

/// Asserts that no slot carries two different messages among everything sent.
fn assert_no_equivocation(sent: &[(SignedSlot, Vec<u8>)]) {
    let mut by_slot: BTreeMap<SignedSlot, &Vec<u8>> = BTreeMap::new();
    for (slot, bytes) in sent {
        if let Some(earlier) = by_slot.insert(*slot, bytes) {
            assert_eq!(earlier, bytes, "two different messages signed for slot {slot:?}");
        }
    }
}

fn proposal_hash(sent: &[(SignedSlot, Vec<u8>)]) -> [u8; 32] {
    let (_, bytes) = sent.iter().find(|(slot, _)| slot.2 == wal::KIND_PROPOSAL).expect("a proposal");
    match Message::decode(bytes) {
        Some(Message::Proposal(p)) => p.message.value.hash.0,
        _ => panic!("not a proposal"),
    }
}

#[test]
fn killed_between_sign_and_send_never_equivocates() {
    let alice = Keypair::from_seed([1; 32]);
    let genesis = genesis(&alice);
    let key = proposer();
    let own = validator::context::Address(key.public());
    let first_life = |path: &std::path::Path| {
        let store = BlockStore::open(path).expect("open");
        let mut node = Node::new(key.clone(), &genesis, Timeouts::default()).expect("node");
        let outputs = node.start(GENESIS_MS + 1_000);
        let recorded = guard(&store, &own, outputs).expect("record");
        // Killed here: recorded durably, nothing sent.
        signed(&recorded, &own)
    };

    // Control: without a record, the restarted validator proposes and prevotes another block.
    let path = temp_path("control");
    let before = first_life(&path);
    let mut kinds: Vec<u8> = before.iter().map(|(s, _)| s.2).collect();
    kinds.sort();
    assert_eq!(kinds, vec![wal::KIND_PROPOSAL, wal::KIND_PREVOTE], "killed after signing a proposal and a prevote");
    let mut fresh = Node::new(key.clone(), &genesis, Timeouts::default()).expect("node");
    let unguarded = signed(&fresh.start(GENESIS_MS + 5_000), &own);
    assert_ne!(proposal_hash(&before), proposal_hash(&unguarded), "the scenario: a new clock builds a new block");
    let _ = std::fs::remove_file(&path);

    // With the record only: the conflicting proposal and prevote are replaced by the recorded ones.
    let path = temp_path("guard");
    let before = first_life(&path);
    let store = BlockStore::open(&path).expect("reopen");
    let mut restarted = Node::new(key.clone(), &genesis, Timeouts::default()).expect("node");
    let sent = signed(&guard(&store, &own, restarted.start(GENESIS_MS + 5_000)).expect("guard"), &own);
    assert_eq!(sent.len(), 2);
    let all: Vec<_> = before.iter().chain(&sent).cloned().collect();
    assert_no_equivocation(&all);
    assert_eq!(proposal_hash(&sent), proposal_hash(&before));
    drop(store);
    let _ = std::fs::remove_file(&path);

    // As the daemon restarts: the recorded proposal is given back, and the node proposes the
    // very same block (its own state agrees with what it sends).
    let path = temp_path("restore");
    let before = first_life(&path);
    let store = BlockStore::open(&path).expect("reopen");
    let mut restarted = Node::restore(key.clone(), &genesis, Timeouts::default(), store.load().expect("load")).expect("restore");
    restarted.restore_signed(wal::recorded_proposals(&store, 1).expect("recorded"));
    let outputs = restarted.start(GENESIS_MS + 5_000);
    let raw = signed(&outputs, &own);
    assert_eq!(raw, before, "the node itself signs exactly what it signed before the crash");
    let sent = signed(&guard(&store, &own, outputs).expect("guard"), &own);
    assert_no_equivocation(&before.iter().chain(&sent).cloned().collect::<Vec<_>>());

    // Once the height's block is stored, its record is pruned.
    store.prune_signed_below(2).expect("prune");
    assert!(store.signed_from(0).expect("signed").is_empty());
    drop(store);
    let _ = std::fs::remove_file(&path);
}
