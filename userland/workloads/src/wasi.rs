//! WASI preview 1 (`wasi_snapshot_preview1`) host functions for ordinary programs.
//!
//! Each function works on the workload's linear memory as a byte slice and on a
//! [`WasiCtx`]; clocks and entropy come from a [`HostServices`] implementation, so
//! everything here runs (and is tested) on the host. Output to fd 1 and 2 goes to
//! the workload's capped [`Log`]; stdin is empty unless the node gives the run an
//! input ([`WasiCtx::set_stdin`], held in memory, read once).
//!
//! Two optional services, both traits the kernel implements:
//! - a persistent file area ([`FileArea`], [`fs`]): the preopened directory `/data`,
//!   a directory tree, quota-checked, whole files committed on close and sync;
//! - listening TCP sockets ([`Sockets`], [`net`]): `sock_accept`, `sock_recv`,
//!   `sock_send`, `sock_shutdown` on preopened listeners.
//!
//! `poll_oneoff` ([`poll`]) waits on clocks and fds; it parks the workload with
//! [`HostServices::wait_until`].
//!
//! File descriptors: 0, 1, 2 are stdin, stdout, stderr; then the preopens in this
//! order: `/data` and `.` (both the area's root, only with a file area), then one
//! listener per port of [`WasiCtx::attach_sockets`], in the given order. So with a
//! file area fd 3 is `/data`, fd 4 is `.` and the listeners are 5, 6, ...; without
//! one, the listeners start at 3.
//! `fd_prestat_get` answers `BADF` on a listener, which ends wasi-libc's preopen scan.
//! Files, directories and connections a program opens take the lowest free numbers
//! above those, at most [`MAX_OPEN_FDS`] at a time.
//!
//! A function returns `Ok(errno)` for the program to see, or `Err(Stop)` when the
//! workload must stop (it called `proc_exit`, its log is full, or a blocking call was
//! interrupted by a limit).

mod area;
pub mod fs;
pub mod net;
pub mod poll;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use crate::log::{Log, Stream};

pub use area::{check_name, FileArea, FileAreaError, FileKind, FileMeta, MemFileArea, MAX_AREA_NAME_BYTES, MAX_FILES, MAX_NAME_BYTES};
pub use net::{ConnId, ConnReadiness, Interrupt, MemConn, MemEvent, MemSockets, Shutdown, SockError, Sockets};
pub use poll::MAX_SUBSCRIPTIONS;

/// Clock, entropy and parking services of the node.
pub trait HostServices {
    /// Nanoseconds since the Unix epoch.
    fn realtime_ns(&mut self) -> u64;
    /// Nanoseconds since an arbitrary fixed point (boot).
    fn monotonic_ns(&mut self) -> u64;
    /// Fills `buf` with random bytes.
    fn random(&mut self, buf: &mut [u8]);
    /// Parks the workload (`poll_oneoff` found nothing ready): returns `Ok` once
    /// [`Self::monotonic_ns`] has reached `monotonic_deadline_ns`, or earlier when
    /// something may have changed (a socket of the workload may have become ready; a
    /// spurious early return is fine, the caller checks again). `None`: no deadline,
    /// only a socket can end the wait. `Err` when the workload must stop instead (its
    /// CPU or wall limit passed, or it was stopped), as [`Sockets::wait`]. This is the
    /// only bound on a blocked `poll_oneoff`.
    ///
    /// The default cannot park, so it ends the workload (`Stopped`) rather than
    /// spinning: a real host must override it.
    fn wait_until(&mut self, monotonic_deadline_ns: Option<u64>) -> Result<(), Interrupt> {
        let _ = monotonic_deadline_ns;
        Err(Interrupt::Stopped)
    }
    /// The memory limiter let the workload's linear memory grow to `bytes` (its first
    /// allocation included), so the host can report what the workload holds. The
    /// default ignores it.
    fn memory_granted(&mut self, bytes: u64) {
        let _ = bytes;
    }
}

/// WASI errno values used here.
pub mod errno {
    pub const SUCCESS: u32 = 0;
    pub const AGAIN: u32 = 6;
    pub const BADF: u32 = 8;
    pub const BUSY: u32 = 10;
    pub const CONNRESET: u32 = 15;
    pub const EXIST: u32 = 20;
    pub const FAULT: u32 = 21;
    pub const FBIG: u32 = 22;
    pub const ILSEQ: u32 = 25;
    pub const INVAL: u32 = 28;
    pub const IO: u32 = 29;
    pub const ISDIR: u32 = 31;
    pub const MFILE: u32 = 33;
    pub const NAMETOOLONG: u32 = 37;
    pub const NOENT: u32 = 44;
    pub const NOMEM: u32 = 48;
    pub const NOSPC: u32 = 51;
    pub const NOSYS: u32 = 52;
    pub const NOTCONN: u32 = 53;
    pub const NOTDIR: u32 = 54;
    pub const NOTEMPTY: u32 = 55;
    pub const NOTSOCK: u32 = 57;
    pub const NOTSUP: u32 = 58;
    pub const OVERFLOW: u32 = 61;
    pub const PERM: u32 = 63;
    pub const PIPE: u32 = 64;
    pub const SPIPE: u32 = 70;
    pub const NOTCAPABLE: u32 = 76;
    pub const LOOP: u32 = 32;
}

/// Why a WASI call ends the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Exit(u32),
    LogFull,
    /// A blocking call was interrupted by a limit ([`Sockets::wait`],
    /// [`HostServices::wait_until`]).
    Interrupted(Interrupt),
}

pub type WasiResult = Result<u32, Stop>;

