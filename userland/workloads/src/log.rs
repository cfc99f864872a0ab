//! A workload's log: stdout and stderr, split into lines, cleaned for a terminal, and
//! capped in bytes *including* what each line costs to keep.
//!
//! Memory: complete lines not yet taken live in one [`Lines`] queue (their text in one
//! byte ring, 8 bytes of metadata per line), not one heap object per line. Every line
//! is charged [`LINE_OVERHEAD_BYTES`] against the cap on top of its bytes, when its
//! first byte (or its newline) arrives, so a log of newlines reaches the cap after
//! `cap / (1 + LINE_OVERHEAD_BYTES)` lines: a 16 MiB cap holds about 500 k empty
//! lines (4 MiB of metadata), not 16.7 M heap objects. The heap a log holds stays
//! below about twice its cap (queues grow by doubling) plus two partial lines.
//!
//! Cleaning: workload output goes to the node's console and to its owner's terminal,
//! so terminal escape sequences (CSI, OSC, DCS and the other string sequences, 7- and
//! 8-bit forms) and control characters are removed from each line; tabs stay; bytes
//! that are not UTF-8 become `?`. A line is never longer than its raw bytes.
//!
//! Raw bytes: every byte accepted is also kept as written, per stream, until taken
//! ([`Log::take_raw`]), for owners who want the output byte for byte (`logs --raw`).
//! What is held stays within the cap too: raw bytes are a part of what was charged.
//!
//! What it leaves to the kernel: when to take lines ([`Log::take_lines_max`] gives a
//! byte bound per call), where they go (console, a per-workload store for `logs`),
//! and rate limiting the console.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What one line costs against the cap besides its bytes. Covers this log's 8 bytes
/// of metadata per line (twice, for the queue's doubling growth) and leaves room for a
/// reader's per-line header (a `String` is 24 bytes), so a reader that keeps lines one
/// object per line also stays within about twice the cap.
pub const LINE_OVERHEAD_BYTES: usize = 32;

/// Longest line kept: a longer one is broken into lines of this many bytes.
pub const MAX_LINE_BYTES: usize = 4096;

/// Complete, cleaned lines in order: their text in one byte ring and one
/// (stream, length) pair per line.
#[derive(Debug, Default, Clone)]
pub struct Lines {
    text: VecDeque<u8>,
    meta: VecDeque<(Stream, u32)>,
}

impl Lines {
    /// Number of lines held.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Bytes of text held (without separators).
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }

    /// Heap bytes held now (capacities, not lengths).
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.meta.capacity() * core::mem::size_of::<(Stream, u32)>()
    }

    /// Appends a cleaned line (at most [`MAX_LINE_BYTES`], valid UTF-8).
    fn push(&mut self, stream: Stream, line: &[u8]) {
        debug_assert!(line.len() <= MAX_LINE_BYTES && core::str::from_utf8(line).is_ok());
        self.text.extend(line);
        self.meta.push_back((stream, line.len() as u32));
    }

    /// Takes the oldest line.
    pub fn pop(&mut self) -> Option<(Stream, String)> {
        let (stream, len) = self.meta.pop_front()?;
        let bytes: Vec<u8> = self.text.drain(..len as usize).collect();
        // Pushed lines are valid UTF-8; a lossy decode keeps this total anyway.
        let line = String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        if self.meta.is_empty() {
            self.text = VecDeque::new();
            self.meta = VecDeque::new();
        }
        Some((stream, line))
    }

    /// Length of the oldest line's text.
    fn front_len(&self) -> Option<usize> {
        self.meta.front().map(|&(_, len)| len as usize)
    }
}

/// Bytes written by a workload, capped at `cap` bytes in total, line overhead included.
#[derive(Debug)]
pub struct Log {
    cap: usize,
    /// Raw bytes accepted.
    written: usize,
    /// Bytes charged against the cap: raw bytes plus [`LINE_OVERHEAD_BYTES`] per line.
    charged: usize,
    /// Complete lines not yet taken.
    lines: Lines,
    /// Partial lines per stream (stdout, stderr), raw.
    partial: [Vec<u8>; 2],
    /// Whether the current line of each stream has been charged its overhead.
    open: [bool; 2],
    /// Raw bytes per stream (stdout, stderr) not yet taken ([`Log::take_raw`]).
    raw: [Vec<u8>; 2],
}

