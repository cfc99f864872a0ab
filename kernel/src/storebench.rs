//! `gridos.test=store-bench`: the shard store's put and get against what they are built
//! on, measured in the same boot, and where their time goes.
//!
//! Baselines (same boot, same 64 x 1 MiB shards, same disk: the first store's, which
//! the bench reformats; raw requests go behind the store's tail): one blake3 pass over
//! the bytes, raw writes (one flush per MiB, as the store flushes each record) and raw
//! reads, each timed shard by shard in turn with the store's put and get of the same
//! shard, so the host's changing load weighs on both sides alike. The figures are
//! ratios against `one hash pass + raw device time`: a store that hashes each byte once
//! and adds nothing else reaches 1.0x. The breakdown splits put and get into the device
//! time (measured around every request the store sends) and the CPU time outside it,
//! and prints the same-boot cost of one hash pass, one memory copy and one zeroing of
//! a MiB, so the CPU time reads as "this many passes". Figures only, no timed asserts.

use alloc::vec::Vec;

use blockdev::{BlockDevice, BlockError, SECTOR_SIZE};
use shardstore::ShardStore;

use crate::arch::x86_64::time;
use crate::storage::{self, DiskRange};

const SHARD_BYTES: usize = 1 << 20;
const SHARDS: u64 = 64;

/// A device that adds up the time spent in its requests.
struct Timed<D> {
    inner: D,
    ns: u64,
    requests: u64,
}

impl<D: BlockDevice> Timed<D> {
    fn time<R>(&mut self, f: impl FnOnce(&mut D) -> R) -> R {
        let start = time::since_boot_ns();
        let result = f(&mut self.inner);
        self.ns += time::since_boot_ns() - start;
        self.requests += 1;
        result
    }

    fn take(&mut self) -> (u64, u64) {
        let out = (self.ns, self.requests);
        self.ns = 0;
        self.requests = 0;
        out
    }
}

impl<D: BlockDevice> BlockDevice for Timed<D> {
    fn sector_count(&self) -> u64 {
        self.inner.sector_count()
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.time(|d| d.read(sector, buf))
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.time(|d| d.write(sector, buf))
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.time(|d| d.flush())
    }
}

fn timed(f: &mut dyn FnMut() -> Result<(), &'static str>) -> Result<u64, &'static str> {
    let start = time::since_boot_ns();
    f()?;
    Ok((time::since_boot_ns() - start).max(1))
}

/// The instruction set blake3 picks on this CPU (its own detection: `cpufeatures`, which
/// also asks XCR0 whether the kernel enabled the AVX state).
pub fn blake3_simd() -> &'static str {
    cpufeatures::new!(has_avx512, "avx512f", "avx512vl");
    cpufeatures::new!(has_avx2, "avx2");
    cpufeatures::new!(has_sse41, "sse4.1");
    if has_avx512::get() {
        "avx512"
    } else if has_avx2::get() {
        "avx2"
    } else if has_sse41::get() {
        "sse4.1"
    } else {
        "sse2"
    }
}

/// Milliseconds per MiB for `ns` spent on all the shards of all rounds.
fn ms_per_mib(ns: u64) -> f64 {
    ns as f64 / 1e6 / (SHARDS * ROUNDS) as f64
}

/// Runs the bench on the first mounted store (reformatted) and puts the stores back.
pub fn run() -> Result<(), &'static str> {
    let mut stores = storage::take_all();
    if stores.is_empty() {
        return Err("no mounted store");
    }
    let dev = stores.remove(0).into_device();
    let result = bench(dev);
    match result {
        Ok(dev) => {
            let store = ShardStore::mount(dev).map_err(|_| "remount after the bench failed")?;
            stores.insert(0, store);
            storage::install(stores);
            Ok(())
        }
        Err(e) => {
            storage::install(stores);
            Err(e)
        }
    }
}

/// Times in ns, summed over all the shards of all rounds.
#[derive(Clone, Copy, Default)]
struct Figures {
    hash_ns: u64,
    copy_ns: u64,
    zero_ns: u64,
    raw_write_ns: u64,
    raw_write_flush_ns: u64,
    raw_read_ns: u64,
    put_ns: u64,
    put_device_ns: u64,
    put_requests: u64,
    get_ns: u64,
    get_device_ns: u64,
    get_requests: u64,
}

/// Rounds of the whole bench. Within a round every step is done shard by shard in
/// turn (hash, copy, raw write, put, raw read, get of shard 0, then of shard 1, ...),
/// so the host's changing load slows baselines and store alike.
const ROUNDS: u64 = 2;

fn bench(mut dev: DiskRange) -> Result<DiskRange, &'static str> {
    let shard_sectors = (SHARD_BYTES / SECTOR_SIZE) as u64;
    // The store's log starts at the front; the raw baseline writes well behind its tail.
    let raw_start_sectors = (SHARDS + 16) * shard_sectors;
    if dev.sector_count() < raw_start_sectors + SHARDS * shard_sectors {
        return Err("disk too small for the bench (it needs about 2 x 80 MiB)");
    }
    let shards: Vec<(shardstore::Key, Vec<u8>)> = (0..SHARDS)
        .map(|i| {
            let mut bytes = alloc::vec![0u8; SHARD_BYTES];
            crate::selftest::fill_pattern(0xbe4c ^ i, i * SHARD_BYTES as u64, &mut bytes);
            (*blake3::hash(&bytes).as_bytes(), bytes)
        })
        .collect();
    // Raw writes flushed once at the end (for comparison only; not interleaved).
    let raw_write_ns = timed(&mut || {
        for (i, (_, bytes)) in shards.iter().enumerate() {
            dev.write(raw_start_sectors + i as u64 * shard_sectors, bytes).map_err(|_| "raw write failed")?;
        }
        dev.flush().map_err(|_| "flush failed")
    })?;
    let mut f = Figures { raw_write_ns: raw_write_ns * ROUNDS, ..Figures::default() };
    for _ in 0..ROUNDS {
        dev = round(dev, &shards, raw_start_sectors, &mut f)?;
    }
    print(dev.name(), &f);
    Ok(dev)
}

