//! Node-wide admission of workloads: whether a deploy fits the node and its owner's
//! fair share, decided from a snapshot of what the node holds (sans-IO, no state of its
//! own: the kernel lists its workloads, [`admit`] answers).
//!
//! Resources ([`Resource`]): workload slots, memory (what a running workload may take
//! from the kernel heap: its linear-memory cap plus its logs and stack, see
//! [`memory_charge_bytes`]), storage (the `/data` quota caps) and manifest bytes (the
//! signed manifests the persistent workload table keeps). Each has a node total `T`.
//!
//! **The rule.** A deploy asking `x` of a resource by owner `o` holding `u_o` is
//! admitted when, for every resource,
//! 1. `used + x <= T` (the node honours every cap it granted: the sum of caps never
//!    passes what it has), and
//! 2. `u_o + x <= T / OWNERS_TO_FILL` (an owner's fair share),
//!
//! and its listen ports are not the node's own ([`Policy::reserved_ports`]), not held by
//! a running workload (first come, first served), and the owner's running workloads
//! hold at most [`Policy::ports_per_owner`] ports with them.
//!
//! **Why a fixed share, not `max(share, T / active_owners)`.** Deployed workloads are
//! never evicted to make room, so whatever an early owner is granted stays granted: a
//! share that grows when few owners are present lets the first owner take the whole
//! node and lock out everyone after. A fixed share `T / OWNERS_TO_FILL` means one key
//! can never hold more than that, and a full node serves at least `OWNERS_TO_FILL`
//! distinct owners. What no per-key rule can do: keys are free, so `OWNERS_TO_FILL`
//! fresh keys can still fill a node. Admission makes that cost explicit and keeps the
//! node sound when it happens (every refusal is a clear error; the table keeps room
//! for stop and remove); stopping a Sybil needs deploys paid for on the ledger (the
//! design's contracts), not a local rule.

use alloc::vec::Vec;
use core::fmt;

/// What admission counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Workloads,
    MemoryBytes,
    StorageBytes,
    ManifestBytes,
}

impl Resource {
    pub const ALL: [Resource; 4] = [Resource::Workloads, Resource::MemoryBytes, Resource::StorageBytes, Resource::ManifestBytes];

    fn index(self) -> usize {
        match self {
            Resource::Workloads => 0,
            Resource::MemoryBytes => 1,
            Resource::StorageBytes => 2,
            Resource::ManifestBytes => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Resource::Workloads => "workloads",
            Resource::MemoryBytes => "memory bytes",
            Resource::StorageBytes => "storage bytes",
            Resource::ManifestBytes => "manifest bytes",
        }
    }
}

/// An amount of every [`Resource`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage([u64; 4]);

impl Usage {
    pub const fn new(workloads: u64, memory_bytes: u64, storage_bytes: u64, manifest_bytes: u64) -> Self {
        Usage([workloads, memory_bytes, storage_bytes, manifest_bytes])
    }

    pub fn get(&self, r: Resource) -> u64 {
        self.0[r.index()]
    }

    /// Adds, saturating (admission compares against totals far below `u64::MAX`).
    pub fn add(&mut self, other: &Usage) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.saturating_add(b);
        }
    }
}

/// Minimum number of distinct owners a full node serves: each owner's share of every
/// resource is `total / OWNERS_TO_FILL`.
pub const OWNERS_TO_FILL: u64 = 3;

/// Bytes of kernel heap a running workload costs besides its linear memory: its fiber's
/// stack (1 MiB) and wasm engine state (instance, tables, code), rounded up.
pub const WORKLOAD_OVERHEAD_BYTES: u64 = 2 << 20;

/// What a running workload may take from the kernel heap, by its manifest: its
/// linear-memory cap, its log twice (the workload's log holds at most about twice its
/// cap, `crate::log`), the raw bytes of its output the node keeps for `logs --raw` (at
/// most the cap once: raw bytes are part of what the log charged), the node's kept
/// copy of its lines (`kept_log_bytes`, the kernel's bound) and
/// [`WORKLOAD_OVERHEAD_BYTES`].
pub fn memory_charge_bytes(limits: &crate::Limits, kept_log_bytes: u64) -> u64 {
    limits
        .memory_bytes
        .saturating_add(limits.log_bytes.saturating_mul(3))
        .saturating_add(kept_log_bytes)
        .saturating_add(WORKLOAD_OVERHEAD_BYTES)
}

/// The node's totals and port rules.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Node totals of every resource.
    pub total: Usage,
    /// Ports the node itself uses (control, overlay); never a workload's.
    pub reserved_ports: Vec<u16>,
    /// Listen ports one owner's running workloads may hold together.
    pub ports_per_owner: usize,
}

impl Policy {
    /// One owner's share of `r`.
    pub fn share(&self, r: Resource) -> u64 {
        self.total.get(r) / OWNERS_TO_FILL
    }
}

