//! One transaction against the state (its signature already checked by the caller).
//! Handlers check before they change; a failure midway is undone by the journal anyway.

use alloc::vec::Vec;

use super::{Contract, ContractStatus, ContractTerms, Farm, Node, State, StoredShard, TxOutcome};
use crate::crypto::PublicKey;
use crate::error::TxError;
use crate::tx::{Amount, Capacity, ProofData, Resources, ShardPlacement, SignedTx, TxKind, Usage};
use crate::{ContractId, FarmId};

impl State {
    pub(super) fn apply_tx(&mut self, signed: &SignedTx) -> Result<TxOutcome, TxError> {
        let tx = &signed.tx;
        let signer = tx.account;
        let expected = self.account(&signer).nonce;
        if tx.nonce != expected {
            return Err(TxError::BadNonce { expected, got: tx.nonce });
        }
        let next = expected.checked_add(1).ok_or(TxError::Overflow)?;
        self.account_mut(&signer).nonce = next;
        match &tx.kind {
            TxKind::CreateFarm { name } => {
                let id = self.meta.next_farm_id;
                self.meta_mut().next_farm_id = id.checked_add(1).ok_or(TxError::Overflow)?;
                self.farm_insert(id, Farm { owner: signer, name: name.clone(), nodes: 0, earned: 0 });
                Ok(TxOutcome::FarmCreated(id))
            }
            TxKind::RegisterNode { node, farm, capacity } => self.register_node(signer, *node, *farm, capacity),
            TxKind::UpdateCapacity { node, capacity } => self.update_capacity(signer, node, capacity),
            TxKind::UptimeReport { uptime_secs } => {
                let period = self.meta.period;
                let record = self.node_mut(&signer).ok_or(TxError::UnknownNode(signer))?;
                record.last_uptime_period = Some(period);
                record.last_uptime_secs = *uptime_secs;
                Ok(TxOutcome::Done)
            }
            TxKind::Transfer { to, amount } => self.transfer(signer, to, *amount),
            TxKind::CreateWorkloadContract { node, resources, price_per_hour } => {
                self.create_workload(signer, node, *resources, *price_per_hour)
            }
            TxKind::CancelWorkloadContract { contract } => self.cancel(signer, *contract, false),
            TxKind::CreateStorageContract { shards, price_per_hour } => self.create_storage(signer, shards, *price_per_hour),
            TxKind::CancelStorageContract { contract } => self.cancel(signer, *contract, true),
            TxKind::StorageProof { contract, shard, proof } => self.storage_proof(signer, *contract, *shard, proof),
            TxKind::UsageReport { contract, period, usage } => self.usage_report(signer, *contract, *period, usage),
            TxKind::SetValidators { validators } => {
                if signer != self.meta.governance {
                    return Err(TxError::NotAuthorized);
                }
                let set = crate::block::ValidatorSet::new(validators.clone())
                    .map_err(|_| TxError::Invalid("validator set"))?;
                self.meta_mut().pending_validators = Some(set);
                Ok(TxOutcome::Done)
            }
        }
    }

    fn register_node(&mut self, signer: PublicKey, node: PublicKey, farm: FarmId, capacity: &Capacity) -> Result<TxOutcome, TxError> {
        let record = self.farms.get(&farm).ok_or(TxError::UnknownFarm(farm))?;
        // The farm's owner, or the node itself at its first boot (it names the farm its
        // farmer configured; whatever it earns is paid to that farm's owner).
        if record.owner != signer && node != signer {
            return Err(TxError::NotAuthorized);
        }
        if self.nodes.contains_key(&node) {
            return Err(TxError::NodeExists(node));
        }
        let farm_record = self.farm_mut(farm).ok_or(TxError::UnknownFarm(farm))?;
        farm_record.nodes = farm_record.nodes.checked_add(1).ok_or(TxError::Overflow)?;
        let record = Node {
            farm,
            capacity: capacity.clone(),
            reserved: Resources::default(),
            registered_period: self.meta.period,
            last_uptime_period: None,
            last_uptime_secs: 0,
            periods_good: 0,
            periods_marked: 0,
            proofs_ok: 0,
            proofs_missed: 0,
            last_mark: None,
        };
        self.node_insert(node, record);
        Ok(TxOutcome::Done)
    }

