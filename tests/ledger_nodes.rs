//! The node on the ledger, booted (issue 14): four `validator` processes on the host
//! (`validator init --overlay-addrs ... --period-secs 20`, then `validator run`, as
//! `./gridos run --validators 4` starts them) and three nodes under QEMU on one segment
//! (`gridos_qemu::cluster`; each reaches the validators at the host's 10.0.2.2 through
//! node 0's user-network port), booted with `gridos.ledger=CHAINID
//! gridos.ledger.validators=...` and `gridos.farm=F`. One boot, many checks:
//!
//! 1. every node registers itself in farm F with the capacity its inventory measured, and
//!    its uptime reports land on the ledger;
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
//! A block signed by one validator only is refused by the agent's light client: that is
//! covered by `userland/nodeledger`'s host tests (the node runs the same code); this test
//! does not forge blocks.
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
use ledger::state::{ContractStatus, MarkReason};
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

    // The nodes reach the validators at the host's address on the segment.
    let validators: Vec<String> = std::fs::read_to_string(chain_dir.join("validators.txt"))
        .expect("validators.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().replace("127.0.0.1:", "10.0.2.2:"))
        .collect();
    let switch = gridos_qemu::switch::Switch::start().unwrap_or_else(|e| panic!("{e}"));
    let net = ClusterNet { switch_port: switch.port(), host_udp_port: free_udp_port() };
    let mut base = Machine::new(&kernel);
    base.cmdline = format!(
        "gridos.test=serve gridos.screen=off gridos.farm={farm} gridos.ledger={} gridos.ledger.validators={}",
        hex(&chain_id),
        validators.join(",")
    );
    base.timeout = Duration::from_secs(1500);
    let mut nodes: Vec<Node> = (0..NODES).map(|i| boot(&base, i, &net, &dir)).collect();
    let gateway = Target::parse(&format!("{}@127.0.0.1:{}", nodes[0].key, net.host_udp_port)).expect("gateway");

    // 1. Registration with the measured capacity, and uptime.
    for (i, n) in nodes.iter().enumerate() {
        let needle = format!("ledger: chain {} via {VALIDATORS} validators, farm {farm}", hex(&chain_id[..8]));
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

    // 3. Proofs over several periods; the farm earns exactly what the user pays.
    let first_billed = created_period + 1;
    wait_period(&mut l, &chain_dir, &genesis, first_billed + 2);
    for (i, n) in nodes.iter().enumerate() {
        let proven: Vec<u64> = proofs_ok(&n.serial()).into_iter().filter(|(c, s, _)| *c == storage_contract && *s == i as u64).map(|(_, _, p)| p).collect();
        assert!(proven.contains(&first_billed) && proven.contains(&(first_billed + 1)), "node {i} proofs {proven:?}\n{}", n.serial());
        let record = with_ledger(&mut l, &chain_dir, &genesis, |l| l.node(&n.key_bytes())).expect("node");
        assert!(record.proofs_ok >= 2 && record.proofs_missed == 0 && record.periods_marked == 0, "node {i}: {record:?}");
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
    assert!(nodes[2].wait(&failed, PERIOD_SECS * 4), "node 2 never failed a proof\n{}", nodes[2].serial());
    let failed_period = nodes[2].serial().lines().filter(|l| l.contains(&failed)).find_map(|l| number_after(l, "period")).expect("period");
    assert!(failed_period >= wiped_at);

    // 5. Node 1 restarts mid-period (after its uptime report for the period landed).
    let before_restart = nodes[1].serial();
    let restart_period = *uptime_periods(&before_restart).last().expect("uptime");
    if let Some(vm) = nodes[1].vm.take() {
        let out = vm.kill();
        assert!(!out.serial.contains("PANIC"), "{}", out.serial);
    }
    let restarted = boot(&base, 1, &net, &dir);
    assert_eq!(restarted.key, nodes[1].key, "the node keeps its identity");
    nodes[1] = restarted;

    // The wiped node's failing period is settled: marked, and not paid for its shard.
    wait_period(&mut l, &chain_dir, &genesis, failed_period + 1);
    let (paid_a, _) = check_books(&mut l);
    assert!(nodes[2].wait(&format!("{failed} {}", failed_period + 1), PERIOD_SECS * 3), "{}", nodes[2].serial());
    wait_period(&mut l, &chain_dir, &genesis, failed_period + 2);
    let (paid_b, _) = check_books(&mut l);
    assert_eq!(paid_b - paid_a, STORAGE_PRICE / 3 * 2, "period {}: only the two good shards are paid", failed_period + 1);
    let wiped = with_ledger(&mut l, &chain_dir, &genesis, |l| l.node(&nodes[2].key_bytes())).expect("node 2");
    assert!(wiped.periods_marked >= 2 && wiped.proofs_missed >= 2, "{wiped:?}");
    assert!(matches!(wiped.last_mark, Some((_, MarkReason::FailedProof))), "{wiped:?}");

    // The restarted node: nothing sent twice, nothing missed.
    assert!(nodes[1].wait("ledger: uptime reported for period", PERIOD_SECS * 3), "{}", nodes[1].serial());
    let after = uptime_periods(&nodes[1].serial());
    assert!(!after.contains(&restart_period), "uptime for period {restart_period} sent again after the restart: {after:?}");
    let proven_before: Vec<u64> = proofs_ok(&before_restart).into_iter().map(|(_, _, p)| p).collect();
    let proven_after: Vec<u64> = proofs_ok(&nodes[1].serial()).into_iter().map(|(_, _, p)| p).collect();
    assert!(!proven_after.iter().any(|p| proven_before.contains(p)), "proofs sent twice: {proven_before:?} then {proven_after:?}");
    let node1 = with_ledger(&mut l, &chain_dir, &genesis, |l| l.node(&nodes[1].key_bytes())).expect("node 1");
    assert_eq!((node1.periods_marked, node1.proofs_missed), (0, 0), "the restart lost nothing: {node1:?}");

    // 6. The workload contract ends: node 0 stops the workload.
    with_ledger(&mut l, &chain_dir, &genesis, |l| l.submit(&dev, TxKind::CancelWorkloadContract { contract: workload_contract }));
    let contract = with_ledger(&mut l, &chain_dir, &genesis, |l| l.contract(workload_contract)).expect("contract");
    assert!(matches!(contract.status, ContractStatus::Cancelled(_)), "{contract:?}");
    let stopping = format!("ledger: workload contract {workload_contract} ended: stopping ledger-echo");
    assert!(nodes[0].wait(&stopping, 60), "{}", nodes[0].serial());

    for n in &mut nodes {
        if let Some(vm) = n.vm.take() {
            let out = vm.kill();
            assert!(!out.serial.contains("PANIC"), "{}", out.serial);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
