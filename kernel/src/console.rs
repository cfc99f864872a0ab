//! The console: COM1 serial, and the `log` facade writing timestamped lines to it.
//!
//! Every line starts with the time since boot (`[    0.012345]`) and the level.
//! Output is serialized by a spinlock taken with interrupts disabled, so handlers
//! may log; the fault path uses [`force_unlock`] in case it interrupted a writer.
//!
//! Log lines are also kept in a byte ring of [`LOG_RING_BYTES`] (static: no allocation
//! on the logging path, which handlers use), read by line number with [`recent_lines`]
//! (the control protocol's `NodeLogs`). A line is cut at [`LOG_LINE_BYTES_MAX`] in the ring.

use core::fmt::{self, Write};
use log::{Level, LevelFilter, Metadata, Record};
use spin::Mutex;
use uart_16550::SerialPort;

use crate::arch::x86_64::{interrupts, time};

static SERIAL: Mutex<Option<SerialPort>> = Mutex::new(None);

/// Bytes of recent log lines kept.
pub const LOG_RING_BYTES: usize = 64 << 10;
/// Longest line kept in the ring (the rest of it is cut).
pub const LOG_LINE_BYTES_MAX: usize = 1024;

/// The last [`LOG_RING_BYTES`] of log text and the number of lines ever written.
struct Ring {
    buf: [u8; LOG_RING_BYTES],
    /// Bytes ever written (the next write goes to `written % LOG_RING_BYTES`).
    written: u64,
    lines: u64,
    /// Bytes of the current line so far.
    line_bytes: usize,
}

impl Ring {
    fn push(&mut self, b: u8) {
        self.buf[(self.written % LOG_RING_BYTES as u64) as usize] = b;
        self.written += 1;
    }
}

impl Write for Ring {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.push(b);
                self.lines += 1;
                self.line_bytes = 0;
            } else if self.line_bytes < LOG_LINE_BYTES_MAX {
                self.push(b);
                self.line_bytes += 1;
            }
        }
        Ok(())
    }
}

static RING: Mutex<Ring> = Mutex::new(Ring { buf: [0; LOG_RING_BYTES], written: 0, lines: 0, line_bytes: 0 });

/// Kept log lines numbered `from_line` on, at most `max_lines`: (lines, number of the
/// first line returned, number of the line after the last one returned). Lines older
/// than the ring holds are gone: then the first line returned is later than asked.
pub fn recent_lines(from_line: u64, max_lines: usize) -> (alloc::vec::Vec<alloc::string::String>, u64, u64) {
    let mut copy = alloc::vec![0u8; LOG_RING_BYTES];
    let (len, lines_total) = interrupts::without(|| {
        let ring = RING.lock();
        let len = ring.written.min(LOG_RING_BYTES as u64) as usize;
        let start = ((ring.written - len as u64) % LOG_RING_BYTES as u64) as usize;
        for (i, b) in copy.iter_mut().take(len).enumerate() {
            *b = ring.buf[(start + i) % LOG_RING_BYTES];
        }
        (len, ring.lines)
    });
    let mut text = &copy[..len];
    if lines_total > 0 && len == LOG_RING_BYTES {
        // The oldest line is partly overwritten: skip it.
        let cut = text.iter().position(|&b| b == b'\n').map_or(text.len(), |i| i + 1);
        text = &text[cut..];
    }
    // Only complete lines (a line being written ends without its newline).
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let kept: alloc::vec::Vec<&[u8]> = text[..end].split(|&b| b == b'\n').collect();
    let kept = &kept[..kept.len().saturating_sub(1)]; // the split's empty tail
    let first_kept = lines_total.saturating_sub(kept.len() as u64);
    let first = from_line.max(first_kept);
    let skip = (first - first_kept) as usize;
    let out: alloc::vec::Vec<alloc::string::String> = kept
        .iter()
        .skip(skip)
        .take(max_lines)
        .map(|l| alloc::string::String::from_utf8_lossy(l).into_owned())
        .collect();
    let next = first + out.len() as u64;
    (out, first, next)
}

/// Initializes COM1 at 115200 8N1.
pub fn init() {
    // SAFETY: 0x3F8 is the standard COM1 base; nothing else in the kernel drives these ports.
    let mut port = unsafe { SerialPort::new(0x3F8) };
    port.init();
    *SERIAL.lock() = Some(port);
}

/// Writes raw bytes to the console.
pub fn write_bytes(bytes: &[u8]) {
    interrupts::without(|| {
        if let Some(port) = SERIAL.lock().as_mut() {
            for &b in bytes {
                if b == b'\n' {
                    port.send(b'\r');
                }
                port.send(b);
            }
        }
    });
}

/// Writes formatted text to the console.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    struct Console;
    impl Write for Console {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            write_bytes(s.as_bytes());
            Ok(())
        }
    }
    let _ = Console.write_fmt(args);
}

/// Releases the console lock held by whatever code a fault interrupted.
///
/// # Safety
/// Only for the fatal-fault and panic paths, which never return to the interrupted writer.
pub unsafe fn force_unlock() {
    // SAFETY: the caller guarantees the interrupted holder never runs again.
    unsafe { SERIAL.force_unlock() };
}

/// `print!` to the serial console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// `println!` to the serial console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Other crates' informational chatter (virtio-drivers, smoltcp) is debug detail here.
        let level = if metadata.target().starts_with("kernel") || metadata.level() < Level::Info {
            metadata.level()
        } else {
            Level::Debug.max(metadata.level())
        };
        level <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = time::since_boot_us();
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let (s, frac) = (us / 1_000_000, us % 1_000_000);
        write_fmt(format_args!("[{s:5}.{frac:06}] {level} {}\n", record.args()));
        interrupts::without(|| {
            let _ = RING.lock().write_fmt(format_args!("[{s:5}.{frac:06}] {level} {}\n", record.args()));
        });
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`.
pub fn init_log(level: LevelFilter) {
    // A second call keeps the first logger; only the level changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parses a `gridos.log=` value.
pub fn parse_level(value: &str) -> Option<LevelFilter> {
    match value {
        "off" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}
