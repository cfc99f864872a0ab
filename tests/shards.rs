//! The shard service, booted: one node under QEMU and the host's `gridctl` client (as a
//! library) over the overlay. An owner puts a multi-MiB shard (streamed in pipelined
//! pieces), gets it whole and a range across pieces, stats, lists and deletes it; proofs
//! for several challenges verify with `shardstore::verify_proof` against the root the
//! host computed itself; another key gets `NotFound` for everything and deletes nothing
//! but may ask for proofs; a shard beyond `gridos.store.owner_quota_mib` is refused
//! (`NoSpace`, "owner quota"), bytes that do not hash to their key are `Rejected`, and
//! pieces out of order are `BadRequest`; the connection and the node keep serving after
//! every refusal; an upload abandoned halfway gives its buffer back when its connection
//! goes. `Peers` lists the client's own link. A shard acknowledged is durable: the node is killed right after the
//! acknowledgement (no clean shutdown) and the rebooted node returns it.

use std::path::Path;
use std::time::{Duration, Instant};

use control::{ErrorCode, Request, Response};
use gridctl::client::{Client, Options};
use gridctl::key::UserKey;
use gridctl::target::Target;
use gridos_qemu::RunningMachine;
use gridos_tests::free_udp_port;

/// `gridos.store.owner_quota_mib` of the test node.
const QUOTA_MIB: u64 = 24;

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn boot(disk: &Path, port: u16) -> (RunningMachine, Target) {
    let (node, key) = gridos_tests::boot_serving_node(
        disk,
        port,
        &format!("gridos.store.owner_quota_mib={QUOTA_MIB}"),
        Duration::from_secs(900),
    );
    let serial = node.serial();
    assert!(serial.contains(&format!("shards: owner quota {QUOTA_MIB} MiB, node reserve 64 MiB")), "{serial}");
    let target = Target::parse(&format!("{key}@127.0.0.1:{port}")).unwrap_or_else(|e| panic!("{e}"));
    (node, target)
}

