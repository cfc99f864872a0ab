//! The node's randomness: hardware sources, health-tested, feeding one reseeding
//! generator (`userland/entropy`).
//!
//! Sources, each counted only after its start-up test and only while its continuous
//! tests pass (NIST SP 800-90B 4.4, `entropy::health`):
//! - RDSEED and RDRAND, when CPUID lists them;
//! - virtio-rng, when the machine has one ([`attach_virtio_rng`]).
//!
//! TSC jitter is mixed into every reseed but never counted. The generator
//! (`entropy::drbg`) reseeds from every ready source after 1 MiB of output or a minute,
//! and before every long-term key ([`fill_key`]). Without [`SOUND_SEED_BITS`] counted
//! bits from tested sources, [`fill_key`] refuses: the node then makes no identity and
//! says why, rather than a key an attacker could guess. [`fill`] always answers (for
//! nonces, ports and seeds), from the same generator.
//!
//! All state sits behind one lock taken with interrupts off; no interrupt handler asks
//! for randomness.

use alloc::string::String;
use core::fmt::Write;

use ::entropy::drbg::{Drbg, SOUND_SEED_BITS};
use ::entropy::health::{HealthFailure, HealthTest, STARTUP_BYTES};
use spin::Mutex;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::pci::PciTransport;

use crate::arch::x86_64::{cpu, interrupts, time};
use crate::drivers::virtio::KernelHal;

/// Bytes taken from each ready source per reseed (512 bits).
const RESEED_BYTES_PER_SOURCE: usize = 64;
/// Largest read from virtio-rng in one request.
const VIRTIO_CHUNK_BYTES: usize = 256;
/// Bytes generated per lock hold (interrupts are off meanwhile).
const FILL_CHUNK_BYTES: usize = 4096;
/// Requests to virtio-rng per fill before it counts as not answering.
const VIRTIO_REQUESTS_MAX: usize = 64;

/// Why a long-term key cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsound {
    /// Counted bits the generator has.
    pub seed_bits: u32,
}

impl core::fmt::Display for Unsound {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "no sound entropy source: {} of {SOUND_SEED_BITS} seed bits came from sources that passed their \
            health tests (no RDSEED/RDRAND that passes them, no virtio-rng device)", self.seed_bits)
    }
}

/// Which hardware source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rdseed,
    Rdrand,
    VirtioRng,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rdseed => "RDSEED",
            Kind::Rdrand => "RDRAND",
            Kind::VirtioRng => "virtio-rng",
        }
    }
}

struct Source {
    kind: Kind,
    health: HealthTest,
}

type RngDevice = VirtIORng<KernelHal, PciTransport>;

struct State {
    drbg: Drbg,
    sources: heapless::Vec<Source, 3>,
    virtio: Option<RngDevice>,
    started: bool,
}

static STATE: Mutex<State> =
    Mutex::new(State { drbg: Drbg::new(), sources: heapless::Vec::new(), virtio: None, started: false });

/// Reads `out.len()` bytes from one source without health-checking them.
fn read_raw(kind: Kind, virtio: &mut Option<RngDevice>, out: &mut [u8]) -> Result<(), HealthFailure> {
    match kind {
        Kind::Rdseed | Kind::Rdrand => {
            for chunk in out.chunks_mut(8) {
                let word = if kind == Kind::Rdseed { cpu::rdseed() } else { cpu::rdrand() };
                let word = word.ok_or(HealthFailure::NoOutput)?;
                chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
            }
            Ok(())
        }
        Kind::VirtioRng => {
            let dev = virtio.as_mut().ok_or(HealthFailure::NoOutput)?;
            let mut filled = 0;
            for _ in 0..VIRTIO_REQUESTS_MAX {
                if filled == out.len() {
                    break;
                }
                let end = out.len().min(filled + VIRTIO_CHUNK_BYTES);
                filled += dev.request_entropy(&mut out[filled..end]).map_err(|_| HealthFailure::NoOutput)?;
            }
            if filled == out.len() { Ok(()) } else { Err(HealthFailure::NoOutput) }
        }
    }
}

/// Reads and tests bytes from `source`; words for the CPU sources go through the
/// repeated-word test as well.
fn read_tested(source: &mut Source, virtio: &mut Option<RngDevice>, out: &mut [u8]) -> Result<(), HealthFailure> {
    if let Err(f) = read_raw(source.kind, virtio, out) {
        source.health.fail(f);
        return Err(f);
    }
    match source.kind {
        Kind::VirtioRng => source.health.check_bytes(out),
        Kind::Rdseed | Kind::Rdrand => out.chunks(8).try_for_each(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            source.health.check_word(u64::from_le_bytes(w))
        }),
    }
}

fn jitter(out: &mut [u8; 64]) {
    for chunk in out.chunks_mut(8) {
        let mut x: u64 = 0;
        for _ in 0..16 {
            x = x.rotate_left(7) ^ cpu::rdtsc();
            core::hint::spin_loop();
        }
        chunk.copy_from_slice(&x.to_le_bytes());
    }
}

