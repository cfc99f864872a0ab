//! The host programs the image tool runs, which Debian package brings each, and
//! how to install the missing ones.
//!
//! Nothing is installed unless asked (`--install-deps`): then `apt-get install -y`
//! runs, and the tool says so first.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Something the tool needs on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dep {
    /// A command on PATH, or an absolute path that must exist.
    pub what: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
    /// Why it is needed.
    pub why: &'static str,
}

/// For the ISO (GRUB for BIOS and UEFI, xorriso, mtools for the EFI partition).
pub const ISO: &[Dep] = &[
    Dep { what: "grub-mkrescue", package: "grub-common", why: "builds the hybrid ISO" },
    Dep { what: "/usr/lib/grub/i386-pc", package: "grub-pc-bin", why: "GRUB for BIOS boot" },
    Dep { what: "/usr/lib/grub/x86_64-efi", package: "grub-efi-amd64-bin", why: "GRUB for UEFI boot" },
    Dep { what: "xorriso", package: "xorriso", why: "writes the ISO 9660 image" },
    Dep { what: "mformat", package: "mtools", why: "writes the EFI system partition" },
    Dep { what: "objcopy", package: "binutils", why: "strips debug information from the kernel" },
];

/// For the PXE bundle (the ELF32 copy of the kernel).
pub const PXE: &[Dep] = &[Dep { what: "objcopy", package: "binutils", why: "converts the kernel to ELF32 for iPXE" }];

/// For the optional GRUB netboot files in the PXE bundle.
pub const GRUB_NETDIR: &[Dep] = &[
    Dep { what: "grub-mknetdir", package: "grub-common", why: "writes GRUB netboot files" },
    Dep { what: "/usr/lib/grub/i386-pc", package: "grub-pc-bin", why: "GRUB for BIOS PXE" },
    Dep { what: "/usr/lib/grub/x86_64-efi", package: "grub-efi-amd64-bin", why: "GRUB for UEFI PXE" },
];

/// For booting images under QEMU (tests, `bench`).
pub const QEMU: &[Dep] = &[
    Dep { what: "qemu-system-x86_64", package: "qemu-system-x86", why: "boots the images" },
    Dep { what: "/usr/share/ovmf/OVMF.fd", package: "ovmf", why: "UEFI firmware for QEMU" },
    Dep { what: "/usr/lib/ipxe/qemu", package: "ipxe-qemu", why: "PXE option ROMs for QEMU's NICs" },
];

/// Needed things that are missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingDeps {
    pub missing: Vec<Dep>,
}

impl MissingDeps {
    /// The Debian packages to install, each once.
    pub fn packages(&self) -> Vec<&'static str> {
        let mut packages: Vec<&'static str> = Vec::new();
        for dep in &self.missing {
            if !packages.contains(&dep.package) {
                packages.push(dep.package);
            }
        }
        packages
    }
}

impl fmt::Display for MissingDeps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "missing host tools:")?;
        for dep in &self.missing {
            writeln!(f, "  {} (Debian package {}): {}", dep.what, dep.package, dep.why)?;
        }
        write!(
            f,
            "install them with:\n  sudo apt-get install -y {}\nor run again with --install-deps",
            self.packages().join(" ")
        )
    }
}

impl std::error::Error for MissingDeps {}

/// Why installing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallError(pub String);

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InstallError {}

/// Checks that every dep in the lists is there.
pub fn check(lists: &[&[Dep]]) -> Result<(), MissingDeps> {
    let mut missing = Vec::new();
    for dep in lists.iter().flat_map(|l| l.iter()) {
        if !present(dep) && !missing.contains(dep) {
            missing.push(*dep);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingDeps { missing })
    }
}

/// Checks, and with `install` runs `apt-get install -y` for what is missing (saying so).
pub fn ensure(lists: &[&[Dep]], install: bool) -> Result<(), String> {
    let missing = match check(lists) {
        Ok(()) => return Ok(()),
        Err(m) => m,
    };
    if !install {
        return Err(missing.to_string());
    }
    apt_install(&missing.packages()).map_err(|e| format!("{missing}\n{e}"))?;
    check(lists).map_err(|m| m.to_string())
}

fn apt_install(packages: &[&str]) -> Result<(), InstallError> {
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let mut apt = if is_root {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("apt-get");
        sudo
    };
    eprintln!("gridos-image: installing {} with apt-get install -y (asked by --install-deps)", packages.join(" "));
    let status = apt
        .args(["install", "-y", "-q"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| InstallError(format!("could not run apt-get: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(InstallError(format!("apt-get install failed ({status}); try `apt-get update` first")))
    }
}

fn present(dep: &Dep) -> bool {
    if dep.what.starts_with('/') {
        return Path::new(dep.what).exists();
    }
    which(dep.what).is_some()
}

/// The full path of `command` on PATH.
pub fn which(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(command)).find(|p| p.is_file())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn missing_deps_name_their_packages_once() {
        let fake = [
            Dep { what: "/nonexistent/gridos/a", package: "pkg-a", why: "a" },
            Dep { what: "gridos-no-such-command", package: "pkg-a", why: "b" },
            Dep { what: "/", package: "pkg-root", why: "always there" },
        ];
        let err = check(&[&fake]).unwrap_err();
        assert_eq!(err.missing.len(), 2);
        assert_eq!(err.packages(), vec!["pkg-a"]);
        let text = err.to_string();
        assert!(text.contains("sudo apt-get install -y pkg-a\n"), "{text}");
        assert!(text.contains("--install-deps"), "{text}");
    }
}
