//! The preopened directory `/data`: WASI file calls over a [`FileArea`].
//!
//! The area is a directory tree. A path is resolved against the directory of its fd
//! (the preopens `/data` and `.` are both the area's root, so absolute paths under
//! `/data` and relative paths both work, as with wasmtime's `--dir`): `.` and empty
//! components are skipped, `..` goes up and is refused (`NOTCAPABLE`) where it would
//! leave the area, an absolute path is `NOTCAPABLE`, every component before the last
//! must be an existing directory (`NOENT`, `NOTDIR`). The area stores a file under its
//! full path (`a/b/c`) and a directory as an empty marker `a/b/` whose parent exists,
//! so a tree is a set of names; full paths are at most [`MAX_NAME_BYTES`] bytes.
//! Rename moves a file or a whole directory in one atomic step of the area
//! ([`FileArea::rename`]). Symlinks and hard links are not kept: `path_symlink` and
//! `path_link` answer `PERM` (what POSIX gives on a file system without them) and
//! `path_readlink` `INVAL` (no path is a symlink). Times are not kept either: the
//! `*_set_times` calls check their arguments and succeed, stats show time 0.
//!
//! Open files live in memory as nodes shared by every fd open on the same name, so
//! two fds see each other's writes. A node is committed whole through
//! [`FileArea::write`] when its last fd closes and on `fd_sync`/`fd_datasync` (or
//! after every write on an fd opened with `SYNC`/`DSYNC`). `O_CREAT` of a new name
//! commits it empty at once, so every name a program sees is in the area. A file
//! unlinked while open keeps its data until its last close and is not committed.
//!
//! Limits: committed plus open bytes stay within the quota and the area holds at most
//! [`MAX_FILES`] names, directories included (`ENOSPC` otherwise); each component is
//! checked by [`check_name`].

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use super::area::{check_name, FileArea, FileAreaError, MAX_FILES, MAX_NAME_BYTES};
use super::{errno, range, scatter, write_bytes, write_u32, done, iovecs, gather, path_arg, Kind, WasiCtx, WasiResult};
use super::{FDFLAGS_APPEND, FDFLAGS_DSYNC, FDFLAGS_NONBLOCK, FDFLAGS_RSYNC, FDFLAGS_SYNC};
use super::{FILETYPE_CHARACTER_DEVICE, FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE, FILETYPE_SOCKET_STREAM};

/// The name of the preopened directory.
pub const PREOPEN_NAME: &str = "/data";
/// The preopens of the area, in fd order from 3: both are its root (`.` makes
/// wasi-libc resolve relative paths there, like wasmtime's `--dir`).
pub const PREOPEN_NAMES: [&str; 2] = [PREOPEN_NAME, "."];
/// Longest path of a directory: its marker (the path and a `/`) is a name of at most
/// [`MAX_NAME_BYTES`].
pub const MAX_DIR_PATH_BYTES: usize = MAX_NAME_BYTES - 1;

const RIGHT_FD_DATASYNC: u64 = 1 << 0;
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_SEEK: u64 = 1 << 2;
const RIGHT_FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
const RIGHT_FD_SYNC: u64 = 1 << 4;
const RIGHT_FD_TELL: u64 = 1 << 5;
const RIGHT_FD_WRITE: u64 = 1 << 6;
const RIGHT_FD_ADVISE: u64 = 1 << 7;
const RIGHT_FD_ALLOCATE: u64 = 1 << 8;
const RIGHT_PATH_CREATE_DIRECTORY: u64 = 1 << 9;
const RIGHT_PATH_CREATE_FILE: u64 = 1 << 10;
const RIGHT_PATH_LINK_SOURCE: u64 = 1 << 11;
const RIGHT_PATH_LINK_TARGET: u64 = 1 << 12;
const RIGHT_PATH_OPEN: u64 = 1 << 13;
const RIGHT_FD_READDIR: u64 = 1 << 14;
const RIGHT_PATH_READLINK: u64 = 1 << 15;
const RIGHT_PATH_RENAME_SOURCE: u64 = 1 << 16;
const RIGHT_PATH_RENAME_TARGET: u64 = 1 << 17;
const RIGHT_PATH_FILESTAT_GET: u64 = 1 << 18;
const RIGHT_PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
const RIGHT_FD_FILESTAT_GET: u64 = 1 << 21;
const RIGHT_FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
const RIGHT_FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
const RIGHT_PATH_SYMLINK: u64 = 1 << 24;
const RIGHT_PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
const RIGHT_PATH_UNLINK_FILE: u64 = 1 << 26;
const RIGHT_POLL_FD_READWRITE: u64 = 1 << 27;

/// Rights of a directory fd.
pub(super) const RIGHTS_DIR: u64 = RIGHT_PATH_CREATE_FILE
    | RIGHT_PATH_OPEN
    | RIGHT_FD_READDIR
    | RIGHT_PATH_FILESTAT_GET
    | RIGHT_FD_FILESTAT_GET
    | RIGHT_PATH_UNLINK_FILE
    | RIGHT_PATH_CREATE_DIRECTORY
    | RIGHT_PATH_REMOVE_DIRECTORY
    | RIGHT_PATH_RENAME_SOURCE
    | RIGHT_PATH_RENAME_TARGET
    | RIGHT_PATH_LINK_SOURCE
    | RIGHT_PATH_LINK_TARGET
    | RIGHT_PATH_SYMLINK
    | RIGHT_PATH_READLINK
    | RIGHT_PATH_FILESTAT_SET_TIMES
    | RIGHT_FD_FILESTAT_SET_TIMES
    | RIGHT_FD_SYNC
    | RIGHT_FD_DATASYNC;
/// Every right a file fd can have (read and write ones only as opened).
pub(super) const RIGHTS_FILE: u64 = RIGHTS_FILE_READ | RIGHTS_FILE_WRITE | RIGHTS_FILE_ANY;
const RIGHTS_FILE_READ: u64 = RIGHT_FD_READ;
const RIGHTS_FILE_WRITE: u64 = RIGHT_FD_WRITE | RIGHT_FD_DATASYNC | RIGHT_FD_SYNC | RIGHT_FD_FILESTAT_SET_SIZE;
const RIGHTS_FILE_ANY: u64 = RIGHT_FD_SEEK
    | RIGHT_FD_TELL
    | RIGHT_FD_FILESTAT_GET
    | RIGHT_FD_FDSTAT_SET_FLAGS
    | RIGHT_POLL_FD_READWRITE
    | RIGHT_FD_ADVISE
    | RIGHT_FD_ALLOCATE
    | RIGHT_FD_FILESTAT_SET_TIMES;

const OFLAGS_CREAT: u32 = 1;
const OFLAGS_DIRECTORY: u32 = 2;
const OFLAGS_EXCL: u32 = 4;
const OFLAGS_TRUNC: u32 = 8;
const FDFLAGS_ALL: u32 = (FDFLAGS_APPEND | FDFLAGS_DSYNC | FDFLAGS_NONBLOCK | FDFLAGS_RSYNC | FDFLAGS_SYNC) as u32;

/// Largest file size: WASI offsets are signed 64-bit (`fd_seek` takes an `i64`), so
/// a larger size could not be addressed; asking for one is `EFBIG`, as on wasmtime.
pub const MAX_FILE_BYTES: u64 = i64::MAX as u64;

const DIRENT_HEADER_BYTES: usize = 24;
const FILESTAT_BYTES: usize = 64;
/// Inode number of `/data` itself.
const DIR_INO: u64 = 1;

/// An fd open on a file.
#[derive(Debug)]
pub(super) struct OpenFile {
    node: usize,
    read: bool,
    write: bool,
    pos: u64,
}

/// A directory fd: its path in the area (`""` for the root) and, for a preopen, the
/// name `fd_prestat_dir_name` gives.
#[derive(Debug, Clone)]
pub(super) struct DirFd {
    path: String,
    preopen: Option<&'static str>,
}

impl DirFd {
    pub(super) fn preopen(name: &'static str) -> Self {
        DirFd { path: String::new(), preopen: Some(name) }
    }
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Dir,
    File(u64),
}

/// A path resolved in the area: its full name (`""` is the root) and whether it was
/// written with a trailing `/` (then it must name a directory).
struct Resolved {
    path: String,
    slash: bool,
}

/// The marker name of directory `path`.
fn marker(path: &str) -> String {
    let mut m = String::with_capacity(path.len() + 1);
    m.push_str(path);
    m.push('/');
    m
}

/// `path` joined under `dir` (the root when `dir` is empty).
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        return name.into();
    }
    let mut p = String::with_capacity(dir.len() + 1 + name.len());
    p.push_str(dir);
    p.push('/');
    p.push_str(name);
    p
}

/// The child of `dir` that area name `name` is, as (child, is a directory), if it
/// is a direct child.
fn child_of<'a>(dir: &str, name: &'a str) -> Option<(&'a str, bool)> {
    let rest = if dir.is_empty() { name } else { name.strip_prefix(dir)?.strip_prefix('/')? };
    match rest.find('/') {
        None if !rest.is_empty() => Some((rest, false)),
        Some(i) if i + 1 == rest.len() && i > 0 => Some((&rest[..i], true)),
        _ => None,
    }
}

impl OpenFile {
    /// Drops read or write access that `base` does not keep.
    pub(super) fn narrow(&mut self, base: u64) {
        self.read &= base & RIGHT_FD_READ != 0;
        self.write &= base & RIGHT_FD_WRITE != 0;
    }

    pub(super) fn rights(&self) -> u64 {
        let mut r = RIGHTS_FILE_ANY;
        if self.read {
            r |= RIGHTS_FILE_READ;
        }
        if self.write {
            r |= RIGHTS_FILE_WRITE;
        }
        r
    }
}

/// An open file's contents.
struct Node {
    name: String,
    data: Vec<u8>,
    /// Changed since the last commit.
    dirty: bool,
    /// Number of fds open on it.
    refs: u32,
    /// Removed from the area while open: never committed again.
    unlinked: bool,
}

/// The file area of one workload and its open files.
pub(super) struct Files {
    area: Box<dyn FileArea + Send>,
    quota_bytes: u64,
    /// Committed name -> size, loaded from the area on first use.
    committed: Option<BTreeMap<String, u64>>,
    nodes: Vec<Option<Node>>,
}

/// Stable nonzero inode number of a name (FNV-1a).
fn ino(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h | 2 // never 0 (wasi-libc then stats the name) nor DIR_INO
}

fn filestat(ino: u64, filetype: u8, nlink: u64, size: u64) -> [u8; FILESTAT_BYTES] {
    let mut s = [0u8; FILESTAT_BYTES];
    s[8..16].copy_from_slice(&ino.to_le_bytes());
    s[16] = filetype;
    s[24..32].copy_from_slice(&nlink.to_le_bytes());
    s[32..40].copy_from_slice(&size.to_le_bytes());
    s
}

fn area_err(e: FileAreaError) -> u32 {
    e.errno()
}

impl Files {
    pub(super) fn new(area: Box<dyn FileArea + Send>, quota_bytes: u64) -> Self {
        Files { area, quota_bytes, committed: None, nodes: Vec::new() }
    }

    fn committed(&mut self) -> Result<&mut BTreeMap<String, u64>, u32> {
        if self.committed.is_none() {
            let list = self.area.list().map_err(area_err)?;
            self.committed = Some(list.into_iter().collect());
        }
        Ok(self.committed.as_mut().expect("loaded above"))
    }

