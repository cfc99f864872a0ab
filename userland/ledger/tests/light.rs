//! The light client: blocks with a missing, forged or short quorum are refused; only blocks
//! that extend the trusted chain are accepted; validator-set changes are followed only
//! through verified blocks; state reads with a wrong proof are refused. Mangled blocks and
//! proofs never panic and are never accepted (proptest).

mod common;

use common::{key, Chain};
use ledger::block::ValidatorSet;
use ledger::{
    Capacity, Keypair, LightBlock, LightClient, LightError, ProofError, ReadError, StateKey, TxKind, TxOutcome,
    Validator,
};
use proptest::prelude::*;

/// A chain of 4 validators with a few blocks: Alice pays Bob, a farm and a node exist.
fn chain() -> (Chain, Keypair, Keypair) {
    let (alice, bob) = (key(1), key(2));
    let mut chain = Chain::new(4, &[(alice.public(), 1_000)]);
    chain.run(&alice, TxKind::Transfer { to: bob.public(), amount: 100 }).expect("transfer");
    chain.run(&alice, TxKind::CreateFarm { name: "f".into() }).expect("farm");
    let capacity = Capacity { cores: 1, memory_bytes: 1, disks_bytes: vec![], nics: 0 };
    chain.run(&alice, TxKind::RegisterNode { node: key(10).public(), farm: 0, capacity }).expect("node");
    (chain, alice, bob)
}

fn client(chain: &Chain) -> LightClient {
    let light = LightClient::from_genesis(&chain.genesis).expect("genesis");
    assert_eq!(*light.latest(), chain.genesis_header);
    light
}

#[test]
fn follows_a_valid_chain() {
    let (chain, _, _) = chain();
    let mut light = client(&chain);
    for block in &chain.light_blocks {
        light.accept(block).expect("valid block");
    }
    assert_eq!(light.latest().height, 3);
    assert_eq!(light.latest().state_root, chain.state.root());
    // The same block again, or an old one, does not extend the chain.
    assert_eq!(light.accept(&chain.light_blocks[2]), Err(LightError::NotNext));
    assert_eq!(light.accept(&chain.light_blocks[0]), Err(LightError::NotNext));
}

/// `block` with its commit signed by the first `signers` validators.
fn resigned(chain: &Chain, block: &LightBlock, signers: &[&Keypair]) -> LightBlock {
    let mut commit = ledger::Commit::new(&block.header, 0);
    for key in signers {
        commit.sign(&chain.chain_id, key);
    }
    LightBlock { commit, ..block.clone() }
}

#[test]
fn short_or_missing_quorum_refused() {
    let (chain, _, _) = chain();
    let mut light = client(&chain);
    let v = &chain.validators;
    let block = &chain.light_blocks[0];
    assert_eq!(light.accept(&resigned(&chain, block, &[])), Err(LightError::NoQuorum { signed: 0, total: 40 }));
    assert_eq!(light.accept(&resigned(&chain, block, &[&v[0]])), Err(LightError::NoQuorum { signed: 10, total: 40 }));
    assert_eq!(light.accept(&resigned(&chain, block, &[&v[0], &v[3]])), Err(LightError::NoQuorum { signed: 20, total: 40 }));
    assert_eq!(light.latest().height, 0, "refusals leave the client where it was");
    // Three of four (75%) is a quorum.
    light.accept(&resigned(&chain, block, &[&v[1], &v[2], &v[3]])).expect("3 of 4");
}

#[test]
fn exactly_two_thirds_is_not_a_quorum() {
    let mut chain = Chain::new(3, &[]);
    chain.block(vec![], 1000);
    let mut light = client(&chain);
    let v = &chain.validators;
    let block = &chain.light_blocks[0];
    assert_eq!(light.accept(&resigned(&chain, block, &[&v[0], &v[1]])), Err(LightError::NoQuorum { signed: 20, total: 30 }));
    light.accept(block).expect("3 of 3");
}

