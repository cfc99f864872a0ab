//! gridctl's commands on a grid with a ledger (issue 14): the contracts that `deploy` runs
//! under, and `gridctl nodes` (the registered nodes with their free capacity, from verified
//! reads). The store's contracts are in [`crate::store::contracts`].
//!
//! A ledger is in use when one is trusted (`gridctl ledger trust` wrote `genesis.bin` in the
//! ledger folder) and `--no-ledger` is not given; otherwise every command behaves as on
//! development-mode nodes (no contracts).
//!
//! Prices are in the token's smallest unit per billing period (the chain's period: an hour
//! on a real chain): a workload contract costs [`WORKLOAD_PRICE_DEFAULT`] unless `--price`,
//! a storage contract [`STORAGE_PRICE_PER_MIB_DEFAULT`] per started MiB of the shards it
//! names unless `--price-per-mib`. gridctl checks before it submits (each from a verified
//! read) that the node is registered, has the room, and that the balance covers a period.

use std::io::Write;
use std::path::{Path, PathBuf};

use ledger::state::Node;
use ledger::{Amount, ContractId, Keypair, PublicKey, Resources};
use serde_json::json;

use crate::ledger::{free_resources, Ledger, Transport};
use crate::{hex, Context, Error, Result};

/// Price per period of a workload contract unless `--price`.
pub const WORKLOAD_PRICE_DEFAULT: Amount = 10;
/// Price per period of a storage contract, per started MiB of its shards, unless
/// `--price-per-mib`.
pub const STORAGE_PRICE_PER_MIB_DEFAULT: Amount = 1;

/// The ledger folder to use, or `None` for development mode: no ledger trusted there, or
/// `--no-ledger`. An explicit folder (`--ledger-dir`) without a trusted chain is an error.
pub fn ledger_in_use(explicit: Option<&Path>, disabled: bool) -> Result<Option<PathBuf>> {
    if disabled {
        return Ok(None);
    }
    let dir = match crate::ledger::ledger_dir(explicit) {
        Ok(dir) => dir,
        Err(_) => return Ok(None),
    };
    if crate::ledger::configured(&dir) {
        Ok(Some(dir))
    } else if explicit.is_some() {
        Err(Error(format!("no ledger trusted in {} (run `gridctl ledger trust` first, or drop --ledger-dir)", dir.display())))
    } else {
        Ok(None)
    }
}

/// What a workload contract reserves for `manifest`: its memory limit and its file area.
/// Workloads share the node's cores (their CPU time is limited by the manifest), so the
/// contract reserves none.
pub fn workload_resources(manifest: &workloads::manifest::Manifest) -> Resources {
    Resources { cores: 0, memory_bytes: manifest.limits.memory_bytes, disk_bytes: manifest.limits.storage_bytes }
}

/// The contract a deploy runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployContract {
    /// Its id (goes into the manifest).
    pub id: ContractId,
    /// The block that created it, when this deploy created it (`None`: `--contract`).
    pub created_in: Option<u64>,
    /// Its price per period.
    pub price: Amount,
}

/// The contract for a deploy of a workload needing `resources` on `node`: `reuse` once
/// checked (active, the user's, this node's, room enough), else a new one created and
/// paid at `price`, committed before this returns.
pub fn deploy_contract<T: Transport>(
    ledger: &mut Ledger<T>,
    key: &Keypair,
    node: &PublicKey,
    resources: Resources,
    reuse: Option<ContractId>,
    price: Amount,
) -> Result<DeployContract> {
    match reuse {
        Some(id) => {
            let contract = ledger.check_workload_contract(id, &key.public(), node, resources)?;
            Ok(DeployContract { id, created_in: None, price: contract.price_per_hour })
        }
        None => {
            let (id, height) = ledger.create_workload_contract(key, node, resources, price)?;
            Ok(DeployContract { id, created_in: Some(height), price })
        }
    }
}

