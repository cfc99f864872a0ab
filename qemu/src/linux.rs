//! A Linux guest for comparison benchmarks: a Debian kernel and a busybox
//! initramfs, in the same QEMU configuration as a gridos node.
//!
//! Two flavours ([`Flavour`]): Debian's cloud kernel (small, virtio and NVMe only:
//! the boot, wasm and virtio-net comparisons) and its generic kernel (AHCI, e1000
//! and e1000e as modules: the disk-kind and Intel NIC comparisons). `prepare`
//! fetches the packages with `apt-get download` (no root needed) into
//! `target/linux-guest` or `target/linux-guest-generic` once, streams the kernel
//! package's data archive (never unpacked whole) to keep the kernel image and write
//! a `modules.dep` from each module's `.modinfo` (Debian's package ships none:
//! depmod makes it at install time), resolves the flavour's modules with their
//! dependencies in load order ([`load_order`]) and extracts only those.
//! `initramfs` writes a newc cpio archive holding busybox, those modules and an
//! `/init` script the caller supplies (`initramfs_with` adds files under `/w/`).
//!
//! For the wasm comparison, [`wasm_runner`] builds the host runner (`wasm-precompile`:
//! wasmtime 48 with the runtime settings the kernel uses) as a static glibc binary,
//! and [`wasm_bench`] boots the guest in a given QEMU machine and runs attested
//! bundles with it: the same machine code the kernel runs, under Linux.
//! [`diskbench`] builds the guest's raw-disk benchmark (`qemu/guest-diskbench`) the
//! same way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{BootSource, Machine};

/// Which Debian kernel the guest boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `linux-image-cloud-amd64`: virtio, NVMe built in; no AHCI, no e1000/e1000e.
    Cloud,
    /// `linux-image-amd64`: the generic kernel, every driver a module.
    Generic,
}

impl Flavour {
    fn meta_package(self) -> &'static str {
        match self {
            Flavour::Cloud => "linux-image-cloud-amd64",
            Flavour::Generic => "linux-image-amd64",
        }
    }

    fn dir(self) -> PathBuf {
        crate::workspace_root().join(match self {
            Flavour::Cloud => "target/linux-guest",
            Flavour::Generic => "target/linux-guest-generic",
        })
    }

    /// The modules `/lib/mod/load` loads (with their dependencies, first).
    fn modules(self) -> &'static [&'static str] {
        match self {
            Flavour::Cloud => &["virtio_pci", "virtio_net"],
            Flavour::Generic => &["virtio_pci", "virtio_net", "virtio_blk", "nvme", "ahci", "sd_mod", "e1000", "e1000e"],
        }
    }

    /// For figures' labels: "Debian cloud kernel" or "Debian generic kernel".
    pub fn label(self) -> &'static str {
        match self {
            Flavour::Cloud => "Debian cloud kernel",
            Flavour::Generic => "Debian generic kernel",
        }
    }
}

/// The unpacked guest.
pub struct LinuxGuest {
    pub kernel: PathBuf,
    pub flavour: Flavour,
    dir: PathBuf,
    busybox: PathBuf,
    /// The flavour's modules and their dependencies, in load order (uncompressed).
    modules: Vec<PathBuf>,
    /// Parameters for `insmod`, by module name ([`Self::set_params`]).
    params: BTreeMap<String, String>,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `.deb` in `dir` whose name starts with `prefix`.
fn find_deb(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.starts_with(prefix) && name.ends_with(".deb")
    })
}

