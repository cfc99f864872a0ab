//! What the node keeps of a workload's output after taking it from the workload's
//! [`crate::log::Log`]: a byte-bounded tail for `logs` requests ([`KeptLog`]) and the
//! bounded, rate-limited queue in front of the serial console ([`ConsoleQueue`]).
//!
//! Both are sans-IO: the kernel pushes cleaned lines (from `Log::take_lines_max`, which
//! already stripped escapes and control characters) and passes the time in.
//!
//! - [`KeptLog`] keeps the *last* `cap_bytes` of lines, charging each line its bytes
//!   plus [`crate::log::LINE_OVERHEAD_BYTES`] (so a log of newlines is bounded too), in
//!   one byte ring plus 8 bytes of metadata per line. Lines keep their absolute numbers
//!   (line 0 is the workload's first line, kept or not), so a reader asking from a line
//!   that was dropped learns how many it missed. A read returns at most a byte budget,
//!   copying only that much.
//! - [`ConsoleQueue`] holds at most `cap_bytes` of lines waiting for the console and
//!   lets out at most a token bucket's worth (`rate_bytes_per_s`, burst `burst_bytes`);
//!   what does not fit is dropped and counted per workload, and the next line out of
//!   that workload says `[name] ... N lines dropped`. Console lines are cut to
//!   [`CONSOLE_LINE_BYTES_MAX`] so one line never holds the UART for long.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::log::{Stream, LINE_OVERHEAD_BYTES};

/// A line's text as the node keeps it: stderr lines carry a `stderr: ` prefix.
pub fn display_line(stream: Stream, line: &str) -> String {
    match stream {
        Stream::Stdout => String::from(line),
        Stream::Stderr => format!("stderr: {line}"),
    }
}

/// The last lines of a workload's output, at most `cap_bytes` charged in all.
#[derive(Debug, Clone)]
pub struct KeptLog {
    cap_bytes: usize,
    text: VecDeque<u8>,
    /// Length of each kept line, oldest first.
    lens: VecDeque<u32>,
    /// Absolute number of the oldest kept line.
    first_line: u64,
}

/// What [`KeptLog::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// Lines `[start_line, next_line)`.
    pub lines: Vec<String>,
    /// The first line returned (> the asked line when older lines were dropped).
    pub start_line: u64,
    /// Where to read next.
    pub next_line: u64,
    /// Lines asked for that the node no longer keeps (`start_line - from_line`).
    pub dropped_before: u64,
    /// Lines after `next_line` that are kept but did not fit the budget.
    pub more: bool,
}

impl KeptLog {
    /// An empty log keeping at most `cap_bytes` (bytes plus per-line overhead).
    pub fn new(cap_bytes: usize) -> Self {
        KeptLog { cap_bytes, text: VecDeque::new(), lens: VecDeque::new(), first_line: 0 }
    }

    /// Bytes charged now: text plus [`LINE_OVERHEAD_BYTES`] per line.
    pub fn charged_bytes(&self) -> usize {
        self.text.len() + self.lens.len() * LINE_OVERHEAD_BYTES
    }

