//! Attested native code: machine code for a module, signed by a compiler the node trusts.
//!
//! A node runs a module's native x86-64 code only when a compiler it trusts (an ed25519
//! key in `gridos.compilers`) signed that this code is what it compiled from exactly this
//! module for exactly this engine (the [`NATIVE_ENGINE`] settings, hashed into
//! [`engine_fingerprint`]). Everything else runs in the wasmi interpreter: an empty bundle
//! means "no native code". A bundle that is present but does not verify is refused with
//! its [`ArtifactError`]; it never falls back silently.
//!
//! Bundle v2 (all integers little-endian):
//!
//! ```text
//! "GRIDOSWA" | version u32 = 2 | module blake3 [32] | engine fingerprint [32] |
//! code blake3 [32] | compiler ed25519 public key [32] |
//! signature [64] over "gridos-attest-v1" || module blake3 || engine || code blake3 |
//! code len u64 | code
//! ```
//!
//! [`verify`] checks, in this order: magic, version, length, module, engine, compiler key,
//! signature, then the code's hash; so the (cheap) binding checks come first and the code
//! is hashed only under a valid signature. Nothing here panics on any input.

use alloc::vec::Vec;
use core::fmt;

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"GRIDOSWA";
/// The bundle format this module reads and writes.
pub const VERSION: u32 = 2;
/// Domain separation for the compiler's signature.
pub const SIGNING_CONTEXT: &[u8; 16] = b"gridos-attest-v1";
/// Bytes before the code: magic, version, module, engine, code hash, key, signature, length.
pub const HEADER_LEN: usize = 8 + 4 + 32 + 32 + 32 + 32 + 64 + 8;

/// Describes the native engine's settings; its blake3 is the engine fingerprint a
/// compiler signs. Must change whenever `runtime::base_config`, the native target or
/// `runtime::NATIVE_FEATURES` change (a test in `wasm-precompile` checks that every
/// feature and setting is named here).
pub const NATIVE_ENGINE: &str = "gridos native engine v1: wasmtime 48.0.8 cranelift x86_64-unknown-linux-gnu; \
features sse3 ssse3 sse4.1 sse4.2 popcnt; signals_based_traps=false memory_guard_size=0 \
memory_reservation=0 memory_reservation_for_growth=1048576 memory_init_cow=false \
guard_before_linear_memory=false epoch_interruption=true max_wasm_stack=262144 \
wasm_multi_memory=false";

/// blake3 of [`NATIVE_ENGINE`]: the engine a compiler attests its code for.
pub fn engine_fingerprint() -> [u8; 32] {
    *blake3::hash(NATIVE_ENGINE.as_bytes()).as_bytes()
}

/// How a workload's code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Attested x86-64 machine code from Cranelift, loaded by wasmtime.
    NativeX86_64,
    /// The wasm itself, in the wasmi interpreter.
    Wasmi,
}

impl Backend {
    /// The name the node reports (`gridctl status`, logs).
    pub fn name(self) -> &'static str {
        match self {
            Backend::NativeX86_64 => "native x86_64",
            Backend::Wasmi => "wasmi",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A verified bundle: the code borrows from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attested<'a> {
    pub module_blake3: [u8; 32],
    pub engine: [u8; 32],
    pub code_blake3: [u8; 32],
    /// The trusted compiler that signed it.
    pub compiler_key: [u8; 32],
    pub code: &'a [u8],
}

/// Why a bundle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactError {
    /// Does not start with [`MAGIC`].
    BadMagic,
    /// A version other than [`VERSION`].
    BadVersion,
    /// Shorter than its header, or than the code length it declares, or longer.
    Truncated,
    /// Compiled from a different module than the manifest names.
    WrongModule,
    /// Compiled for a different engine than the node's.
    WrongEngine,
    /// Signed by a key the node does not trust as a compiler.
    UntrustedCompiler,
    /// The signature does not verify under the compiler key.
    BadSignature,
    /// The code is not the code the compiler attested.
    CodeMismatch,
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArtifactError::BadMagic => "the bundle is not a gridos attested bundle",
            ArtifactError::BadVersion => "the bundle has an unsupported version (this node reads version 2)",
            ArtifactError::Truncated => "the bundle is truncated or has trailing bytes",
            ArtifactError::WrongModule => "the bundle was compiled from a different module",
            ArtifactError::WrongEngine => "the bundle was compiled for a different engine than this node's",
            ArtifactError::UntrustedCompiler => "the bundle is signed by a compiler this node does not trust",
            ArtifactError::BadSignature => "the bundle's attestation signature is invalid",
            ArtifactError::CodeMismatch => "the bundle's code does not match its attested hash",
        })
    }
}

impl core::error::Error for ArtifactError {}

/// What the compiler signs.
fn signed_message(module_blake3: &[u8; 32], engine: &[u8; 32], code_blake3: &[u8; 32]) -> [u8; 16 + 96] {
    let mut m = [0u8; 16 + 96];
    m[..16].copy_from_slice(SIGNING_CONTEXT);
    m[16..48].copy_from_slice(module_blake3);
    m[48..80].copy_from_slice(engine);
    m[80..].copy_from_slice(code_blake3);
    m
}

