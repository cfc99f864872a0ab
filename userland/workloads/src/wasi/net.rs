//! Listening TCP sockets: WASI preview 1 `sock_*` calls over a [`Sockets`].
//!
//! The kernel owns the listeners (one per port of the manifest's `listen`) and the
//! connections; a program sees each listener as a preopened fd, accepts connections
//! as new fds and reads and writes them with `sock_recv`/`sock_send` or
//! `fd_read`/`fd_write`. Every [`Sockets`] call returns at once; a call on a blocking
//! fd that would block calls [`Sockets::wait`] and tries again, so the kernel can park
//! the workload, and end it (with an [`Interrupt`]) when a limit passes meanwhile.
//! `poll_oneoff` asks [`Sockets::pending`] and [`Sockets::readiness`], which consume
//! nothing. [`MemSockets`] is a scripted double for host tests.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::ops::Range;

use super::{errno, finish, gather, iovecs, range, scatter, write_bytes, write_u32, Fail, Kind, Stop, WasiCtx, WasiResult};
use super::FDFLAGS_NONBLOCK;

/// A connection, as named by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Which directions `sock_shutdown` closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// Why a socket operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockError {
    /// The peer reset the connection (`ECONNRESET`).
    Reset,
    /// Sending after a write shutdown or after the peer went away (`EPIPE`).
    Pipe,
    /// No such connection, or not connected (`ENOTCONN`).
    NotConnected,
    /// Anything else (`EIO`).
    Io,
}

impl SockError {
    pub fn errno(self) -> u32 {
        match self {
            SockError::Reset => errno::CONNRESET,
            SockError::Pipe => errno::PIPE,
            SockError::NotConnected => errno::NOTCONN,
            SockError::Io => errno::IO,
        }
    }
}

/// Why a blocked workload must stop instead of waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    CpuLimit { used_ms: u64 },
    WallDeadline,
    /// Stopped by its owner (or, in tests, nothing will ever arrive).
    Stopped,
}

/// What a connection could do now, as `poll_oneoff` sees it ([`Sockets::readiness`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnReadiness {
    /// Received bytes waiting to be read (what `recv` would return at most, now).
    pub recv_bytes: usize,
    /// After those bytes comes the end of the stream: the peer finished sending (FIN)
    /// or the read side was shut down, so `recv` would not wait but return `Some(0)`.
    pub recv_eof: bool,
    /// Bytes `send` would take now; 0 if the send buffer is full.
    pub send_bytes: usize,
    /// Sending is over (the write side was shut down, or the peer can no longer
    /// receive): `send` would fail at once with [`SockError::Pipe`].
    pub send_closed: bool,
}

/// The node's TCP sockets for one workload. No method blocks.
pub trait Sockets {
    /// The next connection accepted on the listener for `port`; `None` if none is waiting.
    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, SockError>;
    /// Received bytes into `buf`: `Some(0)` at end of stream, `None` if none yet.
    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, SockError>;
    /// Queues a prefix of `data` for sending: `Some(n)` bytes taken (n >= 1 for a
    /// nonempty `data`), `None` if the send buffer is full.
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, SockError>;
    fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), SockError>;
    /// Closes the connection (the program closed its fd); `conn` is not used again.
    fn close(&mut self, conn: ConnId);
    /// Called when a blocking call would block: returns when something may have
    /// changed, or `Err` when the workload must stop (its CPU or wall limit passed, or
    /// it was stopped). This is the only bound on a blocking call.
    fn wait(&mut self) -> Result<(), Interrupt>;
    /// How many connections [`Self::accept`] on `port` would return now without
    /// waiting (a lower bound is fine as long as it is nonzero when one is waiting).
    /// Takes nothing off the queue. `Err` as `accept` would fail.
    ///
    /// The default answers `Io` (so `poll_oneoff` reports an error event on a listener
    /// instead of waiting forever): a real implementation must override it.
    fn pending(&mut self, port: u16) -> Result<usize, SockError> {
        let _ = port;
        Err(SockError::Io)
    }
    /// What `conn` could do now, without receiving or sending anything. `Err` as
    /// `recv`/`send` would fail at once (e.g. [`SockError::Reset`] after a reset,
    /// [`SockError::NotConnected`] for an unknown id).
    ///
    /// The default answers `Io`: a real implementation must override it.
    fn readiness(&mut self, conn: ConnId) -> Result<ConnReadiness, SockError> {
        let _ = conn;
        Err(SockError::Io)
    }
}

