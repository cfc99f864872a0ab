//! The agent's state machine: what to ask each validator, what to make of each answer, and
//! which transaction to send next (see the crate docs for the rules).

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use ledger::rpc::{Request, Response, CONTRACT_IDS_PER_RESPONSE_MAX, LIGHT_BLOCKS_PER_RESPONSE_MAX};
use ledger::state::{storage_challenge, Contract, ContractStatus, ContractTerms, Meta, Node};
use ledger::{
    ContractId, Genesis, LightBlock, LightClient, PublicKey, Resources, SignedTx, StateKey, StateProof, Transaction,
    TxKind, PROOF_CHUNK_BYTES_MAX, PROOF_PATH_MAX, TX_BYTES_MAX,
};

use crate::{
    Config, ContractView, Distrust, Event, Local, Mode, Status, TxPurpose, BUSY_BACKOFF_MS, CONTRACTS_FOLLOWED_MAX,
    DISTRUST_MS_MAX, DISTRUST_MS_MIN, ENDED_KEPT, EVENTS_MAX, FOLLOW_INTERVAL_MS, OTHER_VIEWS_MAX,
    GOOD_ANSWERS_PER_LIE_FORGIVEN, LISTED_PER_VALIDATOR_MAX, PERIOD_END_MARGIN_MS_MAX, REFUSAL_GRACE_MS, STALE_BLOCKS, STALE_SUBMIT_BACKOFF_MS, SUSPECT_BLOCKS, TX_ATTEMPTS_PER_PERIOD, UNSURE_BLOCKS, WHY_BYTES_MAX,
};

/// What a validator was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Task {
    Genesis,
    Follow { count: u64 },
    Read(StateKey),
    List { after: Option<ContractId> },
    /// A copy of the pending transaction (its id).
    Submit { id: [u8; 32] },
}

#[derive(Debug, Clone, Default)]
struct Peer {
    task: Option<Task>,
    /// Nothing is asked of it before this time.
    resume_ms: u64,
    /// It gets no follow request before this time (it was behind).
    follow_after_ms: u64,
    /// Lies so far (the back-off doubles with each).
    lies: u32,
    /// Ids it listed that are still to be read ([`LISTED_PER_VALIDATOR_MAX`] at most).
    listed_held: usize,
    /// Verified answers since its last lie (every [`GOOD_ANSWERS_PER_LIE_FORGIVEN`] forgive one).
    good: u32,
    /// It gets no copy of a transaction before this time (it held one no block carried).
    submit_after_ms: u64,
    /// Its request in flight is a copy given up on (see [`Agent::stale_request`]).
    stale: bool,
}

/// The one transaction in flight. A copy goes to every validator (each proposes from its
/// own mempool, so the next block carries it whoever proposes; every validator answers
/// `Committed` for a block that carries it, and drops its copy).
#[derive(Debug, Clone)]
struct Pending {
    tx: SignedTx,
    /// Its id (answers are matched by it).
    id: [u8; 32],
    purpose: TxPurpose,
    /// No copy is in flight and none was refused: the account's nonce decides whether it
    /// landed (read again).
    unsure: bool,
    /// Validators given a copy (once each until resubmitted).
    offered: BTreeSet<usize>,
    /// Validators whose answer is awaited.
    in_flight: BTreeSet<usize>,
    /// The first refusal: why, and when (the whole transaction counts as refused when no
    /// copy is left in flight and every validator answered, or [`REFUSAL_GRACE_MS`] later).
    refusal: Option<(String, u64)>,
    /// Our height when it was (re)submitted.
    height: u64,
}

impl Pending {
    fn new(tx: SignedTx, purpose: TxPurpose, height: u64) -> Pending {
        let id = tx.id();
        Pending { tx, id, purpose, unsure: false, offered: BTreeSet::new(), in_flight: BTreeSet::new(), refusal: None, height }
    }

    fn resubmit(&mut self, height: u64) {
        self.height = height;
        self.unsure = false;
        self.offered.clear();
        self.in_flight.clear();
        self.refusal = None;
    }
}

#[derive(Debug, Clone)]
struct MyShard {
    index: u32,
    key: [u8; 32],
    len_bytes: u64,
    last_proven_period: Option<u64>,
}

#[derive(Debug, Clone)]
enum Terms {
    Workload { resources: Resources, last_usage_period: Option<u64> },
    Storage { shards: Vec<MyShard> },
}

/// An active contract on this node, as last read.
#[derive(Debug, Clone)]
struct Followed {
    owner: PublicKey,
    created_period: u64,
    terms: Terms,
}

/// A listing pass over the node's active contracts.
#[derive(Debug, Clone, Default)]
struct Pass {
    /// Our latest height when the pass started.
    height: u64,
    after: Option<ContractId>,
    /// Ids listed, and which validator listed each.
    found: BTreeMap<ContractId, usize>,
}

