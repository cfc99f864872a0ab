//! Hourly billing across periods: owners pay farms for good periods; a node that missed its
//! uptime report or left a shard unproven is marked and not paid (its owner not charged);
//! an owner who runs out has the contract ended. Tokens are conserved throughout.

mod common;

use common::{key, placement, shard_bytes, Chain, NodeStore};
use ledger::state::{storage_challenge, BillingEvent, ContractStatus, MarkReason};
use ledger::{Capacity, Keypair, Resources, SignedTx, TxKind, TxOutcome, PERIOD_MS};

struct World {
    chain: Chain,
    alice: Keypair,
    bob: Keypair,
    farmer: Keypair,
    node: Keypair,
    node2: Keypair,
    farm: u64,
    /// The period everything was created in.
    p0: u64,
}

fn world() -> World {
    let (alice, bob, farmer, node, node2) = (key(1), key(2), key(3), key(10), key(11));
    let mut chain = Chain::new(1, &[(alice.public(), 1_000_000), (bob.public(), 1_000)]);
    let farm = match chain.run(&farmer, TxKind::CreateFarm { name: "f".into() }) {
        Ok(TxOutcome::FarmCreated(id)) => id,
        other => panic!("{other:?}"),
    };
    let capacity = Capacity { cores: 8, memory_bytes: 1 << 34, disks_bytes: vec![1 << 40], nics: 1 };
    for n in [&node, &node2] {
        let kind = TxKind::RegisterNode { node: n.public(), farm, capacity: capacity.clone() };
        assert_eq!(chain.run(&farmer, kind), Ok(TxOutcome::Done));
    }
    let p0 = chain.state.meta().period;
    World { chain, alice, bob, farmer, node, node2, farm, p0 }
}

fn total_supply(w: &World) -> u64 {
    [&w.alice, &w.bob, &w.farmer, &w.node, &w.node2].iter().map(|k| w.chain.state.account(&k.public()).balance).sum()
}

fn uptime(w: &World, node: &Keypair) -> SignedTx {
    w.chain.tx(node, TxKind::UptimeReport { uptime_secs: 1 })
}

fn workload(w: &mut World, owner: &Keypair, price: u64) -> u64 {
    let resources = Resources { cores: 1, memory_bytes: 1 << 30, disk_bytes: 1 << 30 };
    match w.chain.run(owner, TxKind::CreateWorkloadContract { node: w.node.public(), resources, price_per_hour: price }) {
        Ok(TxOutcome::ContractCreated(id)) => id,
        other => panic!("{other:?}"),
    }
}

fn charged(events: &[BillingEvent], contract: u64) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            BillingEvent::Charged { contract: c, period, amount } if *c == contract => Some((*period, *amount)),
            _ => None,
        })
        .collect()
}

#[test]
fn workload_billed_hourly_to_the_farm() {
    let mut w = world();
    let supply = total_supply(&w);
    let alice = w.alice.clone();
    let id = workload(&mut w, &alice, 100);
    let mut events = Vec::new();
    for _ in 1..=3 {
        // First block of each period: settles the previous one, then the node reports.
        let outcome = w.chain.block(vec![uptime(&w, &w.node)], PERIOD_MS);
        events.extend(outcome.billing);
    }
    events.extend(w.chain.block(vec![], PERIOD_MS).billing);
    // Created in p0: billed for p0+1..=p0+3.
    assert_eq!(charged(&events, id), vec![(w.p0 + 1, 100), (w.p0 + 2, 100), (w.p0 + 3, 100)]);
    assert_eq!(w.chain.state.account(&w.alice.public()).balance, 1_000_000 - 300);
    assert_eq!(w.chain.state.account(&w.farmer.public()).balance, 300);
    assert_eq!(w.chain.state.farm(w.farm).map(|f| f.earned), Some(300));
    assert_eq!(w.chain.state.contract(id).map(|c| c.paid), Some(300));
    let node = w.chain.state.node(&w.node.public()).expect("node");
    assert_eq!((node.periods_good, node.periods_marked), (3, 0), "p0 (registration) and p0+4 (running) not judged");
    assert_eq!(total_supply(&w), supply);
}

#[test]
fn node_that_missed_uptime_is_marked_and_not_paid() {
    let mut w = world();
    let alice = w.alice.clone();
    let id = workload(&mut w, &alice, 100);
    let mut events = Vec::new();
    events.extend(w.chain.block(vec![uptime(&w, &w.node)], PERIOD_MS).billing); // p0+1: up
    events.extend(w.chain.block(vec![], PERIOD_MS).billing); // p0+2: silent
    events.extend(w.chain.block(vec![uptime(&w, &w.node)], PERIOD_MS).billing); // p0+3: up
    events.extend(w.chain.block(vec![], PERIOD_MS).billing);
    assert_eq!(charged(&events, id), vec![(w.p0 + 1, 100), (w.p0 + 3, 100)]);
    assert!(events.contains(&BillingEvent::NodeMarked { node: w.node.public(), period: w.p0 + 2, reason: MarkReason::MissedUptime }));
    assert_eq!(w.chain.state.account(&w.alice.public()).balance, 1_000_000 - 200);
    assert_eq!(w.chain.state.account(&w.farmer.public()).balance, 200);
    let node = w.chain.state.node(&w.node.public()).expect("node");
    assert_eq!(node.last_mark, Some((w.p0 + 2, MarkReason::MissedUptime)));
    // node2 never reported: marked every judged period.
    assert_eq!(w.chain.state.node(&w.node2.public()).map(|n| n.periods_marked), Some(3));
}

