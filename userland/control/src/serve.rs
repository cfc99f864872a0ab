//! The node's side of each request: the [`Backend`] the kernel implements (workload
//! table, runner, logs, storage) and [`serve`], which checks everything that does not need
//! the kernel (manifest signature and owner, module hash, ownership of the workload named)
//! before calling it.
//!
//! The backend never sees a request it should refuse on authorization grounds, so it
//! needs no rules of its own, only its resource limits (answering `NoSpace`, `Busy`, ...).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use workloads::manifest::{Manifest, SignedManifest};

use crate::message::{ErrorCode, NodeInfo, NodeStatus, Payload, Request, Response, WorkloadSummary};
use crate::session::Authorized;
use crate::files::{self, FileBackend};
use crate::shard::{self, Connection, ShardBackend};

/// Most log lines in one `Logs` response.
pub const LOG_LINES_PER_RESPONSE_MAX: usize = 1000;

/// A refusal from the backend; becomes `Response::Error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl BackendError {
    /// A refusal.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> BackendError {
        BackendError { code, message: message.into() }
    }
}

/// A deployment that passed every check `serve` can make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    /// The signer, equal to `manifest.owner`.
    pub owner: [u8; 32],
    /// The verified manifest (signature, limits, name checked).
    pub manifest: Manifest,
    /// The signed manifest as received (`SignedManifest::to_bytes` form), for storage.
    pub signed_manifest: Vec<u8>,
    /// The wasm module; its blake3 is `manifest.module_blake3` (checked).
    pub module: Vec<u8>,
    /// `sha256:...` of the OCI image manifest when the payload was an image layout.
    pub oci_manifest_digest: Option<String>,
    /// The attested native-code bundle as received, or empty (not checked here: the loader
    /// verifies its attestation against the node's trusted compilers, or interprets the
    /// module when it is empty).
    pub bundle: Vec<u8>,
}

/// Log lines for a `Logs` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    /// Lines `[from_line, next_line)`, without newlines.
    pub lines: Vec<String>,
    /// Where the next request should start.
    pub next_line: u64,
    /// The workload ended and no line is left after `next_line`.
    pub finished: bool,
}

/// What the kernel provides. `owner` is always the request's (checked) signer; `serve`
/// has already applied the authorization rules, so ids passed in belong to `owner`.
/// The shard service's part is [`ShardBackend`] (see [`crate::shard`]).
pub trait Backend: ShardBackend + FileBackend {
    /// Stores and starts a workload; returns its id.
    fn deploy(&mut self, deployment: Deployment) -> Result<u64, BackendError>;
    /// Workloads of `owner` (`serve` filters again, so returning all is safe but wasteful).
    fn list(&mut self, owner: &[u8; 32]) -> Vec<WorkloadSummary>;
    /// The workload `id`, *whoever owns it* (`serve` uses it for the ownership check).
    fn status(&mut self, owner: &[u8; 32], id: u64) -> Option<WorkloadSummary>;
    /// At most `max_lines` log lines of `id` starting at `from_line`.
    fn logs(&mut self, owner: &[u8; 32], id: u64, from_line: u64, max_lines: usize) -> Result<LogChunk, BackendError>;
    /// Stops `id` (a finished workload stays as it is: not an error).
    fn stop(&mut self, owner: &[u8; 32], id: u64) -> Result<(), BackendError>;
    /// Stops if needed and forgets `id` with its stored files.
    fn remove(&mut self, owner: &[u8; 32], id: u64) -> Result<(), BackendError>;
    /// The node's identity and resources.
    fn node_info(&mut self, owner: &[u8; 32]) -> NodeInfo;
    /// Whether `owner` is the node's farmer (`gridos.farmer`). None by default.
    fn is_farmer(&mut self, _owner: &[u8; 32]) -> bool {
        false
    }
    /// The node's full status (the farmer's view); `serve` cuts it down for others.
    fn node_status(&mut self) -> NodeStatus {
        NodeStatus::default()
    }
    /// Kernel log lines from `from_line` on, at most `max_lines`: (lines, first line
    /// number returned, next line number).
    fn node_logs(&mut self, _from_line: u64, _max_lines: usize) -> (Vec<String>, u64, u64) {
        (Vec::new(), 0, 0)
    }
}

/// Answers `NodeStatus` for `owner`: everything for the farmer; for anyone else the
/// public part and their own workloads only.
fn node_status(backend: &mut impl Backend, owner: &[u8; 32]) -> Response {
    let farmer = backend.is_farmer(owner);
    let mut status = backend.node_status();
    status.farmer_view = farmer;
    if !farmer {
        status.workloads.retain(|w| w.owner == *owner);
        status.disks = Vec::new();
        status.nics = Vec::new();
        status.heap_used_bytes = 0;
        status.heap_size_bytes = 0;
    }
    Response::NodeStatus(status)
}

fn refuse(e: BackendError) -> Response {
    Response::Error { code: e.code, message: e.message }
}

