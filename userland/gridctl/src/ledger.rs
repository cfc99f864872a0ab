//! `gridctl ledger ...`: the grid's ledger, read and written through validators on the
//! overlay, trusting none of them.
//!
//! gridctl keeps the chain it trusts in its ledger folder (`~/.config/gridos/ledger` unless
//! `--ledger-dir`): `genesis.bin` (copied by `gridctl ledger trust`), `validators.txt` (where
//! to reach validators: `OVERLAYKEY@HOST:UDPPORT` per line) and `trusted.bin` (the last
//! header its light client accepted and the validator set that signs the next block).
//! Every answer is checked: blocks by `ledger::LightClient` (chain, parent, quorum of the
//! set it follows), records by their proof against the state root of a header it accepted.
//! A validator that lies is refused with an error; gridctl then tries the next one only for
//! transport failures, never to pick a more agreeable answer.
//!
//! The client logic ([`Ledger`]) is generic over a [`Transport`], so tests can put a
//! tampering transport between it and a real validator.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use ledger::rpc::{self, Request, Response};
use ledger::state::{Account, Contract, ContractStatus, ContractTerms, Farm, Meta, Node};
use ledger::{
    Amount, ContractId, Genesis, Header, Keypair, LightBlock, LightClient, PublicKey, Resources, ShardPlacement, StateKey, StateProof,
    Transaction, TxKind, ValidatorSet,
};
use serde_json::json;

use crate::key::UserKey;
use crate::target::Target;
use crate::tcp::OverlayTcp;
use crate::{bail, hex, parse_hex, Context, Error, Result};

/// Light blocks fetched while following the chain at most per command (about an hour of
/// one-second blocks beyond the trusted point is 3,600).
pub const FOLLOW_BLOCKS_MAX: u64 = 1_000_000;
/// Node keys listed at most.
pub const LIST_NODES_MAX: usize = 4096;
/// Contracts listed at most by default.
pub const LIST_CONTRACTS_DEFAULT: u64 = 50;

