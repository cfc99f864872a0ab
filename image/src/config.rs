//! Node configuration that a farmer sets once, validated on the host and turned
//! into kernel command-line words (`gridos.role=... gridos.farm=...`).
//!
//! Sources, later ones winning: a small config file (a flat TOML subset: `key =
//! value` lines, `"strings"`, numbers, `["lists", "of strings"]`, `#` comments),
//! then command-line flags ([`Overrides`]). The kernel reads the same words
//! (kernel/src/config.rs and kernel/src/net) and logs them back as one
//! `config: ...` line, in exactly the form [`NodeConfig::summary`] gives, which is
//! what the image tests compare.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

const DISKS_MAX: usize = 64;
const PEERS_MAX: usize = 64;
const DISK_NAME_MAX_BYTES: usize = 64;
/// The kernel copies at most 1024 bytes of command line.
pub const CMDLINE_MAX_BYTES: usize = 1000;

/// What the node offers to the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Storage and compute.
    Full,
    Compute,
    Storage,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Full, Role::Compute, Role::Storage];

    pub fn parse(value: &str) -> Result<Role, ConfigError> {
        match value {
            "full" | "storage+compute" => Ok(Role::Full),
            "compute" => Ok(Role::Compute),
            "storage" => Ok(Role::Storage),
            _ => Err(ConfigError::bad("role", value, "expected full (storage+compute), compute or storage")),
        }
    }

    /// The value of `gridos.role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Full => "full",
            Role::Compute => "compute",
            Role::Storage => "storage",
        }
    }

    /// What the boot menu calls it.
    pub fn label(self) -> &'static str {
        match self {
            Role::Full => "storage+compute",
            Role::Compute => "compute only",
            Role::Storage => "storage only",
        }
    }
}

/// How the node gets its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// DHCPv4 and IPv6 SLAAC.
    Dhcp,
    /// Fixed addresses (at least one of the two); no DHCP.
    Static {
        ipv4: Option<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
        ipv6: Option<(Ipv6Addr, u8, Option<Ipv6Addr>)>,
    },
}

/// Which disks the node may use for storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disks {
    All,
    None,
    /// Disk names: serial numbers or device names.
    List(Vec<String>),
}

/// The complete node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub role: Role,
    pub farm: Option<u64>,
    pub net: Net,
    pub disks: Disks,
    /// Validator/peer addresses, `HOST:PORT` (IPv4, `[IPv6]` or a DNS name).
    pub peers: Vec<String>,
    /// ed25519 public keys (64 lower-case hex digits) of the compilers whose attested
    /// native code the node runs (`gridos.compilers`); none: every module is interpreted.
    pub compilers: Vec<String>,
    /// The farmer's ed25519 public key (64 lower-case hex digits, `gridos.farmer`): the
    /// key that sees the node's full status and its kernel log over the control protocol.
    pub farmer: Option<String>,
    /// Extra command-line words, passed as they are (e.g. `gridos.log=debug`).
    pub append: Vec<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { role: Role::Full, farm: None, net: Net::Dhcp, disks: Disks::All, peers: Vec::new(), compilers: Vec::new(), farmer: None, append: Vec::new() }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A value that does not fit its key.
    BadValue { key: String, value: String, why: String },
    /// A file line that is not `key = value`.
    Syntax { line: usize, text: String, why: String },
    /// A key nobody reads.
    UnknownKey { line: usize, key: String },
    /// Settings that contradict each other.
    Conflict(String),
    Io { path: String, error: String },
}