    /// The open, not unlinked node of `name`.
    fn live(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| matches!(n, Some(n) if !n.unlinked && n.name == name))
    }

    fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("an fd refers to a live node")
    }

    /// Committed bytes of files not open, plus the bytes of every open file.
    /// Sizes come from the area (the kernel's record on disk): they are summed
    /// saturating, so a forged huge size reads as "over quota", never wraps.
    fn usage_bytes(&mut self) -> Result<u64, u32> {
        let open: u64 = self.nodes.iter().flatten().fold(0u64, |sum, n| sum.saturating_add(n.data.len() as u64));
        let mut closed = 0u64;
        let committed = self.committed.as_ref().ok_or(errno::IO)?;
        for (name, size) in committed {
            if self.live(name).is_none() {
                closed = closed.saturating_add(*size);
            }
        }
        Ok(open.saturating_add(closed))
    }

    /// Size of `name` (its open contents if open), `None` if there is no such file.
    fn size_of(&mut self, name: &str) -> Result<Option<u64>, u32> {
        let committed = self.committed()?.get(name).copied();
        Ok(match self.live(name) {
            Some(i) => Some(self.node(i).data.len() as u64),
            None => committed,
        })
    }

    /// Opens (and maybe creates or truncates) `name`; returns its node.
    fn open(&mut self, name: &str, oflags: u32) -> Result<usize, u32> {
        let (create, excl, trunc) = (oflags & OFLAGS_CREAT != 0, oflags & OFLAGS_EXCL != 0, oflags & OFLAGS_TRUNC != 0);
        if let Some(i) = self.live(name) {
            if create && excl {
                return Err(errno::EXIST);
            }
            let n = self.node(i);
            n.refs += 1;
            if trunc && !n.data.is_empty() {
                n.data.clear();
                n.dirty = true;
            }
            return Ok(i);
        }
        let exists = self.committed()?.contains_key(name);
        let data = if exists {
            if create && excl {
                return Err(errno::EXIST);
            }
            let data = self.area.read(name).map_err(area_err)?.ok_or(errno::IO)?;
            if trunc { Vec::new() } else { data }
        } else {
            if !create {
                return Err(errno::NOENT);
            }
            if self.committed()?.len() >= MAX_FILES {
                return Err(errno::NOSPC);
            }
            self.area.write(name, &[]).map_err(area_err)?;
            self.committed()?.insert(name.into(), 0);
            Vec::new()
        };
        let dirty = exists && trunc;
        let node = Some(Node { name: name.into(), data, dirty, refs: 1, unlinked: false });
        Ok(match self.nodes.iter().position(Option::is_none) {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        })
    }

    /// Sets the length of node `i`, zero-filling growth, within the quota.
    ///
    /// `len` comes from the program: above [`MAX_FILE_BYTES`] it is `EFBIG`; the quota
    /// is compared without a sum that could wrap (`ENOSPC`); and growth is reserved
    /// fallibly (`ENOMEM` when the node's heap cannot hold it), so no guest value wraps
    /// past the quota or panics the node.
    fn resize(&mut self, i: usize, len: u64) -> Result<(), u32> {
        let old = self.node(i).data.len() as u64;
        if len > old {
            self.committed()?;
            let usage = self.usage_bytes()?;
            if len > MAX_FILE_BYTES {
                return Err(errno::FBIG);
            }
            // usage counts this node's `old` bytes, so usage >= old (saturated: over).
            let others = usage.saturating_sub(old);
            let room = self.quota_bytes.checked_sub(others);
            if room.is_none_or(|room| len > room) {
                return Err(errno::NOSPC);
            }
        }
        let len = usize::try_from(len).map_err(|_| errno::FBIG)?;
        let n = self.node(i);
        if let Some(grow) = len.checked_sub(n.data.len()) {
            n.data.try_reserve_exact(grow).map_err(|_| errno::NOMEM)?;
        }
        n.data.resize(len, 0);
        n.dirty = true;
        Ok(())
    }

    /// Hands node `i` to the area if it changed.
    fn commit(&mut self, i: usize) -> Result<(), u32> {
        let Files { area, committed, nodes, .. } = self;
        let n = nodes[i].as_mut().expect("an fd refers to a live node");
        if !n.dirty || n.unlinked {
            return Ok(());
        }
        area.write(&n.name, &n.data).map_err(area_err)?;
        n.dirty = false;
        if let Some(c) = committed.as_mut() {
            c.insert(n.name.clone(), n.data.len() as u64);
        }
        Ok(())
    }

    /// Drops one fd's hold on node `i`, committing it when it was the last.
    fn release(&mut self, i: usize) -> Result<(), u32> {
        let n = self.node(i);
        n.refs -= 1;
        if n.refs > 0 {
            return Ok(());
        }
        let r = self.commit(i);
        self.nodes[i] = None;
        r
    }

    fn unlink(&mut self, name: &str) -> Result<(), u32> {
        if !self.committed()?.contains_key(name) {
            return Err(errno::NOENT);
        }
        self.area.remove(name).map_err(area_err)?;
        self.committed()?.remove(name);
        if let Some(i) = self.live(name) {
            self.node(i).unlinked = true;
        }
        Ok(())
    }

    /// What `path` names (`""` is the root directory).
    fn ty(&mut self, path: &str) -> Result<Option<Ty>, u32> {
        if path.is_empty() || self.committed()?.contains_key(&marker(path)) {
            return Ok(Some(Ty::Dir));
        }
        Ok(self.size_of(path)?.map(Ty::File))
    }

    /// Resolves `path` against directory `base` (see the module docs).
    fn resolve(&mut self, base: &str, path: &[u8]) -> Result<Resolved, u32> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        if path[0] == b'/' {
            return Err(errno::NOTCAPABLE);
        }
        // The fd's directory may have been removed or renamed away meanwhile.
        if self.ty(base)? != Some(Ty::Dir) {
            return Err(errno::NOENT);
        }
        let mut parts: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").collect();
        for (i, comp) in comps.iter().enumerate() {
            if *comp == b".." {
                parts.pop().ok_or(errno::NOTCAPABLE)?;
                continue;
            }
            parts.push(check_name(comp)?);
            if i + 1 < comps.len() {
                let dir = parts.join("/");
                match self.ty(&dir)? {
                    Some(Ty::Dir) => {}
                    Some(Ty::File(_)) => return Err(errno::NOTDIR),
                    None => return Err(errno::NOENT),
                }
            }
        }
        let path_out = parts.join("/");
        if path_out.len() > MAX_NAME_BYTES {
            return Err(errno::NAMETOOLONG);
        }
        Ok(Resolved { path: path_out, slash: path.ends_with(b"/") })
    }

    /// The entries of directory `dir` as (name, is a directory), sorted by name.
    fn children(&mut self, dir: &str) -> Result<Vec<(String, bool)>, u32> {
        let mut out: Vec<(String, bool)> =
            self.committed()?.keys().filter_map(|n| child_of(dir, n)).map(|(c, d)| (c.into(), d)).collect();
        out.sort();
        Ok(out)
    }

    fn mkdir(&mut self, path: &str) -> Result<(), u32> {
        if self.ty(path)?.is_some() {
            return Err(errno::EXIST);
        }
        if path.len() > MAX_DIR_PATH_BYTES {
            return Err(errno::NAMETOOLONG);
        }
        if self.committed()?.len() >= MAX_FILES {
            return Err(errno::NOSPC);
        }
        let m = marker(path);
        self.area.write(&m, &[]).map_err(area_err)?;
        self.committed()?.insert(m, 0);
        Ok(())
    }

    fn rmdir(&mut self, path: &str) -> Result<(), u32> {
        match self.ty(path)? {
            None => return Err(errno::NOENT),
            Some(Ty::File(_)) => return Err(errno::NOTDIR),
            Some(Ty::Dir) if path.is_empty() => return Err(errno::BUSY),
            Some(Ty::Dir) => {}
        }
        if !self.children(path)?.is_empty() {
            return Err(errno::NOTEMPTY);
        }
        let m = marker(path);
        self.area.remove(&m).map_err(area_err)?;
        self.committed()?.remove(&m);
        Ok(())
    }

    /// Renames `from` to `to` (both resolved, distinct), a file or a whole directory,
    /// in one atomic step of the area; open files follow their names.
    fn rename(&mut self, from: &Resolved, to: &Resolved) -> Result<Vec<(String, String)>, u32> {
        if from.path.is_empty() || to.path.is_empty() {
            return Err(errno::BUSY);
        }
        let src = self.ty(&from.path)?.ok_or(errno::NOENT)?;
        let dst = self.ty(&to.path)?;
        if from.path == to.path {
            return Ok(Vec::new());
        }
        let moves = match src {
            Ty::File(_) => {
                if from.slash || to.slash {
                    return Err(errno::NOTDIR);
                }
                if dst == Some(Ty::Dir) {
                    return Err(errno::ISDIR);
                }
                alloc::vec![(from.path.clone(), to.path.clone())]
            }
            Ty::Dir => {
                match dst {
                    Some(Ty::File(_)) => return Err(errno::NOTDIR),
                    Some(Ty::Dir) if !self.children(&to.path)?.is_empty() => return Err(errno::NOTEMPTY),
                    _ => {}
                }
                if to.path.starts_with(&marker(&from.path)) {
                    return Err(errno::INVAL);
                }
                let prefix = marker(&from.path);
                let mut moves = Vec::new();
                for name in self.committed()?.keys().filter(|n| n.starts_with(&prefix)) {
                    let mut new = marker(&to.path);
                    new.push_str(&name[prefix.len()..]);
                    if new.len() > MAX_NAME_BYTES {
                        return Err(errno::NAMETOOLONG);
                    }
                    moves.push((name.clone(), new));
                }
                moves
            }
        };
        self.area.rename(&moves).map_err(area_err)?;
        // The area changed: mirror it (a replaced target's open node is unlinked).
        for (old, new) in &moves {
            if let Some(i) = self.live(new) {
                self.node(i).unlinked = true;
            }
            let committed = self.committed()?;
            let size = committed.remove(old).unwrap_or(0);
            committed.insert(new.clone(), size);
        }
        for (old, new) in &moves {
            for n in self.nodes.iter_mut().flatten() {
                if !n.unlinked && n.name == *old {
                    n.name = new.clone();
                }
            }
        }
        Ok(moves)
    }
}

impl WasiCtx {
    fn files(&mut self) -> Result<&mut Files, u32> {
        self.files.as_mut().ok_or(errno::BADF)
    }

    /// The area path of directory fd `fd` (`NOTDIR` for another fd).
    fn dir(&mut self, fd: u32) -> Result<String, u32> {
        match &self.entry(fd)?.kind {
            Kind::Dir(d) => Ok(d.path.clone()),
            _ => Err(errno::NOTDIR),
        }
    }

    /// Resolves `path` (in memory) against directory fd `dirfd`.
    fn resolve_at(&mut self, mem: &[u8], dirfd: u32, path: u32, path_len: u32) -> Result<Resolved, u32> {
        let base = self.dir(dirfd)?;
        let path = path_arg(mem, path, path_len)?;
        self.files()?.resolve(&base, &path)
    }

    fn file(&mut self, fd: u32) -> Result<(&mut OpenFile, u16, &mut Files), u32> {
        let Some(Some(entry)) = self.fds.get_mut(fd as usize) else { return Err(errno::BADF) };
        let flags = entry.fdflags;
        match (&mut entry.kind, self.files.as_mut()) {
            (Kind::File(f), Some(files)) => Ok((f, flags, files)),
            (Kind::Dir(_), _) => Err(errno::ISDIR),
            (Kind::Stdin | Kind::Stdout | Kind::Stderr | Kind::Listener(_) | Kind::Conn(_), _) => Err(errno::SPIPE),
            _ => Err(errno::BADF),
        }
    }

    /// Reads from a file at its position (advancing it) or at `at`.
    pub(super) fn file_read(&mut self, fd: u32, mem: &mut [u8], ranges: &[Range<usize>], at: Option<u64>) -> Result<usize, u32> {
        let (f, _, files) = self.file(fd)?;
        if !f.read {
            return Err(errno::BADF);
        }
        let pos = at.unwrap_or(f.pos);
        let data = &files.node(f.node).data;
        let Ok(start) = usize::try_from(pos) else { return Ok(0) };
        if start >= data.len() {
            return Ok(0);
        }
        let n = scatter(mem, ranges, &data[start..]);
        if at.is_none() {
            f.pos = f.pos.saturating_add(n as u64);
        }
        Ok(n)
    }

