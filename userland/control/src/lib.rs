//! Workload control of a gridos node: the wire protocol between the user's CLI
//! (`gridctl`) and the node, as a sans-IO library (no sockets, no clock, no entropy).
//!
//! # Wire specification (version 1)
//!
//! **Transport.** One TCP connection to [`PORT`] (7070) on the node's overlay address
//! (`fd67::/16`, see the `overlay` crate). The overlay authenticates the node hop by hop;
//! this protocol authenticates the *user* on every request.
//!
//! **Framing** ([`frame`]). Each message is a frame: a `u32` little-endian body length,
//! then the body, a postcard encoding. Bodies above [`MAX_FRAME_BYTES`] (32 MiB, room for a
//! wasm module plus an attested native-code bundle) are a protocol error, and the connection is
//! closed. A receiver never buffers more than one frame plus what it was just given.
//!
//! **Hello.** On accept the server sends one frame, a [`ServerHello`]:
//! `{ version: u32 = VERSION, node_key: [u8; 32], challenge: [u8; 32] }`. The challenge is
//! fresh randomness per connection (the server's caller supplies it; see [`challenge`]).
//! A client refuses another `version`, and a `node_key` other than the one it meant to reach.
//!
//! **Requests.** Every client frame is a [`SignedRequest`]:
//! `{ owner: [u8; 32], seq: u64, request: Vec<u8>, signature: Vec<u8> }` where `request` is
//! the postcard encoding of a [`Request`] and `signature` is the 64-byte ed25519 signature
//! by `owner` over `DOMAIN || challenge || seq (u64 LE) || request` ([`DOMAIN`],
//! [`signed_message`]). `seq` is 0 for the first request on a connection and grows by one
//! per request; anything else is a replay and closes the connection. A request is thus
//! bound to its connection (challenge), its position (seq) and its signer (owner).
//! Different requests on one connection may be signed by different owners.
//!
//! **Responses.** The server answers each request, in order, with one [`Response`] frame
//! (no signature: the overlay session carries it from the node's address). A connection
//! the server closes after a protocol error gets a final `Response::Error` first when
//! possible ([`SessionError::response`]).
//!
//! **Limits** ([`guard`]). A node serves a few connections at once and a few per overlay
//! address, and resets a connection whose first request is not complete soon after
//! connecting, whose request is not complete within a base time plus its announced size
//! at a minimum rate (counted from its first byte, not from the latest), or which does
//! not take a response at that rate. A client sends each request whole and at once.
//!
//! **Authorization** ([`serve`]). Workloads belong to the key that deployed them (the
//! signed manifest's owner, which must also be the request's signer). Only the owner sees a
//! workload's status and logs, stops it or removes it; `List` returns only the caller's
//! workloads. `NodeInfo` is open to any signer. `NodeStatus` is too, but only the node's
//! farmer (the key the image names, `Backend::is_farmer`) sees disks, NICs, heap and every
//! workload; anyone else gets the public part and their own workloads. `NodeLogs` (recent
//! kernel log lines) is the farmer's only (`Unauthorized` otherwise).
//!
//! **Shards** ([`shard`]). The `Shard*` requests act in the signer's namespace of the
//! node's shard store: another key's shard is `NotFound`. Shards upload in ordered pieces
//! of at most [`SHARD_PIECE_BYTES`] on one connection and are acknowledged once durable;
//! `ShardProve` (a Merkle storage proof) and `Peers` (the overlay nodes the node routes
//! to) are open to any signer. Rules, quotas and bounds in [`shard`].
//!
//! **Files and raw output** ([`files`]). `FileList`/`FileGet`/`FilePut`/`FileRemove`
//! act on the file area (`/data`) of one of the signer's workloads (someone else's id is
//! `NotFound`, as above), within its quota, in pieces of at most
//! [`files::FILE_PIECE_BYTES`]; a file is acknowledged once committed. `DeployHeld`
//! stores a workload without starting it, so its area can be seeded; `Start` runs it
//! (optionally with one of its files as stdin). `LogsRaw` returns a run's stdout or
//! stderr byte for byte. Rules and bounds in [`files`].
//!
//! # Layers
//! - [`frame`]: length-prefixed frames and the bounded [`frame::FrameDecoder`];
//! - [`message`]: the postcard types above;
//! - [`session`]: the server's [`Session`] (hello, signature and sequence checks) and the
//!   client's [`ClientSession`];
//! - [`serve`](mod@serve): the [`Backend`] trait the kernel implements, and [`serve()`],
//!   which applies the authorization rules around it;
//! - [`shard`]: the shard service's rules and per-connection state ([`Connection`]);
//! - [`guard`]: the node's limits on connections (per peer and in all), the deadlines of
//!   a connection and of each request, and which half-open and closing TCP sockets to
//!   drop (sans-IO; the kernel applies it).
//! - [`files`]: data in and out of a workload: its file area through the protocol
//!   (`File*`), held deploys and `Start` (with a file as stdin), raw output (`LogsRaw`);
//! - [`compile`]: the compile service's protocol (overlay TCP 7071, same framing), by which
//!   `gridctl` gets native code attested by a compiler the node trusts.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod compile;
pub mod files;
pub mod frame;
pub mod guard;
pub mod message;
pub mod serve;
pub mod session;
pub mod shard;

pub use frame::{FrameDecoder, FrameError};
pub use files::{AreaView, FileBackend, RawChunk};
pub use message::{
    DiskInfo, ErrorCode, FileInfo, NicInfo, OutputStream, NodeInfo, NodeStatus, Payload, PeerInfo, Request, Response, ServerHello, ShardMeta, SignedRequest, WorkloadState,
    WorkloadSummary,
};
pub use shard::{
    BufferBudget, Connection, ShardBackend, ShardProof, StoreRoom, SHARD_BYTES_MAX, SHARD_LIST_MAX, SHARD_OVERHEAD_BYTES,
    SHARD_PIECE_BYTES,
};
pub use serve::{serve, Backend, BackendError, Deployment, LogChunk};
pub use session::{Authorized, ClientError, ClientSession, Session, SessionError};

/// TCP port of the control service on the node's overlay address.
pub const PORT: u16 = 7070;
/// Protocol version carried in the hello.
pub const VERSION: u32 = 1;
/// Prefix of every signed request, so a request signature is valid nowhere else.
pub const DOMAIN: &[u8] = b"gridos control request v1\0";
/// Largest frame body accepted by either side.
pub const MAX_FRAME_BYTES: usize = 32 << 20;
/// Bytes of the length prefix of a frame.
pub const FRAME_HEADER_BYTES: usize = 4;

const _: () = assert!(MAX_FRAME_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_FRAME_BYTES > workloads::manifest::MAX_MANIFEST_BYTES);

/// The message a request signature covers: `DOMAIN || challenge || seq LE || request`.
pub fn signed_message(challenge: &[u8; 32], seq: u64, request: &[u8]) -> alloc::vec::Vec<u8> {
    let mut m = alloc::vec::Vec::with_capacity(DOMAIN.len() + 32 + 8 + request.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(challenge);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(request);
    m
}

/// A connection challenge from caller-supplied entropy (at least 32 fresh random bytes,
/// e.g. the kernel's entropy pool mixed with a connection counter). Hashing makes a weak
/// but unique input as good as it can be; it does not replace randomness.
pub fn challenge(entropy: &[u8]) -> [u8; 32] {
    blake3::derive_key("gridos control v1 challenge", entropy)
}
