//! Node configuration from the kernel command line: what a farmer set once in the
//! image (`gridos-image`, see ../image/README.md) and the node reports at boot.
//!
//! Words (all optional):
//! - `gridos.role=full|compute|storage` (default `full`: storage and compute)
//! - `gridos.farm=N` farm id, a decimal number (default: none)
//! - network, the words the network stack reads (kernel/src/net): `gridos.ip4=dhcp|none|A.B.C.D/P`
//!   (default `dhcp`), `gridos.gw4=A.B.C.D`, `gridos.ip6=X::Y/P` (besides SLAAC), `gridos.gw6=X::Y`
//! - `gridos.disks=all|none|NAME,NAME,...` (default `all`; a NAME is a disk's name as
//!   `disks` gives it (`vda`, `nvme0n1`, `nvme0n2`, `sda`), an NVMe controller's
//!   (`nvme0`, naming all its namespaces), either
//!   with `/dev/`, or a serial number)
//! - `gridos.peers=HOST:PORT,...` validator/peer addresses, HOST an IPv4 address,
//!   `[IPv6]` or a DNS name (default: none)
//! - `gridos.compilers=HEX64,...` the ed25519 public keys of the compilers whose attested
//!   native code the node runs (default: none, so every module runs in the interpreter);
//!   read with [`trusted_compilers`]
//! - `gridos.farmer=HEX64` the ed25519 public key of the node's farmer: the control
//!   protocol's `NodeStatus` shows that key everything and `NodeLogs` only to it (default:
//!   none, so nobody reads the kernel log over the network); read with [`farmer`]
//!
//! Bad values never stop the boot: each is reported with a warning and replaced by
//! its default. The host tool validates the same rules before writing an image.
//! The parsed values borrow from the command line; nothing is allocated (this runs
//! before the heap exists). Applying them (network, disks) is left to the drivers
//! and the node agent.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::cmdline::Cmdline;

const DISKS_MAX: usize = 64;
const PEERS_MAX: usize = 64;
const NAME_MAX_BYTES: usize = 64;
/// Most compiler keys `gridos.compilers` may list.
pub const COMPILERS_MAX: usize = 16;

/// The compiler keys from `gridos.compilers`, set once by [`load`].
static COMPILERS: spin::Once<heapless::Vec<[u8; 32], COMPILERS_MAX>> = spin::Once::new();

/// The ed25519 public keys of the compilers this node trusts to attest native code
/// (`gridos.compilers`); empty when none were given (or before [`load`]): then no
/// native code is ever loaded.
pub fn trusted_compilers() -> &'static [[u8; 32]] {
    COMPILERS.get().map_or(&[], |v| v.as_slice())
}

/// `gridos.farmer`, role and farm, set once by [`load`].
static FARMER: spin::Once<Option<[u8; 32]>> = spin::Once::new();
static ROLE_FARM: spin::Once<(Role, Option<u64>)> = spin::Once::new();

/// The farmer's key (`gridos.farmer`), if the image names one.
pub fn farmer() -> Option<[u8; 32]> {
    FARMER.get().copied().flatten()
}

/// The node's role and farm id (defaults before [`load`]).
pub fn role_and_farm() -> (Role, Option<u64>) {
    ROLE_FARM.get().copied().unwrap_or((Role::Full, None))
}

/// What the node offers to the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Storage and compute.
    Full,
    Compute,
    Storage,
}

impl Role {
    fn parse(value: &str) -> Option<Role> {
        match value {
            "full" => Some(Role::Full),
            "compute" => Some(Role::Compute),
            "storage" => Some(Role::Storage),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Full => "full",
            Role::Compute => "compute",
            Role::Storage => "storage",
        }
    }
}

/// How the node gets its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Mode {
    Dhcp,
    Off,
    /// Address, prefix length, gateway.
    Static(Ipv4Addr, u8, Option<Ipv4Addr>),
}

/// The network words, as the network stack (`net::NetConfig`) reads them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub ipv4: Ipv4Mode,
    /// A static IPv6 address with prefix length and gateway, besides SLAAC.
    pub ipv6: Option<(Ipv6Addr, u8, Option<Ipv6Addr>)>,
}

/// Which disks the node may use for storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disks<'a> {
    All,
    None,
    /// Comma-separated disk names (serial numbers or device names), each checked.
    List(&'a str),
}

