//! The agent against an in-process chain: registration, uptime, proofs, usage, contracts,
//! billing, restarts, and validators that lie.

mod common;

use common::*;
use ledger::state::{BillingEvent, MarkReason};
use ledger::{Keypair, LightError, Resources, TxKind, Usage};
use nodeledger::{Agent, ContractView, Distrust, Event, TxPurpose};

struct World {
    net: Net,
    alice: Keypair,
    farmer: Keypair,
    node: Keypair,
    farm: u64,
    p0: u64,
}

fn world_with(behaviours: Vec<Behaviour>) -> World {
    let (alice, farmer, node) = (key(1), key(3), key(10));
    let chain = Chain::new(behaviours.len() as u8, &[(alice.public(), 1_000_000)]);
    let mut net = Net::new(chain, behaviours);
    let farm = create_farm(&mut net, &farmer);
    let p0 = net.chain.period();
    World { net, alice, farmer, node, farm, p0 }
}

fn world() -> World {
    world_with(vec![Behaviour::Honest; 4])
}

fn new_agent(w: &World) -> Agent {
    Agent::new(config(&w.net, &w.node, Some(w.farm), capacity()))
}

fn is_uptime(kind: &TxKind) -> bool {
    matches!(kind, TxKind::UptimeReport { .. })
}

fn is_proof(kind: &TxKind) -> bool {
    matches!(kind, TxKind::StorageProof { .. })
}

fn count<T>(events: &[Event], pred: impl Fn(&Event) -> Option<T>) -> usize {
    events.iter().filter_map(pred).count()
}

#[test]
fn registers_under_its_farm_and_reports_uptime_once_per_period() {
    let mut w = world();
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    let p0 = w.p0;
    w.net.run_to(&mut agent, &mut local, p0 + 4, 5_000);
    let record = w.net.chain.state.node(&w.node.public()).expect("registered").clone();
    assert_eq!((record.farm, record.capacity.clone()), (w.farm, capacity()));
    assert_eq!(record.registered_period, p0);
    // Judged from p0+1 on: up in every period, never marked.
    assert_eq!((record.periods_good, record.periods_marked), (3, 0), "{record:?}");
    let uptime = w.net.chain.count_by_period(&w.node.public(), is_uptime);
    assert_eq!(uptime.into_iter().collect::<Vec<_>>(), vec![(p0, 1), (p0 + 1, 1), (p0 + 2, 1), (p0 + 3, 1), (p0 + 4, 1)]);
    let registers = w.net.chain.count_by_period(&w.node.public(), |k| matches!(k, TxKind::RegisterNode { .. }));
    assert_eq!(registers.values().sum::<usize>(), 1);
    let events = agent.take_events();
    assert_eq!(count(&events, |e| matches!(e, Event::Registered { .. }).then_some(())), 1);
    assert_eq!(count(&events, |e| matches!(e, Event::UptimeReported { .. }).then_some(())), 5);
    let heights: Vec<u64> = events.iter().filter_map(|e| if let Event::Height { period, .. } = e { Some(*period) } else { None }).collect();
    assert_eq!(heights, vec![p0, p0 + 1, p0 + 2, p0 + 3, p0 + 4], "one height line per period");
    let status = agent.status();
    assert!(status.registered);
    assert_eq!((status.farm, status.last_uptime_period, status.lies, status.bad_responses), (Some(w.farm), Some(p0 + 4), 0, 0));
    assert!(w.net.chain.state.meta().height - status.height <= 2, "follows within a second");
}

