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
        Identity { keypair: KeyPair::from_seed(Seed::new(seed)) }
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

#[cfg(test)]
mod test {
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