    /// Writes to a file at its position (or its end with `APPEND`; advancing it), or at `at`.
    pub(super) fn file_write(&mut self, fd: u32, bytes: &[u8], at: Option<u64>) -> Result<usize, u32> {
        let (f, flags, files) = self.file(fd)?;
        if !f.write {
            return Err(errno::BADF);
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        let len = files.node(f.node).data.len() as u64;
        let pos = match at {
            Some(at) => at,
            None if flags & FDFLAGS_APPEND != 0 => len,
            None => f.pos,
        };
        let end = pos.checked_add(bytes.len() as u64).ok_or(errno::FBIG)?;
        if end > len {
            files.resize(f.node, end)?;
        }
        let n = files.node(f.node);
        // pos < end <= data.len(), which is a usize.
        n.data[pos as usize..end as usize].copy_from_slice(bytes);
        n.dirty = true;
        if at.is_none() {
            f.pos = end;
        }
        if flags & (FDFLAGS_SYNC | FDFLAGS_DSYNC) != 0 {
            files.commit(f.node)?;
        }
        Ok(bytes.len())
    }

    /// Bytes between a file fd's position and its end (0 past the end or write-only),
    /// for `poll_oneoff`'s `nbytes`.
    pub(super) fn file_unread(&mut self, fd: u32) -> Result<u64, u32> {
        let (f, _, files) = self.file(fd)?;
        if !f.read {
            return Ok(0);
        }
        let (pos, node) = (f.pos, f.node);
        Ok((files.node(node).data.len() as u64).saturating_sub(pos))
    }

    pub(super) fn file_seek(&mut self, fd: u32, offset: i64, whence: u32) -> Result<u64, u32> {
        let (f, _, files) = self.file(fd)?;
        let base = match whence {
            0 => 0,
            1 => f.pos,
            2 => files.node(f.node).data.len() as u64,
            _ => return Err(errno::INVAL),
        };
        let pos = base.checked_add_signed(offset).ok_or(errno::INVAL)?;
        if pos > i64::MAX as u64 {
            return Err(errno::INVAL);
        }
        f.pos = pos;
        Ok(pos)
    }

    pub(super) fn file_close(&mut self, f: OpenFile) -> Result<(), u32> {
        self.files()?.release(f.node)
    }

    /// The name of preopen `fd` (`BADF` for any other fd).
    fn preopen_name(&mut self, fd: u32) -> Result<&'static str, u32> {
        match self.entry(fd)? {
            super::Entry { kind: Kind::Dir(DirFd { preopen: Some(name), .. }), opened: false, .. } => Ok(name),
            _ => Err(errno::BADF),
        }
    }

    /// The preopened directories answer `/data` and `.`; every other fd `BADF`.
    pub fn fd_prestat_get(&mut self, mem: &mut [u8], fd: u32, out: u32) -> WasiResult {
        let r = (|| {
            let name = self.preopen_name(fd)?;
            let mut prestat = [0u8; 8]; // tag 0 = directory
            prestat[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
            write_bytes(mem, out, &prestat)
        })();
        done(r)
    }

    pub fn fd_prestat_dir_name(&mut self, mem: &mut [u8], fd: u32, path: u32, path_len: u32) -> WasiResult {
        let r = (|| {
            let name = self.preopen_name(fd)?;
            if (path_len as usize) < name.len() {
                return Err(errno::NAMETOOLONG);
            }
            write_bytes(mem, path, name.as_bytes())
        })();
        done(r)
    }

    /// Opens a directory (for `fd_readdir` and as a base for paths) or a file,
    /// maybe creating or truncating it.
    #[allow(clippy::too_many_arguments)]
    pub fn path_open(
        &mut self,
        mem: &mut [u8],
        dirfd: u32,
        path: u32,
        path_len: u32,
        oflags: u32,
        rights_base: u64,
        fdflags: u32,
        out: u32,
    ) -> WasiResult {
        let r = (|| {
            let base = self.dir(dirfd)?;
            let path = path_arg(mem, path, path_len)?;
            range(mem, out, 4)?;
            if oflags & !(OFLAGS_CREAT | OFLAGS_DIRECTORY | OFLAGS_EXCL | OFLAGS_TRUNC) != 0 || fdflags & !FDFLAGS_ALL != 0 {
                return Err(errno::INVAL);
            }
            let fdflags = fdflags as u16;
            let files = self.files()?;
            let r = files.resolve(&base, &path)?;
            let (create, excl) = (oflags & OFLAGS_CREAT != 0, oflags & OFLAGS_EXCL != 0);
            match files.ty(&r.path)? {
                Some(Ty::Dir) => {
                    if create && excl {
                        return Err(errno::EXIST);
                    }
                    if oflags & OFLAGS_TRUNC != 0 || rights_base & RIGHT_FD_WRITE != 0 && oflags & OFLAGS_DIRECTORY == 0 {
                        return Err(errno::ISDIR);
                    }
                    let fd = self.insert(Kind::Dir(DirFd { path: r.path, preopen: None }), fdflags & FDFLAGS_NONBLOCK)?;
                    return write_u32(mem, out, fd);
                }
                Some(Ty::File(_)) if oflags & OFLAGS_DIRECTORY != 0 || r.slash => return Err(errno::NOTDIR),
                None if r.slash || oflags & OFLAGS_DIRECTORY != 0 => {
                    return Err(if create { errno::ISDIR } else { errno::NOENT });
                }
                _ => {}
            }
            let (read, write) = (rights_base & RIGHT_FD_READ != 0, rights_base & RIGHT_FD_WRITE != 0);
            if oflags & OFLAGS_TRUNC != 0 && !write {
                return Err(errno::INVAL);
            }
            // Check the fd limit before creating anything.
            if self.fds.iter().flatten().filter(|e| e.opened).count() >= super::MAX_OPEN_FDS {
                return Err(errno::MFILE);
            }
            let node = self.files()?.open(&r.path, oflags)?;
            let fd = self.insert(Kind::File(OpenFile { node, read, write, pos: 0 }), fdflags)?;
            write_u32(mem, out, fd)
        })();
        done(r)
    }

    pub fn fd_pread(&mut self, mem: &mut [u8], fd: u32, iovs: u32, iovs_len: u32, offset: u64, nread: u32) -> WasiResult {
        let r = (|| {
            let ranges = iovecs(mem, iovs, iovs_len)?;
            range(mem, nread, 4)?;
            let n = self.file_read(fd, mem, &ranges, Some(offset))?;
            write_u32(mem, nread, n as u32)
        })();
        done(r)
    }

    pub fn fd_pwrite(&mut self, mem: &mut [u8], fd: u32, iovs: u32, iovs_len: u32, offset: u64, nwritten: u32) -> WasiResult {
        let r = (|| {
            let data = gather(mem, iovs, iovs_len)?;
            range(mem, nwritten, 4)?;
            let n = self.file_write(fd, &data, Some(offset))?;
            write_u32(mem, nwritten, n as u32)
        })();
        done(r)
    }

    /// Commits the file now (both `fd_sync` and `fd_datasync`); a directory has nothing
    /// to commit.
    pub fn fd_sync(&mut self, fd: u32) -> WasiResult {
        let r = (|| {
            if matches!(self.entry(fd)?.kind, Kind::Dir(_)) {
                return Ok(());
            }
            let (f, _, files) = self.file(fd).map_err(|e| if e == errno::SPIPE { errno::INVAL } else { e })?;
            let node = f.node;
            files.commit(node)
        })();
        done(r)
    }

    pub fn fd_filestat_get(&mut self, mem: &mut [u8], fd: u32, out: u32) -> WasiResult {
        let r = (|| {
            let stat = match &self.entry(fd)?.kind {
                Kind::Stdin | Kind::Stdout | Kind::Stderr => filestat(0, FILETYPE_CHARACTER_DEVICE, 1, 0),
                Kind::Listener(_) | Kind::Conn(_) => filestat(0, FILETYPE_SOCKET_STREAM, 1, 0),
                Kind::Dir(d) => filestat(dir_ino(&d.path), FILETYPE_DIRECTORY, 1, 0),
                Kind::File(f) => {
                    let node = f.node;
                    let n = self.files()?.node(node);
                    filestat(ino(&n.name), FILETYPE_REGULAR_FILE, u64::from(!n.unlinked), n.data.len() as u64)
                }
            };
            write_bytes(mem, out, &stat)
        })();
        done(r)
    }

    pub fn fd_filestat_set_size(&mut self, fd: u32, size: u64) -> WasiResult {
        let r = (|| {
            let (f, _, files) = self.file(fd).map_err(|e| if e == errno::SPIPE { errno::INVAL } else { e })?;
            if !f.write {
                return Err(errno::BADF);
            }
            let node = f.node;
            files.resize(node, size)
        })();
        done(r)
    }

    pub fn path_filestat_get(&mut self, mem: &mut [u8], dirfd: u32, path: u32, path_len: u32, out: u32) -> WasiResult {
        let r = (|| {
            let r = self.resolve_at(mem, dirfd, path, path_len)?;
            range(mem, out, FILESTAT_BYTES as u32)?;
            let stat = match self.files()?.ty(&r.path)? {
                Some(Ty::Dir) => filestat(dir_ino(&r.path), FILETYPE_DIRECTORY, 1, 0),
                Some(Ty::File(_)) if r.slash => return Err(errno::NOTDIR),
                Some(Ty::File(size)) => filestat(ino(&r.path), FILETYPE_REGULAR_FILE, 1, size),
                None => return Err(errno::NOENT),
            };
            write_bytes(mem, out, &stat)
        })();
        done(r)
    }

    pub fn path_unlink_file(&mut self, mem: &mut [u8], dirfd: u32, path: u32, path_len: u32) -> WasiResult {
        let r = (|| {
            let r = self.resolve_at(mem, dirfd, path, path_len)?;
            let files = self.files()?;
            match files.ty(&r.path)? {
                Some(Ty::Dir) => Err(errno::ISDIR),
                Some(Ty::File(_)) if r.slash => Err(errno::NOTDIR),
                Some(Ty::File(_)) => files.unlink(&r.path),
                None => Err(errno::NOENT),
            }
        })();
        done(r)
    }

    /// Directory entries `.`, `..`, then the directory's entries sorted by name; the
    /// cookie of an entry is its index, and `d_next` the index of the one after it
    /// (stable while the directory does not change, as on wasmtime). The last entry
    /// is cut at the end of the buffer (a full buffer tells the caller to ask again).
    pub fn fd_readdir(&mut self, mem: &mut [u8], fd: u32, buf: u32, buf_len: u32, cookie: u64, bufused: u32) -> WasiResult {
        let r = (|| {
            let dir = self.dir(fd)?;
            let buf = range(mem, buf, buf_len)?;
            range(mem, bufused, 4)?;
            let files = self.files()?;
            if files.ty(&dir)? != Some(Ty::Dir) {
                return Err(errno::NOENT);
            }
            let children = files.children(&dir)?;
            let parent = dir.rsplit_once('/').map_or("", |(p, _)| p);
            let dots = [(".".into(), dir_ino(&dir), FILETYPE_DIRECTORY), ("..".into(), dir_ino(parent), FILETYPE_DIRECTORY)];
            let entries = dots.into_iter().chain(children.into_iter().map(|(n, is_dir)| {
                let full = join(&dir, &n);
                if is_dir { (n, dir_ino(&full), FILETYPE_DIRECTORY) } else { (n, ino(&full), FILETYPE_REGULAR_FILE) }
            }));
            let mut out = Vec::with_capacity(buf.len().min((2 + MAX_FILES) * (DIRENT_HEADER_BYTES + MAX_NAME_BYTES)));
            for (i, (name, ino, filetype)) in entries.enumerate().skip(usize::try_from(cookie).unwrap_or(usize::MAX)) {
                if out.len() >= buf.len() {
                    break;
                }
                let name: String = name;
                out.extend_from_slice(&(i as u64 + 1).to_le_bytes());
                out.extend_from_slice(&ino.to_le_bytes());
                out.extend_from_slice(&(name.len() as u32).to_le_bytes());
                out.extend_from_slice(&[filetype, 0, 0, 0]);
                out.extend_from_slice(name.as_bytes());
            }
            out.truncate(buf.len());
            mem[buf.start..buf.start + out.len()].copy_from_slice(&out);
            write_u32(mem, bufused, out.len() as u32)
        })();
        done(r)
    }

    pub fn path_create_directory(&mut self, mem: &mut [u8], dirfd: u32, path: u32, path_len: u32) -> WasiResult {
        let r = (|| {
            let r = self.resolve_at(mem, dirfd, path, path_len)?;
            self.files()?.mkdir(&r.path)
        })();
        done(r)
    }

    pub fn path_remove_directory(&mut self, mem: &mut [u8], dirfd: u32, path: u32, path_len: u32) -> WasiResult {
        let r = (|| {
            let r = self.resolve_at(mem, dirfd, path, path_len)?;
            self.files()?.rmdir(&r.path)
        })();
        done(r)
    }

    /// Renames a file or directory, atomically (see [`FileArea::rename`]); directory
    /// fds open inside a renamed directory follow it.
    #[allow(clippy::too_many_arguments)]
    pub fn path_rename(&mut self, mem: &mut [u8], fd: u32, old: u32, old_len: u32, new_fd: u32, new: u32, new_len: u32) -> WasiResult {
        let r = (|| {
            let from = self.resolve_at(mem, fd, old, old_len)?;
            let to = self.resolve_at(mem, new_fd, new, new_len)?;
            let moves = self.files()?.rename(&from, &to)?;
            if moves.len() > 1 || moves.first().is_some_and(|(o, _)| o.ends_with('/')) {
                let (old_dir, new_dir) = (from.path.as_str(), to.path.as_str());
                for e in self.fds.iter_mut().flatten() {
                    if let Kind::Dir(d) = &mut e.kind {
                        if d.path == old_dir {
                            d.path = new_dir.into();
                        } else if let Some(rest) = d.path.strip_prefix(old_dir).filter(|r| r.starts_with('/')) {
                            d.path = join(new_dir, &rest[1..]);
                        }
                    }
                }
            }
            Ok(())
        })();
        done(r)
    }

    /// Symlinks are not kept: `EXIST` if `new` exists, else `PERM`.
    pub fn path_symlink(&mut self, mem: &mut [u8], old: u32, old_len: u32, dirfd: u32, new: u32, new_len: u32) -> WasiResult {
        let r = (|| {
            path_arg(mem, old, old_len)?;
            let to = self.resolve_at(mem, dirfd, new, new_len)?;
            if self.files()?.ty(&to.path)?.is_some() {
                return Err(errno::EXIST);
            }
            Err(errno::PERM)
        })();
        done(r)
    }

    /// Hard links are not kept: `NOENT` for a missing source, `EXIST` for an existing
    /// target, else `PERM` (as `link(2)` on a directory or a file system without links).
    #[allow(clippy::too_many_arguments)]
    pub fn path_link(&mut self, mem: &mut [u8], fd: u32, old: u32, old_len: u32, new_fd: u32, new: u32, new_len: u32) -> WasiResult {
        let r = (|| {
            let from = self.resolve_at(mem, fd, old, old_len)?;
            let to = self.resolve_at(mem, new_fd, new, new_len)?;
            let files = self.files()?;
            if files.ty(&from.path)?.is_none() {
                return Err(errno::NOENT);
            }
            if files.ty(&to.path)?.is_some() {
                return Err(errno::EXIST);
            }
            Err(errno::PERM)
        })();
        done(r)
    }

    /// No path is a symlink: `INVAL` for one that exists (as `readlink(2)`), else `NOENT`.
    #[allow(clippy::too_many_arguments)]
    pub fn path_readlink(&mut self, mem: &mut [u8], dirfd: u32, path: u32, path_len: u32, buf: u32, buf_len: u32, out: u32) -> WasiResult {
        let r = (|| {
            let r = self.resolve_at(mem, dirfd, path, path_len)?;
            range(mem, buf, buf_len)?;
            range(mem, out, 4)?;
            match self.files()?.ty(&r.path)? {
                Some(_) => Err(errno::INVAL),
                None => Err(errno::NOENT),
            }
        })();
        done(r)
    }

    /// Times are not kept: checks the fd and flags, then succeeds.
    pub fn fd_filestat_set_times(&mut self, fd: u32, fst_flags: u32) -> WasiResult {
        let r = (|| {
            self.entry(fd)?;
            check_fst_flags(fst_flags)
        })();
        done(r)
    }

    /// Times are not kept: checks the path and flags, then succeeds.
    pub fn path_filestat_set_times(&mut self, mem: &mut [u8], dirfd: u32, path: u32, path_len: u32, fst_flags: u32) -> WasiResult {
        let r = (|| {
            let r = self.resolve_at(mem, dirfd, path, path_len)?;
            check_fst_flags(fst_flags)?;
            match self.files()?.ty(&r.path)? {
                Some(Ty::File(_)) if r.slash => Err(errno::NOTDIR),
                Some(_) => Ok(()),
                None => Err(errno::NOENT),
            }
        })();
        done(r)
    }

    /// Advice is accepted and ignored on a file (`INVAL` for an unknown advice,
    /// `BADF` for an fd that is not a file, as wasmtime).
    pub fn fd_advise(&mut self, fd: u32, advice: u32) -> WasiResult {
        let r = (|| {
            self.file(fd).map_err(|_| errno::BADF)?;
            if advice > MAX_ADVICE {
                return Err(errno::INVAL);
            }
            Ok(())
        })();
        done(r)
    }

    /// `NOTSUP` on a file (as wasmtime: preallocation is not offered), `BADF` on
    /// anything else.
    pub fn fd_allocate(&mut self, fd: u32) -> WasiResult {
        let r = (|| {
            self.file(fd).map_err(|_| errno::BADF)?;
            Err(errno::NOTSUP)
        })();
        done(r)
    }
}

/// The last WASI advice (`noreuse`).
const MAX_ADVICE: u32 = 5;
const FST_ATIM: u32 = 1;
const FST_ATIM_NOW: u32 = 2;
const FST_MTIM: u32 = 4;
const FST_MTIM_NOW: u32 = 8;

/// `INVAL` for unknown bits or a time both given and `NOW`.
fn check_fst_flags(flags: u32) -> Result<(), u32> {
    if flags & !(FST_ATIM | FST_ATIM_NOW | FST_MTIM | FST_MTIM_NOW) != 0
        || flags & (FST_ATIM | FST_ATIM_NOW) == FST_ATIM | FST_ATIM_NOW
        || flags & (FST_MTIM | FST_MTIM_NOW) == FST_MTIM | FST_MTIM_NOW
    {
        return Err(errno::INVAL);
    }
    Ok(())
}

/// Inode number of directory `path` (the root's is [`DIR_INO`]).
fn dir_ino(path: &str) -> u64 {
    if path.is_empty() { DIR_INO } else { ino(&marker(path)) }
}

#[cfg(test)]
mod test {
    use super::super::testmem::{ok, T, DATA, IOV, NAME, OUT, SIZE};
    use super::super::{read_u32, MemFileArea, MAX_OPEN_FDS};
    use super::*;
    use alloc::vec;
    use std::sync::{Arc, Mutex};