/// Runs the start-up test of a new source and keeps it if it passes.
fn add_source(state: &mut State, kind: Kind) {
    let mut source = Source { kind, health: HealthTest::new() };
    let mut sample = [0u8; STARTUP_BYTES];
    let result = read_raw(kind, &mut state.virtio, &mut sample).and_then(|()| match kind {
        Kind::VirtioRng => source.health.startup(&sample),
        Kind::Rdseed | Kind::Rdrand => source.health.startup_words(&sample),
    });
    sample.fill(0);
    match result {
        Ok(()) => {
            if state.sources.push(source).is_err() {
                log::warn!("entropy: no room for source {}", kind.name());
            }
        }
        Err(f) => log::error!("entropy: {} failed its start-up test ({f}); not used", kind.name()),
    }
}

/// Mixes fresh material from every ready source (and jitter) into the generator.
fn reseed(state: &mut State) {
    let mut material = [0u8; 3 * RESEED_BYTES_PER_SOURCE + 64];
    let mut counted_bits: u32 = 0;
    let mut used = 0;
    let State { sources, virtio, drbg, .. } = state;
    for source in sources.iter_mut().filter(|s| s.health.is_ready()) {
        let slot = &mut material[used..used + RESEED_BYTES_PER_SOURCE];
        match read_tested(source, virtio, slot) {
            Ok(()) => {
                used += RESEED_BYTES_PER_SOURCE;
                counted_bits += (RESEED_BYTES_PER_SOURCE * 8) as u32;
            }
            Err(f) => {
                slot.fill(0);
                log::error!("entropy: {} failed its health tests ({f}); no longer used", source.kind.name());
            }
        }
    }
    let mut j = [0u8; 64];
    jitter(&mut j);
    material[used..used + 64].copy_from_slice(&j);
    used += 64;
    drbg.reseed(&material[..used], counted_bits, time::since_boot_ns());
    material.fill(0);
}

fn start(state: &mut State) {
    if state.started {
        return;
    }
    state.started = true;
    let f = cpu::features();
    if f.rdseed {
        add_source(state, Kind::Rdseed);
    }
    if f.rdrand {
        add_source(state, Kind::Rdrand);
    }
    reseed(state);
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    interrupts::without(|| {
        let mut state = STATE.lock();
        start(&mut state);
        f(&mut state)
    })
}

/// Tests the CPU's sources and seeds the generator (also done on first use); logs
/// which sources the node has. Call after [`attach_virtio_rng`], before any key is made.
pub fn init() {
    log::info!("entropy: {}", status());
}

/// Adds a virtio-rng device as a source (after its start-up test) and reseeds.
pub fn attach_virtio_rng(device: RngDevice) {
    with_state(|state| {
        if state.virtio.is_some() {
            log::info!("entropy: a second virtio-rng device is not used");
            return;
        }
        state.virtio = Some(device);
        add_source(state, Kind::VirtioRng);
        reseed(state);
    });
}

/// One line for the boot log: the sources in use and whether keys can be made.
pub fn status() -> String {
    with_state(|state| {
        let mut s = String::new();
        let ready: heapless::Vec<&str, 3> =
            state.sources.iter().filter(|s| s.health.is_ready()).map(|s| s.kind.name()).collect();
        if ready.is_empty() {
            s.push_str("no tested hardware source");
        } else {
            let _ = write!(s, "sources {} (health-tested)", ready.join_with(", "));
        }
        let _ = write!(s, "; generator seeded with {} counted bits, {}", state.drbg.seed_bits(),
            if state.drbg.is_sound() { "fit for keys" } else { "NOT fit for keys" });
        s
    })
}

trait JoinWith {
    fn join_with(&self, sep: &str) -> String;
}

impl JoinWith for heapless::Vec<&str, 3> {
    fn join_with(&self, sep: &str) -> String {
        let mut s = String::new();
        for (i, part) in self.iter().enumerate() {
            if i > 0 {
                s.push_str(sep);
            }
            s.push_str(part);
        }
        s
    }
}

/// Fills `buf` with random bytes (for nonces, ports and seeds that must be
/// unpredictable; long-term keys use [`fill_key`]).
///
/// Large requests (a workload's `random_get` may ask for its whole memory) are served
/// in [`FILL_CHUNK_BYTES`] pieces, each under the lock with interrupts off only for
/// that piece.
pub fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(FILL_CHUNK_BYTES) {
        with_state(|state| {
            if state.drbg.needs_reseed(time::since_boot_ns()) {
                reseed(state);
            }
            state.drbg.fill(chunk);
        });
    }
}

/// Fills `buf` for a long-term key, from a generator reseeded just now; refuses
/// unless the generator's seed is sound.
pub fn fill_key(buf: &mut [u8]) -> Result<(), Unsound> {
    with_state(|state| {
        reseed(state);
        if !state.drbg.is_sound() {
            return Err(Unsound { seed_bits: state.drbg.seed_bits() });
        }
        state.drbg.fill(buf);
        Ok(())
    })
}

/// One 64-bit random value.
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_le_bytes(b)
}
