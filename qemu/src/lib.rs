//! Building the gridos kernel and booting it under QEMU, for the `gridos-qemu`
//! tool, the integration tests and the benchmarks.
//!
//! Every boot has a time limit. QEMU runs under TCG unless KVM is asked for, or
//! `Accel::Auto` finds that a probe boot under KVM reaches the ready line (the
//! `/dev/kvm` of some nested hosts hangs on SSE in ring 0: see ../shared/DESIGN.md).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod cluster;
pub mod linux;
pub mod netns;
pub mod switch;

/// The line every boot prints once the node is up.
pub const READY_MARKER: &str = "gridos ready in ";
/// QEMU's exit status when the kernel reports success through isa-debug-exit.
pub const EXIT_SUCCESS: i32 = 33;
/// QEMU's exit status when the kernel reports failure through isa-debug-exit.
pub const EXIT_FAILURE: i32 = 35;

/// The rustc flags the kernel is built with (see ../shared/DESIGN.md, "Build recipe").
pub const KERNEL_RUSTFLAGS: &str =
    "target.x86_64-unknown-linux-gnu.rustflags=['-Crelocation-model=static','-Cno-redzone=yes','-Cforce-frame-pointers=yes']";

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Builds the kernel (release profile) and returns the ELF's path.
pub fn build_kernel() -> Result<PathBuf, String> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "kernel", "--target", "x86_64-unknown-linux-gnu", "--config", KERNEL_RUSTFLAGS])
        // Flags meant for host builds must not leak into the kernel build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .map_err(|e| format!("could not run cargo to build the kernel: {e}"))?;
    if !status.success() {
        return Err(format!("kernel build failed ({status})"));
    }
    let target_dir = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let elf = target_dir.join("x86_64-unknown-linux-gnu/release/kernel");
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!("kernel build succeeded but {} is missing", elf.display()))
    }
}

/// The kernel ELF, built once per process; `GRIDOS_KERNEL` names a prebuilt one.
pub fn kernel_elf() -> Result<PathBuf, String> {
    static ELF: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ELF.get_or_init(|| match std::env::var_os("GRIDOS_KERNEL") {
        Some(path) => Ok(PathBuf::from(path)),
        None => build_kernel(),
    })
    .clone()
}

/// Checks that `qemu-system-x86_64` is installed; as root on Debian/Ubuntu it
/// installs `qemu-system-x86` with apt-get (and says so), otherwise it explains how.
pub fn ensure_qemu() -> Result<(), String> {
    ensure_command("qemu-system-x86_64", "qemu-system-x86")
}

/// Checks for `command`; installs Debian package `package` if root and apt-get exist.
pub fn ensure_command(command: &str, package: &str) -> Result<(), String> {
    if which(command).is_some() {
        return Ok(());
    }
    if netns::is_root() && which("apt-get").is_some() {
        eprintln!("gridos: {command} is missing; installing Debian package {package} with apt-get");
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-q", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok && which(command).is_some() {
            return Ok(());
        }
    }
    Err(format!("{command} not found: install it with `sudo apt-get install -y {package}`"))
}

fn which(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(command)).find(|p| p.is_file())
}

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: slow, works everywhere.
    Tcg,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// KVM if a probe boot under it reaches the ready line, TCG otherwise.
    Auto,
}

impl Accel {
    /// Resolves `Auto` by a probe boot (at most 15 s). Returns the choice and why.
    pub fn resolve(self, kernel: &Path) -> (Accel, &'static str) {
        match self {
            Accel::Tcg => (Accel::Tcg, "TCG (default; --accel kvm or auto to try KVM)"),
            Accel::Kvm => (Accel::Kvm, "KVM (as asked)"),
            Accel::Auto => {
                if !Path::new("/dev/kvm").exists() {
                    return (Accel::Tcg, "TCG (no /dev/kvm)");
                }
                let mut probe = Machine::new(kernel);
                probe.accel = Accel::Kvm;
                probe.cmdline = "gridos.test=boot".into();
                probe.timeout = Duration::from_secs(15);
                match probe.run() {
                    Ok(out) if out.ready_us().is_some() => (Accel::Kvm, "KVM (a probe boot under KVM succeeded)"),
                    _ => (Accel::Tcg, "TCG (a probe boot under KVM failed)"),
                }
            }
        }
    }

    fn qemu_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg | Accel::Auto => "tcg",
        }
    }
}

/// How the machine boots.
#[derive(Debug, Clone)]
pub enum BootSource {
    /// QEMU loads the kernel ELF directly (PVH), with `cmdline`.
    Kernel(PathBuf),
    /// A CD-ROM image (firmware boots it).
    Cdrom(PathBuf),
    /// Nothing attached by the runner: the firmware boots from what `extra_args`
    /// attach (a USB stick, a disk, the network) or load (`-bios`).
    Firmware,
}

