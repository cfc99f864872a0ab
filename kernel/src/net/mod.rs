//! The network stack: one smoltcp interface per NIC, one socket set, and the task
//! that polls them when a NIC interrupts, a socket asks, or a timer is due.
//!
//! Addressing per NIC: IPv6 link-local from the MAC (EUI-64) plus SLAAC from
//! router advertisements; IPv4 by DHCP (farm networks) unless the command line
//! gives a static address. Command line (applies to the first NIC, `eth0`):
//! `gridos.ip4=dhcp|none|A.B.C.D/N`, `gridos.gw4=A.B.C.D`, `gridos.ip6=ADDR/N`,
//! `gridos.gw6=ADDR`.
//!
//! After every poll, [`guard`] applies the node's TCP policy: listeners' half-open
//! sockets and the sockets the node closed are dropped by timeouts and bounds, so no
//! peer holds them; every TCP socket gets smoltcp's timeout and keep-alive.

pub mod guard;
pub mod overlay_device;
pub mod socket;
pub mod timing;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address};
use spin::Mutex;

use crate::cmdline::Cmdline;
use crate::drivers::e1000::NicNews;
use crate::drivers::nic::{on_device, NicDevice};
use crate::executor::{self, Event};

/// How a NIC gets its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Mode {
    Dhcp,
    Static(Ipv4Cidr, Option<Ipv4Address>),
    Off,
}

/// Network settings from the command line.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub ipv4: Ipv4Mode,
    pub ipv6: Option<(IpCidr, Option<Ipv6Address>)>,
}

impl NetConfig {
    /// Reads `gridos.ip4`, `gridos.gw4`, `gridos.ip6`, `gridos.gw6`; bad values are
    /// reported and ignored.
    pub fn from_cmdline(cmdline: &Cmdline<'_>) -> NetConfig {
        let gw4 = cmdline.get("gridos.gw4").and_then(|v| parse_or_warn::<Ipv4Address>("gridos.gw4", v));
        let ipv4 = match cmdline.get("gridos.ip4") {
            None | Some("dhcp") => Ipv4Mode::Dhcp,
            Some("none") | Some("off") => Ipv4Mode::Off,
            Some(v) => match parse_or_warn::<Ipv4Cidr>("gridos.ip4", v) {
                Some(cidr) => Ipv4Mode::Static(cidr, gw4),
                None => Ipv4Mode::Dhcp,
            },
        };
        let gw6 = cmdline.get("gridos.gw6").and_then(|v| parse_or_warn::<Ipv6Address>("gridos.gw6", v));
        let ipv6 = cmdline
            .get("gridos.ip6")
            .and_then(|v| parse_or_warn::<IpCidr>("gridos.ip6", v))
            .filter(|c| matches!(c.address(), IpAddress::Ipv6(_)))
            .map(|c| (c, gw6));
        NetConfig { ipv4, ipv6 }
    }
}

fn parse_or_warn<T: core::str::FromStr>(key: &str, value: &str) -> Option<T> {
    let parsed = value.parse().ok();
    if parsed.is_none() {
        log::warn!("{key}={value:?} is not valid; ignored");
    }
    parsed
}

/// Which network a socket lives on. The two have separate socket sets, so a
/// service on one can never be reached through the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The physical NICs (farm network, DHCP).
    Underlay,
    /// The encrypted overlay (addresses in `fd67::/16`).
    Overlay,
}

impl Network {
    /// The network that reaches `addr`.
    pub fn for_address(addr: IpAddress) -> Network {
        match addr {
            IpAddress::Ipv6(a) if a.octets()[..2] == overlay::address::PREFIX => Network::Overlay,
            _ => Network::Underlay,
        }
    }
}

struct OverlayIface {
    iface: Interface,
    device: overlay_device::OverlayDevice,
    sockets: SocketSet<'static>,
}

struct Nic {
    name: String,
    iface: Interface,
    device: NicDevice,
    dhcp: Option<SocketHandle>,
    addresses_seen: usize,
}

