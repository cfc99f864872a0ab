//! Image tests: build the farmer's images with `gridos-image` (library) and boot
//! each one the way a farmer would, under QEMU (TCG) with a hard time limit:
//! the ISO as a CD and as a USB stick, each under SeaBIOS (BIOS) and under OVMF
//! (UEFI), the PXE bundle through QEMU's iPXE over TFTP, and the bundle's GRUB
//! netboot files chain-loaded over PXE. One more test boots the kernel directly
//! with bad configuration words: it must warn, use the defaults, and still boot.
//!
//! Every image carries `gridos.test=boot` (through `--append`), so the kernel exits
//! QEMU with status 33 after its ready line. Each test asserts the ready line, the
//! boot protocol, and that the kernel's `config:` line reports exactly the
//! configuration written into the image. On failure the serial output is shown.
//! Missing host tools fail with the packages to install (as root with `CI` set,
//! they are installed with apt-get first).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use gridos_image::boot::{self, BootPath};
use gridos_image::config::{NodeConfig, Overrides};
use gridos_image::{deps, iso, kernels, pxe};
use gridos_qemu::Outcome;

const BOOT_LIMIT: Duration = Duration::from_secs(120);

/// The ISO's configuration: static IPv4 and IPv6, a farm, the compute role, peers
/// of all three address forms.
fn iso_config() -> NodeConfig {
    let overrides = Overrides {
        farm: Some("42".into()),
        role: Some("compute".into()),
        ipv4: Some("10.0.2.15/24".into()),
        gateway4: Some("10.0.2.2".into()),
        ipv6: Some("fd00::15/64".into()),
        peers: Some("10.0.2.2:7000,[fd00::2]:7000,validator1.example.org:7000".into()),
        append: vec!["gridos.test=boot".into()],
        ..Overrides::default()
    };
    NodeConfig::load(None, &overrides).unwrap_or_else(|e| panic!("{e}"))
}

/// The PXE bundle's configuration: DHCP, storage role, a disk list.
fn pxe_config() -> NodeConfig {
    let overrides = Overrides {
        farm: Some("7".into()),
        role: Some("storage".into()),
        disks: Some("vda,vdb".into()),
        peers: Some("[fd00::2]:7000".into()),
        append: vec!["gridos.test=boot".into()],
        ..Overrides::default()
    };
    NodeConfig::load(None, &overrides).unwrap_or_else(|e| panic!("{e}"))
}

fn scratch() -> PathBuf {
    gridos_qemu::workspace_root().join("target/image-test")
}

fn ensure_tools() {
    let install = std::env::var_os("CI").is_some();
    deps::ensure(&[deps::ISO, deps::PXE, deps::GRUB_NETDIR, deps::QEMU], install).unwrap_or_else(|e| panic!("{e}"));
}

/// The test ISO (lean layout) and its sizes, built once per test process.
fn test_iso_sizes() -> &'static (PathBuf, iso::IsoSizes) {
    static ISO: OnceLock<(PathBuf, iso::IsoSizes)> = OnceLock::new();
    ISO.get_or_init(|| {
        ensure_tools();
        let kernel = kernels::normal().unwrap_or_else(|e| panic!("{e}"));
        let out = scratch().join("gridos-test.iso");
        let spec = iso::IsoSpec { kernel, config: iso_config(), menu_timeout_s: 0, layout: iso::IsoLayout::Lean };
        let sizes = iso::build(&spec, &out).unwrap_or_else(|e| panic!("{e}"));
        (out, sizes)
    })
}

fn test_iso() -> &'static Path {
    &test_iso_sizes().0
}

/// The farmer's ISO stays under 10 MB: GRUB carries only the modules the boot needs
/// and the kernel goes in compressed (the sizes are deterministic, not timed).
#[test]
fn iso_is_under_10_mb_with_a_compressed_kernel() {
    let (_, sizes) = test_iso_sizes();
    eprintln!("ISO {} KiB: kernel {} KiB stored ({} KiB stripped), GRUB part {} KiB",
        sizes.iso / 1024, sizes.kernel_stored / 1024, sizes.kernel_stripped / 1024, sizes.grub() / 1024);
    assert!(sizes.iso < 10_000_000, "ISO is {} bytes", sizes.iso);
    assert!(sizes.kernel_stored < sizes.kernel_stripped, "kernel not compressed: {sizes:?}");
    assert!(sizes.grub() < 5_000_000, "GRUB part is {} bytes: more than the boot needs", sizes.grub());
}

/// The test PXE bundle, built once per test process.
fn test_pxe() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        ensure_tools();
        let kernel = kernels::multiboot1().unwrap_or_else(|e| panic!("{e}"));
        let kernel64 = kernels::normal().unwrap_or_else(|e| panic!("{e}"));
        let dir = scratch().join("pxe");
        let spec = pxe::PxeSpec {
            multiboot1_kernel: kernel,
            config: pxe_config(),
            base_url: None,
            grub_netdir_kernel: Some(kernel64),
            menu_timeout_s: 0,
        };
        pxe::build(&spec, &dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    })
}

