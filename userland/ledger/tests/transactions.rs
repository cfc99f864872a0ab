//! Every transaction kind applied, and refused for each reason issue 13 lists: a bad
//! signature, a replayed or skipped nonce, an insufficient balance, an unknown node or farm,
//! a storage proof with a wrong path or for the wrong challenge. Refusals are checked three
//! ways: `check_tx`, the proposer's `build_block` (drops it), and `apply_block` on a block
//! that carries it anyway (refused whole, state root unchanged).

mod common;

use common::{key, placement, shard_bytes, Chain, NodeStore, GENESIS_MS};
use ledger::state::{storage_challenge, ContractStatus, ContractTerms};
use ledger::{
    BlockError, Capacity, Keypair, Resources, SignedTx, TxError, TxKind, TxOutcome, Usage, Validator,
};

struct World {
    chain: Chain,
    alice: Keypair,
    bob: Keypair,
    farmer: Keypair,
    node: Keypair,
    node2: Keypair,
    farm: u64,
}

fn capacity() -> Capacity {
    Capacity { cores: 8, memory_bytes: 16 << 30, disks_bytes: vec![1 << 40, 1 << 40], nics: 1 }
}

/// Alice (1,000,000 tokens) and Bob (1,000); a farmer with one farm and two nodes.
fn world() -> World {
    let (alice, bob, farmer, node, node2) = (key(1), key(2), key(3), key(10), key(11));
    let mut chain = Chain::new(4, &[(alice.public(), 1_000_000), (bob.public(), 1_000)]);
    let farm = match chain.run(&farmer, TxKind::CreateFarm { name: "farm one".into() }) {
        Ok(TxOutcome::FarmCreated(id)) => id,
        other => panic!("create farm: {other:?}"),
    };
    for n in [&node, &node2] {
        let kind = TxKind::RegisterNode { node: n.public(), farm, capacity: capacity() };
        assert_eq!(chain.run(&farmer, kind), Ok(TxOutcome::Done));
    }
    World { chain, alice, bob, farmer, node, node2, farm }
}

/// `tx` is refused with `error` by check_tx, by the block builder, and by apply_block on a
/// block carrying it; the state root does not move.
fn refused(w: &mut World, tx: SignedTx, error: TxError) {
    let root = w.chain.state.root();
    assert_eq!(w.chain.state.check_tx(&tx), Err(error.clone()), "check_tx");
    assert_eq!(w.chain.state.root(), root);
    let forced = w.chain.apply_forced(vec![tx.clone()]);
    assert_eq!(forced, Err(BlockError::Tx { index: 0, error: error.clone() }), "apply_block");
    assert_eq!(w.chain.state.root(), root, "a refused block leaves the root");
    assert_eq!(w.chain.run_tx(tx), Err(error), "build_block");
}

#[test]
fn farm_and_node_records() {
    let w = world();
    let farm = w.chain.state.farm(w.farm).expect("farm");
    assert_eq!((farm.owner, farm.name.as_str(), farm.nodes), (w.farmer.public(), "farm one", 2));
    let node = w.chain.state.node(&w.node.public()).expect("node");
    assert_eq!(node.farm, w.farm);
    assert_eq!(node.capacity, capacity());
}

#[test]
fn update_capacity_by_node_or_farmer_only() {
    let mut w = world();
    let mut bigger = capacity();
    bigger.cores = 16;
    let (node, farmer, bob) = (w.node.clone(), w.farmer.clone(), w.bob.clone());
    assert_eq!(w.chain.run(&node, TxKind::UpdateCapacity { node: node.public(), capacity: bigger.clone() }), Ok(TxOutcome::Done));
    assert_eq!(w.chain.state.node(&node.public()).map(|n| n.capacity.cores), Some(16));
    bigger.cores = 4;
    assert_eq!(w.chain.run(&farmer, TxKind::UpdateCapacity { node: node.public(), capacity: bigger.clone() }), Ok(TxOutcome::Done));
    assert_eq!(w.chain.state.node(&node.public()).map(|n| n.capacity.cores), Some(4));
    let tx = w.chain.tx(&bob, TxKind::UpdateCapacity { node: node.public(), capacity: bigger.clone() });
    refused(&mut w, tx, TxError::NotAuthorized);
    let stranger = key(99).public();
    let tx = w.chain.tx(&farmer, TxKind::UpdateCapacity { node: stranger, capacity: bigger });
    refused(&mut w, tx, TxError::UnknownNode(stranger));
}

