//! The hybrid ISO: one image that boots from a CD or, written raw to a USB stick,
//! from a disk, on BIOS and on UEFI machines.
//!
//! `grub-mkrescue` (GRUB for i386-pc and x86_64-efi, xorriso, mtools) does the
//! El Torito, MBR, GPT and EFI partition work. The kernel goes in, without debug
//! information, as `/boot/kernel.elf` and GRUB loads it with `multiboot2`; grub.cfg puts GRUB's
//! menu on the serial console (COM1, 115200 8N1) and on the screen, and has one
//! entry per role plus a debug-logging entry, all with the node's configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{NodeConfig, Role};
use crate::error::ImageError;

/// What goes into an ISO.
#[derive(Debug, Clone)]
pub struct IsoSpec {
    /// The normal (Multiboot2) kernel ELF.
    pub kernel: PathBuf,
    pub config: NodeConfig,
    /// Seconds GRUB shows its menu before booting the first entry.
    pub menu_timeout_s: u32,
}

/// The GRUB configuration for `config`: the configured role first (the default),
/// then the other roles, then the configured role with debug logging.
pub fn grub_cfg(config: &NodeConfig, menu_timeout_s: u32) -> String {
    let mut cfg = String::new();
    cfg.push_str("# gridos boot menu, written by gridos-image. Serial console: COM1, 115200 8N1.\n");
    cfg.push_str("serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n");
    cfg.push_str("terminal_input serial console\n");
    cfg.push_str("terminal_output serial console\n");
    cfg.push_str(&format!("set timeout={menu_timeout_s}\nset default=0\n\n"));
    let mut roles = vec![config.role];
    roles.extend(Role::ALL.iter().copied().filter(|&r| r != config.role));
    for role in roles {
        let entry = NodeConfig { role, ..config.clone() };
        push_entry(&mut cfg, &format!("gridos node ({})", role.label()), &entry.words());
    }
    let mut debug = config.words();
    debug.push("gridos.log=debug".into());
    push_entry(&mut cfg, "gridos: debug logging", &debug);
    cfg
}

fn push_entry(cfg: &mut String, title: &str, words: &[String]) {
    let args: Vec<String> = words.iter().map(|w| grub_quote(w)).collect();
    cfg.push_str(&format!("menuentry \"{title}\" {{\n    multiboot2 /boot/kernel.elf {}\n    boot\n}}\n\n", args.join(" ")));
}

/// Quotes a word for GRUB's script lexer when it holds anything beyond plain
/// characters (`[`, `]` of IPv6 peers, for instance); GRUB removes the quotes.
fn grub_quote(word: &str) -> String {
    if word.bytes().all(|b| b.is_ascii_alphanumeric() || b"._=,:/+-".contains(&b)) {
        word.to_string()
    } else {
        format!("'{word}'")
    }
}

/// Builds the ISO at `out`; returns its size in bytes.
pub fn build(spec: &IsoSpec, out: &Path) -> Result<u64, ImageError> {
    let staging = staging_dir(out);
    let _ = std::fs::remove_dir_all(&staging);
    let grub_dir = staging.join("boot/grub");
    std::fs::create_dir_all(&grub_dir).map_err(|e| ImageError::io(&grub_dir, e))?;
    let kernel = staging.join("boot/kernel.elf");
    crate::kernels::write_stripped(&spec.kernel, &kernel)?;
    let cfg_path = grub_dir.join("grub.cfg");
    std::fs::write(&cfg_path, grub_cfg(&spec.config, spec.menu_timeout_s)).map_err(|e| ImageError::io(&cfg_path, e))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ImageError::io(parent, e))?;
    }
    let result = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(out)
        .arg(&staging)
        .args(["--", "-volid", "GRIDOS"])
        .output();
    let _ = std::fs::remove_dir_all(&staging);
    let output = result.map_err(|e| ImageError::Tool { program: "grub-mkrescue".into(), detail: e.to_string() })?;
    if !output.status.success() {
        return Err(ImageError::Tool {
            program: "grub-mkrescue".into(),
            detail: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    let meta = std::fs::metadata(out).map_err(|e| ImageError::io(out, e))?;
    Ok(meta.len())
}

fn staging_dir(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "gridos.iso".into());
    name.push(".staging");
    out.with_file_name(name)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn grub_cfg_has_serial_console_and_an_entry_per_role() {
        let config = NodeConfig::from_file_text(
            "farm = 42\nrole = \"compute\"\npeers = [\"[fd00::2]:7000\"]\nappend = \"gridos.test=boot\"",
        )
        .unwrap();
        let cfg = grub_cfg(&config, 3);
        assert!(cfg.contains("serial --unit=0 --speed=115200"));
        assert!(cfg.contains("terminal_input serial console\nterminal_output serial console\n"));
        assert!(cfg.contains("set timeout=3\n"));
        let titles: Vec<&str> = cfg.lines().filter_map(|l| l.strip_prefix("menuentry \"")?.split('"').next()).collect();
        assert_eq!(
            titles,
            ["gridos node (compute only)", "gridos node (storage+compute)", "gridos node (storage only)", "gridos: debug logging"]
        );
        let first = cfg.lines().find(|l| l.contains("multiboot2")).unwrap();
        assert_eq!(
            first.trim(),
            "multiboot2 /boot/kernel.elf gridos.role=compute gridos.farm=42 gridos.ip4=dhcp gridos.disks=all \
             'gridos.peers=[fd00::2]:7000' gridos.test=boot"
        );
        assert!(cfg.contains("gridos.role=compute gridos.farm=42 gridos.ip4=dhcp gridos.disks=all \
             'gridos.peers=[fd00::2]:7000' gridos.test=boot gridos.log=debug\n"));
    }
}