/// Streams the data archive of `deb` (`dpkg-deb --fsys-tarfile`) and calls `visit`
/// with each regular file's path (without the leading `./`) and contents reader.
fn each_file(deb: &Path, mut visit: impl FnMut(&str, &mut dyn Read) -> Result<(), String>) -> Result<(), String> {
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("dpkg-deb: {e}"))?;
    let stdout = child.stdout.take().ok_or("dpkg-deb: no stdout")?;
    let mut archive = tar::Archive::new(stdout);
    let walked = (|| -> Result<(), String> {
        for entry in archive.entries().map_err(|e| format!("{}: {e}", deb.display()))? {
            let mut entry = entry.map_err(|e| format!("{}: {e}", deb.display()))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry.path().map_err(|e| format!("{}: {e}", deb.display()))?.to_string_lossy().into_owned();
            visit(path.trim_start_matches("./"), &mut entry)?;
        }
        Ok(())
    })();
    if walked.is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().map_err(|e| format!("dpkg-deb: {e}"))?;
    walked?;
    if !out.status.success() {
        return Err(format!("dpkg-deb --fsys-tarfile {}: {}", deb.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// A module file's path relative to `lib/modules/VERSION/` (as modules.dep names
/// it), if `path` is one.
fn module_rel_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("lib/modules/").or_else(|| path.strip_prefix("usr/lib/modules/"))?;
    let rel = rest.split_once('/')?.1;
    (rel.ends_with(".ko") || rel.ends_with(".ko.xz")).then_some(rel)
}

/// A module's name from its path: `kernel/drivers/nvme/host/nvme-core.ko.xz` -> `nvme_core`
/// (the kernel treats `-` and `_` in module names alike).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.strip_suffix(".xz").unwrap_or(file);
    stem.strip_suffix(".ko").unwrap_or(stem).replace('-', "_")
}

/// Reads a module, decompressing `.ko.xz` with `xz`.
fn read_module(path: &str, reader: &mut dyn Read) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| format!("{path}: {e}"))?;
    if !path.ends_with(".xz") {
        return Ok(bytes);
    }
    let mut child = Command::new("xz")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("xz: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("xz: no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let out = child.wait_with_output().map_err(|e| format!("xz: {e}"))?;
    let wrote = writer.join().map_err(|_| "xz: writer thread panicked".to_string())?;
    if !out.status.success() || wrote.is_err() {
        return Err(format!("xz -dc {path} failed"));
    }
    Ok(out.stdout)
}

/// The names in a module's `depends=` field (its `.modinfo` section).
fn module_depends(path: &str, elf: &[u8]) -> Result<Vec<String>, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).map_err(|e| format!("{path}: {e}"))?;
    let info = file.section_by_name(".modinfo").ok_or_else(|| format!("{path}: no .modinfo section"))?;
    let data = info.data().map_err(|e| format!("{path}: {e}"))?;
    let depends = data
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"depends="))
        .map(|list| String::from_utf8_lossy(list).into_owned())
        .unwrap_or_default();
    Ok(depends.split(',').filter(|d| !d.is_empty()).map(module_name).collect())
}

/// Why a module list could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleError {
    /// Line N (from 1) of modules.dep has no `path:`.
    Malformed(usize),
    /// A wanted module or a dependency is neither in modules.dep nor built in.
    Missing(String),
    /// The dependencies loop through this module.
    Cycle(String),
}

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleError::Malformed(line) => write!(f, "modules.dep line {line}: expected `path: deps...`"),
            ModuleError::Missing(name) => write!(f, "module {name} is neither in modules.dep nor built in"),
            ModuleError::Cycle(name) => write!(f, "module dependencies loop through {name}"),
        }
    }
}

/// The modules to load for `wanted` (module names), dependencies first, each once:
/// paths as `modules_dep` names them. `modules_dep` is depmod's format (`path: dep
/// dep...`, direct or transitive dependencies alike); `builtin` lists built-in
/// modules' paths (modules.builtin), which need no loading.
pub fn load_order(modules_dep: &str, builtin: &str, wanted: &[&str]) -> Result<Vec<String>, ModuleError> {
    let mut table: BTreeMap<String, (&str, Vec<String>)> = BTreeMap::new();
    for (index, line) in modules_dep.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (path, deps) = line.split_once(':').ok_or(ModuleError::Malformed(index + 1))?;
        let path = path.trim();
        if path.is_empty() {
            return Err(ModuleError::Malformed(index + 1));
        }
        table.insert(module_name(path), (path, deps.split_whitespace().map(module_name).collect()));
    }
    let builtin: BTreeSet<String> = builtin.lines().filter(|l| !l.trim().is_empty()).map(|l| module_name(l.trim())).collect();
    // Depth-first, post-order, with an explicit stack: (module, index of its next dependency).
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    for root in wanted {
        let mut stack: Vec<(String, usize)> = vec![(module_name(root), 0)];
        while let Some((name, next)) = stack.last().cloned() {
            if done.contains(&name) || (next == 0 && !table.contains_key(&name) && builtin.contains(&name)) {
                stack.pop();
                continue;
            }
            let (path, deps) = table.get(&name).ok_or_else(|| ModuleError::Missing(name.clone()))?;
            match deps.get(next) {
                Some(dep) => {
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                    if stack.iter().any(|(n, _)| n == dep) {
                        return Err(ModuleError::Cycle(dep.clone()));
                    }
                    stack.push((dep.clone(), 0));
                }
                None => {
                    order.push(path.to_string());
                    done.insert(name);
                    stack.pop();
                }
            }
        }
    }
    Ok(order)
}