/// What one workload on the node holds. The kernel lists every workload it keeps
/// (deployed and not removed); `usage` and `ports` count memory and ports only while
/// the workload runs (a finished one gave them back), slots, storage and manifest
/// bytes for as long as it is deployed.
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    pub owner: [u8; 32],
    pub usage: Usage,
    pub ports: &'a [u16],
}

/// A deploy asking to be admitted.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub owner: [u8; 32],
    pub usage: Usage,
    pub ports: &'a [u16],
}

/// Why a deploy does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionError {
    /// The node has granted all it has of `resource`.
    NodeFull { resource: Resource, used: u64, asked: u64, total: u64 },
    /// The owner would pass their share of `resource`.
    OwnerShare { resource: Resource, held: u64, asked: u64, share: u64 },
    /// The port is the node's own.
    ReservedPort(u16),
    /// A running workload listens on the port.
    PortTaken(u16),
    /// The owner's running workloads would hold more ports than allowed.
    OwnerPorts { held: usize, asked: usize, max: usize },
}

impl fmt::Display for AdmissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdmissionError::NodeFull { resource, used, asked, total } => write!(
                f,
                "the node is full: {used} of its {total} {} are granted and the deploy asks {asked}",
                resource.name()
            ),
            AdmissionError::OwnerShare { resource, held, asked, share } => write!(
                f,
                "the owner holds {held} {} and asks {asked}: an owner's share is at most {share} (1/{OWNERS_TO_FILL} of the node)",
                resource.name()
            ),
            AdmissionError::ReservedPort(p) => write!(f, "port {p} is used by the node itself"),
            AdmissionError::PortTaken(p) => write!(f, "port {p} is taken by another running workload"),
            AdmissionError::OwnerPorts { held, asked, max } => {
                write!(f, "the owner's running workloads hold {held} ports and the deploy asks {asked}: at most {max}")
            }
        }
    }
}