/// The node's ledger agent (see the crate docs).
pub struct Agent {
    config: Config,
    peers: Vec<Peer>,
    light: Option<LightClient>,
    period_ms: u64,
    /// Period of the latest accepted header.
    period: u64,
    next_follow_ms: u64,
    /// The last follow answer was short: reads and listings may go out.
    caught_up: bool,
    /// The latest `now_ms` seen.
    now_ms: u64,
    /// The last period a [`Event::Height`] was emitted for.
    announced_period: Option<u64>,
    meta: Option<Meta>,
    nonce: Option<u64>,
    /// The node's record as last read (outer `None`: never read).
    node: Option<Option<Node>>,
    announced: bool,
    contracts: BTreeMap<ContractId, Followed>,
    others: VecDeque<(ContractId, ContractView)>,
    ended: VecDeque<ContractId>,
    /// Records to read (again), each at or above a height.
    wants: BTreeMap<StateKey, u64>,
    /// Contracts the caller asked about (answered when read).
    asked: BTreeSet<ContractId>,
    listed_height: Option<u64>,
    pass: Option<Pass>,
    /// New ids from listings, with who listed them at which height (checked when read).
    listed: BTreeMap<ContractId, (usize, u64)>,
    /// Listed ids read as absent: (lister, read height), read again later.
    suspects: BTreeMap<ContractId, (usize, u64)>,
    pending: Option<Pending>,
    attempts: BTreeMap<TxPurpose, u8>,
    events: VecDeque<Event>,
    counters: Counters,
}

#[derive(Debug, Clone, Default)]
struct Counters {
    proofs_ok: u64,
    proofs_failed: u64,
    usage_reported: u64,
    txs_committed: u64,
    txs_refused: u64,
    bad_responses: u64,
    lies: u64,
    dropped: u64,
    blocks_followed: u64,
}

fn truncate(mut why: String) -> String {
    if why.len() > WHY_BYTES_MAX {
        let mut cut = WHY_BYTES_MAX;
        while !why.is_char_boundary(cut) {
            cut -= 1;
        }
        why.truncate(cut);
    }
    why
}

