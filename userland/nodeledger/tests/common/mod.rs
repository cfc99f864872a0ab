//! An in-process chain for the agent's tests: a ledger `State` whose blocks every validator
//! signs, validators that serve `ledger::rpc` requests (honestly or lying in a chosen way),
//! a clock, and a fake `Local` answering challenges from a real `shardstore` on a `MemDisk`.
#![allow(dead_code)]

use std::collections::BTreeMap;

use blockdev::mem::MemDisk;
use ledger::rpc::{Request, Response, CONTRACT_IDS_PER_RESPONSE_MAX, LIGHT_BLOCKS_PER_RESPONSE_MAX};
use ledger::state::{BillingEvent, ContractTerms};
use ledger::{
    Block, Capacity, Commit, ContractId, Genesis, Keypair, LightBlock, ProofData, PublicKey, SignedTx, State,
    Transaction, TxKind, TxOutcome, Usage, Validator,
};
use nodeledger::{Agent, Config, Local};
use shardstore::ShardStore;

/// Billing period of the test chain.
pub const PERIOD_MS: u64 = 10_000;
/// A block every so often.
pub const BLOCK_MS: u64 = 500;
/// Simulation step.
pub const STEP_MS: u64 = 50;
/// Genesis time: a whole period.
pub const GENESIS_MS: u64 = 1_800_000_000_000 - (1_800_000_000_000 % PERIOD_MS);

pub fn key(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

/// How a validator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Serves, at the next height, a block of its own signed by one validator only.
    OneSigner,
    /// Serves real headers with a changed state root (the commit no longer matches).
    ForgedBlock,
    /// Serves proofs whose record was changed.
    BadProof,
    /// Serves another chain's genesis.
    WrongGenesis,
    /// Answers every request with something of the wrong kind or out of bounds.
    Garbage,
    /// Says every submission committed at a height far ahead, and drops it.
    FalseCommit,
    /// Lists endless made-up contract ids for the node.
    ListingFlood,
    /// Takes submissions and never proposes them (nor answers).
    Blackhole,
}

pub struct Chain {
    pub genesis: Genesis,
    pub chain_id: [u8; 32],
    pub state: State,
    pub validators: Vec<Keypair>,
    pub light_blocks: Vec<LightBlock>,
    pub time_ms: u64,
    pub billing: Vec<BillingEvent>,
    /// Every transaction in a block, with the period of its block.
    pub committed: Vec<(u64, SignedTx)>,
    pub genesis_header: ledger::Header,
}

impl Chain {
    pub fn new(validator_count: u8, balances: &[(PublicKey, u64)]) -> Chain {
        let validators: Vec<Keypair> = (0..validator_count).map(|i| key(200 + i)).collect();
        let genesis = Genesis {
            chain_name: "agent-test".into(),
            time_ms: GENESIS_MS,
            validators: validators.iter().map(|k| Validator { key: k.public(), power: 10 }).collect(),
            balances: balances.to_vec(),
            governance: key(250).public(),
            period_ms: PERIOD_MS,
        };
        let (state, genesis_header) = State::genesis(&genesis).expect("genesis");
        Chain {
            chain_id: genesis.chain_id(),
            genesis,
            state,
            validators,
            light_blocks: Vec::new(),
            time_ms: GENESIS_MS,
            billing: Vec::new(),
            committed: Vec::new(),
            genesis_header,
        }
    }

    pub fn period(&self) -> u64 {
        self.state.meta().period
    }

    pub fn commit(&self, block: &Block, signers: usize) -> Commit {
        let mut commit = Commit::new(&block.header, 0);
        for key in self.validators.iter().take(signers) {
            commit.sign(&self.chain_id, key);
        }
        commit
    }

    /// A block of `txs` at `time_ms`, signed by every validator; returns what was refused
    /// and the receipts' outcomes by tx id.
    pub fn block(&mut self, txs: Vec<SignedTx>, time_ms: u64) -> (Vec<(SignedTx, ledger::TxError)>, Vec<TxOutcome>) {
        self.block_by(txs, time_ms, 0)
    }

    /// Like [`Chain::block`], proposed by validator `proposer`.
    pub fn block_by(&mut self, txs: Vec<SignedTx>, time_ms: u64, proposer: usize) -> (Vec<(SignedTx, ledger::TxError)>, Vec<TxOutcome>) {
        self.time_ms = time_ms.max(self.time_ms);
        let proposer = self.validators[proposer % self.validators.len()].public();
        let (block, refused) = self.state.build_block(txs, self.time_ms, proposer).expect("build");
        let outcome = self.state.apply_block(&block).expect("apply own block");
        let commit = self.commit(&block, self.validators.len());
        self.light_blocks.push(LightBlock::of(&block, commit));
        self.billing.extend(outcome.billing);
        let period = self.period();
        for tx in &block.txs {
            self.committed.push((period, tx.clone()));
        }
        (refused, outcome.receipts.into_iter().map(|r| r.outcome).collect())
    }

