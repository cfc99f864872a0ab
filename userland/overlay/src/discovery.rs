//! Link-local discovery beacons: a node announces its public key to the IPv6
//! all-nodes group (`ff02::1`) on the overlay port of each underlay segment, so
//! peers on the same L2 segment find each other without a configured list.
//!
//! A beacon proves only that its sender holds the key, was on our segment and is fresh;
//! the handshake that follows authenticates the link as for any peer.
//!
//! | bytes    | field                                              |
//! |----------|----------------------------------------------------|
//! | 0..8     | magic `GRIDOSH2`                                   |
//! | 8..40    | ed25519 public key                                 |
//! | 40..48   | sender's wall-clock time, seconds, little-endian   |
//! | 48..64   | sender's link-local IPv6 address (its source)      |
//! | 64..128  | signature over bytes 0..64                         |
//!
//! `Discovery` is the receiving side's door (issue 11 item 6), cheapest checks first: the
//! length and magic, a link-local source (`fe80::/10`: it cannot have crossed a router),
//! the signed sender address equal to that source (a beacon replayed from another address
//! is refused), our own key, freshness; then a token from the source's bucket and from the
//! node-wide verification budget; only then the signature. Discovered keys become peers of
//! the node (at most `discovered_max`, the least recently heard one that is not linked
//! evicted first) and are removed again when no beacon was heard for `expire_after` and
//! their link is not up. The caller sends the beacons and passes received ones in.

use alloc::vec::Vec;

use crate::endpoint::{Endpoint, SourceAddress};
use crate::guard::{SourceLimiter, TokenBucket};
use crate::identity::{Identity, PublicKey, SIGNATURE_LEN};
use crate::node::{Node, PeerId};
use crate::time::{Duration, Instant};

/// First bytes of every beacon (no overlay datagram starts like this: their first
/// byte is a small message type). Version 2 adds the sender address.
pub const MAGIC: &[u8; 8] = b"GRIDOSH2";
/// Bytes a beacon starts with in every version (for `is_beacon`).
const MAGIC_PREFIX: &[u8; 7] = b"GRIDOSH";
/// Length of the signed part of a beacon.
const SIGNED_LEN: usize = 64;
/// Length of a beacon.
pub const BEACON_LEN: usize = SIGNED_LEN + SIGNATURE_LEN;

/// Why a beacon was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeaconError {
    /// Wrong length or magic.
    Malformed,
    /// The source is not an IPv6 link-local address.
    NotLinkLocal,
    /// The signed sender address is not the datagram's source.
    WrongSender,
    /// Our own beacon.
    OwnKey,
    /// Its time is further than the allowed age from ours.
    Stale,
    /// The source or the node-wide verification budget is spent.
    RateLimited,
    /// The signature does not verify.
    BadSignature,
    /// Every discovered peer is linked: no room for another.
    TableFull,
    /// The node refused the new peer (its table is full).
    NodeRefused,
}

/// Whether `datagram` claims to be a beacon (check before handing it to the node).
pub fn is_beacon(datagram: &[u8]) -> bool {
    datagram.starts_with(MAGIC_PREFIX)
}

/// A signed beacon for `identity` at `now_s` (wall-clock seconds), sent from `sender`
/// (the link-local address the beacon leaves from).
pub fn beacon(identity: &Identity, now_s: u64, sender: SourceAddress) -> [u8; BEACON_LEN] {
    let mut b = [0u8; BEACON_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..40].copy_from_slice(&identity.public_key().0);
    b[40..48].copy_from_slice(&now_s.to_le_bytes());
    b[48..64].copy_from_slice(&sender.0);
    let signature = identity.sign(&b[..SIGNED_LEN]);
    b[SIGNED_LEN..].copy_from_slice(&signature);
    b
}

/// A beacon that passed the cheap checks; its signature is still unchecked.
#[derive(Debug, Clone, Copy)]
pub struct UncheckedBeacon<'a> {
    /// The announced key.
    pub key: PublicKey,
    datagram: &'a [u8],
}

impl UncheckedBeacon<'_> {
    /// Verifies the signature (expensive: rate-limit before calling).
    pub fn verify(&self) -> Result<PublicKey, BeaconError> {
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(self.datagram.get(SIGNED_LEN..BEACON_LEN).ok_or(BeaconError::Malformed)?);
        let signed = self.datagram.get(..SIGNED_LEN).ok_or(BeaconError::Malformed)?;
        if self.key.verify(signed, &signature) {
            Ok(self.key)
        } else {
            Err(BeaconError::BadSignature)
        }
    }
}