/// The log cap was reached: the write that would pass it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFull;

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Log {
    pub fn new(cap: usize) -> Self {
        Log { cap, written: 0, charged: 0, lines: Lines::default(), partial: [Vec::new(), Vec::new()], open: [false; 2], raw: [Vec::new(), Vec::new()] }
    }

    /// Total raw bytes accepted so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Bytes charged against the cap so far (raw bytes plus per-line overhead).
    pub fn charged(&self) -> usize {
        self.charged
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Complete lines waiting to be taken.
    pub fn pending(&self) -> &Lines {
        &self.lines
    }

    /// Heap bytes the log holds now (pending lines and partial lines).
    pub fn heap_bytes(&self) -> usize {
        self.lines.heap_bytes() + self.partial.iter().chain(&self.raw).map(Vec::capacity).sum::<usize>()
    }

    /// Takes the raw bytes written to `stream` since the last call, as written (no
    /// cleaning, no line splitting).
    pub fn take_raw(&mut self, stream: Stream) -> Vec<u8> {
        core::mem::take(&mut self.raw[index(stream)])
    }

    /// What writing `bytes` to `stream` costs against the cap, simulated on the current
    /// state exactly as [`Self::write`] splits lines.
    /// Also returns the number of lines it starts.
    fn cost(&self, stream: Stream, bytes: &[u8]) -> Option<(usize, usize)> {
        let idx = index(stream);
        let (mut open, mut len) = (self.open[idx], self.partial[idx].len());
        let mut lines = 0usize;
        for &b in bytes {
            if !open {
                lines += 1;
                open = true;
            }
            if b == b'\n' {
                (open, len) = (false, 0);
                continue;
            }
            if len >= MAX_LINE_BYTES {
                lines += 1;
                len = 0;
            }
            len += 1;
        }
        Some((lines.checked_mul(LINE_OVERHEAD_BYTES)?.checked_add(bytes.len())?, lines))
    }

    /// Appends `bytes`; refuses the whole write if it would pass the cap, or if the
    /// heap cannot hold it (reserved fallibly first, so the node never panics for it).
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> Result<(), LogFull> {
        let (cost, lines) = self.cost(stream, bytes).ok_or(LogFull)?;
        let total = self.charged.checked_add(cost).ok_or(LogFull)?;
        if total > self.cap {
            return Err(LogFull);
        }
        let partial_room = bytes.len().min(MAX_LINE_BYTES);
        self.lines.text.try_reserve(bytes.len()).map_err(|_| LogFull)?;
        self.lines.meta.try_reserve(lines).map_err(|_| LogFull)?;
        self.partial[index(stream)].try_reserve(partial_room).map_err(|_| LogFull)?;
        self.raw[index(stream)].try_reserve(bytes.len()).map_err(|_| LogFull)?;
        self.raw[index(stream)].extend_from_slice(bytes);
        self.charged = total;
        self.written += bytes.len();
        let idx = index(stream);
        for &b in bytes {
            self.open[idx] = true;
            if b == b'\n' {
                self.end_line(stream);
                continue;
            }
            if self.partial[idx].len() >= MAX_LINE_BYTES {
                self.end_line(stream);
                self.open[idx] = true;
            }
            self.partial[idx].push(b);
        }
        Ok(())
    }

    /// Cleans the partial line of `stream` into a complete line.
    fn end_line(&mut self, stream: Stream) {
        let idx = index(stream);
        let raw = core::mem::take(&mut self.partial[idx]);
        let mut clean = Vec::with_capacity(raw.len());
        clean_line(&raw, &mut clean);
        self.lines.push(stream, &clean);
        // Keep the allocation for the next line (bounded by MAX_LINE_BYTES).
        self.partial[idx] = raw;
        self.partial[idx].clear();
        self.open[idx] = false;
    }

    /// Moves unterminated output into lines (at exit). Already charged: never fails.
    pub fn flush(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.partial[index(stream)].is_empty() {
                self.end_line(stream);
            }
            self.partial[index(stream)] = Vec::new();
        }
    }

    /// Takes every complete line written since the last call.
    pub fn take_lines(&mut self) -> Vec<(Stream, String)> {
        self.take_lines_max(usize::MAX)
    }

    /// Takes complete lines, oldest first, while their bytes (text plus one newline
    /// each, as printed) add up to at most `max_bytes`, but always the first one, if
    /// any, so a reader makes progress (a line is at most [`MAX_LINE_BYTES`]). The rest
    /// stays for the next call.
    pub fn take_lines_max(&mut self, max_bytes: usize) -> Vec<(Stream, String)> {
        let mut out = Vec::new();
        let mut taken = 0usize;
        while let Some(len) = self.lines.front_len() {
            let len = len + 1;
            if !out.is_empty() && taken.saturating_add(len) > max_bytes {
                break;
            }
            let Some(line) = self.lines.pop() else { break };
            taken = taken.saturating_add(len);
            out.push(line);
        }
        out
    }
}