    /// Heap bytes held (capacities).
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.lens.capacity() * core::mem::size_of::<u32>()
    }

    /// Number of the line the next push gets (= lines ever pushed).
    pub fn end_line(&self) -> u64 {
        self.first_line + self.lens.len() as u64
    }

    /// Absolute number of the oldest kept line.
    pub fn first_line(&self) -> u64 {
        self.first_line
    }

    /// Appends a line, dropping the oldest lines until it fits. A line longer than the
    /// cap is cut to it (never happens with the node's caps: lines are at most 4 KiB).
    /// Allocation is fallible: if the heap cannot grow, the oldest lines make room, and
    /// if even that fails the line is dropped (the count still moves on). Returns
    /// whether it was kept.
    pub fn push(&mut self, line: &str) -> bool {
        let room = self.cap_bytes.saturating_sub(LINE_OVERHEAD_BYTES);
        let mut end = line.len().min(room);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &line.as_bytes()[..end];
        let cost = bytes.len() + LINE_OVERHEAD_BYTES;
        if cost > self.cap_bytes {
            self.first_line += 1;
            self.clear_if_empty();
            return false;
        }
        while self.charged_bytes() + cost > self.cap_bytes {
            self.pop_oldest();
        }
        while self.text.try_reserve(bytes.len()).is_err() || self.lens.try_reserve(1).is_err() {
            if self.lens.is_empty() {
                self.first_line += 1;
                return false;
            }
            self.pop_oldest();
        }
        self.text.extend(bytes);
        self.lens.push_back(bytes.len() as u32);
        debug_assert!(self.charged_bytes() <= self.cap_bytes);
        true
    }

    fn pop_oldest(&mut self) {
        if let Some(len) = self.lens.pop_front() {
            self.text.drain(..len as usize);
            self.first_line += 1;
        }
        self.clear_if_empty();
    }

    /// Gives the memory back once nothing is kept.
    fn clear_if_empty(&mut self) {
        if self.lens.is_empty() {
            self.text = VecDeque::new();
            self.lens = VecDeque::new();
        }
    }

    /// Lines from `from_line` on (from the oldest kept one if those were dropped), at
    /// most `max_lines` and at most `max_bytes` of text (but at least one line, so a
    /// reader always moves on). Copies only what it returns.
    pub fn read(&self, from_line: u64, max_lines: usize, max_bytes: usize) -> LogRead {
        let start_line = from_line.max(self.first_line).min(self.end_line());
        let dropped_before = start_line - from_line.min(start_line);
        let mut skip_bytes = 0usize;
        let skip_lines = (start_line - self.first_line) as usize;
        for &len in self.lens.iter().take(skip_lines) {
            skip_bytes += len as usize;
        }
        let mut lines = Vec::new();
        let mut taken_bytes = 0usize;
        let mut offset = skip_bytes;
        for &len in self.lens.iter().skip(skip_lines) {
            let len = len as usize;
            if lines.len() >= max_lines || (!lines.is_empty() && taken_bytes + len > max_bytes) {
                break;
            }
            let bytes: Vec<u8> = self.text.range(offset..offset + len).copied().collect();
            // Pushed as &str and cut on a char boundary: always UTF-8.
            lines.push(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()));
            taken_bytes += len;
            offset += len;
        }
        let next_line = start_line + lines.len() as u64;
        LogRead { lines, start_line, next_line, dropped_before, more: next_line < self.end_line() }
    }
}

/// Longest line written to the console (bytes of text; the full line stays in the
/// workload's kept log).
pub const CONSOLE_LINE_BYTES_MAX: usize = 200;

/// One console line waiting: which workload, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Queued {
    source: u64,
    text: String,
}

/// Lines dropped from one workload since its last line that went out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dropped {
    source: u64,
    name: String,
    lines: u64,
}

/// Workload output on its way to the console: bounded, rate-limited, dropping with a
/// count. `source` identifies a workload (the kernel's slot number), `name` is printed.
#[derive(Debug)]
pub struct ConsoleQueue {
    cap_bytes: usize,
    rate_bytes_per_s: u64,
    burst_bytes: u64,
    queued: VecDeque<Queued>,
    queued_bytes: usize,
    dropped: Vec<Dropped>,
    /// Bytes the bucket holds, and when it was last filled.
    tokens: u64,
    filled_ns: u64,
}

/// Most workloads with a pending drop count kept (beyond, counts are merged into one).
const DROPPED_SOURCES_MAX: usize = 64;

impl ConsoleQueue {
    /// A queue of at most `cap_bytes`, letting out `rate_bytes_per_s` (bursts of `burst_bytes`).
    pub const fn new(cap_bytes: usize, rate_bytes_per_s: u64, burst_bytes: u64) -> Self {
        ConsoleQueue {
            cap_bytes,
            rate_bytes_per_s,
            burst_bytes,
            queued: VecDeque::new(),
            queued_bytes: 0,
            dropped: Vec::new(),
            tokens: burst_bytes,
            filled_ns: 0,
        }
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Lines dropped and not yet reported, all workloads.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.iter().map(|d| d.lines).sum()
    }

