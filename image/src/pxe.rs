//! The PXE bundle: a directory to serve over TFTP or HTTP.
//!
//! - `boot.ipxe`: an iPXE script that loads `kernel.elf` with the node's words
//!   (relative to the script's own URL, unless a base URL is given) and boots it;
//! - `kernel.elf`: the kernel as a Multiboot1 ELF32 (iPXE has no Multiboot2);
//! - optionally `grub/` (from `grub-mknetdir`, for BIOS `grub/i386-pc/core.0` and
//!   UEFI `grub/x86_64-efi/core.efi`) with a grub.cfg and `kernel64.elf`, for
//!   networks whose DHCP server hands out GRUB rather than iPXE.
//!
//! iPXE passes the kernel's URL as the first command-line word; the kernel
//! ignores words it does not know.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::NodeConfig;
use crate::error::ImageError;
use crate::iso::grub_cfg;

/// What goes into a PXE bundle.
#[derive(Debug, Clone)]
pub struct PxeSpec {
    /// The `multiboot1` kernel build (either ELF class).
    pub multiboot1_kernel: PathBuf,
    pub config: NodeConfig,
    /// Where the files will be served from (e.g. `http://10.0.0.1/gridos`);
    /// `None` loads them relative to the script.
    pub base_url: Option<String>,
    /// Add GRUB netboot files and the normal kernel (its path).
    pub grub_netdir_kernel: Option<PathBuf>,
    pub menu_timeout_s: u32,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct PxeBundle {
    pub script: PathBuf,
    pub kernel: PathBuf,
    pub kernel_bytes: u64,
    pub grub_dir: Option<PathBuf>,
}

/// The iPXE script.
pub fn ipxe_script(config: &NodeConfig, base_url: Option<&str>) -> String {
    let kernel = match base_url {
        Some(base) => format!("{}/kernel.elf", base.trim_end_matches('/')),
        None => "kernel.elf".into(),
    };
    format!(
        "#!ipxe\n# gridos node, written by gridos-image: {}\necho gridos: loading {kernel}\nkernel {kernel} {}\nboot\n",
        config.summary(),
        config.cmdline()
    )
}

/// Writes the bundle into `dir` (created if needed).
pub fn build(spec: &PxeSpec, dir: &Path) -> Result<PxeBundle, ImageError> {
    if let Some(base) = &spec.base_url {
        let ok = (base.starts_with("http://") || base.starts_with("https://") || base.starts_with("tftp://"))
            && base.bytes().all(|b| b.is_ascii_graphic() && !b"\"'$;{}\\#".contains(&b));
        if !ok {
            return Err(ImageError::Config(crate::config::ConfigError::BadValue {
                key: "base-url".into(),
                value: base.clone(),
                why: "expected an http://, https:// or tftp:// URL without quotes or $".into(),
            }));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| ImageError::io(dir, e))?;
    let kernel = dir.join("kernel.elf");
    crate::kernels::write_elf32(&spec.multiboot1_kernel, &kernel)?;
    let kernel_bytes = std::fs::metadata(&kernel).map_err(|e| ImageError::io(&kernel, e))?.len();
    let script = dir.join("boot.ipxe");
    std::fs::write(&script, ipxe_script(&spec.config, spec.base_url.as_deref())).map_err(|e| ImageError::io(&script, e))?;
    let grub_dir = match &spec.grub_netdir_kernel {
        Some(kernel64) => Some(grub_netdir(dir, kernel64, &spec.config, spec.menu_timeout_s)?),
        None => None,
    };
    Ok(PxeBundle { script, kernel, kernel_bytes, grub_dir })
}

/// `grub-mknetdir` into `dir/grub`, a grub.cfg there that loads `/kernel64.elf`
/// with `multiboot2` from the TFTP server, and the normal kernel beside it.
fn grub_netdir(dir: &Path, kernel64: &Path, config: &NodeConfig, menu_timeout_s: u32) -> Result<PathBuf, ImageError> {
    let output = Command::new("grub-mknetdir")
        .arg(format!("--net-directory={}", dir.display()))
        .arg("--subdir=grub")
        .output()
        .map_err(|e| ImageError::Tool { program: "grub-mknetdir".into(), detail: e.to_string() })?;
    if !output.status.success() {
        return Err(ImageError::Tool {
            program: "grub-mknetdir".into(),
            detail: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    let target = dir.join("kernel64.elf");
    std::fs::copy(kernel64, &target).map_err(|e| ImageError::io(kernel64, e))?;
    let cfg = grub_cfg(config, menu_timeout_s).replace("/boot/kernel.elf", "($root)/kernel64.elf");
    let grub = dir.join("grub");
    let cfg_path = grub.join("grub.cfg");
    std::fs::write(&cfg_path, cfg).map_err(|e| ImageError::io(&cfg_path, e))?;
    Ok(grub)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn ipxe_script_loads_the_kernel_with_the_words() {
        let config = NodeConfig::from_file_text("farm = 7\nrole = \"storage\"").unwrap();
        let script = ipxe_script(&config, None);
        assert!(script.starts_with("#!ipxe\n"));
        assert!(script.contains("\nkernel kernel.elf gridos.role=storage gridos.farm=7 gridos.ip4=dhcp gridos.disks=all\nboot\n"));
        let script = ipxe_script(&config, Some("http://10.0.0.1/gridos/"));
        assert!(script.contains("\nkernel http://10.0.0.1/gridos/kernel.elf gridos.role=storage"));
    }
}