/// QEMU arguments that attach `image` (a raw file, or a `blkdebug:RULES:FILE` path)
/// as an NVMe controller whose namespace 1 is the image, with serial `serial`.
/// The kernel names it `nvmeNn1` (N counts NVMe controllers in PCI order).
pub fn nvme_disk_args(id: &str, image: &Path, serial: &str) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("file={},format=raw,if=none,id={id},cache=writeback", image.display()),
        "-device".into(),
        format!("nvme,drive={id},serial={serial}"),
    ]
}

/// One namespace of an NVMe controller for [`nvme_namespaces_args`].
#[derive(Debug, Clone, Copy)]
pub struct NvmeNs<'a> {
    /// A raw file, or a `blkdebug:RULES:FILE` path.
    pub image: &'a Path,
    pub nsid: u32,
    /// Logical block size (512, or 4096 for a "4Kn" namespace).
    pub block_bytes: u32,
}

impl<'a> NvmeNs<'a> {
    /// Namespace `nsid` on `image` with 512-byte blocks.
    pub fn new(image: &'a Path, nsid: u32) -> NvmeNs<'a> {
        NvmeNs { image, nsid, block_bytes: 512 }
    }
}

/// QEMU arguments that add NVMe controller `id` with serial `serial` carrying
/// `namespaces` (QEMU's `nvme-ns` devices on its bus). The kernel names them
/// `nvmeCnN` (C counts NVMe controllers in PCI order, N is the namespace ID).
pub fn nvme_namespaces_args(id: &str, serial: &str, namespaces: &[NvmeNs<'_>]) -> Vec<String> {
    let mut args = vec!["-device".to_string(), format!("nvme,id={id},serial={serial}")];
    for ns in namespaces {
        let drive = format!("{id}-ns{}", ns.nsid);
        args.push("-drive".into());
        args.push(format!("file={},format=raw,if=none,id={drive},cache=writeback", ns.image.display()));
        args.push("-device".into());
        let mut device = format!("nvme-ns,drive={drive},bus={id},nsid={}", ns.nsid);
        if ns.block_bytes != 512 {
            device.push_str(&format!(",logical_block_size={0},physical_block_size={0}", ns.block_bytes));
        }
        args.push(device);
    }
    args
}

/// QEMU arguments that add an AHCI HBA `id` with `disks` (image, serial) as SATA
/// disks on its ports 0, 1, ... The kernel names them `sda`, `sdb`, ...
pub fn ahci_disk_args(id: &str, disks: &[(&Path, &str)]) -> Vec<String> {
    let mut args = vec!["-device".to_string(), format!("ahci,id={id}")];
    for (port, (image, serial)) in disks.iter().enumerate() {
        args.push("-drive".into());
        args.push(format!("file={},format=raw,if=none,id={id}-d{port},cache=writeback", image.display()));
        args.push("-device".into());
        args.push(format!("ide-hd,drive={id}-d{port},bus={id}.{port},serial={serial}"));
    }
    args
}

/// One QEMU virtual machine.
#[derive(Debug, Clone)]
pub struct Machine {
    pub boot: BootSource,
    pub cmdline: String,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// Raw disk images, attached as virtio-blk devices in order.
    pub disks: Vec<PathBuf>,
    /// Extra QEMU arguments (NICs, firmware, devices).
    pub extra_args: Vec<String>,
    pub timeout: Duration,
    /// Network namespace to run QEMU in (`ip netns exec`), for tap networking.
    pub netns: Option<String>,
    /// An initial ramdisk for `BootSource::Kernel` (Linux comparison guests).
    pub initrd: Option<PathBuf>,
}

impl Machine {
    /// A 512 MiB, 1-CPU TCG machine booting `kernel`, with a 60 s limit.
    pub fn new(kernel: &Path) -> Machine {
        Machine {
            boot: BootSource::Kernel(kernel.to_path_buf()),
            cmdline: String::new(),
            memory_mib: 512,
            cpus: 1,
            accel: Accel::Tcg,
            disks: Vec::new(),
            extra_args: Vec::new(),
            timeout: Duration::from_secs(60),
            netns: None,
            initrd: None,
        }
    }

    /// The QEMU command line for this machine (serial on stdio).
    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        // Several vCPUs under TCG run on host threads of their own (MTTCG).
        let accel = match (self.accel, self.cpus) {
            (Accel::Tcg | Accel::Auto, 2..) => "tcg,thread=multi",
            (accel, _) => accel.qemu_arg(),
        };
        cmd.args(["-machine", "q35", "-cpu", "max", "-accel", accel]);
        cmd.args(["-m", &format!("{}M", self.memory_mib), "-smp", &self.cpus.to_string()]);
        cmd.args(["-display", "none", "-serial", "stdio", "-monitor", "none", "-nodefaults", "-no-reboot"]);
        cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        match &self.boot {
            BootSource::Kernel(elf) => {
                cmd.arg("-kernel").arg(elf);
                if let Some(initrd) = &self.initrd {
                    cmd.arg("-initrd").arg(initrd);
                }
                if !self.cmdline.is_empty() {
                    cmd.args(["-append", &self.cmdline]);
                }
            }
            BootSource::Cdrom(iso) => {
                cmd.arg("-cdrom").arg(iso);
            }
            BootSource::Firmware => {}
        }
        for (i, disk) in self.disks.iter().enumerate() {
            cmd.arg("-drive").arg(format!("file={},format=raw,if=none,id=disk{i},cache=writeback", disk.display()));
            cmd.args(["-device", &format!("virtio-blk-pci,drive=disk{i},serial=gridos-disk{i}")]);
        }
        cmd.args(&self.extra_args);
        cmd
    }

    /// Starts the machine with its serial output captured.
    pub fn spawn(&self) -> Result<RunningMachine, String> {
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start qemu-system-x86_64: {e}"))?;
        let started = Instant::now();
        let shared = Arc::new((Mutex::new(Captured::default()), Condvar::new()));
        let stdout = child.stdout.take().ok_or("qemu stdout missing")?;
        let stderr = child.stderr.take().ok_or("qemu stderr missing")?;
        let reader_state = Arc::clone(&shared);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
                let (lock, cond) = &*reader_state;
                let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
                if c.ready_at.is_none() && text.contains(READY_MARKER) {
                    c.ready_at = Some(started.elapsed());
                }
                c.serial.push_str(&text);
                c.serial.push('\n');
                cond.notify_all();
            }
            let (lock, cond) = &*reader_state;
            lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            cond.notify_all();
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        Ok(RunningMachine { child, shared, started, timeout: self.timeout, reader: Some(reader), err_reader: Some(err_reader) })
    }