impl Agent {
    /// A new agent; it starts by asking for the genesis.
    pub fn new(config: Config) -> Agent {
        let count = config.validators.min(ledger::VALIDATORS_MAX);
        Agent {
            config,
            peers: alloc::vec![Peer::default(); count],
            light: None,
            period_ms: ledger::PERIOD_MS,
            period: 0,
            next_follow_ms: 0,
            caught_up: false,
            now_ms: 0,
            announced_period: None,
            meta: None,
            nonce: None,
            node: None,
            announced: false,
            contracts: BTreeMap::new(),
            others: VecDeque::new(),
            ended: VecDeque::new(),
            wants: BTreeMap::new(),
            asked: BTreeSet::new(),
            listed_height: None,
            pass: None,
            listed: BTreeMap::new(),
            suspects: BTreeMap::new(),
            pending: None,
            attempts: BTreeMap::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    fn latest_height(&self) -> u64 {
        self.light.as_ref().map_or(0, |l| l.latest().height)
    }

    fn busy(&self, task: &Task) -> bool {
        self.peers.iter().any(|p| p.task.as_ref() == Some(task))
    }

    /// The next request for validator `v` (index into the configured list); one in flight
    /// per validator. `None`: nothing for it now (see [`Agent::poll_timeout`]).
    pub fn poll_request(&mut self, validator: usize, now_ms: u64) -> Option<Request> {
        self.now_ms = self.now_ms.max(now_ms);
        self.refusal_due(now_ms);
        let peer = self.peers.get(validator)?;
        if peer.task.is_some() || now_ms < peer.resume_ms {
            return None;
        }
        let follow_ok = now_ms >= peer.follow_after_ms;
        let (task, request) = self.next_task(validator, now_ms, follow_ok)?;
        if let Some(peer) = self.peers.get_mut(validator) {
            peer.task = Some(task);
        }
        Some(request)
    }

    fn next_task(&mut self, validator: usize, now_ms: u64, follow_ok: bool) -> Option<(Task, Request)> {
        let Some(light) = &self.light else {
            if self.busy(&Task::Genesis) {
                return None;
            }
            return Some((Task::Genesis, Request::Genesis));
        };
        let from = light.latest().height.saturating_add(1);
        let following = self.peers.iter().any(|p| matches!(p.task, Some(Task::Follow { .. })));
        if follow_ok && !following && now_ms >= self.next_follow_ms {
            let count = LIGHT_BLOCKS_PER_RESPONSE_MAX;
            return Some((Task::Follow { count }, Request::LightBlocks { from, count }));
        }
        if !self.caught_up {
            // Reads are answered at the validators' latest height: catch up first.
            return None;
        }
        // Copies to all validators but one, so one is always free to follow the chain.
        let copies_max = self.peers.len().saturating_sub(1).max(1);
        // Validators that held a copy no block carried come last (all of them: no order).
        let shunned = self.peers.get(validator).is_some_and(|p| now_ms < p.submit_after_ms)
            && self.peers.iter().any(|p| now_ms >= p.submit_after_ms);
        if let Some(pending) = &mut self.pending {
            let room = pending.in_flight.len() < copies_max && !shunned;
            // (Also after a refusal: a validator behind the others refuses what they take.)
            if room && !pending.unsure && pending.offered.insert(validator) {
                pending.in_flight.insert(validator);
                return Some((Task::Submit { id: pending.id }, Request::Submit(pending.tx.clone())));
            }
        }
        // Only what a validator at our height can answer (a read wanted at a later height
        // waits until we follow there).
        let latest = light.latest().height;
        let read = self
            .wants
            .iter()
            .find(|(k, min)| **min <= latest && !self.peers.iter().any(|p| p.task == Some(Task::Read(**k))))
            .map(|(k, _)| *k);
        if let Some(key) = read {
            return Some((Task::Read(key), Request::Prove(key)));
        }
        let listing = self.peers.iter().any(|p| matches!(p.task, Some(Task::List { .. })));
        if !listing {
            let latest = light.latest().height;
            if self.pass.is_none() && self.listed_height.is_none_or(|h| h < latest) {
                self.pass = Some(Pass { height: latest, after: None, found: BTreeMap::new() });
            }
            if let Some(pass) = &self.pass {
                let after = pass.after;
                return Some((Task::List { after }, Request::NodeContracts { node: self.config.node, after }));
            }
        }
        None
    }

    /// When [`Agent::poll_request`] may have something new without an answer arriving
    /// (absolute ms); the caller also polls every validator after each answer.
    /// Never a time already past (so a caller that sleeps until it cannot spin).
    pub fn poll_timeout(&self) -> Option<u64> {
        let now = self.now_ms;
        let following = self.peers.iter().any(|p| matches!(p.task, Some(Task::Follow { .. })));
        let mut at = now.saturating_add(FOLLOW_INTERVAL_MS);
        if !following && self.next_follow_ms > now {
            at = at.min(self.next_follow_ms);
        }
        if let Some((_, refused_ms)) = self.pending.as_ref().and_then(|p| p.refusal.as_ref()) {
            let due = refused_ms.saturating_add(REFUSAL_GRACE_MS);
            if due > now {
                at = at.min(due);
            }
        }
        for peer in self.peers.iter().filter(|p| p.task.is_none()) {
            for t in [peer.resume_ms, peer.follow_after_ms] {
                if t > now {
                    at = at.min(t);
                }
            }
        }
        Some(at)
    }

    /// Whether validator `v`'s request in flight is a submission the agent gave up on (no
    /// block carried it for [`STALE_BLOCKS`]): the caller may close that connection (and
    /// call [`Agent::on_disconnect`]) rather than wait for its answer timeout, so the
    /// validator can serve other requests.
    pub fn stale_request(&self, validator: usize) -> bool {
        self.peers.get(validator).is_some_and(|p| p.stale && matches!(p.task, Some(Task::Submit { .. })))
    }

    /// Validator `v`'s connection closed: its request is lost; others take over.
    pub fn on_disconnect(&mut self, validator: usize, _now_ms: u64) {
        let Some(peer) = self.peers.get_mut(validator) else { return };
        peer.stale = false;
        let task = peer.task.take();
        match task {
            Some(Task::Submit { id }) => self.copy_done(validator, id),
            Some(Task::List { .. }) => self.pass = None,
            _ => {}
        }
    }

    /// Validator `v`'s copy of the transaction `id` is no longer in flight (lost, refused or
    /// a bad answer). With none left: refused if one was, else unsure.
    fn copy_done(&mut self, validator: usize, id: [u8; 32]) {
        let Some(pending) = &mut self.pending else { return };
        if pending.id != id || !pending.in_flight.remove(&validator) || !pending.in_flight.is_empty() {
            return;
        }
        match pending.refusal.clone() {
            Some((why, _)) if pending.offered.len() >= self.peers.len() => self.refused(why),
            Some(_) => {}
            None => self.unsure(),
        }
    }

    /// A transaction no block carried for [`STALE_BLOCKS`] (dropped from the mempools, e.g. a
    /// proof whose period ended): its copies are given up on (their late answers are still
    /// taken) and the account's nonce decides.
    fn check_stale(&mut self, now_ms: u64) {
        let latest = self.latest_height();
        let Some(pending) = &mut self.pending else { return };
        if pending.unsure || latest < pending.height.saturating_add(STALE_BLOCKS) {
            return;
        }
        for v in &pending.in_flight {
            if let Some(peer) = self.peers.get_mut(*v) {
                peer.submit_after_ms = now_ms.saturating_add(STALE_SUBMIT_BACKOFF_MS);
                peer.stale = true;
            }
        }
        pending.in_flight.clear();
        pending.refusal = None;
        self.counters.dropped += 1;
        self.unsure();
    }

    /// A refused transaction whose other copies did not land within the grace time.
    fn refusal_due(&mut self, now_ms: u64) {
        let Some(pending) = &self.pending else { return };
        if let Some((why, at)) = &pending.refusal {
            if pending.in_flight.is_empty() && now_ms >= at.saturating_add(REFUSAL_GRACE_MS) {
                let why = why.clone();
                self.refused(why);
            }
        }
    }

    /// A submission's fate is unknown: the account's nonce decides whether it landed, read
    /// [`UNSURE_BLOCKS`] blocks later (a transaction still in a mempool lands by then).
    fn unsure(&mut self) {
        if let Some(pending) = &mut self.pending {
            pending.unsure = true;
        }
        self.nonce = None;
        let after = self.latest_height().saturating_add(UNSURE_BLOCKS);
        self.want(StateKey::Account(self.config.node), after);
    }

    fn want(&mut self, key: StateKey, height: u64) {
        if let Some(min) = self.wants.get_mut(&key) {
            *min = (*min).max(height);
        } else if self.wants.len() < self.wants_max() {
            self.wants.insert(key, height);
        } else {
            self.counters.dropped += 1;
        }
    }

    /// Pending reads at most: the node's records, the followed and asked contracts, and
    /// each validator's listed ids (so no read from these sources is ever dropped).
    fn wants_max(&self) -> usize {
        8 + CONTRACTS_FOLLOWED_MAX + OTHER_VIEWS_MAX + LISTED_PER_VALIDATOR_MAX * self.peers.len()
    }

    fn release_listed(&mut self, lister: usize) {
        if let Some(peer) = self.peers.get_mut(lister) {
            peer.listed_held = peer.listed_held.saturating_sub(1);
        }
    }

    /// A deploy names `id`: read it soon ([`Agent::workload_contract`] answers once read).
    pub fn want_contract(&mut self, id: ContractId) {
        if self.asked.len() >= OTHER_VIEWS_MAX && !self.asked.contains(&id) {
            self.counters.dropped += 1;
            return;
        }
        self.asked.insert(id);
        let latest = self.latest_height();
        self.want(StateKey::Contract(id), latest);
    }

    /// What the agent knows of workload contract `id`.
    pub fn workload_contract(&self, id: ContractId) -> ContractView {
        if let Some(followed) = self.contracts.get(&id) {
            return match followed.terms {
                Terms::Workload { resources, .. } => ContractView::Active { owner: followed.owner, resources },
                Terms::Storage { .. } => ContractView::NotThisNode,
            };
        }
        if self.ended.contains(&id) {
            return ContractView::Ended;
        }
        self.others.iter().find(|(c, _)| *c == id).map_or(ContractView::Unknown, |(_, v)| *v)
    }

    /// `owner`'s shard quota on this node: the bytes its active storage contracts place here.
    pub fn storage_quota(&self, owner: &PublicKey) -> u64 {
        let mut total = 0u64;
        for followed in self.contracts.values().filter(|f| f.owner == *owner) {
            if let Terms::Storage { shards } = &followed.terms {
                for shard in shards {
                    total = total.saturating_add(shard.len_bytes);
                }
            }
        }
        total
    }

    /// A snapshot for logs and metrics.
    pub fn status(&self) -> Status {
        let record = self.node.as_ref().and_then(|n| n.as_ref());
        Status {
            mode: if self.light.is_some() { Mode::Following } else { Mode::Genesis },
            height: self.latest_height(),
            period: self.period,
            registered: record.is_some(),
            farm: record.map(|n| n.farm).or(self.config.farm),
            last_uptime_period: record.and_then(|n| n.last_uptime_period),
            proofs_ok: self.counters.proofs_ok,
            proofs_failed: self.counters.proofs_failed,
            usage_reported: self.counters.usage_reported,
            txs_committed: self.counters.txs_committed,
            txs_refused: self.counters.txs_refused,
            contracts_followed: self.contracts.len(),
            bad_responses: self.counters.bad_responses,
            lies: self.counters.lies,
            dropped: self.counters.dropped,
            blocks_followed: self.counters.blocks_followed,
            validators_distrusted: self.peers.iter().filter(|p| p.lies > 0 && p.resume_ms > self.now_ms).count(),
        }
    }

    /// The events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
            self.counters.dropped += 1;
        }
        self.events.push_back(event);
    }

