//! The console: COM1 serial, and the `log` facade writing timestamped lines to it.
//!
//! Every line starts with the time since boot (`[    0.012345]`) and the level.
//! Output is serialized by a spinlock taken with interrupts disabled, so handlers
//! may log; the fault path uses [`force_unlock`] in case it interrupted a writer.
//!
//! Log lines are also kept in a byte ring of [`LOG_RING_BYTES`] (static: no allocation
//! on the logging path, which handlers use), read by line number with [`recent_lines`]
//! (the control protocol's `NodeLogs`). A line is cut at `logring::LINE_BYTES_MAX` (1 KiB) in the ring.

use core::fmt::{self, Write};
use log::{Level, LevelFilter, Metadata, Record};
use spin::Mutex;
use uart_16550::SerialPort;

use crate::arch::x86_64::{interrupts, time};

static SERIAL: Mutex<Option<SerialPort>> = Mutex::new(None);

/// Bytes of recent log lines kept.
pub const LOG_RING_BYTES: usize = 64 << 10;

/// The last [`LOG_RING_BYTES`] of log lines.
static RING: Mutex<logring::LineRing<LOG_RING_BYTES>> = Mutex::new(logring::LineRing::new());

/// Kept log lines numbered `from_line` on, at most `max_lines`: (lines, number of the
/// first line returned, number of the line after the last one returned). Lines older
/// than the ring holds are gone: then the first line returned is later than asked.
pub fn recent_lines(from_line: u64, max_lines: usize) -> (alloc::vec::Vec<alloc::string::String>, u64, u64) {
    // Read with interrupts off (handlers log); the copy is the ring's size at most.
    let read = interrupts::without(|| RING.lock().read(from_line, max_lines));
    (read.lines, read.first_line, read.next_line)
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
