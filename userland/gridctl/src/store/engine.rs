//! The store commands over a [`Pool`] of nodes, independent of how nodes are reached
//! (the network in `gridctl`, memory in tests): discovery, put, get, verify, repair, rm.
//! Encryption, erasure coding and manifests are `files`'; this module picks nodes, moves
//! shards, checks what nodes answer against the manifest, and reports.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use files::stream::{Getter, Putter, ShardSink, ShardSource};
use files::{EncodedSegment, Manifest, Params, SegmentEntry, ShardRef};
use serde::Serialize;

use super::contracts::{self, StoreLedger, CONTRACT_VISIBLE_WAIT};
use super::nodes::{NodeError, NodeKey, Op, Out, Pool, Room, NODES_MAX};
use super::placement;
use ledger::{Amount, ContractId, ShardPlacement};
use crate::{hex, Error, Result};

/// Copies of the sealed manifest stored at put and repair (fewer when fewer nodes).
pub const MANIFEST_COPIES: usize = 5;
/// Challenges per shard in `verify` and `repair`.
pub const CHALLENGES_PER_SHARD: usize = 2;

/// The user as the store sees them: the secret seed (file keys, manifest key) and the
/// public key (the owner of the shards, named in storage challenges).
#[derive(Clone, Copy)]
pub struct Owner {
    /// Secret seed.
    pub seed: [u8; 32],
    /// Public key.
    pub public_key: [u8; 32],
}

/// Something to show the user while shards move (a progress bar, or nothing).
pub trait Progress {
    /// Sets the total.
    fn start(&self, what: &str, total: u64);
    /// Adds done units.
    fn advance(&self, done: u64);
    /// Ends the display.
    fn finish(&self);
}

/// No progress display.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// The nodes a command can use, fastest first, and what discovery met.
#[derive(Clone, Debug, Default)]
pub struct Nodes {
    /// Nodes that answered, with the user's room on each, fastest first.
    pub usable: Vec<(NodeKey, Room)>,
    /// Nodes that did not answer, and why.
    pub down: Vec<(NodeKey, String)>,
    /// Peers skipped (no key known, or beyond the limit).
    pub skipped: usize,
    /// The nodes discovery started from.
    pub seeds: Vec<NodeKey>,
    /// Whether the seeds' peers were asked for too.
    pub peers_asked: bool,
}

impl Nodes {
    /// The usable nodes' keys.
    pub fn keys(&self) -> Vec<NodeKey> {
        self.usable.iter().map(|(k, _)| *k).collect()
    }
}

/// Finds the nodes: asks each of `seeds` for the user's room and, with `with_peers`, its
/// peers, then probes every peer with a known key for the room. Nodes that answer are
/// usable. (A peer may be no node: another user's client the seed routes to. Probes give
/// up on those quickly.)
pub fn discover(pool: &mut Pool, seeds: &[NodeKey], with_peers: bool) -> Nodes {
    let mut nodes = Nodes { seeds: seeds.to_vec(), peers_asked: with_peers, ..Nodes::default() };
    let mut known: Vec<NodeKey> = Vec::new();
    let mut jobs = Vec::new();
    for s in seeds.iter().take(NODES_MAX) {
        if !known.contains(s) {
            known.push(*s);
            jobs.push((*s, Op::Room));
            if with_peers {
                jobs.push((*s, Op::Peers));
            }
        }
    }
    let mut rooms: Vec<(NodeKey, std::result::Result<Room, String>)> = Vec::new();
    let mut candidates = Vec::new();
    for (node, result) in pool.run_all(jobs) {
        match result {
            Ok(Out::Room(room)) => rooms.push((node, Ok(room))),
            Ok(Out::Peers(peers)) => {
                for p in peers {
                    match p.key {
                        // gridctl's own connections (this one's and others'): not nodes.
                        Some(k) if crate::client::is_one_off_client_key(&k) => {}
                        Some(k) if !known.contains(&k) && !candidates.contains(&k) => candidates.push(k),
                        Some(_) => {}
                        None => nodes.skipped += 1,
                    }
                }
            }
            Ok(other) => rooms.push((node, Err(format!("unexpected answer {other:?}")))),
            Err(e) => {
                if !rooms.iter().any(|(n, _)| *n == node) {
                    rooms.push((node, Err(e.to_string())));
                }
            }
        }
    }
    let room_limit = NODES_MAX.saturating_sub(known.len());
    if candidates.len() > room_limit {
        nodes.skipped += candidates.len() - room_limit;
        candidates.truncate(room_limit);
    }
    let jobs: Vec<(NodeKey, Op)> = candidates.iter().map(|k| (*k, Op::Probe)).collect();
    for (node, result) in pool.run_all(jobs) {
        match result {
            Ok(Out::Room(room)) => rooms.push((node, Ok(room))),
            Ok(other) => rooms.push((node, Err(format!("unexpected answer {other:?}")))),
            // A peer that is not a node (another user's client) or is gone: not usable,
            // and not worth a line unless it was named.
            Err(e) => rooms.push((node, Err(e.to_string()))),
        }
    }
    for (node, room) in rooms {
        match room {
            Ok(r) => nodes.usable.push((node, r)),
            Err(why) => nodes.down.push((node, why)),
        }
    }
    nodes.usable.sort_by_key(|(k, _)| (pool.latency(k).unwrap_or_default(), *k));
    nodes
}

/// Sends `op` to `node` and waits.
fn one(pool: &mut Pool, node: NodeKey, op: Op) -> std::result::Result<Out, NodeError> {
    pool.run_all(vec![(node, op)]).pop().map(|(_, r)| r).unwrap_or(Err(NodeError::Unreachable("no answer".into())))
}

