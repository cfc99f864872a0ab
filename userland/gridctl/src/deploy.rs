//! Building a deployment: read the program (a wasm module or an OCI image layout tar,
//! told apart by content), write and sign the manifest. The native code, if any, comes
//! attested from a compile service ([`crate::compiler`]) or a bundle file; gridctl never
//! compiles code itself (a node would not run it).

use std::path::Path;

use control::{Payload, Request};
use workloads::manifest::{Limits, Manifest};

use crate::key::UserKey;
use crate::{bail, Result};

/// The first bytes of every wasm module.
pub const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// Workload name (default: the file's stem).
    pub name: Option<String>,
    /// Arguments after argv[0] (which is the name).
    pub args: Vec<String>,
    /// `KEY=VALUE` environment entries.
    pub env: Vec<String>,
    /// Memory limit, MiB.
    pub memory_mb: Option<u64>,
    /// CPU time limit, ms.
    pub cpu_ms: Option<u64>,
    /// Wall-clock limit, ms.
    pub wall_ms: Option<u64>,
    /// Log limit, KiB.
    pub log_kb: Option<u64>,
    /// Persistent file area (`/data`), KiB (0: none).
    pub storage_kb: Option<u64>,
    /// Overlay TCP ports the workload listens on.
    pub listen: Vec<u16>,
    /// Start again after a node reboot.
    pub restart: bool,
    /// Where the program sees its file area instead of `/data` (absolute).
    pub data_dir: Option<String>,
}

/// A program read from a file.
#[derive(Clone, Debug)]
pub struct Program {
    /// What is sent.
    pub payload: Payload,
    /// The wasm module (the payload itself, or the module in the image).
    pub wasm: Vec<u8>,
}

/// Reads a program from `bytes`: wasm by its magic, otherwise an OCI image layout tar.
pub fn program_from_bytes(bytes: Vec<u8>) -> Result<Program> {
    if bytes.starts_with(WASM_MAGIC) {
        return Ok(Program { wasm: bytes.clone(), payload: Payload::Wasm(bytes) });
    }
    match workloads::oci::wasm_from_layout(&bytes) {
        Ok(image) => Ok(Program { wasm: image.module, payload: Payload::OciTar(bytes) }),
        Err(e) => bail!("not a wasm module (no \\0asm header) and not an OCI image layout tar ({e})"),
    }
}

/// The default name for a program file.
pub fn default_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("workload");
    let name: String = stem.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    if name.is_empty() {
        "workload".into()
    } else {
        name
    }
}

/// The manifest for `wasm` as `spec` says, owned by `owner`; checked as a node would.
pub fn manifest(spec: &Spec, default_name: &str, owner: [u8; 32], wasm: &[u8]) -> Result<Manifest> {
    let name = spec.name.as_deref().unwrap_or(default_name);
    let mut m = Manifest::new(name, owner, wasm);
    m.args.extend(spec.args.iter().cloned());
    for e in &spec.env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("--env {e:?} is not KEY=VALUE");
        }
    }
    m.env = spec.env.clone();
    let defaults = Limits::default();
    let mib = |v: Option<u64>, unit: u64, default: u64, flag: &str| -> Result<u64> {
        match v {
            None => Ok(default),
            Some(v) => match v.checked_mul(unit) {
                Some(b) => Ok(b),
                None => bail!("{flag} {v} is too large"),
            },
        }
    };
    m.limits.memory_bytes = mib(spec.memory_mb, 1 << 20, defaults.memory_bytes, "--memory-mb")?;
    m.limits.log_bytes = mib(spec.log_kb, 1 << 10, defaults.log_bytes, "--log-kb")?;
    m.limits.storage_bytes = mib(spec.storage_kb, 1 << 10, defaults.storage_bytes, "--storage-kb")?;
    m.listen = spec.listen.clone();
    m.limits.cpu_ms = spec.cpu_ms.unwrap_or(defaults.cpu_ms);
    m.limits.wall_ms = spec.wall_ms.unwrap_or(defaults.wall_ms);
    m.restart_on_boot = spec.restart;
    m.data_dir = spec.data_dir.clone();
    if let Err(e) = m.validate() {
        bail!("the manifest would be refused: {e}");
    }
    Ok(m)
}

/// The `Deploy` request: manifest signed by `user`, program and bundle.
pub fn request(user: &UserKey, manifest: &Manifest, program: Program, bundle: Vec<u8>) -> Request {
    let signed = manifest.sign(&user.keypair().sk);
    Request::Deploy { signed_manifest: signed.to_bytes(), payload: program.payload, bundle }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn programs_are_told_apart_by_content() {
        let module = b"\0asm\x01\0\0\0".to_vec();
        let p = program_from_bytes(module.clone()).unwrap();
        assert!(matches!(p.payload, Payload::Wasm(_)));
        let tar = workloads::oci::build_layout(&module, "application/wasm");
        let p = program_from_bytes(tar).unwrap();
        assert!(matches!(p.payload, Payload::OciTar(_)));
        assert_eq!(p.wasm, module);
        assert!(program_from_bytes(b"hello".to_vec()).is_err());
        assert!(program_from_bytes(Vec::new()).is_err());
    }

    #[test]
    fn manifest_from_flags() {
        let user = UserKey::from_seed([4; 32]).unwrap();
        let spec = Spec {
            args: vec!["-v".into()],
            env: vec!["A=1".into()],
            memory_mb: Some(32),
            log_kb: Some(8),
            cpu_ms: Some(5),
            restart: true,
            data_dir: Some("/work".into()),
            ..Spec::default()
        };
        let m = manifest(&spec, "hello", user.public_key(), b"\0asm").unwrap();
        assert_eq!(m.args, ["hello", "-v"]);
        assert_eq!(m.limits.memory_bytes, 32 << 20);
        assert_eq!(m.limits.log_bytes, 8 << 10);
        assert_eq!(m.limits.cpu_ms, 5);
        assert!(m.restart_on_boot);
        let signed = m.sign(&user.keypair().sk);
        assert_eq!(signed.verify().unwrap().owner, user.public_key());
        assert_eq!(signed.verify().unwrap().guest_data_dir(), "/work");
        for bad in [
            Spec { env: vec!["NOEQUALS".into()], ..Spec::default() },
            Spec { memory_mb: Some(0), ..Spec::default() },
            Spec { memory_mb: Some(u64::MAX), ..Spec::default() },
            Spec { name: Some("bad name".into()), ..Spec::default() },
            Spec { data_dir: Some("relative".into()), ..Spec::default() },
            Spec { data_dir: Some("/a/../b".into()), ..Spec::default() },
        ] {
            assert!(manifest(&bad, "x", user.public_key(), b"\0asm").is_err(), "{bad:?}");
        }
        assert_eq!(default_name(Path::new("/a/hello.wasm")), "hello");
        assert_eq!(default_name(Path::new("/a/.wasm")), ".wasm");
    }
}
