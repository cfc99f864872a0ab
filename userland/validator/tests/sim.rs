//! A deterministic simulation of four validators in one process: a seeded network with
//! latency, loss and a silent validator; a clock that jumps to the next event. Safety: no two
//! validators decide different blocks at one height, and their state roots agree at every
//! height. Liveness: every live validator reaches the target height. The decided blocks and
//! commits are checked by a light client. "reproduce with seed=" on failure.

mod common;

use common::{genesis, keys, Net, Sim, GENESIS_MS};
use ledger::{Genesis, Keypair, LightClient, Transaction, TxKind, Validator};
use validator::Node;

fn transfers(alice: &Keypair, genesis: &Genesis, count: u64) -> Vec<ledger::SignedTx> {
    (0..count)
        .map(|nonce| {
            Transaction { account: alice.public(), nonce, kind: TxKind::Transfer { to: [nonce as u8; 32], amount: 1 + nonce } }
                .sign(&genesis.chain_id(), alice)
        })
        .collect()
}

fn run(seed: u64, net: Net, heights: usize) -> Sim {
    run_with(seed, net, heights, keys())
}

fn run_with(seed: u64, net: Net, heights: usize, node_keys: Vec<Keypair>) -> Sim {
    let alice = Keypair::from_seed([1; 32]);
    let genesis = genesis(&alice);
    let mut sim = Sim::new(seed, net, &genesis, node_keys);
    for tx in transfers(&alice, &genesis, 30) {
        for node in &mut sim.nodes {
            node.submit(tx.clone()).expect("submit");
        }
    }
    sim.start();
    sim.run_until(heights, 200_000);
    sim.check_safety();
    // Every transaction is in, once, and the live validators agree on the state.
    let live: Vec<&Node> = sim.honest().into_iter().map(|i| &sim.nodes[i]).collect();
    let root = live[0].decided()[heights - 1].0.header.state_root;
    for node in &live {
        assert_eq!(node.decided()[heights - 1].0.header.state_root, root);
        assert_eq!(node.ledger().account(&alice.public()).nonce, 30, "seed={seed}");
    }
    // A light client follows the decisions with the commits consensus produced.
    let mut light = LightClient::from_genesis(&genesis).expect("light");
    for block in live[0].light_blocks().iter().take(heights) {
        light.accept(block).unwrap_or_else(|e| panic!("light client refused a decided block: {e:?}; seed={seed}"));
    }
    sim
}