#[test]
fn same_capacity_registers_nothing_and_a_changed_one_is_updated() {
    let mut w = world();
    let mut local = FakeLocal::new(w.node.clone());
    let mut first = new_agent(&w);
    w.net.run_to(&mut first, &mut local, w.p0, 5_000);
    assert!(w.net.chain.state.node(&w.node.public()).is_some());
    // Reboot with the same capacity: nothing to register.
    let mut same = new_agent(&w);
    w.net.run_to(&mut same, &mut local, w.p0 + 1, 5_000);
    let events = same.take_events();
    assert!(events.contains(&Event::AlreadyRegistered { farm: w.farm }), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::Registered { .. } | Event::CapacityUpdated { .. })));
    // Reboot with another disk: the capacity is updated, once.
    let mut bigger = capacity();
    bigger.disks_bytes.push(1 << 40);
    let mut changed = Agent::new(config(&w.net, &w.node, Some(w.farm), bigger.clone()));
    w.net.run_to(&mut changed, &mut local, w.p0 + 3, 1_000);
    assert_eq!(w.net.chain.state.node(&w.node.public()).expect("node").capacity, bigger);
    let updates = w.net.chain.count_by_period(&w.node.public(), |k| matches!(k, TxKind::UpdateCapacity { .. }));
    assert_eq!(updates.values().sum::<usize>(), 1);
    let registers = w.net.chain.count_by_period(&w.node.public(), |k| matches!(k, TxKind::RegisterNode { .. }));
    assert_eq!(registers.values().sum::<usize>(), 1);
    assert!(changed.take_events().iter().any(|e| matches!(e, Event::CapacityUpdated { farm, .. } if *farm == w.farm)));
    // And without a farm, an unregistered node says so and sends nothing.
    let stranger = key(77);
    let mut lone = Agent::new(config(&w.net, &stranger, None, capacity()));
    let mut lone_local = FakeLocal::new(stranger.clone());
    let until = w.net.now_ms + 3_000;
    w.net.run(&mut lone, &mut lone_local, until);
    assert!(lone.take_events().contains(&Event::NoFarm));
    assert_eq!(w.net.chain.state.account(&stranger.public()).nonce, 0);
}

/// A registered node with a storage contract of `shards` shards of Alice's on it, created
/// in period `p0`; returns (agent, local, contract id, shard bytes).
fn with_storage(w: &mut World, shards: usize, price: u64) -> (Agent, FakeLocal, u64, Vec<Vec<u8>>) {
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(w);
    w.net.run_to(&mut agent, &mut local, w.p0, 3_000);
    let bytes: Vec<Vec<u8>> = (0..shards).map(|i| shard_bytes(i as u64 + 1, 10_000 + i * 3_000)).collect();
    let placements = bytes.iter().map(|b| local.put(&w.alice.public(), b)).collect();
    let id = created(w.net.run_now(&w.alice, TxKind::CreateStorageContract { shards: placements, price_per_hour: price }));
    (agent, local, id, bytes)
}

fn charged_to(events: &[BillingEvent], contract: u64) -> u64 {
    events
        .iter()
        .map(|e| match e {
            BillingEvent::Charged { contract: c, amount, .. } if *c == contract => *amount,
            _ => 0,
        })
        .sum()
}

#[test]
fn proves_every_shard_each_period_and_the_farm_earns_exactly_the_bill() {
    let mut w = world();
    let (mut agent, mut local, id, _) = with_storage(&mut w, 3, 300);
    let p0 = w.p0;
    assert_eq!(agent.storage_quota(&w.alice.public()), 0, "not read yet");
    w.net.run_to(&mut agent, &mut local, p0 + 4, 5_000);
    // Every shard proven in every period billed, exactly once (none in the creation period).
    let proofs = w.net.chain.count_by_period(&w.node.public(), is_proof);
    assert_eq!(proofs.get(&p0), None);
    for p in p0 + 1..=p0 + 4 {
        assert_eq!(proofs.get(&p), Some(&3), "period {p}: {proofs:?}");
    }
    assert!(stored_shards(&w.net, id).iter().all(|s| s.last_proven_period == Some(p0 + 4)));
    // Billed p0+1..=p0+3 (created in p0): all of it to the farm.
    let billed = charged_to(&w.net.chain.billing, id);
    assert_eq!(billed, 3 * 300);
    let farm = w.net.chain.state.farm(w.farm).expect("farm");
    assert_eq!(farm.earned, billed);
    assert_eq!(w.net.chain.state.account(&w.farmer.public()).balance, billed);
    assert_eq!(w.net.chain.state.account(&w.alice.public()).balance, 1_000_000 - billed);
    let quota: u64 = stored_shards(&w.net, id).iter().map(|s| s.placement.len_bytes).sum();
    assert_eq!(agent.storage_quota(&w.alice.public()), quota);
    assert_eq!(agent.storage_quota(&w.farmer.public()), 0);
    assert_eq!(agent.workload_contract(id), ContractView::NotThisNode, "a storage contract permits no deploy");
    let status = agent.status();
    assert_eq!((status.proofs_ok, status.proofs_failed, status.contracts_followed), (12, 0, 1));
    assert!(agent.take_events().contains(&Event::ProofOk { contract: id, shard: 2, period: p0 + 3 }));
}