#[test]
fn node_that_failed_a_proof_is_marked_and_not_paid() {
    let mut w = world();
    let supply = total_supply(&w);
    let shards = [shard_bytes(1, 20_000), shard_bytes(2, 5_000)];
    let mut stores = [NodeStore::new(&[&shards[0]]), NodeStore::new(&[&shards[1]])];
    let keys = [*blake3::hash(&shards[0]).as_bytes(), *blake3::hash(&shards[1]).as_bytes()];
    let placements = vec![placement(&w.node, &shards[0]), placement(&w.node2, &shards[1])];
    let alice = w.alice.clone();
    let id = match w.chain.run(&alice, TxKind::CreateStorageContract { shards: placements, price_per_hour: 60 }) {
        Ok(TxOutcome::ContractCreated(id)) => id,
        other => panic!("{other:?}"),
    };
    let nodes = [w.node.clone(), w.node2.clone()];
    let mut events = Vec::new();
    for (period, provers) in [(1u64, vec![0usize, 1]), (2, vec![0]), (3, vec![0, 1])] {
        // The period starts (settling the last one), then the nodes report and answer this
        // period's challenges.
        events.extend(w.chain.block(vec![], PERIOD_MS).billing);
        assert_eq!(w.chain.state.meta().period, w.p0 + period);
        let seed = w.chain.state.meta().period_seed;
        let mut txs = vec![uptime(&w, &nodes[0]), uptime(&w, &nodes[1])];
        for &i in &provers {
            let proof = stores[i].prove(&keys[i], storage_challenge(&seed, id, i as u32));
            let nonce = w.chain.state.account(&nodes[i].public()).nonce + 1;
            txs.push(w.chain.tx_nonce(&nodes[i], nonce, TxKind::StorageProof { contract: id, shard: i as u32, proof }));
        }
        w.chain.block(txs, 1000);
    }
    events.extend(w.chain.block(vec![], PERIOD_MS).billing);
    // 30 per shard; node2 left its shard unproven in p0+2.
    assert_eq!(charged(&events, id), vec![(w.p0 + 1, 60), (w.p0 + 2, 30), (w.p0 + 3, 60)]);
    assert!(events.contains(&BillingEvent::NodeMarked { node: w.node2.public(), period: w.p0 + 2, reason: MarkReason::FailedProof }));
    let node2 = w.chain.state.node(&w.node2.public()).expect("node2");
    assert_eq!((node2.proofs_ok, node2.proofs_missed, node2.periods_marked), (2, 1, 1));
    let node = w.chain.state.node(&w.node.public()).expect("node");
    assert_eq!((node.proofs_ok, node.proofs_missed, node.periods_marked), (3, 0, 0));
    assert_eq!(w.chain.state.account(&w.farmer.public()).balance, 150);
    assert_eq!(total_supply(&w), supply);
}

#[test]
fn owner_running_out_ends_the_contract() {
    let mut w = world();
    let supply = total_supply(&w);
    let bob = w.bob.clone();
    let id = workload(&mut w, &bob, 400);
    let reserved = w.chain.state.node(&w.node.public()).map(|n| n.reserved.cores);
    assert_eq!(reserved, Some(1));
    let mut events = Vec::new();
    for _ in 0..5 {
        events.extend(w.chain.block(vec![uptime(&w, &w.node)], PERIOD_MS).billing);
    }
    // 1000 pays two hours of 400; the third ends the contract.
    assert_eq!(charged(&events, id), vec![(w.p0 + 1, 400), (w.p0 + 2, 400)]);
    assert!(events.contains(&BillingEvent::ContractEnded { contract: id, period: w.p0 + 3 }));
    assert_eq!(w.chain.state.contract(id).map(|c| c.status), Some(ContractStatus::Unpaid(w.p0 + 3)));
    assert_eq!(w.chain.state.account(&bob.public()).balance, 200);
    assert_eq!(w.chain.state.node(&w.node.public()).map(|n| n.reserved.cores), Some(0), "reservation released");
    assert!(w.chain.state.active_contracts().next().is_none());
    assert_eq!(total_supply(&w), supply);
}

#[test]
fn stalled_chain_settles_every_missed_period_without_charging() {
    let mut w = world();
    let alice = w.alice.clone();
    let id = workload(&mut w, &alice, 100);
    let outcome = w.chain.block(vec![], 10 * PERIOD_MS);
    let marks = outcome
        .billing
        .iter()
        .filter(|e| matches!(e, BillingEvent::NodeMarked { node, .. } if *node == w.node.public()))
        .count();
    assert_eq!(marks, 9, "p0+1..=p0+9 judged (p0 is the registration period)");
    assert!(charged(&outcome.billing, id).is_empty());
    assert_eq!(w.chain.state.meta().period, w.p0 + 10);
    // A chain stalled beyond the bound settles only the last SETTLE_PERIODS_MAX periods.
    let outcome = w.chain.block(vec![], 1000 * PERIOD_MS);
    let marks = outcome
        .billing
        .iter()
        .filter(|e| matches!(e, BillingEvent::NodeMarked { node, .. } if *node == w.node.public()))
        .count();
    assert_eq!(marks as u64, ledger::SETTLE_PERIODS_MAX);
}
