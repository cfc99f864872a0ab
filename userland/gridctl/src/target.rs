//! Which node to talk to: `KEY@HOST:PORT`, the node's overlay public key (64 hex digits,
//! printed by the node at boot: `overlay: key <hex> address ...`) and its underlay UDP
//! endpoint. HOST is an IPv4 address, `[IPv6]` or a host name; `:PORT` defaults to the
//! overlay's UDP port.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::{bail, parse_hex, Result};

/// A node: its key and where its overlay listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node's overlay public key.
    pub key: [u8; 32],
    /// Its underlay UDP endpoint.
    pub endpoint: SocketAddr,
}

impl Target {
    /// The node's overlay address.
    pub fn overlay_address(&self) -> [u8; 16] {
        overlay::Address::from_public_key(&overlay::PublicKey(self.key)).0
    }

    /// Parses `KEY@HOST[:PORT]`.
    pub fn parse(s: &str) -> Result<Target> {
        let s = s.trim();
        let Some((key_hex, endpoint)) = s.split_once('@') else {
            bail!("node {s:?} is not KEY@HOST:PORT (KEY: the node's 64-hex-digit overlay key)");
        };
        let Some(key) = parse_hex::<32>(key_hex) else {
            bail!("node key {key_hex:?} is not 64 hex digits (the node prints it at boot: `overlay: key ...`)");
        };
        if ed25519_compact::PublicKey::from_slice(&key).is_err() {
            bail!("node key {key_hex} is not an ed25519 public key");
        }
        let endpoint = parse_endpoint(endpoint)?;
        if endpoint.port() == 0 || endpoint.ip().is_unspecified() {
            bail!("{endpoint} is not an address a node can listen on");
        }
        Ok(Target { key, endpoint })
    }
}

fn parse_endpoint(s: &str) -> Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let default_port = overlay::filter::DEFAULT_PORT;
    if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        if !s.contains(':') || s.starts_with('[') {
            return Ok(SocketAddr::new(ip, default_port));
        }
        bail!("{s:?}: write an IPv6 address in brackets, as [{ip}]:{default_port}");
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if p != 0 => (h, p),
            _ => bail!("{s:?}: {p:?} is not a port number"),
        },
        None => (s, default_port),
    };
    if host.is_empty() {
        bail!("{s:?}: no host");
    }
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => Ok(a),
            None => bail!("host {host:?} has no address"),
        },
        Err(e) => bail!("cannot resolve host {host:?}: {e}"),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn key_hex() -> String {
        crate::hex(&*workloads::manifest::key_pair_from_seed([3; 32]).pk)
    }

    #[test]
    fn parses_v4_v6_and_default_port() {
        let t = Target::parse(&format!("{}@127.0.0.1:7443", key_hex())).unwrap();
        assert_eq!(t.endpoint, "127.0.0.1:7443".parse().unwrap());
        let t = Target::parse(&format!("{}@[::1]:9", key_hex())).unwrap();
        assert_eq!(t.endpoint, "[::1]:9".parse().unwrap());
        let t = Target::parse(&format!("{}@10.0.0.1", key_hex())).unwrap();
        assert_eq!(t.endpoint.port(), overlay::filter::DEFAULT_PORT);
        let t = Target::parse(&format!("{}@[fd00::1]", key_hex())).unwrap();
        assert_eq!(t.endpoint.port(), overlay::filter::DEFAULT_PORT);
        assert_eq!(t.overlay_address()[..2], overlay::address::PREFIX);
    }

    #[test]
    fn bad_targets_are_errors_not_panics() {
        let k = key_hex();
        for bad in [
            String::new(),
            "nokey".into(),
            "@1.2.3.4:5".into(),
            "abcd@1.2.3.4:5".into(),
            format!("{}@1.2.3.4:5", "zz".repeat(32)),
            format!("{k}@"),
            format!("{k}@1.2.3.4:99999"),
            format!("{k}@1.2.3.4:0"),
            format!("{k}@fe80::1"),
            format!("{k}@:7443"),
            format!("{k}@é:1"),
            format!("{k}@0.0.0.0:7443"),
        ] {
            assert!(Target::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