/// Largest read one `sock_recv`/`fd_read` asks the kernel for.
pub const MAX_RECV_BYTES: usize = 64 << 10;

const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
const RIGHT_FD_WRITE: u64 = 1 << 6;
const RIGHT_FD_FILESTAT_GET: u64 = 1 << 21;
const RIGHT_POLL_FD_READWRITE: u64 = 1 << 27;
const RIGHT_SOCK_SHUTDOWN: u64 = 1 << 28;
const RIGHT_SOCK_ACCEPT: u64 = 1 << 29;

pub(super) const RIGHTS_LISTENER: u64 =
    RIGHT_SOCK_ACCEPT | RIGHT_FD_FDSTAT_SET_FLAGS | RIGHT_POLL_FD_READWRITE | RIGHT_FD_FILESTAT_GET;
pub(super) const RIGHTS_CONN: u64 = RIGHT_FD_READ
    | RIGHT_FD_WRITE
    | RIGHT_SOCK_SHUTDOWN
    | RIGHT_FD_FDSTAT_SET_FLAGS
    | RIGHT_POLL_FD_READWRITE
    | RIGHT_FD_FILESTAT_GET;

fn interrupted(i: Interrupt) -> Fail {
    Fail::Stop(Stop::Interrupted(i))
}

fn sock_err(e: SockError) -> Fail {
    Fail::Errno(e.errno())
}

impl WasiCtx {
    /// The connection behind `fd` and whether the fd is nonblocking.
    fn conn(&mut self, fd: u32) -> Result<(ConnId, bool), u32> {
        let entry = self.entry(fd)?;
        match entry.kind {
            Kind::Conn(c) => Ok((c, entry.fdflags & FDFLAGS_NONBLOCK != 0)),
            Kind::Listener(_) => Err(errno::NOTCONN),
            _ => Err(errno::NOTSOCK),
        }
    }

    /// Receives into the (checked) ranges; blocks unless the fd is nonblocking.
    pub(super) fn conn_recv(&mut self, fd: u32, mem: &mut [u8], ranges: &[Range<usize>]) -> Result<usize, Fail> {
        let (conn, nonblock) = self.conn(fd)?;
        let want = ranges.iter().map(Range::len).sum::<usize>().min(MAX_RECV_BYTES);
        if want == 0 {
            return Ok(0);
        }
        let sockets = self.sockets.as_mut().ok_or(errno::BADF)?;
        let mut buf = super::try_zeroed(want)?;
        loop {
            match sockets.recv(conn, &mut buf).map_err(sock_err)? {
                Some(n) => return Ok(scatter(mem, ranges, &buf[..n.min(want)])),
                None if nonblock => return Err(Fail::Errno(errno::AGAIN)),
                None => sockets.wait().map_err(interrupted)?,
            }
        }
    }

    /// Sends `data`: all of it on a blocking fd (unless an error comes after some was
    /// sent), as much as fits at once on a nonblocking one.
    pub(super) fn conn_send(&mut self, fd: u32, data: &[u8]) -> Result<usize, Fail> {
        let (conn, nonblock) = self.conn(fd)?;
        let sockets = self.sockets.as_mut().ok_or(errno::BADF)?;
        let mut sent = 0;
        while sent < data.len() {
            match sockets.send(conn, &data[sent..]) {
                Ok(Some(n)) => sent += n.clamp(1, data.len() - sent),
                Ok(None) if nonblock && sent == 0 => return Err(Fail::Errno(errno::AGAIN)),
                Ok(None) if nonblock => break,
                Ok(None) => sockets.wait().map_err(interrupted)?,
                Err(_) if sent > 0 => break,
                Err(e) => return Err(sock_err(e)),
            }
        }
        Ok(sent)
    }