/// All interfaces and sockets.
pub struct Stack {
    nics: Vec<Nic>,
    /// The underlay's sockets, polled through eth0 (whose addresses the underlay
    /// services and clients use; DHCP and static configuration apply to it).
    sockets: SocketSet<'static>,
    /// Always empty: the set other NICs are polled with. smoltcp dispatches every
    /// socket of the set it is given on the interface being polled, so a shared set
    /// sent eth0's TCP segments out of eth1 too and broke eth0's connections. The
    /// other NICs answer ARP, neighbour discovery and ping and take SLAAC addresses;
    /// carrying sockets on them needs per-interface socket sets (multi-homing).
    no_sockets: SocketSet<'static>,
    overlay: Option<OverlayIface>,
    /// Sockets closed by their owners, removed once the close handshake is over (or
    /// aborted by the closing policy, see [`guard`]).
    closing: Vec<guard::Closing>,
    /// Every TCP listener's sockets, guarded after each poll.
    backlogs: Vec<guard::Backlog>,
    next_backlog_id: u64,
    guard_log: guard::GuardLog,
    /// An unbound placeholder holding the underlay set's first slot for the overlay's
    /// receiving socket (see [`socket::UdpSocket::bind_first`]).
    first_slot: Option<SocketHandle>,
    /// When the NICs next need a poll though nothing kicked them and none interrupted
    /// (smoltcp timers, polled NICs, health checks). A round woken only for the overlay
    /// interface (a delivered packet, an overlay socket's data) skips the NICs: on the
    /// overlay's data path every packet crosses the network task twice, and polling the
    /// NICs each time doubled their cost (`timing` shows it).
    underlay_next_ns: u64,
}

/// How often a NIC without interrupts is polled.
const POLLED_NIC_NS: u64 = 10_000_000;
/// How often link and transmit health are checked on NICs that report them.
const HEALTH_CHECK_NS: u64 = 1_000_000_000;

/// Most consecutive polls of one interface per wake-up.
const POLL_ROUNDS_MAX: usize = 64;

static STACK: Mutex<Option<Stack>> = Mutex::new(None);
/// Signalled by underlay socket operations so the network task polls the NICs (e.g. to
/// transmit).
pub(crate) static KICK: Event = Event::new();
/// Signalled by overlay socket operations and deliveries so the network task polls the
/// overlay interface (only).
pub(crate) static KICK_OVERLAY: Event = Event::new();

/// Signals the network task that `network`'s sockets have work.
pub(crate) fn kick(network: Network) {
    match network {
        Network::Underlay => KICK.signal(),
        Network::Overlay => KICK_OVERLAY.signal(),
    }
}
/// Signalled when a poll of the overlay interface changed the state of its sockets
/// (data, connections, closes): what workloads parked on sockets wait for.
pub static OVERLAY_SOCKETS_CHANGED: Event = Event::new();

/// Runs `f` on the stack. Never call from an interrupt handler.
pub(crate) fn with_stack<R>(f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
    STACK.lock().as_mut().map(f)
}

fn now() -> Instant {
    Instant::from_micros(executor::now_ns() as i64 / 1000)
}

