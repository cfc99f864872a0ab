//! The manifest: which shards make up a file and where they are, sealed under the owner's key.
//!
//! Sealed form: `"GFM1" || nonce (24) || XChaCha20-Poly1305(postcard(manifest)) || tag (16)`,
//! associated data `"GFM1"`. The key is derived from the owner seed alone, so the nonce must
//! differ for every distinct manifest the owner ever seals (a repaired manifest keeps its file
//! nonce): it is synthetic, a keyed blake3 of the plaintext under a second derived key (SIV
//! style), so sealing needs no randomness and equal manifests seal to equal bytes. The file id
//! is blake3 of the sealed bytes, which is also the key of the manifest shard on the nodes.

use alloc::string::String;
use alloc::vec::Vec;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::key::{manifest_key, manifest_nonce_key};
use crate::segment::{shard_len, TAG_BYTES};
use crate::{FileKey, FilesError, Params};

/// Manifest format version written by this crate.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest sealed manifest (it is stored as one shard, so the shard limit).
pub const MANIFEST_SEALED_BYTES_MAX: usize = crate::SHARD_BYTES_MAX as usize;
/// Longest file name a manifest may carry.
pub const NAME_BYTES_MAX: usize = 4096;

const MAGIC: &[u8; 4] = b"GFM1";
const NONCE_BYTES: usize = 24;

/// One shard: its content key (blake3), length, Merkle root (as `shardstore` computes it) and
/// the node holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRef {
    /// blake3 of the shard's bytes (its key in the node's shard store).
    pub key: [u8; 32],
    /// The shard's length in bytes.
    pub len: u64,
    /// `shardstore::merkle_root` of the bytes: storage proofs are checked against it.
    pub merkle_root: [u8; 32],
    /// The overlay key of the node that stores it.
    pub node: [u8; 32],
}

/// One segment: its index, plaintext length and its K + M shards in order (data, then parity).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Index in the file (0-based, equal to the position in `Manifest::segments`).
    pub index: u64,
    /// Plaintext bytes.
    pub plain_len: u32,
    /// K + M shards.
    pub shards: Vec<ShardRef>,
}

/// Everything needed to fetch, check, decode and decrypt a file, given the owner's seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The file's name as given at put (informative; `get` writes where it is told).
    pub name: String,
    /// Plaintext bytes in the file.
    pub size: u64,
    /// K, M and the segment size.
    pub params: Params,
    /// The file's random nonce: with the owner seed it derives the file key.
    pub file_nonce: [u8; 24],
    /// Every segment in order.
    pub segments: Vec<SegmentEntry>,
    /// The ledger's storage contracts that pay nodes to keep this file's shards (issue 14;
    /// empty without a ledger). Encoded after the other fields only when not empty, so a
    /// manifest without contracts keeps the bytes it had before the field existed.
    #[serde(skip)]
    pub contracts: Vec<u64>,
}

/// Most contract ids a manifest may name.
pub const MANIFEST_CONTRACTS_MAX: usize = 4096;

/// The optional group after the manifest's fields (written only when a field of it is set).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Extensions {
    contracts: Vec<u64>,
}

/// The file id: blake3 of the sealed manifest (= the manifest shard's key).
pub fn file_id(sealed_manifest: &[u8]) -> [u8; 32] {
    *blake3::hash(sealed_manifest).as_bytes()
}

impl Manifest {
    /// An empty manifest for a new file (segments are pushed as they are stored).
    pub fn new(name: String, params: Params, file_nonce: [u8; 24]) -> Manifest {
        Manifest { version: MANIFEST_VERSION, name, size: 0, params, file_nonce, segments: Vec::new(), contracts: Vec::new() }
    }

    /// The key of this file's segments.
    pub fn file_key(&self, owner_seed: &[u8; 32]) -> FileKey {
        FileKey::derive(owner_seed, &self.file_nonce)
    }

    /// Seals the manifest under the owner's manifest key. The caller should [`Manifest::validate`]
    /// first and check the result against [`MANIFEST_SEALED_BYTES_MAX`] before storing it.
    pub fn seal(&self, owner_seed: &[u8; 32]) -> Vec<u8> {
        // postcard cannot fail on these types (fixed arrays, strings, sequences of known length);
        // if it ever did, the empty body seals a manifest that `open` refuses as malformed.
        let body = self.encode();
        let synthetic = blake3::keyed_hash(&manifest_nonce_key(owner_seed), &body);
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&synthetic.as_bytes()[..NONCE_BYTES]);

