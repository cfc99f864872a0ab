//! The shard store on raw disks, booted: acked shards survive QEMU being killed
//! mid-stream (at several points), a disk holding someone else's bytes is refused
//! and left byte-identical unless `gridos.format=NAME` (so is a store of the older
//! format version 1), store-smoke's owner namespaces, a node with two disks serves
//! on when one fails its writes or is garbage, and the mount time of a disk with
//! 100k shards.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockdev::{check_request, BlockDevice, BlockError, SECTOR_SIZE};
use gridos_qemu::{ensure_qemu, kernel_elf, Machine, Outcome};
use shardstore::{FormatOptions, ShardStore};

/// `identity::NODE_AREA_SECTORS`: the store on vda starts after the node area.
const NODE_AREA_SECTORS: u64 = 2048;

fn image(name: &str, bytes: u64) -> PathBuf {
    let dir = gridos_qemu::workspace_root().join("target/test-disks");
    fs::create_dir_all(&dir).expect("test dir");
    let path = dir.join(format!("storage-{name}-{}.img", std::process::id()));
    let f = File::create(&path).expect("create image");
    f.set_len(bytes).expect("size image");
    path
}

/// Fills the image with bytes from a seeded xorshift (no zeros in any 64 KiB).
fn fill_garbage(path: &Path, seed: u64) {
    let len = fs::metadata(path).expect("image").len();
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut f = OpenOptions::new().write(true).open(path).expect("open image");
    for _ in 0..len / buf.len() as u64 {
        for word in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&buf).expect("write garbage");
    }
}

fn hash_file(path: &Path) -> blake3::Hash {
    blake3::hash(&fs::read(path).expect("read image"))
}

fn machine(disks: &[&Path], cmdline: &str, timeout: Duration) -> Machine {
    ensure_qemu().unwrap_or_else(|e| panic!("{e}"));
    let kernel = kernel_elf().unwrap_or_else(|e| panic!("{e}"));
    let mut m = Machine::new(&kernel);
    m.cmdline = format!("{cmdline} gridos.overlay=off");
    m.disks = disks.iter().map(|d| d.to_path_buf()).collect();
    m.timeout = timeout;
    m
}

fn boot(disks: &[&Path], cmdline: &str) -> Outcome {
    machine(disks, cmdline, Duration::from_secs(120)).run().unwrap_or_else(|e| panic!("{e}"))
}

/// The `storage NAME: ...` line the kernel logged at boot.
fn storage_line<'a>(serial: &'a str, name: &str) -> &'a str {
    let needle = format!("storage {name}: ");
    serial.lines().find(|l| l.contains(&needle)).unwrap_or_else(|| panic!("no {needle:?} line in\n{serial}"))
}

/// Highest `N` of complete `store acked N <64 hex>` lines.
fn highest_ack(serial: &str) -> Option<u64> {
    serial
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("store acked ")?;
            let (index, key) = rest.split_once(' ')?;
            (key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())).then_some(index.parse().ok()?)
        })
        .max()
}

