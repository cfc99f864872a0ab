//! The node on the ledger, booted (issue 14): four `validator` processes on the host
//! (`validator init --overlay-addrs ... --period-secs 20`, then `validator run`, as
//! `./gridos run --validators 4` starts them) and three nodes under QEMU on one segment
//! (`gridos_qemu::cluster`; each reaches the validators at the host's 10.0.2.2 through
//! node 0's user-network port), booted with `gridos.ledger=CHAINID
//! gridos.ledger.validators=...` and `gridos.farm=F`. One boot, many checks:
//!
//! 1. every node registers itself in farm F with the capacity its inventory measured (and
//!    is listed by `gridctl nodes`), and its uptime reports land on the ledger;
//! 2. the user (the chain's funded development account) is refused a shard put and a
//!    deploy without a contract (`no contract:`), then creates a storage contract placing
//!    one shard on each node and a workload contract on node 0 (signed transactions,
//!    through gridctl's verifying ledger client), puts the shards and deploys under the
//!    contract;
//! 3. over several periods every node's proofs are accepted, and the farm's earnings, the
//!    farmer's balance and the contracts' `paid` agree to the token with what the user
//!    paid;
//! 4. node 2's data disk is wiped (its store area zeroed under it): its proofs fail, the
//!    ledger marks it, and the storage contract pays only the two good shards' part;
//! 5. node 1 is restarted mid-period: it resumes from the ledger with no uptime report or
//!    proof sent twice for a period and none missing (it is never marked);
//! 6. the workload contract is cancelled: node 0 stops the workload.
//!
//! And throughout: a lying validator endpoint listed first on every node serves forged
//! next blocks signed by one validator only; every node refuses them (`ledger: validator 0
//! distrusted ... NoQuorum`) and follows the real chain.
//!
//! Needs no root. Several minutes under TCG (mostly waiting for 20 s billing periods).

use std::io::{Seek, SeekFrom, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gridctl::client::{Client, Options};
use gridctl::key::UserKey;
use gridctl::ledger::{Ledger, OverlayTransport};
use gridctl::target::Target;
use gridos_qemu::cluster::{self, ClusterNet};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, RunningMachine};
use gridos_tests::{free_udp_port, wasm};
use ledger::state::{ContractStatus, ContractTerms, MarkReason};
use ledger::{Keypair, Resources, ShardPlacement, TxKind};

const PERIOD_SECS: u64 = 20;
const VALIDATORS: usize = 4;
const NODES: u32 = 3;
const STORAGE_PRICE: u64 = 300;
const WORKLOAD_PRICE: u64 = 50;
const SHARD_BYTES: usize = 64 << 10;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> [u8; 32] {
    gridctl::parse_hex::<32>(text.trim()).unwrap_or_else(|| panic!("{text:?} is not 64 hex digits"))
}

/// The `validator` executable (debug profile, built once).
fn validator_binary() -> PathBuf {
    let root = gridos_qemu::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "-p", "validator", "--bin", "validator"])
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the validator failed");
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    target.join("debug/validator")
}

/// The validator processes; killed when dropped.
struct Validators {
    children: Vec<Child>,
}

