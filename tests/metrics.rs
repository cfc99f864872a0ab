//! The node's Prometheus `/metrics`, booted: from the host, over gridctl's overlay stack
//! (QEMU user networking carries the overlay's UDP), GET `/metrics` on the node's overlay
//! address; the series are there with conventional names and the values follow what
//! happened (a deployed workload, control requests, overlay handshakes). Malformed,
//! oversized and slow requests are refused (400, 431, a timeout) and the node keeps
//! serving.
//!
//! The same boot checks `gridctl node status` and `gridctl node logs`: the farmer's key
//! (`gridos.farmer`) sees every workload, the disks, NICs and the kernel log; another
//! key sees the public part and its own workloads, and no log. And `gridctl forward`:
//! a local TCP port carried to the node's overlay echo service (`gridos.services=echo`).
//!
//! With the underlay left open (`gridos.underlay=open`), TCP 9100 on the node's underlay
//! address (a QEMU host forward) gives no HTTP answer: `/metrics` is overlay-only. When
//! `promtool` (Debian's `prometheus` package) is installed, it checks the exposition.
//!
//! A second boot, in a network namespace (root), covers `gridctl overlay up`: through its
//! TUN interface `ping -6`, `curl`, `nc` and a real Prometheus server reach the node's
//! overlay address; the underlay address does not serve `/metrics`; the daemon relinks
//! after the node restarts; `overlay down` removes the interface.

use std::time::Duration;

use gridctl::target::Target;
use gridctl::tcp::{http_get, parse_response, OverlayTcp};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, RunningMachine};
use gridos_tests::{free_udp_port, gridctl, wasm};

/// `gridos_tests::boot_serving_node`, plus a host TCP forward `127.0.0.1:tcp_port` to the
/// node's underlay TCP 9100 and `127.0.0.1:echo_port` to its underlay TCP 7 (echo).
fn boot_node(disk: &std::path::Path, udp_port: u16, (tcp_port, echo_port): (u16, u16), cmdline: &str) -> (RunningMachine, String) {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = format!("gridos.test=serve {cmdline}");
    m.disks = vec![disk.to_path_buf()];
    m.timeout = Duration::from_secs(300);
    m.extra_args = vec![
        "-netdev".to_string(),
        format!("user,id=n0,hostfwd=udp:127.0.0.1:{udp_port}-:7443,hostfwd=tcp:127.0.0.1:{tcp_port}-:9100,hostfwd=tcp:127.0.0.1:{echo_port}-:7"),
        "-device".to_string(),
        "virtio-net-pci,netdev=n0".to_string(),
    ];
    let node = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    assert!(node.wait_for("control: workload control on overlay tcp port 7070", Duration::from_secs(120)), "{}", node.serial());
    let serial = node.serial();
    let line = serial.lines().find(|l| l.contains("overlay: key ")).unwrap_or_else(|| panic!("{serial}"));
    let key = line.split_whitespace().skip_while(|w| *w != "key").nth(1).expect("key").to_string();
    (node, key)
}

/// Runs `promtool check metrics` on `text` if promtool is installed; `None` if it is not.
fn promtool_check(text: &str) -> Option<Result<(), String>> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let _ = child.stdin.take().map(|mut stdin| stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().ok()?;
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    })
}

fn ok(key: &std::path::Path, args: &[&str]) -> String {
    gridctl(key, args).unwrap_or_else(|e| panic!("gridctl {args:?} failed: {e}"))
}

/// The value of the sample line `series` (name with labels) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Sends raw bytes to the metrics port and returns the HTTP status answered.
fn raw_status(target: &Target, bytes: &[u8]) -> u16 {
    let mut conn = OverlayTcp::connect(target, metrics::PORT, Duration::from_secs(30)).expect("connect");
    let answer = conn.exchange(bytes, 1 << 20).expect("exchange");
    conn.close();
    parse_response(&answer).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&answer))).0
}

