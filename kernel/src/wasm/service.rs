//! The node's workload service: one [`Manager`] for everything deployed on the node,
//! a scheduler task that gives the workloads their time slices between the other
//! tasks (network, services), persistence of deployments ([`super::persist`]) and
//! restart at boot. The control service (`crate::control`) calls the functions here.
//!
//! Workload ids are the workload table's (never reused) when the node persists
//! workloads, else counted from 0 in memory.
//!
//! Admission: every deploy, and every restart at boot, is checked against the node's
//! totals and the owner's fair share ([`super::admission`], rule in
//! `workloads::admission`) from what the node holds now. A removed workload is dropped
//! from the manager (its index is reused), so deploy and remove in a loop hold nothing.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

use nodestate::workloads::Desired;
use workloads::admission::{self as policy, AdmissionError, Ask, Holding};
use workloads::logstore::LogRead;
use workloads::{Limits, SignedManifest};

use super::persist::{self, ShardKind};
use super::files::StoredFiles;
use super::{admission, console_log, Extras, Info, Manager, Status};
use crate::executor::{self, Event};
use crate::net::OVERLAY_SOCKETS_CHANGED;

/// A workload the node knows about.
struct Deployed {
    id: u64,
    owner: [u8; 32],
    name: String,
    restart_on_boot: bool,
    /// Its index in the manager; `None` when it has not run since the node booted.
    index: Option<usize>,
    /// What admission counts: its limits, ports and signed manifest's size.
    limits: Limits,
    listen: Vec<u16>,
    manifest_bytes: usize,
    /// The ledger contract it runs under (`Manifest::contract`; issue 14).
    contract: Option<u64>,
}

struct NodeWorkloads {
    mgr: Manager,
    deployed: Vec<Deployed>,
    next_memory_id: u64,
}

// SAFETY: workloads are only touched from executor tasks on the boot CPU, under
// `NODE`'s lock, never from interrupt handlers. Their fibers' slices may run on
// application processors, but only inside `Manager::run_round`, which holds the
// manager mutably (through that lock) and waits until each slice has ended.
unsafe impl Send for NodeWorkloads {}

static NODE: Mutex<Option<NodeWorkloads>> = Mutex::new(None);
/// Signalled when there is new work for the scheduler.
static WORK: Event = Event::new();

/// Workloads one owner may have on the node (deployed and not removed): their share
/// of [`admission::WORKLOADS_MAX`].
pub const WORKLOADS_PER_OWNER_MAX: usize = (admission::WORKLOADS_MAX / policy::OWNERS_TO_FILL) as usize;

/// A workload as the control service reports it.
#[derive(Debug, Clone)]
pub struct Summary {
    pub id: u64,
    pub owner: [u8; 32],
    pub name: String,
    pub restart_on_boot: bool,
    /// `None`: deployed, but not run since the node booted.
    pub info: Option<Info>,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    NotFound,
    /// The module, manifest or bundle was refused.
    Rejected(String),
    /// Storing the deployment failed.
    Storage(String),
    /// The deploy does not fit the node or its owner's share (admission).
    Admission(AdmissionError),
    /// The workload is running (a start or an area change must wait for its end).
    Running,
}

impl core::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ServiceError::NotFound => f.write_str("no such workload"),
            ServiceError::Rejected(why) => write!(f, "rejected: {why}"),
            ServiceError::Storage(why) => write!(f, "storage: {why}"),
            ServiceError::Admission(why) => write!(f, "{why}"),
            ServiceError::Running => f.write_str("the workload is running"),
        }
    }
}