/// Signs `code` as compiled from the module with hash `module_blake3` for `engine`,
/// and returns the bundle.
pub fn attest(key: &ed25519_compact::KeyPair, module_blake3: [u8; 32], engine: [u8; 32], code: &[u8]) -> Vec<u8> {
    let code_blake3 = *blake3::hash(code).as_bytes();
    let signature = key.sk.sign(signed_message(&module_blake3, &engine, &code_blake3), None);
    let mut out = Vec::with_capacity(HEADER_LEN + code.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&module_blake3);
    out.extend_from_slice(&engine);
    out.extend_from_slice(&code_blake3);
    out.extend_from_slice(key.pk.as_ref());
    out.extend_from_slice(signature.as_ref());
    out.extend_from_slice(&(code.len() as u64).to_le_bytes());
    out.extend_from_slice(code);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ArtifactError> {
        if n > self.0.len() {
            return Err(ArtifactError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ArtifactError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// Checks that `bundle` holds code compiled from the module `module_blake3` for `engine`,
/// signed by one of the `trusted` compiler keys, and that its code is the code signed.
/// An empty `trusted` list refuses every bundle ([`ArtifactError::UntrustedCompiler`]).
pub fn verify<'a>(
    bundle: &'a [u8],
    module_blake3: &[u8; 32],
    engine: &[u8; 32],
    trusted: &[[u8; 32]],
) -> Result<Attested<'a>, ArtifactError> {
    let mut r = Reader(bundle);
    if r.take(MAGIC.len()).map_err(|_| bad_magic_or_truncated(bundle))? != MAGIC {
        return Err(ArtifactError::BadMagic);
    }
    if u32::from_le_bytes(r.array()?) != VERSION {
        return Err(ArtifactError::BadVersion);
    }
    let module: [u8; 32] = r.array()?;
    let bundle_engine: [u8; 32] = r.array()?;
    let code_blake3: [u8; 32] = r.array()?;
    let compiler_key: [u8; 32] = r.array()?;
    let signature: [u8; 64] = r.array()?;
    let len = u64::from_le_bytes(r.array()?);
    if u64::try_from(r.0.len()).map_or(true, |rest| rest != len) {
        return Err(ArtifactError::Truncated);
    }
    let code = r.0;
    if module != *module_blake3 {
        return Err(ArtifactError::WrongModule);
    }
    if bundle_engine != *engine {
        return Err(ArtifactError::WrongEngine);
    }
    if !trusted.contains(&compiler_key) {
        return Err(ArtifactError::UntrustedCompiler);
    }
    let pk = ed25519_compact::PublicKey::new(compiler_key);
    let sig = ed25519_compact::Signature::new(signature);
    pk.verify(signed_message(&module, &bundle_engine, &code_blake3), &sig).map_err(|_| ArtifactError::BadSignature)?;
    if *blake3::hash(code).as_bytes() != code_blake3 {
        return Err(ArtifactError::CodeMismatch);
    }
    Ok(Attested { module_blake3: module, engine: bundle_engine, code_blake3, compiler_key, code })
}

/// A prefix of the magic is a truncated bundle; anything else short is not a bundle.
fn bad_magic_or_truncated(bundle: &[u8]) -> ArtifactError {
    if MAGIC.starts_with(bundle) {
        ArtifactError::Truncated
    } else {
        ArtifactError::BadMagic
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::vec;
    use ed25519_compact::{KeyPair, Seed};

    const MODULE: [u8; 32] = [3; 32];
    const CODE: &[u8] = b"\x55\x48\x89\xe5 pretend machine code \xc3";

    fn key(n: u8) -> KeyPair {
        KeyPair::from_seed(Seed::new([n; 32]))
    }

    fn pk(k: &KeyPair) -> [u8; 32] {
        *k.pk
    }

    fn setup() -> (KeyPair, Vec<u8>) {
        let k = key(1);
        let b = attest(&k, MODULE, engine_fingerprint(), CODE);
        (k, b)
    }

    #[test]
    fn a_bundle_from_a_trusted_compiler_verifies() {
        let (k, b) = setup();
        let trusted = [pk(&key(9)), pk(&k)];
        let a = verify(&b, &MODULE, &engine_fingerprint(), &trusted).unwrap();
        assert_eq!(a.code, CODE);
        assert_eq!(a.module_blake3, MODULE);
        assert_eq!(a.engine, engine_fingerprint());
        assert_eq!(a.compiler_key, pk(&k));
        assert_eq!(a.code_blake3, *blake3::hash(CODE).as_bytes());
        assert_eq!(b.len(), HEADER_LEN + CODE.len());
        // Empty code is still a (useless) well-formed bundle.
        let empty = attest(&k, MODULE, engine_fingerprint(), &[]);
        assert_eq!(verify(&empty, &MODULE, &engine_fingerprint(), &trusted).unwrap().code, b"");
    }

    #[test]
    fn each_binding_is_checked() {
        let (k, b) = setup();
        let e = engine_fingerprint();
        let trusted = [pk(&k)];
        assert_eq!(verify(&b, &[4; 32], &e, &trusted), Err(ArtifactError::WrongModule));
        assert_eq!(verify(&b, &MODULE, &[5; 32], &trusted), Err(ArtifactError::WrongEngine));
        assert_eq!(verify(&b, &MODULE, &e, &[pk(&key(2))]), Err(ArtifactError::UntrustedCompiler));
        assert_eq!(verify(&b, &MODULE, &e, &[]), Err(ArtifactError::UntrustedCompiler));
        // A bundle for another engine, honestly signed, is still the wrong engine.
        let other = attest(&k, MODULE, [5; 32], CODE);
        assert_eq!(verify(&other, &MODULE, &e, &trusted), Err(ArtifactError::WrongEngine));
    }

    #[test]
    fn tampering_is_caught() {
        let (k, b) = setup();
        let e = engine_fingerprint();
        let trusted = [pk(&k)];
        // Code changed after signing: the signature still holds, the hash does not.
        let mut code = b.clone();
        let last = code.len() - 1;
        code[last] ^= 1;
        assert_eq!(verify(&code, &MODULE, &e, &trusted), Err(ArtifactError::CodeMismatch));
        // Signature bytes flipped.
        let mut sig = b.clone();
        sig[HEADER_LEN - 8 - 1] ^= 1;
        assert_eq!(verify(&sig, &MODULE, &e, &trusted), Err(ArtifactError::BadSignature));
        // Code and its hash replaced together: the signature no longer covers them.
        let mut swapped = attest(&k, MODULE, e, b"other code");
        let evil: Vec<u8> = {
            let mut v = swapped[..HEADER_LEN].to_vec();
            v[76..108].copy_from_slice(blake3::hash(b"evil code!").as_bytes());
            v.extend_from_slice(b"evil code!");
            v
        };
        assert_eq!(verify(&evil, &MODULE, &e, &trusted), Err(ArtifactError::BadSignature));
        // A trusted key put over someone else's signature.
        let mallory = key(7);
        let forged = attest(&mallory, MODULE, e, CODE);
        let mut forged = forged.clone();
        forged[108..140].copy_from_slice(&pk(&k));
        assert_eq!(verify(&forged, &MODULE, &e, &trusted), Err(ArtifactError::BadSignature));
        // The module hash changed to the one the node expects, under the old signature.
        swapped[12..44].copy_from_slice(&[4; 32]);
        assert_eq!(verify(&swapped, &[4; 32], &e, &trusted), Err(ArtifactError::BadSignature));
    }

    #[test]
    fn header_fields_and_lengths_are_checked_without_panics() {
        let (k, b) = setup();
        let e = engine_fingerprint();
        let trusted = [pk(&k)];
        for len in 0..b.len() {
            let r = verify(&b[..len], &MODULE, &e, &trusted);
            assert_eq!(r, Err(ArtifactError::Truncated), "prefix of {len} bytes");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(verify(&long, &MODULE, &e, &trusted), Err(ArtifactError::Truncated));
        let mut bad = b.clone();
        bad[0] = b'X';
        assert_eq!(verify(&bad, &MODULE, &e, &trusted), Err(ArtifactError::BadMagic));
        assert_eq!(verify(b"\0asm", &MODULE, &e, &trusted), Err(ArtifactError::BadMagic));
        let mut v1 = b.clone();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(verify(&v1, &MODULE, &e, &trusted), Err(ArtifactError::BadVersion));
        // A declared length beyond the bundle, up to u64::MAX.
        for declared in [CODE.len() as u64 + 1, u64::from(u32::MAX), u64::MAX] {
            let mut huge = b.clone();
            huge[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&declared.to_le_bytes());
            assert_eq!(verify(&huge, &MODULE, &e, &trusted), Err(ArtifactError::Truncated));
        }
        // Every single-byte change of the header is refused, never accepted and never a panic.
        for i in 0..HEADER_LEN {
            let mut m = b.clone();
            m[i] ^= 0x80;
            assert!(verify(&m, &MODULE, &e, &trusted).is_err(), "byte {i} changed");
        }
        // Garbage of every small length.
        for n in 0..HEADER_LEN + 4 {
            let g = vec![0xa5u8; n];
            assert!(verify(&g, &MODULE, &e, &trusted).is_err());
        }
    }

    #[test]
    fn engine_fingerprint_is_the_hash_of_the_description() {
        assert_eq!(engine_fingerprint(), *blake3::hash(NATIVE_ENGINE.as_bytes()).as_bytes());
        assert_eq!(Backend::NativeX86_64.name(), "native x86_64");
        assert_eq!(Backend::Wasmi.name(), "wasmi");
        assert_eq!(
            alloc::format!("{}", ArtifactError::UntrustedCompiler),
            "the bundle is signed by a compiler this node does not trust"
        );
    }
}
