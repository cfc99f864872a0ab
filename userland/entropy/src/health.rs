//! Continuous health tests for entropy sources (NIST SP 800-90B, section 4.4).
//!
//! Both sources the node uses deliver conditioned, full-entropy output (RDSEED/RDRAND
//! words from the CPU's DRBG, virtio-rng bytes from the host's kernel), so the
//! tests are set for H = 8 bits per byte with a false-alarm rate of about 2^-20 per
//! window, as the standard's tables give:
//! - repetition count: the same byte [`RCT_CUTOFF`] times in a row fails;
//! - adaptive proportion: the first byte of a [`APT_WINDOW`]-byte window seen
//!   [`APT_CUTOFF`] times or more in that window fails;
//! - a 64-bit source also fails on two equal consecutive words (a stuck RDRAND, e.g.
//!   the all-ones value some CPUs returned after a suspend, repeats at once).
//!
//! The start-up test runs [`STARTUP_BYTES`] through the same tests before the first
//! byte is used. A failure is final: a failed source is never trusted again.

/// Consecutive identical bytes that fail the repetition count test (C = 1 + ceil(20/H), H = 8).
pub const RCT_CUTOFF: u32 = 4;
/// Window of the adaptive proportion test, bytes.
pub const APT_WINDOW: u32 = 512;
/// Occurrences of the window's first byte that fail the adaptive proportion test (H = 8).
pub const APT_CUTOFF: u32 = 13;
/// Bytes tested before a source's first output is used (two APT windows).
pub const STARTUP_BYTES: usize = 2 * APT_WINDOW as usize;

/// Why a source failed its health tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFailure {
    /// One byte value repeated [`RCT_CUTOFF`] times.
    RepetitionCount,
    /// One byte value too frequent in a window.
    AdaptiveProportion,
    /// Two consecutive 64-bit words were equal.
    RepeatedWord,
    /// The source stopped delivering (e.g. RDSEED never ready).
    NoOutput,
}

impl core::fmt::Display for HealthFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HealthFailure::RepetitionCount => "repetition count test failed",
            HealthFailure::AdaptiveProportion => "adaptive proportion test failed",
            HealthFailure::RepeatedWord => "two consecutive 64-bit outputs were equal",
            HealthFailure::NoOutput => "source delivered no output",
        })
    }
}

/// The running tests of one source.
#[derive(Debug, Clone)]
pub struct HealthTest {
    failed: Option<HealthFailure>,
    started: bool,
    rct_last: Option<u8>,
    rct_run: u32,
    apt_first: u8,
    apt_seen: u32,
    apt_count: u32,
    last_word: Option<u64>,
}

impl Default for HealthTest {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthTest {
    /// Tests for a source that has delivered nothing yet.
    pub const fn new() -> Self {
        HealthTest {
            failed: None,
            started: false,
            rct_last: None,
            rct_run: 0,
            apt_first: 0,
            apt_seen: 0,
            apt_count: 0,
            last_word: None,
        }
    }

    /// The failure, once the source has failed.
    pub fn failure(&self) -> Option<HealthFailure> {
        self.failed
    }

    /// Whether the start-up test has passed (and nothing failed since).
    pub fn is_ready(&self) -> bool {
        self.started && self.failed.is_none()
    }

    /// Marks the source failed (e.g. it stopped answering).
    pub fn fail(&mut self, why: HealthFailure) {
        self.failed.get_or_insert(why);
    }

    /// Runs the start-up test on `sample` (at least [`STARTUP_BYTES`] long; shorter
    /// samples fail). The sample is discarded by the caller either way.
    pub fn startup(&mut self, sample: &[u8]) -> Result<(), HealthFailure> {
        if sample.len() < STARTUP_BYTES {
            self.fail(HealthFailure::NoOutput);
        }
        self.check_bytes(sample)?;
        self.started = true;
        Ok(())
    }

    /// [`HealthTest::startup`] for a source of 64-bit words: the sample also goes
    /// through the repeated-word test, word by word (little-endian, 8 bytes each).
    pub fn startup_words(&mut self, sample: &[u8]) -> Result<(), HealthFailure> {
        if sample.len() < STARTUP_BYTES {
            self.fail(HealthFailure::NoOutput);
        }
        for chunk in sample.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.check_word(u64::from_le_bytes(w))?;
        }
        self.started = true;
        Ok(())
    }

    /// Feeds bytes through the continuous tests.
    pub fn check_bytes(&mut self, bytes: &[u8]) -> Result<(), HealthFailure> {
        if let Some(f) = self.failed {
            return Err(f);
        }
        for &b in bytes {
            if let Err(f) = self.byte(b) {
                self.failed = Some(f);
                return Err(f);
            }
        }
        Ok(())
    }

    /// Feeds one 64-bit word through the word test and the byte tests.
    pub fn check_word(&mut self, word: u64) -> Result<(), HealthFailure> {
        if let Some(f) = self.failed {
            return Err(f);
        }
        if self.last_word == Some(word) {
            self.failed = Some(HealthFailure::RepeatedWord);
            return Err(HealthFailure::RepeatedWord);
        }
        self.last_word = Some(word);
        self.check_bytes(&word.to_le_bytes())
    }

