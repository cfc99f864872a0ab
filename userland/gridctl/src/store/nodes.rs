//! The nodes a store command talks to: what one node connection can do ([`NodeConn`]), how
//! a connection is made ([`Connector`]), and a [`Pool`] of worker threads, one per node,
//! each holding its own connection, so shards move to and from several nodes at once.
//!
//! A worker connects lazily on its first job and keeps the connection for the command's
//! life. A node that cannot be reached, or whose connection breaks, is marked down and
//! answers every later job with [`NodeError::Unreachable`] at once (no retry storms); the
//! caller fails over to other nodes. Every wait inside a connection is bounded by the
//! client's timeout. The pool holds at most [`NODES_MAX`] workers.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shardstore::StorageProof;

/// A node's overlay public key.
pub type NodeKey = [u8; 32];
/// A shard's key (blake3 of its bytes).
pub type ShardKey = [u8; 32];

/// Most nodes one command talks to (workers, threads and connections).
pub const NODES_MAX: usize = 64;

/// Why a node did not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeError {
    /// No connection (the node is down, unknown to the overlay, or the link broke).
    Unreachable(String),
    /// The node does not hold the shard (for this owner).
    NotFound,
    /// The node refused or failed (quota, a corrupt record, a bad request...).
    Refused(String),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Unreachable(m) => write!(f, "unreachable: {m}"),
            NodeError::NotFound => f.write_str("not found"),
            NodeError::Refused(m) => write!(f, "refused: {m}"),
        }
    }
}

/// A shard as a node reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// blake3 of its bytes.
    pub key: ShardKey,
    /// Its length.
    pub len: u64,
    /// Its Merkle root as the node computed it.
    pub merkle_root: [u8; 32],
}

/// A storage proof as a node answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The shard's length as the node has it.
    pub len: u64,
    /// The shard's root as the node has it.
    pub merkle_root: [u8; 32],
    /// The chunk and its path.
    pub proof: StorageProof,
}

/// The caller's room on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Room {
    /// Bytes the caller's shards take there.
    pub used_bytes: u64,
    /// The caller's quota there.
    pub quota_bytes: u64,
    /// Bytes the node has free for shards.
    pub node_free_bytes: u64,
}

impl Room {
    /// Bytes the caller may still store there.
    pub fn available_bytes(&self) -> u64 {
        self.quota_bytes.saturating_sub(self.used_bytes).min(self.node_free_bytes)
    }
}

/// An overlay node another node routes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its overlay address.
    pub address: [u8; 16],
    /// Its key, when the node knows it (direct links).
    pub key: Option<NodeKey>,
}

/// One open connection to one node's shard service, acting as the user.
pub trait NodeConn: Send {
    /// Stores `bytes` (durable on `Ok`).
    fn put(&mut self, bytes: &[u8]) -> Result<Meta, NodeError>;
    /// The whole shard `key`.
    fn get(&mut self, key: &ShardKey) -> Result<Vec<u8>, NodeError>;
    /// Deletes shard `key`.
    fn delete(&mut self, key: &ShardKey) -> Result<(), NodeError>;
    /// A storage proof of `owner`'s shard `key` for `challenge`.
    fn prove(&mut self, owner: &[u8; 32], key: &ShardKey, challenge: u64) -> Result<Proof, NodeError>;
    /// The user's shards on the node.
    fn list(&mut self) -> Result<Vec<Meta>, NodeError>;
    /// The user's room on the node.
    fn room(&mut self) -> Result<Room, NodeError>;
    /// The overlay nodes the node routes to.
    fn peers(&mut self) -> Result<Vec<Peer>, NodeError>;
}

/// Makes connections to nodes by key.
pub trait Connector: Send + Sync {
    /// Opens a connection to node `key`. A `probe` gives up sooner: the key may be no
    /// node at all (another user's client that a node routes to, or one gone).
    fn connect(&self, key: &NodeKey, probe: bool) -> Result<Box<dyn NodeConn>, NodeError>;
}

