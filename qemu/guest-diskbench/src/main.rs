//! Raw block-device benchmark for the Linux comparison guest (`gridos-qemu bench-io`):
//! the methodology of the kernel's `disks-bench` test mode (kernel/src/selftest.rs),
//! under Linux, so the two print comparable lines.
//!
//! Per disk: the span is the disk's size capped at 32 MiB, rounded down to whole MiB;
//! sequential writes of 1 MiB requests over the span then one flush, sequential reads
//! of the span, 512 writes of 4 KiB at xorshift offsets (seeded as the kernel seeds
//! disk INDEX) then one flush, 512 reads of 4 KiB continuing the same sequence. One
//! request at a time, `O_DIRECT` (the page cache is out), `fdatasync` as the flush
//! (on a block device it sends the device a cache flush). It overwrites the disks.
//!
//! Usage: `guest-diskbench INDEX NAME KIND [INDEX NAME KIND]...`, e.g.
//! `guest-diskbench 0 vda virtio-blk 1 nvme0n1 NVMe 2 sda "SATA (AHCI)"`; opens
//! `/dev/NAME` and prints `bench disk NAME (KIND): ...` as the kernel does. Std only:
//! it is linked statically (`+crt-static`) for a guest that has no libc.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::Instant;

/// Linux's `O_DIRECT` on x86_64.
const O_DIRECT: i32 = 0o40000;
const CHUNK_BYTES: usize = 1 << 20;
const SPAN_BYTES_MAX: u64 = 32 << 20;
const RANDOM_OPS: u64 = 512;
const SMALL_BYTES: usize = 4096;
/// `O_DIRECT` wants buffers aligned to the logical block size; a page covers every disk here.
const ALIGN_BYTES: usize = 4096;

/// What one disk measured, in nanoseconds per phase.
#[derive(Debug, Clone, Copy)]
struct Figures {
    span_bytes: u64,
    seq_write_ns: u64,
    seq_read_ns: u64,
    random_write_ns: u64,
    random_read_ns: u64,
}

/// The kernel's xorshift offsets: byte offsets of 4 KiB slots in `span_bytes`.
struct Offsets {
    state: u64,
    slots: u64,
}

impl Offsets {
    fn new(index: u64, span_bytes: u64) -> Offsets {
        Offsets { state: 0x9e37_79b9_7f4a_7c15u64 ^ index, slots: (span_bytes / SMALL_BYTES as u64).max(1) }
    }

    fn next_bytes(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % self.slots) * SMALL_BYTES as u64
    }
}

/// A zeroed buffer of `len` bytes at an `ALIGN_BYTES` boundary (no unsafe: the
/// aligned window of a slightly larger vector).
struct Aligned {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Aligned {
        let bytes = vec![fill; len + ALIGN_BYTES];
        let start = bytes.as_ptr().align_offset(ALIGN_BYTES);
        assert!(start < ALIGN_BYTES, "align_offset on u8 is always < the alignment");
        Aligned { bytes, start, len }
    }

    fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// Maps an I/O error to a message naming the phase.
fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn ns_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Measures `disk` (index `index` in the kernel's disk table, for the seed).
fn bench(disk: &File, size_bytes: u64, index: u64) -> Result<Option<Figures>, String> {
    let span_bytes = size_bytes.min(SPAN_BYTES_MAX) / CHUNK_BYTES as u64 * CHUNK_BYTES as u64;
    if span_bytes == 0 {
        return Ok(None);
    }
    let chunks = span_bytes / CHUNK_BYTES as u64;
    let big = Aligned::new(CHUNK_BYTES, 0x5a);
    let mut back = Aligned::new(CHUNK_BYTES, 0);

    let start = Instant::now();
    for i in 0..chunks {
        disk.write_all_at(big.get(), i * CHUNK_BYTES as u64).map_err(io("write"))?;
    }
    disk.sync_data().map_err(io("flush"))?;
    let seq_write_ns = ns_since(start);
    let start = Instant::now();
    for i in 0..chunks {
        disk.read_exact_at(back.get_mut(), i * CHUNK_BYTES as u64).map_err(io("read"))?;
    }
    let seq_read_ns = ns_since(start);

    let mut offsets = Offsets::new(index, span_bytes);
    let start = Instant::now();
    for _ in 0..RANDOM_OPS {
        disk.write_all_at(&big.get()[..SMALL_BYTES], offsets.next_bytes()).map_err(io("random write"))?;
    }
    disk.sync_data().map_err(io("flush"))?;
    let random_write_ns = ns_since(start);
    let start = Instant::now();
    for _ in 0..RANDOM_OPS {
        let at = offsets.next_bytes();
        disk.read_exact_at(&mut back.get_mut()[..SMALL_BYTES], at).map_err(io("random read"))?;
    }
    let random_read_ns = ns_since(start);
    Ok(Some(Figures { span_bytes, seq_write_ns, seq_read_ns, random_write_ns, random_read_ns }))
}

/// The kernel's line for one disk.
fn line(name: &str, kind: &str, f: &Figures) -> String {
    let mbps = |bytes: u64, ns: u64| bytes as f64 / 1e6 / (ns.max(1) as f64 / 1e9);
    let small_total = RANDOM_OPS * SMALL_BYTES as u64;
    format!(
        "bench disk {name} ({kind}): {} MiB sequential, 1 MiB requests: write {:.1} MB/s, read {:.1} MB/s; {RANDOM_OPS} x 4 KiB random: write {:.1} MB/s, read {:.1} MB/s",
        f.span_bytes >> 20,
        mbps(f.span_bytes, f.seq_write_ns),
        mbps(f.span_bytes, f.seq_read_ns),
        mbps(small_total, f.random_write_ns),
        mbps(small_total, f.random_read_ns),
    )
}

fn bench_device(index: &str, name: &str, kind: &str) -> Result<Option<String>, String> {
    let index: u64 = index.parse().map_err(|e| format!("index {index:?}: {e}"))?;
    if name.is_empty() || name.contains('/') {
        return Err(format!("device name {name:?}: expected a name under /dev"));
    }
    let path = format!("/dev/{name}");
    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_DIRECT)
        .open(&path)
        .map_err(|e| format!("{path}: {e}"))?;
    let size_bytes = disk.seek(SeekFrom::End(0)).map_err(|e| format!("{path}: size: {e}"))?;
    let figures = bench(&disk, size_bytes, index).map_err(|e| format!("{path}: {e}"))?;
    Ok(figures.map(|f| line(name, kind, &f)))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(3) {
        eprintln!("usage: guest-diskbench INDEX NAME KIND [INDEX NAME KIND]...");
        return ExitCode::from(2);
    }
    let mut status = ExitCode::SUCCESS;
    for triple in args.chunks(3) {
        match bench_device(&triple[0], &triple[1], &triple[2]) {
            Ok(Some(text)) => println!("{text}"),
            Ok(None) => println!("bench disk {}: smaller than 1 MiB, skipped", triple[1]),
            Err(e) => {
                eprintln!("guest-diskbench: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn offsets_follow_the_kernel_sequence_in_whole_slots_inside_the_span() {
        let span = 32u64 << 20;
        let mut offsets = Offsets::new(1, span);
        // The kernel's xorshift for disk 1, first value, by hand.
        let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ 1;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        assert_eq!(offsets.next_bytes(), (s % (span / 4096)) * 4096);
        for _ in 0..10_000 {
            let at = offsets.next_bytes();
            assert_eq!(at % 4096, 0);
            assert!(at + 4096 <= span);
        }
    }

    #[test]
    fn buffers_are_page_aligned() {
        for len in [4096, 1 << 20] {
            let b = Aligned::new(len, 7);
            assert_eq!(b.get().as_ptr() as usize % ALIGN_BYTES, 0);
            assert_eq!(b.get().len(), len);
            assert!(b.get().iter().all(|&x| x == 7));
        }
    }

    #[test]
    fn a_plain_file_is_measured_over_whole_mib_and_printed_like_the_kernel() {
        let path = std::env::temp_dir().join(format!("guest-diskbench-test-{}", std::process::id()));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        file.set_len((3 << 20) + 512).unwrap();
        let figures = bench(&file, (3 << 20) + 512, 0).unwrap().unwrap();
        assert_eq!(figures.span_bytes, 3 << 20);
        let text = line("vdz", "SATA (AHCI)", &figures);
        assert!(text.starts_with("bench disk vdz (SATA (AHCI)): 3 MiB sequential, 1 MiB requests: write "), "{text}");
        assert!(text.contains("; 512 x 4 KiB random: write "), "{text}");
        assert!(bench(&file, 4096, 0).unwrap().is_none());
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }
}