/// Starts the service: restarts the persisted workloads that ask for it and spawns
/// the scheduler.
pub fn start() {
    let mut node = NodeWorkloads { mgr: Manager::new(), deployed: Vec::new(), next_memory_id: 0 };
    for entry in persist::snapshot().entries {
        let manifest = SignedManifest::from_bytes(&entry.signed_manifest).and_then(|s| s.verify());
        let Ok(manifest) = manifest else {
            log::error!("workload {}: stored manifest no longer verifies; not started", entry.id);
            continue;
        };
        let mut deployed = Deployed {
            id: entry.id,
            owner: manifest.owner,
            name: manifest.name.clone(),
            restart_on_boot: entry.restart_on_boot,
            index: None,
            limits: manifest.limits,
            listen: manifest.listen.clone(),
            manifest_bytes: entry.signed_manifest.len(),
            contract: manifest.contract,
        };
        // Restarts pass admission too (in table order), so a boot stays within this
        // node's totals even if they shrank (less RAM, a smaller store).
        let restart = entry.restart_on_boot && entry.desired == Desired::Run;
        let admitted = restart && admit(&node, &manifest, entry.signed_manifest.len(), true)
            .map_err(|e| log::error!("workload {} ({}): not restarted: {e}", entry.id, manifest.name))
            .is_ok();
        if admitted {
            let loaded = persist::get(entry.id, ShardKind::Module, &entry.module_key)
                .and_then(|m| persist::get(entry.id, ShardKind::Bundle, &entry.bundle_key).map(|b| (m, b)));
            let extras = Extras { files: Some(Box::new(StoredFiles::for_id(entry.id))), ..Extras::default() };
            match loaded.and_then(|(module, bundle)| node.mgr.deploy_with(&entry.signed_manifest, &module, &bundle, extras)) {
                Ok(index) => {
                    log::info!("workload {} ({}): restarted at boot", entry.id, manifest.name);
                    deployed.index = Some(index);
                }
                Err(e) => log::error!("workload {} ({}): not restarted: {e}", entry.id, manifest.name),
            }
        }
        node.deployed.push(deployed);
    }
    let restarted = node.deployed.iter().filter(|d| d.index.is_some()).count();
    *NODE.lock() = Some(node);
    let p = admission::policy();
    log::info!(
        "workloads: service up ({restarted} restarted, persistence {}); admission: {} workloads, {} MiB memory, {} MiB storage, {} KiB manifests, each owner 1/{} of each; kernel heap {} KiB in use",
        if persist::available() { "on" } else { "off" },
        p.total.get(policy::Resource::Workloads),
        p.total.get(policy::Resource::MemoryBytes) >> 20,
        p.total.get(policy::Resource::StorageBytes) >> 20,
        p.total.get(policy::Resource::ManifestBytes) >> 10,
        policy::OWNERS_TO_FILL,
        crate::mm::heap::allocated_bytes() >> 10
    );
    executor::spawn("workloads", schedule());
    WORK.signal();
}

/// Gives the workloads their slices; sleeps while none is unfinished.
async fn schedule() {
    loop {
        let round = NODE.lock().as_mut().map(|n| n.mgr.run_round()).unwrap_or_default();
        if round.unfinished > round.blocked {
            executor::yield_now().await;
            continue;
        }
        // Nothing to compute: wait for new work, for the overlay's sockets to change
        // (when workloads are parked on them), or until the earliest parked workload
        // wants to look again (its sleep ends, or the fallback socket poll).
        let deadline = round.next_wake_ns;
        let _ = OVERLAY_SOCKETS_CHANGED.take();
        executor::wait_then_yield(deadline, |waker| {
            WORK.register_waker(waker);
            let mut ready = WORK.take();
            if round.blocked > 0 {
                OVERLAY_SOCKETS_CHANGED.register_waker(waker);
                ready |= OVERLAY_SOCKETS_CHANGED.take();
            }
            ready
        })
        .await;
    }
}

fn with_node<R>(f: impl FnOnce(&mut NodeWorkloads) -> R) -> Option<R> {
    NODE.lock().as_mut().map(f)
}

