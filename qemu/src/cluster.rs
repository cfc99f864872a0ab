//! A cluster of nodes on one virtual L2 segment, as `gridos-qemu run --nodes N` and the
//! multi-node booted tests (tests/files.rs) wire it.
//!
//! Every node has one virtio-net NIC on a segment carried by a user-space learning switch
//! (`crate::switch`; no root needed); the nodes find each other by the overlay's link-local
//! discovery beacons. Node 0's QEMU also puts a user-networking (slirp) port on the
//! switch (through a hub and a second tunnel), whose
//! `hostfwd=udp:127.0.0.1:PORT-10.0.2.20:7443` makes node 0's overlay port reachable from
//! the host. gridctl links to node 0 only and reaches every other node through it: the
//! overlay routes (see `gridctl::client::Client::connect_via`).
//!
//! Addresses: node `i` takes the static IPv4 address `10.0.2.(20+i)/24` (slirp's subnet;
//! only node 0's matters, as the forward's target) and MAC `52:54:00:00:00:(i+1)`.
//! What this leaves to the caller: building the kernel, the disks' lifetime, and which
//! nodes to boot or kill when.

use std::path::{Path, PathBuf};

use crate::Machine;

/// The overlay's UDP port on every node.
pub const OVERLAY_PORT: u16 = 7443;

/// The wiring shared by a cluster's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterNet {
    /// UDP port on 127.0.0.1 of the switch that carries the segment's frames
    /// (`crate::switch::Switch::port`); one switch per cluster.
    pub switch_port: u16,
    /// Host UDP port on 127.0.0.1 forwarded to node 0's overlay port.
    pub host_udp_port: u16,
    /// The switch's uplink port (`crate::switch::Switch::uplink_port`), which node 0's
    /// user-network tunnel binds.
    pub uplink_port: u16,
}

impl ClusterNet {
    /// The wiring of a cluster on `switch`, node 0's overlay port forwarded to
    /// 127.0.0.1:`host_udp_port`.
    pub fn new(switch: &crate::switch::Switch, host_udp_port: u16) -> ClusterNet {
        ClusterNet { switch_port: switch.port(), host_udp_port, uplink_port: switch.uplink_port() }
    }
}

/// Node `index`'s IPv4 address on the segment.
pub fn node_ip4(index: u32) -> String {
    format!("10.0.2.{}", 20 + index)
}

/// The QEMU machine of node `index`: `base` (kernel, memory, accelerator, command line,
/// time limit) with `disk` as its only disk and its NIC on the segment; node 0 also gets
/// the host's forward. `index` stays below 200 (addresses and MACs).
pub fn node_machine(base: &Machine, index: u32, net: &ClusterNet, disk: &Path) -> Result<Machine, String> {
    if index >= 200 {
        return Err(format!("cluster node index {index} too large"));
    }
    let mut m = base.clone();
    m.cmdline = format!("gridos.node={index} gridos.ip4={}/24 {}", node_ip4(index), base.cmdline).trim_end().to_string();
    m.disks = vec![disk.to_path_buf()];
    let mac = format!("52:54:00:00:00:{:02x}", index + 1);
    let local = crate::switch::free_local_udp_port()?;
    let segment = format!("socket,id=l2,udp=127.0.0.1:{},localaddr=127.0.0.1:{local}", net.switch_port);
    m.extra_args.extend(["-netdev".into(), segment, "-device".into(), format!("virtio-net-pci,netdev=l2,mac={mac}")]);
    if index == 0 {
        // The host's user-network port is a switch port of its own (a hub joins it to
        // a second tunnel), not a hub beside node 0's NIC: on a hub it received, and
        // user networking tried to route, every frame node 0 relays to the others.
        let uplink = net.uplink_port;
        m.extra_args.extend(
            [
                "-netdev".into(),
                format!("socket,id=uplink,udp=127.0.0.1:{},localaddr=127.0.0.1:{uplink}", net.switch_port),
                "-netdev".into(),
                format!(
                    "user,id=host,net=10.0.2.0/24,hostfwd=udp:127.0.0.1:{}-{}:{OVERLAY_PORT}",
                    net.host_udp_port,
                    node_ip4(0)
                ),
                "-netdev".into(),
                "hubport,id=hub-uplink,hubid=0,netdev=uplink".into(),
                "-netdev".into(),
                "hubport,id=hub-host,hubid=0,netdev=host".into(),
            ]
            .into_iter()
            .collect::<Vec<String>>(),
        );
    }
    Ok(m)
}

/// Creates (sparse) or keeps the disk of node `index` in `dir`; returns its path.
/// A disk that exists keeps its node's identity and shards across runs.
pub fn node_disk(dir: &Path, index: u32, size_mib: u64) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(format!("node{index}.img"));
    if !path.exists() {
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(size_mib << 20))
            .map_err(|e| format!("cannot create disk {}: {e}", path.display()))?;
    }
    Ok(path)
}

/// The overlay key a node printed at boot (`overlay: key HEX ...`), if it did.
pub fn overlay_key(serial: &str) -> Option<String> {
    let line = serial.lines().find(|l| l.contains("overlay: key "))?;
    let key = line.split_whitespace().skip_while(|w| *w != "key").nth(1)?;
    (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())).then(|| key.to_string())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn node_zero_forwards_the_host_port_and_others_only_join_the_segment() {
        let base = Machine::new(Path::new("/k"));
        let net = ClusterNet { switch_port: 23001, host_udp_port: 17443, uplink_port: 23002 };
        let m0 = node_machine(&base, 0, &net, Path::new("/d0")).expect("node 0");
        let args0 = m0.extra_args.join(" ");
        assert!(args0.contains("udp=127.0.0.1:23001,localaddr=127.0.0.1:"), "{args0}");
        assert!(args0.contains("id=uplink,udp=127.0.0.1:23001,localaddr=127.0.0.1:23002"), "{args0}");
        assert!(args0.contains("hostfwd=udp:127.0.0.1:17443-10.0.2.20:7443"), "{args0}");
        assert!(m0.cmdline.starts_with("gridos.node=0 gridos.ip4=10.0.2.20/24"), "{}", m0.cmdline);
        let m3 = node_machine(&base, 3, &net, Path::new("/d3")).expect("node 3");
        let args3 = m3.extra_args.join(" ");
        assert!(!args3.contains("hostfwd") && args3.contains("mac=52:54:00:00:00:04"), "{args3}");
        assert_eq!(m3.disks, vec![PathBuf::from("/d3")]);
    }

    #[test]
    fn overlay_key_is_read_from_the_boot_line_only_when_well_formed() {
        let k = "ab".repeat(32);
        assert_eq!(overlay_key(&format!("[ 0.1] INFO  overlay: key {k} address fd67::1 ...")), Some(k));
        assert_eq!(overlay_key("overlay: key zz address"), None);
        assert_eq!(overlay_key("nothing"), None);
    }
}
