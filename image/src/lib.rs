//! `gridos-image`: turns the gridos kernel into what farmers boot: a hybrid ISO
//! (CD or USB stick, BIOS and UEFI, through GRUB and Multiboot2) and a PXE bundle
//! (an iPXE script and an ELF32 Multiboot1 copy of the kernel), with the node's
//! configuration written in as kernel command-line words.
//!
//! Modules: `config` (the farmer's settings, validated, as words), `deps` (host
//! tools and their Debian packages), `kernels` (the two kernel builds), `iso`,
//! `pxe`, and `boot` (QEMU machines for each boot path, for tests and `bench`).
//! The kernel side of the configuration is kernel/src/config.rs.

pub mod boot;
pub mod config;
pub mod deps;
pub mod error;
pub mod iso;
pub mod kernels;
pub mod pxe;

pub use config::{NodeConfig, Overrides};
pub use error::ImageError;
