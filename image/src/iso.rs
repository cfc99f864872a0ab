//! The hybrid ISO: one image that boots from a CD or, written raw to a USB stick,
//! from a disk, on BIOS and on UEFI machines.
//!
//! `grub-mkrescue` (GRUB for i386-pc and x86_64-efi, xorriso, mtools) does the
//! El Torito, MBR, GPT and EFI partition work. The kernel goes in as `/boot/kernel.elf`
//! and GRUB loads it with `multiboot2`; grub.cfg puts GRUB's menu on the serial console
//! (COM1, 115200 8N1) and on the screen, and has one entry per role plus a
//! debug-logging entry, all with the node's configuration.
//!
//! The lean layout (the default, [`IsoLayout::Lean`]) carries only what that boot
//! needs: the GRUB modules in [`GRUB_MODULES`] (and their dependencies, xz-compressed),
//! no locales, fonts or themes, and the kernel without any symbols, gzip-compressed
//! (GRUB's `gzio` inflates it while `multiboot2` reads it). [`IsoLayout::Full`] is the
//! previous layout (every module, all locales, the unicode font, the kernel with its
//! symbols), kept so that `gridos-image bench` measures both in one run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::{NodeConfig, Role};
use crate::error::ImageError;

/// The GRUB modules the boot needs (`grub-mkrescue --install-modules`; it adds their
/// dependencies, and the core images carry the disk, ISO 9660 and FAT drivers):
/// the menu (`normal`), `multiboot2`, the serial console (`serial`, `terminal` for
/// `terminal_input`/`terminal_output`), `boot`, `gzio` for the compressed kernel, and
/// every partition map, because GRUB on UEFI probes each one listed in `partmap.lst`
/// and prints an error for a missing module.
pub const GRUB_MODULES: &str = "normal multiboot2 serial terminal boot gzio \
    part_acorn part_amiga part_apple part_bsd part_dfly part_dvh part_gpt part_msdos part_plan part_sun part_sunpc";

/// Which files go into the ISO besides grub.cfg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsoLayout {
    /// Only the GRUB modules in [`GRUB_MODULES`], no locales, fonts or themes; the
    /// kernel stripped of all symbols and gzip-compressed.
    #[default]
    Lean,
    /// The previous layout: every GRUB module, all locales, the unicode font and the
    /// starfield theme; the kernel stripped of debug information only.
    Full,
}

/// What went into an ISO, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoSizes {
    /// The whole ISO.
    pub iso: u64,
    /// `/boot/kernel.elf` as stored (compressed in the lean layout).
    pub kernel_stored: u64,
    /// The kernel ELF after stripping, before compression.
    pub kernel_stripped: u64,
}

impl IsoSizes {
    /// Everything that is not the kernel: GRUB (core images, EFI image, modules,
    /// fonts, locales) and the ISO's own structures.
    pub fn grub(&self) -> u64 {
        self.iso.saturating_sub(self.kernel_stored)
    }
}

/// What goes into an ISO.
#[derive(Debug, Clone)]
pub struct IsoSpec {
    /// The normal (Multiboot2) kernel ELF.
    pub kernel: PathBuf,
    pub config: NodeConfig,
    /// Seconds GRUB shows its menu before booting the first entry.
    pub menu_timeout_s: u32,
    pub layout: IsoLayout,
}

/// The GRUB configuration for `config`: the configured role first (the default),
/// then the other roles, then the configured role with debug logging.
pub fn grub_cfg(config: &NodeConfig, menu_timeout_s: u32) -> String {
    let mut cfg = String::new();
    cfg.push_str("# gridos boot menu, written by gridos-image. Serial console: COM1, 115200 8N1.\n");
    cfg.push_str("insmod gzio\n");
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

/// Builds the ISO at `out`; returns what went in.
pub fn build(spec: &IsoSpec, out: &Path) -> Result<IsoSizes, ImageError> {
    let staging = staging_dir(out);
    let _ = std::fs::remove_dir_all(&staging);
    let result = build_in(spec, out, &staging);
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn build_in(spec: &IsoSpec, out: &Path, staging: &Path) -> Result<IsoSizes, ImageError> {
    let grub_dir = staging.join("boot/grub");
    std::fs::create_dir_all(&grub_dir).map_err(|e| ImageError::io(&grub_dir, e))?;
    let kernel = staging.join("boot/kernel.elf");
    let (kernel_stripped, kernel_stored) = match spec.layout {
        IsoLayout::Full => {
            crate::kernels::write_stripped(&spec.kernel, &kernel)?;
            let bytes = file_len(&kernel)?;
            (bytes, bytes)
        }
        IsoLayout::Lean => {
            let stripped = staging.join("kernel.stripped");
            crate::kernels::write_stripped_all(&spec.kernel, &stripped)?;
            let stripped_bytes = file_len(&stripped)?;
            gzip_file(&stripped, &kernel)?;
            std::fs::remove_file(&stripped).map_err(|e| ImageError::io(&stripped, e))?;
            (stripped_bytes, file_len(&kernel)?)
        }
    };
    let cfg_path = grub_dir.join("grub.cfg");
    std::fs::write(&cfg_path, grub_cfg(&spec.config, spec.menu_timeout_s)).map_err(|e| ImageError::io(&cfg_path, e))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| ImageError::io(parent, e))?;
    }
    let mut command = Command::new("grub-mkrescue");
    command.arg("-o").arg(out);
    if spec.layout == IsoLayout::Lean {
        let modules: Vec<&str> = GRUB_MODULES.split_whitespace().collect();
        command.arg(format!("--install-modules={}", modules.join(" ")));
        command.args(["--locales=", "--fonts=", "--themes=", "--compress=xz"]);
    }
    let output = command
        .arg(staging)
        .args(["--", "-volid", "GRIDOS"])
        .output()
        .map_err(|e| ImageError::Tool { program: "grub-mkrescue".into(), detail: e.to_string() })?;
    if !output.status.success() {
        return Err(ImageError::Tool {
            program: "grub-mkrescue".into(),
            detail: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    Ok(IsoSizes { iso: file_len(out)?, kernel_stored, kernel_stripped })
}

fn file_len(path: &Path) -> Result<u64, ImageError> {
    Ok(std::fs::metadata(path).map_err(|e| ImageError::io(path, e))?.len())
}

/// Writes `input` gzip-compressed (best compression) to `out`.
fn gzip_file(input: &Path, out: &Path) -> Result<(), ImageError> {
    use std::io::Write;
    let bytes = std::fs::read(input).map_err(|e| ImageError::io(input, e))?;
    let file = std::fs::File::create(out).map_err(|e| ImageError::io(out, e))?;
    let mut encoder = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::best());
    encoder.write_all(&bytes).map_err(|e| ImageError::io(out, e))?;
    let mut writer = encoder.finish().map_err(|e| ImageError::io(out, e))?;
    writer.flush().map_err(|e| ImageError::io(out, e))
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
        assert!(cfg.contains("insmod gzio\nserial --unit=0 --speed=115200"));
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
