//! The persistent file area of one workload: a set of named byte strings with metadata
//! (kind, inode number shared by hard links, times).
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

pub use nodestate::workloads::{FileKind, FileMeta};

/// Longest name of one path component, bytes (POSIX `NAME_MAX`, wasmtime's on Linux).
pub const MAX_NAME_BYTES: usize = 255;
/// Most names (files, directories, symlinks, hard links) one area holds: the
/// workload table's bound ([`nodestate::workloads::MAX_FILES_PER_ENTRY`], which says
/// what a name costs the node).
pub const MAX_FILES: usize = nodestate::workloads::MAX_FILES_PER_ENTRY;
/// Most bytes of all names of one area together (the table's bound,
/// [`nodestate::workloads::MAX_NAME_BYTES_PER_ENTRY`]).
pub const MAX_AREA_NAME_BYTES: usize = nodestate::workloads::MAX_NAME_BYTES_PER_ENTRY;

/// Why the file area could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAreaError {
    /// The node's storage failed (the program sees `EIO`).
    Io,
    /// The node's storage is full (the program sees `ENOSPC`).
    NoSpace,
    /// This area keeps no symlinks or hard links (the program sees `EPERM`, what POSIX
    /// gives on a file system without them).
    Unsupported,
}

impl FileAreaError {
    pub fn errno(self) -> u32 {
        match self {
            FileAreaError::Io => errno::IO,
            FileAreaError::NoSpace => errno::NOSPC,
            FileAreaError::Unsupported => errno::PERM,
        }
    }
}

/// Storage for the files of one workload. Names are area paths whose components
/// passed [`check_name`] (see the module docs);
/// the WASI layer enforces the quota and the file count before calling in.
///
/// Metadata ([`FileMeta`]: kind, inode number, times) came with issue 17; the
/// methods for it have defaults so an area that keeps only contents still works (its
/// files are regular files and directories, times 0, no links).
pub trait FileArea {
    /// The committed contents of `name`, `None` if there is no such file.
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, FileAreaError>;
    /// Replaces the contents of `name` (creating it); durable once it returns `Ok`.
    /// An existing name keeps its metadata, and its hard links change with it.
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FileAreaError>;
    /// Removes `name`; `false` if there was no such file. Durable once it returns `Ok`.
    /// Other hard links of the file stay.
    fn remove(&mut self, name: &str) -> Result<bool, FileAreaError>;
    /// Every file as (name, size in bytes), in any order.
    fn list(&mut self) -> Result<Vec<(String, u64)>, FileAreaError>;
    /// Renames every `from` to its `to` (replacing a `to` that exists) in one
    /// atomic, durable step: after a crash either all of the moves happened or none.
    /// Every `from` exists; the `to` names are distinct. Metadata moves with the names.
    fn rename(&mut self, moves: &[(String, String)]) -> Result<(), FileAreaError>;

    /// Every name as (name, size in bytes, metadata), in any order.
    fn list_meta(&mut self) -> Result<Vec<(String, u64, FileMeta)>, FileAreaError> {
        Ok(self.list()?.into_iter().map(|(n, s)| (n.clone(), s, FileMeta::for_name(&n))).collect())
    }
    /// [`FileArea::write`] with the metadata in the same durable step; every name with
    /// the same nonzero `meta.ino` (a hard link) gets the same contents and metadata.
    fn write_meta(&mut self, name: &str, bytes: &[u8], meta: &FileMeta) -> Result<(), FileAreaError> {
        match meta.kind {
            FileKind::Symlink => Err(FileAreaError::Unsupported),
            FileKind::Regular | FileKind::Directory => self.write(name, bytes),
        }
    }
    /// Sets the metadata of `name` (and its hard links), keeping its contents; durable
    /// once it returns `Ok`. The default keeps nothing (times are then not durable).
    fn set_meta(&mut self, name: &str, meta: &FileMeta) -> Result<(), FileAreaError> {
        let _ = (name, meta);
        Ok(())
    }
    /// Makes `to` (a new name) a hard link of `from` in one durable step: both, and
    /// `from`'s other links, get `meta` (nonzero `ino`).
    fn link(&mut self, from: &str, to: &str, meta: &FileMeta) -> Result<(), FileAreaError> {
        let _ = (from, to, meta);
        Err(FileAreaError::Unsupported)
    }
}