    /// Boots, waits for QEMU to exit (or the time limit), and returns what happened.
    pub fn run(&self) -> Result<Outcome, String> {
        self.spawn()?.wait()
    }
}

#[derive(Default)]
struct Captured {
    serial: String,
    ready_at: Option<Duration>,
    closed: bool,
}

/// A machine that is running, with its serial output being captured.
pub struct RunningMachine {
    child: Child,
    shared: Arc<(Mutex<Captured>, Condvar)>,
    started: Instant,
    timeout: Duration,
    reader: Option<std::thread::JoinHandle<()>>,
    err_reader: Option<std::thread::JoinHandle<String>>,
}

impl RunningMachine {
    /// Waits until the serial output contains `needle` (true), or the output ends or
    /// `limit` passes (false).
    pub fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (lock, cond) = &*self.shared;
        let mut c = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if c.serial.contains(needle) {
                return true;
            }
            let now = Instant::now();
            if c.closed || now >= deadline {
                return false;
            }
            c = cond.wait_timeout(c, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// The serial output so far.
    pub fn serial(&self) -> String {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).serial.clone()
    }

    /// The QEMU process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills QEMU at once (like pulling the plug) and collects the outcome.
    pub fn kill(mut self) -> Outcome {
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.finish(status, false)
    }

    /// Waits for QEMU to exit, killing it when the time limit passes.
    pub fn wait(mut self) -> Result<Outcome, String> {
        let deadline = self.started + self.timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(self.finish(Some(status), false)),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let status = self.child.wait().ok();
                    return Ok(self.finish(status, true));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(format!("waiting for qemu: {e}")),
            }
        }
    }

    fn finish(&mut self, status: Option<ExitStatus>, timed_out: bool) -> Outcome {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr = self.err_reader.take().and_then(|r| r.join().ok()).unwrap_or_default();
        let c = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        Outcome {
            serial: c.serial.clone(),
            stderr,
            status,
            timed_out,
            elapsed: self.started.elapsed(),
            ready_wall: c.ready_at,
        }
    }
}

impl Drop for RunningMachine {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a boot ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Everything the kernel printed on its serial console.
    pub serial: String,
    /// What QEMU itself printed on stderr.
    pub stderr: String,
    pub status: Option<ExitStatus>,
    /// True when the time limit ended the boot.
    pub timed_out: bool,
    /// Wall time from starting QEMU to its exit.
    pub elapsed: Duration,
    /// Wall time from starting QEMU to the ready line, if it came.
    pub ready_wall: Option<Duration>,
}