/// What `put` did.
#[derive(Clone, Debug, Serialize)]
pub struct PutReport {
    /// The file id.
    pub id: String,
    /// The name recorded.
    pub name: String,
    /// Bytes stored.
    pub size: u64,
    /// K.
    pub data_shards: u8,
    /// M.
    pub parity_shards: u8,
    /// Segments.
    pub segments: u64,
    /// Nodes holding at least one shard.
    pub nodes: Vec<String>,
    /// Nodes holding a copy of the manifest.
    pub manifest_copies: usize,
    /// With a ledger: the storage contracts of the file's shards (recorded in the manifest).
    pub contracts: Vec<u64>,
    /// With a ledger: the contract of the manifest's copies.
    pub manifest_contract: Option<u64>,
    /// Plain sentences about choices made (fewer shards, failovers...).
    pub notes: Vec<String>,
}

/// Paying for storage on the ledger: the session and the price per started MiB.
pub struct Pay<'a> {
    /// The ledger.
    pub ledger: &'a mut dyn StoreLedger,
    /// Price per period per started MiB of shards.
    pub price_per_mib: Amount,
    /// Contracts created so far by this command.
    pub created: Vec<ContractId>,
}

impl Pay<'_> {
    /// Creates and pays a contract for `shards`.
    fn create(&mut self, shards: Vec<ShardPlacement>) -> Result<ContractId> {
        let price = contracts::storage_price(&shards, self.price_per_mib);
        let id = self.ledger.create(shards, price)?;
        self.created.push(id);
        Ok(id)
    }
}

/// The contract placement of a shard.
fn placement_of(r: &ShardRef) -> ShardPlacement {
    ShardPlacement { node: r.node, key: r.key, merkle_root: r.merkle_root, len_bytes: r.len }
}

struct PutSink<'a, 'b, 'p> {
    pool: &'a mut Pool,
    nodes: Vec<NodeKey>,
    avoid: Vec<NodeKey>,
    notes: Vec<String>,
    progress: &'a dyn Progress,
    /// With a ledger: each segment's nodes as planned (and paid for) in the first pass.
    plan: Option<Vec<Vec<NodeKey>>>,
    pay: Option<&'b mut Pay<'p>>,
}

/// Seconds between tries of a put a node refused for want of a contract it has not seen yet.
const CONTRACT_RETRY: Duration = Duration::from_secs(1);

impl ShardSink for PutSink<'_, '_, '_> {
    type Error = String;

    fn put_segment(&mut self, segment: &EncodedSegment, refs: &mut [ShardRef]) -> std::result::Result<(), String> {
        let live: Vec<NodeKey> = self.nodes.iter().filter(|n| !self.avoid.contains(n)).copied().collect();
        let mut targets = match &self.plan {
            Some(plan) => plan.get(segment.index as usize).cloned().unwrap_or_default(),
            None => placement::segment_nodes(&live, segment.index, segment.shards.len()),
        };
        if targets.len() < segment.shards.len() {
            return Err("no node left to take shards".into());
        }
        let shards: Vec<Arc<Vec<u8>>> = segment.shards.iter().map(|s| Arc::new(s.clone())).collect();
        let mut pending: Vec<usize> = (0..shards.len()).collect();
        let started = Instant::now();
        // Each round either finishes shards, rules out a node, or waits a second for nodes
        // to see a new contract: bounded by the nodes and the wait.
        let waits = (CONTRACT_VISIBLE_WAIT.as_secs() + 1) as usize;
        for _ in 0..=self.nodes.len() + waits {
            if pending.is_empty() {
                break;
            }
            let jobs = pending.iter().map(|&i| (targets[i], Op::Put(Arc::clone(&shards[i])))).collect();
            let results = self.pool.run_all(jobs);
            let mut failed = Vec::new();
            let mut waiting = Vec::new();
            for (&i, (node, result)) in pending.iter().zip(results) {
                match result {
                    Ok(Out::Put(meta)) if meta.key == refs[i].key && meta.len == refs[i].len && meta.merkle_root == refs[i].merkle_root => {
                        refs[i].node = node;
                        self.progress.advance(refs[i].len);
                    }
                    Ok(Out::Put(_)) => {
                        return Err(format!("node {} stored shard {i} of segment {} with another hash or root", short(&node), segment.index))
                    }
                    Ok(other) => return Err(format!("unexpected answer {other:?}")),
                    Err(NodeError::Refused(why)) if self.pay.is_some() && contracts::is_no_contract(&why) && started.elapsed() < CONTRACT_VISIBLE_WAIT => {
                        waiting.push(i);
                    }
                    Err(e) => {
                        self.notes.push(format!("node {} failed a shard of segment {} ({e}); placing it elsewhere", short(&node), segment.index));
                        if !self.avoid.contains(&node) {
                            self.avoid.push(node);
                        }
                        failed.push(i);
                    }
                }
            }
            for &i in &failed {
                let holding: Vec<NodeKey> = targets.iter().enumerate().filter(|(j, _)| !failed.contains(j)).map(|(_, n)| *n).collect();
                let Some((node, shared)) = placement::replacement(&self.nodes, &holding, &self.avoid, true) else {
                    return Err(format!("no node left to take shard {i} of segment {}", segment.index));
                };
                if shared {
                    self.notes.push(format!("segment {}: two shards share node {} (no other node left)", segment.index, short(&node)));
                }
                targets[i] = node;
                if let Some(pay) = self.pay.as_deref_mut() {
                    // The new placement is paid for before the shard goes there.
                    let placed = ShardRef { node, ..refs[i].clone() };
                    let id = pay.create(vec![placement_of(&placed)]).map_err(|e| format!("a contract for shard {i} of segment {} on {}: {e}", segment.index, short(&node)))?;
                    self.notes.push(format!("segment {} shard {i} moved to {} under contract {id}", segment.index, short(&node)));
                }
            }
            if !waiting.is_empty() {
                std::thread::sleep(CONTRACT_RETRY);
            }
            failed.extend(waiting);
            pending = failed;
        }
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("could not place every shard of segment {}", segment.index))
        }
    }
}

