//! NIC tests: the network checks of `net.rs` and `overlay.rs` on the Intel NICs
//! (QEMU `e1000` = 82540EM, `e1000e` = 82574L) beside virtio-net.
//!
//! One boot per NIC model on QEMU user networking: DHCP, the inventory line (model,
//! MAC, link) and how interrupts arrive, TCP echo of exact bytes, a link flap over
//! QMP (`set_link`) that the node logs and survives, and a bulk echo whose MB/s is
//! printed side by side (the bench). A node whose e1000 hangs (a test-mode fault)
//! takes it out of service and serves on through virtio-net. Then, as root, an
//! e1000 node and an e1000e node on one bridge: the host sends both junk frames,
//! pings both over IPv4 and IPv6 and echoes exact bytes over TCP, and the e1000
//! node reaches the e1000e node over the encrypted overlay (link-local discovery).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gridos_qemu::netns::{require_root, Netns};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, Outcome, RunningMachine};
use gridos_tests::Qmp;

/// A NIC model: QEMU device, the name the node gives it, the link it reports, how
/// its interrupts arrive.
struct Model {
    device: &'static str,
    name: &'static str,
    link: &'static str,
    interrupts: &'static str,
}

const VIRTIO: Model = Model { device: "virtio-net-pci", name: "virtio-net", link: "not reported", interrupts: "MSI-X" };
const E1000: Model = Model { device: "e1000", name: "Intel 82540EM (e1000)", link: "up", interrupts: "INTx (shared)" };
const E1000E: Model = Model { device: "e1000e", name: "Intel 82574L (e1000e)", link: "up", interrupts: "MSI-X" };

fn machine(cmdline: &str) -> Machine {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = cmdline.into();
    m.timeout = Duration::from_secs(240);
    m
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn wait_or_fail(vm: &RunningMachine, needle: &str) {
    if !vm.wait_for(needle, Duration::from_secs(60)) {
        panic!("node never printed {needle:?}\n--- serial ---\n{}", vm.serial());
    }
}

fn assert_healthy(serial: &str) {
    for bad in ["PANIC", "FATAL EXCEPTION", "gridos fatal", "taken out of service"] {
        assert!(!serial.contains(bad), "node reported {bad}\n--- serial ---\n{serial}");
    }
}

/// Messages of many sizes on one connection, each echoed exactly.
fn echo_messages(port: u16, count: u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the node's TCP echo");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    for n in 0..count {
        let len = 1 + (n * 37 % 4000) as usize;
        let msg: Vec<u8> = (0..len as u64).map(|i| pattern(i + n)).collect();
        s.write_all(&msg).expect("send");
        let mut back = vec![0u8; len];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg, "message {n} came back different");
    }
}

/// `total` bytes through the echo (a writer thread, a verifying reader); MB/s each way.
fn echo_bulk(port: u16, total: u64) -> f64 {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut writer = s.try_clone().expect("clone");
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let chunk: Vec<u8> = (0..251 * 256).map(pattern).collect();
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(chunk.len() as u64) as usize;
            writer.write_all(&chunk[..n]).expect("send");
            sent += n as u64;
        }
        writer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    let (mut reader, mut received, mut buf) = (s, 0u64, vec![0u8; 1 << 16]);
    while received < total {
        let n = reader.read(&mut buf).expect("read echo");
        assert!(n > 0, "echo stream ended after {received} bytes");
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, pattern(received + i as u64), "byte {} differs", received + i as u64);
        }
        received += n as u64;
    }
    sender.join().expect("sender");
    total as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// Boots one node with `model` on user networking and checks it; returns the bulk MB/s.