#[test]
fn a_lost_or_corrupt_shard_fails_visibly_and_the_node_is_not_paid() {
    let mut w = world();
    let (mut agent, mut local, id, bytes) = with_storage(&mut w, 3, 300);
    let p0 = w.p0;
    w.net.run_to(&mut agent, &mut local, p0 + 2, 6_000);
    let earned = w.net.chain.state.farm(w.farm).expect("farm").earned;
    assert_eq!(earned, 300);
    agent.take_events();
    // Lose shard 1 late in p0+2 (proven already), corrupt shard 2 on disk late in p0+3.
    let key = *blake3::hash(&bytes[1]).as_bytes();
    local.store.delete(&w.alice.public(), &key).expect("delete");
    w.net.run_to(&mut agent, &mut local, p0 + 3, 6_000);
    local.corrupt(&bytes[2]);
    w.net.run_to(&mut agent, &mut local, p0 + 5, 6_000);
    let events = agent.take_events();
    let failed: Vec<(u32, u64)> = events
        .iter()
        .filter_map(|e| if let Event::ProofFailed { shard, period, .. } = e { Some((*shard, *period)) } else { None })
        .collect();
    // Shard 1 already proven in p0+2 before it was lost; fails from p0+3 on. Shard 2 from p0+4.
    assert_eq!(failed, vec![(1, p0 + 3), (1, p0 + 4), (2, p0 + 4), (1, p0 + 5), (2, p0 + 5)], "{events:?}");
    let node = w.net.chain.state.node(&w.node.public()).expect("node");
    assert_eq!(node.last_mark, Some((p0 + 4, MarkReason::FailedProof)));
    assert_eq!(node.periods_marked, 2, "p0+3 and p0+4");
    // p0+2 paid (all proven before the loss); p0+3 and p0+4 not.
    assert_eq!(w.net.chain.state.farm(w.farm).expect("farm").earned, earned + 300, "no pay for marked periods");
    // Shard 0 still proven each period.
    assert_eq!(stored_shards(&w.net, id)[0].last_proven_period, Some(p0 + 5));
    assert!(agent.status().proofs_failed >= 5);
}

