//! One segment: seal with XChaCha20-Poly1305, pad to a multiple of K, split into K data and M
//! parity shards (reed-solomon-erasure over GF(2^8)); and back from any K intact shards.
//!
//! Segment `i` of a file is sealed under the file's key with nonce `file_nonce[..16] || i (LE)`:
//! the key is unique per file nonce and the index is unique within a file, so no (key, nonce)
//! pair repeats. The associated data binds the file nonce, the index and the plaintext length,
//! so a shard set cannot be replayed as another segment, another file, or truncated.
//! Ciphertext (plaintext + 16-byte tag) is zero-padded to `K * shard_len`; the padding length
//! follows from the plaintext length the manifest records.

use alloc::vec;
use alloc::vec::Vec;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::manifest::{SegmentEntry, ShardRef};
use crate::{FileKey, FilesError, Params};

/// Poly1305 tag bytes added to each segment.
pub const TAG_BYTES: usize = 16;
const AAD_DOMAIN: &[u8; 16] = b"gridos files v1\0";

/// A segment sealed and split: `shards[0..K]` data, `shards[K..K+M]` parity, all one length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedSegment {
    /// The segment's index in the file (0-based).
    pub index: u64,
    /// Plaintext bytes in the segment.
    pub plain_len: u32,
    /// K + M shards of [`shard_len`] bytes each.
    pub shards: Vec<Vec<u8>>,
}

/// A decoded segment and the shards that were present but corrupt (their indices).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedSegment {
    /// The segment's plaintext.
    pub plaintext: Vec<u8>,
    /// Indices of shards that failed their hash and were treated as missing.
    pub corrupt: Vec<usize>,
}

/// Ciphertext bytes of a segment of `plain_len` bytes.
pub fn ciphertext_len(plain_len: u32) -> u64 {
    u64::from(plain_len) + TAG_BYTES as u64
}

/// Bytes per shard of a segment of `plain_len` bytes: the ciphertext over K, rounded up.
pub fn shard_len(params: &Params, plain_len: u32) -> u64 {
    ciphertext_len(plain_len).div_ceil(u64::from(params.data_shards.max(1)))
}

/// The manifest entry of one shard's bytes, placed on `node`.
pub fn shard_ref(bytes: &[u8], node: [u8; 32]) -> ShardRef {
    ShardRef {
        key: *blake3::hash(bytes).as_bytes(),
        len: bytes.len() as u64,
        merkle_root: shardstore::merkle_root(bytes),
        node,
    }
}

fn nonce(key: &FileKey, index: u64) -> XNonce {
    let mut nonce = [0u8; 24];
    nonce[..16].copy_from_slice(&key.file_nonce()[..16]);
    nonce[16..].copy_from_slice(&index.to_le_bytes());
    XNonce::from(nonce)
}

fn associated_data(key: &FileKey, index: u64, plain_len: u32) -> [u8; 52] {
    let mut aad = [0u8; 52];
    aad[..16].copy_from_slice(AAD_DOMAIN);
    aad[16..40].copy_from_slice(key.file_nonce());
    aad[40..48].copy_from_slice(&index.to_le_bytes());
    aad[48..52].copy_from_slice(&plain_len.to_le_bytes());
    aad
}

fn codec(params: &Params) -> Result<ReedSolomon, FilesError> {
    params.validate()?;
    ReedSolomon::new(usize::from(params.data_shards), usize::from(params.parity_shards))
        .map_err(|_| FilesError::BadParams)
}

/// Seals segment `index` of a file and splits it into K + M shards.
pub fn encode_segment(
    key: &FileKey,
    params: &Params,
    index: u64,
    plaintext: &[u8],
) -> Result<EncodedSegment, FilesError> {
    let sealed = seal_segment(key, params, index, plaintext)?;
    split_segment(params, index, plaintext.len() as u32, &sealed)
}

/// The first stage of [`encode_segment`]: segment `index` sealed with the file's AEAD
/// (ciphertext and tag) and padded with zeros to K shards' worth of bytes.
pub fn seal_segment(key: &FileKey, params: &Params, index: u64, plaintext: &[u8]) -> Result<Vec<u8>, FilesError> {
    params.validate()?;
    if plaintext.len() as u64 > u64::from(params.segment_bytes) {
        return Err(FilesError::SegmentTooLarge { len_bytes: plaintext.len() as u64, max_bytes: params.segment_bytes });
    }
    let plain_len = plaintext.len() as u32; // <= segment_bytes, a u32
    let k = usize::from(params.data_shards);
    let len = shard_len(params, plain_len) as usize; // <= SHARD_BYTES_MAX (validated)

    let mut sealed = Vec::with_capacity(k * len);
    sealed.extend_from_slice(plaintext);
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let tag = cipher
        .encrypt_in_place_detached(&nonce(key, index), &associated_data(key, index, plain_len), &mut sealed)
        .map_err(|_| FilesError::BadParams)?; // only for buffers beyond 256 GiB
    sealed.extend_from_slice(&tag);
    sealed.resize(k * len, 0);
    Ok(sealed)
}