    fn update_capacity(&mut self, signer: PublicKey, node: &PublicKey, capacity: &Capacity) -> Result<TxOutcome, TxError> {
        let record = self.nodes.get(node).ok_or(TxError::UnknownNode(*node))?;
        let farm_owner = self.farms.get(&record.farm).map(|f| f.owner);
        if signer != *node && Some(signer) != farm_owner {
            return Err(TxError::NotAuthorized);
        }
        let record = self.node_mut(node).ok_or(TxError::UnknownNode(*node))?;
        record.capacity = capacity.clone();
        Ok(TxOutcome::Done)
    }

    fn transfer(&mut self, signer: PublicKey, to: &PublicKey, amount: Amount) -> Result<TxOutcome, TxError> {
        if amount == 0 {
            return Err(TxError::Invalid("amount"));
        }
        let available = self.account(&signer).balance;
        let left = available.checked_sub(amount).ok_or(TxError::InsufficientBalance { needed: amount, available })?;
        self.account_mut(&signer).balance = left;
        let receiver = self.account_mut(to);
        receiver.balance = receiver.balance.checked_add(amount).ok_or(TxError::Overflow)?;
        Ok(TxOutcome::Done)
    }

    fn check_can_pay(&self, signer: &PublicKey, price: Amount) -> Result<(), TxError> {
        let available = self.account(signer).balance;
        if available < price {
            return Err(TxError::InsufficientBalance { needed: price, available });
        }
        Ok(())
    }

    fn new_contract(&mut self, owner: PublicKey, price_per_hour: Amount, terms: ContractTerms) -> Result<TxOutcome, TxError> {
        let id = self.meta.next_contract_id;
        let created_period = self.meta.period;
        self.meta_mut().next_contract_id = id.checked_add(1).ok_or(TxError::Overflow)?;
        let contract = Contract { owner, price_per_hour, created_period, status: ContractStatus::Active, paid: 0, terms };
        self.contract_insert(id, contract);
        Ok(TxOutcome::ContractCreated(id))
    }

    fn create_workload(&mut self, signer: PublicKey, node: &PublicKey, resources: Resources, price: Amount) -> Result<TxOutcome, TxError> {
        let record = self.nodes.get(node).ok_or(TxError::UnknownNode(*node))?;
        let reserved = add_resources(&record.reserved, &resources).ok_or(TxError::CapacityExceeded)?;
        let capacity = &record.capacity;
        if reserved.cores > capacity.cores
            || reserved.memory_bytes > capacity.memory_bytes
            || reserved.disk_bytes > capacity.disk_bytes()
        {
            return Err(TxError::CapacityExceeded);
        }
        self.check_can_pay(&signer, price)?;
        if let Some(record) = self.node_mut(node) {
            record.reserved = reserved;
        }
        let terms = ContractTerms::Workload { node: *node, resources, usage_total: Usage::default(), last_usage_period: None };
        self.new_contract(signer, price, terms)
    }

    fn create_storage(&mut self, signer: PublicKey, shards: &[ShardPlacement], price: Amount) -> Result<TxOutcome, TxError> {
        if let Some(unknown) = shards.iter().find(|s| !self.nodes.contains_key(&s.node)) {
            return Err(TxError::UnknownNode(unknown.node));
        }
        self.check_can_pay(&signer, price)?;
        let shards: Vec<StoredShard> =
            shards.iter().map(|p| StoredShard { placement: p.clone(), last_proven_period: None }).collect();
        self.new_contract(signer, price, ContractTerms::Storage { shards })
    }

    fn cancel(&mut self, signer: PublicKey, id: ContractId, storage: bool) -> Result<TxOutcome, TxError> {
        let contract = self.contracts.get(&id).ok_or(TxError::UnknownContract(id))?;
        if contract.owner != signer {
            return Err(TxError::NotAuthorized);
        }
        if matches!(contract.terms, ContractTerms::Storage { .. }) != storage {
            return Err(TxError::WrongContractKind(id));
        }
        if contract.status != ContractStatus::Active {
            return Err(TxError::ContractEnded(id));
        }
        let period = self.meta.period;
        self.end_contract(id, ContractStatus::Cancelled(period));
        Ok(TxOutcome::Done)
    }

