//! WASI preview 1 (`wasi_snapshot_preview1`) host functions for ordinary programs.
//!
//! Each function works on the workload's linear memory as a byte slice and on a
//! [`WasiCtx`]; clocks and entropy come from a [`HostServices`] implementation, so
//! everything here runs (and is tested) on the host. Output to fd 1 and 2 goes to
//! the workload's capped [`Log`]. There is no filesystem: no preopened directories
//! (`fd_prestat_get` answers `BADF`, which is how wasi-libc learns there are none),
//! stdin is empty.
//!
//! A function returns `Ok(errno)` for the program to see, or `Err(Stop)` when the
//! workload must stop (it called `proc_exit`, or its log is full).

use alloc::string::String;
use alloc::vec::Vec;

use crate::log::{Log, Stream};

/// Clock and entropy sources of the node.
pub trait HostServices {
    /// Nanoseconds since the Unix epoch.
    fn realtime_ns(&mut self) -> u64;
    /// Nanoseconds since an arbitrary fixed point (boot).
    fn monotonic_ns(&mut self) -> u64;
    /// Fills `buf` with random bytes.
    fn random(&mut self, buf: &mut [u8]);
}

/// WASI errno values used here.
pub mod errno {
    pub const SUCCESS: u32 = 0;
    pub const BADF: u32 = 8;
    pub const FAULT: u32 = 21;
    pub const INVAL: u32 = 28;
    pub const NOSYS: u32 = 52;
    pub const NOTSUP: u32 = 58;
    pub const OVERFLOW: u32 = 61;
    pub const SPIPE: u32 = 70;
}

/// Why a WASI call ends the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Exit(u32),
    LogFull,
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
    "fd_close",
    "fd_seek",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "proc_exit",
    "sched_yield",
];

/// Per-workload WASI state.
#[derive(Debug)]
pub struct WasiCtx {
    args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    pub log: Log,
}

const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;
const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const MAX_IOVS: u32 = 1024;

fn range(mem: &[u8], ptr: u32, len: u32) -> Result<core::ops::Range<usize>, u32> {
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
        WasiCtx { args: nul_terminated(args), env: nul_terminated(env), log: Log::new(log_cap) }
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

    /// Gathers the iovecs of an `fd_write` into one buffer.
    fn gather(mem: &[u8], iovs: u32, iovs_len: u32) -> Result<Vec<u8>, u32> {
        if iovs_len > MAX_IOVS {
            return Err(errno::INVAL);
        }
        let mut data = Vec::new();
        for i in 0..iovs_len {
            let iov = iovs.checked_add(8 * i).ok_or(errno::FAULT)?;
            let ptr = read_u32(mem, iov)?;
            let len = read_u32(mem, iov.checked_add(4).ok_or(errno::FAULT)?)?;
            let r = range(mem, ptr, len)?;
            data.extend_from_slice(&mem[r]);
        }
        Ok(data)
    }

    pub fn fd_write(&mut self, mem: &mut [u8], fd: u32, iovs: u32, iovs_len: u32, nwritten: u32) -> WasiResult {
        let stream = match fd {
            1 => Stream::Stdout,
            2 => Stream::Stderr,
            _ => return Ok(errno::BADF),
        };
        let data = match Self::gather(mem, iovs, iovs_len) {
            Ok(d) => d,
            Err(e) => return Ok(e),
        };
        // Check the result pointer before accepting output, so a fault writes nothing.
        if let Err(e) = range(mem, nwritten, 4) {
            return Ok(e);
        }
        self.log.write(stream, &data).map_err(|_| Stop::LogFull)?;
        done(write_u32(mem, nwritten, data.len() as u32))
    }

    /// stdin is empty: reads return 0 bytes.
    pub fn fd_read(&mut self, mem: &mut [u8], fd: u32, _iovs: u32, _iovs_len: u32, nread: u32) -> WasiResult {
        if fd != 0 {
            return Ok(errno::BADF);
        }
        done(write_u32(mem, nread, 0))
    }

    pub fn fd_close(&mut self, fd: u32) -> WasiResult {
        Ok(if fd <= 2 { errno::SUCCESS } else { errno::BADF })
    }

    pub fn fd_seek(&mut self, fd: u32) -> WasiResult {
        Ok(if fd <= 2 { errno::SPIPE } else { errno::BADF })
    }

    /// stdin/stdout/stderr are character devices (so wasi-libc line-buffers stdout).
    pub fn fd_fdstat_get(&mut self, mem: &mut [u8], fd: u32, out: u32) -> WasiResult {
        let rights = match fd {
            0 => RIGHT_FD_READ,
            1 | 2 => RIGHT_FD_WRITE,
            _ => return Ok(errno::BADF),
        };
        let mut stat = [0u8; 24];
        stat[0] = FILETYPE_CHARACTER_DEVICE;
        stat[8..16].copy_from_slice(&rights.to_le_bytes());
        done(write_bytes(mem, out, &stat))
    }

    pub fn fd_fdstat_set_flags(&mut self, fd: u32) -> WasiResult {
        Ok(if fd <= 2 { errno::NOTSUP } else { errno::BADF })
    }

    /// No preopened directories.
    pub fn fd_prestat_get(&mut self, _fd: u32) -> WasiResult {
        Ok(errno::BADF)
    }

    pub fn proc_exit(&mut self, code: u32) -> WasiResult {
        self.log.flush();
        Err(Stop::Exit(code))
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
    fn fd_write_gathers_iovecs_into_the_log() {
        let mut c = ctx();
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
        // 12 + 12 + 12 > 32: the cap stops the workload.
        mem[0..8].copy_from_slice(&[64, 0, 0, 0, 12, 0, 0, 0]);
        assert_eq!(c.fd_write(&mut mem, 2, 0, 1, 32), Ok(0));
        assert_eq!(c.fd_write(&mut mem, 2, 0, 1, 32), Err(Stop::LogFull));
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
        assert_eq!(c.fd_prestat_get(3), Ok(errno::BADF));
        assert_eq!(c.proc_exit(7), Err(Stop::Exit(7)));
    }
}