impl ConfigError {
    fn bad(key: &str, value: &str, why: &str) -> ConfigError {
        ConfigError::BadValue { key: key.into(), value: value.into(), why: why.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::BadValue { key, value, why } => write!(f, "bad {key} {value:?}: {why}"),
            ConfigError::Syntax { line, text, why } => write!(f, "line {line}: {why}: {text:?}"),
            ConfigError::UnknownKey { line, key } => write!(
                f,
                "line {line}: unknown key {key:?} (known: {})",
                FILE_KEYS.join(", ")
            ),
            ConfigError::Conflict(why) => f.write_str(why),
            ConfigError::Io { path, error } => write!(f, "cannot read {path}: {error}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The keys a config file may set.
pub const FILE_KEYS: [&str; 13] =
    ["farm", "role", "net", "ipv4", "gateway4", "ipv6", "gateway6", "disks", "peers", "append", "validators", "compilers", "farmer"];
/// Most compiler keys a node takes (the kernel's `config::COMPILERS_MAX`).
pub const COMPILERS_MAX: usize = 16;

/// Settings given on the tool's command line; each replaces the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub farm: Option<String>,
    pub role: Option<String>,
    pub net: Option<String>,
    pub ipv4: Option<String>,
    pub gateway4: Option<String>,
    pub ipv6: Option<String>,
    pub gateway6: Option<String>,
    /// `all`, `none` or a comma-separated list.
    pub disks: Option<String>,
    /// Comma-separated `HOST:PORT` list.
    pub peers: Option<String>,
    /// Comma-separated compiler public keys (64 hex digits each).
    pub compilers: Option<String>,
    /// The farmer's public key (64 hex digits).
    pub farmer: Option<String>,
    /// Extra words, added after the file's `append`.
    pub append: Vec<String>,
}

/// Raw settings before validation: key -> list of string values.
#[derive(Debug, Default)]
struct Raw {
    entries: Vec<(String, Vec<String>)>,
}

impl Raw {
    fn set(&mut self, key: &str, values: Vec<String>) {
        self.entries.retain(|(k, _)| k != key);
        self.entries.push((key.into(), values));
    }

    fn one(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        match self.entries.iter().find(|(k, _)| k == key) {
            None => Ok(None),
            Some((_, v)) if v.len() == 1 => Ok(Some(v[0].as_str())),
            Some((_, v)) => Err(ConfigError::bad(key, &v.join(","), "expected one value, not a list")),
        }
    }

    fn list(&self, key: &str) -> Option<&[String]> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }
}

impl NodeConfig {
    /// Reads a config file (if any), applies the overrides and validates the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<NodeConfig, ConfigError> {
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Io { path: path.display().to_string(), error: e.to_string() })?;
                parse_file(&text)?
            }
            None => Raw::default(),
        };
        let single = [
            ("farm", &overrides.farm),
            ("role", &overrides.role),
            ("net", &overrides.net),
            ("ipv4", &overrides.ipv4),
            ("gateway4", &overrides.gateway4),
            ("ipv6", &overrides.ipv6),
            ("gateway6", &overrides.gateway6),
            ("farmer", &overrides.farmer),
        ];
        for (key, value) in single {
            if let Some(v) = value {
                raw.set(key, vec![v.clone()]);
            }
        }
        for (key, value) in [("disks", &overrides.disks), ("peers", &overrides.peers), ("compilers", &overrides.compilers)] {
            if let Some(v) = value {
                raw.set(key, split_list(v));
            }
        }
        if !overrides.append.is_empty() {
            let mut words = raw.list("append").map(<[String]>::to_vec).unwrap_or_default();
            words.extend(overrides.append.iter().flat_map(|w| w.split_ascii_whitespace().map(str::to_string)));
            raw.set("append", words);
        }
        NodeConfig::from_raw(&raw)
    }

    /// Parses and validates a config file's text (no overrides).
    pub fn from_file_text(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::from_raw(&parse_file(text)?)
    }

    fn from_raw(raw: &Raw) -> Result<NodeConfig, ConfigError> {
        let mut config = NodeConfig::default();
        if let Some(v) = raw.one("role")? {
            config.role = Role::parse(v)?;
        }
        if let Some(v) = raw.one("farm")? {
            config.farm = Some(v.parse().map_err(|_| ConfigError::bad("farm", v, "expected a farm id (a decimal number)"))?);
        }
        config.net = net_from_raw(raw)?;
        if let Some(list) = raw.list("disks") {
            config.disks = match list {
                [one] if one == "all" => Disks::All,
                [one] if one == "none" => Disks::None,
                [] => Disks::None,
                names => {
                    if names.len() > DISKS_MAX {
                        return Err(ConfigError::bad("disks", &names.join(","), "more than 64 disks"));
                    }
                    for name in names {
                        check_disk_name(name)?;
                    }
                    Disks::List(names.to_vec())
                }
            };
        }
        let mut peers: Vec<String> = Vec::new();
        for key in ["validators", "peers"] {
            for peer in raw.list(key).unwrap_or_default() {
                check_peer(key, peer)?;
                if !peers.contains(peer) {
                    peers.push(peer.clone());
                }
            }
        }
        if peers.len() > PEERS_MAX {
            return Err(ConfigError::bad("peers", &peers.join(","), "more than 64 peers"));
        }
        config.peers = peers;
        let mut compilers: Vec<String> = Vec::new();
        for key in raw.list("compilers").unwrap_or_default() {
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::bad("compilers", key, "a compiler key is an ed25519 public key, 64 hex digits"));
            }
            let key = key.to_ascii_lowercase();
            if compilers.contains(&key) {
                return Err(ConfigError::bad("compilers", &key, "listed twice"));
            }
            compilers.push(key);
        }
        if compilers.len() > COMPILERS_MAX {
            return Err(ConfigError::bad("compilers", &compilers.join(","), "more than 16 compiler keys"));
        }
        config.compilers = compilers;
        if let Some(key) = raw.list("farmer").and_then(|l| l.first()) {
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::bad("farmer", key, "the farmer key is an ed25519 public key, 64 hex digits"));
            }
            config.farmer = Some(key.to_ascii_lowercase());
        }
        for word in raw.list("append").unwrap_or_default() {
            check_word(word)?;
        }
        config.append = raw.list("append").map(<[String]>::to_vec).unwrap_or_default();
        let length = config.cmdline().len();
        if length > CMDLINE_MAX_BYTES {
            return Err(ConfigError::Conflict(format!(
                "the kernel command line would be {length} bytes; the kernel reads at most {CMDLINE_MAX_BYTES}"
            )));
        }
        Ok(config)
    }

    /// The kernel command-line words for this configuration.
    pub fn words(&self) -> Vec<String> {
        let mut words = vec![format!("gridos.role={}", self.role.as_str())];
        if let Some(farm) = self.farm {
            words.push(format!("gridos.farm={farm}"));
        }
        match self.net {
            Net::Dhcp => words.push("gridos.ip4=dhcp".into()),
            Net::Static { ipv4, ipv6 } => {
                match ipv4 {
                    Some((addr, prefix, gw)) => {
                        words.push(format!("gridos.ip4={addr}/{prefix}"));
                        words.extend(gw.map(|gw| format!("gridos.gw4={gw}")));
                    }
                    None => words.push("gridos.ip4=none".into()),
                }
                if let Some((addr, prefix, gw)) = ipv6 {
                    words.push(format!("gridos.ip6={addr}/{prefix}"));
                    words.extend(gw.map(|gw| format!("gridos.gw6={gw}")));
                }
            }
        }
        words.push(match &self.disks {
            Disks::All => "gridos.disks=all".into(),
            Disks::None => "gridos.disks=none".into(),
            Disks::List(names) => format!("gridos.disks={}", names.join(",")),
        });
        if !self.peers.is_empty() {
            words.push(format!("gridos.peers={}", self.peers.join(",")));
        }
        if !self.compilers.is_empty() {
            words.push(format!("gridos.compilers={}", self.compilers.join(",")));
        }
        if let Some(key) = &self.farmer {
            words.push(format!("gridos.farmer={key}"));
        }
        words.extend(self.append.iter().cloned());
        words
    }

    /// The words joined by spaces.
    pub fn cmdline(&self) -> String {
        self.words().join(" ")
    }

    /// What the kernel logs after `config: ` when it boots with [`NodeConfig::words`].
    pub fn summary(&self) -> String {
        let farm = self.farm.map_or("none".to_string(), |f| f.to_string());
        let net = match self.net {
            Net::Dhcp => "dhcp".to_string(),
            Net::Static { ipv4, ipv6 } => {
                let mut s = match ipv4 {
                    Some((addr, prefix, gw)) => {
                        format!("ip4={addr}/{prefix}") + &gw.map(|g| format!(" gw4={g}")).unwrap_or_default()
                    }
                    None => "ip4=none".into(),
                };
                match ipv6 {
                    Some((addr, prefix, gw)) => {
                        s += &format!(" ip6={addr}/{prefix}");
                        s += &gw.map(|g| format!(" gw6={g}")).unwrap_or_default();
                    }
                    None => s += " ip6=slaac",
                }
                s
            }
        };
        let disks = match &self.disks {
            Disks::All => "all".to_string(),
            Disks::None => "none".to_string(),
            Disks::List(names) => names.join(","),
        };
        let peers = if self.peers.is_empty() { "none".to_string() } else { self.peers.join(",") };
        format!("role={}, farm={farm}, net={net}, disks={disks}, peers={peers}", self.role.as_str())
    }
}

