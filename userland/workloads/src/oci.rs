//! OCI image layouts carrying a WebAssembly module, in a tar archive.
//!
//! The path: `index.json` -> the first manifest descriptor (one level of nested
//! index is followed) -> the image manifest blob -> the first layer whose media type
//! is [`WASM_LAYER_TYPES`] -> the module bytes. Every blob read is checked against its
//! descriptor's size and `sha256:` digest. The tar reader handles ustar/GNU/pax
//! headers, checks header checksums, and bounds-checks every offset: hostile input
//! gives an [`OciError`], never a panic.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Layer media types accepted as a wasm module.
pub const WASM_LAYER_TYPES: [&str; 2] = ["application/vnd.wasm.content.layer.v1+wasm", "application/wasm"];
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const WASM_CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Limit on tar entries, so a crafted archive cannot make us loop for long.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciError {
    /// The tar structure is broken (where, what).
    Tar(usize, &'static str),
    MissingFile(String),
    Json(&'static str),
    BadDigest(String),
    DigestMismatch(String),
    SizeMismatch(String),
    NoWasmLayer,
    NoManifest,
}

impl fmt::Display for OciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OciError::Tar(at, why) => write!(f, "tar: {why} at byte {at}"),
            OciError::MissingFile(p) => write!(f, "image layout lacks {p}"),
            OciError::Json(what) => write!(f, "invalid JSON in {what}"),
            OciError::BadDigest(d) => write!(f, "unsupported or malformed digest {d:?}"),
            OciError::DigestMismatch(d) => write!(f, "blob does not match its digest {d}"),
            OciError::SizeMismatch(d) => write!(f, "blob {d} has a different size than its descriptor"),
            OciError::NoWasmLayer => f.write_str("image manifest has no wasm layer"),
            OciError::NoManifest => f.write_str("index.json lists no image manifest"),
        }
    }
}

/// One regular file in a tar archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry<'a> {
    pub path: String,
    pub data: &'a [u8],
}

fn octal(field: &[u8], at: usize) -> Result<u64, OciError> {
    // GNU base-256 for large sizes.
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256).and_then(|v| v.checked_add(u64::from(b))).ok_or(OciError::Tar(at, "size overflow"))?;
        }
        return Ok(v);
    }
    let mut v: u64 = 0;
    let mut seen = false;
    for &b in field {
        match b {
            b'0'..=b'7' => {
                v = v.checked_mul(8).and_then(|v| v.checked_add(u64::from(b - b'0'))).ok_or(OciError::Tar(at, "number overflow"))?;
                seen = true;
            }
            b' ' | 0 if !seen => {}
            b' ' | 0 => break,
            _ => return Err(OciError::Tar(at, "bad octal number")),
        }
    }
    Ok(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn normalize(path: &[u8]) -> String {
    let s = String::from_utf8_lossy(path);
    let s = s.trim_start_matches("./").trim_start_matches('/');
    String::from(s)
}

/// Parses the regular files of a tar archive.
pub fn tar_entries(tar: &[u8]) -> Result<Vec<TarEntry<'_>>, OciError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut long_name: Option<String> = None;
    let mut count = 0;
    while at < tar.len() {
        count += 1;
        if count > MAX_ENTRIES {
            return Err(OciError::Tar(at, "too many entries"));
        }
        let header = tar.get(at..at + 512).ok_or(OciError::Tar(at, "truncated header"))?;
        if header.iter().all(|&b| b == 0) {
            break; // end-of-archive marker
        }
        let stored = octal(&header[148..156], at)?;
        let sum: u64 = header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) }).sum();
        if stored != sum {
            return Err(OciError::Tar(at, "header checksum mismatch"));
        }
        let size = usize::try_from(octal(&header[124..136], at)?).map_err(|_| OciError::Tar(at, "size too large"))?;
        let data_start = at + 512;
        let data_end = data_start.checked_add(size).ok_or(OciError::Tar(at, "size overflow"))?;
        let data = tar.get(data_start..data_end).ok_or(OciError::Tar(at, "truncated file data"))?;
        let typeflag = header[156];
        let mut path = {
            let name = cstr(&header[0..100]);
            let is_ustar = &header[257..262] == b"ustar";
            let prefix = if is_ustar { cstr(&header[345..500]) } else { &[][..] };
            if prefix.is_empty() {
                normalize(name)
            } else {
                let mut p = Vec::from(prefix);
                p.push(b'/');
                p.extend_from_slice(name);
                normalize(&p)
            }
        };
        match typeflag {
            b'L' => long_name = Some(normalize(cstr(data))),
            b'x' => {
                // pax extended header: honour `path=`.
                long_name = pax_path(data);
            }
            b'g' => {}
            b'0' | 0 | b'7' => {
                if let Some(n) = long_name.take() {
                    path = n;
                }
                out.push(TarEntry { path, data });
            }
            _ => {
                long_name = None; // directories, links: not needed for a layout
            }
        }
        let padded = size.div_ceil(512).checked_mul(512).ok_or(OciError::Tar(at, "size overflow"))?;
        at = data_start.checked_add(padded).ok_or(OciError::Tar(at, "size overflow"))?;
    }
    Ok(out)
}

