//! Transactions committed per second by one and by four validators (prints figures).
//! All validators run in this one process on one core, through the seeded simulated network
//! (1-5 ms latency, no loss): the figure is the CPU cost of ordering, checking and applying
//! the same transactions on every validator, not a networked throughput.
//! Run: `cargo bench -p validator`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{keys, Net, Sim, GENESIS_MS};
use ledger::{Genesis, Keypair, Transaction, TxKind, Validator};

fn commit(validator_count: usize, tx_count: u64) {
    let validators: Vec<Keypair> = keys().into_iter().take(validator_count).collect();
    let senders: Vec<Keypair> = (1..=100u8).map(|i| Keypair::from_seed([i; 32])).collect();
    let genesis = Genesis {
        chain_name: "bench".into(),
        time_ms: GENESIS_MS,
        validators: validators.iter().map(|k| Validator { key: k.public(), power: 10 }).collect(),
        balances: senders.iter().map(|k| (k.public(), 1_000_000)).collect(),
        governance: Keypair::from_seed([250; 32]).public(),
        period_ms: ledger::PERIOD_MS,
    };
    let net = Net { loss_percent: 0, latency_ms_max: 5, silent: vec![], corrupt: vec![], cut: vec![], partition: vec![], heal_ms: 0 };
    let mut sim = Sim::new(1, net, &genesis, validators);
    let chain_id = genesis.chain_id();
    let txs: Vec<_> = (0..tx_count)
        .map(|i| {
            let from = (i % 100) as usize;
            let to = senders[(from * 7 + 3) % 100].public();
            Transaction { account: senders[from].public(), nonce: i / 100, kind: TxKind::Transfer { to, amount: 1 } }
                .sign(&chain_id, &senders[from])
        })
        .collect();
    let start = Instant::now();
    for tx in &txs {
        for node in &mut sim.nodes {
            node.submit(tx.clone()).expect("submit");
        }
    }
    sim.start();
    let mut height = 1;
    while sim.nodes.iter().any(|n| n.mempool_len() > 0) {
        sim.run_until(height, 1_000_000);
        height += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let committed: usize = sim.nodes[0].decided().iter().map(|(b, _)| b.txs.len()).sum();
    assert_eq!(committed as u64, tx_count);
    println!(
        "commit: {validator_count} validator(s) on one core: {tx_count} transfers in {} blocks, {:.2} s: {:>7.0} tx/s committed",
        sim.nodes[0].decided().len(),
        secs,
        tx_count as f64 / secs
    );
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let count = if quick { 200 } else { 10_000 };
    commit(1, count);
    commit(4, count);
}
