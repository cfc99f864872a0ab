//! The door's bookkeeping: token buckets, per-source budgets, the rotating cookie secret
//! and the per-key memory of initiation timestamps.
//!
//! Everything here is a bounded table keyed by something an attacker chooses (a source
//! address, a public key), so each has a fixed capacity and evicts its least recently used
//! entry when full. None of it does public-key crypto: these checks run before the
//! signature check they protect. Policy (which bucket an initiation draws from, when the
//! node is under load) is `node`'s business; the cookie's wire form is in `handshake`.

use alloc::collections::BTreeMap;

use crate::endpoint::SourceAddress;
use crate::identity::PublicKey;
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// A token bucket refilled continuously at `rate_per_sec` up to `burst` tokens.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    /// Tokens times `MICRO_PER_TOKEN`, so refills are exact in whole microseconds.
    micro_tokens: u64,
    at: Instant,
}

/// Fixed-point scale of a bucket: refill is `elapsed_us * rate_per_sec` micro-tokens.
const MICRO_PER_TOKEN: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket { micro_tokens: u64::from(burst) * MICRO_PER_TOKEN, at: now }
    }

    fn refill(&mut self, now: Instant, rate_per_sec: u32, burst: u32) {
        let earned = now.saturating_since(self.at).micros.saturating_mul(u64::from(rate_per_sec));
        let cap = u64::from(burst) * MICRO_PER_TOKEN;
        self.micro_tokens = self.micro_tokens.saturating_add(earned).min(cap);
        self.at = self.at.max(now);
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant, rate_per_sec: u32, burst: u32) -> u32 {
        self.refill(now, rate_per_sec, burst);
        u32::try_from(self.micro_tokens / MICRO_PER_TOKEN).unwrap_or(u32::MAX)
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant, rate_per_sec: u32, burst: u32) -> bool {
        self.refill(now, rate_per_sec, burst);
        if self.micro_tokens < MICRO_PER_TOKEN {
            return false;
        }
        self.micro_tokens -= MICRO_PER_TOKEN;
        true
    }
}

/// One token bucket per source address, at most `capacity` of them (least recently used
/// evicted: an evicted source starts again with a full bucket, which gives a spoofing
/// attacker nothing the capacity did not already allow, because the node-wide buckets
/// still apply).
pub struct SourceLimiter {
    buckets: BTreeMap<SourceAddress, (TokenBucket, Instant)>,
    capacity: usize,
    rate_per_sec: u32,
    burst: u32,
}

impl SourceLimiter {
    /// An empty table.
    pub fn new(capacity: usize, rate_per_sec: u32, burst: u32) -> SourceLimiter {
        assert!(capacity > 0);
        SourceLimiter { buckets: BTreeMap::new(), capacity, rate_per_sec, burst }
    }

    /// Takes a token from `source`'s bucket.
    pub fn take(&mut self, now: Instant, source: SourceAddress) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.capacity {
            // Linear in the capacity, and only when a new source arrives at a full table.
            if let Some(oldest) = self.buckets.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k) {
                self.buckets.remove(&oldest);
            }
        }
        let (burst, rate) = (self.burst, self.rate_per_sec);
        let entry = self.buckets.entry(source).or_insert((TokenBucket::full(burst, now), now));
        entry.1 = now;
        let taken = entry.0.take(now, rate, burst);
        debug_assert!(self.buckets.len() <= self.capacity);
        taken
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Bytes of a cookie.
pub const COOKIE_LEN: usize = 16;

/// Cookie secrets rotate this often (as WireGuard's): a cookie proves the source could
/// receive at its address within the last two rotations.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// The responder's rotating cookie secret: cookie = keyed_blake3(secret, source address).
pub struct CookieJar {
    current: [u8; 32],
    previous: [u8; 32],
    rotated_at: Instant,
}

impl CookieJar {
    /// A jar with a fresh secret.
    pub fn new(rng: &mut Rng, now: Instant) -> CookieJar {
        CookieJar { current: rng.bytes32(), previous: rng.bytes32(), rotated_at: now }
    }