/// The first 16 hex digits of a key.
pub fn short(key: &[u8; 32]) -> String {
    hex(&key[..8])
}

/// Stores `sealed` (the manifest, key `id`) on up to [`MANIFEST_COPIES`] of `nodes`,
/// preferring `preferred`; returns the number of copies stored.
fn store_manifest(pool: &mut Pool, nodes: &[NodeKey], preferred: &[NodeKey], sealed: &[u8], id: &[u8; 32], wait: bool) -> usize {
    let order = manifest_order(pool, nodes, preferred);
    let bytes = Arc::new(sealed.to_vec());
    let mut stored = 0;
    for batch in order.chunks(MANIFEST_COPIES) {
        let jobs = batch.iter().map(|n| (*n, Arc::clone(&bytes))).collect();
        stored += put_waiting(pool, jobs, wait).into_iter().filter(|(_, r)| matches!(r, Ok(Out::Put(m)) if m.key == *id)).count();
        if stored >= MANIFEST_COPIES.min(order.len()) {
            break;
        }
    }
    stored
}

/// Where the manifest's copies go, in order: `preferred` (the nodes holding the file's
/// shards), then the others; nodes found down left out.
fn manifest_order(pool: &Pool, nodes: &[NodeKey], preferred: &[NodeKey]) -> Vec<NodeKey> {
    let mut order: Vec<NodeKey> = preferred.iter().filter(|n| nodes.contains(n) && !pool.is_down(n)).copied().collect();
    for n in nodes {
        if !order.contains(n) && !pool.is_down(n) {
            order.push(*n);
        }
    }
    order.dedup();
    order
}

/// Puts each `(node, bytes)`; with `wait`, puts that a node refused for want of a
/// contract are tried again every second for up to [`CONTRACT_VISIBLE_WAIT`] (a node
/// sees a new contract within a few seconds).
fn put_waiting(pool: &mut Pool, jobs: Vec<(NodeKey, Arc<Vec<u8>>)>, wait: bool) -> Vec<(NodeKey, std::result::Result<Out, NodeError>)> {
    let started = Instant::now();
    let mut results: Vec<(NodeKey, std::result::Result<Out, NodeError>)> =
        jobs.iter().map(|(n, _)| (*n, Err(NodeError::Unreachable("not tried".into())))).collect();
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    let waits = CONTRACT_VISIBLE_WAIT.as_secs() as usize + 1;
    for round in 0..=waits {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            std::thread::sleep(CONTRACT_RETRY);
        }
        let batch = pending.iter().map(|&i| (jobs[i].0, Op::Put(Arc::clone(&jobs[i].1)))).collect();
        let mut again = Vec::new();
        for (&i, (node, result)) in pending.iter().zip(pool.run_all(batch)) {
            let retry = wait && started.elapsed() < CONTRACT_VISIBLE_WAIT && matches!(&result, Err(NodeError::Refused(why)) if contracts::is_no_contract(why));
            if retry {
                again.push(i);
            }
            results[i] = (node, result);
        }
        pending = again;
    }
    results
}

/// With a ledger: pays for the manifest's copies on up to [`MANIFEST_COPIES`] nodes (in
/// the order [`store_manifest`] takes them) and returns those nodes and the contract.
fn pay_manifest(pay: &mut Pay<'_>, pool: &Pool, nodes: &[NodeKey], preferred: &[NodeKey], sealed: &[u8], id: &[u8; 32]) -> Result<(Vec<NodeKey>, ContractId)> {
    let mut holders = manifest_order(pool, nodes, preferred);
    holders.truncate(MANIFEST_COPIES);
    if holders.is_empty() {
        return Err(Error("no node left to take the manifest".into()));
    }
    let root = shardstore::merkle_root(sealed);
    let shards = holders.iter().map(|n| ShardPlacement { node: *n, key: *id, merkle_root: root, len_bytes: sealed.len() as u64 }).collect();
    let contract = pay.create(shards).map_err(|e| Error(format!("the manifest's contract: {e}")))?;
    Ok((holders, contract))
}

/// With a ledger: the usable nodes that are registered on it, those with free disk first
/// (each group in the order discovery found them); the others are left out, with a note.
fn ledger_nodes(ledger: &mut dyn StoreLedger, nodes: &Nodes, notes: &mut Vec<String>) -> Result<Nodes> {
    let registered: BTreeMap<NodeKey, u64> = ledger.nodes()?.into_iter().collect();
    let mut out = nodes.clone();
    let (on, off): (Vec<(NodeKey, Room)>, Vec<(NodeKey, Room)>) = nodes.usable.iter().cloned().partition(|(k, _)| registered.contains_key(k));
    if !off.is_empty() {
        notes.push(format!("{} node(s) that answered are not registered on the ledger and take no shards", off.len()));
    }
    let (free, full): (Vec<(NodeKey, Room)>, Vec<(NodeKey, Room)>) = on.into_iter().partition(|(k, _)| registered.get(k).is_some_and(|f| *f > 0));
    out.usable = free;
    out.usable.extend(full);
    Ok(out)
}

/// Segments per storage contract for `params` (within `ledger::SHARDS_PER_CONTRACT_MAX`).
fn segments_per_contract(params: &Params) -> usize {
    (ledger::SHARDS_PER_CONTRACT_MAX / params.total_shards().max(1)).max(1)
}

/// The first pass of a put on a ledger: every segment's shards planned onto nodes (keys,
/// lengths and roots computed, nothing sent).
struct PlanSink<'a> {
    nodes: &'a [NodeKey],
}

impl ShardSink for PlanSink<'_> {
    type Error = String;

    fn put_segment(&mut self, segment: &EncodedSegment, refs: &mut [ShardRef]) -> std::result::Result<(), String> {
        let targets = placement::segment_nodes(self.nodes, segment.index, refs.len());
        if targets.len() < refs.len() {
            return Err("no node left to take shards".into());
        }
        for (r, node) in refs.iter_mut().zip(targets) {
            r.node = node;
        }
        Ok(())
    }
}

