//! The ledger's validator core: Malachite's Tendermint consensus (`informalsystems-
//! malachitebft-core-consensus`, sans-IO) ordering the blocks of `ledger`.
//!
//! - [`context`]: the ledger's types as Malachite's `Context` (heights, ed25519 addresses,
//!   whole blocks as values, votes whose precommits are ledger commit signatures).
//! - [`node`]: one validator driven by messages, timeouts and transactions, with the time
//!   passed in; it checks proposals with the ledger, builds blocks when it proposes and
//!   applies decisions.
//!
//! - [`store`]: decided blocks on disk (redb); a validator restarts by replaying them.
//! - [`wal`]: the signing record: own proposals and votes durable before they are sent, and
//!   never a second, different one for the same height, round and kind after a restart.
//! - [`wire`]: the encoding of consensus messages between validators (bounded, total).
//! - [`daemon`]: the I/O loop (TCP between validators, timers, store, client requests).
//! - [`service`]: the daemon on the overlay (`hostnet`): clients' requests and consensus
//!   frames between validators, feeding the daemon's loop.
//!
//! Not here yet: state snapshots (a restart replays every block) and fees.

pub mod context;
pub mod daemon;
pub mod node;
pub mod service;
pub mod store;
pub mod wal;
pub mod wire;

pub use context::LedgerContext;
pub use node::{Message, Node, Output, RestoreError, Timeouts};
pub use store::{BlockStore, StoreError};