#[test]
fn acked_shards_survive_kill_at_three_points() {
    let disk = image("crash", 256 << 20);
    let seed = u64::from(std::process::id()) | 0x5700_0000;
    // (acks to wait for in this round, extra delay before the kill): the delays move
    // the kill to other moments of a put (payload write, flush, next shard's hashing).
    let rounds = [(20u64, 0u64), (12, 37), (12, 151)];
    for (round, &(acks, delay_ms)) in rounds.iter().enumerate() {
        let cmdline = format!("gridos.test=store-stream gridos.seed={seed}");
        let running = machine(&[&disk], &cmdline, Duration::from_secs(120)).spawn().unwrap_or_else(|e| panic!("{e}"));
        let marker = format!("store stream: seed {seed}, starting at shard ");
        assert!(running.wait_for(&marker, Duration::from_secs(60)), "stream did not start\n{}", running.serial());
        let serial = running.serial();
        let first: u64 = serial
            .lines()
            .find_map(|l| l.strip_prefix(&marker))
            .and_then(|n| n.trim().parse().ok())
            .expect("start index");
        let target = first + acks - 1;
        let started = Instant::now();
        assert!(
            running.wait_for(&format!("store acked {target} "), Duration::from_secs(90)),
            "round {round}: no ack of shard {target}\n{}",
            running.serial()
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        let out = running.kill();
        let highest = highest_ack(&out.serial).expect("acks");
        println!(
            "round {round}: stream from shard {first}, killed {delay_ms} ms after ack {target} ({:.1} s of streaming); highest ack {highest}",
            started.elapsed().as_secs_f64()
        );

        let out = boot(&[&disk], &format!("gridos.test=store-verify gridos.seed={seed} gridos.store_expect={highest}"));
        assert!(out.passed(), "round {round}: verify after kill failed\n{}", out.report());
        assert!(out.serial.contains(&format!("store verify: {} shards intact", highest + 1)), "{}", out.report());
        println!("round {round}: {}", storage_line(&out.serial, "vda").split("INFO  ").last().unwrap_or(""));
    }
    let _ = fs::remove_file(&disk);
}

#[test]
fn garbage_disk_is_refused_and_untouched_unless_format_is_asked() {
    let disk = image("garbage", 64 << 20);
    fill_garbage(&disk, 0x9a7b_a9e0);
    let before = hash_file(&disk);

    let out = boot(&[&disk], "gridos.test=boot");
    assert!(out.passed(), "boot with a garbage disk failed\n{}", out.report());
    let line = storage_line(&out.serial, "vda");
    assert!(line.contains("storage vda: refused (not a shard-store disk"), "{line}");
    assert!(line.contains("gridos.format=vda"), "{line}");
    assert_eq!(hash_file(&disk), before, "a refused disk was written\n{}", out.serial);

    let out = boot(&[&disk], "gridos.test=store-smoke gridos.format=vda");
    assert!(out.passed(), "store-smoke on a disk taken over with gridos.format=vda failed\n{}", out.report());
    assert!(out.serial.contains("store smoke: owners ok"), "{}", out.report());
    assert!(storage_line(&out.serial, "vda").contains("storage vda: formatted (gridos.format)"), "{}", out.serial);
    assert_ne!(hash_file(&disk), before);

    // Next boot: the store is ours now and mounts without the word.
    let out = boot(&[&disk], "gridos.test=boot");
    assert!(out.passed(), "{}", out.report());
    assert!(storage_line(&out.serial, "vda").contains("storage vda: mounted"), "{}", out.serial);
    let _ = fs::remove_file(&disk);
}

#[test]
fn two_disks_mount_and_serve_on_when_one_fails_or_is_garbage() {
    let vda = image("two-a", 64 << 20);
    let vdb = image("two-b", 64 << 20);

    let out = boot(&[&vda, &vdb], "gridos.test=store-smoke gridos.seed=3");
    assert!(out.passed(), "store-smoke on two blank disks failed\n{}", out.report());
    assert!(storage_line(&out.serial, "vda").contains("formatted (blank)"), "{}", out.serial);
    assert!(storage_line(&out.serial, "vdb").contains("formatted (blank)"), "{}", out.serial);
    assert!(out.serial.contains("storage: 2 of 2 data disks serving"), "{}", out.serial);

    let out = boot(&[&vda, &vdb], "gridos.test=store-smoke gridos.seed=4");
    assert!(out.passed(), "{}", out.report());
    assert!(storage_line(&out.serial, "vda").contains("storage vda: mounted"), "{}", out.serial);
    assert!(storage_line(&out.serial, "vdb").contains("storage vdb: mounted"), "{}", out.serial);
    // The first boot's shards (one deleted) are still there, on whichever disks took them.
    assert!(out.serial.contains("storage: 2 of 2 data disks serving, 7 shards"), "{}", out.serial);

    // vdb starts failing every write (QEMU's blkdebug): the first put that picks it
    // marks it failed, and the node serves on from vda.
    let rules = vdb.with_extension("blkdebug.conf");
    fs::write(&rules, "[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nonce = \"off\"\n").expect("rules");
    let failing_vdb = PathBuf::from(format!("blkdebug:{}:{}", rules.display(), vdb.display()));
    let out = boot(&[&vda, &failing_vdb], "gridos.test=store-smoke gridos.seed=6");
    assert!(out.passed(), "store-smoke with vdb failing writes failed\n{}", out.report());
    assert!(out.serial.contains("storage vdb: failed a request; serving from the other disks"), "{}", out.serial);
    assert!(out.serial.contains("store smoke: vdb Failed"), "{}", out.serial);
    let _ = fs::remove_file(&rules);

    fill_garbage(&vdb, 0x7e57_2d15);
    let before = hash_file(&vdb);
    let out = boot(&[&vda, &vdb], "gridos.test=store-smoke gridos.seed=5");
    assert!(out.passed(), "store-smoke with a garbage vdb failed\n{}", out.report());
    assert!(storage_line(&out.serial, "vda").contains("storage vda: mounted"), "{}", out.serial);
    assert!(storage_line(&out.serial, "vdb").contains("storage vdb: refused"), "{}", out.serial);
    assert!(out.serial.contains("storage: 1 of 2 data disks serving"), "{}", out.serial);
    assert_eq!(hash_file(&vdb), before, "the refused vdb was written");
    let _ = fs::remove_file(&vda);
    let _ = fs::remove_file(&vdb);
}

/// A disk holding a store written today, with one shard, whose superblock then says
/// `version` (same layout, blake3 over bytes 0..112): what an older gridos left. The
/// first disk's store starts after the node area; other disks are used whole.
fn old_store_image(name: &str, version: u32, first_disk: bool) -> PathBuf {
    let disk = image(name, 64 << 20);
    let file = OpenOptions::new().read(true).write(true).open(&disk).expect("open image");
    let start_sectors = if first_disk { NODE_AREA_SECTORS } else { 0 };
    let sectors = file.metadata().expect("metadata").len() / SECTOR_SIZE as u64 - start_sectors;
    let start_bytes = start_sectors * SECTOR_SIZE as u64;
    let range = FileRange { file, start_bytes, sectors };
    let mut store = ShardStore::format(range, [0; 32], [1; 16]).expect("format");
    let bytes = b"a shard of the old format".to_vec();
    store.put(&shardstore::NODE_OWNER, *blake3::hash(&bytes).as_bytes(), &bytes).expect("put");
    let file = store.into_device().file;
    let mut superblock = [0u8; SECTOR_SIZE];
    file.read_exact_at(&mut superblock, start_bytes).expect("read superblock");
    superblock[8..12].copy_from_slice(&version.to_le_bytes());
    let checksum = blake3::hash(&superblock[..112]);
    superblock[112..144].copy_from_slice(checksum.as_bytes());
    file.write_all_at(&superblock, start_bytes).expect("write superblock");
    file.sync_all().expect("sync");
    disk
}

/// Stores of shard-store format versions 1 (before owners) and 2 (before the one
/// hashing pass: a separate Merkle tree, payloads hashed twice) are refused at boot
/// with a clear line and left byte-identical; `gridos.format=vda,vdb` reformats them
/// as the current version. One boot sees both.
#[test]
fn version_1_and_2_stores_are_refused_untouched_until_gridos_format() {
    let v1 = old_store_image("v1", 1, true);
    let v2 = old_store_image("v2", 2, false);
    let before = (hash_file(&v1), hash_file(&v2));

    let out = boot(&[&v1, &v2], "gridos.test=boot");
    assert!(out.passed(), "boot with version 1 and 2 stores failed\n{}", out.report());
    for (name, version) in [("vda", 1), ("vdb", 2)] {
        let line = storage_line(&out.serial, name);
        let refused = format!("storage {name}: refused (unsupported shard-store format version {version}");
        assert!(line.contains(&refused), "{line}");
        assert!(line.contains(&format!("gridos.format={name} to reformat it")), "{line}");
    }
    assert_eq!((hash_file(&v1), hash_file(&v2)), before, "a refused old store was written");

    // With the AVX state on (off by default under TCG): blake3 hashes with AVX2 while
    // disk and timer interrupts save and restore the YMM registers with xsave.
    let out = boot(&[&v1, &v2], "gridos.test=store-smoke gridos.format=vda,vdb gridos.avx=on");
    assert!(out.passed(), "store-smoke after reformatting old stores failed\n{}", out.report());
    assert!(out.serial.contains("cpu: Avx register state saved at interrupt entry; blake3 uses avx2"), "{}", out.serial);
    for name in ["vda", "vdb"] {
        let line = storage_line(&out.serial, name);
        assert!(line.contains(&format!("storage {name}: formatted (gridos.format)")), "{}", out.serial);
    }
    let _ = fs::remove_file(&v1);
    let _ = fs::remove_file(&v2);
}

/// A run of sectors of an image file, as the kernel's `storage::DiskRange`.
struct FileRange {
    file: File,
    start_bytes: u64,
    sectors: u64,
}

impl BlockDevice for FileRange {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        self.file.read_exact_at(buf, self.start_bytes + sector * SECTOR_SIZE as u64).map_err(|_| BlockError::Io)
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        self.file.write_all_at(buf, self.start_bytes + sector * SECTOR_SIZE as u64).map_err(|_| BlockError::Io)
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(()) // The image is synced once, after the last put.
    }
}