/// `gridctl ledger ...`
#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Trust a chain: copy its genesis and its validators' overlay addresses into the
    /// ledger folder (from `validator init`'s genesis.bin and validators.txt).
    Trust {
        /// The chain's genesis.bin.
        #[arg(long)]
        genesis: PathBuf,
        /// validators.txt (OVERLAYKEY@HOST:UDPPORT per line).
        #[arg(long)]
        validators: PathBuf,
    },
    /// Height, validators and last block time, verified.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An account's balance and nonce (yours by default), verified.
    Account {
        /// The account key (hex).
        #[arg(value_name = "KEY")]
        account: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// An account's balance (yours by default), verified.
    Balance {
        /// The account key (hex).
        #[arg(value_name = "KEY")]
        account: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send tokens from your account; waits until the block holding it is decided.
    Transfer {
        /// Receiver (hex key).
        to: String,
        /// Amount.
        amount: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Farms.
    #[command(subcommand)]
    Farm(FarmCommand),
    /// Registered nodes: capacity, uptime, proof record, each verified.
    Nodes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Contracts (newest first), each verified.
    Contracts {
        /// Only this owner's (hex key; `me` for yours).
        #[arg(long)]
        owner: Option<String>,
        /// How many contract ids to look at, from the newest.
        #[arg(long, default_value_t = LIST_CONTRACTS_DEFAULT)]
        limit: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel one of your contracts (workload or storage); waits until it is decided.
    Cancel {
        /// The contract id.
        id: u64,
    },
}

/// `gridctl ledger farm ...`
#[derive(Subcommand, Debug)]
pub enum FarmCommand {
    /// Create a farm owned by your key; prints its id.
    Create {
        /// Its name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One request, one answer.
pub trait Transport {
    /// Sends `request` and returns the validator's answer (unchecked).
    fn call(&mut self, request: &Request) -> Result<Response>;
}

/// A connection to one validator's client service on the overlay.
pub struct OverlayTransport {
    conn: OverlayTcp,
}

impl OverlayTransport {
    /// Links to `target` and connects to its ledger port.
    pub fn connect(target: &Target, timeout: Duration) -> Result<OverlayTransport> {
        Ok(OverlayTransport { conn: OverlayTcp::connect(target, rpc::PORT, timeout)? })
    }

    /// Closes the connection.
    pub fn close(self) {
        self.conn.close();
    }
}

impl Transport for OverlayTransport {
    fn call(&mut self, request: &Request) -> Result<Response> {
        let frame = rpc::request_frame(request);
        let limit = rpc::RESPONSE_BYTES_MAX + rpc::FRAME_HEAD_BYTES;
        let bytes = self.conn.exchange_until(&frame, limit, &mut |got| !matches!(rpc::take_response(got), Ok(None)))?;
        match rpc::take_response(&bytes) {
            Ok(Some((response, used))) if used == bytes.len() => Ok(response),
            Ok(Some(_)) => bail!("the validator sent more than one answer"),
            Ok(None) => bail!("the validator closed the connection before answering"),
            Err(e) => bail!("bad answer from the validator: {e}"),
        }
    }
}

/// What gridctl trusts, on disk.
#[derive(serde::Serialize, serde::Deserialize)]
struct Trusted {
    header: Header,
    validators: ValidatorSet,
}

/// The ledger folder.
pub fn ledger_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("GRIDCTL_LEDGER_DIR").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config/gridos/ledger")),
        None => bail!("no ledger folder: use --ledger-dir DIR, set GRIDCTL_LEDGER_DIR, or set HOME"),
    }
}

/// The validators named in `validators.txt`.
pub fn read_validators(path: &Path) -> Result<Vec<Target>> {
    let text = std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
    let targets: Vec<Target> = text.lines().filter(|l| !l.trim().is_empty()).map(Target::parse).collect::<Result<_>>()?;
    if targets.is_empty() {
        bail!("{} names no validator", path.display());
    }
    Ok(targets)
}

fn read_genesis(path: &Path) -> Result<Genesis> {
    let bytes = std::fs::read(path).context(|| format!("cannot read {}", path.display()))?;
    let genesis: Genesis = postcard::from_bytes(&bytes).map_err(|_| Error(format!("{} is not a genesis", path.display())))?;
    genesis.check().map_err(|e| Error(format!("{}: {e}", path.display())))?;
    Ok(genesis)
}

/// A light client with its transport.
pub struct Ledger<T: Transport> {
    /// The transport to a validator.
    pub transport: T,
    light: LightClient,
    genesis: Genesis,
    /// Where to save the trusted point (none in tests that keep it in memory).
    save_to: Option<PathBuf>,
}

fn refused(response: Response) -> Error {
    match response {
        Response::Refused(why) => Error(format!("the validator refused: {why}")),
        other => Error(format!("unexpected answer from the validator: {other:?}")),
    }
}

impl<T: Transport> Ledger<T> {
    /// Trusts `genesis`, or the saved point in `save_to` if there is one of this chain.
    pub fn new(genesis: Genesis, transport: T, save_to: Option<PathBuf>) -> Result<Ledger<T>> {
        let from_genesis = LightClient::from_genesis(&genesis).map_err(|e| Error(format!("genesis: {e}")))?;
        let saved = save_to.as_ref().and_then(|p| std::fs::read(p).ok()).and_then(|b| postcard::from_bytes::<Trusted>(&b).ok());
        let light = match saved {
            Some(t) if t.header.chain_id == genesis.chain_id() && t.header.height > 0 => {
                LightClient::from_trusted(t.header, t.validators).unwrap_or(from_genesis)
            }
            _ => from_genesis,
        };
        Ok(Ledger { transport, light, genesis, save_to })
    }

    /// The light client.
    pub fn light(&self) -> &LightClient {
        &self.light
    }

    /// The chain's genesis.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// Follows the chain to the validator's last decided height (or `height`, if given and
    /// lower); every block is checked by the light client.
    pub fn follow(&mut self, height: Option<u64>) -> Result<&Header> {
        let target = match height {
            Some(h) => h,
            None => match self.transport.call(&Request::Status)? {
                Response::Status { height, .. } => height,
                other => return Err(refused(other)),
            },
        };
        let start = self.light.latest().height;
        if target > start.saturating_add(FOLLOW_BLOCKS_MAX) {
            bail!("the validator claims height {target}, more than {FOLLOW_BLOCKS_MAX} blocks past the trusted {start}");
        }
        while self.light.latest().height < target {
            let from = self.light.latest().height + 1;
            let count = (target - from + 1).min(rpc::LIGHT_BLOCKS_PER_RESPONSE_MAX);
            let blocks = match self.transport.call(&Request::LightBlocks { from, count })? {
                Response::LightBlocks(blocks) => blocks,
                other => return Err(refused(other)),
            };
            if blocks.is_empty() || blocks.len() as u64 > count {
                bail!("the validator sent {} blocks for {count} from height {from}", blocks.len());
            }
            for block in &blocks {
                self.accept(block)?;
            }
        }
        self.save();
        Ok(self.light.latest())
    }

    fn accept(&mut self, block: &LightBlock) -> Result<()> {
        let height = block.header.height;
        self.light.accept(block).map_err(|e| Error(format!("block {height} refused by the light client: {e}")))
    }

    fn save(&self) {
        let Some(path) = &self.save_to else { return };
        let trusted = Trusted { header: self.light.latest().clone(), validators: self.light.validators().clone() };
        if let Ok(bytes) = postcard::to_allocvec(&trusted) {
            // Best effort: without it the next run starts again from the genesis.
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }

    /// A record and its proof, with the height of the root it is against (followed to).
    fn prove(&mut self, key: StateKey) -> Result<(u64, StateProof)> {
        let (height, proof) = match self.transport.call(&Request::Prove(key))? {
            Response::Proof { height, proof } => (height, proof),
            other => return Err(refused(other)),
        };
        if height > self.light.latest().height {
            self.follow(Some(height))?;
        }
        Ok((height, proof))
    }

    fn checked<R>(result: std::result::Result<R, ledger::ReadError>) -> Result<R> {
        result.map_err(|e| Error(format!("the validator's proof does not verify: {e}")))
    }

    /// An account, verified.
    pub fn account(&mut self, key: &PublicKey) -> Result<(u64, Account)> {
        let (height, proof) = self.prove(StateKey::Account(*key))?;
        Ok((height, Self::checked(self.light.account(height, key, &proof))?))
    }

    /// The chain-wide values, verified.
    pub fn meta(&mut self) -> Result<(u64, Meta)> {
        let (height, proof) = self.prove(StateKey::Meta)?;
        Ok((height, Self::checked(self.light.meta(height, &proof))?))
    }

    /// A farm, verified.
    pub fn farm(&mut self, id: u64) -> Result<Option<Farm>> {
        let (height, proof) = self.prove(StateKey::Farm(id))?;
        Self::checked(self.light.farm(height, id, &proof))
    }

    /// A node, verified.
    pub fn node(&mut self, key: &PublicKey) -> Result<Option<Node>> {
        let (height, proof) = self.prove(StateKey::Node(*key))?;
        Self::checked(self.light.node(height, key, &proof))
    }

    /// A contract, verified.
    pub fn contract(&mut self, id: u64) -> Result<Option<Contract>> {
        let (height, proof) = self.prove(StateKey::Contract(id))?;
        Self::checked(self.light.contract(height, id, &proof))
    }

    /// Registered node keys (a listing: each record is then proven on its own).
    pub fn node_keys(&mut self) -> Result<Vec<PublicKey>> {
        let mut all: Vec<PublicKey> = Vec::new();
        loop {
            let after = all.last().copied();
            let (keys, more) = match self.transport.call(&Request::NodeKeys { after })? {
                Response::NodeKeys { keys, more } => (keys, more),
                other => return Err(refused(other)),
            };
            if keys.len() > rpc::NODE_KEYS_PER_RESPONSE_MAX || keys.windows(2).any(|w| w[0] >= w[1]) || keys.first().is_some_and(|k| after.is_some_and(|a| *k <= a)) {
                bail!("the validator sent a node listing out of order");
            }
            let empty = keys.is_empty();
            all.extend(keys);
            if !more || empty {
                return Ok(all);
            }
            if all.len() >= LIST_NODES_MAX {
                bail!("more than {LIST_NODES_MAX} nodes");
            }
        }
    }

    /// Signs `kind` with `key` at its verified next nonce and submits it; returns the
    /// height of the durable block holding it, checked: the account's proven nonce moved.
    pub fn submit(&mut self, key: &Keypair, kind: TxKind) -> Result<u64> {
        let (_, account) = self.account(&key.public())?;
        let tx = Transaction { account: key.public(), nonce: account.nonce, kind }.sign(&self.genesis.chain_id(), key);
        let height = match self.transport.call(&Request::Submit(tx))? {
            Response::Committed(height) => height,
            other => return Err(refused(other)),
        };
        let (_, after) = self.account(&key.public())?;
        if after.nonce <= account.nonce {
            bail!("the validator said the transaction is in block {height}, but the proven account nonce is still {}", after.nonce);
        }
        Ok(height)
    }
}

/// Contract ids looked at after a submission to find the one it created (the contracts
/// created in the blocks between the two proven reads of the next id).
pub const CREATED_SCAN_MAX: u64 = 256;
/// Active contract ids read from one node's listing at most.
pub const NODE_CONTRACTS_MAX: usize = 4096;

/// Why a contract could not be created or used, found before anything is submitted (each
/// from a verified read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractError {
    /// The node is not registered on the ledger.
    UnknownNode(PublicKey),
    /// The owner's balance is below one period's price.
    NoTokens {
        /// One period's price.
        needed: u64,
        /// The verified balance.
        available: u64,
    },
    /// The node has not this much free (capacity minus what active contracts reserve).
    CapacityExceeded {
        /// The node.
        node: PublicKey,
        /// What is asked.
        asked: Resources,
        /// What is free.
        free: Resources,
    },
    /// `--contract ID` names no contract, or one that does not fit this deploy.
    Unusable(u64, String),
}

impl std::fmt::Display for ContractError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContractError::UnknownNode(node) => write!(
                f,
                "unknown node: {} is not registered on the ledger (a node registers itself at boot under gridos.farm=N; `gridctl nodes` lists the registered ones)",
                hex(node)
            ),
            ContractError::NoTokens { needed, available } => write!(
                f,
                "no tokens: the contract costs {needed} per period and your balance is {available} (get tokens with `gridctl ledger transfer` from a funded account)"
            ),
            ContractError::CapacityExceeded { node, asked, free } => write!(
                f,
                "capacity exceeded on node {}..: asked {} cores, {} MiB memory, {} KiB disk; free {} cores, {} MiB memory, {} KiB disk",
                hex(&node[..8]),
                asked.cores,
                asked.memory_bytes >> 20,
                asked.disk_bytes >> 10,
                free.cores,
                free.memory_bytes >> 20,
                free.disk_bytes >> 10
            ),
            ContractError::Unusable(id, why) => write!(f, "contract {id} cannot be used: {why}"),
        }
    }
}

