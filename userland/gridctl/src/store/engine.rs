//! The store commands over a [`Pool`] of nodes, independent of how nodes are reached
//! (the network in `gridctl`, memory in tests): discovery, put, get, verify, repair, rm.
//! Encryption, erasure coding and manifests are `files`'; this module picks nodes, moves
//! shards, checks what nodes answer against the manifest, and reports.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use files::stream::{Getter, Putter, ShardSink, ShardSource};
use files::{EncodedSegment, Manifest, Params, SegmentEntry, ShardRef};
use serde::Serialize;

use super::nodes::{NodeError, NodeKey, Op, Out, Pool, Room, NODES_MAX};
use super::placement;
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
    /// Plain sentences about choices made (fewer shards, failovers...).
    pub notes: Vec<String>,
}

struct PutSink<'a> {
    pool: &'a mut Pool,
    nodes: Vec<NodeKey>,
    avoid: Vec<NodeKey>,
    notes: Vec<String>,
    progress: &'a dyn Progress,
}

impl ShardSink for PutSink<'_> {
    type Error = String;

    fn put_segment(&mut self, segment: &EncodedSegment, refs: &mut [ShardRef]) -> std::result::Result<(), String> {
        let live: Vec<NodeKey> = self.nodes.iter().filter(|n| !self.avoid.contains(n)).copied().collect();
        let mut targets = placement::segment_nodes(&live, segment.index, segment.shards.len());
        if targets.len() < segment.shards.len() {
            return Err("no node left to take shards".into());
        }
        let shards: Vec<Arc<Vec<u8>>> = segment.shards.iter().map(|s| Arc::new(s.clone())).collect();
        let mut pending: Vec<usize> = (0..shards.len()).collect();
        // Each round either finishes shards or rules out a node: at most one round per node.
        for _ in 0..=self.nodes.len() {
            if pending.is_empty() {
                break;
            }
            let jobs = pending.iter().map(|&i| (targets[i], Op::Put(Arc::clone(&shards[i])))).collect();
            let results = self.pool.run_all(jobs);
            let mut failed = Vec::new();
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
            }
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
fn store_manifest(pool: &mut Pool, nodes: &[NodeKey], preferred: &[NodeKey], sealed: &[u8], id: &[u8; 32]) -> usize {
    let mut order: Vec<NodeKey> = preferred.iter().filter(|n| nodes.contains(n) && !pool.is_down(n)).copied().collect();
    for n in nodes {
        if !order.contains(n) && !pool.is_down(n) {
            order.push(*n);
        }
    }
    order.dedup();
    let bytes = Arc::new(sealed.to_vec());
    let mut stored = 0;
    for batch in order.chunks(MANIFEST_COPIES) {
        let jobs = batch.iter().map(|n| (*n, Op::Put(Arc::clone(&bytes)))).collect();
        stored += pool
            .run_all(jobs)
            .into_iter()
            .filter(|(_, r)| matches!(r, Ok(Out::Put(m)) if m.key == *id))
            .count();
        if stored >= MANIFEST_COPIES.min(order.len()) {
            break;
        }
    }
    stored
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

/// Puts `input` on `nodes`.
pub fn put<R: Read>(
    pool: &mut Pool,
    owner: &Owner,
    nodes: &Nodes,
    input: PutInput<R>,
    progress: &dyn Progress,
) -> Result<(PutReport, Manifest)> {
    let PutInput { reader, name, size_hint, data_shards, parity_shards, segment_bytes } = input;
    let mut notes = Vec::new();
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
    let putter = Putter::new(reader, &owner.seed, nonce, name.clone(), params).map_err(|e| Error(format!("{e}")))?;
    let expansion = params.total_shards() as u64;
    progress.start("storing", size_hint.saturating_mul(expansion) / u64::from(params.data_shards));
    let mut sink = PutSink { pool, nodes: nodes.keys(), avoid: Vec::new(), notes: Vec::new(), progress };
    let done = putter.run(&mut sink).map_err(|e| Error(format!("put failed: {e}")));
    progress.finish();
    let done = done?;
    notes.append(&mut sink.notes);
    let mut used: Vec<NodeKey> = Vec::new();
    for r in done.manifest.segments.iter().flat_map(|s| &s.shards) {
        if !used.contains(&r.node) {
            used.push(r.node);
        }
    }
    let copies = store_manifest(sink.pool, &nodes.keys(), &used, &done.sealed, &done.file_id);
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
        shards.push(ShardHealth { node: hex(&r.node), segment, shard, key: hex(&r.key), status, detail });
    }
    let k = usize::from(manifest.params.data_shards);
    let mut healthy: BTreeMap<u64, usize> = manifest.segments.iter().map(|s| (s.index, 0)).collect();
    for s in &shards {
        if s.status == Health::Ok {
            *healthy.entry(s.segment).or_default() += 1;
        }
    }
    let lost_segments = healthy.into_iter().filter(|(_, n)| *n < k).map(|(s, _)| s).collect();
    VerifyReport { id: hex(id), ok: shards.iter().all(|s| s.status == Health::Ok), shards, lost_segments }
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
pub fn repair(pool: &mut Pool, owner: &Owner, nodes: &mut Nodes, id: &[u8; 32], progress: &dyn Progress) -> Result<(RepairReport, Manifest)> {
    let mut manifest = find_manifest(pool, owner, nodes, id)?;
    let health = check(pool, owner, &manifest, id);
    let mut notes = Vec::new();
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
                match one(pool, node, Op::Put(Arc::clone(&bytes))) {
                    Ok(Out::Put(m)) if m.key == seg.shards[i].key && m.merkle_root == seg.shards[i].merkle_root => {
                        if shared {
                            notes.push(format!("segment {}: shard {i} shares node {} with another shard of the segment (no other node left)", seg.index, short(&node)));
                        }
                        placed = Some(node);
                        break;
                    }
                    Ok(_) => avoid.push(node),
                    Err(e) => {
                        notes.push(format!("node {} did not take a rebuilt shard: {e}", short(&node)));
                        avoid.push(node);
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
    manifest.validate().map_err(|e| Error(format!("the repaired manifest is malformed: {e}")))?;
    let sealed = manifest.seal(&owner.seed);
    let new_id = files::file_id(&sealed);
    let mut used: Vec<NodeKey> = Vec::new();
    for r in manifest.segments.iter().flat_map(|s| &s.shards) {
        if !used.contains(&r.node) {
            used.push(r.node);
        }
    }
    let copies = store_manifest(pool, &all, &used, &sealed, &new_id);
    if copies == 0 {
        return Err(Error("shards were rebuilt but no node took the new manifest; the old id still works".into()));
    }
    if new_id != *id {
        let jobs = all.iter().filter(|n| !pool.is_down(n)).map(|n| (*n, Op::Delete(*id))).collect();
        let _ = pool.run_all(jobs);
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
}

/// Deletes every shard of file `id`, then its manifest copies (kept when some shards
/// could not be deleted, so that `rm` can finish later).
pub fn rm(pool: &mut Pool, owner: &Owner, nodes: &mut Nodes, id: &[u8; 32]) -> Result<RmReport> {
    let manifest = find_manifest(pool, owner, nodes, id)?;
    let jobs: Vec<(NodeKey, Op)> =
        manifest.segments.iter().flat_map(|s| &s.shards).map(|r| (r.node, Op::Delete(r.key))).collect();
    let mut report = RmReport { id: hex(id), deleted: 0, already_gone: 0, left: Vec::new(), manifest_copies_deleted: 0 };
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