    /// Accepts a connection on a listener fd; the new fd gets `flags` (`NONBLOCK` only).
    pub fn sock_accept(&mut self, mem: &mut [u8], fd: u32, flags: u32, out: u32) -> WasiResult {
        let r = (|| {
            let entry = self.entry(fd)?;
            let (port, nonblock) = match entry.kind {
                Kind::Listener(p) => (p, entry.fdflags & FDFLAGS_NONBLOCK != 0),
                Kind::Conn(_) => return Err(Fail::Errno(errno::INVAL)),
                _ => return Err(Fail::Errno(errno::NOTSOCK)),
            };
            if flags & !u32::from(FDFLAGS_NONBLOCK) != 0 {
                return Err(Fail::Errno(errno::INVAL));
            }
            range(mem, out, 4)?;
            // Check the fd limit before taking a connection off the queue.
            if self.fds.iter().flatten().filter(|e| e.opened).count() >= super::MAX_OPEN_FDS {
                return Err(Fail::Errno(errno::MFILE));
            }
            let sockets = self.sockets.as_mut().ok_or(errno::BADF)?;
            let conn = loop {
                match sockets.accept(port).map_err(sock_err)? {
                    Some(c) => break c,
                    None if nonblock => return Err(Fail::Errno(errno::AGAIN)),
                    None => sockets.wait().map_err(interrupted)?,
                }
            };
            let new = self.insert(Kind::Conn(conn), flags as u16)?;
            Ok(write_u32(mem, out, new)?)
        })();
        finish(r)
    }

    /// `flags` (peek, waitall) are not supported; `ro_flags` is always 0.
    #[allow(clippy::too_many_arguments)]
    pub fn sock_recv(
        &mut self,
        mem: &mut [u8],
        fd: u32,
        iovs: u32,
        iovs_len: u32,
        flags: u32,
        ro_datalen: u32,
        ro_flags: u32,
    ) -> WasiResult {
        let r = (|| {
            self.conn(fd)?;
            if flags != 0 {
                return Err(Fail::Errno(errno::NOTSUP));
            }
            let ranges = iovecs(mem, iovs, iovs_len)?;
            range(mem, ro_datalen, 4)?;
            range(mem, ro_flags, 2)?;
            let n = self.conn_recv(fd, mem, &ranges)?;
            write_u32(mem, ro_datalen, n as u32)?;
            Ok(write_bytes(mem, ro_flags, &[0, 0])?)
        })();
        finish(r)
    }

    pub fn sock_send(&mut self, mem: &mut [u8], fd: u32, iovs: u32, iovs_len: u32, flags: u32, so_datalen: u32) -> WasiResult {
        let r = (|| {
            self.conn(fd)?;
            if flags != 0 {
                return Err(Fail::Errno(errno::NOTSUP));
            }
            let data = gather(mem, iovs, iovs_len)?;
            range(mem, so_datalen, 4)?;
            let n = self.conn_send(fd, &data)?;
            Ok(write_u32(mem, so_datalen, n as u32)?)
        })();
        finish(r)
    }

    /// `how`: 1 = read, 2 = write, 3 = both.
    pub fn sock_shutdown(&mut self, fd: u32, how: u32) -> WasiResult {
        let r = (|| {
            let (conn, _) = self.conn(fd)?;
            let how = match how {
                1 => Shutdown::Read,
                2 => Shutdown::Write,
                3 => Shutdown::Both,
                _ => return Err(Fail::Errno(errno::INVAL)),
            };
            let sockets = self.sockets.as_mut().ok_or(errno::BADF)?;
            sockets.shutdown(conn, how).map_err(sock_err)
        })();
        finish(r)
    }
}