impl From<ContractError> for Error {
    fn from(e: ContractError) -> Error {
        Error(e.to_string())
    }
}

/// What is free on a node: its capacity minus what its active workload contracts reserve.
pub fn free_resources(node: &Node) -> Resources {
    Resources {
        cores: node.capacity.cores.saturating_sub(node.reserved.cores),
        memory_bytes: node.capacity.memory_bytes.saturating_sub(node.reserved.memory_bytes),
        disk_bytes: node.capacity.disk_bytes().saturating_sub(node.reserved.disk_bytes),
    }
}

impl<T: Transport> Ledger<T> {
    /// Every registered node with its record, each verified (a listing, then proofs).
    pub fn nodes(&mut self) -> Result<Vec<(PublicKey, Node)>> {
        let keys = self.node_keys()?;
        let mut nodes = Vec::with_capacity(keys.len());
        for key in keys {
            match self.node(&key)? {
                Some(node) => nodes.push((key, node)),
                None => bail!("the validator listed node {} but proves it absent", hex(&key)),
            }
        }
        Ok(nodes)
    }

    /// Ids of the active contracts on `node`, at most [`NODE_CONTRACTS_MAX`] (a listing:
    /// read each with [`Ledger::contract`]).
    pub fn node_contracts(&mut self, node: &PublicKey) -> Result<Vec<ContractId>> {
        let mut all: Vec<ContractId> = Vec::new();
        loop {
            let after = all.last().copied();
            let (ids, more) = match self.transport.call(&Request::NodeContracts { node: *node, after })? {
                Response::ContractIds { ids, more } => (ids, more),
                other => return Err(refused(other)),
            };
            let out_of_order = ids.windows(2).any(|w| w[0] >= w[1]) || ids.first().is_some_and(|i| after.is_some_and(|a| *i <= a));
            if ids.len() > rpc::CONTRACT_IDS_PER_RESPONSE_MAX || out_of_order {
                bail!("the validator sent a contract listing out of order");
            }
            let empty = ids.is_empty();
            all.extend(ids);
            if !more || empty || all.len() >= NODE_CONTRACTS_MAX {
                all.truncate(NODE_CONTRACTS_MAX);
                return Ok(all);
            }
        }
    }

