//! Where the network's time goes: nanoseconds and counts per stage of the data path
//! (overlay sealing and opening, socket copies, queueing, smoltcp polls), summed by the
//! tasks that run them, for the echo bench's breakdown (`services::echo_client` prints
//! it; `tests/overlay.rs` shows it). Each stage costs two clock reads; nothing is kept
//! per packet.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::executor;

/// A stage of the data path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// `Node::send`: an outgoing IPv6 packet sealed end to end, then for its link, with
    /// the copies and queueing inside the overlay crate.
    OverlaySend,
    /// `Node::handle_datagram`: a datagram opened for its link, then end to end.
    OverlayReceive,
    /// Reading a datagram out of a UDP socket's receive queue (one copy).
    UdpRead,
    /// Handing datagrams to sender sockets (one copy into the socket's send queue).
    UdpWrite,
    /// Taking packets from the overlay interface's device queue.
    TakeOutgoing,
    /// Giving delivered packets to the overlay interface's device queue.
    Deliver,
    /// The rest of one overlay task round (timers, counters, routes, wakers).
    OverlayTaskOther,
    /// smoltcp polling the overlay interface (TCP over the overlay, device tokens).
    SmoltcpOverlay,
    /// smoltcp polling the NICs (UDP/IP/Ethernet, the virtio queues).
    SmoltcpUnderlay,
    /// The rest of one network task round (TCP guard, deadlines).
    NetTaskOther,
    /// virtio-net: taking a received frame and giving its buffer back (part of the
    /// underlay poll's time).
    NicReceive,
    /// virtio-net: queueing a built frame (part of the underlay poll's time).
    NicTransmit,
    /// virtio-net: telling the device about a poll's frames and buffers (kicks; part of
    /// the underlay poll's time).
    NicKick,
    /// virtio-net: the kicks left for when the CPU is idle (executor's idle hook).
    NicKickIdle,
}

const STAGES: usize = 14;
const ALL: [Stage; STAGES] = [
    Stage::OverlaySend,
    Stage::OverlayReceive,
    Stage::UdpRead,
    Stage::UdpWrite,
    Stage::TakeOutgoing,
    Stage::Deliver,
    Stage::OverlayTaskOther,
    Stage::SmoltcpOverlay,
    Stage::SmoltcpUnderlay,
    Stage::NetTaskOther,
    Stage::NicReceive,
    Stage::NicTransmit,
    Stage::NicKick,
    Stage::NicKickIdle,
];

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::OverlaySend => "overlay send (seal e2e+link)",
            Stage::OverlayReceive => "overlay receive (open link+e2e)",
            Stage::UdpRead => "udp socket read",
            Stage::UdpWrite => "udp socket write",
            Stage::TakeOutgoing => "overlay device take",
            Stage::Deliver => "overlay device deliver",
            Stage::OverlayTaskOther => "overlay task other",
            Stage::SmoltcpOverlay => "smoltcp overlay iface",
            Stage::SmoltcpUnderlay => "smoltcp underlay+nic (NIC polls)",
            Stage::NetTaskOther => "net task other",
            Stage::NicReceive => "  of which virtio receive",
            Stage::NicTransmit => "  of which virtio queue",
            Stage::NicKick => "  of which virtio kicks",
            Stage::NicKickIdle => "virtio kicks when idle",
        }
    }
}

