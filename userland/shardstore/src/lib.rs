//! A crash-safe, checksummed shard store directly on a raw disk.
//!
//! Sans-IO and `#![no_std]` + `alloc`: the store reaches the disk only through
//! [`blockdev::BlockDevice`] (virtio-blk in the kernel, `blockdev::mem::MemDisk` in
//! tests); it reads no clock and runs nothing in the background. Shards are immutable
//! byte strings addressed by their blake3 hash within an owner's namespace: a shard is
//! named by `(owner, key)`, so the same bytes stored by two owners are two shards, each
//! deleted, listed and counted ([`OwnerUsage`]) on its own. An owner is 32 opaque bytes
//! ([`Owner`]; the node's own data uses [`NODE_OWNER`]). What this crate leaves to
//! others: redundancy (erasure coding across nodes), encryption, who may act as which
//! owner, quotas, and deciding what to store.
//!
//! Modules: `layout` (on-disk encodings), `merkle` (storage proofs over BLAKE3's own
//! tree), `store` (one disk: format and shard operations; `store::replay` mounts,
//! `store::log` appends and compacts), `multi` (several disks), `error`.
//!
//! # One hashing pass
//! BLAKE3 is itself a Merkle tree over 1 KiB chunks, so a shard's key `blake3(bytes)`
//! is also the root of its storage proofs (a 4 KiB chunk with its sibling chaining
//! values, as Bao does; see [`verify_proof`]) and the check of its integrity. A put
//! hashes each byte once (the key check, or computing the key: [`ShardStore::put_bytes`];
//! none at all with [`ShardStore::put_prehashed`] after the caller's own check);
//! records carry a keyed checksum over their header only; a get reads the payload
//! into the buffer it returns (one device request) and hashes it once against the key.
//!
//! # On-disk format, version 3
//!
//! All integers are little-endian. A sector is 512 bytes. "keyed" means
//! `blake3::keyed_hash(K, ..)` with the disk's checksum key
//! `K = blake3::derive_key("gridos shardstore v3 checksum key", superblock sector)`,
//! so records and checkpoints of another format (or another disk) never verify here.
//!
//! Version 2 added the owner to every record (version 1 records had none: every shard
//! was the node's). Version 3 dropped the separate Merkle root and the payload from the
//! record checksum (the key, BLAKE3's root, covers both) and moved the payload to the
//! record's second sector. Mount refuses a version 1 or 2 disk with
//! `UnsupportedVersion(v)` and never writes it; the kernel then refuses the disk like
//! any other foreign one, and booting with `gridos.format=NAME` reformats it as version
//! 3 (its shards are lost: there is no in-place upgrade).
//!
//! ```text
//! sectors 0..8    superblock in sector 0 (written by format only, never rewritten)
//! sectors 8..16   checkpoint slot 0 in sector 8
//! sectors 16..24  checkpoint slot 1 in sector 16 (generation g lives in slot g % 2)
//! sectors 24..    log region, used as a circular log of records
//! ```
//! Each of the first three sits alone in a 4 KiB block, so a torn read-modify-write of
//! a checkpoint on a disk with 4 KiB physical sectors cannot damage the superblock or
//! the other slot. Records are aligned to *blocks* of 1, 2, 4 or 8 sectors (superblock
//! field; `format` picks 8 = 4 KiB): a record starts and ends on a block boundary and
//! is written whole, so appending never rewrites a block that holds older records.
//!
//! ## Superblock (sector 0)
//! ```text
//! 0..8      magic "GRIDSHRD"
//! 8..12     format version (3)
//! 12..16    sector size in bytes (512)
//! 16..48    node id
//! 48..64    disk id
//! 64..80    format salt: blake3(derive_key "gridos shardstore v2 format salt",
//!           previous sectors 0..25 || node id || disk id || caller entropy)[..16];
//!           new on every format of a used disk
//! 80..88    device sector count at format
//! 88..96    log start sector (24)
//! 96..104   log length in sectors (<= 2^48; start + length <= sector count)
//! 104..108  proof chunk size in bytes (4096)
//! 108..112  block size in sectors (1, 2, 4 or 8); the log length is a multiple of
//!           it and at least 16 blocks
//! 112..144  blake3(bytes 0..112)
//! 144..512  zero (not checked)
//! ```
//! Mount refuses a disk without the magic (`NotFormatted`), with another version
//! (`UnsupportedVersion`), with a bad checksum or field (`BadSuperblock`), or on a
//! device smaller than recorded (`DeviceTooSmall`). Mount never writes.
//!
//! ## Checkpoint (sectors 8 and 16)
//! ```text
//! 0..8      magic "GSHRDCKP"
//! 8..16     generation (the valid slot with the highest generation wins)
//! 16..24    head offset in sectors from the log start
//! 24..32    head sequence number
//! 32..64    record checksum of the record before the head (zero at format)
//! 64..96    keyed(bytes 0..64)
//! 96..512   zero
//! ```
//! A checkpoint names the log's head: the oldest record replay needs. Format writes
//! generation 1 (head offset 0, sequence 1) and zeroes the first log block. Compaction
//! writes the next generation into the *other* slot, so a torn checkpoint write leaves
//! the previous one intact.
//!
//! ## Record (starts at a block boundary in the log region)
//! ```text
//! 0..8      magic "GSHRDREC"
//! 8         kind: 1 put, 2 delete, 3 pad
//! 9..12     zero
//! 12..16    payload length in bytes (put: the shard length; delete, pad: 0)
//! 16..24    sequence number (the previous record's plus one)
//! 24..32    record length in sectors, header included, a whole number of blocks
//!           (put: 1 + ceil(payload / 512) rounded up to blocks; delete: one
//!           block; pad: to the end of the log)
//! 32..64    key: blake3 of the shard, which is also its proof root (zero for a pad)
//! 64..96    owner: the namespace of the key (put and delete; zero for a pad)
//! 96..128   zero
//! 128..160  previous record's record checksum: a hash chain through the log
//! 160..192  record checksum: keyed(bytes 0..160), the header only
//! 192..208  header checksum: keyed(bytes 0..192)[..16]
//! 208..512  zero
//! 512..     payload (put), from the record's second sector; zero up to the end of
//!           its last sector (sectors after it, up to the block's end, are not written)
//! ```
//! Both checksums cover the owner and the key, so a record cannot move to another
//! namespace or name other bytes without failing them; the payload is covered by the
//! key (its blake3), checked whenever it is read. A delete removes the shard
//! `(owner, key)` only.
//! A pad fills the log from its offset to the end, and the next record starts at
//! offset 0; only the pad's first block is written.
//!
//! # Mount: replaying the log
//! Replay starts at the checkpoint's head and follows the chain: the header at the
//! current offset must have a valid header checksum, the expected sequence number and
//! previous checksum, and must fit in the log ahead of the tail. The first header that
//! does not continue the chain ends the log; everything after it is free space.
//! - Each record is written (up to three `write`s: header sector, the payload's whole
//!   sectors from the caller's buffer, its last partial sector; one for small
//!   records) and made durable with one `flush` before the next one is written, so a
//!   record with a valid successor was flushed whole. Only the *last* record can be
//!   torn: mount reads it whole and drops it if its header or (for a put) the blake3
//!   of its payload does not match its key (`MountReport::torn_tail_dropped`). The
//!   price: bit rot in the very last record is taken for a torn write.
//! - After a failed write or flush the store does not advance, and before it
//!   acknowledges anything else it zeroes and flushes the failed record's first block:
//!   a disk cache could otherwise still write that record back later and make an
//!   unacknowledged operation contradict an acknowledged one.
//! - Stale records of earlier laps carry lower sequence numbers and other chain links;
//!   a record torn by a crash and then overwritten with a shorter one leaves payload
//!   bytes behind, which never pass the keyed header checksum (and the sectors a
//!   record leaves unwritten at its end never start a block). So nothing torn or
//!   stale is ever replayed.
//! - A record in the middle whose payload rotted is still replayed (its header is
//!   good); reading it returns [`Error::Corrupt`]. A header that rotted in the middle
//!   is skipped by looking ahead (at most one maximum record length, or at offset 0)
//!   for the next sequence number; that record's shard is lost and counted in
//!   `MountReport::lost_records`.
//!
//! The index (`(owner, key)` to location) and each owner's usage (live shards, payload
//! bytes) are rebuilt from the replayed record headers in order: a put sets
//! `(owner, key)`, a delete removes it. Payloads are not read at mount (except the last
//! record); every `get` checks the payload's blake3 against the key it was asked for.
//!
//! # Space reclaim
//! The log is circular: `compact` takes records from the head, drops dead ones
//! (deletes, pads, puts that a later record superseded) and copies live puts to the
//! tail with their owner, then flushes a checkpoint naming the new head; only then may the tail reuse
//! that space. Until that checkpoint is durable, mount replays from the old head and
//! finds the old and the new copy; the newer wins. Puts keep a reserve free so that
//! deletes and compaction can always proceed; writes compact on demand.
//!
//! # Limits
//! - Memory: the index, the per-owner usage and the list of records between head and
//!   tail stay in RAM (measured: 128 bytes per record, about 190 per live shard and 75
//!   per owner; `tests/memory.rs`), at most `RECORDS_MAX`
//!   (2^19) records: mount refuses a log with more (`MountError::TooManyRecords`), and
//!   puts answer `NoSpace` before a store writes more.
//! - Mount reads one header sector per record, the last record whole, and one
//!   look-ahead window of up to the largest record (the resync probe).
//! - Bit rot in the last record looks like a torn write and drops it; rot in a header
//!   mid-log loses that record (its key is unknown, so a lost delete brings its shard
//!   back; its owner's usage no longer counts it). Redundancy across disks and nodes
//!   is what covers these.
//! - Live shards whose record rotted are dropped by compaction (they could not be
//!   copied); `scrub` finds them earlier.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod error;
pub mod layout;
mod merkle;
mod multi;
mod store;

pub use error::{Error, FormatError, MountError};
pub use merkle::{build_proof, chunk_count, merkle_root, verify_proof, StorageProof};
pub use multi::{MultiStore, Refused, DISKS_MAX};
pub use store::{
    FormatOptions, Key, MountReport, Owner, OwnerUsage, ShardInfo, ShardStore, Stat, NODE_OWNER, RECORDS_MAX,
    SHARD_SIZE_MAX_BYTES,
};

/// Chunk size of storage proofs (a protocol constant).
pub use layout::CHUNK_SIZE_BYTES;
