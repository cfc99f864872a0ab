//! WASI preview 1 `poll_oneoff`: wait for clocks and fds.
//!
//! wasi-libc builds `sleep`, `usleep`, `nanosleep` and `clock_nanosleep` on one clock
//! subscription, and `poll`/`select` on fd subscriptions plus an optional clock. This
//! layer reads no clock of its own and never blocks by itself: it checks every
//! subscription, and when none is ready it parks the workload with
//! [`HostServices::wait_until`] (until the earliest clock deadline, or until something
//! may have changed) and checks again.
//!
//! Readiness, as POSIX `poll`:
//! - a clock: its deadline has passed. Deadlines are kept on the monotonic clock;
//!   realtime ones are converted once, when the call starts, so a realtime clock step
//!   during the wait does not move them. Precision is ignored.
//! - a listener: readable when a connection waits ([`Sockets::pending`], `nbytes` =
//!   how many); never writable.
//! - a connection ([`Sockets::readiness`]): readable when bytes wait (`nbytes`) or at
//!   end of stream (flag `HANGUP`); writable when the send buffer has room (`nbytes`).
//!   A reset is an event with error `CONNRESET`, a closed write side one with `PIPE`.
//! - stdio, `/data` and files: always ready; a file's read `nbytes` is what is left
//!   after its position.
//! - an fd that is not open: an event with error `BADF` (wasi-libc's `POLLNVAL`).
//!
//! Events are written in subscription order, one per ready subscription. Malformed
//! subscriptions fail the whole call (`INVAL`, or `NOTSUP` for the CPU-time clocks),
//! as do bad pointers (`FAULT`), before anything waits or is written. At most
//! [`MAX_SUBSCRIPTIONS`] per call, so one check of them all is bounded work.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{errno, finish, range, write_bytes, write_u32, Fail, HostServices, Kind, Stop, WasiCtx, WasiResult};
use super::net::Sockets;

/// Most subscriptions one `poll_oneoff` takes (more: `INVAL`, as Linux `poll` past its
/// fd limit).
pub const MAX_SUBSCRIPTIONS: u32 = 64;

const SUBSCRIPTION_BYTES: u32 = 48;
const EVENT_BYTES: u32 = 32;

/// Offsets in the wire structs (`subscription`, `event`) of WASI preview 1.
mod field {
    pub const USERDATA: usize = 0;
    /// Subscription: the `eventtype` tag of the union.
    pub const TAG: usize = 8;
    /// Subscription, clock: `clockid` (u32), `timeout` (u64), `precision` (u64),
    /// `subclockflags` (u16).
    pub const CLOCK_ID: usize = 16;
    pub const CLOCK_TIMEOUT: usize = 24;
    pub const CLOCK_FLAGS: usize = 40;
    /// Subscription, fd_read/fd_write: the fd (u32).
    pub const FD: usize = 16;
    /// Event: `errno` (u16), `eventtype` (u8), then `fd_readwrite` at 16: `nbytes`
    /// (u64), `eventrwflags` (u16).
    pub const ERROR: usize = 8;
    pub const TYPE: usize = 10;
    pub const NBYTES: usize = 16;
    pub const RWFLAGS: usize = 24;
}

const _: () = assert!(field::CLOCK_FLAGS + 2 <= SUBSCRIPTION_BYTES as usize);
const _: () = assert!(field::RWFLAGS + 2 <= EVENT_BYTES as usize);
const _: () = assert!((MAX_SUBSCRIPTIONS as u64) * (SUBSCRIPTION_BYTES as u64) < u32::MAX as u64);

const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;

const CLOCKID_REALTIME: u32 = 0;
const CLOCKID_MONOTONIC: u32 = 1;
const CLOCKID_PROCESS_CPUTIME: u32 = 2;
const CLOCKID_THREAD_CPUTIME: u32 = 3;

const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
/// `eventrwflags`: the peer of the socket closed (end of stream).
pub const EVENTRWFLAGS_HANGUP: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Ready once the monotonic clock reaches `deadline_ns`.
    Clock { deadline_ns: u64 },
    Read(u32),
    Write(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Subscription {
    userdata: u64,
    wait: Wait,
}

/// One event as the program sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Event {
    userdata: u64,
    error: u16,
    eventtype: u8,
    nbytes: u64,
    flags: u16,
}