/// Verifies and starts a workload, persisting it first when the node can; returns
/// its id once it is durable.
/// (OCI images are unpacked by the caller: the control protocol's `serve`.)
pub fn deploy(signed_manifest: &[u8], module: &[u8], bundle: &[u8]) -> Result<u64, ServiceError> {
    let manifest = SignedManifest::from_bytes(signed_manifest)
        .and_then(|s| s.verify())
        .map_err(|e| ServiceError::Rejected(format!("{e}")))?;
    crate::ledger::check_deploy(&manifest).map_err(ServiceError::Rejected)?;
    let mut guard = NODE.lock();
    let node = guard.as_mut().ok_or_else(|| ServiceError::Rejected("workload service not running".into()))?;
    admit(node, &manifest, signed_manifest.len(), true).map_err(ServiceError::Admission)?;
    // The id the table will hand out (nothing else commits in between: the node lock
    // is held), so the file area can be named before the deploy is stored.
    let extras = match persist::available() {
        true => Extras { files: Some(Box::new(StoredFiles::for_id(persist::with_table(|t| t.next_id)))), ..Extras::default() },
        false => Extras::default(),
    };
    let index = node.mgr.deploy_with(signed_manifest, module, bundle, extras).map_err(ServiceError::Rejected)?;
    let id = if persist::available() {
        match store_deployment(signed_manifest, module, bundle, manifest.restart_on_boot) {
            Ok(id) => id,
            Err(e) => {
                node.mgr.discard_unstarted(index);
                return Err(ServiceError::Storage(e));
            }
        }
    } else {
        node.next_memory_id += 1;
        node.next_memory_id - 1
    };
    log::info!("workload {id} ({}): deployed by {}{}", manifest.name, crate::overlay::hex(&manifest.owner[..8]),
        manifest.image.as_deref().map(|i| format!(", image {i}")).unwrap_or_default());
    node.deployed.push(Deployed {
        id,
        owner: manifest.owner,
        name: manifest.name,
        restart_on_boot: manifest.restart_on_boot,
        index: Some(index),
        limits: manifest.limits,
        contract: manifest.contract,
        listen: manifest.listen,
        manifest_bytes: signed_manifest.len(),
    });
    drop(guard);
    WORK.signal();
    Ok(id)
}

/// Whether `d` runs (or is about to): then it holds memory and its ports.
fn running(node: &NodeWorkloads, d: &Deployed) -> bool {
    d.index.and_then(|i| node.mgr.info(i)).is_some_and(|i| !matches!(i.status, Status::Done(_)))
}

/// What `d` holds now, as admission counts it.
fn usage_of(node: &NodeWorkloads, d: &Deployed) -> policy::Usage {
    let run = running(node, d);
    let memory = if run { policy::memory_charge_bytes(&d.limits, console_log::kept_log_bytes(&d.limits) as u64) } else { 0 };
    let storage = if persist::available() { d.limits.storage_bytes } else { 0 };
    policy::Usage::new(1, memory, storage, d.manifest_bytes as u64)
}

/// Admission for `manifest` next to what the node holds (see [`super::admission`]).
/// `manifest_bytes` is what it adds to the table; `run`: it is about to run.
fn admit(node: &NodeWorkloads, manifest: &workloads::Manifest, manifest_bytes: usize, run: bool) -> Result<(), AdmissionError> {
    admit_except(node, manifest, manifest_bytes, run, None)
}

/// [`admit`], not counting the deployed workload `except` (the one asking, when it is
/// deployed already and about to run again).
fn admit_except(node: &NodeWorkloads, manifest: &workloads::Manifest, manifest_bytes: usize, run: bool, except: Option<u64>)
    -> Result<(), AdmissionError> {
    let policy = admission::policy();
    let others: Vec<&Deployed> = node.deployed.iter().filter(|d| Some(d.id) != except).collect();
    let usage: Vec<(policy::Usage, bool)> = others.iter().map(|d| (usage_of(node, d), running(node, d))).collect();
    let held = others.iter().zip(&usage).map(|(d, (u, run))| Holding {
        owner: d.owner,
        usage: *u,
        ports: if *run { &d.listen[..] } else { &[] },
    });
    let ask = admission::usage(manifest, manifest_bytes, run, persist::available());
    policy::admit(&policy, held, &Ask { owner: manifest.owner, usage: ask, ports: &manifest.listen })
}

