//! A file of several hundred MiB streams through put and get with bounded memory: the input is
//! generated on the fly, the shards live in files on disk (one directory per node), the output
//! is compared on the fly; the pipeline's `peak_buffered_bytes` must stay within a few segments,
//! and a counting allocator checks that the whole heap of the run does too.
//!
//! Size: `GRIDOS_FILES_BIG_MIB` (default 300).

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use files::stream::{Getter, Putter, ShardSink, ShardSource};
use files::{EncodedSegment, Manifest, Params, SegmentEntry, ShardRef};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn reset_peak() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// Deterministic pseudo-random bytes, `len` of them, never held whole.
struct Generated {
    state: u64,
    left: u64,
}

impl Generated {
    fn new(seed: u64, len: u64) -> Generated {
        Generated { state: seed | 1, left: len }
    }
    fn next_word(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Whole words only, so reads of any size give the same stream.
        let n = (buf.len() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 { (buf.len() as u64).min(self.left) as usize } else { n };
        for chunk in buf[..n].chunks_mut(8) {
            let word = self.next_word().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Shards as files, one directory per node: shard `i` of segment `s` on node `(s + i) % n`.
struct DiskNodes {
    dirs: Vec<PathBuf>,
}

impl ShardSink for DiskNodes {
    type Error = io::Error;
    fn put_segment(&mut self, segment: &EncodedSegment, refs: &mut [ShardRef]) -> io::Result<()> {
        for (i, (bytes, r)) in segment.shards.iter().zip(refs.iter_mut()).enumerate() {
            let node = (segment.index as usize + i) % self.dirs.len();
            fs::write(self.dirs[node].join(hex(&r.key)), bytes)?;
            r.node = [node as u8; 32];
        }
        Ok(())
    }
}

impl ShardSource for DiskNodes {
    type Error = io::Error;
    fn get_shards(&mut self, segment: &SegmentEntry, wanted: &[usize], out: &mut [Option<Vec<u8>>]) -> io::Result<()> {
        for &i in wanted {
            let r = &segment.shards[i];
            out[i] = fs::read(self.dirs[usize::from(r.node[0])].join(hex(&r.key))).ok();
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares what is written with the generator, holding one write's worth. The getter writes
/// whole segments (multiples of 8 bytes), so the generator's word stream stays aligned.
struct Compare {
    expected: Generated,
    written: u64,
}

impl Write for Compare {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut want = vec![0u8; buf.len()];
        let mut filled = 0;
        while filled < want.len() {
            match self.expected.read(&mut want[filled..])? {
                0 => return Err(io::Error::other("output longer than the input")),
                n => filled += n,
            }
        }
        if want != buf {
            return Err(io::Error::other(format!("mismatch in the write at byte {}", self.written)));
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn getter_piped(manifest: &Manifest, seed: &[u8; 32], nodes: &mut DiskNodes, path: &std::path::Path) -> (files::stream::GetReport, u64) {
    let mut getter = Getter::new(manifest.clone(), seed);
    let report = getter.get_to_path_pipelined(nodes, path, 1).expect("pipelined get");
    (report, getter.peak_buffered_bytes())
}

#[test]
fn several_hundred_mib_stream_with_bounded_memory() {
    let mib: u64 = std::env::var("GRIDOS_FILES_BIG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let size = mib << 20;
    let params = Params::default(); // K=4, M=2, 4 MiB segments
    let segment = u64::from(params.segment_bytes);
    let seed = [11u8; 32];

    let root = std::env::temp_dir().join(format!("gridos-files-big-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let dirs: Vec<PathBuf> = (0..6).map(|n| root.join(format!("node{n}"))).collect();
    for d in &dirs {
        fs::create_dir_all(d).expect("node dir");
    }
    let mut nodes = DiskNodes { dirs };

    // Put, sequential, then pipelined (encoding overlaps storing, one segment may wait).
    let started = std::time::Instant::now();
    let base = reset_peak();
    let mut putter = Putter::new(Generated::new(42, size), &seed, [1; 24], "big.bin".into(), params).expect("putter");
    while putter.put_next(&mut nodes).expect("put").is_some() {}
    let put_peak = putter.peak_buffered_bytes();
    let done = putter.finish().expect("finish");
    let put_heap = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(done.manifest.size, size);
    eprintln!(
        "put {mib} MiB in {:.1} s: peak_buffered_bytes {} KiB, heap peak {} KiB, sealed manifest {} bytes",
        started.elapsed().as_secs_f64(),
        put_peak >> 10,
        put_heap >> 10,
        done.sealed.len()
    );
    let started = std::time::Instant::now();
    let base = reset_peak();
    let putter = Putter::new(Generated::new(42, size), &seed, [1; 24], "big.bin".into(), params).expect("putter");
    let again = putter.run_pipelined(&mut nodes, 1).expect("pipelined put");
    let piped_heap = PEAK.load(Ordering::Relaxed) - base;
    let piped_peak = again.peak_buffered_bytes;
    assert_eq!(again.file_id, done.file_id, "same manifest either way");
    drop(again);
    eprintln!(
        "pipelined put {mib} MiB in {:.1} s: peak_buffered_bytes {} KiB, heap peak {} KiB",
        started.elapsed().as_secs_f64(),
        piped_peak >> 10,
        piped_heap >> 10
    );

    // Get on a "fresh machine": the manifest from its sealed bytes and the id.
    let manifest = Manifest::open_checked(&done.file_id, &done.sealed, &seed).expect("open");
    let done_manifest = manifest.clone();
    drop(done);
    let started = std::time::Instant::now();
    let base = reset_peak();
    let mut getter = Getter::new(manifest, &seed);
    let mut out = Compare { expected: Generated::new(42, size), written: 0 };
    getter.write_to(&mut nodes, &mut out).expect("get");
    let get_peak = getter.peak_buffered_bytes();
    let get_heap = PEAK.load(Ordering::Relaxed) - base;
    assert_eq!(out.written, size);
    eprintln!(
        "get {mib} MiB in {:.1} s: peak_buffered_bytes {} KiB, heap peak {} KiB",
        started.elapsed().as_secs_f64(),
        get_peak >> 10,
        get_heap >> 10
    );

    // Pipelined get into a real file (atomic rename), then compared by streaming it back.
    let started = std::time::Instant::now();
    let out_path = root.join("out.bin");
    let base = reset_peak();
    let report = getter_piped(&done_manifest, &seed, &mut nodes, &out_path);
    let piped_get_heap = PEAK.load(Ordering::Relaxed) - base;
    let piped_get_peak = report.1;
    assert_eq!(report.0.bytes, size);
    let mut check = Compare { expected: Generated::new(42, size), written: 0 };
    io::copy(&mut io::BufReader::with_capacity(4 << 20, fs::File::open(&out_path).expect("open")), &mut check).expect("compare");
    assert_eq!(check.written, size);
    eprintln!(
        "pipelined get {mib} MiB to a file in {:.1} s: peak_buffered_bytes {} KiB, heap peak {} KiB",
        started.elapsed().as_secs_f64(),
        piped_get_peak >> 10,
        piped_get_heap >> 10
    );
    fs::remove_dir_all(&root).expect("cleanup");

    // The pipelines hold at most 4 segments' worth (read buffer, sealed segment, K + M shards),
    // whatever the file size; the whole heap of each run stays within that plus 1 MiB
    // (manifest, buffers of the test's own transport).
    assert!(put_peak <= 4 * segment, "put peak {put_peak}");
    // Pipelined, one waiting: read buffer, one encoding (sealed + shards), one waiting, one at
    // the sink (shards are 1.5 segments at K=4, M=2): at most 7 segments.
    assert!(piped_peak <= 7 * segment, "pipelined put peak {piped_peak}");
    assert!(get_peak <= 4 * segment, "get peak {get_peak}");
    // Pipelined, one waiting: one segment's shards at the decoder (plus its rebuild and
    // sealed copy), one waiting, one being fetched: at most 6 segments.
    assert!(piped_get_peak <= 6 * segment, "pipelined get peak {piped_get_peak}");
    assert!((piped_get_heap as u64) <= piped_get_peak + (1 << 20), "pipelined get heap {piped_get_heap} vs {piped_get_peak}");
    let manifest_bytes = 200 * size / segment * 6; // ShardRef ~104 B, generous
    assert!((put_heap as u64) <= put_peak + manifest_bytes + (1 << 20), "put heap {put_heap} vs {put_peak}");
    assert!((piped_heap as u64) <= piped_peak + manifest_bytes + (1 << 20), "pipelined heap {piped_heap} vs {piped_peak}");
    assert!((get_heap as u64) <= get_peak + (1 << 20), "get heap {get_heap} vs {get_peak}");
    assert!(size >= 64 * segment || mib < 300, "the default run is many segments");
}