/// The module name of every function here.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// The functions this host implements (anything else a module imports is refused).
pub const SUPPORTED: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "random_get",
    "fd_write",
    "fd_read",
    "fd_pread",
    "fd_pwrite",
    "fd_close",
    "fd_seek",
    "fd_tell",
    "fd_sync",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_readdir",
    "path_open",
    "path_filestat_get",
    "path_unlink_file",
    "path_create_directory",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_link",
    "path_readlink",
    "path_filestat_set_times",
    "fd_renumber",
    "fd_allocate",
    "fd_advise",
    "fd_fdstat_set_rights",
    "fd_filestat_set_times",
    "proc_raise",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
    "poll_oneoff",
    "proc_exit",
    "sched_yield",
];

/// Most files, directories and connections a program may have open at once (stdio
/// and preopens not counted).
pub const MAX_OPEN_FDS: usize = 16;

/// What a file descriptor refers to.
enum Kind {
    Stdin,
    Stdout,
    Stderr,
    /// A directory of the file area: a preopen (`/data`, `.`) or one a program opened.
    Dir(fs::DirFd),
    File(fs::OpenFile),
    Listener(u16),
    Conn(ConnId),
}

struct Entry {
    kind: Kind,
    /// WASI fdflags (`APPEND`, `NONBLOCK`, `SYNC`, ...).
    fdflags: u16,
    /// Opened by the program (counts against [`MAX_OPEN_FDS`]), not a preopen or stdio.
    opened: bool,
    /// Base and inheriting rights the program kept with `fd_fdstat_set_rights` (all
    /// at first): only ever narrowed; `fd_fdstat_get` reports the fd's rights masked.
    rights_mask: [u64; 2],
}

/// Per-workload WASI state.
pub struct WasiCtx {
    args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    pub log: Log,
    fds: Vec<Option<Entry>>,
    files: Option<fs::Files>,
    /// The name of the area's first preopen (`/data` unless the manifest maps it).
    preopen_dir: String,
    sockets: Option<Box<dyn Sockets + Send>>,
    listeners: Vec<u16>,
    /// What fd 0 reads, and how much of it was read.
    stdin: Vec<u8>,
    stdin_pos: usize,
}

impl fmt::Debug for WasiCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasiCtx")
            .field("args", &self.args.len())
            .field("fds", &self.fds.iter().filter(|e| e.is_some()).count())
            .field("files", &self.files.is_some())
            .field("listeners", &self.listeners)
            .finish()
    }
}

const FDFLAGS_APPEND: u16 = 1;
const FDFLAGS_DSYNC: u16 = 2;
const FDFLAGS_NONBLOCK: u16 = 4;
const FDFLAGS_RSYNC: u16 = 8;
const FDFLAGS_SYNC: u16 = 16;

const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;
const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const FILETYPE_DIRECTORY: u8 = 3;
const FILETYPE_REGULAR_FILE: u8 = 4;
const FILETYPE_SOCKET_STREAM: u8 = 6;
const FILETYPE_SYMBOLIC_LINK: u8 = 7;
const MAX_IOVS: u32 = 1024;
/// The last WASI signal number (`SIGSYS`).
const MAX_SIGNAL: u32 = 30;

/// Most bytes one write-like call (`fd_write`, `fd_pwrite`, `sock_send`) copies out of
/// guest memory. A longer request is a short write of this many bytes, which POSIX
/// and WASI programs already handle (wasi-libc's `fwrite` and `write_all` loops send
/// the rest). Without this bound 1024 iovecs over the same 1 MiB of guest memory ask
/// the node for a 1 GiB copy; with it, one call costs at most 1 MiB of kernel heap
/// (wasmtime's WASI hosts bound their copies the same way).
pub const MAX_IO_BYTES: usize = 1 << 20;

/// Longest path a call accepts (POSIX `PATH_MAX`), and the longest full path in the
/// file area (each component at most [`MAX_NAME_BYTES`]).
pub const MAX_PATH_BYTES: u32 = 4096;

/// A zeroed buffer of `len` bytes, or `ENOMEM` when the node's heap cannot give it:
/// allocation driven by a workload fails the call, never the node.
pub(crate) fn try_zeroed(len: usize) -> Result<Vec<u8>, u32> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| errno::NOMEM)?;
    v.resize(len, 0);
    Ok(v)
}

/// A copy of `bytes`, or `ENOMEM` (see [`try_zeroed`]).
pub(crate) fn try_copy(bytes: &[u8]) -> Result<Vec<u8>, u32> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes.len()).map_err(|_| errno::NOMEM)?;
    v.extend_from_slice(bytes);
    Ok(v)
}

/// The path argument of a `path_*` call: in memory (`FAULT`) and at most
/// [`MAX_PATH_BYTES`] long (`NAMETOOLONG`), copied so the context can be borrowed.
fn path_arg(mem: &[u8], ptr: u32, len: u32) -> Result<Vec<u8>, u32> {
    let r = range(mem, ptr, len)?;
    if len > MAX_PATH_BYTES {
        return Err(errno::NAMETOOLONG);
    }
    try_copy(&mem[r])
}

fn range(mem: &[u8], ptr: u32, len: u32) -> Result<Range<usize>, u32> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(errno::FAULT)?;
    if end > mem.len() {
        return Err(errno::FAULT);
    }
    Ok(start..end)
}

fn read_u32(mem: &[u8], ptr: u32) -> Result<u32, u32> {
    let r = range(mem, ptr, 4)?;
    let mut b = [0u8; 4];
    b.copy_from_slice(&mem[r]);
    Ok(u32::from_le_bytes(b))
}

fn write_bytes(mem: &mut [u8], ptr: u32, bytes: &[u8]) -> Result<(), u32> {
    let len = u32::try_from(bytes.len()).map_err(|_| errno::OVERFLOW)?;
    let r = range(mem, ptr, len)?;
    mem[r].copy_from_slice(bytes);
    Ok(())
}

