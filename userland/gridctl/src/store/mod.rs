//! `gridctl store`: files over many nodes, owner-encrypted and erasure-coded.
//!
//! - [`nodes`]: one connection per node in a worker thread ([`nodes::Pool`]), behind a
//!   small trait so the commands run against the network or memory alike;
//! - [`remote`]: that trait over the control protocol's shard service, and the way to a
//!   node (directly, or through the overlay via a node named in `--nodes`);
//! - [`placement`]: K and M for the nodes at hand, K+M distinct nodes per segment,
//!   replacements;
//! - [`engine`]: discovery, put, get, verify, repair, rm;
//! - [`contracts`]: with a ledger, the storage contracts paid before shards go up;
//! - [`index`]: the local list of files put from this machine (for `ls` and names);
//! - [`memory`]: an in-memory grid for tests.
//!
//! Encryption, erasure coding and manifests are the `files` crate's; the key never leaves
//! this machine. Every command prints a human summary, or one JSON object with `--json`.

pub mod contracts;
pub mod engine;
pub mod index;
pub mod memory;
pub mod nodes;
pub mod placement;
pub mod remote;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde::Serialize;

use self::engine::{Health, Nodes, Owner, Progress};
use self::nodes::{Connector, NodeKey, Pool};
use crate::client::Options;
use crate::key::UserKey;
use crate::target::Target;
use crate::{bail, hex, Context, Error, Result};

/// Where the nodes are.
#[derive(Args, Debug, Clone)]
pub struct NodesArg {
    /// Nodes to start from, comma-separated KEY@HOST:PORT (KEY: a node's overlay key).
    /// gridctl links to these and reaches every other node they route to through them
    /// (with `./gridos run --nodes N`: node 0 at 127.0.0.1:7443).
    #[arg(long, env = "GRIDCTL_NODES", value_name = "KEY@HOST:PORT,...", value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `gridctl store ...`
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Encrypt, erasure-code and spread a file over the nodes; prints its id.
    Put {
        /// The file.
        file: PathBuf,
        /// K: data shards per segment (default 4, fewer when fewer nodes answer).
        #[arg(long = "data", value_name = "K")]
        data_shards: Option<u8>,
        /// M: parity shards per segment, the shards that may be lost (default 2).
        #[arg(long = "parity", value_name = "M")]
        parity_shards: Option<u8>,
        /// Name recorded in the manifest (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Segment size in KiB (default 4096); for tests.
        #[arg(long, hide = true)]
        segment_kib: Option<u32>,
        /// With a ledger: the storage contracts' price per period per started MiB of shards
        /// (default gridctl::onledger::STORAGE_PRICE_PER_MIB_DEFAULT, 1).
        #[arg(long, value_name = "TOKENS")]
        price_per_mib: Option<u64>,
        #[command(flatten)]
        nodes: NodesArg,
    },
    /// Fetch a file by id (or by its name in the local index) into FILE.
    Get {
        /// File id (64 hex digits) or name.
        id: String,
        /// Where to write it (written whole or not at all).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        #[command(flatten)]
        nodes: NodesArg,
    },
    /// Challenge every shard of a file on its node: ok, missing or corrupt.
    Verify {
        /// File id or name.
        id: String,
        #[command(flatten)]
        nodes: NodesArg,
    },
    /// Rebuild missing or corrupt shards onto other nodes; prints the new file id.
    Repair {
        /// File id or name.
        id: String,
        /// With a ledger: the new contracts' price per period per started MiB.
        #[arg(long, value_name = "TOKENS")]
        price_per_mib: Option<u64>,
        #[command(flatten)]
        nodes: NodesArg,
    },
    /// Your files put from this machine (the local index), or with --remote the files
    /// whose manifests the nodes hold for your key.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Ask the nodes (give --nodes) instead of the local index.
        #[arg(long, requires = "nodes")]
        remote: bool,
        /// Nodes to ask, with --remote (see `put`).
        #[arg(long, env = "GRIDCTL_NODES", value_name = "KEY@HOST:PORT,...", value_delimiter = ',')]
        nodes: Vec<String>,
    },
    /// Delete every shard of a file, then its manifest.
    Rm {
        /// File id or name.
        id: String,
        #[command(flatten)]
        nodes: NodesArg,
    },
}