/// What to put.
pub struct PutInput<R: Read> {
    /// The bytes.
    pub reader: R,
    /// The name to record.
    pub name: String,
    /// Expected size (for the progress display).
    pub size_hint: u64,
    /// K asked for, if any.
    pub data_shards: Option<u8>,
    /// M asked for, if any.
    pub parity_shards: Option<u8>,
    /// Segment size, if not the default.
    pub segment_bytes: Option<u32>,
}

/// Puts `input` on `nodes`; with `pay`, every shard placement is under a storage contract
/// created first (see [`super::contracts`]).
pub fn put<R: Read + Seek>(
    pool: &mut Pool,
    owner: &Owner,
    nodes: &Nodes,
    input: PutInput<R>,
    progress: &dyn Progress,
    mut pay: Option<&mut Pay<'_>>,
) -> Result<(PutReport, Manifest)> {
    let PutInput { mut reader, name, size_hint, data_shards, parity_shards, segment_bytes } = input;
    let mut notes = Vec::new();
    let ledger_nodes_found;
    let nodes = match pay.as_deref_mut() {
        Some(pay) => {
            ledger_nodes_found = ledger_nodes(pay.ledger, nodes, &mut notes)?;
            &ledger_nodes_found
        }
        None => nodes,
    };
    let choice = placement::choose_params(nodes.usable.len(), data_shards, parity_shards).map_err(|e| {
        let down: Vec<String> = nodes.down.iter().map(|(n, why)| format!("{}: {why}", short(n))).collect();
        if down.is_empty() {
            Error(e)
        } else {
            Error(format!("{e} (peers that did not answer as nodes: {})", down.join("; ")))
        }
    })?;
    notes.extend(choice.note.clone());
    let params = Params {
        data_shards: choice.data_shards,
        parity_shards: choice.parity_shards,
        segment_bytes: segment_bytes.unwrap_or(Params::default().segment_bytes),
    };
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|e| Error(format!("no randomness from the operating system: {e}")))?;
    let mut planned: Option<Manifest> = None;
    if let Some(pay) = pay.as_deref_mut() {
        // First pass: the shards' keys and nodes, then their contracts, before any goes up.
        let first = Putter::new(&mut reader, &owner.seed, nonce, name.clone(), params).map_err(|e| Error(format!("{e}")))?;
        let keys = nodes.keys();
        let plan = first.run(&mut PlanSink { nodes: &keys }).map_err(|e| Error(format!("put failed: {e}")))?.manifest;
        for group in plan.segments.chunks(segments_per_contract(&params)) {
            let shards: Vec<ShardPlacement> = group.iter().flat_map(|s| &s.shards).map(placement_of).collect();
            pay.create(shards).map_err(|e| Error(format!("no storage contract, nothing stored: {e}")))?;
        }
        reader.seek(SeekFrom::Start(0)).map_err(|e| Error(format!("cannot read the file again: {e}")))?;
        planned = Some(plan);
    }
    let putter = Putter::new(reader, &owner.seed, nonce, name.clone(), params).map_err(|e| Error(format!("{e}")))?;
    let expansion = params.total_shards() as u64;
    progress.start("storing", size_hint.saturating_mul(expansion) / u64::from(params.data_shards));
    let plan = planned.as_ref().map(|m| m.segments.iter().map(|s| s.shards.iter().map(|r| r.node).collect()).collect());
    let mut sink = PutSink { pool, nodes: nodes.keys(), avoid: Vec::new(), notes: Vec::new(), progress, plan, pay: pay.as_deref_mut() };
    let done = putter.run(&mut sink).map_err(|e| Error(format!("put failed: {e}")));
    progress.finish();
    let mut done = done?;
    notes.append(&mut sink.notes);
    let pool = sink.pool;
    if let Some(plan) = &planned {
        let same = plan.segments.len() == done.manifest.segments.len()
            && plan.segments.iter().zip(&done.manifest.segments).all(|(a, b)| {
                a.shards.len() == b.shards.len() && a.shards.iter().zip(&b.shards).all(|(x, y)| x.key == y.key && x.merkle_root == y.merkle_root)
            });
        if !same {
            return Err(Error("the file changed while it was stored (its shards differ from the ones paid for); put it again".into()));
        }
    }
    if let Some(pay) = pay.as_deref_mut() {
        done.manifest.contracts = pay.created.clone();
        done.manifest.validate().map_err(|e| Error(format!("the manifest is malformed: {e}")))?;
        done.sealed = done.manifest.seal(&owner.seed);
        if done.sealed.len() > files::MANIFEST_SEALED_BYTES_MAX {
            return Err(Error("the manifest is too large".into()));
        }
        done.file_id = files::file_id(&done.sealed);
    }
    let mut used: Vec<NodeKey> = Vec::new();
    for r in done.manifest.segments.iter().flat_map(|s| &s.shards) {
        if !used.contains(&r.node) {
            used.push(r.node);
        }
    }
    let mut holders = nodes.keys();
    let mut manifest_contract = None;
    if let Some(pay) = pay.as_deref_mut() {
        let (paid, contract) = pay_manifest(pay, pool, &holders, &used, &done.sealed, &done.file_id)?;
        holders = paid;
        manifest_contract = Some(contract);
    }
    let copies = store_manifest(pool, &holders, &used, &done.sealed, &done.file_id, manifest_contract.is_some());
    if copies == 0 {
        return Err(Error("the shards are stored but no node took the manifest; the file cannot be found by id".into()));
    }
    if copies < 2 {
        notes.push(format!("the manifest is on {copies} node only"));
    }
    let report = PutReport {
        id: hex(&done.file_id),
        name,
        size: done.manifest.size,
        data_shards: params.data_shards,
        parity_shards: params.parity_shards,
        segments: done.manifest.segments.len() as u64,
        nodes: used.iter().map(|n| hex(n)).collect(),
        manifest_copies: copies,
        contracts: done.manifest.contracts.clone(),
        manifest_contract,
        notes,
    };
    Ok((report, done.manifest))
}