    const RW: u64 = RIGHT_FD_READ | RIGHT_FD_WRITE;
    const CREAT: u32 = OFLAGS_CREAT;

    /// A file area the test can look into while the context owns it (also used by `tree_test`).
    #[derive(Clone, Default)]
    pub(super) struct Shared(pub(super) Arc<Mutex<MemFileArea>>);

    impl FileArea for Shared {
        fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, FileAreaError> {
            self.0.lock().unwrap().read(name)
        }
        fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FileAreaError> {
            self.0.lock().unwrap().write(name, bytes)
        }
        fn remove(&mut self, name: &str) -> Result<bool, FileAreaError> {
            self.0.lock().unwrap().remove(name)
        }
        fn list(&mut self) -> Result<Vec<(String, u64)>, FileAreaError> {
            self.0.lock().unwrap().list()
        }
        fn rename(&mut self, moves: &[(String, String)]) -> Result<(), FileAreaError> {
            self.0.lock().unwrap().rename(moves)
        }
    }

    impl Shared {
        pub(super) fn get(&self, name: &str) -> Option<Vec<u8>> {
            self.0.lock().unwrap().get(name).map(<[u8]>::to_vec)
        }
    }

    fn with_area(quota: u64) -> (T, Shared) {
        let mut t = T::new();
        let area = Shared::default();
        t.c.attach_files(Box::new(area.clone()), quota);
        (t, area)
    }

    #[test]
    fn data_is_preopened_at_fd_3_only_with_a_file_area() {
        let mut t = T::new();
        assert_eq!(ok(t.c.fd_prestat_get(&mut t.mem, 3, OUT)), Err(errno::BADF));
        assert_eq!(t.open("x", CREAT, RW), Err(errno::BADF));
        let (mut t, _) = with_area(1 << 20);
        ok(t.c.fd_prestat_get(&mut t.mem, 3, OUT)).unwrap();
        assert_eq!(&t.mem[OUT as usize..OUT as usize + 8], &[0, 0, 0, 0, 5, 0, 0, 0]);
        ok(t.c.fd_prestat_dir_name(&mut t.mem, 3, NAME, 5)).unwrap();
        assert_eq!(&t.mem[NAME as usize..NAME as usize + 5], b"/data");
        assert_eq!(ok(t.c.fd_prestat_dir_name(&mut t.mem, 3, NAME, 4)), Err(errno::NAMETOOLONG));
        assert_eq!(ok(t.c.fd_prestat_dir_name(&mut t.mem, 3, SIZE as u32 - 2, 5)), Err(errno::FAULT));
        assert_eq!(ok(t.c.fd_prestat_get(&mut t.mem, 3, u32::MAX)), Err(errno::FAULT));
        // fd 4 is the same root as `.`, so relative paths resolve (wasmtime's `--dir`).
        ok(t.c.fd_prestat_get(&mut t.mem, 4, OUT)).unwrap();
        assert_eq!(&t.mem[OUT as usize..OUT as usize + 8], &[0, 0, 0, 0, 1, 0, 0, 0]);
        ok(t.c.fd_prestat_dir_name(&mut t.mem, 4, NAME, 1)).unwrap();
        assert_eq!(t.mem[NAME as usize], b'.');
        assert_eq!(ok(t.c.fd_prestat_get(&mut t.mem, 5, OUT)), Err(errno::BADF));
        assert_eq!(ok(t.c.fd_prestat_get(&mut t.mem, 1, OUT)), Err(errno::BADF));
        // A directory the program opens is not a preopen.
        let d = t.open(".", OFLAGS_DIRECTORY, 0).unwrap();
        assert_eq!(ok(t.c.fd_prestat_get(&mut t.mem, d, OUT)), Err(errno::BADF));
        ok(t.c.fd_fdstat_get(&mut t.mem, 3, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize], FILETYPE_DIRECTORY);
    }

    #[test]
    fn create_write_close_commits_and_reopen_reads_back() {
        let (mut t, area) = with_area(1 << 20);
        assert_eq!(t.open("runs", 0, RW), Err(errno::NOENT));
        let fd = t.open("runs", CREAT, RW).unwrap();
        assert_eq!(fd, 5);
        assert_eq!(area.get("runs"), Some(vec![])); // created at once
        assert_eq!(t.write(fd, b"hello "), Ok(6));
        assert_eq!(t.write(fd, b"world"), Ok(5));
        assert_eq!(area.get("runs"), Some(vec![])); // not yet committed
        t.close(fd).unwrap();
        assert_eq!(area.get("runs").as_deref(), Some(&b"hello world"[..]));
        assert_eq!(t.close(fd), Err(errno::BADF));
        let fd = t.open("runs", 0, RIGHT_FD_READ).unwrap();
        assert_eq!(t.read(fd, 5).unwrap(), b"hello");
        assert_eq!(t.read(fd, 100).unwrap(), b" world");
        assert_eq!(t.read(fd, 100).unwrap(), b"");
        // Read-only fd: no writes, no truncation; a clean close commits nothing.
        assert_eq!(t.write(fd, b"x"), Err(errno::BADF));
        assert_eq!(ok(t.c.fd_filestat_set_size(fd, 0)), Err(errno::BADF));
        let writes = area.0.lock().unwrap().writes;
        t.close(fd).unwrap();
        assert_eq!(area.0.lock().unwrap().writes, writes);
        // Write-only fd cannot read.
        let fd = t.open("runs", 0, RIGHT_FD_WRITE).unwrap();
        assert_eq!(t.read(fd, 1), Err(errno::BADF));
        t.close(fd).unwrap();
        assert_eq!(t.open("runs", CREAT | OFLAGS_EXCL, RW), Err(errno::EXIST));
        let fd = t.open("runs", OFLAGS_TRUNC, RW).unwrap();
        assert_eq!(t.read(fd, 10).unwrap(), b"");
        t.close(fd).unwrap();
        assert_eq!(area.get("runs"), Some(vec![]));
        assert_eq!(t.open("runs", OFLAGS_TRUNC, RIGHT_FD_READ), Err(errno::INVAL));
        assert_eq!(t.open("runs", OFLAGS_DIRECTORY, RW), Err(errno::NOTDIR));
        assert_eq!(t.open("nope", OFLAGS_DIRECTORY, RW), Err(errno::NOENT));
    }