/// What `owner` may see of the node: their own workloads' count, and the storage they
/// could still be granted (the smaller of their share's and the node's headroom).
pub fn owner_view(owner: &[u8; 32]) -> (u32, u64) {
    with_node(|node| {
        let policy = admission::policy();
        let (mut mine, mut all) = (policy::Usage::default(), policy::Usage::default());
        let mut count = 0u32;
        for d in &node.deployed {
            let u = usage_of(node, d);
            all.add(&u);
            if d.owner == *owner {
                mine.add(&u);
                count += 1;
            }
        }
        let r = policy::Resource::StorageBytes;
        let node_room = policy.total.get(r).saturating_sub(all.get(r));
        let share_room = policy.share(r).saturating_sub(mine.get(r));
        (count, node_room.min(share_room))
    })
    .unwrap_or((0, 0))
}

/// Stores module and bundle shards, then the table entry naming them.
fn store_deployment(signed_manifest: &[u8], module: &[u8], bundle: &[u8], restart_on_boot: bool) -> Result<u64, String> {
    store_deployment_as(signed_manifest, module, bundle, restart_on_boot, Desired::Run)
}

/// [`store_deployment`] with what the owner asked for (`Stopped`: a held deploy, not
/// started at boot until started), in the same table commit.
fn store_deployment_as(signed_manifest: &[u8], module: &[u8], bundle: &[u8], restart_on_boot: bool, desired: Desired)
    -> Result<u64, String> {
    let id = persist::with_table(|t| t.next_id);
    let module_key = persist::put(id, ShardKind::Module, module)?;
    let bundle_key = persist::put(id, ShardKind::Bundle, bundle)?;
    let added = persist::commit(|t| {
        let added = t.add(signed_manifest.into(), module_key, bundle_key, restart_on_boot);
        if let Some(e) = t.get_mut(added) {
            e.desired = desired;
        }
        added
    });
    match added {
        Ok(added) if added == id => Ok(id),
        Ok(added) => Err(format!("workload table handed out id {added}, expected {id}")),
        Err(e) => {
            persist::delete_unreferenced([module_key, bundle_key]);
            Err(e)
        }
    }
}

fn summary(node: &NodeWorkloads, d: &Deployed) -> Summary {
    Summary {
        id: d.id,
        owner: d.owner,
        name: d.name.clone(),
        restart_on_boot: d.restart_on_boot,
        info: d.index.and_then(|i| node.mgr.info(i)),
    }
}

/// Every workload on the node.
pub fn list() -> Vec<Summary> {
    with_node(|node| node.deployed.iter().map(|d| summary(node, d)).collect()).unwrap_or_default()
}

/// A workload deployed under a ledger contract, as the ledger client measures it.
#[derive(Debug, Clone)]
pub struct UnderContract {
    pub id: u64,
    pub name: String,
    pub contract: u64,
    /// Whether it runs (or is about to).
    pub running: bool,
    /// CPU time of its current run (since it last started).
    pub cpu_ms: u64,
    pub memory_peak_bytes: u64,
    /// Bytes of its file area.
    pub disk_bytes: u64,
}

/// Every workload that names a ledger contract (at most the node's workload table).
pub fn under_contracts() -> Vec<UnderContract> {
    let mut out: Vec<UnderContract> = with_node(|node| {
        node.deployed
            .iter()
            .filter_map(|d| {
                let contract = d.contract?;
                let info = d.index.and_then(|i| node.mgr.info(i));
                Some(UnderContract {
                    id: d.id,
                    name: d.name.clone(),
                    contract,
                    running: running(node, d),
                    cpu_ms: info.as_ref().map_or(0, |i| i.cpu_ms),
                    memory_peak_bytes: info.as_ref().map_or(0, |i| i.memory_peak_bytes),
                    disk_bytes: 0,
                })
            })
            .collect()
    })
    .unwrap_or_default();
    for w in &mut out {
        w.disk_bytes = persist::with_table(|t| t.get(w.id).map_or(0, |e| e.files.iter().map(|f| f.len_bytes).sum()));
    }
    out
}

/// One workload.
pub fn status(id: u64) -> Option<Summary> {
    with_node(|node| node.deployed.iter().find(|d| d.id == id).map(|d| summary(node, d))).flatten()
}

