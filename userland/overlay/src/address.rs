//! Self-certifying overlay addresses: `fd67::/16` followed by 112 bits of blake3(public key).
//!
//! Why this prefix: `fd00::/8` is the IPv6 Unique Local range (RFC 4193), which is never
//! routed on the Internet and which host stacks already treat as private, so overlay traffic
//! cannot leak onto or be confused with global routes. We take one /16 of it (`fd67`, "g" for
//! grid) instead of all of fd00::/8 so that sites using other ULA /48s keep working beside the
//! overlay (a site whose random ULA global ID happens to start with 0x67 would collide; that is
//! 1 in 256 and documented). We avoid Yggdrasil's `200::/7` so both overlays can run on one
//! host. 112 bits of hash means impersonating a given address needs a 2^112 second-preimage
//! search, and accidental collisions among 10^9 nodes have probability below 2^-52.
//!
//! An address proves nothing on its own: a peer "owns" an address only after it has signed a
//! handshake with the key that hashes to it (`Address::verify`).

use crate::identity::PublicKey;

/// The fixed prefix bytes of every overlay address.
pub const PREFIX: [u8; 2] = [0xfd, 0x67];
/// Prefix length in bits.
pub const PREFIX_LEN_BITS: u8 = 16;
/// Bytes of an address.
pub const ADDRESS_LEN: usize = 16;

const _: () = assert!(PREFIX_LEN_BITS as usize == PREFIX.len() * 8);
const _: () = assert!(ADDRESS_LEN - PREFIX.len() == 14);

/// An overlay IPv6 address (network byte order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub [u8; ADDRESS_LEN]);

impl core::fmt::Debug for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self}")
    }
}

impl core::fmt::Display for Address {
    /// Uncompressed colon-hex form (no `::` shortening).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                write!(f, ":")?;
            }
            write!(f, "{:x}", u16::from_be_bytes([pair[0], pair[1]]))?;
        }
        Ok(())
    }
}

impl Address {
    /// The address owned by `pk`.
    pub fn from_public_key(pk: &PublicKey) -> Address {
        let hash = blake3::derive_key("gridos-overlay v1 address", &pk.0);
        let mut bytes = [0u8; ADDRESS_LEN];
        bytes[..PREFIX.len()].copy_from_slice(&PREFIX);
        bytes[PREFIX.len()..].copy_from_slice(&hash[..ADDRESS_LEN - PREFIX.len()]);
        let address = Address(bytes);
        debug_assert!(address.is_overlay());
        address
    }

    /// True when `pk` is the key this address was made from.
    pub fn verify(&self, pk: &PublicKey) -> bool {
        Address::from_public_key(pk) == *self
    }

    /// True when the address lies in the overlay prefix.
    pub fn is_overlay(&self) -> bool {
        self.0[..PREFIX.len()] == PREFIX
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn address_is_prefixed_and_binds_the_key() {
        let a = Identity::from_seed([1; 32]).public_key();
        let b = Identity::from_seed([2; 32]).public_key();
        let addr = Address::from_public_key(&a);
        assert!(addr.is_overlay());
        assert!(addr.verify(&a));
        assert!(!addr.verify(&b));
        assert_ne!(addr, Address::from_public_key(&b));
        assert!(!Address([0; 16]).is_overlay());
    }
}