    /// Checks that `key` can pay one period of `price`, from its verified balance.
    fn check_tokens(&mut self, key: &PublicKey, price: Amount) -> Result<()> {
        let (_, account) = self.account(key)?;
        if account.balance < price {
            return Err(ContractError::NoTokens { needed: price, available: account.balance }.into());
        }
        Ok(())
    }

    /// Submits `kind` (which creates a contract) and finds the contract it created: the
    /// newest of the ids created meanwhile that `key` owns and that `fits`. Returns the id
    /// and the height of the block holding it.
    fn submit_creating(&mut self, key: &Keypair, kind: TxKind, fits: impl Fn(&Contract) -> bool) -> Result<(ContractId, u64)> {
        let (_, before) = self.meta()?;
        let height = self.submit(key, kind)?;
        let (_, after) = self.meta()?;
        let first = before.next_contract_id.max(after.next_contract_id.saturating_sub(CREATED_SCAN_MAX));
        for id in (first..after.next_contract_id).rev() {
            if self.contract(id)?.is_some_and(|c| c.owner == key.public() && fits(&c)) {
                return Ok((id, height));
            }
        }
        bail!("the contract is not in the proven state after block {height}")
    }

    /// Creates and pays a workload contract reserving `resources` on `node` at `price` per
    /// period, once checked against the verified node record (registered, room) and
    /// balance; returns its id and block once committed.
    pub fn create_workload_contract(&mut self, key: &Keypair, node: &PublicKey, resources: Resources, price: Amount) -> Result<(ContractId, u64)> {
        let record = self.node(node)?.ok_or(ContractError::UnknownNode(*node))?;
        let free = free_resources(&record);
        if resources.cores > free.cores || resources.memory_bytes > free.memory_bytes || resources.disk_bytes > free.disk_bytes {
            return Err(ContractError::CapacityExceeded { node: *node, asked: resources, free }.into());
        }
        self.check_tokens(&key.public(), price)?;
        let kind = TxKind::CreateWorkloadContract { node: *node, resources, price_per_hour: price };
        self.submit_creating(key, kind, |c| {
            c.status == ContractStatus::Active
                && matches!(&c.terms, ContractTerms::Workload { node: n, resources: r, .. } if n == node && *r == resources)
        })
    }

