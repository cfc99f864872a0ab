//! Integration tests live in tests/*.rs beside this file; this library holds what
//! several of them share.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use clap::Parser;
use gridctl::cli::{self, Cli};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, RunningMachine};

/// A committed test program (or bundle) in tests/wasm/out.
pub fn wasm(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wasm/out").join(name)
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free port")
}

/// Runs one gridctl command line in this process, as `key`, with `--timeout timeout_s`
/// and the global `flags` before `args`; returns its output or its error message.
pub fn run_gridctl(key: &Path, timeout_s: u32, flags: &[&str], args: &[&str]) -> Result<String, String> {
    let timeout = timeout_s.to_string();
    let mut argv = vec!["gridctl", "--timeout", &timeout, "--key", key.to_str().expect("key path")];
    argv.extend_from_slice(flags);
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).map_err(|e| format!("{e}"))?;
    let mut out = Vec::new();
    cli::run(cli, &mut out).map_err(|e| format!("{e}"))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// [`run_gridctl`] with a 60 s timeout and no global flags.
pub fn gridctl(key: &Path, args: &[&str]) -> Result<String, String> {
    run_gridctl(key, 60, &[], args)
}

/// Boots a node that keeps serving (`gridos.test=serve`, plus `extra_cmdline`) with
/// `disk` as its first disk and its overlay port reachable from the host at UDP
/// `127.0.0.1:udp_port` (QEMU user networking), and waits until its control service
/// is up. Returns the node and its overlay key (hex), as its boot log says.
pub fn boot_serving_node(disk: &Path, udp_port: u16, extra_cmdline: &str, timeout: Duration) -> (RunningMachine, String) {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = format!("gridos.test=serve {extra_cmdline}").trim_end().to_string();
    m.disks = vec![disk.to_path_buf()];
    m.timeout = timeout;
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

/// Public key (hex) of the TEST-ONLY compiler key in tests/wasm/test-compiler.key, which
/// attests tests/wasm/out/*.bundle. Booted tests pass `gridos.compilers=` this key so
/// the node trusts those bundles. The secret is committed: never trust it on a real node.
pub const TEST_COMPILER_PUBKEY: &str = "58b8134ee126f4e0d73e8305aa4c97b3b98b577616d57e2b0e694f67f19b34fc";

/// [`TEST_COMPILER_PUBKEY`] as bytes.
pub fn test_compiler_pubkey() -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&TEST_COMPILER_PUBKEY[2 * i..2 * i + 2], 16).unwrap_or_default();
    }
    key
}

/// The `gridctl` executable (debug profile, built once per process), for tests that run it
/// in a network namespace (`ip netns exec`), where the in-process [`gridctl`] cannot go.
pub fn gridctl_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let root = gridos_qemu::workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .args(["build", "-p", "gridctl", "--bin", "gridctl"])
            .status()
            .map_err(|e| format!("could not run cargo to build gridctl: {e}"))?;
        if !status.success() {
            return Err(format!("gridctl build failed ({status})"));
        }
        let target_dir = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
        let bin = target_dir.join("debug/gridctl");
        if bin.is_file() { Ok(bin) } else { Err(format!("gridctl build succeeded but {} is missing", bin.display())) }
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod test {
    #[test]
    fn the_test_compiler_pubkey_is_the_committed_keys() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm/test-compiler.key");
        let text = std::fs::read_to_string(&p).expect("tests/wasm/test-compiler.key");
        assert!(text.contains("TEST-ONLY"));
        let key = wasm_precompile::load_key(&p).expect("a compiler key file");
        assert_eq!(*key.pk, super::test_compiler_pubkey());
    }
}

/// A QMP connection to a QEMU started with `-qmp unix:PATH,server=on,wait=off`.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (retrying while QEMU starts) and leaves capabilities negotiation done.
    pub fn connect(path: &Path) -> Qmp {
        let started = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if started.elapsed() > Duration::from_secs(20) => panic!("QMP at {}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut qmp = Qmp { reader: BufReader::new(stream), writer };
        let mut greeting = String::new();
        qmp.reader.read_line(&mut greeting).expect("QMP greeting");
        assert!(greeting.contains("QMP"), "{greeting}");
        qmp.command(r#"{"execute":"qmp_capabilities"}"#);
        qmp
    }

    /// Sends `json` and waits for its reply (skipping events); panics on an error reply.
    pub fn command(&mut self, json: &str) -> String {
        writeln!(self.writer, "{json}").expect("QMP write");
        for _ in 0..100 {
            let mut reply = String::new();
            self.reader.read_line(&mut reply).expect("QMP reply");
            if reply.contains("\"error\"") {
                panic!("QMP {json}: {reply}");
            }
            if reply.contains("\"return\"") {
                return reply;
            }
        }
        panic!("QMP {json}: no reply");
    }
}
