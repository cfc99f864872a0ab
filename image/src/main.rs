//! `gridos-image`: make the images farmers boot.
//!
//! ```text
//! gridos-image iso  --out gridos.iso [--config node.toml] [node flags] [--menu-timeout S]
//! gridos-image pxe  --out DIR        [--config node.toml] [node flags] [--base-url URL] [--grub-netdir]
//! gridos-image config                [--config node.toml] [node flags]   print the words and the summary
//! gridos-image deps [--install-deps]                                      check the host tools
//! gridos-image bench [--runs N]                                           sizes (lean vs previous layout) and boot times per boot path
//! ```
//! Node flags: --farm N --role full|compute|storage --net dhcp|static --ipv4 A/P
//! --gateway4 A --ipv6 X/P --gateway6 X --disks all|none|a,b --peers H:P,... --compilers KEY,... --farmer KEY --append WORDS.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gridos_image::boot::{self, BootPath};
use gridos_image::config::{NodeConfig, Overrides};
use gridos_image::{deps, iso, kernels, pxe, ImageError};

#[derive(Parser)]
#[command(name = "gridos-image", about = "Make gridos boot images: a USB/CD ISO (BIOS+UEFI) and a PXE bundle")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a hybrid ISO (CD or USB stick, BIOS and UEFI).
    Iso {
        /// Where to write the ISO.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
        /// Seconds the GRUB menu waits before booting the first entry.
        #[arg(long, default_value_t = 3)]
        menu_timeout: u32,
        /// Install missing host tools with apt-get first.
        #[arg(long)]
        install_deps: bool,
    },
    /// Build a PXE bundle (iPXE script + Multiboot1 ELF32 kernel) in a directory.
    Pxe {
        /// The directory to write (served over TFTP or HTTP).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
        /// URL the bundle is served from; default: relative to the script.
        #[arg(long)]
        base_url: Option<String>,
        /// Also write GRUB netboot files (grub-mknetdir) for networks that boot GRUB.
        #[arg(long)]
        grub_netdir: bool,
        /// Seconds the GRUB netboot menu waits (with --grub-netdir).
        #[arg(long, default_value_t = 3)]
        menu_timeout: u32,
        /// Install missing host tools with apt-get first.
        #[arg(long)]
        install_deps: bool,
    },
    /// Validate a node configuration and print its kernel command line.
    Config {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Check (or install) the host tools the images need.
    Deps {
        /// Install what is missing with apt-get.
        #[arg(long)]
        install_deps: bool,
    },
    /// Build test images, print their sizes, and time each boot path to the ready line.
    Bench {
        /// Boots per path.
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// Scratch directory for the images.
        #[arg(long, default_value = "target/image-bench")]
        dir: PathBuf,
    },
}

/// The node's configuration: a file and/or flags (flags win).
#[derive(Args, Clone)]
struct NodeArgs {
    /// Node configuration file (key = value lines; see image/README.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Farm id (a number).
    #[arg(long)]
    farm: Option<String>,
    /// full (storage+compute), compute or storage.
    #[arg(long)]
    role: Option<String>,
    /// dhcp or static.
    #[arg(long)]
    net: Option<String>,
    /// Static IPv4 address with prefix length, e.g. 192.168.1.20/24.
    #[arg(long)]
    ipv4: Option<String>,
    /// IPv4 gateway.
    #[arg(long)]
    gateway4: Option<String>,
    /// Static IPv6 address with prefix length, e.g. 2001:db8::20/64.
    #[arg(long)]
    ipv6: Option<String>,
    /// IPv6 gateway.
    #[arg(long)]
    gateway6: Option<String>,
    /// Disks to use: all, none, or a comma-separated list of names.
    #[arg(long)]
    disks: Option<String>,
    /// Validator/peer addresses, comma-separated HOST:PORT.
    #[arg(long)]
    peers: Option<String>,
    /// Trusted compiler keys, comma-separated (64 hex digits each): the node runs native
    /// code only when one of them attested it; without any, every module is interpreted.
    #[arg(long)]
    compilers: Option<String>,
    /// The farmer's public key (64 hex digits): sees the node's full status and kernel log
    /// (`gridctl node status`, `gridctl node logs`).
    #[arg(long)]
    farmer: Option<String>,
    /// Extra kernel command-line words (repeatable), e.g. gridos.log=debug.
    #[arg(long)]
    append: Vec<String>,
}

