//! The kernel command line: space-separated `key=value` words (and bare flags).
//!
//! Keys used so far: `gridos.test=NAME` (run an in-kernel test and exit QEMU),
//! `gridos.log=LEVEL`, `gridos.heap_mb=N`.

/// A parsed view of the command line.
#[derive(Clone, Copy)]
pub struct Cmdline<'a> {
    raw: &'a str,
}

impl<'a> Cmdline<'a> {
    pub fn new(raw: &'a str) -> Self {
        Cmdline { raw }
    }

    /// The value of `key=value`, the last one if repeated; `Some("")` for a bare `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.raw
            .split_ascii_whitespace()
            .filter_map(|word| match word.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                None if word == key => Some(""),
                _ => None,
            })
            .last()
    }

    /// `get(key)` parsed as a number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    pub fn as_str(&self) -> &'a str {
        self.raw
    }
}