    /// Queues `[name] line` (the line cut to [`CONSOLE_LINE_BYTES_MAX`]), or drops and
    /// counts it when the queue is full. A line queued after drops from the same
    /// workload is preceded by the report of how many were dropped.
    pub fn push(&mut self, source: u64, name: &str, line: &str) {
        let mut end = line.len().min(CONSOLE_LINE_BYTES_MAX);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < line.len() { "..." } else { "" };
        let text = format!("[{name}] {}{cut}", &line[..end]);
        let pending = self.dropped.iter().position(|d| d.source == source);
        let report = pending.map(|i| report_text(&self.dropped[i]));
        let needed = text.len() + report.as_ref().map_or(0, String::len);
        if self.queued_bytes + needed > self.cap_bytes || self.queued.try_reserve(2).is_err() {
            self.count_drop(source, name);
            return;
        }
        if let (Some(i), Some(report)) = (pending, report) {
            self.dropped.swap_remove(i);
            self.queued_bytes += report.len();
            self.queued.push_back(Queued { source, text: report });
        }
        self.queued_bytes += text.len();
        self.queued.push_back(Queued { source, text });
    }

    fn count_drop(&mut self, source: u64, name: &str) {
        if let Some(d) = self.dropped.iter_mut().find(|d| d.source == source) {
            d.lines += 1;
        } else if self.dropped.len() < DROPPED_SOURCES_MAX {
            self.dropped.push(Dropped { source, name: String::from(name), lines: 1 });
        } else if let Some(d) = self.dropped.last_mut() {
            // Past the bound: the count goes to the last entry, named as a group.
            d.source = u64::MAX;
            d.name = String::from("workloads");
            d.lines += 1;
        }
    }

    /// Adds the bytes the rate allows for the time since the last fill.
    fn refill(&mut self, now_ns: u64) {
        let elapsed_ns = now_ns.saturating_sub(self.filled_ns);
        let add = (u128::from(elapsed_ns) * u128::from(self.rate_bytes_per_s) / 1_000_000_000) as u64;
        if add > 0 {
            self.tokens = self.tokens.saturating_add(add).min(self.burst_bytes);
            self.filled_ns = now_ns;
        }
    }

    /// The next line to print at `now_ns`, if the bucket allows it: queued lines in
    /// order, then, once the queue is empty, the reports of drops not yet followed by a
    /// queued line (`[name] ... N lines dropped`). `None` when nothing waits or the rate
    /// says wait.
    pub fn poll(&mut self, now_ns: u64) -> Option<String> {
        self.refill(now_ns);
        let text_len = match self.queued.front() {
            Some(q) => q.text.len(),
            None => report_text(self.dropped.first()?).len(),
        };
        let cost = text_len as u64 + 1;
        // A line longer than the burst goes out once the bucket is full.
        if self.tokens < cost.min(self.burst_bytes) {
            return None;
        }
        self.tokens = self.tokens.saturating_sub(cost);
        let Some(q) = self.queued.pop_front() else {
            return Some(report_text(&self.dropped.swap_remove(0)));
        };
        self.queued_bytes -= q.text.len();
        if self.queued.is_empty() {
            self.queued = VecDeque::new();
        }
        Some(q.text)
    }
}