fn net_from_raw(raw: &Raw) -> Result<Net, ConfigError> {
    let ipv4 = raw.one("ipv4")?.map(|v| parse_prefixed::<Ipv4Addr>("ipv4", v, 32)).transpose()?;
    let gw4 = raw.one("gateway4")?.map(|v| parse_addr::<Ipv4Addr>("gateway4", v)).transpose()?;
    let ipv6 = raw.one("ipv6")?.map(|v| parse_prefixed::<Ipv6Addr>("ipv6", v, 128)).transpose()?;
    let gw6 = raw.one("gateway6")?.map(|v| parse_addr::<Ipv6Addr>("gateway6", v)).transpose()?;
    let any_static = ipv4.is_some() || gw4.is_some() || ipv6.is_some() || gw6.is_some();
    let mode = raw.one("net")?.unwrap_or(if any_static { "static" } else { "dhcp" });
    match mode {
        "dhcp" if any_static => Err(ConfigError::Conflict(
            "net = dhcp, but static addresses (ipv4/gateway4/ipv6/gateway6) are set: use net = static or drop them".into(),
        )),
        "dhcp" => Ok(Net::Dhcp),
        "static" => {
            if ipv4.is_none() && ipv6.is_none() {
                return Err(ConfigError::Conflict("net = static needs ipv4 (A.B.C.D/P) or ipv6 (X::Y/P)".into()));
            }
            if gw4.is_some() && ipv4.is_none() {
                return Err(ConfigError::Conflict("gateway4 is set but ipv4 is not".into()));
            }
            if gw6.is_some() && ipv6.is_none() {
                return Err(ConfigError::Conflict("gateway6 is set but ipv6 is not".into()));
            }
            if let (Some((addr, prefix)), Some(gw)) = (ipv4, gw4) {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                if u32::from(addr) & mask != u32::from(gw) & mask {
                    return Err(ConfigError::Conflict(format!("gateway4 {gw} is not in {addr}/{prefix}")));
                }
            }
            Ok(Net::Static { ipv4: ipv4.map(|(a, p)| (a, p, gw4)), ipv6: ipv6.map(|(a, p)| (a, p, gw6)) })
        }
        other => Err(ConfigError::bad("net", other, "expected dhcp or static")),
    }
}

