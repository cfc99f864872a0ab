//! The Multiboot1 header, for the PXE copy of the kernel only (cargo feature `multiboot1`).
//!
//! iPXE loads Multiboot1 kernels but has no Multiboot2, so the PXE bundle carries an
//! ELF32 copy of the kernel (`objcopy -O elf32-i386`) with this header. The loader
//! takes the load addresses and the entry point from the ELF program headers, so
//! the header asks only for page-aligned modules (bit 0) and memory information
//! (bit 1); the address fields of bit 16 are not needed. The header must be 4-byte
//! aligned within the first 8 KiB of the file: it follows the Multiboot2 header in
//! `.boot`, which the linker script places first (file offset 0x1000).
//!
//! QEMU's `-kernel` refuses a 64-bit ELF that carries a Multiboot1 header, which is
//! why the normal build leaves it out (see ../shared/DESIGN.md). The loader enters
//! the same 32-bit stub as Multiboot2 with `eax = 0x2badb002` and `ebx` pointing at
//! the Multiboot1 information, which `bootinfo` reads.

/// Multiboot1 bootloader magic in `eax`.
pub const MULTIBOOT1_BOOTLOADER_MAGIC: u32 = 0x2bad_b002;

#[cfg(feature = "multiboot1")]
core::arch::global_asm!(
    r#"
    .section .boot, "a"
    .align 4
mb1_header_start:
    .long 0x1badb002
    .long 0x00000003
    .long 0x100000000 - (0x1badb002 + 0x00000003)
    .text
    "#,
    options(att_syntax)
);