/// Log lines of `id` from line `from_line` on (at most `max_lines` and
/// [`console_log::LOG_READ_BYTES_MAX`] bytes of text), and whether the workload has
/// finished.
pub fn logs(id: u64, from_line: u64, max_lines: usize) -> Result<(LogRead, bool), ServiceError> {
    with_node(|node| {
        let d = node.deployed.iter().find(|d| d.id == id).ok_or(ServiceError::NotFound)?;
        let empty = LogRead { lines: Vec::new(), start_line: from_line, next_line: from_line, dropped_before: 0, more: false };
        let Some(index) = d.index else { return Ok((empty, true)) };
        let read = node.mgr.read_log(index, from_line, max_lines, console_log::LOG_READ_BYTES_MAX).unwrap_or(empty);
        let finished = matches!(node.mgr.info(index).map(|i| i.status), Some(Status::Done(_)) | None);
        Ok((read, finished))
    })
    .unwrap_or(Err(ServiceError::NotFound))
}

/// Stops `id` (at its next slice) and keeps it from restarting at boot.
pub fn stop(id: u64) -> Result<(), ServiceError> {
    let index = with_node(|node| node.deployed.iter().find(|d| d.id == id).map(|d| d.index))
        .flatten()
        .ok_or(ServiceError::NotFound)?;
    if persist::with_table(|t| t.get(id).is_some()) {
        persist::commit(|t| {
            if let Some(e) = t.get_mut(id) {
                e.desired = Desired::Stopped;
            }
        })
        .map_err(ServiceError::Storage)?;
    }
    if let Some(index) = index {
        with_node(|node| node.mgr.stop(index));
        WORK.signal();
    }
    Ok(())
}

/// Stops `id` and forgets it: its table entry, module, bundle and files are deleted.
pub fn remove(id: u64) -> Result<(), ServiceError> {
    stop(id)?;
    if persist::with_table(|t| t.get(id).is_some()) {
        let removed = persist::commit(|t| t.remove(id)).map_err(ServiceError::Storage)?;
        if let Some(entry) = removed {
            persist::delete_unreferenced(entry.keys().collect::<Vec<_>>());
        }
    }
    let kept = with_node(|node| {
        if let Some(index) = node.deployed.iter().find(|d| d.id == id).and_then(|d| d.index) {
            node.mgr.remove(index);
        }
        node.deployed.retain(|d| d.id != id);
        node.mgr.kept()
    });
    WORK.signal();
    log::info!("workload {id}: removed ({} kept by the manager); kernel heap {} KiB in use", kept.unwrap_or(0),
        crate::mm::heap::allocated_bytes() >> 10);
    Ok(())
}

/// Verifies and stores a workload without starting it (its owner seeds its file area,
/// then starts it, [`start_run`]); needs the node's storage. Admission counts it as deployed, not
/// running; [`start_run`] checks the rest.
pub fn deploy_held(signed_manifest: &[u8], module: &[u8], bundle: &[u8]) -> Result<u64, ServiceError> {
    let manifest = SignedManifest::from_bytes(signed_manifest)
        .and_then(|s| s.verify())
        .map_err(|e| ServiceError::Rejected(format!("{e}")))?;
    crate::ledger::check_deploy(&manifest).map_err(ServiceError::Rejected)?;
    if !persist::available() {
        return Err(ServiceError::Rejected("a held deploy needs the node's storage, and this node keeps none".into()));
    }
    let imports = workloads::module::check_structure(module).map_err(ServiceError::Rejected)?;
    workloads::module::check_imports(&imports).map_err(ServiceError::Rejected)?;
    manifest.check_module(module).map_err(|e| ServiceError::Rejected(format!("{e}")))?;
    let mut guard = NODE.lock();
    let node = guard.as_mut().ok_or_else(|| ServiceError::Rejected("workload service not running".into()))?;
    admit(node, &manifest, signed_manifest.len(), false).map_err(ServiceError::Admission)?;
    // Not started at boot until its owner starts it.
    let id = store_deployment_as(signed_manifest, module, bundle, manifest.restart_on_boot, Desired::Stopped)
        .map_err(ServiceError::Storage)?;
    log::info!("workload {id} ({}): stored, held until started, by {}{}", manifest.name, crate::overlay::hex(&manifest.owner[..8]),
        manifest.image.as_deref().map(|i| format!(", image {i}")).unwrap_or_default());
    node.deployed.push(Deployed {
        id,
        owner: manifest.owner,
        name: manifest.name,
        restart_on_boot: manifest.restart_on_boot,
        index: None,
        limits: manifest.limits,
        contract: manifest.contract,
        listen: manifest.listen,
        manifest_bytes: signed_manifest.len(),
    });
    Ok(id)
}