#[test]
fn forged_commits_refused() {
    let (chain, _, _) = chain();
    let mut light = client(&chain);
    let block = &chain.light_blocks[0];

    let mut flipped = block.clone();
    flipped.commit.signatures[1].signature.0[5] ^= 1;
    let signer = flipped.commit.signatures[1].validator;
    assert_eq!(light.accept(&flipped), Err(LightError::ForgedSignature(signer)));

    // A stranger's valid signature.
    let stranger = key(150);
    let mut foreign = block.clone();
    foreign.commit.signatures.pop();
    let message = ledger::block::vote_message(&chain.chain_id, 1, 0, &block.header.hash());
    foreign.commit.signatures.push(ledger::CommitSig { validator: stranger.public(), signature: stranger.sign(&message) });
    assert_eq!(light.accept(&foreign), Err(LightError::UnknownSigner(stranger.public())));

    // One validator counted twice: 3 signatures, 2 validators.
    let mut twice = resigned(&chain, block, &[&chain.validators[0], &chain.validators[1]]);
    let again = twice.commit.signatures[0].clone();
    twice.commit.signatures.push(again.clone());
    assert_eq!(light.accept(&twice), Err(LightError::DuplicateSigner(again.validator)));

    // Signatures for round 0, commit claiming round 1.
    let mut round = block.clone();
    round.commit.round = 1;
    assert!(matches!(light.accept(&round), Err(LightError::ForgedSignature(_))));

    // A forged header (another state root) under the real commit.
    let mut forged = block.clone();
    forged.header.state_root[0] ^= 1;
    assert_eq!(light.accept(&forged), Err(LightError::CommitMismatch));
    // ... even re-signed by one validator.
    let forged = resigned(&chain, &forged, &[&chain.validators[0]]);
    assert_eq!(light.accept(&forged), Err(LightError::NoQuorum { signed: 10, total: 40 }));

    // A commit for another block.
    let mut other = block.clone();
    other.commit = chain.light_blocks[1].commit.clone();
    assert_eq!(light.accept(&other), Err(LightError::CommitMismatch));

    // Too many signatures.
    let mut many = block.clone();
    let extra = many.commit.signatures.clone();
    many.commit.signatures.extend(extra);
    assert_eq!(light.accept(&many), Err(LightError::TooLarge));

    assert_eq!(light.latest().height, 0);
    light.accept(block).expect("the real block");
}

#[test]
fn blocks_that_do_not_extend_the_trusted_chain_refused() {
    let (chain, _, _) = chain();
    let mut light = client(&chain);
    let all: Vec<&Keypair> = chain.validators.iter().collect();
    // Skipping a height.
    assert_eq!(light.accept(&chain.light_blocks[1]), Err(LightError::NotNext));
    // Right height, another parent, full quorum: a fork is still refused.
    let mut fork = chain.light_blocks[0].clone();
    fork.header.parent_hash = [9; 32];
    assert_eq!(light.accept(&resigned(&chain, &fork, &all)), Err(LightError::NotNext));
    // Another chain.
    let mut other = chain.light_blocks[0].clone();
    other.header.chain_id = [1; 32];
    assert_eq!(light.accept(&resigned(&chain, &other, &all)), Err(LightError::WrongChain));
    // Time going back.
    let mut early = chain.light_blocks[0].clone();
    early.header.time_ms = chain.genesis.time_ms - 1;
    assert_eq!(light.accept(&resigned(&chain, &early, &all)), Err(LightError::TimeWentBack));
    // Signed by a set the chain never announced.
    let mut unannounced = chain.light_blocks[0].clone();
    unannounced.header.validators_hash = [3; 32];
    assert_eq!(light.accept(&resigned(&chain, &unannounced, &all)), Err(LightError::WrongValidators));
    // A change of set that the block does not carry, or carries differently.
    let mut claimed = chain.light_blocks[0].clone();
    let bogus = ValidatorSet::new(vec![Validator { key: key(150).public(), power: 1 }]).expect("set");
    claimed.header.next_validators_hash = bogus.hash();
    assert_eq!(light.accept(&resigned(&chain, &claimed, &all)), Err(LightError::WrongNextValidators));
    let mut smuggled = chain.light_blocks[0].clone();
    smuggled.next_validators = Some(bogus);
    assert_eq!(light.accept(&smuggled), Err(LightError::WrongNextValidators));
    light.accept(&chain.light_blocks[0]).expect("the real block");
}

