//! One validator, sans-IO: Malachite's Tendermint core decides blocks, the ledger state
//! checks proposals, builds blocks when this validator proposes, and applies decisions.
//!
//! Inputs: [`Node::start`], [`Node::on_message`] (from peers), [`Node::on_timeout`],
//! [`Node::submit`] (transactions); each returns the [`Output`]s the caller must carry out
//! (broadcast a message, schedule or cancel a timeout) and decisions are read with
//! [`Node::decided`]. Time is passed in (`now_ms`); nothing here reads a clock, a socket or a
//! disk. Persistence (blocks, the signing record of [`crate::wal`]) and networking belong
//! to the daemon around it.

use std::collections::BTreeMap;

use ledger::{Block, Commit, CommitSig, Genesis, Keypair, LightBlock, SignedTx, State, TxError};
use malachitebft_core_consensus::{
    self as mc, Effect, Input, LivenessMsg, LocallyProposedValue, Params, Resumable, SignedConsensusMsg,
};
use malachitebft_core_types::{
    self as mt, CertificateError, CommitCertificate, NilOrVal, Round, SignedMessage, ThresholdParams, Timeout,
    TimeoutKind, ValuePayload, VoteType,
};

use crate::context::{Address, BlockHash, BlockValue, Height, LedgerContext, Proposal, Sig, ValidatorSet, Vote};

/// Most transactions held in the mempool (one validator; per-account limits come with the
/// daemon's submission service).
pub const MEMPOOL_TXS_MAX: usize = 10_000;
/// Inputs Malachite buffers for future heights.
pub const QUEUE_CAPACITY: usize = 64;
/// Heights ahead of the current one whose proposals are kept until their height starts.
pub const FUTURE_HEIGHTS_MAX: u64 = 2;
/// Proposals kept per future height (one per round of a few rounds).
pub const FUTURE_PROPOSALS_PER_HEIGHT_MAX: usize = 8;
/// How far ahead of this validator's clock a proposal's time may be.
pub const CLOCK_DRIFT_MS_MAX: u64 = 10_000;
/// Least time between two sync requests (one is sent at once after each synced block while
/// still behind).
pub const SYNC_REQUEST_INTERVAL_MS: u64 = 500;
/// Decided blocks sent for one sync request.
pub const SYNC_BATCH_MAX: usize = 32;

/// A consensus message between validators.
#[derive(Clone, Debug)]
pub enum Message {
    /// A proposal (carries the whole block).
    Proposal(SignedMessage<LedgerContext, Proposal>),
    /// A prevote or precommit.
    Vote(SignedMessage<LedgerContext, Vote>),
    /// A round-synchronisation message.
    Liveness(LivenessMsg<LedgerContext>),
    /// `from` is behind: it asks for the decided block at `height`.
    SyncRequest {
        /// The height it needs.
        height: u64,
        /// Who asks (the answer goes there only).
        from: Address,
    },
    /// A decided block and its commit, for a validator that is behind.
    Decided {
        /// The block.
        block: Box<Block>,
        /// Its commit.
        commit: Commit,
    },
}

/// What the caller must do.
#[derive(Clone, Debug)]
pub enum Output {
    /// Send to every other validator.
    Broadcast(Message),
    /// Send to one validator.
    Send(Address, Message),
    /// Call [`Node::on_timeout`] with this timeout after `after_ms`.
    ScheduleTimeout(Timeout, u64),
    /// Forget this timeout.
    CancelTimeout(Timeout),
    /// Forget every timeout.
    CancelAllTimeouts,
    /// Call [`Node::on_wake`] after `after_ms` (the commit wait).
    Wake(u64),
}