fn parse_addr<A: std::str::FromStr>(key: &str, value: &str) -> Result<A, ConfigError> {
    value.parse().map_err(|_| ConfigError::bad(key, value, "not an IP address of the right family"))
}

fn parse_prefixed<A: std::str::FromStr>(key: &str, value: &str, prefix_max: u8) -> Result<(A, u8), ConfigError> {
    let why = format!("expected ADDRESS/PREFIX with a prefix length of at most {prefix_max}");
    let (addr, prefix) = value.split_once('/').ok_or_else(|| ConfigError::bad(key, value, &why))?;
    let prefix: u8 = prefix.parse().map_err(|_| ConfigError::bad(key, value, &why))?;
    if prefix > prefix_max {
        return Err(ConfigError::bad(key, value, &why));
    }
    Ok((parse_addr(key, addr)?, prefix))
}

fn check_disk_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= DISK_NAME_MAX_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'));
    if !ok {
        return Err(ConfigError::bad("disks", name, "a disk name is 1-64 characters of A-Z a-z 0-9 . _ - : /"));
    }
    if let Some(disk) = partition_of(name.strip_prefix("/dev/").unwrap_or(name)) {
        let why = format!("a partition: gridos uses whole disks (the node names them vda, nvme0n1, sda, ...); name the disk ({disk})");
        return Err(ConfigError::bad("disks", name, &why));
    }
    Ok(())
}