/// EUI-64 link-local address for a MAC (RFC 4291, appendix A).
pub fn link_local(mac: [u8; 6]) -> Ipv6Address {
    Ipv6Address::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

/// Brings up every NIC and starts the network task. With `ingress_filter_port`,
/// the NICs let in only what the overlay needs (see `overlay::filter`).
pub fn init(nics: Vec<NicDevice>, config: &NetConfig, ingress_filter_port: Option<u16>) {
    let mut sockets = SocketSet::new(Vec::new());
    // smoltcp hands an incoming datagram to the first socket (in slot order) bound to
    // its port; the overlay's receiving socket must be that one (see
    // `socket::UdpSocket::bind_first`), so the first slot is held for it from the start.
    let first_slot = Some(sockets.add(socket::placeholder_udp()));
    let mut up = Vec::new();
    for (i, mut device) in nics.into_iter().enumerate() {
        let name = format!("eth{i}");
        device.set_ingress_filter(ingress_filter_port);
        let mac = device.mac();
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        iface_config.random_seed = crate::entropy::u64();
        iface_config.slaac = true;
        let mut iface = on_device!(&mut device, d => Interface::new(iface_config, d, now()));
        let ll = link_local(mac);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(ll), 64));
        });
        let mut dhcp = None;
        let mut v4 = String::from("off");
        if i == 0 {
            match config.ipv4 {
                Ipv4Mode::Dhcp => {
                    dhcp = Some(sockets.add(dhcpv4::Socket::new()));
                    v4 = "dhcp".into();
                }
                Ipv4Mode::Static(cidr, gw) => {
                    iface.update_ip_addrs(|a| {
                        let _ = a.push(IpCidr::Ipv4(cidr));
                    });
                    if let Some(gw) = gw {
                        let _ = iface.routes_mut().add_default_ipv4_route(gw);
                    }
                    v4 = format!("{cidr} (static)");
                }
                Ipv4Mode::Off => {}
            }
            if let Some((cidr, gw)) = config.ipv6 {
                iface.update_ip_addrs(|a| {
                    let _ = a.push(cidr);
                });
                if let Some(gw) = gw {
                    let _ = iface.routes_mut().add_default_ipv6_route(gw);
                }
            }
        }
        let m = mac;
        log::info!(
            "net {name}: {}, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, ipv6 {}, ipv4 {v4}",
            device.model(), m[0], m[1], m[2], m[3], m[4], m[5],
            iface.ip_addrs().iter().filter(|c| matches!(c.address(), IpAddress::Ipv6(_)))
                .map(|c| format!("{c}")).collect::<Vec<_>>().join(" ")
        );
        let addresses_seen = iface.ip_addrs().len();
        up.push(Nic { name, iface, device, dhcp, addresses_seen });
    }
    if up.is_empty() {
        log::info!("net: no NICs");
        return;
    }
    *STACK.lock() = Some(Stack {
        nics: up,
        sockets,
        no_sockets: SocketSet::new(Vec::new()),
        overlay: None,
        closing: Vec::new(),
        backlogs: Vec::new(),
        next_backlog_id: 0,
        guard_log: guard::GuardLog::new(),
        first_slot,
        underlay_next_ns: 0,
    });
    executor::set_idle_hook(flush_when_idle);
    executor::spawn("net", net_task());
}

