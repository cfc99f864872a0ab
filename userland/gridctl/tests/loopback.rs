//! End to end in one process: a "node" thread runs a second overlay node on a loopback UDP
//! socket with a smoltcp TCP listener on the control port, `control::Session` and a mock
//! `control::Backend`; gridctl's library connects through the overlay, deploys, lists,
//! reads logs, stops and removes, and a second key is refused; and the shard helpers put,
//! get, list, prove and delete shards against an in-memory shard store. On a ledger (an
//! in-process chain), a deploy creates and pays its contract and names it in the manifest.
//!
//! The server loop is also a sketch of what the kernel does with the `control` crate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use std::collections::BTreeMap;

use control::shard::{not_found, ShardBackend, ShardProof, StoreRoom};
use control::{
    Backend, BackendError, BufferBudget, Deployment, ErrorCode, LogChunk, NodeInfo, PeerInfo, Request, Response, Session, ShardMeta,
    WorkloadState, WorkloadSummary,
};
use gridctl::cli::{self, Cli};
use gridctl::client::{Client, Options};
use gridctl::key::UserKey;
use hostnet::Stack;
use gridctl::target::Target;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

const NODE_SEED: [u8; 32] = [0x4e; 32];
/// Connections the mock node serves at once.
const CONNECTIONS_MAX: usize = 4;

struct MockBackend {
    workloads: Vec<(WorkloadSummary, Vec<String>)>,
    shards: BTreeMap<([u8; 32], [u8; 32]), Vec<u8>>,
    budget: BufferBudget,
    /// File areas and raw stdout by workload id.
    areas: BTreeMap<u64, BTreeMap<String, Vec<u8>>>,
    stdout: BTreeMap<u64, Vec<u8>>,
}

impl Default for MockBackend {
    fn default() -> Self {
        MockBackend {
            workloads: Vec::new(),
            shards: BTreeMap::new(),
            budget: BufferBudget::new(control::shard::BUFFER_BYTES_MAX_DEFAULT),
            areas: BTreeMap::new(),
            stdout: BTreeMap::new(),
        }
    }
}

/// The mock's area quota.
const AREA_QUOTA_BYTES: u64 = 16 << 20;

/// What the mock's "program" makes of its input: stdin, then the area's `input.bin`
/// reversed, then every byte value once (binary output).
fn mock_program(stdin: &[u8], input: &[u8]) -> Vec<u8> {
    let mut out = stdin.to_vec();
    out.extend(input.iter().rev());
    out.extend(0..=255u8);
    out
}

impl control::FileBackend for MockBackend {
    fn area(&mut self, id: u64) -> Result<control::AreaView, BackendError> {
        let files = self.areas.get(&id).ok_or_else(|| BackendError::new(ErrorCode::Rejected, "no file area"))?;
        let running = self.workloads.iter().any(|(w, _)| w.id == id && w.state == WorkloadState::Running);
        Ok(control::AreaView { files: files.iter().map(|(n, b)| (n.clone(), b.len() as u64)).collect(), quota_bytes: AREA_QUOTA_BYTES, running })
    }
    fn file_read(&mut self, id: u64, name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.areas.get(&id).and_then(|a| a.get(name)).cloned())
    }
    fn file_write(&mut self, id: u64, name: &str, bytes: &[u8]) -> Result<(), BackendError> {
        self.areas.entry(id).or_default().insert(name.into(), bytes.to_vec());
        Ok(())
    }
    fn file_remove(&mut self, id: u64, name: &str) -> Result<bool, BackendError> {
        Ok(self.areas.get_mut(&id).and_then(|a| a.remove(name)).is_some())
    }
    fn deploy_held(&mut self, d: Deployment) -> Result<u64, BackendError> {
        let id = self.deploy(d)?;
        if let Some((w, _)) = self.workloads.iter_mut().find(|(w, _)| w.id == id) {
            w.state = WorkloadState::Ready;
        }
        self.areas.insert(id, BTreeMap::new());
        Ok(id)
    }
    fn start(&mut self, id: u64, stdin: Vec<u8>) -> Result<(), BackendError> {
        let input = self.areas.get(&id).and_then(|a| a.get("input.bin")).cloned().unwrap_or_default();
        let result = mock_program(&stdin, &input);
        self.areas.entry(id).or_default().insert("out/".into(), Vec::new());
        self.areas.entry(id).or_default().insert("out/result.bin".into(), result.clone());
        self.stdout.insert(id, result);
        if let Some((w, _)) = self.workloads.iter_mut().find(|(w, _)| w.id == id) {
            w.state = WorkloadState::Exited(0);
        }
        Ok(())
    }
    fn raw_log(&mut self, id: u64, stream: control::OutputStream, offset: u64, max_bytes: usize) -> Result<control::RawChunk, BackendError> {
        let empty = Vec::new();
        let bytes = match stream {
            control::OutputStream::Stdout => self.stdout.get(&id).unwrap_or(&empty),
            control::OutputStream::Stderr => &empty,
        };
        let from = (offset as usize).min(bytes.len());
        let to = from.saturating_add(max_bytes).min(bytes.len());
        Ok(control::RawChunk { data: bytes[from..to].to_vec(), end: bytes.len() as u64, finished: true })
    }
}

