//! Signed workload manifests.
//!
//! A [`Manifest`] names the module by its blake3 hash, the owner by an ed25519
//! public key, and carries the limits and the program's args and environment. It
//! travels as a [`SignedManifest`]: the postcard bytes of the manifest and the owner's
//! signature over `DOMAIN || bytes`. [`SignedManifest::verify`] decodes and checks the
//! signature against the key inside the manifest; [`Manifest::check_module`] checks the
//! module bytes against the hash. Nothing here panics on hostile input.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

/// Prefix of every signed message, so a manifest signature is never valid elsewhere.
pub const DOMAIN: &[u8] = b"gridos workload manifest v1\0";
/// Largest encoded manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

// Upper bounds a node accepts for any one workload's limits. A manifest above one is
// refused when it is verified ([`ManifestError::AboveMaximum`]), before anything is
// stored or started: a node refuses what it cannot honour instead of failing later.

/// Linear memory (all memories together): 1 GiB. A node has a few GiB of RAM and the
/// kernel heap holds every workload's memory; more than this for one workload would
/// let a single deploy starve the node (node-wide admission is the kernel's).
pub const MAX_MEMORY_BYTES: u64 = 1 << 30;
/// Log: 16 MiB. The log is kept in the kernel heap until it is read (see [`crate::log`],
/// which counts its per-line overhead against this cap too).
pub const MAX_LOG_BYTES: u64 = 16 << 20;
/// File area: 64 MiB. Open files are held in RAM whole ([`crate::wasi::fs`]) and each
/// file is one shard (at most 16 MiB in the shard store), so this is what one workload's
/// open files may cost the heap.
pub const MAX_STORAGE_BYTES: u64 = 64 << 20;
/// Most TCP ports one workload may serve: each is a listener with a backlog in the
/// node's TCP stack, a node-wide resource shared by every workload.
pub const MAX_LISTEN_PORTS: usize = 4;
/// CPU time: 24 hours. Time is accounted in nanoseconds in a `u64`, which this keeps
/// far from overflow; a job that needs more CPU than a day is redeployed, so a slot of
/// the node's workload table is not held forever by one deploy.
pub const MAX_CPU_MS: u64 = 24 * 3600 * 1000;
/// Wall-clock time: 30 days. A service is expected to be redeployed (with a new
/// manifest, new limits) at least this often; beyond it a node cannot promise to stay
/// up anyway (reboots, upgrades), and restart-on-boot starts the clock again.
pub const MAX_WALL_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most args and most env entries (each).
pub const MAX_ARGS: usize = 256;
/// Bytes of args plus env, counting a NUL after each string as `args_sizes_get` and
/// `environ_sizes_get` do: 60 KiB, what fits in a [`MAX_MANIFEST_BYTES`] manifest next
/// to its other fields. Explicit, so a larger manifest bound never silently grows the
/// copy every start makes of them.
pub const MAX_ARGS_ENV_BYTES: usize = 60 << 10;

/// Which limit of a manifest is out of range ([`ManifestError::AboveMaximum`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    MemoryBytes,
    CpuMs,
    WallMs,
    LogBytes,
    StorageBytes,
    ListenPorts,
    Args,
    Env,
    ArgsEnvBytes,
}