impl Stack {
    /// Polls the overlay interface, and the NICs when `kicked` (an underlay socket has
    /// work), when one interrupted or when their timers are due; returns when the stack
    /// next needs polling (ns).
    fn poll(&mut self, kicked: bool) -> Option<u64> {
        let timestamp = now();
        log::trace!("net poll at {timestamp}, virtio interrupts so far {}",
            crate::drivers::virtio::INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed));
        let now_ns = executor::now_ns();
        // An interrupt that only says sent frames completed needs no poll: the next
        // transmit reclaims them.
        let mut interrupted = false;
        for nic in &self.nics {
            if nic.device.event().take() {
                interrupted |= nic.device.rx_pending();
            }
        }
        if kicked || interrupted || now_ns >= self.underlay_next_ns {
            self.underlay_next_ns = self.poll_underlay(timestamp, now_ns).unwrap_or(u64::MAX);
            timing::add(timing::Stage::SmoltcpUnderlay, executor::now_ns().saturating_sub(now_ns), 1);
        }
        let mut next_ns = Some(self.underlay_next_ns).filter(|at| *at != u64::MAX);
        let mut earliest = |at_ns: u64| next_ns = Some(next_ns.map_or(at_ns, |n: u64| n.min(at_ns)));
        let overlay_start_ns = executor::now_ns();
        if let Some(o) = self.overlay.as_mut() {
            let changed = poll_rounds(&mut o.iface, &mut o.device, &mut o.sockets, timestamp);
            timing::add(timing::Stage::SmoltcpOverlay, executor::now_ns().saturating_sub(overlay_start_ns), 0);
            if changed {
                OVERLAY_SOCKETS_CHANGED.signal();
            }
            if o.device.has_outgoing() {
                OVERLAY_OUT.signal();
            }
            if let Some(at) = o.iface.poll_at(timestamp, &o.sockets) {
                earliest(at.total_micros().max(0) as u64 * 1000);
            }
        }
        let guard_start_ns = executor::now_ns();
        let guard_next = self.guard(timestamp);
        timing::add(timing::Stage::NetTaskOther, executor::now_ns().saturating_sub(guard_start_ns), 0);
        if let Some(at_ms) = guard_next {
            let at_ns = at_ms.saturating_mul(1_000_000);
            if at_ns <= now_ns {
                // The policy aborted sockets: their resets go out on every interface now.
                self.underlay_next_ns = 0;
            }
            earliest(at_ns);
        }
        next_ns
    }

    /// Polls every NIC once; returns when they next need polling (ns).
    fn poll_underlay(&mut self, timestamp: Instant, now_ns: u64) -> Option<u64> {
        let mut next: Option<Instant> = None;
        let mut flush_by_ns: Option<u64> = None;
        let mut needs_timer = false;
        for (index, nic) in self.nics.iter_mut().enumerate() {
            // Sockets live on eth0 (see `Stack::no_sockets`); other NICs poll an empty set.
            let sockets = if index == 0 { &mut self.sockets } else { &mut self.no_sockets };
            let _ = nic.device.event().take();
            match nic.device.service(now_ns) {
                None => {}
                Some(NicNews::Link(link)) => {
                    log::info!("net {}: link {}", nic.name, link.as_str());
                    crate::inventory::set_link(&nic.name, link);
                }
                Some(NicNews::OutOfService(why)) => {
                    log::error!("net {} ({}): {why}; taken out of service, the node runs on", nic.name, nic.device.model());
                    crate::inventory::set_link(&nic.name, crate::inventory::Link::Down);
                }
            }
            needs_timer |= nic.device.polled() || nic.device.link() != crate::inventory::Link::NotReported;
            let _ = on_device!(&mut nic.device, d => poll_rounds(&mut nic.iface, d, sockets, timestamp));
            if let Some(at_ns) = nic.device.flush(false) {
                // Sent when the CPU idles, or by the poll at `at_ns` if it never does.
                FLUSH_WHEN_IDLE.store(true, core::sync::atomic::Ordering::Release);
                flush_by_ns = Some(flush_by_ns.map_or(at_ns, |n: u64| n.min(at_ns)));
            }
            if let Some(h) = nic.dhcp {
                handle_dhcp(nic, h, sockets);
            }
            if nic.iface.ip_addrs().len() != nic.addresses_seen {
                nic.addresses_seen = nic.iface.ip_addrs().len();
                let list: Vec<String> = nic.iface.ip_addrs().iter().map(|c| format!("{c}")).collect();
                log::info!("net {}: addresses {}", nic.name, list.join(" "));
            }
            if let Some(at) = nic.iface.poll_at(timestamp, sockets) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        let mut next_ns = next.map(|at| at.total_micros().max(0) as u64 * 1000);
        if let Some(at_ns) = flush_by_ns {
            next_ns = Some(next_ns.map_or(at_ns, |n| n.min(at_ns)));
        }
        if needs_timer {
            // NICs without interrupts are polled, and link and transmit health are
            // checked on every NIC that reports them, at least this often.
            let at_ns = now_ns + if self.nics.iter().any(|n| n.device.polled()) { POLLED_NIC_NS } else { HEALTH_CHECK_NS };
            next_ns = Some(next_ns.map_or(at_ns, |n| n.min(at_ns)));
        }
        next_ns
    }

    /// Applies the TCP policy ([`guard`]) to every backlog and the closing sockets;
    /// returns when it next needs a look (ms on the stack's clock).
    fn guard(&mut self, timestamp: Instant) -> Option<u64> {
        let now_ms = timestamp.total_millis().max(0) as u64;
        let mut next: Option<u64> = None;
        let mut earliest = |at: Option<u64>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |n: u64| n.min(at)));
            }
        };
        for backlog in &mut self.backlogs {
            let set = match backlog.network {
                Network::Underlay => Some(&mut self.sockets),
                Network::Overlay => self.overlay.as_mut().map(|o| &mut o.sockets),
            };
            if let Some(set) = set {
                earliest(guard::guard_backlog(backlog, set, now_ms, &mut self.guard_log));
            }
        }
        let sets = guard::Sets { underlay: &mut self.sockets, overlay: self.overlay.as_mut().map(|o| &mut o.sockets) };
        let (aborted, at) = guard::guard_closing(&mut self.closing, sets, now_ms, &mut self.guard_log);
        earliest(at);
        if aborted {
            // The resets go out at the next poll, now.
            earliest(Some(now_ms));
        }
        next
    }

    /// The socket set of `network`.
    pub(crate) fn sockets(&mut self, network: Network) -> Option<&mut SocketSet<'static>> {
        match network {
            Network::Underlay => Some(&mut self.sockets),
            Network::Overlay => self.overlay.as_mut().map(|o| &mut o.sockets),
        }
    }

    /// The interface (first NIC for the underlay) and socket set of `network`.
    pub(crate) fn parts(&mut self, network: Network) -> Option<(&mut Interface, &mut SocketSet<'static>)> {
        match network {
            Network::Underlay => self.nics.first_mut().map(|n| (&mut n.iface, &mut self.sockets)),
            Network::Overlay => self.overlay.as_mut().map(|o| (&mut o.iface, &mut o.sockets)),
        }
    }

    pub(crate) fn close_later(&mut self, network: Network, handle: SocketHandle) {
        let closed_at_ms = now().total_millis().max(0) as u64;
        self.closing.push(guard::Closing { network, handle, closed_at_ms });
    }

    /// Registers a listener's sockets; returns its id.
    pub(crate) fn add_backlog(&mut self, network: Network, port: u16, handles: Vec<SocketHandle>) -> u64 {
        let id = self.next_backlog_id;
        self.next_backlog_id += 1;
        let slots = handles.into_iter().map(|handle| guard::BacklogSlot { handle, half_open_since_ms: None }).collect();
        self.backlogs.push(guard::Backlog { id, network, port, slots });
        id
    }

    /// Forgets listener `id` and removes its sockets.
    pub(crate) fn remove_backlog(&mut self, id: u64) {
        let Some(i) = self.backlogs.iter().position(|b| b.id == id) else { return };
        let backlog = self.backlogs.swap_remove(i);
        if let Some(set) = self.sockets(backlog.network) {
            for slot in backlog.slots {
                set.remove(slot.handle);
            }
        }
    }

    /// Listener `id`'s sockets and their socket set.
    pub(crate) fn backlog(&mut self, id: u64) -> Option<(&mut guard::Backlog, &mut SocketSet<'static>)> {
        let backlog = self.backlogs.iter_mut().find(|b| b.id == id)?;
        let set = match backlog.network {
            Network::Underlay => &mut self.sockets,
            Network::Overlay => &mut self.overlay.as_mut()?.sockets,
        };
        Some((backlog, set))
    }
}