/// Where [`clean_line`] is inside an escape sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Esc,
    /// Control sequence: parameters until a final byte `@`..`~`.
    Csi,
    /// String sequence (OSC, DCS, SOS, PM, APC): until BEL or ST.
    Str,
    /// ESC inside a string sequence (ESC `\` is ST).
    StrEsc,
}

/// Appends to `out` the text of `raw` a terminal can show safely: escape sequences
/// and control characters removed (tab kept), bytes that are not UTF-8 as `?`.
/// The result is valid UTF-8 and never longer than `raw`.
pub fn clean_line(raw: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let mut state = Escape::None;
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            state = match (state, c) {
                (Escape::None, '\x1b') => Escape::Esc,
                (Escape::None, '\u{9b}') => Escape::Csi,
                (Escape::None, '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}') => Escape::Str,
                (Escape::None, '\t') => {
                    out.push(b'\t');
                    Escape::None
                }
                (Escape::None, c) if c < ' ' || ('\x7f'..='\u{9f}').contains(&c) => Escape::None,
                (Escape::None, c) => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    Escape::None
                }
                (Escape::Esc, '[') => Escape::Csi,
                (Escape::Esc, ']' | 'P' | 'X' | '^' | '_') => Escape::Str,
                (Escape::Esc, _) => Escape::None,
                (Escape::Csi, '@'..='~') => Escape::None,
                (Escape::Csi, _) => Escape::Csi,
                (Escape::Str, '\x07' | '\u{9c}') => Escape::None,
                (Escape::Str, '\x1b') => Escape::StrEsc,
                (Escape::Str, _) => Escape::Str,
                (Escape::StrEsc, '\\') => Escape::None,
                (Escape::StrEsc, _) => Escape::Str,
            };
        }
        if !chunk.invalid().is_empty() && state == Escape::None {
            out.push(b'?');
        }
    }
    debug_assert!(out.len() - start <= raw.len());
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn raw_bytes_are_kept_per_stream_as_written_within_the_cap() {
        let mut log = Log::new(64 + 4 * LINE_OVERHEAD_BYTES);
        let binary = [0u8, 0x1b, b'[', b'2', b'J', 0xff, b'\n', 7];
        log.write(Stream::Stdout, &binary).unwrap();
        log.write(Stream::Stderr, b"e\x1b]0;t\x07").unwrap();
        log.write(Stream::Stdout, b"!").unwrap();
        assert_eq!(log.take_raw(Stream::Stdout), [&binary[..], b"!"].concat());
        assert_eq!(log.take_raw(Stream::Stderr), b"e\x1b]0;t\x07");
        assert!(log.take_raw(Stream::Stdout).is_empty());
        // A refused write keeps nothing, raw or not.
        assert_eq!(log.write(Stream::Stdout, &[1; 100]), Err(LogFull));
        assert!(log.take_raw(Stream::Stdout).is_empty());
        // The lines are cleaned as before.
        log.flush();
        let lines: Vec<String> = log.take_lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines, ["?", "!", "e"]);
    }

    #[test]
    fn splits_lines_per_stream_and_enforces_the_cap() {
        let o = LINE_OVERHEAD_BYTES;
        let mut log = Log::new(20 + 3 * o);
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"err\n").unwrap();
        log.write(Stream::Stdout, b"lo\nx").unwrap();
        assert_eq!(log.charged(), 11 + 3 * o);
        let lines = log.take_lines();
        assert_eq!(lines, [(Stream::Stderr, "err".into()), (Stream::Stdout, "hello".into())]);
        assert_eq!(log.write(Stream::Stdout, &[b'a'; 10]), Err(LogFull));
        assert_eq!(log.written(), 11);
        log.write(Stream::Stdout, &[b'a'; 9]).unwrap();
        // The open line was charged when "x" came: a newline now costs one byte.
        assert_eq!(log.write(Stream::Stdout, b"\n"), Err(LogFull));
        log.flush();
        assert_eq!(log.take_lines(), [(Stream::Stdout, "xaaaaaaaaa".into())]);
    }

    /// Issue 10 item 2: a newline bomb used to cost one heap object per newline (16.7 M
    /// for a 16 MiB log). Now each line is charged its overhead, so the cap is reached
    /// after `cap / (1 + overhead)` lines and the heap stays within twice the cap.
    #[test]
    fn a_newline_bomb_hits_the_cap_at_a_bounded_heap_cost() {
        let cap = 16 << 20;
        let mut log = Log::new(cap);
        let chunk = vec![b'\n'; 64 << 10];
        let mut accepted = 0usize;
        let mut refused = false;
        for _ in 0..(cap / chunk.len()) {
            match log.write(Stream::Stdout, &chunk) {
                Ok(()) => accepted += chunk.len(),
                Err(LogFull) => {
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused, "16 MiB of newlines fit a 16 MiB cap");
        assert_eq!(log.pending().len(), accepted);
        assert!(accepted <= cap / (1 + LINE_OVERHEAD_BYTES), "{accepted} lines");
        assert!(log.heap_bytes() <= 2 * cap, "{} heap bytes", log.heap_bytes());
        // Byte by byte the cap is exact: the last newline that fits is accepted.
        while log.write(Stream::Stdout, b"\n").is_ok() {}
        assert!(log.charged() + 1 + LINE_OVERHEAD_BYTES > cap && log.charged() <= cap);
    }

    /// After the bomb, taking with a byte bound takes whole lines, and taking
    /// everything gives the memory back.
    #[test]
    fn taking_the_lines_of_a_bomb_frees_them() {
        let cap = 4 << 20;
        let mut log = Log::new(cap);
        let chunk = vec![b'\n'; 64 << 10];
        while log.write(Stream::Stderr, &chunk).is_ok() {}
        while log.write(Stream::Stderr, b"\n").is_ok() {}
        // Lines (about twice the cap) and the raw bytes (at most the cap).
        assert!(log.heap_bytes() <= 3 * cap);
        let lines = log.pending().len();
        assert_eq!(log.take_lines_max(0).len(), 1);
        assert_eq!(log.take_lines_max(usize::MAX).len(), lines - 1);
        assert_eq!(log.pending().heap_bytes(), 0);
        assert!(log.take_raw(Stream::Stderr).len() <= cap);
        assert!(log.heap_bytes() <= 2 * MAX_LINE_BYTES);
    }

    #[test]
    fn take_lines_max_bounds_bytes_and_keeps_order() {
        let mut log = Log::new(1 << 20);
        log.write(Stream::Stdout, b"aaaa\nbbbb\ncc\n").unwrap();
        log.write(Stream::Stderr, b"dddd\n").unwrap();
        assert_eq!(log.take_lines_max(10), [(Stream::Stdout, "aaaa".to_string()), (Stream::Stdout, "bbbb".to_string())]);
        assert_eq!(log.take_lines_max(1), [(Stream::Stdout, "cc".to_string())]);
        assert_eq!(log.take_lines_max(100), [(Stream::Stderr, "dddd".to_string())]);
        assert!(log.take_lines_max(100).is_empty());
    }

    #[test]
    fn long_lines_break_at_max_line_bytes_and_are_charged_per_piece() {
        let mut log = Log::new(1 << 20);
        log.write(Stream::Stdout, &vec![b'z'; 2 * MAX_LINE_BYTES + 1]).unwrap();
        assert_eq!(log.charged(), 2 * MAX_LINE_BYTES + 1 + 3 * LINE_OVERHEAD_BYTES);
        log.flush();
        let lens: Vec<usize> = log.take_lines().iter().map(|(_, l)| l.len()).collect();
        assert_eq!(lens, [MAX_LINE_BYTES, MAX_LINE_BYTES, 1]);
    }

    #[test]
    fn escapes_and_control_characters_are_stripped_tabs_kept() {
        let mut log = Log::new(1 << 20);
        let evil: &[u8] = b"\x1b[31mred\x1b[0m\r\x07 bell\tTab\x1b]0;title\x07!\x1b]8;;http://x\x1b\\link\x1bc\x7f\x08end\xc2\x9b2J\xff.\n";
        log.write(Stream::Stdout, evil).unwrap();
        log.write(Stream::Stderr, "caf\u{e9} \u{1f600}\n".as_bytes()).unwrap();
        assert_eq!(
            log.take_lines(),
            [(Stream::Stdout, "red bell\tTab!linkend?.".to_string()), (Stream::Stderr, "caf\u{e9} \u{1f600}".to_string())]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::test_cases(128)))]
        /// Any writes to both streams: each stream's lines are its raw bytes split at
        /// newlines and cleaned, in order; the charge is the bytes plus the overhead of
        /// every line; a refused write changes nothing.
        #[test]
        fn lines_match_the_raw_stream_and_the_charge_is_exact(
            writes in proptest::collection::vec((proptest::prelude::any::<bool>(), proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'\n', 0x1b, b'[', b'm', b'\t', 0xc3, 0xa9, 0x07, b']']), 0..40)), 0..24),
            cap in 0usize..800,
        ) {
            let mut log = Log::new(cap);
            let mut raw: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
            let mut taken: [Vec<String>; 2] = [Vec::new(), Vec::new()];
            for (err, bytes) in writes {
                let stream = if err { Stream::Stderr } else { Stream::Stdout };
                let before = (log.charged(), log.written());
                match log.write(stream, &bytes) {
                    Ok(()) => raw[index(stream)].extend_from_slice(&bytes),
                    Err(LogFull) => proptest::prop_assert_eq!((log.charged(), log.written()), before),
                }
                proptest::prop_assert!(log.charged() <= cap);
                for (s, line) in log.take_lines_max(16) {
                    taken[index(s)].push(line);
                }
            }
            log.flush();
            for (s, line) in log.take_lines() {
                taken[index(s)].push(line);
            }
            let mut lines_total = 0;
            for i in 0..2 {
                let mut expected = Vec::new();
                let mut parts: Vec<&[u8]> = raw[i].split(|&b| b == b'\n').collect();
                if parts.last().is_some_and(|p| p.is_empty()) {
                    parts.pop();
                }
                for part in parts {
                    let mut clean = Vec::new();
                    clean_line(part, &mut clean);
                    expected.push(String::from_utf8(clean).unwrap());
                }
                lines_total += expected.len();
                proptest::prop_assert_eq!(&taken[i], &expected);
            }
            proptest::prop_assert_eq!(log.charged(), log.written() + lines_total * LINE_OVERHEAD_BYTES);
        }
    }

    #[test]
    fn cleaned_lines_are_utf8_without_controls_and_never_longer() {
        let mut x = 0x9e37_79b9u32;
        for _ in 0..2000 {
            let mut raw = Vec::new();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                raw.push(if x & 0x100 != 0 { 0x1b } else { x as u8 });
            }
            let mut out = Vec::new();
            clean_line(&raw, &mut out);
            assert!(out.len() <= raw.len());
            let s = core::str::from_utf8(&out).expect("utf-8");
            assert!(s.chars().all(|c| c == '\t' || !(c < ' ' || ('\x7f'..='\u{9f}').contains(&c))), "{s:?}");
        }
    }
}
