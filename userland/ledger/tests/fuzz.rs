//! Untrusted ledger data never panics: random bytes as transactions and blocks, and random
//! mutations of real blocks given to `apply_block`, which refuses them with a typed error and
//! leaves the state (root, proofs) as it was, or applies the block only if it is the real
//! one. `GRIDOS_FUZZ_CASES=N` runs each property N times (default 256).

mod common;

use common::{key, Chain};
use ledger::{Block, SignedTx, StateKey, TxKind};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("GRIDOS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

/// A chain with an account, a farm, a node and a contract, and a valid next block that
/// moves tokens and reports uptime.
fn setup() -> (Chain, Block) {
    let (alice, bob, node) = (key(1), key(2), key(10));
    let mut chain = Chain::new(4, &[(alice.public(), 1_000_000)]);
    chain.run(&alice, TxKind::CreateFarm { name: "f".into() }).expect("farm");
    let capacity = ledger::Capacity { cores: 4, memory_bytes: 1 << 30, disks_bytes: vec![1 << 30], nics: 1 };
    chain.run(&alice, TxKind::RegisterNode { node: node.public(), farm: 0, capacity }).expect("node");
    let resources = ledger::Resources { cores: 1, memory_bytes: 1, disk_bytes: 1 };
    chain.run(&alice, TxKind::CreateWorkloadContract { node: node.public(), resources, price_per_hour: 5 }).expect("contract");
    let txs = vec![
        chain.tx(&alice, TxKind::Transfer { to: bob.public(), amount: 7 }),
        chain.tx(&node, TxKind::UptimeReport { uptime_secs: 3 }),
    ];
    let (block, refused) = chain.state.build_block(txs, chain.time_ms + 1000, key(200).public()).expect("build");
    assert!(refused.is_empty());
    (chain, block)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_as_transactions(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(tx) = SignedTx::decode(&bytes) {
            let (mut chain, _) = setup();
            let root = chain.state.root();
            let _ = chain.state.check_tx(&tx);
            prop_assert_eq!(chain.state.root(), root);
        }
    }

    #[test]
    fn random_bytes_as_blocks(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Some(block) = Block::decode(&bytes) {
            let (mut chain, _) = setup();
            let root = chain.state.root();
            prop_assert!(chain.state.apply_block(&block).is_err());
            prop_assert_eq!(chain.state.root(), root);
        }
    }

    /// One bit of the real block flipped: refused with the state unchanged, or (a flip that
    /// decodes to the same block) applied with the real root.
    #[test]
    fn mutated_blocks_refused_or_identical(position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (mut chain, block) = setup();
        let root = chain.state.root();
        let mut bytes = block.encode();
        let i = position.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let Some(mutated) = Block::decode(&bytes) else { return Ok(()) };
        match chain.state.apply_block(&mutated) {
            Ok(outcome) => {
                prop_assert_eq!(&mutated, &block);
                prop_assert_eq!(outcome.state_root, block.header.state_root);
            }
            Err(_) => {
                prop_assert_eq!(chain.state.root(), root);
                let proof = chain.state.prove(&StateKey::Account(key(1).public())).expect("prove");
                prop_assert!(ledger::state::verify_account(&root, &key(1).public(), &proof).is_ok());
                // The real block still applies afterwards.
                prop_assert!(chain.state.apply_block(&block).is_ok());
            }
        }
    }
}