/// The cheap checks: format, link-local source, sender binding, freshness.
pub fn check(datagram: &[u8], source: SourceAddress, now_s: u64, max_age_s: u64) -> Result<UncheckedBeacon<'_>, BeaconError> {
    if datagram.len() != BEACON_LEN || !datagram.starts_with(MAGIC) {
        return Err(BeaconError::Malformed);
    }
    if !source.is_link_local() {
        return Err(BeaconError::NotLinkLocal);
    }
    if datagram.get(48..64) != Some(&source.0[..]) {
        return Err(BeaconError::WrongSender);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&datagram[8..40]);
    let mut time = [0u8; 8];
    time.copy_from_slice(&datagram[40..48]);
    if u64::from_le_bytes(time).abs_diff(now_s) > max_age_s {
        return Err(BeaconError::Stale);
    }
    Ok(UncheckedBeacon { key: PublicKey(key), datagram })
}

/// Checks a beacon completely and returns the key it announces.
pub fn parse(datagram: &[u8], source: SourceAddress, now_s: u64, max_age_s: u64) -> Result<PublicKey, BeaconError> {
    check(datagram, source, now_s, max_age_s)?.verify()
}

/// Bounds and timeouts of the receiving side.
#[derive(Clone, Copy, Debug)]
pub struct DiscoveryConfig {
    /// Beacons whose time differs from ours by more than this are stale.
    pub max_age_s: u64,
    /// A discovered peer not heard from for this long, and not linked, is removed.
    pub expire_after: Duration,
    /// Most peers added by discovery.
    pub discovered_max: usize,
    /// Beacon signatures checked per second (node-wide).
    pub verify_rate_per_sec: u32,
    /// Burst allowance of that rate.
    pub verify_burst: u32,
    /// Beacons per second one source address may have checked.
    pub source_rate_per_sec: u32,
    /// Burst allowance of that rate.
    pub source_burst: u32,
    /// Source addresses with a bucket.
    pub sources_max: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> DiscoveryConfig {
        DiscoveryConfig {
            // Beacons go out every 5 s; a minute tolerates clock skew on one segment while
            // a captured beacon is worth little for long (and only from its own address).
            max_age_s: 60,
            // Six beacon intervals: a peer that misses a few beacons is not dropped.
            expire_after: Duration::from_secs(30),
            // As before issue 11: half the default peer table, leaving room for static
            // peers and users' agents.
            discovered_max: 32,
            // A segment of 50 nodes beacons at 10/s; twice that, and a burst for a boot
            // storm. 20 checks/s is under 0.1% of a core.
            verify_rate_per_sec: 20,
            verify_burst: 40,
            // One honest node beacons every 5 s; 1/s with a burst of 3 absorbs duplicates.
            source_rate_per_sec: 1,
            source_burst: 3,
            // A large segment; each bucket ~64 bytes.
            sources_max: 256,
        }
    }
}

/// Counters of the receiving side.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscoveryStats {
    /// Beacons refused before their signature was checked.
    pub refused_cheap: u64,
    /// Beacons refused by a rate limit.
    pub rate_limited: u64,
    /// Signatures checked.
    pub verified: u64,
    /// Peers added.
    pub added: u64,
    /// Peers removed (expired or evicted).
    pub removed: u64,
}

struct Discovered {
    key: PublicKey,
    peer: PeerId,
    heard_at: Instant,
}

/// The receiving side of discovery: which peers it added, and its budgets.
pub struct Discovery {
    config: DiscoveryConfig,
    budget: TokenBucket,
    sources: SourceLimiter,
    discovered: Vec<Discovered>,
    stats: DiscoveryStats,
}