    /// Rotates the secret when it is older than `COOKIE_SECRET_LIFETIME`.
    pub fn maybe_rotate(&mut self, rng: &mut Rng, now: Instant) {
        if now.saturating_since(self.rotated_at) >= COOKIE_SECRET_LIFETIME {
            self.previous = self.current;
            self.current = rng.bytes32();
            self.rotated_at = now;
        }
    }

    fn cookie_with(secret: &[u8; 32], source: SourceAddress) -> [u8; COOKIE_LEN] {
        let mut out = [0u8; COOKIE_LEN];
        out.copy_from_slice(&blake3::keyed_hash(secret, &source.0).as_bytes()[..COOKIE_LEN]);
        out
    }

    /// The cookie for `source` under the current secret.
    pub fn cookie(&self, source: SourceAddress) -> [u8; COOKIE_LEN] {
        Self::cookie_with(&self.current, source)
    }

    /// The cookies `source` may hold: under the current and under the previous secret.
    pub fn valid_cookies(&self, source: SourceAddress) -> [[u8; COOKIE_LEN]; 2] {
        [Self::cookie_with(&self.current, source), Self::cookie_with(&self.previous, source)]
    }
}

/// The newest verified initiation timestamp per initiator key, kept apart from the peer
/// table so that it survives link-down and eviction (a captured initiation must not become
/// valid again because its peer slot was freed). Bounded: the least recently updated key is
/// forgotten first; initiations older than the node's freshness window are refused by the
/// clock anyway, so an entry matters only while its timestamp is inside that window.
pub struct TimestampMemory {
    entries: BTreeMap<PublicKey, (u64, Instant)>,
    capacity: usize,
}

impl TimestampMemory {
    /// An empty memory of at most `capacity` keys.
    pub fn new(capacity: usize) -> TimestampMemory {
        assert!(capacity > 0);
        TimestampMemory { entries: BTreeMap::new(), capacity }
    }

    /// True when `timestamp_us` is newer than the last one verified for `key`.
    pub fn is_fresh(&self, key: &PublicKey, timestamp_us: u64) -> bool {
        self.entries.get(key).is_none_or(|(last, _)| timestamp_us > *last)
    }

    /// Records a verified timestamp.
    pub fn record(&mut self, now: Instant, key: PublicKey, timestamp_us: u64) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                self.entries.remove(&oldest);
            }
        }
        let entry = self.entries.entry(key).or_insert((timestamp_us, now));
        entry.0 = entry.0.max(timestamp_us);
        entry.1 = now;
        debug_assert!(self.entries.len() <= self.capacity);
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn bucket_refills_exactly_and_caps_at_burst() {
        let t0 = Instant::ZERO;
        let mut b = TokenBucket::full(2, t0);
        assert!(b.take(t0, 10, 2));
        assert!(b.take(t0, 10, 2));
        assert!(!b.take(t0, 10, 2));
        assert!(!b.take(Instant::from_micros(99_999), 10, 2));
        assert!(b.take(Instant::from_micros(100_000), 10, 2));
        assert_eq!(b.available(Instant::from_millis(10_000), 10, 2), 2);
    }

    #[test]
    fn source_limiter_is_bounded_and_per_source() {
        let mut l = SourceLimiter::new(4, 1, 1);
        let s = |n: u8| SourceAddress([n; 16]);
        assert!(l.take(Instant::ZERO, s(1)));
        assert!(!l.take(Instant::ZERO, s(1)));
        assert!(l.take(Instant::ZERO, s(2)));
        for n in 3..100 {
            l.take(Instant::from_micros(u64::from(n)), s(n));
        }
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn timestamps_grow_per_key_and_memory_is_bounded() {
        let mut m = TimestampMemory::new(2);
        let k = |n: u8| PublicKey([n; 32]);
        m.record(Instant::ZERO, k(1), 10);
        assert!(!m.is_fresh(&k(1), 10));
        assert!(m.is_fresh(&k(1), 11));
        m.record(Instant::from_micros(1), k(2), 5);
        m.record(Instant::from_micros(2), k(3), 5);
        assert_eq!(m.len(), 2);
        assert!(m.is_fresh(&k(1), 10), "the least recently updated key was forgotten");
        assert!(!m.is_fresh(&k(3), 5));
    }
}