    /// Transactions of `kind`'s variant signed by `account`, by period.
    pub fn count_by_period(&self, account: &PublicKey, pred: impl Fn(&TxKind) -> bool) -> BTreeMap<u64, usize> {
        let mut out = BTreeMap::new();
        for (period, tx) in &self.committed {
            if tx.tx.account == *account && pred(&tx.tx.kind) {
                *out.entry(*period).or_insert(0) += 1;
            }
        }
        out
    }
}

/// A submission waiting for a block that carries it.
struct Waiting {
    validator: usize,
    tx_id: [u8; 32],
    since_ms: u64,
}

/// The node gives up on a submission's answer after this long (the kernel's
/// `SUBMIT_ANSWER_MS`) and closes the connection.
pub const SUBMIT_ANSWER_MS: u64 = 70_000;

/// The chain, its validators' behaviours and a clock.
pub struct Net {
    pub chain: Chain,
    pub behaviours: Vec<Behaviour>,
    pub now_ms: u64,
    pub next_block_ms: u64,
    /// Each validator's own mempool (a block carries its proposer's).
    mempools: Vec<Vec<SignedTx>>,
    waiting: Vec<Waiting>,
    /// Submissions given up (connection closed by the node).
    pub submit_timeouts: u64,
    /// Requests each validator was sent.
    pub served: Vec<u64>,
    /// Outcomes of test-side transactions by tx id.
    pub outcomes: BTreeMap<[u8; 32], Result<TxOutcome, String>>,
    /// Time spent in the agent's calls (its CPU, `Local` included).
    pub agent_time: std::time::Duration,
    /// Time between blocks.
    pub block_ms: u64,
    /// Fuzzing: (rng state, per-mille of answers whose encoding gets bytes flipped).
    pub mutate: Option<(u64, u64)>,
    /// Answers mutated (and still decodable).
    pub mutated: u64,
    /// Close connections whose submission the agent gave up on (`Agent::stale_request`).
    pub close_stale: bool,
}

impl Net {
    pub fn new(chain: Chain, behaviours: Vec<Behaviour>) -> Net {
        let n = behaviours.len();
        assert_eq!(n, chain.validators.len());
        let now = chain.time_ms;
        Net {
            chain,
            behaviours,
            now_ms: now,
            next_block_ms: now + BLOCK_MS,
            mempools: vec![Vec::new(); n],
            waiting: Vec::new(),
            submit_timeouts: 0,
            served: vec![0; n],
            outcomes: BTreeMap::new(),
            agent_time: std::time::Duration::ZERO,
            block_ms: BLOCK_MS,
            mutate: None,
            mutated: 0,
            close_stale: false,
        }
    }

    pub fn honest(chain: Chain) -> Net {
        let n = chain.validators.len();
        Net::new(chain, vec![Behaviour::Honest; n])
    }

    /// `kind` signed by `key` with its next nonce.
    pub fn tx(&self, key: &Keypair, kind: TxKind) -> SignedTx {
        let nonce = self.chain.state.account(&key.public()).nonce;
        Transaction { account: key.public(), nonce, kind }.sign(&self.chain.chain_id, key)
    }

    /// Runs a test-side transaction in the next block, now; returns its outcome.
    pub fn run_now(&mut self, key: &Keypair, kind: TxKind) -> Result<TxOutcome, String> {
        let tx = self.tx(key, kind);
        self.make_block_with(vec![tx.clone()], None);
        self.outcomes.get(&tx.id()).cloned().unwrap_or(Err("lost".into()))
    }

