//! QEMU machines for each way a farmer boots gridos, for the image tests and
//! `gridos-image bench`: the ISO as a CD and as a USB stick (xHCI + usb-storage),
//! each under BIOS (SeaBIOS) and under UEFI (OVMF), PXE through QEMU's
//! iPXE option ROM with QEMU's built-in TFTP server, and GRUB netboot (the NIC
//! ROM chain-loads the bundle's `grub/i386-pc/core.0`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use gridos_qemu::{BootSource, Machine};

/// UEFI firmware images (Debian `ovmf`), first found wins.
const OVMF_IMAGES: [&str; 2] = ["/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd"];

/// One way of booting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
    /// The ISO as a CD-ROM, SeaBIOS.
    CdromBios,
    /// The ISO written to a USB stick (raw), SeaBIOS.
    UsbBios,
    /// The ISO as a CD-ROM, OVMF.
    CdromUefi,
    /// The ISO written to a USB stick (raw), OVMF.
    UsbUefi,
    /// iPXE from the NIC's option ROM, TFTP from QEMU's user network.
    Pxe,
    /// GRUB netboot files (`--grub-netdir`) chain-loaded over PXE, BIOS.
    GrubNetBios,
}

impl BootPath {
    pub const ALL: [BootPath; 6] = [
        BootPath::CdromBios,
        BootPath::UsbBios,
        BootPath::CdromUefi,
        BootPath::UsbUefi,
        BootPath::Pxe,
        BootPath::GrubNetBios,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BootPath::CdromBios => "ISO as CD, BIOS (SeaBIOS)",
            BootPath::UsbBios => "ISO as USB stick, BIOS (SeaBIOS)",
            BootPath::CdromUefi => "ISO as CD, UEFI (OVMF)",
            BootPath::UsbUefi => "ISO as USB stick, UEFI (OVMF)",
            BootPath::Pxe => "PXE (iPXE, TFTP, Multiboot1 ELF32)",
            BootPath::GrubNetBios => "PXE -> GRUB netboot, BIOS (Multiboot2)",
        }
    }
}

/// The UEFI firmware image, if installed.
pub fn ovmf() -> Option<PathBuf> {
    OVMF_IMAGES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A machine that boots `path`: `iso` for the ISO paths, `pxe_dir` (holding
/// `boot.ipxe`, and `grub/` for GRUB netboot) for the network paths. The machine carries isa-debug-exit, so a kernel booted
/// with `gridos.test=boot` ends QEMU with status 33.
pub fn machine(path: BootPath, iso: &Path, pxe_dir: &Path, timeout: Duration) -> Result<Machine, String> {
    let mut m = Machine::new(iso);
    m.timeout = timeout;
    m.boot = BootSource::Firmware;
    let args: Vec<String> = match path {
        BootPath::CdromBios => {
            m.boot = BootSource::Cdrom(iso.to_path_buf());
            Vec::new()
        }
        BootPath::UsbBios => usb_stick(iso),
        BootPath::UsbUefi => {
            let firmware = ovmf().ok_or("no UEFI firmware: install Debian package ovmf")?;
            let mut args = vec!["-bios".into(), firmware.display().to_string()];
            args.extend(usb_stick(iso));
            args
        }
        BootPath::CdromUefi => {
            let firmware = ovmf().ok_or("no UEFI firmware: install Debian package ovmf")?;
            m.boot = BootSource::Cdrom(iso.to_path_buf());
            vec!["-bios".into(), firmware.display().to_string()]
        }
        BootPath::Pxe | BootPath::GrubNetBios => {
            let bootfile = if path == BootPath::Pxe { "boot.ipxe" } else { "grub/i386-pc/core.0" };
            if !pxe_dir.join(bootfile).is_file() {
                return Err(format!("{} has no {bootfile}", pxe_dir.display()));
            }
            vec![
                "-netdev".into(),
                format!("user,id=n0,tftp={},bootfile={bootfile}", pxe_dir.display()),
                "-device".into(),
                "virtio-net-pci,netdev=n0".into(),
                "-boot".into(),
                "n".into(),
            ]
        }
    };
    m.extra_args.extend(args);
    Ok(m)
}

/// QEMU arguments that attach `image` as a USB stick (xHCI, usb-storage), read-only.
fn usb_stick(image: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("if=none,id=stick,format=raw,readonly=on,file={}", image.display()),
        "-device".into(),
        "qemu-xhci,id=xhci".into(),
        "-device".into(),
        "usb-storage,bus=xhci.0,drive=stick,bootindex=1".into(),
    ]
}