const MOUNT_BENCH_SHARDS: u64 = 100_000;

#[test]
#[ignore = "builds a 100k-shard image and boots it: about a minute; run with --ignored"]
fn bench_mount_100k_shards() {
    let disk = image("100k", 128 << 20);
    let started = Instant::now();
    let file = OpenOptions::new().read(true).write(true).open(&disk).expect("open image");
    let sectors = file.metadata().expect("metadata").len() / SECTOR_SIZE as u64 - NODE_AREA_SECTORS;
    let range = FileRange { file, start_bytes: NODE_AREA_SECTORS * SECTOR_SIZE as u64, sectors };
    // 512-byte blocks: each small shard is one sector, as a disk with 512-byte sectors allows.
    let options = FormatOptions { entropy: [7; 16], block_sectors: 1 };
    let mut store = ShardStore::format_with(range, [0; 32], [1; 16], options).expect("format");
    for i in 0..MOUNT_BENCH_SHARDS {
        let bytes = format!("shard {i} of the mount bench").into_bytes();
        // Sixteen owners, so mount rebuilds several namespaces (the node's among them).
        let owner = [(i % 16) as u8; 32];
        store.put(&owner, *blake3::hash(&bytes).as_bytes(), &bytes).expect("put");
    }
    let stat = store.stat();
    store.into_device().file.sync_all().expect("sync");
    println!(
        "mount bench: built {MOUNT_BENCH_SHARDS} shards ({} MiB of log) on the host in {:.1} s",
        stat.used_bytes >> 20,
        started.elapsed().as_secs_f64()
    );

    let out = machine(&[&disk], "gridos.test=store-smoke", Duration::from_secs(300)).run().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.passed(), "{}", out.report());
    let line = storage_line(&out.serial, "vda");
    assert!(line.contains(&format!("mounted (checkpoint generation 1, {MOUNT_BENCH_SHARDS} records replayed)")), "{line}");
    let took_us: u64 = line
        .rsplit_once("mount took ")
        .and_then(|(_, rest)| rest.strip_suffix(" us"))
        .and_then(|n| n.parse().ok())
        .expect("mount time");
    println!(
        "mount bench: {MOUNT_BENCH_SHARDS} shards mounted in {:.2} s ({:.1} us per record) under TCG; ready after {:?} us",
        took_us as f64 / 1e6,
        took_us as f64 / MOUNT_BENCH_SHARDS as f64,
        out.ready_us()
    );
    let _ = fs::remove_file(&disk);
}