    /// The next block: its proposer's mempool (validators take turns) and `extra`.
    fn make_block_with(&mut self, extra: Vec<SignedTx>, agent: Option<(&mut Agent, &mut dyn Local)>) {
        let n = self.mempools.len();
        let proposer = (self.chain.state.meta().height as usize + 1) % n;
        let mut txs = std::mem::take(&mut self.mempools[proposer]);
        txs.extend(extra);
        let ids: Vec<[u8; 32]> = txs.iter().map(|t| t.id()).collect();
        let time = self.now_ms.max(self.chain.time_ms);
        let (refused, outcomes) = self.chain.block_by(txs, time, proposer);
        let height = self.chain.state.meta().height;
        // Every validator drops what the block carried and what no longer applies.
        for mempool in &mut self.mempools {
            mempool.retain(|t| !ids.contains(&t.id()));
            let state = &mut self.chain.state;
            let results = state.check_sequence(mempool);
            let mut results = results.into_iter();
            mempool.retain(|_| matches!(results.next(), Some(Ok(_))));
        }
        let mut refused_ids = BTreeMap::new();
        for (tx, error) in refused {
            refused_ids.insert(tx.id(), format!("{error:?}"));
        }
        let mut done = outcomes.into_iter();
        for id in ids.clone() {
            match refused_ids.get(&id) {
                Some(why) => self.outcomes.insert(id, Err(why.clone())),
                None => self.outcomes.insert(id, Ok(done.next().expect("receipt"))),
            };
        }
        // A validator answers a submission once a block carries it (whoever proposed);
        // one dropped from its mempool is never answered (the node times out).
        let carried: Vec<[u8; 32]> = ids.iter().filter(|id| !refused_ids.contains_key(*id)).copied().collect();
        if let Some((agent, local)) = agent {
            let (done, waiting): (Vec<Waiting>, Vec<Waiting>) =
                std::mem::take(&mut self.waiting).into_iter().partition(|w| carried.contains(&w.tx_id));
            self.waiting = waiting;
            for w in done {
                let t = std::time::Instant::now();
                agent.on_response(w.validator, Response::Committed(height), self.now_ms, local);
                self.agent_time += t.elapsed();
            }
        }
    }

    /// What validator `v` answers to `request` (`None`: a submission waiting for a block).
    pub fn serve(&mut self, v: usize, request: Request) -> Option<Response> {
        self.served[v] += 1;
        let state = &self.chain.state;
        let behaviour = self.behaviours[v];
        if behaviour == Behaviour::Garbage {
            return Some(match request {
                Request::LightBlocks { .. } => Response::ContractIds { ids: vec![3, 2, 1], more: true },
                Request::NodeContracts { .. } => Response::ContractIds { ids: vec![5, 4], more: false },
                Request::Prove(_) => Response::LightBlocks(Vec::new()),
                _ => Response::Status { height: u64::MAX, state_root: [0; 32] },
            });
        }
        if let (Behaviour::FalseCommit, Request::Submit(_)) = (behaviour, &request) {
            return Some(Response::Committed(u64::MAX));
        }
        if let (Behaviour::ListingFlood, Request::NodeContracts { after, .. }) = (behaviour, &request) {
            let first = after.map_or(1_000, |a| a + 1);
            let ids = (first..first + CONTRACT_IDS_PER_RESPONSE_MAX as u64).collect();
            return Some(Response::ContractIds { ids, more: true });
        }
        Some(match request {
            Request::Genesis => {
                let mut genesis = self.chain.genesis.clone();
                if behaviour == Behaviour::WrongGenesis {
                    genesis.chain_name = "other".into();
                }
                Response::Genesis(Box::new(genesis))
            }
            Request::LightBlocks { from, count } => {
                let from = from.max(1);
                let blocks: Vec<LightBlock> = (from..from.saturating_add(count.min(LIGHT_BLOCKS_PER_RESPONSE_MAX)))
                    .map_while(|h| self.chain.light_blocks.get((h - 1) as usize).cloned())
                    .collect();
                Response::LightBlocks(self.tamper_blocks(behaviour, from, blocks))
            }
            Request::Prove(key) => {
                let mut proof = state.prove(&key).expect("prove");
                if behaviour == Behaviour::BadProof {
                    match &mut proof.record {
                        Some(bytes) if !bytes.is_empty() => {
                            let last = bytes.len() - 1;
                            bytes[last] ^= 1;
                        }
                        other => *other = Some(vec![1, 2, 3]),
                    }
                }
                Response::Proof { height: state.meta().height, proof }
            }
            Request::NodeContracts { node, after } => {
                let mut ids: Vec<ContractId> = state.node_contracts(&node, after).take(CONTRACT_IDS_PER_RESPONSE_MAX + 1).collect();
                let more = ids.len() > CONTRACT_IDS_PER_RESPONSE_MAX;
                ids.truncate(CONTRACT_IDS_PER_RESPONSE_MAX);
                Response::ContractIds { ids, more }
            }
            Request::Submit(tx) => {
                // The validator's mempool: an account's first pending transaction must apply.
                let mempool = &self.mempools[v];
                if mempool.iter().any(|t| t.tx.account == tx.tx.account && t.id() != tx.id()) {
                    return Some(Response::Refused("BadNonce (pending)".into()));
                }
                match self.chain.state.check_tx(&tx) {
                    Err(error) => Response::Refused(format!("{error:?}")),
                    Ok(_) => {
                        self.waiting.push(Waiting { validator: v, tx_id: tx.id(), since_ms: self.now_ms });
                        if behaviour != Behaviour::Blackhole && !self.mempools[v].contains(&tx) {
                            self.mempools[v].push(tx);
                        }
                        return None;
                    }
                }
            }
            Request::Status => Response::Status { height: state.meta().height, state_root: state.root() },
            Request::LightBlock(_) | Request::NodeKeys { .. } => Response::Refused("not served here".into()),
        })
    }