#[test]
fn usage_is_reported_per_period_and_an_ended_contract_stops_its_workload() {
    let mut w = world();
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    let p0 = w.p0;
    w.net.run_to(&mut agent, &mut local, p0, 3_000);
    let resources = Resources { cores: 1, memory_bytes: 1 << 30, disk_bytes: 1 << 30 };
    let kind = TxKind::CreateWorkloadContract { node: w.node.public(), resources, price_per_hour: 50 };
    let id = created(w.net.run_now(&w.alice, kind));
    assert_eq!(agent.workload_contract(id), ContractView::Unknown);
    local.usage.insert(id, Usage { cpu_ms: 5, memory_peak_bytes: 1 << 20, disk_bytes: 7, net_rx_bytes: 1, net_tx_bytes: 2 });
    w.net.run_to(&mut agent, &mut local, p0 + 3, 3_000);
    assert_eq!(agent.workload_contract(id), ContractView::Active { owner: w.alice.public(), resources });
    let reported: Vec<u64> = w
        .net
        .chain
        .committed
        .iter()
        .filter_map(|(_, t)| if let TxKind::UsageReport { contract, period, .. } = &t.tx.kind { (*contract == id).then_some(*period) } else { None })
        .collect();
    assert_eq!(reported, vec![p0, p0 + 1, p0 + 2], "each ended period once");
    match &w.net.chain.state.contract(id).expect("contract").terms {
        ledger::state::ContractTerms::Workload { usage_total, last_usage_period, .. } => {
            assert_eq!((usage_total.cpu_ms, *last_usage_period), (15, Some(p0 + 2)));
        }
        other => panic!("{other:?}"),
    }
    // Alice cancels: within a few blocks the node stops the workload.
    w.net.run_now(&w.alice, TxKind::CancelWorkloadContract { contract: id }).expect("cancel");
    let until = w.net.now_ms + 3_000;
    w.net.run(&mut agent, &mut local, until);
    assert_eq!(local.ended, vec![id]);
    assert_eq!(agent.workload_contract(id), ContractView::Ended);
    assert!(agent.take_events().contains(&Event::ContractEnded { contract: id }));
    // Contracts of other nodes, or none at all, as asked by a deploy.
    let other = key(11);
    let kind = TxKind::RegisterNode { node: other.public(), farm: w.farm, capacity: capacity() };
    w.net.run_now(&w.farmer, kind).expect("register other");
    let kind = TxKind::CreateWorkloadContract { node: other.public(), resources, price_per_hour: 1 };
    let elsewhere = created(w.net.run_now(&w.alice, kind));
    agent.want_contract(elsewhere);
    agent.want_contract(9_999);
    let until = w.net.now_ms + 2_000;
    w.net.run(&mut agent, &mut local, until);
    assert_eq!(agent.workload_contract(elsewhere), ContractView::NotThisNode);
    assert_eq!(agent.workload_contract(9_999), ContractView::Unknown);
    assert_eq!(local.ended, vec![id], "once");
}

#[test]
fn an_unpaid_contract_ends_and_stops_its_workload() {
    let mut w = world();
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    w.net.run_to(&mut agent, &mut local, w.p0, 3_000);
    let poor = key(5);
    w.net.run_now(&w.alice, TxKind::Transfer { to: poor.public(), amount: 150 }).expect("fund");
    let resources = Resources { cores: 1, memory_bytes: 1 << 20, disk_bytes: 0 };
    let kind = TxKind::CreateWorkloadContract { node: w.node.public(), resources, price_per_hour: 100 };
    let id = created(w.net.run_now(&poor, kind));
    w.net.run_to(&mut agent, &mut local, w.p0 + 3, 3_000);
    assert_eq!(local.ended, vec![id], "paid p0+1, could not pay p0+2");
    assert_eq!(agent.workload_contract(id), ContractView::Ended);
}

#[test]
fn a_restart_mid_period_duplicates_and_loses_nothing() {
    let mut w = world();
    let (mut first, mut local, storage, _) = with_storage(&mut w, 2, 200);
    let p0 = w.p0;
    let resources = Resources { cores: 1, memory_bytes: 1 << 20, disk_bytes: 0 };
    let kind = TxKind::CreateWorkloadContract { node: w.node.public(), resources, price_per_hour: 10 };
    let workload = created(w.net.run_now(&w.alice, kind));
    local.usage.insert(workload, Usage { cpu_ms: 1, ..Usage::default() });
    w.net.run_to(&mut first, &mut local, p0 + 2, 4_321);
    // Down with a transaction in flight; the new agent starts from the genesis and the
    // same chain (a reboot takes longer than a block: the transaction has landed).
    loop {
        let until = w.net.now_ms + STEP_MS;
        w.net.run(&mut first, &mut local, until);
        if w.net.waiting_validator().is_some() {
            break;
        }
    }
    drop(first);
    w.net.reboot(1_500);
    let mut second = new_agent(&w);
    w.net.run_to(&mut second, &mut local, p0 + 5, 5_000);
    let uptime = w.net.chain.count_by_period(&w.node.public(), is_uptime);
    let proofs = w.net.chain.count_by_period(&w.node.public(), is_proof);
    for p in p0..=p0 + 5 {
        assert_eq!(uptime.get(&p), Some(&1), "uptime in {p}: {uptime:?}");
        let want = if p == p0 { None } else { Some(&2) };
        assert_eq!(proofs.get(&p), want, "proofs in {p}: {proofs:?}");
    }
    let reported: Vec<u64> = w
        .net
        .chain
        .committed
        .iter()
        .filter_map(|(_, t)| if let TxKind::UsageReport { period, .. } = &t.tx.kind { Some(*period) } else { None })
        .collect();
    assert_eq!(reported, vec![p0, p0 + 1, p0 + 2, p0 + 3, p0 + 4]);
    let node = w.net.chain.state.node(&w.node.public()).expect("node");
    assert_eq!((node.periods_marked, node.periods_good), (0, 4));
    let events = second.take_events();
    assert!(events.contains(&Event::AlreadyRegistered { farm: w.farm }));
    let refused = count(&events, |e| matches!(e, Event::TxRefused { .. }).then_some(()));
    assert_eq!(refused, 0, "{events:?}");
    assert_eq!(charged_to(&w.net.chain.billing, storage), 4 * 200);
}

