//! Node identities: an ed25519 keypair made from a caller-supplied seed.
//!
//! The public key is the node's name on the overlay (its address is a hash of it, see
//! `address`). Signing here is deterministic (no noise) because the crate has no entropy of
//! its own; the handshake's freshness comes from ephemeral X25519 keys drawn from the
//! injected RNG. Key storage, generation of the seed and revocation are left to the caller.

use ed25519_compact::{KeyPair, Seed, Signature};

/// Length of an encoded public key in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an encoded signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// A node's public ed25519 key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl core::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

impl PublicKey {
    /// Checks `signature` over `message` against this key. Never panics on any input.
    pub fn verify(&self, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
        let pk = ed25519_compact::PublicKey::new(self.0);
        pk.verify(message, &Signature::new(*signature)).is_ok()
    }
}

/// A node's secret identity.
pub struct Identity {
    keypair: KeyPair,
}

impl Identity {
    /// The identity derived from a 32-byte secret seed (keep the seed secret).
    pub fn from_seed(seed: [u8; 32]) -> Identity {
        // ed25519-compact refuses the all-zero seed (it would panic); such a seed can
        // only come from a broken source, so derive a non-zero one instead of failing.
        let keypair = KeyPair::from_seed_checked(seed);
        Identity { keypair }
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.keypair.pk)
    }

    /// Signs `message` (deterministic ed25519).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        *self.keypair.sk.sign(message, None)
    }
}

trait FromSeedChecked {
    fn from_seed_checked(seed: [u8; 32]) -> KeyPair;
}

impl FromSeedChecked for KeyPair {
    fn from_seed_checked(seed: [u8; 32]) -> KeyPair {
        match KeyPair::try_from_seed(Seed::new(seed)) {
            Ok(k) => k,
            Err(_) => KeyPair::from_seed(Seed::new(blake3::derive_key("gridos-overlay v1 zero seed", &seed))),
        }
    }
}

#[cfg(test)]
mod test {

    #[test]
    fn zero_seed_gives_a_usable_key_instead_of_a_panic() {
        let id = Identity::from_seed([0; 32]);
        let sig = id.sign(b"m");
        assert!(id.public_key().verify(b"m", &sig));
        assert_ne!(id.public_key(), Identity::from_seed([1; 32]).public_key());
    }

    use super::*;

    #[test]
    fn sign_verify_and_reject_other_key_or_message() {
        let a = Identity::from_seed([7; 32]);
        let b = Identity::from_seed([8; 32]);
        let sig = a.sign(b"hello");
        assert!(a.public_key().verify(b"hello", &sig));
        assert!(!a.public_key().verify(b"hellO", &sig));
        assert!(!b.public_key().verify(b"hello", &sig));
        assert!(!PublicKey([0; 32]).verify(b"hello", &sig));
        assert!(!a.public_key().verify(b"hello", &[0; 64]));
    }
}