    #[test]
    fn hostile_names_and_pointers_are_refused_without_side_effects() {
        let (mut t, area) = with_area(1 << 20);
        for (name, e) in [
            (&b".."[..], errno::NOTCAPABLE),
            (b"../x", errno::NOTCAPABLE),
            (b"a/b", errno::NOENT),
            (b"a/../../x", errno::NOENT),
            (b"/etc/passwd", errno::NOTCAPABLE),
            (b"", errno::NOENT),
            (&[b'n'; 65], errno::NAMETOOLONG),
            (b"a\nb", errno::INVAL),
            (b"\xc3", errno::ILSEQ),
        ] {
            let len = t.name(name);
            assert_eq!(ok(t.c.path_open(&mut t.mem, 3, NAME, len, CREAT, RW, 0, OUT)), Err(e), "{name:?}");
            assert_eq!(ok(t.c.path_filestat_get(&mut t.mem, 3, NAME, len, OUT)), Err(e), "{name:?}");
            assert_eq!(ok(t.c.path_unlink_file(&mut t.mem, 3, NAME, len)), Err(e), "{name:?}");
        }
        let len = t.name(b"x");
        let m = &mut t.mem;
        assert_eq!(ok(t.c.path_open(m, 3, SIZE as u32 - 1, 4, CREAT, RW, 0, OUT)), Err(errno::FAULT));
        assert_eq!(ok(t.c.path_open(m, 3, u32::MAX, u32::MAX, CREAT, RW, 0, OUT)), Err(errno::FAULT));
        assert_eq!(ok(t.c.path_open(m, 3, NAME, len, CREAT, RW, 0, SIZE as u32 - 3)), Err(errno::FAULT));
        assert_eq!(ok(t.c.path_open(m, 3, NAME, len, 0x100, RW, 0, OUT)), Err(errno::INVAL));
        assert_eq!(ok(t.c.path_open(m, 3, NAME, len, CREAT, RW, 0x8000, OUT)), Err(errno::INVAL));
        assert_eq!(ok(t.c.path_open(m, 1, NAME, len, CREAT, RW, 0, OUT)), Err(errno::NOTDIR));
        assert_eq!(ok(t.c.path_open(m, 99, NAME, len, CREAT, RW, 0, OUT)), Err(errno::BADF));
        assert_eq!(area.0.lock().unwrap().list().unwrap(), []);
        // Bad iovecs and result pointers on a file fault and change nothing.
        let fd = t.open("x", CREAT, RW).unwrap();
        write_u32(&mut t.mem, IOV, SIZE as u32 - 2).unwrap();
        write_u32(&mut t.mem, IOV + 4, 8).unwrap();
        assert_eq!(ok(t.c.fd_write(&mut t.mem, fd, IOV, 1, OUT)), Err(errno::FAULT));
        assert_eq!(ok(t.c.fd_read(&mut t.mem, fd, IOV, 1, OUT)), Err(errno::FAULT));
        assert_eq!(ok(t.c.fd_write(&mut t.mem, fd, IOV, 2000, OUT)), Err(errno::INVAL));
        t.iov(b"abc");
        assert_eq!(ok(t.c.fd_write(&mut t.mem, fd, IOV, 1, u32::MAX)), Err(errno::FAULT));
        assert_eq!(ok(t.c.fd_pwrite(&mut t.mem, fd, IOV, 1, 0, u32::MAX)), Err(errno::FAULT));
        let m = &mut t.mem;
        assert_eq!(ok(t.c.fd_filestat_get(m, fd, SIZE as u32 - 10)), Err(errno::FAULT));
        ok(t.c.fd_filestat_get(m, fd, OUT)).unwrap();
        assert_eq!(u64::from_le_bytes(m[OUT as usize + 32..OUT as usize + 40].try_into().unwrap()), 0);
    }

    #[test]
    fn seek_tell_pread_pwrite_and_sizes() {
        let (mut t, area) = with_area(1 << 20);
        let fd = t.open("f", CREAT, RW).unwrap();
        t.write(fd, b"0123456789").unwrap();
        let m = &mut t.mem;
        ok(t.c.fd_seek(m, fd, -4, 2, OUT)).unwrap();
        assert_eq!(read_u32(m, OUT), Ok(6));
        ok(t.c.fd_seek(m, fd, 1, 1, OUT)).unwrap();
        ok(t.c.fd_tell(m, fd, OUT)).unwrap();
        assert_eq!(read_u32(m, OUT), Ok(7));
        assert_eq!(ok(t.c.fd_seek(m, fd, -8, 1, OUT)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_seek(m, fd, 0, 3, OUT)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_seek(m, fd, i64::MAX, 2, OUT)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_seek(m, fd, 0, 0, SIZE as u32)), Err(errno::FAULT));
        assert_eq!(ok(t.c.fd_seek(m, 1, 0, 0, OUT)), Err(errno::SPIPE));
        assert_eq!(ok(t.c.fd_seek(m, 3, 0, 0, OUT)), Err(errno::ISDIR));
        assert_eq!(t.read(fd, 10).unwrap(), b"789");
        // pread/pwrite leave the position alone; a write past the end zero-fills.
        t.iov(b"AB");
        ok(t.c.fd_pwrite(&mut t.mem, fd, IOV, 1, 12, OUT)).unwrap();
        t.iov_len(20);
        ok(t.c.fd_pread(&mut t.mem, fd, IOV, 1, 8, OUT)).unwrap();
        assert_eq!(t.out_u32(), 6);
        assert_eq!(&t.mem[DATA as usize..DATA as usize + 6], b"89\0\0AB");
        ok(t.c.fd_pread(&mut t.mem, fd, IOV, 1, u64::MAX, OUT)).unwrap();
        assert_eq!(t.out_u32(), 0);
        assert_eq!(ok(t.c.fd_pwrite(&mut t.mem, fd, IOV, 1, u64::MAX - 1, OUT)), Err(errno::FBIG));
        ok(t.c.fd_tell(&mut t.mem, fd, OUT)).unwrap();
        assert_eq!(t.out_u32(), 10);
        assert_eq!(ok(t.c.fd_pread(&mut t.mem, 1, IOV, 1, 0, OUT)), Err(errno::SPIPE));
        assert_eq!(ok(t.c.fd_pread(&mut t.mem, 3, IOV, 1, 0, OUT)), Err(errno::ISDIR));
        // Sizes: filestat, set_size both ways, path_filestat of an open file.
        ok(t.c.fd_filestat_set_size(fd, 3)).unwrap();
        let len = t.name(b"f");
        ok(t.c.path_filestat_get(&mut t.mem, 3, NAME, len, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize + 16], FILETYPE_REGULAR_FILE);
        assert_eq!(u64::from_le_bytes(t.mem[OUT as usize + 32..OUT as usize + 40].try_into().unwrap()), 3);
        ok(t.c.fd_filestat_set_size(fd, 5)).unwrap();
        ok(t.c.fd_sync(fd)).unwrap();
        assert_eq!(area.get("f").as_deref(), Some(&b"012\0\0"[..]));
        assert_eq!(ok(t.c.fd_sync(1)), Err(errno::INVAL));
        ok(t.c.fd_sync(3)).unwrap();
        // APPEND writes at the end whatever the position.
        let a = t.open_with("f", 0, RW, u32::from(FDFLAGS_APPEND)).unwrap();
        t.write(a, b"!").unwrap();
        ok(t.c.fd_fdstat_get(&mut t.mem, a, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize], FILETYPE_REGULAR_FILE);
        assert_eq!(t.mem[OUT as usize + 2], FDFLAGS_APPEND as u8);
        t.close(a).unwrap();
        // Both fds shared the file: the first sees the append.
        t.iov_len(20);
        ok(t.c.fd_pread(&mut t.mem, fd, IOV, 1, 0, OUT)).unwrap();
        assert_eq!(t.out_u32(), 6);
        t.close(fd).unwrap();
        assert_eq!(area.get("f").as_deref(), Some(&b"012\0\0!"[..]));
    }

    #[test]
    fn quota_file_count_and_fd_limits() {
        let (mut t, area) = with_area(1000);
        let a = t.open("a", CREAT, RW).unwrap();
        assert_eq!(t.write(a, &[1; 600]), Ok(600));
        t.close(a).unwrap();
        let b = t.open("b", CREAT, RW).unwrap();
        assert_eq!(t.write(b, &[2; 400]), Ok(400));
        assert_eq!(t.write(b, &[2; 1]), Err(errno::NOSPC));
        assert_eq!(ok(t.c.fd_filestat_set_size(b, 401)), Err(errno::NOSPC));
        ok(t.c.fd_filestat_set_size(b, 100)).unwrap();
        ok(t.c.fd_seek(&mut t.mem, b, 0, 2, OUT)).unwrap();
        assert_eq!(t.write(b, &[3; 300]), Ok(300));
        t.close(b).unwrap();
        // Truncating frees room; unlinking frees room.
        let len = t.name(b"a");
        ok(t.c.path_unlink_file(&mut t.mem, 3, NAME, len)).unwrap();
        assert_eq!(ok(t.c.path_unlink_file(&mut t.mem, 3, NAME, len)), Err(errno::NOENT));
        let c = t.open("c", CREAT, RW).unwrap();
        assert_eq!(t.write(c, &[4; 600]), Ok(600));
        assert_eq!(t.write(c, &[4; 1]), Err(errno::NOSPC));
        t.close(c).unwrap();
        assert_eq!(area.get("c").map(|v| v.len()), Some(600));
        // 64 files at most.
        let (mut t, _) = with_area(1 << 20);
        for i in 0..MAX_FILES {
            let fd = t.open(&std::format!("f{i}"), CREAT, RW).unwrap();
            t.close(fd).unwrap();
        }
        assert_eq!(t.open("one-more", CREAT, RW), Err(errno::NOSPC));
        // 16 open fds at most; a refused open creates nothing.
        let fds: Vec<u32> = (0..MAX_OPEN_FDS).map(|i| t.open(&std::format!("f{i}"), 0, RW).unwrap()).collect();
        assert_eq!(t.open("f20", 0, RW), Err(errno::MFILE));
        assert_eq!(t.open(".", OFLAGS_DIRECTORY, 0), Err(errno::MFILE));
        t.close(fds[3]).unwrap();
        assert_eq!(t.open("f20", 0, RW), Ok(fds[3])); // lowest free fd again
    }

    #[test]
    fn unlink_while_open_keeps_data_until_close_and_commit_failures_surface() {
        let (mut t, area) = with_area(1 << 20);
        let fd = t.open("tmp", CREAT, RW).unwrap();
        t.write(fd, b"scratch").unwrap();
        let len = t.name(b"tmp");
        ok(t.c.path_unlink_file(&mut t.mem, 3, NAME, len)).unwrap();
        assert_eq!(area.get("tmp"), None);
        assert_eq!(ok(t.c.path_filestat_get(&mut t.mem, 3, NAME, len, OUT)), Err(errno::NOENT));
        assert_eq!(ok(t.c.fd_pread(&mut t.mem, fd, IOV, 1, 0, OUT)), Ok(()));
        ok(t.c.fd_filestat_get(&mut t.mem, fd, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize + 24], 0); // nlink
        t.close(fd).unwrap();
        assert_eq!(area.get("tmp"), None);
        // A new file of the same name is a new file.
        let fd = t.open("tmp", CREAT | OFLAGS_EXCL, RW).unwrap();
        t.write(fd, b"x").unwrap();
        area.0.lock().unwrap().fail = Some(FileAreaError::NoSpace);
        assert_eq!(ok(t.c.fd_sync(fd)), Err(errno::NOSPC));
        area.0.lock().unwrap().fail = Some(FileAreaError::Io);
        assert_eq!(t.close(fd), Err(errno::IO));
        assert_eq!(t.close(fd), Err(errno::BADF));
        assert_eq!(t.open("new", CREAT, RW), Err(errno::IO));
        let len = t.name(b"tmp");
        assert_eq!(ok(t.c.path_unlink_file(&mut t.mem, 3, NAME, len)), Err(errno::IO));
        area.0.lock().unwrap().fail = None;
        assert_eq!(area.get("tmp"), Some(vec![]));
    }