/// The packages of `flavour` in its folder: downloads them once.
fn download(flavour: Flavour, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    if let (Some(image), Some(busybox)) = (find_deb(dir, "linux-image-"), find_deb(dir, "busybox-static")) {
        return Ok((image, busybox));
    }
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let meta = flavour.meta_package();
    let depends = run(Command::new("apt-cache").args(["depends", meta]))?;
    let image = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| format!("apt-cache names no linux-image package for {meta}"))?
        .to_string();
    eprintln!("gridos-qemu: fetching {image} and busybox-static with apt-get download (for the Linux comparison)");
    run(Command::new("apt-get").current_dir(dir).args(["download", "-q", &image, "busybox-static"]))?;
    match (find_deb(dir, "linux-image-"), find_deb(dir, "busybox-static")) {
        (Some(image), Some(busybox)) => Ok((image, busybox)),
        _ => Err(format!("apt-get download left no packages in {}", dir.display())),
    }
}

/// First pass over the kernel package: the kernel image, modules.builtin, and a
/// modules.dep written from every module's `depends=`.
fn index_kernel_package(deb: &Path, dir: &Path) -> Result<(), String> {
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    let mut depends: Vec<(String, Vec<String>)> = Vec::new();
    let mut builtin = None;
    each_file(deb, |path, reader| {
        if path.starts_with("boot/vmlinuz-") {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).map_err(|e| format!("{path}: {e}"))?;
            fs::write(dir.join("vmlinuz"), bytes).map_err(|e| e.to_string())?;
        } else if path.ends_with("/modules.builtin") && path.contains("lib/modules/") {
            let mut text = String::new();
            reader.read_to_string(&mut text).map_err(|e| format!("{path}: {e}"))?;
            builtin = Some(text);
        } else if let Some(rel) = module_rel_path(path) {
            let elf = read_module(path, reader)?;
            paths.insert(module_name(rel), rel.to_string());
            depends.push((rel.to_string(), module_depends(path, &elf)?));
        }
        Ok(())
    })?;
    if !dir.join("vmlinuz").is_file() {
        return Err(format!("{}: no boot/vmlinuz-*", deb.display()));
    }
    let mut text = String::new();
    for (rel, deps) in depends {
        let deps: Result<Vec<&str>, String> = deps
            .iter()
            .map(|d| paths.get(d).map(String::as_str).ok_or_else(|| format!("{rel} depends on {d}, which the package lacks")))
            .collect();
        text.push_str(&format!("{rel}: {}\n", deps?.join(" ")));
    }
    fs::write(dir.join("modules.builtin"), builtin.unwrap_or_default()).map_err(|e| e.to_string())?;
    // Written last: its presence means the pass completed.
    fs::write(dir.join("modules.dep"), text).map_err(|e| e.to_string())
}

/// Where a module is kept once extracted.
fn module_file(dir: &Path, rel: &str) -> PathBuf {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    dir.join("modules").join(file.strip_suffix(".xz").unwrap_or(file))
}

