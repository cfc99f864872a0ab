//! Link-local discovery beacons: a node announces its public key to the IPv6
//! all-nodes group (`ff02::1`) on the overlay port of each underlay segment, so
//! peers on the same L2 segment find each other without a configured list.
//!
//! A beacon proves only that its sender holds the key (it is signed and fresh);
//! the handshake that follows authenticates the link as for any peer.
//!
//! | bytes   | field                                              |
//! |---------|----------------------------------------------------|
//! | 0..8    | magic `GRIDOSHI`                                   |
//! | 8..40   | ed25519 public key                                 |
//! | 40..48  | sender's wall-clock time, seconds, little-endian   |
//! | 48..112 | signature over bytes 0..48                         |

use crate::identity::{Identity, PublicKey, SIGNATURE_LEN};

/// First bytes of every beacon (no overlay datagram starts like this: their first
/// byte is a small message type).
pub const MAGIC: &[u8; 8] = b"GRIDOSHI";
/// Length of a beacon.
pub const BEACON_LEN: usize = 48 + SIGNATURE_LEN;

/// Why a beacon was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeaconError {
    /// Wrong length or magic.
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// Its time is further than the allowed age from ours.
    Stale,
}

/// Whether `datagram` claims to be a beacon (check before handing it to the node).
pub fn is_beacon(datagram: &[u8]) -> bool {
    datagram.starts_with(MAGIC)
}

/// A signed beacon for `identity` at `now_s` (wall-clock seconds).
pub fn beacon(identity: &Identity, now_s: u64) -> [u8; BEACON_LEN] {
    let mut b = [0u8; BEACON_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..40].copy_from_slice(&identity.public_key().0);
    b[40..48].copy_from_slice(&now_s.to_le_bytes());
    let signature = identity.sign(&b[..48]);
    b[48..].copy_from_slice(&signature);
    b
}

/// Checks a beacon and returns the key it announces.
pub fn parse(datagram: &[u8], now_s: u64, max_age_s: u64) -> Result<PublicKey, BeaconError> {
    if datagram.len() != BEACON_LEN || !is_beacon(datagram) {
        return Err(BeaconError::Malformed);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&datagram[8..40]);
    let mut time = [0u8; 8];
    time.copy_from_slice(&datagram[40..48]);
    if u64::from_le_bytes(time).abs_diff(now_s) > max_age_s {
        return Err(BeaconError::Stale);
    }
    let mut signature = [0u8; SIGNATURE_LEN];
    signature.copy_from_slice(&datagram[48..]);
    let key = PublicKey(key);
    if !key.verify(&datagram[..48], &signature) {
        return Err(BeaconError::BadSignature);
    }
    Ok(key)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn beacon_round_trip_and_rejections() {
        let id = Identity::from_seed([9; 32]);
        let b = beacon(&id, 1_000);
        assert_eq!(parse(&b, 1_030, 60), Ok(id.public_key()));
        assert_eq!(parse(&b, 1_100, 60), Err(BeaconError::Stale));
        assert_eq!(parse(&b[..BEACON_LEN - 1], 1_000, 60), Err(BeaconError::Malformed));
        for i in 8..BEACON_LEN {
            let mut bad = b;
            bad[i] ^= 1;
            assert!(parse(&bad, 1_000, u64::MAX).is_err(), "flipped byte {i} accepted");
        }
        // Someone else's key with our signature does not pass.
        let mut forged = b;
        forged[8..40].copy_from_slice(&Identity::from_seed([8; 32]).public_key().0);
        assert_eq!(parse(&forged, 1_000, 60), Err(BeaconError::BadSignature));
        assert!(!is_beacon(&[1, 0, 0, 0]));
    }
}