    /// Issue 10 item 3: `usage - old + len` with a guest `len` near `u64::MAX` wrapped
    /// below the quota and `resize` panicked. Now no sum wraps: `EFBIG` above
    /// [`MAX_FILE_BYTES`], `ENOSPC` over the quota.
    #[test]
    fn quota_sum_overflow_is_fbig_not_a_wrap() {
        let (mut t, area) = with_area(1000);
        let a = t.open("a", CREAT, RW).unwrap();
        assert_eq!(t.write(a, &[1; 600]), Ok(600));
        t.close(a).unwrap();
        let b = t.open("b", CREAT, RW).unwrap();
        assert_eq!(t.write(b, &[2; 10]), Ok(10));
        // others (600) + len wraps to 499 <= quota without checked arithmetic.
        assert_eq!(ok(t.c.fd_filestat_set_size(b, u64::MAX - 100)), Err(errno::FBIG));
        assert_eq!(ok(t.c.fd_filestat_set_size(b, u64::MAX)), Err(errno::FBIG));
        // The same through fd_pwrite's offset, and fd_seek + fd_write.
        t.iov(b"xy");
        assert_eq!(ok(t.c.fd_pwrite(&mut t.mem, b, IOV, 1, u64::MAX - 300, OUT)), Err(errno::FBIG));
        assert_eq!(ok(t.c.fd_pwrite(&mut t.mem, b, IOV, 1, u64::MAX - 1, OUT)), Err(errno::FBIG));
        assert_eq!(ok(t.c.fd_pwrite(&mut t.mem, b, IOV, 1, 1 << 40, OUT)), Err(errno::NOSPC));
        ok(t.c.fd_seek(&mut t.mem, b, i64::MAX, 0, OUT)).unwrap();
        assert_eq!(t.write(b, b"z"), Err(errno::FBIG));
        ok(t.c.fd_seek(&mut t.mem, b, i64::MAX - 1, 0, OUT)).unwrap();
        assert_eq!(t.write(b, b"z"), Err(errno::NOSPC));
        // Nothing changed: size 10, quota still usable up to 1000.
        ok(t.c.fd_filestat_get(&mut t.mem, b, OUT)).unwrap();
        assert_eq!(u64::from_le_bytes(t.mem[OUT as usize + 32..OUT as usize + 40].try_into().unwrap()), 10);
        ok(t.c.fd_filestat_set_size(b, 400)).unwrap();
        assert_eq!(ok(t.c.fd_filestat_set_size(b, 401)), Err(errno::NOSPC));
        t.close(b).unwrap();
        assert_eq!(area.get("b").map(|v| v.len()), Some(400));
    }

    /// Growth the heap cannot hold is `ENOMEM` for the program, not an abort of the node.
    #[test]
    fn growth_past_the_heap_is_enomem() {
        let (mut t, _) = with_area(u64::MAX);
        let f = t.open("f", CREAT, RW).unwrap();
        assert_eq!(ok(t.c.fd_filestat_set_size(f, 1 << 62)), Err(errno::NOMEM));
        assert_eq!(ok(t.c.fd_filestat_set_size(f, u64::MAX)), Err(errno::FBIG));
        ok(t.c.fd_filestat_set_size(f, 3)).unwrap();
        assert_eq!(t.read(f, 10).unwrap(), [0, 0, 0]);
    }

    /// The iovec bomb on a file: 1024 iovecs of 128 KiB is a 128 MiB request; it is a
    /// short write of [`super::super::MAX_IO_BYTES`] that fits the 64 MiB quota.
    #[test]
    fn iovec_bomb_on_a_file_is_a_short_write() {
        let (mut t, area) = with_area(64 << 20);
        let f = t.open("f", CREAT, RW).unwrap();
        super::super::net::test::bomb_iovecs(&mut t.mem, 1024, DATA, 128 << 10);
        ok(t.c.fd_pwrite(&mut t.mem, f, IOV, 1024, 0, OUT)).unwrap();
        assert_eq!(t.out_u32(), super::super::MAX_IO_BYTES as u32);
        ok(t.c.fd_write(&mut t.mem, f, IOV, 1024, OUT)).unwrap();
        assert_eq!(t.out_u32(), super::super::MAX_IO_BYTES as u32);
        t.close(f).unwrap();
        assert_eq!(area.get("f").map(|v| v.len()), Some(super::super::MAX_IO_BYTES));
    }

    /// A forged committed size (the kernel's record of a file on disk) near `u64::MAX`
    /// saturates the usage sum: growth is refused, nothing wraps.
    #[test]
    fn forged_committed_sizes_saturate() {
        struct Forged;
        impl FileArea for Forged {
            fn read(&mut self, _: &str) -> Result<Option<Vec<u8>>, FileAreaError> {
                Ok(Some(Vec::new()))
            }
            fn write(&mut self, _: &str, _: &[u8]) -> Result<(), FileAreaError> {
                Ok(())
            }
            fn remove(&mut self, _: &str) -> Result<bool, FileAreaError> {
                Ok(true)
            }
            fn list(&mut self) -> Result<Vec<(String, u64)>, FileAreaError> {
                Ok(vec![("a".into(), u64::MAX), ("b".into(), u64::MAX - 5), ("c".into(), 0)])
            }
            fn rename(&mut self, _: &[(String, String)]) -> Result<(), FileAreaError> {
                Ok(())
            }
        }
        let mut t = T::new();
        t.c.attach_files(Box::new(Forged), 1 << 20);
        let c = t.open("c", 0, RW).unwrap();
        assert_eq!(t.write(c, b"x"), Err(errno::NOSPC));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::test_cases(64)))]
        /// Random sizes, offsets and seeks against a small quota: no panic, only the
        /// errnos wasmtime's WASI gives for these, and the quota always holds.
        #[test]
        fn sizes_offsets_and_seeks_never_wrap(ops in proptest::collection::vec((0u8..4, proptest::prelude::any::<u64>(), 0u32..64), 1..24)) {
            const QUOTA: u64 = 4096;
            let (mut t, _) = with_area(QUOTA);
            let f = t.open("f", CREAT, RW).unwrap();
            let g = t.open("g", CREAT, RW).unwrap();
            let mut model = [0u64; 2];
            for (op, n, len) in ops {
                let (fd, other) = if n & 1 == 0 { (f, 1) } else { (g, 0) };
                let me = 1 - other;
                // Sizes near the edges where sums wrap or offsets stop: the top of u64,
                // around i64::MAX, small ones, and any.
                let n = match (n >> 1) & 3 {
                    0 => u64::MAX - (n >> 3) % 8192,
                    1 => (i64::MAX as u64 - 4096).wrapping_add((n >> 3) % 8192),
                    2 => (n >> 3) % 8192,
                    _ => n,
                };
                match op {
                    0 => match ok(t.c.fd_filestat_set_size(fd, n)) {
                        Ok(()) => model[me] = n,
                        Err(e) => {
                            proptest::prop_assert!(e == errno::NOSPC || e == errno::FBIG, "set_size {n}: {e}");
                            proptest::prop_assert!(n.checked_add(model[other]).is_none_or(|s| s > QUOTA));
                        }
                    },
                    1 => {
                        t.iov_len(len);
                        match ok(t.c.fd_pwrite(&mut t.mem, fd, IOV, 1, n, OUT)) {
                            Ok(()) => {
                                proptest::prop_assert_eq!(t.out_u32(), len);
                                if len > 0 {
                                    model[me] = model[me].max(n + u64::from(len));
                                }
                            }
                            Err(e) => proptest::prop_assert!(e == errno::NOSPC || e == errno::FBIG, "pwrite {n}: {e}"),
                        }
                    }
                    2 => match ok(t.c.fd_seek(&mut t.mem, fd, n as i64, u32::from(len as u8 % 3), OUT)) {
                        Ok(()) => {
                            let pos = u64::from_le_bytes(t.mem[OUT as usize..OUT as usize + 8].try_into().unwrap());
                            proptest::prop_assert!(pos <= i64::MAX as u64);
                            if (len as u8).is_multiple_of(3) {
                                proptest::prop_assert_eq!(pos, n);
                            }
                        }
                        Err(e) => proptest::prop_assert_eq!(e, errno::INVAL),
                    },
                    _ => {
                        t.iov_len(len);
                        match ok(t.c.fd_write(&mut t.mem, fd, IOV, 1, OUT)) {
                            Ok(()) => proptest::prop_assert_eq!(t.out_u32(), len),
                            Err(e) => proptest::prop_assert!(e == errno::NOSPC || e == errno::FBIG, "write: {e}"),
                        }
                        ok(t.c.fd_filestat_get(&mut t.mem, fd, OUT)).unwrap();
                        model[me] = u64::from_le_bytes(t.mem[OUT as usize + 32..OUT as usize + 40].try_into().unwrap());
                    }
                }
                for (i, fd) in [f, g].into_iter().enumerate() {
                    ok(t.c.fd_filestat_get(&mut t.mem, fd, OUT)).unwrap();
                    let size = u64::from_le_bytes(t.mem[OUT as usize + 32..OUT as usize + 40].try_into().unwrap());
                    proptest::prop_assert_eq!(size, model[i]);
                }
                proptest::prop_assert!(model[0] + model[1] <= QUOTA);
            }
        }
    }

    /// Parses a readdir buffer into (next cookie, ino, type, name).
    fn dirents(buf: &[u8]) -> Vec<(u64, u64, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + DIRENT_HEADER_BYTES <= buf.len() {
            let next = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
            let ino = u64::from_le_bytes(buf[at + 8..at + 16].try_into().unwrap());
            let len = u32::from_le_bytes(buf[at + 16..at + 20].try_into().unwrap()) as usize;
            let end = (at + DIRENT_HEADER_BYTES + len).min(buf.len());
            out.push((next, ino, buf[at + 20], buf[at + DIRENT_HEADER_BYTES..end].to_vec()));
            at = end;
        }
        out
    }

    #[test]
    fn readdir_lists_dots_then_sorted_names_with_cookies() {
        let (mut t, _) = with_area(1 << 20);
        for name in ["zeta", "alpha", "mid"] {
            let fd = t.open(name, CREAT, RW).unwrap();
            t.close(fd).unwrap();
        }
        let d = t.open(".", OFLAGS_DIRECTORY, RIGHT_FD_READDIR).unwrap();
        let m = &mut t.mem;
        ok(t.c.fd_readdir(m, d, DATA, 4096, 0, OUT)).unwrap();
        let used = read_u32(m, OUT).unwrap() as usize;
        assert_eq!(used, 5 * DIRENT_HEADER_BYTES + 1 + 2 + 5 + 3 + 4);
        let e = dirents(&m[DATA as usize..DATA as usize + used]);
        let names: Vec<&[u8]> = e.iter().map(|x| x.3.as_slice()).collect();
        assert_eq!(names, [&b"."[..], b"..", b"alpha", b"mid", b"zeta"]);
        assert_eq!(e.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert!(e.iter().all(|x| x.1 != 0));
        assert_eq!((e[0].2, e[2].2), (FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE));
        assert_eq!(e[2].1, ino("alpha"));
        // Resume from a cookie; a cookie past the end gives nothing.
        ok(t.c.fd_readdir(m, d, DATA, 4096, 3, OUT)).unwrap();
        let used = read_u32(m, OUT).unwrap() as usize;
        assert_eq!(dirents(&m[DATA as usize..DATA as usize + used]).iter().map(|x| x.3.clone()).collect::<Vec<_>>(), [b"mid".to_vec(), b"zeta".to_vec()]);
        ok(t.c.fd_readdir(m, d, DATA, 4096, 99, OUT)).unwrap();
        assert_eq!(read_u32(m, OUT), Ok(0));
        ok(t.c.fd_readdir(m, d, DATA, 4096, u64::MAX, OUT)).unwrap();
        assert_eq!(read_u32(m, OUT), Ok(0));
        // A small buffer is filled to the brim (cut mid-entry), telling the caller to go on.
        m[DATA as usize + 30..DATA as usize + 40].fill(0xee);
        ok(t.c.fd_readdir(m, d, DATA, 30, 0, OUT)).unwrap();
        assert_eq!(read_u32(m, OUT), Ok(30));
        assert_eq!(m[DATA as usize + 30], 0xee);
        ok(t.c.fd_readdir(m, d, DATA, 0, 0, OUT)).unwrap();
        assert_eq!(read_u32(m, OUT), Ok(0));
        // Bad buffers, not a directory.
        assert_eq!(ok(t.c.fd_readdir(m, d, SIZE as u32 - 8, 30, 0, OUT)), Err(errno::FAULT));
        assert_eq!(ok(t.c.fd_readdir(m, d, DATA, 30, 0, SIZE as u32)), Err(errno::FAULT));
        assert_eq!(ok(t.c.fd_readdir(m, 1, DATA, 30, 0, OUT)), Err(errno::NOTDIR));
        // The preopen itself can be listed too; "." stats as a directory.
        ok(t.c.fd_readdir(m, 3, DATA, 4096, 0, OUT)).unwrap();
        let len = t.name(b".");
        ok(t.c.path_filestat_get(&mut t.mem, 3, NAME, len, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize + 16], FILETYPE_DIRECTORY);
        assert_eq!(t.read(d, 10), Err(errno::ISDIR));
        assert_eq!(t.write(d, b"x"), Err(errno::BADF));
        t.close(d).unwrap();
        assert_eq!(t.open(".", CREAT | OFLAGS_EXCL, 0), Err(errno::EXIST));
        assert_eq!(t.open(".", OFLAGS_TRUNC, RW), Err(errno::ISDIR));
    }
}