fn boot_path(path: BootPath) -> Outcome {
    let (iso, pxe) = match path {
        BootPath::Pxe | BootPath::GrubNetBios => (Path::new("/nonexistent"), test_pxe()),
        _ => (test_iso(), Path::new("/nonexistent")),
    };
    let machine = boot::machine(path, iso, pxe, BOOT_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    let out = machine.run().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{}: QEMU start -> ready line {:?}, kernel ready in {:?} us",
        path.name(),
        out.ready_wall,
        out.ready_us()
    );
    out
}

fn config_line(out: &Outcome) -> Option<&str> {
    out.serial.lines().find_map(|l| Some(l.split_once("] INFO  config: ")?.1.trim_end()))
}

fn assert_booted_with(out: &Outcome, protocol: &str, config: &NodeConfig, expected_summary: &str) {
    assert!(out.passed(), "boot did not pass\n{}", out.report());
    assert!(out.ready_us().is_some(), "no ready line\n{}", out.report());
    assert!(out.serial.contains(&format!("booting via {protocol}")), "not booted via {protocol}\n{}", out.report());
    assert!(!out.serial.contains("WARN  config:"), "the kernel refused a config word\n{}", out.report());
    assert_eq!(config.summary(), expected_summary, "host summary");
    assert_eq!(config_line(out), Some(expected_summary), "kernel config line\n{}", out.report());
}

const ISO_SUMMARY: &str = "role=compute, farm=42, net=ip4=10.0.2.15/24 gw4=10.0.2.2 ip6=fd00::15/64, disks=all, \
                           peers=10.0.2.2:7000,[fd00::2]:7000,validator1.example.org:7000";
const PXE_SUMMARY: &str = "role=storage, farm=7, net=dhcp, disks=vda,vdb, peers=[fd00::2]:7000";

#[test]
fn iso_boots_from_cdrom_under_bios() {
    let out = boot_path(BootPath::CdromBios);
    assert_booted_with(&out, "Multiboot2", &iso_config(), ISO_SUMMARY);
    assert!(out.serial.contains("(GRUB"), "boot loader is not GRUB\n{}", out.report());
}

#[test]
fn iso_boots_as_usb_stick_under_bios() {
    let out = boot_path(BootPath::UsbBios);
    assert_booted_with(&out, "Multiboot2", &iso_config(), ISO_SUMMARY);
}

#[test]
fn iso_boots_as_usb_stick_under_uefi() {
    let out = boot_path(BootPath::UsbUefi);
    assert_booted_with(&out, "Multiboot2", &iso_config(), ISO_SUMMARY);
}

#[test]
fn iso_boots_from_cdrom_under_uefi() {
    let out = boot_path(BootPath::CdromUefi);
    assert_booted_with(&out, "Multiboot2", &iso_config(), ISO_SUMMARY);
}

#[test]
fn pxe_bundle_boots_through_ipxe() {
    let out = boot_path(BootPath::Pxe);
    assert_booted_with(&out, "Multiboot1", &pxe_config(), PXE_SUMMARY);
    assert!(out.serial.contains("(iPXE"), "boot loader is not iPXE\n{}", out.report());
    let kernel = std::fs::read(test_pxe().join("kernel.elf")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kernels::check_elf32_multiboot1(&kernel), Ok(()));
}

#[test]
fn pxe_bundle_grub_netboot_boots_under_bios() {
    let out = boot_path(BootPath::GrubNetBios);
    assert_booted_with(&out, "Multiboot2", &pxe_config(), PXE_SUMMARY);
    assert!(out.serial.contains("(GRUB"), "boot loader is not GRUB\n{}", out.report());
}

#[test]
fn bad_config_words_warn_and_fall_back_to_defaults() {
    let kernel = kernels::normal().unwrap_or_else(|e| panic!("{e}"));
    let mut m = gridos_qemu::Machine::new(&kernel);
    m.cmdline = "gridos.test=boot gridos.role=boss gridos.farm=x42 gridos.ip4=10.0.0.300/24 gridos.gw6=nope \
                 gridos.disks=a;b gridos.peers=10.0.0.1:99999"
        .into();
    m.timeout = BOOT_LIMIT;
    let out = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.passed(), "boot did not pass\n{}", out.report());
    for key in ["role", "farm", "ip4", "gw6", "disks", "peers"] {
        let needle = format!("WARN  config: ignoring gridos.{key}=");
        assert!(out.serial.contains(&needle), "no warning for gridos.{key}\n{}", out.report());
    }
    let defaults = NodeConfig::default().summary();
    assert_eq!(defaults, "role=full, farm=none, net=dhcp, disks=all, peers=none");
    assert_eq!(config_line(&out), Some(defaults.as_str()), "{}", out.report());
}