/// How the store commands reach nodes: the network (gridctl) or a test's grid.
pub type ConnectorFactory<'a> = &'a dyn Fn(&[Target], &UserKey) -> Arc<dyn Connector>;

/// The network connector.
pub fn network(options: Options) -> impl Fn(&[Target], &UserKey) -> Arc<dyn Connector> {
    move |seeds: &[Target], user: &UserKey| -> Arc<dyn Connector> {
        Arc::new(remote::RemoteConnector::new(seeds.to_vec(), user.clone(), options))
    }
}

struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new(hidden: bool) -> Bar {
        let bar = if hidden { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(0) };
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        let template = if what == "repairing" {
            "{msg} [{bar:30}] {pos}/{len} shards"
        } else {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
        };
        self.0.set_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.0.set_message(what.to_string());
        self.0.set_length(total);
        self.0.set_position(0);
    }
    fn advance(&self, done: u64) {
        self.0.inc(done);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn parse_seeds(list: &[String]) -> Result<Vec<Target>> {
    let seeds: Vec<Target> = list.iter().filter(|s| !s.trim().is_empty()).map(|s| Target::parse(s)).collect::<Result<_>>()?;
    if seeds.is_empty() {
        bail!("no nodes: give --nodes KEY@HOST:PORT,... (or set GRIDCTL_NODES)");
    }
    Ok(seeds)
}

fn emit<T: Serialize>(out: &mut dyn Write, json: bool, value: &T, human: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let r = if json {
        serde_json::to_string(value).map_err(std::io::Error::other).and_then(|s| writeln!(out, "{s}"))
    } else {
        human(out)
    };
    r.context(|| "cannot write output".into())
}

/// Opens the pool and finds the nodes: the seeds, and with `with_peers` every node they
/// route to (put and repair need room on many nodes; get, verify and rm find the nodes in
/// the manifest and ask the peers only when the seeds hold no copy of it).
fn reach(connector: ConnectorFactory, list: &[String], user: &UserKey, with_peers: bool) -> Result<(Pool, Nodes, Vec<String>)> {
    let seeds = parse_seeds(list)?;
    let mut pool = Pool::new(connector(&seeds, user));
    let seed_keys: Vec<NodeKey> = seeds.iter().map(|t| t.key).collect();
    let nodes = engine::discover(&mut pool, &seed_keys, with_peers);
    let mut notes = Vec::new();
    for (node, why) in &nodes.down {
        if seed_keys.contains(node) {
            notes.push(format!("node {} (from --nodes) did not answer: {why}", engine::short(node)));
        }
    }
    if nodes.usable.is_empty() {
        bail!("no node answered ({})", notes.join("; "));
    }
    Ok((pool, nodes, notes))
}

fn owner(user: &UserKey) -> Owner {
    Owner { seed: user.seed(), public_key: user.public_key() }
}

/// Runs a store command as the user whose key file is `key_path`; with `ledger` (a ledger
/// is trusted), under storage contracts (see [`contracts`]).
pub fn run(command: StoreCommand, key_path: &Path, connector: ConnectorFactory, ledger: Option<contracts::LedgerFactory>, out: &mut dyn Write) -> Result<()> {
    let user = UserKey::load(key_path)?;
    let index_path = index::path_for(key_path);
    let me = owner(&user);
    let needs_ledger = matches!(command, StoreCommand::Put { .. } | StoreCommand::Verify { .. } | StoreCommand::Repair { .. } | StoreCommand::Rm { .. });
    let mut session = match ledger {
        Some(factory) if needs_ledger => Some(factory(&user)?),
        _ => None,
    };
    match command {
        StoreCommand::Put { file, data_shards, parity_shards, name, segment_kib, price_per_mib, nodes } => {
            let reader = std::fs::File::open(&file).context(|| format!("cannot open {}", file.display()))?;
            let size = reader.metadata().map(|m| m.len()).unwrap_or(0);
            let name = name.unwrap_or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let (mut pool, mut found, mut notes) = reach(connector, &nodes.nodes, &user, true)?;
            let wanted = usize::from(data_shards.unwrap_or(0)) + usize::from(parity_shards.unwrap_or(0));
            if (data_shards.is_some() || parity_shards.is_some()) && found.usable.len() < wanted {
                // Nodes that linked a moment ago may not be in a node's peers yet.
                std::thread::sleep(std::time::Duration::from_secs(2));
                found = engine::discover(&mut pool, &found.seeds.clone(), true);
            }
            let bar = Bar::new(nodes.json);
            let input = engine::PutInput {
                reader: std::io::BufReader::with_capacity(1 << 20, reader),
                name,
                size_hint: size,
                data_shards,
                parity_shards,
                segment_bytes: segment_kib.map(|k| k.saturating_mul(1024)),
            };
            let mut pay = pay_with(&mut session, price_per_mib);
            let result = engine::put(&mut pool, &me, &found, input, &bar, pay.as_mut());
            let (mut report, manifest) = match result {
                Ok(done) => done,
                Err(e) => {
                    let paid = pay.map(|p| p.created).unwrap_or_default();
                    if paid.is_empty() {
                        return Err(e);
                    }
                    return Err(Error(format!("{e} (storage contracts {paid:?} were created and are billed until cancelled: `gridctl ledger cancel ID`)")));
                }
            };
            notes.append(&mut report.notes);
            report.notes = notes;
            index::upsert(
                &index_path,
                index::Entry {
                    id: report.id.clone(),
                    name: report.name.clone(),
                    size: report.size,
                    data_shards: report.data_shards,
                    parity_shards: report.parity_shards,
                    segments: manifest.segments.len() as u64,
                    stored_at: index::now_secs(),
                },
                None,
            )?;
            emit(out, nodes.json, &report, |o| {
                for n in &report.notes {
                    writeln!(o, "note: {n}")?;
                }
                writeln!(
                    o,
                    "stored {} ({} bytes) as {} segments of K={} + M={} shards on {} nodes; manifest on {} nodes",
                    report.name,
                    report.size,
                    report.segments,
                    report.data_shards,
                    report.parity_shards,
                    report.nodes.len(),
                    report.manifest_copies
                )?;
                if !report.contracts.is_empty() {
                    writeln!(o, "storage contracts {:?}; the manifest's copies under contract {}", report.contracts, report.manifest_contract.map_or("-".into(), |c| c.to_string()))?;
                }
                writeln!(o, "{}", report.id)
            })
        }
        StoreCommand::Get { id, output, nodes } => {
            let id = index::resolve(&index_path, &id)?;
            let (mut pool, mut found, notes) = reach(connector, &nodes.nodes, &user, false)?;
            let bar = Bar::new(nodes.json);
            let mut report = engine::get(&mut pool, &me, &mut found, &id, &output, &bar)?;
            let mut all = notes;
            all.append(&mut report.notes);
            report.notes = all;
            emit(out, nodes.json, &report, |o| {
                for n in &report.notes {
                    writeln!(o, "note: {n}")?;
                }
                writeln!(o, "wrote {} ({} bytes)", report.path, report.size)?;
                if report.missing_shards + report.corrupt_shards > 0 {
                    writeln!(
                        o,
                        "{} shards missing and {} corrupt on the way (rebuilt from parity); `gridctl store repair` restores them",
                        report.missing_shards, report.corrupt_shards
                    )?;
                }
                Ok(())
            })
        }
        StoreCommand::Verify { id, nodes } => {
            let id = index::resolve(&index_path, &id)?;
            let (mut pool, mut found, _notes) = reach(connector, &nodes.nodes, &user, false)?;
            let manifest = engine::find_manifest(&mut pool, &me, &mut found, &id)?;
            let mut report = engine::check(&mut pool, &me, &manifest, &id);
            if let Some(ledger) = session.as_deref_mut() {
                engine::ledger_record(&mut report, &manifest, ledger)?;
            }
            emit(out, nodes.json, &report, |o| print_health(o, &report))?;
            if report.ok {
                Ok(())
            } else {
                let bad = report.shards.iter().filter(|s| s.status != Health::Ok).count();
                Err(Error(format!(
                    "{bad} of {} shards are missing or corrupt{}; `gridctl store repair {}` rebuilds them",
                    report.shards.len(),
                    if report.lost_segments.is_empty() { String::new() } else { format!(" and segments {:?} are lost", report.lost_segments) },
                    report.id
                )))
            }
        }
        StoreCommand::Repair { id, price_per_mib, nodes } => {
            let given = index::resolve(&index_path, &id)?;
            let (mut pool, mut found, mut notes) = reach(connector, &nodes.nodes, &user, true)?;
            let bar = Bar::new(nodes.json);
            let mut pay = pay_with(&mut session, price_per_mib);
            let (mut report, manifest) = engine::repair(&mut pool, &me, &mut found, &given, &bar, pay.as_mut())?;
            notes.append(&mut report.notes);
            report.notes = notes;
            if let Some(previous) = &report.previous_id {
                let name = manifest.name.clone();
                index::upsert(
                    &index_path,
                    index::Entry {
                        id: report.id.clone(),
                        name,
                        size: manifest.size,
                        data_shards: manifest.params.data_shards,
                        parity_shards: manifest.params.parity_shards,
                        segments: manifest.segments.len() as u64,
                        stored_at: index::now_secs(),
                    },
                    Some(previous),
                )?;
            }
            emit(out, nodes.json, &report, |o| {
                for n in &report.notes {
                    writeln!(o, "note: {n}")?;
                }
                for r in &report.repaired {
                    writeln!(o, "segment {} shard {}: rebuilt onto {} ({})", r.segment, r.shard, engine::short_hex(&r.node), r.detail)?;
                }
                match &report.previous_id {
                    Some(p) => writeln!(o, "repaired {} shards; the file id is now (was {p}):\n{}", report.repaired.len(), report.id),
                    None if report.lost_segments.is_empty() => writeln!(o, "every shard is ok; nothing to repair\n{}", report.id),
                    None => writeln!(o, "nothing could be repaired\n{}", report.id),
                }
            })?;
            if report.lost_segments.is_empty() {
                Ok(())
            } else {
                Err(Error(format!("segments {:?} have fewer than K healthy shards and cannot be rebuilt", report.lost_segments)))
            }
        }
        StoreCommand::Ls { json, remote: true, nodes } => {
            let (mut pool, found, mut notes) = reach(connector, &nodes, &user, true)?;
            let (files, mut more) = engine::remote_files(&mut pool, &me, &found);
            notes.append(&mut more);
            #[derive(Serialize)]
            struct Listing<'a> {
                files: &'a [engine::RemoteFile],
                notes: &'a [String],
            }
            emit(out, json, &Listing { files: &files, notes: &notes }, |o| {
                for n in &notes {
                    writeln!(o, "note: {n}")?;
                }
                writeln!(o, "{:<64}  {:>12}  {:>5}  {:>6}  NAME", "ID", "BYTES", "K+M", "COPIES")?;
                for f in &files {
                    let km = format!("{}+{}", f.data_shards, f.parity_shards);
                    writeln!(o, "{:<64}  {:>12}  {:>5}  {:>6}  {}", f.id, f.size, km, f.manifest_copies, f.name)?;
                }
                Ok(())
            })
        }
        StoreCommand::Ls { json, .. } => {
            let entries = index::load(&index_path)?;
            emit(out, json, &entries, |o| {
                writeln!(o, "{:<64}  {:>12}  {:>5}  NAME", "ID", "BYTES", "K+M")?;
                for e in &entries {
                    writeln!(o, "{:<64}  {:>12}  {:>5}  {}", e.id, e.size, format!("{}+{}", e.data_shards, e.parity_shards), e.name)?;
                }
                Ok(())
            })
        }
        StoreCommand::Rm { id, nodes } => {
            let id = index::resolve(&index_path, &id)?;
            let (mut pool, mut found, _notes) = reach(connector, &nodes.nodes, &user, false)?;
            let ledger = session.as_deref_mut().map(|l| l as &mut dyn contracts::StoreLedger);
            let report = engine::rm(&mut pool, &me, &mut found, &id, ledger)?;
            index::remove(&index_path, &report.id)?;
            emit(out, nodes.json, &report, |o| {
                writeln!(
                    o,
                    "removed {}: {} shards deleted, {} already gone, {} manifest copies deleted",
                    report.id, report.deleted, report.already_gone, report.manifest_copies_deleted
                )?;
                if !report.contracts_cancelled.is_empty() {
                    writeln!(o, "storage contracts cancelled: {:?}", report.contracts_cancelled)?;
                }
                Ok(())
            })
        }
    }
}