/// Starts `id`, which must not be running (held, stopped, finished, or not run since
/// boot): a new run from its stored module and bundle, with `stdin` as its standard
/// input; the previous run's output is dropped. Admission is checked as for a deploy.
pub fn start_run(id: u64, stdin: Vec<u8>) -> Result<(), ServiceError> {
    let entry = persist::with_table(|t| t.get(id).cloned()).ok_or_else(|| {
        ServiceError::Rejected("only a workload the node stored can be started again (this node keeps no storage)".into())
    })?;
    let manifest = SignedManifest::from_bytes(&entry.signed_manifest)
        .and_then(|s| s.verify())
        .map_err(|e| ServiceError::Rejected(format!("stored manifest: {e}")))?;
    crate::ledger::check_deploy(&manifest).map_err(ServiceError::Rejected)?;
    let mut guard = NODE.lock();
    let node = guard.as_mut().ok_or_else(|| ServiceError::Rejected("workload service not running".into()))?;
    let d = node.deployed.iter().find(|d| d.id == id).ok_or(ServiceError::NotFound)?;
    if running(node, d) {
        return Err(ServiceError::Running);
    }
    let old = d.index;
    admit_except(node, &manifest, entry.signed_manifest.len(), true, Some(id)).map_err(ServiceError::Admission)?;
    let module = persist::get(id, ShardKind::Module, &entry.module_key).map_err(ServiceError::Storage)?;
    let bundle = persist::get(id, ShardKind::Bundle, &entry.bundle_key).map_err(ServiceError::Storage)?;
    persist::commit(|t| {
        if let Some(e) = t.get_mut(id) {
            e.desired = Desired::Run;
        }
    })
    .map_err(ServiceError::Storage)?;
    if let Some(old) = old {
        node.mgr.remove(old);
    }
    let extras = Extras { files: Some(Box::new(StoredFiles::for_id(id))), stdin };
    let index = node.mgr.deploy_with(&entry.signed_manifest, &module, &bundle, extras).map_err(ServiceError::Rejected)?;
    if let Some(d) = node.deployed.iter_mut().find(|d| d.id == id) {
        d.index = Some(index);
    }
    log::info!("workload {id} ({}): started", manifest.name);
    drop(guard);
    WORK.signal();
    Ok(())
}

/// The file area of `id` as its owner sees it through the control service.
pub fn area(id: u64) -> Result<control::AreaView, ServiceError> {
    let (quota_bytes, running) = with_node(|node| {
        node.deployed.iter().find(|d| d.id == id).map(|d| (d.limits.storage_bytes, running(node, d)))
    })
    .flatten()
    .ok_or(ServiceError::NotFound)?;
    let files = persist::with_table(|t| t.get(id).map(|e| e.files.iter().map(|f| (f.name.clone(), f.len_bytes)).collect::<Vec<_>>()));
    match files {
        Some(files) if quota_bytes > 0 => Ok(control::AreaView { files, quota_bytes, running }),
        _ => Err(ServiceError::Rejected(format!("workload {id} has no file area (its storage_bytes is 0, or the node keeps no storage)"))),
    }
}

/// Raw bytes of `id`'s output stream from `offset` (at most `max_bytes`), its length
/// so far, and whether the run ended (a workload not run since boot: nothing, ended).
pub fn raw_log(id: u64, stream: workloads::log::Stream, offset: u64, max_bytes: usize) -> Result<(Vec<u8>, u64, bool), ServiceError> {
    with_node(|node| {
        let d = node.deployed.iter().find(|d| d.id == id).ok_or(ServiceError::NotFound)?;
        Ok(d.index.and_then(|i| node.mgr.read_raw(i, stream, offset, max_bytes)).unwrap_or((Vec::new(), 0, true)))
    })
    .unwrap_or(Err(ServiceError::NotFound))
}
