//! A Linux guest for comparison benchmarks: Debian's cloud kernel and a busybox
//! initramfs, in the same QEMU configuration as a gridos node.
//!
//! `prepare` fetches the packages with `apt-get download` (no root needed) into
//! `target/linux-guest` once; `initramfs` writes a newc cpio archive holding
//! busybox, the virtio-net modules and an `/init` script the caller supplies.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

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
        let mut out = Vec::new();
        let mut ino = 1;
        for d in ["bin", "proc", "sys", "dev", "lib", "lib/net", "tmp"] {
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
        let init = format!("#!/bin/busybox sh\n{script}\n");
        cpio_entry(&mut out, ino, "init", 0o100755, init.as_bytes(), (0, 0));
        cpio_entry(&mut out, 0, "TRAILER!!!", 0, &[], (0, 0));
        let path = crate::workspace_root().join(format!("target/linux-guest/{name}.cpio"));
        fs::write(&path, out).map_err(|e| e.to_string())?;
        Ok(path)
    }
}