impl NodeArgs {
    fn load(&self) -> Result<NodeConfig, ImageError> {
        let overrides = Overrides {
            farm: self.farm.clone(),
            role: self.role.clone(),
            net: self.net.clone(),
            ipv4: self.ipv4.clone(),
            gateway4: self.gateway4.clone(),
            ipv6: self.ipv6.clone(),
            gateway6: self.gateway6.clone(),
            disks: self.disks.clone(),
            peers: self.peers.clone(),
            compilers: self.compilers.clone(),
            farmer: self.farmer.clone(),
            append: self.append.clone(),
        };
        let config = NodeConfig::load(self.config.as_deref(), &overrides)?;
        if config.farm.is_none() {
            eprintln!("gridos-image: warning: no farm id set (--farm or farm = N in the config file)");
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridos-image: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), ImageError> {
    match cli.command {
        Cmd::Iso { out, node, menu_timeout, install_deps } => {
            let config = node.load()?;
            deps::ensure(&[deps::ISO], install_deps).map_err(ImageError::Deps)?;
            let spec = iso::IsoSpec {
                kernel: kernels::normal()?,
                config,
                menu_timeout_s: menu_timeout,
                layout: iso::IsoLayout::Lean,
            };
            let sizes = iso::build(&spec, &out)?;
            println!("wrote {} ({:.1} MiB)", out.display(), sizes.iso as f64 / (1 << 20) as f64);
            println!("config: {}", spec.config.summary());
            println!("kernel command line: {}", spec.config.cmdline());
            println!("write it to a USB stick with: sudo dd if={} of=/dev/sdX bs=4M conv=fsync status=progress", out.display());
            Ok(())
        }
        Cmd::Pxe { out, node, base_url, grub_netdir, menu_timeout, install_deps } => {
            let config = node.load()?;
            let mut needed = vec![deps::PXE];
            if grub_netdir {
                needed.push(deps::GRUB_NETDIR);
            }
            deps::ensure(&needed, install_deps).map_err(ImageError::Deps)?;
            let grub_netdir_kernel = if grub_netdir { Some(kernels::normal()?) } else { None };
            let spec = pxe::PxeSpec {
                multiboot1_kernel: kernels::multiboot1()?,
                config,
                base_url,
                grub_netdir_kernel,
                menu_timeout_s: menu_timeout,
            };
            let bundle = pxe::build(&spec, &out)?;
            println!("wrote {} and {} ({} KiB, Multiboot1 ELF32)", bundle.script.display(), bundle.kernel.display(), bundle.kernel_bytes / 1024);
            if let Some(grub) = &bundle.grub_dir {
                println!("wrote GRUB netboot files in {} (BIOS: grub/i386-pc/core.0, UEFI: grub/x86_64-efi/core.efi)", grub.display());
            }
            println!("config: {}", spec.config.summary());
            println!("serve {} over TFTP or HTTP and point DHCP's boot file at boot.ipxe (see image/README.md)", out.display());
            Ok(())
        }
        Cmd::Config { node } => {
            let config = node.load()?;
            println!("config: {}", config.summary());
            println!("kernel command line: {}", config.cmdline());
            Ok(())
        }
        Cmd::Deps { install_deps } => {
            deps::ensure(&[deps::ISO, deps::PXE, deps::GRUB_NETDIR, deps::QEMU], install_deps).map_err(ImageError::Deps)?;
            println!("all host tools for images (and for booting them under QEMU) are installed");
            Ok(())
        }
        Cmd::Bench { runs, dir } => bench(runs.max(1), &dir),
    }
}

/// Builds a test ISO and PXE bundle, prints sizes, then boots each path `runs`
/// times and prints the median time from QEMU start to the ready line.
fn bench(runs: u32, dir: &std::path::Path) -> Result<(), ImageError> {
    deps::ensure(&[deps::ISO, deps::PXE, deps::GRUB_NETDIR, deps::QEMU], false).map_err(ImageError::Deps)?;
    let overrides = Overrides { farm: Some("1".into()), append: vec!["gridos.test=boot".into()], ..Overrides::default() };
    let config = NodeConfig::load(None, &overrides)?;
    let kernel = kernels::normal()?;
    let iso_path = dir.join("gridos.iso");
    let lean = iso::build(
        &iso::IsoSpec { kernel: kernel.clone(), config: config.clone(), menu_timeout_s: 0, layout: iso::IsoLayout::Lean },
        &iso_path,
    )?;
    let full_path = dir.join("gridos-full.iso");
    let full = iso::build(
        &iso::IsoSpec { kernel: kernel.clone(), config: config.clone(), menu_timeout_s: 0, layout: iso::IsoLayout::Full },
        &full_path,
    )?;
    let pxe_dir = dir.join("pxe");
    let spec = pxe::PxeSpec {
        multiboot1_kernel: kernels::multiboot1()?,
        config,
        base_url: None,
        grub_netdir_kernel: Some(kernel.clone()),
        menu_timeout_s: 0,
    };
    let bundle = pxe::build(&spec, &pxe_dir)?;
    let kernel_bytes = std::fs::metadata(&kernel).map(|m| m.len()).unwrap_or(0);
    let kib = |b: u64| b / 1024;
    let ratio = |now: u64, before: u64| if before == 0 { 0.0 } else { now as f64 / before as f64 };
    println!("sizes in KiB, previous layout (every GRUB module, locales, font; kernel without debug info) vs lean:");
    println!("  {:<44} {:>8} {:>8} {:>6}", "", "previous", "lean", "ratio");
    for (what, before, now) in [
        ("ISO (BIOS+UEFI hybrid)", full.iso, lean.iso),
        ("kernel stripped (debug info / all symbols)", full.kernel_stripped, lean.kernel_stripped),
        ("kernel as stored in the ISO (lean: gzip)", full.kernel_stored, lean.kernel_stored),
        ("GRUB and ISO structures (ISO - kernel)", full.grub(), lean.grub()),
    ] {
        println!("  {what:<44} {:>8} {:>8} {:>5.2}x", kib(before), kib(now), ratio(now, before));
    }
    println!("  {:<44} {:>8}", "kernel ELF (64-bit, with debug info)", kib(kernel_bytes));
    println!("  {:<44} {:>8}", "PXE kernel.elf (ELF32, stripped)", kib(bundle.kernel_bytes));
    let (accel, why) = gridos_qemu::Accel::Auto.resolve(&kernel);
    println!("boot to ready line, {runs} run(s) per path, median; accelerator: {why}");
    let mut paths: Vec<(BootPath, &std::path::Path, &str)> =
        BootPath::ALL.iter().map(|&p| (p, iso_path.as_path(), "")).collect();
    paths.insert(1, (BootPath::CdromBios, full_path.as_path(), " [previous layout]"));
    paths.insert(4, (BootPath::CdromUefi, full_path.as_path(), " [previous layout]"));
    for (path, iso_file, tag) in paths {
        let mut walls = Vec::new();
        let mut kernel_us = Vec::new();
        for _ in 0..runs {
            let mut m = boot::machine(path, iso_file, &pxe_dir, Duration::from_secs(120)).map_err(ImageError::Deps)?;
            m.accel = accel;
            let out = m.run().map_err(|e| ImageError::Tool { program: "qemu".into(), detail: e })?;
            match (out.ready_wall, out.ready_us()) {
                (Some(wall), Some(us)) if out.passed() => {
                    walls.push(wall);
                    kernel_us.push(us);
                }
                _ => println!("  {}{tag}: did not reach the ready line\n{}", path.name(), out.report()),
            }
        }
        walls.sort();
        kernel_us.sort_unstable();
        if let (Some(wall), Some(us)) = (walls.get(walls.len() / 2), kernel_us.get(kernel_us.len() / 2)) {
            println!(
                "  {:<58} QEMU start -> ready {:>7.2} s  (kernel entry -> ready {:>6.1} ms)",
                format!("{}{tag}", path.name()),
                wall.as_secs_f64(),
                *us as f64 / 1000.0
            );
        }
    }
    let _ = std::fs::remove_file(&full_path);
    Ok(())
}