/// The directory tree and the calls added for issue 17, against wasmtime's answers.
#[cfg(test)]
mod tree_test {
    use super::super::testmem::{ok, T, DATA, NAME, OUT, SIZE};
    use super::super::{errno, Stop, WasiCtx};
    use super::*;
    use super::test::Shared;

    const RW: u64 = RIGHT_FD_READ | RIGHT_FD_WRITE;
    const NAME2: u32 = NAME + 1024;
    const ROOT: u32 = 3;
    const DOT: u32 = 4;

    impl Shared {
        fn names(&self) -> Vec<String> {
            let mut v: Vec<String> = self.0.lock().unwrap().list().unwrap().into_iter().map(|(n, _)| n).collect();
            v.sort();
            v
        }
        fn fail(&self, e: Option<FileAreaError>) {
            self.0.lock().unwrap().fail = e;
        }
    }

    fn with_area(area: &Shared, quota: u64) -> T {
        let mut t = T::new();
        t.c.attach_files(Box::new(area.clone()), quota);
        t
    }

    fn path2(t: &mut T, b: &str) -> u32 {
        t.mem[NAME2 as usize..NAME2 as usize + b.len()].copy_from_slice(b.as_bytes());
        b.len() as u32
    }

    fn mkdir(t: &mut T, fd: u32, p: &str) -> Result<(), u32> {
        let len = t.name(p.as_bytes());
        ok(t.c.path_create_directory(&mut t.mem, fd, NAME, len))
    }

    fn rmdir(t: &mut T, fd: u32, p: &str) -> Result<(), u32> {
        let len = t.name(p.as_bytes());
        ok(t.c.path_remove_directory(&mut t.mem, fd, NAME, len))
    }

    fn unlink(t: &mut T, fd: u32, p: &str) -> Result<(), u32> {
        let len = t.name(p.as_bytes());
        ok(t.c.path_unlink_file(&mut t.mem, fd, NAME, len))
    }

    fn rename(t: &mut T, fd: u32, a: &str, nfd: u32, b: &str) -> Result<(), u32> {
        let la = t.name(a.as_bytes());
        let lb = path2(t, b);
        ok(t.c.path_rename(&mut t.mem, fd, NAME, la, nfd, NAME2, lb))
    }

    fn open_at(t: &mut T, fd: u32, p: &str, oflags: u32, rights: u64) -> Result<u32, u32> {
        let len = t.name(p.as_bytes());
        ok(t.c.path_open(&mut t.mem, fd, NAME, len, oflags, rights, 0, OUT))?;
        Ok(t.out_u32())
    }

    fn filetype(t: &mut T, fd: u32, p: &str) -> Result<u8, u32> {
        let len = t.name(p.as_bytes());
        ok(t.c.path_filestat_get(&mut t.mem, fd, NAME, len, OUT))?;
        Ok(t.mem[OUT as usize + 16])
    }