    fn byte(&mut self, b: u8) -> Result<(), HealthFailure> {
        if self.rct_last == Some(b) {
            self.rct_run += 1;
            if self.rct_run >= RCT_CUTOFF {
                return Err(HealthFailure::RepetitionCount);
            }
        } else {
            self.rct_last = Some(b);
            self.rct_run = 1;
        }
        if self.apt_seen == 0 {
            self.apt_first = b;
            self.apt_count = 1;
        } else if b == self.apt_first {
            self.apt_count += 1;
            if self.apt_count >= APT_CUTOFF {
                return Err(HealthFailure::AdaptiveProportion);
            }
        }
        self.apt_seen += 1;
        if self.apt_seen >= APT_WINDOW {
            self.apt_seen = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// A good-quality stand-in for a hardware source (xorshift64*).
    fn good_bytes(seed: u64, n: usize) -> alloc_free::Bytes {
        alloc_free::Bytes::new(seed, n)
    }

    mod alloc_free {
        pub struct Bytes {
            state: u64,
            left: usize,
            word: [u8; 8],
            at: usize,
        }
        impl Bytes {
            pub fn new(seed: u64, n: usize) -> Self {
                Bytes { state: seed | 1, left: n, word: [0; 8], at: 8 }
            }
        }
        impl Iterator for Bytes {
            type Item = u8;
            fn next(&mut self) -> Option<u8> {
                if self.left == 0 {
                    return None;
                }
                self.left -= 1;
                if self.at == 8 {
                    self.state ^= self.state >> 12;
                    self.state ^= self.state << 25;
                    self.state ^= self.state >> 27;
                    self.word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                    self.at = 0;
                }
                self.at += 1;
                Some(self.word[self.at - 1])
            }
        }
    }

    #[test]
    fn random_bytes_pass_startup_and_a_megabyte_of_continuous_tests() {
        let mut t = HealthTest::new();
        let sample: [u8; STARTUP_BYTES] = core::array::from_fn({
            let mut it = good_bytes(7, STARTUP_BYTES);
            move |_| it.next().unwrap_or(0)
        });
        assert_eq!(t.startup(&sample), Ok(()));
        assert!(t.is_ready());
        for b in good_bytes(99, 1 << 20) {
            assert_eq!(t.check_bytes(&[b]), Ok(()));
        }
    }

    #[test]
    fn a_stuck_source_fails_the_repetition_count_test_and_stays_failed() {
        let mut t = HealthTest::new();
        assert_eq!(t.startup(&[0xff; STARTUP_BYTES]), Err(HealthFailure::RepetitionCount));
        assert!(!t.is_ready());
        // Good bytes afterwards do not bring it back.
        assert_eq!(t.check_bytes(&[1, 2, 3]), Err(HealthFailure::RepetitionCount));
    }

    #[test]
    fn a_stuck_all_ones_word_fails_at_once_and_a_repeated_word_fails() {
        let mut t = HealthTest::new();
        assert_eq!(t.check_word(u64::MAX), Err(HealthFailure::RepetitionCount));
        let mut t = HealthTest::new();
        assert_eq!(t.check_word(0x0123_4567_89ab_cdef), Ok(()));
        assert_eq!(t.check_word(0x0123_4567_89ab_cdef), Err(HealthFailure::RepeatedWord));
    }

    #[test]
    fn a_biased_source_fails_the_adaptive_proportion_test() {
        // Never three in a row, but the value 0x41 in every other byte of the window.
        let mut t = HealthTest::new();
        let mut sample = [0u8; STARTUP_BYTES];
        for (i, b) in sample.iter_mut().enumerate() {
            *b = if i % 2 == 0 { 0x41 } else { i as u8 | 0x80 };
        }
        assert_eq!(t.startup(&sample), Err(HealthFailure::AdaptiveProportion));
    }

    #[test]
    fn a_word_source_repeating_a_word_fails_its_startup_test() {
        let mut sample = [0u8; STARTUP_BYTES];
        for (i, b) in sample.iter_mut().enumerate() {
            *b = ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24) as u8;
        }
        let mut good = HealthTest::new();
        assert_eq!(good.startup_words(&sample), Ok(()));
        let (a, b) = sample.split_at_mut(16);
        b[..8].copy_from_slice(&a[8..16]);
        let mut t = HealthTest::new();
        assert_eq!(t.startup_words(&sample), Err(HealthFailure::RepeatedWord));
    }

    #[test]
    fn a_short_startup_sample_fails() {
        let mut t = HealthTest::new();
        let sample: [u8; 64] = core::array::from_fn(|i| (i as u8).wrapping_mul(37));
        assert_eq!(t.startup(&sample), Err(HealthFailure::NoOutput));
    }

    proptest::proptest! {
        #[test]
        fn the_false_alarm_rate_on_good_data_is_negligible(seed in 1u64..u64::MAX) {
            let mut t = HealthTest::new();
            let sample: [u8; STARTUP_BYTES] = core::array::from_fn({
                let mut it = good_bytes(seed, STARTUP_BYTES);
                move |_| it.next().unwrap_or(0)
            });
            proptest::prop_assert_eq!(t.startup(&sample), Ok(()));
        }
    }
}
