//! gridctl: the user's tool for gridos nodes, as a library with a thin `main`.
//!
//! - [`key`]: the user's key file (a 32-byte ed25519 seed in hex): the user's
//!   workload-owner key, which signs every request (the overlay identity is a fresh one per
//!   run unless `--user-overlay-key`);
//! - [`target`]: `KEY@HOST:PORT` node addresses;
//! - [`stack`]: the host network stack, now `hostnet::stack` (an `overlay::Node` over a UDP
//!   socket plus a smoltcp interface on the overlay address), re-exported under its old path;
//! - [`client`]: a TCP connection to a node's control port running `control::ClientSession`;
//! - [`deploy`]: building and signing a deployment;
//! - [`files`]: a workload's file area (`gridctl files`), seeding it at deploy, and raw
//!   output (`logs --raw`);
//! - [`registry`]: pulling a wasm module from an OCI registry (`deploy REGISTRY/NAME:TAG`);
//! - [`compiler`]: asking a compile service for native code attested by its key (gridctl
//!   never compiles code itself: a node runs only code from compilers it trusts);
//! - [`store`]: `gridctl store`, files over many nodes (encrypted, erasure-coded, placed
//!   on distinct nodes, verified by storage proofs, repaired);
//! - [`tunnel`]: `gridctl overlay up|down`, the host on the overlay through a TUN interface;
//! - [`ledger`]: `gridctl ledger`, the ledger through validators on the overlay, every
//!   answer checked by the light client;
//! - [`onledger`]: deploy contracts and `gridctl nodes` when a ledger is trusted;
//! - [`localchain`]: an in-process chain behind the ledger client, for host tests;
//! - [`cli`]: the clap commands and their output.
//!
//! Every failure is an [`Error`] with a message for the user; nothing here panics on bad
//! input, unreachable nodes or garbage from the network.

pub mod cli;
pub mod client;
pub mod compiler;
pub mod deploy;
pub mod files;
pub mod forward;
pub mod key;
pub mod ledger;
pub mod localchain;
pub mod onledger;
pub mod registry;
/// The host overlay stack moved to the `hostnet` crate; this path stays for code written
/// against `gridctl::stack`.
pub use hostnet::stack;
pub mod store;
pub mod target;
pub mod tcp;
pub mod tunnel;

/// A failure, worded for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// `Err(Error(format!(...)))`.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::Error(format!($($t)*))) };
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Adds context to foreign errors.
pub trait Context<T> {
    /// Prefixes the error with `what: `.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses exactly `N` bytes of hex (surrounding whitespace allowed).
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An overlay address in the usual compressed IPv6 notation.
pub fn address_string(address: &[u8; 16]) -> String {
    std::net::Ipv6Addr::from(*address).to_string()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let k = [0xab; 32];
        assert_eq!(parse_hex::<32>(&hex(&k)), Some(k));
        assert_eq!(parse_hex::<32>(&format!(" {}\n", hex(&k))), Some(k));
        assert_eq!(parse_hex::<32>("ab"), None);
        assert_eq!(parse_hex::<2>("zzzz"), None);
        assert_eq!(parse_hex::<2>("+1ab"), None);
        assert_eq!(parse_hex::<2>("ééé"), None);
    }
}
