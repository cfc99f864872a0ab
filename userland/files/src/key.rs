//! Keys: everything is derived from the owner's 32-byte secret seed with blake3's `derive_key`
//! under versioned domain strings, so no key is ever stored or sent.

use core::fmt;

/// Domain of per-file segment keys (input: owner seed || file nonce).
const FILE_KEY_DOMAIN: &str = "gridos files v1 2026-11 file key";
/// Domain of the owner's manifest sealing key (input: owner seed).
const MANIFEST_KEY_DOMAIN: &str = "gridos files v1 2026-11 manifest key";
/// Domain of the owner's manifest nonce key (synthetic nonces, input: owner seed).
const MANIFEST_NONCE_DOMAIN: &str = "gridos files v1 2026-11 manifest nonce key";

/// The key that seals one file's segments, with the file nonce it was derived for (segment
/// nonces and associated data are built from it). Derived, never stored; `Debug` hides the key.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey {
    key: [u8; 32],
    file_nonce: [u8; 24],
}

impl FileKey {
    /// The key of the file with `file_nonce` (random, chosen once per put), for the owner with
    /// `owner_secret_seed`.
    pub fn derive(owner_secret_seed: &[u8; 32], file_nonce: &[u8; 24]) -> FileKey {
        let mut material = [0u8; 56];
        material[..32].copy_from_slice(owner_secret_seed);
        material[32..].copy_from_slice(file_nonce);
        FileKey { key: blake3::derive_key(FILE_KEY_DOMAIN, &material), file_nonce: *file_nonce }
    }

    /// A key from raw bytes (tests, or a key the caller derived itself).
    pub fn from_bytes(key: [u8; 32], file_nonce: [u8; 24]) -> FileKey {
        FileKey { key, file_nonce }
    }

    /// The file nonce this key belongs to.
    pub fn file_nonce(&self) -> &[u8; 24] {
        &self.file_nonce
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

/// The owner's manifest sealing key.
pub(crate) fn manifest_key(owner_seed: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(MANIFEST_KEY_DOMAIN, owner_seed)
}

/// The owner's key for synthetic manifest nonces (a PRF of the manifest bytes).
pub(crate) fn manifest_nonce_key(owner_seed: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(MANIFEST_NONCE_DOMAIN, owner_seed)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn keys_depend_on_seed_and_nonce_and_domain() {
        let a = FileKey::derive(&[1; 32], &[2; 24]);
        assert_eq!(a, FileKey::derive(&[1; 32], &[2; 24]));
        assert_ne!(a, FileKey::derive(&[1; 32], &[3; 24]));
        assert_ne!(a, FileKey::derive(&[4; 32], &[2; 24]));
        assert_ne!(manifest_key(&[1; 32]), manifest_nonce_key(&[1; 32]));
        assert_ne!(&manifest_key(&[1; 32]), a.bytes());
    }
}