impl Limit {
    /// The manifest field (or quantity) the limit is on.
    pub fn name(self) -> &'static str {
        match self {
            Limit::MemoryBytes => "memory_bytes",
            Limit::CpuMs => "cpu_ms",
            Limit::WallMs => "wall_ms",
            Limit::LogBytes => "log_bytes",
            Limit::StorageBytes => "storage_bytes",
            Limit::ListenPorts => "listening ports",
            Limit::Args => "args",
            Limit::Env => "env entries",
            Limit::ArgsEnvBytes => "bytes of args and env",
        }
    }

    /// The largest value a node accepts.
    pub fn max(self) -> u64 {
        match self {
            Limit::MemoryBytes => MAX_MEMORY_BYTES,
            Limit::CpuMs => MAX_CPU_MS,
            Limit::WallMs => MAX_WALL_MS,
            Limit::LogBytes => MAX_LOG_BYTES,
            Limit::StorageBytes => MAX_STORAGE_BYTES,
            Limit::ListenPorts => MAX_LISTEN_PORTS as u64,
            Limit::Args | Limit::Env => MAX_ARGS as u64,
            Limit::ArgsEnvBytes => MAX_ARGS_ENV_BYTES as u64,
        }
    }

    /// `Err(AboveMaximum)` when `value` is above [`Self::max`].
    fn check(self, value: u64) -> Result<(), ManifestError> {
        if value > self.max() {
            return Err(ManifestError::AboveMaximum { limit: self, value, max: self.max() });
        }
        Ok(())
    }
}

/// Resource limits of one workload. Every limit is enforced by the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Cap on linear memory (all memories together), bytes.
    pub memory_bytes: u64,
    /// CPU time the workload may use, milliseconds.
    pub cpu_ms: u64,
    /// Wall-clock time from start to forced stop, milliseconds.
    pub wall_ms: u64,
    /// Cap on stdout + stderr, bytes.
    pub log_bytes: u64,
    /// Cap on the workload's persistent file area (`/data`), committed plus open file
    /// bytes; 0 means no file area.
    pub storage_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 16 << 20, cpu_ms: 10_000, wall_ms: 60_000, log_bytes: 64 << 10, storage_bytes: 1 << 20 }
    }
}

/// What a workload is and may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Human-readable name, also the log prefix.
    pub name: String,
    /// The owner's ed25519 public key; it signs the manifest.
    pub owner: [u8; 32],
    /// blake3 of the module bytes.
    pub module_blake3: [u8; 32],
    pub limits: Limits,
    /// argv, including argv[0].
    pub args: Vec<String>,
    /// Environment as `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// Start again after a node reboot (only honoured where the node has storage).
    pub restart_on_boot: bool,
    /// TCP ports on the node's overlay address the workload serves; each is a
    /// preopened listening socket (see [`crate::wasi`] for the fd numbers).
    pub listen: Vec<u16>,
    /// Where the program sees its file area, instead of `/data` (wasmtime's
    /// `--dir HOST::GUEST`); `.` is the area either way. An absolute path without `.`
    /// or `..` components, at most [`MAX_DATA_DIR_BYTES`]. Encoded after the other
    /// fields only when set ([`Extensions`]), so manifests without it keep their bytes
    /// and signatures.
    #[serde(skip)]
    pub data_dir: Option<String>,
    /// The OCI image the module was pulled from, `REGISTRY/REPOSITORY@sha256:HEX` (the
    /// digest of the image manifest, or of the index the tag named), so the signed
    /// manifest says which image the owner deployed; `None` for a module from a file.
    /// Encoded in [`Extensions`], like `data_dir`.
    #[serde(skip)]
    pub image: Option<String>,
    /// The ledger's workload contract this deployment runs under (issue 14): a node on a
    /// ledger runs the workload only while that contract, for this node and owned by
    /// `owner`, is active. Encoded after [`Extensions`] ([`ContractExtension`]) only when
    /// set, so older manifests keep their bytes.
    #[serde(skip)]
    pub contract: Option<u64>,
}

/// Longest `data_dir`.
pub const MAX_DATA_DIR_BYTES: usize = 255;

/// Optional manifest fields added after version 1, postcard-encoded after the
/// manifest's own bytes (and signed with them) when any is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Extensions {
    data_dir: Option<String>,
    image: Option<String>,
}

/// The second group of optional fields, after [`Extensions`] (which is then written too,
/// even when empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ContractExtension {
    contract: Option<u64>,
}

/// Longest [`Manifest::image`] reference.
pub const MAX_IMAGE_REF_BYTES: usize = 512;