/// The link-local IPv6 address of the first NIC (where discovery beacons to `ff02::1`
/// leave from): the overlay signs it into its beacons so receivers can bind them to it.
pub fn underlay_link_local() -> Option<Ipv6Address> {
    with_stack(|s| {
        s.nics.first()?.iface.ip_addrs().iter().find_map(|c| match c.address() {
            IpAddress::Ipv6(a) if a.is_unicast_link_local() => Some(a),
            _ => None,
        })
    })
    .flatten()
}

/// Signalled when the overlay interface has packets for the overlay task to send.
pub(crate) static OVERLAY_OUT: Event = Event::new();

/// Adds the overlay interface (medium IP) with `address`; all of `fd67::/16` is
/// reached through it.
pub fn attach_overlay(address: Ipv6Address) -> bool {
    with_stack(|s| {
        let mut device = overlay_device::OverlayDevice::new();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = crate::entropy::u64();
        let mut iface = Interface::new(config, &mut device, now());
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(address), overlay::address::PREFIX_LEN_BITS));
        });
        s.overlay = Some(OverlayIface { iface, device, sockets: SocketSet::new(Vec::new()) });
    })
    .is_some()
}

/// Sends an ARP request for `target` on every NIC whose IPv4 subnet holds it.
///
/// smoltcp rate-limits neighbour discovery with one timer for the whole interface,
/// so a peer that never answers can starve the discovery of every other one; the
/// overlay probes the peers it cannot reach itself, and the replies fill smoltcp's
/// neighbour cache (it learns from any ARP packet aimed at us).
pub fn arp_probe(target: Ipv4Address) {
    use smoltcp::phy::{Device, TxToken};
    use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr};
    with_stack(|s| {
        for nic in &mut s.nics {
            let Some(own) = nic.iface.ipv4_addr() else { continue };
            let in_subnet = nic.iface.ip_addrs().iter().any(|c| match c {
                IpCidr::Ipv4(c) => c.contains_addr(&target),
                _ => false,
            });
            if !in_subnet || own == target {
                continue;
            }
            let mac = EthernetAddress(nic.device.mac());
            let arp = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: mac,
                source_protocol_addr: own,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: target,
            };
            let eth = EthernetRepr { src_addr: mac, dst_addr: EthernetAddress::BROADCAST, ethertype: EthernetProtocol::Arp };
            on_device!(&mut nic.device, d => if let Some(token) = d.transmit(now()) {
                token.consume(eth.buffer_len() + arp.buffer_len(), |buf| {
                    let mut frame = EthernetFrame::new_unchecked(buf);
                    eth.emit(&mut frame);
                    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
                });
            });
            nic.device.flush(true);
        }
    });
}

