//! The overlay, booted: three nodes in a line (A - B - C; A and C not linked)
//! where A reaches C's overlay address over TCP through B; then B stops, C is
//! rebooted to accept A directly (same disk, so the same identity and address)
//! and A reaches C again. From the host, the underlay answers nothing: no ping,
//! no TCP (not even resets), no ICMP errors, and no reply to forged handshakes.

use std::path::PathBuf;
use std::time::Duration;

use gridos_qemu::netns::{require_root, Netns};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, Outcome};

struct NodeSpec {
    name: &'static str,
    tap: &'static str,
    mac: &'static str,
    ip: &'static str,
    disk: PathBuf,
}

fn machine(node: &NodeSpec, cmdline: String) -> Machine {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = cmdline;
    m.disks = vec![node.disk.clone()];
    m.timeout = Duration::from_secs(180);
    m
}

/// Boots once to create the node's identity on its disk; returns (key hex, address).
fn identity(node: &NodeSpec) -> (String, String) {
    let mut m = machine(node, "gridos.test=boot".into());
    m.extra_args = ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"].map(String::from).to_vec();
    let out = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.passed(), "identity boot of {} failed\n{}", node.name, out.report());
    let line = out.serial.lines().find(|l| l.contains("overlay: key ")).unwrap_or_else(|| panic!("{}", out.report()));
    let mut words = line.split_whitespace().skip_while(|w| *w != "key");
    let key = words.nth(1).expect("key").to_string();
    let address = words.nth(1).expect("address").to_string();
    assert!(line.contains("new identity, saved to disk"), "{line}");
    (key, address)
}

/// Prints the breakdown lines (`net::timing`) a node logged after its first `skip`, under
/// `title`; returns how many it logged in all.
fn print_breakdown(title: &str, serial: &str, skip: usize) -> usize {
    let lines: Vec<&str> = serial.lines().filter_map(|l| l.find("breakdown: ").map(|i| &l[i + "breakdown: ".len()..])).collect();
    if lines.len() > skip {
        eprintln!("{title}");
        for l in &lines[skip..] {
            eprintln!("  {l}");
        }
    }
    lines.len()
}

fn peers(list: &[(&str, &NodeSpec)]) -> String {
    list.iter().map(|(key, n)| format!("{key}@{}:7443", n.ip)).collect::<Vec<_>>().join(",")
}

fn in_ns(m: &mut Machine, ns: &Netns, node: &NodeSpec) {
    m.netns = Some(ns.name.clone());
    m.extra_args = Netns::nic_args(node.tap, node.mac);
}

fn assert_echo(out: &Outcome, bytes: u64, target: &str, others: &str) {
    assert!(out.passed(), "node A could not reach C over the overlay\n{}\n{others}", out.report());
    let expected = format!("echo client: {bytes} bytes echoed intact by [{target}]:7");
    assert!(out.serial.contains(&expected), "missing {expected:?}\n{}", out.report());
    // Bench figure (printed, not asserted): the client logs how long the echo took.
    if let Some(us) = out.serial.lines().find_map(|l| l.split(&expected).nth(1)?.trim().strip_prefix("in ")?.strip_suffix(" us")?.parse::<f64>().ok()) {
        eprintln!("echo bench: {} MiB echoed by [{target}]:7 in {:.1} s: {:.2} MB/s each way", bytes >> 20, us / 1e6, bytes as f64 / us);
    }
}

const SCAN: &str = r#"
import os, socket, sys
host = sys.argv[1]
found = []
for port in [7, 9, 19, 22, 80, 443, 7443, 8080]:
    s = socket.socket(); s.settimeout(1.5)
    try:
        s.connect((host, port)); found.append(f"tcp {port} open")
    except ConnectionRefusedError:
        found.append(f"tcp {port} refused")
    except OSError:
        pass
    s.close()
for port in [7, 53, 9999, 7443]:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(1.5); u.connect((host, port))
    for payload in [b"hello", bytes([1, 0, 0, 0]) + os.urandom(156), os.urandom(300)]:
        u.send(payload)
    try:
        u.recv(2048); found.append(f"udp {port} answered")
    except ConnectionRefusedError:
        found.append(f"udp {port} icmp-unreachable")
    except OSError:
        pass
print(" ".join(found) if found else "silent")
"#;

