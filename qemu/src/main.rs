//! `gridos-qemu`: build the kernel and boot one node, or a small cluster, under QEMU.
//!
//! ```text
//! gridos-qemu run [--nodes N] [--memory MIB] [--cpus N] [--accel tcg|kvm|auto] [--disk IMG]... [--append ARGS]
//!                [--no-compiler] [--compiler-port PORT] [--port PORT] [--disk-dir DIR] [--disk-mib MIB]
//!                [--validators N] [--validator-port PORT] [--period-secs S]
//! gridos-qemu test NAME          boot with gridos.test=NAME; exit 0 on pass
//! gridos-qemu bench-boot         boot-to-ready figures (median of several boots)
//! ```
//!
//! `run` (one node with networking) also starts a development compile service
//! (`gridos-compiler`, key cached in target/dev-compiler.key) on 127.0.0.1:7444 and tells
//! the node to trust its key (`gridos.compilers=`), so `gridctl deploy --compiler ...` gets
//! native code; without it every workload runs in the node's interpreter.
//!
//! `run --validators N` also starts N development ledger validators on the host (see
//! `DevValidators`), makes the development account's farm, boots the nodes on that ledger
//! (`gridos.ledger=CHAINID gridos.ledger.validators=... gridos.farm=F`: they register
//! themselves under the farm) and prints how gridctl reaches them.
//! `run --nodes N` boots N nodes on one virtual segment with a disk each (kept in
//! target/gridos-run) and forwards node 0's overlay port to 127.0.0.1:7443; gridctl reaches
//! the others through node 0 (`gridos_qemu::cluster`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use gridos_qemu::cluster::{self, ClusterNet};
use gridos_qemu::linux::Flavour;
use gridos_qemu::{ensure_qemu, kernel_elf, Accel, Machine, EXIT_FAILURE, EXIT_SUCCESS};

#[derive(Parser)]
#[command(name = "gridos-qemu", about = "Boot gridos nodes under QEMU (TCG by default)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    Tcg,
    Kvm,
    Auto,
}

#[derive(clap::Args, Clone)]
struct MachineArgs {
    /// Memory per node in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// CPUs per node.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Accelerator: tcg (default), kvm, or auto (kvm if a probe boot under it works).
    #[arg(long, value_enum, default_value_t = AccelArg::Tcg)]
    accel: AccelArg,
    /// Raw disk image to attach as virtio-blk (repeatable).
    #[arg(long)]
    disk: Vec<PathBuf>,
    /// Extra kernel command line, e.g. "gridos.log=debug".
    #[arg(long, default_value = "")]
    append: String,
    /// Time limit in seconds; QEMU is stopped when it passes.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot one node (or a cluster with --nodes) with the serial console on this terminal.
    Run {
        #[command(flatten)]
        machine: MachineArgs,
        /// Number of nodes; more than one shares a virtual L2 segment (a learning switch in this process),
        /// node 0 reachable from the host at 127.0.0.1:--port.
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// A single node gets a virtio-net NIC on QEMU user networking (DHCP) unless this is set.
        #[arg(long)]
        no_net: bool,
        /// Do not start the development compile service (the node then trusts no compiler
        /// unless --append names one with gridos.compilers=).
        #[arg(long)]
        no_compiler: bool,
        /// Host UDP port of the development compile service (on 127.0.0.1).
        #[arg(long, default_value_t = 7444)]
        compiler_port: u16,
        /// Host UDP port (on 127.0.0.1) forwarded to the node's overlay port (node 0's
        /// in a cluster).
        #[arg(long, default_value_t = OVERLAY_PORT)]
        port: u16,
        /// With --nodes: where each node's disk is kept (created sparse when missing, kept
        /// across runs so identities and shards survive a restart).
        /// (default: target/gridos-run in the repository)
        #[arg(long)]
        disk_dir: Option<PathBuf>,
        /// With --nodes: size of each new node disk in MiB.
        #[arg(long, default_value_t = 512)]
        disk_mib: u64,
        /// Also start this many development ledger validators on the host (`validator`
        /// processes; chain in target/gridos-run/ledger-N, made by `validator init`).
        #[arg(long, default_value_t = 0)]
        validators: u32,
        /// First host UDP port of the validators' overlay (validator I: this + I, on
        /// 127.0.0.1; their consensus TCP ports follow after them).
        #[arg(long, default_value_t = 7450)]
        validator_port: u16,
        /// With --validators: the chain's billing period in seconds (an hour by default;
        /// a few seconds to watch uptime reports, proofs and billing). A chain with another
        /// period is kept in its own folder.
        #[arg(long, requires = "validators")]
        period_secs: Option<u64>,
    },
    /// Boot with gridos.test=NAME and report pass or fail.
    Test {
        name: String,
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// Print TCP throughput node->host and host->node over virtio-net (user networking)
    /// against a Linux guest, virtio-blk sequential MB/s measured inside the kernel, then
    /// virtio-blk, NVMe and SATA (AHCI) sequential and 4 KiB random MB/s side by side in
    /// one QEMU against a Linux guest on the same devices. With --nic e1000/e1000e: TCP on
    /// that NIC against gridos on virtio-net and against Linux on that NIC.
    BenchIo {
        /// MiB moved in each TCP direction.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// QEMU NIC model for the TCP figures (node and Linux guest): `virtio-net-pci`,
        /// `e1000` or `e1000e`. With another model than virtio-net the disk figures are skipped.
        #[arg(long, default_value = "virtio-net-pci")]
        nic: String,
        /// Rounds of the compared boots (gridos and Linux interleaved); medians are printed.
        #[arg(long, default_value_t = 3)]
        runs: u32,
        #[command(flatten)]
        machine: MachineArgs,
    },
    /// Print boot-to-ready figures: kernel-measured and wall time, median of several boots.
    BenchBoot {
        #[arg(long, default_value_t = 5)]
        runs: u32,
        #[command(flatten)]
        machine: MachineArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gridos-qemu: {e}");
            ExitCode::from(2)
        }
    }
}