fn write_u32(mem: &mut [u8], ptr: u32, v: u32) -> Result<(), u32> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

fn write_u64(mem: &mut [u8], ptr: u32, v: u64) -> Result<(), u32> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

/// Turns an inner `Result<(), errno>` into the errno the program sees.
fn done(r: Result<(), u32>) -> WasiResult {
    Ok(match r {
        Ok(()) => errno::SUCCESS,
        Err(e) => e,
    })
}

/// An errno for the program, or a reason to stop the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Errno(u32),
    Stop(Stop),
}

impl From<u32> for Fail {
    fn from(e: u32) -> Self {
        Fail::Errno(e)
    }
}

/// [`done`] for calls that may also stop the workload.
fn finish(r: Result<(), Fail>) -> WasiResult {
    match r {
        Ok(()) => Ok(errno::SUCCESS),
        Err(Fail::Errno(e)) => Ok(e),
        Err(Fail::Stop(s)) => Err(s),
    }
}

/// The memory ranges of an iovec array, all checked before anything is read or written.
fn iovecs(mem: &[u8], iovs: u32, iovs_len: u32) -> Result<Vec<Range<usize>>, u32> {
    if iovs_len > MAX_IOVS {
        return Err(errno::INVAL);
    }
    let mut out = Vec::new();
    out.try_reserve_exact(iovs_len as usize).map_err(|_| errno::NOMEM)?;
    for i in 0..iovs_len {
        let iov = iovs.checked_add(8 * i).ok_or(errno::FAULT)?;
        let ptr = read_u32(mem, iov)?;
        let len = read_u32(mem, iov.checked_add(4).ok_or(errno::FAULT)?)?;
        out.push(range(mem, ptr, len)?);
    }
    Ok(out)
}

/// Gathers the iovecs of a write into one buffer of at most [`MAX_IO_BYTES`] (the
/// first bytes of the request, in order: a short write). Every iovec is checked first;
/// the total is counted with checked arithmetic and only the capped length is
/// allocated, fallibly (`ENOMEM`).
fn gather(mem: &[u8], iovs: u32, iovs_len: u32) -> Result<Vec<u8>, u32> {
    let ranges = iovecs(mem, iovs, iovs_len)?;
    let total = ranges.iter().try_fold(0usize, |sum, r| sum.checked_add(r.len())).ok_or(errno::OVERFLOW)?;
    let take = total.min(MAX_IO_BYTES);
    let mut data = Vec::new();
    data.try_reserve_exact(take).map_err(|_| errno::NOMEM)?;
    for r in ranges {
        let n = r.len().min(take - data.len());
        data.extend_from_slice(&mem[r.start..r.start + n]);
        if data.len() == take {
            break;
        }
    }
    debug_assert_eq!(data.len(), take);
    Ok(data)
}

/// Copies `data` into the (already checked) iovec ranges; returns the bytes copied.
fn scatter(mem: &mut [u8], ranges: &[Range<usize>], data: &[u8]) -> usize {
    let mut at = 0;
    for r in ranges {
        let n = r.len().min(data.len() - at);
        mem[r.start..r.start + n].copy_from_slice(&data[at..at + n]);
        at += n;
        if at == data.len() {
            break;
        }
    }
    at
}

fn nul_terminated(items: &[String]) -> Vec<Vec<u8>> {
    items
        .iter()
        .map(|s| {
            let mut v: Vec<u8> = s.bytes().filter(|&b| b != 0).collect();
            v.push(0);
            v
        })
        .collect()
}

impl WasiCtx {
    pub fn new(args: &[String], env: &[String], log_cap: usize) -> Self {
        let stdio = |kind| Some(Entry { kind, fdflags: 0, opened: false, rights_mask: [u64::MAX; 2] });
        WasiCtx {
            args: nul_terminated(args),
            env: nul_terminated(env),
            log: Log::new(log_cap),
            fds: alloc::vec![stdio(Kind::Stdin), stdio(Kind::Stdout), stdio(Kind::Stderr)],
            files: None,
            preopen_dir: fs::PREOPEN_NAME.into(),
            sockets: None,
            listeners: Vec::new(),
            stdin: Vec::new(),
            stdin_pos: 0,
        }
    }

    /// Gives the program `bytes` as its standard input (fd 0 reads them, then end of
    /// file). Call before the program runs.
    pub fn set_stdin(&mut self, bytes: Vec<u8>) {
        self.stdin = bytes;
        self.stdin_pos = 0;
    }

    /// Gives the program the file area `area` as `/data`, capped at `quota_bytes`
    /// (committed plus open bytes). Call before the program runs.
    pub fn attach_files(&mut self, area: Box<dyn FileArea + Send>, quota_bytes: u64) {
        self.attach_files_at(area, quota_bytes, fs::PREOPEN_NAME);
    }

    /// [`WasiCtx::attach_files`] with the area preopened as `guest_dir` instead of
    /// `/data` (the manifest's `data_dir`, checked by [`crate::manifest`]); `.` is the
    /// area too.
    pub fn attach_files_at(&mut self, area: Box<dyn FileArea + Send>, quota_bytes: u64, guest_dir: &str) {
        self.files = Some(fs::Files::new(area, quota_bytes));
        self.preopen_dir = guest_dir.into();
        self.place_preopens();
    }

    /// The node's realtime clock for file times (mtim on writes, the `NOW` flags of
    /// `*_set_times`); without one those times are 0. Call after attaching files.
    pub fn set_file_clock(&mut self, clock: fs::FileClock) {
        if let Some(files) = self.files.as_mut() {
            files.set_clock(clock);
        }
    }

    /// Gives the program one preopened listening socket per port of `listeners` (see
    /// the module docs for their fd numbers). Call before the program runs.
    pub fn attach_sockets(&mut self, sockets: Box<dyn Sockets + Send>, listeners: &[u16]) {
        self.sockets = Some(sockets);
        self.listeners = listeners.to_vec();
        self.place_preopens();
    }