fn add_time<R>(total_ns: &mut u64, f: impl FnOnce() -> R) -> R {
    let start = time::since_boot_ns();
    let result = f();
    *total_ns += time::since_boot_ns() - start;
    result
}

fn round(
    dev: DiskRange,
    shards: &[(shardstore::Key, Vec<u8>)],
    raw_start_sectors: u64,
    f: &mut Figures,
) -> Result<DiskRange, &'static str> {
    let shard_sectors = (SHARD_BYTES / SECTOR_SIZE) as u64;
    let dev = Timed { inner: dev, ns: 0, requests: 0 };
    let mut store = ShardStore::format(dev, [0; 32], [0xbe; 16]).map_err(|_| "format failed")?;
    store.device_mut().take();
    let mut scratch = alloc::vec![0u8; SHARD_BYTES];
    for (i, (key, bytes)) in shards.iter().enumerate() {
        let raw_sector = raw_start_sectors + i as u64 * shard_sectors;
        add_time(&mut f.hash_ns, || core::hint::black_box(blake3::hash(bytes)));
        add_time(&mut f.copy_ns, || {
            scratch.copy_from_slice(bytes);
            core::hint::black_box(&mut scratch);
        });
        add_time(&mut f.zero_ns, || core::hint::black_box(alloc::vec![0u8; SHARD_BYTES]));
        let raw = &mut store.device_mut().inner;
        add_time(&mut f.raw_write_flush_ns, || raw.write(raw_sector, bytes).and_then(|()| raw.flush()))
            .map_err(|_| "raw write failed")?;
        store.device_mut().take();
        add_time(&mut f.put_ns, || store.put(&shardstore::NODE_OWNER, *key, bytes)).map_err(|_| "put failed")?;
        let (device_ns, requests) = store.device_mut().take();
        f.put_device_ns += device_ns;
        f.put_requests += requests;
        let raw = &mut store.device_mut().inner;
        add_time(&mut f.raw_read_ns, || raw.read(raw_sector, &mut scratch)).map_err(|_| "raw read failed")?;
        let got = add_time(&mut f.get_ns, || store.get(&shardstore::NODE_OWNER, key)).map_err(|_| "get failed")?;
        let (device_ns, requests) = store.device_mut().take();
        f.get_device_ns += device_ns;
        f.get_requests += requests;
        // Checked after the clock stopped: the comparison is the bench's, not the store's.
        if got != *bytes {
            return Err("get returned other bytes");
        }
    }
    Ok(store.into_device().inner)
}

fn print(disk: &str, f: &Figures) {
    let total_bytes = SHARDS * ROUNDS * SHARD_BYTES as u64;
    let mbps = |ns: u64| total_bytes as f64 / 1e6 / (ns.max(1) as f64 / 1e9);
    let put_base_ns = f.hash_ns + f.raw_write_flush_ns;
    let get_base_ns = f.hash_ns + f.raw_read_ns;
    crate::kprintln!(
        "bench store: {SHARDS} x 1 MiB shards on {disk}, {ROUNDS} rounds, each step shard by shard in turn; blake3 {} {:.1} MB/s; raw write {:.1} MB/s flushed per MiB ({:.1} MB/s flushed once), raw read {:.1} MB/s; copy {:.0} MB/s, zeroed alloc {:.0} MB/s",
        blake3_simd(),
        mbps(f.hash_ns),
        mbps(f.raw_write_flush_ns),
        mbps(f.raw_write_ns),
        mbps(f.raw_read_ns),
        mbps(f.copy_ns),
        mbps(f.zero_ns),
    );
    crate::kprintln!(
        "bench store: put {:.1} MB/s = {:.2}x of one hash pass + raw write ({:.1} MB/s); get {:.1} MB/s = {:.2}x of one hash pass + raw read ({:.1} MB/s)",
        mbps(f.put_ns),
        put_base_ns as f64 / f.put_ns.max(1) as f64,
        mbps(put_base_ns),
        mbps(f.get_ns),
        get_base_ns as f64 / f.get_ns.max(1) as f64,
        mbps(get_base_ns),
    );
    let hash_ms = ms_per_mib(f.hash_ns);
    for (op, ns, device_ns, requests) in
        [("put", f.put_ns, f.put_device_ns, f.put_requests), ("get", f.get_ns, f.get_device_ns, f.get_requests)]
    {
        let cpu_ns = ns.saturating_sub(device_ns);
        crate::kprintln!(
            "bench store: {op} per MiB {:.2} ms = device {:.2} ms ({:.1} requests) + cpu {:.2} ms = {:.2} hash passes ({:.2} ms each); a copy costs {:.2} ms, a zeroed alloc {:.2} ms",
            ms_per_mib(ns),
            ms_per_mib(device_ns),
            requests as f64 / (SHARDS * ROUNDS) as f64,
            ms_per_mib(cpu_ns),
            ms_per_mib(cpu_ns) / hash_ms,
            hash_ms,
            ms_per_mib(f.copy_ns),
            ms_per_mib(f.zero_ns),
        );
    }
}