fn user_networking_checks(model: &Model, bulk_bytes: u64) -> f64 {
    let port = free_tcp_port();
    let qmp_path = std::env::temp_dir().join(format!("gridos-nics-{}-{}.qmp", std::process::id(), model.device));
    let _ = std::fs::remove_file(&qmp_path);
    let mut m = machine("gridos.test=serve gridos.services=echo gridos.underlay=open");
    m.extra_args = vec![
        "-netdev".into(),
        format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:7"),
        "-device".into(),
        format!("{},netdev=n0", model.device),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp_path.display()),
    ];
    let vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    wait_or_fail(&vm, "net eth0: dhcp lease 10.0.2.15/24");
    wait_or_fail(&vm, "services: echo");
    let inventory = format!("inventory: nic eth0 {}, mac 52:54:00:12:34:56, link {}", model.name, model.link);
    assert!(vm.serial().contains(&inventory), "missing {inventory:?}\n{}", vm.serial());
    let interrupts = format!("{}, interrupts {}", model.name, model.interrupts);
    assert!(vm.serial().contains(&interrupts), "missing {interrupts:?}\n{}", vm.serial());

    echo_messages(port, 100);
    let mb_per_s = echo_bulk(port, bulk_bytes);

    if model.link == "up" {
        // The link goes down and comes back: the node logs both and serves on.
        let mut qmp = Qmp::connect(&qmp_path);
        qmp.command(r#"{"execute":"set_link","arguments":{"name":"n0","up":false}}"#);
        wait_or_fail(&vm, "net eth0: link down");
        qmp.command(r#"{"execute":"set_link","arguments":{"name":"n0","up":true}}"#);
        wait_or_fail(&vm, "net eth0: link up");
        echo_messages(port, 20);
    }
    let serial = vm.serial();
    assert_healthy(&serial);
    drop(vm.kill());
    let _ = std::fs::remove_file(&qmp_path);
    mb_per_s
}

#[test]
fn dhcp_tcp_echo_link_flap_and_bench_on_virtio_e1000_and_e1000e() {
    const BULK: u64 = 16 << 20;
    let mut figures = Vec::new();
    for model in [&VIRTIO, &E1000, &E1000E] {
        figures.push((model.name, user_networking_checks(model, BULK)));
    }
    let virtio = figures[0].1;
    let line: Vec<String> = figures.iter().map(|(name, mbs)| format!("{name} {mbs:.2} MB/s ({:.2}x virtio)", mbs / virtio)).collect();
    eprintln!("nic bench: TCP echo of {} MiB through QEMU user networking, each way: {}", BULK >> 20, line.join(", "));
}

#[test]
fn an_e1000_whose_transmit_hangs_is_taken_out_of_service_while_virtio_serves() {
    // eth0 virtio-net (DHCP, the echo), eth1 e1000 whose transmit completions the
    // driver is told to ignore (test-mode fault): its first frames (IPv6 router
    // solicitation) never complete.
    let port = free_tcp_port();
    let mut m = machine("gridos.test=serve gridos.services=echo gridos.underlay=open gridos.fault=e1000-tx-hang");
    m.extra_args = [
        "-netdev", &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:7"), "-device", "virtio-net-pci,netdev=n0",
        "-netdev", "user,id=n1", "-device", "e1000,netdev=n1",
    ].map(String::from).to_vec();
    let vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    wait_or_fail(&vm, "inventory: nic eth1 Intel 82540EM (e1000), mac 52:54:00:12:34:57, link up");
    wait_or_fail(&vm, "net eth0: dhcp lease 10.0.2.15/24");
    wait_or_fail(&vm, "net eth1 (Intel 82540EM (e1000)): transmit hang (no progress in 5 s); taken out of service, the node runs on");
    echo_messages(port, 50);
    let serial = vm.serial();
    for bad in ["PANIC", "FATAL EXCEPTION", "gridos fatal"] {
        assert!(!serial.contains(bad), "node reported {bad}\n--- serial ---\n{serial}");
    }
    assert_eq!(serial.matches("taken out of service").count(), 1, "{serial}");
    drop(vm.kill());
}

/// Boots once to create the node's identity on its disk; returns its overlay address.
fn identity(disk: &Path, model: &Model) -> String {
    let mut m = machine("gridos.test=boot");
    m.disks = vec![disk.to_path_buf()];
    m.extra_args = vec!["-netdev".into(), "user,id=n0".into(), "-device".into(), format!("{},netdev=n0", model.device)];
    let out = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.passed(), "identity boot failed\n{}", out.report());
    let line = out.serial.lines().find(|l| l.contains("overlay: key ")).unwrap_or_else(|| panic!("{}", out.report()));
    let mut words = line.split_whitespace().skip_while(|w| *w != "key");
    words.nth(3).expect("address").to_string()
}

fn ping(ns: &Netns, args: &[&str]) -> bool {
    let mut all = vec!["ping", "-c", "3", "-i", "0.2", "-W", "5"];
    all.extend_from_slice(args);
    ns.exec(&all).map(|o| o.status.success()).unwrap_or(false)
}

fn disk(name: &str) -> PathBuf {
    let dir = gridos_qemu::workspace_root().join("target/test-disks");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(format!("nics-{}-{name}.img", std::process::id()));
    std::fs::File::create(&path).and_then(|f| f.set_len(16 << 20)).expect("disk");
    path
}

const TCP_ECHO: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], 7), 10)
for n in range(50):
    msg = bytes((i + n) % 251 for i in range(1 + n * 37 % 4000))
    s.sendall(msg)
    got = b''
    while len(got) < len(msg):
        d = s.recv(65536)
        if not d: break
        got += d
    if got != msg: print(f'message {n} differs'); sys.exit(1)
print('echoed')
"#;

/// Sends junk frames (random ethertypes and bytes, runts, truncated and lying IP
/// headers, broadcast junk) at the MAC in argv[1] from a raw socket on the bridge.
const GARBAGE: &str = r#"
import os, random, socket, struct, sys
mac = bytes.fromhex(sys.argv[1].replace(':', ''))
random.seed(int(sys.argv[2]))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('br0', 0))
src = bytes.fromhex('02aabbccddee')
def send(f):
    try: s.send(f)
    except OSError: pass
