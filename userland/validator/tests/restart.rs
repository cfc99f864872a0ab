//! A validator stops (its process dies: only what its block store holds survives), restarts
//! from the store and catches up from its peers; nothing it had stored is lost, and it ends
//! at the same blocks and state root as the others. Its store refuses out-of-order blocks,
//! and a forged stored commit stops the restore.

mod common;

use common::{genesis, keys, Net, Sim};
use ledger::Keypair;
use validator::{BlockStore, Node, RestoreError, StoreError, Timeouts};

fn temp_path(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("gridos-validator-{name}-{}.redb", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Persists what `node` decided beyond what `store` holds.
fn persist(store: &BlockStore, node: &Node) {
    let stored = store.height().expect("height") as usize;
    for (block, commit) in &node.decided()[stored..] {
        store.append(block, commit).expect("append");
    }
}

#[test]
fn restarted_validator_catches_up() {
    for seed in 1..=3u64 {
        let alice = Keypair::from_seed([1; 32]);
        let genesis = genesis(&alice);
        let net = Net { loss_percent: 5, latency_ms_max: 100, silent: vec![], corrupt: vec![], cut: vec![], partition: vec![], heal_ms: 0 };
        let mut sim = Sim::new(seed, net, &genesis, keys());
        let path = temp_path(&format!("restart-{seed}"));
        let store = BlockStore::open(&path).expect("open");
        sim.start();
        sim.run_until(4, 200_000);
        persist(&store, &sim.nodes[2]);
        let stored = store.height().expect("height");
        assert!(stored >= 4);

        // Validator 2 dies; the others go on without it (3 of 4 is a quorum).
        sim.net.silent = vec![2];
        sim.run_until(8, 200_000);
        drop(store);

        // It restarts from its store alone.
        let store = BlockStore::open(&path).expect("reopen");
        let blocks = store.load().expect("load");
        assert_eq!(blocks.len() as u64, stored, "nothing stored is lost");
        let mut restarted = Node::restore(keys()[2].clone(), &genesis, Timeouts::default(), blocks).expect("restore");
        assert_eq!(restarted.ledger().meta().height, stored);
        let outputs = restarted.start(sim.now_ms);
        sim.nodes[2] = restarted;
        sim.net.silent = vec![];
        sim.apply_outputs(2, outputs);
        sim.run_until(10, 400_000);
        assert!(sim.nodes[2].decided().len() >= 10, "caught up; seed={seed}");
        sim.check_safety();
        persist(&store, &sim.nodes[2]);
        assert_eq!(store.height().expect("height") as usize, sim.nodes[2].decided().len());
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn store_refuses_gaps_and_restore_refuses_forged_commits() {
    let alice = Keypair::from_seed([1; 32]);
    let genesis = genesis(&alice);
    let net = Net { loss_percent: 0, latency_ms_max: 50, silent: vec![], corrupt: vec![], cut: vec![], partition: vec![], heal_ms: 0 };
    let mut sim = Sim::new(1, net, &genesis, keys());
    sim.start();
    sim.run_until(3, 100_000);
    let decided = sim.nodes[0].decided().to_vec();
    let path = temp_path("gaps");
    let store = BlockStore::open(&path).expect("open");
    assert!(matches!(store.append(&decided[1].0, &decided[1].1), Err(StoreError::NotNext { expected: 1, got: 2 })));
    store.append(&decided[0].0, &decided[0].1).expect("append");
    assert!(matches!(store.append(&decided[0].0, &decided[0].1), Err(StoreError::NotNext { expected: 2, got: 1 })));

    let mut forged = decided.clone();
    forged[1].1.signatures[0].signature.0[0] ^= 1;
    let result = Node::restore(keys()[0].clone(), &genesis, Timeouts::default(), forged);
    assert!(matches!(result, Err(RestoreError::Commit(2, ledger::LightError::ForgedSignature(_)))));
    let mut short = decided.clone();
    short[2].1.signatures.truncate(2);
    let result = Node::restore(keys()[0].clone(), &genesis, Timeouts::default(), short);
    assert!(matches!(result, Err(RestoreError::Commit(3, ledger::LightError::NoQuorum { .. }))));
    assert!(Node::restore(keys()[0].clone(), &genesis, Timeouts::default(), decided).is_ok());
    let _ = std::fs::remove_file(&path);
}
