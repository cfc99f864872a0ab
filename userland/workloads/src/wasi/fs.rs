//! The preopened directory `/data`: WASI file calls over a [`FileArea`].
//!
//! The area is a directory tree. A path is resolved against the directory of its fd
//! (the preopens `/data`, or the manifest's `data_dir`, and `.` are both the area's
//! root, so absolute and relative paths both work, as with wasmtime's `--dir`) the way
//! cap-std resolves it for wasmtime: `.` and empty components are skipped, `..` goes
//! up, symlinks are expanded (the last component only when the call asks to follow,
//! or the path ends with `/`), every component before the last must be an existing
//! directory (`NOENT`, `NOTDIR`). Nothing can reach outside the area: an absolute
//! path, a `..` above the root and a symlink whose target is absolute or climbs out
//! are all `PERM` (wasmtime's "a path led outside of the filesystem"), and more than
//! [`MAX_SYMLINK_EXPANSIONS`] symlinks in one resolution is `LOOP`. A symlink's
//! target is any path when it is created (as on wasmtime); it is checked each time it
//! is followed.
//!
//! The area stores a file under its full path (`a/b/c`), a directory as an empty
//! marker `a/b/` whose parent exists and a symlink as a name whose contents are the
//! target, each with [`FileMeta`]: kind, inode number, times. Hard links are names
//! sharing an inode number, hence contents, metadata and quota. Rename and link are
//! each one atomic step of the area ([`FileArea::rename`], [`FileArea::link`]).
//! Times: mtim and ctim follow writes, `*_set_times` set atim and mtim (given or the
//! node's clock for `NOW`); atim does not follow reads (as `noatime`), directory
//! times do not follow their entries, and a rename leaves times alone.
//!
//! Open files live in memory as nodes, one per inode, shared by every fd open on any
//! of its names, so fds see each other's writes. A node is committed whole (contents
//! and times) through [`FileArea::write_meta`] when its last fd closes and on
//! `fd_sync`/`fd_datasync` (or after every write on an fd opened with
//! `SYNC`/`DSYNC`). `O_CREAT` of a new name commits it empty at once, so every name a
//! program sees is in the area. A file whose last name is removed while open keeps
//! its data until its last close and is not committed.
//!
//! Limits: committed plus open bytes stay within the quota (a hard-linked file
//! counted once, a symlink's target counted as its size); the area holds at most
//! [`MAX_FILES`] names (directories, symlinks and links included) and
//! [`MAX_AREA_NAME_BYTES`] bytes of names (`ENOSPC` otherwise, the workload table's
//! bounds); each component is checked by [`check_name`] (at most 255 bytes) and a
//! full path is at most [`MAX_PATH_BYTES`] bytes (`NAMETOOLONG`).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use super::area::{check_name, FileArea, FileAreaError, FileKind, FileMeta, MAX_AREA_NAME_BYTES, MAX_FILES};
use super::{errno, range, scatter, write_bytes, write_u32, done, iovecs, gather, path_arg, Kind, WasiCtx, WasiResult, MAX_PATH_BYTES};
use super::{FDFLAGS_APPEND, FDFLAGS_DSYNC, FDFLAGS_NONBLOCK, FDFLAGS_RSYNC, FDFLAGS_SYNC};
use super::{FILETYPE_CHARACTER_DEVICE, FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE, FILETYPE_SOCKET_STREAM, FILETYPE_SYMBOLIC_LINK};

/// The name of the preopened directory (unless the manifest's `data_dir` names another).
pub const PREOPEN_NAME: &str = "/data";
/// The preopens of the area, in fd order from 3: both are its root (`.` makes
/// wasi-libc resolve relative paths there, like wasmtime's `--dir`).
pub const PREOPEN_NAMES: [&str; 2] = [PREOPEN_NAME, "."];
/// Longest path of a directory: as any path, [`MAX_PATH_BYTES`] (its marker in the
/// area is one byte longer).
pub const MAX_DIR_PATH_BYTES: usize = MAX_PATH_BYTES as usize;

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
    preopen: Option<String>,
}

