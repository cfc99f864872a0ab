//! The node's random generator: blake3 in keyed mode as a PRF, reseeded from health-
//! tested sources, with fast key erasure.
//!
//! State is one 32-byte key. A request for `n` bytes reads `32 + n` bytes of the XOF of
//! `keyed_hash(key, "output" || counter)`: the first 32 replace the key, the rest are
//! the output, so a later compromise of the state does not reveal earlier outputs.
//! A reseed replaces the key with `derive_key(CONTEXT, key || material)`: the new key
//! depends on every seed ever given. [`Drbg::needs_reseed`] asks for fresh material
//! after [`RESEED_BYTES`] of output or [`RESEED_NS`] of time.
//!
//! Seed accounting: the caller says how many bits of entropy each piece of material
//! carries (zero for TSC jitter, which is mixed in but never counted). Until
//! [`SOUND_SEED_BITS`] have been counted the generator is not fit for long-term keys
//! ([`Drbg::is_sound`]); it still produces output for nonces and seeds that only need
//! to be unpredictable to a remote peer, and the kernel says so at boot.

/// Counted seed bits before the generator may make long-term keys.
pub const SOUND_SEED_BITS: u32 = 256;
/// Output bytes after which fresh material is wanted.
pub const RESEED_BYTES: u64 = 1 << 20;
/// Time after which fresh material is wanted, nanoseconds (one minute).
pub const RESEED_NS: u64 = 60_000_000_000;
/// blake3 `derive_key` context of a reseed.
const CONTEXT: &str = "gridos 2026-11 drbg reseed v1";

/// The generator.
#[derive(Clone)]
pub struct Drbg {
    key: [u8; 32],
    counter: u64,
    seed_bits: u32,
    output_since_reseed: u64,
    reseeded_at_ns: u64,
    reseeds: u64,
}

impl core::fmt::Debug for Drbg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print the key.
        f.debug_struct("Drbg").field("seed_bits", &self.seed_bits).field("reseeds", &self.reseeds).finish()
    }
}

impl Default for Drbg {
    fn default() -> Self {
        Self::new()
    }
}

impl Drbg {
    /// A generator with no seed at all: not sound, and wanting a reseed at once.
    pub const fn new() -> Self {
        Drbg { key: [0; 32], counter: 0, seed_bits: 0, output_since_reseed: 0, reseeded_at_ns: 0, reseeds: 0 }
    }

    /// Mixes `material` into the key; `entropy_bits` is what the caller vouches for
    /// (from a source that passed its health tests), capped at the material's size.
    pub fn reseed(&mut self, material: &[u8], entropy_bits: u32, now_ns: u64) {
        let mut h = blake3::Hasher::new_derive_key(CONTEXT);
        h.update(&self.key);
        h.update(material);
        self.key = *h.finalize().as_bytes();
        let cap = u32::try_from(material.len().saturating_mul(8)).unwrap_or(u32::MAX);
        self.seed_bits = self.seed_bits.saturating_add(entropy_bits.min(cap));
        self.output_since_reseed = 0;
        self.reseeded_at_ns = now_ns;
        self.reseeds = self.reseeds.saturating_add(1);
    }

    /// Whether at least [`SOUND_SEED_BITS`] counted bits went into the key.
    pub fn is_sound(&self) -> bool {
        self.seed_bits >= SOUND_SEED_BITS
    }

    /// Counted seed bits so far (saturating).
    pub fn seed_bits(&self) -> u32 {
        self.seed_bits
    }

    /// How many reseeds happened.
    pub fn reseeds(&self) -> u64 {
        self.reseeds
    }

    /// Whether the byte or time budget since the last reseed is spent.
    pub fn needs_reseed(&self, now_ns: u64) -> bool {
        self.reseeds == 0
            || self.output_since_reseed >= RESEED_BYTES
            || now_ns.saturating_sub(self.reseeded_at_ns) >= RESEED_NS
    }

    /// Fills `out` and erases the key that produced it.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(b"output");
        h.update(&self.counter.to_le_bytes());
        let mut xof = h.finalize_xof();
        xof.fill(&mut self.key);
        xof.fill(out);
        self.counter = self.counter.wrapping_add(1);
        self.output_since_reseed = self.output_since_reseed.saturating_add(out.len() as u64);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seed_different_stream() {
        let (mut a, mut b, mut c) = (Drbg::new(), Drbg::new(), Drbg::new());
        a.reseed(&[1; 64], 512, 0);
        b.reseed(&[1; 64], 512, 0);
        c.reseed(&[2; 64], 512, 0);
        let (mut x, mut y, mut z) = ([0u8; 48], [0u8; 48], [0u8; 48]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        // Consecutive outputs differ (the key moved on).
        a.fill(&mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn soundness_counts_only_vouched_bits_capped_by_material_size() {
        let mut d = Drbg::new();
        assert!(!d.is_sound());
        d.reseed(&[7; 16], 10_000, 0); // 16 bytes can carry 128 bits at most
        assert_eq!(d.seed_bits(), 128);
        assert!(!d.is_sound());
        d.reseed(&[9; 1024], 0, 0); // jitter: mixed in, not counted
        assert!(!d.is_sound());
        d.reseed(&[3; 16], 128, 0);
        assert!(d.is_sound());
    }

    #[test]
    fn reseed_is_wanted_after_the_byte_and_time_budgets() {
        let mut d = Drbg::new();
        assert!(d.needs_reseed(0), "an unseeded generator wants a seed");
        d.reseed(&[5; 32], 256, 1_000);
        assert!(!d.needs_reseed(1_000));
        assert!(d.needs_reseed(1_000 + RESEED_NS));
        let mut buf = [0u8; 4096];
        for _ in 0..(RESEED_BYTES / 4096) {
            assert!(!d.needs_reseed(2_000));
            d.fill(&mut buf);
        }
        assert!(d.needs_reseed(2_000));
        d.reseed(&[6; 32], 256, 3_000);
        assert!(!d.needs_reseed(3_000));
    }

    #[test]
    fn reseeding_changes_the_stream_even_with_the_same_material() {
        let mut d = Drbg::new();
        d.reseed(&[1; 32], 256, 0);
        let mut before = d.clone();
        d.reseed(&[1; 32], 256, 0);
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        before.fill(&mut x);
        d.fill(&mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn debug_never_prints_the_key() {
        let mut d = Drbg::new();
        d.reseed(&[0xab; 32], 256, 0);
        let s = alloc_fmt(&d);
        assert!(s.contains("seed_bits: 256"));
        assert!(!s.contains("key"));
    }

    fn alloc_fmt(d: &Drbg) -> std::string::String {
        std::format!("{d:?}")
    }
}