#[test]
fn uptime_report() {
    let mut w = world();
    let node = w.node.clone();
    assert_eq!(w.chain.run(&node, TxKind::UptimeReport { uptime_secs: 77 }), Ok(TxOutcome::Done));
    let record = w.chain.state.node(&node.public()).expect("node");
    assert_eq!(record.last_uptime_period, Some(w.chain.state.meta().period));
    assert_eq!(record.last_uptime_secs, 77);
    // A key that is no registered node cannot report.
    let bob = w.bob.clone();
    let tx = w.chain.tx(&bob, TxKind::UptimeReport { uptime_secs: 1 });
    refused(&mut w, tx, TxError::UnknownNode(bob.public()));
}

#[test]
fn transfer_and_balances() {
    let mut w = world();
    let (alice, bob) = (w.alice.clone(), w.bob.clone());
    assert_eq!(w.chain.run(&alice, TxKind::Transfer { to: bob.public(), amount: 500 }), Ok(TxOutcome::Done));
    assert_eq!(w.chain.state.account(&alice.public()).balance, 999_500);
    assert_eq!(w.chain.state.account(&bob.public()).balance, 1_500);
    let tx = w.chain.tx(&bob, TxKind::Transfer { to: alice.public(), amount: 1_501 });
    refused(&mut w, tx, TxError::InsufficientBalance { needed: 1_501, available: 1_500 });
    let tx = w.chain.tx(&bob, TxKind::Transfer { to: alice.public(), amount: 0 });
    refused(&mut w, tx, TxError::Invalid("amount"));
}

#[test]
fn bad_signature_refused() {
    let mut w = world();
    let (alice, bob) = (w.alice.clone(), w.bob.clone());
    // Signed by Bob but claiming Alice's account.
    let nonce = w.chain.state.account(&alice.public()).nonce;
    let forged = ledger::Transaction { account: alice.public(), nonce, kind: TxKind::Transfer { to: bob.public(), amount: 10 } }
        .sign(&w.chain.chain_id, &bob);
    refused(&mut w, forged, TxError::BadSignature);
    // A valid signature over another amount.
    let mut tampered = w.chain.tx(&alice, TxKind::Transfer { to: bob.public(), amount: 10 });
    tampered.tx.kind = TxKind::Transfer { to: bob.public(), amount: 10_000 };
    refused(&mut w, tampered, TxError::BadSignature);
    // Signed for another chain.
    let other_chain = ledger::Transaction { account: alice.public(), nonce, kind: TxKind::Transfer { to: bob.public(), amount: 10 } }
        .sign(&[7u8; 32], &alice);
    refused(&mut w, other_chain, TxError::BadSignature);
}

#[test]
fn replayed_and_skipped_nonces_refused() {
    let mut w = world();
    let (alice, bob) = (w.alice.clone(), w.bob.clone());
    let first = w.chain.tx(&alice, TxKind::Transfer { to: bob.public(), amount: 10 });
    assert_eq!(w.chain.run_tx(first.clone()), Ok(TxOutcome::Done));
    refused(&mut w, first, TxError::BadNonce { expected: 1, got: 0 });
    let skipped = w.chain.tx_nonce(&alice, 5, TxKind::Transfer { to: bob.public(), amount: 10 });
    refused(&mut w, skipped, TxError::BadNonce { expected: 1, got: 5 });
    // Two transactions of one account in one block apply in nonce order.
    let a = w.chain.tx_nonce(&alice, 1, TxKind::Transfer { to: bob.public(), amount: 1 });
    let b = w.chain.tx_nonce(&alice, 2, TxKind::Transfer { to: bob.public(), amount: 1 });
    let outcome = w.chain.block(vec![a, b], 1000);
    assert_eq!(outcome.receipts.len(), 2);
    assert_eq!(w.chain.state.account(&alice.public()).nonce, 3);
}