impl Discovery {
    /// Nothing discovered yet.
    pub fn new(config: DiscoveryConfig, now: Instant) -> Discovery {
        assert!(config.discovered_max > 0 && config.sources_max > 0);
        Discovery {
            config,
            budget: TokenBucket::full(config.verify_burst, now),
            sources: SourceLimiter::new(config.sources_max, config.source_rate_per_sec, config.source_burst),
            discovered: Vec::new(),
            stats: DiscoveryStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> DiscoveryStats {
        self.stats
    }

    /// Peers currently added by discovery.
    pub fn len(&self) -> usize {
        self.discovered.len()
    }

    /// True when discovery added no peer.
    pub fn is_empty(&self) -> bool {
        self.discovered.is_empty()
    }

    /// Handles a beacon received from `from` at `now` (the node's clock, whose seconds are
    /// compared with the beacon's). Returns the peer it added, if any.
    pub fn handle_beacon<E: Endpoint>(
        &mut self,
        node: &mut Node<E>,
        now: Instant,
        from: E,
        datagram: &[u8],
    ) -> Result<Option<PeerId>, BeaconError> {
        let source = from.source_address();
        let unchecked = match check(datagram, source, now.micros / 1_000_000, self.config.max_age_s) {
            Ok(b) if b.key == node.public_key() => Err(BeaconError::OwnKey),
            other => other,
        }
        .inspect_err(|_| self.stats.refused_cheap += 1)?;
        let c = self.config;
        if !self.sources.take(now, source) || !self.budget.take(now, c.verify_rate_per_sec, c.verify_burst) {
            self.stats.rate_limited += 1;
            return Err(BeaconError::RateLimited);
        }
        self.stats.verified += 1;
        let key = unchecked.verify()?;
        if let Some(entry) = self.discovered.iter_mut().find(|d| d.key == key) {
            entry.heard_at = now;
            return Ok(None);
        }
        if node.peer_by_key(&key).is_some() {
            return Ok(None); // a static or accepted peer: not discovery's to manage
        }
        if self.discovered.len() >= c.discovered_max && !self.evict_one(node, now) {
            return Err(BeaconError::TableFull);
        }
        let peer = node.add_peer(now, from, key).map_err(|_| BeaconError::NodeRefused)?;
        self.discovered.push(Discovered { key, peer, heard_at: now });
        self.stats.added += 1;
        debug_assert!(self.discovered.len() <= c.discovered_max);
        Ok(Some(peer))
    }

    /// Removes the least recently heard discovered peer whose link is down.
    fn evict_one<E: Endpoint>(&mut self, node: &mut Node<E>, now: Instant) -> bool {
        let victim = self
            .discovered
            .iter()
            .enumerate()
            .filter(|(_, d)| !node.is_up(d.peer))
            .min_by_key(|(_, d)| d.heard_at)
            .map(|(i, _)| i);
        let Some(i) = victim else { return false };
        let gone = self.discovered.swap_remove(i);
        let _ = node.remove_peer(now, gone.peer);
        self.stats.removed += 1;
        true
    }

    /// Removes discovered peers not heard from for `expire_after` whose link is down (and
    /// forgets those the node no longer has).
    pub fn handle_timeout<E: Endpoint>(&mut self, node: &mut Node<E>, now: Instant) {
        let expire_after = self.config.expire_after;
        let mut removed = 0;
        self.discovered.retain(|d| {
            let exists = node.peer_by_key(&d.key) == Some(d.peer);
            let expired = now >= d.heard_at + expire_after && !node.is_up(d.peer);
            if exists && expired {
                let _ = node.remove_peer(now, d.peer);
            }
            let keep = exists && !expired;
            removed += u64::from(!keep);
            keep
        });
        self.stats.removed += removed;
    }

    /// When `handle_timeout` should run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.discovered.iter().map(|d| d.heard_at + self.config.expire_after).min()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn ll(n: u8) -> SourceAddress {
        let mut a = [0u8; 16];
        a[0] = 0xfe;
        a[1] = 0x80;
        a[15] = n;
        SourceAddress(a)
    }

    #[test]
    fn beacon_round_trip_and_rejections() {
        let id = Identity::from_seed([9; 32]);
        let b = beacon(&id, 1_000, ll(1));
        assert_eq!(parse(&b, ll(1), 1_030, 60), Ok(id.public_key()));
        assert_eq!(parse(&b, ll(1), 1_100, 60), Err(BeaconError::Stale));
        assert_eq!(parse(&b, ll(2), 1_000, 60), Err(BeaconError::WrongSender));
        let mut global = ll(1);
        global.0[0] = 0x20;
        assert_eq!(parse(&beacon(&id, 1_000, global), global, 1_000, 60), Err(BeaconError::NotLinkLocal));
        assert_eq!(parse(&b[..BEACON_LEN - 1], ll(1), 1_000, 60), Err(BeaconError::Malformed));
        for i in 8..BEACON_LEN {
            let mut bad = b;
            bad[i] ^= 1;
            assert!(parse(&bad, ll(1), 1_000, u64::MAX).is_err(), "flipped byte {i} accepted");
        }
        // Someone else's key with our signature does not pass.
        let mut forged = b;
        forged[8..40].copy_from_slice(&Identity::from_seed([8; 32]).public_key().0);
        assert_eq!(parse(&forged, ll(1), 1_000, 60), Err(BeaconError::BadSignature));
        assert!(!is_beacon(&[1, 0, 0, 0]));
        assert!(is_beacon(b"GRIDOSHI old version"), "old beacons are still recognised (and refused)");
    }
}
