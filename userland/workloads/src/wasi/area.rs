//! The persistent file area of one workload: a set of named byte strings.
//!
//! Names are paths relative to the area's root, components joined by `/`; a name
//! ending in `/` with empty contents marks a directory (see [`super::fs`] for the
//! tree rules the WASI layer keeps). The area itself only stores names.
//!
//! The kernel implements [`FileArea`] over the node's storage; [`MemFileArea`] keeps
//! the files in memory for host tests and host runs. The WASI layer ([`super::fs`])
//! keeps open files in memory and hands whole files to [`FileArea::write`] when they
//! are closed or synced, so an implementation needs no partial writes, no offsets and
//! no open state. Every name it sees has passed [`check_name`].

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use super::errno;

/// Longest file name, bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most files one area holds.
pub const MAX_FILES: usize = 64;

/// Why the file area could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAreaError {
    /// The node's storage failed (the program sees `EIO`).
    Io,
    /// The node's storage is full (the program sees `ENOSPC`).
    NoSpace,
}

impl FileAreaError {
    pub fn errno(self) -> u32 {
        match self {
            FileAreaError::Io => errno::IO,
            FileAreaError::NoSpace => errno::NOSPC,
        }
    }
}

/// Storage for the files of one workload. Names are area paths whose components
/// passed [`check_name`] (see the module docs);
/// the WASI layer enforces the quota and the file count before calling in.
pub trait FileArea {
    /// The committed contents of `name`, `None` if there is no such file.
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, FileAreaError>;
    /// Replaces the contents of `name` (creating it); durable once it returns `Ok`.
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FileAreaError>;
    /// Removes `name`; `false` if there was no such file. Durable once it returns `Ok`.
    fn remove(&mut self, name: &str) -> Result<bool, FileAreaError>;
    /// Every file as (name, size in bytes), in any order.
    fn list(&mut self) -> Result<Vec<(String, u64)>, FileAreaError>;
    /// Renames every `from` to its `to` (replacing a `to` that exists) in one
    /// atomic, durable step: after a crash either all of the moves happened or none.
    /// Every `from` exists; the `to` names are distinct.
    fn rename(&mut self, moves: &[(String, String)]) -> Result<(), FileAreaError>;
}

/// Checks a file name: 1 to [`MAX_NAME_BYTES`] bytes, no `/`, not `.` or `..`, no
/// control characters. The error is the errno a program sees for it.
pub fn check_name(name: &[u8]) -> Result<&str, u32> {
    if name.is_empty() {
        return Err(errno::NOENT);
    }
    if name == b".." || name.starts_with(b"../") || name.ends_with(b"/..") || contains(name, b"/../") {
        return Err(errno::NOTCAPABLE);
    }
    if name.contains(&b'/') {
        // No subdirectories (and no absolute paths below a preopen).
        return Err(errno::NOENT);
    }
    if name == b"." {
        return Err(errno::ISDIR);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(errno::NAMETOOLONG);
    }
    if name.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(errno::INVAL);
    }
    core::str::from_utf8(name).map_err(|_| errno::ILSEQ)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A [`FileArea`] in memory, with an optional injected failure for tests.
#[derive(Debug, Default, Clone)]
pub struct MemFileArea {
    files: BTreeMap<String, Vec<u8>>,
    /// When set, every `write` and `remove` fails with this error.
    pub fail: Option<FileAreaError>,
    /// Number of successful `write` calls (commits).
    pub writes: u64,
}

impl MemFileArea {
    pub fn new() -> Self {
        MemFileArea::default()
    }

    /// The committed contents of `name` (for test assertions).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }
}

impl FileArea for MemFileArea {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, FileAreaError> {
        Ok(self.files.get(name).cloned())
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FileAreaError> {
        if let Some(e) = self.fail {
            return Err(e);
        }
        self.files.insert(name.into(), bytes.to_vec());
        self.writes += 1;
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<bool, FileAreaError> {
        if let Some(e) = self.fail {
            return Err(e);
        }
        Ok(self.files.remove(name).is_some())
    }

    fn list(&mut self) -> Result<Vec<(String, u64)>, FileAreaError> {
        Ok(self.files.iter().map(|(k, v)| (k.clone(), v.len() as u64)).collect())
    }

    fn rename(&mut self, moves: &[(String, String)]) -> Result<(), FileAreaError> {
        if let Some(e) = self.fail {
            return Err(e);
        }
        if moves.iter().any(|(from, _)| !self.files.contains_key(from)) {
            return Err(FileAreaError::Io);
        }
        // Take every source out first, so a move onto another move's source works.
        let mut taken = Vec::new();
        for (from, to) in moves {
            let bytes = self.files.remove(from).ok_or(FileAreaError::Io)?;
            taken.push((to.clone(), bytes));
        }
        for (to, bytes) in taken {
            self.files.insert(to, bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn names_are_flat_short_and_printable() {
        assert_eq!(check_name(b"runs"), Ok("runs"));
        assert_eq!(check_name(b".hidden"), Ok(".hidden"));
        assert_eq!(check_name("é".as_bytes()), Ok("é"));
        assert_eq!(check_name(&[b'a'; 64]).map(str::len), Ok(64));
        assert_eq!(check_name(&[b'a'; 65]), Err(errno::NAMETOOLONG));
        assert_eq!(check_name(b""), Err(errno::NOENT));
        assert_eq!(check_name(b"."), Err(errno::ISDIR));
        assert_eq!(check_name(b".."), Err(errno::NOTCAPABLE));
        assert_eq!(check_name(b"../etc/passwd"), Err(errno::NOTCAPABLE));
        assert_eq!(check_name(b"a/../../b"), Err(errno::NOTCAPABLE));
        assert_eq!(check_name(b"a/.."), Err(errno::NOTCAPABLE));
        assert_eq!(check_name(b"a/b"), Err(errno::NOENT));
        assert_eq!(check_name(b"/abs"), Err(errno::NOENT));
        assert_eq!(check_name(b"a\nb"), Err(errno::INVAL));
        assert_eq!(check_name(b"a\0"), Err(errno::INVAL));
        assert_eq!(check_name(b"a\x7f"), Err(errno::INVAL));
        assert_eq!(check_name(b"\xff\xfe"), Err(errno::ILSEQ));
    }

    #[test]
    fn mem_area_round_trips_and_fails_on_demand() {
        let mut a = MemFileArea::new();
        assert_eq!(a.read("x"), Ok(None));
        a.write("x", b"abc").unwrap();
        assert_eq!(a.read("x"), Ok(Some(b"abc".to_vec())));
        assert_eq!(a.list().unwrap(), [("x".into(), 3)]);
        a.fail = Some(FileAreaError::Io);
        assert_eq!(a.write("y", b""), Err(FileAreaError::Io));
        assert_eq!(a.remove("x"), Err(FileAreaError::Io));
        a.fail = None;
        assert_eq!(a.remove("x"), Ok(true));
        assert_eq!(a.remove("x"), Ok(false));
        assert_eq!(a.writes, 1);
    }
}