    fn tamper_blocks(&self, behaviour: Behaviour, from: u64, mut blocks: Vec<LightBlock>) -> Vec<LightBlock> {
        match behaviour {
            Behaviour::ForgedBlock => {
                for block in &mut blocks {
                    block.header.state_root[0] ^= 1;
                }
            }
            Behaviour::OneSigner => {
                // A block of its own at the next height, signed by one validator only.
                let parent = match from {
                    0 | 1 => Some(self.chain.genesis_header.clone()),
                    h => self.chain.light_blocks.get(h as usize - 2).map(|b| b.header.clone()),
                };
                if let Some(parent) = parent {
                    let mut header = parent.clone();
                    header.height = from;
                    header.parent_hash = parent.hash();
                    header.time_ms = parent.time_ms + 1;
                    header.state_root = [7; 32];
                    let mut commit = Commit::new(&header, 0);
                    commit.sign(&self.chain.chain_id, &self.chain.validators[0]);
                    return vec![LightBlock { header, commit, next_validators: None }];
                }
            }
            _ => {}
        }
        blocks
    }

    /// Drives `agent` and the chain until `until_ms`.
    pub fn run(&mut self, agent: &mut Agent, local: &mut dyn Local, until_ms: u64) {
        let n = self.behaviours.len();
        while self.now_ms < until_ms {
            for v in 0..n {
                if self.waiting.iter().any(|w| w.validator == v) {
                    continue;
                }
                for _ in 0..64 {
                    let t = std::time::Instant::now();
                    let polled = agent.poll_request(v, self.now_ms);
                    self.agent_time += t.elapsed();
                    let Some(request) = polled else { break };
                    match self.serve(v, request).map(|r| self.maybe_mutate(r)) {
                        Some(response) => {
                            let t = std::time::Instant::now();
                            agent.on_response(v, response, self.now_ms, local);
                            self.agent_time += t.elapsed();
                        }
                        None => break,
                    }
                }
            }
            if self.now_ms >= self.next_block_ms {
                self.make_block_with(Vec::new(), Some((&mut *agent, &mut *local)));
                self.next_block_ms += self.block_ms;
            }
            let now = self.now_ms;
            // The node closes a connection whose submission the agent gave up on, or that
            // waited too long.
            let (late, waiting): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
                .into_iter()
                .partition(|w| now >= w.since_ms + SUBMIT_ANSWER_MS || (self.close_stale && agent.stale_request(w.validator)));
            self.waiting = waiting;
            for w in late {
                self.submit_timeouts += 1;
                agent.on_disconnect(w.validator, now);
            }
            self.now_ms += STEP_MS;
        }
    }

    /// With [`Net::mutate`] set, flips a few bytes of some answers' encodings (what still
    /// decodes is delivered; the rest becomes a refusal).
    fn maybe_mutate(&mut self, response: Response) -> Response {
        let Some((state, per_mille)) = &mut self.mutate else { return response };
        let mut next = || {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state
        };
        if next() % 1000 >= *per_mille {
            return response;
        }
        let mut bytes = postcard::to_allocvec(&response).expect("encode");
        let flips = 1 + next() % 3;
        for _ in 0..flips {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] ^= 1 << (next() % 8);
        }
        if next() % 8 == 0 {
            let keep = (next() % bytes.len() as u64) as usize;
            bytes.truncate(keep);
        }
        self.mutated += 1;
        postcard::from_bytes(&bytes).unwrap_or(Response::Refused("undecodable".into()))
    }

    /// Runs to the start of period `period` plus `offset_ms`.
    pub fn run_to(&mut self, agent: &mut Agent, local: &mut dyn Local, period: u64, offset_ms: u64) {
        self.run(agent, local, period * PERIOD_MS + offset_ms);
    }

    /// The node goes down for `downtime_ms` (its connections close; the chain goes on).
    pub fn reboot(&mut self, downtime_ms: u64) {
        self.waiting.clear();
        let until = self.now_ms + downtime_ms;
        while self.now_ms < until {
            if self.now_ms >= self.next_block_ms {
                self.make_block_with(Vec::new(), None);
                self.next_block_ms += self.block_ms;
            }
            self.now_ms += STEP_MS;
        }
    }

    /// The validator holding a submission that waits for a block, if any.
    pub fn waiting_validator(&self) -> Option<usize> {
        self.waiting.first().map(|w| w.validator)
    }

    /// Every validator holding a submission loses its connection; with `lose`, the
    /// transaction never reaches a block.
    pub fn disconnect_all(&mut self, agent: &mut Agent, lose: bool) {
        let waiting = std::mem::take(&mut self.waiting);
        if lose {
            for mempool in &mut self.mempools {
                mempool.retain(|t| !waiting.iter().any(|w| w.tx_id == t.id()));
            }
        }
        for w in waiting {
            agent.on_disconnect(w.validator, self.now_ms);
        }
    }
}

