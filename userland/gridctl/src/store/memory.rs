//! An in-memory grid for host tests of the store commands: nodes with per-owner shard
//! namespaces, storage proofs as `shardstore` builds them, and faults (a node down, a
//! shard's bytes flipped) that tests switch on between commands. Behaves as the node's
//! shard service is specified: a stranger's key sees NotFound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::nodes::{Connector, Meta, NodeConn, NodeError, NodeKey, Peer, Proof, Room, ShardKey};

/// Shards of one node, by owner then key.
#[derive(Default, Debug)]
pub struct MemoryNode {
    /// Owner -> key -> bytes.
    pub shards: HashMap<[u8; 32], BTreeMap<ShardKey, Vec<u8>>>,
}

/// The grid: nodes by key, the ones down, and a quota per owner per node.
#[derive(Default, Debug)]
pub struct MemoryGrid {
    /// Every node, in the order they were added.
    pub order: Vec<NodeKey>,
    /// Nodes.
    pub nodes: HashMap<NodeKey, MemoryNode>,
    /// Nodes that answer nothing.
    pub down: BTreeSet<NodeKey>,
    /// Puts seen (for tests of placement).
    pub puts: u64,
    /// A node that goes down at its first put after this many puts grid-wide.
    pub dies_at_put: Option<(NodeKey, u64)>,
    /// Nodes on a ledger: an owner's puts on a node must fit the room its active storage
    /// contracts there give it (the sum of their shards' lengths on the node), as a node
    /// in ledger mode checks.
    pub ledger: Option<Arc<Mutex<crate::localchain::LocalChain>>>,
}

/// What `owner`'s active storage contracts on `chain` place on `node`, in bytes.
pub fn contract_quota(chain: &crate::localchain::LocalChain, owner: &[u8; 32], node: &NodeKey) -> u64 {
    let state = &chain.state;
    let mut quota = 0u64;
    for id in state.active_contracts() {
        let Some(c) = state.contract(*id) else { continue };
        if c.owner != *owner {
            continue;
        }
        if let ledger::state::ContractTerms::Storage { shards } = &c.terms {
            for s in shards.iter().filter(|s| s.placement.node == *node) {
                quota = quota.saturating_add(s.placement.len_bytes);
            }
        }
    }
    quota
}

impl MemoryGrid {
    /// A grid of `count` nodes with keys `[1; 32]`, `[2; 32]`, ...
    pub fn new(count: u8) -> Arc<Mutex<MemoryGrid>> {
        let mut g = MemoryGrid::default();
        for i in 1..=count {
            g.add([i; 32]);
        }
        Arc::new(Mutex::new(g))
    }

    /// Adds an empty node.
    pub fn add(&mut self, key: NodeKey) {
        self.order.push(key);
        self.nodes.insert(key, MemoryNode::default());
    }

    /// The nodes holding `owner`'s shard `key`.
    pub fn holders(&self, owner: &[u8; 32], key: &ShardKey) -> Vec<NodeKey> {
        self.order
            .iter()
            .filter(|n| self.nodes.get(*n).and_then(|m| m.shards.get(owner)).is_some_and(|s| s.contains_key(key)))
            .copied()
            .collect()
    }

    /// Flips a bit of `owner`'s shard `key` on `node` (as a bad disk would); true if found.
    pub fn corrupt(&mut self, node: &NodeKey, owner: &[u8; 32], key: &ShardKey) -> bool {
        let Some(bytes) = self.nodes.get_mut(node).and_then(|n| n.shards.get_mut(owner)).and_then(|s| s.get_mut(key)) else {
            return false;
        };
        if let Some(b) = bytes.first_mut() {
            *b ^= 1;
        }
        true
    }

    /// Shards `owner` holds over all nodes.
    pub fn shard_count(&self, owner: &[u8; 32]) -> usize {
        self.nodes.values().filter_map(|n| n.shards.get(owner)).map(|s| s.len()).sum()
    }
}

/// Connects to a [`MemoryGrid`] as one owner.
pub struct MemoryConnector {
    /// The grid.
    pub grid: Arc<Mutex<MemoryGrid>>,
    /// Whose namespace the connections act in.
    pub owner: [u8; 32],
}

struct MemoryConn {
    grid: Arc<Mutex<MemoryGrid>>,
    owner: [u8; 32],
    node: NodeKey,
}

