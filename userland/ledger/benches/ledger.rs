//! Ledger figures (prints them): light-client block verifications per second, state-proof
//! size and verification time, transactions applied per second.
//! Run: `cargo bench -p ledger` (release build, one core).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{key, GENESIS_MS};
use ledger::{Commit, Genesis, Keypair, LightBlock, LightClient, State, StateKey, Transaction, TxKind, Validator};

fn light_client(validator_count: usize, blocks: usize) {
    let validators: Vec<Keypair> = (0..validator_count).map(|i| Keypair::from_seed([i as u8 + 1; 32])).collect();
    let genesis = Genesis {
        chain_name: "bench".into(),
        time_ms: GENESIS_MS,
        validators: validators.iter().map(|k| Validator { key: k.public(), power: 1 }).collect(),
        balances: vec![],
        governance: key(250).public(),
        period_ms: ledger::PERIOD_MS,
    };
    let (mut state, _) = State::genesis(&genesis).expect("genesis");
    let chain_id = genesis.chain_id();
    // Commits carry the smallest quorum: more than two thirds of the validators.
    let signers = validator_count * 2 / 3 + 1;
    let mut light_blocks = Vec::with_capacity(blocks);
    for i in 0..blocks {
        let (block, _) = state.build_block(vec![], GENESIS_MS + 1000 * (i as u64 + 1), validators[0].public()).expect("build");
        state.apply_block(&block).expect("apply");
        let mut commit = Commit::new(&block.header, 0);
        for v in validators.iter().take(signers) {
            commit.sign(&chain_id, v);
        }
        light_blocks.push(LightBlock::of(&block, commit));
    }
    let mut light = LightClient::from_genesis(&genesis).expect("light");
    let start = Instant::now();
    for block in &light_blocks {
        light.accept(block).expect("accept");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "light client: {validator_count:>3} validators ({signers:>2} signatures per commit): {:>8.0} blocks verified/s ({:.1} us/block)",
        blocks as f64 / secs,
        secs * 1e6 / blocks as f64
    );
}

fn state_proofs(account_count: usize) {
    let accounts: Vec<[u8; 32]> = (0..account_count as u64).map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes()).collect();
    let genesis = Genesis {
        chain_name: "bench".into(),
        time_ms: GENESIS_MS,
        validators: vec![Validator { key: key(200).public(), power: 1 }],
        balances: accounts.iter().map(|a| (*a, 1_000)).collect(),
        governance: key(250).public(),
        period_ms: ledger::PERIOD_MS,
    };
    let build = Instant::now();
    let (state, _) = State::genesis(&genesis).expect("genesis");
    let build_secs = build.elapsed().as_secs_f64();
    let root = state.root();
    let samples = 1000;
    let proofs: Vec<_> = (0..samples).map(|i| state.prove(&StateKey::Account(accounts[i * 7919 % account_count])).expect("prove")).collect();
    let absent = state.prove(&StateKey::Account([0xAB; 32])).expect("prove");
    let mean_bytes = proofs.iter().map(|p| postcard::to_allocvec(p).expect("encode").len()).sum::<usize>() as f64 / samples as f64;
    let start = Instant::now();
    for (i, proof) in proofs.iter().enumerate() {
        let account = ledger::state::verify_account(&root, &accounts[i * 7919 % account_count], proof).expect("verify");
        assert_eq!(account.balance, 1_000);
    }
    let verify_us = start.elapsed().as_secs_f64() * 1e6 / samples as f64;
    println!(
        "state proof: {account_count:>7} accounts: {mean_bytes:>5.0} bytes (record + path; absent: {} bytes), verified in {verify_us:.1} us; tree built in {build_secs:.2} s",
        postcard::to_allocvec(&absent).expect("encode").len()
    );
}

fn transactions(account_count: usize, block_txs: usize, blocks: usize) {
    let keys: Vec<Keypair> = (0..account_count as u64).map(|i| Keypair::from_seed(*blake3::hash(&i.to_le_bytes()).as_bytes())).collect();
    let genesis = Genesis {
        chain_name: "bench".into(),
        time_ms: GENESIS_MS,
        validators: vec![Validator { key: key(200).public(), power: 1 }],
        balances: keys.iter().map(|k| (k.public(), 1_000_000)).collect(),
        governance: key(250).public(),
        period_ms: ledger::PERIOD_MS,
    };
    let chain_id = genesis.chain_id();
    let (mut proposer, _) = State::genesis(&genesis).expect("genesis");
    let (mut follower, _) = State::genesis(&genesis).expect("genesis");
    let mut nonces = vec![0u64; account_count];
    let (mut build_secs, mut apply_secs, mut sign_secs) = (0.0, 0.0, 0.0);
    for b in 0..blocks {
        let sign = Instant::now();
        let txs: Vec<_> = (0..block_txs)
            .map(|i| {
                let from = (b * block_txs + i) % account_count;
                let to = (from * 31 + 7) % account_count;
                let tx = Transaction { account: keys[from].public(), nonce: nonces[from], kind: TxKind::Transfer { to: keys[to].public(), amount: 1 } };
                nonces[from] += 1;
                tx.sign(&chain_id, &keys[from])
            })
            .collect();
        sign_secs += sign.elapsed().as_secs_f64();
        let start = Instant::now();
        let (block, refused) = proposer.build_block(txs, GENESIS_MS + 1000 * (b as u64 + 1), key(200).public()).expect("build");
        assert!(refused.is_empty());
        proposer.apply_block(&block).expect("apply");
        build_secs += start.elapsed().as_secs_f64();
        let start = Instant::now();
        follower.apply_block(&block).expect("apply");
        apply_secs += start.elapsed().as_secs_f64();
    }
    let total = (block_txs * blocks) as f64;
    println!(
        "transactions: {account_count} accounts, blocks of {block_txs} transfers: follower apply_block {:>7.0} tx/s; proposer build+apply {:>7.0} tx/s; (client signing {:>7.0} tx/s)",
        total / apply_secs,
        total / build_secs,
        total / sign_secs
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it too: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        light_client(4, 10);
        state_proofs(1_000);
        transactions(100, 100, 2);
        return;
    }
    for validators in [4, 16, 100] {
        light_client(validators, 500);
    }
    for accounts in [1_000, 10_000, 100_000] {
        state_proofs(accounts);
    }
    transactions(10_000, 1_000, 10);
}