    /// Checks that contract `id` is an active workload contract of `owner` on `node` with
    /// room for `resources` (what a node on the ledger checks before it runs a deploy).
    pub fn check_workload_contract(&mut self, id: ContractId, owner: &PublicKey, node: &PublicKey, resources: Resources) -> Result<Contract> {
        let unusable = |why: String| Error::from(ContractError::Unusable(id, why));
        let contract = self.contract(id)?.ok_or_else(|| unusable("there is no such contract on the ledger".into()))?;
        if contract.owner != *owner {
            return Err(unusable(format!("it belongs to {}.., not to your key", hex(&contract.owner[..8]))));
        }
        if contract.status != ContractStatus::Active {
            return Err(unusable(format!("it ended ({:?})", contract.status)));
        }
        match &contract.terms {
            ContractTerms::Workload { node: n, resources: r, .. } => {
                if n != node {
                    return Err(unusable(format!("it is for node {}.., not this node", hex(&n[..8]))));
                }
                if resources.memory_bytes > r.memory_bytes || resources.disk_bytes > r.disk_bytes {
                    return Err(unusable(format!(
                        "it reserves {} MiB memory and {} KiB disk; the workload asks for {} MiB and {} KiB",
                        r.memory_bytes >> 20,
                        r.disk_bytes >> 10,
                        resources.memory_bytes >> 20,
                        resources.disk_bytes >> 10
                    )));
                }
            }
            ContractTerms::Storage { .. } => return Err(unusable("it is a storage contract".into())),
        }
        Ok(contract)
    }

    /// Creates and pays a storage contract naming `shards` (every node checked registered
    /// first) at `price` per period; returns its id and block once committed.
    pub fn create_storage_contract(&mut self, key: &Keypair, shards: Vec<ShardPlacement>, price: Amount) -> Result<(ContractId, u64)> {
        if shards.is_empty() || shards.len() > ledger::SHARDS_PER_CONTRACT_MAX {
            bail!("a storage contract names 1 to {} shards, not {}", ledger::SHARDS_PER_CONTRACT_MAX, shards.len());
        }
        let mut checked: Vec<PublicKey> = Vec::new();
        for s in &shards {
            if !checked.contains(&s.node) {
                self.node(&s.node)?.ok_or(ContractError::UnknownNode(s.node))?;
                checked.push(s.node);
            }
        }
        self.check_tokens(&key.public(), price)?;
        let wanted: Vec<ShardPlacement> = shards.clone();
        let kind = TxKind::CreateStorageContract { shards, price_per_hour: price };
        self.submit_creating(key, kind, |c| match &c.terms {
            ContractTerms::Storage { shards } => shards.len() == wanted.len() && shards.iter().zip(&wanted).all(|(s, w)| s.placement == *w),
            ContractTerms::Workload { .. } => false,
        })
    }