        let mut sealed = Vec::with_capacity(MAGIC.len() + NONCE_BYTES + body.len() + TAG_BYTES);
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&nonce);
        let start = sealed.len();
        sealed.extend_from_slice(&body);
        drop(body);
        let cipher = XChaCha20Poly1305::new(&manifest_key(owner_seed).into());
        match cipher.encrypt_in_place_detached(&XNonce::from(nonce), MAGIC, &mut sealed[start..]) {
            Ok(tag) => sealed.extend_from_slice(&tag),
            // Only for bodies beyond 256 GiB: seal nothing openable.
            Err(_) => sealed.truncate(start),
        }
        sealed
    }

    /// Opens and validates a sealed manifest. A wrong seed and altered bytes are both
    /// [`FilesError::ManifestSeal`] (use [`Manifest::open_checked`] to tell them apart by id).
    pub fn open(sealed: &[u8], owner_seed: &[u8; 32]) -> Result<Manifest, FilesError> {
        if sealed.len() > MANIFEST_SEALED_BYTES_MAX {
            return Err(FilesError::ManifestTooLarge);
        }
        let head = MAGIC.len() + NONCE_BYTES;
        if sealed.len() < head + TAG_BYTES || &sealed[..MAGIC.len()] != MAGIC {
            return Err(FilesError::ManifestSeal);
        }
        let nonce = XNonce::clone_from_slice(&sealed[MAGIC.len()..head]);
        let tag_at = sealed.len() - TAG_BYTES;
        let tag = Tag::clone_from_slice(&sealed[tag_at..]);
        let mut body = sealed[head..tag_at].to_vec();
        let cipher = XChaCha20Poly1305::new(&manifest_key(owner_seed).into());
        cipher
            .decrypt_in_place_detached(&nonce, MAGIC, &mut body, &tag)
            .map_err(|_| FilesError::ManifestSeal)?;
        let manifest = Manifest::decode(&body)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest's plaintext bytes: its fields, then [`Extensions`] when one is set.
    fn encode(&self) -> Vec<u8> {
        let mut body = postcard::to_allocvec(self).unwrap_or_default();
        if !self.contracts.is_empty() {
            let ext = Extensions { contracts: self.contracts.clone() };
            body.extend_from_slice(&postcard::to_allocvec(&ext).unwrap_or_default());
        }
        body
    }

    fn decode(body: &[u8]) -> Result<Manifest, FilesError> {
        let (mut manifest, rest): (Manifest, &[u8]) =
            postcard::take_from_bytes(body).map_err(|_| FilesError::ManifestFormat("not a manifest"))?;
        if !rest.is_empty() {
            let (ext, rest): (Extensions, &[u8]) =
                postcard::take_from_bytes(rest).map_err(|_| FilesError::ManifestFormat("trailing bytes"))?;
            if !rest.is_empty() || ext.contracts.is_empty() {
                return Err(FilesError::ManifestFormat("trailing bytes"));
            }
            manifest.contracts = ext.contracts;
        }
        Ok(manifest)
    }

    /// [`Manifest::open`] after checking that `sealed` hashes to `id`: altered bytes are then
    /// [`FilesError::ManifestId`] and [`FilesError::ManifestSeal`] means a wrong seed.
    pub fn open_checked(id: &[u8; 32], sealed: &[u8], owner_seed: &[u8; 32]) -> Result<Manifest, FilesError> {
        if file_id(sealed) != *id {
            return Err(FilesError::ManifestId);
        }
        Manifest::open(sealed, owner_seed)
    }

    /// Checks that the manifest describes a well-formed file: version, parameters, name length,
    /// segment count and indices, segment and shard lengths.
    pub fn validate(&self) -> Result<(), FilesError> {
        if self.version != MANIFEST_VERSION {
            return Err(FilesError::ManifestFormat("unknown version"));
        }
        self.params.validate().map_err(|_| FilesError::ManifestFormat("bad parameters"))?;
        if self.name.len() > NAME_BYTES_MAX {
            return Err(FilesError::ManifestFormat("name too long"));
        }
        if self.contracts.len() > MANIFEST_CONTRACTS_MAX {
            return Err(FilesError::ManifestFormat("too many contracts"));
        }
        let segment_bytes = u64::from(self.params.segment_bytes);
        if self.segments.len() as u64 != self.size.div_ceil(segment_bytes) {
            return Err(FilesError::ManifestFormat("segment count does not match the size"));
        }
        let total = self.params.total_shards();
        for (i, seg) in self.segments.iter().enumerate() {
            let expected_len = (self.size - i as u64 * segment_bytes).min(segment_bytes);
            if seg.index != i as u64 {
                return Err(FilesError::ManifestFormat("segment out of order"));
            }
            if u64::from(seg.plain_len) != expected_len {
                return Err(FilesError::ManifestFormat("segment length does not match the size"));
            }
            if seg.shards.len() != total {
                return Err(FilesError::ManifestFormat("segment shard count is not K+M"));
            }
            let len = shard_len(&self.params, seg.plain_len);
            if seg.shards.iter().any(|r| r.len != len) {
                return Err(FilesError::ManifestFormat("shard length does not follow from the segment length"));
            }
        }
        Ok(())
    }
}