/// A manifest as postcard bytes plus the owner's signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub manifest: Vec<u8>,
    /// 64-byte ed25519 signature over `DOMAIN || manifest`.
    pub signature: Vec<u8>,
}

/// Why a manifest or module was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// Not a postcard-encoded signed manifest / manifest.
    Malformed,
    TooLarge,
    /// The owner key is not a valid ed25519 point.
    BadOwnerKey,
    /// The signature does not verify under the owner key.
    BadSignature,
    /// The module's blake3 differs from the manifest's.
    HashMismatch,
    /// A limit is zero (or otherwise malformed).
    BadLimits(&'static str),
    /// A limit is above what any node accepts (the constants of this module).
    AboveMaximum { limit: Limit, value: u64, max: u64 },
    /// The listening ports are not distinct nonzero ports.
    BadListen(&'static str),
    BadName,
    /// `data_dir` is not an absolute path without `.` and `..` ([`check_data_dir`]).
    BadDataDir(&'static str),
    /// The image reference is not `REGISTRY/REPOSITORY@sha256:` and 64 hex digits.
    BadImage,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Malformed => f.write_str("malformed manifest encoding"),
            ManifestError::TooLarge => f.write_str("manifest too large"),
            ManifestError::BadOwnerKey => f.write_str("owner key is not a valid ed25519 public key"),
            ManifestError::BadSignature => f.write_str("bad manifest signature"),
            ManifestError::HashMismatch => f.write_str("module blake3 hash does not match the manifest"),
            ManifestError::BadLimits(why) => write!(f, "bad limits: {why}"),
            ManifestError::AboveMaximum { limit, value, max } => {
                write!(f, "{} is {value}, above the maximum a node accepts ({max})", limit.name())
            }
            ManifestError::BadListen(why) => write!(f, "bad listening ports: {why}"),
            ManifestError::BadName => f.write_str("workload name must be 1-64 printable ASCII characters"),
            ManifestError::BadDataDir(why) => write!(f, "bad data_dir: {why}"),
            ManifestError::BadImage => write!(f, "image must be REGISTRY/REPOSITORY@sha256:<64 hex digits>, at most {MAX_IMAGE_REF_BYTES} printable ASCII bytes"),
        }
    }
}

impl Manifest {
    /// A manifest for `module` owned by `owner` with default limits and `argv = [name]`.
    pub fn new(name: &str, owner: [u8; 32], module: &[u8]) -> Self {
        Manifest {
            name: name.into(),
            owner,
            module_blake3: *blake3::hash(module).as_bytes(),
            limits: Limits::default(),
            args: alloc::vec![name.into()],
            env: Vec::new(),
            restart_on_boot: false,
            listen: Vec::new(),
            data_dir: None,
            image: None,
            contract: None,
        }
    }

    /// The manifest's bytes: its fields, then [`Extensions`] when one of the later fields
    /// is set, then [`ContractExtension`] when the contract is.
    fn encode(&self) -> Vec<u8> {
        let mut bytes = postcard::to_allocvec(self).unwrap_or_default();
        if self.data_dir.is_some() || self.image.is_some() || self.contract.is_some() {
            let ext = Extensions { data_dir: self.data_dir.clone(), image: self.image.clone() };
            bytes.extend_from_slice(&postcard::to_allocvec(&ext).unwrap_or_default());
        }
        if self.contract.is_some() {
            let ext = ContractExtension { contract: self.contract };
            bytes.extend_from_slice(&postcard::to_allocvec(&ext).unwrap_or_default());
        }
        bytes
    }

