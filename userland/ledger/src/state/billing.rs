//! Settlement of one ended period: judge every node (uptime, proofs), then bill every
//! active contract created before the period (see the rules in the parent module).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::{BillingEvent, ContractStatus, ContractTerms, MarkReason, State};
use crate::crypto::PublicKey;
use crate::tx::Amount;
use crate::ContractId;

impl State {
    pub(super) fn settle(&mut self, period: u64, events: &mut Vec<BillingEvent>) {
        let billed: Vec<ContractId> =
            self.active.iter().copied().filter(|id| self.contracts.get(id).is_some_and(|c| c.created_period < period)).collect();
        let failed = self.unproven_shards(period, &billed);
        let good = self.judge_nodes(period, &failed, events);
        for id in billed {
            self.bill(id, period, &good, events);
        }
    }

    /// Nodes that left a shard of a billed storage contract unproven in `period`, with the
    /// number of such shards.
    fn unproven_shards(&self, period: u64, billed: &[ContractId]) -> BTreeMap<PublicKey, u64> {
        let mut failed = BTreeMap::new();
        for id in billed {
            let Some(contract) = self.contracts.get(id) else { continue };
            let ContractTerms::Storage { shards } = &contract.terms else { continue };
            for shard in shards {
                if shard.last_proven_period != Some(period) {
                    *failed.entry(shard.placement.node).or_insert(0u64) += 1;
                }
            }
        }
        failed
    }

    /// Marks the nodes that were not up or failed a proof; returns the good ones.
    fn judge_nodes(&mut self, period: u64, failed: &BTreeMap<PublicKey, u64>, events: &mut Vec<BillingEvent>) -> BTreeSet<PublicKey> {
        let judged: Vec<PublicKey> =
            self.nodes.iter().filter(|(_, n)| n.registered_period < period).map(|(k, _)| *k).collect();
        let mut good = BTreeSet::new();
        for key in judged {
            let Some(node) = self.node_mut(&key) else { continue };
            let up = node.last_uptime_period == Some(period);
            let missed = failed.get(&key).copied().unwrap_or(0);
            node.proofs_missed = node.proofs_missed.saturating_add(missed);
            let reason = match (up, missed > 0) {
                (true, false) => None,
                (false, false) => Some(MarkReason::MissedUptime),
                (true, true) => Some(MarkReason::FailedProof),
                (false, true) => Some(MarkReason::MissedUptimeAndFailedProof),
            };
            match reason {
                None => {
                    node.periods_good = node.periods_good.saturating_add(1);
                    good.insert(key);
                }
                Some(reason) => {
                    node.periods_marked = node.periods_marked.saturating_add(1);
                    node.last_mark = Some((period, reason));
                    events.push(BillingEvent::NodeMarked { node: key, period, reason });
                }
            }
        }
        good
    }

    /// What `id` owes for `period`, per paid node (the good ones only).
    fn dues(&self, id: ContractId, good: &BTreeSet<PublicKey>) -> Vec<(PublicKey, Amount)> {
        let Some(contract) = self.contracts.get(&id) else { return Vec::new() };
        match &contract.terms {
            ContractTerms::Workload { node, .. } => {
                if good.contains(node) {
                    alloc::vec![(*node, contract.price_per_hour)]
                } else {
                    Vec::new()
                }
            }
            ContractTerms::Storage { shards } => {
                // Shards is never empty (checked at creation); the remainder is not charged.
                let share = contract.price_per_hour / (shards.len().max(1) as u64);
                shards.iter().filter(|s| good.contains(&s.placement.node)).map(|s| (s.placement.node, share)).collect()
            }
        }
    }

    fn bill(&mut self, id: ContractId, period: u64, good: &BTreeSet<PublicKey>, events: &mut Vec<BillingEvent>) {
        let Some(owner) = self.contracts.get(&id).map(|c| c.owner) else { return };
        let dues = self.dues(id, good);
        let due: Amount = dues.iter().fold(0u64, |sum, (_, amount)| sum.saturating_add(*amount));
        if due == 0 {
            return;
        }
        let available = self.account(&owner).balance;
        if available < due {
            self.end_contract(id, ContractStatus::Unpaid(period));
            events.push(BillingEvent::ContractEnded { contract: id, period });
            return;
        }
        self.account_mut(&owner).balance = available - due;
        for (node, amount) in dues {
            let Some(farm_id) = self.nodes.get(&node).map(|n| n.farm) else { continue };
            let Some(farm) = self.farm_mut(farm_id) else { continue };
            farm.earned = farm.earned.saturating_add(amount);
            let farm_owner = farm.owner;
            let account = self.account_mut(&farm_owner);
            // Total supply is fixed at genesis (checked to fit), so this cannot saturate.
            account.balance = account.balance.saturating_add(amount);
        }
        if let Some(contract) = self.contract_mut(id) {
            contract.paid = contract.paid.saturating_add(due);
        }
        events.push(BillingEvent::Charged { contract: id, period, amount: due });
    }
}