#[test]
fn metrics_are_served_on_the_overlay() {
    let dir = gridos_qemu::workspace_root().join("target/test-disks").join(format!("metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let disk = dir.join("node.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(64 << 20)).expect("disk");
    let (alice, bob) = (dir.join("alice.key"), dir.join("bob.key"));
    ok(&alice, &["key", "new"]);
    ok(&bob, &["key", "new"]);
    let shown = ok(&alice, &["key", "show"]);
    let farmer = shown.lines().find_map(|l| l.strip_prefix("public key")).map(str::trim).expect("public key").to_string();
    let port = free_udp_port();
    let (tcp_port, underlay_echo_port) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").expect("free tcp port");
        let b = std::net::TcpListener::bind("127.0.0.1:0").expect("free tcp port");
        (a.local_addr().expect("addr").port(), b.local_addr().expect("addr").port())
    };
    let (node, node_key) = boot_node(
        &disk,
        port,
        (tcp_port, underlay_echo_port),
        &format!("gridos.farmer={farmer} gridos.farm=42 gridos.services=echo gridos.underlay=open"),
    );
    assert!(node.serial().contains(&format!("farmer: {farmer}")), "{}", node.serial());
    assert!(node.wait_for("metrics: prometheus /metrics on overlay tcp port 9100", Duration::from_secs(30)), "{}", node.serial());
    // The console's status screen: cleared, then the node's facts, then the log.
    assert!(node.wait_for("the log follows (this screen is redrawn when it changes)", Duration::from_secs(30)), "{}", node.serial());
    let serial = node.serial();
    let screen = &serial[serial.find("\x1b[2J\x1b[H").unwrap_or_else(|| panic!("no cleared screen\n{serial}"))..];
    for want in [
        &format!(" node key   {node_key}\n"),
        " overlay    fd67:",
        &format!(" farm       42, role full, farmer key {}\n", &farmer[..16]),
        " disks      vda formatted: 62 MiB",
        " nics       eth0 52:54:00:",
        " peers      ",
        "the log follows",
    ] {
        assert!(screen.contains(want), "the screen lacks {want:?}\n{screen}");
    }
    assert!(serial[..serial.find("\x1b[2J").unwrap_or(0)].contains("gridos ready in "), "{serial}");
    let t = format!("{node_key}@127.0.0.1:{port}");
    let target = Target::parse(&t).expect("target");

    // Before any workload: none counted, and the figures to compare with later.
    // Right after boot the node may not have halted yet (under a loaded TCG host its first
    // second can be all work): ask until it has been idle at all.
    let mut before = ok(&alice, &["node", "metrics", &t]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !value(&before, "gridos_cpu_seconds_total{mode=\"idle\"}").is_some_and(|v| v > 0.0) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        before = ok(&alice, &["node", "metrics", &t]);
    }
    assert_eq!(value(&before, "gridos_workloads{state=\"exited\"}"), Some(0.0), "{before}");
    let live_before = value(&before, "gridos_store_live_bytes{disk=\"vda\"}").unwrap_or_else(|| panic!("{before}"));
    let requests_before = value(&before, "gridos_control_requests_total").unwrap_or_else(|| panic!("{before}"));
    let writes_before = value(&before, "gridos_disk_written_bytes_total{disk=\"vda\"}").unwrap_or_else(|| panic!("{before}"));
    let busy_before = value(&before, "gridos_cpu_seconds_total{mode=\"busy\"}").unwrap_or_else(|| panic!("{before}"));
    assert!(value(&before, "gridos_cpu_seconds_total{mode=\"idle\"}").is_some_and(|v| v > 0.0), "{before}");

    let hello = wasm("hello.wasm");
    let id = ok(&alice, &["deploy", "--node", &t, "--name", "metrics-hello", "--arg", "x", hello.to_str().expect("path")]);
    let id = id.trim().to_string();
    let logs = ok(&alice, &["logs", &id, "--follow", "--node", &t]);
    assert!(logs.contains("hello, world"), "{logs}");
    // A workload that keeps running (parked on its overlay listener): it holds memory.
    let echo = wasm("echo_server.wasm");
    let echo_id = ok(&alice, &["deploy", "--node", &t, "--name", "metrics-echo", "--listen", "8080", "--memory-mb", "4",
        "--arg", "3", echo.to_str().expect("path")]);
    let echo_id = echo_id.trim().to_string();
    let echo_memory = format!("gridos_workload_memory_bytes{{workload_id=\"{echo_id}\",name=\"metrics-echo\"}}");
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        text = ok(&alice, &["node", "metrics", &t]);
        if value(&text, &echo_memory).is_some_and(|v| v > 0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Its linear memory (at least the module's one page, at most its 4 MiB cap), running.
    let held = value(&text, &echo_memory).unwrap_or_else(|| panic!("{text}"));
    assert!(held >= 65536.0 && held <= f64::from(4u32 << 20), "{echo_memory} = {held}\n{text}");
    assert_eq!(value(&text, &format!("gridos_workload_memory_limit_bytes{{workload_id=\"{echo_id}\",name=\"metrics-echo\"}}")),
        Some(f64::from(4u32 << 20)), "{text}");
    assert_eq!(value(&text, "gridos_workloads{state=\"running\"}"), Some(1.0), "{text}");
    // hello has exited: its memory is given back, its peak stays.
    assert_eq!(value(&text, &format!("gridos_workload_memory_bytes{{workload_id=\"{id}\",name=\"metrics-hello\"}}")), Some(0.0), "{text}");
    assert!(value(&text, &format!("gridos_workload_memory_peak_bytes{{workload_id=\"{id}\",name=\"metrics-hello\"}}")).is_some_and(|v| v >= 65536.0), "{text}");
    // The deploys wrote to the disk, and the node did work.
    assert!(value(&text, "gridos_disk_written_bytes_total{disk=\"vda\"}").is_some_and(|v| v > writes_before), "{before}\n{text}");
    assert!(value(&text, "gridos_disk_writes_total{disk=\"vda\"}").is_some_and(|v| v > 0.0), "{text}");
    assert!(value(&text, "gridos_cpu_seconds_total{mode=\"busy\"}").is_some_and(|v| v > busy_before), "{before}\n{text}");
    match promtool_check(&text) {
        Some(result) => result.unwrap_or_else(|e| panic!("promtool check metrics refused the exposition: {e}\n{text}")),
        None => eprintln!("promtool not installed: the exposition is not checked by it"),
    }
    let serial = node.serial();
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}\n{serial}");
    has("# TYPE gridos_uptime_seconds gauge");
    has("# TYPE gridos_control_requests_total counter");
    has(&format!("gridos_build_info{{version=\"0.1.0\",node_key=\"{node_key}\"}} 1"));
    assert!(value(&text, "gridos_uptime_seconds").is_some_and(|v| v > 0.0), "{text}");
    assert!(value(&text, "gridos_heap_used_bytes").is_some_and(|v| v > 0.0), "{text}");
    assert!(value(&text, "gridos_heap_size_bytes").is_some_and(|v| v > value(&text, "gridos_heap_used_bytes").unwrap_or(0.0)), "{text}");
    // The workload, with its CPU and log figures.
    let info = text.lines().find(|l| l.starts_with("gridos_workload_info{") && l.contains("name=\"metrics-hello\"")).unwrap_or_else(|| panic!("{text}"));
    assert!(info.contains(&format!("workload_id=\"{id}\"")) && info.contains("state=\"exited\""), "{info}");
    assert!(value(&text, &format!("gridos_workload_log_lines_total{{workload_id=\"{id}\",name=\"metrics-hello\"}}")).is_some_and(|v| v >= 4.0), "{text}");
    assert!(value(&text, &format!("gridos_workload_log_bytes{{workload_id=\"{id}\",name=\"metrics-hello\"}}")).is_some_and(|v| v > 0.0), "{text}");
    assert!(text.contains(&format!("gridos_workload_cpu_seconds_total{{workload_id=\"{id}\",name=\"metrics-hello\"}} ")), "{text}");
    assert_eq!(value(&text, "gridos_workloads{state=\"exited\"}"), Some(1.0), "{text}");
    // The values moved: the module is stored, the deploy and log reads were requests.
    assert!(value(&text, "gridos_store_live_bytes{disk=\"vda\"}").is_some_and(|v| v > live_before), "{before}\n{text}");
    assert!(value(&text, "gridos_control_requests_total").is_some_and(|v| v >= requests_before + 2.0), "{before}\n{text}");
    // The store on vda, with the workload's module stored in it.
    assert!(value(&text, "gridos_store_shards{disk=\"vda\"}").is_some_and(|v| v >= 1.0), "{text}");
    assert!(value(&text, "gridos_store_capacity_bytes{disk=\"vda\"}").is_some_and(|v| v > 0.0), "{text}");
    // Control: the deploy and the log reads were requests.
    assert!(value(&text, "gridos_control_requests_total").is_some_and(|v| v >= 2.0), "{text}");
    assert!(value(&text, "gridos_control_connections_total").is_some_and(|v| v >= 2.0), "{text}");
    // The overlay: this test's stacks linked (each gridctl run is a handshake).
    assert!(value(&text, "gridos_overlay_handshakes_completed_total").is_some_and(|v| v >= 3.0), "{text}");
    assert!(text.contains("gridos_overlay_dropped_packets_total{reason=\"replay\"} "), "{text}");
    // The NIC moved frames.
    let nic_rx = text.lines().find(|l| l.starts_with("gridos_nic_receive_frames_total{")).unwrap_or_else(|| panic!("{text}"));
    assert!(nic_rx.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v > 0), "{nic_rx}");

    // Refusals: malformed, oversized, a wrong path and method; the service carries on.
    assert_eq!(raw_status(&target, b"BLAH\r\n\r\n"), 400);
    assert_eq!(raw_status(&target, b"GET /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\n"), 400);
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for _ in 0..200 {
        huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    huge.extend_from_slice(b"\r\n");
    assert_eq!(raw_status(&target, &huge), 431);
    assert_eq!(raw_status(&target, b"GET /nope HTTP/1.1\r\n\r\n"), 404);
    assert_eq!(raw_status(&target, b"DELETE /metrics HTTP/1.1\r\n\r\n"), 405);
    // A client that sends half a request and stalls is answered 408 within the deadline.
    assert_eq!(raw_status(&target, b"GET /metrics HTTP/1.1\r\n"), 408);

    // The node-wide bound: four idle connections hold every slot; a fifth is reset at
    // once without an answer. The idle ones are answered 408 after 5 s, which frees them.
    let held: Vec<OverlayTcp> =
        (0..4).map(|_| OverlayTcp::connect(&target, metrics::PORT, Duration::from_secs(30)).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(500));
    match OverlayTcp::connect(&target, metrics::PORT, Duration::from_secs(10)) {
        Err(_) => {}
        Ok(mut fifth) => {
            let answer = fifth.exchange(b"GET /metrics HTTP/1.1\r\n\r\n", 1 << 20);
            assert!(answer.as_ref().map_or(true, |a| a.is_empty()), "a fifth connection was served: {answer:?}");
        }
    }
    std::thread::sleep(Duration::from_secs(6));
    drop(held);

    let (status, body) = http_get(&target, metrics::PORT, "/metrics", Duration::from_secs(30)).expect("metrics again");
    assert_eq!(status, 200);
    let again = String::from_utf8(body).expect("utf8");
    assert!(value(&again, "gridos_metrics_requests_refused_total").is_some_and(|v| v >= 6.0), "{again}");
    assert!(value(&again, "gridos_metrics_requests_total").is_some_and(|v| v >= 8.0), "{again}");
    assert!(value(&again, "gridos_metrics_connections_refused_total").is_some_and(|v| v >= 1.0), "{again}");

    // The underlay (open in this boot) does not serve /metrics, though it carries TCP: its
    // echo service (port 7) answers.
    {
        use std::io::{Read, Write};
        let mut echo = std::net::TcpStream::connect(("127.0.0.1", underlay_echo_port)).expect("underlay echo");
        echo.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        echo.write_all(b"ping").expect("write");
        let mut four = [0u8; 4];
        echo.read_exact(&mut four).expect("the underlay echo answers");
        assert_eq!(&four, b"ping");
        let mut answer = Vec::new();
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", tcp_port)) {
            conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let _ = conn.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
            let _ = conn.read_to_end(&mut answer);
        }
        assert!(answer.is_empty(), "the underlay answered: {:?}", String::from_utf8_lossy(&answer));
    }

    // Node status: the farmer's view and a stranger's.
    let status = ok(&alice, &["node", "status", &t]);
    for want in ["view             farmer", "farm             42", "disk vda", "metrics-hello", &format!("key              {node_key}")] {
        assert!(status.contains(want), "missing {want:?} in\n{status}");
    }
    let json: serde_json::Value = serde_json::from_str(&ok(&bob, &["node", "status", &t, "--json"])).expect("json");
    assert_eq!(json["key"], node_key.as_str(), "{json}");
    assert_eq!(json["farmer_view"], false, "{json}");
    assert_eq!(json["farm"], 42, "{json}");
    assert!(json["workloads"].as_array().is_some_and(|w| w.is_empty()), "{json}");
    assert!(json["disks"].as_array().is_some_and(|d| d.is_empty()), "{json}");
    assert!(json["uptime_ms"].as_u64().is_some_and(|u| u > 0), "{json}");
    let json: serde_json::Value = serde_json::from_str(&ok(&alice, &["node", "status", &t, "--json"])).expect("json");
    assert_eq!(json["farmer_view"], true, "{json}");
    assert!(json["nics"].as_array().is_some_and(|n| n.len() == 1 && n[0]["rx_frames"].as_u64().unwrap_or(0) > 0), "{json}");
    // The kernel log: the farmer's only.
    let logs = ok(&alice, &["node", "logs", &t]);
    assert!(logs.lines().any(|l| l.contains("gridos ready in")), "{logs}");
    assert!(logs.lines().any(|l| l.contains("metrics: prometheus /metrics on overlay tcp port 9100")), "{logs}");
    let refused = gridctl(&bob, &["node", "logs", &t]).expect_err("a stranger read the node's log");
    assert!(refused.contains("unauthorized"), "{refused}");

    // gridctl forward: a local port to the node's overlay TCP echo (port 7).
    let (dest, echo_port) = gridctl::forward::parse_destination(&format!("{t}:7")).expect("destination");
    assert_eq!(echo_port, 7);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let local = listener.local_addr().expect("addr");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forwarder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut log = Vec::new();
            let result = gridctl::forward::run(listener, &dest, 7, Duration::from_secs(30), &stop, &mut log);
            (result, String::from_utf8_lossy(&log).into_owned())
        })
    };
    for round in 0..2u8 {
        let mut conn = std::net::TcpStream::connect(local).expect("connect to the forwarded port");
        conn.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 ^ round).collect();
        let writer = {
            let mut conn = conn.try_clone().expect("clone");
            let data = data.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                conn.write_all(&data).expect("write");
                conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
            })
        };
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut back).expect("read the echo");
        writer.join().expect("writer");
        assert!(back == data, "round {round}: {} bytes echoed of {}", back.len(), data.len());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (result, log) = forwarder.join().expect("forwarder");
    result.unwrap_or_else(|e| panic!("forward: {e}"));
    assert!(log.contains("forwarding 127.0.0.1:"), "{log}");

    let serial = node.serial();
    assert!(!serial.contains("PANIC"), "{serial}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Removes the TUN daemon (`gridctl overlay down`, or a kill of the pid in its file) and
/// the test's other background processes when the test ends, passed or not.
struct Cleanup {
    ns: String,
    down: Vec<String>,
    pid_file: std::path::PathBuf,
    children: Vec<std::process::Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.pid_file.exists() {
            let _ = std::process::Command::new("ip").args(["netns", "exec", &self.ns]).args(&self.down).output();
            if let Some(pid) = std::fs::read_to_string(&self.pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
                let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
        }
    }
}

/// `gridctl overlay up` in a network namespace: the host's own tools reach the node's overlay
/// address through the TUN interface: `ping -6`, `curl` of `/metrics`, `nc` to a workload's
/// echo server, and a real Prometheus server scraping `/metrics` (its HTTP API returns the
/// node's series); `/metrics` does not answer on the underlay address. Then the node
/// restarts (same disk, same identity) and the daemon relinks by itself; `overlay down`
/// removes the interface.
#[test]
fn overlay_up_carries_host_tools_to_the_node() {
    use gridos_qemu::netns::{require_root, Netns};
    require_root();
    let dir = gridos_qemu::workspace_root().join("target/test-disks").join(format!("tun-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let disk = dir.join("node.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(64 << 20)).expect("disk");
    let key = dir.join("user.key");
    ok(&key, &["key", "new"]);
    let gridctl_bin = gridos_tests::gridctl_binary();
    let ns = Netns::create(&format!("gridos-{}-tun", std::process::id()), &["10.41.0.1/24"]).unwrap_or_else(|e| panic!("{e}"));
    ns.add_tap("tapt").unwrap_or_else(|e| panic!("{e}"));
    let boot = || {
        ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
        let mut m = Machine::new(&kernel_elf().unwrap_or_else(|e| panic!("{e}")));
        m.cmdline = "gridos.test=serve gridos.ip4=10.41.0.10/24 gridos.overlay.discovery=off".to_string();
        m.disks = vec![disk.clone()];
        m.timeout = Duration::from_secs(400);
        m.netns = Some(ns.name.clone());
        m.extra_args = Netns::nic_args("tapt", "52:54:00:00:41:0a");
        let node = m.spawn().unwrap_or_else(|e| panic!("{e}"));
        assert!(node.wait_for("metrics: prometheus /metrics on overlay tcp port 9100", Duration::from_secs(120)), "{}", node.serial());
        node
    };
    let node = boot();
    let serial = node.serial();
    let line = serial.lines().find(|l| l.contains("overlay: key ")).unwrap_or_else(|| panic!("{serial}"));
    let mut words = line.split_whitespace().skip_while(|w| *w != "key");
    let node_key = words.nth(1).expect("key").to_string();
    let address = words.nth(1).expect("address").to_string();
    let target = format!("{node_key}@10.41.0.10:7443");
    let run_dir = dir.join("run");
    let bin = gridctl_bin.to_str().expect("path");
    let key_arg = key.to_str().expect("path");
    let run_arg = run_dir.to_str().expect("path");
    let mut cleanup = Cleanup {
        ns: ns.name.clone(),
        down: [bin, "--key", key_arg, "overlay", "down", "--run-dir", run_arg].map(String::from).to_vec(),
        pid_file: run_dir.join("overlay-gridos0.pid"),
        children: Vec::new(),
    };
    // Runs a command in the namespace: (success, stdout + stderr).
    let sh = |args: &[&str]| {
        let out = ns.exec(args).unwrap_or_else(|e| panic!("{e}"));
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };

    // Up: the daemon starts in the background, links to the node and says so.
    let (up_ok, up) = sh(&[bin, "--key", key_arg, "--timeout", "60", "overlay", "up", &target, "--run-dir", run_arg]);
    assert!(up_ok, "overlay up failed: {up}\n{}", node.serial());
    let user_address = ok(&key, &["key", "show"]).lines().find_map(|l| l.strip_prefix("overlay address")).map(str::trim).expect("address").to_string();
    assert!(up.contains(&format!("overlay up: interface gridos0, address {user_address}, route fd67::/16")), "{up}");
    assert!(up.contains(&format!("linked through {node_key} at 10.41.0.10:7443 (overlay {address})")), "{up}");
    let (_, link) = sh(&["ip", "-6", "addr", "show", "dev", "gridos0"]);
    assert!(link.contains(&format!("{user_address}/16")), "{link}");
    let (_, routes) = sh(&["ip", "-6", "route", "show", "dev", "gridos0"]);
    assert!(routes.contains("fd67::/16"), "{routes}");

    // ping -6 and curl reach the node's overlay address.
    let (ping_ok, ping) = sh(&["ping", "-6", "-c", "3", "-W", "10", &address]);
    assert!(ping_ok && ping.contains("3 received"), "{ping}\n{}", node.serial());
    let url = format!("http://[{address}]:9100/metrics");
    let (curl_ok, page) = sh(&["curl", "-sS", "-g", "--max-time", "60", &url]);
    assert!(curl_ok, "curl {url}: {page}");
    assert!(page.contains(&format!("gridos_build_info{{version=\"0.1.0\",node_key=\"{node_key}\"}} 1")), "{page}");
    if let Some(result) = promtool_check(&page) {
        result.unwrap_or_else(|e| panic!("promtool check metrics refused the page read through the TUN: {e}"));
    }

    // A workload's echo server on the overlay, reached with nc.
    let echo = wasm("echo_server.wasm");
    let (deploy_ok, id) = sh(&[bin, "--key", key_arg, "--timeout", "60", "deploy", "--node", &target, "--name", "tun-echo", "--listen", "8080",
        "--arg", "1", echo.to_str().expect("path")]);
    assert!(deploy_ok, "deploy: {id}");
    let id = id.trim().to_string();
    gridos_qemu::ensure_command("nc", "netcat-openbsd").unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    for _ in 0..20 {
        let (_, out) = sh(&["sh", "-c", &format!("printf 'hello through the tun\\n' | nc -N -w 20 {address} 8080")]);
        answer = out;
        if answer.contains("hello through the tun") {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(answer.contains("hello through the tun"), "nc got {answer:?}\n{}", node.serial());

    // A real Prometheus scrapes /metrics through the TUN; its API returns the node's series.
    match gridos_qemu::ensure_command("prometheus", "prometheus") {
        Err(why) => eprintln!("SKIPPED the Prometheus part: {why}"),
        Ok(()) => {
            let config = dir.join("prometheus.yml");
            std::fs::write(&config, format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: gridos\n    static_configs:\n      - targets: ['[{address}]:9100']\n"
            )).expect("config");
            let child = std::process::Command::new("ip")
                .args(["netns", "exec", &ns.name, "prometheus"])
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
                .arg("--web.listen-address=127.0.0.1:9090")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
                .spawn()
                .expect("start prometheus");
            cleanup.children.push(child);
            let query = |q: &str| sh(&["curl", "-sS", "-g", "--max-time", "10", &format!("http://127.0.0.1:9090/api/v1/query?query={q}")]).1;
            let mut seen = String::new();
            for _ in 0..120 {
                seen = query("gridos_build_info");
                if seen.contains(&node_key) {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            assert!(seen.contains("\"status\":\"success\"") && seen.contains(&node_key),
                "Prometheus did not get the node's series: {seen}\n{}", std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default());
            let memory = query(&format!("gridos_workload_memory_bytes{{workload_id=\"{id}\"}}"));
            assert!(memory.contains("tun-echo"), "{memory}");
            let up_series = query("up");
            assert!(up_series.contains(&format!("\"instance\":\"[{address}]:9100\"")) && up_series.contains("\"1\"]"), "{up_series}");
            println!("overlay-up: Prometheus scraped [{address}]:9100 through the TUN: {seen}");
        }
    }

    // The underlay address does not serve /metrics (the node's underlay is closed but for
    // the overlay's UDP port, which carried all of the above).
    let (under_ok, under) = sh(&["curl", "-sS", "--max-time", "5", "http://10.41.0.10:9100/metrics"]);
    assert!(!under_ok && !under.contains("gridos_"), "the underlay answered: {under}");

    // The node restarts (same disk: same identity): the daemon relinks by itself.
    drop(node);
    let node = boot();
    let log_path = run_dir.join("overlay-gridos0.log");
    let mut relinked = false;
    for _ in 0..120 {
        let (ping_ok, _) = sh(&["ping", "-6", "-c", "1", "-W", "2", &address]);
        if ping_ok {
            relinked = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(relinked, "no ping after the node restarted\ndaemon log:\n{log}\n{}", node.serial());
    let (curl_ok, page) = sh(&["curl", "-sS", "-g", "--max-time", "60", &url]);
    assert!(curl_ok && page.contains("gridos_uptime_seconds"), "after the restart: {page}");
    // It said the link went down and came back.
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.contains(&format!("link to {node_key} down; retrying")), "{log}");
    assert_eq!(log.matches(&format!("linked through {node_key} at 10.41.0.10:7443")).count(), 2, "{log}");
    println!("overlay-up: daemon log:\n{log}");

    // Down: the daemon stops, the interface and its route are gone.
    let (down_ok, down) = sh(&cleanup.down.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(down_ok && down.contains("overlay down: interface gridos0 removed"), "{down}");
    let (still, _) = sh(&["ip", "link", "show", "gridos0"]);
    assert!(!still, "gridos0 is still there after overlay down");
    let (none_ok, none) = sh(&["ping", "-6", "-c", "1", "-W", "2", &address]);
    assert!(!none_ok, "the node still answers after overlay down: {none}");
    drop(cleanup);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
