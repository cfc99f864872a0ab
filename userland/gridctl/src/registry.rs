//! Wasm modules from OCI registries: `gridctl deploy REGISTRY/NAME:TAG` (or
//! `@sha256:...`) pulls the image with the `oci-client` crate (the OCI distribution
//! API, with the registry's token authentication: a Bearer challenge is answered
//! anonymously, or with `GRIDCTL_REGISTRY_USER`/`GRIDCTL_REGISTRY_PASSWORD`), and keeps
//! only the module; the node gets the module and the signed manifest, which names the
//! image by digest (`Manifest::image`).
//!
//! Every digest is checked here as well as by the client crate: the manifest's bytes
//! against the digest the registry announced and the one the reference names, an index
//! entry's manifest against the index, and the layer against the manifest's descriptor
//! (digest and size). Layouts: a layer of a wasm media type (`wasm-to-oci`, `oras push
//! x.wasm:application/wasm`), a single layer that is a bare module (`oras push x.wasm`),
//! or a tar layer, plain or gzip, holding one `.wasm` file, preferably the image's
//! entrypoint (`docker buildx --platform wasi/wasm`); an index picks its `wasm`
//! platform entry. Registries on the loopback host are spoken to over plain HTTP (as
//! Docker does), every other one over HTTPS.

use std::io::Read;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{self as media, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;

use crate::{bail, Context, Error, Result};

/// Largest manifest, index or config accepted (bytes).
pub const MANIFEST_BYTES_MAX: usize = 4 << 20;
/// Largest layer accepted: a module the control protocol can carry.
pub const LAYER_BYTES_MAX: u64 = 30 << 20;

/// A module pulled from a registry.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The wasm module.
    pub module: Vec<u8>,
    /// `REGISTRY/REPOSITORY@sha256:...`: what the reference resolved to.
    pub image: String,
    /// The digest of the image manifest the layer came from (differs from `image`'s when
    /// the reference named an index).
    pub manifest_digest: String,
    /// The layer's media type.
    pub layer_media_type: String,
}

/// Whether a deploy argument is an image reference rather than a local file: it is not
/// an existing path, and it has a registry host (a `.`, a `:` or `localhost` before the
/// first `/`).
pub fn is_reference(arg: &str) -> bool {
    if std::path::Path::new(arg).exists() {
        return false;
    }
    match arg.split_once('/') {
        Some((host, rest)) => !rest.is_empty() && (host.contains('.') || host.contains(':') || host == "localhost"),
        None => false,
    }
}

/// The sha256 digest of `bytes`, `sha256:HEX`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", workloads::oci::sha256_hex(bytes))
}

fn loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    host == "localhost" || host == "[::1]" || host.starts_with("127.")
}

fn client_for(reference: &Reference, timeout: Duration) -> Client {
    let registry = reference.resolve_registry().to_string();
    let protocol = if loopback(&registry) { ClientProtocol::HttpsExcept(vec![registry]) } else { ClientProtocol::Https };
    Client::new(ClientConfig { protocol, read_timeout: Some(timeout), connect_timeout: Some(timeout), ..ClientConfig::default() })
}