fn pax_path(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = core::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        let record = rest.get(..len)?;
        let kv = record.get(sp + 1..len.checked_sub(1)?)?;
        if let Some(v) = kv.strip_prefix(b"path=") {
            return Some(normalize(v));
        }
        rest = &rest[len.max(1)..];
    }
    None
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ImageManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// The wasm module found in an image layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmImage {
    pub module: Vec<u8>,
    /// `sha256:...` of the layer.
    pub layer_digest: String,
    pub layer_media_type: String,
    pub manifest_digest: String,
}

/// Lower-case hex of a sha256 digest.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn blob<'a>(entries: &[TarEntry<'a>], d: &Descriptor) -> Result<&'a [u8], OciError> {
    let hex = d.digest.strip_prefix("sha256:").ok_or_else(|| OciError::BadDigest(d.digest.clone()))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(OciError::BadDigest(d.digest.clone()));
    }
    let path = format!("blobs/sha256/{hex}");
    let data = entries.iter().find(|e| e.path == path).map(|e| e.data).ok_or(OciError::MissingFile(path))?;
    if data.len() as u64 != d.size {
        return Err(OciError::SizeMismatch(d.digest.clone()));
    }
    if sha256_hex(data) != hex {
        return Err(OciError::DigestMismatch(d.digest.clone()));
    }
    Ok(data)
}

/// Extracts and verifies the wasm module of an OCI image layout tar.
pub fn wasm_from_layout(tar: &[u8]) -> Result<WasmImage, OciError> {
    let entries = tar_entries(tar)?;
    let index = entries
        .iter()
        .find(|e| e.path == "index.json")
        .ok_or_else(|| OciError::MissingFile("index.json".into()))?;
    let index: Index = serde_json::from_slice(index.data).map_err(|_| OciError::Json("index.json"))?;
    let mut desc = index.manifests.first().cloned().ok_or(OciError::NoManifest)?;
    // Follow at most one nested index.
    if desc.media_type == INDEX_TYPE {
        let nested: Index = serde_json::from_slice(blob(&entries, &desc)?).map_err(|_| OciError::Json("nested index"))?;
        desc = nested.manifests.first().cloned().ok_or(OciError::NoManifest)?;
    }
    if !desc.media_type.is_empty() && desc.media_type != MANIFEST_TYPE {
        return Err(OciError::NoManifest);
    }
    let manifest: ImageManifest =
        serde_json::from_slice(blob(&entries, &desc)?).map_err(|_| OciError::Json("image manifest"))?;
    blob(&entries, &manifest.config)?;
    let layer = manifest
        .layers
        .iter()
        .find(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()))
        .ok_or(OciError::NoWasmLayer)?;
    let module = blob(&entries, layer)?;
    Ok(WasmImage {
        module: Vec::from(module),
        layer_digest: layer.digest.clone(),
        layer_media_type: layer.media_type.clone(),
        manifest_digest: desc.digest,
    })
}

/// Builds a minimal OCI image layout tar around `module` (used by tools and tests).
pub fn build_layout(module: &[u8], layer_media_type: &str) -> Vec<u8> {
    let config = b"{\"architecture\":\"wasm\",\"os\":\"wasip1\"}";
    let config_d = Descriptor { media_type: WASM_CONFIG_TYPE.into(), digest: format!("sha256:{}", sha256_hex(config)), size: config.len() as u64 };
    let layer_d = Descriptor { media_type: layer_media_type.into(), digest: format!("sha256:{}", sha256_hex(module)), size: module.len() as u64 };
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST_TYPE}\",\"config\":{},\"layers\":[{}]}}",
        serde_json::to_string(&config_d).unwrap_or_default(),
        serde_json::to_string(&layer_d).unwrap_or_default()
    );
    let manifest_hex = sha256_hex(manifest.as_bytes());
    let index = format!(
        "{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"{MANIFEST_TYPE}\",\"digest\":\"sha256:{manifest_hex}\",\"size\":{}}}]}}",
        manifest.len()
    );
    let mut tar = Vec::new();
    tar_append(&mut tar, "oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}");
    tar_append(&mut tar, "index.json", index.as_bytes());
    tar_append(&mut tar, &format!("blobs/sha256/{manifest_hex}"), manifest.as_bytes());
    tar_append(&mut tar, &format!("blobs/sha256/{}", sha256_hex(config)), config);
    tar_append(&mut tar, &format!("blobs/sha256/{}", sha256_hex(module)), module);
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