fn connect(target: &Target, user: &UserKey, node: &RunningMachine) -> Client {
    let options = Options { timeout: Duration::from_secs(60), ..Options::default() };
    Client::connect(target, user, options).unwrap_or_else(|e| panic!("connect: {e}\n{}", node.serial()))
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn shards_put_get_prove_delete_and_refusals_on_a_booted_node() {
    let dir = gridos_qemu::workspace_root().join("target/test-disks").join(format!("shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let disk = dir.join("node.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(160 << 20)).expect("disk");
    let port = free_udp_port();
    let (node, target) = boot(&disk, port);
    let alice = UserKey::from_seed([0xa1; 32]).expect("key");
    let mallory = UserKey::from_seed([0x3e; 32]).expect("key");
    let mut client = connect(&target, &alice, &node);

    // A 12 MiB shard: twelve pieces, pipelined.
    let shard = bytes(12 << 20, 7);
    let started = Instant::now();
    let meta = client.put_shard(&shard).unwrap_or_else(|e| panic!("put: {e}\n{}", node.serial()));
    let put_s = started.elapsed().as_secs_f64();
    assert_eq!(meta.key, *blake3::hash(&shard).as_bytes());
    assert_eq!((meta.len, meta.merkle_root), (shard.len() as u64, shardstore::merkle_root(&shard)));
    let started = Instant::now();
    let back = client.get_shard(&meta.key, None).unwrap_or_else(|e| panic!("get: {e}\n{}", node.serial()));
    let get_s = started.elapsed().as_secs_f64();
    assert!(back == shard, "the shard came back different");
    println!(
        "shards: put 12 MiB in {put_s:.1} s ({:.2} MB/s), get in {get_s:.1} s ({:.2} MB/s)",
        12.0 * 1.048576 / put_s,
        12.0 * 1.048576 / get_s
    );
    // A range across a piece boundary.
    let range = 3_000_000u64..5_500_000;
    let part = client.get_shard(&meta.key, Some(range.clone())).expect("range");
    assert!(part == shard[range.start as usize..range.end as usize], "the range came back different");
    assert_eq!(client.stat_shard(&meta.key).expect("stat"), meta);
    assert_eq!(client.list_shards().expect("list"), vec![meta]);
    let info = client.store_info().expect("store info");
    assert_eq!((info.shards, info.quota_bytes), (1, QUOTA_MIB << 20), "{info:?}");
    assert_eq!(info.used_bytes, meta.len + control::SHARD_OVERHEAD_BYTES);
    // Proofs, checked against the root computed here (not the node's claim).
    let root = shardstore::merkle_root(&shard);
    for challenge in [0, 1234, 3071, u64::MAX] {
        let reply = client.prove_shard(&alice.public_key(), &meta.key, challenge).expect("prove");
        assert!(reply.verify(&root, meta.len, challenge), "proof for {challenge}");
        assert!(!reply.verify(&root, meta.len, challenge.wrapping_add(1)), "a proof verified for another challenge");
    }
    // Putting it again is acknowledged at once.
    assert_eq!(client.put_shard(&shard).expect("put again"), meta);

    // Another key: not found, cannot delete, lists nothing; may audit with a proof.
    let mut other = connect(&target, &mallory, &node);
    assert!(other.get_shard(&meta.key, None).expect_err("stranger get").is_not_found());
    assert!(other.get_shard(&meta.key, Some(0..10)).expect_err("stranger range").is_not_found());
    assert!(other.stat_shard(&meta.key).expect_err("stranger stat").is_not_found());
    assert!(other.delete_shard(&meta.key).expect_err("stranger delete").is_not_found());
    assert!(other.list_shards().expect("stranger list").is_empty());
    assert!(other.prove_shard(&alice.public_key(), &meta.key, 5).expect("audit").verify(&root, meta.len, 5));
    assert!(other.prove_shard(&mallory.public_key(), &meta.key, 5).expect_err("own namespace").is_not_found());
    assert!(other.prove_shard(&[0; 32], &meta.key, 5).expect_err("node namespace").is_not_found());
    other.close();
    assert_eq!(client.stat_shard(&meta.key).expect("still there"), meta);

    // Beyond the owner's quota: refused at the first piece, nothing kept.
    let big = bytes(13 << 20, 8);
    let e = client.put_shard(&big).expect_err("over quota");
    assert_eq!(e.code(), Some(ErrorCode::NoSpace), "{e}");
    assert!(e.to_string().contains("owner quota"), "{e}");
    // Bytes that do not hash to their key; a piece out of order.
    let r = client.call(&Request::ShardPut { key: [1; 32], total_len: 100, offset: 0, data: vec![0; 100] }).expect("call");
    assert_eq!(code(&r), Some(ErrorCode::Rejected), "{r:?}");
    let r = client.call(&Request::ShardPut { key: [1; 32], total_len: 3 << 20, offset: 1 << 20, data: vec![0; 10] }).expect("call");
    assert_eq!(code(&r), Some(ErrorCode::BadRequest), "{r:?}");
    assert_eq!(client.list_shards().expect("list"), vec![meta]);

    // The overlay nodes the node routes to: at least this client's own link, with its key.
    let peers = client.peers().expect("peers");
    assert!(peers.iter().any(|p| p.direct && p.key.is_some()), "{peers:?}");

    // An upload abandoned after its first piece: the node gives its buffer back when the
    // connection goes (here, reset by the client).
    let mut quitter = connect(&target, &mallory, &node);
    let first = Request::ShardPut { key: [2; 32], total_len: 16 << 20, offset: 0, data: vec![0; 1 << 20] };
    assert_eq!(quitter.call(&first).expect("first piece"), Response::ShardPartial { received: 1 << 20 });
    drop(quitter);
    assert!(
        node.wait_for("16777216 bytes of shard transfers buffered; 0 bytes stay buffered node-wide", Duration::from_secs(60)),
        "{}",
        node.serial()
    );

    client.delete_shard(&meta.key).expect("delete");
    assert!(client.get_shard(&meta.key, None).expect_err("deleted").is_not_found());
    assert!(client.list_shards().expect("list").is_empty());
    assert_eq!(client.store_info().expect("info").shards, 0);

    // Durable before the acknowledgement: kill the node right after one.
    let small = bytes(3 << 20, 9);
    let kept = client.put_shard(&small).expect("put before the kill");
    let serial = node.serial();
    drop(client);
    node.kill();
    assert!(!serial.contains("panicked"), "{serial}");
    let (node, target) = boot(&disk, port);
    let mut client = connect(&target, &alice, &node);
    assert!(client.get_shard(&kept.key, None).expect("after the reboot") == small);
    assert_eq!(client.list_shards().expect("list"), vec![kept]);
    client.delete_shard(&kept.key).expect("delete");
    client.close();
    let serial = node.serial();
    assert!(!serial.contains("panicked"), "{serial}");
    node.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
