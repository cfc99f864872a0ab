//! The ledger's validator core: Malachite's Tendermint consensus (`informalsystems-
//! malachitebft-core-consensus`, sans-IO) ordering the blocks of `ledger`.
//!
//! - [`context`]: the ledger's types as Malachite's `Context` (heights, ed25519 addresses,
//!   whole blocks as values, votes whose precommits are ledger commit signatures).
//! - [`node`]: one validator driven by messages, timeouts and transactions, with the time
//!   passed in; it checks proposals with the ledger, builds blocks when it proposes and
//!   applies decisions.
//!
//! Not here yet (issue 13 part 2): the daemon (overlay transport, transaction submission,
//! block and proof serving), durable blocks, state and a write-ahead log, catch-up sync,
//! and the genesis `init` command.

pub mod context;
pub mod node;

pub use context::LedgerContext;
pub use node::{Message, Node, Output, Timeouts};