/// Timeout lengths.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Waiting for a proposal.
    pub propose_ms: u64,
    /// Waiting for prevotes.
    pub prevote_ms: u64,
    /// Waiting for precommits.
    pub precommit_ms: u64,
    /// Between rebroadcasts of the last votes.
    pub rebroadcast_ms: u64,
    /// Added per round.
    pub per_round_ms: u64,
    /// Wait after a decision before the next height starts (Tendermint's commit timeout):
    /// a chain without transactions then makes one empty block per interval, not as many
    /// as consensus can.
    pub commit_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { propose_ms: 3_000, prevote_ms: 1_000, precommit_ms: 1_000, rebroadcast_ms: 5_000, per_round_ms: 500, commit_ms: 1_000 }
    }
}

/// Why stored blocks could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreError {
    /// The genesis is invalid.
    Genesis(ledger::ConfigError),
    /// The commit of the block at this height does not verify.
    Commit(u64, ledger::LightError),
    /// The block at this height does not apply.
    Block(u64, ledger::BlockError),
}

/// The application side of the node: everything Malachite's effects need.
struct App {
    key: Keypair,
    address: Address,
    ctx: LedgerContext,
    ledger: State,
    validators: ValidatorSet,
    mempool: Vec<SignedTx>,
    /// Proposed blocks of the current height, by hash.
    proposals: BTreeMap<BlockHash, BlockValue>,
    outputs: Vec<Output>,
    timeouts: Timeouts,
    now_ms: u64,
    /// Malachite asked this validator to propose (answered after the effect loop).
    propose: Option<(Height, Round)>,
    /// The decision of the current height (handled after the effect loop).
    decision: Option<CommitCertificate<LedgerContext>>,
    decided: Vec<(Block, Commit)>,
    /// Proposals for the next heights, checked and fed when their height starts.
    future: BTreeMap<u64, Vec<SignedMessage<LedgerContext, Proposal>>>,
    last_sync_request_ms: Option<u64>,
    /// The nonce of each account's last transaction in the mempool.
    pending_nonce: BTreeMap<[u8; 32], u64>,
    /// The highest height seen in a peer's proposal or vote.
    highest_seen: u64,
    /// The height a sync request last asked for.
    sync_requested: u64,
    /// When the next height starts (after the commit wait).
    start_at_ms: Option<u64>,
    /// Blocks this validator proposed before a restart, by (height, round): proposed again
    /// as they were (see [`crate::wal`]).
    reproposals: BTreeMap<(u64, u32), BlockValue>,
}

/// One validator.
pub struct Node {
    consensus: mc::State<LedgerContext>,
    app: App,
    genesis: Genesis,
}

impl Node {
    /// A validator of the chain of `genesis` holding `key`.
    pub fn new(key: Keypair, genesis: &Genesis, timeouts: Timeouts) -> Result<Node, ledger::ConfigError> {
        let (ledger, _) = State::genesis(genesis)?;
        let ctx = LedgerContext { chain_id: genesis.chain_id() };
        let validators = ValidatorSet::new(&ledger.meta().validators);
        let address = Address(key.public());
        let params = Params {
            initial_height: Height(ledger.meta().height + 1),
            initial_validator_set: validators.clone(),
            address,
            threshold_params: ThresholdParams::default(),
            value_payload: ValuePayload::ProposalOnly,
        };
        let consensus = mc::State::new(ctx.clone(), params, QUEUE_CAPACITY);
        let app = App {
            key,
            address,
            ctx,
            ledger,
            validators,
            mempool: Vec::new(),
            proposals: BTreeMap::new(),
            outputs: Vec::new(),
            timeouts,
            now_ms: genesis.time_ms,
            propose: None,
            decision: None,
            decided: Vec::new(),
            future: BTreeMap::new(),
            last_sync_request_ms: None,
            pending_nonce: BTreeMap::new(),
            highest_seen: 0,
            sync_requested: 0,
            start_at_ms: None,
            reproposals: BTreeMap::new(),
        };
        Ok(Node { consensus, app, genesis: genesis.clone() })
    }