    /// Entry names of directory fd `fd` from `cookie`, read `buf_len` bytes at a time
    /// (each call resuming at the last whole entry's cookie), with their `d_next`.
    fn readdir(t: &mut T, fd: u32, mut cookie: u64, buf_len: u32) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for _ in 0..100 {
            ok(t.c.fd_readdir(&mut t.mem, fd, DATA, buf_len, cookie, OUT)).unwrap();
            let used = t.out_u32() as usize;
            let buf = t.mem[DATA as usize..DATA as usize + used].to_vec();
            let mut at = 0;
            let mut whole = 0;
            while at + DIRENT_HEADER_BYTES <= buf.len() {
                let next = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
                let len = u32::from_le_bytes(buf[at + 16..at + 20].try_into().unwrap()) as usize;
                if at + DIRENT_HEADER_BYTES + len > buf.len() {
                    break;
                }
                let name = String::from_utf8(buf[at + DIRENT_HEADER_BYTES..at + DIRENT_HEADER_BYTES + len].to_vec()).unwrap();
                out.push((next, name));
                cookie = next;
                whole += 1;
                at += DIRENT_HEADER_BYTES + len;
            }
            if used < buf_len as usize {
                return out;
            }
            assert!(whole > 0, "buffer too small for one entry");
        }
        panic!("readdir did not end");
    }

    fn ls(t: &mut T, p: &str) -> Vec<String> {
        let d = open_at(t, ROOT, p, OFLAGS_DIRECTORY, 0).unwrap();
        let names = readdir(t, d, 0, 4096).into_iter().map(|(_, n)| n).collect();
        t.close(d).unwrap();
        names
    }

    fn write_file(t: &mut T, fd: u32, p: &str, bytes: &[u8]) {
        let f = open_at(t, fd, p, OFLAGS_CREAT | OFLAGS_TRUNC, RW).unwrap();
        assert_eq!(t.write(f, bytes), Ok(bytes.len() as u32));
        t.close(f).unwrap();
    }

    fn read_file(t: &mut T, fd: u32, p: &str) -> Result<Vec<u8>, u32> {
        let f = open_at(t, fd, p, 0, RIGHT_FD_READ)?;
        let data = t.read(f, 4096);
        t.close(f).unwrap();
        data
    }

    #[test]
    fn nested_directories_list_stat_and_remove() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        mkdir(&mut t, ROOT, "a").unwrap();
        mkdir(&mut t, ROOT, "a/b").unwrap();
        assert_eq!(mkdir(&mut t, ROOT, "a"), Err(errno::EXIST));
        assert_eq!(mkdir(&mut t, ROOT, "."), Err(errno::EXIST));
        assert_eq!(mkdir(&mut t, ROOT, "x/y"), Err(errno::NOENT));
        mkdir(&mut t, ROOT, "a/c/").unwrap(); // a trailing slash is fine for mkdir
        write_file(&mut t, ROOT, "a/b/f", b"deep");
        assert_eq!(mkdir(&mut t, ROOT, "a/b/f"), Err(errno::EXIST));
        assert_eq!(mkdir(&mut t, ROOT, "a/b/f/g"), Err(errno::NOTDIR));
        assert_eq!(area.names(), ["a/", "a/b/", "a/b/f", "a/c/"]);
        assert_eq!(area.get("a/b/f").as_deref(), Some(&b"deep"[..]));
        assert_eq!(ls(&mut t, "."), [".", "..", "a"]);
        assert_eq!(ls(&mut t, "a"), [".", "..", "b", "c"]);
        assert_eq!(ls(&mut t, "a/b/"), [".", "..", "f"]);
        assert_eq!(filetype(&mut t, ROOT, "a/b"), Ok(FILETYPE_DIRECTORY));
        assert_eq!(filetype(&mut t, ROOT, "a/b/f"), Ok(FILETYPE_REGULAR_FILE));
        assert_eq!(filetype(&mut t, ROOT, "a/b/f/"), Err(errno::NOTDIR));
        assert_eq!(filetype(&mut t, ROOT, "a/nope"), Err(errno::NOENT));
        assert_eq!(open_at(&mut t, ROOT, "a/b/f", OFLAGS_DIRECTORY, 0), Err(errno::NOTDIR));
        assert_eq!(open_at(&mut t, ROOT, "a/b", OFLAGS_CREAT | OFLAGS_TRUNC, RW), Err(errno::ISDIR));
        assert_eq!(open_at(&mut t, ROOT, "a/new/", OFLAGS_CREAT, RW), Err(errno::ISDIR));
        // A directory fd is a base for relative paths.
        let b = open_at(&mut t, ROOT, "a/b", OFLAGS_DIRECTORY, 0).unwrap();
        assert_eq!(read_file(&mut t, b, "f"), Ok(b"deep".to_vec()));
        assert_eq!(read_file(&mut t, b, "../b/./f"), Ok(b"deep".to_vec()));
        ok(t.c.fd_filestat_get(&mut t.mem, b, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize + 16], FILETYPE_DIRECTORY);
        // Removal: only empty directories, only files by unlink.
        assert_eq!(rmdir(&mut t, ROOT, "a"), Err(errno::NOTEMPTY));
        assert_eq!(rmdir(&mut t, ROOT, "a/b/f"), Err(errno::NOTDIR));
        assert_eq!(rmdir(&mut t, ROOT, "a/zz"), Err(errno::NOENT));
        assert_eq!(rmdir(&mut t, ROOT, "."), Err(errno::BUSY));
        assert_eq!(unlink(&mut t, ROOT, "a/b"), Err(errno::ISDIR));
        assert_eq!(unlink(&mut t, ROOT, "a/b/f/"), Err(errno::NOTDIR));
        unlink(&mut t, b, "f").unwrap();
        rmdir(&mut t, ROOT, "a/b").unwrap();
        // The fd on the removed directory resolves nothing any more.
        assert_eq!(open_at(&mut t, b, "g", OFLAGS_CREAT, RW), Err(errno::NOENT));
        assert_eq!(ok(t.c.fd_readdir(&mut t.mem, b, DATA, 256, 0, OUT)), Err(errno::NOENT));
        rmdir(&mut t, ROOT, "a/c").unwrap();
        rmdir(&mut t, ROOT, "a").unwrap();
        assert_eq!(area.names(), Vec::<String>::new());
    }

    #[test]
    fn paths_that_leave_the_area_are_refused() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        mkdir(&mut t, ROOT, "a").unwrap();
        let a = open_at(&mut t, ROOT, "a", OFLAGS_DIRECTORY, 0).unwrap();
        for (fd, p) in [(ROOT, ".."), (ROOT, "../data/x"), (ROOT, "a/../../x"), (a, "../../x"), (DOT, "./.."), (a, "../a/../..")] {
            assert_eq!(open_at(&mut t, fd, p, OFLAGS_CREAT, RW), Err(errno::NOTCAPABLE), "{p}");
            assert_eq!(mkdir(&mut t, fd, p), Err(errno::NOTCAPABLE), "{p}");
            assert_eq!(rename(&mut t, ROOT, "a", fd, p), Err(errno::NOTCAPABLE), "{p}");
        }
        for p in ["/data/x", "/x", "//"] {
            assert_eq!(open_at(&mut t, ROOT, p, OFLAGS_CREAT, RW), Err(errno::NOTCAPABLE), "{p}");
        }
        // `..` that stays inside is fine, from either preopen and from a.
        write_file(&mut t, a, "../top", b"1");
        assert_eq!(read_file(&mut t, DOT, "a/../top"), Ok(b"1".to_vec()));
        assert_eq!(area.names(), ["a/", "top"]);
        // Full paths are at most MAX_NAME_BYTES; a directory's one byte less.
        let long = "d".repeat(MAX_DIR_PATH_BYTES);
        mkdir(&mut t, ROOT, &long).unwrap();
        assert_eq!(mkdir(&mut t, ROOT, &(long.clone() + "e")), Err(errno::NAMETOOLONG));
        assert_eq!(open_at(&mut t, ROOT, &alloc::format!("a/{}", "f".repeat(63)), OFLAGS_CREAT, RW), Err(errno::NAMETOOLONG));
        open_at(&mut t, ROOT, &alloc::format!("a/{}", "f".repeat(62)), OFLAGS_CREAT, RW).unwrap();
    }

    #[test]
    fn rename_files_and_trees_atomically_with_open_fds_following() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        mkdir(&mut t, ROOT, "a").unwrap();
        mkdir(&mut t, ROOT, "a/b").unwrap();
        write_file(&mut t, ROOT, "a/b/f", b"one");
        write_file(&mut t, ROOT, "g", b"two");
        let writes = area.0.lock().unwrap().writes;
        // File onto file replaces it; no data is rewritten (the area moves the name).
        rename(&mut t, ROOT, "g", DOT, "a/g").unwrap();
        rename(&mut t, ROOT, "a/g", ROOT, "a/b/f").unwrap();
        assert_eq!(area.0.lock().unwrap().writes, writes);
        assert_eq!(area.names(), ["a/", "a/b/", "a/b/f"]);
        assert_eq!(area.get("a/b/f").as_deref(), Some(&b"two"[..]));
        assert_eq!(rename(&mut t, ROOT, "a/b/f", ROOT, "a/b/f"), Ok(()));
        // Errors, each leaving the tree as it was.
        mkdir(&mut t, ROOT, "e").unwrap();
        assert_eq!(rename(&mut t, ROOT, "nope", ROOT, "x"), Err(errno::NOENT));
        assert_eq!(rename(&mut t, ROOT, "a/b/f", ROOT, "e"), Err(errno::ISDIR));
        assert_eq!(rename(&mut t, ROOT, "a/b/f", ROOT, "x/"), Err(errno::NOTDIR));
        assert_eq!(rename(&mut t, ROOT, "e", ROOT, "a/b/f"), Err(errno::NOTDIR));
        assert_eq!(rename(&mut t, ROOT, "e", ROOT, "a"), Err(errno::NOTEMPTY));
        assert_eq!(rename(&mut t, ROOT, "a", ROOT, "a/b/c"), Err(errno::INVAL));
        assert_eq!(rename(&mut t, ROOT, ".", ROOT, "z"), Err(errno::BUSY));
        assert_eq!(rename(&mut t, ROOT, "a", ROOT, &"n".repeat(62)), Err(errno::NAMETOOLONG));
        assert_eq!(area.names(), ["a/", "a/b/", "a/b/f", "e/"]);
        // A whole tree moves in one step, onto an empty directory; open fds follow.
        let f = open_at(&mut t, ROOT, "a/b/f", 0, RW).unwrap();
        let b = open_at(&mut t, ROOT, "a/b", OFLAGS_DIRECTORY, 0).unwrap();
        rename(&mut t, ROOT, "a", ROOT, "e").unwrap();
        assert_eq!(area.names(), ["e/", "e/b/", "e/b/f"]);
        assert_eq!(t.write(f, b"TWO"), Ok(3));
        t.close(f).unwrap();
        assert_eq!(area.get("e/b/f").as_deref(), Some(&b"TWO"[..]));
        assert_eq!(read_file(&mut t, b, "f"), Ok(b"TWO".to_vec()));
        // The area failing mid-call changes nothing: both names stay as they were.
        area.fail(Some(FileAreaError::Io));
        assert_eq!(rename(&mut t, ROOT, "e", ROOT, "k"), Err(errno::IO));
        area.fail(None);
        assert_eq!(area.names(), ["e/", "e/b/", "e/b/f"]);
        assert_eq!(ls(&mut t, "e/b"), [".", "..", "f"]);
        // Replacing a file that is open unlinks it for that fd (its data is not committed).
        write_file(&mut t, ROOT, "x", b"x");
        let x = open_at(&mut t, ROOT, "x", 0, RW).unwrap();
        rename(&mut t, ROOT, "e/b/f", ROOT, "x").unwrap();
        assert_eq!(t.write(x, b"lost"), Ok(4));
        t.close(x).unwrap();
        assert_eq!(area.get("x").as_deref(), Some(&b"TWO"[..]));
    }

    #[test]
    fn directories_count_against_the_name_limit_and_files_the_quota() {
        let area = Shared::default();
        let mut t = with_area(&area, 100);
        for i in 0..MAX_FILES {
            mkdir(&mut t, ROOT, &alloc::format!("d{i}")).unwrap();
        }
        assert_eq!(mkdir(&mut t, ROOT, "more"), Err(errno::NOSPC));
        assert_eq!(open_at(&mut t, ROOT, "d0/f", OFLAGS_CREAT, RW), Err(errno::NOSPC));
        rmdir(&mut t, ROOT, "d1").unwrap();
        let f = open_at(&mut t, ROOT, "d0/f", OFLAGS_CREAT, RW).unwrap();
        // Quota reached mid-tree: a write past 100 bytes is refused, nothing changes.
        assert_eq!(t.write(f, &[1; 100]), Ok(100));
        assert_eq!(t.write(f, b"x"), Err(errno::NOSPC));
        t.close(f).unwrap();
        assert_eq!(area.get("d0/f").map(|d| d.len()), Some(100));
    }

    #[test]
    fn readdir_cookies_resume_exactly_with_small_buffers() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        mkdir(&mut t, ROOT, "d").unwrap();
        for i in 0..20 {
            write_file(&mut t, ROOT, &alloc::format!("d/file{i:02}"), b"");
        }
        mkdir(&mut t, ROOT, "d/sub").unwrap();
        let d = open_at(&mut t, ROOT, "d", OFLAGS_DIRECTORY, 0).unwrap();
        let whole = readdir(&mut t, d, 0, 4096);
        assert_eq!(whole.len(), 23);
        assert_eq!(whole.iter().map(|(c, _)| *c).collect::<Vec<_>>(), (1..=23).collect::<Vec<u64>>());
        for buf_len in [40, 64, 100] {
            assert_eq!(readdir(&mut t, d, 0, buf_len), whole, "buffer {buf_len}");
        }
        // Resuming from any cookie gives the rest, the same on every call.
        assert_eq!(readdir(&mut t, d, 10, 4096), whole[10..].to_vec());
        assert_eq!(readdir(&mut t, d, 10, 4096), whole[10..].to_vec());
        assert_eq!(readdir(&mut t, d, 23, 4096), Vec::new());
        assert_eq!(readdir(&mut t, d, u64::MAX, 4096), Vec::new());
    }

    #[test]
    fn a_second_run_on_the_same_area_sees_the_tree() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        mkdir(&mut t, DOT, "run").unwrap();
        write_file(&mut t, DOT, "run/out", b"first");
        rename(&mut t, DOT, "run", DOT, "done").unwrap();
        let mut t = with_area(&area, 1 << 20);
        assert_eq!(ls(&mut t, "."), [".", "..", "done"]);
        assert_eq!(read_file(&mut t, ROOT, "done/out"), Ok(b"first".to_vec()));
        assert_eq!(mkdir(&mut t, DOT, "done"), Err(errno::EXIST));
    }

    #[test]
    fn links_symlinks_and_readlink_answer_honestly() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        write_file(&mut t, ROOT, "f", b"x");
        let (la, lb) = (t.name(b"f"), path2(&mut t, "l"));
        assert_eq!(ok(t.c.path_symlink(&mut t.mem, NAME, la, ROOT, NAME2, lb)), Err(errno::PERM));
        assert_eq!(ok(t.c.path_link(&mut t.mem, ROOT, NAME, la, ROOT, NAME2, lb)), Err(errno::PERM));
        let lb = path2(&mut t, "f");
        assert_eq!(ok(t.c.path_symlink(&mut t.mem, NAME, la, ROOT, NAME2, lb)), Err(errno::EXIST));
        assert_eq!(ok(t.c.path_link(&mut t.mem, ROOT, NAME, la, ROOT, NAME2, lb)), Err(errno::EXIST));
        // A symlink pointing outside cannot even be named: its path is checked first.
        let (lo, lb) = (t.name(b"/etc/passwd"), path2(&mut t, "../escape"));
        assert_eq!(ok(t.c.path_symlink(&mut t.mem, NAME, lo, ROOT, NAME2, lb)), Err(errno::NOTCAPABLE));
        let (lm, lb) = (t.name(b"missing"), path2(&mut t, "l"));
        assert_eq!(ok(t.c.path_link(&mut t.mem, ROOT, NAME, lm, ROOT, NAME2, lb)), Err(errno::NOENT));
        let la = t.name(b"f");
        assert_eq!(ok(t.c.path_readlink(&mut t.mem, ROOT, NAME, la, DATA, 64, OUT)), Err(errno::INVAL));
        assert_eq!(ok(t.c.path_readlink(&mut t.mem, ROOT, NAME, la, SIZE as u32 - 1, 64, OUT)), Err(errno::FAULT));
        let lm = t.name(b"missing");
        assert_eq!(ok(t.c.path_readlink(&mut t.mem, ROOT, NAME, lm, DATA, 64, OUT)), Err(errno::NOENT));
        assert_eq!(area.names(), ["f"]);
    }

    #[test]
    fn times_advice_allocate() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        let f = open_at(&mut t, ROOT, "f", OFLAGS_CREAT, RW).unwrap();
        assert_eq!(ok(t.c.fd_filestat_set_times(f, 1 | 4)), Ok(()));
        assert_eq!(ok(t.c.fd_filestat_set_times(f, 2 | 8)), Ok(()));
        assert_eq!(ok(t.c.fd_filestat_set_times(f, 1 | 2)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_filestat_set_times(f, 4 | 8)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_filestat_set_times(f, 16)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_filestat_set_times(99, 1)), Err(errno::BADF));
        let l = t.name(b"f");
        assert_eq!(ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, NAME, l, 1)), Ok(()));
        assert_eq!(ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, NAME, l, 3)), Err(errno::INVAL));
        let l = t.name(b"g");
        assert_eq!(ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, NAME, l, 1)), Err(errno::NOENT));
        let l = t.name(b"..");
        assert_eq!(ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, NAME, l, 1)), Err(errno::NOTCAPABLE));
        for advice in 0..=5 {
            assert_eq!(ok(t.c.fd_advise(f, advice)), Ok(()));
        }
        assert_eq!(ok(t.c.fd_advise(f, 6)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_advise(ROOT, 0)), Err(errno::BADF));
        assert_eq!(ok(t.c.fd_advise(1, 0)), Err(errno::BADF));
        assert_eq!(ok(t.c.fd_allocate(f)), Err(errno::NOTSUP));
        assert_eq!(ok(t.c.fd_allocate(ROOT)), Err(errno::BADF));
        assert_eq!(ok(t.c.fd_allocate(42)), Err(errno::BADF));
    }

    #[test]
    fn renumber_moves_an_fd_and_closes_the_target() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        let a = open_at(&mut t, ROOT, "a", OFLAGS_CREAT, RW).unwrap();
        let b = open_at(&mut t, ROOT, "b", OFLAGS_CREAT, RW).unwrap();
        assert_eq!(t.write(b, b"bee"), Ok(3));
        assert_eq!(t.write(a, b"ay"), Ok(2));
        ok(t.c.fd_renumber(a, b)).unwrap();
        assert_eq!(area.get("b").as_deref(), Some(&b"bee"[..])); // b was closed: committed
        assert_eq!(t.write(a, b"x"), Err(errno::BADF));
        assert_eq!(t.write(b, b"!"), Ok(1)); // b is a's file now
        t.close(b).unwrap();
        assert_eq!(area.get("a").as_deref(), Some(&b"ay!"[..]));
        let c = open_at(&mut t, ROOT, "c", OFLAGS_CREAT, RW).unwrap();
        assert_eq!(ok(t.c.fd_renumber(c, c)), Ok(()));
        assert_eq!(ok(t.c.fd_renumber(c, 99)), Err(errno::BADF));
        assert_eq!(ok(t.c.fd_renumber(99, c)), Err(errno::BADF));
        assert_eq!(ok(t.c.fd_renumber(ROOT, c)), Err(errno::NOTSUP));
        assert_eq!(ok(t.c.fd_renumber(c, DOT)), Err(errno::NOTSUP));
        assert_eq!(t.write(c, b"still"), Ok(5));
    }

    #[test]
    fn rights_only_narrow() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        let f = open_at(&mut t, ROOT, "f", OFLAGS_CREAT, RW).unwrap();
        ok(t.c.fd_fdstat_set_rights(f, RIGHT_FD_READ | RIGHT_FD_SEEK, 0)).unwrap();
        ok(t.c.fd_fdstat_get(&mut t.mem, f, OUT)).unwrap();
        assert_eq!(u64::from_le_bytes(t.mem[OUT as usize + 8..OUT as usize + 16].try_into().unwrap()), RIGHT_FD_READ | RIGHT_FD_SEEK);
        assert_eq!(t.write(f, b"x"), Err(errno::BADF));
        assert_eq!(t.read(f, 4), Ok(Vec::new()));
        assert_eq!(ok(t.c.fd_fdstat_set_rights(f, RIGHT_FD_READ | RIGHT_FD_WRITE, 0)), Err(errno::NOTCAPABLE));
        assert_eq!(ok(t.c.fd_fdstat_set_rights(f, RIGHT_FD_READ, 1)), Err(errno::NOTCAPABLE));
        ok(t.c.fd_fdstat_set_rights(f, 0, 0)).unwrap();
        assert_eq!(t.read(f, 4), Err(errno::BADF));
        assert_eq!(ok(t.c.fd_fdstat_set_rights(99, 0, 0)), Err(errno::BADF));
        ok(t.c.fd_fdstat_set_rights(1, RIGHT_FD_WRITE, 0)).unwrap();
        assert_eq!(ok(t.c.fd_fdstat_set_rights(1, RIGHT_FD_READ, 0)), Err(errno::NOTCAPABLE));
    }

    #[test]
    fn proc_raise_stops_cleanly() {
        let mut c = WasiCtx::new(&[], &[], 1024);
        assert_eq!(c.proc_raise(0), Ok(errno::SUCCESS));
        assert_eq!(c.proc_raise(31), Ok(errno::INVAL));
        assert_eq!(c.proc_raise(u32::MAX), Ok(errno::INVAL));
        assert_eq!(c.proc_raise(6), Err(Stop::Exit(128 + 6))); // SIGABRT
    }
}
