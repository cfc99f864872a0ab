//! Workload control from the user's side, booted: `gridctl` (the host CLI, as a
//! library with the same command lines) joins the overlay over UDP through QEMU's
//! user networking, connects to the node's control service (overlay TCP 7070) and
//! deploys, lists, reads logs, stops and removes workloads; another user's key sees
//! none of them and may touch none.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use gridctl::cli::{self, Cli};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, RunningMachine};

fn wasm(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wasm/out").join(name)
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free port")
}

/// Runs one gridctl command line; returns its output or its error message.
fn gridctl(key: &Path, args: &[&str]) -> Result<String, String> {
    let mut argv = vec!["gridctl", "--timeout", "60", "--key", key.to_str().expect("key path")];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).map_err(|e| format!("{e}"))?;
    let mut out = Vec::new();
    cli::run(cli, &mut out).map_err(|e| format!("{e}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn ok(key: &Path, args: &[&str]) -> String {
    gridctl(key, args).unwrap_or_else(|e| panic!("gridctl {args:?} failed: {e}"))
}

fn boot_node(disk: &Path, udp_port: u16) -> (RunningMachine, String) {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = "gridos.test=serve".into();
    m.disks = vec![disk.to_path_buf()];
    m.timeout = Duration::from_secs(300);
    m.extra_args = [
        "-netdev".to_string(),
        format!("user,id=n0,hostfwd=udp:127.0.0.1:{udp_port}-:7443"),
        "-device".to_string(),
        "virtio-net-pci,netdev=n0".to_string(),
    ]
    .to_vec();
    let node = m.spawn().unwrap_or_else(|e| panic!("{e}"));
    assert!(node.wait_for("control: workload control on overlay tcp port 7070", Duration::from_secs(120)), "{}", node.serial());
    let serial = node.serial();
    let line = serial.lines().find(|l| l.contains("overlay: key ")).unwrap_or_else(|| panic!("{serial}"));
    let key = line.split_whitespace().skip_while(|w| *w != "key").nth(1).expect("key").to_string();
    (node, key)
}

#[test]
fn gridctl_deploys_and_controls_workloads_over_the_overlay() {
    let dir = gridos_qemu::workspace_root().join("target/test-disks").join(format!("control-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let disk = dir.join("node.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(64 << 20)).expect("disk");
    let (alice, mallory) = (dir.join("alice.key"), dir.join("mallory.key"));
    ok(&alice, &["key", "new"]);
    ok(&mallory, &["key", "new"]);
    assert!(gridctl(&alice, &["key", "new"]).is_err(), "an existing key file was overwritten");

    let port = free_udp_port();
    let (node, node_key) = boot_node(&disk, port);
    let target = format!("{node_key}@127.0.0.1:{port}");
    let t = target.as_str();
    let info = ok(&alice, &["info", "--node", t]);
    assert!(info.contains(&format!("key              {node_key}")), "{info}");

    // Deploy hello, precompiled here by gridctl, and read its log.
    let hello = wasm("hello.wasm");
    let id = ok(&alice, &["deploy", "--node", t, "--name", "remote-hello", "--arg", "from-gridctl", hello.to_str().unwrap()]);
    let id = id.trim().to_string();
    let logs = ok(&alice, &["logs", &id, "--follow", "--node", t]);
    assert!(logs.contains("hello, world from wasm32-wasi"), "{logs}\n{}", node.serial());
    assert!(logs.contains("argc=2 argv[0]=remote-hello argv[1]=from-gridctl"), "{logs}");
    let status = ok(&alice, &["status", &id, "--node", t]);
    assert!(status.contains("exited(0)"), "{status}");

    // An endless loop with the committed bundle, stopped by its owner.
    let spin = wasm("spin.wasm");
    let spin_bundle = wasm("spin.bundle");
    let spin_id = ok(&alice, &[
        "deploy", "--node", t, "--name", "remote-spin", "--cpu-ms", "600000", "--wall-ms", "600000",
        "--bundle", spin_bundle.to_str().unwrap(), spin.to_str().unwrap(),
    ]);
    let spin_id = spin_id.trim().to_string();
    let list = ok(&alice, &["list", "--node", t]);
    assert!(list.contains("remote-hello") && list.contains("remote-spin"), "{list}");

    // Another key sees nothing and may do nothing.
    let theirs = ok(&mallory, &["list", "--node", t]);
    assert!(!theirs.contains("remote-"), "another user's list shows alice's workloads: {theirs}");
    for cmd in ["status", "logs", "stop", "rm"] {
        let e = gridctl(&mallory, &[cmd, &spin_id, "--node", t]).err().unwrap_or_else(|| panic!("mallory could {cmd}"));
        assert!(e.contains("not found"), "{cmd}: {e}");
    }
    // A manifest signed by someone else, or a module that is not wasm, is refused.
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0garbage").expect("junk");
    let e = gridctl(&alice, &["deploy", "--node", t, "--bundle", spin_bundle.to_str().unwrap(), junk.to_str().unwrap()])
        .err()
        .expect("a malformed module was deployed");
    assert!(e.contains("refused") || e.contains("malformed"), "{e}");

    // Two large deploys at once (hello with a 3 MiB custom section): the node takes
    // large requests one at a time, and both succeed.
    let mut big = std::fs::read(&hello).expect("hello.wasm");
    let payload = vec![0x5a_u8; 3 << 20];
    let name = b"padding";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    big.push(0);
    let mut len = section.len();
    while len >= 0x80 {
        big.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    big.push(len as u8);
    big.extend_from_slice(&section);
    let big_path = dir.join("big-hello.wasm");
    std::fs::write(&big_path, &big).expect("big module");
    let big_str = big_path.to_str().unwrap().to_string();
    let t0 = std::time::Instant::now();
    let deploys: Vec<_> = ["big-1", "big-2"]
        .into_iter()
        .map(|name| {
            let (key, target, path) = (alice.clone(), target.clone(), big_str.clone());
            std::thread::spawn(move || gridctl(&key, &["deploy", "--node", &target, "--name", name, &path]))
        })
        .collect();
    for d in deploys {
        let id = d.join().expect("deploy thread").unwrap_or_else(|e| panic!("large deploy failed: {e}\n{}", node.serial()));
        let logs = ok(&alice, &["logs", id.trim(), "--follow", "--node", t]);
        assert!(logs.contains("hello, world from wasm32-wasi"), "{logs}");
    }
    println!("control: two concurrent deploys of a {} KiB module (host precompile + upload over the overlay) in {:.1} s",
        big.len() >> 10, t0.elapsed().as_secs_f64());

    assert_eq!(ok(&alice, &["stop", &spin_id, "--node", t]).trim(), format!("stopped {spin_id}"));
    let mut stopped = String::new();
    for _ in 0..50 {
        stopped = ok(&alice, &["status", &spin_id, "--node", t]);
        if stopped.contains("stopped") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stopped.contains("stopped by owner"), "{stopped}");
    assert_eq!(ok(&alice, &["rm", &id, "--node", t]).trim(), format!("removed {id}"));
    let list = ok(&alice, &["list", "--node", t]);
    assert!(!list.contains("remote-hello") && list.contains("remote-spin"), "{list}");
    // The node is still serving after all that.
    assert!(ok(&alice, &["info", "--node", t]).contains("workloads        3"), "{}", node.serial());
    drop(node.kill());
    let _ = std::fs::remove_dir_all(&dir);
}
