//! A workload's log: stdout and stderr bytes up to a cap, split into lines.

use alloc::string::String;
use alloc::vec::Vec;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Bytes written by a workload, capped at `cap` bytes in total.
#[derive(Debug)]
pub struct Log {
    cap: usize,
    written: usize,
    /// Complete lines not yet taken by [`Log::take_lines`].
    lines: Vec<(Stream, String)>,
    /// Partial lines per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
}

/// The log cap was reached: the write that would pass it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFull;

/// Longest partial line kept before it is flushed as a line of its own.
const MAX_LINE: usize = 4096;

impl Log {
    pub fn new(cap: usize) -> Self {
        Log { cap, written: 0, lines: Vec::new(), partial: [Vec::new(), Vec::new()] }
    }

    /// Total bytes accepted so far.
    pub fn written(&self) -> usize {
        self.written
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Appends `bytes`; refuses the whole write if it would pass the cap.
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> Result<(), LogFull> {
        let total = self.written.checked_add(bytes.len()).ok_or(LogFull)?;
        if total > self.cap {
            return Err(LogFull);
        }
        self.written = total;
        let idx = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        for &b in bytes {
            if b == b'\n' || self.partial[idx].len() >= MAX_LINE {
                let line = core::mem::take(&mut self.partial[idx]);
                self.lines.push((stream, String::from_utf8_lossy(&line).into_owned()));
                if b == b'\n' {
                    continue;
                }
            }
            self.partial[idx].push(b);
        }
        Ok(())
    }

    /// Moves unterminated output into lines (at exit).
    pub fn flush(&mut self) {
        for (idx, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            if !self.partial[idx].is_empty() {
                let line = core::mem::take(&mut self.partial[idx]);
                self.lines.push((stream, String::from_utf8_lossy(&line).into_owned()));
            }
        }
    }

    /// Takes the complete lines written since the last call.
    pub fn take_lines(&mut self) -> Vec<(Stream, String)> {
        core::mem::take(&mut self.lines)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn splits_lines_per_stream_and_enforces_the_cap() {
        let mut log = Log::new(20);
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"err\n").unwrap();
        log.write(Stream::Stdout, b"lo\nx").unwrap();
        let lines = log.take_lines();
        assert_eq!(lines, [(Stream::Stderr, "err".into()), (Stream::Stdout, "hello".into())]);
        assert_eq!(log.write(Stream::Stdout, &[b'a'; 12]), Err(LogFull));
        assert_eq!(log.written(), 11);
        log.write(Stream::Stdout, &[b'a'; 9]).unwrap();
        log.flush();
        assert_eq!(log.take_lines().len(), 1);
    }
}