    /// Decodes what [`Manifest::encode`] wrote (nothing may follow).
    fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let (mut m, rest) = postcard::take_from_bytes::<Manifest>(bytes).map_err(|_| ManifestError::Malformed)?;
        if !rest.is_empty() {
            let (ext, mut rest) = postcard::take_from_bytes::<Extensions>(rest).map_err(|_| ManifestError::Malformed)?;
            m.data_dir = ext.data_dir;
            m.image = ext.image;
            if !rest.is_empty() {
                let (ext, after) = postcard::take_from_bytes::<ContractExtension>(rest).map_err(|_| ManifestError::Malformed)?;
                m.contract = ext.contract;
                rest = after;
            }
            if !rest.is_empty() {
                return Err(ManifestError::Malformed);
            }
        }
        Ok(m)
    }

    /// Where the program sees its file area: `data_dir`, else `/data`.
    pub fn guest_data_dir(&self) -> &str {
        self.data_dir.as_deref().unwrap_or(crate::wasi::fs::PREOPEN_NAME)
    }

    /// Signs with the owner's secret key (the key's public half must be `owner`).
    pub fn sign(&self, key: &ed25519_compact::SecretKey) -> SignedManifest {
        let manifest = self.encode();
        let signature = key.sign(signed_message(&manifest), None);
        SignedManifest { manifest, signature: signature.to_vec() }
    }

    /// Checks that `module` is the module this manifest names.
    pub fn check_module(&self, module: &[u8]) -> Result<(), ManifestError> {
        if blake3::hash(module).as_bytes() == &self.module_blake3 {
            Ok(())
        } else {
            Err(ManifestError::HashMismatch)
        }
    }

    /// Checks limits and name against what the node accepts.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let l = &self.limits;
        if self.name.is_empty() || self.name.len() > 64 || !self.name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ManifestError::BadName);
        }
        if l.memory_bytes == 0 {
            return Err(ManifestError::BadLimits("memory_bytes must be non-zero"));
        }
        if l.cpu_ms == 0 || l.wall_ms == 0 {
            return Err(ManifestError::BadLimits("cpu_ms and wall_ms must be non-zero"));
        }
        Limit::MemoryBytes.check(l.memory_bytes)?;
        Limit::CpuMs.check(l.cpu_ms)?;
        Limit::WallMs.check(l.wall_ms)?;
        Limit::LogBytes.check(l.log_bytes)?;
        Limit::StorageBytes.check(l.storage_bytes)?;
        Limit::ListenPorts.check(self.listen.len() as u64)?;
        Limit::Args.check(self.args.len() as u64)?;
        Limit::Env.check(self.env.len() as u64)?;
        let strings = self.args.iter().chain(&self.env);
        let bytes = strings.fold(0u64, |sum, s| sum.saturating_add(s.len() as u64 + 1));
        Limit::ArgsEnvBytes.check(bytes)?;
        if self.listen.contains(&0) {
            return Err(ManifestError::BadListen("port 0"));
        }
        if self.listen.iter().enumerate().any(|(i, p)| self.listen[..i].contains(p)) {
            return Err(ManifestError::BadListen("duplicate port"));
        }
        if let Some(dir) = &self.data_dir {
            check_data_dir(dir)?;
        }
        if let Some(image) = &self.image {
            let digest = image.rsplit_once("@sha256:");
            let ok = image.len() <= MAX_IMAGE_REF_BYTES
                && image.bytes().all(|b| b.is_ascii_graphic())
                && digest.is_some_and(|(name, hex)| {
                    name.contains('/') && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                });
            if !ok {
                return Err(ManifestError::BadImage);
            }
        }
        Ok(())
    }
}

/// A `data_dir`: absolute, at most [`MAX_DATA_DIR_BYTES`], printable, no `.` or `..`
/// component and no empty one past the root (`/` alone is allowed: the area is then
/// the whole guest tree, as `--dir host::/`).
pub fn check_data_dir(dir: &str) -> Result<(), ManifestError> {
    let bad = |why| Err(ManifestError::BadDataDir(why));
    if !dir.starts_with('/') {
        return bad("not absolute");
    }
    if dir.len() > MAX_DATA_DIR_BYTES {
        return bad("too long");
    }
    if dir.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return bad("control characters");
    }
    if dir == "/" {
        return Ok(());
    }
    if dir[1..].split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("empty, . or .. component");
    }
    Ok(())
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + manifest.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(manifest);
    m
}