/// The second stage of [`encode_segment`]: the padded sealed bytes of a segment of
/// `plain_len` plaintext bytes split into K data shards plus M Reed-Solomon parity shards.
pub fn split_segment(params: &Params, index: u64, plain_len: u32, sealed: &[u8]) -> Result<EncodedSegment, FilesError> {
    let rs = codec(params)?;
    let len = shard_len(params, plain_len) as usize;
    if sealed.len() != usize::from(params.data_shards) * len {
        return Err(FilesError::BadParams);
    }
    let mut shards: Vec<Vec<u8>> = Vec::with_capacity(params.total_shards());
    shards.extend(sealed.chunks(len).map(<[u8]>::to_vec));
    shards.resize(params.total_shards(), vec![0u8; len]);
    rs.encode(&mut shards).map_err(|_| FilesError::Erasure)?;
    debug_assert!(shards.iter().all(|s| s.len() == len));
    Ok(EncodedSegment { index, plain_len, shards })
}

/// Checks each present shard against the manifest (length and blake3 key); a shard that fails
/// is set to `None`. Returns the indices of the failed ones. Slots beyond the manifest's
/// shards are cleared and reported too.
pub fn verify_shards(seg: &SegmentEntry, shards: &mut [Option<Vec<u8>>]) -> Vec<usize> {
    let mut corrupt = Vec::new();
    for (i, slot) in shards.iter_mut().enumerate() {
        let Some(bytes) = slot else { continue };
        let ok = seg
            .shards
            .get(i)
            .is_some_and(|r| bytes.len() as u64 == r.len && *blake3::hash(bytes).as_bytes() == r.key);
        if !ok {
            *slot = None;
            corrupt.push(i);
        }
    }
    corrupt
}

/// Checks the entry against the parameters and the slot count; returns the shard length.
fn check_entry(params: &Params, seg: &SegmentEntry, slots: usize) -> Result<usize, FilesError> {
    params.validate()?;
    let total = params.total_shards();
    if seg.shards.len() != total {
        return Err(FilesError::ManifestFormat("segment shard count is not K+M"));
    }
    if slots != total {
        return Err(FilesError::ShardCount { expected: total, got: slots });
    }
    if seg.plain_len > params.segment_bytes {
        return Err(FilesError::ManifestFormat("segment longer than the segment size"));
    }
    let len = shard_len(params, seg.plain_len);
    if seg.shards.iter().any(|r| r.len != len) {
        return Err(FilesError::ManifestFormat("shard length does not follow from the segment length"));
    }
    Ok(len as usize)
}

/// Verifies (see [`verify_shards`]) and requires K intact shards.
fn verified(params: &Params, seg: &SegmentEntry, shards: &mut [Option<Vec<u8>>]) -> Result<Vec<usize>, FilesError> {
    let corrupt = verify_shards(seg, shards);
    let usable = shards.iter().filter(|s| s.is_some()).count();
    let needed = usize::from(params.data_shards);
    if usable < needed {
        return Err(FilesError::TooFewShards { segment: seg.index, usable, needed, corrupt });
    }
    Ok(corrupt)
}

/// Rebuilds and opens a segment from any K intact shards (`None` = missing), reporting the
/// shards that failed their hash. On success the data slots `0..K` hold the data shards.
pub fn decode_segment_report(
    key: &FileKey,
    params: &Params,
    seg: &SegmentEntry,
    shards: &mut [Option<Vec<u8>>],
) -> Result<DecodedSegment, FilesError> {
    let len = check_entry(params, seg, shards.len())?;
    let corrupt = verified(params, seg, shards)?;
    let rs = codec(params)?;
    rs.reconstruct_data(shards).map_err(|_| FilesError::Erasure)?;

    let k = usize::from(params.data_shards);
    let ct_len = ciphertext_len(seg.plain_len) as usize;
    let mut sealed = Vec::with_capacity(k * len);
    for slot in &shards[..k] {
        let Some(bytes) = slot else { return Err(FilesError::Erasure) };
        sealed.extend_from_slice(bytes);
    }
    sealed.truncate(ct_len);
    let plain_len = seg.plain_len as usize;
    let tag = Tag::clone_from_slice(&sealed[plain_len..ct_len]);
    sealed.truncate(plain_len);
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    cipher
        .decrypt_in_place_detached(&nonce(key, seg.index), &associated_data(key, seg.index, seg.plain_len), &mut sealed, &tag)
        .map_err(|_| FilesError::WrongKey { segment: seg.index })?;
    Ok(DecodedSegment { plaintext: sealed, corrupt })
}

/// Rebuilds and opens a segment from any K intact shards (`None` = missing); a shard that does
/// not match its manifest hash is treated as missing (see [`decode_segment_report`] for which).
pub fn decode_segment(
    key: &FileKey,
    params: &Params,
    seg: &SegmentEntry,
    shards: &mut [Option<Vec<u8>>],
) -> Result<Vec<u8>, FilesError> {
    decode_segment_report(key, params, seg, shards).map(|d| d.plaintext)
}

/// Repair without the key: from any K intact shards, rebuilds every missing or corrupt shard
/// and checks each rebuilt one against the manifest. On success every slot is `Some` and
/// matches; returns the indices that were corrupt.
pub fn rebuild_shards(
    params: &Params,
    seg: &SegmentEntry,
    shards: &mut [Option<Vec<u8>>],
) -> Result<Vec<usize>, FilesError> {
    check_entry(params, seg, shards.len())?;
    let corrupt = verified(params, seg, shards)?;
    let rs = codec(params)?;
    rs.reconstruct(shards).map_err(|_| FilesError::Erasure)?;
    if !verify_shards(seg, shards).is_empty() {
        return Err(FilesError::ManifestFormat("rebuilt shard does not match the manifest"));
    }
    Ok(corrupt)
}