/// Decides whether `ask` fits next to `held` (see the module docs for the rule).
pub fn admit<'a>(policy: &Policy, held: impl IntoIterator<Item = Holding<'a>>, ask: &Ask<'_>) -> Result<(), AdmissionError> {
    let mut node = Usage::default();
    let mut owner = Usage::default();
    let mut owner_ports = 0usize;
    for h in held {
        node.add(&h.usage);
        if h.owner == ask.owner {
            owner.add(&h.usage);
            owner_ports = owner_ports.saturating_add(h.ports.len());
        }
        if let Some(&p) = ask.ports.iter().find(|p| h.ports.contains(p)) {
            return Err(AdmissionError::PortTaken(p));
        }
    }
    if let Some(&p) = ask.ports.iter().find(|p| policy.reserved_ports.contains(p)) {
        return Err(AdmissionError::ReservedPort(p));
    }
    for r in Resource::ALL {
        let (used, asked, total) = (node.get(r), ask.usage.get(r), policy.total.get(r));
        if used.saturating_add(asked) > total {
            return Err(AdmissionError::NodeFull { resource: r, used, asked, total });
        }
        let (held, share) = (owner.get(r), policy.share(r));
        if held.saturating_add(asked) > share {
            return Err(AdmissionError::OwnerShare { resource: r, held, asked, share });
        }
    }
    if owner_ports.saturating_add(ask.ports.len()) > policy.ports_per_owner {
        return Err(AdmissionError::OwnerPorts { held: owner_ports, asked: ask.ports.len(), max: policy.ports_per_owner });
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn policy() -> Policy {
        Policy { total: Usage::new(48, 768 << 20, 192 << 20, 288 << 10), reserved_ports: vec![7070, 7443], ports_per_owner: 8 }
    }

    fn key(n: u32) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_le_bytes());
        k
    }

    /// A node's table: (owner, usage, ports) per workload.
    struct Node {
        held: Vec<([u8; 32], Usage, Vec<u16>)>,
    }

    impl Node {
        fn try_deploy(&mut self, p: &Policy, owner: [u8; 32], usage: Usage, ports: &[u16]) -> Result<(), AdmissionError> {
            let held = self.held.iter().map(|(o, u, ports)| Holding { owner: *o, usage: *u, ports });
            admit(p, held, &Ask { owner, usage, ports })?;
            self.held.push((owner, usage, ports.to_vec()));
            Ok(())
        }
        fn total(&self) -> Usage {
            let mut t = Usage::default();
            self.held.iter().for_each(|(_, u, _)| t.add(u));
            t
        }
    }

    #[test]
    fn one_greedy_owner_gets_exactly_their_share() {
        let p = policy();
        let mut node = Node { held: vec![] };
        let one = Usage::new(1, 1 << 20, 0, 100);
        // 48 / 3 = 16 workloads, exactly.
        for _ in 0..16 {
            node.try_deploy(&p, key(1), one, &[]).unwrap();
        }
        assert_eq!(
            node.try_deploy(&p, key(1), one, &[]),
            Err(AdmissionError::OwnerShare { resource: Resource::Workloads, held: 16, asked: 1, share: 16 })
        );
        // Someone else still gets in.
        node.try_deploy(&p, key(2), one, &[]).unwrap();
        // Memory share exact: 256 MiB of 768 MiB, counted with what the owner holds.
        let mut node = Node { held: vec![] };
        node.try_deploy(&p, key(1), Usage::new(1, (256 << 20) - 1, 0, 0), &[]).unwrap();
        node.try_deploy(&p, key(1), Usage::new(1, 1, 0, 0), &[]).unwrap();
        assert_eq!(
            node.try_deploy(&p, key(1), Usage::new(1, 1, 0, 0), &[]),
            Err(AdmissionError::OwnerShare { resource: Resource::MemoryBytes, held: 256 << 20, asked: 1, share: 256 << 20 })
        );
    }

    #[test]
    fn many_keys_fill_the_node_only_to_its_totals_and_only_with_three_owners_or_more() {
        let p = policy();
        let mut node = Node { held: vec![] };
        let big = Usage::new(1, 64 << 20, 16 << 20, 24 << 10);
        let mut refused = 0;
        let mut owners_admitted = std::collections::BTreeSet::new();
        for k in 0..1000 {
            for _ in 0..8 {
                match node.try_deploy(&p, key(k), big, &[]) {
                    Ok(()) => {
                        owners_admitted.insert(k);
                    }
                    Err(AdmissionError::NodeFull { .. } | AdmissionError::OwnerShare { .. }) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        let t = node.total();
        for r in Resource::ALL {
            assert!(t.get(r) <= p.total.get(r), "{r:?}");
        }
        // Memory binds first: 768 MiB / 64 MiB = 12 workloads, 4 per owner (256 MiB).
        assert_eq!(t.get(Resource::MemoryBytes), 768 << 20);
        assert_eq!(node.held.len(), 12);
        assert_eq!(owners_admitted.len(), 3);
        assert!(refused > 0);
        // Full: a fresh key is refused with the node total, not a share.
        let e = node.try_deploy(&p, key(5000), Usage::new(1, 1, 0, 0), &[]).unwrap_err();
        assert_eq!(e, AdmissionError::NodeFull { resource: Resource::MemoryBytes, used: 768 << 20, asked: 1, total: 768 << 20 });
        assert!(e.to_string().contains("the node is full"));
    }

    #[test]
    fn manifest_bytes_and_storage_are_shared_too() {
        let p = policy();
        let mut node = Node { held: vec![] };
        node.try_deploy(&p, key(1), Usage::new(1, 0, 0, 96 << 10), &[]).unwrap();
        assert!(matches!(
            node.try_deploy(&p, key(1), Usage::new(1, 0, 0, 1), &[]),
            Err(AdmissionError::OwnerShare { resource: Resource::ManifestBytes, .. })
        ));
        assert!(matches!(
            node.try_deploy(&p, key(2), Usage::new(1, 0, (64 << 20) + 1, 0), &[]),
            Err(AdmissionError::OwnerShare { resource: Resource::StorageBytes, .. })
        ));
    }

    #[test]
    fn ports_reserved_taken_and_bounded_per_owner() {
        let p = policy();
        let mut node = Node { held: vec![] };
        let one = Usage::new(1, 0, 0, 0);
        assert_eq!(node.try_deploy(&p, key(1), one, &[80, 7070]), Err(AdmissionError::ReservedPort(7070)));
        assert_eq!(node.try_deploy(&p, key(1), one, &[7443]), Err(AdmissionError::ReservedPort(7443)));
        node.try_deploy(&p, key(1), one, &[1, 2, 3, 4]).unwrap();
        assert_eq!(node.try_deploy(&p, key(2), one, &[5, 4]), Err(AdmissionError::PortTaken(4)));
        node.try_deploy(&p, key(1), one, &[5, 6, 7, 8]).unwrap();
        assert_eq!(
            node.try_deploy(&p, key(1), one, &[9]),
            Err(AdmissionError::OwnerPorts { held: 8, asked: 1, max: 8 })
        );
        // Another owner has their own bound.
        node.try_deploy(&p, key(2), one, &[9, 10]).unwrap();
    }

    #[test]
    fn memory_charge_counts_logs_and_overhead_without_overflow() {
        let mut l = crate::Limits { memory_bytes: 16 << 20, log_bytes: 64 << 10, ..Default::default() };
        assert_eq!(memory_charge_bytes(&l, 32 << 10), (16 << 20) + (192 << 10) + (32 << 10) + WORKLOAD_OVERHEAD_BYTES);
        l.memory_bytes = u64::MAX;
        assert_eq!(memory_charge_bytes(&l, 1), u64::MAX);
    }
}
