//! Consensus messages from the network are untrusted: random bytes and mutated real messages
//! decode to `None` or to a message, never a panic; a real message round-trips exactly.
//! `GRIDOS_FUZZ_CASES=N` runs each property N times (default 256).

mod common;

use common::{genesis, keys, Net, Sim};
use ledger::Keypair;
use proptest::prelude::*;
use validator::{Message, Node, Output};

fn cases() -> u32 {
    std::env::var("GRIDOS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

/// Real messages of every kind a short run produces (proposal, votes, a sync pair), built once.
fn samples() -> Vec<Vec<u8>> {
    static SAMPLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(build_samples).clone()
}

fn build_samples() -> Vec<Vec<u8>> {
    let alice = Keypair::from_seed([1; 32]);
    let genesis = genesis(&alice);
    let net = Net { loss_percent: 0, latency_ms_max: 50, silent: vec![], corrupt: vec![], cut: vec![], partition: vec![], heal_ms: 0 };
    let mut sim = Sim::new(1, net, &genesis, keys());
    sim.start();
    sim.run_until(2, 100_000);
    let mut node = Node::new(keys()[0].clone(), &genesis, validator::Timeouts::default()).expect("node");
    let mut samples: Vec<Vec<u8>> = node
        .start(common::GENESIS_MS)
        .into_iter()
        .filter_map(|o| match o {
            Output::Broadcast(m) => Some(m.encode()),
            _ => None,
        })
        .collect();
    let (block, commit) = sim.nodes[0].decided()[0].clone();
    samples.push(Message::Decided { block: Box::new(block), commit }.encode());
    samples.push(Message::SyncRequest { height: 3, from: validator::context::Address(keys()[1].public()) }.encode());
    samples
}

#[test]
fn real_messages_round_trip() {
    for bytes in samples() {
        let message = Message::decode(&bytes).expect("decodes");
        assert_eq!(message.encode(), bytes);
    }
    assert!(Message::decode(&vec![0u8; validator::wire::MESSAGE_BYTES_MAX + 1]).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Some(message) = Message::decode(&bytes) {
            let _ = message.encode();
        }
    }

    #[test]
    fn mutated_messages_never_panic(which in any::<prop::sample::Index>(), position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let samples = samples();
        let mut bytes = samples[which.index(samples.len())].clone();
        let i = position.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Some(message) = Message::decode(&bytes) {
            let alice = Keypair::from_seed([1; 32]);
            let mut node = Node::new(keys()[1].clone(), &genesis(&alice), validator::Timeouts::default()).expect("node");
            let _ = node.start(common::GENESIS_MS);
            let _ = node.on_message(message, common::GENESIS_MS + 10);
        }
    }
}
