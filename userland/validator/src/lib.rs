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
//! - [`wire`]: the encoding of consensus messages between validators (bounded, total).
//! - [`daemon`]: the I/O loop (TCP on loopback for now, timers, store, client requests).
//!
//! Not here yet (issue 13 part 2): the daemon (overlay transport, transaction submission,
//! block and proof serving), state snapshots, a consensus write-ahead log (a validator that
//! restarts mid-height may sign again at that height), and the genesis `init` command.

pub mod context;
pub mod daemon;
pub mod node;
pub mod store;
pub mod wire;

pub use context::LedgerContext;
pub use node::{Message, Node, Output, RestoreError, Timeouts};
pub use store::{BlockStore, StoreError};