/// The mock node's quota per owner.
const QUOTA_BYTES: u64 = 8 << 20;

fn meta(key: &[u8; 32], bytes: &[u8]) -> ShardMeta {
    ShardMeta { key: *key, len: bytes.len() as u64, merkle_root: shardstore::merkle_root(bytes) }
}

impl ShardBackend for MockBackend {
    fn shard_room(&mut self, owner: &[u8; 32]) -> StoreRoom {
        let mine: Vec<&Vec<u8>> = self.shards.iter().filter(|((o, _), _)| o == owner).map(|(_, v)| v).collect();
        StoreRoom {
            bytes: mine.iter().map(|v| v.len() as u64).sum(),
            shards: mine.len() as u64,
            quota_bytes: QUOTA_BYTES,
            free_bytes: 1 << 30,
            reserve_bytes: 64 << 20,
        }
    }
    fn shard_meta(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Option<ShardMeta> {
        self.shards.get(&(*owner, *key)).map(|v| meta(key, v))
    }
    fn shard_put(&mut self, owner: &[u8; 32], key: &[u8; 32], bytes: &[u8]) -> Result<ShardMeta, BackendError> {
        self.shards.insert((*owner, *key), bytes.to_vec());
        Ok(meta(key, bytes))
    }
    fn shard_get(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Result<Vec<u8>, BackendError> {
        self.shards.get(&(*owner, *key)).cloned().ok_or_else(|| not_found(key))
    }
    fn shard_delete(&mut self, owner: &[u8; 32], key: &[u8; 32]) -> Result<(), BackendError> {
        self.shards.remove(&(*owner, *key)).map(|_| ()).ok_or_else(|| not_found(key))
    }
    fn shard_list(&mut self, owner: &[u8; 32], after: Option<&[u8; 32]>, max: usize) -> Vec<ShardMeta> {
        let mine = self.shards.iter().filter(|((o, k), _)| o == owner && after.is_none_or(|a| k > a));
        mine.take(max).map(|((_, k), v)| meta(k, v)).collect()
    }
    fn shard_prove(&mut self, owner: &[u8; 32], key: &[u8; 32], challenge: u64) -> Result<ShardProof, BackendError> {
        let v = self.shards.get(&(*owner, *key)).ok_or_else(|| not_found(key))?;
        let shardstore::StorageProof { chunk_index, chunk, path } = shardstore::build_proof(v, challenge);
        Ok(ShardProof { meta: meta(key, v), chunk_index, chunk, path })
    }
    fn buffer_reserve(&mut self, bytes: u64) -> bool {
        self.budget.reserve(bytes)
    }
    fn buffer_release(&mut self, bytes: u64) {
        self.budget.release(bytes)
    }
    fn peers(&mut self) -> Vec<PeerInfo> {
        vec![PeerInfo { address: [0xfd; 16], key: Some([7; 32]), direct: true }]
    }
}

impl Backend for MockBackend {
    fn deploy(&mut self, d: Deployment) -> Result<u64, BackendError> {
        let id = self.workloads.len() as u64 + 1;
        let summary = WorkloadSummary {
            id,
            name: d.manifest.name.clone(),
            owner: d.owner,
            state: WorkloadState::Exited(0),
            backend: "mock".into(),
            cpu_ms: 1,
            restart_on_boot: d.manifest.restart_on_boot,
        };
        let logs = vec![
            format!("{}: started with {} module bytes, {} bundle bytes", d.manifest.name, d.module.len(), d.bundle.len()),
            "Hello, gridos!".into(),
        ];
        let mut logs = logs;
        if let Some(c) = d.manifest.contract {
            logs.push(format!("under contract {c}"));
        }
        self.workloads.push((summary, logs));
        Ok(id)
    }
    fn list(&mut self, owner: &[u8; 32]) -> Vec<WorkloadSummary> {
        self.workloads.iter().filter(|(w, _)| w.owner == *owner).map(|(w, _)| w.clone()).collect()
    }
    fn status(&mut self, _owner: &[u8; 32], id: u64) -> Option<WorkloadSummary> {
        self.workloads.iter().find(|(w, _)| w.id == id).map(|(w, _)| w.clone())
    }
    fn logs(&mut self, _owner: &[u8; 32], id: u64, from_line: u64, max_lines: usize) -> Result<LogChunk, BackendError> {
        let (_, logs) = self.workloads.iter().find(|(w, _)| w.id == id).ok_or(BackendError::new(ErrorCode::NotFound, "gone"))?;
        let lines: Vec<String> = logs.iter().skip(from_line as usize).take(max_lines).cloned().collect();
        let next_line = from_line + lines.len() as u64;
        Ok(LogChunk { lines, next_line, finished: next_line >= logs.len() as u64 })
    }
    fn stop(&mut self, _owner: &[u8; 32], id: u64) -> Result<(), BackendError> {
        if let Some((w, _)) = self.workloads.iter_mut().find(|(w, _)| w.id == id) {
            w.state = WorkloadState::Stopped("stopped by owner".into());
        }
        Ok(())
    }
    fn remove(&mut self, _owner: &[u8; 32], id: u64) -> Result<(), BackendError> {
        self.workloads.retain(|(w, _)| w.id != id);
        Ok(())
    }
    fn node_info(&mut self, _owner: &[u8; 32]) -> NodeInfo {
        let key = overlay::Identity::from_seed(NODE_SEED).public_key();
        NodeInfo { key: key.0, address: overlay::Address::from_public_key(&key).0, uptime_ms: 1234, workloads: self.workloads.len() as u32, storage_free_bytes: 1 << 20 }
    }
}

/// One server-side TCP connection slot.
struct Conn {
    handle: SocketHandle,
    session: Option<Session>,
    shard: control::Connection,
    out: Vec<u8>,
}

fn new_socket(stack: &mut Stack) -> SocketHandle {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 256 << 10]), tcp::SocketBuffer::new(vec![0; 64 << 10]));
    s.listen(control::PORT).expect("listen");
    // A client that vanishes frees its slot once retransmissions give up.
    s.set_timeout(Some(smoltcp::time::Duration::from_secs(10)));
    stack.sockets.add(s)
}

