//! A test chain: a genesis, validators that sign every block, a state that builds and
//! applies blocks, and the light blocks a light client would fetch. Proofs of storage come
//! from a real `shardstore::ShardStore` on an in-memory disk, as a node would answer.
#![allow(dead_code)]

use blockdev::mem::MemDisk;
use ledger::state::BlockOutcome;
use ledger::{
    Block, BlockError, Commit, Genesis, Keypair, LightBlock, ProofData, PublicKey, SignedTx, State, Transaction,
    TxError, TxKind, TxOutcome, Validator,
};
use shardstore::ShardStore;

/// Genesis time: a whole hour, so periods start at `GENESIS_MS / PERIOD_MS`.
pub const GENESIS_MS: u64 = 1_800_000_000_000 - (1_800_000_000_000 % ledger::PERIOD_MS);
pub const MINUTE_MS: u64 = 60_000;

/// A deterministic key.
pub fn key(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

pub struct Chain {
    pub genesis: Genesis,
    pub chain_id: [u8; 32],
    pub state: State,
    pub validators: Vec<Keypair>,
    pub governance: Keypair,
    pub time_ms: u64,
    /// Every committed block as a light client receives it.
    pub light_blocks: Vec<LightBlock>,
    pub genesis_header: ledger::Header,
}

impl Chain {
    /// `validator_count` validators of power 10 (seeds 200..), and `balances`.
    pub fn new(validator_count: u8, balances: &[(PublicKey, u64)]) -> Chain {
        let validators: Vec<Keypair> = (0..validator_count).map(|i| key(200 + i)).collect();
        let governance = key(250);
        let genesis = Genesis {
            chain_name: "test".into(),
            time_ms: GENESIS_MS,
            validators: validators.iter().map(|k| Validator { key: k.public(), power: 10 }).collect(),
            balances: balances.to_vec(),
            governance: governance.public(),
            period_ms: ledger::PERIOD_MS,
        };
        let (state, genesis_header) = State::genesis(&genesis).expect("genesis");
        Chain {
            chain_id: genesis.chain_id(),
            genesis,
            state,
            validators,
            governance,
            time_ms: GENESIS_MS,
            light_blocks: Vec::new(),
            genesis_header,
        }
    }

    /// `kind` signed by `key` with its next nonce.
    pub fn tx(&self, key: &Keypair, kind: TxKind) -> SignedTx {
        let nonce = self.state.account(&key.public()).nonce;
        self.tx_nonce(key, nonce, kind)
    }

    pub fn tx_nonce(&self, key: &Keypair, nonce: u64, kind: TxKind) -> SignedTx {
        Transaction { account: key.public(), nonce, kind }.sign(&self.chain_id, key)
    }

    /// Builds a block of `txs` `advance_ms` after the last one, commits it with every
    /// validator's signature and applies it. Panics if a transaction is refused.
    pub fn block(&mut self, txs: Vec<SignedTx>, advance_ms: u64) -> BlockOutcome {
        let (outcome, refused) = self.try_block(txs, advance_ms);
        let errors: Vec<&TxError> = refused.iter().map(|(_, e)| e).collect();
        assert!(refused.is_empty(), "refused: {errors:?}");
        outcome
    }

    /// Like [`Chain::block`], returning the refused transactions instead of panicking.
    pub fn try_block(&mut self, txs: Vec<SignedTx>, advance_ms: u64) -> (BlockOutcome, Vec<(SignedTx, TxError)>) {
        self.time_ms += advance_ms;
        let proposer = self.validators[0].public();
        let (block, refused) = self.state.build_block(txs, self.time_ms, proposer).expect("build");
        let outcome = self.state.apply_block(&block).expect("apply own block");
        let commit = self.commit(&block, 0, self.validators.len());
        self.light_blocks.push(LightBlock::of(&block, commit));
        (outcome, refused)
    }

    /// A commit for `block` signed by the first `signers` validators.
    pub fn commit(&self, block: &Block, round: u32, signers: usize) -> Commit {
        let mut commit = Commit::new(&block.header, round);
        for key in self.validators.iter().take(signers) {
            commit.sign(&self.chain_id, key);
        }
        commit
    }

    /// Applies one transaction in its own block; returns its outcome or why it was refused.
    /// A refused transaction leaves the state as it was (an empty block is applied).
    pub fn run(&mut self, key: &Keypair, kind: TxKind) -> Result<TxOutcome, TxError> {
        let tx = self.tx(key, kind);
        self.run_tx(tx)
    }

    pub fn run_tx(&mut self, tx: SignedTx) -> Result<TxOutcome, TxError> {
        let checked = self.state.check_tx(&tx);
        let (outcome, mut refused) = self.try_block(vec![tx], 1000);
        match refused.pop() {
            Some((_, error)) => {
                assert_eq!(checked, Err(error.clone()), "check_tx and the block builder disagree");
                Err(error)
            }
            None => {
                assert!(checked.is_ok(), "check_tx refused what the block took: {checked:?}");
                Ok(outcome.receipts[0].outcome.clone())
            }
        }
    }

    /// A block holding exactly `txs` (whether or not they apply), roots from an empty block:
    /// what a faulty proposer could send. Returns what `apply_block` says.
    pub fn apply_forced(&mut self, txs: Vec<SignedTx>) -> Result<BlockOutcome, BlockError> {
        let proposer = self.validators[0].public();
        let (mut block, _) = self.state.build_block(Vec::new(), self.time_ms + 1000, proposer).expect("build");
        block.header.txs_hash = ledger::block::txs_hash(&txs);
        block.txs = txs;
        self.state.apply_block(&block)
    }
}

/// A shard of `len` bytes depending on `seed`.
pub fn shard_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The owner the test shards are stored under (any key: proofs do not depend on it).
const OWNER: [u8; 32] = [0x33; 32];

/// A node's shard store holding `shards`, as the node would answer challenges.
pub struct NodeStore {
    store: ShardStore<MemDisk>,
}

impl NodeStore {
    pub fn new(shards: &[&[u8]]) -> NodeStore {
        let mut store = ShardStore::format(MemDisk::new(4096), [0x11; 32], [0x22; 16]).expect("format");
        for bytes in shards {
            store.put(&OWNER, *blake3::hash(bytes).as_bytes(), bytes).expect("put");
        }
        NodeStore { store }
    }

    /// The store's answer to `challenge` for the shard `key`.
    pub fn prove(&mut self, key: &[u8; 32], challenge: u64) -> ProofData {
        self.store.prove(&OWNER, key, challenge).expect("prove").into()
    }
}

/// The placement record of `bytes` on `node`.
pub fn placement(node: &Keypair, bytes: &[u8]) -> ledger::ShardPlacement {
    ledger::ShardPlacement {
        node: node.public(),
        key: *blake3::hash(bytes).as_bytes(),
        merkle_root: shardstore::merkle_root(bytes),
        len_bytes: bytes.len() as u64,
    }
}
