//! Figures, printed (no timed asserts): `cargo test -p nodeledger --test bench -- --nocapture`.
//!
//! - Following: the agent's CPU per block followed and the heap it keeps, against the light
//!   client alone accepting the same blocks (the baseline, measured in the same run).
//! - Proofs: the agent's CPU per storage proof answered (everything it does in a run
//!   divided by the proofs committed: following, proven reads, signing, the store's proof),
//!   against the store's proof alone; and proofs per block (one transaction in flight).
//!
//! Built like the other tests (the ledger and its crypto at opt-level 3, this crate not).

mod common;

use std::alloc::System;
use std::time::{Duration, Instant};

use common::*;
use ledger::rpc::Request;
use ledger::{LightClient, TxKind};
use nodeledger::Agent;
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn live_bytes() -> isize {
    let s = GLOBAL.stats();
    s.bytes_allocated as isize - s.bytes_deallocated as isize + s.bytes_reallocated
}

const BLOCKS: u64 = 1_280;
const CONTRACTS: usize = 16;
const SHARDS_PER_CONTRACT: usize = 4;
const SHARD_BYTES: usize = 16 << 10;

#[test]
fn bench_figures() {
    let (alice, farmer, node) = (key(1), key(3), key(10));
    let mut net = Net::honest(Chain::new(4, &[(alice.public(), 1 << 40)]));
    let farm = create_farm(&mut net, &farmer);
    let kind = TxKind::RegisterNode { node: node.public(), farm, capacity: capacity() };
    net.run_now(&farmer, kind).expect("register");
    let mut local = FakeLocal::new(node.clone());
    let mut shards = Vec::new();
    for c in 0..CONTRACTS {
        let placements: Vec<_> = (0..SHARDS_PER_CONTRACT)
            .map(|i| {
                let bytes = shard_bytes((c * SHARDS_PER_CONTRACT + i) as u64 + 1, SHARD_BYTES);
                let p = local.put(&alice.public(), &bytes);
                shards.push(p.key);
                p
            })
            .collect();
        created(net.run_now(&alice, TxKind::CreateStorageContract { shards: placements, price_per_hour: 64 }));
    }
    for _ in 0..BLOCKS {
        net.now_ms += 100;
        net.chain.block(Vec::new(), net.now_ms);
    }
    net.next_block_ms = net.now_ms + 100;
    let blocks = net.chain.light_blocks.clone();

    // Baseline: the light client alone.
    let t = Instant::now();
    let mut light = LightClient::from_genesis(&net.chain.genesis).expect("genesis");
    for block in &blocks {
        light.accept(block).expect("accept");
    }
    let light_time = t.elapsed();
    // Heap held = live bytes before the drop minus after (the ledger's genesis leaves
    // process-wide allocations behind that are no one's).
    let held = live_bytes();
    drop(light);
    let light_heap = held - live_bytes();

    // The agent following the same blocks (fed only what it asks for).
    let mut agent = Agent::new(config(&net, &node, None, capacity()));
    let mut follow_time = Duration::ZERO;
    let mut steps = 0;
    while agent.status().blocks_followed < blocks.len() as u64 && steps < 10_000 {
        steps += 1;
        let Some(request) = agent.poll_request(0, net.now_ms) else { break };
        let is_follow = matches!(request, Request::LightBlocks { .. });
        let response = net.serve(0, request).expect("no submissions yet");
        let t = Instant::now();
        agent.on_response(0, response, net.now_ms, &mut local);
        if is_follow {
            follow_time += t.elapsed();
        }
    }
    let followed = agent.status().blocks_followed;
    assert_eq!(followed, blocks.len() as u64);
    let held = live_bytes();
    drop(agent);
    let agent_heap_following = held - live_bytes();

    let per = |d: Duration, n: u64| d.as_nanos() as f64 / n.max(1) as f64 / 1_000.0;
    let light_us = per(light_time, followed);
    let agent_us = per(follow_time, followed);
    println!("following {followed} blocks (4 validators):");
    println!("  light client alone: {light_us:.1} us/block, heap {light_heap} B (baseline)");
    println!(
        "  agent:              {agent_us:.1} us/block ({:.2}x), heap {agent_heap_following} B ({:.2}x)",
        agent_us / light_us,
        agent_heap_following as f64 / light_heap.max(1) as f64
    );

    // Proofs: the agent registers nothing (farm registered it), reports uptime and proves
    // every shard each period, 100 ms blocks.
    net.block_ms = 100;
    let mut agent = Agent::new(config(&net, &node, Some(farm), capacity()));
    // Catch up first (measured above), then count a few whole periods.
    let period = net.chain.period();
    net.run_to(&mut agent, &mut local, period + 1, 0);
    net.agent_time = Duration::ZERO;
    let start_height = net.chain.state.meta().height;
    let proofs_before = agent.status().proofs_ok;
    net.run_to(&mut agent, &mut local, period + 5, 0);
    let status = agent.status();
    let proofs = status.proofs_ok - proofs_before;
    let heap_before_drop = live_bytes();
    let blocks_run = net.chain.state.meta().height - start_height;
    drop(agent);
    let agent_heap_contracts = heap_before_drop - live_bytes();
    let owner = alice.public();
    let t = Instant::now();
    for (i, key) in shards.iter().enumerate() {
        std::hint::black_box(local.store.prove(&owner, key, i as u64 * 7919).expect("prove"));
    }
    let store_us = per(t.elapsed(), shards.len() as u64);
    // A proven contract read alone (the agent reads a contract again after each proof).
    let root = net.chain.state.root();
    let proof = net.chain.state.prove(&ledger::StateKey::Contract(0)).expect("prove");
    let t = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(ledger::state::verify_contract(&root, 0, &proof).expect("verify"));
    }
    let read_us = per(t.elapsed(), 100);
    let proof_bytes = proof.proof.len() + proof.record.as_ref().map_or(0, Vec::len);
    let agent_per_proof_us = per(net.agent_time, proofs);
    println!(
        "proofs: {proofs} committed over {blocks_run} blocks ({:.2} per block: every shard each period; at most one transaction per block, one in flight), {} shards of {} KiB in {CONTRACTS} contracts",
        proofs as f64 / blocks_run.max(1) as f64,
        shards.len(),
        SHARD_BYTES >> 10
    );
    println!("  store's proof alone: {store_us:.1} us/proof (baseline)");
    println!("  one proven contract read alone: {read_us:.1} us ({proof_bytes} B of proof and record)");
    println!(
        "  agent, all its work: {agent_per_proof_us:.1} us/proof ({:.2}x), i.e. {:.0} proofs/s of CPU; of it following {:.1} us/proof ({:.2} blocks/proof at the rate above)",
        agent_per_proof_us / store_us,
        1e6 / agent_per_proof_us,
        agent_us * blocks_run as f64 / proofs.max(1) as f64,
        blocks_run as f64 / proofs.max(1) as f64
    );
    println!("  agent heap following {} contracts: {agent_heap_contracts} B", status.contracts_followed);
    assert!(proofs > 0 && status.contracts_followed == CONTRACTS, "{status:?} timeouts {}", net.submit_timeouts);
}