#[test]
fn three_nodes_in_a_line_then_relinked_and_underlay_silent() {
    require_root();
    let dir = gridos_qemu::workspace_root().join("target/test-disks");
    std::fs::create_dir_all(&dir).expect("dir");
    let node = |name, tap, mac, ip| {
        let disk = dir.join(format!("overlay-{}-{name}.img", std::process::id()));
        let f = std::fs::File::create(&disk).expect("disk");
        f.set_len(16 << 20).expect("size");
        NodeSpec { name, tap, mac, ip, disk }
    };
    let a = node("a", "tapa", "52:54:00:00:01:0a", "10.40.0.11");
    let b = node("b", "tapb", "52:54:00:00:01:0b", "10.40.0.12");
    let c = node("c", "tapc", "52:54:00:00:01:0c", "10.40.0.13");
    let (ka, _) = identity(&a);
    let (kb, _) = identity(&b);
    let (kc, addr_c) = identity(&c);

    let ns = Netns::create(&format!("gridos-{}-ovl", std::process::id()), &["10.40.0.1/24"]).unwrap_or_else(|e| panic!("{e}"));
    for n in [&a, &b, &c] {
        ns.add_tap(n.tap).unwrap_or_else(|e| panic!("{e}"));
    }
    // Discovery off: on this one bridge it would link A and C directly.
    let base = |n: &NodeSpec| format!("gridos.ip4={}/24 gridos.overlay.discovery=off", n.ip);

    // B links A and C; C knows only B and accepts no other key, so it stays silent
    // towards A.
    let mut mb = machine(&b, format!("gridos.test=serve {} gridos.overlay.peers={}", base(&b), peers(&[(&ka, &a), (&kc, &c)])));
    in_ns(&mut mb, &ns, &b);
    let node_b = mb.spawn().unwrap_or_else(|e| panic!("{e}"));
    let mut mc = machine(&c, format!(
        "gridos.test=serve gridos.services=echo {} gridos.overlay.accept_any=0 gridos.overlay.peers={}",
        base(&c), peers(&[(&kb, &b)])
    ));
    in_ns(&mut mc, &ns, &c);
    let node_c = mc.spawn().unwrap_or_else(|e| panic!("{e}"));
    let client = |peer_list: String| {
        let mut m = machine(&a, format!(
            "gridos.test=echo-client {} gridos.overlay.peers={peer_list} gridos.echo_client=[{addr_c}]:7 gridos.echo_bytes={}",
            base(&a), 16 << 20
        ));
        in_ns(&mut m, &ns, &a);
        m.run().unwrap_or_else(|e| panic!("{e}"))
    };
    let out = client(peers(&[(&kb, &b), (&kc, &c)]));
    assert_echo(&out, 16 << 20, &addr_c, &format!("--- B ---\n{}\n--- C ---\n{}", node_b.serial(), node_c.serial()));
    assert!(!node_c.serial().contains("link up with fd67") || node_c.serial().matches("link up with").count() == 1,
        "C linked with more than B\n{}", node_c.serial());

    // The underlay of C answers nothing.
    assert!(
        !ns.exec(&["ping", "-c", "2", "-W", "1", c.ip]).map(|o| o.status.success()).unwrap_or(true),
        "C answered a ping on the underlay"
    );
    let scan = ns.exec(&["python3", "-c", SCAN, c.ip]).unwrap_or_else(|e| panic!("{e}"));
    let scan_text = String::from_utf8_lossy(&scan.stdout).trim().to_string();
    assert_eq!(scan_text, "silent", "underlay scan of C found: {scan_text}\n{}", String::from_utf8_lossy(&scan.stderr));
    let serial_c = node_c.serial();
    assert!(!serial_c.contains("PANIC") && !serial_c.contains("FATAL"), "{serial_c}");

    // B goes away; C is told about A and rebooted on the same disk.
    drop(node_b.kill());
    drop(node_c.kill());
    let mut mc = machine(&c, format!(
        "gridos.test=serve gridos.services=echo {} gridos.overlay.peers={}",
        base(&c), peers(&[(&kb, &b), (&ka, &a)])
    ));
    in_ns(&mut mc, &ns, &c);
    let node_c = mc.spawn().unwrap_or_else(|e| panic!("{e}"));
    assert!(node_c.wait_for("identity from disk", Duration::from_secs(60)), "{}", node_c.serial());
    assert!(node_c.serial().contains(&addr_c), "C's address changed across reboot\n{}", node_c.serial());
    let out = client(peers(&[(&kb, &b), (&kc, &c)]));
    assert_echo(&out, 16 << 20, &addr_c, &format!("--- C ---\n{}", node_c.serial()));
    drop(node_c.kill());
    for n in [&a, &b, &c] {
        let _ = std::fs::remove_file(&n.disk);
    }
}