impl DirFd {
    pub(super) fn preopen(name: &str) -> Self {
        DirFd { path: String::new(), preopen: Some(name.into()) }
    }
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Dir,
    File(u64),
    /// A symlink whose target is this many bytes.
    Symlink(u64),
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

/// The components of a path, `.` and empty ones dropped.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".")
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

/// An open file's contents: one per inode, shared by every fd open on any of its
/// names (hard links).
struct Node {
    ino: u64,
    /// A current name of the file, through which it is committed.
    name: String,
    data: Vec<u8>,
    meta: FileMeta,
    /// Changed since the last commit.
    dirty: bool,
    /// Number of fds open on it.
    refs: u32,
    /// Its last name was removed while open: never committed again.
    unlinked: bool,
}

/// The node's realtime clock for file times: nanoseconds since the Unix epoch.
pub type FileClock = Box<dyn FnMut() -> u64 + Send>;

/// What the area holds under a name, as loaded and kept up to date in memory.
#[derive(Debug, Clone, Copy)]
struct Stat {
    size: u64,
    /// `ino` is never 0 here for files and symlinks: names the area lists without one
    /// get a fresh number when loaded (kept from then on).
    meta: FileMeta,
}

/// Most symlinks one path resolution follows (cap-std's and Linux's 40); one more is
/// `ELOOP`, so a cycle of links ends. With paths of at most [`MAX_PATH_BYTES`] this
/// also bounds the work and memory of one resolution (40 targets of 4 KiB).
pub const MAX_SYMLINK_EXPANSIONS: u32 = 40;
/// The first inode number handed out (below: the root and legacy numbers).
const FIRST_INO: u64 = 16;

/// The file area of one workload and its open files.
pub(super) struct Files {
    area: Box<dyn FileArea + Send>,
    quota_bytes: u64,
    /// Committed name -> size and metadata, loaded from the area on first use.
    committed: Option<BTreeMap<String, Stat>>,
    /// Targets of symlinks read so far, by inode number.
    targets: BTreeMap<u64, Vec<u8>>,
    nodes: Vec<Option<Node>>,
    next_ino: u64,
    clock: FileClock,
}

/// Readdir cookie of an entry name: a hash of the name, so the place of an entry in
/// the listing does not depend on the other entries. A program that removes entries
/// while it lists a directory (Rust's `remove_dir_all`, `rm -r`) resumes after the
/// last one it saw and skips nothing. 1 and 2 are the cookies after `.` and `..`.
fn cookie_of(name: &str) -> u64 {
    let h = blake3::hash(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b).max(3)
}

/// Inode number of directory `path`: stable for its path (directories have no hard
/// links), top bit set so it is never a file's counter.
fn dir_ino(path: &str) -> u64 {
    if path.is_empty() {
        return DIR_INO;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h | 1 << 63
}

fn filestat(ino: u64, filetype: u8, nlink: u64, size: u64, meta: &FileMeta) -> [u8; FILESTAT_BYTES] {
    let mut s = [0u8; FILESTAT_BYTES];
    s[8..16].copy_from_slice(&ino.to_le_bytes());
    s[16] = filetype;
    s[24..32].copy_from_slice(&nlink.to_le_bytes());
    s[32..40].copy_from_slice(&size.to_le_bytes());
    s[40..48].copy_from_slice(&meta.atim_ns.to_le_bytes());
    s[48..56].copy_from_slice(&meta.mtim_ns.to_le_bytes());
    s[56..64].copy_from_slice(&meta.ctim_ns.to_le_bytes());
    s
}

fn area_err(e: FileAreaError) -> u32 {
    e.errno()
}

impl Files {
    pub(super) fn new(area: Box<dyn FileArea + Send>, quota_bytes: u64) -> Self {
        Files {
            area,
            quota_bytes,
            committed: None,
            targets: BTreeMap::new(),
            nodes: Vec::new(),
            next_ino: FIRST_INO,
            clock: Box::new(|| 0),
        }
    }

    pub(super) fn set_clock(&mut self, clock: FileClock) {
        self.clock = clock;
    }

    fn now(&mut self) -> u64 {
        (self.clock)()
    }

    fn committed(&mut self) -> Result<&mut BTreeMap<String, Stat>, u32> {
        if self.committed.is_none() {
            let list = self.area.list_meta().map_err(area_err)?;
            let top = list.iter().map(|(_, _, m)| m.ino).max().unwrap_or(0);
            self.next_ino = top.saturating_add(1).max(FIRST_INO);
            let mut map = BTreeMap::new();
            for (name, size, mut meta) in list {
                if meta.ino == 0 && meta.kind != FileKind::Directory {
                    meta.ino = self.fresh_ino()?;
                }
                map.insert(name, Stat { size, meta });
            }
            self.committed = Some(map);
        }
        self.committed.as_mut().ok_or(errno::IO)
    }

    /// A new inode number (`ENOSPC` once a forged area used them all up).
    fn fresh_ino(&mut self) -> Result<u64, u32> {
        let ino = self.next_ino;
        self.next_ino = ino.checked_add(1).ok_or(errno::NOSPC)?;
        Ok(ino)
    }

    fn stat(&mut self, name: &str) -> Result<Option<Stat>, u32> {
        Ok(self.committed()?.get(name).copied())
    }

    /// The open, not unlinked node of inode `ino`.
    fn live_ino(&self, ino: u64) -> Option<usize> {
        self.nodes.iter().position(|n| matches!(n, Some(n) if !n.unlinked && n.ino == ino))
    }

    /// The open node of the file `name` names.
    fn live(&mut self, name: &str) -> Result<Option<usize>, u32> {
        Ok(self.stat(name)?.and_then(|s| self.live_ino(s.meta.ino)))
    }

    fn node(&mut self, i: usize) -> Result<&mut Node, u32> {
        self.nodes.get_mut(i).and_then(Option::as_mut).ok_or(errno::BADF)
    }

    /// Names of inode `ino`.
    fn names_of(&mut self, ino: u64) -> Result<Vec<String>, u32> {
        Ok(self.committed()?.iter().filter(|(_, s)| s.meta.ino == ino).map(|(n, _)| n.clone()).collect())
    }

    /// Committed bytes of files not open (each inode once, however many links it
    /// has), plus the bytes of every open file. Sizes come from the area (the kernel's
    /// record on disk): they are summed saturating, so a forged huge size reads as
    /// "over quota", never wraps.
    fn usage_bytes(&mut self) -> Result<u64, u32> {
        let open: u64 = self.nodes.iter().flatten().fold(0u64, |sum, n| sum.saturating_add(n.data.len() as u64));
        let open_inos: Vec<u64> = self.nodes.iter().flatten().filter(|n| !n.unlinked).map(|n| n.ino).collect();
        let committed = self.committed.as_ref().ok_or(errno::IO)?;
        let mut closed: Vec<(u64, u64)> = Vec::new();
        closed.try_reserve_exact(committed.len()).map_err(|_| errno::NOMEM)?;
        closed.extend(committed.values().filter(|s| !open_inos.contains(&s.meta.ino)).map(|s| (s.meta.ino, s.size)));
        closed.sort_unstable();
        closed.dedup_by_key(|(ino, _)| *ino);
        let closed = closed.iter().fold(0u64, |sum, (_, size)| sum.saturating_add(*size));
        Ok(open.saturating_add(closed))
    }

    /// `ENOSPC` unless `extra` more bytes fit in the quota.
    fn check_room(&mut self, extra: u64) -> Result<(), u32> {
        self.committed()?;
        let usage = self.usage_bytes()?;
        match usage.checked_add(extra) {
            Some(total) if total <= self.quota_bytes => Ok(()),
            _ => Err(errno::NOSPC),
        }
    }

    /// `ENOSPC` unless one more name `name` fits: at most [`MAX_FILES`] names and
    /// [`MAX_AREA_NAME_BYTES`] bytes of names in the area.
    fn check_new_name(&mut self, name: &str) -> Result<(), u32> {
        let committed = self.committed()?;
        let bytes = committed.keys().fold(0usize, |sum, n| sum.saturating_add(n.len()));
        if committed.len() >= MAX_FILES || bytes.saturating_add(name.len()) > MAX_AREA_NAME_BYTES {
            return Err(errno::NOSPC);
        }
        Ok(())
    }

    /// Size of `name` (its open contents if open), `None` if there is no such file.
    fn size_of(&mut self, name: &str) -> Result<Option<u64>, u32> {
        let committed = self.stat(name)?.map(|s| s.size);
        Ok(match self.live(name)? {
            Some(i) => Some(self.node(i)?.data.len() as u64),
            None => committed,
        })
    }

    /// Opens (and maybe creates or truncates) file `name` (resolved, not a symlink);
    /// returns its node.
    fn open(&mut self, name: &str, oflags: u32) -> Result<usize, u32> {
        let (create, excl, trunc) = (oflags & OFLAGS_CREAT != 0, oflags & OFLAGS_EXCL != 0, oflags & OFLAGS_TRUNC != 0);
        if let Some(i) = self.live(name)? {
            if create && excl {
                return Err(errno::EXIST);
            }
            let now = self.now();
            let n = self.node(i)?;
            n.refs += 1;
            if trunc && !n.data.is_empty() {
                n.data.clear();
                n.dirty = true;
                n.meta.mtim_ns = now;
                n.meta.ctim_ns = now;
            }
            return Ok(i);
        }
        let (data, meta, dirty) = match self.stat(name)? {
            Some(stat) => {
                if create && excl {
                    return Err(errno::EXIST);
                }
                let data = self.area.read(name).map_err(area_err)?.ok_or(errno::IO)?;
                let mut meta = stat.meta;
                let dirty = trunc && !data.is_empty();
                if dirty {
                    meta.mtim_ns = self.now();
                    meta.ctim_ns = meta.mtim_ns;
                }
                (if trunc { Vec::new() } else { data }, meta, dirty)
            }
            None => {
                if !create {
                    return Err(errno::NOENT);
                }
                self.check_new_name(name)?;
                let now = self.now();
                let meta = FileMeta { kind: FileKind::Regular, ino: self.fresh_ino()?, atim_ns: now, mtim_ns: now, ctim_ns: now };
                self.area.write_meta(name, &[], &meta).map_err(area_err)?;
                self.committed()?.insert(name.into(), Stat { size: 0, meta });
                (Vec::new(), meta, false)
            }
        };
        let node = Some(Node { ino: meta.ino, name: name.into(), data, meta, dirty, refs: 1, unlinked: false });
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
        let old = self.node(i)?.data.len() as u64;
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
        let now = self.now();
        let n = self.node(i)?;
        if let Some(grow) = len.checked_sub(n.data.len()) {
            n.data.try_reserve_exact(grow).map_err(|_| errno::NOMEM)?;
        }
        n.data.resize(len, 0);
        n.dirty = true;
        n.meta.mtim_ns = now;
        n.meta.ctim_ns = now;
        Ok(())
    }

    /// Hands node `i` to the area if it changed (contents and times in one step).
    fn commit(&mut self, i: usize) -> Result<(), u32> {
        let Files { area, committed, nodes, .. } = self;
        let n = nodes.get_mut(i).and_then(Option::as_mut).ok_or(errno::BADF)?;
        if !n.dirty || n.unlinked {
            return Ok(());
        }
        area.write_meta(&n.name, &n.data, &n.meta).map_err(area_err)?;
        n.dirty = false;
        if let Some(c) = committed.as_mut() {
            for s in c.values_mut().filter(|s| s.meta.ino == n.ino) {
                *s = Stat { size: n.data.len() as u64, meta: n.meta };
            }
        }
        Ok(())
    }

    /// Makes node `i`'s times durable: with its contents when those changed too, else
    /// as a change of metadata only (no new copy of the contents).
    fn commit_times(&mut self, i: usize) -> Result<(), u32> {
        let n = self.node(i)?;
        if n.dirty || n.unlinked {
            n.dirty = true;
            return self.commit(i);
        }
        let (name, ino, meta) = (n.name.clone(), n.ino, n.meta);
        self.area.set_meta(&name, &meta).map_err(area_err)?;
        for s in self.committed()?.values_mut().filter(|s| s.meta.ino == ino) {
            s.meta = meta;
        }
        Ok(())
    }

    /// Drops one fd's hold on node `i`, committing it when it was the last.
    fn release(&mut self, i: usize) -> Result<(), u32> {
        let n = self.node(i)?;
        n.refs -= 1;
        if n.refs > 0 {
            return Ok(());
        }
        let r = self.commit(i);
        self.nodes[i] = None;
        r
    }

    /// Removes name `name` (a file or a symlink); the file's data stays for its other
    /// names and for fds open on it.
    fn unlink(&mut self, name: &str) -> Result<(), u32> {
        let stat = self.stat(name)?.ok_or(errno::NOENT)?;
        self.area.remove(name).map_err(area_err)?;
        self.committed()?.remove(name);
        self.forget_name(name, stat.meta.ino)
    }

    /// `name` of inode `ino` is gone: an open node moves to another of its names, or
    /// is unlinked when none is left.
    fn forget_name(&mut self, name: &str, ino: u64) -> Result<(), u32> {
        let others = self.names_of(ino)?;
        if others.is_empty() {
            self.targets.remove(&ino);
        }
        if let Some(i) = self.live_ino(ino) {
            let n = self.node(i)?;
            match others.into_iter().next() {
                Some(other) if n.name == name => n.name = other,
                Some(_) => {}
                None => n.unlinked = true,
            }
        }
        Ok(())
    }

    /// What `path` names (`""` is the root directory); a symlink is not followed.
    fn ty(&mut self, path: &str) -> Result<Option<Ty>, u32> {
        if path.is_empty() || self.committed()?.contains_key(&marker(path)) {
            return Ok(Some(Ty::Dir));
        }
        match self.stat(path)? {
            Some(s) if s.meta.kind == FileKind::Symlink => Ok(Some(Ty::Symlink(s.size))),
            _ => Ok(self.size_of(path)?.map(Ty::File)),
        }
    }

    /// The target of symlink `path`.
    fn target(&mut self, path: &str) -> Result<Vec<u8>, u32> {
        let stat = self.stat(path)?.filter(|s| s.meta.kind == FileKind::Symlink).ok_or(errno::INVAL)?;
        if let Some(t) = self.targets.get(&stat.meta.ino) {
            return Ok(t.clone());
        }
        let t = self.area.read(path).map_err(area_err)?.ok_or(errno::IO)?;
        if t.len() > MAX_PATH_BYTES as usize {
            // Not written by this layer: refuse to follow rather than allocate more.
            return Err(errno::NAMETOOLONG);
        }
        self.targets.insert(stat.meta.ino, t.clone());
        Ok(t)
    }

    /// Resolves `path` against directory `base` as cap-std does (see the module docs):
    /// symlinks are followed, the last component only when `follow` is set or the
    /// path ends with `/`; `..` that would leave the area, an absolute path or an
    /// absolute symlink target is `PERM`; more than [`MAX_SYMLINK_EXPANSIONS`]
    /// symlinks is `LOOP`.
    fn resolve(&mut self, base: &str, path: &[u8], follow: bool) -> Result<Resolved, u32> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        if path[0] == b'/' {
            return Err(errno::PERM);
        }
        // The fd's directory may have been removed or renamed away meanwhile.
        if self.ty(base)? != Some(Ty::Dir) {
            return Err(errno::NOENT);
        }
        let slash = path.ends_with(b"/");
        let mut parts: Vec<String> = base.split('/').filter(|c| !c.is_empty()).map(String::from).collect();
        // Components still to walk, the next one last.
        let mut pending: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
        let mut expansions = 0u32;
        while let Some(comp) = pending.pop() {
            if comp == b".." {
                parts.pop().ok_or(errno::PERM)?;
                continue;
            }
            let name = check_name(&comp)?;
            let last = pending.is_empty();
            let mut full = parts.join("/");
            if !full.is_empty() {
                full.push('/');
            }
            full.push_str(name);
            if full.len() > MAX_PATH_BYTES as usize {
                return Err(errno::NAMETOOLONG);
            }
            match self.ty(&full)? {
                Some(Ty::Symlink(_)) if !last || follow || slash => {
                    expansions += 1;
                    if expansions > MAX_SYMLINK_EXPANSIONS {
                        return Err(errno::LOOP);
                    }
                    let target = self.target(&full)?;
                    if target.is_empty() {
                        return Err(errno::NOENT);
                    }
                    if target[0] == b'/' {
                        return Err(errno::PERM);
                    }
                    pending.extend(components(&target).rev().map(<[u8]>::to_vec));
                }
                Some(Ty::Dir) => parts.push(name.into()),
                Some(Ty::File(_) | Ty::Symlink(_)) if !last => return Err(errno::NOTDIR),
                None if !last => return Err(errno::NOENT),
                _ => parts.push(name.into()),
            }
        }
        Ok(Resolved { path: parts.join("/"), slash })
    }

    /// The filestat of `path` (resolved; a symlink is described, not followed).
    fn stat_of(&mut self, path: &str) -> Result<[u8; FILESTAT_BYTES], u32> {
        match self.ty(path)? {
            None => Err(errno::NOENT),
            Some(Ty::Dir) => {
                let meta = if path.is_empty() { FileMeta::default() } else { self.stat(&marker(path))?.map(|s| s.meta).unwrap_or_default() };
                Ok(filestat(dir_ino(path), FILETYPE_DIRECTORY, 1, 0, &meta))
            }
            Some(Ty::Symlink(size)) => {
                let stat = self.stat(path)?.ok_or(errno::NOENT)?;
                let nlink = self.names_of(stat.meta.ino)?.len() as u64;
                Ok(filestat(stat.meta.ino, FILETYPE_SYMBOLIC_LINK, nlink, size, &stat.meta))
            }
            Some(Ty::File(size)) => {
                let stat = self.stat(path)?.ok_or(errno::NOENT)?;
                let meta = match self.live_ino(stat.meta.ino) {
                    Some(i) => self.node(i)?.meta,
                    None => stat.meta,
                };
                let nlink = self.names_of(stat.meta.ino)?.len() as u64;
                Ok(filestat(stat.meta.ino, FILETYPE_REGULAR_FILE, nlink, size, &meta))
            }
        }
    }

    /// The entries of directory `dir` as (name, file type), in readdir order (by
    /// [`cookie_of`]).
    fn children(&mut self, dir: &str) -> Result<Vec<(u64, String, u8)>, u32> {
        let prefix = if dir.is_empty() { String::new() } else { marker(dir) };
        let committed = self.committed()?;
        let mut out = Vec::new();
        for (n, s) in committed.range::<str, _>((core::ops::Bound::Included(prefix.as_str()), core::ops::Bound::Unbounded)) {
            if !n.starts_with(&prefix) {
                break;
            }
            if let Some((c, is_dir)) = child_of(dir, n) {
                let filetype = match (is_dir, s.meta.kind) {
                    (true, _) => FILETYPE_DIRECTORY,
                    (false, FileKind::Symlink) => FILETYPE_SYMBOLIC_LINK,
                    (false, _) => FILETYPE_REGULAR_FILE,
                };
                out.push((cookie_of(c), String::from(c), filetype));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn has_children(&mut self, dir: &str) -> Result<bool, u32> {
        let prefix = marker(dir);
        let committed = self.committed()?;
        let mut after = committed.range::<str, _>((core::ops::Bound::Excluded(prefix.as_str()), core::ops::Bound::Unbounded));
        Ok(after.next().is_some_and(|(n, _)| n.starts_with(&prefix)))
    }

    fn mkdir(&mut self, path: &str) -> Result<(), u32> {
        if self.ty(path)?.is_some() {
            return Err(errno::EXIST);
        }
        let m = marker(path);
        self.check_new_name(&m)?;
        let now = self.now();
        let meta = FileMeta { kind: FileKind::Directory, ino: 0, atim_ns: now, mtim_ns: now, ctim_ns: now };
        self.area.write_meta(&m, &[], &meta).map_err(area_err)?;
        self.committed()?.insert(m, Stat { size: 0, meta });
        Ok(())
    }

    fn rmdir(&mut self, path: &str) -> Result<(), u32> {
        match self.ty(path)? {
            None => return Err(errno::NOENT),
            Some(Ty::File(_) | Ty::Symlink(_)) => return Err(errno::NOTDIR),
            Some(Ty::Dir) if path.is_empty() => return Err(errno::BUSY),
            Some(Ty::Dir) => {}
        }
        if self.has_children(path)? {
            return Err(errno::NOTEMPTY);
        }
        let m = marker(path);
        self.area.remove(&m).map_err(area_err)?;
        self.committed()?.remove(&m);
        Ok(())
    }

    /// Creates symlink `path` to `target`, its contents (counted in the quota).
    fn symlink(&mut self, target: &[u8], path: &str) -> Result<(), u32> {
        if self.ty(path)?.is_some() {
            return Err(errno::EXIST);
        }
        self.check_new_name(path)?;
        self.check_room(target.len() as u64)?;
        let now = self.now();
        let meta = FileMeta { kind: FileKind::Symlink, ino: self.fresh_ino()?, atim_ns: now, mtim_ns: now, ctim_ns: now };
        self.area.write_meta(path, target, &meta).map_err(area_err)?;
        self.committed()?.insert(path.into(), Stat { size: target.len() as u64, meta });
        self.targets.insert(meta.ino, target.to_vec());
        Ok(())
    }

    /// Makes `to` another name of the file or symlink `from` (both resolved, not
    /// followed).
    fn link(&mut self, from: &str, to: &str) -> Result<(), u32> {
        let stat = match self.ty(from)? {
            None => return Err(errno::NOENT),
            Some(Ty::Dir) => return Err(errno::PERM),
            Some(_) => self.stat(from)?.ok_or(errno::NOENT)?,
        };
        if self.ty(to)?.is_some() {
            return Err(errno::EXIST);
        }
        self.check_new_name(to)?;
        let ino = stat.meta.ino;
        // An open file's metadata is the newest.
        let mut meta = match self.live_ino(ino) {
            Some(i) => self.node(i)?.meta,
            None => stat.meta,
        };
        meta.ctim_ns = self.now();
        self.area.link(from, to, &meta).map_err(area_err)?;
        let committed = self.committed()?;
        for s in committed.values_mut().filter(|s| s.meta.ino == ino) {
            s.meta = meta;
        }
        committed.insert(to.into(), Stat { size: stat.size, meta });
        if let Some(i) = self.live_ino(ino) {
            self.node(i)?.meta = meta;
        }
        Ok(())
    }

    /// Sets the times of the file, directory or symlink `path` (resolved): `atim` and
    /// `mtim` as `fst_flags` says, ctim to now.
    fn set_times(&mut self, path: &str, atim: u64, mtim: u64, fst_flags: u32) -> Result<(), u32> {
        check_fst_flags(fst_flags)?;
        let name = match self.ty(path)? {
            None => return Err(errno::NOENT),
            Some(Ty::Dir) if path.is_empty() => return Ok(()), // the root keeps no times
            Some(Ty::Dir) => marker(path),
            Some(_) => path.into(),
        };
        let stat = self.stat(&name)?.ok_or(errno::NOENT)?;
        let now = self.now();
        let live = self.live_ino(stat.meta.ino).filter(|_| stat.meta.kind != FileKind::Directory);
        let mut meta = match live {
            Some(i) => self.node(i)?.meta,
            None => stat.meta,
        };
        apply_times(&mut meta, atim, mtim, fst_flags, now);
        match live {
            Some(i) => {
                self.node(i)?.meta = meta;
                self.commit_times(i)
            }
            None => {
                self.area.set_meta(&name, &meta).map_err(area_err)?;
                let committed = self.committed()?;
                for (n, s) in committed.iter_mut() {
                    if *n == name || (meta.ino != 0 && s.meta.ino == meta.ino) {
                        s.meta = meta;
                    }
                }
                Ok(())
            }
        }
    }

    /// Renames `from` to `to` (both resolved, distinct), a file, a symlink or a whole
    /// directory, in one atomic step of the area; open files follow their names.
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
            Ty::File(_) | Ty::Symlink(_) => {
                if from.slash || to.slash {
                    return Err(errno::NOTDIR);
                }
                if dst == Some(Ty::Dir) {
                    return Err(errno::ISDIR);
                }
                // Two names of one file: nothing to do (POSIX).
                let (a, b) = (self.stat(&from.path)?, self.stat(&to.path)?);
                if let (Some(a), Some(b)) = (a, b) {
                    if a.meta.ino == b.meta.ino {
                        return Ok(Vec::new());
                    }
                }
                alloc::vec![(from.path.clone(), to.path.clone())]
            }
            Ty::Dir => {
                match dst {
                    Some(Ty::File(_) | Ty::Symlink(_)) => return Err(errno::NOTDIR),
                    Some(Ty::Dir) if self.has_children(&to.path)? => return Err(errno::NOTEMPTY),
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
                    if new.len() > MAX_PATH_BYTES as usize + 1 {
                        return Err(errno::NAMETOOLONG);
                    }
                    moves.push((name.clone(), new));
                }
                moves
            }
        };
        // Bounds of the area after the move: names are replaced or moved, never added,
        // but they may grow longer.
        let committed = self.committed()?;
        let before = committed.keys().fold(0usize, |sum, n| sum.saturating_add(n.len()));
        let grown = moves.iter().fold(0usize, |sum, (o, n)| sum.saturating_add(n.len()).saturating_sub(o.len()));
        if grown > 0 && before.saturating_add(grown) > MAX_AREA_NAME_BYTES {
            return Err(errno::NOSPC);
        }
        self.area.rename(&moves).map_err(area_err)?;
        // The area changed: mirror it (a replaced target loses that name).
        let mut replaced = Vec::new();
        for (old, new) in &moves {
            let committed = self.committed()?;
            if let Some(s) = committed.remove(new) {
                replaced.push((new.clone(), s.meta.ino));
            }
            if let Some(s) = committed.remove(old) {
                committed.insert(new.clone(), s);
            }
        }
        for (old, new) in &moves {
            for n in self.nodes.iter_mut().flatten() {
                if !n.unlinked && n.name == *old {
                    n.name = new.clone();
                }
            }
        }
        for (name, ino) in replaced {
            if !moves.iter().any(|(o, _)| *o == name) {
                self.forget_name(&name, ino)?;
            }
        }
        Ok(moves)
    }
}

/// Applies `fst_flags` to `meta`: atim and mtim given or now; ctim is now.
fn apply_times(meta: &mut FileMeta, atim: u64, mtim: u64, fst_flags: u32, now: u64) {
    if fst_flags & FST_ATIM != 0 {
        meta.atim_ns = atim;
    }
    if fst_flags & FST_ATIM_NOW != 0 {
        meta.atim_ns = now;
    }
    if fst_flags & FST_MTIM != 0 {
        meta.mtim_ns = mtim;
    }
    if fst_flags & FST_MTIM_NOW != 0 {
        meta.mtim_ns = now;
    }
    meta.ctim_ns = now;
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

    /// Resolves `path` (in memory) against directory fd `dirfd`, not following a
    /// symlink in the last component.
    fn resolve_at(&mut self, mem: &[u8], dirfd: u32, path: u32, path_len: u32) -> Result<Resolved, u32> {
        self.resolve_follow(mem, dirfd, path, path_len, false)
    }

    /// Resolves `path` against directory fd `dirfd`, following a symlink in the last
    /// component when `follow` (`LOOKUPFLAGS_SYMLINK_FOLLOW`).
    fn resolve_follow(&mut self, mem: &[u8], dirfd: u32, path: u32, path_len: u32, follow: bool) -> Result<Resolved, u32> {
        let base = self.dir(dirfd)?;
        let path = path_arg(mem, path, path_len)?;
        self.files()?.resolve(&base, &path, follow)
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
        let data = &files.node(f.node)?.data;
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
        let len = files.node(f.node)?.data.len() as u64;
        let pos = match at {
            Some(at) => at,
            None if flags & FDFLAGS_APPEND != 0 => len,
            None => f.pos,
        };
        let end = pos.checked_add(bytes.len() as u64).ok_or(errno::FBIG)?;
        if end > len {
            files.resize(f.node, end)?;
        }
        let now = files.now();
        let n = files.node(f.node)?;
        // pos < end <= data.len(), which is a usize.
        n.data[pos as usize..end as usize].copy_from_slice(bytes);
        n.dirty = true;
        n.meta.mtim_ns = now;
        n.meta.ctim_ns = now;
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
        Ok((files.node(node)?.data.len() as u64).saturating_sub(pos))
    }

    pub(super) fn file_seek(&mut self, fd: u32, offset: i64, whence: u32) -> Result<u64, u32> {
        let (f, _, files) = self.file(fd)?;
        let base = match whence {
            0 => 0,
            1 => f.pos,
            2 => files.node(f.node)?.data.len() as u64,
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
    fn preopen_name(&mut self, fd: u32) -> Result<String, u32> {
        match self.entry(fd)? {
            super::Entry { kind: Kind::Dir(DirFd { preopen: Some(name), .. }), opened: false, .. } => Ok(name.clone()),
            _ => Err(errno::BADF),
        }
    }

    /// The preopened directories answer their names (`/data` or the manifest's
    /// `data_dir`, and `.`); every other fd `BADF`.
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
    /// maybe creating or truncating it. Symlinks are followed, the last one only with
    /// `LOOKUPFLAGS_SYMLINK_FOLLOW` in `dirflags` (else a symlink is `LOOP`, as
    /// `O_NOFOLLOW`); `O_CREAT` through a dangling symlink creates its target.
    #[allow(clippy::too_many_arguments)]
    pub fn path_open(
        &mut self,
        mem: &mut [u8],
        dirfd: u32,
        dirflags: u32,
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
            let (create, excl) = (oflags & OFLAGS_CREAT != 0, oflags & OFLAGS_EXCL != 0);
            // O_CREAT|O_EXCL never follows a last symlink: it exists (POSIX).
            let follow = dirflags & LOOKUPFLAGS_SYMLINK_FOLLOW != 0 && !(create && excl);
            let r = files.resolve(&base, &path, follow)?;
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
                Some(Ty::Symlink(_)) if create && excl => return Err(errno::EXIST),
                Some(Ty::Symlink(_)) => return Err(errno::LOOP),
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
                Kind::Stdin | Kind::Stdout | Kind::Stderr => filestat(0, FILETYPE_CHARACTER_DEVICE, 1, 0, &FileMeta::default()),
                Kind::Listener(_) | Kind::Conn(_) => filestat(0, FILETYPE_SOCKET_STREAM, 1, 0, &FileMeta::default()),
                Kind::Dir(d) => {
                    let path = d.path.clone();
                    self.files()?.stat_of(&path)?
                }
                Kind::File(f) => {
                    let node = f.node;
                    let files = self.files()?;
                    let (ino, unlinked) = {
                        let n = files.node(node)?;
                        (n.ino, n.unlinked)
                    };
                    let nlink = if unlinked { 0 } else { files.names_of(ino)?.len() as u64 };
                    let n = files.node(node)?;
                    filestat(ino, FILETYPE_REGULAR_FILE, nlink, n.data.len() as u64, &n.meta)
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

    /// Stats `path`; a symlink in the last component is followed only with
    /// `LOOKUPFLAGS_SYMLINK_FOLLOW` in `flags` (else the symlink itself is described).
    pub fn path_filestat_get(&mut self, mem: &mut [u8], dirfd: u32, flags: u32, path: u32, path_len: u32, out: u32) -> WasiResult {
        let r = (|| {
            let r = self.resolve_follow(mem, dirfd, path, path_len, flags & LOOKUPFLAGS_SYMLINK_FOLLOW != 0)?;
            range(mem, out, FILESTAT_BYTES as u32)?;
            let files = self.files()?;
            if r.slash && !matches!(files.ty(&r.path)?, Some(Ty::Dir) | None) {
                return Err(errno::NOTDIR);
            }
            let stat = files.stat_of(&r.path)?;
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
                Some(Ty::File(_) | Ty::Symlink(_)) if r.slash => Err(errno::NOTDIR),
                Some(Ty::File(_) | Ty::Symlink(_)) => files.unlink(&r.path),
                None => Err(errno::NOENT),
            }
        })();
        done(r)
    }

    /// Directory entries `.`, `..`, then the directory's entries in the order of
    /// their cookies ([`cookie_of`]: a hash of the name, so a cookie stays valid while
    /// other entries come and go, and resuming never skips an entry that is still
    /// there). `d_next` of an entry is its own cookie; cookie 0 starts from `.`. The
    /// last entry is cut at the end of the buffer (a full buffer tells the caller to
    /// ask again), as on wasmtime.
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
            let dots = [(1, ".".into(), dir_ino(&dir), FILETYPE_DIRECTORY), (2, "..".into(), dir_ino(parent), FILETYPE_DIRECTORY)];
            let mut out = Vec::new();
            out.try_reserve_exact(buf.len().min(64 * (DIRENT_HEADER_BYTES + super::MAX_NAME_BYTES))).map_err(|_| errno::NOMEM)?;
            for (next, name, ino, filetype) in dots.into_iter().chain(children.into_iter().map(|(c, n, t)| {
                let full = join(&dir, &n);
                let ino = match t {
                    FILETYPE_DIRECTORY => dir_ino(&full),
                    _ => files.committed.as_ref().and_then(|m| m.get(&full)).map_or(0, |s| s.meta.ino),
                };
                (c, n, ino, t)
            })) {
                if next <= cookie {
                    continue;
                }
                if out.len() >= buf.len() {
                    break;
                }
                let name: String = name;
                out.extend_from_slice(&next.to_le_bytes());
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

    /// Creates symlink `new` whose target is `old`, any relative or absolute path
    /// (as on wasmtime, the target is not checked when it is made; following it is:
    /// a target that leaves the area or is absolute is `PERM` then). The target's
    /// bytes count in the quota; an empty target is `NOENT`.
    pub fn path_symlink(&mut self, mem: &mut [u8], old: u32, old_len: u32, dirfd: u32, new: u32, new_len: u32) -> WasiResult {
        let r = (|| {
            let target = path_arg(mem, old, old_len)?;
            let to = self.resolve_at(mem, dirfd, new, new_len)?;
            let files = self.files()?;
            if files.ty(&to.path)?.is_some() {
                return Err(errno::EXIST);
            }
            if to.slash {
                return Err(errno::NOENT);
            }
            if target.is_empty() {
                return Err(errno::NOENT);
            }
            files.symlink(&target, &to.path)
        })();
        done(r)
    }

    /// Makes `new` a hard link of the file or symlink `old` (`PERM` for a directory);
    /// `LOOKUPFLAGS_SYMLINK_FOLLOW` is `INVAL`, as on wasmtime. Both names share the
    /// data, the metadata and the quota (counted once).
    #[allow(clippy::too_many_arguments)]
    pub fn path_link(&mut self, mem: &mut [u8], fd: u32, flags: u32, old: u32, old_len: u32, new_fd: u32, new: u32, new_len: u32) -> WasiResult {
        let r = (|| {
            let from = self.resolve_at(mem, fd, old, old_len)?;
            let to = self.resolve_at(mem, new_fd, new, new_len)?;
            if flags & LOOKUPFLAGS_SYMLINK_FOLLOW != 0 {
                return Err(errno::INVAL);
            }
            let files = self.files()?;
            match files.ty(&from.path)? {
                None => return Err(errno::NOENT),
                Some(Ty::File(_) | Ty::Symlink(_)) if from.slash => return Err(errno::NOTDIR),
                _ => {}
            }
            if files.ty(&to.path)?.is_some() {
                return Err(errno::EXIST);
            }
            if to.slash {
                return Err(errno::NOENT);
            }
            files.link(&from.path, &to.path)
        })();
        done(r)
    }

    /// The target of symlink `path`, cut to `buf_len` bytes as on wasmtime (`INVAL`
    /// for a path that is not a symlink, as `readlink(2)`).
    #[allow(clippy::too_many_arguments)]
    pub fn path_readlink(&mut self, mem: &mut [u8], dirfd: u32, path: u32, path_len: u32, buf: u32, buf_len: u32, out: u32) -> WasiResult {
        let r = (|| {
            let r = self.resolve_at(mem, dirfd, path, path_len)?;
            let buf = range(mem, buf, buf_len)?;
            range(mem, out, 4)?;
            let files = self.files()?;
            match files.ty(&r.path)? {
                Some(Ty::Symlink(_)) if !r.slash => {}
                Some(_) => return Err(errno::INVAL),
                None => return Err(errno::NOENT),
            }
            let target = files.target(&r.path)?;
            let n = target.len().min(buf.len());
            mem[buf.start..buf.start + n].copy_from_slice(&target[..n]);
            write_u32(mem, out, n as u32)
        })();
        done(r)
    }

    /// Sets the times of an open file or directory fd; `NOW` flags use the node's
    /// clock. Stored with the file (durable when this returns).
    pub fn fd_filestat_set_times(&mut self, fd: u32, atim: u64, mtim: u64, fst_flags: u32) -> WasiResult {
        let r = (|| {
            check_fst_flags(fst_flags)?;
            match &self.entry(fd)?.kind {
                Kind::Dir(d) => {
                    let path = d.path.clone();
                    self.files()?.set_times(&path, atim, mtim, fst_flags)
                }
                Kind::File(f) => {
                    let node = f.node;
                    let files = self.files()?;
                    let now = files.now();
                    let n = files.node(node)?;
                    apply_times(&mut n.meta, atim, mtim, fst_flags, now);
                    files.commit_times(node)
                }
                _ => Err(errno::BADF),
            }
        })();
        done(r)
    }

    /// Sets the times of `path`; a symlink in the last component is followed only with
    /// `LOOKUPFLAGS_SYMLINK_FOLLOW` (else the symlink's own times are set).
    #[allow(clippy::too_many_arguments)]
    pub fn path_filestat_set_times(
        &mut self,
        mem: &mut [u8],
        dirfd: u32,
        flags: u32,
        path: u32,
        path_len: u32,
        atim: u64,
        mtim: u64,
        fst_flags: u32,
    ) -> WasiResult {
        let r = (|| {
            let r = self.resolve_follow(mem, dirfd, path, path_len, flags & LOOKUPFLAGS_SYMLINK_FOLLOW != 0)?;
            check_fst_flags(fst_flags)?;
            let files = self.files()?;
            match files.ty(&r.path)? {
                Some(Ty::File(_) | Ty::Symlink(_)) if r.slash => Err(errno::NOTDIR),
                Some(_) => files.set_times(&r.path, atim, mtim, fst_flags),
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
/// `lookupflags`: follow a symlink in the last component.
const LOOKUPFLAGS_SYMLINK_FOLLOW: u32 = 1;

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
        fn list_meta(&mut self) -> Result<Vec<(String, u64, FileMeta)>, FileAreaError> {
            self.0.lock().unwrap().list_meta()
        }
        fn write_meta(&mut self, name: &str, bytes: &[u8], meta: &FileMeta) -> Result<(), FileAreaError> {
            self.0.lock().unwrap().write_meta(name, bytes, meta)
        }
        fn set_meta(&mut self, name: &str, meta: &FileMeta) -> Result<(), FileAreaError> {
            self.0.lock().unwrap().set_meta(name, meta)
        }
        fn link(&mut self, from: &str, to: &str, meta: &FileMeta) -> Result<(), FileAreaError> {
            self.0.lock().unwrap().link(from, to, meta)
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

    /// The manifest's `data_dir` renames the first preopen; `.` stays the area.
    #[test]
    fn the_area_can_be_preopened_elsewhere() {
        let mut t = T::new();
        let area = Shared::default();
        t.c.attach_files_at(Box::new(area.clone()), 1 << 20, "/work");
        ok(t.c.fd_prestat_get(&mut t.mem, 3, OUT)).unwrap();
        assert_eq!(&t.mem[OUT as usize..OUT as usize + 8], &[0, 0, 0, 0, 5, 0, 0, 0]);
        ok(t.c.fd_prestat_dir_name(&mut t.mem, 3, NAME, 5)).unwrap();
        assert_eq!(&t.mem[NAME as usize..NAME as usize + 5], b"/work");
        ok(t.c.fd_prestat_dir_name(&mut t.mem, 4, NAME, 1)).unwrap();
        assert_eq!(t.mem[NAME as usize], b'.');
        let fd = t.open("x", CREAT, RW).unwrap();
        t.close(fd).unwrap();
        assert_eq!(area.get("x"), Some(vec![]));
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
            (&b".."[..], errno::PERM),
            (b"../x", errno::PERM),
            (b"a/b", errno::NOENT),
            (b"a/../../x", errno::NOENT),
            (b"/etc/passwd", errno::PERM),
            (b"", errno::NOENT),
            (&[b'n'; 256], errno::NAMETOOLONG),
            (b"a\nb", errno::INVAL),
            (b"\xc3", errno::ILSEQ),
        ] {
            let len = t.name(name);
            assert_eq!(ok(t.c.path_open(&mut t.mem, 3, 1, NAME, len, CREAT, RW, 0, OUT)), Err(e), "{name:?}");
            assert_eq!(ok(t.c.path_filestat_get(&mut t.mem, 3, 1, NAME, len, OUT)), Err(e), "{name:?}");
            assert_eq!(ok(t.c.path_unlink_file(&mut t.mem, 3, NAME, len)), Err(e), "{name:?}");
        }
        let len = t.name(b"x");
        let m = &mut t.mem;
        assert_eq!(ok(t.c.path_open(m, 3, 1, SIZE as u32 - 1, 4, CREAT, RW, 0, OUT)), Err(errno::FAULT));
        assert_eq!(ok(t.c.path_open(m, 3, 1, u32::MAX, u32::MAX, CREAT, RW, 0, OUT)), Err(errno::FAULT));
        assert_eq!(ok(t.c.path_open(m, 3, 1, NAME, len, CREAT, RW, 0, SIZE as u32 - 3)), Err(errno::FAULT));
        assert_eq!(ok(t.c.path_open(m, 3, 1, NAME, len, 0x100, RW, 0, OUT)), Err(errno::INVAL));
        assert_eq!(ok(t.c.path_open(m, 3, 1, NAME, len, CREAT, RW, 0x8000, OUT)), Err(errno::INVAL));
        assert_eq!(ok(t.c.path_open(m, 1, 1, NAME, len, CREAT, RW, 0, OUT)), Err(errno::NOTDIR));
        assert_eq!(ok(t.c.path_open(m, 99, 1, NAME, len, CREAT, RW, 0, OUT)), Err(errno::BADF));
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
        ok(t.c.path_filestat_get(&mut t.mem, 3, 1, NAME, len, OUT)).unwrap();
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
        assert_eq!(ok(t.c.path_filestat_get(&mut t.mem, 3, 1, NAME, len, OUT)), Err(errno::NOENT));
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
    pub(super) fn dirents(buf: &[u8]) -> Vec<(u64, u64, u8, Vec<u8>)> {
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
    fn readdir_lists_dots_then_names_in_cookie_order() {
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
        // The names come in the order of their cookies, each entry's d_next its cookie.
        let mut want: Vec<(u64, &str)> = ["zeta", "alpha", "mid"].iter().map(|n| (cookie_of(n), *n)).collect();
        want.sort();
        assert_eq!(names[..2], [&b"."[..], b".."]);
        assert_eq!(names[2..].iter().map(|n| core::str::from_utf8(n).unwrap()).collect::<Vec<_>>(), want.iter().map(|w| w.1).collect::<Vec<_>>());
        assert_eq!(e.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, want[0].0, want[1].0, want[2].0]);
        assert!(e.iter().all(|x| x.1 != 0));
        assert_eq!((e[0].2, e[2].2), (FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE));
        let alpha = e.iter().find(|x| x.3 == b"alpha").unwrap().1;
        let len = t.name(b"alpha");
        ok(t.c.path_filestat_get(&mut t.mem, 3, 1, NAME, len, OUT)).unwrap();
        assert_eq!(u64::from_le_bytes(t.mem[OUT as usize + 8..OUT as usize + 16].try_into().unwrap()), alpha);
        let m = &mut t.mem;
        let third = want[0].0;
        // Resume from a cookie; the last cookie gives nothing.
        ok(t.c.fd_readdir(m, d, DATA, 4096, third, OUT)).unwrap();
        let used = read_u32(m, OUT).unwrap() as usize;
        assert_eq!(dirents(&m[DATA as usize..DATA as usize + used]).iter().map(|x| x.3.clone()).collect::<Vec<_>>(), [want[1].1.as_bytes().to_vec(), want[2].1.as_bytes().to_vec()]);
        ok(t.c.fd_readdir(m, d, DATA, 4096, want[2].0, OUT)).unwrap();
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
        ok(t.c.path_filestat_get(&mut t.mem, 3, 1, NAME, len, OUT)).unwrap();
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
    use super::super::{errno, Stop, WasiCtx, MAX_NAME_BYTES};
    use super::*;
    use super::test::Shared;
    use std::sync::Arc;

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
        ok(t.c.path_open(&mut t.mem, fd, 1, NAME, len, oflags, rights, 0, OUT))?;
        Ok(t.out_u32())
    }

    fn filetype(t: &mut T, fd: u32, p: &str) -> Result<u8, u32> {
        let len = t.name(p.as_bytes());
        ok(t.c.path_filestat_get(&mut t.mem, fd, 1, NAME, len, OUT))?;
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

    /// The entries of directory `p`: `.`, `..`, then the names sorted (readdir gives
    /// them in cookie order).
    fn ls(t: &mut T, p: &str) -> Vec<String> {
        let d = open_at(t, ROOT, p, OFLAGS_DIRECTORY, 0).unwrap();
        let mut names: Vec<String> = readdir(t, d, 0, 4096).into_iter().map(|(_, n)| n).collect();
        t.close(d).unwrap();
        names[2..].sort();
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
            assert_eq!(open_at(&mut t, fd, p, OFLAGS_CREAT, RW), Err(errno::PERM), "{p}");
            assert_eq!(mkdir(&mut t, fd, p), Err(errno::PERM), "{p}");
            assert_eq!(rename(&mut t, ROOT, "a", fd, p), Err(errno::PERM), "{p}");
        }
        for p in ["/data/x", "/x", "//"] {
            assert_eq!(open_at(&mut t, ROOT, p, OFLAGS_CREAT, RW), Err(errno::PERM), "{p}");
        }
        // `..` that stays inside is fine, from either preopen and from a.
        write_file(&mut t, a, "../top", b"1");
        assert_eq!(read_file(&mut t, DOT, "a/../top"), Ok(b"1".to_vec()));
        assert_eq!(area.names(), ["a/", "top"]);
        // Components are at most 255 bytes, full paths at most 4096.
        let c255 = "c".repeat(MAX_NAME_BYTES);
        mkdir(&mut t, ROOT, &c255).unwrap();
        assert_eq!(mkdir(&mut t, ROOT, &(c255.clone() + "e")), Err(errno::NAMETOOLONG));
        // A tree 16 directories deep whose deepest file's path is 4096 bytes.
        let top = "b".repeat(100);
        let mut deep = top.clone();
        mkdir(&mut t, ROOT, &deep).unwrap();
        for _ in 0..15 {
            deep = alloc::format!("{deep}/{c255}");
            mkdir(&mut t, ROOT, &deep).unwrap();
        }
        let room = MAX_DIR_PATH_BYTES - deep.len() - 1;
        write_file(&mut t, ROOT, &alloc::format!("{deep}/{}", "f".repeat(room)), b"deepest");
        assert_eq!(open_at(&mut t, ROOT, &alloc::format!("{deep}/{}", "f".repeat(room + 1)), OFLAGS_CREAT, RW), Err(errno::NAMETOOLONG));
        assert_eq!(mkdir(&mut t, ROOT, &alloc::format!("{deep}/{}", "g".repeat(room + 1))), Err(errno::NAMETOOLONG));
        // A rename that would push a name past 4096 bytes is refused, nothing moves.
        assert_eq!(rename(&mut t, ROOT, &top, ROOT, &alloc::format!("a/{top}")), Err(errno::NAMETOOLONG));
        assert_eq!(read_file(&mut t, ROOT, &alloc::format!("{deep}/{}", "f".repeat(room))), Ok(b"deepest".to_vec()));
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
        assert_eq!(rename(&mut t, ROOT, "a", ROOT, &"n".repeat(256)), Err(errno::NAMETOOLONG));
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
        // `.` and `..`, then cookies strictly increasing (each entry's own).
        assert_eq!((whole[0].0, whole[1].0), (1, 2));
        assert!(whole.windows(2).all(|w| w[0].0 < w[1].0));
        for buf_len in [40, 64, 100] {
            assert_eq!(readdir(&mut t, d, 0, buf_len), whole, "buffer {buf_len}");
        }
        // Resuming from any cookie gives the rest, the same on every call.
        assert_eq!(readdir(&mut t, d, whole[9].0, 4096), whole[10..].to_vec());
        assert_eq!(readdir(&mut t, d, whole[9].0, 4096), whole[10..].to_vec());
        assert_eq!(readdir(&mut t, d, whole[22].0, 4096), Vec::new());
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

    fn symlink(t: &mut T, target: &str, fd: u32, p: &str) -> Result<(), u32> {
        let la = t.name(target.as_bytes());
        let lb = path2(t, p);
        ok(t.c.path_symlink(&mut t.mem, NAME, la, fd, NAME2, lb))
    }

    fn link(t: &mut T, fd: u32, a: &str, nfd: u32, b: &str) -> Result<(), u32> {
        let la = t.name(a.as_bytes());
        let lb = path2(t, b);
        ok(t.c.path_link(&mut t.mem, fd, 0, NAME, la, nfd, NAME2, lb))
    }

    fn readlink(t: &mut T, p: &str, buf_len: u32) -> Result<Vec<u8>, u32> {
        let len = t.name(p.as_bytes());
        ok(t.c.path_readlink(&mut t.mem, ROOT, NAME, len, DATA, buf_len, OUT))?;
        let n = t.out_u32() as usize;
        Ok(t.mem[DATA as usize..DATA as usize + n].to_vec())
    }

    /// (filetype, nlink, size, ino, atim, mtim, ctim) of `p`, following a last symlink
    /// when `follow`.
    fn stat(t: &mut T, p: &str, follow: bool) -> Result<Stat7, u32> {
        let len = t.name(p.as_bytes());
        ok(t.c.path_filestat_get(&mut t.mem, ROOT, u32::from(follow), NAME, len, OUT))?;
        Ok(parse_stat(t))
    }

    type Stat7 = (u8, u64, u64, u64, u64, u64, u64);

    fn parse_stat(t: &T) -> Stat7 {
        let u = |at: usize| u64::from_le_bytes(t.mem[OUT as usize + at..OUT as usize + at + 8].try_into().unwrap());
        (t.mem[OUT as usize + 16], u(24), u(32), u(8), u(40), u(48), u(56))
    }

    fn open_nofollow(t: &mut T, p: &str, oflags: u32) -> Result<u32, u32> {
        let len = t.name(p.as_bytes());
        ok(t.c.path_open(&mut t.mem, ROOT, 0, NAME, len, oflags, RW, 0, OUT))?;
        Ok(t.out_u32())
    }

    /// Symlinks inside the area resolve as on wasmtime; nothing reaches outside it.
    #[test]
    fn symlinks_resolve_inside_and_never_leave_the_area() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        write_file(&mut t, ROOT, "f", b"x");
        mkdir(&mut t, ROOT, "d").unwrap();
        symlink(&mut t, "f", ROOT, "l").unwrap();
        symlink(&mut t, "../f", ROOT, "d/up").unwrap();
        symlink(&mut t, "d", DOT, "dl").unwrap();
        assert_eq!(read_file(&mut t, ROOT, "l"), Ok(b"x".to_vec()));
        assert_eq!(read_file(&mut t, ROOT, "d/up"), Ok(b"x".to_vec()));
        assert_eq!(read_file(&mut t, ROOT, "dl/up"), Ok(b"x".to_vec()));
        write_file(&mut t, ROOT, "dl/new", b"via link");
        assert_eq!(area.get("d/new").as_deref(), Some(&b"via link"[..]));
        assert_eq!(ls(&mut t, "dl/"), [".", "..", "new", "up"]);
        // `..` after a symlink is taken from where the link leads (cap-std, POSIX).
        assert_eq!(read_file(&mut t, ROOT, "dl/../f"), Ok(b"x".to_vec()));
        // readlink gives the target, cut to the buffer as on wasmtime.
        assert_eq!(readlink(&mut t, "d/up", 64), Ok(b"../f".to_vec()));
        assert_eq!(readlink(&mut t, "d/up", 2), Ok(b"..".to_vec()));
        assert_eq!(readlink(&mut t, "dl/up", 64), Ok(b"../f".to_vec()));
        assert_eq!(readlink(&mut t, "f", 64), Err(errno::INVAL));
        assert_eq!(readlink(&mut t, "d", 64), Err(errno::INVAL));
        assert_eq!(readlink(&mut t, "nope", 64), Err(errno::NOENT));
        let len = t.name(b"l");
        assert_eq!(ok(t.c.path_readlink(&mut t.mem, ROOT, NAME, len, SIZE as u32 - 1, 64, OUT)), Err(errno::FAULT));
        // Stat with and without SYMLINK_FOLLOW; readdir gives the symlink type.
        let (ty, nlink, size, ..) = stat(&mut t, "l", false).unwrap();
        assert_eq!((ty, nlink, size), (FILETYPE_SYMBOLIC_LINK, 1, 1));
        assert_eq!(stat(&mut t, "l", true).map(|s| s.0), Ok(FILETYPE_REGULAR_FILE));
        assert_eq!(stat(&mut t, "dl", true).map(|s| s.0), Ok(FILETYPE_DIRECTORY));
        assert_eq!(stat(&mut t, "dl/", false).map(|s| s.0), Ok(FILETYPE_DIRECTORY));
        assert_eq!(stat(&mut t, "l/", false), Err(errno::NOTDIR));
        let d = open_at(&mut t, ROOT, ".", OFLAGS_DIRECTORY, 0).unwrap();
        ok(t.c.fd_readdir(&mut t.mem, d, DATA, 4096, 0, OUT)).unwrap();
        let used = t.out_u32() as usize;
        let types: Vec<(Vec<u8>, u8)> = super::test::dirents(&t.mem[DATA as usize..DATA as usize + used]).into_iter().map(|e| (e.3, e.2)).collect();
        assert!(types.contains(&(b"l".to_vec(), FILETYPE_SYMBOLIC_LINK)));
        assert!(types.contains(&(b"dl".to_vec(), FILETYPE_SYMBOLIC_LINK)));
        t.close(d).unwrap();
        // O_NOFOLLOW on a symlink is LOOP; O_CREAT|O_EXCL on one is EXIST.
        assert_eq!(open_nofollow(&mut t, "l", 0), Err(errno::LOOP));
        assert_eq!(open_at(&mut t, ROOT, "l", OFLAGS_CREAT | OFLAGS_EXCL, RW), Err(errno::EXIST));
        // O_CREAT through a dangling symlink creates its target.
        symlink(&mut t, "d/made", ROOT, "dangling").unwrap();
        assert_eq!(read_file(&mut t, ROOT, "dangling"), Err(errno::NOENT));
        write_file(&mut t, ROOT, "dangling", b"made");
        assert_eq!(area.get("d/made").as_deref(), Some(&b"made"[..]));
        // Creation refusals: an existing name, an empty target, a trailing slash.
        assert_eq!(symlink(&mut t, "f", ROOT, "l"), Err(errno::EXIST));
        assert_eq!(symlink(&mut t, "f", ROOT, "d"), Err(errno::EXIST));
        assert_eq!(symlink(&mut t, "", ROOT, "empty"), Err(errno::NOENT));
        assert_eq!(symlink(&mut t, "f", ROOT, "new/"), Err(errno::NOENT));
        assert_eq!(symlink(&mut t, "f", ROOT, "../out"), Err(errno::PERM));
        // Targets outside the area may be made (as on wasmtime) but never followed.
        for (target, name) in [("../escape", "out1"), ("/etc/passwd", "out2"), ("d/../../x", "out3"), ("dl/../..", "out4")] {
            symlink(&mut t, target, ROOT, name).unwrap();
            assert_eq!(readlink(&mut t, name, 64), Ok(target.as_bytes().to_vec()));
            assert_eq!(open_at(&mut t, ROOT, name, OFLAGS_CREAT, RW), Err(errno::PERM), "{name}");
            assert_eq!(read_file(&mut t, ROOT, name), Err(errno::PERM), "{name}");
            assert_eq!(stat(&mut t, name, true), Err(errno::PERM), "{name}");
            assert_eq!(mkdir(&mut t, ROOT, &alloc::format!("{name}/sub")), Err(errno::PERM), "{name}");
            assert_eq!(stat(&mut t, name, false).map(|s| s.0), Ok(FILETYPE_SYMBOLIC_LINK));
        }
        // A symlink to a directory outside, used as a base: still refused.
        symlink(&mut t, "..", ROOT, "d/parent").unwrap();
        assert_eq!(read_file(&mut t, ROOT, "d/parent/f"), Ok(b"x".to_vec()));
        symlink(&mut t, "../..", ROOT, "d/grand").unwrap();
        assert_eq!(read_file(&mut t, ROOT, "d/grand/f"), Err(errno::PERM));
        // Unlink removes the symlink, not its target; rmdir of a symlink is NOTDIR.
        assert_eq!(rmdir(&mut t, ROOT, "dl"), Err(errno::NOTDIR));
        unlink(&mut t, ROOT, "l").unwrap();
        assert_eq!(area.get("f").as_deref(), Some(&b"x"[..]));
        // Rename moves a symlink itself; it still resolves from its new place.
        rename(&mut t, ROOT, "d/up", ROOT, "d/up2").unwrap();
        assert_eq!(read_file(&mut t, ROOT, "d/up2"), Ok(b"x".to_vec()));
        // A second run on the same area keeps every symlink.
        let mut t = with_area(&area, 1 << 20);
        assert_eq!(readlink(&mut t, "d/up2", 64), Ok(b"../f".to_vec()));
        assert_eq!(read_file(&mut t, ROOT, "dl/up2"), Ok(b"x".to_vec()));
        assert_eq!(read_file(&mut t, ROOT, "out2"), Err(errno::PERM));
        assert_eq!(area.0.lock().unwrap().meta("dl").map(|m| m.kind), Some(FileKind::Symlink));
    }

    /// Cycles and long chains end at [`MAX_SYMLINK_EXPANSIONS`] with `LOOP`.
    #[test]
    fn symlink_loops_and_chains_are_bounded() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        symlink(&mut t, "b", ROOT, "a").unwrap();
        symlink(&mut t, "a", ROOT, "b").unwrap();
        symlink(&mut t, "self/x", ROOT, "self").unwrap();
        assert_eq!(read_file(&mut t, ROOT, "a"), Err(errno::LOOP));
        assert_eq!(open_at(&mut t, ROOT, "self/y", OFLAGS_CREAT, RW), Err(errno::LOOP));
        assert_eq!(stat(&mut t, "a", false).map(|s| s.0), Ok(FILETYPE_SYMBOLIC_LINK));
        write_file(&mut t, ROOT, "end", b"e");
        let n = MAX_SYMLINK_EXPANSIONS as usize;
        let mut prev = String::from("end");
        for i in 0..=n {
            let name = alloc::format!("c{i}");
            symlink(&mut t, &prev, ROOT, &name).unwrap();
            prev = name;
        }
        assert_eq!(read_file(&mut t, ROOT, &alloc::format!("c{}", n - 1)), Ok(b"e".to_vec()));
        assert_eq!(read_file(&mut t, ROOT, &alloc::format!("c{n}")), Err(errno::LOOP));
        // A long target (4096 bytes of `./`) expands within bounds.
        let far = DATA + 8192;
        let lb = path2(&mut t, "dots");
        for (reps, want) in [(2047, Err(errno::NAMETOOLONG)), (2046, Ok(()))] {
            let dots = "./".repeat(reps) + "end";
            t.mem[far as usize..far as usize + dots.len()].copy_from_slice(dots.as_bytes());
            assert_eq!(ok(t.c.path_symlink(&mut t.mem, far, dots.len() as u32, ROOT, NAME2, lb)), want);
        }
        assert_eq!(read_file(&mut t, ROOT, "dots"), Ok(b"e".to_vec()));
    }

    /// Hard links share data, metadata and quota, and survive a second run.
    #[test]
    fn hard_links_share_the_file() {
        let area = Shared::default();
        let mut t = with_area(&area, 100);
        write_file(&mut t, ROOT, "a", b"hello");
        mkdir(&mut t, ROOT, "d").unwrap();
        link(&mut t, ROOT, "a", DOT, "d/b").unwrap();
        let (sa, sb) = (stat(&mut t, "a", false).unwrap(), stat(&mut t, "d/b", false).unwrap());
        assert_eq!((sa.0, sa.1, sa.2), (FILETYPE_REGULAR_FILE, 2, 5));
        assert_eq!(sa.3, sb.3); // one inode
        // A write through one name is seen through the other, open or committed.
        let fa = open_at(&mut t, ROOT, "a", 0, RW).unwrap();
        let fb = open_at(&mut t, ROOT, "d/b", OFLAGS_TRUNC, RW).unwrap();
        assert_eq!(t.write(fb, b"HELLO!"), Ok(6));
        assert_eq!(t.read(fa, 10), Ok(b"HELLO!".to_vec()));
        t.close(fa).unwrap();
        t.close(fb).unwrap();
        assert_eq!(area.get("a").as_deref(), Some(&b"HELLO!"[..]));
        assert_eq!(area.get("d/b").as_deref(), Some(&b"HELLO!"[..]));
        // The quota counts the file once: 94 more bytes fit, not 95.
        let f = open_at(&mut t, ROOT, "g", OFLAGS_CREAT, RW).unwrap();
        assert_eq!(t.write(f, &[1; 95]), Err(errno::NOSPC));
        assert_eq!(t.write(f, &[1; 94]), Ok(94));
        t.close(f).unwrap();
        unlink(&mut t, ROOT, "g").unwrap();
        // Refusals as on wasmtime.
        assert_eq!(link(&mut t, ROOT, "a", ROOT, "d/b"), Err(errno::EXIST));
        assert_eq!(link(&mut t, ROOT, "d", ROOT, "d2"), Err(errno::PERM));
        assert_eq!(link(&mut t, ROOT, "nope", ROOT, "x"), Err(errno::NOENT));
        assert_eq!(link(&mut t, ROOT, "a", ROOT, "x/"), Err(errno::NOENT));
        assert_eq!(link(&mut t, ROOT, "a/", ROOT, "x"), Err(errno::NOTDIR));
        assert_eq!(link(&mut t, ROOT, "a", ROOT, "../x"), Err(errno::PERM));
        let (la, lb) = (t.name(b"a"), path2(&mut t, "y"));
        assert_eq!(ok(t.c.path_link(&mut t.mem, ROOT, 1, NAME, la, ROOT, NAME2, lb)), Err(errno::INVAL));
        // A link of a symlink is a second symlink to the same target.
        symlink(&mut t, "a", ROOT, "s").unwrap();
        link(&mut t, ROOT, "s", ROOT, "s2").unwrap();
        assert_eq!(readlink(&mut t, "s2", 64), Ok(b"a".to_vec()));
        // Rename of one link onto another of the same file does nothing.
        rename(&mut t, ROOT, "a", ROOT, "d/b").unwrap();
        assert_eq!(area.names(), ["a", "d/", "d/b", "s", "s2"]);
        // Removing one name keeps the other; an open last name keeps its data.
        unlink(&mut t, ROOT, "a").unwrap();
        assert_eq!(stat(&mut t, "d/b", false).map(|s| (s.1, s.2)), Ok((1, 6)));
        // A second run: the link still shares its file.
        let mut t = with_area(&area, 100);
        link(&mut t, ROOT, "d/b", ROOT, "c").unwrap();
        write_file(&mut t, ROOT, "c", b"again");
        let mut t = with_area(&area, 100);
        assert_eq!(read_file(&mut t, ROOT, "d/b"), Ok(b"again".to_vec()));
        let f = open_at(&mut t, ROOT, "c", 0, RW).unwrap();
        unlink(&mut t, ROOT, "c").unwrap();
        unlink(&mut t, ROOT, "d/b").unwrap();
        assert_eq!(t.read(f, 10), Ok(b"again".to_vec()));
        ok(t.c.fd_filestat_get(&mut t.mem, f, OUT)).unwrap();
        assert_eq!(parse_stat(&t).1, 0);
        assert_eq!(t.write(f, b"lost"), Ok(4));
        t.close(f).unwrap();
        assert_eq!(area.names(), ["d/", "s", "s2"]);
    }

    /// Times are stored with the file; `NOW` uses the node's clock.
    #[test]
    fn times_are_stored_and_follow_writes() {
        use core::sync::atomic::{AtomicU64, Ordering};
        let area = Shared::default();
        let now = Arc::new(AtomicU64::new(100));
        let clock = |now: &Arc<AtomicU64>| -> FileClock {
            let now = Arc::clone(now);
            Box::new(move || now.load(Ordering::Relaxed))
        };
        let mut t = with_area(&area, 1 << 20);
        t.c.set_file_clock(clock(&now));
        let f = open_at(&mut t, ROOT, "f", OFLAGS_CREAT, RW).unwrap();
        let times = |t: &mut T, p: &str| stat(t, p, false).map(|s| (s.4, s.5, s.6));
        assert_eq!(times(&mut t, "f"), Ok((100, 100, 100)));
        now.store(200, Ordering::Relaxed);
        t.write(f, b"data").unwrap();
        assert_eq!(times(&mut t, "f"), Ok((100, 200, 200)));
        t.close(f).unwrap();
        assert_eq!(area.0.lock().unwrap().meta("f").map(|m| (m.atim_ns, m.mtim_ns, m.ctim_ns)), Some((100, 200, 200)));
        // Reads leave atim alone (noatime).
        now.store(250, Ordering::Relaxed);
        assert_eq!(read_file(&mut t, ROOT, "f"), Ok(b"data".to_vec()));
        assert_eq!(times(&mut t, "f"), Ok((100, 200, 200)));
        // fd_filestat_set_times: given times; ctim is now. Durable at once.
        now.store(300, Ordering::Relaxed);
        let f = open_at(&mut t, ROOT, "f", 0, RIGHT_FD_READ).unwrap();
        ok(t.c.fd_filestat_set_times(f, 5, 6, 1 | 4)).unwrap();
        ok(t.c.fd_filestat_get(&mut t.mem, f, OUT)).unwrap();
        assert_eq!((parse_stat(&t).4, parse_stat(&t).5, parse_stat(&t).6), (5, 6, 300));
        assert_eq!(area.0.lock().unwrap().meta("f").map(|m| (m.atim_ns, m.mtim_ns)), Some((5, 6)));
        ok(t.c.fd_filestat_set_times(f, 0, 0, 2)).unwrap(); // atim now, mtim kept
        t.close(f).unwrap();
        assert_eq!(times(&mut t, "f"), Ok((300, 6, 300)));
        // path_filestat_set_times: NOW flags; directories and symlinks keep their own.
        now.store(400, Ordering::Relaxed);
        let l = t.name(b"f");
        ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, 0, NAME, l, 0, 0, 2 | 8)).unwrap();
        assert_eq!(times(&mut t, "f"), Ok((400, 400, 400)));
        mkdir(&mut t, ROOT, "d").unwrap();
        symlink(&mut t, "f", ROOT, "s").unwrap();
        now.store(500, Ordering::Relaxed);
        let l = t.name(b"d");
        ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, 0, NAME, l, 7, 8, 1 | 4)).unwrap();
        assert_eq!(times(&mut t, "d"), Ok((7, 8, 500)));
        let l = t.name(b"s");
        ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, 0, NAME, l, 9, 10, 1 | 4)).unwrap();
        assert_eq!(times(&mut t, "s"), Ok((9, 10, 500)));
        assert_eq!(times(&mut t, "f"), Ok((400, 400, 400)));
        ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, 1, NAME, l, 11, 12, 1 | 4)).unwrap();
        assert_eq!(times(&mut t, "f"), Ok((11, 12, 500)));
        // A directory fd sets its directory's times.
        let d = open_at(&mut t, ROOT, "d", OFLAGS_DIRECTORY, 0).unwrap();
        ok(t.c.fd_filestat_set_times(d, 13, 14, 1 | 4)).unwrap();
        assert_eq!(times(&mut t, "d"), Ok((13, 14, 500)));
        // Argument errors as on wasmtime.
        assert_eq!(ok(t.c.fd_filestat_set_times(d, 0, 0, 1 | 2)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_filestat_set_times(d, 0, 0, 4 | 8)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_filestat_set_times(d, 0, 0, 16)), Err(errno::INVAL));
        assert_eq!(ok(t.c.fd_filestat_set_times(99, 0, 0, 1)), Err(errno::BADF));
        assert_eq!(ok(t.c.fd_filestat_set_times(1, 0, 0, 1)), Err(errno::BADF));
        let l = t.name(b"g");
        assert_eq!(ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, 0, NAME, l, 0, 0, 1)), Err(errno::NOENT));
        let l = t.name(b"..");
        assert_eq!(ok(t.c.path_filestat_set_times(&mut t.mem, ROOT, 0, NAME, l, 0, 0, 1)), Err(errno::PERM));
        // A second run reads the stored times.
        let mut t = with_area(&area, 1 << 20);
        assert_eq!(times(&mut t, "f"), Ok((11, 12, 500)));
        assert_eq!(times(&mut t, "d"), Ok((13, 14, 500)));
    }