struct Counter {
    ns: AtomicU64,
    count: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: Counter = Counter { ns: AtomicU64::new(0), count: AtomicU64::new(0) };
static COUNTERS: [Counter; STAGES] = [ZERO; STAGES];
/// Overlay task rounds and network task rounds (wake-ups).
static OVERLAY_ROUNDS: AtomicU64 = AtomicU64::new(0);
static NET_ROUNDS: AtomicU64 = AtomicU64::new(0);
/// smoltcp `Interface::poll` calls, all interfaces.
static IFACE_POLLS: AtomicU64 = AtomicU64::new(0);

/// Counts one smoltcp `Interface::poll` call.
pub fn iface_poll() {
    IFACE_POLLS.fetch_add(1, Ordering::Relaxed);
}

/// Adds `ns` to `stage`, counting `items` (packets or datagrams; 0 for a round).
pub fn add(stage: Stage, ns: u64, items: u64) {
    let c = &COUNTERS[stage as usize];
    c.ns.fetch_add(ns, Ordering::Relaxed);
    c.count.fetch_add(items, Ordering::Relaxed);
}

/// Counts one overlay task round.
pub fn overlay_round() {
    OVERLAY_ROUNDS.fetch_add(1, Ordering::Relaxed);
}

/// Counts one network task round.
pub fn net_round() {
    NET_ROUNDS.fetch_add(1, Ordering::Relaxed);
}

/// The counters at one moment, with the clock and idle time.
#[derive(Clone, Copy)]
pub struct Snapshot {
    ns: [u64; STAGES],
    count: [u64; STAGES],
    overlay_rounds: u64,
    net_rounds: u64,
    iface_polls: u64,
    at_ns: u64,
    idle_ns: u64,
    /// Frames the NICs received and sent.
    frames: (u64, u64),
    /// Device interrupts taken (virtio INTx, MSI, MSI-X) and kicks sent to virtio NICs
    /// (receive queue, transmit queue).
    interrupts: u64,
    kicks: (u64, u64),
}

/// Reads every counter.
pub fn snapshot() -> Snapshot {
    let mut s = Snapshot {
        ns: [0; STAGES],
        count: [0; STAGES],
        overlay_rounds: OVERLAY_ROUNDS.load(Ordering::Relaxed),
        net_rounds: NET_ROUNDS.load(Ordering::Relaxed),
        iface_polls: IFACE_POLLS.load(Ordering::Relaxed),
        at_ns: executor::now_ns(),
        idle_ns: executor::idle_ns(),
        frames: super::nic_counters().iter().fold((0, 0), |(rx, tx), (_, c, _, _)| (rx + c.rx_frames, tx + c.tx_frames)),
        interrupts: crate::drivers::virtio::INTERRUPTS.load(Ordering::Relaxed)
            + crate::drivers::msi::INTERRUPTS.load(Ordering::Relaxed),
        kicks: super::nic_kicks(),
    };
    for (i, c) in COUNTERS.iter().enumerate() {
        s.ns[i] = c.ns.load(Ordering::Relaxed);
        s.count[i] = c.count.load(Ordering::Relaxed);
    }
    s
}

/// `value / divisor` with one decimal (integers only: no floating point in the kernel).
fn tenths(value: u64, divisor: u64) -> String {
    let t = value.saturating_mul(10) / divisor.max(1);
    format!("{}.{}", t / 10, t % 10)
}

/// The breakdown between `before` and now, for `bytes` carried by the application each
/// way: one line per stage with its share of the time, microseconds per packet (per
/// packet the stage handled; per round for task overheads) and milliseconds per MB.
pub fn report(before: &Snapshot, bytes: u64) -> String {
    let now = snapshot();
    let wall_ns = now.at_ns.saturating_sub(before.at_ns).max(1);
    // Nanoseconds per MB = ns * 1e6 / bytes; printed in ms: ns / (bytes / 1e6) / 1e6.
    let ms_per_mb = |ns: u64| tenths(ns, bytes.max(1));
    let pct = |ns: u64| tenths(ns.saturating_mul(100), wall_ns);
    let mut out = String::new();
    let idle_ns = now.idle_ns.saturating_sub(before.idle_ns);
    let mut accounted_ns = idle_ns;
    let overlay_rounds = now.overlay_rounds.saturating_sub(before.overlay_rounds);
    let net_rounds = now.net_rounds.saturating_sub(before.net_rounds);
    out.push_str(&format!(
        "breakdown: {} ms for {bytes} bytes each way; {overlay_rounds} overlay task rounds, {net_rounds} net task rounds ({} smoltcp polls), \
         {} frames received and {} sent by the NICs ({} device interrupts; virtio kicks: {} receive, {} transmit)\n",
        tenths(wall_ns, 1_000_000),
        now.iface_polls.saturating_sub(before.iface_polls),
        now.frames.0.saturating_sub(before.frames.0),
        now.frames.1.saturating_sub(before.frames.1),
        now.interrupts.saturating_sub(before.interrupts),
        now.kicks.0.saturating_sub(before.kicks.0),
        now.kicks.1.saturating_sub(before.kicks.1),
    ));
    for stage in ALL {
        let i = stage as usize;
        let ns = now.ns[i].saturating_sub(before.ns[i]);
        let count = now.count[i].saturating_sub(before.count[i]);
        if !matches!(stage, Stage::NicReceive | Stage::NicTransmit | Stage::NicKick) {
            accounted_ns += ns;
        }
        let per_round = matches!(stage, Stage::OverlayTaskOther | Stage::SmoltcpOverlay | Stage::SmoltcpUnderlay | Stage::NetTaskOther);
        let (n, unit) = match stage {
            Stage::OverlayTaskOther => (overlay_rounds, "round"),
            Stage::SmoltcpUnderlay => (count, "poll"),
            Stage::NicKick | Stage::NicKickIdle => (count, "kick"),
            _ if per_round => (net_rounds, "round"),
            _ => (count, "packet"),
        };
        if ns == 0 && count == 0 {
            continue;
        }
        out.push_str(&format!(
            "breakdown: {:<32} {:>5}% {:>7} us/{unit} x {n} {:>7} ms/MB\n",
            stage.name(),
            pct(ns),
            tenths(ns, n.saturating_mul(1000)),
            ms_per_mb(ns),
        ));
    }
    let rest_ns = wall_ns.saturating_sub(accounted_ns);
    out.push_str(&format!("breakdown: {:<32} {:>5}% {:>7} ms/MB\n", "idle (waiting for wire/peer)", pct(idle_ns), ms_per_mb(idle_ns)));
    out.push_str(&format!("breakdown: {:<32} {:>5}% {:>7} ms/MB", "other tasks (app, executor)", pct(rest_ns), ms_per_mb(rest_ns)));
    out
}