impl SignedManifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        postcard::from_bytes(bytes).map_err(|_| ManifestError::Malformed)
    }

    /// Decodes the manifest and checks the owner's signature and the limits.
    pub fn verify(&self) -> Result<Manifest, ManifestError> {
        if self.manifest.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        let manifest = Manifest::decode(&self.manifest)?;
        let key = ed25519_compact::PublicKey::from_slice(&manifest.owner).map_err(|_| ManifestError::BadOwnerKey)?;
        let signature =
            ed25519_compact::Signature::from_slice(&self.signature).map_err(|_| ManifestError::BadSignature)?;
        key.verify(signed_message(&self.manifest), &signature).map_err(|_| ManifestError::BadSignature)?;
        manifest.validate()?;
        Ok(manifest)
    }
}

/// A deterministic key pair from a 32-byte seed (tests, and the booted self-test).
pub fn key_pair_from_seed(seed: [u8; 32]) -> ed25519_compact::KeyPair {
    ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed))
}

#[cfg(test)]
mod test {
    use super::*;

    fn signed(module: &[u8]) -> (ed25519_compact::KeyPair, SignedManifest) {
        let kp = key_pair_from_seed([7; 32]);
        let mut m = Manifest::new("hello", *kp.pk, module);
        m.args.push("--flag".into());
        m.env.push("K=V".into());
        m.limits.cpu_ms = 123;
        (kp.clone(), m.sign(&kp.sk))
    }

    #[test]
    fn round_trips_and_verifies() {
        let (kp, s) = signed(b"\0asm module");
        let back = SignedManifest::from_bytes(&s.to_bytes()).unwrap();
        let m = back.verify().unwrap();
        assert_eq!(m.owner, *kp.pk);
        assert_eq!(m.limits.cpu_ms, 123);
        assert_eq!(m.env, ["K=V"]);
        m.check_module(b"\0asm module").unwrap();
        assert_eq!(m.check_module(b"\0asm modulf"), Err(ManifestError::HashMismatch));
    }

    #[test]
    fn rejects_tampering_anywhere() {
        let (_, s) = signed(b"m");
        // Flip every bit of the manifest and of the signature, one at a time.
        for i in 0..s.manifest.len() * 8 {
            let mut t = s.clone();
            t.manifest[i / 8] ^= 1 << (i % 8);
            // Either it no longer decodes, or it decodes to bytes the owner never signed.
            let e = t.verify().unwrap_err();
            assert!(matches!(e, ManifestError::Malformed | ManifestError::BadOwnerKey | ManifestError::BadSignature), "manifest bit {i}: {e:?}");
        }
        for i in 0..s.signature.len() * 8 {
            let mut t = s.clone();
            t.signature[i / 8] ^= 1 << (i % 8);
            assert_eq!(t.verify(), Err(ManifestError::BadSignature), "signature bit {i}");
        }
        let mut t = s.clone();
        t.signature.truncate(63);
        assert_eq!(t.verify(), Err(ManifestError::BadSignature));
    }

    #[test]
    fn a_different_owner_cannot_sign_for_the_key_in_the_manifest() {
        let (_, s) = signed(b"m");
        let other = key_pair_from_seed([9; 32]);
        let m: Manifest = postcard::from_bytes(&s.manifest).unwrap();
        let forged = SignedManifest { manifest: s.manifest.clone(), signature: other.sk.sign(signed_message(&s.manifest), None).to_vec() };
        assert_eq!(forged.verify(), Err(ManifestError::BadSignature));
        let _ = m;
    }