/// Appends one ustar regular file (path up to 100 bytes).
pub fn tar_append(tar: &mut Vec<u8>, path: &str, data: &[u8]) {
    let mut h = [0u8; 512];
    let p = path.as_bytes();
    let n = p.len().min(100);
    h[..n].copy_from_slice(&p[..n]);
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    let size = format!("{:011o}", data.len());
    h[124..135].copy_from_slice(&size.as_bytes()[..11]);
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let sum = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(sum.as_bytes());
    tar.extend_from_slice(&h);
    tar.extend_from_slice(data);
    let pad = data.len().div_ceil(512) * 512 - data.len();
    tar.extend(core::iter::repeat_n(0u8, pad));
}

#[cfg(test)]
mod test {
    use super::*;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn extracts_the_wasm_layer_for_both_media_types() {
        for ty in WASM_LAYER_TYPES {
            let tar = build_layout(MODULE, ty);
            let img = wasm_from_layout(&tar).unwrap();
            assert_eq!(img.module, MODULE);
            assert_eq!(img.layer_media_type, ty);
            assert_eq!(img.layer_digest, format!("sha256:{}", sha256_hex(MODULE)));
        }
    }

    #[test]
    fn rejects_other_layer_types() {
        let tar = build_layout(MODULE, "application/vnd.oci.image.layer.v1.tar");
        assert_eq!(wasm_from_layout(&tar), Err(OciError::NoWasmLayer));
    }

    #[test]
    fn detects_a_changed_blob() {
        let mut tar = build_layout(MODULE, WASM_LAYER_TYPES[0]);
        // The module is the last file: its data starts 512 bytes before the padding.
        let pos = tar.windows(4).rposition(|w| w == b"\0asm").unwrap();
        tar[pos + 5] ^= 1;
        assert!(matches!(wasm_from_layout(&tar), Err(OciError::DigestMismatch(_))));
    }

    #[test]
    fn detects_a_changed_header() {
        let mut tar = build_layout(MODULE, WASM_LAYER_TYPES[0]);
        tar[3] ^= 1; // first header's name: checksum no longer matches
        assert!(matches!(wasm_from_layout(&tar), Err(OciError::Tar(0, "header checksum mismatch"))));
    }

    #[test]
    fn reads_gnu_long_names_and_pax_paths() {
        let mut tar = Vec::new();
        let long = "a/".repeat(70) + "file";
        tar_append(&mut tar, "././@LongLink", long.as_bytes());
        let last = tar.len() - 1024;
        tar[last + 156] = b'L';
        // recompute that header's checksum
        let h = &mut tar[last..last + 512];
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        tar_append(&mut tar, "short", b"data");
        let e = tar_entries(&tar).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, long);
        assert_eq!(e[0].data, b"data");
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_error_not_a_panic() {
        let tar = build_layout(MODULE, WASM_LAYER_TYPES[1]);
        for len in 0..tar.len() {
            let _ = wasm_from_layout(&tar[..len]);
        }
        for i in (0..tar.len()).step_by(7) {
            let mut t = tar.clone();
            t[i] ^= 0xa5;
            if let Ok(img) = wasm_from_layout(&t) {
                // Only padding/unused bytes may change without detection.
                assert_eq!(img.module, MODULE, "flip at {i}");
            }
        }
    }

    #[test]
    fn rejects_bad_digests() {
        let mut tar = Vec::new();
        tar_append(&mut tar, "index.json", br#"{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../etc","size":1}]}"#);
        assert!(matches!(wasm_from_layout(&tar), Err(OciError::BadDigest(_))));
        let mut tar = Vec::new();
        tar_append(&mut tar, "index.json", b"{not json");
        assert_eq!(wasm_from_layout(&tar), Err(OciError::Json("index.json")));
    }
}
