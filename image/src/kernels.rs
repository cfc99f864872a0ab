//! The two kernel builds an image needs: the normal 64-bit ELF (Multiboot2 + PVH,
//! for GRUB) and the PXE copy (feature `multiboot1`, built in its own target
//! directory so it never replaces the normal one, then `objcopy -O elf32-i386`,
//! because iPXE loads only Multiboot1 ELF32 kernels).
//!
//! `GRIDOS_KERNEL` names a prebuilt normal kernel; `GRIDOS_PXE_KERNEL` a prebuilt
//! `multiboot1` kernel (either ELF class).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::ImageError;

/// Multiboot1 header magic, which must sit 4-aligned in the first 8 KiB.
const MULTIBOOT1_HEADER_MAGIC: u32 = 0x1bad_b002;
const MULTIBOOT1_SEARCH_BYTES: usize = 8192;

/// The normal kernel ELF (built once per process, or `GRIDOS_KERNEL`).
pub fn normal() -> Result<PathBuf, ImageError> {
    gridos_qemu::kernel_elf().map_err(ImageError::Kernel)
}

/// The `multiboot1` kernel build, 64-bit ELF (built once per process, or `GRIDOS_PXE_KERNEL`).
pub fn multiboot1() -> Result<PathBuf, ImageError> {
    static ELF: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ELF.get_or_init(|| match std::env::var_os("GRIDOS_PXE_KERNEL") {
        Some(path) => Ok(PathBuf::from(path)),
        None => build_multiboot1(),
    })
    .clone()
    .map_err(ImageError::Kernel)
}

fn build_multiboot1() -> Result<PathBuf, String> {
    let root = gridos_qemu::workspace_root();
    let target_dir = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let pxe_dir = target_dir.join("pxe");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "kernel", "--features", "multiboot1"])
        .args(["--target", "x86_64-unknown-linux-gnu", "--config", gridos_qemu::KERNEL_RUSTFLAGS])
        .arg("--target-dir")
        .arg(&pxe_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .map_err(|e| format!("could not run cargo to build the PXE kernel: {e}"))?;
    if !status.success() {
        return Err(format!("PXE kernel build (--features multiboot1) failed ({status})"));
    }
    let elf = pxe_dir.join("x86_64-unknown-linux-gnu/release/kernel");
    if elf.is_file() {
        Ok(elf)
    } else {
        Err(format!("PXE kernel build succeeded but {} is missing", elf.display()))
    }
}

/// Copies the kernel ELF to `out` without debug information (the release build keeps
/// it for host-side symbolization; the boot media do not need it).
pub fn write_stripped(elf: &Path, out: &Path) -> Result<(), ImageError> {
    objcopy(&["--strip-debug"], elf, out)
}

/// Copies the kernel ELF to `out` without any symbols or debug information (for the
/// lean ISO: nothing on the node reads its own symbol table).
pub fn write_stripped_all(elf: &Path, out: &Path) -> Result<(), ImageError> {
    objcopy(&["--strip-all"], elf, out)
}

fn objcopy(args: &[&str], input: &Path, out: &Path) -> Result<(), ImageError> {
    let output = Command::new("objcopy")
        .args(args)
        .arg(input)
        .arg(out)
        .output()
        .map_err(|e| ImageError::Tool { program: "objcopy".into(), detail: e.to_string() })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ImageError::Tool {
            program: "objcopy".into(),
            detail: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        })
    }
}

/// Writes the ELF32 copy of a `multiboot1` kernel to `out` (debug info stripped)
/// and checks that it is ELF32 with a Multiboot1 header where loaders look.
pub fn write_elf32(multiboot1_elf: &Path, out: &Path) -> Result<(), ImageError> {
    objcopy(&["-O", "elf32-i386", "--strip-debug"], multiboot1_elf, out)?;
    let bytes = std::fs::read(out).map_err(|e| ImageError::io(out, e))?;
    check_elf32_multiboot1(&bytes).map_err(|why| ImageError::Kernel(format!("{}: {why}", out.display())))
}

/// Checks ELF32 class and a valid Multiboot1 header (magic, flags, checksum).
pub fn check_elf32_multiboot1(bytes: &[u8]) -> Result<(), String> {
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) || bytes.get(4) != Some(&1) {
        return Err("not an ELF32 file".into());
    }
    let word = |off: usize| bytes.get(off..off + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let found = (0..MULTIBOOT1_SEARCH_BYTES.min(bytes.len())).step_by(4).any(|off| {
        match (word(off), word(off + 4), word(off + 8)) {
            (Some(magic), Some(flags), Some(sum)) => {
                magic == MULTIBOOT1_HEADER_MAGIC && magic.wrapping_add(flags).wrapping_add(sum) == 0
            }
            _ => false,
        }
    });
    if found {
        Ok(())
    } else {
        Err("no Multiboot1 header in the first 8 KiB (was the kernel built with --features multiboot1?)".into())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn multiboot1_header_is_found_only_when_valid() {
        let mut elf = vec![0u8; 0x2000];
        elf[..5].copy_from_slice(b"\x7fELF\x01");
        assert!(check_elf32_multiboot1(&elf).is_err());
        let header = [0x1bad_b002u32, 3, 0u32.wrapping_sub(0x1bad_b002 + 3)];
        for (i, w) in header.iter().enumerate() {
            elf[0x1018 + i * 4..0x101c + i * 4].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(check_elf32_multiboot1(&elf), Ok(()));
        elf[0x1020] ^= 1;
        assert!(check_elf32_multiboot1(&elf).is_err());
        elf[0x1020] ^= 1;
        elf[4] = 2;
        assert!(check_elf32_multiboot1(&elf).unwrap_err().contains("ELF32"));
    }
}
