//! Entropy boot tests: which hardware sources the node trusts, and that it makes no
//! long-term key without a sound one (issue 10, item 7). Four short boots of the real
//! kernel under QEMU (TCG): the CPU model decides whether RDRAND exists, a
//! `virtio-rng-pci` device adds the host's source.

use std::path::Path;
use std::time::Duration;

use gridos_qemu::{ensure_qemu, kernel_elf, Machine, Outcome};

fn boot(cpu: &str, rng: bool, disk: Option<&Path>) -> Outcome {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = "gridos.test=boot".into();
    m.timeout = Duration::from_secs(90);
    // The later -cpu wins over the runner's `-cpu max`.
    m.extra_args = vec!["-cpu".into(), cpu.into()];
    if rng {
        m.extra_args.extend(["-device".into(), "virtio-rng-pci".into()]);
    }
    m.disks = disk.map(Path::to_path_buf).into_iter().collect();
    let out = m.run().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.passed(), "boot did not pass\n{}", out.report());
    out
}

fn line<'a>(out: &'a Outcome, needle: &str) -> &'a str {
    out.serial.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle:?}\n{}", out.report()))
}

#[test]
fn keys_come_only_from_health_tested_sources() {
    // 1. A CPU with RDRAND (TCG's `max`): tested, counted, keys allowed.
    let out = boot("max", false, None);
    let l = line(&out, "entropy: sources ");
    assert!(l.contains("RDRAND") && l.contains("(health-tested)") && l.contains("fit for keys")
        && !l.contains("NOT fit"), "{l}");
    line(&out, "identity: node key ");

    // 2. A CPU with neither RDRAND nor RDSEED and no virtio-rng: no key is made, and
    //    the node says why and still comes up.
    let out = boot("qemu64", false, None);
    let l = line(&out, "entropy: ");
    assert!(l.contains("no tested hardware source") && l.contains("NOT fit for keys"), "{l}");
    let l = line(&out, "identity: refusing to create a node key: no sound entropy source");
    assert!(l.contains("0 of 256 seed bits"), "{l}");
    assert!(!out.serial.contains("identity: node key "), "a key was made without a sound source\n{}", out.report());

    // 3. The same CPU with a virtio-rng device: that source alone is enough, and the
    //    identity it makes is kept on the disk.
    let dir = tempdir();
    let disk = dir.join("node.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(64 << 20)).expect("disk image");
    let out = boot("qemu64", true, Some(&disk));
    let l = line(&out, "entropy: sources ");
    assert!(l.contains("virtio-rng") && l.contains("fit for keys") && !l.contains("NOT fit"), "{l}");
    let created = line(&out, "identity: node key ");
    assert!(created.contains("(Created)"), "{created}");
    let key = created.split("node key ").nth(1).and_then(|s| s.split(' ').next()).unwrap_or_default().to_string();

    // 4. Without a sound source again, a node keeps the identity it already has.
    let out = boot("qemu64", false, Some(&disk));
    let kept = line(&out, "identity: node key ");
    assert!(kept.contains(&key) && kept.contains("(Disk)"), "identity not kept: {kept} (made {key})");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gridos-entropy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