#[test]
fn a_lost_submission_is_resubmitted_only_if_the_nonce_did_not_move() {
    let mut w = world();
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    // The registration is in the mempool when its validator's connection drops: it lands.
    loop {
        let until = w.net.now_ms + STEP_MS;
        w.net.run(&mut agent, &mut local, until);
        if w.net.waiting_validator().is_some() {
            break;
        }
    }
    w.net.disconnect_all(&mut agent, false);
    w.net.run_to(&mut agent, &mut local, w.p0, 6_000);
    // The first uptime report is lost with its connection (never reaches a block): resent.
    loop {
        let until = w.net.now_ms + STEP_MS;
        w.net.run(&mut agent, &mut local, until);
        if w.net.waiting_validator().is_some() {
            break;
        }
    }
    w.net.disconnect_all(&mut agent, true);
    w.net.run_to(&mut agent, &mut local, w.p0 + 2, 5_000);
    let registers = w.net.chain.count_by_period(&w.node.public(), |k| matches!(k, TxKind::RegisterNode { .. }));
    assert_eq!(registers.values().sum::<usize>(), 1);
    let uptime = w.net.chain.count_by_period(&w.node.public(), is_uptime);
    assert_eq!(uptime.into_iter().collect::<Vec<_>>(), vec![(w.p0, 1), (w.p0 + 1, 1), (w.p0 + 2, 1)]);
    assert_eq!(agent.status().txs_refused, 0);
}

#[test]
fn a_block_signed_by_one_validator_only_is_refused() {
    let mut w = world_with(vec![Behaviour::OneSigner, Behaviour::Honest, Behaviour::Honest, Behaviour::Honest]);
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    w.net.run_to(&mut agent, &mut local, w.p0 + 2, 5_000);
    let events = agent.take_events();
    assert!(
        events.iter().any(|e| matches!(e, Event::ValidatorDistrusted { validator: 0, why: Distrust::BadBlock(LightError::NoQuorum { .. }), .. })),
        "{events:?}"
    );
    // It followed the real chain through the others, and did its work.
    let status = agent.status();
    assert!(w.net.chain.state.meta().height - status.height <= 2, "follows within a second");
    assert!(status.lies >= 1 && status.registered);
    assert!(status.validators_distrusted <= 1);
    assert_eq!(status.last_uptime_period, Some(w.p0 + 2));
    // Alone with liars, it accepts nothing.
    let mut w = world_with(vec![Behaviour::OneSigner, Behaviour::ForgedBlock]);
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    w.net.run_to(&mut agent, &mut local, w.p0 + 1, 1_000);
    let status = agent.status();
    assert_eq!((status.height, status.registered), (0, false));
    assert!(w.net.chain.state.node(&w.node.public()).is_none());
    let events = agent.take_events();
    assert!(events.iter().any(|e| matches!(e, Event::ValidatorDistrusted { validator: 1, why: Distrust::BadBlock(LightError::CommitMismatch), .. })));
}