/// Second pass: extracts the modules in `wanted` (paths relative to lib/modules/VERSION).
fn extract_modules(deb: &Path, dir: &Path, wanted: &BTreeSet<&str>) -> Result<(), String> {
    fs::create_dir_all(dir.join("modules")).map_err(|e| e.to_string())?;
    each_file(deb, |path, reader| {
        if let Some(rel) = module_rel_path(path).filter(|rel| wanted.contains(rel)) {
            let bytes = read_module(path, reader)?;
            fs::write(module_file(dir, rel), bytes).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Fetches and unpacks Debian's cloud kernel and busybox (once).
pub fn prepare() -> Result<LinuxGuest, String> {
    prepare_flavour(Flavour::Cloud)
}

/// Fetches the kernel of `flavour` and busybox (once) and extracts the kernel image,
/// busybox and the flavour's modules with their dependencies.
pub fn prepare_flavour(flavour: Flavour) -> Result<LinuxGuest, String> {
    let dir = flavour.dir();
    let (image, busybox_deb) = download(flavour, &dir)?;
    // An earlier layout unpacked the whole package here.
    let _ = fs::remove_dir_all(dir.join("root"));
    let busybox = dir.join("busybox");
    if !busybox.is_file() {
        each_file(&busybox_deb, |path, reader| {
            if path == "bin/busybox" {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).map_err(|e| format!("{path}: {e}"))?;
                fs::write(&busybox, bytes).map_err(|e| e.to_string())?;
            }
            Ok(())
        })?;
    }
    if !busybox.is_file() {
        return Err(format!("{}: no bin/busybox", busybox_deb.display()));
    }
    if !dir.join("modules.dep").is_file() {
        index_kernel_package(&image, &dir)?;
    }
    let read = |name: &str| fs::read_to_string(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()));
    let order = load_order(&read("modules.dep")?, &read("modules.builtin")?, flavour.modules()).map_err(|e| e.to_string())?;
    let missing: BTreeSet<&str> = order.iter().map(String::as_str).filter(|rel| !module_file(&dir, rel).is_file()).collect();
    if !missing.is_empty() {
        extract_modules(&image, &dir, &missing)?;
    }
    let modules: Vec<PathBuf> = order.iter().map(|rel| module_file(&dir, rel)).collect();
    if let Some(absent) = modules.iter().find(|m| !m.is_file()) {
        return Err(format!("{}: not extracted", absent.display()));
    }
    Ok(LinuxGuest { kernel: dir.join("vmlinuz"), flavour, dir, busybox, modules, params: BTreeMap::new() })
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0, 0, 1, 0, data.len(), 0, 0, rdev.0, rdev.1, name.len() + 1, 0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

impl LinuxGuest {
    /// Loads module `name` with `params` (`key=value` words) in later initramfs images.
    pub fn set_params(&mut self, name: &str, params: &str) -> Result<(), String> {
        let name = module_name(name);
        if !self.modules.iter().any(|m| module_name(&m.to_string_lossy()) == name) {
            return Err(format!("module {name} is not in the {:?} guest", self.flavour));
        }
        if !params.bytes().all(|b| b.is_ascii_alphanumeric() || b" =_,".contains(&b)) {
            return Err(format!("module parameters {params:?}: expected key=value words"));
        }
        self.params.insert(name, params.to_string());
        Ok(())
    }

    /// Writes an initramfs whose `/init` is `script` (run by busybox sh); the
    /// flavour's modules are in `/lib/mod/` in load order as `0.ko`, `1.ko`, ...
    /// (`/lib/mod/load` loads them all).
    pub fn initramfs(&self, name: &str, script: &str) -> Result<PathBuf, String> {
        self.initramfs_with(name, script, &[])
    }

    /// [`Self::initramfs`] with `files` (name, host path) added as `/w/<name>`, executable.
    pub fn initramfs_with(&self, name: &str, script: &str, files: &[(&str, &Path)]) -> Result<PathBuf, String> {
        let mut out = Vec::new();
        let mut ino = 1;
        for d in ["bin", "proc", "sys", "dev", "lib", "lib/mod", "tmp", "w"] {
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
            cpio_entry(&mut out, ino, &format!("lib/mod/{i}.ko"), 0o100644, &data, (0, 0));
            ino += 1;
        }
        let load: String = self
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let params = self.params.get(&module_name(&m.to_string_lossy())).map_or("", String::as_str);
                format!("/bin/busybox insmod /lib/mod/{i}.ko {params}\n")
            })
            .collect();
        cpio_entry(&mut out, ino, "lib/mod/load", 0o100755, format!("#!/bin/busybox sh\n{load}").as_bytes(), (0, 0));
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
        let path = self.dir.join(format!("{name}.cpio"));
        fs::write(&path, out).map_err(|e| e.to_string())?;
        Ok(path)
    }
}

/// Builds `package`'s binary `bin` as a static glibc binary (`+crt-static`) into
/// `target/linux-static` (its own target directory, so it never replaces the kernel's
/// or the host's artifacts) and strips it into `target/linux-guest/<bin>-static`.
fn static_build(package: &str, bin: &str, cargo_args: &[&str]) -> Result<PathBuf, String> {
    let root = crate::workspace_root();
    let target_dir = root.join("target/linux-static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", package])
        .args(cargo_args)
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .map_err(|e| format!("could not run cargo to build the static {package}: {e}"))?;
    if !status.success() {
        return Err(format!("static {package} build failed ({status})"));
    }
    let built = target_dir.join("x86_64-unknown-linux-gnu/release").join(bin);
    let elf = fs::read(&built).map_err(|e| format!("{}: {e}", built.display()))?;
    if elf.windows(b"/lib64/ld-linux".len()).any(|w| w == b"/lib64/ld-linux") {
        return Err(format!("{} is dynamically linked: the guest has no libc", built.display()));
    }
    // Without symbols (the wasm runner: 84 MB -> 12 MB): the initramfs is unpacked into guest RAM.
    let dir = root.join("target/linux-guest");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let stripped = dir.join(format!("{bin}-static"));
    run(Command::new("objcopy").arg("--strip-all").arg(&built).arg(&stripped))?;
    Ok(stripped)
}