    /// Cancels `key`'s contract `id`; `Ok(false)` when it had ended already or is unknown.
    pub fn cancel_contract(&mut self, key: &Keypair, id: ContractId) -> Result<bool> {
        let Some(contract) = self.contract(id)? else { return Ok(false) };
        if contract.status != ContractStatus::Active {
            return Ok(false);
        }
        if contract.owner != key.public() {
            bail!("contract {id} is not yours");
        }
        let kind = match contract.terms {
            ContractTerms::Storage { .. } => TxKind::CancelStorageContract { contract: id },
            ContractTerms::Workload { .. } => TxKind::CancelWorkloadContract { contract: id },
        };
        self.submit(key, kind)?;
        Ok(true)
    }
}

/// Whether a ledger is configured in `dir` (`gridctl ledger trust` wrote its genesis there).
pub fn configured(dir: &Path) -> bool {
    dir.join("genesis.bin").is_file()
}

/// Connects to the first reachable validator named in the ledger folder `dir`.
pub fn connect(dir: &Path, timeout: Duration) -> Result<Ledger<OverlayTransport>> {
    let genesis = read_genesis(&dir.join("genesis.bin")).map_err(|e| Error(format!("{e} (run `gridctl ledger trust` first)")))?;
    let targets = read_validators(&dir.join("validators.txt"))?;
    let mut errors = Vec::new();
    for target in &targets {
        // Only reaching a validator falls through to the next; a lie is an error later.
        match OverlayTransport::connect(target, timeout) {
            Ok(transport) => return Ledger::new(genesis, transport, Some(dir.join("trusted.bin"))),
            Err(e) => errors.push(format!("{}..: {e}", hex(&target.key[..8]))),
        }
    }
    bail!("no validator reachable: {}", errors.join("; "))
}

fn parse_key(text: &str) -> Result<PublicKey> {
    parse_hex::<32>(text).ok_or_else(|| Error(format!("{text:?} is not a 64-digit hex key")))
}

/// The user's ledger key: the same ed25519 key as the gridctl key (so the owner of a
/// manifest is the owner of its contracts).
pub fn ledger_key(user: &UserKey) -> Result<Keypair> {
    let key = Keypair::try_from_seed(user.seed()).ok_or_else(|| Error("the key file holds a refused seed".into()))?;
    if key.public() != user.public_key() {
        bail!("internal: the ledger key and the gridctl key differ");
    }
    Ok(key)
}

fn json_out(out: &mut dyn Write, value: serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(&value).context(|| "cannot encode JSON".into())?;
    writeln!(out, "{text}").context(|| "cannot write output".into())
}

fn node_json(key: &PublicKey, node: &Node) -> serde_json::Value {
    json!({
        "key": hex(key),
        "farm": node.farm,
        "capacity": {
            "cores": node.capacity.cores,
            "memory_bytes": node.capacity.memory_bytes,
            "disks_bytes": node.capacity.disks_bytes,
            "nics": node.capacity.nics,
        },
        "reserved": { "cores": node.reserved.cores, "memory_bytes": node.reserved.memory_bytes, "disk_bytes": node.reserved.disk_bytes },
        "uptime": {
            "last_report_period": node.last_uptime_period,
            "last_uptime_secs": node.last_uptime_secs,
            "periods_good": node.periods_good,
            "periods_marked": node.periods_marked,
        },
        "proofs": { "ok": node.proofs_ok, "missed": node.proofs_missed },
        "last_mark": node.last_mark.map(|(period, reason)| json!({ "period": period, "reason": format!("{reason:?}") })),
    })
}

fn contract_json(id: u64, c: &Contract) -> serde_json::Value {
    let (kind, detail) = match &c.terms {
        ContractTerms::Workload { node, resources, .. } => (
            "workload",
            json!({ "node": hex(node), "cores": resources.cores, "memory_bytes": resources.memory_bytes, "disk_bytes": resources.disk_bytes }),
        ),
        ContractTerms::Storage { shards } => ("storage", json!({ "shards": shards.len(), "nodes": shards.iter().map(|s| hex(&s.placement.node)).collect::<Vec<_>>() })),
    };
    json!({
        "id": id,
        "kind": kind,
        "owner": hex(&c.owner),
        "price_per_hour": c.price_per_hour,
        "created_period": c.created_period,
        "status": format!("{:?}", c.status),
        "active": matches!(c.status, ContractStatus::Active),
        "paid": c.paid,
        "terms": detail,
    })
}

