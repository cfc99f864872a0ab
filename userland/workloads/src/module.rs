//! A structural check of WebAssembly binaries before any engine sees them: header,
//! section framing, and the import list (so unknown imports are refused with their
//! names even when no code for the module exists). Full validation is the compiler's
//! job on the host; this catches truncated and garbage input with a clear message.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::wasi;

/// One imported item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub module: String,
    pub name: String,
    /// 0 func, 1 table, 2 memory, 3 global, 4 tag.
    pub kind: u8,
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.at).ok_or_else(|| format!("malformed module: unexpected end at byte {}", self.at))?;
        self.at += 1;
        Ok(v)
    }
    fn leb_u32(&mut self) -> Result<u32, String> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(v).map_err(|_| format!("malformed module: LEB128 overflow at byte {}", self.at));
            }
        }
        Err(format!("malformed module: LEB128 too long at byte {}", self.at))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("malformed module: {n} bytes at {} run past the end ({} bytes)", self.at, self.b.len()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn name(&mut self) -> Result<String, String> {
        let n = self.leb_u32()? as usize;
        let b = self.bytes(n)?;
        core::str::from_utf8(b).map(String::from).map_err(|_| String::from("malformed module: import name is not UTF-8"))
    }
}

/// Checks the header and section framing; returns the imports.
pub fn check_structure(wasm: &[u8]) -> Result<Vec<Import>, String> {
    if wasm.len() < 8 || &wasm[0..4] != b"\0asm" {
        return Err("malformed module: no \\0asm header".into());
    }
    if wasm[4..8] != [1, 0, 0, 0] {
        return Err("malformed module: not a core module of version 1".into());
    }
    let mut r = R { b: wasm, at: 8 };
    let mut imports = Vec::new();
    let mut last_id = 0u8;
    while r.at < wasm.len() {
        let id = r.byte()?;
        let size = r.leb_u32()? as usize;
        let start = r.at;
        let body = r.bytes(size).map_err(|e| format!("{e} (section {id})"))?;
        if id > 13 {
            return Err(format!("malformed module: unknown section id {id} at byte {}", start - 1));
        }
        if id != 0 && id != 12 && id != 13 && last_id != 12 && id <= last_id {
            return Err(format!("malformed module: section {id} out of order"));
        }
        if id != 0 {
            last_id = id;
        }
        if id == 2 {
            let mut s = R { b: body, at: 0 };
            let count = s.leb_u32()?;
            if count > 100_000 {
                return Err("malformed module: too many imports".into());
            }
            for _ in 0..count {
                let module = s.name()?;
                let name = s.name()?;
                let kind = s.byte()?;
                match kind {
                    0 => {
                        s.leb_u32()?;
                    }
                    1 => {
                        s.byte()?;
                        limits(&mut s)?;
                    }
                    2 => limits(&mut s)?,
                    3 => {
                        s.byte()?;
                        s.byte()?;
                    }
                    4 => {
                        s.byte()?;
                        s.leb_u32()?;
                    }
                    _ => return Err(format!("malformed module: import kind {kind}")),
                }
                imports.push(Import { module, name, kind });
            }
        }
    }
    Ok(imports)
}

fn limits(s: &mut R<'_>) -> Result<(), String> {
    let flags = s.byte()?;
    s.leb_u32()?;
    if flags & 1 != 0 {
        s.leb_u32()?;
    }
    Ok(())
}

/// Refuses any import that is not a WASI function this host implements.
pub fn check_imports(imports: &[Import]) -> Result<(), String> {
    for i in imports {
        if i.module != wasi::MODULE || i.kind != 0 || !wasi::SUPPORTED.contains(&i.name.as_str()) {
            return Err(format!("unknown import {}::{}", i.module, i.name));
        }
    }
    Ok(())
}

/// A minimal module: imports `module::name` as a function `() -> ()` and exports
/// `_start` calling it. For tests of import checking.
pub fn module_importing(module: &str, name: &str) -> Vec<u8> {
    let mut w = Vec::from(&b"\0asm\x01\0\0\0"[..]);
    let section = |w: &mut Vec<u8>, id: u8, body: &[u8]| {
        w.push(id);
        w.push(body.len() as u8);
        w.extend_from_slice(body);
    };
    section(&mut w, 1, &[1, 0x60, 0, 0]);
    let mut imp = alloc::vec![1u8, module.len() as u8];
    imp.extend_from_slice(module.as_bytes());
    imp.push(name.len() as u8);
    imp.extend_from_slice(name.as_bytes());
    imp.extend_from_slice(&[0, 0]);
    section(&mut w, 2, &imp);
    section(&mut w, 3, &[1, 0]);
    section(&mut w, 7, &[1, 6, b'_', b's', b't', b'a', b'r', b't', 0, 1]);
    section(&mut w, 10, &[1, 4, 0, 0x10, 0, 0x0b]);
    w
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn finds_imports_and_refuses_unknown_ones() {
        let ok = module_importing("wasi_snapshot_preview1", "fd_write");
        let imports = check_structure(&ok).unwrap();
        assert_eq!(imports, [Import { module: "wasi_snapshot_preview1".into(), name: "fd_write".into(), kind: 0 }]);
        check_imports(&imports).unwrap();
        let bad = module_importing("env", "launch_missiles");
        let e = check_imports(&check_structure(&bad).unwrap()).unwrap_err();
        assert_eq!(e, "unknown import env::launch_missiles");
    }

    #[test]
    fn every_truncation_is_refused_without_panic() {
        let m = module_importing("wasi_snapshot_preview1", "proc_exit");
        // Only cuts at the 5 section boundaries (and after the header) leave a valid frame.
        let whole = (0..m.len()).filter(|&len| check_structure(&m[..len]).is_ok()).count();
        assert_eq!(whole, 5);
        assert!(check_structure(b"\x7fELF\x02\x01\x01\0").is_err());
        assert!(check_structure(b"\0asm\x02\0\0\0").is_err());
    }
}