    fn distrust(&mut self, validator: usize, why: Distrust, now_ms: u64) {
        self.counters.lies += 1;
        let Some(peer) = self.peers.get_mut(validator) else { return };
        peer.lies = peer.lies.saturating_add(1);
        peer.good = 0;
        let shift = peer.lies.saturating_sub(1).min(16);
        let backoff = DISTRUST_MS_MIN.saturating_mul(1u64 << shift).min(DISTRUST_MS_MAX);
        peer.resume_ms = now_ms.saturating_add(backoff);
        let until_ms = peer.resume_ms;
        self.event(Event::ValidatorDistrusted { validator, why, until_ms });
    }

    /// A verified answer (blocks or a proof): sporadic faults do not add up forever.
    fn good(&mut self, validator: usize) {
        let Some(peer) = self.peers.get_mut(validator) else { return };
        peer.good = peer.good.saturating_add(1);
        if peer.good >= GOOD_ANSWERS_PER_LIE_FORGIVEN && peer.lies > 0 {
            peer.lies -= 1;
            peer.good = 0;
        }
    }

    fn bad(&mut self, validator: usize, now_ms: u64) {
        self.counters.bad_responses += 1;
        if let Some(peer) = self.peers.get_mut(validator) {
            peer.resume_ms = now_ms.saturating_add(BUSY_BACKOFF_MS);
        }
    }