#[test]
fn a_validator_serving_bad_proofs_is_left_for_the_others() {
    let mut w = world_with(vec![Behaviour::BadProof, Behaviour::Honest, Behaviour::Honest]);
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    let start = w.net.now_ms;
    w.net.run_to(&mut agent, &mut local, w.p0 + 3, 5_000);
    let elapsed_ms = w.net.now_ms - start;
    let events = agent.take_events();
    let lies = count(&events, |e| matches!(e, Event::ValidatorDistrusted { validator: 0, why: Distrust::BadProof(_), .. }).then_some(()));
    assert!(lies >= 1, "{events:?}");
    // Back-off doubles: 5 s, 10 s, 20 s ... so few lies over the run.
    assert!(lies <= 4, "{lies} lies in {elapsed_ms} ms");
    let status = agent.status();
    assert_eq!(status.last_uptime_period, Some(w.p0 + 3));
    assert!(status.registered);
    assert!(w.net.served[0] < w.net.served[1], "served {:?}", w.net.served);
}

#[test]
fn a_wrong_genesis_and_garbage_answers_are_counted_not_fatal() {
    let mut w = world_with(vec![Behaviour::WrongGenesis, Behaviour::Garbage, Behaviour::Honest]);
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    w.net.run_to(&mut agent, &mut local, w.p0 + 2, 5_000);
    let events = agent.take_events();
    assert!(events.iter().any(|e| matches!(e, Event::ValidatorDistrusted { validator: 0, why: Distrust::WrongGenesis, .. })));
    let status = agent.status();
    assert!(status.bad_responses + status.lies >= 2, "{status:?}");
    assert_eq!(status.last_uptime_period, Some(w.p0 + 2));
    // An answer nobody asked for, and answers to out-of-range validators.
    agent.on_response(2, ledger::rpc::Response::Committed(5), w.net.now_ms, &mut local);
    agent.on_response(99, ledger::rpc::Response::Committed(5), w.net.now_ms, &mut local);
    agent.on_disconnect(99, w.net.now_ms);
    assert_eq!(agent.poll_request(99, w.net.now_ms), None);
}

#[test]
fn asked_contracts_and_events_are_bounded() {
    let mut w = world();
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    for id in 0..10_000 {
        agent.want_contract(id);
    }
    assert!(agent.status().dropped > 0);
    w.net.run_to(&mut agent, &mut local, w.p0 + 1, 1_000);
    assert_eq!(agent.workload_contract(5), ContractView::Unknown);
    assert!(agent.status().registered, "the flood did not stop the work");
}

#[test]
fn a_false_commit_is_distrusted_and_the_transaction_resent_elsewhere() {
    let mut w = world_with(vec![Behaviour::FalseCommit, Behaviour::Honest, Behaviour::Honest]);
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    w.net.run_to(&mut agent, &mut local, w.p0 + 2, 5_000);
    let events = agent.take_events();
    assert!(events.iter().any(|e| matches!(e, Event::ValidatorDistrusted { validator: 0, why: Distrust::OutOfBounds, .. })));
    let uptime = w.net.chain.count_by_period(&w.node.public(), is_uptime);
    assert_eq!(uptime.into_iter().collect::<Vec<_>>(), vec![(w.p0, 1), (w.p0 + 1, 1), (w.p0 + 2, 1)]);
    assert!(agent.status().registered);
}

#[test]
fn a_listing_flood_is_bounded_and_changes_nothing() {
    let mut w = world_with(vec![Behaviour::ListingFlood, Behaviour::Honest]);
    let (mut agent, mut local, id, _) = with_storage(&mut w, 1, 10);
    w.net.run_to(&mut agent, &mut local, w.p0 + 3, 5_000);
    let status = agent.status();
    assert!(status.dropped > 0, "{status:?}");
    let events = agent.take_events();
    assert_eq!(status.contracts_followed, 1, "made-up ids read as absent are not followed");
    assert_eq!(status.last_uptime_period, Some(w.p0 + 3));
    assert_eq!(stored_shards(&w.net, id)[0].last_proven_period, Some(w.p0 + 3));
    assert_eq!(agent.workload_contract(1_000), ContractView::Unknown);
    assert!(events.iter().any(|e| matches!(e, Event::ValidatorDistrusted { validator: 0, why: Distrust::BadListing, .. })));
    assert!(w.net.served[0] < w.net.served[1], "left for the other: {:?}", w.net.served);
}