/// The overlay's UDP port on the node (and, for `run`, on the host's loopback).
const OVERLAY_PORT: u16 = 7443;

fn machine(args: &MachineArgs) -> Result<Machine, String> {
    ensure_qemu()?;
    let kernel = kernel_elf()?;
    let mut m = Machine::new(&kernel);
    m.memory_mib = args.memory;
    m.cpus = args.cpus;
    m.disks = args.disk.clone();
    m.cmdline = args.append.clone();
    m.timeout = Duration::from_secs(args.timeout);
    let wanted = match args.accel {
        AccelArg::Tcg => Accel::Tcg,
        AccelArg::Kvm => Accel::Kvm,
        AccelArg::Auto => Accel::Auto,
    };
    let (accel, why) = wanted.resolve(&kernel);
    eprintln!("gridos-qemu: accelerator: {why}");
    m.accel = accel;
    Ok(m)
}

fn run(command: Cmd) -> Result<ExitCode, String> {
    match command {
        Cmd::Run { machine: args, nodes, no_net, no_compiler, compiler_port, port, disk_dir, disk_mib, validators, validator_port, period_secs } => {
            let mut m = machine(&args)?;
            // Stopped when dropped, after QEMU ends.
            let _validators = if validators > 0 { Some(DevValidators::start(validators, validator_port, period_secs)?) } else { None };
            if let Some(v) = _validators.as_ref().filter(|_| !no_net || nodes > 1) {
                // The nodes reach the host's loopback at user networking's 10.0.2.2.
                m.cmdline = format!("{} {}", v.node_words(NODE_HOST_GATEWAY), m.cmdline);
                eprintln!("gridos-qemu: nodes boot on the ledger: {}", v.node_words(NODE_HOST_GATEWAY));
            }
            if nodes <= 1 {
                // Dropped (and stopped) when QEMU ends.
                let mut _compiler = None;
                if !no_net && !no_compiler {
                    match DevCompiler::start(compiler_port) {
                        Ok(c) => {
                            // First, so a gridos.compilers= in --append wins.
                            m.cmdline = format!("gridos.compilers={} {}", c.key, m.cmdline);
                            eprintln!(
                                "gridos-qemu: development compile service {}@127.0.0.1:{compiler_port} (key in {}; the node trusts it)",
                                c.key,
                                c.key_file.display()
                            );
                            eprintln!(
                                "gridos-qemu: native code: gridctl deploy --compiler {}@127.0.0.1:{compiler_port} --node KEY@127.0.0.1:{port} FILE.wasm \
                                 (or export GRIDOS_COMPILER=...); without --compiler the node runs the module in its interpreter",
                                c.key
                            );
                            _compiler = Some(c);
                        }
                        Err(e) => eprintln!("gridos-qemu: no development compile service ({e}); workloads run in the interpreter"),
                    }
                }
                if !no_net {
                    // The overlay's UDP port on the host's loopback, so gridctl can reach
                    // the node: gridctl ... --node KEY@127.0.0.1:7443 (KEY: the node's
                    // `overlay: key` line).
                    m.extra_args.extend([
                        "-netdev".to_string(),
                        format!("user,id=n0,hostfwd=udp:127.0.0.1:{port}-:{OVERLAY_PORT}"),
                        "-device".to_string(),
                        "virtio-net-pci,netdev=n0".to_string(),
                    ]);
                    eprintln!("gridos-qemu: the node's overlay port is 127.0.0.1:{port} (gridctl --node KEY@127.0.0.1:{port})");
                }
                run_interactive(&m)
            } else {
                let disk_dir = disk_dir.unwrap_or_else(|| gridos_qemu::workspace_root().join("target/gridos-run"));
                run_cluster(&m, nodes, &disk_dir, disk_mib, port)
            }
        }
        Cmd::Test { name, machine: args } => {
            let mut m = machine(&args)?;
            m.cmdline = format!("gridos.test={name} {}", m.cmdline);
            m.timeout = Duration::from_secs(args.timeout.min(300));
            let out = m.run()?;
            print!("{}", out.serial);
            if out.passed() {
                eprintln!("gridos-qemu: test {name} passed");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("gridos-qemu: test {name} FAILED\n{}", out.report());
                Ok(ExitCode::FAILURE)
            }
        }
        Cmd::BenchBoot { runs, machine: args } => bench_boot(&args, runs),
        Cmd::BenchIo { mib, nic, runs, machine: args } => bench_io(&args, mib, &nic, runs),
    }
}