    #[test]
    fn garbage_never_panics() {
        let (_, s) = signed(b"m");
        let bytes = s.to_bytes();
        for len in 0..bytes.len() {
            if let Ok(t) = SignedManifest::from_bytes(&bytes[..len]) {
                assert!(t.verify().is_err());
            }
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut junk = std::vec::Vec::new();
            for _ in 0..(x % 300) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                junk.push(x as u8);
            }
            if let Ok(t) = SignedManifest::from_bytes(&junk) {
                assert!(t.verify().is_err());
            }
        }
    }

    #[test]
    fn limits_are_validated() {
        let kp = key_pair_from_seed([7; 32]);
        let mut m = Manifest::new("x", *kp.pk, b"m");
        m.limits.memory_bytes = 0;
        assert!(matches!(m.sign(&kp.sk).verify(), Err(ManifestError::BadLimits(_))));
        m.limits.memory_bytes = 1 << 20;
        m.limits.storage_bytes = MAX_STORAGE_BYTES + 1;
        assert!(matches!(m.sign(&kp.sk).verify(), Err(ManifestError::AboveMaximum { limit: Limit::StorageBytes, .. })));
        m.limits.storage_bytes = 0;
        assert!(m.sign(&kp.sk).verify().is_ok());
        m.name = "bad name".into();
        assert_eq!(m.sign(&kp.sk).verify(), Err(ManifestError::BadName));
    }

    #[test]
    fn the_image_reference_names_a_sha256_digest() {
        use alloc::format;
        let kp = key_pair_from_seed([7; 32]);
        let mut m = Manifest::new("x", *kp.pk, b"m");
        let hex = "0123456789abcdef".repeat(4);
        m.image = Some(format!("localhost:5000/tools/convert@sha256:{hex}"));
        assert_eq!(m.sign(&kp.sk).verify().map(|v| v.image), Ok(m.image.clone()));
        for bad in [
            format!("convert@sha256:{hex}"),
            "r/convert:latest".into(),
            format!("r/convert@sha256:{}", &hex[1..]),
            format!("r/convert@sha256:{}", hex.to_uppercase()),
            format!("r/con vert@sha256:{hex}"),
            format!("{}/c@sha256:{hex}", "r".repeat(MAX_IMAGE_REF_BYTES)),
        ] {
            m.image = Some(bad.clone());
            assert_eq!(m.sign(&kp.sk).verify(), Err(ManifestError::BadImage), "{bad}");
        }
    }

    #[test]
    fn the_contract_round_trips_and_older_manifests_keep_their_bytes() {
        let kp = key_pair_from_seed([7; 32]);
        let mut m = Manifest::new("x", *kp.pk, b"m");
        let plain = m.sign(&kp.sk);
        m.data_dir = Some("/srv".into());
        let with_dir = m.sign(&kp.sk);
        m.contract = Some(42);
        let with_contract = m.sign(&kp.sk);
        assert_eq!(with_contract.verify().map(|v| (v.contract, v.data_dir)), Ok((Some(42), Some("/srv".into()))));
        // Without a contract the bytes are what they were before the field existed.
        assert_eq!(with_dir.manifest, with_contract.manifest[..with_dir.manifest.len()]);
        m.data_dir = None;
        assert_eq!(m.sign(&kp.sk).verify().map(|v| v.contract), Ok(Some(42)));
        assert_eq!(plain.verify().map(|v| v.contract), Ok(None));
        // Trailing garbage after the contract is refused.
        let mut bytes = m.encode();
        bytes.push(0);
        assert_eq!(Manifest::decode(&bytes), Err(ManifestError::Malformed));
    }

    /// Every maximum: the value at the maximum is accepted, one above is refused at
    /// verify time with the typed error naming the limit.
    #[test]
    fn limits_above_the_node_maxima_are_refused_at_verify() {
        let kp = key_pair_from_seed([7; 32]);
        let base = Manifest::new("x", *kp.pk, b"m");
        type Set = fn(&mut Manifest, u64);
        let cases: [(Limit, Set); 9] = [
            (Limit::MemoryBytes, |m, v| m.limits.memory_bytes = v),
            (Limit::CpuMs, |m, v| m.limits.cpu_ms = v),
            (Limit::WallMs, |m, v| m.limits.wall_ms = v),
            (Limit::LogBytes, |m, v| m.limits.log_bytes = v),
            (Limit::StorageBytes, |m, v| m.limits.storage_bytes = v),
            (Limit::ListenPorts, |m, v| m.listen = (1..=v as u16).collect()),
            (Limit::Args, |m, v| m.args = (0..v).map(|_| String::new()).collect()),
            (Limit::Env, |m, v| m.env = (0..v).map(|_| String::new()).collect()),
            (Limit::ArgsEnvBytes, |m, v| m.env = alloc::vec!["x".repeat(v as usize - 2), String::new()]),
        ];
        for (limit, set) in cases {
            let mut m = base.clone();
            m.args.clear();
            set(&mut m, limit.max());
            assert_eq!(m.sign(&kp.sk).verify().map(|_| ()), Ok(()), "{limit:?} at its maximum");
            set(&mut m, limit.max() + 1);
            let e = m.sign(&kp.sk).verify().unwrap_err();
            assert_eq!(e, ManifestError::AboveMaximum { limit, value: limit.max() + 1, max: limit.max() });
            assert!(alloc::format!("{e}").contains(limit.name()), "{e}");
        }
        // u64::MAX wall and cpu times (which the kernel once multiplied into ns) too.
        let mut m = base.clone();
        m.limits.cpu_ms = u64::MAX;
        assert!(matches!(m.sign(&kp.sk).verify(), Err(ManifestError::AboveMaximum { limit: Limit::CpuMs, .. })));
        m.limits.cpu_ms = 1;
        m.limits.wall_ms = u64::MAX;
        assert!(matches!(m.sign(&kp.sk).verify(), Err(ManifestError::AboveMaximum { limit: Limit::WallMs, .. })));
    }

    #[test]
    fn data_dir_maps_the_area_and_is_validated() {
        let kp = key_pair_from_seed([7; 32]);
        let mut m = Manifest::new("w", *kp.pk, b"module");
        // Unset: the bytes are those of a manifest before the option existed.
        let plain = m.sign(&kp.sk);
        assert_eq!(plain.manifest, postcard::to_allocvec(&m).unwrap());
        assert_eq!(plain.verify().unwrap().guest_data_dir(), "/data");
        for ok in ["/work", "/", "/a/b-c/d.e"] {
            m.data_dir = Some(ok.into());
            let v = m.sign(&kp.sk).verify().unwrap();
            assert_eq!(v.data_dir.as_deref(), Some(ok));
            assert_eq!(v.guest_data_dir(), ok);
        }
        for bad in ["work", "", "/a/../b", "/a/./b", "/..", "/a//b", "/a/", "/a\nb", &alloc::format!("/{}", "x".repeat(255))] {
            m.data_dir = Some(bad.into());
            assert!(matches!(m.sign(&kp.sk).verify(), Err(ManifestError::BadDataDir(_))), "{bad}");
        }
        // Trailing bytes that are not the extension are refused.
        m.data_dir = None;
        let mut s = m.sign(&kp.sk);
        s.manifest.push(7);
        assert!(matches!(s.verify(), Err(ManifestError::Malformed | ManifestError::BadSignature)));
    }

    #[test]
    fn listening_ports_are_validated() {
        let kp = key_pair_from_seed([7; 32]);
        let mut m = Manifest::new("x", *kp.pk, b"m");
        assert!(m.listen.is_empty());
        m.listen = alloc::vec![8080, 443, 1, 65535];
        assert_eq!(m.sign(&kp.sk).verify().unwrap().listen, [8080, 443, 1, 65535]);
        for bad in [&[0][..], &[80, 81, 80]] {
            m.listen = bad.to_vec();
            assert!(matches!(m.sign(&kp.sk).verify(), Err(ManifestError::BadListen(_))), "{bad:?}");
        }
        m.listen = alloc::vec![1, 2, 3, 4, 5];
        assert!(matches!(m.sign(&kp.sk).verify(), Err(ManifestError::AboveMaximum { limit: Limit::ListenPorts, .. })));
    }
}
