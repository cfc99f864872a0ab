//! An in-process chain for host tests of gridctl's ledger paths: a genesis, validators that
//! sign every block, a `ledger::State` that applies them, and a [`Transport`] answering the
//! validators' client protocol from it, as a `validator` daemon does (one block per
//! submitted transaction). gridctl's [`crate::ledger::Ledger`] on top of it verifies every
//! answer exactly as on the network: quorum commits, proofs against accepted headers.
//!
//! Not a validator: no consensus, no persistence. Tests drive time with [`LocalChain::tick`].

use std::sync::{Arc, Mutex};

use ledger::rpc::{self, Request, Response};
use ledger::{Block, Commit, Genesis, Keypair, LightBlock, PublicKey, SignedTx, State, Transaction, TxError, TxKind, TxOutcome, Validator};

use crate::ledger::Transport;
use crate::{Error, Result};

/// Genesis time of test chains: a whole hour.
pub const GENESIS_MS: u64 = 1_800_000_000_000 - (1_800_000_000_000 % ledger::PERIOD_MS);

/// The chain.
pub struct LocalChain {
    /// Its genesis.
    pub genesis: Genesis,
    /// The state after the last block.
    pub state: State,
    validators: Vec<Keypair>,
    time_ms: u64,
    blocks: Vec<(Block, Commit)>,
}

impl LocalChain {
    /// Four validators, `balances`, and `period_ms` per billing period.
    pub fn new(balances: &[(PublicKey, u64)], period_ms: u64) -> Result<LocalChain> {
        let validators: Vec<Keypair> = (0..4u8).map(|i| Keypair::from_seed([200 + i; 32])).collect();
        let genesis = Genesis {
            chain_name: "local".into(),
            time_ms: GENESIS_MS,
            validators: validators.iter().map(|k| Validator { key: k.public(), power: 10 }).collect(),
            balances: balances.to_vec(),
            governance: Keypair::from_seed([250; 32]).public(),
            period_ms,
        };
        let (state, _) = State::genesis(&genesis).map_err(|e| Error(format!("genesis: {e}")))?;
        Ok(LocalChain { genesis, state, validators, time_ms: GENESIS_MS, blocks: Vec::new() })
    }

    /// Shares the chain between transports.
    pub fn shared(self) -> Arc<Mutex<LocalChain>> {
        Arc::new(Mutex::new(self))
    }

    /// A block of `txs`, `advance_ms` after the last one, signed by every validator and
    /// applied; returns the refused transactions' errors.
    pub fn block(&mut self, txs: Vec<SignedTx>, advance_ms: u64) -> Result<Vec<TxError>> {
        self.time_ms += advance_ms;
        let proposer = self.validators[0].public();
        let (block, refused) = self.state.build_block(txs, self.time_ms, proposer).map_err(|e| Error(format!("build: {e:?}")))?;
        self.state.apply_block(&block).map_err(|e| Error(format!("apply: {e:?}")))?;
        let mut commit = Commit::new(&block.header, 0);
        for key in &self.validators {
            commit.sign(&self.genesis.chain_id(), key);
        }
        self.blocks.push((block, commit));
        Ok(refused.into_iter().map(|(_, e)| e).collect())
    }

    /// An empty block `ms` later (time passes; periods end and are billed).
    pub fn tick(&mut self, ms: u64) -> Result<()> {
        self.block(Vec::new(), ms).map(|_| ())
    }

    /// Applies `kind` signed by `key` in a block of its own.
    pub fn run(&mut self, key: &Keypair, kind: TxKind) -> Result<TxOutcome> {
        let nonce = self.state.account(&key.public()).nonce;
        let tx = Transaction { account: key.public(), nonce, kind }.sign(&self.genesis.chain_id(), key);
        let outcome = self.state.check_tx(&tx);
        match self.block(vec![tx], 1000)?.pop() {
            Some(e) => Err(Error(format!("refused: {e:?}"))),
            None => outcome.map_err(|e| Error(format!("refused: {e:?}"))),
        }
    }

    /// The validator's answer to `request`.
    pub fn answer(&mut self, request: &Request) -> Response {
        match request {
            Request::Submit(tx) => {
                if let Err(e) = self.state.check_tx(tx) {
                    return Response::Refused(format!("{e:?}"));
                }
                match self.block(vec![tx.clone()], 1000) {
                    Ok(refused) if refused.is_empty() => Response::Committed(self.state.meta().height),
                    Ok(refused) => Response::Refused(format!("{refused:?}")),
                    Err(e) => Response::Refused(e.0),
                }
            }
            Request::Status => Response::Status { height: self.state.meta().height, state_root: self.state.root() },
            Request::LightBlock(height) => {
                let index = usize::try_from(height.saturating_sub(1)).unwrap_or(usize::MAX);
                let block = if *height == 0 { None } else { self.blocks.get(index).map(|(b, c)| Box::new(LightBlock::of(b, c.clone()))) };
                Response::LightBlock(block)
            }
            Request::Prove(key) => match self.state.prove(key) {
                Ok(proof) => Response::Proof { height: self.state.meta().height, proof },
                Err(e) => Response::Refused(format!("{e:?}")),
            },
            Request::LightBlocks { from, count } => {
                let first = usize::try_from(from.max(&1) - 1).unwrap_or(usize::MAX);
                let count = (*count).min(rpc::LIGHT_BLOCKS_PER_RESPONSE_MAX) as usize;
                Response::LightBlocks(self.blocks.iter().skip(first).take(count).map(|(b, c)| LightBlock::of(b, c.clone())).collect())
            }
            Request::NodeKeys { after } => {
                let mut keys: Vec<[u8; 32]> = self.state.node_keys(after.as_ref()).take(rpc::NODE_KEYS_PER_RESPONSE_MAX + 1).copied().collect();
                let more = keys.len() > rpc::NODE_KEYS_PER_RESPONSE_MAX;
                keys.truncate(rpc::NODE_KEYS_PER_RESPONSE_MAX);
                Response::NodeKeys { keys, more }
            }
            Request::Genesis => Response::Genesis(Box::new(self.genesis.clone())),
            Request::NodeContracts { node, after } => {
                let mut ids: Vec<u64> = self.state.node_contracts(node, *after).take(rpc::CONTRACT_IDS_PER_RESPONSE_MAX + 1).collect();
                let more = ids.len() > rpc::CONTRACT_IDS_PER_RESPONSE_MAX;
                ids.truncate(rpc::CONTRACT_IDS_PER_RESPONSE_MAX);
                Response::ContractIds { ids, more }
            }
        }
    }
}

impl std::fmt::Debug for LocalChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalChain {{ height: {} }}", self.state.meta().height)
    }
}

/// A transport to a shared [`LocalChain`].
#[derive(Clone)]
pub struct LocalTransport(pub Arc<Mutex<LocalChain>>);

impl Transport for LocalTransport {
    fn call(&mut self, request: &Request) -> Result<Response> {
        let mut chain = self.0.lock().map_err(|_| Error("the local chain is poisoned".into()))?;
        Ok(chain.answer(request))
    }
}
