//! Files over many nodes, booted (issue 12): five nodes under QEMU on one virtual segment,
//! wired as `./gridos run --nodes 5` wires them (`gridos_qemu::cluster`: node 0's overlay
//! port forwarded to the host, the others reached through it over the overlay), and
//! `gridctl store` in this process. One boot, many checks:
//!
//! 1. put a 32 MiB random file with K=3 M=2: every segment's five shards on five distinct
//!    nodes, and verify passes;
//! 2. kill two nodes that hold shards; get the file back byte-identical from an empty
//!    config directory holding only the user's key;
//! 3. two fresh nodes join; repair brings every segment back to five live shards on five
//!    distinct live nodes (none of the dead), and verify passes on the new id;
//! 4. flip a byte of one shard in a node's disk image (found by its bytes): verify names
//!    that shard on that node as corrupt, and get still returns the right bytes;
//! 5. another user's key can neither read nor delete the file or its shards;
//! 6. rm deletes every shard.
//!
//! Needs no root (a user-space switch for the segment, QEMU user networking). Prints put/get MB/s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use gridctl::cli::{self, Cli};
use gridctl::key::UserKey;
use gridctl::store::nodes::{Connector, NodeError};
use gridctl::store::remote::RemoteConnector;
use gridctl::target::Target;
use gridos_qemu::cluster::{self, ClusterNet};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, RunningMachine};
use gridos_tests::free_udp_port;
use serde_json::Value;

/// Seconds each gridctl wait may take (a dead node costs this much once per command).
const TIMEOUT_S: &str = "30";
/// The file: 32 MiB (the size); `GRIDOS_FILES_TEST_MIB` makes it smaller for a
/// quick run of the same steps.
fn file_bytes() -> usize {
    std::env::var("GRIDOS_FILES_TEST_MIB").ok().and_then(|m| m.parse::<usize>().ok()).filter(|m| *m > 0).unwrap_or(32) << 20
}

struct Node {
    vm: Option<RunningMachine>,
    key: String,
    address: String,
    disk: PathBuf,
}

fn boot(base: &Machine, index: u32, net: &ClusterNet, dir: &Path) -> Node {
    let disk = cluster::node_disk(dir, index, 128).unwrap_or_else(|e| panic!("{e}"));
    let vm = cluster::node_machine(base, index, net, &disk).and_then(|m| m.spawn()).unwrap_or_else(|e| panic!("{e}"));
    assert!(vm.wait_for("control: workload control on overlay tcp port 7070", Duration::from_secs(120)), "node {index}\n{}", vm.serial());
    let serial = vm.serial();
    let key = cluster::overlay_key(&serial).unwrap_or_else(|| panic!("no key\n{serial}"));
    let line = serial.lines().find(|l| l.contains("overlay: key ")).unwrap_or_default();
    let address = line.split_whitespace().skip_while(|w| *w != "address").nth(1).unwrap_or_default().to_string();
    Node { vm: Some(vm), key, address, disk }
}

fn serial(n: &Node) -> String {
    n.vm.as_ref().map(|v| v.serial()).unwrap_or_default()
}

/// Waits until node 0 has an overlay link with each of `others`.
fn wait_linked(gateway: &Node, others: &[&Node]) {
    for o in others {
        let needle = format!("link up with {}", o.address);
        let vm = gateway.vm.as_ref().expect("gateway up");
        assert!(vm.wait_for(&needle, Duration::from_secs(60)), "node 0 never linked with {}\n{}", o.address, vm.serial());
    }
}