/// The node configuration the kernel booted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig<'a> {
    pub role: Role,
    pub farm: Option<u64>,
    pub net: Net,
    pub disks: Disks<'a>,
    /// Comma-separated `HOST:PORT` entries, each checked; empty for none.
    pub peers: &'a str,
    /// Trusted compiler keys (`gridos.compilers`), each checked.
    pub compilers: heapless::Vec<[u8; 32], COMPILERS_MAX>,
}

impl Default for NodeConfig<'_> {
    fn default() -> Self {
        NodeConfig { role: Role::Full, farm: None, net: Net { ipv4: Ipv4Mode::Dhcp, ipv6: None }, disks: Disks::All, peers: "", compilers: heapless::Vec::new() }
    }
}

/// Parses the configuration words, logs the result as one `config:` line and the
/// number of trusted compilers as `compilers: N trusted`, remembers the compiler keys
/// for [`trusted_compilers`], and returns the configuration.
pub fn load<'a>(cmdline: &Cmdline<'a>) -> NodeConfig<'a> {
    let config = NodeConfig::from_cmdline(cmdline, &mut |key, value, why| {
        log::warn!("config: ignoring {key}={value:?}: {why}; using the default");
    });
    log::info!("config: {config}");
    ROLE_FARM.call_once(|| (config.role, config.farm));
    let farmer = FARMER.call_once(|| {
        let value = cmdline.get("gridos.farmer")?;
        let key = parse_key(value);
        if key.is_none() {
            log::warn!("config: ignoring gridos.farmer={value:?}: not a 64-hex-digit key; no farmer");
        }
        key
    });
    if let Some(key) = farmer {
        log::info!("farmer: {}", Hex(key));
    }
    let compilers = COMPILERS.call_once(|| config.compilers.clone());
    log::info!("compilers: {} trusted", compilers.len());
    for key in compilers {
        log::info!("compilers: trusting {}", Hex(key));
    }
    config
}

/// Lower-case hex of a key, for the log.
struct Hex<'a>(&'a [u8; 32]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl<'a> NodeConfig<'a> {
    /// Parses the `gridos.*` node words; `warn(key, value, why)` hears about each bad value.
    pub fn from_cmdline(cmdline: &Cmdline<'a>, warn: &mut dyn FnMut(&str, &str, &str)) -> NodeConfig<'a> {
        let mut config = NodeConfig::default();
        if let Some(v) = cmdline.get("gridos.role") {
            match Role::parse(v) {
                Some(role) => config.role = role,
                None => warn("gridos.role", v, "not a role (full, compute, storage)"),
            }
        }
        if let Some(v) = cmdline.get("gridos.farm") {
            match v.parse::<u64>() {
                Ok(farm) => config.farm = Some(farm),
                Err(_) => warn("gridos.farm", v, "not a farm id (a decimal number)"),
            }
        }
        config.net = parse_net(cmdline, warn);
        if let Some(v) = cmdline.get("gridos.disks") {
            match v {
                "all" => config.disks = Disks::All,
                "none" => config.disks = Disks::None,
                list if list_ok(list, DISKS_MAX, disk_name_ok) => config.disks = Disks::List(list),
                _ => warn("gridos.disks", v, "not all, none or a comma-separated list of disk names"),
            }
        }
        if let Some(v) = cmdline.get("gridos.peers") {
            if v.is_empty() || v == "none" {
                config.peers = "";
            } else if list_ok(v, PEERS_MAX, peer_ok) {
                config.peers = v;
            } else {
                warn("gridos.peers", v, "not a comma-separated list of HOST:PORT (IPv4, [IPv6] or DNS name)");
            }
        }
        if let Some(v) = cmdline.get("gridos.compilers") {
            match parse_compilers(v) {
                Some(keys) => config.compilers = keys,
                None => warn(
                    "gridos.compilers",
                    v,
                    "not none or a comma-separated list of at most 16 distinct ed25519 public keys (64 hex digits each)",
                ),
            }
        }
        config
    }
}

/// `none` or empty for no keys, else comma-separated 64-hex-digit ed25519 public keys,
/// at most [`COMPILERS_MAX`], no repeats; `None` if any entry is bad.
fn parse_compilers(value: &str) -> Option<heapless::Vec<[u8; 32], COMPILERS_MAX>> {
    let mut keys = heapless::Vec::new();
    if value.is_empty() || value == "none" {
        return Some(keys);
    }
    for item in value.split(',') {
        let key = parse_key(item)?;
        if keys.contains(&key) {
            return None;
        }
        keys.push(key).ok()?;
    }
    Some(keys)
}

fn parse_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

fn parse_net(cmdline: &Cmdline<'_>, warn: &mut dyn FnMut(&str, &str, &str)) -> Net {
    let gw4 = cmdline.get("gridos.gw4").and_then(|v| {
        let gw = v.parse().ok();
        if gw.is_none() {
            warn("gridos.gw4", v, "not an IPv4 address");
        }
        gw
    });
    let ipv4 = match cmdline.get("gridos.ip4") {
        None | Some("dhcp") => Ipv4Mode::Dhcp,
        Some("none") | Some("off") => Ipv4Mode::Off,
        Some(v) => match parse_prefixed::<Ipv4Addr>(v, 32) {
            Some((addr, prefix)) => Ipv4Mode::Static(addr, prefix, gw4),
            None => {
                warn("gridos.ip4", v, "not dhcp, none or an IPv4 address with a prefix length (A.B.C.D/P)");
                Ipv4Mode::Dhcp
            }
        },
    };
    let gw6 = cmdline.get("gridos.gw6").and_then(|v| {
        let gw = v.parse().ok();
        if gw.is_none() {
            warn("gridos.gw6", v, "not an IPv6 address");
        }
        gw
    });
    let ipv6 = cmdline.get("gridos.ip6").and_then(|v| {
        let parsed = parse_prefixed::<Ipv6Addr>(v, 128);
        if parsed.is_none() {
            warn("gridos.ip6", v, "not an IPv6 address with a prefix length (X::Y/P)");
        }
        parsed.map(|(addr, prefix)| (addr, prefix, gw6))
    });
    Net { ipv4, ipv6 }
}

fn parse_prefixed<A: core::str::FromStr>(value: &str, prefix_max: u8) -> Option<(A, u8)> {
    let (addr, prefix) = value.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    if prefix > prefix_max {
        return None;
    }
    Some((addr.parse().ok()?, prefix))
}

fn list_ok(list: &str, count_max: usize, item_ok: fn(&str) -> bool) -> bool {
    let mut count = 0;
    for item in list.split(',') {
        count += 1;
        if count > count_max || !item_ok(item) {
            return false;
        }
    }
    true
}

fn disk_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'))
}

