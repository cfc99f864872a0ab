//! Private test networks: a network namespace with a bridge, taps for VMs, and the
//! host side of the test running inside it. Nothing leaves the namespace.
//! Needs root (`ip netns`, `ip tuntap`).

use std::process::{Command, Output};

/// Whether this process runs as root (network namespaces and taps need it).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

/// Fails the calling test with a clear message unless it runs as root.
pub fn require_root() {
    assert!(is_root(), "network-namespace tests need root (run the suite as root, as CI does)");
}

/// A network namespace with bridge `br0`, removed on drop.
pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// Creates namespace `name` with bridge `br0` holding `bridge_addrs` (CIDR strings).
    pub fn create(name: &str, bridge_addrs: &[&str]) -> Result<Netns, String> {
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name]).map_err(|e| format!("{e} (network namespaces need root)"))?;
        let ns = Netns { name: name.to_string() };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        ns.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"])?;
        // No duplicate-address detection delays for the host's IPv6 addresses.
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.br0.accept_dad=0"])?;
        for addr in bridge_addrs {
            let family = if addr.contains(':') { "-6" } else { "-4" };
            let mut args = vec!["ip", family, "addr", "add", addr, "dev", "br0"];
            if family == "-6" {
                args.push("nodad");
            }
            ns.exec_ok(&args)?;
        }
        ns.exec_ok(&["ip", "link", "set", "br0", "up"])?;
        Ok(ns)
    }

    /// Adds tap `tap` to the bridge; QEMU then uses `-netdev tap,ifname=TAP,script=no,downscript=no`.
    pub fn add_tap(&self, tap: &str) -> Result<(), String> {
        self.exec_ok(&["ip", "tuntap", "add", "dev", tap, "mode", "tap"])?;
        self.exec_ok(&["ip", "link", "set", tap, "master", "br0"])?;
        self.exec_ok(&["ip", "link", "set", tap, "up"])
    }

    /// QEMU arguments for a virtio-net NIC on `tap` with `mac`.
    pub fn nic_args(tap: &str, mac: &str) -> Vec<String> {
        Netns::nic_args_model(tap, mac, "virtio-net-pci")
    }

    /// QEMU arguments for a NIC of QEMU model `device` (`virtio-net-pci`, `e1000`,
    /// `e1000e`) on `tap` with `mac`; the netdev's id is the tap's name.
    pub fn nic_args_model(tap: &str, mac: &str, device: &str) -> Vec<String> {
        vec![
            "-netdev".into(),
            format!("tap,id={tap},ifname={tap},script=no,downscript=no"),
            "-device".into(),
            format!("{device},netdev={tap},mac={mac}"),
        ]
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<Output, String> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", args.join(" ")))
    }

    /// Runs a command inside the namespace and requires success.
    pub fn exec_ok(&self, args: &[&str]) -> Result<(), String> {
        let out = self.exec(args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