/// Answers one authorized request on a connection whose shard state is `conn`, applying
/// the authorization rules (see the crate docs and [`crate::shard`]). Call
/// [`Connection::close`] when the connection ends.
pub fn serve(backend: &mut impl Backend, conn: &mut Connection, req: Authorized) -> Response {
    let owner = req.owner;
    if !matches!(req.request, Request::ShardGet { .. }) {
        // A read in pieces is a run of `ShardGet`s: anything else ends it.
        conn.end_read(backend);
    }
    if !matches!(req.request, Request::FileGet { .. }) {
        // The same for a file read in `FileGet`s.
        conn.drop_file_read(backend);
    }
    match req.request {
        Request::ShardPut { key, total_len, offset, data } => shard::put(backend, conn, owner, key, total_len, offset, data),
        Request::ShardGet { key, offset, len } => shard::get(backend, conn, owner, key, offset, len),
        Request::ShardDelete { key } => shard::delete(backend, conn, owner, key),
        Request::ShardList { after } => shard::list(backend, owner, after),
        Request::ShardStat { key } => shard::stat(backend, owner, key),
        Request::ShardProve { owner: of, key, challenge } => shard::prove(backend, of, key, challenge),
        Request::StoreInfo => shard::store_info(backend, owner),
        Request::Peers => shard::peers(backend),
        Request::NodeStatus => node_status(backend, &owner),
        Request::NodeLogs { from_line } => {
            if !backend.is_farmer(&owner) {
                return Response::error(ErrorCode::Unauthorized, "the node's log is for its farmer only (gridos.farmer)");
            }
            let (mut lines, first_line, mut next_line) = backend.node_logs(from_line, LOG_LINES_PER_RESPONSE_MAX);
            if lines.len() > LOG_LINES_PER_RESPONSE_MAX {
                next_line = next_line.saturating_sub((lines.len() - LOG_LINES_PER_RESPONSE_MAX) as u64);
                lines.truncate(LOG_LINES_PER_RESPONSE_MAX);
            }
            Response::NodeLogs { lines, first_line, next_line }
        }
        Request::Deploy { signed_manifest, payload, bundle } => {
            match check_deploy(owner, signed_manifest, payload, bundle) {
                Ok(d) => backend.deploy(d).map_or_else(refuse, |id| Response::Deployed { id }),
                Err(e) => refuse(e),
            }
        }
        Request::List => {
            let mut all = backend.list(&owner);
            all.retain(|w| w.owner == owner);
            Response::Workloads(all)
        }
        Request::Status { id } => match owned(backend, &owner, id) {
            Ok(summary) => Response::Status(summary),
            Err(e) => refuse(e),
        },
        Request::Logs { id, from_line } => {
            if let Err(e) = owned(backend, &owner, id) {
                return refuse(e);
            }
            match backend.logs(&owner, id, from_line, LOG_LINES_PER_RESPONSE_MAX) {
                Ok(chunk) => logs_response(chunk),
                Err(e) => refuse(e),
            }
        }
        Request::Stop { id } => match owned(backend, &owner, id).and_then(|_| backend.stop(&owner, id)) {
            Ok(()) => Response::Stopped,
            Err(e) => refuse(e),
        },
        Request::Remove { id } => match owned(backend, &owner, id).and_then(|_| backend.remove(&owner, id)) {
            Ok(()) => Response::Removed,
            Err(e) => refuse(e),
        },
        Request::NodeInfo => backend.node_info(&owner).into(),
        Request::DeployHeld { signed_manifest, payload, bundle } => {
            match check_deploy(owner, signed_manifest, payload, bundle) {
                Ok(d) => backend.deploy_held(d).map_or_else(refuse, |id| Response::Deployed { id }),
                Err(e) => refuse(e),
            }
        }
        other => serve_owned(backend, conn, owner, other),
    }
}

/// The requests about one of the signer's workloads that [`crate::files`] handles,
/// after the ownership check.
fn serve_owned(backend: &mut impl Backend, conn: &mut Connection, owner: [u8; 32], request: Request) -> Response {
    let id = match &request {
        Request::Start { id, .. }
        | Request::FileList { id }
        | Request::FileGet { id, .. }
        | Request::FilePut { id, .. }
        | Request::FileRemove { id, .. }
        | Request::LogsRaw { id, .. } => *id,
        _ => return Response::error(ErrorCode::BadRequest, "unexpected request"),
    };
    if let Err(e) = owned(backend, &owner, id) {
        if matches!(request, Request::FilePut { .. }) {
            conn.drop_file_put(backend);
        }
        return refuse(e);
    }
    match request {
        Request::Start { id, stdin } => files::start(backend, id, stdin),
        Request::FileList { id } => files::list(backend, id),
        Request::FileGet { id, name, offset, len } => files::get(backend, conn, id, name, offset, len),
        Request::FilePut { id, name, total_len, offset, data } => files::put(backend, conn, id, name, total_len, offset, data),
        Request::FileRemove { id, name } => files::remove(backend, conn, id, name),
        Request::LogsRaw { id, stream, offset } => files::raw_log(backend, id, stream, offset),
        _ => Response::error(ErrorCode::BadRequest, "unexpected request"),
    }
}