#[test]
fn unknown_farm_and_foreign_farm_refused() {
    let mut w = world();
    let farmer = w.farmer.clone();
    let tx = w.chain.tx(&farmer, TxKind::RegisterNode { node: key(12).public(), farm: 99, capacity: capacity() });
    refused(&mut w, tx, TxError::UnknownFarm(99));
    let bob = w.bob.clone();
    let tx = w.chain.tx(&bob, TxKind::RegisterNode { node: key(12).public(), farm: w.farm, capacity: capacity() });
    refused(&mut w, tx, TxError::NotAuthorized);
    let node = w.node.public();
    let tx = w.chain.tx(&farmer, TxKind::RegisterNode { node, farm: w.farm, capacity: capacity() });
    refused(&mut w, tx, TxError::NodeExists(node));
    let tx = w.chain.tx(&farmer, TxKind::CreateFarm { name: "x".repeat(65) });
    refused(&mut w, tx, TxError::Invalid("name"));
}

#[test]
fn a_node_registers_itself_under_a_farm_but_not_another_node() {
    let mut w = world();
    let newcomer = key(13);
    let farm = w.farm;
    let kind = TxKind::RegisterNode { node: newcomer.public(), farm, capacity: capacity() };
    assert_eq!(w.chain.run(&newcomer, kind), Ok(TxOutcome::Done));
    assert_eq!(w.chain.state.node(&newcomer.public()).map(|n| n.farm), Some(farm));
    // A node cannot register another key.
    let tx = w.chain.tx(&newcomer, TxKind::RegisterNode { node: key(14).public(), farm, capacity: capacity() });
    refused(&mut w, tx, TxError::NotAuthorized);
}

#[test]
fn workload_contract_create_usage_cancel() {
    let mut w = world();
    let (alice, node, bob) = (w.alice.clone(), w.node.clone(), w.bob.clone());
    let resources = Resources { cores: 2, memory_bytes: 1 << 30, disk_bytes: 10 << 30 };
    let create = TxKind::CreateWorkloadContract { node: node.public(), resources, price_per_hour: 100 };
    let id = match w.chain.run(&alice, create) {
        Ok(TxOutcome::ContractCreated(id)) => id,
        other => panic!("{other:?}"),
    };
    assert_eq!(w.chain.state.node(&node.public()).map(|n| n.reserved), Some(resources));
    // The node's listing names it; another node's does not; paging goes past it.
    let node_key = node.public();
    assert_eq!(w.chain.state.node_contracts(&node_key, None).collect::<Vec<_>>(), vec![id]);
    assert_eq!(w.chain.state.node_contracts(&node_key, Some(id)).count(), 0);
    let node2_key = w.node2.public();
    assert_eq!(w.chain.state.node_contracts(&node2_key, None).count(), 0);
    // More than the node has left.
    let too_big = Resources { cores: 7, ..resources };
    let tx = w.chain.tx(&alice, TxKind::CreateWorkloadContract { node: node.public(), resources: too_big, price_per_hour: 1 });
    refused(&mut w, tx, TxError::CapacityExceeded);
    // On an unknown node.
    let stranger = key(98).public();
    let tx = w.chain.tx(&alice, TxKind::CreateWorkloadContract { node: stranger, resources, price_per_hour: 1 });
    refused(&mut w, tx, TxError::UnknownNode(stranger));
    // Bob cannot pay the first hour.
    let tx = w.chain.tx(&bob, TxKind::CreateWorkloadContract { node: node.public(), resources, price_per_hour: 5_000 });
    refused(&mut w, tx, TxError::InsufficientBalance { needed: 5_000, available: 1_000 });

    // Usage: by the contract's node only, periods strictly increasing, never in the future.
    let period = w.chain.state.meta().period;
    let usage = Usage { cpu_ms: 1_000, memory_peak_bytes: 1 << 20, disk_bytes: 4096, net_rx_bytes: 10, net_tx_bytes: 20 };
    assert_eq!(w.chain.run(&node, TxKind::UsageReport { contract: id, period, usage }), Ok(TxOutcome::Done));
    let tx = w.chain.tx(&node, TxKind::UsageReport { contract: id, period, usage });
    refused(&mut w, tx, TxError::StalePeriod { period });
    let tx = w.chain.tx(&node, TxKind::UsageReport { contract: id, period: period + 1, usage });
    refused(&mut w, tx, TxError::StalePeriod { period: period + 1 });
    let node2 = w.node2.clone();
    let tx = w.chain.tx(&node2, TxKind::UsageReport { contract: id, period, usage });
    refused(&mut w, tx, TxError::NotAuthorized);
    match &w.chain.state.contract(id).expect("contract").terms {
        ContractTerms::Workload { usage_total, last_usage_period, .. } => {
            assert_eq!((usage_total.cpu_ms, *last_usage_period), (1_000, Some(period)));
        }
        other => panic!("{other:?}"),
    }

    // Cancel: only the owner, only once; the reservation is released.
    let tx = w.chain.tx(&bob, TxKind::CancelWorkloadContract { contract: id });
    refused(&mut w, tx, TxError::NotAuthorized);
    let tx = w.chain.tx(&alice, TxKind::CancelStorageContract { contract: id });
    refused(&mut w, tx, TxError::WrongContractKind(id));
    assert_eq!(w.chain.run(&alice, TxKind::CancelWorkloadContract { contract: id }), Ok(TxOutcome::Done));
    assert_eq!(w.chain.state.contract(id).map(|c| c.status), Some(ContractStatus::Cancelled(period)));
    assert_eq!(w.chain.state.node(&node.public()).map(|n| n.reserved), Some(Resources::default()));
    let tx = w.chain.tx(&alice, TxKind::CancelWorkloadContract { contract: id });
    refused(&mut w, tx, TxError::ContractEnded(id));
    let tx = w.chain.tx(&alice, TxKind::CancelWorkloadContract { contract: 77 });
    refused(&mut w, tx, TxError::UnknownContract(77));
}