    /// Validator `v`'s answer to its request. Anything wrong is counted, never a panic.
    pub fn on_response(&mut self, validator: usize, response: Response, now_ms: u64, local: &mut dyn Local) {
        self.now_ms = self.now_ms.max(now_ms);
        let Some(peer) = self.peers.get_mut(validator) else { return };
        peer.stale = false;
        let Some(task) = peer.task.take() else {
            self.counters.bad_responses += 1;
            return;
        };
        match (task, response) {
            (Task::Submit { id }, Response::Committed(height)) => {
                // We submit only when caught up: a block far beyond ours is a lie that
                // would hold every re-read back forever.
                if height > self.latest_height().saturating_add(LIGHT_BLOCKS_PER_RESPONSE_MAX) {
                    self.distrust(validator, Distrust::OutOfBounds, now_ms);
                    self.copy_done(validator, id);
                } else if self.pending.as_ref().is_some_and(|p| p.id == id) {
                    self.committed(height, now_ms);
                }
                // (Otherwise another copy's answer came first: nothing to do.)
            }
            (Task::Submit { id }, Response::Refused(why)) => {
                if let Some(pending) = &mut self.pending {
                    if pending.id == id && pending.refusal.is_none() {
                        pending.refusal = Some((why, now_ms));
                    }
                }
                self.copy_done(validator, id);
            }
            (Task::Submit { id }, _) => {
                self.bad(validator, now_ms);
                self.copy_done(validator, id);
            }
            (Task::Genesis, Response::Genesis(genesis)) => self.on_genesis(validator, &genesis, now_ms),
            (Task::Follow { count }, Response::LightBlocks(blocks)) => self.on_blocks(validator, count, &blocks, now_ms),
            (Task::Read(key), Response::Proof { height, proof }) => self.on_proof(validator, key, height, &proof, now_ms, local),
            (Task::List { after }, Response::ContractIds { ids, more }) => self.on_listing(validator, after, &ids, more, now_ms),
            (task, _) => {
                if matches!(task, Task::List { .. }) {
                    self.pass = None;
                }
                self.bad(validator, now_ms);
            }
        }
        self.decide(local);
    }

    fn on_genesis(&mut self, validator: usize, genesis: &Genesis, now_ms: u64) {
        if self.light.is_some() {
            return;
        }
        if genesis.chain_id() != self.config.chain_id {
            return self.distrust(validator, Distrust::WrongGenesis, now_ms);
        }
        let Ok(light) = LightClient::from_genesis(genesis) else {
            return self.distrust(validator, Distrust::WrongGenesis, now_ms);
        };
        self.period_ms = genesis.period_ms.max(ledger::PERIOD_MS_MIN);
        self.period = light.latest().time_ms / self.period_ms;
        self.light = Some(light);
        self.next_follow_ms = now_ms;
        self.event(Event::ChainAccepted { period_ms: self.period_ms });
        self.want(StateKey::Meta, 0);
        self.want(StateKey::Account(self.config.node), 0);
        self.want(StateKey::Node(self.config.node), 0);
    }

    fn on_blocks(&mut self, validator: usize, count: u64, blocks: &[LightBlock], now_ms: u64) {
        if blocks.len() as u64 > count {
            return self.distrust(validator, Distrust::OutOfBounds, now_ms);
        }
        for block in blocks {
            let Some(light) = &mut self.light else { return };
            if let Err(error) = light.accept(block) {
                // Forged, under-signed, or not the next block: the blocks before it stay.
                self.next_follow_ms = now_ms;
                return self.distrust(validator, Distrust::BadBlock(error), now_ms);
            }
            self.counters.blocks_followed += 1;
            self.good(validator);
            self.on_header(block.header.height, block.header.time_ms);
        }
        self.check_stale(now_ms);
        if blocks.len() as u64 == count {
            self.next_follow_ms = now_ms;
            self.caught_up = false;
        } else {
            self.caught_up = true;
            // One line per period, once caught up (not one per period crossed catching up).
            if self.announced_period < Some(self.period) {
                self.announced_period = Some(self.period);
                let height = self.latest_height();
                self.event(Event::Height { height, period: self.period });
            }
            self.next_follow_ms = now_ms.saturating_add(FOLLOW_INTERVAL_MS);
            if blocks.is_empty() {
                // Perhaps behind the others: let another validator answer the next one.
                if let Some(peer) = self.peers.get_mut(validator) {
                    peer.follow_after_ms = now_ms.saturating_add(2 * FOLLOW_INTERVAL_MS);
                }
            }
        }
    }

    /// A header was accepted; a new period makes every record it decides on stale.
    fn on_header(&mut self, height: u64, time_ms: u64) {
        let period = time_ms / self.period_ms;
        if period <= self.period {
            return;
        }
        self.period = period;
        self.attempts.clear();
        self.want(StateKey::Meta, height);
        self.want(StateKey::Node(self.config.node), height);
        let ids: Vec<ContractId> = self.contracts.keys().copied().collect();
        for id in ids {
            self.want(StateKey::Contract(id), height);
        }
    }

    fn on_listing(&mut self, validator: usize, after: Option<ContractId>, ids: &[ContractId], more: bool, now_ms: u64) {
        let ordered = ids.windows(2).all(|w| w[0] < w[1]) && ids.first().is_none_or(|f| after.is_none_or(|a| *f > a));
        if ids.len() > CONTRACT_IDS_PER_RESPONSE_MAX || !ordered || (more && ids.is_empty()) {
            self.pass = None;
            return self.distrust(validator, Distrust::OutOfBounds, now_ms);
        }
        let Some(pass) = &mut self.pass else { return };
        let mut full = false;
        for id in ids {
            if pass.found.len() >= CONTRACTS_FOLLOWED_MAX {
                full = true;
                break;
            }
            pass.found.insert(*id, validator);
        }
        if more && !full {
            pass.after = ids.last().copied();
            return;
        }
        let Some(pass) = self.pass.take() else { return };
        if full {
            self.counters.dropped += 1;
        }
        self.listed_height = Some(pass.height);
        for (id, lister) in &pass.found {
            let known = self.contracts.contains_key(id) || self.ended.contains(id);
            if known || self.listed.contains_key(id) || self.suspects.contains_key(id) {
                continue;
            }
            let Some(peer) = self.peers.get_mut(*lister) else { continue };
            if peer.listed_held >= LISTED_PER_VALIDATOR_MAX {
                self.counters.dropped += 1;
                continue;
            }
            peer.listed_held += 1;
            self.listed.insert(*id, (*lister, pass.height));
            self.want(StateKey::Contract(*id), pass.height);
        }
        let gone: Vec<ContractId> = self.contracts.keys().filter(|id| !pass.found.contains_key(id)).copied().collect();
        for id in gone {
            self.want(StateKey::Contract(id), pass.height);
        }
    }