    /// A validator restarted from its stored decided blocks: each commit is checked against
    /// the validator set of its height, each block applied in order.
    pub fn restore(key: Keypair, genesis: &Genesis, timeouts: Timeouts, blocks: Vec<(Block, Commit)>) -> Result<Node, RestoreError> {
        let mut node = Node::new(key, genesis, timeouts).map_err(RestoreError::Genesis)?;
        for (block, commit) in blocks {
            let height = block.header.height;
            commit
                .verify(&node.app.ctx.chain_id, &block.header, &node.app.validators.ledger)
                .map_err(|e| RestoreError::Commit(height, e))?;
            node.app.ledger.apply_block(&block).map_err(|e| RestoreError::Block(height, e))?;
            node.app.validators = ValidatorSet::new(&node.app.ledger.meta().validators);
            node.app.decided.push((block, commit));
        }
        Ok(node)
    }

    /// Gives back the proposals this validator signed before a restart (from its signing
    /// record): when it proposes at one of those heights and rounds again, it proposes the
    /// same block, so its new proposal is the recorded one.
    pub fn restore_signed(&mut self, proposals: Vec<Message>) {
        for message in proposals {
            let Message::Proposal(p) = message else { continue };
            let round = p.message.round.as_u32();
            if p.message.proposer == self.app.address && p.message.height.0 > self.app.ledger.meta().height {
                if let Some(round) = round {
                    self.app.reproposals.insert((p.message.height.0, round), p.message.value.clone());
                }
            }
        }
    }

    /// The chain's genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The ledger state (after the last decided block).
    pub fn ledger(&self) -> &State {
        &self.app.ledger
    }

    /// Decided blocks with their commits, in height order.
    pub fn decided(&self) -> &[(Block, Commit)] {
        &self.app.decided
    }

    /// The decided blocks as a light client receives them.
    pub fn light_blocks(&self) -> Vec<LightBlock> {
        self.app.decided.iter().map(|(block, commit)| LightBlock::of(block, commit.clone())).collect()
    }

    /// Starts consensus at the next height.
    pub fn start(&mut self, now_ms: u64) -> Vec<Output> {
        self.app.now_ms = now_ms;
        let height = Height(self.app.ledger.meta().height + 1);
        let set = self.app.validators.clone();
        self.run(Input::StartHeight(height, set))
    }

    /// Adds a transaction to the mempool. An account's first pending transaction must apply
    /// to the state; the next ones must be signed and carry the following nonces (what they
    /// do is checked when a block is built, which drops what does not apply).
    pub fn submit(&mut self, tx: SignedTx) -> Result<(), TxError> {
        if self.app.mempool.len() >= MEMPOOL_TXS_MAX {
            return Err(TxError::Invalid("mempool full"));
        }
        let account = tx.tx.account;
        match self.app.pending_nonce.get(&account) {
            Some(last) => {
                tx.check_stateless(&self.app.ctx.chain_id)?;
                let expected = last.saturating_add(1);
                if tx.tx.nonce != expected {
                    return Err(TxError::BadNonce { expected, got: tx.tx.nonce });
                }
            }
            None => {
                self.app.ledger.check_tx(&tx)?;
            }
        }
        self.app.pending_nonce.insert(account, tx.tx.nonce);
        self.app.mempool.push(tx);
        Ok(())
    }

    /// Transactions waiting for a block.
    pub fn mempool_len(&self) -> usize {
        self.app.mempool.len()
    }

    /// The consensus round at the current height.
    pub fn round(&self) -> Option<u32> {
        self.consensus.round().as_u32()
    }

    /// The height being decided.
    pub fn height(&self) -> u64 {
        self.app.ledger.meta().height + 1
    }

