//! The node's admission policy for workloads: the totals `workloads::admission::admit`
//! checks deploys against, derived from this node's heap and store, and the ports the
//! node keeps for itself. The rule itself (node totals, a fixed fair share per owner,
//! ports first come but bounded per owner) and why it is that rule are in
//! `workloads::admission`; the service ([`super::service`]) lists what the node holds
//! and asks it before every deploy and every restart at boot.
//!
//! Totals:
//! - memory: the heap's ceiling (what it may grow to: all RAM but the kernel image and
//!   the frames kept for DMA and page tables, `mm::heap`) minus a reserve for the
//!   kernel itself (network buffers, the one large control request at a time, the
//!   store's caches): the larger of an eighth of the ceiling and [`KERNEL_RESERVE_MIN_BYTES`]. Workloads' charges are caps (most use
//!   far less), so the reserve is for the kernel's own peaks, not a workload's. A running workload is charged
//!   `workloads::admission::memory_charge_bytes` (memory cap, logs, stack, engine);
//! - storage: half the store's log region (the rest holds modules, bundles, owners'
//!   shards and room for compaction); charged the manifest's `storage_bytes` when the
//!   node persists workloads (without persistence there is no file area);
//! - workload slots [`WORKLOADS_MAX`] and signed-manifest bytes [`MANIFEST_BYTES_MAX`]:
//!   the persistent workload table holds at most 512 KiB, and what admission leaves
//!   free keeps room for file lists and for the commits of stop and remove.

use alloc::vec;
use core::sync::atomic::{AtomicU64, Ordering};

use workloads::admission::{memory_charge_bytes, Policy, Usage};
use workloads::Manifest;

/// Workloads on the node (all owners, deployed and not removed).
pub const WORKLOADS_MAX: u64 = 48;
/// Bytes of signed manifests in the workload table, all owners.
pub const MANIFEST_BYTES_MAX: u64 = 288 << 10;
/// Listen ports one owner's running workloads may hold together.
pub const PORTS_PER_OWNER_MAX: usize = 8;
/// Least heap kept for the kernel itself.
pub const KERNEL_RESERVE_MIN_BYTES: u64 = 32 << 20;

const _: () = assert!(MANIFEST_BYTES_MAX / workloads::admission::OWNERS_TO_FILL >= workloads::manifest::MAX_MANIFEST_BYTES as u64);
const _: () = assert!(MANIFEST_BYTES_MAX < nodestate::workloads::MAX_TABLE_BYTES as u64);

static HEAP_BYTES: AtomicU64 = AtomicU64::new(0);

/// Records the heap's ceiling (called once at boot, when the heap is set up).
pub fn set_heap_bytes(bytes: u64) {
    HEAP_BYTES.store(bytes, Ordering::Relaxed);
}

/// Heap bytes workloads may be granted in all.
pub fn memory_budget_bytes() -> u64 {
    let heap = HEAP_BYTES.load(Ordering::Relaxed);
    heap.saturating_sub((heap / 8).max(KERNEL_RESERVE_MIN_BYTES))
}

/// Store bytes workloads' file areas may be granted in all.
pub fn storage_budget_bytes() -> u64 {
    crate::storage::stat().capacity_bytes / 2
}

/// This node's policy now.
pub fn policy() -> Policy {
    Policy {
        total: Usage::new(WORKLOADS_MAX, memory_budget_bytes(), storage_budget_bytes(), MANIFEST_BYTES_MAX),
        reserved_ports: vec![control::PORT, overlay::filter::DEFAULT_PORT],
        ports_per_owner: PORTS_PER_OWNER_MAX,
    }
}

/// What a workload holds: its slot, manifest bytes and storage while deployed (storage
/// only when the node persists workloads), and its memory charge while `running`.
pub fn usage(manifest: &Manifest, signed_manifest_bytes: usize, running: bool, persisted: bool) -> Usage {
    let memory = if running { memory_charge_bytes(&manifest.limits, super::console_log::kept_log_bytes(&manifest.limits) as u64) } else { 0 };
    let storage = if persisted { manifest.limits.storage_bytes } else { 0 };
    Usage::new(1, memory, storage, signed_manifest_bytes as u64)
}