impl Drop for Validators {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_validators(dir: &Path) -> Validators {
    let bin = validator_binary();
    let tcp: Vec<String> =
        (0..VALIDATORS).map(|_| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").to_string()).collect();
    let udp: Vec<String> =
        (0..VALIDATORS).map(|_| UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("port").to_string()).collect();
    let status = Command::new(&bin)
        .arg("init")
        .arg("--dir")
        .arg(dir)
        .args(["--addrs", &tcp.join(","), "--overlay-addrs", &udp.join(","), "--period-secs", &PERIOD_SECS.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("validator init");
    assert!(status.success());
    let children = (0..VALIDATORS)
        .map(|i| {
            let log = std::fs::File::create(dir.join(format!("validator-{i}.log"))).expect("log");
            Command::new(&bin)
                .arg("run")
                .arg("--dir")
                .arg(dir)
                .args(["--index", &i.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("validator run")
        })
        .collect();
    Validators { children }
}

/// A lying validator endpoint: on the overlay (its own identity, UDP `socket`), it serves
/// the real genesis, answers every `LightBlocks` with a forged next block (another state
/// root) whose commit only validator 0 signed (one of four: no quorum), and refuses the
/// rest. The parent of the forged block is read from a real validator (`real`). Counts
/// the forged blocks it served in `served`; stops when `run` is cleared.
fn fake_validator(
    socket: UdpSocket,
    genesis: ledger::Genesis,
    signer: Keypair,
    real: Target,
    run: std::sync::Arc<std::sync::atomic::AtomicBool>,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> [u8; 32] {
    use ledger::rpc::{self, Request, Response};
    use smoltcp::socket::tcp;
    use std::sync::atomic::Ordering;
    let seed: [u8; 32] = random_bytes(32, u64::from(std::process::id()) ^ 0x5eed).try_into().expect("32");
    let config = overlay::Config { accept_unknown_peers: true, ..overlay::Config::default() };
    let mut stack = hostnet::stack::Stack::new(seed, socket, config).expect("fake validator stack");
    let key = ::overlay::identity::Identity::from_seed(seed).public_key().0;
    std::thread::spawn(move || {
        let listen = |stack: &mut hostnet::stack::Stack| {
            let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 64 << 10]), tcp::SocketBuffer::new(vec![0; 64 << 10]));
            let _ = s.listen(rpc::PORT);
            stack.sockets.add(s)
        };
        let mut slots: Vec<(smoltcp::iface::SocketHandle, Vec<u8>)> = (0..8).map(|_| (listen(&mut stack), Vec::new())).collect();
        let mut parent_source: Option<OverlayTransport> = None;
        let chain_id = genesis.chain_id();
        while run.load(Ordering::Relaxed) {
            let _ = stack.poll(Duration::from_millis(5));
            for (handle, input) in &mut slots {
                let s = stack.sockets.get_mut::<tcp::Socket>(*handle);
                if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait | tcp::State::CloseWait) {
                    s.abort();
                    let _ = s.listen(rpc::PORT);
                    input.clear();
                    continue;
                }
                let mut buf = [0u8; 16 << 10];
                while s.can_recv() && input.len() < rpc::REQUEST_BYTES_MAX {
                    match s.recv_slice(&mut buf) {
                        Ok(n) if n > 0 => input.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                let request = match rpc::take_request(input) {
                    Ok(Some((request, used))) => {
                        input.drain(..used);
                        request
                    }
                    Ok(None) => continue,
                    Err(_) => {
                        s.abort();
                        input.clear();
                        continue;
                    }
                };
                let response = match request {
                    Request::Genesis => Response::Genesis(Box::new(genesis.clone())),
                    Request::LightBlocks { from, .. } if from > 0 => {
                        if parent_source.is_none() {
                            parent_source = OverlayTransport::connect(&real, Duration::from_secs(10)).ok();
                        }
                        let parent = parent_source.as_mut().and_then(|t| {
                            gridctl::ledger::Transport::call(t, &Request::LightBlock(from - 1)).ok()
                        });
                        match parent {
                            Some(Response::LightBlock(Some(parent))) => {
                                let header = ledger::Header {
                                    chain_id,
                                    height: from,
                                    time_ms: parent.header.time_ms + 1_000,
                                    parent_hash: parent.header.hash(),
                                    txs_hash: ledger::block::txs_hash(&[]),
                                    state_root: [0x66; 32],
                                    validators_hash: parent.header.next_validators_hash,
                                    next_validators_hash: parent.header.next_validators_hash,
                                    proposer: signer.public(),
                                };
                                let mut commit = ledger::Commit::new(&header, 0);
                                commit.sign(&chain_id, &signer);
                                served.fetch_add(1, Ordering::Relaxed);
                                Response::LightBlocks(vec![ledger::LightBlock { header, commit, next_validators: None }])
                            }
                            _ => {
                                parent_source = None;
                                Response::Refused("busy".into())
                            }
                        }
                    }
                    _ => Response::Refused("this validator serves the genesis and forged blocks only".into()),
                };
                let _ = s.send_slice(&rpc::response_frame(&response));
            }
        }
    });
    key
}

fn read_seed_key(path: &Path) -> Keypair {
    Keypair::try_from_seed(unhex32(&std::fs::read_to_string(path).expect("key file"))).expect("seed")
}

/// gridctl's verifying ledger client, on validator `i` (retried while they start).
fn ledger_client(dir: &Path, genesis: &ledger::Genesis) -> Ledger<OverlayTransport> {
    let targets = gridctl::ledger::read_validators(&dir.join("validators.txt")).expect("validators.txt");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    loop {
        let target = &targets[i % targets.len()];
        let attempt = OverlayTransport::connect(target, Duration::from_secs(10))
            .and_then(|t| Ledger::new(genesis.clone(), t, None))
            .and_then(|mut l| l.follow(None).map(|_| ()).map(|()| l));
        match attempt {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("ledger client: validator {}: {e}; retrying", i % targets.len());
                std::thread::sleep(Duration::from_secs(1));
                i += 1;
            }
            Err(e) => panic!("no validator answers: {e}"),
        }
    }
}

/// A read or submission through the ledger client, reconnecting once on a failure.
fn with_ledger<R>(
    l: &mut Ledger<OverlayTransport>,
    dir: &Path,
    genesis: &ledger::Genesis,
    mut f: impl FnMut(&mut Ledger<OverlayTransport>) -> gridctl::Result<R>,
) -> R {
    match f(l) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledger client: {e}; reconnecting");
            *l = ledger_client(dir, genesis);
            f(l).unwrap_or_else(|e| panic!("ledger: {e}"))
        }
    }
}

struct Node {
    vm: Option<RunningMachine>,
    key: String,
    disk: PathBuf,
}

impl Node {
    fn serial(&self) -> String {
        self.vm.as_ref().map(|v| v.serial()).unwrap_or_default()
    }

