//! The underlay ingress filter: which Ethernet frames a node's physical NIC lets in
//! when the overlay is the only way to reach the node.
//!
//! Allowed: ARP; IPv4 UDP to the overlay port or to the DHCP client port (68);
//! IPv6 UDP to the overlay port; ICMPv6 neighbour discovery (router/neighbour
//! solicitation and advertisement, redirect: types 133-137). Everything else, ping
//! and TCP included, is dropped unseen, so the node answers nothing (no RST, no ICMP
//! errors) on the underlay. IPv4 fragments and IPv6 extension headers are dropped.

/// The UDP port the overlay listens on, on every underlay address.
pub const DEFAULT_PORT: u16 = 7443;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const DHCP_CLIENT_PORT: u16 = 68;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Whether the underlay should accept `frame` (an Ethernet II frame).
pub fn underlay_accepts(frame: &[u8], overlay_port: u16) -> bool {
    let Some(ethertype) = be16(frame, 12) else { return false };
    let Some(payload) = frame.get(14..) else { return false };
    match ethertype {
        ETHERTYPE_ARP => true,
        ETHERTYPE_IPV4 => ipv4_accepts(payload, overlay_port),
        ETHERTYPE_IPV6 => ipv6_accepts(payload, overlay_port),
        _ => false,
    }
}

fn ipv4_accepts(p: &[u8], overlay_port: u16) -> bool {
    let Some(&version_ihl) = p.first() else { return false };
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return false;
    }
    // Fragments (MF set or a non-zero offset) never reach the stack.
    match be16(p, 6) {
        Some(flags_offset) if flags_offset & 0x3fff == 0 => {}
        _ => return false,
    }
    if p.get(9) != Some(&PROTO_UDP) {
        return false;
    }
    matches!(be16(p, header_len + 2), Some(port) if port == overlay_port || port == DHCP_CLIENT_PORT)
}

fn ipv6_accepts(p: &[u8], overlay_port: u16) -> bool {
    if p.first().map(|b| b >> 4) != Some(6) || p.len() < 40 {
        return false;
    }
    match p[6] {
        PROTO_UDP => be16(p, 40 + 2) == Some(overlay_port),
        PROTO_ICMPV6 => matches!(p.get(40), Some(133..=137)),
        _ => false,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4_udp(dst_port: u16, flags_offset: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 1];
        p.extend_from_slice(&flags_offset.to_be_bytes());
        p.extend_from_slice(&[64, PROTO_UDP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(&[0x30, 0x39]);
        p.extend_from_slice(&dst_port.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p
    }

    fn ipv6(next: u8, first_payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, first_payload.len() as u8, next, 64];
        p.extend_from_slice(&[0u8; 32]);
        p.extend_from_slice(first_payload);
        p
    }

    #[test]
    fn overlay_dhcp_arp_and_nd_pass() {
        assert!(underlay_accepts(&eth(ETHERTYPE_ARP, &[0; 28]), DEFAULT_PORT));
        assert!(underlay_accepts(&eth(ETHERTYPE_IPV4, &ipv4_udp(DEFAULT_PORT, 0x4000)), DEFAULT_PORT));
        assert!(underlay_accepts(&eth(ETHERTYPE_IPV4, &ipv4_udp(68, 0)), DEFAULT_PORT));
        assert!(underlay_accepts(&eth(ETHERTYPE_IPV6, &ipv6(PROTO_UDP, &[0, 1, 0x1d, 0x13, 0, 8, 0, 0])), DEFAULT_PORT));
        for nd in 133..=137 {
            assert!(underlay_accepts(&eth(ETHERTYPE_IPV6, &ipv6(PROTO_ICMPV6, &[nd, 0, 0, 0])), DEFAULT_PORT));
        }
    }

    #[test]
    fn everything_else_is_dropped() {
        // Ping (v4 and v6), TCP, other UDP ports, fragments, extension headers, junk.
        let mut ping4 = ipv4_udp(7, 0);
        ping4[9] = 1;
        assert!(!underlay_accepts(&eth(ETHERTYPE_IPV4, &ping4), DEFAULT_PORT));
        assert!(!underlay_accepts(&eth(ETHERTYPE_IPV6, &ipv6(PROTO_ICMPV6, &[128, 0, 0, 0])), DEFAULT_PORT));
        let mut tcp = ipv4_udp(DEFAULT_PORT, 0);
        tcp[9] = 6;
        assert!(!underlay_accepts(&eth(ETHERTYPE_IPV4, &tcp), DEFAULT_PORT));
        assert!(!underlay_accepts(&eth(ETHERTYPE_IPV4, &ipv4_udp(53, 0)), DEFAULT_PORT));
        assert!(!underlay_accepts(&eth(ETHERTYPE_IPV4, &ipv4_udp(DEFAULT_PORT, 0x2000)), DEFAULT_PORT));
        assert!(!underlay_accepts(&eth(ETHERTYPE_IPV4, &ipv4_udp(DEFAULT_PORT, 0x0001)), DEFAULT_PORT));
        assert!(!underlay_accepts(&eth(ETHERTYPE_IPV6, &ipv6(0, &[PROTO_UDP, 0, 0, 0, 0, 0, 0, 0])), DEFAULT_PORT));
        assert!(!underlay_accepts(&eth(0x88cc, &[0; 40]), DEFAULT_PORT));
    }

    #[test]
    fn truncated_frames_never_panic_and_are_dropped() {
        let good = eth(ETHERTYPE_IPV4, &ipv4_udp(DEFAULT_PORT, 0));
        // Anything shorter than the UDP destination port (frame bytes 36..38) is dropped.
        for len in 0..38 {
            assert!(!underlay_accepts(&good[..len], DEFAULT_PORT), "accepted a {len}-byte prefix");
        }
        let good6 = eth(ETHERTYPE_IPV6, &ipv6(PROTO_UDP, &[0, 1, 0x1d, 0x13, 0, 8, 0, 0]));
        for len in 0..54 + 4 {
            assert!(!underlay_accepts(&good6[..len], DEFAULT_PORT), "accepted a {len}-byte prefix");
        }
        let mut bad_ihl = ipv4_udp(DEFAULT_PORT, 0);
        bad_ihl[0] = 0x4f;
        assert!(!underlay_accepts(&eth(ETHERTYPE_IPV4, &bad_ihl), DEFAULT_PORT));
    }
}