    /// The fd of the listener for `port`, if there is one.
    pub fn listener_fd(&self, port: u16) -> Option<u32> {
        self.fds.iter().position(|e| matches!(e, Some(Entry { kind: Kind::Listener(p), .. }) if *p == port)).map(|i| i as u32)
    }

    fn place_preopens(&mut self) {
        assert!(self.fds.iter().all(|e| !matches!(e, Some(Entry { opened: true, .. }))), "preopens placed after the program opened fds");
        self.fds.truncate(3);
        let pre = |kind| Some(Entry { kind, fdflags: 0, opened: false, rights_mask: [u64::MAX; 2] });
        if self.files.is_some() {
            let dir = core::mem::take(&mut self.preopen_dir);
            for name in [dir.as_str(), "."] {
                self.fds.push(pre(Kind::Dir(fs::DirFd::preopen(name))));
            }
            self.preopen_dir = dir;
        }
        for &p in &self.listeners {
            self.fds.push(pre(Kind::Listener(p)));
        }
    }

    fn entry(&mut self, fd: u32) -> Result<&mut Entry, u32> {
        self.fds.get_mut(fd as usize).and_then(Option::as_mut).ok_or(errno::BADF)
    }

    /// Puts `entry` at the lowest free fd.
    fn insert(&mut self, kind: Kind, fdflags: u16) -> Result<u32, u32> {
        if self.fds.iter().flatten().filter(|e| e.opened).count() >= MAX_OPEN_FDS {
            return Err(errno::MFILE);
        }
        let entry = Some(Entry { kind, fdflags, opened: true, rights_mask: [u64::MAX; 2] });
        let fd = match self.fds.iter().position(Option::is_none) {
            Some(i) => {
                self.fds[i] = entry;
                i
            }
            None => {
                self.fds.push(entry);
                self.fds.len() - 1
            }
        };
        Ok(fd as u32)
    }

    fn sizes(list: &[Vec<u8>], mem: &mut [u8], count_ptr: u32, size_ptr: u32) -> WasiResult {
        let count = u32::try_from(list.len()).unwrap_or(u32::MAX);
        let size = u32::try_from(list.iter().map(Vec::len).sum::<usize>()).unwrap_or(u32::MAX);
        done(write_u32(mem, count_ptr, count).and_then(|()| write_u32(mem, size_ptr, size)))
    }

    fn get(list: &[Vec<u8>], mem: &mut [u8], ptrs: u32, buf: u32) -> WasiResult {
        let r = (|| {
            let mut at = buf;
            for (i, item) in list.iter().enumerate() {
                let slot = ptrs.checked_add(4 * i as u32).ok_or(errno::FAULT)?;
                write_u32(mem, slot, at)?;
                write_bytes(mem, at, item)?;
                at = at.checked_add(item.len() as u32).ok_or(errno::FAULT)?;
            }
            Ok(())
        })();
        done(r)
    }

    pub fn args_sizes_get(&mut self, mem: &mut [u8], argc: u32, buf_size: u32) -> WasiResult {
        Self::sizes(&self.args, mem, argc, buf_size)
    }

    pub fn args_get(&mut self, mem: &mut [u8], argv: u32, buf: u32) -> WasiResult {
        Self::get(&self.args, mem, argv, buf)
    }

    pub fn environ_sizes_get(&mut self, mem: &mut [u8], count: u32, buf_size: u32) -> WasiResult {
        Self::sizes(&self.env, mem, count, buf_size)
    }

    pub fn environ_get(&mut self, mem: &mut [u8], environ: u32, buf: u32) -> WasiResult {
        Self::get(&self.env, mem, environ, buf)
    }

    pub fn clock_res_get(&mut self, mem: &mut [u8], id: u32, out: u32) -> WasiResult {
        if id > 3 {
            return Ok(errno::INVAL);
        }
        done(write_u64(mem, out, 1000))
    }

    /// Clocks 0 (realtime), 1 (monotonic), 2 and 3 (process/thread CPU time, answered
    /// with the monotonic clock).
    pub fn clock_time_get(&mut self, host: &mut dyn HostServices, mem: &mut [u8], id: u32, out: u32) -> WasiResult {
        let t = match id {
            0 => host.realtime_ns(),
            1..=3 => host.monotonic_ns(),
            _ => return Ok(errno::INVAL),
        };
        done(write_u64(mem, out, t))
    }

    pub fn random_get(&mut self, host: &mut dyn HostServices, mem: &mut [u8], buf: u32, len: u32) -> WasiResult {
        match range(mem, buf, len) {
            Ok(r) => {
                host.random(&mut mem[r]);
                Ok(errno::SUCCESS)
            }
            Err(e) => Ok(e),
        }
    }

    pub fn fd_write(&mut self, mem: &mut [u8], fd: u32, iovs: u32, iovs_len: u32, nwritten: u32) -> WasiResult {
        let r = (|| {
            let stream = match self.entry(fd)?.kind {
                Kind::Stdout => Stream::Stdout,
                Kind::Stderr => Stream::Stderr,
                Kind::File(_) => {
                    let data = gather(mem, iovs, iovs_len)?;
                    range(mem, nwritten, 4)?;
                    let n = self.file_write(fd, &data, None)?;
                    return Ok(write_u32(mem, nwritten, n as u32)?);
                }
                Kind::Conn(_) => {
                    let data = gather(mem, iovs, iovs_len)?;
                    range(mem, nwritten, 4)?;
                    let n = self.conn_send(fd, &data)?;
                    return Ok(write_u32(mem, nwritten, n as u32)?);
                }
                _ => return Err(Fail::Errno(errno::BADF)),
            };
            let data = gather(mem, iovs, iovs_len)?;
            // Check the result pointer before accepting output, so a fault writes nothing.
            range(mem, nwritten, 4)?;
            self.log.write(stream, &data).map_err(|_| Fail::Stop(Stop::LogFull))?;
            Ok(write_u32(mem, nwritten, data.len() as u32)?)
        })();
        finish(r)
    }