/// The static host runner (`wasm-precompile`, glibc, `+crt-static`) for the guest,
/// without Cranelift (it runs attested bundles only), built once per process
/// ([`static_build`]); `GRIDOS_WASM_RUNNER` names a prebuilt one.
pub fn wasm_runner() -> Result<PathBuf, String> {
    static RUNNER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    RUNNER
        .get_or_init(|| match std::env::var_os("GRIDOS_WASM_RUNNER") {
            Some(path) => Ok(PathBuf::from(path)),
            None => static_build("wasm-precompile", "wasm-precompile", &["--no-default-features"]),
        })
        .clone()
}

/// The guest's raw-disk benchmark (`qemu/guest-diskbench`: the kernel's `disks-bench`
/// methodology with `O_DIRECT`), static, built once per process.
pub fn diskbench() -> Result<PathBuf, String> {
    static BENCH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BENCH.get_or_init(|| static_build("guest-diskbench", "guest-diskbench", &[])).clone()
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

    const FAKE_DEP: &str = "kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko\n\
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko\n\
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko\n\
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko\n\
kernel/drivers/scsi/scsi_common.ko:\n\
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/lib/crc-t10dif.ko.xz\n\
kernel/lib/crc-t10dif.ko.xz:\n\
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n\
kernel/drivers/nvme/host/nvme-core.ko:\n\
kernel/drivers/unused/unused.ko: kernel/drivers/scsi/scsi_common.ko\n";

    fn position(order: &[String], name: &str) -> usize {
        order.iter().position(|p| module_name(p) == name).unwrap_or_else(|| panic!("{name} not in {order:?}"))
    }

    #[test]
    fn modules_load_after_their_dependencies_each_once() {
        let order = load_order(FAKE_DEP, "", &["ahci", "sd_mod", "nvme"]).unwrap();
        assert_eq!(order.len(), 9, "{order:?}");
        for (module, dep) in [
            ("ahci", "libahci"),
            ("ahci", "libata"),
            ("libahci", "libata"),
            ("libata", "scsi_mod"),
            ("scsi_mod", "scsi_common"),
            ("sd_mod", "scsi_mod"),
            ("sd_mod", "crc_t10dif"),
            ("nvme", "nvme_core"),
        ] {
            assert!(position(&order, dep) < position(&order, module), "{dep} before {module}: {order:?}");
        }
        assert!(!order.iter().any(|p| p.contains("unused")));
        // Paths as modules.dep names them; `-` and `_` alike in names.
        assert!(order.contains(&"kernel/lib/crc-t10dif.ko.xz".to_string()));
        assert_eq!(load_order(FAKE_DEP, "", &["nvme-core"]).unwrap(), ["kernel/drivers/nvme/host/nvme-core.ko"]);
    }

    #[test]
    fn builtin_modules_are_skipped_and_unknown_or_looping_ones_refused() {
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\n";
        assert_eq!(load_order(FAKE_DEP, builtin, &["virtio_pci", "nvme"]).unwrap().len(), 2);
        assert_eq!(load_order(FAKE_DEP, "", &["virtio_pci"]), Err(ModuleError::Missing("virtio_pci".into())));
        let dangling = "a.ko: b.ko\n";
        assert_eq!(load_order(dangling, "", &["a"]), Err(ModuleError::Missing("b".into())));
        let looping = "a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n";
        assert_eq!(load_order(looping, "", &["a"]), Err(ModuleError::Cycle("a".into())));
        assert_eq!(load_order("a.ko: \nno colon here\n", "", &["a"]), Err(ModuleError::Malformed(2)));
    }

    #[test]
    fn module_paths_and_names() {
        assert_eq!(module_rel_path("lib/modules/6.1.0-57-amd64/kernel/drivers/ata/ahci.ko"), Some("kernel/drivers/ata/ahci.ko"));
        assert_eq!(module_rel_path("usr/lib/modules/6.1/kernel/x.ko.xz"), Some("kernel/x.ko.xz"));
        assert_eq!(module_rel_path("lib/modules/6.1/modules.builtin"), None);
        assert_eq!(module_rel_path("boot/vmlinuz-6.1"), None);
        assert_eq!(module_name("kernel/drivers/nvme/host/nvme-core.ko.xz"), "nvme_core");
    }
}