/// The workload `id` if `owner` owns it. Someone else's workload gets exactly the
/// answer a nonexistent id gets (`NotFound`, same text): keys are free, so telling
/// "not yours" from "no such id" would let anyone count and enumerate the node's
/// workloads by probing ids.
fn owned(backend: &mut impl Backend, owner: &[u8; 32], id: u64) -> Result<WorkloadSummary, BackendError> {
    match backend.status(owner, id) {
        Some(summary) if summary.owner == *owner => Ok(summary),
        _ => Err(BackendError::new(ErrorCode::NotFound, format!("no workload {id}"))),
    }
}

fn logs_response(mut chunk: LogChunk) -> Response {
    // A backend returning too much is cut here, so one response stays bounded.
    if chunk.lines.len() > LOG_LINES_PER_RESPONSE_MAX {
        let cut = chunk.lines.len() - LOG_LINES_PER_RESPONSE_MAX;
        chunk.lines.truncate(LOG_LINES_PER_RESPONSE_MAX);
        chunk.next_line = chunk.next_line.saturating_sub(cut as u64);
        chunk.finished = false;
    }
    Response::Logs { lines: chunk.lines, next_line: chunk.next_line, finished: chunk.finished }
}

fn check_deploy(owner: [u8; 32], signed_manifest: Vec<u8>, payload: Payload, bundle: Vec<u8>) -> Result<Deployment, BackendError> {
    let rejected = |what: &str, e: &dyn core::fmt::Display| BackendError::new(ErrorCode::Rejected, format!("{what}: {e}"));
    let manifest = SignedManifest::from_bytes(&signed_manifest)
        .and_then(|s| s.verify())
        .map_err(|e| rejected("manifest", &e))?;
    if manifest.owner != owner {
        return Err(BackendError::new(ErrorCode::Unauthorized, "the manifest's owner is not the request's signer"));
    }
    let (module, oci_manifest_digest) = match payload {
        // A module pulled from a registry: the signed manifest names the image's digest.
        Payload::Wasm(module) => (module, manifest.image.as_ref().and_then(|i| i.rsplit_once('@')).map(|(_, d)| d.into())),
        Payload::OciTar(tar) => {
            let image = workloads::oci::wasm_from_layout(&tar).map_err(|e| rejected("OCI image", &e))?;
            (image.module, Some(image.manifest_digest))
        }
    };
    manifest.check_module(&module).map_err(|e| rejected("module", &e))?;
    Ok(Deployment { owner, manifest, signed_manifest, module, oci_manifest_digest, bundle })
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::message::WorkloadState;
    use alloc::string::ToString;
    use alloc::vec;
    use workloads::manifest::key_pair_from_seed;

    #[derive(Default)]
    struct Mock {
        workloads: Vec<WorkloadSummary>,
        deployed: Vec<Deployment>,
        calls: Vec<String>,
        /// File areas by workload id, their quota, and the ids that run.
        areas: alloc::collections::BTreeMap<u64, alloc::collections::BTreeMap<String, Vec<u8>>>,
        quota_bytes: u64,
        running: Vec<u64>,
        /// Held deploys, starts (id, stdin), raw stdout.
        held: Vec<u64>,
        started: Vec<(u64, Vec<u8>)>,
        stdout: Vec<u8>,
        /// The node-wide buffer budget (0: none, every reserve fails).
        budget_bytes: u64,
        budget_used: u64,
    }

    impl FileBackend for Mock {
        fn area(&mut self, id: u64) -> Result<files::AreaView, BackendError> {
            let files = self.areas.get(&id).ok_or_else(|| BackendError::new(ErrorCode::Rejected, "no area"))?;
            Ok(files::AreaView {
                files: files.iter().map(|(n, b)| (n.clone(), b.len() as u64)).collect(),
                quota_bytes: self.quota_bytes,
                running: self.running.contains(&id),
            })
        }
        fn file_read(&mut self, id: u64, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
            self.calls.push(format!("read {id} {name}"));
            Ok(self.areas.get(&id).and_then(|a| a.get(name)).cloned())
        }
        fn file_write(&mut self, id: u64, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
            self.calls.push(format!("write {id} {name}"));
            self.areas.entry(id).or_default().insert(name.into(), bytes.to_vec());
            Ok(())
        }
        fn file_remove(&mut self, id: u64, name: &str) -> Result<bool, BackendError> {
            self.calls.push(format!("remove {id} {name}"));
            Ok(self.areas.get_mut(&id).and_then(|a| a.remove(name)).is_some())
        }
        fn deploy_held(&mut self, d: Deployment) -> Result<u64, BackendError> {
            let id = self.deploy(d)?;
            self.workloads.last_mut().map(|w| w.state = WorkloadState::Ready);
            self.areas.insert(id, Default::default());
            self.held.push(id);
            Ok(id)
        }
        fn start(&mut self, id: u64, stdin: Vec<u8>) -> Result<(), BackendError> {
            self.started.push((id, stdin));
            Ok(())
        }
        fn raw_log(&mut self, _id: u64, stream: crate::OutputStream, offset: u64, max: usize) -> Result<files::RawChunk, BackendError> {
            let bytes = match stream {
                crate::OutputStream::Stdout => &self.stdout[..],
                crate::OutputStream::Stderr => &[][..],
            };
            let from = (offset as usize).min(bytes.len());
            // Deliberately returns more than asked: serve must cut.
            let _ = max;
            Ok(files::RawChunk { data: bytes[from..].to_vec(), end: bytes.len() as u64, finished: true })
        }
    }

    impl Backend for Mock {
        fn deploy(&mut self, d: Deployment) -> Result<u64, BackendError> {
            let id = self.workloads.len() as u64 + 1;
            self.workloads.push(WorkloadSummary {
                id,
                name: d.manifest.name.clone(),
                owner: d.owner,
                state: WorkloadState::Running,
                backend: "mock".into(),
                cpu_ms: 0,
                restart_on_boot: d.manifest.restart_on_boot,
            });
            self.deployed.push(d);
            Ok(id)
        }
        fn list(&mut self, _owner: &[u8; 32]) -> Vec<WorkloadSummary> {
            // Deliberately returns everyone's: serve must filter.
            self.workloads.clone()
        }
        fn status(&mut self, _owner: &[u8; 32], id: u64) -> Option<WorkloadSummary> {
            self.workloads.iter().find(|w| w.id == id).cloned()
        }
        fn logs(&mut self, _owner: &[u8; 32], id: u64, from_line: u64, _max: usize) -> Result<LogChunk, BackendError> {
            self.calls.push(format!("logs {id}"));
            let lines: Vec<String> = (from_line..2000).map(|i| i.to_string()).collect();
            Ok(LogChunk { lines, next_line: 2000, finished: true })
        }
        fn stop(&mut self, _owner: &[u8; 32], id: u64) -> Result<(), BackendError> {
            self.calls.push(format!("stop {id}"));
            Ok(())
        }
        fn remove(&mut self, _owner: &[u8; 32], id: u64) -> Result<(), BackendError> {
            self.calls.push(format!("remove {id}"));
            self.workloads.retain(|w| w.id != id);
            Ok(())
        }
        fn node_info(&mut self, _owner: &[u8; 32]) -> NodeInfo {
            NodeInfo { key: [9; 32], address: [0xfd; 16], uptime_ms: 5, workloads: self.workloads.len() as u32, storage_free_bytes: 0 }
        }
        fn is_farmer(&mut self, owner: &[u8; 32]) -> bool {
            *owner == *key_pair_from_seed([FARMER; 32]).pk
        }
        fn node_status(&mut self) -> NodeStatus {
            NodeStatus {
                version: "v".into(),
                workloads: self.workloads.clone(),
                disks: vec![crate::DiskInfo { name: "vda".into(), ..Default::default() }],
                nics: vec![crate::NicInfo { name: "eth0".into(), ..Default::default() }],
                heap_used_bytes: 1,
                heap_size_bytes: 2,
                ..NodeStatus::default()
            }
        }
        fn node_logs(&mut self, from_line: u64, _max_lines: usize) -> (Vec<String>, u64, u64) {
            let first = from_line.max(10);
            ((first..5000).map(|i| i.to_string()).collect(), first, 5000)
        }
    }

    const FARMER: u8 = 7;

    impl ShardBackend for Mock {
        fn shard_room(&mut self, _owner: &[u8; 32]) -> shard::StoreRoom {
            shard::StoreRoom::default()
        }
        fn shard_meta(&mut self, _owner: &[u8; 32], _key: &[u8; 32]) -> Option<crate::ShardMeta> {
            None
        }
        fn shard_put(&mut self, _owner: &[u8; 32], _key: &[u8; 32], _bytes: &[u8]) -> Result<crate::ShardMeta, BackendError> {
            Err(BackendError::new(ErrorCode::Internal, "mock"))
        }
        fn shard_get(&mut self, _owner: &[u8; 32], key: &[u8; 32]) -> Result<Vec<u8>, BackendError> {
            Err(shard::not_found(key))
        }
        fn shard_delete(&mut self, _owner: &[u8; 32], key: &[u8; 32]) -> Result<(), BackendError> {
            Err(shard::not_found(key))
        }
        fn shard_list(&mut self, _owner: &[u8; 32], _after: Option<&[u8; 32]>, _max: usize) -> Vec<crate::ShardMeta> {
            Vec::new()
        }
        fn shard_prove(&mut self, _owner: &[u8; 32], key: &[u8; 32], _challenge: u64) -> Result<shard::ShardProof, BackendError> {
            Err(shard::not_found(key))
        }
        fn buffer_reserve(&mut self, bytes: u64) -> bool {
            if self.budget_used + bytes > self.budget_bytes {
                return false;
            }
            self.budget_used += bytes;
            true
        }
        fn buffer_release(&mut self, bytes: u64) {
            assert!(bytes <= self.budget_used, "released more than reserved");
            self.budget_used -= bytes;
        }
        fn peers(&mut self) -> Vec<crate::PeerInfo> {
            Vec::new()
        }
    }

    fn serve(b: &mut Mock, req: Authorized) -> Response {
        super::serve(b, &mut Connection::new(), req)
    }

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn deploy_request(signer: u8, manifest_owner: u8, payload: Payload) -> Authorized {
        let owner_kp = key_pair_from_seed([manifest_owner; 32]);
        let manifest = Manifest::new("hello", *owner_kp.pk, MODULE);
        let signed = manifest.sign(&owner_kp.sk).to_bytes();
        let signer = *key_pair_from_seed([signer; 32]).pk;
        Authorized { owner: signer, seq: 0, request: Request::Deploy { signed_manifest: signed, payload, bundle: vec![1, 2, 3] } }
    }

    fn ask(owner: u8, request: Request) -> Authorized {
        Authorized { owner: *key_pair_from_seed([owner; 32]).pk, seq: 0, request }
    }

    fn code(r: &Response) -> Option<ErrorCode> {
        match r {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    #[test]
    fn node_status_shows_the_farmer_everything_and_others_their_own() {
        let mut b = Mock::default();
        assert_eq!(serve(&mut b, deploy_request(1, 1, Payload::Wasm(MODULE.to_vec()))), Response::Deployed { id: 1 });
        assert_eq!(serve(&mut b, deploy_request(2, 2, Payload::Wasm(MODULE.to_vec()))), Response::Deployed { id: 2 });
        let Response::NodeStatus(farmer) = serve(&mut b, ask(FARMER, Request::NodeStatus)) else { panic!("not a status") };
        assert!(farmer.farmer_view);
        assert_eq!((farmer.workloads.len(), farmer.disks.len(), farmer.nics.len(), farmer.heap_size_bytes), (2, 1, 1, 2));
        let Response::NodeStatus(user) = serve(&mut b, ask(1, Request::NodeStatus)) else { panic!("not a status") };
        assert!(!user.farmer_view);
        assert_eq!(user.workloads.iter().map(|w| w.id).collect::<Vec<_>>(), [1]);
        assert!(user.disks.is_empty() && user.nics.is_empty() && user.heap_size_bytes == 0);
        assert_eq!(user.version, "v");
        let Response::NodeStatus(stranger) = serve(&mut b, ask(3, Request::NodeStatus)) else { panic!("not a status") };
        assert!(stranger.workloads.is_empty());
    }

    #[test]
    fn node_logs_are_the_farmers_only_and_bounded() {
        let mut b = Mock::default();
        assert_eq!(code(&serve(&mut b, ask(1, Request::NodeLogs { from_line: 0 }))), Some(ErrorCode::Unauthorized));
        let Response::NodeLogs { lines, first_line, next_line } = serve(&mut b, ask(FARMER, Request::NodeLogs { from_line: 0 })) else {
            panic!("no logs")
        };
        assert_eq!(lines.len(), LOG_LINES_PER_RESPONSE_MAX);
        assert_eq!((first_line, next_line), (10, 10 + LOG_LINES_PER_RESPONSE_MAX as u64));
        assert_eq!(lines[0], "10");
    }

    #[test]
    fn deploy_checks_manifest_owner_and_module() {
        let mut b = Mock::default();
        assert_eq!(serve(&mut b, deploy_request(1, 1, Payload::Wasm(MODULE.to_vec()))), Response::Deployed { id: 1 });
        assert_eq!(b.deployed[0].module, MODULE);
        assert_eq!(b.deployed[0].bundle, [1, 2, 3]);
        assert_eq!(b.deployed[0].oci_manifest_digest, None);
        // Someone else's (validly signed) manifest.
        assert_eq!(code(&serve(&mut b, deploy_request(2, 1, Payload::Wasm(MODULE.to_vec())))), Some(ErrorCode::Unauthorized));
        // Module that does not match the manifest's hash.
        assert_eq!(code(&serve(&mut b, deploy_request(1, 1, Payload::Wasm(b"\0asm other".to_vec())))), Some(ErrorCode::Rejected));
        // Garbage manifest.
        let garbage = ask(1, Request::Deploy { signed_manifest: vec![0xff; 10], payload: Payload::Wasm(vec![]), bundle: vec![] });
        assert_eq!(code(&serve(&mut b, garbage)), Some(ErrorCode::Rejected));
        assert_eq!(b.deployed.len(), 1);
    }

    #[test]
    fn deploy_from_an_oci_layout() {
        let mut b = Mock::default();
        let tar = workloads::oci::build_layout(MODULE, "application/wasm");
        assert_eq!(serve(&mut b, deploy_request(1, 1, Payload::OciTar(tar))), Response::Deployed { id: 1 });
        assert_eq!(b.deployed[0].module, MODULE);
        assert!(b.deployed[0].oci_manifest_digest.as_deref().is_some_and(|d| d.starts_with("sha256:")));
        let bad = deploy_request(1, 1, Payload::OciTar(vec![0; 100]));
        assert_eq!(code(&serve(&mut b, bad)), Some(ErrorCode::Rejected));
    }

    #[test]
    fn only_the_owner_sees_or_touches_a_workload() {
        let mut b = Mock::default();
        serve(&mut b, deploy_request(1, 1, Payload::Wasm(MODULE.to_vec())));
        serve(&mut b, deploy_request(2, 2, Payload::Wasm(MODULE.to_vec())));
        let Response::Workloads(mine) = serve(&mut b, ask(1, Request::List)) else { panic!() };
        assert_eq!(mine.iter().map(|w| w.id).collect::<Vec<_>>(), [1]);
        let Response::Workloads(none) = serve(&mut b, ask(3, Request::List)) else { panic!() };
        assert!(none.is_empty());
        // Someone else's id answers exactly as an id that does not exist.
        for (theirs, none) in [
            (Request::Status { id: 2 }, Request::Status { id: 99 }),
            (Request::Logs { id: 2, from_line: 0 }, Request::Logs { id: 99, from_line: 0 }),
            (Request::Stop { id: 2 }, Request::Stop { id: 99 }),
            (Request::Remove { id: 2 }, Request::Remove { id: 99 }),
        ] {
            let (a, b2) = (serve(&mut b, ask(1, theirs.clone())), serve(&mut b, ask(1, none)));
            assert_eq!(code(&a), Some(ErrorCode::NotFound), "{theirs:?}");
            let (Response::Error { message: ma, .. }, Response::Error { message: mb, .. }) = (&a, &b2) else { panic!() };
            assert_eq!(ma.replace(" 2", " N"), mb.replace(" 99", " N"), "{theirs:?}");
        }
        assert!(b.calls.is_empty(), "the backend was called for a refused request: {:?}", b.calls);
        assert_eq!(code(&serve(&mut b, ask(1, Request::Status { id: 99 }))), Some(ErrorCode::NotFound));
        assert!(matches!(serve(&mut b, ask(2, Request::Status { id: 2 })), Response::Status(w) if w.id == 2));
        assert_eq!(serve(&mut b, ask(2, Request::Stop { id: 2 })), Response::Stopped);
        assert_eq!(serve(&mut b, ask(2, Request::Remove { id: 2 })), Response::Removed);
        assert_eq!(b.calls, ["stop 2", "remove 2"]);
        assert!(matches!(serve(&mut b, ask(3, Request::NodeInfo)), Response::NodeInfo { workloads: 1, .. }));
    }

    fn held(b: &mut Mock, owner: u8) -> u64 {
        let Authorized { owner: signer, seq, request: Request::Deploy { signed_manifest, payload, bundle } } =
            deploy_request(owner, owner, Payload::Wasm(MODULE.to_vec()))
        else {
            panic!("not a deploy")
        };
        let r = super::serve(b, &mut Connection::new(), Authorized { owner: signer, seq, request: Request::DeployHeld { signed_manifest, payload, bundle } });
        let Response::Deployed { id } = r else { panic!("{r:?}") };
        id
    }

    fn put(owner: u8, id: u64, name: &str, total_len: u64, offset: u64, data: Vec<u8>) -> Authorized {
        ask(owner, Request::FilePut { id, name: name.into(), total_len, offset, data })
    }

    #[test]
    fn files_stream_in_bounded_pieces_into_the_owners_area_and_back() {
        let mut b = Mock { quota_bytes: 8 << 20, budget_bytes: 16 << 20, ..Mock::default() };
        let id = held(&mut b, 1);
        assert_eq!(b.held, [id]);
        let piece = files::FILE_PIECE_BYTES;
        let file: Vec<u8> = (0..piece * 2 + 10).map(|i| (i * 7 % 251) as u8).collect();
        let total = file.len() as u64;
        let mut conn = Connection::new();
        // A piece above the bound is refused whole.
        let big = super::serve(&mut b, &mut conn, put(1, id, "in/data.bin", total, 0, vec![0; piece + 1]));
        assert_eq!(code(&big), Some(ErrorCode::BadRequest));
        for (i, chunk) in file.chunks(piece).enumerate() {
            let r = super::serve(&mut b, &mut conn, put(1, id, "in/data.bin", total, (i * piece) as u64, chunk.to_vec()));
            let done = (i + 1) * piece >= file.len();
            if done {
                assert_eq!(r, Response::FileStored { len: total });
            } else {
                assert_eq!(r, Response::FilePartial { received: ((i + 1) * piece) as u64 });
                // Buffered within the node-wide budget until the last piece.
                assert_eq!(b.budget_used, total);
                assert!(!b.calls.iter().any(|c| c.starts_with("write")), "committed before the last piece");
            }
        }
        assert_eq!(b.budget_used, 0);
        // The parent directory was made, then the file committed.
        assert_eq!(b.calls, [format!("write {id} in/"), format!("write {id} in/data.bin")]);
        let Response::Files { files, quota_bytes } = super::serve(&mut b, &mut conn, ask(1, Request::FileList { id })) else { panic!() };
        assert_eq!(quota_bytes, 8 << 20);
        assert_eq!(files.iter().map(|f| (f.name.as_str(), f.len)).collect::<Vec<_>>(), [("in/", 0), ("in/data.bin", total)]);
        // Read back in pieces of at most FILE_PIECE_BYTES, however much is asked.
        let mut back = Vec::new();
        while (back.len() as u64) < total {
            let r = super::serve(&mut b, &mut conn, ask(1, Request::FileGet { id, name: "in/data.bin".into(), offset: back.len() as u64, len: u64::MAX }));
            let Response::FileData { total_len, offset, data } = r else { panic!("{r:?}") };
            assert_eq!((total_len, offset), (total, back.len() as u64));
            assert!(!data.is_empty() && data.len() <= piece);
            back.extend(data);
        }
        assert_eq!(back, file);
        // Read whole once (cached for the pieces), and the budget is back.
        assert_eq!(b.calls.iter().filter(|c| c.starts_with("read")).count(), 1);
        assert_eq!((b.budget_used, conn.held_bytes()), (0, 0));
        // Start with the file as stdin.
        assert_eq!(super::serve(&mut b, &mut conn, ask(1, Request::Start { id, stdin: Some("in/data.bin".into()) })), Response::Started);
        assert_eq!(b.started, [(id, file.clone())]);
        let missing = super::serve(&mut b, &mut conn, ask(1, Request::Start { id, stdin: Some("nope".into()) }));
        assert_eq!(code(&missing), Some(ErrorCode::NotFound));
        // Remove: a non-empty directory stays, the file goes, then the directory.
        assert_eq!(code(&super::serve(&mut b, &mut conn, ask(1, Request::FileRemove { id, name: "in".into() }))), Some(ErrorCode::Rejected));
        assert_eq!(super::serve(&mut b, &mut conn, ask(1, Request::FileRemove { id, name: "in/data.bin".into() })), Response::FileRemoved);
        assert_eq!(super::serve(&mut b, &mut conn, ask(1, Request::FileRemove { id, name: "in".into() })), Response::FileRemoved);
        assert_eq!(code(&super::serve(&mut b, &mut conn, ask(1, Request::FileRemove { id, name: "in".into() }))), Some(ErrorCode::NotFound));
        assert!(b.areas[&id].is_empty());
    }

    #[test]
    fn files_of_someone_elses_workload_are_not_found_as_a_missing_id() {
        let mut b = Mock { quota_bytes: 1 << 20, budget_bytes: 1 << 20, ..Mock::default() };
        let theirs = held(&mut b, 2);
        b.areas.get_mut(&theirs).unwrap().insert("secret".into(), b"x".to_vec());
        b.calls.clear();
        let none = 99;
        for (mine, missing) in [
            (Request::FileList { id: theirs }, Request::FileList { id: none }),
            (Request::FileGet { id: theirs, name: "secret".into(), offset: 0, len: 1 }, Request::FileGet { id: none, name: "secret".into(), offset: 0, len: 1 }),
            (Request::FilePut { id: theirs, name: "x".into(), total_len: 1, offset: 0, data: vec![1] }, Request::FilePut { id: none, name: "x".into(), total_len: 1, offset: 0, data: vec![1] }),
            (Request::FileRemove { id: theirs, name: "secret".into() }, Request::FileRemove { id: none, name: "secret".into() }),
            (Request::Start { id: theirs, stdin: None }, Request::Start { id: none, stdin: None }),
            (Request::LogsRaw { id: theirs, stream: crate::OutputStream::Stdout, offset: 0 }, Request::LogsRaw { id: none, stream: crate::OutputStream::Stdout, offset: 0 }),
        ] {
            let (a, m) = (serve(&mut b, ask(1, mine.clone())), serve(&mut b, ask(1, missing)));
            assert_eq!(code(&a), Some(ErrorCode::NotFound), "{mine:?}");
            let (Response::Error { message: ma, .. }, Response::Error { message: mm, .. }) = (&a, &m) else { panic!() };
            assert_eq!(ma.replace(&format!(" {theirs}"), " N"), mm.replace(" 99", " N"), "{mine:?}");
        }
        assert!(b.calls.is_empty() && b.started.is_empty(), "the backend was called: {:?}", b.calls);
        assert_eq!(b.areas[&theirs].len(), 1);
    }

    #[test]
    fn file_puts_are_bounded_by_quota_count_order_budget_and_running() {
        let mut b = Mock { quota_bytes: 100, budget_bytes: 1 << 20, ..Mock::default() };
        let id = held(&mut b, 1);
        let mut conn = Connection::new();
        let mut serve = |b: &mut Mock, r| super::serve(b, &mut conn, r);
        // Quota: 101 bytes do not fit in 100; 60 + 60 do not either; replacing does.
        assert_eq!(code(&serve(&mut b, put(1, id, "a", 101, 0, vec![0; 101]))), Some(ErrorCode::NoSpace));
        assert_eq!(serve(&mut b, put(1, id, "a", 60, 0, vec![0; 60])), Response::FileStored { len: 60 });
        assert_eq!(code(&serve(&mut b, put(1, id, "b", 60, 0, vec![0; 60]))), Some(ErrorCode::NoSpace));
        assert_eq!(serve(&mut b, put(1, id, "a", 90, 0, vec![1; 90])), Response::FileStored { len: 90 });
        // Bad paths.
        for bad in ["", "/abs", "dir/", "a/../b", "..", "a//b", "a\nb", &"x".repeat(files::AREA_PATH_BYTES_MAX + 1)] {
            assert_eq!(code(&serve(&mut b, put(1, id, bad, 1, 0, vec![0]))), Some(ErrorCode::BadRequest), "{bad:?}");
        }
        // Out of order: the upload is dropped and its budget given back.
        assert_eq!(serve(&mut b, put(1, id, "c", 4, 0, vec![0; 2])), Response::FilePartial { received: 2 });
        assert_eq!(b.budget_used, 4);
        assert_eq!(code(&serve(&mut b, put(1, id, "c", 4, 3, vec![0]))), Some(ErrorCode::BadRequest));
        assert_eq!(b.budget_used, 0);
        assert_eq!(code(&serve(&mut b, put(1, id, "c", 4, 2, vec![0; 2]))), Some(ErrorCode::BadRequest));
        // The node-wide budget: without room, Busy.
        b.budget_bytes = 3;
        assert_eq!(code(&serve(&mut b, put(1, id, "c", 4, 0, vec![0; 1]))), Some(ErrorCode::Busy));
        b.budget_bytes = 1 << 20;
        // Entry count: the area holds at most AREA_FILES_MAX entries.
        b.quota_bytes = u64::MAX;
        for i in 0..files::AREA_FILES_MAX - 1 {
            assert_eq!(serve(&mut b, put(1, id, &format!("f{i}"), 0, 0, vec![])), Response::FileStored { len: 0 }, "{i}");
        }
        assert_eq!(code(&serve(&mut b, put(1, id, "one-too-many", 0, 0, vec![]))), Some(ErrorCode::NoSpace));
        // A file above FILE_BYTES_MAX never fits.
        assert_eq!(code(&serve(&mut b, put(1, id, "a", files::FILE_BYTES_MAX + 1, 0, vec![]))), Some(ErrorCode::NoSpace));
        // While the program runs, puts and removes wait; reads do not.
        b.running.push(id);
        assert_eq!(code(&serve(&mut b, put(1, id, "a", 1, 0, vec![2]))), Some(ErrorCode::Busy));
        assert_eq!(code(&serve(&mut b, ask(1, Request::FileRemove { id, name: "a".into() }))), Some(ErrorCode::Busy));
        assert!(matches!(serve(&mut b, ask(1, Request::FileGet { id, name: "a".into(), offset: 0, len: 10 })), Response::FileData { total_len: 90, .. }));
        // A piece begun before the program started is refused at the commit.
        b.running.clear();
        assert_eq!(serve(&mut b, put(1, id, "a", 2, 0, vec![3])), Response::FilePartial { received: 1 });
        b.running.push(id);
        assert_eq!(code(&serve(&mut b, put(1, id, "a", 2, 1, vec![3]))), Some(ErrorCode::Busy));
        assert_eq!(b.areas[&id]["a"], [1; 90]);
        assert_eq!(b.budget_used, 0);
        drop(serve);
        conn.close(&mut b);
        assert_eq!(b.budget_used, 0);
    }

    #[test]
    fn a_connection_closed_mid_transfer_gives_its_budget_back() {
        let mut b = Mock { quota_bytes: 1 << 20, budget_bytes: 1 << 20, ..Mock::default() };
        let id = held(&mut b, 1);
        b.areas.get_mut(&id).unwrap().insert("big".into(), vec![5; 3000]);
        let mut conn = Connection::new();
        assert_eq!(super::serve(&mut b, &mut conn, put(1, id, "up", 100, 0, vec![0; 10])), Response::FilePartial { received: 10 });
        let r = super::serve(&mut b, &mut conn, ask(1, Request::FileGet { id, name: "big".into(), offset: 0, len: 1000 }));
        assert!(matches!(r, Response::FileData { ref data, .. } if data.len() == 1000));
        assert_eq!(conn.held_bytes(), 3100);
        assert_eq!(b.budget_used, 3100);
        conn.close(&mut b);
        assert_eq!((conn.held_bytes(), b.budget_used), (0, 0));
    }

    #[test]
    fn raw_output_is_returned_byte_for_byte_in_bounded_pieces() {
        let mut b = Mock::default();
        let id = held(&mut b, 1);
        b.stdout = (0..files::RAW_LOG_PIECE_BYTES + 5).map(|i| (i % 256) as u8).collect();
        let mut got = Vec::new();
        loop {
            let r = serve(&mut b, ask(1, Request::LogsRaw { id, stream: crate::OutputStream::Stdout, offset: got.len() as u64 }));
            let Response::LogsRaw { offset, data, end, finished } = r else { panic!("{r:?}") };
            assert_eq!(offset, got.len() as u64);
            assert!(data.len() <= files::RAW_LOG_PIECE_BYTES);
            assert_eq!(end, b.stdout.len() as u64);
            got.extend(data);
            if finished {
                break;
            }
        }
        assert_eq!(got, b.stdout);
    }

    #[test]
    fn logs_are_capped_per_response() {
        let mut b = Mock::default();
        serve(&mut b, deploy_request(1, 1, Payload::Wasm(MODULE.to_vec())));
        let Response::Logs { lines, next_line, finished } = serve(&mut b, ask(1, Request::Logs { id: 1, from_line: 0 })) else { panic!() };
        assert_eq!(lines.len(), LOG_LINES_PER_RESPONSE_MAX);
        assert_eq!(next_line, LOG_LINES_PER_RESPONSE_MAX as u64);
        assert!(!finished);
        let Response::Logs { lines, next_line, finished } = serve(&mut b, ask(1, Request::Logs { id: 1, from_line: 1500 })) else { panic!() };
        assert_eq!((lines.len(), next_line, finished), (500, 2000, true));
        assert_eq!(lines[0], "1500");
    }
}
