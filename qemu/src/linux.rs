//! A Linux guest for comparison benchmarks: Debian's cloud kernel and a busybox
//! initramfs, in the same QEMU configuration as a gridos node.
//!
//! `prepare` fetches the packages with `apt-get download` (no root needed) into
//! `target/linux-guest` once; `initramfs` writes a newc cpio archive holding
//! busybox, the virtio-net modules and an `/init` script the caller supplies
//! (`initramfs_with` adds files under `/w/`).
//!
//! For the wasm comparison, [`wasm_runner`] builds the host runner (`wasm-precompile`:
//! wasmtime 48 with the runtime settings the kernel uses) as a static glibc binary,
//! and [`wasm_bench`] boots the guest in a given QEMU machine and runs attested
//! bundles with it: the same machine code the kernel runs, under Linux.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{BootSource, Machine};

/// The unpacked guest.
pub struct LinuxGuest {
    pub kernel: PathBuf,
    busybox: PathBuf,
    /// Modules for virtio-net, in load order (decompressed).
    modules: Vec<PathBuf>,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn find(dir: &Path, name_starts: &str, name_ends: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if let Some(p) = find(&path, name_starts, name_ends) {
                return Some(p);
            }
        } else if name.starts_with(name_starts) && name.ends_with(name_ends) {
            return Some(path);
        }
    }
    None
}

/// Fetches and unpacks Debian's cloud kernel and busybox (once).
pub fn prepare() -> Result<LinuxGuest, String> {
    let dir = crate::workspace_root().join("target/linux-guest");
    let root = dir.join("root");
    if !root.join("bin/busybox").is_file() {
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let depends = run(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
        let image = depends
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .ok_or("apt-cache names no linux-image package for linux-image-cloud-amd64")?
            .to_string();
        eprintln!("gridos-qemu: fetching {image} and busybox-static with apt-get download (for the Linux comparison)");
        run(Command::new("apt-get").current_dir(&dir).args(["download", "-q", &image, "busybox-static"]))?;
        for entry in fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "deb") {
                run(Command::new("dpkg-deb").arg("-x").arg(entry.path()).arg(&root))?;
            }
        }
    }
    let kernel = find(&root.join("boot"), "vmlinuz-", "").ok_or("no vmlinuz in the kernel package")?;
    let mut modules = Vec::new();
    for name in [
        "virtio_ring.ko",
        "virtio.ko",
        "virtio_pci_modern_dev.ko",
        "virtio_pci_legacy_dev.ko",
        "virtio_pci.ko",
        "failover.ko",
        "net_failover.ko",
        "virtio_net.ko",
    ] {
        let plain = dir.join(name);
        if !plain.is_file() {
            let packed = match find(&root.join("lib/modules"), name, "")
                .or_else(|| find(&root.join("usr/lib/modules"), name, ""))
            {
                Some(p) => p,
                // Built into this kernel rather than a module: nothing to load.
                None => continue,
            };
            let bytes = if packed.extension().is_some_and(|e| e == "xz") {
                let out = Command::new("xz").arg("-dc").arg(&packed).output().map_err(|e| format!("xz: {e}"))?;
                out.stdout
            } else {
                fs::read(&packed).map_err(|e| e.to_string())?
            };
            fs::write(&plain, bytes).map_err(|e| e.to_string())?;
        }
        if plain.is_file() {
            modules.push(plain);
        }
    }
    Ok(LinuxGuest { kernel, busybox: root.join("bin/busybox"), modules })
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0, 0, 1, 0, data.len(), 0, 0, rdev.0, rdev.1, name.len() + 1, 0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out.extend_from_slice(data);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

impl LinuxGuest {
    /// Writes an initramfs whose `/init` is `script` (run by busybox sh); the
    /// virtio-net modules are in `/lib/net/` in load order as `0.ko`, `1.ko`, ...
    /// (`/lib/net/load` loads them all).
    pub fn initramfs(&self, name: &str, script: &str) -> Result<PathBuf, String> {
        self.initramfs_with(name, script, &[])
    }