/// A scripted connection of [`MemSockets`].
#[derive(Debug, Default, Clone)]
pub struct MemConn {
    pub port: u16,
    /// Bytes the program has yet to receive.
    pub input: VecDeque<u8>,
    /// The peer finished sending (after `input`).
    pub input_eof: bool,
    /// Bytes the program sent.
    pub output: Vec<u8>,
    /// Bytes the program may still send before `send` would block.
    pub window: usize,
    pub shut_read: bool,
    pub shut_write: bool,
    pub reset: bool,
    pub closed: bool,
}

/// Something that happens at the next [`Sockets::wait`] of a [`MemSockets`].
#[derive(Debug, Clone)]
pub enum MemEvent {
    /// A peer connects on `port` (the connection gets the next id).
    Connect { port: u16, input: Vec<u8>, eof: bool },
    /// More bytes arrive on a connection (and maybe its end).
    Data { conn: ConnId, bytes: Vec<u8>, eof: bool },
    /// The send window of a connection grows.
    Window { conn: ConnId, bytes: usize },
    Reset { conn: ConnId },
}

/// In-memory [`Sockets`]: connections are queued by tests, and each `wait` plays the
/// next scripted [`MemEvent`]; with none left it interrupts (`Stopped`), so a program
/// blocked forever ends instead of hanging the test.
#[derive(Debug, Default, Clone)]
pub struct MemSockets {
    pub conns: BTreeMap<ConnId, MemConn>,
    /// Connections not yet accepted, in arrival order.
    pub backlog: VecDeque<ConnId>,
    pub later: VecDeque<MemEvent>,
    /// Number of `wait` calls.
    pub waits: u64,
    next_id: u64,
}

impl MemSockets {
    pub fn new() -> Self {
        MemSockets::default()
    }

    /// Queues a connection on `port` whose peer sends `input` (then ends if `eof`).
    pub fn connect(&mut self, port: u16, input: &[u8], eof: bool) -> ConnId {
        self.next_id += 1;
        let id = ConnId(self.next_id);
        let conn = MemConn { port, input: input.iter().copied().collect(), input_eof: eof, window: usize::MAX, ..MemConn::default() };
        self.conns.insert(id, conn);
        self.backlog.push_back(id);
        id
    }

    fn live(&mut self, conn: ConnId) -> Result<&mut MemConn, SockError> {
        match self.conns.get_mut(&conn) {
            Some(c) if !c.closed && !self.backlog.contains(&conn) => {
                if c.reset { Err(SockError::Reset) } else { Ok(c) }
            }
            _ => Err(SockError::NotConnected),
        }
    }
}

impl Sockets for MemSockets {
    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, SockError> {
        let Some(i) = self.backlog.iter().position(|c| self.conns[c].port == port) else { return Ok(None) };
        Ok(self.backlog.remove(i))
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, SockError> {
        let c = self.live(conn)?;
        if c.shut_read {
            return Ok(Some(0));
        }
        if c.input.is_empty() {
            return Ok(if c.input_eof { Some(0) } else { None });
        }
        let n = buf.len().min(c.input.len());
        for (b, x) in buf.iter_mut().zip(c.input.drain(..n)) {
            *b = x;
        }
        Ok(Some(n))
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, SockError> {
        let c = self.live(conn)?;
        if c.shut_write {
            return Err(SockError::Pipe);
        }
        let n = data.len().min(c.window);
        if n == 0 && !data.is_empty() {
            return Ok(None);
        }
        c.window -= n;
        c.output.extend_from_slice(&data[..n]);
        Ok(Some(n))
    }

    fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), SockError> {
        let c = self.live(conn)?;
        c.shut_read |= how != Shutdown::Write;
        c.shut_write |= how != Shutdown::Read;
        Ok(())
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.closed = true;
        }
    }