/// The disk of a Linux partition name (`sda1` -> `sda`, `vdb2` -> `vdb`,
/// `nvme0n1p3` -> `nvme0n1`), or `None` for a disk name or anything else.
fn partition_of(name: &str) -> Option<&str> {
    let digits_at = name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits_at == name.len() {
        return None;
    }
    let base = &name[..digits_at];
    if let Some(disk) = base.strip_suffix('p') {
        // nvme<N>n<M>p<K>
        let rest = disk.strip_prefix("nvme")?;
        let (controller, namespace) = rest.split_once('n')?;
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        return (numeric(controller) && numeric(namespace)).then_some(disk);
    }
    let letters = base.strip_prefix("sd").or_else(|| base.strip_prefix("vd"))?;
    (!letters.is_empty() && letters.len() <= 3 && letters.bytes().all(|b| b.is_ascii_lowercase())).then_some(base)
}

fn check_peer(key: &str, peer: &str) -> Result<(), ConfigError> {
    let why = "expected HOST:PORT with HOST an IPv4 address, [IPv6 address] or DNS name, PORT 1-65535";
    let (host, port) = peer.rsplit_once(':').ok_or_else(|| ConfigError::bad(key, peer, why))?;
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(ConfigError::bad(key, peer, why));
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<Ipv6Addr>().is_ok()
    } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        host.parse::<Ipv4Addr>().is_ok()
    } else {
        dns_name_ok(host)
    };
    if host_ok {
        Ok(())
    } else {
        Err(ConfigError::bad(key, peer, why))
    }
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

/// An extra command-line word: printable ASCII without characters that GRUB or
/// iPXE scripts would interpret (quotes, `$`, `;`, braces, `\`, `#`, `|`, `&`).
pub fn check_word(word: &str) -> Result<(), ConfigError> {
    let ok = !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'$' | b';' | b'{' | b'}' | b'\\' | b'#' | b'|' | b'&' | b'<' | b'>' | b'`'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::bad("append", word, "a word is printable ASCII without spaces, quotes, $ ; { } \\ # | & < > `"))
    }
}

fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Parses the flat TOML subset into raw settings.
fn parse_file(text: &str) -> Result<Raw, ConfigError> {
    let mut raw = Raw::default();
    for (index, full_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = strip_comment(full_line).trim();
        if line.is_empty() {
            continue;
        }
        let syntax = |why: &str| ConfigError::Syntax { line: line_no, text: full_line.trim().into(), why: why.into() };
        if line.starts_with('[') {
            return Err(syntax("sections are not used: write key = value lines only"));
        }
        let (key, value) = line.split_once('=').ok_or_else(|| syntax("expected key = value"))?;
        let key = key.trim();
        if !FILE_KEYS.contains(&key) {
            return Err(ConfigError::UnknownKey { line: line_no, key: key.into() });
        }
        if raw.list(key).is_some() {
            return Err(syntax("key set twice"));
        }
        let value = value.trim();
        let values = if let Some(inner) = value.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(|| syntax("a list must end with ] on the same line"))?;
            let mut items = Vec::new();
            for item in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                items.push(parse_scalar(item).ok_or_else(|| syntax("list items must be \"strings\" or numbers"))?);
            }
            items
        } else {
            let scalar = parse_scalar(value).ok_or_else(|| syntax("expected a \"string\", a number or a [list]"))?;
            // A string may hold a comma-separated list too (disks = "a,b").
            if matches!(key, "disks" | "peers" | "validators" | "compilers") {
                split_list(&scalar)
            } else if key == "append" {
                scalar.split_ascii_whitespace().map(str::to_string).collect()
            } else {
                vec![scalar]
            }
        };
        raw.set(key, values);
    }
    Ok(raw)
}

/// Drops a `#` comment that is not inside a string.
fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => {}
        }
    }
    line
}

