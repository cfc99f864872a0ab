//! Underlay endpoints as the node sees them: opaque, except for the source address that
//! per-source limits, cookies and the discovery scope check are keyed on.
//!
//! The node stores endpoints and hands them back; it interprets only `source_address`, the
//! IP address without port (an attacker picks ports freely, so a port must never buy a
//! second share of a per-source budget). IPv4 addresses appear IPv4-mapped (`::ffff:a.b.c.d`).
//! The kernel and host tools use `core::net::SocketAddr`; simulations may use integer
//! endpoints (`u8`, `u16`, `u32`), which map to the IPv4 address of that number.

use core::net::{IpAddr, SocketAddr};

/// Bytes of a source address.
pub const SOURCE_LEN: usize = 16;

/// An underlay IP address (IPv6, or IPv4-mapped), the unit of per-source accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceAddress(pub [u8; SOURCE_LEN]);

impl SourceAddress {
    /// True for IPv6 link-local unicast (`fe80::/10`): such a source cannot have crossed a
    /// router, so its sender is on our segment.
    pub fn is_link_local(&self) -> bool {
        self.0[0] == 0xfe && self.0[1] & 0xc0 == 0x80
    }
}

/// What the node needs from an underlay endpoint type.
pub trait Endpoint: Copy + PartialEq + core::fmt::Debug {
    /// The IP address the datagram came from (without port).
    fn source_address(&self) -> SourceAddress;
}

impl Endpoint for SocketAddr {
    fn source_address(&self) -> SourceAddress {
        match self.ip() {
            IpAddr::V4(v4) => SourceAddress(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => SourceAddress(v6.octets()),
        }
    }
}

macro_rules! simulation_endpoint {
    ($($t:ty),*) => {$(
        impl Endpoint for $t {
            /// Simulation endpoints: endpoint `n` is the IPv4 address with value `n`.
            fn source_address(&self) -> SourceAddress {
                SourceAddress(core::net::Ipv4Addr::from(u32::from(*self)).to_ipv6_mapped().octets())
            }
        }
    )*};
}

simulation_endpoint!(u8, u16, u32);

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn ports_do_not_change_the_source_and_link_local_is_recognised() {
        let a: SocketAddr = "[fe80::1]:7443".parse().unwrap();
        let b: SocketAddr = "[fe80::1]:9".parse().unwrap();
        assert_eq!(a.source_address(), b.source_address());
        assert!(a.source_address().is_link_local());
        let g: SocketAddr = "[2001:db8::1]:7443".parse().unwrap();
        assert!(!g.source_address().is_link_local());
        let v4: SocketAddr = "169.254.1.1:7443".parse().unwrap();
        assert!(!v4.source_address().is_link_local(), "only IPv6 link-local counts");
        assert_ne!(1u32.source_address(), 2u32.source_address());
    }
}