    fn on_proof(&mut self, validator: usize, key: StateKey, height: u64, proof: &StateProof, now_ms: u64, local: &mut dyn Local) {
        if proof.key != key {
            return self.distrust(validator, Distrust::WrongRecord, now_ms);
        }
        let Some(light) = &self.light else { return };
        let latest = light.latest().height;
        if height > latest {
            // It is ahead of us: follow first, then ask again.
            self.next_follow_ms = now_ms;
            self.caught_up = false;
            return;
        }
        let Some(&min) = self.wants.get(&key) else { return };
        if height < min || light.header(height).is_none() {
            if let Some(peer) = self.peers.get_mut(validator) {
                peer.resume_ms = now_ms.saturating_add(BUSY_BACKOFF_MS);
            }
            return;
        }
        let result = match key {
            StateKey::Meta => light.meta(height, proof).map(|meta| {
                self.meta = Some(meta);
            }),
            StateKey::Account(account) => light.account(height, &account, proof).map(|a| self.on_account(a.nonce, height)),
            StateKey::Node(node) => light.node(height, &node, proof).map(|record| self.on_node(record)),
            StateKey::Contract(id) => light.contract(height, id, proof).map(|c| self.on_contract(id, c, height, now_ms, local)),
            StateKey::Farm(_) => Ok(()),
        };
        match result {
            Ok(()) => {
                self.good(validator);
                if self.wants.get(&key).is_some_and(|m| *m <= height) {
                    self.wants.remove(&key);
                }
            }
            Err(error) => self.distrust(validator, Distrust::BadProof(error), now_ms),
        }
    }

    fn on_account(&mut self, nonce: u64, height: u64) {
        self.nonce = Some(nonce);
        let Some(pending) = &mut self.pending else { return };
        if !pending.unsure {
            return;
        }
        match nonce.cmp(&pending.tx.tx.nonce) {
            // It did not land: the same transaction again.
            core::cmp::Ordering::Equal => pending.resubmit(height),
            // The nonce moved (only this node signs for its account): it landed.
            core::cmp::Ordering::Greater => {
                let purpose = pending.purpose;
                self.pending = None;
                self.landed(purpose, height);
            }
            // Signed with a nonce the account never reached: decide again.
            core::cmp::Ordering::Less => self.pending = None,
        }
    }

    fn on_node(&mut self, record: Option<Node>) {
        if !self.announced {
            if let Some(node) = &record {
                if node.capacity == self.config.capacity {
                    self.announced = true;
                    self.event(Event::AlreadyRegistered { farm: node.farm });
                }
            } else if self.config.farm.is_none() {
                self.announced = true;
                self.event(Event::NoFarm);
            }
        }
        self.node = Some(record);
    }

    /// A contract's terms never change: one listed as this node's that is another node's
    /// was made up by its lister. One that is absent may be newer than our height: it is
    /// read again [`SUSPECT_BLOCKS`] later, and made up if still absent.
    fn check_listing(&mut self, id: ContractId, record: Option<&Contract>, height: u64, now_ms: u64) {
        let listed = self.listed.remove(&id);
        let suspect = self.suspects.remove(&id);
        let me = self.config.node;
        // Each id is in at most one of `listed` and `suspects` (a listing skips both).
        let lister = match (record, suspect.or(listed)) {
            (_, None) => None,
            (Some(c), Some((v, _))) => {
                self.release_listed(v);
                let mine = match &c.terms {
                    ContractTerms::Workload { node, .. } => *node == me,
                    ContractTerms::Storage { shards } => shards.iter().any(|s| s.placement.node == me),
                };
                (!mine).then_some(v)
            }
            (None, Some((v, since))) if suspect.is_some() => {
                if height >= since.saturating_add(SUSPECT_BLOCKS) {
                    self.release_listed(v);
                    Some(v)
                } else {
                    self.suspects.insert(id, (v, since));
                    None
                }
            }
            (None, Some((v, _))) => {
                // Perhaps newer than our height: read again later (it keeps its slot).
                self.suspects.insert(id, (v, height));
                self.want(StateKey::Contract(id), height.saturating_add(SUSPECT_BLOCKS));
                None
            }
        };
        if let Some(v) = lister {
            self.distrust(v, Distrust::BadListing, now_ms);
        }
    }

    fn remember_other(&mut self, id: ContractId, view: ContractView) {
        self.others.retain(|(c, _)| *c != id);
        if self.others.len() >= OTHER_VIEWS_MAX {
            self.others.pop_front();
        }
        self.others.push_back((id, view));
    }