/// Set when a poll left frames for the NICs to be told of when the CPU is idle.
static FLUSH_WHEN_IDLE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The executor's idle hook: tells the NICs about the frames polls left queued (see
/// `VirtioNic::flush`). The network task holds no lock across a wait, so the stack is free.
fn flush_when_idle() {
    if FLUSH_WHEN_IDLE.swap(false, core::sync::atomic::Ordering::AcqRel) {
        with_stack(|s| {
            for nic in &mut s.nics {
                nic.device.flush(true);
            }
        });
    }
}

/// Hands the overlay interface a packet that arrived for this node.
pub fn overlay_deliver(packet: Vec<u8>) {
    with_stack(|s| {
        if let Some(o) = s.overlay.as_mut() {
            o.device.push_incoming(packet);
        }
    });
    KICK_OVERLAY.signal();
}

/// Takes the packets the overlay interface wants sent.
pub fn overlay_take_outgoing() -> Vec<Vec<u8>> {
    with_stack(|s| s.overlay.as_mut().map(|o| o.device.take_outgoing())).flatten().unwrap_or_default()
}

/// Polls one interface while it has work due now. smoltcp sends at most one segment
/// per socket per poll; the bound lets other tasks have their turn. Returns whether
/// any socket's state changed.
fn poll_rounds(
    iface: &mut Interface,
    device: &mut impl smoltcp::phy::Device,
    sockets: &mut SocketSet<'static>,
    timestamp: Instant,
) -> bool {
    let mut any_change = false;
    for _ in 0..POLL_ROUNDS_MAX {
        timing::iface_poll();
        let changed = iface.poll(timestamp, device, sockets);
        any_change |= changed != smoltcp::iface::PollResult::None;
        let due_now = iface.poll_at(timestamp, sockets).is_some_and(|at| at <= timestamp);
        if changed == smoltcp::iface::PollResult::None && !due_now {
            break;
        }
    }
    any_change
}