/// Paying with the ledger session, if there is one.
fn pay_with(session: &mut Option<Box<dyn contracts::StoreLedger>>, per_mib: Option<u64>) -> Option<engine::Pay<'_>> {
    let price_per_mib = per_mib.unwrap_or(crate::onledger::STORAGE_PRICE_PER_MIB_DEFAULT);
    let ledger: &mut dyn contracts::StoreLedger = session.as_deref_mut()?;
    Some(engine::Pay { ledger, price_per_mib, created: Vec::new() })
}

fn print_health(o: &mut dyn Write, report: &engine::VerifyReport) -> std::io::Result<()> {
    let mut rows: Vec<&engine::ShardHealth> = report.shards.iter().collect();
    rows.sort_by(|a, b| (&a.node, a.segment, a.shard).cmp(&(&b.node, b.segment, b.shard)));
    if let Some(period) = report.ledger_period {
        // The ledger's record: the contract naming each placement and its last proven period.
        writeln!(o, "ledger period {period}; PROVEN: the last period the ledger recorded a valid proof of the shard")?;
        writeln!(o, "{:<16}  {:>7}  {:>5}  {:<7}  {:>8}  {:>6}  DETAIL", "NODE", "SEGMENT", "SHARD", "STATUS", "CONTRACT", "PROVEN")?;
        for s in rows {
            let contract = s.contract.map_or("-".to_string(), |c| c.to_string());
            let proven = s.proven_period.map_or("never".to_string(), |p| p.to_string());
            writeln!(o, "{:<16}  {:>7}  {:>5}  {:<7}  {:>8}  {:>6}  {}", engine::short_hex(&s.node), s.segment, s.shard, s.status, contract, proven, s.detail)?;
        }
    } else {
        writeln!(o, "{:<16}  {:>7}  {:>5}  {:<7}  DETAIL", "NODE", "SEGMENT", "SHARD", "STATUS")?;
        for s in rows {
            writeln!(o, "{:<16}  {:>7}  {:>5}  {:<7}  {}", engine::short_hex(&s.node), s.segment, s.shard, s.status, s.detail)?;
        }
    }
    let count = |h: Health| report.shards.iter().filter(|s| s.status == h).count();
    writeln!(
        o,
        "{} shards: {} ok, {} missing, {} corrupt{}",
        report.shards.len(),
        count(Health::Ok),
        count(Health::Missing),
        count(Health::Corrupt),
        if report.lost_segments.is_empty() { String::new() } else { format!("; segments {:?} LOST", report.lost_segments) }
    )
}

/// Hex of a key, for tests and tools.
pub fn key_hex(key: &[u8; 32]) -> String {
    hex(key)
}

#[cfg(test)]
mod test;