/// The development compile service: a `gridos-compiler` child process on the host's
/// loopback with a key cached under target/, stopped when dropped.
struct DevCompiler {
    child: std::process::Child,
    /// Its public key, hex.
    key: String,
    key_file: PathBuf,
}

impl DevCompiler {
    fn start(port: u16) -> Result<DevCompiler, String> {
        let root = gridos_qemu::workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--release", "-q", "-p", "compiler", "--bin", "gridos-compiler"])
            .status()
            .map_err(|e| format!("could not run cargo to build gridos-compiler: {e}"))?;
        if !status.success() {
            return Err(format!("building gridos-compiler failed ({status})"));
        }
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
        let key_file = target.join("dev-compiler.key");
        let mut child = std::process::Command::new(target.join("release/gridos-compiler"))
            .args(["--key".as_ref(), key_file.as_os_str(), "--listen".as_ref(), format!("127.0.0.1:{port}").as_ref()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start gridos-compiler: {e}"))?;
        let stdout = child.stdout.take().ok_or("no output from gridos-compiler")?;
        // Its first lines name the key; it exits at once if the port is taken.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(key) = line.strip_prefix("compiler key") {
                    let _ = tx.send(key.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(key) if key.len() == 64 => Ok(DevCompiler { child, key, key_file }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("gridos-compiler did not start on 127.0.0.1:{port} (port taken? try --compiler-port)"))
            }
        }
    }
}

impl Drop for DevCompiler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Development ledger validators: `validator` child processes on the host's loopback, their
/// chain made once by `validator init` and kept in target/gridos-run/ledger-N (so blocks
/// survive a restart), stopped when dropped.
struct DevValidators {
    children: Vec<std::process::Child>,
    /// The chain id (hex).
    chain: String,
    /// The development account's farm.
    farm: u64,
    /// validators.txt: `OVERLAYKEY@127.0.0.1:PORT` per validator.
    targets: Vec<(String, u16)>,
}

/// The host's loopback as QEMU user networking (slirp) shows it to a node.
const NODE_HOST_GATEWAY: &str = "10.0.2.2";

impl DevValidators {
    /// The kernel command line words that put a node on this ledger, the validators seen
    /// at `host` (see PLAN/issue 14: `gridos.ledger`, `gridos.ledger.validators`,
    /// `gridos.farm`).
    fn node_words(&self, host: &str) -> String {
        let validators: Vec<String> = self.targets.iter().map(|(key, port)| format!("{key}@{host}:{port}")).collect();
        format!("gridos.ledger={} gridos.ledger.validators={} gridos.farm={}", self.chain, validators.join(","), self.farm)
    }