fn handle_dhcp(nic: &mut Nic, handle: SocketHandle, sockets: &mut SocketSet<'static>) {
    match sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
        None => {}
        Some(dhcpv4::Event::Configured(config)) => {
            nic.iface.update_ip_addrs(|addrs| {
                addrs.retain(|a| !matches!(a, IpCidr::Ipv4(_)));
                if addrs.push(IpCidr::Ipv4(config.address)).is_err() {
                    log::warn!("net: address table full; dhcp address not added");
                }
            });
            match config.router {
                Some(router) => {
                    let _ = nic.iface.routes_mut().add_default_ipv4_route(router);
                }
                None => {
                    nic.iface.routes_mut().remove_default_ipv4_route();
                }
            }
            log::info!("net {}: dhcp lease {} router {:?}", nic.name, config.address, config.router);
        }
        Some(dhcpv4::Event::Deconfigured) => {
            let had_lease = nic.iface.ipv4_addr().is_some();
            nic.iface.update_ip_addrs(|addrs| addrs.retain(|a| !matches!(a, IpCidr::Ipv4(_))));
            nic.iface.routes_mut().remove_default_ipv4_route();
            if had_lease {
                log::warn!("net {}: dhcp lease lost", nic.name);
            }
        }
    }
}

/// Polls the stack whenever a NIC interrupts, a socket kicks, or smoltcp's timer is due.
async fn net_task() {
    let events: Vec<&'static Event> =
        with_stack(|s| s.nics.iter().map(|n| n.device.event()).collect()).unwrap_or_default();
    loop {
        timing::net_round();
        // Taken before the poll: a kick during it (none can come from another task
        // meanwhile; interrupts signal the NICs' events) is seen by the wait below.
        let kicked = KICK.take();
        let _ = KICK_OVERLAY.take();
        let next_ns = with_stack(|s| s.poll(kicked)).flatten();
        executor::wait_then_yield(next_ns, |waker| {
            let mut ready = false;
            for e in events.iter().chain([&&KICK, &&KICK_OVERLAY]) {
                e.register_waker(waker);
                ready |= e.is_pending();
            }
            ready
        })
        .await;
    }
}

/// Each NIC's name and counters: (name, counters, tx errors, frames filtered).
pub fn nic_counters() -> Vec<(String, crate::drivers::nic::NicCounters, u64, u64)> {
    with_stack(|s| s.nics.iter().map(|n| (n.name.clone(), n.device.counters(), n.device.tx_errors(), n.device.rx_filtered())).collect())
        .unwrap_or_default()
}

/// Kicks sent to the NICs so far (virtio's queue notifications), all NICs: (receive
/// queues, transmit queues).
pub fn nic_kicks() -> (u64, u64) {
    with_stack(|s| s.nics.iter().map(|n| n.device.kicks()).fold((0, 0), |a, k| (a.0 + k.0, a.1 + k.1))).unwrap_or((0, 0))
}

/// Each NIC's name and MAC address.
pub fn nic_macs() -> Vec<(String, [u8; 6])> {
    with_stack(|s| s.nics.iter().map(|n| (n.name.clone(), n.device.mac())).collect()).unwrap_or_default()
}

/// Each NIC's name, MAC address and IP addresses (link-local, DHCP or static, SLAAC).
pub fn nic_addresses() -> Vec<(String, [u8; 6], Vec<IpCidr>)> {
    with_stack(|s| s.nics.iter().map(|n| (n.name.clone(), n.device.mac(), n.iface.ip_addrs().to_vec())).collect())
        .unwrap_or_default()
}

/// Counters of every NIC and the overlay interface, for diagnostics.
pub fn diagnostics() -> String {
    with_stack(|s| {
        let mut out = String::new();
        for nic in &s.nics {
            out.push_str(&format!("{}: {} tx_errors {} rx_filtered {}{}; ", nic.name, nic.device.model(),
                nic.device.tx_errors(), nic.device.rx_filtered(), nic.device.diagnostics()));
        }
        if let Some(o) = &s.overlay {
            out.push_str(&format!("overlay iface: {}; ", o.device.queue_lengths()));
        }
        out.push_str(&format!(
            "tcp guard: {} half-open and {} closing sockets dropped, {} closing now; ",
            s.guard_log.half_open_evictions,
            s.guard_log.closing_evictions,
            s.closing.len()
        ));
        out.push_str(&format!(
            "virtio interrupts {}",
            crate::drivers::virtio::INTERRUPTS.load(core::sync::atomic::Ordering::Relaxed)
        ));
        out
    })
    .unwrap_or_default()
}