/// The node's side: identity key, a shard store on a memory disk, usage figures.
pub struct FakeLocal {
    pub key: Keypair,
    pub store: ShardStore<MemDisk>,
    pub uptime_secs: u64,
    pub usage: BTreeMap<ContractId, Usage>,
    pub ended: Vec<ContractId>,
    pub proofs_made: u64,
    pub usage_asked: Vec<(ContractId, u64)>,
}

impl FakeLocal {
    pub fn new(key: Keypair) -> FakeLocal {
        let store = ShardStore::format(MemDisk::new(8192), key.public(), [0x22; 16]).expect("format");
        FakeLocal { key, store, uptime_secs: 1, usage: BTreeMap::new(), ended: Vec::new(), proofs_made: 0, usage_asked: Vec::new() }
    }

    /// Stores `bytes` for `owner`; returns its placement on this node.
    pub fn put(&mut self, owner: &PublicKey, bytes: &[u8]) -> ledger::ShardPlacement {
        let key = *blake3::hash(bytes).as_bytes();
        self.store.put(owner, key, bytes).expect("put");
        ledger::ShardPlacement {
            node: self.key.public(),
            key,
            merkle_root: shardstore::merkle_root(bytes),
            len_bytes: bytes.len() as u64,
        }
    }

    /// Flips bits in the stored copy of `bytes` on the disk.
    pub fn corrupt(&mut self, bytes: &[u8]) {
        let needle = &bytes[..64];
        let image = self.store.device().durable_image();
        let at = image.windows(needle.len()).position(|w| w == needle).expect("shard on disk");
        self.store.device_mut().flip_bits(at as u64 + 10, 1, 0xff);
    }
}

impl Local for FakeLocal {
    fn sign(&mut self, message: &[u8]) -> ledger::Signature {
        self.key.sign(message)
    }

    fn uptime_secs(&mut self) -> u64 {
        self.uptime_secs += 1;
        self.uptime_secs
    }

    fn prove_shard(&mut self, owner: &PublicKey, key: &[u8; 32], challenge: u64) -> Result<ProofData, String> {
        self.proofs_made += 1;
        self.store.prove(owner, key, challenge).map(Into::into).map_err(|e| format!("{e:?}"))
    }

    fn usage(&mut self, contract: ContractId, period: u64) -> Option<Usage> {
        self.usage_asked.push((contract, period));
        self.usage.get(&contract).copied()
    }

    fn contract_ended(&mut self, contract: ContractId) {
        self.ended.push(contract);
    }
}

pub fn capacity() -> Capacity {
    Capacity { cores: 4, memory_bytes: 8 << 30, disks_bytes: vec![64 << 30], nics: 1 }
}

pub fn config(net: &Net, node: &Keypair, farm: Option<u64>, capacity: Capacity) -> Config {
    Config { chain_id: net.chain.chain_id, node: node.public(), farm, capacity, validators: net.behaviours.len() }
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

/// The shards of a storage contract as the ledger holds them.
pub fn stored_shards(net: &Net, id: ContractId) -> Vec<ledger::state::StoredShard> {
    match &net.chain.state.contract(id).expect("contract").terms {
        ContractTerms::Storage { shards } => shards.clone(),
        ContractTerms::Workload { .. } => panic!("not storage"),
    }
}

/// A farm created by `farmer` (in a block of its own).
pub fn create_farm(net: &mut Net, farmer: &Keypair) -> u64 {
    match net.run_now(farmer, TxKind::CreateFarm { name: "farm".into() }) {
        Ok(TxOutcome::FarmCreated(id)) => id,
        other => panic!("{other:?}"),
    }
}

pub fn created(outcome: Result<TxOutcome, String>) -> ContractId {
    match outcome {
        Ok(TxOutcome::ContractCreated(id)) => id,
        other => panic!("{other:?}"),
    }
}
