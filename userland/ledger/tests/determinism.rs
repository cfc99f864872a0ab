//! Determinism: random transactions of every kind (valid and invalid: bad nonces, bad
//! signatures, unknown ids, proofs valid or not), cut into blocks spanning many billing
//! periods, given to two independent state instances. Each builds its own block from the
//! same candidates and applies it: the blocks, the refusals and the state roots must be
//! identical at every height. 10,000 transactions per case.

mod common;

use std::collections::BTreeMap;

use common::{key, placement, shard_bytes, NodeStore, GENESIS_MS, MINUTE_MS};
use ledger::state::storage_challenge;
use ledger::{
    Capacity, Genesis, Keypair, PublicKey, Resources, ShardPlacement, SignedTx, State, Transaction, TxKind, Usage,
    Validator,
};
use proptest::prelude::*;

const ACCOUNTS: u8 = 8;
const NODES: u8 = 4;
const TXS_PER_BLOCK: usize = 100;

struct Fixture {
    genesis: Genesis,
    accounts: Vec<Keypair>,
    nodes: Vec<Keypair>,
    governance: Keypair,
    validator_sets: [Vec<Validator>; 2],
    shards: Vec<Vec<u8>>,
}

fn fixture() -> Fixture {
    let accounts: Vec<Keypair> = (1..=ACCOUNTS).map(key).collect();
    let nodes: Vec<Keypair> = (0..NODES).map(|i| key(10 + i)).collect();
    let governance = key(250);
    let set = |base: u8| (0..4).map(|i| Validator { key: key(base + i).public(), power: 10 + i as u64 }).collect::<Vec<_>>();
    let validator_sets = [set(200), set(210)];
    let genesis = Genesis {
        chain_name: "determinism".into(),
        time_ms: GENESIS_MS,
        validators: validator_sets[0].clone(),
        balances: accounts.iter().take(4).map(|k| (k.public(), 1_000_000)).collect(),
        governance: governance.public(),
        period_ms: ledger::PERIOD_MS,
    };
    let shards: Vec<Vec<u8>> = (0..3).map(|i| shard_bytes(i, 3_000 + 5_000 * i as usize)).collect();
    Fixture { genesis, accounts, nodes, governance, validator_sets, shards }
}

type Op = (u8, u8, u8, u32);