/// Waits until the gateway's `Peers` answer (what `store put` discovers nodes from) lists
/// every other node with its key; panics with the last answer after a minute.
fn wait_listed(gateway: &Node, target: &str, user: &Path, others: &[&Node]) {
    let options = gridctl::client::Options { timeout: Duration::from_secs(30), user_overlay_identity: false };
    let target = Target::parse(target).expect("gateway");
    let key = UserKey::load(user).expect("key");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let answer = match gridctl::client::Client::connect(&target, &key, options) {
            Ok(mut c) => c.peers().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(peers) => {
                let hex = |k: [u8; 32]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
                let listed = |k: &str| peers.iter().any(|p| p.key.map(hex).as_deref() == Some(k));
                if others.iter().all(|o| listed(&o.key)) {
                    return;
                }
                last = format!("{peers:?}");
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let marked: Vec<&str> = others
        .iter()
        .filter(|o| gridctl::parse_hex::<32>(&o.key).is_some_and(|k| gridctl::client::is_one_off_client_key(&k)))
        .map(|o| o.key.as_str())
        .collect();
    panic!("node 0's peers never listed every other node: {last}\n(node keys carrying gridctl's one-off mark: {marked:?})\n{}", serial(gateway));
}

/// Seconds the user's machine spends on each client stage of `store put` and `get` for
/// the file at `path` (K=3 M=2, default segments), measured here on the same bytes with
/// the functions gridctl's pipeline runs: sealing (XChaCha20-Poly1305), Reed-Solomon
/// encoding, and for get rebuilding a segment from K shards with one data shard lost,
/// then opening it. The rest of a put's or get's time is the network and the nodes.
struct ClientStages {
    seal_s: f64,
    split_s: f64,
    open_s: f64,
}

fn client_stages(path: &Path) -> ClientStages {
    let params = files::Params { data_shards: 3, parity_shards: 2, ..files::Params::default() };
    let key = files::FileKey::derive(&[7u8; 32], &[9u8; 24]);
    let bytes = std::fs::read(path).expect("read the file");
    let (mut seal_s, mut split_s, mut open_s) = (0.0, 0.0, 0.0);
    for (index, plain) in bytes.chunks(params.segment_bytes as usize).enumerate() {
        let t = Instant::now();
        let sealed = files::seal_segment(&key, &params, index as u64, plain).expect("seal");
        seal_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let encoded = files::split_segment(&params, index as u64, plain.len() as u32, &sealed).expect("split");
        split_s += t.elapsed().as_secs_f64();
        let entry = files::SegmentEntry {
            index: index as u64,
            plain_len: plain.len() as u32,
            shards: encoded.shards.iter().map(|s| files::shard_ref(s, [0u8; 32])).collect(),
        };
        let mut shards: Vec<Option<Vec<u8>>> = encoded.shards.into_iter().map(Some).collect();
        shards[0] = None;
        let t = Instant::now();
        let opened = files::decode_segment(&key, &params, &entry, &mut shards).expect("decode");
        open_s += t.elapsed().as_secs_f64();
        assert_eq!(opened, plain, "segment {index} did not round-trip");
    }
    ClientStages { seal_s, split_s, open_s }
}

/// Runs `gridctl --key KEY store ARGS...`; returns what it printed and its result.
fn store(key: &Path, args: &[&str]) -> (String, Result<(), String>) {
    let mut argv = vec!["gridctl", "--timeout", TIMEOUT_S, "--key", key.to_str().expect("path"), "store"];
    argv.extend_from_slice(args);
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => return (String::new(), Err(e.to_string())),
    };
    let mut out = Vec::new();
    let result = cli::run(cli, &mut out).map_err(|e| e.to_string());
    (String::from_utf8_lossy(&out).into_owned(), result)
}

fn store_json(key: &Path, args: &[&str], nodes: &[Node]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (out, result) = store(key, &a);
    if let Err(e) = result {
        let serials: String = nodes.iter().map(|n| format!("--- {} ---\n{}\n", n.key, serial(n))).collect();
        panic!("gridctl store {args:?} failed: {e}\n{out}\n{serials}");
    }
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Each segment's (node, shard key) pairs from a verify report, checking every status.
fn by_segment(report: &Value, status: &str) -> std::collections::BTreeMap<u64, Vec<(String, String)>> {
    let mut map = std::collections::BTreeMap::<u64, Vec<(String, String)>>::new();
    for s in report["shards"].as_array().expect("shards") {
        assert_eq!(s["status"], status, "{s}");
        map.entry(s["segment"].as_u64().expect("segment"))
            .or_default()
            .push((s["node"].as_str().expect("node").to_string(), s["key"].as_str().expect("key").to_string()));
    }
    map
}

fn distinct_nodes(shards: &[(String, String)]) -> usize {
    let mut n: Vec<&String> = shards.iter().map(|(node, _)| node).collect();
    n.sort();
    n.dedup();
    n.len()
}

fn random_file(path: &Path, len: usize, seed: u64) -> blake3::Hash {
    let mut x = seed | 1;
    let mut bytes = vec![0u8; len];
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    std::fs::write(path, &bytes).expect("write file");
    blake3::hash(&bytes)
}

fn hash_file(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Finds `needle` in the file at `path`; returns its offset.
fn find_in_image(path: &Path, needle: &[u8]) -> Option<usize> {
    let image = std::fs::read(path).ok()?;
    let first = *needle.first()?;
    let mut at = 0;
    while let Some(i) = image.get(at..)?.iter().position(|b| *b == first) {
        let start = at + i;
        if image.get(start..start + needle.len()) == Some(needle) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

#[test]
fn five_nodes_lose_two_get_repair_verify_corrupt_and_a_stranger() {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let pid = std::process::id();
    let dir = gridos_qemu::workspace_root().join("target/test-disks").join(format!("files-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let switch = gridos_qemu::switch::Switch::start().unwrap_or_else(|e| panic!("{e}"));
    let net = ClusterNet::new(&switch, free_udp_port());
    let mut base = Machine::new(&kernel);
    base.cmdline = "gridos.test=serve".into();
    if std::env::var_os("GRIDOS_FILES_TEST_DEBUG").is_some() {
        base.cmdline.push_str(" gridos.log=debug");
    }
    base.timeout = Duration::from_secs(1200);

    let mut nodes: Vec<Node> = (0..5).map(|i| boot(&base, i, &net, &dir)).collect();
    wait_linked(&nodes[0], &nodes[1..].iter().collect::<Vec<_>>());
    let gateway = format!("{}@127.0.0.1:{}", nodes[0].key, net.host_udp_port);
    let user = dir.join("user/key");
    UserKey::generate().expect("key").save_new(&user).expect("save key");
    wait_listed(&nodes[0], &gateway, &user, &nodes[1..].iter().collect::<Vec<_>>());

    // 1. Put.
    let src = dir.join("file.bin");
    let src_hash = random_file(&src, file_bytes(), u64::from(pid));
    // 4 MiB segments, five shards each.
    let segments = file_bytes().div_ceil(4 << 20);
    let shards = 5 * segments;
    let start = Instant::now();
    let put = store_json(&user, &["put", src.to_str().expect("path"), "--data", "3", "--parity", "2", "--nodes", &gateway], &nodes);
    let put_s = start.elapsed().as_secs_f64();
    eprintln!("files bench: put {} MiB (K=3 M=2, {} MiB of shards) in {put_s:.1} s: {:.2} MB/s", file_bytes() >> 20, file_bytes() * 5 / 3 >> 20, file_bytes() as f64 / 1e6 / put_s);
    let stages = client_stages(&src);
    eprintln!(
        "files bench: put stages: encrypt {:.2} s ({:.0}%), erasure encode {:.2} s ({:.0}%), network and node store {:.1} s ({:.0}%)",
        stages.seal_s,
        100.0 * stages.seal_s / put_s,
        stages.split_s,
        100.0 * stages.split_s / put_s,
        (put_s - stages.seal_s - stages.split_s).max(0.0),
        100.0 * (put_s - stages.seal_s - stages.split_s).max(0.0) / put_s
    );
    // GRIDOS_FILES_TEST_DEBUG=1 prints put's answer (its notes name the nodes that failed)
    // and each node's control, shard and overlay lines and debug log (it boots the nodes
    // with `gridos.log=debug`: smoltcp's TCP notes and the overlay's `traffic` counters).
    if std::env::var_os("GRIDOS_FILES_TEST_DEBUG").is_some() {
        eprintln!("put: {put}");
        for (i, n) in nodes.iter().enumerate() {
            for line in serial(n).lines().filter(|l| l.contains("overlay: traffic") || l.contains("DEBUG") || l.contains("control:") || l.contains("overlay: guard") || l.contains("shard")) {
                eprintln!("node {i}: {line}");
            }
        }
    }
    assert_eq!((put["data_shards"].as_u64(), put["parity_shards"].as_u64(), put["segments"].as_u64()), (Some(3), Some(2), Some(segments as u64)), "{put}");
    let id = put["id"].as_str().expect("id").to_string();
    let v = store_json(&user, &["verify", &id, "--nodes", &gateway], &nodes);
    let placed = by_segment(&v, "ok");
    assert_eq!(placed.len(), segments);
    for (s, shards) in &placed {
        assert_eq!(distinct_nodes(shards), 5, "segment {s}: {shards:?}");
    }

    // 2. Two nodes that hold shards die (not node 0, the way in); get from an empty config.
    let victims = [3usize, 4];
    for &v in &victims {
        assert!(placed.values().flatten().any(|(n, _)| *n == nodes[v].key), "node {v} holds no shard");
        if let Some(vm) = nodes[v].vm.take() {
            drop(vm.kill());
        }
    }
    let fresh = dir.join("fresh/key");
    std::fs::create_dir_all(dir.join("fresh")).expect("fresh dir");
    std::fs::copy(&user, &fresh).expect("copy key");
    let out = dir.join("out.bin");
    let start = Instant::now();
    let got = store_json(&fresh, &["get", &id, "-o", out.to_str().expect("path"), "--nodes", &gateway], &nodes);
    eprintln!(
        "files bench: get {} MiB with two nodes dead in {:.1} s: {:.2} MB/s (includes waiting {TIMEOUT_S} s for the dead)",
        file_bytes() >> 20,
        start.elapsed().as_secs_f64(),
        file_bytes() as f64 / 1e6 / start.elapsed().as_secs_f64()
    );
    assert_eq!(got["size"].as_u64(), Some(file_bytes() as u64), "{got}");
    assert_eq!(hash_file(&out), src_hash, "the file came back different");
    assert_eq!(std::fs::read_dir(dir.join("fresh")).expect("dir").count(), 1, "get left files in the config dir");

    // 3. Two fresh nodes join; repair; verify.
    let joined: Vec<Node> = (5..7).map(|i| boot(&base, i, &net, &dir)).collect();
    wait_linked(&nodes[0], &joined.iter().collect::<Vec<_>>());
    wait_listed(&nodes[0], &gateway, &user, &joined.iter().collect::<Vec<_>>());
    nodes.extend(joined);
    let rep = store_json(&user, &["repair", &id, "--nodes", &gateway], &nodes);
    let new_id = rep["id"].as_str().expect("id").to_string();
    assert_eq!(rep["previous_id"].as_str(), Some(id.as_str()), "{rep}");
    assert_eq!(rep["repaired"].as_array().map(Vec::len), Some(2 * segments), "{rep}");
    let v = store_json(&user, &["verify", &new_id, "--nodes", &gateway], &nodes);
    let placed = by_segment(&v, "ok");
    assert_eq!(placed.len(), segments);
    for (s, shards) in &placed {
        assert_eq!(distinct_nodes(shards), 5, "segment {s}: {shards:?}");
        for &dead in &victims {
            assert!(!shards.iter().any(|(n, _)| *n == nodes[dead].key), "segment {s} still counts on dead node {dead}");
        }
    }

    // 4. Flip a byte of a shard on node 1's disk; verify names it; get still works.
    let (victim_key, victim_node) = placed
        .values()
        .flatten()
        .find(|(n, _)| *n == nodes[1].key)
        .map(|(n, k)| (k.clone(), n.clone()))
        .expect("a shard on node 1");
    let options = gridctl::client::Options { timeout: Duration::from_secs(30), user_overlay_identity: false };
    let seeds = vec![Target::parse(&gateway).expect("gateway")];
    let owner = RemoteConnector::new(seeds.clone(), UserKey::load(&user).expect("key"), options);
    let key_bytes = gridctl::parse_hex::<32>(&victim_key).expect("key");
    let node_bytes = gridctl::parse_hex::<32>(&victim_node).expect("node");
    let shard = owner.connect(&node_bytes, false).expect("connect").get(&key_bytes).expect("the owner reads its shard");
    assert_eq!(*blake3::hash(&shard).as_bytes(), key_bytes);
    let needle = &shard[..64.min(shard.len())];
    let at = find_in_image(&nodes[1].disk, needle).expect("the shard's bytes in node 1's disk image");
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&nodes[1].disk).expect("open image");
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at as u64)).and_then(|_| f.read_exact(&mut b)).expect("read");
        b[0] ^= 0x40;
        f.seek(SeekFrom::Start(at as u64)).and_then(|_| f.write_all(&b)).and_then(|_| f.sync_all()).expect("write");
    }
    let (text, result) = store(&user, &["verify", &new_id, "--nodes", &gateway, "--json"]);
    let err = result.expect_err("verify must fail on a corrupt shard");
    assert!(err.contains(&format!("1 of {shards} shards")), "{err}\n{text}");
    let report: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    let bad: Vec<&Value> = report["shards"].as_array().expect("shards").iter().filter(|s| s["status"] != "ok").collect();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!((bad[0]["status"].as_str(), bad[0]["node"].as_str(), bad[0]["key"].as_str()), (Some("corrupt"), Some(&victim_node[..]), Some(&victim_key[..])), "{report}");
    let (human, _) = store(&user, &["verify", &new_id, "--nodes", &gateway]);
    assert!(human.contains("corrupt") && human.contains(&victim_node[..16]), "{human}");
    let out2 = dir.join("out2.bin");
    let start = Instant::now();
    let got = store_json(&user, &["get", &new_id, "-o", out2.to_str().expect("path"), "--nodes", &gateway], &nodes);
    let get_s = start.elapsed().as_secs_f64();
    eprintln!("files bench: get {} MiB (one corrupt shard) in {get_s:.1} s: {:.2} MB/s", file_bytes() >> 20, file_bytes() as f64 / 1e6 / get_s);
    eprintln!(
        "files bench: get stages: erasure decode and decrypt {:.2} s ({:.0}%), network, node reads and checks {:.1} s ({:.0}%)",
        stages.open_s,
        100.0 * stages.open_s / get_s,
        (get_s - stages.open_s).max(0.0),
        100.0 * (get_s - stages.open_s).max(0.0) / get_s
    );
    assert_eq!(hash_file(&out2), src_hash, "{got}");

    // 5. A stranger: no file, no shard, no delete.
    let stranger = dir.join("stranger/key");
    UserKey::generate().expect("key").save_new(&stranger).expect("save");
    let out3 = dir.join("out3.bin");
    let (_, r) = store(&stranger, &["get", &new_id, "-o", out3.to_str().expect("path"), "--nodes", &gateway]);
    assert!(r.is_err() && !out3.exists(), "{r:?}");
    let (_, r) = store(&stranger, &["rm", &new_id, "--nodes", &gateway]);
    assert!(r.is_err(), "{r:?}");
    let (some_node, some_key) = placed.values().flatten().find(|(n, _)| *n == nodes[2].key).cloned().expect("a shard on node 2");
    let some_node = gridctl::parse_hex::<32>(&some_node).expect("node");
    let some_key = gridctl::parse_hex::<32>(&some_key).expect("key");
    let thief = RemoteConnector::new(seeds, UserKey::load(&stranger).expect("key"), options);
    let mut conn = thief.connect(&some_node, false).expect("the stranger connects");
    assert_eq!(conn.get(&some_key).err(), Some(NodeError::NotFound));
    assert_eq!(conn.delete(&some_key).err(), Some(NodeError::NotFound));
    drop(conn);
    let mine = owner.connect(&some_node, false).expect("connect").get(&some_key).expect("still there for the owner");
    assert_eq!(*blake3::hash(&mine).as_bytes(), some_key);

    // 6. rm.
    let rm = store_json(&user, &["rm", &new_id, "--nodes", &gateway], &nodes);
    assert_eq!(rm["deleted"].as_u64().unwrap_or(0) + rm["already_gone"].as_u64().unwrap_or(0), shards as u64, "{rm}");
    let mut gone = owner.connect(&some_node, false).expect("connect");
    assert_eq!(gone.get(&some_key).err(), Some(NodeError::NotFound));
    drop(gone);

    for n in &mut nodes {
        if let Some(vm) = n.vm.take() {
            let out = vm.kill();
            assert!(!out.serial.contains("PANIC"), "{}", out.serial);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