/// Seeds per scenario: 5, or `GRIDOS_SIM_SEEDS`.
fn seeds() -> u64 {
    std::env::var("GRIDOS_SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

#[test]
fn four_validators_decide_the_same_blocks() {
    for seed in 1..=seeds() {
        run(seed, Net { loss_percent: 0, latency_ms_max: 200, silent: vec![], corrupt: vec![], cut: vec![], partition: vec![], heal_ms: 0 }, 6);
    }
}

#[test]
fn one_silent_validator_does_not_stop_the_chain() {
    for seed in 1..=seeds() {
        run(seed, Net { loss_percent: 0, latency_ms_max: 200, silent: vec![seed as usize % 4], corrupt: vec![], cut: vec![], partition: vec![], heal_ms: 0 }, 6);
    }
}

#[test]
fn lossy_network_still_decides() {
    let only: Option<u64> = std::env::var("GRIDOS_SIM_SEED").ok().and_then(|v| v.parse().ok());
    for seed in (1..=seeds()).filter(|s| only.is_none_or(|o| o == *s)) {
        run(seed, Net { loss_percent: 10, latency_ms_max: 300, silent: vec![], corrupt: vec![], cut: vec![], partition: vec![], heal_ms: 0 }, 4);
    }
}

/// Validator 3 equivocates: it runs as twins with one key, one twin linked to validators 0
/// and 1, the other to validator 2, each proposing and voting on its own. The honest three
/// never decide different blocks and keep deciding.
#[test]
fn equivocating_validator_cannot_fork_the_chain() {
    for seed in 1..=seeds() {
        let mut node_keys = keys();
        node_keys.push(node_keys[3].clone());
        let cut = vec![(3, 4), (3, 2), (4, 0), (4, 1)];
        let sim = run_with(seed, Net { loss_percent: 0, latency_ms_max: 200, silent: vec![], corrupt: vec![], cut, partition: vec![], heal_ms: 0 }, 6, node_keys);
        let twins_decided = sim.nodes[3].decided().len() + sim.nodes[4].decided().len();
        assert!(twins_decided > 0, "the twins took part; seed={seed}");
    }
}

/// Many transactions from many accounts, submitted to every validator: the chain drains the
/// mempools and every validator ends with the same state root. 2,000 by default;
/// `GRIDOS_SIM_TXS=10000` for the figure (run it with --release).
#[test]
fn many_transactions_same_root_on_every_validator() {
    let count: u64 = std::env::var("GRIDOS_SIM_TXS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let senders: Vec<Keypair> = (0..100u64).map(|i| Keypair::from_seed(*blake3_like(i))).collect();
    let genesis = Genesis {
        chain_name: "sim".into(),
        time_ms: GENESIS_MS,
        validators: keys().iter().map(|k| Validator { key: k.public(), power: 10 }).collect(),
        balances: senders.iter().map(|k| (k.public(), 1_000_000)).collect(),
        governance: Keypair::from_seed([250; 32]).public(),
        period_ms: ledger::PERIOD_MS,
    };
    let mut sim = Sim::new(7, Net { loss_percent: 5, latency_ms_max: 100, silent: vec![], corrupt: vec![], cut: vec![], partition: vec![], heal_ms: 0 }, &genesis, keys());
    let chain_id = genesis.chain_id();
    for i in 0..count {
        let from = (i % 100) as usize;
        let to = senders[(from * 7 + 3) % 100].public();
        let tx = Transaction { account: senders[from].public(), nonce: i / 100, kind: TxKind::Transfer { to, amount: 1 + i % 5 } }
            .sign(&chain_id, &senders[from]);
        for node in &mut sim.nodes {
            node.submit(tx.clone()).expect("submit");
        }
    }
    sim.start();
    let mut height = 1;
    while sim.nodes.iter().any(|n| n.mempool_len() > 0) {
        sim.run_until(height, 200_000);
        height += 1;
        assert!(height < 200, "mempools do not drain");
    }
    sim.run_until(height, 200_000);
    sim.check_safety();
    let applied: usize = sim.nodes[0].decided().iter().map(|(b, _)| b.txs.len()).sum();
    assert_eq!(applied as u64, count);
    let h = height - 1;
    let roots: Vec<[u8; 32]> = sim.nodes.iter().map(|n| n.decided()[h].0.header.state_root).collect();
    assert!(roots.iter().all(|r| *r == roots[0]), "state roots differ at height {}", h + 1);
    eprintln!("{count} transactions in {} blocks; every validator at root {:02x}{:02x}..", h + 1, roots[0][0], roots[0][1]);
}

/// A deterministic 32-byte seed from `i` (no hashing crate needed here).
fn blake3_like(i: u64) -> Box<[u8; 32]> {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    seed[8..16].copy_from_slice(&(i + 1).to_le_bytes());
    Box::new(seed)
}

/// A 2|2 partition for the first minute: nothing can be decided (no side has a quorum) and
/// nothing conflicting is; once it heals the chain goes on.
#[test]
fn partition_stops_the_chain_until_it_heals() {
    for seed in 1..=seeds() {
        let alice = Keypair::from_seed([1; 32]);
        let genesis = genesis(&alice);
        let partition = vec![(0, 2), (0, 3), (1, 2), (1, 3)];
        let net = Net { loss_percent: 0, latency_ms_max: 200, silent: vec![], corrupt: vec![], cut: vec![], partition, heal_ms: 60_000 };
        let mut sim = Sim::new(seed, net, &genesis, keys());
        sim.start();
        // Runs through the partition: no decision.
        while sim.now_ms < GENESIS_MS + 59_000 {
            let Some(((at, _), _)) = sim.events.first_key_value() else { break };
            if *at >= GENESIS_MS + 59_000 {
                break;
            }
            sim.run_steps(1);
        }
        assert_eq!(sim.heights(), vec![0, 0, 0, 0], "decided without a quorum; seed={seed}");
        sim.run_until(4, 200_000);
        sim.check_safety();
    }
}

/// Validator 1 proposes blocks with a forged state root, properly signed: the others refuse
/// to vote for them (the ledger check), its rounds time out, and the chain goes on with the
/// next proposers; every decided block applies.
#[test]
fn forged_proposals_are_refused_and_the_chain_goes_on() {
    for seed in 1..=seeds() {
        let net = Net { loss_percent: 0, latency_ms_max: 200, silent: vec![], corrupt: vec![1], cut: vec![], partition: vec![], heal_ms: 0 };
        let sim = run(seed, net, 6);
        for (block, _) in sim.nodes[0].decided() {
            assert_ne!(block.header.proposer, keys()[1].public(), "a forged proposal was decided; seed={seed}");
        }
    }
}

/// The governance account removes validator 3 through a transaction: consensus carries the
/// change in a block, the next blocks are signed by the new set only, and a light client
/// follows the change through the decided blocks.
#[test]
fn validator_set_change_through_consensus() {
    for seed in 1..=seeds() {
        let alice = Keypair::from_seed([1; 32]);
        let genesis = genesis(&alice);
        let governance = Keypair::from_seed([250; 32]);
        let net = Net { loss_percent: 0, latency_ms_max: 200, silent: vec![], corrupt: vec![], cut: vec![], partition: vec![], heal_ms: 0 };
        let mut sim = Sim::new(seed, net, &genesis, keys());
        let new_set: Vec<Validator> = keys().iter().take(3).map(|k| Validator { key: k.public(), power: 10 }).collect();
        let tx = Transaction { account: governance.public(), nonce: 0, kind: TxKind::SetValidators { validators: new_set } }
            .sign(&genesis.chain_id(), &governance);
        for node in &mut sim.nodes {
            node.submit(tx.clone()).expect("submit");
        }
        sim.start();
        // Validator 3 is out after the change: only the first three must go on.
        let honest_three = |sim: &Sim, h: usize| (0..3).all(|i| sim.nodes[i].decided().len() >= h);
        let mut steps = 0;
        while !honest_three(&sim, 6) {
            assert!(sim.run_steps(1), "no events left; seed={seed}");
            steps += 1;
            assert!(steps < 400_000, "no liveness after the change; seed={seed}");
        }
        let decided = sim.nodes[0].decided();
        let change = decided.iter().position(|(b, _)| b.next_validators.is_some()).expect("a block carries the change");
        for (block, commit) in &decided[change + 1..] {
            assert!(commit.signatures.iter().all(|s| s.validator != keys()[3].public()), "old member signed height {}", block.header.height);
        }
        let mut light = LightClient::from_genesis(&genesis).expect("light");
        for block in sim.nodes[0].light_blocks() {
            light.accept(&block).unwrap_or_else(|e| panic!("light client refused: {e:?}; seed={seed}"));
        }
        assert_eq!(light.validators().total_power(), 30);
    }
}