/// Turns one random op into a signed transaction against `state` (nonces counted within the
/// block in `pending`). About one in ten carries a wrong nonce and one in twenty a bad
/// signature.
fn make_tx(f: &Fixture, store: &mut NodeStore, state: &State, pending: &mut BTreeMap<PublicKey, u64>, op: Op) -> SignedTx {
    let (kind, actor, target, amount) = op;
    let account = &f.accounts[(actor % ACCOUNTS) as usize];
    let node = &f.nodes[(target % NODES) as usize];
    let contracts = state.meta().next_contract_id + 1;
    let (signer, kind) = match kind % 12 {
        0 => (account, TxKind::Transfer { to: f.accounts[(target % ACCOUNTS) as usize].public(), amount: u64::from(amount % 50_000) }),
        1 => (account, TxKind::CreateFarm { name: format!("farm {amount}") }),
        2 => {
            let capacity = Capacity { cores: 1 + amount % 16, memory_bytes: 1 << 32, disks_bytes: vec![1 << 40], nics: 1 };
            (account, TxKind::RegisterNode { node: node.public(), farm: u64::from(amount % 4), capacity })
        }
        3 => {
            let capacity = Capacity { cores: amount % 32, memory_bytes: 1 << 33, disks_bytes: vec![1 << 41], nics: 2 };
            (node, TxKind::UpdateCapacity { node: node.public(), capacity })
        }
        4 => (node, TxKind::UptimeReport { uptime_secs: u64::from(amount) }),
        5 => {
            let resources = Resources { cores: 1 + amount % 3, memory_bytes: 1 << 28, disk_bytes: 1 << 30 };
            (account, TxKind::CreateWorkloadContract { node: node.public(), resources, price_per_hour: u64::from(amount % 700) })
        }
        6 => (account, TxKind::CancelWorkloadContract { contract: u64::from(amount) % contracts }),
        7 => {
            let shards: Vec<ShardPlacement> = (0..1 + amount % 3)
                .map(|i| placement(&f.nodes[((target as u32 + i) % NODES as u32) as usize], &f.shards[((amount % 3 + i) % 3) as usize]))
                .collect();
            (account, TxKind::CreateStorageContract { shards, price_per_hour: u64::from(amount % 300) })
        }
        8 => (account, TxKind::CancelStorageContract { contract: u64::from(amount) % contracts }),
        9 => {
            // Answers shard 0 of a contract with the real store when it is a storage contract.
            let contract = u64::from(amount) % contracts;
            let challenge = storage_challenge(&state.meta().period_seed, contract, 0);
            let key = match state.contract(contract).map(|c| &c.terms) {
                Some(ledger::state::ContractTerms::Storage { shards }) => shards[0].placement.key,
                _ => *blake3::hash(&f.shards[0]).as_bytes(),
            };
            let proof = store.prove(&key, challenge);
            (node, TxKind::StorageProof { contract, shard: 0, proof })
        }
        10 => {
            let usage = Usage { cpu_ms: u64::from(amount), ..Usage::default() };
            let period = state.meta().period - u64::from(amount % 2);
            (node, TxKind::UsageReport { contract: u64::from(amount) % contracts, period, usage })
        }
        _ => (&f.governance, TxKind::SetValidators { validators: f.validator_sets[(amount % 2) as usize].clone() }),
    };
    let next = pending.entry(signer.public()).or_insert_with(|| state.account(&signer.public()).nonce);
    let nonce = match amount % 20 {
        0 => next.wrapping_sub(1),
        1 => *next + 1,
        _ => *next,
    };
    let tx = Transaction { account: signer.public(), nonce, kind };
    if amount % 40 == 2 {
        // Signed by someone else.
        return tx.sign(&f.genesis.chain_id(), &f.accounts[((actor % ACCOUNTS + 1) % ACCOUNTS) as usize]);
    }
    if nonce == *next {
        *next += 1;
    }
    tx.sign(&f.genesis.chain_id(), signer)
}

/// Applies `ops` on two independent instances; returns the number of applied transactions.
fn run(ops: &[Op]) -> usize {
    let f = fixture();
    let refs: Vec<&[u8]> = f.shards.iter().map(|s| s.as_slice()).collect();
    let mut store = NodeStore::new(&refs);
    let (mut a, _) = State::genesis(&f.genesis).expect("genesis");
    let (mut b, _) = State::genesis(&f.genesis).expect("genesis");
    assert_eq!(a.root(), b.root());
    let mut time_ms = GENESIS_MS;
    let mut applied = 0;
    for (i, chunk) in ops.chunks(TXS_PER_BLOCK).enumerate() {
        let mut pending = BTreeMap::new();
        let candidates: Vec<SignedTx> = chunk.iter().map(|op| make_tx(&f, &mut store, &a, &mut pending, *op)).collect();
        time_ms += 5 * MINUTE_MS + (chunk[0].3 as u64 % 20) * MINUTE_MS;
        let proposer = a.meta().validators.validators()[0].key;
        let (block_a, refused_a) = a.build_block(candidates.clone(), time_ms, proposer).expect("build a");
        let (block_b, refused_b) = b.build_block(candidates, time_ms, proposer).expect("build b");
        assert_eq!(block_a, block_b, "block {i}");
        assert_eq!(refused_a, refused_b, "block {i}");
        let outcome_a = a.apply_block(&block_a).expect("apply a");
        let outcome_b = b.apply_block(&block_b).expect("apply b");
        assert_eq!(outcome_a, outcome_b, "block {i}");
        assert_eq!(a.root(), b.root(), "block {i}");
        applied += block_a.txs.len();
    }
    applied
}

fn ops(count: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u32>()), count)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1, max_shrink_iters: 8, ..ProptestConfig::default() })]

    #[test]
    fn ten_thousand_random_transactions_same_root(ops in ops(10_000)) {
        let applied = run(&ops);
        eprintln!("10,000 random transactions: {applied} applied, the rest refused identically by both instances");
        // Most random transactions are refused; enough must apply to mean something.
        prop_assert!(applied > 1_000, "only {} applied", applied);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn short_random_runs_same_root(ops in ops(400)) {
        run(&ops);
    }
}
