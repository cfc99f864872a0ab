//! Deterministic random bytes from an injected seed.
//!
//! The crate has no entropy source of its own: the caller seeds it (RDRAND or the hermit-abi
//! entropy call in the kernel, `getrandom` on the host, a fixed seed in tests) and may mix in
//! more entropy later. Output is blake3 in keyed mode over a counter, so it is a PRF stream
//! as strong as the seed; equal seeds give equal streams, which the simulations rely on.

/// A keyed blake3 counter-mode generator.
pub struct Rng {
    key: [u8; 32],
    counter: u64,
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Rng {
        Rng { key: blake3::derive_key("gridos-overlay v1 rng seed", &seed), counter: 0 }
    }

    /// Mixes fresh entropy into the key (forward secure: the old key is overwritten).
    pub fn reseed(&mut self, entropy: &[u8]) {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(b"reseed");
        hasher.update(entropy);
        self.key = *hasher.finalize().as_bytes();
    }

    /// Fills `out` with pseudo-random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(32) {
            self.counter = self.counter.wrapping_add(1);
            let block = blake3::keyed_hash(&self.key, &self.counter.to_le_bytes());
            let bytes = block.as_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// 32 random bytes.
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.fill(&mut out);
        out
    }

    /// A random u32.
    pub fn next_u32(&mut self) -> u32 {
        let mut out = [0u8; 4];
        self.fill(&mut out);
        u32::from_le_bytes(out)
    }

    /// A random u64.
    pub fn next_u64(&mut self) -> u64 {
        let mut out = [0u8; 8];
        self.fill(&mut out);
        u64::from_le_bytes(out)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let mut a = Rng::from_seed([1; 32]);
        let mut b = Rng::from_seed([1; 32]);
        let mut c = Rng::from_seed([2; 32]);
        let (x, y, z) = (a.bytes32(), b.bytes32(), c.bytes32());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(a.bytes32(), x);
    }
}
