//! The validator's signing record: nothing it signed leaves it before it is durable, and a
//! restarted validator never sends two different signed messages for one (height, round,
//! kind) — the equivocation that Tendermint's safety assumes honest validators never commit.
//!
//! [`guard`] sits between [`crate::Node`]'s outputs and the network: each of the
//! validator's own proposals and votes is recorded in the block store
//! ([`BlockStore::record_signed`], a redb commit) before it is handed on. If the slot already
//! holds a different message (signed before a crash, by a node that has since lost its
//! memory), the recorded one is sent instead, so peers only ever see one. On restart the
//! daemon gives the recorded proposals back to the node ([`crate::Node::restore_signed`]),
//! which proposes the same block again rather than a new one.
//!
//! What this does not restore: the node's Tendermint lock (the value and round it
//! precommitted) beyond what the record forces; a restarted validator may prevote another
//! value in a later round, which needs more faults than the protocol tolerates to matter.
//! The record of a height is pruned once its block is stored.

use malachitebft_core_consensus::LivenessMsg;
use malachitebft_core_types::VoteType;

use crate::context::Address;
use crate::node::{Message, Output};
use crate::store::{BlockStore, StoreError};

/// Kinds of signed messages, as recorded.
pub const KIND_PROPOSAL: u8 = 0;
/// A prevote.
pub const KIND_PREVOTE: u8 = 1;
/// A precommit.
pub const KIND_PRECOMMIT: u8 = 2;

/// The slot of a message `own` signed, and its canonical form (a liveness re-send of a vote
/// is recorded as the vote itself); `None` for anything else.
pub fn slot(message: &Message, own: &Address) -> Option<((u64, i64, u8), Message)> {
    match message {
        Message::Proposal(p) if p.message.proposer == *own => {
            Some(((p.message.height.0, p.message.round.as_i64(), KIND_PROPOSAL), message.clone()))
        }
        Message::Vote(v) | Message::Liveness(LivenessMsg::Vote(v)) if v.message.validator == *own => {
            let kind = if v.message.kind == VoteType::Prevote { KIND_PREVOTE } else { KIND_PRECOMMIT };
            Some(((v.message.height.0, v.message.round.as_i64(), kind), Message::Vote(v.clone())))
        }
        _ => None,
    }
}

fn checked(store: &BlockStore, message: Message, own: &Address) -> Result<Option<Message>, StoreError> {
    let Some((slot, canonical)) = slot(&message, own) else { return Ok(Some(message)) };
    let bytes = canonical.encode();
    match store.record_signed(slot, &bytes)? {
        None => Ok(Some(message)),
        Some(recorded) if recorded == bytes => Ok(Some(message)),
        // Signed before a restart: that one stands. (A record that does not decode is our
        // own corrupt disk: sending nothing is safe.)
        Some(recorded) => Ok(Message::decode(&recorded)),
    }
}

/// Records the validator's own proposals and votes among `outputs` durably, replacing any
/// that conflict with an earlier record; returns what may be sent. On a store error nothing
/// may be sent (the caller stops).
pub fn guard(store: &BlockStore, own: &Address, outputs: Vec<Output>) -> Result<Vec<Output>, StoreError> {
    let mut allowed = Vec::with_capacity(outputs.len());
    for output in outputs {
        match output {
            Output::Broadcast(message) => allowed.extend(checked(store, message, own)?.map(Output::Broadcast)),
            Output::Send(to, message) => allowed.extend(checked(store, message, own)?.map(|m| Output::Send(to, m))),
            other => allowed.push(other),
        }
    }
    Ok(allowed)
}

/// The recorded proposals of `height` and above, decoded, for [`crate::Node::restore_signed`].
pub fn recorded_proposals(store: &BlockStore, height: u64) -> Result<Vec<Message>, StoreError> {
    Ok(store
        .signed_from(height)?
        .into_iter()
        .filter(|(slot, _)| slot.2 == KIND_PROPOSAL)
        .filter_map(|(_, bytes)| Message::decode(&bytes))
        .collect())
}