fn parse_scalar(value: &str) -> Option<String> {
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        return (!inner.contains('"') && !inner.contains('\\')).then(|| inner.to_string());
    }
    let bare_ok = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    bare_ok.then(|| value.to_string())
}

#[cfg(test)]
mod test {
    use super::*;

    const EXAMPLE: &str = r#"
# node.toml
farm = 42
role = "compute"
net = "static"
ipv4 = "192.168.1.20/24"   # the node's address
gateway4 = "192.168.1.1"
ipv6 = "2001:DB8::20/64"
disks = ["nvme0", "sdb"]
peers = ["203.0.113.5:7000", "[2001:db8::5]:7000"]
validators = "validator1.example.org:7000"
append = "gridos.log=debug"
"#;

    #[test]
    fn example_file_gives_words_and_summary() {
        let c = NodeConfig::from_file_text(EXAMPLE).unwrap();
        assert_eq!(
            c.cmdline(),
            "gridos.role=compute gridos.farm=42 gridos.ip4=192.168.1.20/24 gridos.gw4=192.168.1.1 \
             gridos.ip6=2001:db8::20/64 gridos.disks=nvme0,sdb \
             gridos.peers=validator1.example.org:7000,203.0.113.5:7000,[2001:db8::5]:7000 gridos.log=debug"
        );
        assert_eq!(
            c.summary(),
            "role=compute, farm=42, net=ip4=192.168.1.20/24 gw4=192.168.1.1 ip6=2001:db8::20/64, disks=nvme0,sdb, \
             peers=validator1.example.org:7000,203.0.113.5:7000,[2001:db8::5]:7000"
        );
    }

    #[test]
    fn disk_names_are_whole_disks_as_the_node_names_them() {
        for ok in ["nvme0n1", "nvme0n2", "nvme0n16", "nvme0", "sda", "sdab", "vdb", "/dev/nvme1n1", "/dev/nvme1n3", "/dev/sdb", "S3Z9NX0M123456", "gridos-disk0"] {
            assert!(check_disk_name(ok).is_ok(), "{ok}");
        }
        for (partition, disk) in [("sda1", "sda"), ("/dev/sdb2", "sdb"), ("vda3", "vda"), ("nvme0n1p1", "nvme0n1"), ("/dev/nvme1n2p3", "nvme1n2")] {
            let e = check_disk_name(partition).unwrap_err().to_string();
            assert!(e.contains("a partition") && e.contains(&format!("name the disk ({disk})")), "{e}");
        }
    }

    #[test]
    fn defaults_are_dhcp_all_disks_full_role() {
        let c = NodeConfig::from_file_text("").unwrap();
        assert_eq!(c.cmdline(), "gridos.role=full gridos.ip4=dhcp gridos.disks=all");
        assert_eq!(c.summary(), "role=full, farm=none, net=dhcp, disks=all, peers=none");
    }

    #[test]
    fn the_farmer_key_becomes_gridos_farmer() {
        let key = "ab".repeat(32);
        let c = NodeConfig::from_file_text(&format!("farmer = \"{}\"", key.to_uppercase())).unwrap();
        assert_eq!(c.farmer.as_deref(), Some(key.as_str()));
        assert!(c.cmdline().ends_with(&format!("gridos.farmer={key}")), "{}", c.cmdline());
        assert!(NodeConfig::from_file_text("farmer = \"abc\"").is_err());
        let o = Overrides { farmer: Some("cd".repeat(32)), ..Overrides::default() };
        assert_eq!(NodeConfig::load(None, &o).unwrap().farmer, Some("cd".repeat(32)));
    }