    /// [`Self::initramfs`] with `files` (name, host path) added as `/w/<name>`, executable.
    pub fn initramfs_with(&self, name: &str, script: &str, files: &[(&str, &Path)]) -> Result<PathBuf, String> {
        let mut out = Vec::new();
        let mut ino = 1;
        for d in ["bin", "proc", "sys", "dev", "lib", "lib/net", "tmp", "w"] {
            cpio_entry(&mut out, ino, d, 0o040755, &[], (0, 0));
            ino += 1;
        }
        cpio_entry(&mut out, ino, "dev/console", 0o020600, &[], (5, 1));
        ino += 1;
        let busybox = fs::read(&self.busybox).map_err(|e| e.to_string())?;
        cpio_entry(&mut out, ino, "bin/busybox", 0o100755, &busybox, (0, 0));
        ino += 1;
        for (i, m) in self.modules.iter().enumerate() {
            let data = fs::read(m).map_err(|e| e.to_string())?;
            cpio_entry(&mut out, ino, &format!("lib/net/{i}.ko"), 0o100644, &data, (0, 0));
            ino += 1;
        }
        let load: String = (0..self.modules.len()).map(|i| format!("/bin/busybox insmod /lib/net/{i}.ko\n")).collect();
        cpio_entry(&mut out, ino, "lib/net/load", 0o100755, format!("#!/bin/busybox sh\n{load}").as_bytes(), (0, 0));
        ino += 1;
        for (file, host) in files {
            if file.is_empty() || file.contains('/') {
                return Err(format!("initramfs file name {file:?}: expected a plain name"));
            }
            let data = fs::read(host).map_err(|e| format!("{}: {e}", host.display()))?;
            cpio_entry(&mut out, ino, &format!("w/{file}"), 0o100755, &data, (0, 0));
            ino += 1;
        }
        let init = format!("#!/bin/busybox sh\n{script}\n");
        cpio_entry(&mut out, ino, "init", 0o100755, init.as_bytes(), (0, 0));
        cpio_entry(&mut out, 0, "TRAILER!!!", 0, &[], (0, 0));
        let path = crate::workspace_root().join(format!("target/linux-guest/{name}.cpio"));
        fs::write(&path, out).map_err(|e| e.to_string())?;
        Ok(path)
    }
}

/// The static host runner (`wasm-precompile`, glibc, `+crt-static`) for the guest,
/// without Cranelift (it runs attested bundles only),
/// built once per process into `target/linux-static` (its own target directory, so it
/// never replaces the kernel's or the host's artifacts) and stripped into
/// `target/linux-guest/wasm-runner`; `GRIDOS_WASM_RUNNER` names a prebuilt one.
pub fn wasm_runner() -> Result<PathBuf, String> {
    static RUNNER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    RUNNER
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("GRIDOS_WASM_RUNNER") {
                return Ok(PathBuf::from(path));
            }
            let root = crate::workspace_root();
            let target_dir = root.join("target/linux-static");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--release", "-p", "wasm-precompile", "--no-default-features"])
                .args(["--target", "x86_64-unknown-linux-gnu"])
                .arg("--target-dir")
                .arg(&target_dir)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .status()
                .map_err(|e| format!("could not run cargo to build the static wasm runner: {e}"))?;
            if !status.success() {
                return Err(format!("static wasm runner build failed ({status})"));
            }
            let bin = target_dir.join("x86_64-unknown-linux-gnu/release/wasm-precompile");
            let elf = fs::read(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
            if elf.windows(b"/lib64/ld-linux".len()).any(|w| w == b"/lib64/ld-linux") {
                return Err(format!("{} is dynamically linked: the guest has no libc", bin.display()));
            }
            // Without symbols (84 MB -> 12 MB): the initramfs is unpacked into guest RAM.
            let dir = root.join("target/linux-guest");
            fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let stripped = dir.join("wasm-runner");
            run(Command::new("objcopy").arg("--strip-all").arg(&bin).arg(&stripped))?;
            Ok(stripped)
        })
        .clone()
}

/// One program for [`wasm_bench`]: a label, the module (its attested bundle beside it,
/// `NAME.bundle`), and its arguments.
pub struct WasmProgram<'a> {
    pub label: &'a str,
    pub wasm: &'a Path,
    pub args: &'a [&'a str],
}

/// What the guest measured for one program.
#[derive(Debug, Clone)]
pub struct WasmTiming {
    pub label: String,
    /// The program's output lines (without the runner's own).
    pub lines: Vec<String>,
    pub instantiate_us: u64,
    pub run_us: u64,
}

/// Runs of each program in [`wasm_bench`] (the fastest counts: TCG on a shared host is noisy).
pub const RUNS: usize = 3;