/// What to do on a node.
#[derive(Clone, Debug)]
pub enum Op {
    /// Store these bytes.
    Put(Arc<Vec<u8>>),
    /// Fetch a shard.
    Get(ShardKey),
    /// Delete a shard.
    Delete(ShardKey),
    /// Prove `owner`'s shard for each challenge.
    Prove { owner: [u8; 32], key: ShardKey, challenges: Vec<u64> },
    /// List the user's shards.
    List,
    /// The user's room.
    Room,
    /// The user's room, from a key that may be no node (connects with less patience).
    Probe,
    /// The node's peers.
    Peers,
}

/// What a node answered.
#[derive(Clone, Debug)]
pub enum Out {
    /// Stored.
    Put(Meta),
    /// A shard's bytes.
    Get(Vec<u8>),
    /// Deleted.
    Deleted,
    /// One proof per challenge, in order.
    Proofs(Vec<Proof>),
    /// Shards.
    List(Vec<Meta>),
    /// Room.
    Room(Room),
    /// Peers.
    Peers(Vec<Peer>),
}

/// A finished job: its tag, the node, and the answer.
pub type Reply = (usize, NodeKey, Result<Out, NodeError>);

struct Job {
    op: Op,
    tag: usize,
    reply: Sender<Reply>,
}

struct Worker {
    jobs: Sender<Job>,
    handle: JoinHandle<()>,
}

/// Worker threads, one per node.
pub struct Pool {
    connector: Arc<dyn Connector>,
    workers: HashMap<NodeKey, Worker>,
    /// Connection time of each node that answered (for "fastest first").
    latency: Arc<std::sync::Mutex<HashMap<NodeKey, Duration>>>,
    down: Arc<std::sync::Mutex<HashMap<NodeKey, String>>>,
}

fn run_op(conn: &mut dyn NodeConn, op: Op) -> Result<Out, NodeError> {
    match op {
        Op::Put(bytes) => conn.put(&bytes).map(Out::Put),
        Op::Get(key) => conn.get(&key).map(Out::Get),
        Op::Delete(key) => conn.delete(&key).map(|()| Out::Deleted),
        Op::Prove { owner, key, challenges } => {
            let mut proofs = Vec::with_capacity(challenges.len());
            for c in challenges {
                proofs.push(conn.prove(&owner, &key, c)?);
            }
            Ok(Out::Proofs(proofs))
        }
        Op::List => conn.list().map(Out::List),
        Op::Room | Op::Probe => conn.room().map(Out::Room),
        Op::Peers => conn.peers().map(Out::Peers),
    }
}

impl Pool {
    /// A pool making its connections with `connector`.
    pub fn new(connector: Arc<dyn Connector>) -> Pool {
        Pool {
            connector,
            workers: HashMap::new(),
            latency: Arc::default(),
            down: Arc::default(),
        }
    }

    /// Why `node` is down, if it is.
    pub fn down_reason(&self, node: &NodeKey) -> Option<String> {
        self.down.lock().ok()?.get(node).cloned()
    }

    /// True if `node` was found down.
    pub fn is_down(&self, node: &NodeKey) -> bool {
        self.down_reason(node).is_some()
    }

    /// How long connecting to `node` took, if it connected.
    pub fn latency(&self, node: &NodeKey) -> Option<Duration> {
        self.latency.lock().ok()?.get(node).copied()
    }

    fn spawn(&mut self, node: NodeKey) -> Option<&Worker> {
        if !self.workers.contains_key(&node) {
            if self.workers.len() >= NODES_MAX {
                return None;
            }
            let (tx, rx) = channel::<Job>();
            let connector = Arc::clone(&self.connector);
            let (latency, down) = (Arc::clone(&self.latency), Arc::clone(&self.down));
            let handle = std::thread::spawn(move || worker(node, connector, rx, latency, down));
            self.workers.insert(node, Worker { jobs: tx, handle });
        }
        self.workers.get(&node)
    }