/// Serves one connection slot: hello on connect, requests through `serve`, responses out,
/// and back to listening when the client leaves.
fn serve_conn(stack: &mut Stack, conn: &mut Conn, backend: &mut MockBackend, node_key: [u8; 32]) {
    let s = stack.sockets.get_mut::<tcp::Socket>(conn.handle);
    if s.state() == tcp::State::Closed {
        conn.session = None;
        conn.shard.close(backend);
        conn.out.clear();
        s.listen(control::PORT).expect("listen");
        return;
    }
    if conn.session.is_none() && s.may_send() {
        let mut entropy = [0u8; 32];
        getrandom::fill(&mut entropy).expect("entropy");
        let session = Session::new(node_key, control::challenge(&entropy));
        conn.out.extend(session.hello_frame());
        conn.session = Some(session);
    }
    if let Some(session) = &mut conn.session {
        let mut buf = [0u8; 16 << 10];
        while s.can_recv() {
            let n = s.recv_slice(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            match session.push(&buf[..n]) {
                Ok(requests) => {
                    for r in requests {
                        let response = control::serve(backend, &mut conn.shard, r);
                        conn.out.extend(session.response_frame(&response));
                    }
                }
                Err(e) => {
                    conn.out.extend(session.response_frame(&e.response()));
                    break;
                }
            }
        }
    }
    if !conn.out.is_empty() && s.can_send() {
        let n = s.send_slice(&conn.out).unwrap_or(0);
        conn.out.drain(..n);
    }
    if s.state() == tcp::State::CloseWait && conn.out.is_empty() {
        s.close();
    }
}

struct Node {
    target: Target,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_node() -> Node {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = overlay::Config { accept_unknown_peers: true, ..overlay::Config::default() };
    let mut stack = Stack::new(NODE_SEED, socket, config).unwrap();
    let target = Target { key: stack.node().public_key().0, endpoint: stack.local_addr().unwrap() };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::spawn(move || {
        let node_key = stack.node().public_key().0;
        let mut backend = MockBackend::default();
        let mut conns: Vec<Conn> =
            (0..CONNECTIONS_MAX).map(|_| Conn { handle: new_socket(&mut stack), session: None, shard: control::Connection::new(), out: Vec::new() }).collect();
        while !stop2.load(Ordering::Relaxed) {
            stack.poll(Duration::from_millis(10)).unwrap();
            for c in &mut conns {
                serve_conn(&mut stack, c, &mut backend, node_key);
            }
        }
    });
    Node { target, stop, thread: Some(thread) }
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gridctl-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn node_arg(target: &Target) -> String {
    format!("{}@{}", gridctl::hex(&target.key), target.endpoint)
}

/// Runs `gridctl ARGS` in-process; returns its output or error.
fn gridctl(key: &Path, args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["gridctl", "--timeout", "10", "--key", key.to_str().unwrap()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    cli::run(cli, &mut out).map_err(|e| e.0)?;
    Ok(String::from_utf8(out).unwrap())
}

/// Runs `gridctl ARGS` in-process; returns its output as bytes.
fn gridctl_bytes(key: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let mut argv = vec!["gridctl", "--timeout", "10", "--key", key.to_str().unwrap()];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    cli::run(cli, &mut out).map_err(|e| e.0)?;
    Ok(out)
}

#[test]
fn deploy_with_files_and_stdin_then_files_and_raw_logs_over_the_overlay() {
    let node = start_node();
    let dir = temp_dir("files");
    let key = dir.join("key");
    UserKey::from_seed([0x11; 32]).unwrap().save_new(&key).unwrap();
    let node_arg = node_arg(&node.target);
    let wasm = repo_file("tests/wasm/out/hello.wasm");
    // An input of several pieces, binary stdin, and a directory tree.
    let input: Vec<u8> = (0..control::files::FILE_PIECE_BYTES * 2 + 333).map(|i| (i * 31 % 256) as u8).collect();
    std::fs::write(dir.join("input.bin"), &input).unwrap();
    let stdin: Vec<u8> = vec![0, 0x1b, b'[', b'2', b'J', 0xff, b'\n', 0x9b];
    std::fs::write(dir.join("stdin.bin"), &stdin).unwrap();
    std::fs::create_dir_all(dir.join("tree/sub")).unwrap();
    std::fs::write(dir.join("tree/sub/a.txt"), b"a").unwrap();
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let id = gridctl(&key, &["deploy", "--node", &node_arg, "--storage-kb", "4096", "--file", &p("input.bin"), "--file",
        &format!("{}:cfg/x.conf", p("stdin.bin")), "--dir", &format!("{}:seed", p("tree")), "--stdin", &p("stdin.bin"),
        wasm.to_str().unwrap()])
    .unwrap();
    let id = id.trim();
    let expected = mock_program(&stdin, &input);
    // The result file and raw stdout are byte-identical to what the program made.
    let out = dir.join("result.bin");
    gridctl(&key, &["files", "--node", &node_arg, id, "get", "out/result.bin", "--output", out.to_str().unwrap()]).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    assert_eq!(gridctl_bytes(&key, &["files", "--node", &node_arg, id, "get", "out/result.bin"]).unwrap(), expected);
    assert_eq!(gridctl_bytes(&key, &["logs", "--raw", "--node", &node_arg, id]).unwrap(), expected);
    assert!(gridctl_bytes(&key, &["logs", "--raw", "--stderr", "--node", &node_arg, id]).unwrap().is_empty());
    let ls = gridctl(&key, &["files", "--node", &node_arg, id, "ls"]).unwrap();
    for name in [".stdin", "cfg/", "cfg/x.conf", "input.bin", "seed/", "seed/sub/", "seed/sub/a.txt", "out/result.bin"] {
        assert!(ls.lines().any(|l| l.ends_with(&format!(" {name}"))), "{name} missing: {ls}");
    }
    // put, then rm.
    assert_eq!(gridctl(&key, &["files", "--node", &node_arg, id, "put", &p("stdin.bin"), "again.bin"]).unwrap().trim(), "put again.bin (8 bytes)");
    assert_eq!(gridctl_bytes(&key, &["files", "--node", &node_arg, id, "get", "again.bin"]).unwrap(), stdin);
    assert_eq!(gridctl(&key, &["files", "--node", &node_arg, id, "rm", "again.bin"]).unwrap().trim(), "removed again.bin");
    let e = gridctl(&key, &["files", "--node", &node_arg, id, "get", "again.bin"]).unwrap_err();
    assert!(e.contains("not found"), "{e}");
    // A stranger gets what a missing id gets.
    let other_key = dir.join("other");
    UserKey::from_seed([0x22; 32]).unwrap().save_new(&other_key).unwrap();
    for args in [vec!["files", "--node", &node_arg, id, "ls"], vec!["files", "--node", &node_arg, id, "get", "input.bin"],
        vec!["logs", "--raw", "--node", &node_arg, id]] {
        let e = gridctl(&other_key, &args).unwrap_err();
        assert!(e.contains(&format!("not found: no workload {id}")), "{args:?}: {e}");
    }
    // Seeding needs an area.
    let e = gridctl(&key, &["deploy", "--node", &node_arg, "--storage-kb", "0", "--stdin", &p("stdin.bin"), wasm.to_str().unwrap()]).unwrap_err();
    assert!(e.contains("--storage-kb"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deploy_list_logs_stop_remove_over_the_overlay() {
    let node = start_node();
    let dir = temp_dir("e2e");
    let key = dir.join("key");
    let user = UserKey::from_seed([0x11; 32]).unwrap();
    user.save_new(&key).unwrap();
    let node_arg = node_arg(&node.target);
    let wasm = repo_file("tests/wasm/out/hello.wasm");
    let bundle = repo_file("tests/wasm/out/hello.bundle");

    // Deploy the module with its committed bundle (a fresh CLI stack, same identity, each time).
    let out = gridctl(&key, &["deploy", "--node", &node_arg, "--bundle", bundle.to_str().unwrap(), "--arg", "x", wasm.to_str().unwrap()]).unwrap();
    assert_eq!(out.trim(), "1");
    let bundle_len = std::fs::metadata(&bundle).unwrap().len();
    // The same module as an OCI image layout.
    let tar = dir.join("hello.tar");
    std::fs::write(&tar, workloads::oci::build_layout(&std::fs::read(&wasm).unwrap(), "application/wasm")).unwrap();
    let out = gridctl(&key, &["deploy", "--node", &node_arg, "--name", "from-oci", "--restart", "--bundle", bundle.to_str().unwrap(), tar.to_str().unwrap()]).unwrap();
    assert_eq!(out.trim(), "2");

    let out = gridctl(&key, &["list", "--node", &node_arg]).unwrap();
    assert!(out.contains("hello") && out.contains("from-oci") && out.contains("exited(0)"), "{out}");
    let out = gridctl(&key, &["logs", "--node", &node_arg, "1"]).unwrap();
    assert!(out.contains("Hello, gridos!"), "{out}");
    assert!(out.contains(&format!("{bundle_len} bundle bytes")), "the bundle did not arrive whole: {out}");
    let out = gridctl(&key, &["logs", "--follow", "--node", &node_arg, "2"]).unwrap();
    assert!(out.starts_with("from-oci: started"), "{out}");
    // Without --bundle or --compiler, gridctl sends no code at all (the node interprets).
    let out = gridctl(&key, &["deploy", "--node", &node_arg, "--name", "plain", wasm.to_str().unwrap()]).unwrap();
    let plain = out.trim().to_string();
    let out = gridctl(&key, &["logs", "--node", &node_arg, &plain]).unwrap();
    assert!(out.contains("plain: started with") && out.contains(" 0 bundle bytes"), "{out}");
    assert_eq!(gridctl(&key, &["rm", "--node", &node_arg, &plain]).unwrap().trim(), format!("removed {plain}"));
    let out = gridctl(&key, &["status", "--node", &node_arg, "2"]).unwrap();
    assert!(out.contains("restart on boot  yes"), "{out}");
    let out = gridctl(&key, &["info", "--node", &node_arg]).unwrap();
    assert!(out.contains(&gridctl::hex(&node.target.key)) && out.contains("workloads        2"), "{out}");

    // Another key sees nothing and may touch nothing.
    let other_key = dir.join("other");
    UserKey::from_seed([0x22; 32]).unwrap().save_new(&other_key).unwrap();
    let out = gridctl(&other_key, &["--user-overlay-key", "list", "--node", &node_arg]).unwrap();
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    for cmd in ["status", "logs", "stop", "rm"] {
        // A stranger learns nothing: someone else's workload answers as a missing one.
        let e = gridctl(&other_key, &[cmd, "--node", &node_arg, "1"]).unwrap_err();
        assert!(e.contains("not found: no workload 1"), "{cmd}: {e}");
    }
    // A request signed by another key on the owner's connection is refused too.
    let mut client = Client::connect(&node.target, &user, Options::default()).unwrap();
    let other = UserKey::from_seed([0x22; 32]).unwrap();
    let r = client.call_with(Some(other.keypair()), &Request::Stop { id: 1 }, &mut |_, _| {}).unwrap();
    assert!(matches!(r, Response::Error { code: ErrorCode::NotFound, .. }), "{r:?}");
    assert!(matches!(client.call(&Request::Status { id: 1 }).unwrap(), Response::Status(s) if s.state == WorkloadState::Exited(0)));
    client.close();

    assert_eq!(gridctl(&key, &["stop", "--node", &node_arg, "1"]).unwrap().trim(), "stopped 1");
    assert_eq!(gridctl(&key, &["rm", "--node", &node_arg, "1"]).unwrap().trim(), "removed 1");
    let e = gridctl(&key, &["status", "--node", &node_arg, "1"]).unwrap_err();
    assert!(e.contains("not found"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreachable_node_and_bad_input_are_clear_errors() {
    let dir = temp_dir("errors");
    let key = dir.join("key");
    assert!(gridctl(&key, &["key", "show"]).unwrap_err().contains("gridctl key new"));
    let out = gridctl(&key, &["key", "new"]).unwrap();
    assert!(out.contains("public key") && out.contains("fd67:"), "{out}");
    assert!(gridctl(&key, &["key", "new"]).unwrap_err().contains("already exists"));
    let shown = gridctl(&key, &["key", "show"]).unwrap();
    assert!(out.ends_with(&shown), "{out} vs {shown}");

    // Nobody listens on this port: the link cannot come up.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let node_key = gridctl::hex(&overlay::Identity::from_seed([9; 32]).public_key().0);
    let node = format!("{node_key}@{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let mut argv = vec!["gridctl", "--timeout", "1", "--key", key.to_str().unwrap(), "list", "--node", &node];
    let e = cli::run(Cli::try_parse_from(&argv).unwrap(), &mut Vec::new()).unwrap_err();
    assert!(e.0.contains("no overlay link"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));

    argv.truncate(6);
    for bad in ["nokey@1.2.3.4:5", "00@1.2.3.4:5", &format!("{node_key}@nowhere.invalid:7443")] {
        argv.extend(["--node", bad]);
        let e = cli::run(Cli::try_parse_from(&argv).unwrap(), &mut Vec::new()).unwrap_err();
        assert!(!e.0.is_empty());
        argv.truncate(6);
    }
    let not_a_program = dir.join("junk.bin");
    std::fs::write(&not_a_program, b"junk").unwrap();
    let e = gridctl(&key, &["deploy", "--node", &node, not_a_program.to_str().unwrap()]).unwrap_err();
    assert!(e.contains("not a wasm module"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_put_get_list_prove_delete_over_the_overlay() {
    let node = start_node();
    let user = UserKey::from_seed([0x31; 32]).unwrap();
    let mut client = Client::connect(&node.target, &user, Options::default()).unwrap();
    // 3.5 MiB: four pieces, pipelined.
    let bytes: Vec<u8> = (0..(7 << 19)).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let mut seen = Vec::new();
    let stored = client.put_shard_with(&bytes, &mut |done, total| seen.push((done, total))).unwrap();
    assert_eq!(stored.key, *blake3::hash(&bytes).as_bytes());
    assert_eq!((stored.len, stored.merkle_root), (bytes.len() as u64, shardstore::merkle_root(&bytes)));
    assert_eq!(seen.last(), Some(&(bytes.len() as u64, bytes.len() as u64)));
    assert_eq!(client.get_shard(&stored.key, None).unwrap(), bytes);
    assert_eq!(client.get_shard(&stored.key, Some(1_000_000..2_100_000)).unwrap(), bytes[1_000_000..2_100_000]);
    assert_eq!(client.stat_shard(&stored.key).unwrap(), stored);
    assert_eq!(client.list_shards().unwrap(), vec![stored]);
    let proof = client.prove_shard(&user.public_key(), &stored.key, 12345).unwrap();
    assert!(proof.verify(&stored.merkle_root, stored.len, 12345));
    assert!(!proof.verify(&stored.merkle_root, stored.len, 12346) || shardstore::chunk_count(stored.len) == 1);
    // Putting it again is acknowledged at once, and the connection stays in step.
    assert_eq!(client.put_shard(&bytes).unwrap(), stored);
    let info = client.store_info().unwrap();
    assert_eq!((info.shards, info.quota_bytes), (1, QUOTA_BYTES));
    // Over the quota: refused at the first piece; the connection still works afterwards.
    let big = vec![5u8; 6 << 20];
    let e = client.put_shard(&big).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoSpace), "{e}");
    assert!(e.to_string().contains("owner quota"), "{e}");
    assert_eq!(client.stat_shard(&stored.key).unwrap(), stored);
    assert_eq!(client.peers().unwrap().len(), 1);

    // A stranger: not found, cannot delete, lists nothing; may ask for a proof.
    let stranger = UserKey::from_seed([0x32; 32]).unwrap();
    let mut other = Client::connect(&node.target, &stranger, Options::default()).unwrap();
    assert!(other.get_shard(&stored.key, None).unwrap_err().is_not_found());
    assert!(other.stat_shard(&stored.key).unwrap_err().is_not_found());
    assert!(other.delete_shard(&stored.key).unwrap_err().is_not_found());
    assert!(other.list_shards().unwrap().is_empty());
    assert!(other.prove_shard(&user.public_key(), &stored.key, 1).unwrap().verify(&stored.merkle_root, stored.len, 1));
    other.close();

    client.delete_shard(&stored.key).unwrap();
    assert!(client.get_shard(&stored.key, None).unwrap_err().is_not_found());
    assert!(client.list_shards().unwrap().is_empty());
    client.close();
}

/// `gridctl store` over the real shard-service protocol against the loopback node: with
/// one node the defaults shrink to K=1 M=1 and say so; put, get, verify, ls and rm; the
/// node's one peer is no node of ours (a probe that gives up).
#[test]
fn store_put_get_verify_rm_over_the_overlay() {
    let node = start_node();
    let dir = temp_dir("store");
    let key = dir.join("key");
    gridctl(&key, &["key", "new"]).unwrap();
    let file = dir.join("f.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let n = node_arg(&node.target);
    let out = gridctl(&key, &["store", "put", file.to_str().unwrap(), "--segment-kib", "128", "--nodes", &n, "--json"]).unwrap();
    let put: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((put["data_shards"].as_u64(), put["parity_shards"].as_u64(), put["segments"].as_u64()), (Some(1), Some(1), Some(3)), "{put}");
    assert!(put["notes"].to_string().contains("only 1 node"), "{put}");
    let id = put["id"].as_str().unwrap().to_string();
    let copy = dir.join("copy.bin");
    let got = gridctl(&key, &["store", "get", &id, "-o", copy.to_str().unwrap(), "--nodes", &n]).unwrap();
    assert!(got.contains("wrote"), "{got}");
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    let verify = gridctl(&key, &["store", "verify", &id, "--nodes", &n]).unwrap();
    assert!(verify.contains("6 shards: 6 ok, 0 missing, 0 corrupt"), "{verify}");
    assert!(gridctl(&key, &["store", "ls"]).unwrap().contains(&id));
    let stranger = dir.join("stranger");
    gridctl(&stranger, &["key", "new"]).unwrap();
    let e = gridctl(&stranger, &["store", "get", &id, "-o", dir.join("x").to_str().unwrap(), "--nodes", &n]).unwrap_err();
    assert!(e.contains("for your key"), "{e}");
    let rm = gridctl(&key, &["store", "rm", &id, "--nodes", &n]).unwrap();
    // K=1: the parity shard is a copy of the data shard, the same key on the same node,
    // so half of the deletes find it gone already.
    assert!(rm.contains("3 shards deleted, 3 already gone"), "{rm}");
    assert!(gridctl(&key, &["store", "get", &id, "-o", copy.to_str().unwrap(), "--nodes", &n]).is_err());
}

#[test]
fn deploy_on_a_ledger_pays_a_contract_and_names_it_in_the_manifest() {
    use gridctl::ledger::Ledger;
    use gridctl::localchain::{LocalChain, LocalTransport};
    use ledger::{Capacity, Keypair, TxKind};

    let node = start_node();
    let dir = temp_dir("ledger-deploy");
    let key = dir.join("key");
    let user = UserKey::from_seed([0x33; 32]).unwrap();
    user.save_new(&key).unwrap();
    let me = Keypair::from_seed([0x33; 32]);
    let farmer = Keypair::from_seed([0x01; 32]);
    let mut chain = LocalChain::new(&[(farmer.public(), 10), (me.public(), 1000)], ledger::PERIOD_MS).unwrap();
    chain.run(&farmer, TxKind::CreateFarm { name: "farm".into() }).unwrap();
    let capacity = Capacity { cores: 1, memory_bytes: 256 << 20, disks_bytes: vec![1 << 30], nics: 1 };
    chain.run(&farmer, TxKind::RegisterNode { node: node.target.key, farm: 0, capacity }).unwrap();
    let genesis = chain.genesis.clone();
    let chain = chain.shared();
    let mut ledger = Ledger::new(genesis, LocalTransport(chain.clone()), None).unwrap();
    let node_arg = node_arg(&node.target);
    let wasm = repo_file("tests/wasm/out/hello.wasm");
    let options = Options { timeout: Duration::from_secs(10), user_overlay_identity: false };
    let args = |memory_mb: &str, extra: &[&str]| {
        let mut argv = vec!["gridctl", "--key", key.to_str().unwrap(), "deploy", "--node", &node_arg, "--memory-mb", memory_mb];
        argv.extend_from_slice(extra);
        argv.push(wasm.to_str().unwrap());
        match Cli::try_parse_from(&argv).unwrap().command {
            cli::Command::Deploy(a) => a,
            _ => panic!("not a deploy"),
        }
    };

    let deployed = cli::deploy_on(&args("8", &["--price", "7"]), &user, options, Some(&mut ledger)).unwrap();
    let contract = deployed.contract.clone().unwrap();
    assert!(contract.created_in.is_some());
    {
        let c = chain.lock().unwrap();
        let record = c.state.contract(contract.id).unwrap();
        assert_eq!((record.owner, record.price_per_hour), (me.public(), 7));
        assert_eq!(c.state.node(&node.target.key).unwrap().reserved.memory_bytes, 8 << 20);
    }
    // The node received a manifest naming the contract.
    let out = gridctl(&key, &["logs", "--node", &node_arg, &deployed.id.to_string()]).unwrap();
    assert!(out.contains(&format!("under contract {}", contract.id)), "{out}");
    // --contract ID reuses it; a contract too small for the workload is refused before upload.
    let again = cli::deploy_on(&args("8", &["--contract", &contract.id.to_string()]), &user, options, Some(&mut ledger)).unwrap();
    assert_eq!(again.contract.map(|c| (c.id, c.created_in)), Some((contract.id, None)));
    let e = cli::deploy_on(&args("16", &["--contract", &contract.id.to_string()]), &user, options, Some(&mut ledger)).unwrap_err();
    assert!(e.0.contains("reserves 8 MiB memory"), "{e}");
    // Without tokens for a new one: refused, nothing deployed.
    let e = cli::deploy_on(&args("8", &["--price", "5000"]), &user, options, Some(&mut ledger)).unwrap_err();
    assert!(e.0.starts_with("no tokens"), "{e}");
    let out = gridctl(&key, &["list", "--node", &node_arg]).unwrap();
    assert_eq!(out.lines().count(), 3, "{out}");
    // Without a ledger trusted, `nodes` says so and --contract is refused.
    let empty = temp_dir("ledger-none");
    let e = gridctl(&key, &["--ledger-dir", empty.to_str().unwrap(), "nodes"]).unwrap_err();
    assert!(e.contains("no ledger trusted"), "{e}");
    let e = gridctl(&key, &["--no-ledger", "deploy", "--node", &node_arg, "--contract", "1", wasm.to_str().unwrap()]).unwrap_err();
    assert!(e.contains("--contract needs a ledger"), "{e}");
}