/// Fetches and opens the manifest `id` from `nodes`, and when none of them holds it and
/// their peers were not asked yet, discovers the peers (updating `nodes`) and tries again.
pub fn find_manifest(pool: &mut Pool, owner: &Owner, nodes: &mut Nodes, id: &[u8; 32]) -> Result<Manifest> {
    match fetch_manifest(pool, owner, nodes, id) {
        Ok(m) => Ok(m),
        Err(_) if !nodes.peers_asked => {
            *nodes = discover(pool, &nodes.seeds.clone(), true);
            fetch_manifest(pool, owner, nodes, id)
        }
        Err(e) => Err(e),
    }
}

/// Fetches and opens the manifest `id` from `nodes` (all asked at once; the first copy
/// that opens wins).
pub fn fetch_manifest(pool: &mut Pool, owner: &Owner, nodes: &Nodes, id: &[u8; 32]) -> Result<Manifest> {
    if nodes.usable.is_empty() {
        return Err(Error("no node answered; check --nodes".into()));
    }
    let jobs = nodes.keys().into_iter().map(|n| (n, Op::Get(*id))).collect();
    let mut seal_failed = false;
    let mut other_errors = Vec::new();
    for (node, result) in pool.run_all(jobs) {
        match result {
            Ok(Out::Get(sealed)) => match Manifest::open_checked(id, &sealed, &owner.seed) {
                Ok(m) => return Ok(m),
                Err(files::FilesError::ManifestSeal) => seal_failed = true,
                Err(e) => other_errors.push(format!("{}: {e}", short(&node))),
            },
            Ok(_) | Err(NodeError::NotFound) => {}
            Err(e) => other_errors.push(format!("{}: {e}", short(&node))),
        }
    }
    if seal_failed {
        return Err(Error(format!("the manifest of {} does not open with your key (a wrong key?)", hex(id))));
    }
    let detail = if other_errors.is_empty() { String::new() } else { format!(" ({})", other_errors.join("; ")) };
    Err(Error(format!(
        "none of the {} nodes reached holds file {} for your key{detail}",
        nodes.usable.len(),
        hex(id)
    )))
}

struct GetSource<'a> {
    pool: &'a mut Pool,
    progress: &'a dyn Progress,
    problems: Vec<String>,
}

impl ShardSource for GetSource<'_> {
    type Error = String;

    fn get_shards(&mut self, segment: &SegmentEntry, wanted: &[usize], out: &mut [Option<Vec<u8>>]) -> std::result::Result<(), String> {
        let jobs: Vec<(NodeKey, Op)> =
            wanted.iter().filter_map(|&i| segment.shards.get(i).map(|r| (r.node, Op::Get(r.key)))).collect();
        let results = self.pool.run_all(jobs);
        for (&i, (node, result)) in wanted.iter().zip(results) {
            match result {
                Ok(Out::Get(bytes)) => {
                    self.progress.advance(bytes.len() as u64);
                    if let Some(slot) = out.get_mut(i) {
                        *slot = Some(bytes);
                    }
                }
                Ok(_) => {}
                Err(e) => self.problems.push(format!("segment {} shard {i} on {}: {e}", segment.index, short(&node))),
            }
        }
        Ok(())
    }
}

/// What `get` did.
#[derive(Clone, Debug, Serialize)]
pub struct GetReport {
    /// The file id.
    pub id: String,
    /// Where it was written.
    pub path: String,
    /// Bytes written.
    pub size: u64,
    /// Segments.
    pub segments: u64,
    /// Shards that could not be fetched.
    pub missing_shards: u64,
    /// Shards fetched that failed their hash.
    pub corrupt_shards: u64,
    /// What went wrong on the way (the file is whole regardless).
    pub notes: Vec<String>,
}

/// Gets file `id` into `path` (atomically: nothing is written unless it all decrypts).
pub fn get(pool: &mut Pool, owner: &Owner, nodes: &mut Nodes, id: &[u8; 32], path: &Path, progress: &dyn Progress) -> Result<GetReport> {
    let manifest = find_manifest(pool, owner, nodes, id)?;
    progress.start("fetching", manifest.size);
    let mut getter = Getter::new(manifest, &owner.seed);
    let mut source = GetSource { pool, progress, problems: Vec::new() };
    let result = getter.get_to_path(&mut source, path);
    progress.finish();
    let report = result.map_err(|e| {
        let detail = if source.problems.is_empty() { String::new() } else { format!(" ({})", source.problems.join("; ")) };
        Error(format!("get failed, no file written: {e}{detail}"))
    })?;
    Ok(GetReport {
        id: hex(id),
        path: path.display().to_string(),
        size: report.bytes,
        segments: report.segments,
        missing_shards: report.missing_count,
        corrupt_shards: report.corrupt_count,
        notes: source.problems,
    })
}

/// A shard's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Every challenge answered with a proof that checks against the manifest.
    Ok,
    /// The node does not hold it, or cannot be reached.
    Missing,
    /// A proof did not check, or the node reports the shard damaged.
    Corrupt,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Ok => "ok",
            Health::Missing => "missing",
            Health::Corrupt => "corrupt",
        })
    }
}

/// One shard's line of `verify`.
#[derive(Clone, Debug, Serialize)]
pub struct ShardHealth {
    /// The node (hex key).
    pub node: String,
    /// Segment index.
    pub segment: u64,
    /// Shard index in the segment (0..K data, K..K+M parity).
    pub shard: usize,
    /// The shard's key (hex).
    pub key: String,
    /// Its health.
    pub status: Health,
    /// Why, when not ok.
    pub detail: String,
    /// With a ledger: the storage contract that names this placement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<u64>,
    /// With a ledger: the last period the ledger recorded a valid storage proof for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proven_period: Option<u64>,
}

