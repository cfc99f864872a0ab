//! The simulation harness shared by the tests and the bench: validators in one process, a
//! seeded network (latency, loss, cut links, a partition that heals, silent validators) and a
//! clock that jumps to the next event.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use ledger::{Genesis, Keypair, Validator};
use malachitebft_core_types::Timeout;
use validator::{Message, Node, Output, Timeouts};

pub const GENESIS_MS: u64 = 1_800_000_000_000;

pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub enum Event {
    Wake { node: usize },
    Deliver { to: usize, message: Message },
    Timeout { node: usize, timeout: Timeout, generation: u64 },
}

pub struct Net {
    /// Percent of messages lost.
    pub loss_percent: u64,
    pub latency_ms_max: u64,
    /// Validators that neither send nor receive.
    pub silent: Vec<usize>,
    /// Validators whose proposals carry a forged state root (re-signed, so only the ledger
    /// check can refuse them).
    pub corrupt: Vec<usize>,
    /// Pairs of nodes that cannot reach each other.
    pub cut: Vec<(usize, usize)>,
    /// Pairs cut only until `heal_ms` after genesis (a partition that heals).
    pub partition: Vec<(usize, usize)>,
    pub heal_ms: u64,
}

impl Net {
    fn linked_at(&self, a: usize, b: usize, now_ms: u64) -> bool {
        let cut = |pairs: &[(usize, usize)]| pairs.contains(&(a, b)) || pairs.contains(&(b, a));
        let partitioned = now_ms < GENESIS_MS + self.heal_ms && cut(&self.partition);
        !cut(&self.cut) && !partitioned
    }
}

pub struct Sim {
    pub nodes: Vec<Node>,
    pub keys: Vec<Keypair>,
    pub now_ms: u64,
    pub events: BTreeMap<(u64, u64), Event>,
    pub seq: u64,
    pub rng: Rng,
    pub net: Net,
    pub timeouts: HashMap<(usize, Timeout), u64>,
    pub seed: u64,
}

pub fn keys() -> Vec<Keypair> {
    (0..4u8).map(|i| Keypair::from_seed([200 + i; 32])).collect()
}

pub fn genesis(alice: &Keypair) -> Genesis {
    Genesis {
        chain_name: "sim".into(),
        time_ms: GENESIS_MS,
        validators: keys().iter().map(|k| Validator { key: k.public(), power: 10 }).collect(),
        balances: vec![(alice.public(), 1_000_000)],
        governance: Keypair::from_seed([250; 32]).public(),
        period_ms: ledger::PERIOD_MS,
    }
}

impl Sim {
    /// One node per key (a key given twice is an equivocating validator run as twins).
    pub fn new(seed: u64, net: Net, genesis: &Genesis, keys: Vec<Keypair>) -> Sim {
        let nodes = keys.iter().map(|k| Node::new(k.clone(), genesis, Timeouts::default()).expect("node")).collect();
        Sim { nodes, keys, now_ms: GENESIS_MS, events: BTreeMap::new(), seq: 0, rng: Rng(seed | 1), net, timeouts: HashMap::new(), seed }
    }

    fn push(&mut self, at_ms: u64, event: Event) {
        self.seq += 1;
        self.events.insert((at_ms, self.seq), event);
    }