impl Event {
    fn emit(&self) -> [u8; EVENT_BYTES as usize] {
        let mut b = [0u8; EVENT_BYTES as usize];
        b[field::USERDATA..field::USERDATA + 8].copy_from_slice(&self.userdata.to_le_bytes());
        b[field::ERROR..field::ERROR + 2].copy_from_slice(&self.error.to_le_bytes());
        b[field::TYPE] = self.eventtype;
        b[field::NBYTES..field::NBYTES + 8].copy_from_slice(&self.nbytes.to_le_bytes());
        b[field::RWFLAGS..field::RWFLAGS + 2].copy_from_slice(&self.flags.to_le_bytes());
        b
    }
}

/// Whether an fd subscription triggers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    No,
    Yes { nbytes: u64, flags: u16 },
    /// Triggers with this errno (the fd is bad, or the socket failed).
    Error(u32),
}

fn le<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&bytes[at..at + N]);
    b
}

/// Decodes one (bounds-checked) subscription; clock deadlines become monotonic with
/// `now` = (monotonic, realtime) at the start of the call.
fn parse(raw: &[u8], host: &mut dyn HostServices, mono_now_ns: u64) -> Result<Subscription, u32> {
    debug_assert_eq!(raw.len(), SUBSCRIPTION_BYTES as usize);
    let userdata = u64::from_le_bytes(le(raw, field::USERDATA));
    let wait = match raw[field::TAG] {
        EVENTTYPE_CLOCK => {
            let id = u32::from_le_bytes(le(raw, field::CLOCK_ID));
            let timeout_ns = u64::from_le_bytes(le(raw, field::CLOCK_TIMEOUT));
            let flags = u16::from_le_bytes(le(raw, field::CLOCK_FLAGS));
            if flags & !SUBCLOCKFLAGS_ABSTIME != 0 {
                return Err(errno::INVAL);
            }
            let absolute = flags & SUBCLOCKFLAGS_ABSTIME != 0;
            let deadline_ns = match (id, absolute) {
                (CLOCKID_REALTIME | CLOCKID_MONOTONIC, false) => mono_now_ns.saturating_add(timeout_ns),
                (CLOCKID_MONOTONIC, true) => timeout_ns,
                (CLOCKID_REALTIME, true) => mono_now_ns.saturating_add(timeout_ns.saturating_sub(host.realtime_ns())),
                // A workload's CPU time does not advance while it waits.
                (CLOCKID_PROCESS_CPUTIME | CLOCKID_THREAD_CPUTIME, _) => return Err(errno::NOTSUP),
                _ => return Err(errno::INVAL),
            };
            Wait::Clock { deadline_ns }
        }
        EVENTTYPE_FD_READ => Wait::Read(u32::from_le_bytes(le(raw, field::FD))),
        EVENTTYPE_FD_WRITE => Wait::Write(u32::from_le_bytes(le(raw, field::FD))),
        _ => return Err(errno::INVAL),
    };
    Ok(Subscription { userdata, wait })
}

fn sockets<'a>(s: &'a mut Option<Box<dyn Sockets + Send>>) -> Result<&'a mut (dyn Sockets + Send + 'static), Ready> {
    s.as_deref_mut().ok_or(Ready::Error(errno::BADF))
}

