//! Precompiled-code artifacts, bound to the module they were compiled from.
//!
//! The host precompiler (`wasm-precompile`) compiles one module for several backends
//! (native x86-64 and Pulley) and stores them in one bundle:
//!
//! ```text
//! "GRIDOSWA" | version u32 LE | module blake3 [32] | count u32 LE |
//! count x (backend u32 LE | len u64 LE) | payloads in the same order
//! ```
//!
//! The kernel only tries code whose bundle names the manifest's module hash; wasmtime
//! then checks its own header (engine settings, target, CPU features) and the kernel
//! falls back to the next backend if that fails.

use alloc::vec::Vec;
use core::fmt;

pub const MAGIC: &[u8; 8] = b"GRIDOSWA";
pub const VERSION: u32 = 1;
const MAX_SECTIONS: usize = 8;

/// Which code a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// x86-64 machine code from Cranelift.
    NativeX86_64,
    /// Pulley bytecode for wasmtime's portable interpreter.
    Pulley64,
}

impl Backend {
    fn code(self) -> u32 {
        match self {
            Backend::NativeX86_64 => 1,
            Backend::Pulley64 => 2,
        }
    }

    fn from_code(c: u32) -> Option<Self> {
        match c {
            1 => Some(Backend::NativeX86_64),
            2 => Some(Backend::Pulley64),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::NativeX86_64 => "native x86_64",
            Backend::Pulley64 => "pulley64",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactError {
    BadMagic,
    BadVersion,
    Truncated,
    TooManySections,
    /// The bundle was compiled from a different module.
    WrongModule,
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArtifactError::BadMagic => "not a gridos precompiled bundle",
            ArtifactError::BadVersion => "unsupported bundle version",
            ArtifactError::Truncated => "bundle truncated",
            ArtifactError::TooManySections => "bundle has too many sections",
            ArtifactError::WrongModule => "bundle was compiled from a different module",
        })
    }
}

/// A parsed bundle: sections borrow from the input.
#[derive(Debug, Clone)]
pub struct Bundle<'a> {
    pub module_blake3: [u8; 32],
    /// Known backends in bundle order; unknown ones are skipped.
    pub sections: Vec<(Backend, &'a [u8])>,
}

pub fn encode(module_blake3: [u8; 32], sections: &[(Backend, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&module_blake3);
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (b, data) in sections {
        out.extend_from_slice(&b.code().to_le_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    }
    for (_, data) in sections {
        out.extend_from_slice(data);
    }
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
    fn u32(&mut self) -> Result<u32, ArtifactError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, ArtifactError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

/// Parses a bundle; with `expect_module`, also checks it was built from that module.
pub fn parse<'a>(bytes: &'a [u8], expect_module: Option<&[u8; 32]>) -> Result<Bundle<'a>, ArtifactError> {
    let mut r = Reader(bytes);
    if r.take(8)? != MAGIC {
        return Err(ArtifactError::BadMagic);
    }
    if r.u32()? != VERSION {
        return Err(ArtifactError::BadVersion);
    }
    let mut module_blake3 = [0u8; 32];
    module_blake3.copy_from_slice(r.take(32)?);
    if expect_module.is_some_and(|m| *m != module_blake3) {
        return Err(ArtifactError::WrongModule);
    }
    let count = r.u32()? as usize;
    if count > MAX_SECTIONS {
        return Err(ArtifactError::TooManySections);
    }
    let mut heads = Vec::with_capacity(count);
    for _ in 0..count {
        let code = r.u32()?;
        let len = usize::try_from(r.u64()?).map_err(|_| ArtifactError::Truncated)?;
        heads.push((code, len));
    }
    let mut sections = Vec::new();
    for (code, len) in heads {
        let data = r.take(len)?;
        if let Some(b) = Backend::from_code(code) {
            sections.push((b, data));
        }
    }
    Ok(Bundle { module_blake3, sections })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let h = [3u8; 32];
        let b = encode(h, &[(Backend::NativeX86_64, b"native"), (Backend::Pulley64, b"pulley")]);
        let p = parse(&b, Some(&h)).unwrap();
        assert_eq!(p.sections, [(Backend::NativeX86_64, &b"native"[..]), (Backend::Pulley64, &b"pulley"[..])]);
        assert_eq!(parse(&b, Some(&[4; 32])).unwrap_err(), ArtifactError::WrongModule);
        for len in 0..b.len() {
            assert!(parse(&b[..len], None).is_err());
        }
        let mut bad = b.clone();
        bad[0] = b'X';
        assert_eq!(parse(&bad, None).unwrap_err(), ArtifactError::BadMagic);
    }
}
