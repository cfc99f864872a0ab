//! The wire encoding of consensus messages between validators: postcard over plain mirror
//! types (Malachite's types carry no serde), decoded from untrusted bytes with a size bound
//! and never a panic. Signatures are checked later, by consensus; decoding only gives form.

use std::sync::Arc;

use ledger::{Block, Commit};
use malachitebft_core_consensus::LivenessMsg;
use malachitebft_core_types::{
    NilOrVal, PolkaCertificate, PolkaSignature, Round, RoundCertificate, RoundCertificateType, RoundSignature,
    SignedMessage, VoteType,
};
use serde::{Deserialize, Serialize};

use crate::context::{Address, BlockHash, BlockValue, Height, Proposal, Sig, Vote};
use crate::node::Message;

/// Largest encoded message: a full block and some room.
pub const MESSAGE_BYTES_MAX: usize = ledger::BLOCK_BYTES_MAX + (64 << 10);
/// Most signatures in a certificate (a validator set's bound).
pub const CERTIFICATE_SIGNATURES_MAX: usize = ledger::VALIDATORS_MAX;

#[derive(Serialize, Deserialize)]
struct WireSig(#[serde(with = "serde_big_array::BigArray")] [u8; 64]);

#[derive(Serialize, Deserialize)]
struct WireVote {
    precommit: bool,
    height: u64,
    round: i64,
    value: Option<[u8; 32]>,
    validator: [u8; 32],
    signature: WireSig,
}

#[derive(Serialize, Deserialize)]
struct WireRoundSig {
    precommit: bool,
    value: Option<[u8; 32]>,
    validator: [u8; 32],
    signature: WireSig,
}

/// Variant order is wire format: append only.
#[derive(Serialize, Deserialize)]
enum Wire {
    Proposal { height: u64, round: i64, pol_round: i64, proposer: [u8; 32], block: Box<Block>, signature: WireSig },
    Vote(WireVote),
    LivenessVote(WireVote),
    Polka { height: u64, round: i64, value: [u8; 32], signatures: Vec<([u8; 32], WireSig)> },
    SkipRound { height: u64, round: i64, precommit_any: bool, signatures: Vec<WireRoundSig> },
    SyncRequest { height: u64, from: [u8; 32] },
    Decided { block: Box<Block>, commit: Commit },
}

fn round_from(round: i64) -> Option<Round> {
    match round {
        -1 => Some(Round::Nil),
        r => u32::try_from(r).ok().map(Round::new),
    }
}

fn value_to(value: &NilOrVal<BlockHash>) -> Option<[u8; 32]> {
    match value {
        NilOrVal::Nil => None,
        NilOrVal::Val(hash) => Some(hash.0),
    }
}

fn value_from(value: Option<[u8; 32]>) -> NilOrVal<BlockHash> {
    value.map_or(NilOrVal::Nil, |v| NilOrVal::Val(BlockHash(v)))
}

fn kind_from(precommit: bool) -> VoteType {
    if precommit {
        VoteType::Precommit
    } else {
        VoteType::Prevote
    }
}

fn vote_to(vote: &SignedMessage<crate::LedgerContext, Vote>) -> WireVote {
    let v = &vote.message;
    WireVote {
        precommit: v.kind == VoteType::Precommit,
        height: v.height.0,
        round: v.round.as_i64(),
        value: value_to(&v.value),
        validator: v.validator.0,
        signature: WireSig(vote.signature.0),
    }
}

fn vote_from(w: WireVote) -> Option<SignedMessage<crate::LedgerContext, Vote>> {
    let vote = Vote {
        kind: kind_from(w.precommit),
        height: Height(w.height),
        round: round_from(w.round)?,
        value: value_from(w.value),
        validator: Address(w.validator),
    };
    Some(SignedMessage::new(vote, Sig(w.signature.0)))
}

impl Message {
    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            Message::Proposal(p) => Wire::Proposal {
                height: p.message.height.0,
                round: p.message.round.as_i64(),
                pol_round: p.message.pol_round.as_i64(),
                proposer: p.message.proposer.0,
                block: Box::new((*p.message.value.block).clone()),
                signature: WireSig(p.signature.0),
            },
            Message::Vote(v) => Wire::Vote(vote_to(v)),
            Message::Liveness(LivenessMsg::Vote(v)) => Wire::LivenessVote(vote_to(v)),
            Message::Liveness(LivenessMsg::PolkaCertificate(c)) => Wire::Polka {
                height: c.height.0,
                round: c.round.as_i64(),
                value: c.value_id.0,
                signatures: c.polka_signatures.iter().map(|s| (s.address.0, WireSig(s.signature.0))).collect(),
            },
            Message::Liveness(LivenessMsg::SkipRoundCertificate(c)) => Wire::SkipRound {
                height: c.height.0,
                round: c.round.as_i64(),
                precommit_any: c.cert_type == RoundCertificateType::Precommit,
                signatures: c
                    .round_signatures
                    .iter()
                    .map(|s| WireRoundSig {
                        precommit: s.vote_type == VoteType::Precommit,
                        value: value_to(&s.value_id),
                        validator: s.address.0,
                        signature: WireSig(s.signature.0),
                    })
                    .collect(),
            },
            Message::SyncRequest { height, from } => Wire::SyncRequest { height: *height, from: from.0 },
            Message::Decided { block, commit } => Wire::Decided { block: block.clone(), commit: commit.clone() },
        };
        postcard::to_allocvec(&wire).unwrap_or_default()
    }

    /// Decodes untrusted bytes: `None` if they are too long or malformed.
    pub fn decode(bytes: &[u8]) -> Option<Message> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return None;
        }
        let wire: Wire = postcard::from_bytes(bytes).ok()?;
        Some(match wire {
            Wire::Proposal { height, round, pol_round, proposer, block, signature } => {
                if block.txs.len() > ledger::BLOCK_TXS_MAX {
                    return None;
                }
                let value = BlockValue { hash: BlockHash(block.hash()), block: Arc::new(*block) };
                let proposal = Proposal {
                    height: Height(height),
                    round: round_from(round)?,
                    value,
                    pol_round: round_from(pol_round)?,
                    proposer: Address(proposer),
                };
                Message::Proposal(SignedMessage::new(proposal, Sig(signature.0)))
            }
            Wire::Vote(v) => Message::Vote(vote_from(v)?),
            Wire::LivenessVote(v) => Message::Liveness(LivenessMsg::Vote(vote_from(v)?)),
            Wire::Polka { height, round, value, signatures } => {
                if signatures.len() > CERTIFICATE_SIGNATURES_MAX {
                    return None;
                }
                Message::Liveness(LivenessMsg::PolkaCertificate(PolkaCertificate {
                    height: Height(height),
                    round: round_from(round)?,
                    value_id: BlockHash(value),
                    polka_signatures: signatures.into_iter().map(|(a, s)| PolkaSignature::new(Address(a), Sig(s.0))).collect(),
                }))
            }
            Wire::SkipRound { height, round, precommit_any, signatures } => {
                if signatures.len() > CERTIFICATE_SIGNATURES_MAX {
                    return None;
                }
                let round_signatures = signatures
                    .into_iter()
                    .map(|s| RoundSignature {
                        vote_type: kind_from(s.precommit),
                        value_id: value_from(s.value),
                        address: Address(s.validator),
                        signature: Sig(s.signature.0),
                    })
                    .collect();
                Message::Liveness(LivenessMsg::SkipRoundCertificate(RoundCertificate {
                    height: Height(height),
                    round: round_from(round)?,
                    cert_type: if precommit_any { RoundCertificateType::Precommit } else { RoundCertificateType::Skip },
                    round_signatures,
                }))
            }
            Wire::SyncRequest { height, from } => Message::SyncRequest { height, from: Address(from) },
            Wire::Decided { block, commit } => {
                if block.txs.len() > ledger::BLOCK_TXS_MAX || commit.signatures.len() > CERTIFICATE_SIGNATURES_MAX {
                    return None;
                }
                Message::Decided { block, commit }
            }
        })
    }
}