/// Random bytes flipped in the answers' encodings (validators lying at random): never a
/// panic, never a forged block or record acted on; with a few percent of bad answers the
/// work still gets done through what verifies.
#[test]
fn mutated_answers_are_refused_and_the_work_goes_on() {
    for seed in 1..=8u64 {
        let per_mille = if seed % 2 == 0 { 300 } else { 50 };
        let mut w = world();
        let (mut agent, mut local, storage, _) = with_storage(&mut w, 2, 20);
        let resources = Resources { cores: 1, memory_bytes: 1 << 20, disk_bytes: 0 };
        let kind = TxKind::CreateWorkloadContract { node: w.node.public(), resources, price_per_hour: 1 };
        let workload = created(w.net.run_now(&w.alice, kind));
        local.usage.insert(workload, Usage::default());
        w.net.mutate = Some((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, per_mille));
        w.net.run_to(&mut agent, &mut local, w.p0 + 3, 8_000);
        let status = agent.status();
        assert!(w.net.mutated > 0, "seed {seed}: {}", w.net.mutated);
        assert!(status.height <= w.net.chain.state.meta().height);
        assert!(local.ended.is_empty(), "seed {seed}: nothing ended: {:?}", local.ended);
        assert!(matches!(agent.workload_contract(workload), ContractView::Active { .. } | ContractView::Unknown));
        let uptime = w.net.chain.count_by_period(&w.node.public(), is_uptime);
        assert!(uptime.values().all(|n| *n == 1), "seed {seed}: {uptime:?}");
        assert!(status.lies + status.bad_responses > 0);
        if per_mille > 100 {
            continue;
        }
        assert_eq!(agent.workload_contract(workload), ContractView::Active { owner: w.alice.public(), resources });
        assert_eq!(status.last_uptime_period, Some(w.p0 + 3), "seed {seed}: {status:?}");
        assert_eq!(stored_shards(&w.net, storage)[1].last_proven_period, Some(w.p0 + 3), "seed {seed}");
    }
}

#[test]
fn one_request_in_flight_per_validator_and_timeouts_ahead() {
    let w = world();
    let mut agent = new_agent(&w);
    let now = w.net.now_ms;
    assert_eq!(agent.poll_request(0, now), Some(ledger::rpc::Request::Genesis));
    assert_eq!(agent.poll_request(0, now), None, "one in flight");
    assert_eq!(agent.poll_request(1, now), None, "one genesis request at a time");
    assert!(agent.poll_timeout().is_some_and(|t| t > now));
    agent.on_disconnect(0, now);
    assert_eq!(agent.poll_request(1, now), Some(ledger::rpc::Request::Genesis), "another takes over");
}

#[test]
fn a_node_joining_a_long_chain_catches_up_quietly_then_works() {
    let mut w = world();
    // 20 periods of blocks before the node first boots.
    for _ in 0..400 {
        w.net.now_ms += BLOCK_MS;
        w.net.chain.block(Vec::new(), w.net.now_ms);
    }
    w.net.next_block_ms = w.net.now_ms + BLOCK_MS;
    let p = w.net.chain.period();
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    w.net.run_to(&mut agent, &mut local, p + 1, 5_000);
    let events = agent.take_events();
    let heights: Vec<u64> = events.iter().filter_map(|e| if let Event::Height { period, .. } = e { Some(*period) } else { None }).collect();
    assert_eq!(heights, vec![p, p + 1], "no line per period crossed while catching up");
    assert_eq!(agent.status().last_uptime_period, Some(p + 1));
    let uptime = w.net.chain.count_by_period(&w.node.public(), is_uptime);
    assert_eq!(uptime.into_iter().collect::<Vec<_>>(), vec![(p, 1), (p + 1, 1)]);
}