#[test]
fn nodes_on_one_segment_find_each_other_by_link_local_discovery() {
    require_root();
    let dir = gridos_qemu::workspace_root().join("target/test-disks");
    std::fs::create_dir_all(&dir).expect("dir");
    let node = |name, tap, mac| {
        let disk = dir.join(format!("discovery-{}-{name}.img", std::process::id()));
        std::fs::File::create(&disk).and_then(|f| f.set_len(16 << 20)).expect("disk");
        NodeSpec { name, tap, mac, ip: "", disk }
    };
    let a = node("a", "tapd", "52:54:00:00:02:0a");
    let b = node("b", "tape", "52:54:00:00:02:0b");
    let (_, addr_b) = identity(&b);
    let ns = Netns::create(&format!("gridos-{}-disc", std::process::id()), &[]).unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap(a.tap).unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap(b.tap).unwrap_or_else(|e| panic!("{e}"));
    // No static peers and no IPv4: only IPv6 link-local beacons can bring them together.
    // B's underlay stays open too, for the plain-TCP baseline of the same link below.
    let mut mb = machine(&b, "gridos.test=serve gridos.services=echo gridos.ip4=none gridos.underlay=open".into());
    in_ns(&mut mb, &ns, &b);
    let node_b = mb.spawn().unwrap_or_else(|e| panic!("{e}"));
    let bytes: u64 = 4 << 20;
    let mut ma = machine(&a, format!("gridos.test=echo-client gridos.ip4=none gridos.echo_client=[{addr_b}]:7 gridos.echo_bytes={bytes}"));
    in_ns(&mut ma, &ns, &a);
    let out = ma.run().unwrap_or_else(|e| panic!("{e}"));
    assert_echo(&out, bytes, &addr_b, &format!("--- B ---\n{}", node_b.serial()));
    assert!(out.serial.contains(&format!("overlay: discovered {addr_b} at fe80::")), "{}", out.report());
    print_breakdown("overlay echo, client A:", &out.serial, 0);
    let b_seen = print_breakdown("overlay echo, server B:", &node_b.serial(), 0);

    // Bench baseline: the same echo as plain TCP over the same link (B's link-local address).
    let b_link_local = "fe80::5054:ff:fe00:20b";
    let mut plain = machine(&a, format!(
        "gridos.test=echo-client gridos.ip4=none gridos.underlay=open gridos.echo_client=[{b_link_local}]:7 gridos.echo_bytes={bytes}"
    ));
    in_ns(&mut plain, &ns, &a);
    let base = plain.run().unwrap_or_else(|e| panic!("{e}"));
    assert_echo(&base, bytes, b_link_local, &format!("--- B ---\n{}", node_b.serial()));
    print_breakdown("plain TCP echo, client A:", &base.serial, 0);
    print_breakdown("plain TCP echo, server B:", &node_b.serial(), b_seen);
    let took_us = |o: &Outcome, target: &str| {
        let marker = format!("bytes echoed intact by [{target}]:7 in ");
        o.serial.lines().find_map(|l| l.split(&marker).nth(1)?.strip_suffix(" us")?.parse::<f64>().ok())
    };
    if let (Some(overlay_us), Some(plain_us)) = (took_us(&out, &addr_b), took_us(&base, b_link_local)) {
        eprintln!(
            "overlay bench: A->B {} MiB echo over the overlay {:.2} MB/s, plain TCP on the same link {:.2} MB/s, ratio {:.2}",
            bytes >> 20,
            bytes as f64 / overlay_us,
            bytes as f64 / plain_us,
            plain_us / overlay_us
        );
    }
    drop(node_b.kill());
    for n in [&a, &b] {
        let _ = std::fs::remove_file(&n.disk);
    }
}