impl WasiCtx {
    /// Readiness of `fd` for reading (`write == false`) or writing; consumes nothing.
    fn fd_ready(&mut self, fd: u32, write: bool) -> Ready {
        let Some(Some(entry)) = self.fds.get(fd as usize) else { return Ready::Error(errno::BADF) };
        let always = Ready::Yes { nbytes: 0, flags: 0 };
        let r = match entry.kind {
            Kind::Stdin | Kind::Stdout | Kind::Stderr | Kind::Dir(_) => Ok(always),
            Kind::File(_) if write => Ok(always),
            Kind::File(_) => Ok(match self.file_unread(fd) {
                Ok(n) => Ready::Yes { nbytes: n, flags: 0 },
                Err(e) => Ready::Error(e),
            }),
            Kind::Listener(_) if write => Ok(Ready::No),
            Kind::Listener(port) => sockets(&mut self.sockets).map(|s| match s.pending(port) {
                Ok(0) => Ready::No,
                Ok(n) => Ready::Yes { nbytes: n as u64, flags: 0 },
                Err(e) => Ready::Error(e.errno()),
            }),
            Kind::Conn(conn) => sockets(&mut self.sockets).map(|s| match s.readiness(conn) {
                Err(e) => Ready::Error(e.errno()),
                Ok(r) if write && r.send_closed => Ready::Error(errno::PIPE),
                Ok(r) if write && r.send_bytes > 0 => Ready::Yes { nbytes: r.send_bytes as u64, flags: 0 },
                Ok(_) if write => Ready::No,
                Ok(r) if r.recv_bytes > 0 || r.recv_eof => {
                    let flags = if r.recv_eof { EVENTRWFLAGS_HANGUP } else { 0 };
                    Ready::Yes { nbytes: r.recv_bytes as u64, flags }
                }
                Ok(_) => Ready::No,
            }),
        };
        r.unwrap_or_else(|e| e)
    }

    /// Appends an event for every subscription ready at `mono_now_ns`.
    fn ready_events(&mut self, subs: &[Subscription], mono_now_ns: u64, events: &mut Vec<Event>) {
        for s in subs {
            let (eventtype, ready) = match s.wait {
                Wait::Clock { deadline_ns } => {
                    let passed = mono_now_ns >= deadline_ns;
                    (EVENTTYPE_CLOCK, if passed { Ready::Yes { nbytes: 0, flags: 0 } } else { Ready::No })
                }
                Wait::Read(fd) => (EVENTTYPE_FD_READ, self.fd_ready(fd, false)),
                Wait::Write(fd) => (EVENTTYPE_FD_WRITE, self.fd_ready(fd, true)),
            };
            let (error, nbytes, flags) = match ready {
                Ready::No => continue,
                Ready::Yes { nbytes, flags } => (errno::SUCCESS, nbytes, flags),
                Ready::Error(e) => (e, 0, 0),
            };
            // Every WASI errno fits in 16 bits.
            let error = u16::try_from(error).unwrap_or(errno::IO as u16);
            events.push(Event { userdata: s.userdata, error, eventtype, nbytes, flags });
        }
        debug_assert!(events.len() <= subs.len());
    }

    /// Waits until at least one of the `nsubscriptions` subscriptions at `subs_ptr` is
    /// ready, writes their events at `events_ptr` and their number at `nevents_ptr`.
    /// See the module docs.
    pub fn poll_oneoff(
        &mut self,
        host: &mut dyn HostServices,
        mem: &mut [u8],
        subs_ptr: u32,
        events_ptr: u32,
        nsubscriptions: u32,
        nevents_ptr: u32,
    ) -> WasiResult {
        let r = (|| {
            if nsubscriptions == 0 || nsubscriptions > MAX_SUBSCRIPTIONS {
                return Err(Fail::Errno(errno::INVAL));
            }
            let subs_range = range(mem, subs_ptr, nsubscriptions * SUBSCRIPTION_BYTES)?;
            range(mem, events_ptr, nsubscriptions * EVENT_BYTES)?;
            range(mem, nevents_ptr, 4)?;
            let mono_start_ns = host.monotonic_ns();
            let mut subs = Vec::with_capacity(nsubscriptions as usize);
            for raw in mem[subs_range].chunks_exact(SUBSCRIPTION_BYTES as usize) {
                subs.push(parse(raw, host, mono_start_ns)?);
            }
            assert_eq!(subs.len(), nsubscriptions as usize);
            let earliest_ns = subs
                .iter()
                .filter_map(|s| match s.wait {
                    Wait::Clock { deadline_ns } => Some(deadline_ns),
                    _ => None,
                })
                .min();
            let mut events = Vec::with_capacity(subs.len());
            // Bounded by the host: each wait ends at the deadline, on a change, or
            // with the workload stopped.
            loop {
                self.ready_events(&subs, host.monotonic_ns(), &mut events);
                if !events.is_empty() {
                    break;
                }
                host.wait_until(earliest_ns).map_err(|i| Fail::Stop(Stop::Interrupted(i)))?;
            }
            for (i, e) in events.iter().enumerate() {
                write_bytes(mem, events_ptr + i as u32 * EVENT_BYTES, &e.emit())?;
            }
            Ok(write_u32(mem, nevents_ptr, events.len() as u32)?)
        })();
        finish(r)
    }
}