/// What `verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The file id.
    pub id: String,
    /// True when every shard is ok.
    pub ok: bool,
    /// Every shard.
    pub shards: Vec<ShardHealth>,
    /// Segments with fewer than K healthy shards (lost unless the missing come back).
    pub lost_segments: Vec<u64>,
    /// With a ledger: its current period (for the shards' `proven_period`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_period: Option<u64>,
}

/// Challenges every shard of `manifest` on its node.
pub fn check(pool: &mut Pool, owner: &Owner, manifest: &Manifest, id: &[u8; 32]) -> VerifyReport {
    let mut jobs = Vec::new();
    let mut where_ = Vec::new();
    let mut challenges_of = Vec::new();
    for seg in &manifest.segments {
        for (i, r) in seg.shards.iter().enumerate() {
            let mut challenges = vec![0u64; CHALLENGES_PER_SHARD];
            for c in &mut challenges {
                let mut b = [0u8; 8];
                let _ = getrandom::fill(&mut b);
                *c = u64::from_le_bytes(b);
            }
            jobs.push((r.node, Op::Prove { owner: owner.public_key, key: r.key, challenges: challenges.clone() }));
            where_.push((seg.index, i, r.clone()));
            challenges_of.push(challenges);
        }
    }
    let results = pool.run_all(jobs);
    let mut shards = Vec::with_capacity(results.len());
    for (((segment, shard, r), challenges), (_, result)) in where_.into_iter().zip(challenges_of).zip(results) {
        let (status, detail) = match result {
            Ok(Out::Proofs(proofs)) if proofs.len() == challenges.len() => {
                let bad = proofs.iter().zip(&challenges).position(|(p, c)| {
                    p.len != r.len || p.merkle_root != r.merkle_root || !shardstore::verify_proof(&r.merkle_root, r.len, *c, &p.proof)
                });
                match bad {
                    None => (Health::Ok, String::new()),
                    Some(_) => (Health::Corrupt, "a storage proof does not match the manifest".to_string()),
                }
            }
            Ok(other) => (Health::Corrupt, format!("unexpected answer {other:?}")),
            Err(NodeError::NotFound) => (Health::Missing, "the node does not hold it".to_string()),
            Err(NodeError::Unreachable(why)) => (Health::Missing, format!("node unreachable: {why}")),
            Err(NodeError::Refused(why)) => (Health::Corrupt, format!("the node cannot prove it: {why}")),
        };
        shards.push(ShardHealth { node: hex(&r.node), segment, shard, key: hex(&r.key), status, detail, contract: None, proven_period: None });
    }
    let k = usize::from(manifest.params.data_shards);
    let mut healthy: BTreeMap<u64, usize> = manifest.segments.iter().map(|s| (s.index, 0)).collect();
    for s in &shards {
        if s.status == Health::Ok {
            *healthy.entry(s.segment).or_default() += 1;
        }
    }
    let lost_segments = healthy.into_iter().filter(|(_, n)| *n < k).map(|(s, _)| s).collect();
    VerifyReport { id: hex(id), ok: shards.iter().all(|s| s.status == Health::Ok), shards, lost_segments, ledger_period: None }
}

/// Adds the ledger's record to `report`: per shard, the contract naming its placement and
/// the last period a valid proof for it landed in (each contract read verified).
pub fn ledger_record(report: &mut VerifyReport, manifest: &Manifest, ledger: &mut dyn StoreLedger) -> Result<()> {
    let (_, period) = ledger.meta()?;
    report.ledger_period = Some(period);
    let mut record: BTreeMap<(String, String), (ContractId, Option<u64>)> = BTreeMap::new();
    for &id in &manifest.contracts {
        let Some(contract) = ledger.contract(id)? else { continue };
        if let ledger::state::ContractTerms::Storage { shards } = &contract.terms {
            for s in shards {
                let entry = record.entry((hex(&s.placement.node), hex(&s.placement.key))).or_insert((id, s.last_proven_period));
                // A later contract for the same placement (a repair) wins when it has proofs.
                if s.last_proven_period > entry.1 {
                    *entry = (id, s.last_proven_period);
                }
            }
        }
    }
    for shard in &mut report.shards {
        if let Some((id, period)) = record.get(&(shard.node.clone(), shard.key.clone())) {
            shard.contract = Some(*id);
            shard.proven_period = *period;
        }
    }
    Ok(())
}

/// What `repair` did.
#[derive(Clone, Debug, Serialize)]
pub struct RepairReport {
    /// The file id now (the manifest changed when shards moved).
    pub id: String,
    /// The id before, when it changed.
    pub previous_id: Option<String>,
    /// Shards rebuilt and stored again.
    pub repaired: Vec<ShardHealth>,
    /// Segments that could not be rebuilt (fewer than K healthy shards).
    pub lost_segments: Vec<u64>,
    /// Nodes holding a copy of the new manifest.
    pub manifest_copies: usize,
    /// Plain sentences about choices made.
    pub notes: Vec<String>,
}