    /// Queues `op` on `node`'s worker; its [`Reply`] (with `tag`) comes on `reply`.
    pub fn submit(&mut self, node: NodeKey, op: Op, tag: usize, reply: &Sender<Reply>) {
        let job = Job { op, tag, reply: reply.clone() };
        let sent = match self.spawn(node) {
            Some(w) => w.jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        if let Err(job) = sent {
            let why = format!("more than {NODES_MAX} nodes in one command");
            let _ = job.reply.send((job.tag, node, Err(NodeError::Unreachable(why))));
        }
    }

    /// Runs every `(node, op)` at once (each node's in order) and returns the answers in
    /// the same order.
    pub fn run_all(&mut self, jobs: Vec<(NodeKey, Op)>) -> Vec<(NodeKey, Result<Out, NodeError>)> {
        let (tx, rx) = channel();
        let count = jobs.len();
        let mut nodes = Vec::with_capacity(count);
        for (tag, (node, op)) in jobs.into_iter().enumerate() {
            nodes.push(node);
            self.submit(node, op, tag, &tx);
        }
        drop(tx);
        collect(rx, nodes)
    }
}

/// Waits for one reply per node in `nodes` (indexed by tag).
fn collect(rx: Receiver<Reply>, nodes: Vec<NodeKey>) -> Vec<(NodeKey, Result<Out, NodeError>)> {
    let mut out: Vec<(NodeKey, Result<Out, NodeError>)> =
        nodes.into_iter().map(|n| (n, Err(NodeError::Unreachable("no answer from the worker".into())))).collect();
    // Every job answers exactly once (workers answer even when down); a worker that died
    // drops its sender, which ends the loop.
    for _ in 0..out.len() {
        match rx.recv() {
            Ok((tag, node, result)) => {
                if let Some(slot) = out.get_mut(tag) {
                    *slot = (node, result);
                }
            }
            Err(_) => break,
        }
    }
    out
}

fn worker(
    node: NodeKey,
    connector: Arc<dyn Connector>,
    jobs: Receiver<Job>,
    latency: Arc<std::sync::Mutex<HashMap<NodeKey, Duration>>>,
    down: Arc<std::sync::Mutex<HashMap<NodeKey, String>>>,
) {
    let mut conn: Option<Box<dyn NodeConn>> = None;
    let mut dead: Option<String> = None;
    for job in jobs {
        let probe = matches!(job.op, Op::Probe);
        // A connection that served a job before may have been closed by the node since
        // (nodes close idle control connections): one fresh connection, one retry, before
        // the node counts as down.
        let mut result = Err(NodeError::Unreachable("no connection".into()));
        for attempt in 0..2 {
            let reused = conn.is_some();
            if conn.is_none() && dead.is_none() {
                let start = Instant::now();
                match connector.connect(&node, probe) {
                    Ok(c) => {
                        conn = Some(c);
                        if let Ok(mut l) = latency.lock() {
                            l.entry(node).or_insert(start.elapsed());
                        }
                    }
                    Err(e) => dead = Some(e.to_string()),
                }
            }
            result = match (&mut conn, &dead) {
                (Some(c), _) => run_op(c.as_mut(), job.op.clone()),
                (None, Some(why)) => Err(NodeError::Unreachable(why.clone())),
                (None, None) => Err(NodeError::Unreachable("no connection".into())),
            };
            match &result {
                Err(NodeError::Unreachable(why)) => {
                    conn = None;
                    if !(reused && attempt == 0) {
                        dead = Some(why.clone());
                        break;
                    }
                }
                _ => break,
            }
        }
        if let Some(why) = &dead {
            if let Ok(mut d) = down.lock() {
                d.entry(node).or_insert_with(|| why.clone());
            }
        }
        let _ = job.reply.send((job.tag, node, result));
    }
}

impl Drop for Pool {
    /// Closes every connection (each worker's `NodeConn` is dropped as its queue ends).
    fn drop(&mut self) {
        let workers: Vec<Worker> = self.workers.drain().map(|(_, w)| w).collect();
        let handles: Vec<JoinHandle<()>> = workers
            .into_iter()
            .map(|w| {
                drop(w.jobs);
                w.handle
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}