#[cfg(test)]
mod test {
    use super::super::testmem::{ok, Shared, T, OUT, SIZE};
    use super::super::{read_u32, FileArea, Interrupt, MemEvent, MemFileArea};
    use super::*;
    use alloc::vec;

    const SUBS: u32 = 8192;
    const EVENTS: u32 = 16384;
    const REAL_START_NS: u64 = 1_700_000_000_000_000_000;

    /// Fake node time: each wait jumps to its deadline (or first plays the next
    /// scripted socket event, if any), like `Pair::step`; a wait with neither
    /// interrupts, so a poll that would block forever ends the test.
    struct Clock {
        mono_ns: u64,
        real_ns: u64,
        waits: Vec<Option<u64>>,
        net: Option<Shared>,
    }

    impl Clock {
        fn new() -> Self {
            Clock { mono_ns: 1_000_000, real_ns: REAL_START_NS, waits: Vec::new(), net: None }
        }
        fn advance(&mut self, ns: u64) {
            self.mono_ns += ns;
            self.real_ns += ns;
        }
    }

    impl HostServices for Clock {
        fn realtime_ns(&mut self) -> u64 {
            self.real_ns
        }
        fn monotonic_ns(&mut self) -> u64 {
            self.mono_ns
        }
        fn random(&mut self, buf: &mut [u8]) {
            buf.fill(0);
        }
        fn wait_until(&mut self, deadline_ns: Option<u64>) -> Result<(), Interrupt> {
            self.waits.push(deadline_ns);
            assert!(self.waits.len() < 100, "poll_oneoff keeps waiting");
            if let Some(net) = self.net.clone() {
                if net.with(|m| !m.later.is_empty()) {
                    self.advance(10);
                    return net.clone().wait();
                }
            }
            let deadline_ns = deadline_ns.filter(|&d| d < u64::MAX).ok_or(Interrupt::Stopped)?;
            assert!(deadline_ns > self.mono_ns, "waiting for a deadline that passed");
            self.advance(deadline_ns - self.mono_ns);
            Ok(())
        }
    }

    fn sub(t: &mut T, i: u32, userdata: u64, tag: u8) -> usize {
        let at = (SUBS + i * SUBSCRIPTION_BYTES) as usize;
        t.mem[at..at + SUBSCRIPTION_BYTES as usize].fill(0xee); // padding is ignored
        t.mem[at..at + 8].copy_from_slice(&userdata.to_le_bytes());
        t.mem[at + field::TAG] = tag;
        at
    }

