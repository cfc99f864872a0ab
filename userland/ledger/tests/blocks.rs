//! `apply_block` refuses blocks that do not fit the state (chain, height, parent, time,
//! validators, transaction root, next validators, state root) and leaves the state exactly
//! as it was: same root, same records, proofs still verifying. `build_block` never changes
//! the state.

mod common;

use common::{key, Chain};
use ledger::{Block, BlockError, Keypair, StateKey, TxError, TxKind};

fn chain() -> (Chain, Keypair, Keypair) {
    let (alice, bob) = (key(1), key(2));
    let mut chain = Chain::new(4, &[(alice.public(), 1_000)]);
    chain.run(&alice, TxKind::Transfer { to: bob.public(), amount: 100 }).expect("transfer");
    (chain, alice, bob)
}

/// The state is what it was: root, balances, and proofs of the touched records verify.
fn assert_unchanged(chain: &Chain, root: [u8; 32], alice: &Keypair, bob: &Keypair) {
    let state = &chain.state;
    assert_eq!(state.root(), root);
    assert_eq!(state.account(&alice.public()).balance, 900);
    assert_eq!(state.account(&bob.public()).balance, 100);
    for who in [alice, bob] {
        let proof = state.prove(&StateKey::Account(who.public())).expect("prove");
        let account = ledger::state::verify_account(&root, &who.public(), &proof).expect("proof verifies");
        assert_eq!(account, state.account(&who.public()));
    }
    let meta = state.prove(&StateKey::Meta).expect("prove");
    assert_eq!(ledger::state::verify_meta(&root, &meta).map(|m| m.height), Ok(state.meta().height));
}

/// A valid next block moving `amount` from Alice to Bob (not applied).
fn next_block(chain: &mut Chain, alice: &Keypair, bob: &Keypair, amount: u64) -> Block {
    let tx = chain.tx(alice, TxKind::Transfer { to: bob.public(), amount });
    let (block, refused) = chain.state.build_block(vec![tx], chain.time_ms + 1000, key(200).public()).expect("build");
    assert!(refused.is_empty());
    block
}

#[test]
fn build_block_leaves_the_state() {
    let (mut chain, alice, bob) = chain();
    let root = chain.state.root();
    let first = next_block(&mut chain, &alice, &bob, 10);
    assert_unchanged(&chain, root, &alice, &bob);
    // Built again: the same block. Another block applies instead, as consensus may decide.
    assert_eq!(next_block(&mut chain, &alice, &bob, 10), first);
    let other = next_block(&mut chain, &alice, &bob, 20);
    chain.state.apply_block(&other).expect("apply");
    assert_eq!(chain.state.account(&bob.public()).balance, 120);
    assert_eq!(chain.state.root(), other.header.state_root);
}

#[test]
fn wrong_state_root_refused_and_state_restored() {
    let (mut chain, alice, bob) = chain();
    let root = chain.state.root();
    let good = next_block(&mut chain, &alice, &bob, 10);
    let mut bad = good.clone();
    bad.header.state_root[0] ^= 1;
    assert_eq!(chain.state.check_block(&good), Ok(good.header.state_root));
    assert_unchanged(&chain, root, &alice, &bob);
    assert!(matches!(chain.state.check_block(&bad), Err(BlockError::StateRootMismatch { .. })));
    assert_unchanged(&chain, root, &alice, &bob);
    assert_eq!(
        chain.state.apply_block(&bad),
        Err(BlockError::StateRootMismatch { computed: good.header.state_root, claimed: bad.header.state_root })
    );
    assert_unchanged(&chain, root, &alice, &bob);
    chain.state.apply_block(&good).expect("the good block");
    assert_eq!(chain.state.root(), good.header.state_root);
}

#[test]
fn blocks_that_do_not_fit_refused() {
    let (mut chain, alice, bob) = chain();
    let root = chain.state.root();
    let good = next_block(&mut chain, &alice, &bob, 10);
    type Mangle = fn(&mut Block);
    let cases: Vec<(Mangle, BlockError)> = vec![
        (|b| b.header.chain_id = [1; 32], BlockError::WrongChain),
        (|b| b.header.height += 1, BlockError::WrongHeight { expected: 2, got: 3 }),
        (|b| b.header.parent_hash = [2; 32], BlockError::WrongParent),
        (|b| b.header.time_ms = 0, BlockError::TimeWentBack),
        (|b| b.header.validators_hash = [3; 32], BlockError::WrongValidators),
        (|b| b.header.proposer = [6; 32], BlockError::UnknownProposer),
        (|b| b.header.txs_hash = [4; 32], BlockError::TxsRootMismatch),
        (|b| b.txs.clear(), BlockError::TxsRootMismatch),
        (|b| b.header.next_validators_hash = [5; 32], BlockError::WrongNextValidators),
    ];
    for (mangle, error) in cases {
        let mut bad = good.clone();
        mangle(&mut bad);
        assert_eq!(chain.state.apply_block(&bad), Err(error));
        assert_unchanged(&chain, root, &alice, &bob);
    }
    // A set change smuggled into a block that has none.
    let mut smuggled = good.clone();
    smuggled.next_validators = Some(chain.state.meta().validators.clone());
    assert_eq!(chain.state.apply_block(&smuggled), Err(BlockError::WrongNextValidators));
    assert_unchanged(&chain, root, &alice, &bob);
    chain.state.apply_block(&good).expect("the good block");
}

#[test]
fn a_refused_transaction_undoes_the_whole_block() {
    let (mut chain, alice, bob) = chain();
    let root = chain.state.root();
    let first = chain.tx(&alice, TxKind::Transfer { to: bob.public(), amount: 10 });
    let replay = first.clone();
    assert_eq!(chain.apply_forced(vec![first, replay]), Err(BlockError::Tx { index: 1, error: TxError::BadNonce { expected: 2, got: 1 } }));
    assert_unchanged(&chain, root, &alice, &bob);
}

#[test]
fn block_decoding_is_bounded_and_total() {
    let (mut chain, alice, bob) = chain();
    let block = next_block(&mut chain, &alice, &bob, 10);
    let bytes = block.encode();
    assert_eq!(Block::decode(&bytes), Some(block));
    for cut in 0..bytes.len() {
        assert!(Block::decode(&bytes[..cut]).is_none());
    }
    assert!(Block::decode(&vec![0u8; ledger::BLOCK_BYTES_MAX + 1]).is_none());
    assert!(Block::decode(&[0xff; 64]).is_none());
}