fn auth() -> RegistryAuth {
    match (std::env::var("GRIDCTL_REGISTRY_USER"), std::env::var("GRIDCTL_REGISTRY_PASSWORD")) {
        (Ok(user), Ok(password)) => RegistryAuth::Basic(user, password),
        _ => RegistryAuth::Anonymous,
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context(|| "cannot start the registry client".into())
}

const MANIFEST_TYPES: [&str; 4] =
    [media::OCI_IMAGE_MEDIA_TYPE, media::OCI_IMAGE_INDEX_MEDIA_TYPE, media::IMAGE_MANIFEST_MEDIA_TYPE, media::IMAGE_MANIFEST_LIST_MEDIA_TYPE];

/// Pulls `reference` and returns its wasm module (see the module docs).
pub fn pull(reference: &str, timeout: Duration) -> Result<Pulled> {
    let parsed: Reference = reference.parse().map_err(|e| Error(format!("{reference}: not an image reference: {e}")))?;
    let client = client_for(&parsed, timeout);
    let auth = auth();
    let rt = runtime()?;
    rt.block_on(async {
        let (bytes, digest) = manifest(&client, &parsed, &auth, parsed.digest()).await?;
        let image = format!("{}/{}@{digest}", parsed.registry(), parsed.repository());
        let top: Value = serde_json::from_slice(&bytes).context(|| format!("{reference}: the manifest is not JSON"))?;
        let (doc, manifest_digest) = if top.get("manifests").is_some() {
            let entry = wasm_entry(&top).ok_or_else(|| Error(format!("{reference}: the index has no wasm platform entry")))?;
            let by_digest = parsed.clone_with_digest(entry.clone());
            let (bytes, digest) = manifest(&client, &by_digest, &auth, Some(&entry)).await?;
            (serde_json::from_slice::<Value>(&bytes).context(|| format!("{reference}: manifest {entry} is not JSON"))?, digest)
        } else {
            (top, digest)
        };
        let layers: Vec<OciDescriptor> = serde_json::from_value(doc.get("layers").cloned().unwrap_or(Value::Null))
            .context(|| format!("{reference}: the image manifest has no valid layer list"))?;
        let (layer, how) = pick_layer(&layers).ok_or_else(|| Error(format!("{reference}: no layer that can hold a wasm module")))?;
        if layer.size < 0 || layer.size as u64 > LAYER_BYTES_MAX {
            bail!("{reference}: layer {} has {} bytes (at most {LAYER_BYTES_MAX})", layer.digest, layer.size);
        }
        let mut blob = Vec::new();
        client.pull_blob(&parsed, layer, &mut blob).await.map_err(|e| Error(format!("{reference}: layer {}: {e}", layer.digest)))?;
        if sha256_digest(&blob) != layer.digest || blob.len() as i64 != layer.size {
            bail!("{reference}: layer {} does not match its digest or size ({} bytes received)", layer.digest, blob.len());
        }
        let entrypoint = match how {
            LayerKind::Tar | LayerKind::TarGzip => entrypoint(&client, &parsed, &doc).await,
            _ => None,
        };
        let module = match how {
            LayerKind::Wasm | LayerKind::Bare => blob,
            LayerKind::Tar => module_in_tar(&blob, entrypoint.as_deref())?,
            LayerKind::TarGzip => {
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(&blob[..])
                    .take(LAYER_BYTES_MAX + 1)
                    .read_to_end(&mut tar)
                    .context(|| format!("{reference}: the layer is not gzip"))?;
                module_in_tar(&tar, entrypoint.as_deref())?
            }
        };
        if !module.starts_with(crate::deploy::WASM_MAGIC) {
            bail!("{reference}: layer {} is not a wasm module", layer.digest);
        }
        Ok(Pulled { module, image, manifest_digest, layer_media_type: layer.media_type.clone() })
    })
}

/// Pulls a manifest (or index), bounded, and checks its digest against the registry's
/// and the reference's.
async fn manifest(client: &Client, reference: &Reference, auth: &RegistryAuth, named: Option<&str>) -> Result<(Vec<u8>, String)> {
    let (bytes, announced) = client
        .pull_manifest_raw(reference, auth, &MANIFEST_TYPES)
        .await
        .map_err(|e| Error(format!("{reference}: cannot pull the manifest: {e}")))?;
    if bytes.len() > MANIFEST_BYTES_MAX {
        bail!("{reference}: a manifest of {} bytes (at most {MANIFEST_BYTES_MAX})", bytes.len());
    }
    let digest = sha256_digest(&bytes);
    if digest != announced || named.is_some_and(|n| n != digest) {
        bail!("{reference}: digest mismatch: the manifest's bytes hash to {digest}, the registry said {announced}{}",
            named.map(|n| format!(", the reference names {n}")).unwrap_or_default());
    }
    Ok((bytes.to_vec(), digest))
}

/// The index entry for a wasm platform (architecture `wasm`), or the only entry.
fn wasm_entry(index: &Value) -> Option<String> {
    let entries = index.get("manifests")?.as_array()?;
    let digest = |e: &Value| e.get("digest").and_then(Value::as_str).map(str::to_string);
    let wasm = entries.iter().find(|e| e.pointer("/platform/architecture").and_then(Value::as_str) == Some("wasm"));
    match (wasm, entries.len()) {
        (Some(e), _) => digest(e),
        (None, 1) => digest(&entries[0]),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LayerKind {
    /// A wasm media type: the blob is the module.
    Wasm,
    /// The only layer, of another type: the blob may be a bare module (`oras push x.wasm`).
    Bare,
    Tar,
    TarGzip,
}

fn pick_layer(layers: &[OciDescriptor]) -> Option<(&OciDescriptor, LayerKind)> {
    if let Some(l) = layers.iter().find(|l| workloads::oci::WASM_LAYER_TYPES.contains(&l.media_type.as_str())) {
        return Some((l, LayerKind::Wasm));
    }
    let [only] = layers else { return None };
    let kind = match only.media_type.as_str() {
        media::IMAGE_LAYER_GZIP_MEDIA_TYPE | media::IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE => LayerKind::TarGzip,
        media::IMAGE_DOCKER_LAYER_TAR_MEDIA_TYPE => LayerKind::Tar,
        // oras gives files without a type this one too: a tar, or the bare file.
        media::IMAGE_LAYER_MEDIA_TYPE if only.annotations.as_ref().is_some_and(|a| a.contains_key("org.opencontainers.image.title")) => {
            LayerKind::Bare
        }
        media::IMAGE_LAYER_MEDIA_TYPE => LayerKind::Tar,
        _ => LayerKind::Bare,
    };
    Some((only, kind))
}

/// The entrypoint's file name from the image config (`config.Entrypoint[0]`), if any.
async fn entrypoint(client: &Client, reference: &Reference, manifest: &Value) -> Option<String> {
    let config: OciDescriptor = serde_json::from_value(manifest.get("config")?.clone()).ok()?;
    if config.size < 0 || config.size as usize > MANIFEST_BYTES_MAX {
        return None;
    }
    let mut bytes = Vec::new();
    client.pull_blob(reference, &config, &mut bytes).await.ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let first = value.pointer("/config/Entrypoint/0").or_else(|| value.pointer("/config/Cmd/0"))?;
    Some(first.as_str()?.trim_start_matches('/').to_string())
}

/// The `.wasm` file of a layer tar: the entrypoint when named, else the only one.
fn module_in_tar(tar: &[u8], entrypoint: Option<&str>) -> Result<Vec<u8>> {
    let entries = workloads::oci::tar_entries(tar).map_err(|e| Error(format!("the image layer is not a tar: {e}")))?;
    let clean = |p: &str| p.trim_start_matches("./").trim_start_matches('/').to_string();
    if let Some(e) = entrypoint.and_then(|want| entries.iter().find(|e| clean(&e.path) == want)) {
        return Ok(e.data.to_vec());
    }
    let wasm: Vec<_> = entries.iter().filter(|e| e.path.ends_with(".wasm")).collect();
    match wasm.as_slice() {
        [one] => Ok(one.data.to_vec()),
        [] => bail!("the image layer holds no .wasm file"),
        _ => bail!("the image layer holds {} .wasm files and the image names no entrypoint", wasm.len()),
    }
}

/// Pushes `module` as `reference` in the `wasm-to-oci` layout (config
/// `application/vnd.wasm.config.v1+json`, one `application/vnd.wasm.content.layer.v1+wasm`
/// layer); returns the manifest's digest. For tests and tools that publish modules.
pub fn push_wasm(reference: &str, module: &[u8], timeout: Duration) -> Result<String> {
    let parsed: Reference = reference.parse().map_err(|e| Error(format!("{reference}: not an image reference: {e}")))?;
    let client = client_for(&parsed, timeout);
    let layer = ImageLayer::new(module.to_vec(), media::WASM_LAYER_MEDIA_TYPE.to_string(), None);
    let config = Config::new(b"{}".to_vec(), media::WASM_CONFIG_MEDIA_TYPE.to_string(), None);
    runtime()?.block_on(async {
        client.push(&parsed, &[layer], config, &auth(), None).await.map_err(|e| Error(format!("{reference}: push failed: {e}")))?;
        let (_, digest) = manifest(&client, &parsed, &auth(), None).await?;
        Ok(digest)
    })
}

#[cfg(test)]
mod test {
    use super::*;

    fn desc(media_type: &str) -> OciDescriptor {
        OciDescriptor { media_type: media_type.into(), ..OciDescriptor::default() }
    }

    #[test]
    fn references_are_told_from_files() {
        assert!(is_reference("localhost:5000/hello:1"));
        assert!(is_reference("ghcr.io/me/tool@sha256:00"));
        assert!(!is_reference("hello.wasm"));
        assert!(!is_reference("out/hello.wasm"));
        assert!(!is_reference("/"));
        assert!(loopback("localhost:5000") && loopback("127.0.0.1:5000") && loopback("[::1]:5000"));
        assert!(!loopback("ghcr.io") && !loopback("registry.example:5000"));
    }

    #[test]
    fn layers_are_picked_by_layout() {
        let wasm = [desc(media::IMAGE_LAYER_GZIP_MEDIA_TYPE), desc("application/wasm")];
        assert_eq!(pick_layer(&wasm).map(|(l, k)| (l.media_type.as_str(), k)), Some(("application/wasm", LayerKind::Wasm)));
        assert_eq!(pick_layer(&[desc(media::IMAGE_LAYER_GZIP_MEDIA_TYPE)]).map(|(_, k)| k), Some(LayerKind::TarGzip));
        assert_eq!(pick_layer(&[desc(media::IMAGE_LAYER_MEDIA_TYPE)]).map(|(_, k)| k), Some(LayerKind::Tar));
        assert_eq!(pick_layer(&[desc("application/octet-stream")]).map(|(_, k)| k), Some(LayerKind::Bare));
        assert!(pick_layer(&[desc("a"), desc("b")]).is_none());
        assert!(pick_layer(&[]).is_none());
    }

    #[test]
    fn modules_are_found_in_tar_layers() {
        let mut tar = Vec::new();
        workloads::oci::tar_append(&mut tar, "app/main.wasm", b"\0asm main");
        workloads::oci::tar_append(&mut tar, "readme", b"text");
        let mut two = tar.clone();
        tar.extend_from_slice(&[0; 1024]);
        assert_eq!(module_in_tar(&tar, None).unwrap(), b"\0asm main");
        workloads::oci::tar_append(&mut two, "other.wasm", b"\0asm other");
        two.extend_from_slice(&[0; 1024]);
        assert!(module_in_tar(&two, None).is_err());
        assert_eq!(module_in_tar(&two, Some("other.wasm")).unwrap(), b"\0asm other");
    }

    #[test]
    fn index_entries_prefer_the_wasm_platform() {
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:aa", "platform": {"architecture": "amd64", "os": "linux"}},
            {"digest": "sha256:bb", "platform": {"architecture": "wasm", "os": "wasip1"}},
        ]});
        assert_eq!(wasm_entry(&index).as_deref(), Some("sha256:bb"));
        let one = serde_json::json!({"manifests": [{"digest": "sha256:cc"}]});
        assert_eq!(wasm_entry(&one).as_deref(), Some("sha256:cc"));
        let none = serde_json::json!({"manifests": [{"digest": "sha256:aa"}, {"digest": "sha256:dd"}]});
        assert_eq!(wasm_entry(&none), None);
    }
}