fn time_string(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Runs `command` against a connected ledger.
pub fn run_with<T: Transport>(ledger: &mut Ledger<T>, command: LedgerCommand, user: Option<&UserKey>, out: &mut dyn Write) -> Result<()> {
    let w = |r: std::io::Result<()>| r.context(|| "cannot write output".into());
    let me = || -> Result<PublicKey> {
        user.map(|u| u.public_key()).ok_or_else(|| Error("no key: give an account key or make one with `gridctl key new`".into()))
    };
    let signer = || -> Result<Keypair> { user.ok_or_else(|| Error("this needs your key (`gridctl key new`)".into())).and_then(ledger_key) };
    match command {
        LedgerCommand::Trust { .. } => bail!("trust needs no validator"),
        LedgerCommand::Status { json } => {
            let header = ledger.follow(None)?.clone();
            let validators = ledger.light().validators().clone();
            if json {
                return json_out(out, json!({
                    "chain_id": hex(&header.chain_id),
                    "chain_name": ledger.genesis().chain_name,
                    "height": header.height,
                    "last_block_time_ms": header.time_ms,
                    "block_hash": hex(&header.hash()),
                    "state_root": hex(&header.state_root),
                    "validators": validators.validators().iter().map(|v| json!({ "key": hex(&v.key), "power": v.power })).collect::<Vec<_>>(),
                    "verified": true,
                }));
            }
            w((|| {
                writeln!(out, "chain            {} ({}..)", ledger.genesis().chain_name, hex(&header.chain_id[..8]))?;
                writeln!(out, "height           {} (verified: quorum of the validator set)", header.height)?;
                writeln!(out, "last block time  {}", time_string(header.time_ms))?;
                writeln!(out, "block hash       {}", hex(&header.hash()))?;
                writeln!(out, "state root       {}", hex(&header.state_root))?;
                writeln!(out, "validators       {} (total power {})", validators.validators().len(), validators.total_power())?;
                for v in validators.validators() {
                    writeln!(out, "  {}  power {}", hex(&v.key), v.power)?;
                }
                Ok(())
            })())
        }
        LedgerCommand::Account { account, json } => {
            let key = account.as_deref().map(parse_key).unwrap_or_else(me)?;
            let (height, account) = ledger.account(&key)?;
            if json {
                return json_out(out, json!({ "account": hex(&key), "height": height, "balance": account.balance, "nonce": account.nonce, "verified": true }));
            }
            w(writeln!(out, "account {}\nbalance {}\nnonce   {}\n(verified at height {height})", hex(&key), account.balance, account.nonce))
        }
        LedgerCommand::Balance { account, json } => {
            let key = account.as_deref().map(parse_key).unwrap_or_else(me)?;
            let (height, account) = ledger.account(&key)?;
            if json {
                return json_out(out, json!({ "account": hex(&key), "height": height, "balance": account.balance, "verified": true }));
            }
            w(writeln!(out, "{}", account.balance))
        }
        LedgerCommand::Transfer { to, amount, json } => {
            let to = parse_key(&to)?;
            let key = signer()?;
            let height = ledger.submit(&key, TxKind::Transfer { to, amount })?;
            let (_, account) = ledger.account(&key.public())?;
            if json {
                return json_out(out, json!({ "to": hex(&to), "amount": amount, "height": height, "balance": account.balance, "verified": true }));
            }
            w(writeln!(out, "sent {amount} to {} in block {height}; your balance is {} (verified)", hex(&to), account.balance))
        }
        LedgerCommand::Farm(FarmCommand::Create { name, json }) => {
            let key = signer()?;
            let height = ledger.submit(&key, TxKind::CreateFarm { name: name.clone() })?;
            let (_, meta) = ledger.meta()?;
            // The newest farm of ours with this name (bounded look back).
            let mut found = None;
            for id in (meta.next_farm_id.saturating_sub(64)..meta.next_farm_id).rev() {
                if ledger.farm(id)?.is_some_and(|f| f.owner == key.public() && f.name == name) {
                    found = Some(id);
                    break;
                }
            }
            let Some(id) = found else { bail!("the farm is not in the proven state after block {height}") };
            if json {
                return json_out(out, json!({ "farm": id, "name": name, "height": height, "verified": true }));
            }
            w(writeln!(out, "farm {id} ({name}) created in block {height} (verified)"))
        }
        LedgerCommand::Nodes { json } => {
            let keys = ledger.node_keys()?;
            let mut nodes = Vec::new();
            for key in keys {
                match ledger.node(&key)? {
                    Some(node) => nodes.push((key, node)),
                    None => bail!("the validator listed node {} but proves it absent", hex(&key)),
                }
            }
            let height = ledger.light().latest().height;
            if json {
                return json_out(out, json!({ "height": height, "nodes": nodes.iter().map(|(k, n)| node_json(k, n)).collect::<Vec<_>>(), "verified": true }));
            }
            w((|| {
                writeln!(out, "{} node(s) at height {height} (each verified)", nodes.len())?;
                for (key, n) in &nodes {
                    writeln!(
                        out,
                        "{}  farm {}  {} cores  {} MiB  {} GiB disk  {} nics  uptime {} s  periods good {} marked {}  proofs ok {} missed {}",
                        hex(key),
                        n.farm,
                        n.capacity.cores,
                        n.capacity.memory_bytes >> 20,
                        n.capacity.disk_bytes() >> 30,
                        n.capacity.nics,
                        n.last_uptime_secs,
                        n.periods_good,
                        n.periods_marked,
                        n.proofs_ok,
                        n.proofs_missed
                    )?;
                }
                Ok(())
            })())
        }
        LedgerCommand::Cancel { id } => {
            let key = signer()?;
            if ledger.cancel_contract(&key, id)? {
                w(writeln!(out, "contract {id} cancelled (verified)"))
            } else {
                bail!("contract {id} is not active (unknown, or ended already)")
            }
        }
        LedgerCommand::Contracts { owner, limit, json } => {
            let owner = match owner.as_deref() {
                Some("me") => Some(me()?),
                Some(text) => Some(parse_key(text)?),
                None => None,
            };
            let (height, meta) = ledger.meta()?;
            let mut contracts = Vec::new();
            for id in (meta.next_contract_id.saturating_sub(limit)..meta.next_contract_id).rev() {
                match ledger.contract(id)? {
                    Some(c) if owner.is_none_or(|o| o == c.owner) => contracts.push((id, c)),
                    Some(_) => {}
                    None => bail!("contract {id} is below the proven next id {} but proven absent", meta.next_contract_id),
                }
            }
            if json {
                return json_out(out, json!({ "height": height, "contracts": contracts.iter().map(|(id, c)| contract_json(*id, c)).collect::<Vec<_>>(), "verified": true }));
            }
            w((|| {
                writeln!(out, "{} contract(s) at height {height} (each verified)", contracts.len())?;
                for (id, c) in &contracts {
                    let what = match &c.terms {
                        ContractTerms::Workload { node, .. } => format!("workload on {}..", hex(&node[..8])),
                        ContractTerms::Storage { shards } => format!("storage, {} shards", shards.len()),
                    };
                    writeln!(out, "{id}  {what}  owner {}..  {}/hour  paid {}  {:?}", hex(&c.owner[..8]), c.price_per_hour, c.paid, c.status)?;
                }
                Ok(())
            })())
        }
    }
}

/// `gridctl ledger ...` on the validators of the ledger folder.
pub fn run(command: LedgerCommand, dir: &Path, user_key: &Path, timeout: Duration, out: &mut dyn Write) -> Result<()> {
    if let LedgerCommand::Trust { genesis, validators } = &command {
        let g = read_genesis(genesis)?;
        read_validators(validators)?;
        std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
        std::fs::copy(genesis, dir.join("genesis.bin")).context(|| "cannot copy the genesis".into())?;
        std::fs::copy(validators, dir.join("validators.txt")).context(|| "cannot copy validators.txt".into())?;
        let _ = std::fs::remove_file(dir.join("trusted.bin"));
        return writeln!(out, "trusting chain {} ({}..) in {}", g.chain_name, hex(&g.chain_id()[..8]), dir.display())
            .context(|| "cannot write output".into());
    }
    let user = UserKey::load(user_key).ok();
    let mut ledger = connect(dir, timeout)?;
    let result = run_with(&mut ledger, command, user.as_ref(), out);
    ledger.transport.close();
    result
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn times_print_as_utc() {
        assert_eq!(time_string(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time_string(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(time_string(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
