//! The gridos encrypted IPv6 overlay, as a sans-IO protocol library.
//!
//! This crate has no networking code and reads no clock: the caller feeds it underlay
//! datagrams (`Node::handle_datagram`), the current time (`handle_timeout`) and randomness
//! (seeds), and drains what it wants sent (`poll_transmit`), delivered (`poll_deliver`) and
//! reported (`poll_event`), calling again at `poll_timeout`. The same code runs in the kernel
//! (smoltcp UDP sockets underneath) and in host tools (`std::net::UdpSocket`, see the `std`
//! feature's `udp` module).
//!
//! Layers, one module each:
//! - `endpoint`: what the node reads from an underlay endpoint (its source address);
//!   `guard`: token buckets, per-source budgets, cookie secrets and initiation timestamps;
//! - `identity`: ed25519 keys from an injected seed; `address`: self-certifying `fd67::/16`
//!   addresses hashed from public keys;
//! - `wire`: datagram and plaintext formats as checked views/representations;
//! - `handshake`: signed ephemeral-X25519 key agreement; `replay`: the sliding window;
//!   `session`: ChaCha20-Poly1305 sealing with counter nonces;
//! - `routing`: Babel-style loop-free distance vector, independent of crypto;
//! - `e2e`: end-to-end sessions per destination, carried in routed packets through relays;
//! - `node`: peers, timers, rekeying, routing over sessions, forwarding and delivery;
//!   `outbox`: datagrams waiting for the underlay, bounded node-wide and per destination.
//!
//! Polling order after any input: `poll_transmit` until `None`, `poll_deliver` and
//! `poll_event` until `None`, then sleep until `poll_timeout`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod address;
pub mod discovery;
pub mod e2e;
pub mod endpoint;
pub mod filter;
pub mod guard;
pub mod handshake;
pub mod identity;
pub mod node;
pub mod outbox;
pub mod replay;
pub mod rng;
pub mod routing;
pub mod session;
pub mod time;
#[cfg(feature = "std")]
pub mod udp;
pub mod wire;

pub use address::Address;
pub use identity::{Identity, PublicKey};
pub use node::{Config, Event, Node, NodeError, PeerId};
pub use time::{Duration, Instant};