fn node_json(key: &PublicKey, n: &Node) -> serde_json::Value {
    let free = free_resources(n);
    json!({
        "key": hex(key),
        "farm": n.farm,
        "capacity": {
            "cores": n.capacity.cores,
            "memory_bytes": n.capacity.memory_bytes,
            "disk_bytes": n.capacity.disk_bytes(),
            "disks_bytes": n.capacity.disks_bytes,
            "nics": n.capacity.nics,
        },
        "reserved": { "cores": n.reserved.cores, "memory_bytes": n.reserved.memory_bytes, "disk_bytes": n.reserved.disk_bytes },
        "free": { "cores": free.cores, "memory_bytes": free.memory_bytes, "disk_bytes": free.disk_bytes },
        "registered_period": n.registered_period,
        "last_uptime_period": n.last_uptime_period,
        "last_uptime_secs": n.last_uptime_secs,
        "periods_good": n.periods_good,
        "periods_marked": n.periods_marked,
        "proofs": { "ok": n.proofs_ok, "missed": n.proofs_missed },
    })
}

/// `gridctl nodes`: every registered node (each record verified), with its farm, capacity,
/// what contracts reserve and what is free, its last uptime period and proof record.
pub fn nodes<T: Transport>(ledger: &mut Ledger<T>, json: bool, out: &mut dyn Write) -> Result<()> {
    let nodes = ledger.nodes()?;
    let (height, meta) = ledger.meta()?;
    if json {
        let value = json!({
            "height": height,
            "period": meta.period,
            "nodes": nodes.iter().map(|(k, n)| node_json(k, n)).collect::<Vec<_>>(),
            "verified": true,
        });
        let text = serde_json::to_string_pretty(&value).context(|| "cannot encode JSON".into())?;
        return writeln!(out, "{text}").context(|| "cannot write output".into());
    }
    let mib = |b: u64| b >> 20;
    (|| -> std::io::Result<()> {
        writeln!(out, "{} node(s) at height {height}, period {} (each record verified)", nodes.len(), meta.period)?;
        writeln!(
            out,
            "{:<16}  {:>5}  {:>11}  {:>15}  {:>15}  {:>11}  {:>9}  {:>6}",
            "NODE", "FARM", "CORES FREE", "MEMORY MiB FREE", "DISK MiB FREE", "UPTIME PER", "PROOFS OK", "MISSED"
        )?;
        for (key, n) in &nodes {
            let free = free_resources(n);
            writeln!(
                out,
                "{:<16}  {:>5}  {:>11}  {:>15}  {:>15}  {:>11}  {:>9}  {:>6}",
                hex(&key[..8]),
                n.farm,
                format!("{}/{}", free.cores, n.capacity.cores),
                format!("{}/{}", mib(free.memory_bytes), mib(n.capacity.memory_bytes)),
                format!("{}/{}", mib(free.disk_bytes), mib(n.capacity.disk_bytes())),
                n.last_uptime_period.map_or_else(|| "-".to_string(), |p| p.to_string()),
                n.proofs_ok,
                n.proofs_missed
            )?;
        }
        Ok(())
    })()
    .context(|| "cannot write output".into())
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::localchain::{LocalChain, LocalTransport};
    use ledger::{Capacity, TxKind};
    use std::sync::{Arc, Mutex};

    struct World {
        chain: Arc<Mutex<LocalChain>>,
        ledger: Ledger<LocalTransport>,
        user: Keypair,
        node: PublicKey,
    }

    /// A chain with a farm and one registered node (2 cores, 64 MiB, 1 GiB disk), and a
    /// user holding `balance`.
    fn world(balance: u64) -> World {
        let farmer = Keypair::from_seed([1; 32]);
        let user = Keypair::from_seed([2; 32]);
        let node = Keypair::from_seed([3; 32]);
        let mut chain = LocalChain::new(&[(farmer.public(), 1000), (user.public(), balance)], ledger::PERIOD_MS).unwrap();
        chain.run(&farmer, TxKind::CreateFarm { name: "farm".into() }).unwrap();
        let capacity = Capacity { cores: 2, memory_bytes: 64 << 20, disks_bytes: vec![1 << 30], nics: 1 };
        // The node registers itself under the farm, as a booting node does.
        chain.run(&node, TxKind::RegisterNode { node: node.public(), farm: 0, capacity }).unwrap();
        let genesis = chain.genesis.clone();
        let chain = chain.shared();
        let ledger = Ledger::new(genesis, LocalTransport(Arc::clone(&chain)), None).unwrap();
        World { chain, ledger, user, node: node.public() }
    }

    fn resources(memory_mib: u64) -> Resources {
        Resources { cores: 0, memory_bytes: memory_mib << 20, disk_bytes: 1 << 20 }
    }

    #[test]
    fn a_deploy_creates_and_pays_a_contract_then_can_reuse_it() {
        let mut w = world(1000);
        let c = deploy_contract(&mut w.ledger, &w.user, &w.node, resources(16), None, 25).unwrap();
        assert!(c.created_in.is_some());
        assert_eq!(c.price, 25);
        {
            // Committed: the contract is in the chain's state, active, reserving what was asked.
            let chain = w.chain.lock().unwrap();
            let contract = chain.state.contract(c.id).unwrap();
            assert_eq!(contract.owner, w.user.public());
            assert_eq!(contract.price_per_hour, 25);
            assert_eq!(chain.state.node(&w.node).unwrap().reserved.memory_bytes, 16 << 20);
        }
        // --contract ID: checked, not created again.
        let again = deploy_contract(&mut w.ledger, &w.user, &w.node, resources(8), Some(c.id), 99).unwrap();
        assert_eq!(again, DeployContract { id: c.id, created_in: None, price: 25 });
        let e = deploy_contract(&mut w.ledger, &w.user, &w.node, resources(32), Some(c.id), 1).unwrap_err().0;
        assert!(e.contains("reserves 16 MiB memory"), "{e}");
        let e = deploy_contract(&mut w.ledger, &w.user, &[9; 32], resources(8), Some(c.id), 1).unwrap_err().0;
        assert!(e.contains("not this node"), "{e}");
        let e = deploy_contract(&mut w.ledger, &w.user, &w.node, resources(8), Some(77), 1).unwrap_err().0;
        assert!(e.contains("no such contract"), "{e}");
        let stranger = Keypair::from_seed([4; 32]);
        let e = deploy_contract(&mut w.ledger, &stranger, &w.node, resources(8), Some(c.id), 1).unwrap_err().0;
        assert!(e.contains("not to your key"), "{e}");
        // Cancelled: no longer usable.
        assert!(w.ledger.cancel_contract(&w.user, c.id).unwrap());
        let e = deploy_contract(&mut w.ledger, &w.user, &w.node, resources(8), Some(c.id), 1).unwrap_err().0;
        assert!(e.contains("ended"), "{e}");
        assert_eq!(w.chain.lock().unwrap().state.node(&w.node).unwrap().reserved.memory_bytes, 0);
    }

    #[test]
    fn no_tokens_unknown_node_and_capacity_are_refused_before_submitting() {
        let mut w = world(5);
        let height = w.chain.lock().unwrap().state.meta().height;
        let e = deploy_contract(&mut w.ledger, &w.user, &w.node, resources(16), None, 10).unwrap_err().0;
        assert!(e.starts_with("no tokens: the contract costs 10 per period and your balance is 5"), "{e}");
        let e = deploy_contract(&mut w.ledger, &w.user, &[9; 32], resources(16), None, 1).unwrap_err().0;
        assert!(e.starts_with("unknown node:"), "{e}");
        let e = deploy_contract(&mut w.ledger, &w.user, &w.node, resources(128), None, 1).unwrap_err().0;
        assert!(e.starts_with("capacity exceeded on node"), "{e}");
        assert!(e.contains("free 2 cores, 64 MiB memory"), "{e}");
        // Nothing was submitted.
        assert_eq!(w.chain.lock().unwrap().state.meta().height, height);
        // Within the balance, it goes through.
        deploy_contract(&mut w.ledger, &w.user, &w.node, resources(16), None, 5).unwrap();
    }

    #[test]
    fn nodes_lists_capacity_reserved_free_uptime_and_proofs() {
        let mut w = world(1000);
        deploy_contract(&mut w.ledger, &w.user, &w.node, resources(16), None, 10).unwrap();
        let mut out = Vec::new();
        nodes(&mut w.ledger, true, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let n = &v["nodes"][0];
        assert_eq!(n["key"], hex(&w.node));
        assert_eq!(n["farm"], 0);
        assert_eq!(n["capacity"]["memory_bytes"], 64u64 << 20);
        assert_eq!(n["reserved"]["memory_bytes"], 16u64 << 20);
        assert_eq!(n["free"]["memory_bytes"], 48u64 << 20);
        assert_eq!(n["free"]["disk_bytes"], (1u64 << 30) - (1 << 20));
        assert_eq!(n["last_uptime_period"], serde_json::Value::Null);
        assert_eq!(n["proofs"]["ok"], 0);
        assert_eq!(v["verified"], true);
        let mut out = Vec::new();
        nodes(&mut w.ledger, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&hex(&w.node[..8])) && text.contains("48/64"), "{text}");
    }
}