    fn clock(t: &mut T, i: u32, userdata: u64, id: u32, timeout_ns: u64, flags: u16) {
        let at = sub(t, i, userdata, EVENTTYPE_CLOCK);
        t.mem[at + field::CLOCK_ID..at + field::CLOCK_ID + 4].copy_from_slice(&id.to_le_bytes());
        t.mem[at + field::CLOCK_TIMEOUT..at + field::CLOCK_TIMEOUT + 8].copy_from_slice(&timeout_ns.to_le_bytes());
        t.mem[at + field::CLOCK_FLAGS..at + field::CLOCK_FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
    }

    fn fd(t: &mut T, i: u32, userdata: u64, tag: u8, fd: u32) {
        let at = sub(t, i, userdata, tag);
        t.mem[at + field::FD..at + field::FD + 4].copy_from_slice(&fd.to_le_bytes());
    }

    /// An event as (userdata, error, type, nbytes, flags).
    type Ev = (u64, u16, u8, u64, u16);

    /// Polls `n` subscriptions.
    fn poll(t: &mut T, h: &mut Clock, n: u32) -> Result<Vec<Ev>, u32> {
        t.mem[EVENTS as usize..EVENTS as usize + 64 * 32].fill(0xcc);
        ok(t.c.poll_oneoff(h, &mut t.mem, SUBS, EVENTS, n, OUT))?;
        let count = t.out_u32();
        assert!(count >= 1 && count <= n);
        let events = (0..count)
            .map(|i| {
                let e = &t.mem[(EVENTS + i * EVENT_BYTES) as usize..][..EVENT_BYTES as usize];
                assert!(e[11..16].iter().chain(&e[26..32]).all(|&b| b == 0), "padding is zeroed");
                (
                    u64::from_le_bytes(le(e, 0)),
                    u16::from_le_bytes(le(e, 8)),
                    e[10],
                    u64::from_le_bytes(le(e, 16)),
                    u16::from_le_bytes(le(e, 24)),
                )
            })
            .collect();
        // Nothing past the events is touched.
        assert_eq!(t.mem[(EVENTS + count * EVENT_BYTES) as usize], 0xcc);
        Ok(events)
    }

    const C: u8 = EVENTTYPE_CLOCK;
    const R: u8 = EVENTTYPE_FD_READ;
    const W: u8 = EVENTTYPE_FD_WRITE;
    const MS: u64 = 1_000_000;

    #[test]
    fn relative_clocks_wait_for_their_deadline() {
        let (mut t, mut h) = (T::new(), Clock::new());
        let start = h.mono_ns;
        clock(&mut t, 0, 77, CLOCKID_MONOTONIC, 50 * MS, 0);
        assert_eq!(poll(&mut t, &mut h, 1), Ok(vec![(77, 0, C, 0, 0)]));
        assert_eq!((h.waits.as_slice(), h.mono_ns), (&[Some(start + 50 * MS)][..], start + 50 * MS));
        // Relative realtime (wasi-libc's nanosleep) runs on the monotonic clock too.
        clock(&mut t, 0, 78, CLOCKID_REALTIME, 20 * MS, 0);
        assert_eq!(poll(&mut t, &mut h, 1), Ok(vec![(78, 0, C, 0, 0)]));
        assert_eq!((h.waits.len(), h.mono_ns), (2, start + 70 * MS));
    }

    #[test]
    fn absolute_clocks_and_already_expired_ones() {
        let (mut t, mut h) = (T::new(), Clock::new());
        let start = h.mono_ns;
        clock(&mut t, 0, 1, CLOCKID_MONOTONIC, start + 5 * MS, SUBCLOCKFLAGS_ABSTIME);
        assert_eq!(poll(&mut t, &mut h, 1), Ok(vec![(1, 0, C, 0, 0)]));
        assert_eq!(h.waits, [Some(start + 5 * MS)]);
        let real = h.real_ns;
        clock(&mut t, 0, 2, CLOCKID_REALTIME, real + 3 * MS, SUBCLOCKFLAGS_ABSTIME);
        assert_eq!(poll(&mut t, &mut h, 1), Ok(vec![(2, 0, C, 0, 0)]));
        assert_eq!((h.waits[1], h.real_ns), (Some(start + 8 * MS), real + 3 * MS));
        // In the past, now, or a zero timeout (sleep(0)): ready without waiting.
        for (id, timeout_ns, flags) in [
            (CLOCKID_MONOTONIC, 1, SUBCLOCKFLAGS_ABSTIME),
            (CLOCKID_MONOTONIC, h.mono_ns, SUBCLOCKFLAGS_ABSTIME),
            (CLOCKID_REALTIME, 0, SUBCLOCKFLAGS_ABSTIME),
            (CLOCKID_REALTIME, h.real_ns - 1, SUBCLOCKFLAGS_ABSTIME),
            (CLOCKID_REALTIME, 0, 0),
            (CLOCKID_MONOTONIC, 0, 0),
        ] {
            clock(&mut t, 0, 3, id, timeout_ns, flags);
            assert_eq!(poll(&mut t, &mut h, 1), Ok(vec![(3, 0, C, 0, 0)]));
        }
        assert_eq!(h.waits.len(), 2);
        // Far deadlines saturate instead of overflowing (the fake host never reaches
        // u64::MAX, so it interrupts).
        clock(&mut t, 0, 4, CLOCKID_MONOTONIC, u64::MAX - 1, 0);
        clock(&mut t, 1, 5, CLOCKID_REALTIME, u64::MAX, 0);
        let r = t.c.poll_oneoff(&mut h, &mut t.mem, SUBS, EVENTS, 2, OUT);
        assert_eq!((r, h.waits.last()), (Err(Stop::Interrupted(Interrupt::Stopped)), Some(&Some(u64::MAX))));
    }

    #[test]
    fn several_subscriptions_report_every_ready_one_in_order() {
        let (mut t, mut h) = (T::new(), Clock::new());
        let start = h.mono_ns;
        clock(&mut t, 0, 10, CLOCKID_MONOTONIC, 30 * MS, 0);
        clock(&mut t, 1, 11, CLOCKID_MONOTONIC, 10 * MS, 0);
        clock(&mut t, 2, 12, CLOCKID_REALTIME, 20 * MS, 0);
        // Waits for the earliest only, and reports only the one that passed.
        assert_eq!(poll(&mut t, &mut h, 3), Ok(vec![(11, 0, C, 0, 0)]));
        assert_eq!(h.waits, [Some(start + 10 * MS)]);
        // Two that passed together come out in subscription order.
        clock(&mut t, 0, 20, CLOCKID_MONOTONIC, h.mono_ns + 5 * MS, SUBCLOCKFLAGS_ABSTIME);
        clock(&mut t, 1, 21, CLOCKID_MONOTONIC, 50 * MS, 0);
        clock(&mut t, 2, 22, CLOCKID_MONOTONIC, 5 * MS, 0);
        assert_eq!(poll(&mut t, &mut h, 3), Ok(vec![(20, 0, C, 0, 0), (22, 0, C, 0, 0)]));
        // A ready fd wins over a clock without waiting; stdio is always ready.
        clock(&mut t, 0, 30, CLOCKID_MONOTONIC, 5 * MS, 0);
        fd(&mut t, 1, 31, W, 1);
        fd(&mut t, 2, 32, R, 0);
        fd(&mut t, 3, 33, W, 2);
        assert_eq!(poll(&mut t, &mut h, 4), Ok(vec![(31, 0, W, 0, 0), (32, 0, R, 0, 0), (33, 0, W, 0, 0)]));
        assert_eq!(h.waits.len(), 2);
    }

    #[test]
    fn files_are_always_ready_with_what_is_left() {
        let (mut t, mut h) = (T::new(), Clock::new());
        let mut area = MemFileArea::new();
        area.write("f", b"0123456789").unwrap();
        t.c.attach_files(Box::new(area), 1 << 20);
        let f = t.open("f", 0, 1 << 1 | 1 << 6).unwrap();
        assert_eq!(t.read(f, 4).unwrap(), b"0123");
        fd(&mut t, 0, 1, R, f);
        fd(&mut t, 1, 2, W, f);
        fd(&mut t, 2, 3, R, 3); // /data
        assert_eq!(poll(&mut t, &mut h, 3), Ok(vec![(1, 0, R, 6, 0), (2, 0, W, 0, 0), (3, 0, R, 0, 0)]));
        assert!(h.waits.is_empty());
    }

    fn with_sockets() -> (T, Clock, Shared) {
        let (mut t, mut h) = (T::new(), Clock::new());
        let s = Shared::default();
        t.c.attach_sockets(Box::new(s.clone()), &[7, 8]);
        h.net = Some(s.clone());
        (t, h, s)
    }

    #[test]
    fn listeners_are_readable_when_a_connection_waits() {
        let (mut t, mut h, s) = with_sockets();
        // fd 3 listens on 7, fd 4 on 8. Nothing waits: the poll blocks until the
        // scripted connection on 8 arrives (the clock is far away).
        s.with(|m| m.later.push_back(MemEvent::Connect { port: 8, input: vec![], eof: false }));
        fd(&mut t, 0, 3, R, 3);
        fd(&mut t, 1, 4, R, 4);
        fd(&mut t, 2, 5, W, 4); // never writable
        clock(&mut t, 3, 6, CLOCKID_MONOTONIC, 1000 * MS, 0);
        assert_eq!(poll(&mut t, &mut h, 4), Ok(vec![(4, 0, R, 1, 0)]));
        assert_eq!(h.waits.len(), 1);
        // Polling took nothing off the queue: a second poll sees it, accept gets it.
        s.with(|m| m.connect(8, b"", false));
        assert_eq!(poll(&mut t, &mut h, 3), Ok(vec![(4, 0, R, 2, 0)]));
        ok(t.c.sock_accept(&mut t.mem, 4, 0, OUT)).unwrap();
        ok(t.c.sock_accept(&mut t.mem, 4, 0, OUT)).unwrap();
        // Nothing left: the clock fires.
        assert_eq!(poll(&mut t, &mut h, 4), Ok(vec![(6, 0, C, 0, 0)]));
        assert_eq!(s.with(|m| m.waits), 1);
    }

    #[test]
    fn connections_read_write_hangup_and_errors() {
        let (mut t, mut h, s) = with_sockets();
        let id = s.with(|m| m.connect(7, b"", false));
        ok(t.c.sock_accept(&mut t.mem, 3, 0, OUT)).unwrap();
        let c = t.out_u32();
        s.with(|m| {
            m.conns.get_mut(&id).unwrap().window = 0;
            m.later.push_back(MemEvent::Data { conn: id, bytes: b"hey".to_vec(), eof: false });
        });
        fd(&mut t, 0, 1, R, c);
        fd(&mut t, 1, 2, W, c);
        assert_eq!(poll(&mut t, &mut h, 2), Ok(vec![(1, 0, R, 3, 0)]));
        // Not consumed: recv still gets the bytes.
        assert_eq!(t.read(c, 10).unwrap(), b"hey");
        // Room to send opens up.
        s.with(|m| m.later.push_back(MemEvent::Window { conn: id, bytes: 100 }));
        assert_eq!(poll(&mut t, &mut h, 2), Ok(vec![(2, 0, W, 100, 0)]));
        // End of stream: readable with HANGUP and no bytes.
        s.with(|m| m.later.push_back(MemEvent::Data { conn: id, bytes: b"!".to_vec(), eof: true }));
        assert_eq!(poll(&mut t, &mut h, 1), Ok(vec![(1, 0, R, 1, EVENTRWFLAGS_HANGUP)]));
        assert_eq!(t.read(c, 10).unwrap(), b"!");
        assert_eq!(poll(&mut t, &mut h, 1), Ok(vec![(1, 0, R, 0, EVENTRWFLAGS_HANGUP)]));
        // A closed write side is a PIPE error on FD_WRITE.
        ok(t.c.sock_shutdown(c, 2)).unwrap();
        fd(&mut t, 0, 1, W, c);
        assert_eq!(poll(&mut t, &mut h, 1), Ok(vec![(1, errno::PIPE as u16, W, 0, 0)]));
        // A reset is a CONNRESET error both ways; a closed fd is BADF.
        s.with(|m| m.conns.get_mut(&id).unwrap().reset = true);
        fd(&mut t, 0, 1, R, c);
        fd(&mut t, 1, 2, W, c);
        fd(&mut t, 2, 3, R, 99);
        let reset = errno::CONNRESET as u16;
        assert_eq!(poll(&mut t, &mut h, 3), Ok(vec![(1, reset, R, 0, 0), (2, reset, W, 0, 0), (3, errno::BADF as u16, R, 0, 0)]));
        t.close(c).unwrap();
        fd(&mut t, 0, 1, W, c);
        assert_eq!(poll(&mut t, &mut h, 1), Ok(vec![(1, errno::BADF as u16, W, 0, 0)]));
        assert!(h.waits.len() == 3);
    }

    #[test]
    fn a_blocked_poll_is_interrupted_and_stops_the_workload() {
        let (mut t, mut h, s) = with_sockets();
        s.with(|m| m.connect(7, b"", false));
        ok(t.c.sock_accept(&mut t.mem, 3, 0, OUT)).unwrap();
        let c = t.out_u32();
        fd(&mut t, 0, 1, R, c);
        fd(&mut t, 1, 2, R, 3);
        t.mem[OUT as usize..OUT as usize + 4].fill(0xaa);
        assert_eq!(t.c.poll_oneoff(&mut h, &mut t.mem, SUBS, EVENTS, 2, OUT), Err(Stop::Interrupted(Interrupt::Stopped)));
        assert_eq!((h.waits.as_slice(), read_u32(&t.mem, OUT)), (&[None][..], Ok(0xaaaa_aaaa)));
        // A host that cannot park (the default wait_until) stops a poll that must
        // block, but answers one that need not.
        struct NoPark;
        impl HostServices for NoPark {
            fn realtime_ns(&mut self) -> u64 {
                0
            }
            fn monotonic_ns(&mut self) -> u64 {
                0
            }
            fn random(&mut self, _: &mut [u8]) {}
        }
        clock(&mut t, 0, 1, CLOCKID_MONOTONIC, 1, 0);
        assert_eq!(t.c.poll_oneoff(&mut NoPark, &mut t.mem, SUBS, EVENTS, 1, OUT), Err(Stop::Interrupted(Interrupt::Stopped)));
        clock(&mut t, 0, 1, CLOCKID_MONOTONIC, 0, 0);
        assert_eq!(t.c.poll_oneoff(&mut NoPark, &mut t.mem, SUBS, EVENTS, 1, OUT), Ok(0));
    }

    #[test]
    fn hostile_inputs_fail_before_anything_waits_or_is_written() {
        let (mut t, mut h) = (T::new(), Clock::new());
        for i in 0..MAX_SUBSCRIPTIONS + 1 {
            clock(&mut t, i, 1, CLOCKID_MONOTONIC, 5 * MS, 0);
        }
        let mut call = |t: &mut T, subs: u32, events: u32, n: u32, nevents: u32| {
            t.mem[OUT as usize..OUT as usize + 4].fill(0xaa);
            let r = t.c.poll_oneoff(&mut h, &mut t.mem, subs, events, n, nevents).expect("no stop");
            if nevents == OUT {
                assert_eq!(read_u32(&t.mem, OUT), Ok(0xaaaa_aaaa));
            }
            r
        };
        let end = SIZE as u32;
        assert_eq!(call(&mut t, SUBS, EVENTS, 0, OUT), errno::INVAL);
        assert_eq!(call(&mut t, SUBS, EVENTS, MAX_SUBSCRIPTIONS + 1, OUT), errno::INVAL);
        assert_eq!(call(&mut t, SUBS, EVENTS, u32::MAX, OUT), errno::INVAL);
        assert_eq!(call(&mut t, end - 47, EVENTS, 1, OUT), errno::FAULT);
        assert_eq!(call(&mut t, u32::MAX, EVENTS, 1, OUT), errno::FAULT);
        assert_eq!(call(&mut t, SUBS, end - 31, 1, OUT), errno::FAULT);
        assert_eq!(call(&mut t, SUBS, end - 32 * 63, 64, OUT), errno::FAULT);
        assert_eq!(call(&mut t, SUBS, EVENTS, 1, end - 3), errno::FAULT);
        // One bad subscription among good ones fails the call.
        let last = MAX_SUBSCRIPTIONS - 1;
        let bad: [(u8, u32, u16, u32); 5] = [
            (3, 0, 0, errno::INVAL), // unknown event type
            (C, 9, 0, errno::INVAL), // unknown clock
            (C, CLOCKID_PROCESS_CPUTIME, 0, errno::NOTSUP),
            (C, CLOCKID_THREAD_CPUTIME, 0, errno::NOTSUP),
            (C, CLOCKID_MONOTONIC, 2, errno::INVAL), // unknown flag
        ];
        for (tag, id, flags, want) in bad {
            clock(&mut t, last, 1, id, 0, flags);
            let at = (SUBS + last * SUBSCRIPTION_BYTES) as usize;
            t.mem[at + field::TAG] = tag;
            assert_eq!(call(&mut t, SUBS, EVENTS, MAX_SUBSCRIPTIONS, OUT), want, "{tag} {id} {flags}");
        }
        assert!(h.waits.is_empty());
        // The full 64 work; events may overlap the subscriptions they came from.
        for i in 0..MAX_SUBSCRIPTIONS {
            fd(&mut t, i, u64::from(i), W, 1);
        }
        ok(t.c.poll_oneoff(&mut h, &mut t.mem, SUBS, SUBS, MAX_SUBSCRIPTIONS, OUT)).unwrap();
        assert_eq!(read_u32(&t.mem, OUT), Ok(MAX_SUBSCRIPTIONS));
        assert_eq!(read_u32(&t.mem, SUBS + 63 * EVENT_BYTES), Ok(63));
    }
}