#[test]
fn validator_set_change_followed_only_through_verified_blocks() {
    let (mut chain, alice, bob) = chain();
    let mut light = client(&chain);
    for block in &chain.light_blocks {
        light.accept(block).expect("valid");
    }
    let old: Vec<Keypair> = chain.validators.clone();
    let new: Vec<Keypair> = (0..3).map(|i| key(210 + i)).collect();
    let new_set: Vec<Validator> = new.iter().map(|k| Validator { key: k.public(), power: 7 }).collect();
    let governance = chain.governance.clone();
    assert_eq!(chain.run(&governance, TxKind::SetValidators { validators: new_set }), Ok(TxOutcome::Done));
    // From now on the new keys sign.
    chain.validators = new.clone();
    chain.run(&alice, TxKind::Transfer { to: bob.public(), amount: 1 }).expect("transfer");
    chain.run(&alice, TxKind::Transfer { to: bob.public(), amount: 1 }).expect("transfer");
    let change = chain.light_blocks[3].clone();
    let after = chain.light_blocks[4].clone();
    assert!(change.next_validators.is_some());

    // The block after the change cannot be accepted before the change itself.
    assert_eq!(light.accept(&after), Err(LightError::NotNext));
    // The change without its set, or with another set, is refused.
    let mut stripped = change.clone();
    stripped.next_validators = None;
    assert_eq!(light.accept(&stripped), Err(LightError::WrongNextValidators));
    let mut swapped = change.clone();
    swapped.next_validators = Some(ValidatorSet::new(vec![Validator { key: key(150).public(), power: 1 }]).expect("set"));
    assert_eq!(light.accept(&swapped), Err(LightError::WrongNextValidators));
    assert_eq!(light.validators().total_power(), 40);

    light.accept(&change).expect("the change, signed by the old set");
    assert_eq!(light.validators().total_power(), 21);
    // The old set can no longer sign.
    let old_refs: Vec<&Keypair> = old.iter().take(3).collect();
    assert_eq!(light.accept(&resigned(&chain, &after, &old_refs)), Err(LightError::UnknownSigner(old[0].public())));
    // Two of three new validators (14 of 21) is exactly 2/3: not enough.
    assert_eq!(light.accept(&resigned(&chain, &after, &[&new[0], &new[1]])), Err(LightError::NoQuorum { signed: 14, total: 21 }));
    light.accept(&after).expect("signed by the new set");
    light.accept(&chain.light_blocks[5]).expect("and the next");
    assert_eq!(light.latest().state_root, chain.state.root());
}

#[test]
fn state_reads_verified_and_wrong_proofs_refused() {
    let (mut chain, alice, bob) = chain();
    let mut light = client(&chain);
    for block in &chain.light_blocks {
        light.accept(block).expect("valid");
    }
    let height = light.latest().height;
    let state = &chain.state;
    let alice_proof = state.prove(&StateKey::Account(alice.public())).expect("prove");
    let bob_proof = state.prove(&StateKey::Account(bob.public())).expect("prove");
    assert_eq!(light.account(height, &alice.public(), &alice_proof).expect("alice"), state.account(&alice.public()));
    assert_eq!(light.account(height, &bob.public(), &bob_proof).map(|a| a.balance), Ok(100));
    let node = key(10).public();
    let node_proof = state.prove(&StateKey::Node(node)).expect("prove");
    assert_eq!(light.node(height, &node, &node_proof).expect("node").as_ref(), state.node(&node));
    let farm_proof = state.prove(&StateKey::Farm(0)).expect("prove");
    assert_eq!(light.farm(height, 0, &farm_proof).expect("farm").map(|f| f.owner), Some(alice.public()));
    let meta_proof = state.prove(&StateKey::Meta).expect("prove");
    assert_eq!(light.meta(height, &meta_proof).map(|m| m.height), Ok(height));
    // Absent records prove as absent.
    let nobody = key(77).public();
    let absent = state.prove(&StateKey::Account(nobody)).expect("prove");
    assert_eq!(light.account(height, &nobody, &absent).map(|a| a.balance), Ok(0));
    let no_contract = state.prove(&StateKey::Contract(5)).expect("prove");
    assert_eq!(light.contract(height, 5, &no_contract), Ok(None));

    // Bob's proof for Alice.
    assert_eq!(light.account(height, &alice.public(), &bob_proof), Err(ReadError::Proof(ProofError::WrongKey)));
    let mut relabelled = bob_proof.clone();
    relabelled.key = StateKey::Account(alice.public());
    assert_eq!(light.account(height, &alice.public(), &relabelled), Err(ReadError::Proof(ProofError::Invalid)));
    // A richer Bob.
    let mut richer = bob_proof.clone();
    let mut account = state.account(&bob.public());
    account.balance = 1_000_000;
    richer.record = Some(postcard::to_allocvec(&account).expect("encode"));
    assert_eq!(light.account(height, &bob.public(), &richer), Err(ReadError::Proof(ProofError::Invalid)));
    // Bob hidden (claimed absent).
    let mut hidden = bob_proof.clone();
    hidden.record = None;
    assert_eq!(light.account(height, &bob.public(), &hidden), Err(ReadError::Proof(ProofError::Invalid)));
    // Mangled proof bytes.
    let mut mangled = bob_proof.clone();
    let last = mangled.proof.len() - 1;
    mangled.proof[last] ^= 1;
    assert!(light.account(height, &bob.public(), &mangled).is_err());
    mangled.proof.truncate(5);
    assert!(light.account(height, &bob.public(), &mangled).is_err());
    // Oversized proofs are refused before verification.
    let mut huge = bob_proof.clone();
    huge.proof = vec![0x4c; ledger::STATE_PROOF_BYTES_MAX + 1];
    assert_eq!(light.account(height, &bob.public(), &huge), Err(ReadError::Proof(ProofError::Decode)));
    // A height the client does not hold.
    assert_eq!(light.account(height + 1, &bob.public(), &bob_proof), Err(ReadError::Light(LightError::UnknownHeight(height + 1))));

    // A stale proof: true at `height`, not at the next height once Bob's balance changed.
    chain.run(&alice, TxKind::Transfer { to: bob.public(), amount: 5 }).expect("transfer");
    light.accept(chain.light_blocks.last().expect("block")).expect("valid");
    assert_eq!(light.account(height, &bob.public(), &bob_proof).map(|a| a.balance), Ok(100));
    assert_eq!(light.account(height + 1, &bob.public(), &bob_proof), Err(ReadError::Proof(ProofError::Invalid)));
    let fresh = chain.state.prove(&StateKey::Account(bob.public())).expect("prove");
    assert_eq!(light.account(height + 1, &bob.public(), &fresh).map(|a| a.balance), Ok(105));
}

