//! The store commands end to end against the in-memory grid: the same code paths as on
//! the network, with nodes going down and shards flipped between commands.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::memory::{MemoryConnector, MemoryGrid};
use super::nodes::Connector;
use super::{run, StoreCommand};
use crate::cli::{Cli, Command};
use crate::key::UserKey;
use crate::target::Target;
use clap::Parser;

struct World {
    dir: PathBuf,
    grid: Arc<Mutex<MemoryGrid>>,
    /// `--nodes` for the commands: the grid's first node (the gateway), at a dummy address.
    seeds: String,
    /// The ledger the commands pay on, when the grid's nodes are on one.
    chain: Option<Arc<Mutex<crate::localchain::LocalChain>>>,
}

/// The gateway's key: memory nodes are named `[i; 32]`, but `--nodes` wants a real
/// ed25519 key, so the gateway the commands start from is named by one.
fn gateway_key() -> [u8; 32] {
    *workloads::manifest::key_pair_from_seed([7; 32]).pk
}

impl World {
    fn new(name: &str, nodes: u8) -> World {
        let dir = std::env::temp_dir().join(format!("gridctl-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let grid = MemoryGrid::new(nodes);
        {
            // The gateway under a real key, first in the grid's order.
            let mut g = grid.lock().unwrap();
            let gw = gateway_key();
            g.nodes.insert(gw, Default::default());
            g.order.insert(0, gw);
        }
        let seeds = format!("{}@127.0.0.1:7443", crate::hex(&gateway_key()));
        World { dir, grid, seeds, chain: None }
    }

    fn key(&self, who: &str) -> PathBuf {
        let path = self.dir.join(who).join("key");
        if !path.exists() {
            UserKey::generate().unwrap().save_new(&path).unwrap();
        }
        path
    }

    fn owner(&self, who: &str) -> [u8; 32] {
        UserKey::load(&self.key(who)).unwrap().public_key()
    }

    fn run(&self, who: &str, args: &[&str]) -> Result<String, String> {
        let key = self.key(who);
        let mut argv = vec!["gridctl", "--key", key.to_str().unwrap(), "store"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
        let Command::Store(command) = cli.command else { panic!("not a store command") };
        self.run_command(command, &key)
    }

    fn run_command(&self, command: StoreCommand, key: &Path) -> Result<String, String> {
        let grid = Arc::clone(&self.grid);
        let factory = move |_: &[Target], user: &UserKey| -> Arc<dyn Connector> {
            Arc::new(MemoryConnector { grid: Arc::clone(&grid), owner: user.public_key() })
        };
        let chain = self.chain.clone();
        let ledger = move |user: &UserKey| -> crate::Result<Box<dyn super::contracts::StoreLedger>> {
            let chain = chain.clone().ok_or_else(|| crate::Error("no chain".into()))?;
            let genesis = chain.lock().map_err(|_| crate::Error("poisoned".into()))?.genesis.clone();
            let ledger = crate::ledger::Ledger::new(genesis, crate::localchain::LocalTransport(chain), None)?;
            Ok(Box::new(super::contracts::LedgerStore { ledger, key: crate::ledger::ledger_key(user)? }))
        };
        let mut out = Vec::new();
        let result = run(command, key, &factory, self.chain.as_ref().map(|_| &ledger as super::contracts::LedgerFactory), &mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        result.map(|()| text.clone()).map_err(|e| format!("{e}\n{text}"))
    }

    fn json(&self, who: &str, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--json", "--nodes", &self.seeds]);
        let text = self.run(who, &a).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn file(&self, name: &str, len: usize, seed: u64) -> PathBuf {
        let mut x = seed | 1;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let p = self.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn put_spreads_segments_on_distinct_nodes_and_get_returns_the_bytes() {
    let w = World::new("roundtrip", 5);
    let src = w.file("a.bin", 9 << 16, 1);
    let put = w.json("alice", &["put", src.to_str().unwrap(), "--data", "3", "--parity", "2", "--segment-kib", "256"]);
    assert_eq!(put["data_shards"], 3);
    assert_eq!(put["segments"], 3);
    let id = put["id"].as_str().unwrap().to_string();
    // Every segment's five shards sit on five distinct nodes.
    let g = w.grid.lock().unwrap();
    let alice = w.owner("alice");
    let holders: Vec<usize> = g.order.iter().map(|n| g.nodes[n].shards.get(&alice).map_or(0, |s| s.len())).collect();
    assert!(holders.iter().filter(|h| **h > 0).count() >= 5, "{holders:?}");
    drop(g);
    let out = w.dir.join("a.out");
    let got = w.json("alice", &["get", &id, "-o", out.to_str().unwrap()]);
    assert_eq!(got["size"], 9 << 16);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
    // ls shows it; the name resolves.
    let ls = w.run("alice", &["ls"]).unwrap();
    assert!(ls.contains(&id) && ls.contains("a.bin"), "{ls}");
    // The nodes know it too (from a machine without the index), and only for alice.
    let remote = w.json("alice", &["ls", "--remote"]);
    assert_eq!(remote["files"][0]["id"].as_str(), Some(id.as_str()), "{remote}");
    assert_eq!(remote["files"][0]["name"], "a.bin");
    assert_eq!(remote["files"].as_array().unwrap().len(), 1, "{remote}");
    let none = w.json("bob", &["ls", "--remote"]);
    assert_eq!(none["files"].as_array().unwrap().len(), 0, "{none}");
    let out2 = w.dir.join("a2.out");
    w.json("alice", &["get", "a.bin", "-o", out2.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out2).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn defaults_shrink_to_the_nodes_and_say_so() {
    let w = World::new("shrink", 2);
    let src = w.file("s.bin", 1000, 2);
    let put = w.json("alice", &["put", src.to_str().unwrap()]);
    assert_eq!((put["data_shards"].as_u64(), put["parity_shards"].as_u64()), (Some(2), Some(1)));
    assert!(put["notes"][0].as_str().unwrap().contains("only 3 nodes"), "{put}");
    let e = w.run("alice", &["put", src.to_str().unwrap(), "--data", "4", "--parity", "2", "--nodes", &w.seeds]).unwrap_err();
    assert!(e.contains("needs 6 distinct nodes"), "{e}");
}

#[test]
fn lost_nodes_get_from_a_fresh_config_repair_verify_corrupt_and_strangers() {
    let w = World::new("life", 5);
    let src = w.file("f.bin", 10 << 16, 3);
    let put = w.json("alice", &["put", src.to_str().unwrap(), "--data", "3", "--parity", "2", "--segment-kib", "256"]);
    let id = put["id"].as_str().unwrap().to_string();
    let alice = w.owner("alice");

    // Two nodes holding shards go down (not the gateway).
    {
        let mut g = w.grid.lock().unwrap();
        let victims: Vec<[u8; 32]> = g.order.iter().skip(1).take(2).copied().collect();
        for v in victims {
            g.down.insert(v);
        }
    }
    // A fresh config dir holding only the same key gets the file back.
    let fresh = w.dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::copy(w.key("alice"), fresh.join("key")).unwrap();
    let out = w.dir.join("f.out");
    let fresh_key = fresh.join("key");
    let argv = ["gridctl", "--key", fresh_key.to_str().unwrap(), "store", "get", &id, "-o", out.to_str().unwrap(), "--nodes", &w.seeds];
    let Command::Store(cmd) = Cli::try_parse_from(argv).unwrap().command else { panic!() };
    w.run_command(cmd, &fresh.join("key")).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());

    // verify names the missing shards; repair moves them onto two new nodes.
    let e = w.run("alice", &["verify", &id, "--nodes", &w.seeds]).unwrap_err();
    assert!(e.contains("missing") && e.contains("repair"), "{e}");
    {
        let mut g = w.grid.lock().unwrap();
        g.add([101; 32]);
        g.add([102; 32]);
    }
    let rep = w.json("alice", &["repair", &id]);
    let new_id = rep["id"].as_str().unwrap().to_string();
    assert_eq!(rep["previous_id"].as_str(), Some(id.as_str()));
    assert!(!rep["repaired"].as_array().unwrap().is_empty());
    let v = w.json("alice", &["verify", &new_id]);
    assert_eq!(v["ok"], true, "{v}");
    // Every segment has five ok shards on five distinct live nodes.
    let mut per_segment: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for s in v["shards"].as_array().unwrap() {
        assert_eq!(s["status"], "ok");
        per_segment.entry(s["segment"].as_u64().unwrap()).or_default().push(s["node"].as_str().unwrap().to_string());
    }
    assert_eq!(per_segment.len(), 3);
    for nodes in per_segment.values_mut() {
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), 5, "{nodes:?}");
    }
    // The old id is gone, the index follows the new one.
    assert!(w.run("alice", &["get", &id, "-o", out.to_str().unwrap(), "--nodes", &w.seeds]).is_err());
    assert!(w.run("alice", &["ls"]).unwrap().contains(&new_id));

    // A flipped shard: verify names it, get still returns the bytes.
    let victim = {
        let mut g = w.grid.lock().unwrap();
        let (node, key) = g
            .order
            .iter()
            .filter(|n| !g.down.contains(*n))
            .find_map(|n| g.nodes[n].shards.get(&alice).and_then(|s| s.iter().find(|(_, b)| b.len() > 4096).map(|(k, _)| (*n, *k))))
            .unwrap();
        assert!(g.corrupt(&node, &alice, &key));
        (node, key)
    };
    let e = w.run("alice", &["verify", &new_id, "--nodes", &w.seeds]).unwrap_err();
    assert!(e.contains("1 of 15 shards"), "{e}");
    let v = w.run("alice", &["verify", &new_id, "--json", "--nodes", &w.seeds]).unwrap_err();
    assert!(v.contains("\"corrupt\"") && v.contains(&crate::hex(&victim.1)), "{v}");
    std::fs::remove_file(&out).unwrap();
    w.json("alice", &["get", &new_id, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());

    // A stranger can neither read nor delete.
    let e = w.run("mallory", &["get", &new_id, "-o", w.dir.join("m.out").to_str().unwrap(), "--nodes", &w.seeds]).unwrap_err();
    assert!(e.contains("holds file"), "{e}");
    assert!(!w.dir.join("m.out").exists());
    assert!(w.run("mallory", &["rm", &new_id, "--nodes", &w.seeds]).is_err());
    let before = w.grid.lock().unwrap().shard_count(&alice);
    assert_eq!(w.grid.lock().unwrap().shard_count(&w.owner("mallory")), 0);

    // rm deletes every shard and the manifest copies.
    let rm = w.json("alice", &["rm", &new_id]);
    assert_eq!(rm["deleted"], 15, "{rm}");
    assert!(before > 0);
    let left = w.grid.lock().unwrap().shard_count(&alice);
    // Only the shards on the nodes that stayed down remain (plus their manifest copies).
    let g = w.grid.lock().unwrap();
    let on_down: usize = g.down.iter().map(|n| g.nodes[n].shards.get(&alice).map_or(0, |s| s.len())).sum();
    assert_eq!(left, on_down);
}

#[test]
fn a_wrong_key_is_refused_with_no_output() {
    let w = World::new("wrongkey", 3);
    let src = w.file("w.bin", 5000, 4);
    let id = w.json("alice", &["put", src.to_str().unwrap()])["id"].as_str().unwrap().to_string();
    let out = w.dir.join("w.out");
    let e = w.run("bob", &["get", &id, "-o", out.to_str().unwrap(), "--nodes", &w.seeds]).unwrap_err();
    assert!(e.contains("for your key"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_node_dying_during_put_gets_its_shards_moved_and_it_is_said() {
    let w = World::new("dies", 6);
    let src = w.file("d.bin", 6 << 16, 5);
    w.grid.lock().unwrap().dies_at_put = Some(([3; 32], 0));
    let put = w.json("alice", &["put", src.to_str().unwrap(), "--data", "3", "--parity", "2", "--segment-kib", "128"]);
    let notes = put["notes"].to_string();
    assert!(notes.contains("placing it elsewhere"), "{put}");
    let id = put["id"].as_str().unwrap().to_string();
    // Only what node 3 took before it died is missing; every later shard went elsewhere.
    let text = match w.run("alice", &["verify", &id, "--json", "--nodes", &w.seeds]) {
        Ok(t) => t,
        Err(e) => e.lines().nth(1).unwrap().to_string(),
    };
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let dead = crate::hex(&[3; 32]);
    let first_failed: u64 = notes.split("segment ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    for s in v["shards"].as_array().unwrap() {
        let on_dead = s["node"] == dead.as_str();
        assert_eq!(s["status"] == "ok", !on_dead, "{s}");
        assert!(!on_dead || s["segment"].as_u64().unwrap() < first_failed, "{s}");
    }
    let out = w.dir.join("d.out");
    w.json("alice", &["get", &id, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
}

mod on_a_ledger {
    use super::*;
    use crate::localchain::LocalChain;
    use ledger::state::{ContractStatus, ContractTerms};
    use ledger::{Capacity, Keypair, TxKind};

    /// Keys of the registered memory nodes.
    fn node_keys() -> Vec<Keypair> {
        (0..5u8).map(|i| Keypair::from_seed([40 + i; 32])).collect()
    }

    /// A grid whose nodes are on a ledger: the gateway and five nodes registered, one node
    /// not registered; alice funded, bob not.
    fn world(name: &str) -> (World, Keypair) {
        let mut w = World::new(name, 0);
        let alice = alice_in(&w);
        let farmer = Keypair::from_seed([30; 32]);
        let mut chain = LocalChain::new(&[(farmer.public(), 10), (alice.public(), 1_000_000)], ledger::PERIOD_MS).unwrap();
        chain.run(&farmer, TxKind::CreateFarm { name: "farm".into() }).unwrap();
        let capacity = Capacity { cores: 2, memory_bytes: 1 << 30, disks_bytes: vec![1 << 30], nics: 1 };
        let mut registered = vec![gateway_key()];
        registered.extend(node_keys().iter().map(|k| k.public()));
        for node in &registered {
            chain.run(&farmer, TxKind::RegisterNode { node: *node, farm: 0, capacity: capacity.clone() }).unwrap();
        }
        let chain = chain.shared();
        {
            let mut g = w.grid.lock().unwrap();
            for k in node_keys() {
                g.add(k.public());
            }
            g.add([99; 32]);
            g.ledger = Some(Arc::clone(&chain));
        }
        w.chain = Some(chain);
        (w, alice)
    }

    fn alice_in(w: &World) -> Keypair {
        let seed = UserKey::load(&w.key("alice")).unwrap().seed();
        Keypair::from_seed(seed)
    }

    #[test]
    fn put_pays_every_placement_first_verify_shows_proofs_rm_cancels() {
        let (w, alice) = world("ledger-put");
        let chain = w.chain.clone().unwrap();

        // 100 segments of 3 shards: more than one contract's worth (256 shards).
        let src = w.file("l.bin", 100 << 10, 5);
        let put = w.json("alice", &["put", src.to_str().unwrap(), "--data", "2", "--parity", "1", "--segment-kib", "1"]);
        let id = put["id"].as_str().unwrap().to_string();
        let contracts: Vec<u64> = put["contracts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
        assert_eq!(contracts.len(), 2, "{put}");
        let manifest_contract = put["manifest_contract"].as_u64().unwrap();
        assert!(put["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("not registered")), "{put}");
        {
            // Every stored shard is named by an active contract of alice's on its node (the
            // memory nodes refuse puts beyond what contracts pay for, as ledger nodes do),
            // and the unregistered node holds nothing.
            let c = chain.lock().unwrap();
            let g = w.grid.lock().unwrap();
            let mut named = 0;
            for cid in contracts.iter().chain([&manifest_contract]) {
                let contract = c.state.contract(*cid).unwrap();
                assert_eq!((contract.owner, contract.status), (alice.public(), ContractStatus::Active));
                let ContractTerms::Storage { shards } = &contract.terms else { panic!("not storage") };
                assert!(shards.len() <= ledger::SHARDS_PER_CONTRACT_MAX);
                for s in shards {
                    let held = g.nodes[&s.placement.node].shards.get(&alice.public()).and_then(|m| m.get(&s.placement.key)).unwrap();
                    assert_eq!(held.len() as u64, s.placement.len_bytes);
                    assert_eq!(shardstore::merkle_root(held), s.placement.merkle_root);
                    named += 1;
                }
            }
            assert_eq!(named, 300 + put["manifest_copies"].as_u64().unwrap() as usize);
            assert!(g.nodes[&[99; 32]].shards.is_empty());
        }
        let out = w.dir.join("l.out");
        w.json("alice", &["get", &id, "-o", out.to_str().unwrap()]);
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());

        // verify: no proof recorded yet; then a node proves its shard for this period.
        let v = w.json("alice", &["verify", &id]);
        let period = v["ledger_period"].as_u64().unwrap();
        assert!(v["shards"].as_array().unwrap().iter().all(|s| s["contract"].is_u64() && s["proven_period"].is_null()), "{v}");
        let keys = node_keys();
        let (cid, index, prover, bytes) = {
            let c = chain.lock().unwrap();
            let g = w.grid.lock().unwrap();
            let contract = c.state.contract(contracts[0]).unwrap();
            let ContractTerms::Storage { shards } = &contract.terms else { panic!() };
            let (index, s) = shards.iter().enumerate().find(|(_, s)| keys.iter().any(|k| k.public() == s.placement.node)).unwrap();
            let prover = keys.iter().find(|k| k.public() == s.placement.node).unwrap().clone();
            let bytes = g.nodes[&s.placement.node].shards[&alice.public()][&s.placement.key].clone();
            (contracts[0], index as u32, prover, bytes)
        };
        {
            let mut c = chain.lock().unwrap();
            let seed = c.state.meta().period_seed;
            let challenge = ledger::state::storage_challenge(&seed, cid, index);
            let proof = shardstore::build_proof(&bytes, challenge).into();
            c.run(&prover, TxKind::StorageProof { contract: cid, shard: index, proof }).unwrap();
        }
        let v = w.json("alice", &["verify", &id]);
        let proven: Vec<&serde_json::Value> = v["shards"].as_array().unwrap().iter().filter(|s| s["proven_period"].as_u64() == Some(period)).collect();
        assert_eq!(proven.len(), 1, "{v}");
        assert_eq!(proven[0]["node"], crate::hex(&prover.public()));
        let text = w.run("alice", &["verify", &id, "--nodes", &w.seeds]).unwrap();
        assert!(text.contains("PROVEN") && text.contains(&format!("ledger period {period}")), "{text}");

        // rm cancels the file's contracts and its manifest's.
        let rm = w.json("alice", &["rm", &id]);
        let mut cancelled: Vec<u64> = rm["contracts_cancelled"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
        cancelled.sort();
        let mut all = contracts.clone();
        all.push(manifest_contract);
        assert_eq!(cancelled, all);
        let c = chain.lock().unwrap();
        assert!(all.iter().all(|id| matches!(c.state.contract(*id).unwrap().status, ContractStatus::Cancelled(_))));
    }

    #[test]
    fn without_tokens_nothing_goes_up_and_repair_pays_for_new_placements() {
        let (w, _alice) = world("ledger-repair");
        let chain = w.chain.clone().unwrap();

        // bob has no tokens: refused before anything is stored.
        let src = w.file("r.bin", 3 << 16, 6);
        let e = w.run("bob", &["put", src.to_str().unwrap(), "--nodes", &w.seeds]).unwrap_err();
        assert!(e.contains("no tokens"), "{e}");
        assert_eq!(w.grid.lock().unwrap().shard_count(&w.owner("bob")), 0);

        let put = w.json("alice", &["put", src.to_str().unwrap(), "--data", "3", "--parity", "2", "--segment-kib", "64"]);
        let id = put["id"].as_str().unwrap().to_string();
        let old_manifest_contract = put["manifest_contract"].as_u64().unwrap();
        // A node holding shards goes down; repair moves its shards under new contracts.
        let victim = {
            let c = chain.lock().unwrap();
            let contract = c.state.contract(put["contracts"][0].as_u64().unwrap()).unwrap();
            let ContractTerms::Storage { shards } = &contract.terms else { panic!() };
            shards.iter().map(|s| s.placement.node).find(|n| *n != gateway_key()).unwrap()
        };
        w.grid.lock().unwrap().down.insert(victim);
        let repair = w.json("alice", &["repair", &id]);
        let new_id = repair["id"].as_str().unwrap().to_string();
        assert_ne!(new_id, id);
        assert!(!repair["repaired"].as_array().unwrap().is_empty(), "{repair}");
        let notes: Vec<&str> = repair["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        assert!(notes.iter().any(|n| n.contains("under contract")), "{notes:?}");
        {
            let c = chain.lock().unwrap();
            assert!(matches!(c.state.contract(old_manifest_contract).unwrap().status, ContractStatus::Cancelled(_)));
        }
        let v = w.json("alice", &["verify", &new_id]);
        assert_eq!(v["ok"], true, "{v}");
        // Every shard of the repaired file is named by a contract in its manifest.
        assert!(v["shards"].as_array().unwrap().iter().all(|s| s["contract"].is_u64()), "{v}");
    }
}