fn report_text(d: &Dropped) -> String {
    format!("[{}] ... {} lines dropped (console rate limit)", d.name, d.lines)
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::vec;

    #[test]
    fn kept_log_keeps_the_last_bytes_with_overhead() {
        let o = LINE_OVERHEAD_BYTES;
        let mut k = KeptLog::new(3 * (o + 2));
        for line in ["aa", "bb", "cc", "dd"] {
            assert!(k.push(line));
        }
        assert_eq!(k.charged_bytes(), 3 * (o + 2));
        assert_eq!((k.first_line(), k.end_line()), (1, 4));
        let r = k.read(0, 10, 1000);
        assert_eq!(r.lines, vec!["bb", "cc", "dd"]);
        assert_eq!((r.start_line, r.next_line, r.dropped_before, r.more), (1, 4, 1, false));
        // Reads are bounded by lines and bytes, but always give one line.
        let r = k.read(2, 1, 1000);
        assert_eq!((r.lines, r.next_line, r.more), (vec!["cc".into()], 3, true));
        let r = k.read(1, 10, 3);
        assert_eq!((r.lines.len(), r.next_line), (1, 2));
        let r = k.read(9, 10, 3);
        assert_eq!((r.lines.len(), r.start_line, r.next_line, r.more), (0, 4, 4, false));
    }

    #[test]
    fn a_newline_bomb_is_bounded_by_its_overhead() {
        let cap = 64 << 10;
        let mut k = KeptLog::new(cap);
        for _ in 0..200_000 {
            k.push("");
        }
        assert_eq!(k.end_line(), 200_000);
        assert_eq!(k.charged_bytes(), cap / LINE_OVERHEAD_BYTES * LINE_OVERHEAD_BYTES);
        // 4 bytes of metadata per line: well below the charge.
        assert!(k.heap_bytes() <= cap, "{}", k.heap_bytes());
        let r = k.read(0, usize::MAX, 1 << 20);
        assert_eq!(r.lines.len(), cap / LINE_OVERHEAD_BYTES);
        assert_eq!(r.dropped_before, 200_000 - (cap / LINE_OVERHEAD_BYTES) as u64);
    }

    #[test]
    fn kept_log_cuts_a_line_longer_than_the_cap_on_a_char_boundary() {
        let mut k = KeptLog::new(LINE_OVERHEAD_BYTES + 3);
        assert!(k.push("aé€"));
        assert_eq!(k.read(0, 1, 100).lines, vec!["aé"]);
        let mut tiny = KeptLog::new(LINE_OVERHEAD_BYTES - 1);
        assert!(!tiny.push("x"));
        assert_eq!(tiny.end_line(), 1);
    }

    #[test]
    fn console_queue_rate_limits_and_reports_drops() {
        // 100 bytes queued at most, 1000 B/s, bursts of 50 bytes.
        let mut q = ConsoleQueue::new(100, 1000, 50);
        for i in 0..20 {
            q.push(7, "w", &format!("line {i}"));
        }
        // "[w] line 0" is 10 bytes: 10 lines fit the queue.
        assert_eq!(q.queued_bytes(), 100);
        assert_eq!(q.dropped_lines(), 10);
        let mut out = Vec::new();
        while let Some(l) = q.poll(0) {
            out.push(l);
        }
        // A 50-byte burst lets out four 11-byte lines (text plus newline).
        assert_eq!(out, vec!["[w] line 0", "[w] line 1", "[w] line 2", "[w] line 3"]);
        // 100 ms later: 100 bytes more, but the bucket holds 50.
        let mut now = 100_000_000;
        while let Some(l) = q.poll(now) {
            out.push(l);
        }
        assert_eq!(out.len(), 8);
        now += 1_000_000_000;
        while let Some(l) = q.poll(now) {
            out.push(l);
            now += 1_000_000_000;
        }
        assert_eq!(out[10 - 1], "[w] line 9");
        assert_eq!(out[10], "[w] ... 10 lines dropped (console rate limit)");
        assert_eq!(out.len(), 11);
        assert_eq!(q.dropped_lines(), 0);
    }

    #[test]
    fn console_lines_are_cut_and_drop_reports_precede_the_next_line() {
        let mut q = ConsoleQueue::new(1000, 1_000_000, 1_000_000);
        let long = "x".repeat(1000);
        q.push(1, "a", &long);
        let out = q.poll(0).unwrap();
        assert_eq!(out.len(), "[a] ".len() + CONSOLE_LINE_BYTES_MAX + 3);
        let mut q = ConsoleQueue::new(12, 1_000_000, 1_000_000);
        q.push(1, "a", "1234567");
        q.push(1, "a", "dropped");
        assert_eq!(q.poll(0).unwrap(), "[a] 1234567");
        assert_eq!(q.poll(0).unwrap(), "[a] ... 1 lines dropped (console rate limit)");
        assert_eq!(q.poll(0), None);
        // A report goes ahead of the workload's next queued line (when both fit).
        let mut q = ConsoleQueue::new(6, 1_000_000, 1_000_000);
        q.push(1, "a", "x");
        q.push(1, "a", "y");
        assert_eq!(q.poll(0).unwrap(), "[a] x");
        q.push(1, "a", "z");
        assert_eq!(q.dropped_lines(), 2);
        let mut big = ConsoleQueue::new(1000, 1_000_000, 1_000_000);
        big.dropped = q.dropped.clone();
        big.push(1, "a", "z");
        assert_eq!(big.poll(0).unwrap(), "[a] ... 2 lines dropped (console rate limit)");
        assert_eq!(big.poll(0).unwrap(), "[a] z");
    }

    #[test]
    fn many_sources_keep_a_bounded_drop_table() {
        let mut q = ConsoleQueue::new(0, 1_000_000, 1_000_000);
        for source in 0..1000u64 {
            q.push(source, "w", "x");
        }
        assert_eq!(q.dropped.len(), DROPPED_SOURCES_MAX);
        assert_eq!(q.dropped_lines(), 1000);
    }
}
