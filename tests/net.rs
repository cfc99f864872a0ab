//! Network tests: the booted node's virtio-net driver and smoltcp stack, checked
//! from the host side. User-mode networking (no root) covers DHCPv4, TCP and UDP;
//! private network namespaces with taps on a bridge (root) cover ping over IPv4
//! and IPv6, two nodes talking over IPv6 link-local, and garbage frames.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use gridos_qemu::netns::{require_root, Netns};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, RunningMachine};

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

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The byte at offset `i` of the test streams (the node's source service uses it too).
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn wait_or_fail(vm: &RunningMachine, needle: &str) {
    if !vm.wait_for(needle, Duration::from_secs(60)) {
        panic!("node never printed {needle:?}\n--- serial ---\n{}", vm.serial());
    }
}

fn assert_healthy(vm: &RunningMachine) {
    let serial = vm.serial();
    for bad in ["PANIC", "FATAL EXCEPTION", "gridos fatal"] {
        assert!(!serial.contains(bad), "node reported {bad}\n--- serial ---\n{serial}");
    }
}

#[test]
fn dhcp_then_tcp_and_udp_echo_exact_bytes_including_64_mib() {
    let (tcp_echo, udp_echo) = (free_tcp_port(), free_udp_port());
    let mut m = machine("gridos.test=serve gridos.services=echo gridos.underlay=open");
    m.extra_args = vec![
        "-netdev".into(),
        format!("user,id=n0,hostfwd=tcp:127.0.0.1:{tcp_echo}-:7,hostfwd=udp:127.0.0.1:{udp_echo}-:7"),
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
    ];
    let vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    wait_or_fail(&vm, "net eth0: dhcp lease 10.0.2.15/24");
    wait_or_fail(&vm, "services: echo");

    // Many TCP messages of varying sizes on one connection, each echoed exactly.
    let mut s = TcpStream::connect(("127.0.0.1", tcp_echo)).expect("connect to the node's TCP echo");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    for n in 0..200u64 {
        let len = 1 + (n * 37 % 4000) as usize;
        let msg: Vec<u8> = (0..len as u64).map(|i| pattern(i + n)).collect();
        s.write_all(&msg).expect("send");
        let mut back = vec![0u8; len];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg, "message {n} came back different");
    }
    drop(s);

    // UDP datagrams, each echoed exactly (resent if the emulated network drops one).
    let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
    u.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    for n in 0..100u64 {
        let len = 1 + (n * 53 % 1400) as usize;
        let msg: Vec<u8> = (0..len as u64).map(|i| pattern(i * 3 + n)).collect();
        let mut buf = [0u8; 2048];
        let got = (0..5).find_map(|_| {
            u.send_to(&msg, ("127.0.0.1", udp_echo)).ok()?;
            u.recv_from(&mut buf).ok().map(|(got, _)| got)
        });
        let got = got.unwrap_or_else(|| panic!("datagram {n} never echoed"));
        assert_eq!(&buf[..got], &msg[..], "datagram {n} came back different");
    }

    // 64 MiB through the TCP echo: a writer thread and a verifying reader.
    const TOTAL: u64 = 64 << 20;
    let s = TcpStream::connect(("127.0.0.1", tcp_echo)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut writer = s.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let chunk: Vec<u8> = (0..251 * 256).map(pattern).collect();
        let mut sent = 0u64;
        while sent < TOTAL {
            let n = (TOTAL - sent).min(chunk.len() as u64) as usize;
            writer.write_all(&chunk[..n]).expect("send 64 MiB");
            sent += n as u64;
        }
        writer.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    let mut reader = s;
    let (mut received, mut buf) = (0u64, vec![0u8; 1 << 16]);
    let started = std::time::Instant::now();
    while received < TOTAL {
        let n = reader.read(&mut buf).expect("read echo");
        assert!(n > 0, "echo stream ended after {received} bytes");
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, pattern(received + i as u64), "byte {} differs", received + i as u64);
        }
        received += n as u64;
    }
    sender.join().expect("sender");
    eprintln!("64 MiB echoed in {:.1} s", started.elapsed().as_secs_f64());
    assert_healthy(&vm);
    vm.kill();
}