for i in range(2000):
    t = random.choice([0x0800, 0x86dd, 0x0806, 0x8100, random.randrange(65536)])
    dst = mac if i % 5 else b'\xff' * 6
    send(dst + src + struct.pack('!H', t) + os.urandom(random.randrange(0, 1500)))
    if i % 10 == 0:
        send(mac + src)
        send(mac + src + b'\x08\x00' + bytes([0x4f, 0, 0xff, 0xff]) + os.urandom(30))
print('sent')
"#;

#[test]
fn e1000_and_e1000e_nodes_ping_tcp_and_overlay_on_one_bridge() {
    require_root();
    let (disk_a, disk_b) = (disk("a"), disk("b"));
    let addr_b = identity(&disk_b, &E1000E);
    let ns = Netns::create(&format!("gridos-{}-nics", std::process::id()), &["10.51.0.1/24", "fd51::1/64"])
        .unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tapa").unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tapb").unwrap_or_else(|e| panic!("{e}"));

    // B (e1000e): the overlay echo server, its underlay open for the host's checks.
    let mut mb = machine("gridos.test=serve gridos.services=echo gridos.underlay=open gridos.ip4=10.51.0.12/24 gridos.ip6=fd51::12/64");
    mb.disks = vec![disk_b.clone()];
    mb.netns = Some(ns.name.clone());
    mb.extra_args = Netns::nic_args_model("tapb", "52:54:00:00:05:0b", E1000E.device);
    let node_b = mb.spawn().unwrap_or_else(|e| panic!("{e}"));
    wait_or_fail(&node_b, "gridos ready in ");
    assert!(node_b.serial().contains("inventory: nic eth0 Intel 82574L (e1000e), mac 52:54:00:00:05:0b, link up"), "{}", node_b.serial());

    // A (e1000) serving: the host pings it too.
    let mut ma = machine("gridos.test=serve gridos.services=echo gridos.underlay=open gridos.ip4=10.51.0.11/24 gridos.ip6=fd51::11/64");
    ma.disks = vec![disk_a.clone()];
    ma.netns = Some(ns.name.clone());
    ma.extra_args = Netns::nic_args_model("tapa", "52:54:00:00:05:0a", E1000.device);
    let node_a = ma.spawn().unwrap_or_else(|e| panic!("{e}"));
    wait_or_fail(&node_a, "gridos ready in ");
    assert!(node_a.serial().contains("inventory: nic eth0 Intel 82540EM (e1000), mac 52:54:00:00:05:0a, link up"), "{}", node_a.serial());
    let nodes = [
        (&node_a, "10.51.0.11", "fd51::11", "fe80::5054:ff:fe00:50a%br0", "52:54:00:00:05:0a"),
        (&node_b, "10.51.0.12", "fd51::12", "fe80::5054:ff:fe00:50b%br0", "52:54:00:00:05:0b"),
    ];
    for (node, v4, v6, ll, mac) in nodes {
        for seed in 0..2 {
            let out = ns.exec(&["python3", "-c", GARBAGE, mac, &seed.to_string()]).unwrap_or_else(|e| panic!("{e}"));
            assert!(out.status.success(), "garbage sender failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(ping(&ns, &[v4]), "no IPv4 echo reply from {v4}\n{}", node.serial());
        assert!(ping(&ns, &["-6", v6]), "no IPv6 echo reply from {v6}\n{}", node.serial());
        assert!(ping(&ns, &["-6", ll]), "no link-local echo reply from {ll}\n{}", node.serial());
        let out = ns.exec(&["python3", "-c", TCP_ECHO, v4]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "echoed", "TCP echo of {v4}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_healthy(&node_a.serial());
    drop(node_a.kill());

    // A (e1000) reaches B (e1000e) over the overlay, found by link-local discovery.
    let bytes: u64 = 4 << 20;
    let mut mc = machine(&format!("gridos.test=echo-client gridos.ip4=none gridos.echo_client=[{addr_b}]:7 gridos.echo_bytes={bytes}"));
    mc.disks = vec![disk_a.clone()];
    mc.netns = Some(ns.name.clone());
    mc.extra_args = Netns::nic_args_model("tapa", "52:54:00:00:05:0a", E1000.device);
    let out: Outcome = mc.run().unwrap_or_else(|e| panic!("{e}"));
    let expected = format!("echo client: {bytes} bytes echoed intact by [{addr_b}]:7");
    assert!(out.passed() && out.serial.contains(&expected), "overlay echo e1000 -> e1000e failed\n{}\n--- B ---\n{}", out.report(), node_b.serial());
    if let Some(us) = out.serial.lines().find_map(|l| l.split(&expected).nth(1)?.trim().strip_prefix("in ")?.strip_suffix(" us")?.parse::<f64>().ok()) {
        eprintln!("nic bench: overlay echo e1000 -> e1000e, {} MiB in {:.1} s: {:.2} MB/s each way", bytes >> 20, us / 1e6, bytes as f64 / us);
    }
    assert_healthy(&node_b.serial());
    drop(node_b.kill());
    for d in [&disk_a, &disk_b] {
        let _ = std::fs::remove_file(d);
    }
}