/// Rebuilds every missing or corrupt shard of file `id` onto other nodes and stores the
/// updated manifest (whose id is the new file id; the old manifest copies are deleted).
pub fn repair(
    pool: &mut Pool,
    owner: &Owner,
    nodes: &mut Nodes,
    id: &[u8; 32],
    progress: &dyn Progress,
    mut pay: Option<&mut Pay<'_>>,
) -> Result<(RepairReport, Manifest)> {
    let mut manifest = find_manifest(pool, owner, nodes, id)?;
    let mut notes = Vec::new();
    if let Some(pay) = pay.as_deref_mut() {
        *nodes = ledger_nodes(pay.ledger, nodes, &mut notes)?;
    }
    let health = check(pool, owner, &manifest, id);
    let mut repaired = Vec::new();
    let mut lost = Vec::new();
    let bad: Vec<&ShardHealth> = health.shards.iter().filter(|s| s.status != Health::Ok).collect();
    progress.start("repairing", bad.len() as u64);
    let all = nodes.keys();
    let params = manifest.params;
    let total = params.total_shards();
    for seg in manifest.segments.iter_mut() {
        let seg_bad: Vec<&&ShardHealth> = bad.iter().filter(|s| s.segment == seg.index).collect();
        if seg_bad.is_empty() {
            continue;
        }
        let good: Vec<usize> = (0..total).filter(|i| !seg_bad.iter().any(|s| s.shard == *i)).collect();
        let jobs = good.iter().map(|&i| (seg.shards[i].node, Op::Get(seg.shards[i].key))).collect();
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; total];
        for (&i, (_, result)) in good.iter().zip(pool.run_all(jobs)) {
            if let Ok(Out::Get(bytes)) = result {
                slots[i] = Some(bytes);
            }
        }
        if let Err(e) = files::rebuild_shards(&params, seg, &mut slots) {
            notes.push(format!("segment {} cannot be rebuilt: {e}", seg.index));
            lost.push(seg.index);
            continue;
        }
        let mut holding: Vec<NodeKey> = good.iter().map(|&i| seg.shards[i].node).collect();
        for s in seg_bad {
            let i = s.shard;
            let old = seg.shards[i].node;
            let Some(bytes) = slots[i].take() else { continue };
            let bytes = Arc::new(bytes);
            let mut avoid: Vec<NodeKey> = vec![old];
            let mut placed = None;
            for _ in 0..all.len() {
                let candidates: Vec<NodeKey> = all.iter().filter(|n| !pool.is_down(n)).copied().collect();
                let Some((node, shared)) = placement::replacement(&candidates, &holding, &avoid, true) else { break };
                let mut contract = None;
                if let Some(pay) = pay.as_deref_mut() {
                    let placed = ShardRef { node, ..seg.shards[i].clone() };
                    contract = Some(pay.create(vec![placement_of(&placed)])?);
                }
                let result = put_waiting(pool, vec![(node, Arc::clone(&bytes))], pay.is_some()).pop().map(|(_, r)| r);
                match result.unwrap_or(Err(NodeError::Unreachable("no answer".into()))) {
                    Ok(Out::Put(m)) if m.key == seg.shards[i].key && m.merkle_root == seg.shards[i].merkle_root => {
                        if shared {
                            notes.push(format!("segment {}: shard {i} shares node {} with another shard of the segment (no other node left)", seg.index, short(&node)));
                        }
                        if let Some(contract) = contract {
                            notes.push(format!("segment {} shard {i}: new placement on {} under contract {contract}", seg.index, short(&node)));
                        }
                        placed = Some(node);
                        break;
                    }
                    other => {
                        if let Err(e) = other {
                            notes.push(format!("node {} did not take a rebuilt shard: {e}", short(&node)));
                        }
                        avoid.push(node);
                        if let (Some(pay), Some(contract)) = (pay.as_deref_mut(), contract) {
                            // Nothing went there: its contract goes too (best effort).
                            pay.created.retain(|c| *c != contract);
                            let _ = pay.ledger.cancel(contract);
                        }
                    }
                }
            }
            let Some(node) = placed else {
                notes.push(format!("segment {} shard {i}: no node took the rebuilt shard", seg.index));
                continue;
            };
            if s.status == Health::Corrupt && !pool.is_down(&old) {
                // Best effort: the damaged copy frees its room on the old node.
                let _ = one(pool, old, Op::Delete(seg.shards[i].key));
            }
            seg.shards[i].node = node;
            holding.push(node);
            progress.advance(1);
            repaired.push(ShardHealth {
                node: hex(&node),
                segment: seg.index,
                shard: i,
                key: s.key.clone(),
                status: Health::Ok,
                detail: format!("was {} on {}", s.status, short(&old)),
                contract: None,
                proven_period: None,
            });
        }
    }
    progress.finish();
    if repaired.is_empty() {
        return Ok((
            RepairReport { id: hex(id), previous_id: None, repaired, lost_segments: lost, manifest_copies: 0, notes },
            manifest,
        ));
    }
    let old_last_contract = manifest.contracts.iter().max().copied();
    if let Some(pay) = pay.as_deref_mut() {
        manifest.contracts.extend(pay.created.iter().copied());
    }
    manifest.validate().map_err(|e| Error(format!("the repaired manifest is malformed: {e}")))?;
    let sealed = manifest.seal(&owner.seed);
    let new_id = files::file_id(&sealed);
    let mut used: Vec<NodeKey> = Vec::new();
    for r in manifest.segments.iter().flat_map(|s| &s.shards) {
        if !used.contains(&r.node) {
            used.push(r.node);
        }
    }
    let mut holders = all.clone();
    if let Some(pay) = pay.as_deref_mut() {
        holders = pay_manifest(pay, pool, &all, &used, &sealed, &new_id)?.0;
    }
    let copies = store_manifest(pool, &holders, &used, &sealed, &new_id, pay.is_some());
    if copies == 0 {
        return Err(Error("shards were rebuilt but no node took the new manifest; the old id still works".into()));
    }
    if new_id != *id {
        let jobs = all.iter().filter(|n| !pool.is_down(n)).map(|n| (*n, Op::Delete(*id))).collect();
        let _ = pool.run_all(jobs);
        if let (Some(pay), Some(after)) = (pay.as_deref_mut(), old_last_contract) {
            // The old manifest's copies are gone: so is their contract.
            for contract in contracts::manifest_contracts(pay.ledger, id, Some(after))? {
                if let Err(e) = pay.ledger.cancel(contract) {
                    notes.push(format!("the old manifest's contract {contract} was not cancelled: {e}"));
                }
            }
        }
    }
    Ok((
        RepairReport {
            id: hex(&new_id),
            previous_id: (new_id != *id).then(|| hex(id)),
            repaired,
            lost_segments: lost,
            manifest_copies: copies,
            notes,
        },
        manifest,
    ))
}

