//! A deterministic simulation of four validators in one process: a seeded network with
//! latency, loss and a silent validator; a clock that jumps to the next event. Safety: no two
//! validators decide different blocks at one height, and their state roots agree at every
//! height. Liveness: every live validator reaches the target height. The decided blocks and
//! commits are checked by a light client. "reproduce with seed=" on failure.

use std::collections::{BTreeMap, HashMap};

use ledger::{Genesis, Keypair, LightClient, Transaction, TxKind, Validator};
use malachitebft_core_types::Timeout;
use validator::{Message, Node, Output, Timeouts};

const GENESIS_MS: u64 = 1_800_000_000_000;

struct Rng(u64);

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

enum Event {
    Deliver { to: usize, message: Message },
    Timeout { node: usize, timeout: Timeout, generation: u64 },
}

struct Net {
    /// Percent of messages lost.
    loss_percent: u64,
    latency_ms_max: u64,
    /// Validators that neither send nor receive.
    silent: Vec<usize>,
}

struct Sim {
    nodes: Vec<Node>,
    now_ms: u64,
    events: BTreeMap<(u64, u64), Event>,
    seq: u64,
    rng: Rng,
    net: Net,
    timeouts: HashMap<(usize, Timeout), u64>,
    seed: u64,
}

fn keys() -> Vec<Keypair> {
    (0..4u8).map(|i| Keypair::from_seed([200 + i; 32])).collect()
}

fn genesis(alice: &Keypair) -> Genesis {
    Genesis {
        chain_name: "sim".into(),
        time_ms: GENESIS_MS,
        validators: keys().iter().map(|k| Validator { key: k.public(), power: 10 }).collect(),
        balances: vec![(alice.public(), 1_000_000)],
        governance: Keypair::from_seed([250; 32]).public(),
    }
}

impl Sim {
    fn new(seed: u64, net: Net, genesis: &Genesis) -> Sim {
        let nodes = keys().into_iter().map(|k| Node::new(k, genesis, Timeouts::default()).expect("node")).collect();
        Sim { nodes, now_ms: GENESIS_MS, events: BTreeMap::new(), seq: 0, rng: Rng(seed | 1), net, timeouts: HashMap::new(), seed }
    }

    fn push(&mut self, at_ms: u64, event: Event) {
        self.seq += 1;
        self.events.insert((at_ms, self.seq), event);
    }

    fn outputs(&mut self, from: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Broadcast(message) => {
                    if self.net.silent.contains(&from) {
                        continue;
                    }
                    for to in 0..self.nodes.len() {
                        if to == from || self.rng.below(100) < self.net.loss_percent {
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
                    let Some(to) = keys().iter().position(|k| k.public() == address.0) else { continue };
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
            }
        }
    }

    fn start(&mut self) {
        for i in 0..self.nodes.len() {
            let outputs = self.nodes[i].start(self.now_ms);
            self.outputs(i, outputs);
        }
    }

    /// Runs until every live validator decided `height`, or `steps_max` events.
    fn run_until(&mut self, height: usize, steps_max: usize) {
        for _ in 0..steps_max {
            let live_done = (0..self.nodes.len())
                .filter(|i| !self.net.silent.contains(i))
                .all(|i| self.nodes[i].decided().len() >= height);
            if live_done {
                return;
            }
            let Some(((at, _), event)) = self.events.pop_first() else { break };
            self.now_ms = self.now_ms.max(at);
            match event {
                Event::Deliver { to, message } => {
                    if self.net.silent.contains(&to) {
                        continue;
                    }
                    let outputs = self.nodes[to].on_message(message, self.now_ms);
                    self.outputs(to, outputs);
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
                    self.outputs(node, outputs);
                }
            }
        }
        panic!("no liveness: heights {:?} after {steps_max} events; reproduce with seed={}", self.heights(), self.seed);
    }

    fn heights(&self) -> Vec<usize> {
        self.nodes.iter().map(|n| n.decided().len()).collect()
    }

    /// Safety: equal blocks and roots at every height any two validators decided.
    fn check_safety(&self) {
        let longest = self.nodes.iter().max_by_key(|n| n.decided().len()).expect("nodes");
        for node in &self.nodes {
            for (h, (block, _)) in node.decided().iter().enumerate() {
                let (reference, _) = &longest.decided()[h];
                assert_eq!(block.hash(), reference.hash(), "two blocks decided at height {}; reproduce with seed={}", h + 1, self.seed);
                assert_eq!(block.header.state_root, reference.header.state_root);
            }
        }
    }
}

fn transfers(alice: &Keypair, genesis: &Genesis, count: u64) -> Vec<ledger::SignedTx> {
    (0..count)
        .map(|nonce| {
            Transaction { account: alice.public(), nonce, kind: TxKind::Transfer { to: [nonce as u8; 32], amount: 1 + nonce } }
                .sign(&genesis.chain_id(), alice)
        })
        .collect()
}

fn run(seed: u64, net: Net, heights: usize) -> Sim {
    let alice = Keypair::from_seed([1; 32]);
    let genesis = genesis(&alice);
    let mut sim = Sim::new(seed, net, &genesis);
    for tx in transfers(&alice, &genesis, 30) {
        for node in &mut sim.nodes {
            node.submit(tx.clone()).expect("submit");
        }
    }
    sim.start();
    sim.run_until(heights, 200_000);
    sim.check_safety();
    // Every transaction is in, once, and the live validators agree on the state.
    let live: Vec<&Node> = (0..4).filter(|i| !sim.net.silent.contains(i)).map(|i| &sim.nodes[i]).collect();
    let root = live[0].decided()[heights - 1].0.header.state_root;
    for node in &live {
        assert_eq!(node.decided()[heights - 1].0.header.state_root, root);
        assert_eq!(node.ledger().account(&alice.public()).nonce, 30, "seed={seed}");
    }
    // A light client follows the decisions with the commits consensus produced.
    let mut light = LightClient::from_genesis(&genesis).expect("light");
    for block in live[0].light_blocks().iter().take(heights) {
        light.accept(block).unwrap_or_else(|e| panic!("light client refused a decided block: {e:?}; seed={seed}"));
    }
    sim
}

#[test]
fn four_validators_decide_the_same_blocks() {
    for seed in 1..=5 {
        run(seed, Net { loss_percent: 0, latency_ms_max: 200, silent: vec![] }, 6);
    }
}

#[test]
fn one_silent_validator_does_not_stop_the_chain() {
    for seed in 1..=3 {
        run(seed, Net { loss_percent: 0, latency_ms_max: 200, silent: vec![seed as usize % 4] }, 6);
    }
}

#[test]
fn lossy_network_still_decides() {
    for seed in 1..=3 {
        run(seed, Net { loss_percent: 10, latency_ms_max: 300, silent: vec![] }, 4);
    }
}