    /// stdin reads what [`Self::set_stdin`] gave, then 0 bytes (end of file).
    pub fn fd_read(&mut self, mem: &mut [u8], fd: u32, iovs: u32, iovs_len: u32, nread: u32) -> WasiResult {
        let r = (|| {
            let n = match self.entry(fd)?.kind {
                Kind::Stdin => {
                    let ranges = iovecs(mem, iovs, iovs_len)?;
                    range(mem, nread, 4)?;
                    let rest = self.stdin.get(self.stdin_pos..).unwrap_or_default();
                    let n = scatter(mem, &ranges, rest);
                    self.stdin_pos += n;
                    if self.stdin_pos >= self.stdin.len() && !self.stdin.is_empty() {
                        // Read through: give the memory back.
                        self.stdin = Vec::new();
                        self.stdin_pos = 0;
                    }
                    n
                }
                Kind::File(_) => {
                    let ranges = iovecs(mem, iovs, iovs_len)?;
                    range(mem, nread, 4)?;
                    self.file_read(fd, mem, &ranges, None)?
                }
                Kind::Conn(_) => {
                    let ranges = iovecs(mem, iovs, iovs_len)?;
                    range(mem, nread, 4)?;
                    self.conn_recv(fd, mem, &ranges)?
                }
                Kind::Dir(_) => return Err(Fail::Errno(errno::ISDIR)),
                _ => return Err(Fail::Errno(errno::BADF)),
            };
            Ok(write_u32(mem, nread, n as u32)?)
        })();
        finish(r)
    }