    fn pending(&mut self, port: u16) -> Result<usize, SockError> {
        Ok(self.backlog.iter().filter(|c| self.conns[c].port == port).count())
    }

    fn readiness(&mut self, conn: ConnId) -> Result<ConnReadiness, SockError> {
        let c = self.live(conn)?;
        Ok(ConnReadiness {
            recv_bytes: if c.shut_read { 0 } else { c.input.len() },
            recv_eof: c.shut_read || c.input_eof,
            send_bytes: if c.shut_write { 0 } else { c.window },
            send_closed: c.shut_write,
        })
    }

    fn wait(&mut self) -> Result<(), Interrupt> {
        self.waits += 1;
        match self.later.pop_front().ok_or(Interrupt::Stopped)? {
            MemEvent::Connect { port, input, eof } => {
                self.connect(port, &input, eof);
            }
            MemEvent::Data { conn, bytes, eof } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.input.extend(bytes);
                    c.input_eof |= eof;
                }
            }
            MemEvent::Window { conn, bytes } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.window = c.window.saturating_add(bytes);
                }
            }
            MemEvent::Reset { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.reset = true;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod test {
    use super::super::testmem::{ok, Shared, T, DATA, IOV, OUT, SIZE};
    use super::super::{read_u32, MemFileArea, MAX_OPEN_FDS, FILETYPE_SOCKET_STREAM};
    use super::*;
    use alloc::boxed::Box;

    fn with_sockets(files: bool, ports: &[u16]) -> (T, Shared) {
        let mut t = T::new();
        let s = Shared::default();
        // Either attach order gives the same numbering.
        t.c.attach_sockets(Box::new(s.clone()), ports);
        if files {
            t.c.attach_files(Box::new(MemFileArea::new()), 1 << 20);
        }
        (t, s)
    }

    fn accept(t: &mut T, fd: u32, flags: u32) -> Result<u32, u32> {
        ok(t.c.sock_accept(&mut t.mem, fd, flags, OUT))?;
        Ok(t.out_u32())
    }

    fn recv(t: &mut T, fd: u32, len: u32) -> WasiResult {
        t.iov_len(len);
        t.c.sock_recv(&mut t.mem, fd, IOV, 1, 0, OUT, OUT + 4)
    }

    #[test]
    fn listeners_follow_data_and_end_the_preopen_scan() {
        let (mut t, _) = with_sockets(true, &[80, 443]);
        assert_eq!((t.c.listener_fd(80), t.c.listener_fd(443), t.c.listener_fd(22)), (Some(5), Some(6), None));
        ok(t.c.fd_prestat_get(&mut t.mem, 3, OUT)).unwrap();
        ok(t.c.fd_prestat_get(&mut t.mem, 4, OUT)).unwrap(); // `.`
        assert_eq!(ok(t.c.fd_prestat_get(&mut t.mem, 5, OUT)), Err(errno::BADF));
        let (mut t, _) = with_sockets(false, &[80]);
        assert_eq!(t.c.listener_fd(80), Some(3));
        assert_eq!(ok(t.c.fd_prestat_get(&mut t.mem, 3, OUT)), Err(errno::BADF));
        ok(t.c.fd_fdstat_get(&mut t.mem, 3, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize], FILETYPE_SOCKET_STREAM);
        ok(t.c.fd_filestat_get(&mut t.mem, 3, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize + 16], FILETYPE_SOCKET_STREAM);
    }

    #[test]
    fn accept_recv_send_echo_and_eof() {
        let (mut t, s) = with_sockets(true, &[7]);
        let conn = s.with(|m| m.connect(7, b"ping", true));
        let c = accept(&mut t, 5, 0).unwrap();
        assert_eq!(c, 6);
        ok(t.c.fd_fdstat_get(&mut t.mem, c, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize], FILETYPE_SOCKET_STREAM);
        assert_eq!(recv(&mut t, c, 3), Ok(0));
        assert_eq!((read_u32(&t.mem, OUT), &t.mem[DATA as usize..DATA as usize + 3]), (Ok(3), &b"pin"[..]));
        assert_eq!(t.read(c, 10).unwrap(), b"g"); // fd_read works too
        assert_eq!(recv(&mut t, c, 10), Ok(0));
        assert_eq!(read_u32(&t.mem, OUT), Ok(0)); // EOF
        t.iov(b"pong");
        ok(t.c.sock_send(&mut t.mem, c, IOV, 1, 0, OUT)).unwrap();
        assert_eq!(t.write(c, b"!"), Ok(1));
        ok(t.c.sock_shutdown(c, 2)).unwrap();
        assert_eq!(t.write(c, b"x"), Err(errno::PIPE));
        t.close(c).unwrap();
        s.with(|m| {
            assert_eq!(m.conns[&conn].output, b"pong!");
            assert!(m.conns[&conn].shut_write && m.conns[&conn].closed);
        });
        assert_eq!(t.read(c, 1), Err(errno::BADF));
    }

    #[test]
    fn would_block_paths_nonblocking_and_blocking() {
        let (mut t, s) = with_sockets(false, &[7]);
        // Nonblocking listener: AGAIN; the fd flag is set through fdstat_set_flags.
        ok(t.c.fd_fdstat_set_flags(3, u32::from(FDFLAGS_NONBLOCK))).unwrap();
        assert_eq!(accept(&mut t, 3, 0), Err(errno::AGAIN));
        assert_eq!(s.with(|m| m.waits), 0);
        // Blocking listener: waits until the scripted connection arrives.
        ok(t.c.fd_fdstat_set_flags(3, 0)).unwrap();
        s.with(|m| m.later.push_back(MemEvent::Connect { port: 7, input: b"a".to_vec(), eof: false }));
        let c = accept(&mut t, 3, 0).unwrap();
        let conn = s.with(|m| {
            assert_eq!(m.waits, 1);
            *m.conns.keys().next().unwrap()
        });
        assert_eq!(recv(&mut t, c, 10), Ok(0));
        // Nothing more yet: a nonblocking connection says AGAIN ...
        ok(t.c.fd_fdstat_set_flags(c, u32::from(FDFLAGS_NONBLOCK))).unwrap();
        assert_eq!(recv(&mut t, c, 10), Ok(errno::AGAIN));
        // ... a blocking one waits for data, then for window to send.
        ok(t.c.fd_fdstat_set_flags(c, 0)).unwrap();
        s.with(|m| {
            m.later.push_back(MemEvent::Data { conn, bytes: b"bc".to_vec(), eof: false });
            m.conns.get_mut(&conn).unwrap().window = 2;
            m.later.push_back(MemEvent::Window { conn, bytes: 1 });
            m.later.push_back(MemEvent::Window { conn, bytes: 10 });
        });
        assert_eq!(recv(&mut t, c, 10), Ok(0));
        assert_eq!(&t.mem[DATA as usize..DATA as usize + 2], b"bc");
        assert_eq!(t.write(c, b"hello"), Ok(5));
        s.with(|m| assert_eq!((m.waits, m.conns[&conn].output.as_slice()), (4, &b"hello"[..])));
        // Nonblocking send takes what fits, then AGAIN.
        s.with(|m| m.conns.get_mut(&conn).unwrap().window = 3);
        ok(t.c.fd_fdstat_set_flags(c, u32::from(FDFLAGS_NONBLOCK))).unwrap();
        assert_eq!(t.write(c, b"world"), Ok(3));
        assert_eq!(t.write(c, b"ld"), Err(errno::AGAIN));
        // A blocked call with nothing coming is interrupted: the workload stops.
        ok(t.c.fd_fdstat_set_flags(c, 0)).unwrap();
        assert_eq!(recv(&mut t, c, 10), Err(Stop::Interrupted(Interrupt::Stopped)));
        assert_eq!(t.c.sock_accept(&mut t.mem, 3, 0, OUT), Err(Stop::Interrupted(Interrupt::Stopped)));
        // A connection accepted with NONBLOCK starts nonblocking.
        s.with(|m| m.connect(7, b"", false));
        let c2 = accept(&mut t, 3, u32::from(FDFLAGS_NONBLOCK)).unwrap();
        assert_eq!(recv(&mut t, c2, 10), Ok(errno::AGAIN));
        ok(t.c.fd_fdstat_get(&mut t.mem, c2, OUT)).unwrap();
        assert_eq!(t.mem[OUT as usize + 2], FDFLAGS_NONBLOCK as u8);
        // Reset surfaces as ECONNRESET.
        s.with(|m| m.conns.get_mut(&conn).unwrap().reset = true);
        assert_eq!(recv(&mut t, c, 10), Ok(errno::CONNRESET));
        assert_eq!(t.write(c, b"x"), Err(errno::CONNRESET));
    }

    #[test]
    fn bad_fds_flags_and_pointers() {
        let (mut t, s) = with_sockets(true, &[7]);
        s.with(|m| m.connect(7, b"data", false));
        assert_eq!(accept(&mut t, 1, 0), Err(errno::NOTSOCK));
        assert_eq!(accept(&mut t, 3, 0), Err(errno::NOTSOCK)); // /data
        assert_eq!(accept(&mut t, 4, 0), Err(errno::NOTSOCK)); // .
        assert_eq!(accept(&mut t, 99, 0), Err(errno::BADF));
        assert_eq!(accept(&mut t, 5, 2), Err(errno::INVAL));
        assert_eq!(ok(t.c.sock_accept(&mut t.mem, 5, 0, SIZE as u32 - 1)), Err(errno::FAULT));
        let c = accept(&mut t, 5, 0).unwrap(); // the fault above took nothing off the queue
        assert_eq!(accept(&mut t, c, 0), Err(errno::INVAL));
        assert_eq!(recv(&mut t, 5, 10), Ok(errno::NOTCONN));
        assert_eq!(recv(&mut t, 1, 10), Ok(errno::NOTSOCK));
        assert_eq!(recv(&mut t, 77, 10), Ok(errno::BADF));
        t.iov_len(10);
        let m = &mut t.mem;
        assert_eq!(t.c.sock_recv(m, c, IOV, 1, 1, OUT, OUT + 4), Ok(errno::NOTSUP)); // PEEK
        assert_eq!(t.c.sock_recv(m, c, IOV, 1, 0, SIZE as u32 - 2, OUT), Ok(errno::FAULT));
        assert_eq!(t.c.sock_recv(m, c, IOV, 1, 0, OUT, SIZE as u32 - 1), Ok(errno::FAULT));
        assert_eq!(t.c.sock_recv(m, c, IOV, 5000, 0, OUT, OUT + 4), Ok(errno::INVAL));
        write_u32(m, IOV, SIZE as u32 - 4).unwrap();
        assert_eq!(t.c.sock_recv(m, c, IOV, 1, 0, OUT, OUT + 4), Ok(errno::FAULT));
        assert_eq!(t.c.sock_send(m, c, IOV, 1, 0, OUT), Ok(errno::FAULT));
        // The faults consumed nothing.
        assert_eq!(recv(&mut t, c, 10), Ok(0));
        assert_eq!(read_u32(&t.mem, OUT), Ok(4));
        t.iov(b"x");
        assert_eq!(t.c.sock_send(&mut t.mem, c, IOV, 1, 1, OUT), Ok(errno::NOTSUP));
        assert_eq!(t.c.sock_send(&mut t.mem, 5, IOV, 1, 0, OUT), Ok(errno::NOTCONN));
        assert_eq!(t.c.sock_shutdown(c, 0), Ok(errno::INVAL));
        assert_eq!(t.c.sock_shutdown(c, 4), Ok(errno::INVAL));
        assert_eq!(t.c.sock_shutdown(5, 3), Ok(errno::NOTCONN));
        assert_eq!(t.c.sock_shutdown(0, 3), Ok(errno::NOTSOCK));
        assert_eq!(t.c.fd_fdstat_set_flags(c, 1), Ok(errno::NOTSUP)); // APPEND
        assert_eq!(t.c.fd_fdstat_set_flags(c, 1 << 20), Ok(errno::INVAL));
        let m = &mut t.mem;
        assert_eq!(t.c.fd_seek(m, c, 0, 0, OUT), Ok(errno::SPIPE));
        assert_eq!(t.c.fd_pread(m, c, IOV, 1, 0, OUT), Ok(errno::SPIPE));
        // Accepting counts against the open-fd limit, checked before dequeuing.
        for _ in 1..MAX_OPEN_FDS {
            s.with(|m| m.connect(7, b"", false));
            accept(&mut t, 5, 0).unwrap();
        }
        s.with(|m| m.connect(7, b"", false));
        assert_eq!(accept(&mut t, 5, 0), Err(errno::MFILE));
        assert_eq!(s.with(|m| m.backlog.len()), 1);
        // Closing a listener just forgets the fd.
        t.close(5).unwrap();
        assert_eq!(accept(&mut t, 5, 0), Err(errno::BADF));
    }

    /// An iovec bomb on a socket: 1024 iovecs over the same 128 KiB ask for 128 MiB;
    /// the node copies and sends at most [`super::super::MAX_IO_BYTES`] and says so.
    #[test]
    fn iovec_bomb_on_sock_send_is_a_short_send() {
        let (mut t, s) = with_sockets(false, &[7]);
        let conn = s.with(|m| m.connect(7, b"", false));
        let c = accept(&mut t, 3, 0).unwrap();
        bomb_iovecs(&mut t.mem, 1024, DATA, 128 << 10);
        assert_eq!(t.c.sock_send(&mut t.mem, c, IOV, 1024, 0, OUT), Ok(errno::SUCCESS));
        assert_eq!(read_u32(&t.mem, OUT), Ok(super::super::MAX_IO_BYTES as u32));
        s.with(|m| assert_eq!(m.conns[&conn].output.len(), super::super::MAX_IO_BYTES));
        assert_eq!(t.c.fd_write(&mut t.mem, c, IOV, 1024, OUT), Ok(errno::SUCCESS));
        assert_eq!(read_u32(&t.mem, OUT), Ok(super::super::MAX_IO_BYTES as u32));
    }

    /// Writes `count` iovecs at IOV, each `len` bytes at `ptr`.
    pub(crate) fn bomb_iovecs(mem: &mut [u8], count: u32, ptr: u32, len: u32) {
        for i in 0..count {
            write_u32(mem, IOV + 8 * i, ptr).unwrap();
            write_u32(mem, IOV + 8 * i + 4, len).unwrap();
        }
    }

    #[test]
    fn wasi_libc_sees_a_wide_recv_capped() {
        let (mut t, s) = with_sockets(false, &[7]);
        s.with(|m| m.connect(7, &[9; MAX_RECV_BYTES + 10], true));
        let c = accept(&mut t, 3, 0).unwrap();
        assert_eq!(recv(&mut t, c, (MAX_RECV_BYTES + 100) as u32), Ok(0));
        assert_eq!(read_u32(&t.mem, OUT), Ok(MAX_RECV_BYTES as u32));
        assert_eq!(recv(&mut t, c, 100), Ok(0));
        assert_eq!(read_u32(&t.mem, OUT), Ok(10));
    }
}