    fn start(count: u32, first_port: u16, period_secs: Option<u64>) -> Result<DevValidators, String> {
        if count > 16 {
            return Err(format!("{count} validators is more than this runner starts (16)"));
        }
        let root = gridos_qemu::workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--release", "-q", "-p", "validator", "--bin", "validator"])
            .status()
            .map_err(|e| format!("could not run cargo to build the validator: {e}"))?;
        if !status.success() {
            return Err(format!("building the validator failed ({status})"));
        }
        let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
        let bin = target.join("release/validator");
        let dir = match period_secs {
            None => target.join(format!("gridos-run/ledger-{count}")),
            Some(secs) => target.join(format!("gridos-run/ledger-{count}-p{secs}")),
        };
        let port = |i: u32| first_port.checked_add(u16::try_from(i).unwrap_or(u16::MAX)).ok_or("--validator-port too high");
        if !dir.join("validators.txt").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            let overlay: Vec<String> = (0..count).map(|i| port(i).map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_, _>>()?;
            let tcp: Vec<String> = (0..count).map(|i| port(count + i).map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_, _>>()?;
            let status = std::process::Command::new(&bin)
                .arg("init")
                .arg("--dir")
                .arg(&dir)
                .args(["--addrs", &tcp.join(","), "--overlay-addrs", &overlay.join(",")])
                .args(period_secs.map(|s| vec!["--period-secs".to_string(), s.to_string()]).unwrap_or_default())
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run validator init: {e}"))?;
            if !status.success() {
                return Err(format!("validator init failed ({status})"));
            }
        }
        let mut validators = DevValidators { children: Vec::new(), chain: String::new(), farm: 0, targets: Vec::new() };
        for i in 0..count {
            let log = std::fs::File::create(dir.join(format!("validator-{i}.log"))).map_err(|e| format!("validator log: {e}"))?;
            let child = std::process::Command::new(&bin)
                .arg("run")
                .arg("--dir")
                .arg(&dir)
                .args(["--index", &i.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start validator {i}: {e}"))?;
            validators.children.push(child);
        }
        let text = std::fs::read_to_string(dir.join("validators.txt")).map_err(|e| format!("validators.txt: {e}"))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, addr) = line.trim().split_once('@').ok_or_else(|| format!("validators.txt: bad line {line:?}"))?;
            let port: u16 = addr.rsplit(':').next().and_then(|p| p.parse().ok()).ok_or_else(|| format!("validators.txt: bad address in {line:?}"))?;
            validators.targets.push((key.to_string(), port));
        }
        // The development account's farm (made once, once the validators decide blocks).
        let farm = std::process::Command::new(&bin)
            .arg("dev-farm")
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run validator dev-farm: {e}"))?;
        let stdout = String::from_utf8_lossy(&farm.stdout);
        for line in stdout.lines() {
            if let Some(f) = line.strip_prefix("farm ") {
                validators.farm = f.trim().parse().map_err(|_| format!("validator dev-farm said {line:?}"))?;
            } else if let Some(c) = line.strip_prefix("chain ") {
                validators.chain = c.trim().to_string();
            }
        }
        if !farm.status.success() || validators.chain.len() != 64 {
            return Err(format!("validator dev-farm failed ({}): {}", farm.status, String::from_utf8_lossy(&farm.stderr).trim()));
        }
        let d = dir.display();
        eprintln!(
            "gridos-qemu: {count} development validator(s) on 127.0.0.1:{first_port}.. (overlay UDP; chain {}, farm {}; chain and logs in {d}). With gridctl:\n  \
             gridctl ledger trust --genesis {d}/genesis.bin --validators {d}/validators.txt\n  \
             gridctl --key {d}/dev-account.key nodes                     # the nodes registered, their free capacity\n  \
             gridctl --key {d}/dev-account.key ledger status            # also: balance, transfer KEY AMOUNT, farm create NAME, contracts, cancel ID\n  \
             gridctl --key {d}/dev-account.key deploy --node KEY@127.0.0.1:PORT FILE.wasm   # creates and pays its workload contract first",
            &validators.chain[..16],
            validators.farm
        );
        Ok(validators)
    }
}

impl Drop for DevValidators {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One node with the serial console on this terminal; Ctrl-C stops QEMU.
fn run_interactive(m: &Machine) -> Result<ExitCode, String> {
    let mut child = m.command().stdin(Stdio::null()).spawn().map_err(|e| format!("starting qemu: {e}"))?;
    let deadline = Instant::now() + m.timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(match status.code() {
                Some(EXIT_SUCCESS) | Some(0) => ExitCode::SUCCESS,
                Some(EXIT_FAILURE) => ExitCode::FAILURE,
                _ => {
                    eprintln!("gridos-qemu: qemu ended: {status}");
                    ExitCode::from(1)
                }
            });
        }
        if Instant::now() >= deadline {
            eprintln!("gridos-qemu: time limit of {} s reached; stopping QEMU", m.timeout.as_secs());
            let _ = child.kill();
            let _ = child.wait();
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Several nodes on one virtual L2 segment (see `gridos_qemu::cluster`), each with a disk
/// kept in `disk_dir` (so identities and shards survive a restart); node 0's overlay port
/// is forwarded to 127.0.0.1:`host_port`. Each line of output is prefixed by its node.
fn run_cluster(base: &Machine, nodes: u32, disk_dir: &std::path::Path, disk_mib: u64, host_port: u16) -> Result<ExitCode, String> {
    if !base.disks.is_empty() {
        return Err("--disk is for one node; a cluster keeps one disk per node in --disk-dir".into());
    }
    if nodes > 64 {
        return Err(format!("{nodes} nodes is more than this runner starts (64)"));
    }
    let switch = gridos_qemu::switch::Switch::start()?;
    let net = ClusterNet::new(&switch, host_port);
    let mut children = Vec::new();
    for i in 0..nodes {
        let disk = cluster::node_disk(disk_dir, i, disk_mib)?;
        let m = cluster::node_machine(base, i, &net, &disk)?;
        let mut child = m
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting qemu for node {i}: {e}"))?;
        let stdout = child.stdout.take().ok_or("qemu stdout missing")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = line.trim_end_matches('\r');
                println!("[node{i}] {line}");
                if i == 0 {
                    if let Some(key) = cluster::overlay_key(line) {
                        eprintln!(
                            "gridos-qemu: node 0 is {key}@127.0.0.1:{host_port}; gridctl reaches every node through it:\n  \
                             gridctl store put FILE --nodes {key}@127.0.0.1:{host_port}"
                        );
                    }
                }
            }
        });
        children.push(child);
    }
    eprintln!(
        "gridos-qemu: {nodes} nodes on one L2 segment (a switch on udp 127.0.0.1:{}; disks in {}); node 0's overlay port is 127.0.0.1:{host_port}; Ctrl-C stops them",
        net.switch_port,
        disk_dir.display()
    );
    let deadline = Instant::now() + base.timeout;
    while Instant::now() < deadline {
        let mut running = 0;
        for c in &mut children {
            if matches!(c.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(ExitCode::FAILURE)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn bench_boot(args: &MachineArgs, runs: u32) -> Result<ExitCode, String> {
    let mut m = machine(args)?;
    m.cmdline = format!("gridos.test=boot {}", m.cmdline);
    m.timeout = Duration::from_secs(120);
    let (mut kernel_us, mut ready_ms, mut exit_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let out = m.run()?;
        if !out.passed() {
            return Err(format!("boot failed during the benchmark\n{}", out.report()));
        }
        kernel_us.push(out.ready_us().unwrap_or(0) as f64);
        ready_ms.push(out.ready_wall.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0));
        exit_ms.push(out.elapsed.as_secs_f64() * 1000.0);
    }
    println!("bench boot ({} runs, {:?}, {} MiB):", runs, m.accel, m.memory_mib);
    println!("  kernel boot-to-ready (TSC)    median {:>10.0} us", median(kernel_us));
    println!("  wall: QEMU start -> ready     median {:>10.1} ms", median(ready_ms.clone()));
    let gridos_ready_ms = median(ready_ms.clone());
    println!("  wall: QEMU start -> exit      median {:>10.1} ms", median(exit_ms));
    match linux_boot_ms(&m, runs) {
        Ok(linux_ms) => println!(
            "  Linux (Debian cloud kernel + busybox initramfs, same QEMU): QEMU start -> /init  median {linux_ms:>8.1} ms; gridos/Linux {:.3}",
            gridos_ready_ms / linux_ms
        ),
        Err(e) => println!("  Linux comparison unavailable: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Wall time from QEMU start to the Linux guest's /init printing its marker.
fn linux_boot_ms(like: &Machine, runs: u32) -> Result<f64, String> {
    let guest = gridos_qemu::linux::prepare()?;
    let initrd = guest.initramfs("boot", "/bin/busybox echo linux-init-ready\n/bin/busybox poweroff -f")?;
    let mut m = like.clone();
    m.boot = gridos_qemu::BootSource::Kernel(guest.kernel.clone());
    m.initrd = Some(initrd);
    m.cmdline = "console=ttyS0 quiet panic=-1".into();
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let vm = m.spawn()?;
        if !vm.wait_for("linux-init-ready", Duration::from_secs(120)) {
            return Err(format!("the Linux guest never reached /init\n{}", vm.serial()));
        }
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        drop(vm.kill());
    }
    Ok(median(times))
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

/// Network figures (TCP over `nic` against Linux, and against gridos on virtio-net when
/// `nic` is another model), then, on virtio-net, the disk figures. Compared boots are
/// interleaved `runs` times; medians are printed. Asserts nothing.
fn bench_io(args: &MachineArgs, mib: u64, nic: &str, runs: u32) -> Result<ExitCode, String> {
    if !matches!(nic, "virtio-net-pci" | "e1000" | "e1000e") {
        return Err(format!("--nic {nic}: expected virtio-net-pci, e1000 or e1000e"));
    }
    let runs = runs.max(1);
    let m = machine(args)?;
    bench_net(&m, mib, nic, runs)?;
    if nic != "virtio-net-pci" {
        return Ok(ExitCode::SUCCESS);
    }
    let disk = std::env::temp_dir().join(format!("gridos-bench-{}.img", std::process::id()));
    std::fs::File::create(&disk).and_then(|f| f.set_len(256 << 20)).map_err(|e| e.to_string())?;
    let mut d = m.clone();
    d.cmdline = format!("gridos.test=disk-bench gridos.overlay=off {}", d.cmdline);
    d.disks = vec![disk.clone()];
    d.timeout = Duration::from_secs(600);
    let out = d.run()?;
    let _ = std::fs::remove_file(&disk);
    match out.serial.lines().find(|l| l.starts_with("bench disk:")) {
        Some(line) => println!("  virtio-blk (in kernel): {}", line.trim_start_matches("bench disk: ")),
        None => return Err(format!("disk bench failed\n{}", out.report())),
    }
    bench_disk_kinds(&m, runs)?;
    Ok(ExitCode::SUCCESS)
}

/// gridos's TCP figures (down, up) over `nic`: node->host (its source service) and
/// host->node (its discard service).
fn gridos_tcp(like: &Machine, mib: u64, nic: &str) -> Result<(f64, f64), String> {
    let (source, discard) = (free_port()?, free_port()?);
    let mut m = like.clone();
    m.cmdline = format!("gridos.test=serve gridos.services=echo gridos.underlay=open {}", m.cmdline);
    m.extra_args.extend([
        "-netdev".into(),
        format!("user,id=n0,hostfwd=tcp:127.0.0.1:{source}-:19,hostfwd=tcp:127.0.0.1:{discard}-:9"),
        "-device".into(),
        format!("{nic},netdev=n0"),
    ]);
    m.timeout = Duration::from_secs(600);
    let vm = m.spawn()?;
    // The services, and the DHCP lease (user networking forwards to 10.0.2.15).
    if !vm.wait_for("services: echo", Duration::from_secs(60)) || !vm.wait_for("dhcp lease", Duration::from_secs(60)) {
        return Err(format!("node did not start its services\n{}", vm.serial()));
    }
    let result = tcp_both_ways(source, discard, mib);
    drop(vm.kill());
    result
}

/// Median of the `pick`ed figure over rounds.
fn median_of<T>(rounds: &[T], pick: impl Fn(&T) -> f64) -> f64 {
    median(rounds.iter().map(pick).collect())
}

/// One compared TCP measurement of [`bench_net`].
enum NetSide {
    Gridos(&'static str),
    /// Linux on the NIC under test, with these parameters for its driver module (or none).
    Linux(Option<&'static str>),
}

fn bench_net(m: &Machine, mib: u64, nic: &str, runs: u32) -> Result<(), String> {
    // Linux on virtio-net: the cloud kernel (as the boot and wasm comparisons); the
    // Intel NICs need the generic kernel (the cloud one has no e1000/e1000e).
    let flavour = if nic == "virtio-net-pci" { Flavour::Cloud } else { Flavour::Generic };
    let mut sides = vec![NetSide::Gridos("")];
    if nic != "virtio-net-pci" {
        sides.push(NetSide::Gridos("virtio-net-pci"));
    }
    sides.push(NetSide::Linux(None));
    // Linux sends slowly over the Intel NICs here (QEMU 7.2, TCG): 5-6 MB/s against
    // 12-15 over virtio-net. So Linux's driver also without interrupt moderation (and
    // e1000e on legacy interrupts instead of MSI-X: about 2x in that direction; for
    // e1000 InterruptThrottleRate=0 made no difference over 64 MiB), the best settings
    // found here, to show how much of the gap is driver tuning.
    match nic {
        "e1000" => sides.push(NetSide::Linux(Some("InterruptThrottleRate=0"))),
        "e1000e" => sides.push(NetSide::Linux(Some("InterruptThrottleRate=0 IntMode=0"))),
        _ => {}
    }
    let mut figures: Vec<Vec<(f64, f64)>> = sides.iter().map(|_| Vec::new()).collect();
    let mut linux_error = None;
    for _ in 0..runs {
        for (side, got) in sides.iter().zip(figures.iter_mut()) {
            match side {
                NetSide::Gridos(other) => got.push(gridos_tcp(m, mib, if other.is_empty() { nic } else { other })?),
                NetSide::Linux(_) if linux_error.is_some() => {}
                NetSide::Linux(params) => match linux_tcp(m, mib, nic, flavour, *params) {
                    Ok(f) => got.push(f),
                    Err(e) => linux_error = Some(e),
                },
            }
        }
    }
    println!("bench net ({:?}, QEMU user networking, {nic}, {mib} MiB each way, median of {runs} rounds):", m.accel);
    let label = |side: &NetSide| match side {
        NetSide::Gridos(other) => format!("gridos {}", if other.is_empty() { nic } else { other }),
        NetSide::Linux(None) => format!("Linux {nic}"),
        NetSide::Linux(Some(params)) => format!("Linux {nic} {params}"),
    };
    for (dir, pick) in [("node->host", (|x: &(f64, f64)| x.0) as fn(&(f64, f64)) -> f64), ("host->node", |x: &(f64, f64)| x.1)] {
        let own = median_of(&figures[0], pick);
        let mut line = format!("  TCP {dir}  {} {own:>6.1} MB/s", label(&sides[0]));
        for (side, got) in sides.iter().zip(&figures).skip(1).filter(|(_, got)| !got.is_empty()) {
            let theirs = median_of(got, pick);
            line.push_str(&format!(";  {} {theirs:>6.1} (ratio {:.2})", label(side), own / theirs));
        }
        println!("{line}");
    }
    match linux_error {
        None => println!("  Linux: {} + busybox nc, same QEMU machine and NIC", flavour.label()),
        Some(e) => println!("  Linux comparison unavailable: {e}"),
    }
    Ok(())
}

/// One disk's figures from a `bench disk NAME (KIND): ...` line (the kernel's and
/// guest-diskbench's): (name, kind, [sequential write, sequential read, random write,
/// random read] MB/s).
fn parse_disk_line(line: &str) -> Option<(String, String, [f64; 4])> {
    let rest = line.trim().strip_prefix("bench disk ")?;
    let (name, rest) = rest.split_once(" (")?;
    let (kind, rest) = rest.split_once("): ")?;
    let numbers: Vec<f64> = rest
        .split(" MB/s")
        .filter_map(|piece| piece.rsplit(' ').next().and_then(|n| n.parse().ok()))
        .collect();
    let figures: [f64; 4] = numbers.try_into().ok()?;
    Some((name.to_string(), kind.to_string(), figures))
}

/// The Linux device name of the first disk of each gridos disk kind in `bench_disk_kinds`'s machine.
fn linux_disk_name(kind: &str) -> Option<&'static str> {
    match kind {
        "virtio-blk" => Some("vda"),
        "NVMe" => Some("nvme0n1"),
        "SATA (AHCI)" => Some("sda"),
        _ => None,
    }
}

/// virtio-blk, NVMe and SATA (AHCI) side by side in one QEMU, raw: gridos's
/// `disks-bench` test mode and the Linux generic guest's guest-diskbench (same method,
/// same devices, same disk indices for the random offsets), interleaved `runs` times.
fn bench_disk_kinds(like: &Machine, runs: u32) -> Result<(), String> {
    let images: Vec<_> = ["vd", "nvme", "sata"]
        .iter()
        .map(|kind| std::env::temp_dir().join(format!("gridos-bench-{kind}-{}.img", std::process::id())))
        .collect();
    for image in &images {
        std::fs::File::create(image).and_then(|f| f.set_len(64 << 20)).map_err(|e| e.to_string())?;
    }
    let mut d = like.clone();
    d.disks = vec![images[0].clone()];
    d.extra_args.extend(gridos_qemu::nvme_disk_args("bench-nvme", &images[1], "bench-nvme0"));
    d.extra_args.extend(gridos_qemu::ahci_disk_args("bench-ahci", &[(&images[2], "bench-sata0")]));
    d.timeout = Duration::from_secs(600);
    let result = disk_rounds(&d, runs);
    for image in &images {
        let _ = std::fs::remove_file(image);
    }
    let (gridos, linux) = result?;
    let kinds: Vec<String> = gridos[0].iter().map(|(_, kind, _)| kind.clone()).collect();
    let linux_rounds = linux.as_ref().map_or(0, |l| l.len());
    println!(
        "bench disks ({:?}, raw, 64 MiB images, cache=writeback; gridos {} rounds, Linux {linux_rounds}; medians in MB/s):",
        like.accel,
        gridos.len()
    );
    println!("  {:<12} {:>29} {:>29} {:>29} {:>29}", "", "seq write 1 MiB", "seq read 1 MiB", "4 KiB random write", "4 KiB random read");
    println!("  {:<12}{}", "", format!(" {:>11} {:>8} {:>7}", "gridos", "Linux", "ratio").repeat(4));
    let fig = |rounds: &[Vec<(String, String, [f64; 4])>], kind: &str, i: usize| {
        median_of(rounds, |r| r.iter().find(|(_, k, _)| k == kind).map_or(f64::NAN, |(_, _, f)| f[i]))
    };
    for kind in &kinds {
        let mut line = format!("  {kind:<12}");
        for i in 0..4 {
            let g = fig(&gridos, kind, i);
            let l = linux.as_ref().map_or(f64::NAN, |l| fig(l, kind, i));
            line.push_str(&format!(" {g:>11.1} {l:>8.1} {:>7.2}", g / l));
        }
        println!("{line}");
    }
    for kind in kinds.iter().filter(|k| k.as_str() != "virtio-blk") {
        let mut line = format!("  {kind} / virtio-blk, same QEMU:");
        for (i, what) in ["seq write", "seq read", "random write", "random read"].iter().enumerate() {
            let ratio = |rounds: &[Vec<(String, String, [f64; 4])>]| fig(rounds, kind, i) / fig(rounds, "virtio-blk", i);
            line.push_str(&format!(" {what} gridos {:.2}", ratio(&gridos)));
            if let Ok(l) = &linux {
                line.push_str(&format!(" Linux {:.2};", ratio(l)));
            }
        }
        println!("{}", line.trim_end_matches(';'));
    }
    match linux {
        Ok(_) => println!("  Linux: {} + guest-diskbench (O_DIRECT, fdatasync), same QEMU machine and devices", Flavour::Generic.label()),
        Err(e) => println!("  Linux comparison unavailable: {e}"),
    }
    Ok(())
}

/// One boot's disk lines, parsed ([`parse_disk_line`]).
type DiskRound = Vec<(String, String, [f64; 4])>;
/// gridos's rounds, and Linux's (or why it has none).
type DiskRounds = (Vec<DiskRound>, Result<Vec<DiskRound>, String>);

/// `runs` rounds of gridos then Linux on machine `d`'s disks; Linux's error ends its rounds.
fn disk_rounds(d: &Machine, runs: u32) -> Result<DiskRounds, String> {
    let mut g = d.clone();
    g.cmdline = format!("gridos.test=disks-bench gridos.disks=none gridos.overlay=off {}", g.cmdline);
    let (mut gridos, mut linux) = (Vec::new(), Ok(Vec::new()));
    for _ in 0..runs {
        let out = g.run()?;
        let round: DiskRound = out.serial.lines().filter_map(parse_disk_line).collect();
        if round.len() != 3 {
            return Err(format!("disk-kinds bench failed\n{}", out.report()));
        }
        if let Ok(done) = &mut linux {
            match linux_disks(d, &round) {
                Ok(l) => done.push(l),
                Err(e) => linux = Err(e),
            }
        }
        gridos.push(round);
    }
    Ok((gridos, linux))
}

/// guest-diskbench in the Linux generic guest on machine `d`'s disks, each disk with
/// the index gridos gave the same kind (the random offsets' seed).
fn linux_disks(d: &Machine, gridos: &DiskRound) -> Result<DiskRound, String> {
    let guest = gridos_qemu::linux::prepare_flavour(Flavour::Generic)?;
    let bench = gridos_qemu::linux::diskbench()?;
    let mut devices = Vec::new();
    for (index, (_, kind, _)) in gridos.iter().enumerate() {
        let name = linux_disk_name(kind).ok_or_else(|| format!("no Linux device name for disk kind {kind}"))?;
        devices.push((index, name, kind.as_str()));
    }
    let waits: String = devices
        .iter()
        .map(|(_, name, _)| format!("n=0; while [ ! -b /dev/{name} ] && [ $n -lt 300 ]; do /bin/busybox sleep 0.1; n=$((n+1)); done\n"))
        .collect();
    let bench_args: String = devices.iter().map(|(i, name, kind)| format!(" {i} {name} '{kind}'")).collect();
    let script = format!(
        "/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox sh /lib/mod/load
{waits}/w/diskbench{bench_args}
/bin/busybox echo linux-disks-done status $?
/bin/busybox poweroff -f"
    );
    let initrd = guest.initramfs_with("disks", &script, &[("diskbench", &bench)])?;
    let mut m = d.clone();
    m.boot = gridos_qemu::BootSource::Kernel(guest.kernel.clone());
    m.initrd = Some(initrd);
    m.cmdline = "console=ttyS0 quiet panic=-1".into();
    let vm = m.spawn()?;
    let done = vm.wait_for("linux-disks-done", Duration::from_secs(600));
    let serial = vm.serial();
    drop(vm.kill());
    if !done || !serial.contains("linux-disks-done status 0") {
        return Err(format!("the Linux guest's disk bench failed\n{serial}"));
    }
    let round: DiskRound = serial.lines().filter_map(parse_disk_line).collect();
    if round.len() != devices.len() {
        return Err(format!("the Linux guest printed {} disk lines, expected {}\n{serial}", round.len(), devices.len()));
    }
    Ok(round)
}

/// Reads `mib` MiB from port `source`, then writes `mib` MiB to port `discard`
/// and waits for the far end to close; returns (down, up) in MB/s.
fn tcp_both_ways(source: u16, discard: u16, mib: u64) -> Result<(f64, f64), String> {
    use std::io::{Read, Write};
    let total = mib << 20;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", source)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    let (mut got, mut buf) = (0u64, vec![0u8; 1 << 20]);
    let start = Instant::now();
    while got < total {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("source closed early".into());
        }
        got += n as u64;
    }
    let down = got as f64 / 1e6 / start.elapsed().as_secs_f64();
    drop(s);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", discard)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    for _ in 0..mib {
        s.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    s.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    let up = total as f64 / 1e6 / start.elapsed().as_secs_f64();
    Ok((down, up))
}

/// The same measurement against a Linux guest (busybox nc on ports 19 and 9).
fn linux_tcp(like: &Machine, mib: u64, nic: &str, flavour: Flavour, params: Option<&str>) -> Result<(f64, f64), String> {
    let mut guest = gridos_qemu::linux::prepare_flavour(flavour)?;
    if let Some(params) = params {
        guest.set_params(nic, params)?;
    }
    let script = "/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox sh /lib/mod/load
/bin/busybox ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
/bin/busybox route add default gw 10.0.2.2
(while true; do /bin/busybox nc -l -p 19 < /dev/zero; done) &
(while true; do /bin/busybox nc -l -p 9 > /dev/null; done) &
/bin/busybox sleep 1
/bin/busybox echo linux-net-up
while true; do /bin/busybox sleep 1000; done";
    let initrd = guest.initramfs("net", script)?;
    let (source, discard) = (free_port()?, free_port()?);
    let mut m = like.clone();
    m.boot = gridos_qemu::BootSource::Kernel(guest.kernel.clone());
    m.initrd = Some(initrd);
    m.cmdline = "console=ttyS0 quiet panic=-1".into();
    m.disks.clear();
    m.extra_args = vec![
        "-netdev".into(),
        format!("user,id=n0,hostfwd=tcp:127.0.0.1:{source}-:19,hostfwd=tcp:127.0.0.1:{discard}-:9"),
        "-device".into(),
        format!("{nic},netdev=n0"),
    ];
    let vm = m.spawn()?;
    if !vm.wait_for("linux-net-up", Duration::from_secs(120)) {
        return Err(format!("the Linux guest's network did not come up\n{}", vm.serial()));
    }
    let result = tcp_both_ways(source, discard, mib);
    drop(vm.kill());
    result
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn disk_lines_of_the_kernel_and_the_guest_parse_alike() {
        let line = "bench disk sda (SATA (AHCI)): 32 MiB sequential, 1 MiB requests: write 101.5 MB/s, read 230.0 MB/s; \
                    512 x 4 KiB random: write 3.2 MB/s, read 4.75 MB/s";
        let (name, kind, f) = parse_disk_line(line).unwrap();
        assert_eq!((name.as_str(), kind.as_str(), f), ("sda", "SATA (AHCI)", [101.5, 230.0, 3.2, 4.75]));
        assert_eq!(parse_disk_line("bench disk vda (virtio-blk): 32 MiB sequential").map(|l| l.2), None);
        assert!(parse_disk_line("bench disk: 128 MiB sequential, 1 MiB requests: write 1.0 MB/s, read 2.0 MB/s").is_none());
        assert_eq!(linux_disk_name("NVMe"), Some("nvme0n1"));
    }

    #[test]
    fn nodes_boot_on_the_ledger_with_the_validators_seen_from_the_guest() {
        let v = DevValidators {
            children: Vec::new(),
            chain: "ab".repeat(32),
            farm: 3,
            targets: vec![("11".repeat(32), 7450), ("22".repeat(32), 7451)],
        };
        assert_eq!(
            v.node_words(NODE_HOST_GATEWAY),
            format!(
                "gridos.ledger={} gridos.ledger.validators={}@10.0.2.2:7450,{}@10.0.2.2:7451 gridos.farm=3",
                "ab".repeat(32),
                "11".repeat(32),
                "22".repeat(32)
            )
        );
    }
}
