//! Four validator daemons on loopback (threads of this test, real TCP): transactions
//! submitted to one are acknowledged once durable in a decided block; a light client follows
//! the blocks served by another and verifies a proven balance read; a validator stopped
//! mid-run restarts from its store and catches up, with nothing acknowledged lost.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{genesis, keys};
use ledger::{Keypair, LightClient, StateKey, Transaction, TxKind};
use validator::daemon::{call, run, Config, Request, Response};
use validator::Timeouts;

const TIMEOUT: Duration = Duration::from_secs(30);

/// `call`, retried while the daemon is not listening yet (it may be starting).
fn call_retry(addr: SocketAddr, request: &Request) -> std::io::Result<Response> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match call(addr, request, TIMEOUT) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

struct Cluster {
    addrs: Vec<SocketAddr>,
    stops: Vec<Arc<AtomicBool>>,
    threads: Vec<Option<JoinHandle<()>>>,
    dir: std::path::PathBuf,
    genesis: ledger::Genesis,
}

impl Cluster {
    fn new(genesis: ledger::Genesis) -> Cluster {
        let dir = std::env::temp_dir().join(format!("gridos-validator-daemon-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let addrs: Vec<SocketAddr> = (0..4).map(|_| free_port()).collect();
        let mut cluster = Cluster { addrs, stops: Vec::new(), threads: Vec::new(), dir, genesis };
        for i in 0..4 {
            cluster.stops.push(Arc::new(AtomicBool::new(false)));
            cluster.threads.push(None);
            cluster.start(i);
        }
        cluster
    }

    fn start(&mut self, i: usize) {
        let keys = keys();
        let config = Config {
            key: keys[i].clone(),
            genesis: self.genesis.clone(),
            listen: self.addrs[i],
            peers: (0..4).filter(|j| *j != i).map(|j| (keys[j].public(), self.addrs[j])).collect(),
            store: self.dir.join(format!("validator-{i}.redb")),
            timeouts: Timeouts { propose_ms: 1_000, prevote_ms: 500, precommit_ms: 500, rebroadcast_ms: 1_000, per_round_ms: 200, commit_ms: 100 },
            overlay: None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        self.stops[i] = stop.clone();
        self.threads[i] = Some(std::thread::spawn(move || run(config, stop).expect("daemon")));
    }

    fn stop(&mut self, i: usize) {
        self.stops[i].store(true, Ordering::Relaxed);
        if let Some(thread) = self.threads[i].take() {
            thread.join().expect("join");
        }
    }

    fn status(&self, i: usize) -> (u64, [u8; 32]) {
        match call_retry(self.addrs[i], &Request::Status) {
            Ok(Response::Status { height, state_root }) => (height, state_root),
            other => panic!("status: {other:?}"),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.store(true, Ordering::Relaxed);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn submit(cluster: &Cluster, to: usize, key: &Keypair, nonce: u64, amount: u64) -> u64 {
    let tx = Transaction { account: key.public(), nonce, kind: TxKind::Transfer { to: [9; 32], amount } }
        .sign(&cluster.genesis.chain_id(), key);
    match call_retry(cluster.addrs[to], &Request::Submit(tx)) {
        Ok(Response::Committed(height)) => height,
        other => panic!("submit: {other:?}"),
    }
}

#[test]
fn four_daemons_commit_serve_and_recover() {
    let alice = Keypair::from_seed([1; 32]);
    // Real clocks: the genesis is now (proposals ahead of a validator's clock are refused).
    let mut genesis = genesis(&alice);
    genesis.time_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let mut cluster = Cluster::new(genesis.clone());

    // Acknowledged only once in a durable decided block.
    let mut last = 0;
    for nonce in 0..5 {
        last = submit(&cluster, 0, &alice, nonce, 10);
    }

    // A light client follows validator 1's blocks and checks a proven read from validator 2.
    let mut light = LightClient::from_genesis(&genesis).expect("light");
    let (proof_height, proof) = match call_retry(cluster.addrs[2], &Request::Prove(StateKey::Account([9; 32]))) {
        Ok(Response::Proof { height, proof }) => (height, proof),
        other => panic!("prove: {other:?}"),
    };
    assert!(proof_height >= last);
    let deadline = Instant::now() + TIMEOUT;
    let mut height = 1;
    while height <= proof_height {
        match call_retry(cluster.addrs[1], &Request::LightBlock(height)) {
            Ok(Response::LightBlock(Some(block))) => {
                light.accept(&block).expect("a served block verifies");
                height += 1;
            }
            Ok(Response::LightBlock(None)) => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("light block: {other:?}"),
        }
        assert!(Instant::now() < deadline, "validator 1 does not reach {proof_height}");
    }
    // The light client keeps only recent headers: read at the latest it holds if the proof is older.
    let account = light.account(proof_height, &[9; 32], &proof).expect("proven read");
    assert_eq!(account.balance, 50);

    // Validator 3 stops; the others go on; it restarts from its store and catches up.
    cluster.stop(3);
    for nonce in 5..8 {
        last = submit(&cluster, 0, &alice, nonce, 10);
    }
    cluster.start(3);
    let deadline = Instant::now() + TIMEOUT;
    while cluster.status(3).0 < last {
        if Instant::now() > deadline {
            let statuses: Vec<u64> = (0..4).map(|i| cluster.status(i).0).collect();
            panic!("validator 3 does not catch up to {last}: heights {statuses:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Same block at `last` on validators 0 and 3; nothing acknowledged lost.
    let block = |i: usize| match call_retry(cluster.addrs[i], &Request::LightBlock(last)) {
        Ok(Response::LightBlock(Some(block))) => block.header,
        other => panic!("light block: {other:?}"),
    };
    assert_eq!(block(0), block(3));
    match call_retry(cluster.addrs[3], &Request::Prove(StateKey::Account(alice.public()))) {
        Ok(Response::Proof { proof, .. }) => {
            let account: ledger::state::Account = postcard::from_bytes(proof.record.as_deref().expect("record")).expect("decode");
            assert_eq!(account.nonce, 8);
        }
        other => panic!("prove: {other:?}"),
    }
    for i in 0..4 {
        cluster.stop(i);
    }
}