/// A storage contract over two shards on two nodes; returns (contract id, shards, stores).
fn storage_setup(w: &mut World) -> (u64, Vec<Vec<u8>>, Vec<NodeStore>) {
    // 10 chunks and 3 chunks: several paths, and challenges that pick different chunks.
    let shards = vec![shard_bytes(1, 40_000), shard_bytes(2, 9_000)];
    let stores = vec![NodeStore::new(&[&shards[0]]), NodeStore::new(&[&shards[1]])];
    let placements = vec![placement(&w.node, &shards[0]), placement(&w.node2, &shards[1])];
    let alice = w.alice.clone();
    let id = match w.chain.run(&alice, TxKind::CreateStorageContract { shards: placements, price_per_hour: 60 }) {
        Ok(TxOutcome::ContractCreated(id)) => id,
        other => panic!("{other:?}"),
    };
    (id, shards, stores)
}

#[test]
fn storage_contract_and_proofs() {
    let mut w = world();
    let (id, shards, mut stores) = storage_setup(&mut w);
    let node = w.node.clone();
    let seed = w.chain.state.meta().period_seed;
    let challenge = storage_challenge(&seed, id, 0);
    let key0 = *blake3::hash(&shards[0]).as_bytes();
    let proof = stores[0].prove(&key0, challenge);
    assert_eq!(w.chain.run(&node, TxKind::StorageProof { contract: id, shard: 0, proof: proof.clone() }), Ok(TxOutcome::Done));
    match &w.chain.state.contract(id).expect("contract").terms {
        ContractTerms::Storage { shards } => {
            assert_eq!(shards[0].last_proven_period, Some(w.chain.state.meta().period));
            assert_eq!(shards[1].last_proven_period, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.chain.state.node(&node.public()).map(|n| n.proofs_ok), Some(1));
    // Once per period.
    let tx = w.chain.tx(&node, TxKind::StorageProof { contract: id, shard: 0, proof });
    refused(&mut w, tx, TxError::AlreadyProven);
    // The other shard belongs to node2.
    let key1 = *blake3::hash(&shards[1]).as_bytes();
    let proof1 = stores[1].prove(&key1, storage_challenge(&seed, id, 1));
    let tx = w.chain.tx(&node, TxKind::StorageProof { contract: id, shard: 1, proof: proof1.clone() });
    refused(&mut w, tx, TxError::NotAuthorized);
    let node2 = w.node2.clone();
    let tx = w.chain.tx(&node2, TxKind::StorageProof { contract: id, shard: 2, proof: proof1.clone() });
    refused(&mut w, tx, TxError::UnknownShard(2));
    assert_eq!(w.chain.run(&node2, TxKind::StorageProof { contract: id, shard: 1, proof: proof1 }), Ok(TxOutcome::Done));

    // Cancel: owner only; then proofs are refused.
    let alice = w.alice.clone();
    let tx = w.chain.tx(&alice, TxKind::CancelWorkloadContract { contract: id });
    refused(&mut w, tx, TxError::WrongContractKind(id));
    assert_eq!(w.chain.run(&alice, TxKind::CancelStorageContract { contract: id }), Ok(TxOutcome::Done));
    let proof = stores[0].prove(&key0, challenge);
    let tx = w.chain.tx(&node, TxKind::StorageProof { contract: id, shard: 0, proof });
    refused(&mut w, tx, TxError::ContractEnded(id));
}

#[test]
fn storage_proof_with_wrong_path_or_challenge_refused() {
    let mut w = world();
    let (id, shards, mut stores) = storage_setup(&mut w);
    let node = w.node.clone();
    let seed = w.chain.state.meta().period_seed;
    let challenge = storage_challenge(&seed, id, 0);
    let key0 = *blake3::hash(&shards[0]).as_bytes();
    let good = stores[0].prove(&key0, challenge);

    let mut wrong_path = good.clone();
    wrong_path.path[1][0] ^= 1;
    let tx = w.chain.tx(&node, TxKind::StorageProof { contract: id, shard: 0, proof: wrong_path });
    refused(&mut w, tx, TxError::ProofInvalid);

    let mut short_path = good.clone();
    short_path.path.pop();
    let tx = w.chain.tx(&node, TxKind::StorageProof { contract: id, shard: 0, proof: short_path });
    refused(&mut w, tx, TxError::ProofInvalid);

    let mut wrong_chunk = good.clone();
    wrong_chunk.chunk[0] ^= 1;
    let tx = w.chain.tx(&node, TxKind::StorageProof { contract: id, shard: 0, proof: wrong_chunk });
    refused(&mut w, tx, TxError::ProofInvalid);

    // A valid proof of the store, but for another challenge (another chunk).
    let chunks = shardstore::chunk_count(shards[0].len() as u64);
    let other = (challenge % chunks + 1) % chunks;
    let wrong_challenge = stores[0].prove(&key0, other);
    assert!(shardstore::verify_proof(&shardstore::merkle_root(&shards[0]), shards[0].len() as u64, other, &shardstore::StorageProof {
        chunk_index: wrong_challenge.chunk_index,
        chunk: wrong_challenge.chunk.clone(),
        path: wrong_challenge.path.clone(),
    }));
    let tx = w.chain.tx(&node, TxKind::StorageProof { contract: id, shard: 0, proof: wrong_challenge });
    refused(&mut w, tx, TxError::ProofInvalid);

    // Last period's challenge no longer answers once a new period started.
    let bob = w.bob.clone();
    w.chain.block(vec![w.chain.tx(&bob, TxKind::Transfer { to: key(5).public(), amount: 1 })], ledger::PERIOD_MS);
    let tx = w.chain.tx(&node, TxKind::StorageProof { contract: id, shard: 0, proof: good });
    let new_challenge = storage_challenge(&w.chain.state.meta().period_seed, id, 0);
    if new_challenge % chunks != challenge % chunks {
        refused(&mut w, tx, TxError::ProofInvalid);
    }
    // And the right one does.
    let fresh = stores[0].prove(&key0, new_challenge);
    assert_eq!(w.chain.run(&node, TxKind::StorageProof { contract: id, shard: 0, proof: fresh }), Ok(TxOutcome::Done));
}

#[test]
fn storage_contract_on_unknown_node_refused() {
    let mut w = world();
    let alice = w.alice.clone();
    let bytes = shard_bytes(3, 100);
    let stranger = key(97);
    let tx = w.chain.tx(&alice, TxKind::CreateStorageContract { shards: vec![placement(&stranger, &bytes)], price_per_hour: 1 });
    refused(&mut w, tx, TxError::UnknownNode(stranger.public()));
    let tx = w.chain.tx(&alice, TxKind::CreateStorageContract { shards: vec![], price_per_hour: 1 });
    refused(&mut w, tx, TxError::Invalid("shards"));
    let bob = w.bob.clone();
    let tx = w.chain.tx(&bob, TxKind::CreateStorageContract { shards: vec![placement(&w.node, &bytes)], price_per_hour: 1_001 });
    refused(&mut w, tx, TxError::InsufficientBalance { needed: 1_001, available: 1_000 });
}

#[test]
fn set_validators_by_governance_only() {
    let mut w = world();
    let new_set = vec![Validator { key: key(220).public(), power: 5 }];
    let bob = w.bob.clone();
    let tx = w.chain.tx(&bob, TxKind::SetValidators { validators: new_set.clone() });
    refused(&mut w, tx, TxError::NotAuthorized);
    let governance = w.chain.governance.clone();
    let tx = w.chain.tx(&governance, TxKind::SetValidators { validators: vec![] });
    refused(&mut w, tx, TxError::Invalid("validator set"));
    let outcome = w.chain.run(&governance, TxKind::SetValidators { validators: new_set });
    assert_eq!(outcome, Ok(TxOutcome::Done));
    let block = w.chain.light_blocks.last().expect("block");
    let next = block.next_validators.as_ref().expect("the block carries the new set");
    assert_eq!(next.validators()[0].key, key(220).public());
    assert_eq!(w.chain.state.meta().validators, *next);
}

#[test]
fn garbage_transactions_decode_as_errors() {
    assert_eq!(SignedTx::decode(&[]), Err(TxError::Decode));
    assert_eq!(SignedTx::decode(&[0xff; 100]), Err(TxError::Decode));
    assert_eq!(SignedTx::decode(&vec![0u8; ledger::TX_BYTES_MAX + 1]), Err(TxError::Decode));
    let w = world();
    let tx = w.chain.tx(&w.alice, TxKind::Transfer { to: w.bob.public(), amount: 1 });
    let bytes = tx.encode();
    assert_eq!(SignedTx::decode(&bytes), Ok(tx));
    for cut in 0..bytes.len() {
        assert!(SignedTx::decode(&bytes[..cut]).is_err());
    }
}

#[test]
fn mempool_checks_a_sequence_without_changing_the_state() {
    let mut w = world();
    let (alice, bob) = (w.alice.clone(), w.bob.clone());
    let root = w.chain.state.root();
    let txs = vec![
        w.chain.tx_nonce(&alice, 0, TxKind::Transfer { to: bob.public(), amount: 1 }),
        w.chain.tx_nonce(&alice, 1, TxKind::Transfer { to: bob.public(), amount: 1 }),
        w.chain.tx_nonce(&alice, 1, TxKind::Transfer { to: bob.public(), amount: 1 }),
        w.chain.tx_nonce(&bob, 0, TxKind::Transfer { to: alice.public(), amount: 1_002 }),
        w.chain.tx_nonce(&alice, 2, TxKind::Transfer { to: bob.public(), amount: 1 }),
    ];
    let results = w.chain.state.check_sequence(&txs);
    assert_eq!(
        results,
        vec![
            Ok(TxOutcome::Done),
            Ok(TxOutcome::Done),
            Err(TxError::BadNonce { expected: 2, got: 1 }),
            Ok(TxOutcome::Done), // Bob can pay with what Alice sent before.
            Ok(TxOutcome::Done),
        ]
    );
    assert_eq!(w.chain.state.root(), root);
    assert_eq!(w.chain.state.account(&alice.public()).nonce, 0);
    assert_eq!(w.chain.state.account(&bob.public()).balance, 1_000);
}

#[test]
fn all_zero_seed_is_refused_without_panicking() {
    assert!(Keypair::try_from_seed([0; 32]).is_none());
    assert_eq!(Keypair::try_from_seed([1; 32]).map(|k| k.public()), Some(key(1).public()));
}

#[test]
fn a_genesis_sets_the_period_length() {
    let mut genesis = Chain::new(1, &[]).genesis;
    genesis.period_ms = 10_000;
    let (state, _) = ledger::State::genesis(&genesis).expect("genesis");
    assert_eq!(state.meta().period_ms, 10_000);
    assert_eq!(state.meta().period, GENESIS_MS / 10_000);
    genesis.period_ms = ledger::PERIOD_MS_MIN - 1;
    assert!(ledger::State::genesis(&genesis).is_err(), "a period under a second is refused");
}
