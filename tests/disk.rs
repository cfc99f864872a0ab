//! virtio-blk: the booted node writes a pattern over a whole 256 MiB disk and
//! flushes; the host checks the image file; a second boot on the same image
//! reads it back; a byte changed behind the node's back is caught.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use gridos_qemu::{ensure_qemu, kernel_elf, Machine, Outcome};

const DISK_BYTES: u64 = 256 << 20;

/// The kernel's `selftest::disk_pattern_word`.
fn pattern_word(seed: u64, offset: u64) -> u64 {
    (offset ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (offset >> 7)
}

fn boot_with_disk(disk: &PathBuf, cmdline: &str) -> Outcome {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = cmdline.into();
    m.disks = vec![disk.clone()];
    m.timeout = Duration::from_secs(240);
    m.run().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn pattern_over_whole_disk_survives_reboot_and_corruption_is_caught() {
    let dir = gridos_qemu::workspace_root().join("target/test-disks");
    fs::create_dir_all(&dir).expect("test dir");
    let disk = dir.join(format!("pattern-{}.img", std::process::id()));
    let f = fs::File::create(&disk).expect("create image");
    f.set_len(DISK_BYTES).expect("size image");
    drop(f);
    let seed = u64::from(std::process::id()) | 0x5000;

    let out = boot_with_disk(&disk, &format!("gridos.test=disk-write gridos.seed={seed}"));
    assert!(out.passed(), "disk-write failed\n{}", out.report());
    assert!(out.serial.contains("disk vda: virtio-blk"), "{}", out.report());
    assert!(out.serial.contains("256 MiB (524288 sectors)"), "{}", out.report());

    // The host sees exactly the pattern in the image, every word of it.
    let mut image = fs::File::open(&disk).expect("open image");
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < DISK_BYTES {
        image.read_exact(&mut buf).expect("read image");
        for (i, word) in buf.chunks_exact(8).enumerate() {
            let o = offset + 8 * i as u64;
            let got = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            assert_eq!(got, pattern_word(seed, o), "image differs at byte {o:#x}");
        }
        offset += buf.len() as u64;
    }

    let out = boot_with_disk(&disk, &format!("gridos.test=disk-verify gridos.seed={seed}"));
    assert!(out.passed(), "disk-verify after reboot failed\n{}", out.report());
    assert!(out.serial.contains("disk-verify: read 256 MiB from vda, 0 bad chunks"), "{}", out.report());

    // Change one byte behind the node's back: the next verify must notice.
    let victim = 0x0ab_cdef_u64 & !7;
    let mut f = OpenOptions::new().write(true).open(&disk).expect("open rw");
    f.seek(SeekFrom::Start(victim)).expect("seek");
    f.write_all(&[!(pattern_word(seed, victim) as u8)]).expect("corrupt");
    drop(f);
    let out = boot_with_disk(&disk, &format!("gridos.test=disk-verify gridos.seed={seed}"));
    assert!(out.failed_in_kernel(), "a corrupted disk verified clean\n{}", out.report());
    assert!(out.serial.contains("mismatch in the MiB at offset 0xa00000"), "{}", out.report());
    let _ = fs::remove_file(&disk);
}

#[test]
fn async_requests_complete_by_interrupt_while_other_tasks_run() {
    let dir = gridos_qemu::workspace_root().join("target/test-disks");
    fs::create_dir_all(&dir).expect("test dir");
    let disk = dir.join(format!("async-{}.img", std::process::id()));
    fs::File::create(&disk).and_then(|f| f.set_len(32 << 20)).expect("image");
    let seed = 77;
    let out = boot_with_disk(&disk, &format!("gridos.test=disk-async gridos.seed={seed} gridos.overlay=off"));
    assert!(out.passed(), "disk-async failed\n{}", out.report());
    assert!(out.serial.contains("disk-async: 16 MiB written and read back asynchronously"), "{}", out.report());
    // What the node wrote is on the image.
    let image = fs::read(&disk).expect("read image");
    for o in (0..16u64 << 20).step_by(4096) {
        let got = u64::from_le_bytes(image[o as usize..o as usize + 8].try_into().expect("8 bytes"));
        assert_eq!(got, pattern_word(seed, o), "image differs at {o:#x}");
    }
    let _ = fs::remove_file(&disk);
}