    #[test]
    fn overrides_replace_file_values() {
        let o = Overrides {
            farm: Some("7".into()),
            net: Some("dhcp".into()),
            disks: Some("all".into()),
            peers: Some("10.0.2.2:7000".into()),
            append: vec!["gridos.test=boot".into()],
            ..Overrides::default()
        };
        let mut raw = parse_file("farm = 1\nrole = \"storage\"\n").unwrap();
        for (k, v) in [("farm", &o.farm), ("net", &o.net)] {
            raw.set(k, vec![v.clone().unwrap()]);
        }
        let c = NodeConfig::from_raw(&raw).unwrap();
        assert_eq!((c.farm, c.role), (Some(7), Role::Storage));
        let dir = std::env::temp_dir().join(format!("gridos-image-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(&file, "farm = 1\nrole = \"storage\"\nappend = \"gridos.log=info\"\n").unwrap();
        let c = NodeConfig::load(Some(&file), &o).unwrap();
        assert_eq!(
            c.cmdline(),
            "gridos.role=storage gridos.farm=7 gridos.ip4=dhcp gridos.disks=all gridos.peers=10.0.2.2:7000 \
             gridos.log=info gridos.test=boot"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn compiler_keys_become_one_word() {
        let a = "AB".repeat(32);
        let b = "cd".repeat(32);
        let c = NodeConfig::from_file_text(&format!("compilers = [\"{a}\", \"{b}\"]")).unwrap();
        assert_eq!(c.compilers, [a.to_ascii_lowercase(), b.clone()]);
        assert!(c.cmdline().ends_with(&format!("gridos.compilers={},{b}", a.to_ascii_lowercase())), "{}", c.cmdline());
        let o = Overrides { compilers: Some(b.clone()), ..Overrides::default() };
        assert_eq!(NodeConfig::load(None, &o).unwrap().compilers, [b.clone()]);
        assert!(!NodeConfig::default().cmdline().contains("compilers"));
        for bad in [
            "compilers = [\"abc\"]".to_string(),
            format!("compilers = [\"{}\"]", "g".repeat(64)),
            format!("compilers = [\"{b}\", \"{b}\"]"),
            format!("compilers = \"{}\"", (0..17).map(|i| format!("{i:064x}")).collect::<Vec<_>>().join(",")),
        ] {
            let e = NodeConfig::from_file_text(&bad).unwrap_err();
            assert!(matches!(&e, ConfigError::BadValue { key, .. } if key == "compilers"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        let cases = [
            ("farm = \"x\"", "bad farm"),
            ("role = \"boss\"", "bad role"),
            ("net = \"wifi\"", "bad net"),
            ("ipv4 = \"10.0.0.5\"", "bad ipv4"),
            ("ipv4 = \"10.0.0.5/33\"", "bad ipv4"),
            ("ipv4 = \"10.0.0.5/24\"\ngateway4 = \"10.0.1.1\"", "not in"),
            ("net = \"dhcp\"\nipv4 = \"10.0.0.5/24\"", "net = dhcp"),
            ("net = \"static\"", "needs ipv4"),
            ("gateway6 = \"fe80::1\"\nipv4 = \"10.0.0.5/24\"", "gateway6 is set"),
            ("disks = [\"a b\"]", "bad disks"),
            ("peers = [\"10.0.0.1\"]", "bad peers"),
            ("peers = [\"10.0.0.1:0\"]", "bad peers"),
            ("peers = [\"[fe80::1:7000\"]", "bad peers"),
            ("append = \"a$b\"", "bad append"),
            ("farm = 1\nfarm = 2", "set twice"),
            ("[node]", "sections"),
            ("colour = \"red\"", "unknown key"),
            ("farm 42", "expected key = value"),
        ];
        for (text, needle) in cases {
            let err = NodeConfig::from_file_text(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}, expected {needle:?}");
        }
    }

    #[test]
    fn static_ipv6_only_turns_ipv4_off() {
        let c = NodeConfig::from_file_text("ipv6 = \"fd00::15/64\"\ngateway6 = \"fd00::1\"").unwrap();
        assert_eq!(c.cmdline(), "gridos.role=full gridos.ip4=none gridos.ip6=fd00::15/64 gridos.gw6=fd00::1 gridos.disks=all");
        assert_eq!(c.summary(), "role=full, farm=none, net=ip4=none ip6=fd00::15/64 gw6=fd00::1, disks=all, peers=none");
    }

    #[test]
    fn command_line_length_is_bounded() {
        let peers: Vec<String> = (0..60).map(|i| format!("\"peer-number-{i}.example.org:7000\"")).collect();
        let err = NodeConfig::from_file_text(&format!("peers = [{}]", peers.join(", "))).unwrap_err();
        assert!(err.to_string().contains("at most 1000"), "{err}");
    }
}
