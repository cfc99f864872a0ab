//! One `validator` process serving clients on the overlay (set up by `validator init
//! --overlay-addrs`), driven by gridctl's own commands (`gridctl ledger trust, status,
//! transfer, balance, account, farm create, nodes, contracts`, with `--json`): every read
//! verified by gridctl's light client. Then a transport that tampers with the validator's
//! answers (a record under a valid proof, a light block's commit) between gridctl's
//! ledger client and the real validator: gridctl refuses both. Last, the service's bounds
//! against one hostile overlay identity: connections per overlay address, a frame header
//! announcing more than a request may hold, and consensus frames from a non-validator.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use gridctl::cli::{self, Cli};
use gridctl::ledger::{read_validators, Ledger, OverlayTransport, Transport};
use ledger::rpc::{Request, Response};

const BIN: &str = env!("CARGO_BIN_EXE_validator");

struct Validator {
    dir: PathBuf,
    child: Option<Child>,
}

impl Drop for Validator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("GRIDOS_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port")
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("port")
}

fn gridctl(key: &Path, ledger_dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["gridctl", "--timeout", "20", "--key", key.to_str().expect("path"), "ledger", "--ledger-dir"];
    argv.push(ledger_dir.to_str().expect("path"));
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    cli::run(cli, &mut out).map_err(|e| e.0)?;
    Ok(String::from_utf8(out).expect("utf-8"))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Passes requests to a real validator and changes its answers.
struct Tamper<T: Transport> {
    inner: T,
    record: bool,
    commit: bool,
}

impl<T: Transport> Transport for Tamper<T> {
    fn call(&mut self, request: &Request) -> gridctl::Result<Response> {
        let mut response = self.inner.call(request)?;
        match &mut response {
            Response::Proof { proof, .. } if self.record => {
                // A richer account than the state root commits to.
                if let Some(record) = &proof.record {
                    let mut account: ledger::state::Account = postcard::from_bytes(record).expect("account");
                    account.balance += 1_000_000;
                    proof.record = Some(postcard::to_allocvec(&account).expect("encode"));
                }
            }
            Response::LightBlocks(blocks) if self.commit => {
                for block in blocks {
                    if let Some(sig) = block.commit.signatures.first_mut() {
                        sig.signature.0[0] ^= 1;
                    }
                }
            }
            _ => {}
        }
        Ok(response)
    }
}

#[test]
fn gridctl_ledger_over_the_overlay_verifies_every_read() {
    let dir = std::env::temp_dir().join(format!("gridos-validator-overlay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (tcp, udp) = (free_tcp(), free_udp());
    let status = Command::new(BIN)
        .args(["init", "--dir"])
        .arg(&dir)
        .args(["--addrs", &tcp.to_string(), "--overlay-addrs", &udp.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("init");
    assert!(status.success());
    let log = std::fs::File::create(dir.join("validator-0.log")).expect("log");
    let child = Command::new(BIN).args(["run", "--dir"]).arg(&dir).args(["--index", "0"]).stdout(Stdio::null()).stderr(log).spawn().expect("spawn");
    let _validator = Validator { dir: dir.clone(), child: Some(child) };
    let ledger_dir = dir.join("gridctl-ledger");
    let dev = dir.join("dev-account.key");
    let genesis_path = dir.join("genesis.bin");
    let validators_path = dir.join("validators.txt");
    let trust = gridctl(&dev, &ledger_dir, &["trust", "--genesis", genesis_path.to_str().unwrap(), "--validators", validators_path.to_str().unwrap()]);
    assert!(trust.as_ref().is_ok_and(|t| t.contains("trusting chain gridos-dev")), "{trust:?}");

    let status = json(&gridctl(&dev, &ledger_dir, &["status", "--json"]).expect("status"));
    assert_eq!(status["validators"].as_array().map(Vec::len), Some(1), "{status}");
    assert_eq!(status["verified"], true);
    assert!(status["last_block_time_ms"].as_u64().is_some_and(|t| t > 1_700_000_000_000), "{status}");

    let to = "07".repeat(32);
    let sent = json(&gridctl(&dev, &ledger_dir, &["transfer", &to, "25", "--json"]).expect("transfer"));
    assert!(sent["height"].as_u64().is_some_and(|h| h >= 1), "{sent}");
    assert_eq!(sent["balance"], 1_000_000_000u64 - 25);
    let balance = json(&gridctl(&dev, &ledger_dir, &["balance", &to, "--json"]).expect("balance"));
    assert_eq!(balance["balance"], 25, "{balance}");
    let plain = gridctl(&dev, &ledger_dir, &["balance", &to]).expect("balance");
    assert_eq!(plain.trim(), "25");
    let account = json(&gridctl(&dev, &ledger_dir, &["account", "--json"]).expect("account"));
    assert_eq!(account["nonce"], 1, "{account}");

    let farm = json(&gridctl(&dev, &ledger_dir, &["farm", "create", "home", "--json"]).expect("farm"));
    assert_eq!(farm["farm"], 0, "{farm}");
    let nodes = json(&gridctl(&dev, &ledger_dir, &["nodes", "--json"]).expect("nodes"));
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(0), "{nodes}");
    let contracts = json(&gridctl(&dev, &ledger_dir, &["contracts", "--json"]).expect("contracts"));
    assert_eq!(contracts["contracts"].as_array().map(Vec::len), Some(0), "{contracts}");
    // The trusted point moved on (saved), and the next run starts from it.
    assert!(ledger_dir.join("trusted.bin").exists());
    let status = gridctl(&dev, &ledger_dir, &["status"]).expect("status");
    assert!(status.contains("verified: quorum"), "{status}");

    // Tampered answers from the real validator are refused.
    let genesis: ledger::Genesis = postcard::from_bytes(&std::fs::read(&genesis_path).expect("genesis")).expect("decode");
    let target = read_validators(&validators_path).expect("validators").remove(0);
    let connect = || OverlayTransport::connect(&target, Duration::from_secs(20)).expect("overlay");
    let mut ledger = Ledger::new(genesis.clone(), Tamper { inner: connect(), record: true, commit: false }, None).expect("ledger");
    let error = ledger.account(&[7; 32]).expect_err("a tampered record must be refused");
    assert!(error.0.contains("proof does not verify"), "{error}");
    let mut ledger = Ledger::new(genesis.clone(), Tamper { inner: connect(), record: false, commit: true }, None).expect("ledger");
    let error = ledger.follow(None).expect_err("a forged commit must be refused");
    assert!(error.0.contains("refused by the light client"), "{error}");
    // The same connection without tampering reads the right balance.
    let mut ledger = Ledger::new(genesis, Tamper { inner: connect(), record: false, commit: false }, None).expect("ledger");
    assert_eq!(ledger.account(&[7; 32]).expect("account").1.balance, 25);

    nodes_and_contracts(&dir, &dev, &ledger_dir, &target);
    hostile_connections(&target);
}

/// Runs a top-level gridctl command on the ledger folder.
fn gridctl_on(key: &Path, ledger_dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["gridctl", "--timeout", "20", "--key", key.to_str().expect("path"), "--ledger-dir", ledger_dir.to_str().expect("path")];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    cli::run(cli, &mut out).map_err(|e| e.0)?;
    Ok(String::from_utf8(out).expect("utf-8"))
}

/// `validator dev-farm` (what `./gridos run --validators` boots nodes under), a node that
/// registers itself in that farm, `gridctl nodes`, and contracts made the way `deploy` and
/// `store put` make them, cancelled with `gridctl ledger cancel`: all over the overlay.
fn nodes_and_contracts(dir: &Path, dev: &Path, ledger_dir: &Path, target: &gridctl::target::Target) {
    let farm_of = || {
        let out = Command::new(BIN).args(["dev-farm", "--dir"]).arg(dir).output().expect("dev-farm");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let first = farm_of();
    let genesis: ledger::Genesis = postcard::from_bytes(&std::fs::read(dir.join("genesis.bin")).expect("genesis")).expect("decode");
    assert!(first.contains(&format!("chain {}", gridctl::hex(&genesis.chain_id()))), "{first}");
    assert_eq!(farm_of(), first, "dev-farm makes its farm once");
    let farm: u64 = first.lines().find_map(|l| l.strip_prefix("farm ")).and_then(|f| f.trim().parse().ok()).expect("farm id");

    // A node registers itself under the farm (as a booting node does).
    let node = ledger::Keypair::from_seed([0x5a; 32]);
    let transport = OverlayTransport::connect(target, Duration::from_secs(20)).expect("overlay");
    let mut ledger = Ledger::new(genesis, transport, None).expect("ledger");
    let capacity = ledger::Capacity { cores: 2, memory_bytes: 512 << 20, disks_bytes: vec![1 << 30], nics: 1 };
    ledger.submit(&node, ledger::TxKind::RegisterNode { node: node.public(), farm, capacity }).expect("register");
    let nodes = json(&gridctl_on(dev, ledger_dir, &["nodes", "--json"]).expect("nodes"));
    let listed = &nodes["nodes"][0];
    assert_eq!(listed["key"], gridctl::hex(&node.public()), "{nodes}");
    assert_eq!(listed["farm"], farm);
    assert_eq!(listed["free"]["memory_bytes"], 512u64 << 20);

    // A workload contract as `deploy` makes it: on the node, committed, reserved.
    let user = gridctl::key::UserKey::load(dev).expect("key");
    let key = gridctl::ledger::ledger_key(&user).expect("ledger key");
    let resources = ledger::Resources { cores: 0, memory_bytes: 64 << 20, disk_bytes: 1 << 20 };
    let made = gridctl::onledger::deploy_contract(&mut ledger, &key, &node.public(), resources, None, 10).expect("contract");
    let nodes = json(&gridctl_on(dev, ledger_dir, &["nodes", "--json"]).expect("nodes"));
    assert_eq!(nodes["nodes"][0]["free"]["memory_bytes"], 448u64 << 20, "{nodes}");
    let too_big = ledger::Resources { memory_bytes: 1 << 30, ..resources };
    let e = gridctl::onledger::deploy_contract(&mut ledger, &key, &node.public(), too_big, None, 10).expect_err("capacity");
    assert!(e.0.starts_with("capacity exceeded"), "{e}");
    // A storage contract as `store put` makes it; an unregistered node is refused first.
    let placement = ledger::ShardPlacement { node: node.public(), key: [1; 32], merkle_root: [2; 32], len_bytes: 4096 };
    let (storage, _) = ledger.create_storage_contract(&key, vec![placement.clone()], 1).expect("storage contract");
    let stranger = ledger::ShardPlacement { node: [9; 32], ..placement };
    let e = ledger.create_storage_contract(&key, vec![stranger], 1).expect_err("unknown node");
    assert!(e.0.starts_with("unknown node"), "{e}");
    let mine = json(&gridctl(dev, ledger_dir, &["contracts", "--owner", "me", "--json"]).expect("contracts"));
    let ids: Vec<u64> = mine["contracts"].as_array().expect("list").iter().filter_map(|c| c["id"].as_u64()).collect();
    assert!(ids.contains(&made.id) && ids.contains(&storage), "{mine}");
    for id in [made.id, storage] {
        let out = gridctl(dev, ledger_dir, &["cancel", &id.to_string()]).expect("cancel");
        assert!(out.contains("cancelled"), "{out}");
    }
    assert!(gridctl(dev, ledger_dir, &["cancel", &storage.to_string()]).is_err(), "a second cancel is refused");
    let nodes = json(&gridctl_on(dev, ledger_dir, &["nodes", "--json"]).expect("nodes"));
    assert_eq!(nodes["nodes"][0]["free"]["memory_bytes"], 512u64 << 20, "{nodes}");
}

/// One overlay identity opens more connections than a peer may hold, and sends frames the
/// service must refuse; the validator keeps serving others.
fn hostile_connections(target: &gridctl::target::Target) {
    use smoltcp::socket::tcp;
    use smoltcp::wire::{IpAddress, IpEndpoint, Ipv6Address};
    use std::time::Instant;

    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut stack = hostnet::Stack::new([42; 32], socket, overlay::Config::default()).expect("stack");
    stack.add_peer(target.endpoint, target.key).expect("peer");
    let address = overlay::Address(target.overlay_address());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stack.has_route(&address) {
        assert!(Instant::now() < deadline, "no overlay link to the validator");
        stack.poll(Duration::from_millis(10)).expect("poll");
    }
    let remote = IpEndpoint::new(IpAddress::Ipv6(Ipv6Address::from_octets(address.0)), ledger::rpc::PORT);
    let open = |stack: &mut hostnet::Stack, port: u16| {
        let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 8192]), tcp::SocketBuffer::new(vec![0; 8192]));
        s.connect(stack.iface.context(), remote, port).expect("connect");
        stack.sockets.add(s)
    };
    let run = |stack: &mut hostnet::Stack, ms: u64| {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            stack.poll(Duration::from_millis(10)).expect("poll");
        }
    };
    let per_peer = validator::service::SLOTS_PER_PEER_MAX;
    let handles: Vec<_> = (0..per_peer as u16 + 2).map(|i| open(&mut stack, 50_000 + i)).collect();
    run(&mut stack, 3_000);
    let alive = handles.iter().filter(|h| stack.sockets.get::<tcp::Socket>(**h).may_send()).count();
    assert_eq!(alive, per_peer, "connections from one overlay address are bounded");
    for h in &handles {
        stack.sockets.get_mut::<tcp::Socket>(*h).abort();
    }
    run(&mut stack, 1_000);

    // A header announcing a frame larger than any request: reset at once.
    let huge = open(&mut stack, 50_100);
    run(&mut stack, 1_000);
    let mut head = u32::MAX.to_le_bytes().to_vec();
    head.push(ledger::rpc::FRAME_REQUEST);
    stack.sockets.get_mut::<tcp::Socket>(huge).send_slice(&head).expect("send");
    // A consensus frame from an address that is no validator: reset too.
    let forged = open(&mut stack, 50_101);
    run(&mut stack, 1_000);
    let frame = ledger::rpc::frame(ledger::rpc::FRAME_CONSENSUS, &[0; 16]);
    stack.sockets.get_mut::<tcp::Socket>(forged).send_slice(&frame).expect("send");
    run(&mut stack, 2_000);
    for (what, h) in [("an oversized frame", huge), ("a consensus frame from a stranger", forged)] {
        assert!(!stack.sockets.get::<tcp::Socket>(h).is_open(), "{what} closes the connection");
    }
    // Meanwhile an honest client is served.
    let mut honest = OverlayTransport::connect(target, Duration::from_secs(20)).expect("overlay");
    assert!(matches!(honest.call(&Request::Status), Ok(Response::Status { .. })));
}