    fn on_contract(&mut self, id: ContractId, record: Option<Contract>, height: u64, now_ms: u64, local: &mut dyn Local) {
        let asked = self.asked.remove(&id);
        self.check_listing(id, record.as_ref(), height, now_ms);
        let Some(contract) = record else {
            self.contracts.remove(&id);
            if asked {
                self.remember_other(id, ContractView::Unknown);
            }
            return;
        };
        let me = self.config.node;
        let terms = match &contract.terms {
            ContractTerms::Workload { node, resources, last_usage_period, .. } if *node == me => {
                Terms::Workload { resources: *resources, last_usage_period: *last_usage_period }
            }
            ContractTerms::Storage { shards } if shards.iter().any(|s| s.placement.node == me) => Terms::Storage {
                shards: shards
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.placement.node == me)
                    .map(|(i, s)| MyShard {
                        index: i as u32,
                        key: s.placement.key,
                        len_bytes: s.placement.len_bytes,
                        last_proven_period: s.last_proven_period,
                    })
                    .collect(),
            },
            _ => {
                self.contracts.remove(&id);
                self.remember_other(id, ContractView::NotThisNode);
                return;
            }
        };
        if contract.status != ContractStatus::Active {
            let was = self.contracts.remove(&id).is_some();
            if (was || asked) && !self.ended.contains(&id) {
                if self.ended.len() >= ENDED_KEPT {
                    self.ended.pop_front();
                }
                self.ended.push_back(id);
                match terms {
                    Terms::Workload { .. } => {
                        local.contract_ended(id);
                        self.event(Event::ContractEnded { contract: id });
                    }
                    Terms::Storage { .. } => self.event(Event::StorageContractEnded { contract: id }),
                }
            }
            return;
        }
        if !self.contracts.contains_key(&id) && self.contracts.len() >= CONTRACTS_FOLLOWED_MAX {
            self.counters.dropped += 1;
            return;
        }
        self.contracts.insert(id, Followed { owner: contract.owner, created_period: contract.created_period, terms });
    }

    fn committed(&mut self, height: u64, now_ms: u64) {
        // (Also a copy given up on as stale: it is the pending transaction.)
        let Some(pending) = self.pending.take() else { return };
        self.nonce = pending.tx.tx.nonce.checked_add(1);
        if height > self.latest_height() {
            self.next_follow_ms = self.next_follow_ms.min(now_ms);
        }
        self.landed(pending.purpose, height);
    }

    /// A transaction for `purpose` is in the block at `height`: its records are read again.
    fn landed(&mut self, purpose: TxPurpose, height: u64) {
        self.counters.txs_committed += 1;
        let node = self.config.node;
        let farm = self.node.as_ref().and_then(|n| n.as_ref()).map(|n| n.farm).or(self.config.farm).unwrap_or(0);
        match purpose {
            TxPurpose::Register => {
                self.announced = true;
                self.want(StateKey::Node(node), height);
                self.event(Event::Registered { farm, capacity: self.config.capacity.clone() });
            }
            TxPurpose::UpdateCapacity => {
                self.announced = true;
                self.want(StateKey::Node(node), height);
                self.event(Event::CapacityUpdated { farm, capacity: self.config.capacity.clone() });
            }
            TxPurpose::Uptime { period } => {
                self.want(StateKey::Node(node), height);
                self.event(Event::UptimeReported { period });
            }
            TxPurpose::Proof { contract, shard, period } => {
                self.counters.proofs_ok += 1;
                self.want(StateKey::Contract(contract), height);
                self.event(Event::ProofOk { contract, shard, period });
            }
            TxPurpose::Usage { contract, period } => {
                self.counters.usage_reported += 1;
                self.want(StateKey::Contract(contract), height);
                self.event(Event::UsageReported { contract, period });
            }
        }
    }

    fn refused(&mut self, why: String) {
        let Some(pending) = self.pending.take() else { return };
        self.counters.txs_refused += 1;
        let purpose = pending.purpose;
        let latest = self.latest_height();
        self.nonce = None;
        self.want(StateKey::Account(self.config.node), latest);
        match purpose {
            TxPurpose::Register | TxPurpose::UpdateCapacity | TxPurpose::Uptime { .. } => {
                self.want(StateKey::Node(self.config.node), latest)
            }
            TxPurpose::Proof { contract, .. } | TxPurpose::Usage { contract, .. } => {
                self.want(StateKey::Contract(contract), latest)
            }
        }
        let why = truncate(why);
        if let TxPurpose::Proof { contract, shard, period } = purpose {
            if self.attempts.get(&purpose).copied().unwrap_or(0) >= TX_ATTEMPTS_PER_PERIOD {
                self.counters.proofs_failed += 1;
                self.event(Event::ProofFailed { contract, shard, period, why: why.clone() });
            }
        }
        self.event(Event::TxRefused { purpose, why });
    }

    fn may_try(&self, purpose: &TxPurpose) -> bool {
        self.attempts.get(purpose).copied().unwrap_or(0) < TX_ATTEMPTS_PER_PERIOD
    }

    /// Picks the next transaction, if none is in flight and its records are fresh.
    fn decide(&mut self, local: &mut dyn Local) {
        if self.pending.is_some() || self.light.is_none() {
            return;
        }
        let Some(nonce) = self.nonce else { return };
        if let Some((purpose, kind)) = self.next_tx(local) {
            let attempts = self.attempts.entry(purpose).or_insert(0);
            *attempts = attempts.saturating_add(1);
            let tx = Transaction { account: self.config.node, nonce, kind };
            let signature = local.sign(&tx.signing_message(&self.config.chain_id));
            let signed = SignedTx { tx, signature };
            if signed.encode().len() > TX_BYTES_MAX {
                self.counters.dropped += 1;
                return;
            }
            let height = self.latest_height();
            self.pending = Some(Pending::new(signed, purpose, height));
        }
    }

    fn next_tx(&mut self, local: &mut dyn Local) -> Option<(TxPurpose, TxKind)> {
        let period = self.period;
        let node_key = StateKey::Node(self.config.node);
        if !self.wants.contains_key(&node_key) {
            if let Some(record) = &self.node {
                match record {
                    None => {
                        if let Some(farm) = self.config.farm {
                            let purpose = TxPurpose::Register;
                            if self.may_try(&purpose) {
                                let capacity = self.config.capacity.clone();
                                return Some((purpose, TxKind::RegisterNode { node: self.config.node, farm, capacity }));
                            }
                        }
                    }
                    Some(node) => {
                        if node.capacity != self.config.capacity {
                            let purpose = TxPurpose::UpdateCapacity;
                            if self.may_try(&purpose) {
                                let capacity = self.config.capacity.clone();
                                return Some((purpose, TxKind::UpdateCapacity { node: self.config.node, capacity }));
                            }
                        }
                        let purpose = TxPurpose::Uptime { period };
                        if node.last_uptime_period.is_none_or(|p| p < period) && self.may_try(&purpose) {
                            return Some((purpose, TxKind::UptimeReport { uptime_secs: local.uptime_secs() }));
                        }
                    }
                }
            }
        }
        let seed = match &self.meta {
            Some(meta) if meta.period == period && !self.wants.contains_key(&StateKey::Meta) => Some(meta.period_seed),
            _ => None,
        };
        let ids: Vec<ContractId> =
            self.contracts.keys().filter(|id| !self.wants.contains_key(&StateKey::Contract(**id))).copied().collect();
        for id in ids {
            if let Some(found) = self.contract_tx(id, period, seed, local) {
                return Some(found);
            }
        }
        None
    }

    fn contract_tx(&mut self, id: ContractId, period: u64, seed: Option<[u8; 32]>, local: &mut dyn Local) -> Option<(TxPurpose, TxKind)> {
        let followed = self.contracts.get(&id)?;
        let (owner, created_period) = (followed.owner, followed.created_period);
        match &followed.terms {
            Terms::Storage { shards } => {
                let followed = (owner, created_period);
                // Billed from the period after its creation: no challenge before (its
                // shards may still be on their way to the node).
                if followed.1 >= period {
                    return None;
                }
                // Not in the period's last moments: a proof carried by a block of the next
                // period answers the wrong challenge (and no validator would answer it).
                let margin_ms = (self.period_ms / 10).min(PERIOD_END_MARGIN_MS_MAX);
                let end_ms = period.saturating_add(1).saturating_mul(self.period_ms);
                if self.now_ms.saturating_add(margin_ms) >= end_ms {
                    return None;
                }
                let seed = seed?;
                // The shards still to prove this period (no copy of the whole list).
                let todo: Vec<(u32, [u8; 32])> = shards
                    .iter()
                    .filter(|s| s.last_proven_period != Some(period))
                    .filter(|s| self.may_try(&TxPurpose::Proof { contract: id, shard: s.index, period }))
                    .map(|s| (s.index, s.key))
                    .collect();
                for (index, key) in todo {
                    let purpose = TxPurpose::Proof { contract: id, shard: index, period };
                    let challenge = storage_challenge(&seed, id, index);
                    let proof = match local.prove_shard(&followed.0, &key, challenge) {
                        Ok(proof) if proof.chunk.len() <= PROOF_CHUNK_BYTES_MAX && proof.path.len() <= PROOF_PATH_MAX => proof,
                        Ok(_) => {
                            self.proof_failed(purpose, String::from("proof out of bounds"));
                            continue;
                        }
                        Err(why) => {
                            self.proof_failed(purpose, why);
                            continue;
                        }
                    };
                    return Some((purpose, TxKind::StorageProof { contract: id, shard: index, proof }));
                }
                None
            }
            Terms::Workload { last_usage_period, .. } => {
                let ended = period.checked_sub(1)?;
                if created_period > ended || last_usage_period.is_some_and(|last| last >= ended) {
                    return None;
                }
                let purpose = TxPurpose::Usage { contract: id, period: ended };
                if !self.may_try(&purpose) {
                    return None;
                }
                let Some(usage) = local.usage(id, ended) else {
                    // No workload here under it: nothing to report this period.
                    self.attempts.insert(purpose, TX_ATTEMPTS_PER_PERIOD);
                    return None;
                };
                Some((purpose, TxKind::UsageReport { contract: id, period: ended, usage }))
            }
        }
    }

    fn proof_failed(&mut self, purpose: TxPurpose, why: String) {
        self.attempts.insert(purpose, TX_ATTEMPTS_PER_PERIOD);
        if let TxPurpose::Proof { contract, shard, period } = purpose {
            self.counters.proofs_failed += 1;
            self.event(Event::ProofFailed { contract, shard, period, why: truncate(why) });
        }
    }
}