    /// Closing stdio is accepted and changes nothing; closing a file commits it.
    pub fn fd_close(&mut self, fd: u32) -> WasiResult {
        let r = (|| {
            let entry = self.entry(fd)?;
            if matches!(entry.kind, Kind::Stdin | Kind::Stdout | Kind::Stderr) {
                return Ok(());
            }
            let Some(entry) = self.fds[fd as usize].take() else { return Err(errno::BADF) };
            match entry.kind {
                Kind::File(f) => self.file_close(f),
                Kind::Conn(c) => {
                    if let Some(s) = self.sockets.as_mut() {
                        s.close(c);
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })();
        done(r)
    }

    pub fn fd_seek(&mut self, mem: &mut [u8], fd: u32, offset: i64, whence: u32, out: u32) -> WasiResult {
        let r = (|| {
            match self.entry(fd)?.kind {
                Kind::File(_) => {}
                Kind::Dir(_) => return Err(errno::ISDIR),
                _ => return Err(errno::SPIPE),
            }
            range(mem, out, 8)?;
            let pos = self.file_seek(fd, offset, whence)?;
            write_u64(mem, out, pos)
        })();
        done(r)
    }

    pub fn fd_tell(&mut self, mem: &mut [u8], fd: u32, out: u32) -> WasiResult {
        self.fd_seek(mem, fd, 0, 1, out)
    }

    /// stdin/stdout/stderr are character devices (so wasi-libc line-buffers stdout).
    pub fn fd_fdstat_get(&mut self, mem: &mut [u8], fd: u32, out: u32) -> WasiResult {
        let r = (|| {
            let entry = self.entry(fd)?;
            let (filetype, base, inheriting) = match &entry.kind {
                Kind::Stdin => (FILETYPE_CHARACTER_DEVICE, RIGHT_FD_READ, 0),
                Kind::Stdout | Kind::Stderr => (FILETYPE_CHARACTER_DEVICE, RIGHT_FD_WRITE, 0),
                Kind::Dir(_) => (FILETYPE_DIRECTORY, fs::RIGHTS_DIR, fs::RIGHTS_DIR | fs::RIGHTS_FILE),
                Kind::File(f) => (FILETYPE_REGULAR_FILE, f.rights(), 0),
                Kind::Listener(_) => (FILETYPE_SOCKET_STREAM, net::RIGHTS_LISTENER, net::RIGHTS_CONN),
                Kind::Conn(_) => (FILETYPE_SOCKET_STREAM, net::RIGHTS_CONN, 0),
            };
            let mut stat = [0u8; 24];
            stat[0] = filetype;
            stat[2..4].copy_from_slice(&entry.fdflags.to_le_bytes());
            stat[8..16].copy_from_slice(&(base & entry.rights_mask[0]).to_le_bytes());
            stat[16..24].copy_from_slice(&(inheriting & entry.rights_mask[1]).to_le_bytes());
            write_bytes(mem, out, &stat)
        })();
        done(r)
    }

    /// Sockets and files take `NONBLOCK` (and files `APPEND`); stdio takes nothing.
    pub fn fd_fdstat_set_flags(&mut self, fd: u32, flags: u32) -> WasiResult {
        let r = (|| {
            let entry = self.entry(fd)?;
            let allowed = match entry.kind {
                Kind::Stdin | Kind::Stdout | Kind::Stderr => return Err(errno::NOTSUP),
                Kind::Listener(_) | Kind::Conn(_) => FDFLAGS_NONBLOCK,
                Kind::File(_) => FDFLAGS_NONBLOCK | FDFLAGS_APPEND,
                Kind::Dir(_) => FDFLAGS_NONBLOCK,
            };
            let flags = u16::try_from(flags).map_err(|_| errno::INVAL)?;
            if flags & !allowed != 0 {
                return Err(errno::NOTSUP);
            }
            entry.fdflags = (entry.fdflags & !allowed) | flags;
            Ok(())
        })();
        done(r)
    }

    pub fn proc_exit(&mut self, code: u32) -> WasiResult {
        self.log.flush();
        Err(Stop::Exit(code))
    }

    /// A signal ends the workload cleanly, as an exit with code 128 + signal (the
    /// shell's convention; wasmtime traps instead). Signal 0 (`none`) does nothing;
    /// numbers past `SIGSYS` (30) are `EINVAL`.
    pub fn proc_raise(&mut self, signal: u32) -> WasiResult {
        match signal {
            0 => Ok(errno::SUCCESS),
            1..=MAX_SIGNAL => {
                self.log.flush();
                Err(Stop::Exit(128 + signal))
            }
            _ => Ok(errno::INVAL),
        }
    }

    /// Moves `from` onto `to`, closing what `to` held (a file is committed as by
    /// `fd_close`). Both must be open (`BADF`); preopens cannot be renumbered nor
    /// replaced (`NOTSUP`, as wasmtime's wasi-common), since wasi-libc keeps their
    /// numbers.
    pub fn fd_renumber(&mut self, from: u32, to: u32) -> WasiResult {
        let r = (|| {
            let is_preopen = |e: &Entry| !e.opened && matches!(e.kind, Kind::Dir(_) | Kind::Listener(_));
            if is_preopen(self.entry(from)?) || is_preopen(self.entry(to)?) {
                return Err(errno::NOTSUP);
            }
            if from == to {
                return Ok(());
            }
            let Some(moved) = self.fds[from as usize].take() else { return Err(errno::BADF) };
            let old = self.fds[to as usize].replace(moved);
            match old.map(|e| e.kind) {
                Some(Kind::File(f)) => self.file_close(f),
                Some(Kind::Conn(c)) => {
                    if let Some(s) = self.sockets.as_mut() {
                        s.close(c);
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })();
        done(r)
    }

    /// Narrows the rights of `fd` (the spec: rights can only be dropped, asking for
    /// one the fd lacks is `NOTCAPABLE`). A file fd that drops `FD_READ`/`FD_WRITE`
    /// can no longer read/write; other dropped rights are reported by `fd_fdstat_get`.
    pub fn fd_fdstat_set_rights(&mut self, fd: u32, base: u64, inheriting: u64) -> WasiResult {
        let r = (|| {
            let entry = self.entry(fd)?;
            let (have_base, have_inheriting) = match &entry.kind {
                Kind::Stdin => (RIGHT_FD_READ, 0),
                Kind::Stdout | Kind::Stderr => (RIGHT_FD_WRITE, 0),
                Kind::Dir(_) => (fs::RIGHTS_DIR, fs::RIGHTS_DIR | fs::RIGHTS_FILE),
                Kind::File(f) => (f.rights(), 0),
                Kind::Listener(_) => (net::RIGHTS_LISTENER, net::RIGHTS_CONN),
                Kind::Conn(_) => (net::RIGHTS_CONN, 0),
            };
            let (have_base, have_inheriting) = (have_base & entry.rights_mask[0], have_inheriting & entry.rights_mask[1]);
            if base & !have_base != 0 || inheriting & !have_inheriting != 0 {
                return Err(errno::NOTCAPABLE);
            }
            entry.rights_mask = [base, inheriting];
            if let Kind::File(f) = &mut entry.kind {
                f.narrow(base);
            }
            Ok(())
        })();
        done(r)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    struct FakeHost(u64);
    impl HostServices for FakeHost {
        fn realtime_ns(&mut self) -> u64 {
            1_700_000_000_000_000_000
        }
        fn monotonic_ns(&mut self) -> u64 {
            self.0 += 5;
            self.0
        }
        fn random(&mut self, buf: &mut [u8]) {
            buf.fill(0xab);
        }
    }

    fn ctx() -> WasiCtx {
        WasiCtx::new(&["prog".to_string(), "a b".to_string()], &["K=V".to_string()], 32)
    }

    #[test]
    fn args_and_environ_layout_matches_wasi_libc_expectations() {
        let mut c = ctx();
        let mut mem = vec![0u8; 256];
        assert_eq!(c.args_sizes_get(&mut mem, 0, 4), Ok(0));
        assert_eq!(read_u32(&mem, 0), Ok(2));
        assert_eq!(read_u32(&mem, 4), Ok(9)); // "prog\0a b\0"
        assert_eq!(c.args_get(&mut mem, 16, 64), Ok(0));
        assert_eq!(read_u32(&mem, 16), Ok(64));
        assert_eq!(read_u32(&mem, 20), Ok(69));
        assert_eq!(&mem[64..73], b"prog\0a b\0");
        assert_eq!(c.environ_sizes_get(&mut mem, 0, 4), Ok(0));
        assert_eq!((read_u32(&mem, 0), read_u32(&mem, 4)), (Ok(1), Ok(4)));
        assert_eq!(c.environ_get(&mut mem, 100, 120), Ok(0));
        assert_eq!(&mem[120..124], b"K=V\0");
        // Out-of-bounds buffers fault instead of panicking.
        assert_eq!(c.args_get(&mut mem, 250, 0), Ok(errno::FAULT));
        assert_eq!(c.args_get(&mut mem, 0, u32::MAX - 2), Ok(errno::FAULT));
    }

    #[test]
    fn stdin_reads_what_the_node_gave_then_end_of_file() {
        let mut c = WasiCtx::new(&[], &[], 1024);
        let mut mem = vec![0u8; 128];
        // Empty stdin: end of file at once.
        mem[0..8].copy_from_slice(&[64, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(c.fd_read(&mut mem, 0, 0, 1, 32), Ok(0));
        assert_eq!(read_u32(&mem, 32), Ok(0));
        let input: Vec<u8> = (0..8u8).map(|b| b.wrapping_mul(37)).collect();
        c.set_stdin(input.clone());
        // Two iovecs of 5 and 2 bytes, then the last byte, then end of file.
        mem[8..16].copy_from_slice(&[96, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(c.fd_read(&mut mem, 0, 0, 2, 32), Ok(0));
        assert_eq!(read_u32(&mem, 32), Ok(7));
        assert_eq!((&mem[64..69], &mem[96..98]), (&input[..5], &input[5..7]));
        assert_eq!(c.fd_read(&mut mem, 0, 0, 1, 32), Ok(0));
        assert_eq!((read_u32(&mem, 32), mem[64]), (Ok(1), input[7]));
        assert_eq!(c.fd_read(&mut mem, 0, 0, 1, 32), Ok(0));
        assert_eq!(read_u32(&mem, 32), Ok(0));
        // A bad iovec faults and consumes nothing.
        c.set_stdin(b"x".to_vec());
        mem[0..8].copy_from_slice(&[120, 0, 0, 0, 100, 0, 0, 0]);
        assert_eq!(c.fd_read(&mut mem, 0, 0, 1, 32), Ok(errno::FAULT));
        mem[0..8].copy_from_slice(&[64, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(c.fd_read(&mut mem, 0, 0, 1, 32), Ok(0));
        assert_eq!((read_u32(&mem, 32), mem[64]), (Ok(1), b'x'));
    }

    #[test]
    fn fd_write_gathers_iovecs_into_the_log() {
        // 32 bytes of text plus the overhead of the two lines written below.
        let mut c = WasiCtx::new(&[], &[], 32 + 2 * crate::log::LINE_OVERHEAD_BYTES);
        let mut mem = vec![0u8; 128];
        mem[64..70].copy_from_slice(b"hello ");
        mem[80..86].copy_from_slice(b"world\n");
        mem[0..16].copy_from_slice(&[64, 0, 0, 0, 6, 0, 0, 0, 80, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(c.fd_write(&mut mem, 1, 0, 2, 32), Ok(0));
        assert_eq!(read_u32(&mem, 32), Ok(12));
        assert_eq!(c.log.take_lines(), [(Stream::Stdout, "hello world".to_string())]);
        assert_eq!(c.fd_write(&mut mem, 3, 0, 2, 32), Ok(errno::BADF));
        // An iovec pointing outside memory faults and writes nothing.
        mem[0..8].copy_from_slice(&[120, 0, 0, 0, 100, 0, 0, 0]);
        assert_eq!(c.fd_write(&mut mem, 1, 0, 1, 32), Ok(errno::FAULT));
        assert_eq!(c.log.written(), 12);
        // 12 + 12 + 12 > 32 (plus two lines): the cap stops the workload.
        mem[0..8].copy_from_slice(&[64, 0, 0, 0, 12, 0, 0, 0]);
        assert_eq!(c.fd_write(&mut mem, 2, 0, 1, 32), Ok(0));
        assert_eq!(c.fd_write(&mut mem, 2, 0, 1, 32), Err(Stop::LogFull));
    }

    /// The iovec bomb of issue 10: 1024 iovecs, each over the same 1 MiB of guest
    /// memory, ask for a 1 GiB copy. The node copies at most [`MAX_IO_BYTES`] and reports
    /// a short write (the program sends the rest in later calls), so the log takes
    /// 1 MiB, not a refused 1 GiB.
    #[test]
    fn iovec_bomb_is_a_short_write_of_at_most_max_io_bytes() {
        let mut c = WasiCtx::new(&[], &[], 4 << 20);
        let mut mem = vec![b'x'; 2 << 20];
        for i in 0..MAX_IOVS {
            write_u32(&mut mem, 8 * i, 1 << 20).unwrap();
            write_u32(&mut mem, 8 * i + 4, 1 << 20).unwrap();
        }
        assert_eq!(c.fd_write(&mut mem, 1, 0, MAX_IOVS, 16384), Ok(errno::SUCCESS));
        assert_eq!(read_u32(&mem, 16384), Ok(MAX_IO_BYTES as u32));
        assert_eq!(c.log.written(), MAX_IO_BYTES);
        // Short writes keep the order of the bytes: the first iovecs' bytes go first.
        mem[100..103].copy_from_slice(b"ab\n");
        mem[0..16].copy_from_slice(&[100, 0, 0, 0, 2, 0, 0, 0, 102, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(gather(&mem, 0, 2), Ok(b"ab\n".to_vec()));
        // Iovecs are all checked before anything is copied, even past the cap.
        write_u32(&mut mem, 8 * 5, (2 << 20) - 1).unwrap();
        write_u32(&mut mem, 8 * 5 + 4, 2).unwrap();
        assert_eq!(gather(&mem, 0, 6), Err(errno::FAULT));
    }

    #[test]
    fn paths_longer_than_path_max_are_refused_before_they_are_copied() {
        let mem = vec![b'a'; 64 << 10];
        assert_eq!(path_arg(&mem, 0, MAX_PATH_BYTES + 1), Err(errno::NAMETOOLONG));
        assert_eq!(path_arg(&mem, 0, MAX_PATH_BYTES).map(|p| p.len()), Ok(MAX_PATH_BYTES as usize));
        assert_eq!(path_arg(&mem, 1, 64 << 10), Err(errno::FAULT));
        assert_eq!(try_zeroed(usize::MAX), Err(errno::NOMEM));
        assert_eq!(try_zeroed(3), Ok(vec![0; 3]));
    }

    #[test]
    fn clocks_random_fdstat_prestat_exit() {
        let mut c = ctx();
        let mut h = FakeHost(0);
        let mut mem = vec![0u8; 64];
        assert_eq!(c.clock_time_get(&mut h, &mut mem, 0, 8), Ok(0));
        assert_eq!(u64::from_le_bytes(mem[8..16].try_into().unwrap()), 1_700_000_000_000_000_000);
        assert_eq!(c.clock_time_get(&mut h, &mut mem, 1, 8), Ok(0));
        assert_eq!(u64::from_le_bytes(mem[8..16].try_into().unwrap()), 5);
        assert_eq!(c.clock_time_get(&mut h, &mut mem, 9, 8), Ok(errno::INVAL));
        assert_eq!(c.clock_res_get(&mut mem, 1, 60), Ok(errno::FAULT));
        assert_eq!(c.random_get(&mut h, &mut mem, 32, 8), Ok(0));
        assert_eq!(&mem[32..40], &[0xab; 8]);
        assert_eq!(c.random_get(&mut h, &mut mem, 60, 8), Ok(errno::FAULT));
        assert_eq!(c.fd_fdstat_get(&mut mem, 1, 0), Ok(0));
        assert_eq!(mem[0], FILETYPE_CHARACTER_DEVICE);
        assert_eq!(u64::from_le_bytes(mem[8..16].try_into().unwrap()), RIGHT_FD_WRITE);
        assert_eq!(c.fd_fdstat_get(&mut mem, 5, 0), Ok(errno::BADF));
        assert_eq!(c.fd_prestat_get(&mut mem, 3, 0), Ok(errno::BADF));
        assert_eq!(c.proc_exit(7), Err(Stop::Exit(7)));
    }
}

/// Linear memory for the host tests of the file and socket calls: fixed scratch
/// addresses for names, iovecs, data and results.
#[cfg(test)]
mod testmem {
    use super::*;
    use alloc::vec;
    use std::sync::{Arc, Mutex};

    pub const NAME: u32 = 1000;
    pub const OUT: u32 = 8;
    pub const IOV: u32 = 128; // OUT..OUT + 64 holds a filestat
    pub const DATA: u32 = 4096;
    pub const SIZE: usize = 256 << 10;

    pub struct T {
        pub c: WasiCtx,
        pub mem: Vec<u8>,
    }

    /// Sockets the test can script and inspect while the context owns them.
    #[derive(Clone, Default)]
    pub struct Shared(pub Arc<Mutex<MemSockets>>);

    impl Sockets for Shared {
        fn accept(&mut self, port: u16) -> Result<Option<ConnId>, SockError> {
            self.0.lock().unwrap().accept(port)
        }
        fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, SockError> {
            self.0.lock().unwrap().recv(conn, buf)
        }
        fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, SockError> {
            self.0.lock().unwrap().send(conn, data)
        }
        fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), SockError> {
            self.0.lock().unwrap().shutdown(conn, how)
        }
        fn close(&mut self, conn: ConnId) {
            self.0.lock().unwrap().close(conn)
        }
        fn wait(&mut self) -> Result<(), Interrupt> {
            self.0.lock().unwrap().wait()
        }
        fn pending(&mut self, port: u16) -> Result<usize, SockError> {
            self.0.lock().unwrap().pending(port)
        }
        fn readiness(&mut self, conn: ConnId) -> Result<ConnReadiness, SockError> {
            self.0.lock().unwrap().readiness(conn)
        }
    }

    impl Shared {
        pub fn with<R>(&self, f: impl FnOnce(&mut MemSockets) -> R) -> R {
            f(&mut self.0.lock().unwrap())
        }
    }

    pub fn ok(r: WasiResult) -> Result<(), u32> {
        match r.expect("no stop") {
            errno::SUCCESS => Ok(()),
            e => Err(e),
        }
    }

    impl T {
        pub fn new() -> Self {
            T { c: WasiCtx::new(&[], &[], 1 << 16), mem: vec![0; SIZE] }
        }

        pub fn out_u32(&self) -> u32 {
            read_u32(&self.mem, OUT).unwrap()
        }

        pub fn name(&mut self, name: &[u8]) -> u32 {
            self.mem[NAME as usize..NAME as usize + name.len()].copy_from_slice(name);
            name.len() as u32
        }

        pub fn open(&mut self, name: &str, oflags: u32, rights: u64) -> Result<u32, u32> {
            self.open_with(name, oflags, rights, 0)
        }

        pub fn open_with(&mut self, name: &str, oflags: u32, rights: u64, fdflags: u32) -> Result<u32, u32> {
            let len = self.name(name.as_bytes());
            ok(self.c.path_open(&mut self.mem, 3, 1, NAME, len, oflags, rights, fdflags, OUT))?;
            Ok(self.out_u32())
        }

        /// Puts `bytes` at DATA and one iovec for them at IOV.
        pub fn iov(&mut self, bytes: &[u8]) {
            self.mem[DATA as usize..DATA as usize + bytes.len()].copy_from_slice(bytes);
            self.iov_len(bytes.len() as u32);
        }

        pub fn iov_len(&mut self, len: u32) {
            write_u32(&mut self.mem, IOV, DATA).unwrap();
            write_u32(&mut self.mem, IOV + 4, len).unwrap();
        }

        pub fn write(&mut self, fd: u32, bytes: &[u8]) -> Result<u32, u32> {
            self.iov(bytes);
            ok(self.c.fd_write(&mut self.mem, fd, IOV, 1, OUT))?;
            Ok(self.out_u32())
        }

        pub fn read(&mut self, fd: u32, len: u32) -> Result<Vec<u8>, u32> {
            self.iov_len(len);
            ok(self.c.fd_read(&mut self.mem, fd, IOV, 1, OUT))?;
            let n = self.out_u32() as usize;
            Ok(self.mem[DATA as usize..DATA as usize + n].to_vec())
        }

        pub fn close(&mut self, fd: u32) -> Result<(), u32> {
            ok(self.c.fd_close(fd))
        }
    }
}
