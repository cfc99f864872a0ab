//! The kernel ELF must be a static, self-contained image: no dynamic section, no
//! interpreter, no undefined symbols (a dependency that drags libc in shows up here).

use std::process::Command;

use gridos_qemu::kernel_elf;

#[test]
fn kernel_is_static_with_no_undefined_symbols() {
    let elf = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let headers = Command::new("readelf").args(["-lWd"]).arg(&elf).output().expect("readelf runs");
    let text = String::from_utf8_lossy(&headers.stdout);
    assert!(headers.status.success(), "readelf failed: {}", String::from_utf8_lossy(&headers.stderr));
    assert!(text.contains("There is no dynamic section"), "kernel has a dynamic section:\n{text}");
    assert!(!text.contains("INTERP"), "kernel asks for an interpreter:\n{text}");
    assert!(text.contains("NOTE"), "kernel lacks the PVH note segment:\n{text}");
    let undefined = Command::new("nm").arg("-u").arg(&elf).output().expect("nm runs");
    let syms = String::from_utf8_lossy(&undefined.stdout);
    assert!(syms.trim().is_empty(), "kernel has undefined symbols:\n{syms}");
}

#[test]
fn multiboot2_header_is_in_the_first_32_kib() {
    let elf = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&elf).expect("kernel readable");
    let magic = 0xe852_50d6u32.to_le_bytes();
    let offset = bytes
        .windows(4)
        .take(32 * 1024)
        .enumerate()
        .find(|(i, w)| *w == magic && i % 8 == 0)
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no 8-aligned Multiboot2 header in the first 32 KiB"));
    let word = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let (arch, len, checksum) = (word(offset + 4), word(offset + 8), word(offset + 12));
    assert_eq!(arch, 0);
    assert_eq!(0xe852_50d6u32.wrapping_add(arch).wrapping_add(len).wrapping_add(checksum), 0, "bad checksum");
}