impl Outcome {
    /// QEMU's exit code, if it exited normally.
    pub fn exit_code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// The kernel reported success through isa-debug-exit.
    pub fn passed(&self) -> bool {
        !self.timed_out && self.exit_code() == Some(EXIT_SUCCESS)
    }

    /// The kernel reported failure through isa-debug-exit.
    pub fn failed_in_kernel(&self) -> bool {
        !self.timed_out && self.exit_code() == Some(EXIT_FAILURE)
    }

    /// N from the kernel's `gridos ready in N us` line.
    pub fn ready_us(&self) -> Option<u64> {
        self.serial.lines().find_map(|line| {
            let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
            rest.strip_suffix(" us")?.trim().parse().ok()
        })
    }

    /// A readable account of the boot, for test failure messages.
    pub fn report(&self) -> String {
        format!(
            "qemu exit: {:?}{}, {:.2} s\n--- serial ---\n{}--- qemu stderr ---\n{}",
            self.status,
            if self.timed_out { " (killed at the time limit)" } else { "" },
            self.elapsed.as_secs_f64(),
            self.serial,
            self.stderr
        )
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn outcome(serial: &str) -> Outcome {
        Outcome {
            serial: serial.into(),
            stderr: String::new(),
            status: None,
            timed_out: false,
            elapsed: Duration::ZERO,
            ready_wall: None,
        }
    }

    #[test]
    fn ready_line_is_parsed() {
        let o = outcome("[    0.08] INFO  booting\n[    0.09] INFO  gridos ready in 83251 us\nmore\n");
        assert_eq!(o.ready_us(), Some(83251));
        assert_eq!(outcome("gridos ready in soon us\n").ready_us(), None);
        assert_eq!(outcome("nothing here\n").ready_us(), None);
    }

    #[test]
    fn command_has_time_limit_and_devices() {
        let mut m = Machine::new(Path::new("/k.elf"));
        m.cmdline = "gridos.test=boot".into();
        m.disks.push(PathBuf::from("/d.img"));
        let args: Vec<String> = m.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.windows(2).any(|w| w[0] == "-accel" && w[1] == "tcg"));
        assert!(args.windows(2).any(|w| w[0] == "-append" && w[1] == "gridos.test=boot"));
        assert!(args.iter().any(|a| a.starts_with("virtio-blk-pci,drive=disk0")));
        assert_eq!(m.timeout, Duration::from_secs(60));
        // Several vCPUs under TCG: multi-threaded TCG.
        m.cpus = 4;
        let args: Vec<String> = m.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.windows(2).any(|w| w[0] == "-accel" && w[1] == "tcg,thread=multi"));
        assert!(args.windows(2).any(|w| w[0] == "-smp" && w[1] == "4"));
    }

    #[test]
    fn nvme_and_ahci_disks_get_their_own_drives_and_ports() {
        let nvme = nvme_disk_args("n0", Path::new("/n.img"), "SN1");
        assert_eq!(nvme, ["-drive", "file=/n.img,format=raw,if=none,id=n0,cache=writeback", "-device", "nvme,drive=n0,serial=SN1"]);
        let four_k = NvmeNs { block_bytes: 4096, ..NvmeNs::new(Path::new("/c.img"), 3) };
        let namespaces = nvme_namespaces_args("nv", "SN2", &[NvmeNs::new(Path::new("/a.img"), 1), four_k]);
        assert_eq!(namespaces, [
            "-device", "nvme,id=nv,serial=SN2",
            "-drive", "file=/a.img,format=raw,if=none,id=nv-ns1,cache=writeback", "-device", "nvme-ns,drive=nv-ns1,bus=nv,nsid=1",
            "-drive", "file=/c.img,format=raw,if=none,id=nv-ns3,cache=writeback",
            "-device", "nvme-ns,drive=nv-ns3,bus=nv,nsid=3,logical_block_size=4096,physical_block_size=4096",
        ]);
        let ahci = ahci_disk_args("a", &[(Path::new("/s0.img"), "S0"), (Path::new("/s1.img"), "S1")]);
        assert_eq!(ahci[..2], ["-device", "ahci,id=a"]);
        assert!(ahci.contains(&"ide-hd,drive=a-d0,bus=a.0,serial=S0".to_string()), "{ahci:?}");
        assert!(ahci.contains(&"ide-hd,drive=a-d1,bus=a.1,serial=S1".to_string()), "{ahci:?}");
        assert!(ahci.contains(&"file=/s1.img,format=raw,if=none,id=a-d1,cache=writeback".to_string()), "{ahci:?}");
    }
}