    fn wait(&self, needle: &str, secs: u64) -> bool {
        self.vm.as_ref().is_some_and(|v| v.wait_for(needle, Duration::from_secs(secs)))
    }

    fn key_bytes(&self) -> [u8; 32] {
        unhex32(&self.key)
    }
}

fn boot(base: &Machine, index: u32, net: &ClusterNet, dir: &Path) -> Node {
    let disk = cluster::node_disk(dir, index, 128).unwrap_or_else(|e| panic!("{e}"));
    let vm = cluster::node_machine(base, index, net, &disk).and_then(|m| m.spawn()).unwrap_or_else(|e| panic!("{e}"));
    assert!(vm.wait_for("control: workload control on overlay tcp port 7070", Duration::from_secs(180)), "node {index}\n{}", vm.serial());
    let serial = vm.serial();
    let key = cluster::overlay_key(&serial).unwrap_or_else(|| panic!("no key\n{serial}"));
    Node { vm: Some(vm), key, disk }
}

fn dump(nodes: &[Node]) -> String {
    nodes.iter().enumerate().map(|(i, n)| format!("--- node {i} ({}) ---\n{}\n", n.key, n.serial())).collect()
}

/// The number in `line` after `word`.
fn number_after(line: &str, word: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == word)?;
    words.next()?.trim_end_matches([',', ':', ')']).parse().ok()
}

/// Periods of the `ledger: uptime reported for period P` lines in `serial`.
fn uptime_periods(serial: &str) -> Vec<u64> {
    serial.lines().filter(|l| l.contains("ledger: uptime reported for period")).filter_map(|l| number_after(l, "period")).collect()
}

/// (contract, shard, period) of the `ledger: proof ok` lines in `serial`.
fn proofs_ok(serial: &str) -> Vec<(u64, u64, u64)> {
    serial
        .lines()
        .filter(|l| l.contains("ledger: proof ok contract"))
        .filter_map(|l| Some((number_after(l, "contract")?, number_after(l, "shard")?, number_after(l, "period")?)))
        .collect()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The control client for node `n`: directly for node 0 (the gateway), through it for the others.
fn client(gateway: &Target, node: &Node, index: usize, user: &UserKey) -> Client {
    let options = Options { timeout: Duration::from_secs(30), user_overlay_identity: false };
    let r = if index == 0 { Client::connect(gateway, user, options) } else { Client::connect_via(gateway, node.key_bytes(), user, options) };
    r.unwrap_or_else(|e| panic!("connect to node {index}: {e}"))
}

/// Waits until the ledger's current period is at least `period`.
fn wait_period(l: &mut Ledger<OverlayTransport>, dir: &Path, genesis: &ledger::Genesis, period: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(PERIOD_SECS * (period.saturating_sub(0) + 3).min(20));
    loop {
        let (_, meta) = with_ledger(l, dir, genesis, |l| l.meta());
        if meta.period >= period {
            return meta.period;
        }
        assert!(Instant::now() < deadline, "the chain never reached period {period} (at {})", meta.period);
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn three_nodes_on_a_four_validator_ledger() {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let pid = std::process::id();
    let dir = gridos_qemu::workspace_root().join("target/test-disks").join(format!("ledger-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let chain_dir = dir.join("chain");
    let _validators = start_validators(&chain_dir);
    let genesis: ledger::Genesis = postcard::from_bytes(&std::fs::read(chain_dir.join("genesis.bin")).expect("genesis")).expect("decode");
    let chain_id = genesis.chain_id();
    let mut l = ledger_client(&chain_dir, &genesis);
    let dev = read_seed_key(&chain_dir.join("dev-account.key"));
    let dev_initial = with_ledger(&mut l, &chain_dir, &genesis, |l| l.account(&dev.public())).1.balance;

    // The farm, owned by a farmer with no tokens.
    let farmer = Keypair::try_from_seed(random_bytes(32, u64::from(pid)).try_into().expect("32")).expect("seed");
    let farm = with_ledger(&mut l, &chain_dir, &genesis, |l| l.meta()).1.next_farm_id;
    with_ledger(&mut l, &chain_dir, &genesis, |l| l.submit(&farmer, TxKind::CreateFarm { name: "test farm".into() }));
    assert!(with_ledger(&mut l, &chain_dir, &genesis, |l| l.farm(farm)).is_some_and(|f| f.owner == farmer.public()));

    // The nodes reach the validators at the host's address on the segment. A lying
    // validator endpoint comes first in their list (the agent asks the first idle one for
    // the next blocks): its blocks carry validator 0's signature only.
    let fake_run = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let forged = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let fake_socket = UdpSocket::bind("127.0.0.1:0").expect("fake validator port");
    let fake_port = fake_socket.local_addr().expect("port").port();
    let real = gridctl::ledger::read_validators(&chain_dir.join("validators.txt")).expect("validators").remove(1);
    let fake_key = fake_validator(fake_socket, genesis.clone(), read_seed_key(&chain_dir.join("validator-0.key")), real, fake_run.clone(), forged.clone());
    let mut validators: Vec<String> = vec![format!("{}@10.0.2.2:{fake_port}", hex(&fake_key))];
    validators.extend(
        std::fs::read_to_string(chain_dir.join("validators.txt"))
            .expect("validators.txt")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().replace("127.0.0.1:", "10.0.2.2:")),
    );
    let switch = gridos_qemu::switch::Switch::start().unwrap_or_else(|e| panic!("{e}"));
    let net = ClusterNet::new(&switch, free_udp_port());
    let mut base = Machine::new(&kernel);
    base.cmdline = format!(
        "gridos.test=serve gridos.screen=off gridos.farm={farm} gridos.ledger={} gridos.ledger.validators={}",
        hex(&chain_id),
        validators.join(",")
    );
    if std::env::var_os("GRIDOS_LEDGER_TEST_DEBUG").is_some() {
        base.cmdline.push_str(" gridos.log=debug");
    }
    base.timeout = Duration::from_secs(1500);
    let mut nodes: Vec<Node> = (0..NODES).map(|i| boot(&base, i, &net, &dir)).collect();
    let gateway = Target::parse(&format!("{}@127.0.0.1:{}", nodes[0].key, net.host_udp_port)).expect("gateway");

    // 1. Registration with the measured capacity, and uptime.
    for (i, n) in nodes.iter().enumerate() {
        let needle = format!("ledger: chain {} via {} validators, farm {farm}", hex(&chain_id[..8]), VALIDATORS + 1);
        assert!(n.serial().contains(&needle), "node {i}: {needle}\n{}", n.serial());
        let registered = format!("ledger: registered node {} in farm {farm}", &n.key[..16]);
        assert!(n.wait(&registered, 180), "node {i} never registered\n{}", dump(&nodes));
    }
    for (i, n) in nodes.iter().enumerate() {
        let record = with_ledger(&mut l, &chain_dir, &genesis, |l| l.node(&n.key_bytes())).unwrap_or_else(|| panic!("node {i} not on the ledger"));
        assert_eq!(record.farm, farm);
        let serial = n.serial();
        let memory_mib = serial.lines().find_map(|l| l.split("inventory: memory ").nth(1)).and_then(|r| number_after(&format!("x {r}"), "x"));
        assert_eq!(Some(record.capacity.memory_bytes >> 20), memory_mib, "node {i}: {:?}\n{serial}", record.capacity);
        assert_eq!(record.capacity.disks_bytes, vec![128 << 20], "node {i}");
        assert!(record.capacity.cores >= 1 && record.capacity.nics >= 1, "node {i}: {:?}", record.capacity);
        let line = format!(
            "ledger: registered node {} in farm {farm} (cores {}, memory {} MiB, disks 128 MiB)",
            &n.key[..16],
            record.capacity.cores,
            record.capacity.memory_bytes >> 20
        );
        assert!(serial.contains(&line), "node {i}: {line}\n{serial}");
    }
    // The nodes appear in `gridctl nodes` (gridctl's verified reads of the ledger).
    let ledger_dir = dir.join("gridctl-ledger");
    let ledger_flags = ["--ledger-dir", ledger_dir.to_str().expect("path")];
    let genesis_path = chain_dir.join("genesis.bin");
    let validators_path = chain_dir.join("validators.txt");
    gridos_tests::run_gridctl(
        &chain_dir.join("dev-account.key"),
        60,
        &ledger_flags,
        &["ledger", "trust", "--genesis", genesis_path.to_str().expect("path"), "--validators", validators_path.to_str().expect("path")],
    )
    .expect("gridctl ledger trust");
    let listed = gridos_tests::run_gridctl(&chain_dir.join("dev-account.key"), 60, &ledger_flags, &["nodes", "--json"]).expect("gridctl nodes");
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).unwrap_or_else(|e| panic!("{e}: {listed}"));
    for (i, n) in nodes.iter().enumerate() {
        let entry = listed["nodes"].as_array().and_then(|a| a.iter().find(|e| e["key"] == n.key.as_str()));
        let entry = entry.unwrap_or_else(|| panic!("node {i} is not in gridctl nodes: {listed}"));
        assert_eq!(entry["farm"].as_u64(), Some(farm), "{entry}");
        assert_eq!(entry["capacity"]["disks_bytes"][0].as_u64(), Some(128 << 20), "{entry}");
    }
    for (i, n) in nodes.iter().enumerate() {
        assert!(n.wait("ledger: uptime reported for period", 120), "node {i} reported no uptime\n{}", n.serial());
        let reported = *uptime_periods(&n.serial()).last().expect("a period");
        let record = with_ledger(&mut l, &chain_dir, &genesis, |l| l.node(&n.key_bytes())).expect("node");
        assert!(record.last_uptime_period >= Some(reported), "node {i}: {record:?}");
    }

    // 2. Without contracts: refused. Then contracts, shards and a workload.
    let user_key_path = chain_dir.join("dev-account.key");
    let user = UserKey::load(&user_key_path).expect("dev key");
    let shards: Vec<Vec<u8>> = (0..NODES).map(|i| random_bytes(SHARD_BYTES, u64::from(pid) * 7 + u64::from(i))).collect();
    let refused = client(&gateway, &nodes[1], 1, &user).put_shard(&shards[1]).expect_err("a put without a contract");
    assert!(refused.to_string().contains("no contract: no active storage contract of yours"), "{refused}");
    let echo = std::fs::read(wasm("echo_server.wasm")).expect("echo_server.wasm");
    let spec = gridctl::deploy::Spec {
        name: Some("ledger-echo".into()),
        memory_mb: Some(4),
        wall_ms: Some(3_600_000),
        storage_kb: Some(64),
        listen: vec![8080],
        args: vec!["3".into()],
        ..Default::default()
    };
    let mut manifest = gridctl::deploy::manifest(&spec, "ledger-echo", user.public_key(), &echo).expect("manifest");
    let deploy = |manifest: &workloads::Manifest| {
        let program = gridctl::deploy::program_from_bytes(echo.clone()).expect("program");
        client(&gateway, &nodes[0], 0, &user).call(&gridctl::deploy::request(&user, manifest, program, Vec::new()))
    };
    let answer = deploy(&manifest).map(|r| format!("{r:?}")).unwrap_or_else(|e| e.to_string());
    assert!(answer.contains("no contract:"), "{answer}");

    // Contracts are billed from the period after their creation: made at the start of a
    // period, their shards are up well before the first billed period's challenges.
    let now_period = with_ledger(&mut l, &chain_dir, &genesis, |l| l.meta()).1.period;
    wait_period(&mut l, &chain_dir, &genesis, now_period + 1);
    let storage_contract = with_ledger(&mut l, &chain_dir, &genesis, |l| l.meta()).1.next_contract_id;
    let placements: Vec<ShardPlacement> = nodes
        .iter()
        .zip(&shards)
        .map(|(n, s)| ShardPlacement {
            node: n.key_bytes(),
            key: *blake3::hash(s).as_bytes(),
            merkle_root: shardstore::merkle_root(s),
            len_bytes: s.len() as u64,
        })
        .collect();
    with_ledger(&mut l, &chain_dir, &genesis, |l| {
        l.submit(&dev, TxKind::CreateStorageContract { shards: placements.clone(), price_per_hour: STORAGE_PRICE })
    });
    let workload_contract = storage_contract + 1;
    let contract_made = Instant::now();
    let resources = Resources { cores: 1, memory_bytes: 8 << 20, disk_bytes: 1 << 20 };
    with_ledger(&mut l, &chain_dir, &genesis, |l| {
        l.submit(&dev, TxKind::CreateWorkloadContract { node: nodes[0].key_bytes(), resources, price_per_hour: WORKLOAD_PRICE })
    });
    let created_period = with_ledger(&mut l, &chain_dir, &genesis, |l| l.contract(workload_contract)).expect("contract").created_period;
    // Each node re-reads its contracts on every height it follows: the puts go through
    // within a few seconds.
    for (i, (n, s)) in nodes.iter().zip(&shards).enumerate() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client(&gateway, n, i, &user).put_shard(s) {
                Ok(meta) => {
                    assert_eq!(meta.key, placements[i].key);
                    break;
                }
                Err(e) if e.to_string().contains("no contract:") && Instant::now() < deadline => std::thread::sleep(Duration::from_secs(1)),
                Err(e) => panic!("node {i}: put under contract {storage_contract}: {e}\n{}", n.serial()),
            }
        }
    }
    // A bigger shard than the contract placed is refused.
    let extra = random_bytes(SHARD_BYTES, 99);
    let over = client(&gateway, &nodes[0], 0, &user).put_shard(&extra).expect_err("a put beyond the contract");
    assert!(over.to_string().contains("quota"), "{over}");
    // A deploy whose limits exceed the contract is refused; one within it runs.
    let mut greedy = manifest.clone();
    greedy.contract = Some(workload_contract);
    greedy.limits.memory_bytes = 16 << 20;
    let answer = deploy(&greedy).map(|r| format!("{r:?}")).unwrap_or_else(|e| e.to_string());
    assert!(answer.contains("no contract:") && answer.contains("memory"), "{answer}");
    manifest.contract = Some(workload_contract);
    let answer = deploy(&manifest).map(|r| format!("{r:?}")).unwrap_or_else(|e| e.to_string());
    assert!(answer.contains("Deployed"), "{answer}\n{}", nodes[0].serial());
    eprintln!(
        "ledger bench: workload contract created to workload deployed under it: {:.1} s (submit, block, the node's read, a refused try)",
        contract_made.elapsed().as_secs_f64()
    );

    // 3. Proofs over several periods; the farm earns exactly what the user pays.
    let first_billed = created_period + 1;
    wait_period(&mut l, &chain_dir, &genesis, first_billed + 2);
    for (i, n) in nodes.iter().enumerate() {
        let proven: Vec<u64> = proofs_ok(&n.serial()).into_iter().filter(|(c, s, _)| *c == storage_contract && *s == i as u64).map(|(_, _, p)| p).collect();
        assert!(proven.contains(&first_billed) && proven.contains(&(first_billed + 1)), "node {i} proofs {proven:?}\n{}", n.serial());
        let record = with_ledger(&mut l, &chain_dir, &genesis, |l| l.node(&n.key_bytes())).expect("node");
        assert!(record.proofs_ok >= 2 && record.proofs_missed == 0 && record.periods_marked == 0, "node {i}: {record:?}\n{}", n.serial());
    }
    assert!(nodes[0].serial().contains(&format!("ledger: usage reported contract {workload_contract} period")), "{}", nodes[0].serial());
    let check_books = |l: &mut Ledger<OverlayTransport>| -> (u64, u64) {
        let storage = with_ledger(l, &chain_dir, &genesis, |l| l.contract(storage_contract)).expect("storage");
        let workload = with_ledger(l, &chain_dir, &genesis, |l| l.contract(workload_contract)).expect("workload");
        let earned = with_ledger(l, &chain_dir, &genesis, |l| l.farm(farm)).expect("farm").earned;
        let farmer_balance = with_ledger(l, &chain_dir, &genesis, |l| l.account(&farmer.public())).1.balance;
        let dev_balance = with_ledger(l, &chain_dir, &genesis, |l| l.account(&dev.public())).1.balance;
        assert_eq!(earned, storage.paid + workload.paid, "{storage:?} {workload:?}");
        assert_eq!(farmer_balance, earned);
        assert_eq!(dev_initial - dev_balance, earned, "what the user paid is what the farm earned");
        (storage.paid, workload.paid)
    };
    let (storage_paid, workload_paid) = check_books(&mut l);
    // Every node refused the one-signature blocks of the lying endpoint (and followed the
    // real chain past them).
    assert!(forged.load(std::sync::atomic::Ordering::Relaxed) > 0, "the lying endpoint was never asked for blocks");
    for (i, n) in nodes.iter().enumerate() {
        let serial = n.serial();
        let refused = serial.lines().find(|l| l.contains("ledger: validator 0 distrusted") && l.contains("NoQuorum"));
        assert!(refused.is_some(), "node {i} did not refuse the forged block\n{serial}");
        for honest in 1..=VALIDATORS {
            assert!(!serial.contains(&format!("ledger: validator {honest} distrusted")), "node {i} distrusted an honest validator\n{serial}");
        }
    }
    eprintln!("ledger test: {} forged one-signature blocks served, all refused", forged.load(std::sync::atomic::Ordering::Relaxed));
    // The node's /metrics carries the ledger series.
    let gateway_text = format!("{}@127.0.0.1:{}", nodes[0].key, net.host_udp_port);
    let text = gridos_tests::gridctl(&user_key_path, &["node", "metrics", &gateway_text]).expect("metrics");
    let value = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok());
    assert!(value("gridos_ledger_height ").is_some_and(|h| h > 0.0), "{text}");
    assert!(value("gridos_ledger_last_uptime_period ").is_some_and(|p| p >= first_billed as f64), "{text}");
    assert!(value("gridos_ledger_proofs_total{result=\"ok\"} ").is_some_and(|n| n >= 2.0), "{text}");
    assert_eq!(value("gridos_ledger_validators_connected ").map(|n| n >= 1.0), Some(true), "{text}");
    eprintln!(
        "ledger bench: node 0 heap in use {} KiB with the ledger client following {} blocks",
        value("gridos_heap_used_bytes ").unwrap_or(0.0) as u64 >> 10,
        value("gridos_ledger_height ").unwrap_or(0.0) as u64
    );
    eprintln!("ledger test: periods {first_billed}.. billed: storage contract paid {storage_paid}, workload contract paid {workload_paid}, all to farm {farm}");
    assert!(storage_paid >= 2 * STORAGE_PRICE && storage_paid % STORAGE_PRICE == 0, "{storage_paid}");
    assert!(workload_paid >= 2 * WORKLOAD_PRICE && workload_paid % WORKLOAD_PRICE == 0, "{workload_paid}");

    // 4. Node 2's disk is wiped under it (its store area, after the node area).
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&nodes[2].disk).expect("open disk");
        let len = f.metadata().expect("len").len();
        f.seek(SeekFrom::Start(1 << 20)).expect("seek");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(len >> 20).saturating_sub(1) {
            f.write_all(&zeros).expect("wipe");
        }
        f.sync_all().expect("sync");
    }
    let wiped_at = with_ledger(&mut l, &chain_dir, &genesis, |l| l.meta()).1.period;
    let failed = format!("ledger: proof FAILED contract {storage_contract} shard 2 period");
    // (A proof may have failed before the shard was put, in the period the contract was made.)
    let failed_since = |from: u64| -> Option<u64> {
        nodes[2].serial().lines().filter(|l| l.contains(&failed)).filter_map(|l| number_after(l, "period")).find(|p| *p >= from)
    };
    let deadline = Instant::now() + Duration::from_secs(PERIOD_SECS * 4);
    let failed_period = loop {
        if let Some(p) = failed_since(wiped_at) {
            break p;
        }
        assert!(Instant::now() < deadline, "node 2 never failed a proof after the wipe\n{}", nodes[2].serial());
        std::thread::sleep(Duration::from_secs(1));
    };
    // Its failing periods are settled: marked, and not paid for its shard.
    wait_period(&mut l, &chain_dir, &genesis, failed_period + 1);
    let (paid_a, _) = check_books(&mut l);
    let deadline = Instant::now() + Duration::from_secs(PERIOD_SECS * 3);
    while failed_since(failed_period + 1).is_none() {
        assert!(Instant::now() < deadline, "node 2 proved after the wipe?\n{}", nodes[2].serial());
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_period(&mut l, &chain_dir, &genesis, failed_period + 2);
    let (paid_b, _) = check_books(&mut l);
    eprintln!("ledger test: node 2 wiped in period {wiped_at}, proofs failed from period {failed_period}; storage paid {paid_a} then {paid_b}");
    assert_eq!(paid_b - paid_a, STORAGE_PRICE / 3 * 2, "period {}: only the two good shards are paid", failed_period + 1);
    let wiped = with_ledger(&mut l, &chain_dir, &genesis, |l| l.node(&nodes[2].key_bytes())).expect("node 2");
    assert!(wiped.periods_marked >= 2 && wiped.proofs_missed >= 2, "{wiped:?}");
    assert!(matches!(wiped.last_mark, Some((_, MarkReason::FailedProof))), "{wiped:?}");

    // 5. Node 1 restarts early in a period, right after its uptime report for it landed.
    let reported = uptime_periods(&nodes[1].serial()).len();
    let deadline = Instant::now() + Duration::from_secs(PERIOD_SECS * 3);
    while uptime_periods(&nodes[1].serial()).len() == reported {
        assert!(Instant::now() < deadline, "node 1 reports no uptime\n{}", nodes[1].serial());
        std::thread::sleep(Duration::from_millis(200));
    }
    let before_restart = nodes[1].serial();
    let restart_period = *uptime_periods(&before_restart).last().expect("uptime");
    if let Some(vm) = nodes[1].vm.take() {
        let out = vm.kill();
        assert!(!out.serial.contains("PANIC"), "{}", out.serial);
    }
    let restarted = boot(&base, 1, &net, &dir);
    assert_eq!(restarted.key, nodes[1].key, "the node keeps its identity");
    nodes[1] = restarted;
    assert!(nodes[1].wait("ledger: uptime reported for period", PERIOD_SECS * 3), "{}", nodes[1].serial());
    let after = uptime_periods(&nodes[1].serial());
    assert!(!after.contains(&restart_period), "uptime for period {restart_period} sent again after the restart: {after:?}");
    wait_period(&mut l, &chain_dir, &genesis, restart_period + 2);
    let proven_before: Vec<u64> = proofs_ok(&before_restart).into_iter().map(|(_, _, p)| p).collect();
    let proven_after: Vec<u64> = proofs_ok(&nodes[1].serial()).into_iter().map(|(_, _, p)| p).collect();
    assert!(!proven_after.iter().any(|p| proven_before.contains(p)), "proofs sent twice: {proven_before:?} then {proven_after:?}");
    assert!(proven_after.contains(&(restart_period + 1)), "no proof after the restart: {proven_after:?}\n{}", nodes[1].serial());
    let node1 = with_ledger(&mut l, &chain_dir, &genesis, |l| l.node(&nodes[1].key_bytes())).expect("node 1");
    eprintln!("ledger test: node 1 restarted in period {restart_period}; uptime after: {after:?}; proofs before {proven_before:?}, after {proven_after:?}; record {node1:?}");
    assert_eq!((node1.periods_marked, node1.proofs_missed), (0, 0), "the restart lost nothing: {node1:?}");
    check_books(&mut l);

    // 6. The workload contract ends: node 0 stops the workload.
    with_ledger(&mut l, &chain_dir, &genesis, |l| l.submit(&dev, TxKind::CancelWorkloadContract { contract: workload_contract }));
    let contract = with_ledger(&mut l, &chain_dir, &genesis, |l| l.contract(workload_contract)).expect("contract");
    assert!(matches!(contract.status, ContractStatus::Cancelled(_)), "{contract:?}");
    let stopping = format!("ledger: workload contract {workload_contract} ended: stopping ledger-echo");
    assert!(nodes[0].wait(&stopping, 60), "{}", nodes[0].serial());

    // 7. The user's own tools: `gridctl store put` pays a storage contract for every
    // placement before the shards go up, `get` returns the file, `verify` names each
    // shard's contract; `gridctl deploy` pays a workload contract and runs under it.
    // (K=1 M=1: node 2's store is still wiped, so a shard placed there moves to the
    // third node.)
    let key_path = chain_dir.join("dev-account.key");
    let gateway_arg = format!("{}@127.0.0.1:{}", nodes[0].key, net.host_udp_port);
    let src = dir.join("file.bin");
    let file = random_bytes(200 << 10, u64::from(pid) ^ 0x5eed);
    std::fs::write(&src, &file).expect("write file");
    let contracts_before = with_ledger(&mut l, &chain_dir, &genesis, |l| l.meta()).1.next_contract_id;
    let put = gridos_tests::run_gridctl(
        &key_path,
        60,
        &ledger_flags,
        &["store", "put", src.to_str().expect("path"), "--data", "1", "--parity", "1", "--nodes", &gateway_arg, "--json"],
    )
    .unwrap_or_else(|e| panic!("gridctl store put on the ledger: {e}\n{}", dump(&nodes)));
    let put: serde_json::Value = serde_json::from_str(put.trim()).unwrap_or_else(|e| panic!("{e}: {put}"));
    let paid: Vec<u64> = put["contracts"].as_array().map(|a| a.iter().filter_map(|c| c.as_u64()).collect()).unwrap_or_default();
    assert!(!paid.is_empty() && paid.iter().all(|c| *c >= contracts_before), "{put}");
    for c in &paid {
        let record = with_ledger(&mut l, &chain_dir, &genesis, |l| l.contract(*c)).unwrap_or_else(|| panic!("contract {c}: {put}"));
        assert!(record.owner == dev.public() && matches!(record.terms, ContractTerms::Storage { .. }), "{record:?}");
    }
    let id = put["id"].as_str().expect("file id").to_string();
    let out = dir.join("file.out");
    gridos_tests::run_gridctl(&key_path, 60, &ledger_flags, &["store", "get", &id, "-o", out.to_str().expect("path"), "--nodes", &gateway_arg])
        .unwrap_or_else(|e| panic!("gridctl store get: {e}"));
    assert!(std::fs::read(&out).expect("the file came back") == file, "the file came back different");
    let verify = gridos_tests::run_gridctl(&key_path, 60, &ledger_flags, &["store", "verify", &id, "--nodes", &gateway_arg, "--json"])
        .unwrap_or_else(|e| panic!("gridctl store verify: {e}"));
    let verify: serde_json::Value = serde_json::from_str(verify.trim()).unwrap_or_else(|e| panic!("{e}: {verify}"));
    let shards = verify["shards"].as_array().cloned().unwrap_or_default();
    assert!(!shards.is_empty() && shards.iter().all(|s| s["status"] == "ok" && s["contract"].as_u64().is_some_and(|c| paid.contains(&c))), "{verify}");
    let before_deploy = with_ledger(&mut l, &chain_dir, &genesis, |l| l.meta()).1.next_contract_id;
    let hello = gridos_tests::wasm("hello.wasm");
    let deployed = gridos_tests::run_gridctl(
        &key_path,
        60,
        &ledger_flags,
        &["deploy", "--node", &gateway_arg, "--name", "ledger-hello", "--memory-mb", "4", "--arg", "x", hello.to_str().expect("path")],
    )
    .unwrap_or_else(|e| panic!("gridctl deploy on the ledger: {e}\n{}", nodes[0].serial()));
    let made = with_ledger(&mut l, &chain_dir, &genesis, |l| l.contract(before_deploy)).unwrap_or_else(|| panic!("no contract for the deploy: {deployed}"));
    assert!(
        made.owner == dev.public() && matches!(&made.terms, ContractTerms::Workload { node, .. } if *node == nodes[0].key_bytes()),
        "{made:?}"
    );
    assert!(nodes[0].wait("workload ledger-hello: running on", 60), "the workload deployed under its contract never ran\n{}", nodes[0].serial());
    eprintln!("ledger test: gridctl store put paid contracts {paid:?}, got the file back, verify names them; gridctl deploy paid contract {before_deploy}");

    for n in &mut nodes {
        if let Some(vm) = n.vm.take() {
            let out = vm.kill();
            assert!(!out.serial.contains("PANIC"), "{}", out.serial);
        }
    }
    fake_run.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&dir);
}