fn ping(ns: &Netns, args: &[&str]) -> bool {
    let mut all = vec!["ping", "-c", "3", "-i", "0.2", "-W", "5"];
    all.extend_from_slice(args);
    ns.exec(&all).map(|o| o.status.success()).unwrap_or(false)
}

fn ns_name(test: &str) -> String {
    format!("gridos-{}-{test}", std::process::id())
}

#[test]
fn host_pings_node_over_ipv4_and_ipv6() {
    require_root();
    let ns = Netns::create(&ns_name("ping"), &["10.23.0.1/24", "fd23::1/64"]).unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tap0").unwrap_or_else(|e| panic!("{e}"));
    let mut m = machine("gridos.test=serve gridos.underlay=open gridos.ip4=10.23.0.2/24 gridos.ip6=fd23::2/64");
    m.netns = Some(ns.name.clone());
    m.extra_args = Netns::nic_args("tap0", "52:54:00:00:00:02");
    let vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    wait_or_fail(&vm, "gridos ready in ");
    assert!(ping(&ns, &["10.23.0.2"]), "no IPv4 echo reply\n{}", vm.serial());
    assert!(ping(&ns, &["-6", "fd23::2"]), "no IPv6 echo reply\n{}", vm.serial());
    assert!(ping(&ns, &["-6", "fe80::5054:ff:fe00:2%br0"]), "no IPv6 link-local echo reply\n{}", vm.serial());
    assert!(!ping(&ns, &["-c", "1", "10.23.0.3"]), "an address the node does not have answered");
    assert_healthy(&vm);
    vm.kill();
}

#[test]
fn two_nodes_exchange_data_over_ipv6_link_local_tcp() {
    require_root();
    let ns = Netns::create(&ns_name("pair"), &[]).unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tapa").unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tapb").unwrap_or_else(|e| panic!("{e}"));
    let mut b = machine("gridos.test=serve gridos.services=echo gridos.underlay=open gridos.ip4=none");
    b.netns = Some(ns.name.clone());
    b.extra_args = Netns::nic_args("tapb", "52:54:00:00:00:0b");
    let server = b.spawn().unwrap_or_else(|e| panic!("{e}"));
    let mut a = machine("gridos.test=echo-client gridos.underlay=open gridos.ip4=none gridos.echo_client=[fe80::5054:ff:fe00:b]:7");
    a.netns = Some(ns.name.clone());
    a.extra_args = Netns::nic_args("tapa", "52:54:00:00:00:0a");
    let client = a.run().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        client.passed(),
        "node A could not exchange data with node B\n{}\n--- node B serial ---\n{}",
        client.report(),
        server.serial()
    );
    assert!(
        client.serial.contains("echo client: 1048576 bytes echoed intact by [fe80::5054:ff:fe00:b]:7"),
        "{}",
        client.report()
    );
    assert_healthy(&server);
    server.kill();
}

/// Sends malformed frames of many kinds at the node from a raw socket on the bridge.
const GARBAGE_SENDER: &str = r#"
import os, random, socket, struct, sys
mac = bytes.fromhex(sys.argv[1].replace(':', ''))
random.seed(int(sys.argv[2]))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('br0', 0))
src = bytes.fromhex('02aabbccddee')
def eth(t, payload, dst=mac): return dst + src + struct.pack('!H', t) + payload
def send(f):
    try: s.send(f)
    except OSError: pass
def ip4(proto, payload, ihl=5, tot=None, frag=0):
    tot = tot if tot is not None else 20 + len(payload)
    h = struct.pack('!BBHHHBBH4s4s', 0x40 | ihl, 0, tot & 0xffff, 1, frag, 64, proto, 0, bytes([10,23,0,1]), bytes([10,23,0,2]))
    return h + payload