impl Connector for MemoryConnector {
    fn connect(&self, key: &NodeKey, _probe: bool) -> Result<Box<dyn NodeConn>, NodeError> {
        let g = self.grid.lock().map_err(|_| NodeError::Unreachable("grid poisoned".into()))?;
        if !g.nodes.contains_key(key) || g.down.contains(key) {
            return Err(NodeError::Unreachable("no route".into()));
        }
        Ok(Box::new(MemoryConn { grid: Arc::clone(&self.grid), owner: self.owner, node: *key }))
    }
}

impl MemoryConn {
    fn with<R>(&self, f: impl FnOnce(&mut MemoryGrid, &NodeKey) -> Result<R, NodeError>) -> Result<R, NodeError> {
        let mut g = self.grid.lock().map_err(|_| NodeError::Unreachable("grid poisoned".into()))?;
        if g.down.contains(&self.node) {
            return Err(NodeError::Unreachable("connection lost".into()));
        }
        f(&mut g, &self.node)
    }
}

fn meta(key: &ShardKey, bytes: &[u8]) -> Meta {
    Meta { key: *key, len: bytes.len() as u64, merkle_root: shardstore::merkle_root(bytes) }
}

impl NodeConn for MemoryConn {
    fn put(&mut self, bytes: &[u8]) -> Result<Meta, NodeError> {
        let owner = self.owner;
        self.with(|g, n| {
            g.puts += 1;
            if let Some((victim, after)) = g.dies_at_put {
                if victim == *n && g.puts > after {
                    g.down.insert(*n);
                    return Err(NodeError::Unreachable("connection lost".into()));
                }
            }
            let key = *blake3::hash(bytes).as_bytes();
            if let Some(chain) = &g.ledger {
                let quota = chain.lock().map(|c| contract_quota(&c, &owner, n)).unwrap_or(0);
                let held = g.nodes.get(n).and_then(|m| m.shards.get(&owner));
                let used: u64 = held.map(|s| s.iter().filter(|(k, _)| **k != key).map(|(_, b)| b.len() as u64).sum()).unwrap_or(0);
                if quota == 0 {
                    return Err(NodeError::Refused("no contract: no active storage contract of yours places shards on this node".into()));
                }
                if used + bytes.len() as u64 > quota {
                    return Err(NodeError::Refused(format!("no contract: your contracts give you {quota} bytes here and {used} are used")));
                }
            }
            let node = g.nodes.get_mut(n).ok_or(NodeError::NotFound)?;
            node.shards.entry(owner).or_default().insert(key, bytes.to_vec());
            Ok(meta(&key, bytes))
        })
    }

    fn get(&mut self, key: &ShardKey) -> Result<Vec<u8>, NodeError> {
        let owner = self.owner;
        self.with(|g, n| g.nodes.get(n).and_then(|m| m.shards.get(&owner)).and_then(|s| s.get(key)).cloned().ok_or(NodeError::NotFound))
    }

    fn delete(&mut self, key: &ShardKey) -> Result<(), NodeError> {
        let owner = self.owner;
        self.with(|g, n| {
            g.nodes.get_mut(n).and_then(|m| m.shards.get_mut(&owner)).and_then(|s| s.remove(key)).map(|_| ()).ok_or(NodeError::NotFound)
        })
    }

    fn prove(&mut self, owner: &[u8; 32], key: &ShardKey, challenge: u64) -> Result<Proof, NodeError> {
        self.with(|g, n| {
            let bytes = g.nodes.get(n).and_then(|m| m.shards.get(owner)).and_then(|s| s.get(key)).ok_or(NodeError::NotFound)?;
            Ok(Proof {
                len: bytes.len() as u64,
                merkle_root: shardstore::merkle_root(bytes),
                proof: shardstore::build_proof(bytes, challenge),
            })
        })
    }

    fn list(&mut self) -> Result<Vec<Meta>, NodeError> {
        let owner = self.owner;
        self.with(|g, n| {
            Ok(g.nodes.get(n).and_then(|m| m.shards.get(&owner)).map(|s| s.iter().map(|(k, b)| meta(k, b)).collect()).unwrap_or_default())
        })
    }

    fn room(&mut self) -> Result<Room, NodeError> {
        self.with(|_, _| Ok(Room { used_bytes: 0, quota_bytes: 1 << 40, node_free_bytes: 1 << 40 }))
    }

    fn peers(&mut self) -> Result<Vec<Peer>, NodeError> {
        self.with(|g, n| {
            Ok(g.order
                .iter()
                .filter(|k| *k != n)
                .map(|k| Peer { address: overlay_address(k), key: Some(*k) })
                .collect())
        })
    }
}

fn overlay_address(key: &NodeKey) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&blake3::hash(key).as_bytes()[..16]);
    a
}