    /// A message from a peer.
    pub fn on_message(&mut self, message: Message, now_ms: u64) -> Vec<Output> {
        self.app.now_ms = now_ms;
        let current = self.height();
        match message {
            Message::Proposal(proposal) => {
                let height = proposal.message.height.0;
                self.app.highest_seen = self.app.highest_seen.max(height);
                if height > current {
                    self.app.keep_future(proposal);
                    self.app.sync_request(current);
                    return std::mem::take(&mut self.app.outputs);
                }
                if height < current || !self.app.accept_proposal(&proposal) {
                    return Vec::new();
                }
                self.run(Input::Proposal(proposal))
            }
            Message::Vote(vote) => {
                self.app.highest_seen = self.app.highest_seen.max(vote.message.height.0);
                if vote.message.height.0 > current {
                    self.app.sync_request(current);
                }
                self.run(Input::Vote(vote))
            }
            Message::Liveness(LivenessMsg::Vote(vote)) => self.run(Input::Vote(vote)),
            Message::Liveness(LivenessMsg::PolkaCertificate(cert)) => self.run(Input::PolkaCertificate(cert)),
            Message::Liveness(LivenessMsg::SkipRoundCertificate(cert)) => self.run(Input::RoundCertificate(cert)),
            Message::SyncRequest { height, from } => {
                let first = usize::try_from(height.saturating_sub(1)).unwrap_or(usize::MAX);
                self.app
                    .decided
                    .iter()
                    .skip(first)
                    .take(SYNC_BATCH_MAX)
                    .map(|(block, commit)| Output::Send(from, Message::Decided { block: Box::new(block.clone()), commit: commit.clone() }))
                    .collect()
            }
            Message::Decided { block, commit } => {
                if block.header.height != current {
                    return Vec::new();
                }
                let valid = commit.verify(&self.app.ctx.chain_id, &block.header, &self.app.validators.ledger).is_ok();
                if !valid || !self.app.apply_decided(*block, commit) {
                    return Vec::new();
                }
                let height = Height(self.height());
                self.app.start_at_ms = None;
                let mut outputs = self.run(Input::StartHeight(height, self.app.validators.clone()));
                if self.app.highest_seen > height.0 && self.app.last_synced_batch_done(height.0) {
                    self.app.last_sync_request_ms = None;
                    self.app.sync_request(height.0);
                    outputs.append(&mut self.app.outputs);
                }
                outputs
            }
        }
    }

    /// The wake-up asked for by [`Output::Wake`]: starts the next height once the commit
    /// wait is over.
    pub fn on_wake(&mut self, now_ms: u64) -> Vec<Output> {
        self.app.now_ms = now_ms;
        match self.app.start_at_ms {
            Some(at) if at <= now_ms => {
                self.app.start_at_ms = None;
                let height = Height(self.height());
                self.run(Input::StartHeight(height, self.app.validators.clone()))
            }
            _ => Vec::new(),
        }
    }

    /// A timeout scheduled by an earlier [`Output::ScheduleTimeout`] elapsed.
    pub fn on_timeout(&mut self, timeout: Timeout, now_ms: u64) -> Vec<Output> {
        self.app.now_ms = now_ms;
        self.run(Input::TimeoutElapsed(timeout))
    }

    /// Feeds one input, then whatever the effects asked for (a block to propose, the next
    /// height after a decision).
    fn run(&mut self, input: Input<LedgerContext>) -> Vec<Output> {
        let mut next = Some(input);
        // Bounded: kept proposals, a block to propose, a decision and a new height.
        for _ in 0..FUTURE_PROPOSALS_PER_HEIGHT_MAX + 4 {
            let Some(input) = next.take() else { break };
            let app = &mut self.app;
            let result: Result<(), mc::Error<Ctx>> = mc::process!(
                input: input,
                state: &mut self.consensus,
                metrics: &(),
                with: effect => app.on_effect(effect)
            );
            if let Err(error) = result {
                mc::tracing::warn!("consensus input refused: {error:?}");
            }
            if let Some(certificate) = self.app.decision.take() {
                if self.app.commit(certificate) {
                    let height = Height(self.app.ledger.meta().height + 1);
                    if self.app.timeouts.commit_ms == 0 {
                        next = Some(Input::StartHeight(height, self.app.validators.clone()));
                    } else {
                        self.app.start_at_ms = Some(self.app.now_ms + self.app.timeouts.commit_ms);
                        self.app.outputs.push(Output::Wake(self.app.timeouts.commit_ms));
                    }
                }
                continue;
            }
            if let Some(proposal) = self.app.next_kept_proposal() {
                next = Some(Input::Proposal(proposal));
                continue;
            }
            if let Some((height, round)) = self.app.propose.take() {
                if let Some(value) = self.app.build(height, round) {
                    next = Some(Input::Propose(LocallyProposedValue { height, round, value }));
                }
            }
        }
        std::mem::take(&mut self.app.outputs)
    }
}