def ip6(nh, payload, plen=None):
    plen = plen if plen is not None else len(payload)
    return struct.pack('!IHBB', 6 << 28, plen & 0xffff, nh, 64) + bytes.fromhex('fd230000000000000000000000000001') + bytes.fromhex('fd230000000000000000000000000002') + payload
for i in range(3000):
    send(eth(random.choice([0x0800, 0x86dd, 0x0806, 0x8100, random.randrange(65536)]), os.urandom(random.randrange(0, 1500))))
for _ in range(200):
    send(mac + src)                                   # runt: no ethertype
    send(eth(0x0800, ip4(6, b'')[:random.randrange(20)]))             # truncated IPv4 header
    send(eth(0x0800, ip4(6, os.urandom(10), ihl=random.randrange(16))))  # bad IHL
    send(eth(0x0800, ip4(17, os.urandom(30), tot=random.randrange(65536))))  # lying total length
    send(eth(0x0800, ip4(6, struct.pack('!HHIIBBHHH', 1234, 7, 1, 0, 0xf0, 0x02, 512, 0, 0))))  # TCP data offset past the end
    send(eth(0x0800, ip4(17, struct.pack('!HHHH', 1234, 7, random.randrange(65536), 0) + os.urandom(8))))  # UDP bad length
    send(eth(0x0800, ip4(1, os.urandom(random.randrange(40)), frag=random.randrange(65536))))  # fragments of anything
    send(eth(0x86dd, ip6(58, bytes([135, 0, 0, 0]) + os.urandom(20) + bytes([1, 0]) + os.urandom(6))))  # NDP with a zero-length option
    send(eth(0x86dd, ip6(0, bytes([58, 255]) + os.urandom(random.randrange(0, 64)))))  # hop-by-hop longer than the packet
    send(eth(0x86dd, ip6(6, os.urandom(random.randrange(60)), plen=random.randrange(65536))))  # lying payload length
    send(eth(0x86dd, ip6(44, os.urandom(random.randrange(0, 40)))))   # fragment headers
    send(eth(0x0806, os.urandom(random.randrange(28))))                # truncated ARP
    send(eth(0x0800, ip4(6, os.urandom(40)), dst=b'\xff' * 6))          # broadcast junk
print('sent')
"#;

#[test]
fn garbage_frames_do_not_crash_the_node() {
    require_root();
    let ns = Netns::create(&ns_name("junk"), &["10.23.0.1/24", "fd23::1/64"]).unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tap0").unwrap_or_else(|e| panic!("{e}"));
    let mut m = machine("gridos.test=serve gridos.services=echo gridos.underlay=open gridos.ip4=10.23.0.2/24 gridos.ip6=fd23::2/64");
    m.netns = Some(ns.name.clone());
    m.extra_args = Netns::nic_args("tap0", "52:54:00:00:00:02");
    let vm = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    wait_or_fail(&vm, "gridos ready in ");
    assert!(ping(&ns, &["10.23.0.2"]), "no reply before the garbage\n{}", vm.serial());
    for seed in 0..3 {
        let out = ns
            .exec(&["python3", "-c", GARBAGE_SENDER, "52:54:00:00:00:02", &seed.to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "garbage sender failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(ping(&ns, &["10.23.0.2"]), "no IPv4 reply after the garbage\n{}", vm.serial());
    assert!(ping(&ns, &["-6", "fd23::2"]), "no IPv6 reply after the garbage\n{}", vm.serial());
    // The TCP service still works too.
    let out = ns
        .exec(&["python3", "-c", "import socket; s=socket.create_connection(('10.23.0.2',7),10); s.sendall(b'still here'); print(s.recv(64).decode())"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "still here", "{}", String::from_utf8_lossy(&out.stderr));
    assert_healthy(&vm);
    vm.kill();
}