fn peer_ok(peer: &str) -> bool {
    let Some((host, port)) = peer.rsplit_once(':') else { return false };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return false;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host.parse::<Ipv4Addr>().is_ok();
    }
    dns_name_ok(host)
}

fn dns_name_ok(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `dhcp` for the default (DHCPv4 and SLAAC), else e.g.
/// `ip4=10.0.0.5/24 gw4=10.0.0.1 ip6=slaac` (the words, as given).
impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ipv4 {
            Ipv4Mode::Dhcp if self.ipv6.is_none() => return f.write_str("dhcp"),
            Ipv4Mode::Dhcp => f.write_str("ip4=dhcp")?,
            Ipv4Mode::Off => f.write_str("ip4=none")?,
            Ipv4Mode::Static(addr, prefix, gw) => {
                write!(f, "ip4={addr}/{prefix}")?;
                if let Some(gw) = gw {
                    write!(f, " gw4={gw}")?;
                }
            }
        }
        match self.ipv6 {
            None => f.write_str(" ip6=slaac"),
            Some((addr, prefix, gw)) => {
                write!(f, " ip6={addr}/{prefix}")?;
                match gw {
                    Some(gw) => write!(f, " gw6={gw}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// One line, in the same form the host tool prints (`gridos-image config`), e.g.
/// `role=full, farm=42, net=dhcp, disks=all, peers=10.0.2.2:7000`.
impl fmt::Display for NodeConfig<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "role={}, farm=", self.role.as_str())?;
        match self.farm {
            Some(farm) => write!(f, "{farm}")?,
            None => f.write_str("none")?,
        }
        write!(f, ", net={}, disks=", self.net)?;
        match self.disks {
            Disks::All => f.write_str("all")?,
            Disks::None => f.write_str("none")?,
            Disks::List(list) => f.write_str(list)?,
        }
        f.write_str(", peers=")?;
        f.write_str(if self.peers.is_empty() { "none" } else { self.peers })
    }
}