    /// Ends an active contract and releases what it reserved.
    pub(super) fn end_contract(&mut self, id: ContractId, status: ContractStatus) {
        let Some(contract) = self.contract_mut(id) else { return };
        contract.status = status;
        let release = match &contract.terms {
            ContractTerms::Workload { node, resources, .. } => Some((*node, *resources)),
            ContractTerms::Storage { .. } => None,
        };
        self.set_active(id, false);
        if let Some((node, resources)) = release {
            if let Some(record) = self.node_mut(&node) {
                record.reserved = sub_resources(&record.reserved, &resources);
            }
        }
    }

    fn storage_proof(&mut self, signer: PublicKey, id: ContractId, shard: u32, proof: &ProofData) -> Result<TxOutcome, TxError> {
        let contract = self.contracts.get(&id).ok_or(TxError::UnknownContract(id))?;
        if contract.status != ContractStatus::Active {
            return Err(TxError::ContractEnded(id));
        }
        let ContractTerms::Storage { shards } = &contract.terms else {
            return Err(TxError::WrongContractKind(id));
        };
        let stored = shards.get(shard as usize).ok_or(TxError::UnknownShard(shard))?;
        if stored.placement.node != signer {
            return Err(TxError::NotAuthorized);
        }
        let period = self.meta.period;
        if stored.last_proven_period == Some(period) {
            return Err(TxError::AlreadyProven);
        }
        let challenge = super::storage_challenge(&self.meta.period_seed, id, shard);
        let answer = shardstore::StorageProof { chunk_index: proof.chunk_index, chunk: proof.chunk.clone(), path: proof.path.clone() };
        if !shardstore::verify_proof(&stored.placement.merkle_root, stored.placement.len_bytes, challenge, &answer) {
            return Err(TxError::ProofInvalid);
        }
        if let Some(Contract { terms: ContractTerms::Storage { shards }, .. }) = self.contract_mut(id) {
            if let Some(stored) = shards.get_mut(shard as usize) {
                stored.last_proven_period = Some(period);
            }
        }
        if let Some(node) = self.node_mut(&signer) {
            node.proofs_ok = node.proofs_ok.saturating_add(1);
        }
        Ok(TxOutcome::Done)
    }

    fn usage_report(&mut self, signer: PublicKey, id: ContractId, period: u64, usage: &Usage) -> Result<TxOutcome, TxError> {
        let contract = self.contracts.get(&id).ok_or(TxError::UnknownContract(id))?;
        let ContractTerms::Workload { node, last_usage_period, .. } = &contract.terms else {
            return Err(TxError::WrongContractKind(id));
        };
        if *node != signer {
            return Err(TxError::NotAuthorized);
        }
        let stale = last_usage_period.is_some_and(|last| period <= last);
        if period > self.meta.period || period < contract.created_period || stale {
            return Err(TxError::StalePeriod { period });
        }
        if let Some(Contract { terms: ContractTerms::Workload { usage_total, last_usage_period, .. }, .. }) =
            self.contract_mut(id)
        {
            *usage_total = add_usage(usage_total, usage);
            *last_usage_period = Some(period);
        }
        Ok(TxOutcome::Done)
    }
}

fn add_resources(a: &Resources, b: &Resources) -> Option<Resources> {
    Some(Resources {
        cores: a.cores.checked_add(b.cores)?,
        memory_bytes: a.memory_bytes.checked_add(b.memory_bytes)?,
        disk_bytes: a.disk_bytes.checked_add(b.disk_bytes)?,
    })
}

fn sub_resources(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cores: a.cores.saturating_sub(b.cores),
        memory_bytes: a.memory_bytes.saturating_sub(b.memory_bytes),
        disk_bytes: a.disk_bytes.saturating_sub(b.disk_bytes),
    }
}

fn add_usage(a: &Usage, b: &Usage) -> Usage {
    Usage {
        cpu_ms: a.cpu_ms.saturating_add(b.cpu_ms),
        memory_peak_bytes: a.memory_peak_bytes.max(b.memory_peak_bytes),
        disk_bytes: b.disk_bytes,
        net_rx_bytes: a.net_rx_bytes.saturating_add(b.net_rx_bytes),
        net_tx_bytes: a.net_tx_bytes.saturating_add(b.net_tx_bytes),
    }
}