/// Boots the Linux guest in a copy of `like` (same QEMU, accelerator, CPU model, memory)
/// and runs each program [`RUNS`] times with the static runner from its bundle, verified
/// against `trusted` (the compiler key, 64 hex digits). Returns the fastest run's timings
/// per program.
pub fn wasm_bench(like: &Machine, programs: &[WasmProgram<'_>], trusted: &str) -> Result<Vec<WasmTiming>, String> {
    let guest = prepare()?;
    let runner = wasm_runner()?;
    let mut files: Vec<(String, PathBuf)> = vec![("run".into(), runner)];
    let mut script = String::from("/bin/busybox mount -t proc proc /proc\n");
    for (i, p) in programs.iter().enumerate() {
        let bundle = p.wasm.with_extension("bundle");
        files.push((format!("{i}.wasm"), p.wasm.to_path_buf()));
        files.push((format!("{i}.bundle"), bundle));
        let args = p.args.join(" ");
        if !args.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') {
            return Err(format!("{}: arguments must be plain words", p.label));
        }
        script.push_str(&format!("/bin/busybox echo wasm-bench-begin {i}\ns=0\n"));
        for _ in 0..RUNS {
            script.push_str(&format!("/w/run bench --trust {trusted} /w/{i}.wasm {args} || s=$?\n"));
        }
        script.push_str(&format!("/bin/busybox echo wasm-bench-end {i} status $s\n"));
    }
    script.push_str("/bin/busybox echo wasm-bench-done\n/bin/busybox poweroff -f\n");
    let file_refs: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (n.as_str(), p.as_path())).collect();
    let initrd = guest.initramfs_with("wasm-bench", &script, &file_refs)?;
    let mut m = like.clone();
    m.boot = BootSource::Kernel(guest.kernel.clone());
    m.initrd = Some(initrd);
    m.cmdline = "console=ttyS0 quiet panic=-1".into();
    m.timeout = Duration::from_secs(600);
    let vm = m.spawn()?;
    let done = vm.wait_for("wasm-bench-done", Duration::from_secs(600));
    let serial = vm.serial();
    drop(vm.kill());
    if !done {
        return Err(format!("the Linux guest did not finish the wasm programs\n{serial}"));
    }
    programs.iter().enumerate().map(|(i, p)| parse_timing(&serial, i, p.label)).collect()
}

fn parse_timing(serial: &str, index: usize, label: &str) -> Result<WasmTiming, String> {
    let begin = format!("wasm-bench-begin {index}");
    let end = format!("wasm-bench-end {index} status ");
    let section: Vec<&str> = serial
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .skip_while(|l| !l.contains(&begin))
        .skip(1)
        .take_while(|l| !l.contains(&end))
        .collect();
    let status = serial.lines().find_map(|l| l.trim_end_matches('\r').split(&end).nth(1).map(str::to_string));
    if status.as_deref() != Some("0") {
        return Err(format!("{label}: the runner in the guest failed (status {status:?}):\n{}", section.join("\n")));
    }
    let number = |s: &str| s.trim().trim_end_matches("us").trim().parse::<u64>().map_err(|e| format!("{label}: {s:?}: {e}"));
    let mut best: Option<(u64, u64)> = None;
    for bench in section.iter().filter_map(|l| l.strip_prefix("host bench: instantiate ")) {
        let (inst, run) = bench.split_once(", run ").ok_or_else(|| format!("{label}: bench line {bench:?}"))?;
        let (inst, run) = (number(inst)?, number(run)?);
        if best.is_none_or(|(_, b)| run < b) {
            best = Some((inst, run));
        }
    }
    let (instantiate_us, run_us) = best.ok_or_else(|| format!("{label}: no bench line from the guest:\n{}", section.join("\n")))?;
    let mut lines: Vec<String> = section.iter().filter(|l| !l.starts_with("host")).map(|l| l.to_string()).collect();
    lines.dedup();
    Ok(WasmTiming { label: label.to_string(), lines, instantiate_us, run_us })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn guest_timings_are_parsed_per_program() {
        let serial = "boot noise\nwasm-bench-begin 0\r\nfib(30) = 832040\r\nhost: exited 0 (attested bundle)\r\n\
                      host bench: instantiate 120 us, run 45000 us\r\nfib(30) = 832040\r\n\
                      host bench: instantiate 100 us, run 44000 us\r\nwasm-bench-end 0 status 0\r\n\
                      wasm-bench-begin 1\nboom\nwasm-bench-end 1 status 1\n";
        let t = parse_timing(serial, 0, "fib").unwrap();
        assert_eq!((t.instantiate_us, t.run_us), (100, 44000));
        assert_eq!(t.lines, ["fib(30) = 832040"]);
        assert!(parse_timing(serial, 1, "x").unwrap_err().contains("status Some(\"1\")"));
        assert!(parse_timing(serial, 2, "y").is_err());
    }
}