/// Each validator proposes from its own mempool, in turn: a copy to each lets the next
/// block carry the transaction whoever proposes, so a node proves many shards per period
/// (here 12 shards and its uptime in 20 blocks, one transaction in flight).
#[test]
fn a_transaction_lands_in_the_next_block_whoever_proposes() {
    let mut w = world();
    let (mut agent, mut local, id, _) = with_storage(&mut w, 12, 1_200);
    let p0 = w.p0;
    w.net.run_to(&mut agent, &mut local, p0 + 4, 1_000);
    let proofs = w.net.chain.count_by_period(&w.node.public(), is_proof);
    for p in p0 + 1..=p0 + 3 {
        assert_eq!(proofs.get(&p), Some(&12), "period {p}: {proofs:?}");
    }
    assert_eq!(charged_to(&w.net.chain.billing, id), 3 * 1_200);
    assert_eq!(w.net.submit_timeouts, 0);
}

/// Validators that take submissions and never propose them hold the agent's copies until
/// its connection gives up (70 s): it gives up on them after a few blocks, resends through
/// the validator it kept free, and gives them copies only after the others for a while.
#[test]
fn copies_no_block_carries_are_given_up_and_resent() {
    let b = Behaviour::Blackhole;
    let mut w = world_with(vec![b, b, b, Behaviour::Honest]);
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    w.net.run_to(&mut agent, &mut local, w.p0 + 3, 5_000);
    let uptime = w.net.chain.count_by_period(&w.node.public(), is_uptime);
    assert_eq!(uptime.into_iter().collect::<Vec<_>>(), vec![(w.p0, 1), (w.p0 + 1, 1), (w.p0 + 2, 1), (w.p0 + 3, 1)]);
    let node = w.net.chain.state.node(&w.node.public()).expect("registered");
    assert_eq!(node.periods_marked, 0);
    assert!(agent.status().dropped > 0, "stale copies counted");
    assert_eq!(w.net.submit_timeouts, 0, "held for 70 s: not yet");
    // A caller that closes the connections the agent gave up on frees those validators.
    let mut w = world_with(vec![b, b, b, Behaviour::Honest]);
    w.net.close_stale = true;
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    w.net.run_to(&mut agent, &mut local, w.p0 + 3, 5_000);
    assert!(w.net.submit_timeouts >= 3, "closed: {}", w.net.submit_timeouts);
    assert_eq!(agent.status().last_uptime_period, Some(w.p0 + 3));
}

#[test]
fn a_refused_transaction_is_tried_twice_per_period() {
    let mut w = world();
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = Agent::new(config(&w.net, &w.node, Some(99), capacity()));
    w.net.run_to(&mut agent, &mut local, w.p0 + 2, 5_000);
    let events = agent.take_events();
    let refused: Vec<&Event> = events.iter().filter(|e| matches!(e, Event::TxRefused { purpose: TxPurpose::Register, .. })).collect();
    assert_eq!(refused.len(), 6, "two per period: {events:?}");
    assert!(matches!(refused[0], Event::TxRefused { why, .. } if why.contains("UnknownFarm")));
    assert!(!agent.status().registered);
    assert_eq!(w.net.chain.state.account(&w.node.public()).nonce, 0);
}

/// More active contracts on the node than it follows, and events nobody drains: both
/// stay at their bounds, counted.
#[test]
fn followed_contracts_and_undrained_events_are_bounded() {
    let mut w = world();
    let mut local = FakeLocal::new(w.node.clone());
    let mut agent = new_agent(&w);
    w.net.run_to(&mut agent, &mut local, w.p0, 3_000);
    let count = nodeledger::CONTRACTS_FOLLOWED_MAX + 20;
    for _ in 0..count {
        let kind = TxKind::CreateWorkloadContract { node: w.node.public(), resources: Resources::default(), price_per_hour: 0 };
        let id = created(w.net.run_now(&w.alice, kind));
        local.usage.insert(id, Usage::default());
    }
    w.net.run_to(&mut agent, &mut local, w.p0 + 30, 0);
    let status = agent.status();
    assert_eq!(status.contracts_followed, nodeledger::CONTRACTS_FOLLOWED_MAX);
    assert!(status.dropped > 0);
    assert_eq!(status.last_uptime_period, Some(w.p0 + 29), "{status:?}");
    let events = agent.take_events();
    assert_eq!(events.len(), nodeledger::EVENTS_MAX, "kept at the bound");
}