    pub fn apply_outputs(&mut self, from: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Broadcast(message) => {
                    if self.net.silent.contains(&from) {
                        continue;
                    }
                    let message = if self.net.corrupt.contains(&from) { self.corrupt(from, message) } else { message };
                    for to in 0..self.nodes.len() {
                        if to == from || !self.net.linked_at(from, to, self.now_ms) || self.rng.below(100) < self.net.loss_percent {
                            continue;
                        }
                        let at = self.now_ms + 1 + self.rng.below(self.net.latency_ms_max);
                        self.push(at, Event::Deliver { to, message: message.clone() });
                    }
                }
                Output::Send(address, message) => {
                    if self.net.silent.contains(&from) || self.rng.below(100) < self.net.loss_percent {
                        continue;
                    }
                    let linked = |i: &usize| self.keys[*i].public() == address.0 && self.net.linked_at(from, *i, self.now_ms);
                    let Some(to) = (0..self.keys.len()).find(linked) else { continue };
                    let at = self.now_ms + 1 + self.rng.below(self.net.latency_ms_max);
                    self.push(at, Event::Deliver { to, message });
                }
                Output::ScheduleTimeout(timeout, after_ms) => {
                    self.seq += 1;
                    let generation = self.seq;
                    self.timeouts.insert((from, timeout), generation);
                    self.push(self.now_ms + after_ms, Event::Timeout { node: from, timeout, generation });
                }
                Output::CancelTimeout(timeout) => {
                    self.timeouts.remove(&(from, timeout));
                }
                Output::CancelAllTimeouts => self.timeouts.retain(|(node, _), _| *node != from),
                Output::Wake(after_ms) => self.push(self.now_ms + after_ms, Event::Wake { node: from }),
            }
        }
    }

    /// A forged copy of `from`'s proposal: another state root, signed again by `from`.
    fn corrupt(&self, from: usize, message: Message) -> Message {
        let Message::Proposal(signed) = message else { return message };
        let mut proposal = signed.message.clone();
        let mut block = (*proposal.value.block).clone();
        block.header.state_root[0] ^= 1;
        proposal.value = validator::context::BlockValue::new(block);
        let ctx = validator::LedgerContext { chain_id: self.nodes[from].ledger().meta().chain_id };
        let signature = validator::LedgerContext::sign(&self.keys[from], &ctx.proposal_bytes(&proposal));
        Message::Proposal(malachitebft_core_types::SignedMessage::new(proposal, signature))
    }

    pub fn start(&mut self) {
        for i in 0..self.nodes.len() {
            let outputs = self.nodes[i].start(self.now_ms);
            self.apply_outputs(i, outputs);
        }
    }

    /// Runs until every live validator decided `height`, or `steps_max` events.
    pub fn run_until(&mut self, height: usize, steps_max: usize) {
        for _ in 0..steps_max {
            let live_done = self.honest().into_iter().all(|i| self.nodes[i].decided().len() >= height);
            if live_done {
                return;
            }
            if !self.run_steps(1) {
                break;
            }
        }
        let rounds: Vec<Option<u32>> = self.nodes.iter().map(|n| n.round()).collect();
        panic!("no liveness: heights {:?} rounds {rounds:?} at {} ms after {steps_max} events; reproduce with seed={}", self.heights(), self.now_ms - GENESIS_MS, self.seed);
    }

    /// Handles up to `steps` events; false when none is left.
    pub fn run_steps(&mut self, steps: usize) -> bool {
        for _ in 0..steps {
            let Some(((at, _), event)) = self.events.pop_first() else { return false };
            self.now_ms = self.now_ms.max(at);
            match event {
                Event::Wake { node } => {
                    if self.net.silent.contains(&node) {
                        continue;
                    }
                    let outputs = self.nodes[node].on_wake(self.now_ms);
                    self.apply_outputs(node, outputs);
                }
                Event::Deliver { to, message } => {
                    if self.net.silent.contains(&to) {
                        continue;
                    }
                    // Every message crosses the wire encoding, as between processes.
                    let Some(message) = Message::decode(&message.encode()) else { panic!("a message does not round-trip") };
                    let outputs = self.nodes[to].on_message(message, self.now_ms);
                    self.apply_outputs(to, outputs);
                }
                Event::Timeout { node, timeout, generation } => {
                    if self.timeouts.get(&(node, timeout)) != Some(&generation) {
                        continue;
                    }
                    self.timeouts.remove(&(node, timeout));
                    if self.net.silent.contains(&node) {
                        continue;
                    }
                    let outputs = self.nodes[node].on_timeout(timeout, self.now_ms);
                    self.apply_outputs(node, outputs);
                }
            }
        }
        true
    }

    pub fn honest(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| !self.net.silent.contains(i) && !self.is_twin(*i)).collect()
    }

    pub fn is_twin(&self, i: usize) -> bool {
        self.keys.iter().filter(|k| k.public() == self.keys[i].public()).count() > 1
    }

    pub fn heights(&self) -> Vec<usize> {
        self.nodes.iter().map(|n| n.decided().len()).collect()
    }

    /// Safety: equal blocks and roots at every height any two honest validators decided.
    pub fn check_safety(&self) {
        let honest: Vec<&Node> = self.honest().into_iter().map(|i| &self.nodes[i]).collect();
        let longest = honest.iter().max_by_key(|n| n.decided().len()).expect("nodes");
        for node in &honest {
            for (h, (block, _)) in node.decided().iter().enumerate() {
                let (reference, _) = &longest.decided()[h];
                assert_eq!(block.hash(), reference.hash(), "two blocks decided at height {}; reproduce with seed={}", h + 1, self.seed);
                assert_eq!(block.header.state_root, reference.header.state_root);
            }
        }
    }
}