type Ctx = LedgerContext;

impl App {
    fn timeout_ms(&self, timeout: &Timeout) -> u64 {
        let t = &self.timeouts;
        let base = match timeout.kind {
            TimeoutKind::Propose => t.propose_ms,
            TimeoutKind::Prevote => t.prevote_ms,
            TimeoutKind::Precommit => t.precommit_ms,
            TimeoutKind::Rebroadcast => t.rebroadcast_ms,
        };
        base + t.per_round_ms * u64::from(timeout.round.as_u32().unwrap_or(0))
    }

    fn on_effect(&mut self, effect: Effect<Ctx>) -> Result<mc::Resume<Ctx>, std::convert::Infallible> {
        Ok(match effect {
            Effect::ResetTimeouts(r) => r.resume_with(()),
            Effect::CancelAllTimeouts(r) => {
                self.outputs.push(Output::CancelAllTimeouts);
                r.resume_with(())
            }
            Effect::CancelTimeout(timeout, r) => {
                self.outputs.push(Output::CancelTimeout(timeout));
                r.resume_with(())
            }
            Effect::ScheduleTimeout(timeout, r) => {
                let after_ms = self.timeout_ms(&timeout);
                self.outputs.push(Output::ScheduleTimeout(timeout, after_ms));
                r.resume_with(())
            }
            Effect::GetValidatorSet(height, r) => {
                let known = height.0 == self.ledger.meta().height + 1;
                r.resume_with(known.then(|| self.validators.clone()))
            }
            Effect::StartRound(_, _, _, _, r) => r.resume_with(()),
            Effect::PublishConsensusMsg(msg, r) => {
                self.outputs.push(Output::Broadcast(match msg {
                    SignedConsensusMsg::Vote(vote) => Message::Vote(vote),
                    SignedConsensusMsg::Proposal(proposal) => Message::Proposal(proposal),
                }));
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                self.outputs.push(Output::Broadcast(Message::Liveness(msg)));
                r.resume_with(())
            }
            Effect::RepublishVote(vote, r) => {
                self.outputs.push(Output::Broadcast(Message::Vote(vote)));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(cert, r) => {
                self.outputs.push(Output::Broadcast(Message::Liveness(LivenessMsg::SkipRoundCertificate(cert))));
                r.resume_with(())
            }
            Effect::GetValue(height, round, _timeout, r) => {
                self.propose = Some((height, round));
                r.resume_with(())
            }
            Effect::RestreamProposal(_, _, _, _, _, r) => r.resume_with(()),
            Effect::SyncValue(_, r) => r.resume_with(()),
            Effect::Decide(certificate, _extensions, r) => {
                self.decision = Some(certificate);
                r.resume_with(())
            }
            Effect::SignVote(vote, r) => {
                let signature = LedgerContext::sign(&self.key, &self.ctx.vote_bytes(&vote));
                r.resume_with(SignedMessage::new(vote, signature))
            }
            Effect::SignProposal(proposal, r) => {
                let signature = LedgerContext::sign(&self.key, &self.ctx.proposal_bytes(&proposal));
                r.resume_with(SignedMessage::new(proposal, signature))
            }
            Effect::VerifySignature(signed, key, r) => {
                let bytes = match &signed.message {
                    mc::ConsensusMsg::Vote(vote) => self.ctx.vote_bytes(vote),
                    mc::ConsensusMsg::Proposal(proposal) => self.ctx.proposal_bytes(proposal),
                };
                r.resume_with(LedgerContext::verify(&key, &bytes, &signed.signature))
            }
            Effect::VerifyCommitCertificate(cert, set, _, r) => {
                let votes = cert.commit_signatures.iter().map(|s| (VoteType::Precommit, NilOrVal::Val(cert.value_id), s.address, s.signature));
                r.resume_with(self.verify_votes(cert.height, cert.round, votes, &set))
            }
            Effect::VerifyPolkaCertificate(cert, set, _, r) => {
                let votes = cert.polka_signatures.iter().map(|s| (VoteType::Prevote, NilOrVal::Val(cert.value_id), s.address, s.signature));
                r.resume_with(self.verify_votes(cert.height, cert.round, votes, &set))
            }
            Effect::VerifyRoundCertificate(cert, set, _, r) => {
                let votes = cert.round_signatures.iter().map(|s| (s.vote_type, s.value_id, s.address, s.signature));
                r.resume_with(self.verify_votes(cert.height, cert.round, votes, &set))
            }
            Effect::WalAppend(_, r) => r.resume_with(()),
            Effect::ExtendVote(_, _, _, r) => r.resume_with(None),
            Effect::VerifyVoteExtension(_, _, _, _, _, r) => r.resume_with(Ok(())),
        })
    }

    /// Every signature verifies and belongs to a distinct member; together they hold more
    /// than two thirds of the power (the ledger's quorum rule). A bad or repeated signature
    /// is reported as `UnknownValidator` with its address. The error type is Malachite's.
    #[allow(clippy::result_large_err)]
    fn verify_votes(
        &self,
        height: Height,
        round: Round,
        votes: impl Iterator<Item = (VoteType, NilOrVal<BlockHash>, Address, Sig)>,
        set: &ValidatorSet,
    ) -> Result<(), CertificateError<Ctx>> {
        let mut seen = Vec::new();
        let mut signed = 0u64;
        for (kind, value, address, signature) in votes {
            let Some(power) = set.ledger.power_of(&address.0) else {
                return Err(CertificateError::UnknownValidator(address));
            };
            let vote = Vote { kind, height, round, value, validator: address };
            if seen.contains(&address) || !LedgerContext::verify(&address.0, &self.ctx.vote_bytes(&vote), &signature) {
                return Err(CertificateError::UnknownValidator(address));
            }
            seen.push(address);
            signed = signed.saturating_add(power);
        }
        if !set.ledger.is_quorum(signed) {
            let total = set.ledger.total_power();
            return Err(CertificateError::NotEnoughVotingPower { signed, total, expected: total * 2 / 3 + 1 });
        }
        Ok(())
    }

    /// Checks a proposal for the current height: its block must apply. Malachite takes
    /// whole-value proposals as valid, so an invalid one is dropped here (the propose timeout
    /// then leads to a nil prevote).
    fn accept_proposal(&mut self, proposal: &SignedMessage<Ctx, Proposal>) -> bool {
        // Cheap checks first: only the round's proposer's signed proposal is executed.
        let message = &proposal.message;
        let expected = mt::Context::select_proposer(&self.ctx, &self.validators, message.height, message.round);
        if expected.address != message.proposer
            || !LedgerContext::verify(&message.proposer.0, &self.ctx.proposal_bytes(message), &proposal.signature)
        {
            return false;
        }
        let value = &proposal.message.value;
        let header = &value.block.header;
        // `header.proposer` built the block; a later round may re-propose it (proof of lock).
        if header.height != proposal.message.height.0
            || header.time_ms > self.now_ms.saturating_add(CLOCK_DRIFT_MS_MAX)
            || self.ledger.check_block(&value.block).is_err()
        {
            return false;
        }
        self.proposals.insert(value.hash, value.clone());
        true
    }

    fn keep_future(&mut self, proposal: SignedMessage<Ctx, Proposal>) {
        let height = proposal.message.height.0;
        if height > self.ledger.meta().height + 1 + FUTURE_HEIGHTS_MAX {
            return;
        }
        let kept = self.future.entry(height).or_default();
        if kept.len() < FUTURE_PROPOSALS_PER_HEIGHT_MAX {
            kept.push(proposal);
        }
    }

    /// The next kept proposal for the current height that applies.
    fn next_kept_proposal(&mut self) -> Option<SignedMessage<Ctx, Proposal>> {
        let current = self.ledger.meta().height + 1;
        self.future.retain(|height, _| *height >= current);
        loop {
            let proposal = self.future.get_mut(&current)?.pop()?;
            if self.accept_proposal(&proposal) {
                return Some(proposal);
            }
        }
    }

    fn sync_request(&mut self, height: u64) {
        if self.last_sync_request_ms.is_some_and(|last| self.now_ms < last + SYNC_REQUEST_INTERVAL_MS) {
            return;
        }
        self.last_sync_request_ms = Some(self.now_ms);
        self.sync_requested = height;
        self.outputs.push(Output::Broadcast(Message::SyncRequest { height, from: self.address }));
    }

    /// Whether the blocks of the last sync request are all in (`next` is the height now
    /// being decided): then the next batch is asked for at once.
    fn last_synced_batch_done(&self, next: u64) -> bool {
        next >= self.sync_requested.saturating_add(SYNC_BATCH_MAX as u64)
    }

    /// Builds this validator's proposal for `height` from the mempool.
    fn build(&mut self, height: Height, round: Round) -> Option<BlockValue> {
        if height.0 != self.ledger.meta().height + 1 {
            return None;
        }
        let recorded = round.as_u32().and_then(|r| self.reproposals.get(&(height.0, r)).cloned());
        if let Some(value) = recorded {
            if self.ledger.check_block(&value.block).is_ok() {
                self.proposals.insert(value.hash, value.clone());
                return Some(value);
            }
        }
        let time_ms = self.now_ms.max(self.ledger.meta().time_ms);
        let candidates = self.mempool.clone();
        let (block, _refused) = self.ledger.build_block(candidates, time_ms, self.address.0).ok()?;
        let value = BlockValue::new(block);
        self.proposals.insert(value.hash, value.clone());
        Some(value)
    }

    /// Applies the decided block; returns whether the ledger moved to the next height.
    fn commit(&mut self, certificate: CommitCertificate<Ctx>) -> bool {
        let Some(value) = self.proposals.get(&certificate.value_id).cloned() else {
            mc::tracing::error!("decided a block this validator never saw: {}", certificate.value_id);
            return false;
        };
        let block = (*value.block).clone();
        let round = certificate.round.as_u32().unwrap_or(0);
        let signatures = certificate
            .commit_signatures
            .iter()
            .map(|s| CommitSig { validator: s.address.0, signature: ledger::Signature(s.signature.0) })
            .collect();
        let commit = Commit { height: block.header.height, round, block_hash: value.hash.0, signatures };
        self.apply_decided(block, commit)
    }

    /// Applies a decided block (from this validator's consensus or, verified, from a peer).
    fn apply_decided(&mut self, block: Block, commit: Commit) -> bool {
        if let Err(error) = self.ledger.apply_block(&block) {
            mc::tracing::error!("decided block does not apply: {error:?}");
            return false;
        }
        let included: std::collections::BTreeSet<[u8; 32]> = block.txs.iter().map(|tx| tx.id()).collect();
        self.mempool.retain(|tx| !included.contains(&tx.id()));
        // Drop what no longer applies after the block.
        let results = self.ledger.check_sequence(&self.mempool);
        let mut results = results.into_iter();
        self.mempool.retain(|_| matches!(results.next(), Some(Ok(_))));
        self.pending_nonce = self.mempool.iter().map(|tx| (tx.tx.account, tx.tx.nonce)).collect();
        self.validators = ValidatorSet::new(&self.ledger.meta().validators);
        self.proposals.clear();
        let decided_height = block.header.height;
        self.reproposals.retain(|(height, _), _| *height > decided_height);
        self.decided.push((block, commit));
        true
    }
}