/// Checks one path component: 1 to [`MAX_NAME_BYTES`] bytes, no `/`, not `.` or `..`,
/// no control characters, UTF-8. The error is the errno a program sees for it.
pub fn check_name(name: &[u8]) -> Result<&str, u32> {
    if name.is_empty() {
        return Err(errno::NOENT);
    }
    if name == b".." || name.starts_with(b"../") || name.ends_with(b"/..") || contains(name, b"/../") {
        return Err(errno::PERM);
    }
    if name.contains(&b'/') {
        // A component, not a path.
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

/// A [`FileArea`] in memory (with metadata and hard links, as the kernel's), with an
/// optional injected failure for tests.
#[derive(Debug, Default, Clone)]
pub struct MemFileArea {
    files: BTreeMap<String, (Vec<u8>, FileMeta)>,
    /// When set, every change (`write`, `remove`, `rename`, metadata, links) fails with
    /// this error.
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
        self.files.get(name).map(|(d, _)| d.as_slice())
    }

    /// The committed metadata of `name` (for test assertions).
    pub fn meta(&self, name: &str) -> Option<FileMeta> {
        self.files.get(name).map(|(_, m)| *m)
    }

    fn check(&self) -> Result<(), FileAreaError> {
        self.fail.map_or(Ok(()), Err)
    }

    /// Sets `name` and its links (same nonzero ino) to `bytes` and `meta`.
    fn put(&mut self, name: &str, bytes: &[u8], meta: FileMeta) {
        if meta.ino != 0 {
            for (_, (d, m)) in self.files.iter_mut().filter(|(n, (_, m))| m.ino == meta.ino && n.as_str() != name) {
                *d = bytes.to_vec();
                *m = meta;
            }
        }
        self.files.insert(name.into(), (bytes.to_vec(), meta));
    }
}

impl FileArea for MemFileArea {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, FileAreaError> {
        Ok(self.files.get(name).map(|(d, _)| d.clone()))
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FileAreaError> {
        self.check()?;
        let meta = self.meta(name).unwrap_or_else(|| FileMeta::for_name(name));
        self.put(name, bytes, meta);
        self.writes += 1;
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<bool, FileAreaError> {
        self.check()?;
        Ok(self.files.remove(name).is_some())
    }

    fn list(&mut self) -> Result<Vec<(String, u64)>, FileAreaError> {
        Ok(self.files.iter().map(|(k, (d, _))| (k.clone(), d.len() as u64)).collect())
    }

    fn rename(&mut self, moves: &[(String, String)]) -> Result<(), FileAreaError> {
        self.check()?;
        if moves.iter().any(|(from, _)| !self.files.contains_key(from)) {
            return Err(FileAreaError::Io);
        }
        // Take every source out first, so a move onto another move's source works.
        let mut taken = Vec::new();
        for (from, to) in moves {
            let file = self.files.remove(from).ok_or(FileAreaError::Io)?;
            taken.push((to.clone(), file));
        }
        for (to, file) in taken {
            self.files.insert(to, file);
        }
        Ok(())
    }

    fn list_meta(&mut self) -> Result<Vec<(String, u64, FileMeta)>, FileAreaError> {
        Ok(self.files.iter().map(|(k, (d, m))| (k.clone(), d.len() as u64, *m)).collect())
    }

    fn write_meta(&mut self, name: &str, bytes: &[u8], meta: &FileMeta) -> Result<(), FileAreaError> {
        self.check()?;
        self.put(name, bytes, *meta);
        self.writes += 1;
        Ok(())
    }

    fn set_meta(&mut self, name: &str, meta: &FileMeta) -> Result<(), FileAreaError> {
        self.check()?;
        let bytes = self.files.get(name).map(|(d, _)| d.clone()).ok_or(FileAreaError::Io)?;
        self.put(name, &bytes, *meta);
        Ok(())
    }

    fn link(&mut self, from: &str, to: &str, meta: &FileMeta) -> Result<(), FileAreaError> {
        self.check()?;
        let bytes = self.files.get(from).map(|(d, _)| d.clone()).ok_or(FileAreaError::Io)?;
        if self.files.contains_key(to) {
            return Err(FileAreaError::Io);
        }
        self.put(from, &bytes, *meta);
        self.put(to, &bytes, *meta);
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
        assert_eq!(check_name(&[b'a'; 255]).map(str::len), Ok(255));
        assert_eq!(check_name(&[b'a'; 256]), Err(errno::NAMETOOLONG));
        assert_eq!(check_name(b""), Err(errno::NOENT));
        assert_eq!(check_name(b"."), Err(errno::ISDIR));
        assert_eq!(check_name(b".."), Err(errno::PERM));
        assert_eq!(check_name(b"../etc/passwd"), Err(errno::PERM));
        assert_eq!(check_name(b"a/../../b"), Err(errno::PERM));
        assert_eq!(check_name(b"a/.."), Err(errno::PERM));
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