    #[test]
    fn advice_and_allocate() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        let f = open_at(&mut t, ROOT, "f", OFLAGS_CREAT, RW).unwrap();
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

    /// Rust's `remove_dir_all` and `rm -r` remove entries while they list the
    /// directory: with cookies that are hashes of the names nothing is skipped.
    #[test]
    fn removing_entries_while_listing_skips_none() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        mkdir(&mut t, ROOT, "d").unwrap();
        for i in 0..50 {
            write_file(&mut t, ROOT, &alloc::format!("d/entry{i:02}"), b"");
        }
        let d = open_at(&mut t, ROOT, "d", OFLAGS_DIRECTORY, 0).unwrap();
        let mut cookie = 0;
        for _ in 0..100 {
            // A buffer for a few entries at a time, as wasi-libc's readdir refills.
            let batch = readdir(&mut t, d, cookie, 100);
            let batch: Vec<_> = batch.into_iter().take(3).collect();
            if batch.is_empty() {
                break;
            }
            for (next, name) in &batch {
                if name != "." && name != ".." {
                    unlink(&mut t, d, name).unwrap();
                }
                cookie = *next;
            }
        }
        assert_eq!(ls(&mut t, "d"), [".", ".."]);
        rmdir(&mut t, ROOT, "d").unwrap();
    }

    /// The per-area bounds: names (1024) and bytes of names (64 KiB), each `ENOSPC`
    /// for a create, mkdir, symlink or link past it.
    #[test]
    fn many_names_and_long_names_are_bounded() {
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        let c255 = |i: usize| alloc::format!("{i:03}{}", "n".repeat(MAX_NAME_BYTES - 3));
        let mut made = 0;
        while made < MAX_FILES {
            if mkdir(&mut t, ROOT, &c255(made)).is_err() {
                break;
            }
            made += 1;
        }
        // 256 names of 256 bytes (markers) reach 64 KiB.
        assert_eq!(made, MAX_AREA_NAME_BYTES / (MAX_NAME_BYTES + 1));
        assert_eq!(mkdir(&mut t, ROOT, &c255(made)), Err(errno::NOSPC));
        assert_eq!(open_at(&mut t, ROOT, &c255(made), OFLAGS_CREAT, RW), Err(errno::NOSPC));
        assert_eq!(symlink(&mut t, "x", ROOT, &c255(made)), Err(errno::NOSPC));
        // A rename that makes names longer past the bound, too.
        assert_eq!(rename(&mut t, ROOT, &c255(1), ROOT, &alloc::format!("{}/{}", c255(0), c255(1))), Err(errno::NOSPC));
        rename(&mut t, ROOT, &c255(1), ROOT, &c255(made)).unwrap();
        // Short names up to the count.
        let area = Shared::default();
        let mut t = with_area(&area, 1 << 20);
        write_file(&mut t, ROOT, "f", b"1");
        for i in 1..MAX_FILES - 1 {
            symlink(&mut t, "f", ROOT, &alloc::format!("s{i}")).unwrap();
        }
        link(&mut t, ROOT, "f", ROOT, "last").unwrap();
        assert_eq!(link(&mut t, ROOT, "f", ROOT, "more"), Err(errno::NOSPC));
        assert_eq!(symlink(&mut t, "f", ROOT, "more"), Err(errno::NOSPC));
        assert_eq!(mkdir(&mut t, ROOT, "more"), Err(errno::NOSPC));
        assert_eq!(area.names().len(), MAX_FILES);
        // Symlink targets count against the quota.
        let area = Shared::default();
        let mut t = with_area(&area, 10);
        symlink(&mut t, "0123456789", ROOT, "ten").unwrap();
        assert_eq!(symlink(&mut t, "x", ROOT, "one"), Err(errno::NOSPC));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::test_cases(64)))]
        /// Random trees of files, directories, symlinks (inside and outside targets) and
        /// hard links under a small quota: no panic, only errnos these calls give on
        /// wasmtime, the quota holds counting each inode once, hard links agree, and a
        /// second run on the area sees every name with its kind.
        #[test]
        fn random_trees_keep_their_invariants(ops in proptest::collection::vec((0u8..8, 0usize..6, 0usize..6, 0u32..40), 1..40)) {
            const QUOTA: u64 = 64;
            let names = ["a", "b", "d/x", "d/e/y", "../z", "d/e/../../b"];
            let targets = ["a", "../a", "/abs", "d", "d/e/y", "l"];
            let area = Shared::default();
            let mut t = with_area(&area, QUOTA);
            let _ = mkdir(&mut t, ROOT, "d");
            let allowed = [errno::NOENT, errno::EXIST, errno::NOTDIR, errno::ISDIR, errno::NOSPC, errno::PERM, errno::LOOP,
                errno::NOTEMPTY, errno::INVAL, errno::BUSY];
            for (op, x, y, n) in ops {
                let (p, q) = (names[x], names[y]);
                let r = match op {
                    0 => open_at(&mut t, ROOT, p, OFLAGS_CREAT, RW).and_then(|f| {
                        let w = t.write(f, &alloc::vec![7u8; n as usize]).map(|_| ());
                        t.close(f)?;
                        w
                    }),
                    1 => mkdir(&mut t, ROOT, p),
                    2 => symlink(&mut t, targets[y], ROOT, p),
                    3 => link(&mut t, ROOT, p, ROOT, q),
                    4 => rename(&mut t, ROOT, p, ROOT, q),
                    5 => unlink(&mut t, ROOT, p),
                    6 => rmdir(&mut t, ROOT, p),
                    _ => read_file(&mut t, ROOT, p).map(|_| ()),
                };
                if let Err(e) = r {
                    proptest::prop_assert!(allowed.contains(&e), "op {op} {p} {q}: errno {e}");
                }
                // The area as stored: inodes counted once within the quota, links agree.
                let listed = area.0.lock().unwrap().list_meta().unwrap();
                let mut inodes: Vec<(u64, u64)> = listed.iter().filter(|(_, _, m)| m.ino != 0).map(|(_, s, m)| (m.ino, *s)).collect();
                inodes.sort_unstable();
                for w in inodes.windows(2) {
                    proptest::prop_assert!(w[0].0 != w[1].0 || w[0].1 == w[1].1, "links disagree");
                }
                inodes.dedup_by_key(|(ino, _)| *ino);
                proptest::prop_assert!(inodes.iter().map(|(_, s)| s).sum::<u64>() <= QUOTA);
                // Nothing outside the area was ever named.
                proptest::prop_assert!(listed.iter().all(|(n, _, _)| !n.starts_with('/') && !n.split('/').any(|c| c == "..")));
            }
            let mut again = with_area(&area, QUOTA);
            let stored = area.0.lock().unwrap().list_meta().unwrap();
            for (name, _, meta) in stored {
                let path = name.trim_end_matches('/');
                let want = match meta.kind {
                    FileKind::Directory => FILETYPE_DIRECTORY,
                    FileKind::Symlink => FILETYPE_SYMBOLIC_LINK,
                    FileKind::Regular => FILETYPE_REGULAR_FILE,
                };
                proptest::prop_assert_eq!(stat(&mut again, path, false).map(|s| s.0), Ok(want), "{}", name);
            }
        }
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