/// What `rm` did.
#[derive(Clone, Debug, Serialize)]
pub struct RmReport {
    /// The file id.
    pub id: String,
    /// Shards deleted.
    pub deleted: u64,
    /// Shards no node held any more.
    pub already_gone: u64,
    /// Shards left on nodes that could not be reached or refused.
    pub left: Vec<String>,
    /// Manifest copies deleted.
    pub manifest_copies_deleted: u64,
    /// With a ledger: the storage contracts cancelled (the file's and its manifest's).
    pub contracts_cancelled: Vec<u64>,
}

/// Deletes every shard of file `id`, then its manifest copies (kept when some shards
/// could not be deleted, so that `rm` can finish later).
pub fn rm(pool: &mut Pool, owner: &Owner, nodes: &mut Nodes, id: &[u8; 32], ledger: Option<&mut dyn StoreLedger>) -> Result<RmReport> {
    let manifest = find_manifest(pool, owner, nodes, id)?;
    let jobs: Vec<(NodeKey, Op)> =
        manifest.segments.iter().flat_map(|s| &s.shards).map(|r| (r.node, Op::Delete(r.key))).collect();
    let mut report = RmReport { id: hex(id), deleted: 0, already_gone: 0, left: Vec::new(), manifest_copies_deleted: 0, contracts_cancelled: Vec::new() };
    for (node, result) in pool.run_all(jobs) {
        match result {
            Ok(_) => report.deleted += 1,
            Err(NodeError::NotFound) => report.already_gone += 1,
            Err(e) => report.left.push(format!("{}: {e}", short(&node))),
        }
    }
    if !report.left.is_empty() {
        return Err(Error(format!(
            "{} shards could not be deleted ({}); the manifest is kept so that `gridctl store rm` can finish later",
            report.left.len(),
            report.left.join("; ")
        )));
    }
    let mut holders = nodes.keys();
    for r in manifest.segments.iter().flat_map(|s| &s.shards) {
        if !holders.contains(&r.node) {
            holders.push(r.node);
        }
    }
    let jobs = holders.into_iter().filter(|n| !pool.is_down(n)).map(|n| (n, Op::Delete(*id))).collect();
    report.manifest_copies_deleted = pool.run_all(jobs).into_iter().filter(|(_, r)| r.is_ok()).count() as u64;
    if let Some(ledger) = ledger {
        let mut ids = manifest.contracts.clone();
        if let Some(last) = manifest.contracts.iter().max() {
            ids.extend(contracts::manifest_contracts(ledger, id, Some(*last))?);
        }
        for contract in ids {
            if ledger.cancel(contract)? {
                report.contracts_cancelled.push(contract);
            }
        }
    }
    Ok(report)
}

/// The first 16 characters of a hex key.
pub fn short_hex(key_hex: &str) -> &str {
    key_hex.get(..16).unwrap_or(key_hex)
}

/// Most candidate manifests `ls --remote` fetches and tries to open.
pub const REMOTE_LS_CANDIDATES_MAX: usize = 512;
/// Shards longer than this are not taken for manifests by `ls --remote` (a manifest
/// lists ~100 bytes per shard: this is a file of thousands of segments).
pub const REMOTE_LS_MANIFEST_BYTES_MAX: u64 = 1 << 20;

/// A file found on the nodes by `ls --remote`.
#[derive(Clone, Debug, Serialize)]
pub struct RemoteFile {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Plaintext bytes.
    pub size: u64,
    /// K.
    pub data_shards: u8,
    /// M.
    pub parity_shards: u8,
    /// Nodes holding a copy of its manifest.
    pub manifest_copies: usize,
}

/// Lists the user's shards on every usable node and opens those that are manifests: the
/// user's files as the grid knows them (shards are namespaced by owner, so only the user's
/// own shards are listed).
pub fn remote_files(pool: &mut Pool, owner: &Owner, nodes: &Nodes) -> (Vec<RemoteFile>, Vec<String>) {
    let mut notes = Vec::new();
    let jobs = nodes.keys().into_iter().map(|n| (n, Op::List)).collect();
    let mut holders: BTreeMap<[u8; 32], Vec<NodeKey>> = BTreeMap::new();
    for (node, result) in pool.run_all(jobs) {
        match result {
            Ok(Out::List(metas)) => {
                for m in metas.into_iter().filter(|m| m.len <= REMOTE_LS_MANIFEST_BYTES_MAX) {
                    holders.entry(m.key).or_default().push(node);
                }
            }
            Ok(_) => {}
            Err(e) => notes.push(format!("node {} did not list its shards: {e}", short(&node))),
        }
    }
    if holders.len() > REMOTE_LS_CANDIDATES_MAX {
        notes.push(format!("only the first {REMOTE_LS_CANDIDATES_MAX} of {} small shards were looked at", holders.len()));
    }
    // Manifests are stored on several nodes, data shards on one: try those first.
    let mut candidates: Vec<([u8; 32], Vec<NodeKey>)> = holders.into_iter().collect();
    candidates.sort_by_key(|(k, h)| (std::cmp::Reverse(h.len()), *k));
    candidates.truncate(REMOTE_LS_CANDIDATES_MAX);
    let jobs = candidates.iter().map(|(k, h)| (h[0], Op::Get(*k))).collect();
    let mut files = Vec::new();
    for ((key, h), (_, result)) in candidates.iter().zip(pool.run_all(jobs)) {
        if let Ok(Out::Get(bytes)) = result {
            if let Ok(m) = Manifest::open_checked(key, &bytes, &owner.seed) {
                files.push(RemoteFile {
                    id: hex(key),
                    name: m.name,
                    size: m.size,
                    data_shards: m.params.data_shards,
                    parity_shards: m.params.parity_shards,
                    manifest_copies: h.len(),
                });
            }
        }
    }
    files.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    (files, notes)
}
