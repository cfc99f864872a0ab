//! Workload output on the serial console: one node-wide, bounded, rate-limited queue
//! (`workloads::logstore::ConsoleQueue`) between the workloads and the UART, and the
//! bounds of what the node keeps of each workload's log.
//!
//! Workloads never write the console themselves: their lines (already cleaned of
//! escapes and control characters by `workloads::log`) are queued when the scheduler
//! drains their log, and the scheduler prints at most [`CONSOLE_RATE_BYTES_PER_S`]
//! (bursts of [`CONSOLE_BURST_BYTES`]) between time slices, one line of at most
//! `CONSOLE_LINE_BYTES_MAX` (200) bytes per console write, so interrupts are off for at most one short
//! line at a time (about 20 ms on a real 115200-baud UART). A full queue drops lines
//! and counts them: `[name] ... N lines dropped (console rate limit)`.

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use workloads::logstore::ConsoleQueue;
use workloads::Limits;

use crate::arch::x86_64::time;

/// Bytes of workload output waiting for the console, all workloads.
pub const CONSOLE_QUEUE_BYTES: usize = 32 << 10;
/// Console bytes per second for workload output: about a third of a 115200-baud UART,
/// the rest is the kernel's.
pub const CONSOLE_RATE_BYTES_PER_S: u64 = 4 << 10;
/// Largest burst of workload output.
pub const CONSOLE_BURST_BYTES: u64 = 8 << 10;
/// Most bytes of one workload's log the node keeps for `logs` (its last lines).
pub const KEPT_LOG_BYTES_MAX: usize = 256 << 10;
/// Most bytes of log text in one read (one `logs` answer, a self-test's look).
pub const LOG_READ_BYTES_MAX: usize = 64 << 10;
/// Bytes of lines moved from a workload's log per batch.
pub const DRAIN_BATCH_BYTES: usize = 16 << 10;

static QUEUE: Mutex<ConsoleQueue> = Mutex::new(ConsoleQueue::new(CONSOLE_QUEUE_BYTES, CONSOLE_RATE_BYTES_PER_S, CONSOLE_BURST_BYTES));
static NEXT_SOURCE: AtomicU64 = AtomicU64::new(0);

/// What the node keeps of a workload's log: its cap plus a quarter (the `stderr: `
/// prefix the kept lines carry; every line is charged at least 33 bytes by both), at
/// most [`KEPT_LOG_BYTES_MAX`].
pub fn kept_log_bytes(limits: &Limits) -> usize {
    let cap = limits.log_bytes.saturating_add(limits.log_bytes / 4);
    usize::try_from(cap).unwrap_or(usize::MAX).min(KEPT_LOG_BYTES_MAX)
}

/// A fresh id for a workload's lines in the queue.
pub fn new_source() -> u64 {
    NEXT_SOURCE.fetch_add(1, Ordering::Relaxed)
}

/// Queues a workload's line (or drops and counts it).
pub fn push(source: u64, name: &str, line: &str) {
    QUEUE.lock().push(source, name, line);
}

/// Prints what the rate allows at `now_ns`; returns when to come back if lines wait.
pub fn drain(now_ns: u64) -> Option<u64> {
    loop {
        // The queue lock is not held while printing.
        let line = QUEUE.lock().poll(now_ns);
        let Some(line) = line else { break };
        crate::kprintln!("{line}");
    }
    let q = QUEUE.lock();
    (q.queued_bytes() > 0 || q.dropped_lines() > 0).then(|| {
        // A line's worth of tokens: 256 bytes at the rate.
        now_ns + 256 * 1_000_000_000 / CONSOLE_RATE_BYTES_PER_S
    })
}

/// Prints everything queued, at the rate (self-tests, which run the manager to the
/// end without the scheduler task).
pub fn flush() {
    while let Some(next) = drain(time::since_boot_ns()) {
        while time::since_boot_ns() < next {
            core::hint::spin_loop();
        }
    }
}
