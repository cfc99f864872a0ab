//! Four `validator` processes on loopback, set up by `validator init --overlay-addrs`, so
//! they talk consensus over the overlay: transfers are acknowledged once durable; one
//! validator is killed with SIGKILL mid-run, restarts from its store and catches up over the
//! overlay; nothing acknowledged is lost, and gridctl's light client reads it from the
//! restarted validator over the overlay, verified.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledger::{Keypair, StateKey, Transaction, TxKind};
use validator::daemon::{call, Request, Response};

const TIMEOUT: Duration = Duration::from_secs(30);
const BIN: &str = env!("CARGO_BIN_EXE_validator");

struct Cluster {
    dir: PathBuf,
    addrs: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
}

impl Cluster {
    fn spawn(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.join(format!("validator-{i}.log"))).expect("log");
        let child = Command::new(BIN)
            .args(["run", "--dir"])
            .arg(&self.dir)
            .args(["--index", &i.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn");
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn call_retry(addr: SocketAddr, request: &Request) -> Response {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match call(addr, request, TIMEOUT) {
            Ok(response) => return response,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{request:?} to {addr}: {e}"),
        }
    }
}

fn read_key(path: &Path) -> Keypair {
    let text = std::fs::read_to_string(path).expect("key file");
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text.trim()[2 * i..2 * i + 2], 16).expect("hex");
    }
    Keypair::try_from_seed(seed).expect("seed")
}

fn height(addr: SocketAddr) -> u64 {
    match call_retry(addr, &Request::Status) {
        Response::Status { height, .. } => height,
        other => panic!("status: {other:?}"),
    }
}

#[test]
fn four_processes_and_a_sigkill() {
    let dir = std::env::temp_dir().join(format!("gridos-validator-processes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addrs: Vec<SocketAddr> = (0..4).map(|_| TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port")).collect();
    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let overlay: Vec<String> =
        (0..4).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("port").to_string()).collect();
    let status = Command::new(BIN)
        .args(["init", "--dir"])
        .arg(&dir)
        .args(["--addrs", &list.join(","), "--overlay-addrs", &overlay.join(",")])
        .stdout(Stdio::null())
        .status()
        .expect("init");
    assert!(status.success());
    let mut cluster = Cluster { dir: dir.clone(), addrs, children: (0..4).map(|_| None).collect() };
    for i in 0..4 {
        cluster.spawn(i);
    }
    let dev = read_key(&dir.join("dev-account.key"));
    let genesis: ledger::Genesis = postcard::from_bytes(&std::fs::read(dir.join("genesis.bin")).expect("genesis")).expect("decode");
    let submit = |cluster: &Cluster, nonce: u64| -> u64 {
        let tx = Transaction { account: dev.public(), nonce, kind: TxKind::Transfer { to: [7; 32], amount: 5 } }
            .sign(&genesis.chain_id(), &dev);
        match call_retry(cluster.addrs[0], &Request::Submit(tx)) {
            Response::Committed(height) => height,
            other => panic!("submit: {other:?}"),
        }
    };
    let mut last = 0;
    for nonce in 0..4 {
        last = submit(&cluster, nonce);
    }
    cluster.kill(2);
    for nonce in 4..7 {
        last = submit(&cluster, nonce);
    }
    cluster.spawn(2);
    let deadline = Instant::now() + TIMEOUT;
    while height(cluster.addrs[2]) < last {
        assert!(Instant::now() < deadline, "the killed validator does not catch up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let header = |i: usize| match call_retry(cluster.addrs[i], &Request::LightBlock(last)) {
        Response::LightBlock(Some(block)) => block.header,
        other => panic!("light block: {other:?}"),
    };
    assert_eq!(header(0), header(2));
    match call_retry(cluster.addrs[2], &Request::Prove(StateKey::Account([7; 32]))) {
        Response::Proof { proof, .. } => {
            let account: ledger::state::Account = postcard::from_bytes(proof.record.as_deref().expect("record")).expect("decode");
            assert_eq!(account.balance, 35, "every acknowledged transfer is there");
        }
        other => panic!("prove: {other:?}"),
    }
    // The same, verified by gridctl's light client, from the restarted validator on the overlay.
    let target = gridctl::ledger::read_validators(&dir.join("validators.txt")).expect("validators").remove(2);
    let transport = gridctl::ledger::OverlayTransport::connect(&target, TIMEOUT).expect("overlay");
    let mut light = gridctl::ledger::Ledger::new(genesis.clone(), transport, None).expect("ledger");
    let (height, account) = light.account(&[7; 32]).expect("verified read");
    assert!(height >= last);
    assert_eq!(account.balance, 35);
}