#[test]
fn light_client_keeps_a_bounded_window_of_headers() {
    let mut chain = Chain::new(1, &[]);
    for _ in 0..ledger::LIGHT_HEADERS_KEPT + 10 {
        chain.block(vec![], 1000);
    }
    let mut light = client(&chain);
    for block in &chain.light_blocks {
        light.accept(block).expect("valid");
    }
    let latest = light.latest().height;
    assert!(light.header(latest).is_some());
    assert!(light.header(latest - ledger::LIGHT_HEADERS_KEPT as u64 + 1).is_some());
    assert!(light.header(latest - ledger::LIGHT_HEADERS_KEPT as u64).is_none());
    assert!(light.header(0).is_none());
}

/// Cases per property: 256, or `GRIDOS_FUZZ_CASES` (see the README's "Fuzzing" section).
fn cases() -> u32 {
    std::env::var("GRIDOS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Any byte flipped in a light block's encoding: it does not decode, or it is refused,
    /// or it is the same block (a flip in a field the hash covers changes the hash).
    #[test]
    fn mangled_light_blocks_never_accepted(position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut chain = Chain::new(4, &[]);
        chain.block(vec![], 1000);
        let block = chain.light_blocks[0].clone();
        let mut bytes = postcard::to_allocvec(&block).expect("encode");
        let i = position.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let mut light = client(&chain);
        if let Some(mangled) = LightBlock::decode(&bytes) {
            if light.accept(&mangled).is_ok() {
                prop_assert_eq!(&mangled.header, &block.header);
                prop_assert_eq!(&mangled.next_validators, &block.next_validators);
            }
        }
    }

    /// Random proof bytes never panic and never verify.
    #[test]
    fn random_state_proofs_never_verify(proof in prop::collection::vec(any::<u8>(), 0..600), record in prop::option::of(prop::collection::vec(any::<u8>(), 0..40))) {
        let (chain, alice, _) = chain_small();
        let root = chain.state.root();
        let forged = ledger::StateProof { key: StateKey::Account(alice.public()), record, proof };
        prop_assert!(ledger::state::verify_account(&root, &alice.public(), &forged).is_err());
    }

    /// A real proof with one byte flipped never verifies.
    #[test]
    fn mangled_state_proofs_never_verify(position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (chain, alice, _) = chain_small();
        let root = chain.state.root();
        let mut proof = chain.state.prove(&StateKey::Account(alice.public())).expect("prove");
        let i = position.index(proof.proof.len());
        proof.proof[i] ^= 1 << bit;
        prop_assert!(ledger::state::verify_account(&root, &alice.public(), &proof).is_err());
    }
}

fn chain_small() -> (Chain, Keypair, Keypair) {
    let (alice, bob) = (key(1), key(2));
    let mut chain = Chain::new(1, &[(alice.public(), 1_000), (bob.public(), 5)]);
    chain.run(&alice, TxKind::Transfer { to: bob.public(), amount: 100 }).expect("transfer");
    (chain, alice, bob)
}
