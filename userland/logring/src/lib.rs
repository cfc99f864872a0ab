//! A byte ring of recent log lines (`no_std`): [`LineRing`] keeps the last `N` bytes of
//! text written to it, counts the lines ever written, and reads them back by line number.
//!
//! Writing never allocates (the kernel's logger writes from interrupt handlers, where
//! the heap may be locked); a line longer than [`LINE_BYTES_MAX`] is cut there. Reading
//! copies out and allocates (`alloc`). Lines older than the ring holds are gone; the
//! oldest line, partly overwritten, is skipped. A line being written (no newline yet)
//! is not returned. Locking is the caller's.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

/// Longest line kept (the rest of it is dropped).
pub const LINE_BYTES_MAX: usize = 1024;

/// The last `N` bytes of log text.
pub struct LineRing<const N: usize> {
    buf: [u8; N],
    /// Bytes ever written (the next goes to `written % N`).
    written: u64,
    /// Newlines ever written.
    lines: u64,
    /// Bytes of the current line so far.
    line_bytes: usize,
    /// Whether the byte just before the kept window (the last one overwritten) was a
    /// newline: then the oldest kept line is whole.
    window_starts_a_line: bool,
}

/// Lines read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    pub lines: Vec<String>,
    /// Number of the first line returned (later than asked when older ones are gone).
    pub first_line: u64,
    /// Number of the line after the last one returned.
    pub next_line: u64,
}

impl<const N: usize> Default for LineRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineRing<N> {
    const _NOT_EMPTY: () = assert!(N > 0);

    pub const fn new() -> Self {
        LineRing { buf: [0; N], written: 0, lines: 0, line_bytes: 0, window_starts_a_line: true }
    }

    /// Lines completed since the start.
    pub fn lines_written(&self) -> u64 {
        self.lines
    }

    fn push(&mut self, b: u8) {
        let slot = &mut self.buf[(self.written % N as u64) as usize];
        if self.written >= N as u64 {
            self.window_starts_a_line = *slot == b'\n';
        }
        *slot = b;
        self.written += 1;
    }

    /// Appends text (any number of lines, or part of one).
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.push(b);
                self.lines += 1;
                self.line_bytes = 0;
            } else if self.line_bytes < LINE_BYTES_MAX {
                self.push(b);
                self.line_bytes += 1;
            }
        }
    }

    /// Lines numbered `from_line` on, at most `max_lines` (line 0 is the first written).
    pub fn read(&self, from_line: u64, max_lines: usize) -> Lines {
        let len = self.written.min(N as u64) as usize;
        let start = ((self.written - len as u64) % N as u64) as usize;
        let mut text: Vec<u8> = Vec::with_capacity(len);
        text.extend_from_slice(&self.buf[start..(start + len).min(N)]);
        if start + len > N {
            text.extend_from_slice(&self.buf[..start + len - N]);
        }
        let mut from = 0;
        if !self.window_starts_a_line {
            // The oldest line lost its head: skip it.
            from = text.iter().position(|&b| b == b'\n').map_or(text.len(), |i| i + 1);
        }
        let to = text.iter().rposition(|&b| b == b'\n').map_or(from, |i| (i + 1).max(from));
        let complete = &text[from..to];
        let count = complete.iter().filter(|&&b| b == b'\n').count() as u64;
        let first_kept = self.lines - count;
        let first_line = from_line.max(first_kept);
        let lines: Vec<String> = complete
            .split(|&b| b == b'\n')
            .take(count as usize)
            .skip((first_line - first_kept).min(count) as usize)
            .take(max_lines)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let first_line = first_line.min(self.lines);
        let next_line = first_line + lines.len() as u64;
        Lines { lines, first_line, next_line }
    }
}

impl<const N: usize> core::fmt::Write for LineRing<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::format;

    fn numbers(r: &Lines) -> Vec<u64> {
        r.lines.iter().map(|l| l.trim_start_matches("line ").parse().unwrap_or(u64::MAX)).collect()
    }

    #[test]
    fn reads_lines_by_number() {
        let mut ring = LineRing::<1024>::new();
        for i in 0..10 {
            ring.write(format!("line {i}\n").as_bytes());
        }
        let all = ring.read(0, 100);
        assert_eq!(numbers(&all), (0..10).collect::<Vec<_>>());
        assert_eq!((all.first_line, all.next_line), (0, 10));
        let some = ring.read(3, 4);
        assert_eq!(numbers(&some), [3, 4, 5, 6]);
        assert_eq!((some.first_line, some.next_line), (3, 7));
        let none = ring.read(10, 5);
        assert!(none.lines.is_empty());
        assert_eq!((none.first_line, none.next_line), (10, 10));
        let beyond = ring.read(50, 5);
        assert_eq!((beyond.first_line, beyond.next_line), (10, 10));
    }

    #[test]
    fn a_line_being_written_is_not_returned() {
        let mut ring = LineRing::<64>::new();
        ring.write(b"line 0\nline 1\nlin");
        let r = ring.read(0, 10);
        assert_eq!(numbers(&r), [0, 1]);
        ring.write(b"e 2\n");
        assert_eq!(numbers(&ring.read(2, 10)), [2]);
    }

    /// After many wraps the ring returns exactly the newest complete lines that fit,
    /// numbered as written, whatever the line lengths.
    #[test]
    fn wrapping_keeps_the_newest_lines_with_their_numbers() {
        let mut ring = LineRing::<100>::new();
        let mut written = Vec::new();
        for i in 0..1000u64 {
            let line = format!("line {i}{}", "x".repeat((i * 7 % 23) as usize));
            ring.write(line.as_bytes());
            ring.write(b"\n");
            written.push(line);
            let r = ring.read(0, usize::MAX);
            assert_eq!(r.next_line, i + 1);
            assert!(!r.lines.is_empty());
            let first = r.first_line as usize;
            assert_eq!(r.lines, written[first..], "after line {i}");
            let bytes: usize = r.lines.iter().map(|l| l.len() + 1).sum();
            assert!(bytes <= 100);
            // One more (older) line would not have fitted whole.
            if first > 0 {
                assert!(bytes + written[first - 1].len() + 1 > 100, "line {} was dropped early", first - 1);
            }
        }
        assert_eq!(ring.lines_written(), 1000);
    }

    #[test]
    fn long_lines_are_cut() {
        let mut ring = LineRing::<{ 4 * LINE_BYTES_MAX }>::new();
        ring.write(&[b'a'; 3 * LINE_BYTES_MAX]);
        ring.write(b"\nshort\n");
        let r = ring.read(0, 10);
        assert_eq!(r.lines.len(), 2);
        assert_eq!(r.lines[0].len(), LINE_BYTES_MAX);
        assert_eq!(r.lines[1], "short");
    }

    #[test]
    fn a_ring_smaller_than_one_line_returns_nothing_but_counts() {
        let mut ring = LineRing::<8>::new();
        ring.write(b"a much longer line than eight bytes\n");
        let r = ring.read(0, 10);
        assert!(r.lines.is_empty());
        assert_eq!((r.first_line, r.next_line), (1, 1));
        ring.write(b"tiny\n");
        assert_eq!(ring.read(0, 10).lines, ["tiny"]);
    }
}
