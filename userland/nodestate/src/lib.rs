//! The node's small, mutable, durable state, kept in the node area of the first disk
//! (the shard store holds the bulk, immutable, content-addressed data).
//!
//! - [`record`]: one byte string kept in two slots with a generation number and a
//!   checksum, so a crash during an update leaves either the old or the new value,
//!   never a mix (the A/B pattern of firmware and superblocks).
//! - [`workloads`]: the table of deployed workloads (signed manifest, shard keys of the
//!   module, bundle and files, whether to start at boot), encoded with postcard.
//!
//! Sans-IO: everything goes through [`blockdev::BlockDevice`]; tests run on
//! `blockdev::mem::MemDisk` with lost, torn and failed writes.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod record;
pub mod workloads;
