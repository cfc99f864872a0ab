//! The messages, encoded with postcard inside frames. Variant order is part of the wire
//! format: add new variants at the end only.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// The server's first frame on a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// Protocol version ([`crate::VERSION`]).
    pub version: u32,
    /// The node's overlay public key (ed25519).
    pub node_key: [u8; 32],
    /// Fresh per connection; every request signature covers it.
    pub challenge: [u8; 32],
}

/// Every client frame: a request and its owner's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    /// The signer's ed25519 public key.
    pub owner: [u8; 32],
    /// 0 for the connection's first request, then +1 per request.
    pub seq: u64,
    /// Postcard encoding of a [`Request`].
    pub request: Vec<u8>,
    /// ed25519 signature over [`crate::signed_message`]`(challenge, seq, request)`.
    pub signature: Vec<u8>,
}

/// The program of a deployment, as the user supplied it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A WebAssembly module.
    Wasm(Vec<u8>),
    /// An OCI image layout tar holding a wasm layer (`workloads::oci::wasm_from_layout`).
    OciTar(Vec<u8>),
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Store and start a workload.
    Deploy {
        /// `workloads::SignedManifest::to_bytes()`; its owner must be the request's signer.
        signed_manifest: Vec<u8>,
        /// The module (the manifest names its blake3).
        payload: Payload,
        /// Native code attested by a compiler the node trusts (`workloads::artifact`, from a
        /// compile service), or empty: the node then runs the module in its interpreter.
        bundle: Vec<u8>,
    },
    /// The caller's workloads.
    List,
    /// One workload's summary.
    Status {
        /// Workload id.
        id: u64,
    },
    /// Log lines of a workload, from line number `from_line` (0 = the first line kept).
    Logs {
        /// Workload id.
        id: u64,
        /// First line wanted.
        from_line: u64,
    },
    /// Stop a running workload (it stays listed).
    Stop {
        /// Workload id.
        id: u64,
    },
    /// Stop if needed, then forget a workload and its stored files.
    Remove {
        /// Workload id.
        id: u64,
    },
    /// The node's identity and resources.
    NodeInfo,
    /// One piece of a shard upload ([`crate::shard`]): pieces come in order on one
    /// connection, `offset` 0 first and each following the last; `data` is at most
    /// [`crate::SHARD_PIECE_BYTES`]. Acts in the signer's namespace.
    ShardPut {
        /// blake3 of the whole shard.
        key: [u8; 32],
        /// The whole shard's length (at most [`crate::SHARD_BYTES_MAX`]).
        total_len: u64,
        /// Where `data` starts in the shard.
        offset: u64,
        /// The piece.
        data: Vec<u8>,
    },
    /// Bytes `offset..offset + len` of one of the signer's shards (`len` capped to
    /// [`crate::SHARD_PIECE_BYTES`] and to the shard's end).
    ShardGet {
        /// The shard.
        key: [u8; 32],
        /// First byte wanted.
        offset: u64,
        /// Bytes wanted.
        len: u64,
    },
    /// Deletes one of the signer's shards.
    ShardDelete {
        /// The shard.
        key: [u8; 32],
    },
    /// The signer's shards in key order, after `after` (from the first when `None`), at
    /// most [`crate::SHARD_LIST_MAX`] per response.
    ShardList {
        /// The last key of the previous page.
        after: Option<[u8; 32]>,
    },
    /// Length and Merkle root of one of the signer's shards.
    ShardStat {
        /// The shard.
        key: [u8; 32],
    },
    /// A storage proof: the chunk `challenge` picks of `owner`'s shard `key`, with its
    /// Merkle path (`shardstore::verify_proof` checks it). Open to any signer.
    ShardProve {
        /// Whose shard.
        owner: [u8; 32],
        /// The shard.
        key: [u8; 32],
        /// Picks the chunk (`challenge % chunk_count`).
        challenge: u64,
    },
    /// The signer's store usage and quota, and the node's free room for shards.
    StoreInfo,
    /// The overlay nodes this node routes to.
    Peers,
    /// The node's status: the public part for any signer (identity, address, version,
    /// uptime, farm, peers, the signer's own workloads); disks, NICs and every workload
    /// for the node's farmer (`gridos.farmer=KEY`).
    NodeStatus,
    /// Recent kernel log lines from line `from_line` on (the farmer only).
    NodeLogs {
        /// The first line wanted (0: the oldest kept).
        from_line: u64,
    },
    /// Like `Deploy`, but the workload is stored without starting, so its file area can
    /// be seeded first (`FilePut`); `Start` runs it ([`crate::files`]).
    DeployHeld {
        /// As in `Deploy`.
        signed_manifest: Vec<u8>,
        /// As in `Deploy`.
        payload: Payload,
        /// As in `Deploy`.
        bundle: Vec<u8>,
    },
    /// Starts a workload that is not running (held, stopped or finished): a new run, with
    /// its output kept afresh.
    Start {
        /// Workload id.
        id: u64,
        /// A file of its area the run reads as standard input (`None`: empty stdin).
        stdin: Option<String>,
    },
    /// The files of a workload's area (`/data`), with its quota.
    FileList {
        /// Workload id.
        id: u64,
    },
    /// Bytes `offset..offset + len` of a file of a workload's area (`len` capped to
    /// [`crate::files::FILE_PIECE_BYTES`] and to the file's end).
    FileGet {
        /// Workload id.
        id: u64,
        /// Path in the area (`dir/name`).
        name: String,
        /// First byte wanted.
        offset: u64,
        /// Bytes wanted.
        len: u64,
    },
    /// One piece of a file written into a workload's area, replacing the file: pieces
    /// come in order on one connection, `offset` 0 first; `data` is at most
    /// [`crate::files::FILE_PIECE_BYTES`]. The file is committed (durable) at its last
    /// piece.
    FilePut {
        /// Workload id.
        id: u64,
        /// Path in the area (`dir/name`); missing parent directories are made.
        name: String,
        /// The whole file's length.
        total_len: u64,
        /// Where `data` starts in the file.
        offset: u64,
        /// The piece.
        data: Vec<u8>,
    },
    /// Removes a file (or an empty directory) of a workload's area.
    FileRemove {
        /// Workload id.
        id: u64,
        /// Path in the area.
        name: String,
    },
    /// A workload's stdout or stderr as the raw bytes it wrote, from byte `offset` on
    /// (at most [`crate::files::RAW_LOG_PIECE_BYTES`] per answer).
    LogsRaw {
        /// Workload id.
        id: u64,
        /// Which stream.
        stream: OutputStream,
        /// First byte wanted.
        offset: u64,
    },
}

/// A workload's output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputStream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

/// A file of a workload's area.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Path in the area; a directory ends in `/`.
    pub name: String,
    /// Length in bytes.
    pub len: u64,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Bad signature, replayed sequence number, or not the workload's owner.
    Unauthorized,
    /// No such workload or shard (or not the caller's).
    NotFound,
    /// The request is well-formed but refused (bad manifest, hash mismatch, bad bundle).
    Rejected,
    /// No room for the module, bundle or workload slot.
    NoSpace,
    /// Try again later.
    Busy,
    /// Undecodable request or protocol violation.
    BadRequest,
    /// The node failed.
    Internal,
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not found",
            ErrorCode::Rejected => "rejected",
            ErrorCode::NoSpace => "no space",
            ErrorCode::Busy => "busy",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::Internal => "internal error",
        })
    }
}

/// Where a workload is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadState {
    /// Deployed, not started yet.
    Ready,
    /// Running.
    Running,
    /// Exited by itself with this code.
    Exited(i32),
    /// Stopped by the node (the reason: a limit, a user's stop, ...).
    Stopped(String),
    /// Could not be started or trapped.
    Failed(String),
}

impl core::fmt::Display for WorkloadState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WorkloadState::Ready => f.write_str("ready"),
            WorkloadState::Running => f.write_str("running"),
            WorkloadState::Exited(code) => write!(f, "exited({code})"),
            WorkloadState::Stopped(why) => write!(f, "stopped: {why}"),
            WorkloadState::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl WorkloadState {
    /// True once the workload will produce no more output (it may still be listed).
    pub fn is_finished(&self) -> bool {
        matches!(self, WorkloadState::Exited(_) | WorkloadState::Stopped(_) | WorkloadState::Failed(_))
    }
}

/// One workload as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    /// Node-local id.
    pub id: u64,
    /// The manifest's name.
    pub name: String,
    /// The manifest's owner key.
    pub owner: [u8; 32],
    /// Current state.
    pub state: WorkloadState,
    /// The engine it runs on: "native x86_64" (attested code) or "wasmi" (the interpreter).
    pub backend: String,
    /// CPU time used so far, milliseconds.
    pub cpu_ms: u64,
    /// Restarts after a node reboot.
    pub restart_on_boot: bool,
}

/// The node's identity and resources (also the body of [`Response::NodeInfo`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's overlay public key.
    pub key: [u8; 32],
    /// The node's overlay address.
    pub address: [u8; 16],
    /// Time since boot, milliseconds.
    pub uptime_ms: u64,
    /// The caller's workloads on the node (other owners' are not counted: a stranger
    /// must not learn who else runs what).
    pub workloads: u32,
    /// Store bytes the caller could still be granted, in whole MiB: the smaller of the
    /// store's free bytes and the caller's fair-share room (0 without storage).
    pub storage_free_bytes: u64,
}

/// What the server answers, one per request, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The workload was stored (and started).
    Deployed {
        /// Its id.
        id: u64,
    },
    /// The caller's workloads.
    Workloads(Vec<WorkloadSummary>),
    /// One workload.
    Status(WorkloadSummary),
    /// Log lines `[from_line, next_line)`.
    Logs {
        /// The lines, without newlines.
        lines: Vec<String>,
        /// Ask from here next time.
        next_line: u64,
        /// The workload ended and every line was sent.
        finished: bool,
    },
    /// The workload is stopped.
    Stopped,
    /// The workload is gone.
    Removed,
    /// See [`NodeInfo`].
    NodeInfo {
        /// The node's overlay public key.
        key: [u8; 32],
        /// The node's overlay address.
        address: [u8; 16],
        /// Time since boot, milliseconds.
        uptime_ms: u64,
        /// The caller's workloads on the node (other owners' are not counted: a stranger
    /// must not learn who else runs what).
        workloads: u32,
        /// Store bytes the caller could still be granted (see [`NodeInfo`]).
        storage_free_bytes: u64,
    },
    /// The request failed.
    Error {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// A shard piece was taken; the upload continues.
    ShardPartial {
        /// Bytes of the shard received so far.
        received: u64,
    },
    /// The shard is durable in the store (or the signer held it already).
    ShardStored {
        /// Its key (blake3 of its bytes).
        key: [u8; 32],
        /// Its length.
        len: u64,
        /// Its Merkle root (`shardstore::merkle_root`).
        merkle_root: [u8; 32],
    },
    /// Bytes of a shard.
    ShardData {
        /// The whole shard's length.
        total_len: u64,
        /// Where `data` starts.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The shard is gone.
    ShardDeleted,
    /// A page of the signer's shards.
    ShardList {
        /// In key order.
        shards: Vec<ShardMeta>,
        /// More follow: ask again with `after` = the last key.
        more: bool,
    },
    /// One shard.
    ShardStat(ShardMeta),
    /// A storage proof (`shardstore::StorageProof` with the shard's length and root).
    ShardProof {
        /// The shard's length.
        len: u64,
        /// The shard's Merkle root.
        merkle_root: [u8; 32],
        /// Index of the chunk proved.
        chunk_index: u64,
        /// The chunk's bytes.
        chunk: Vec<u8>,
        /// Sibling hashes from the chunk's leaf up to the root.
        path: Vec<[u8; 32]>,
    },
    /// The signer's store usage and room.
    StoreInfo {
        /// Bytes the signer's shards take, as the quota counts them (each shard's length
        /// plus [`crate::SHARD_OVERHEAD_BYTES`]).
        used_bytes: u64,
        /// The signer's shards.
        shards: u64,
        /// The signer's quota, bytes.
        quota_bytes: u64,
        /// Store bytes free for shards (the store's free bytes less the node's reserve).
        node_free_bytes: u64,
    },
    /// The overlay nodes this node routes to.
    Peers(Vec<PeerInfo>),
    /// Answer to `NodeStatus`.
    NodeStatus(NodeStatus),
    /// Answer to `NodeLogs`: lines `[first_line, next_line)`; lines before `first_line`
    /// that were asked for are no longer kept.
    NodeLogs {
        /// The lines, without newlines.
        lines: Vec<String>,
        /// Number of the first line returned.
        first_line: u64,
        /// Where the next request should start.
        next_line: u64,
    },
    /// The workload started (`Start`).
    Started,
    /// Answer to `FileList`.
    Files {
        /// Every file and directory of the area, in name order.
        files: Vec<FileInfo>,
        /// The area's quota (the manifest's `storage_bytes`).
        quota_bytes: u64,
    },
    /// Bytes of a file (`FileGet`).
    FileData {
        /// The whole file's length.
        total_len: u64,
        /// Where `data` starts.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A file piece was taken; the upload continues.
    FilePartial {
        /// Bytes of the file received so far.
        received: u64,
    },
    /// The file is committed in the area (durable).
    FileStored {
        /// Its length.
        len: u64,
    },
    /// The file is gone.
    FileRemoved,
    /// Raw output bytes (`LogsRaw`).
    LogsRaw {
        /// Where `data` starts in the stream.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
        /// Bytes of the stream the node holds so far (ask again from `offset +
        /// data.len()` while it is below this).
        end: u64,
        /// The run ended: `end` will not grow.
        finished: bool,
    },
}

/// A node's status (`Request::NodeStatus`). Fields marked *farmer* are empty for
/// anyone else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeStatus {
    /// The node's overlay key.
    pub key: [u8; 32],
    /// Its overlay address.
    pub address: [u8; 16],
    /// Its software version.
    pub version: String,
    /// Time since it booted.
    pub uptime_ms: u64,
    /// `full`, `compute` or `storage`.
    pub role: String,
    /// Its farm id, if the image sets one.
    pub farm: Option<u64>,
    /// Whether the caller is the node's farmer (and sees the farmer's fields).
    pub farmer_view: bool,
    /// Overlay nodes this node routes to (as `Peers`; open to anyone).
    pub peers: Vec<PeerInfo>,
    /// The caller's workloads; every workload for the farmer.
    pub workloads: Vec<WorkloadSummary>,
    /// *Farmer*: data disks.
    pub disks: Vec<DiskInfo>,
    /// *Farmer*: NICs.
    pub nics: Vec<NicInfo>,
    /// *Farmer*: bytes allocated from the kernel heap.
    pub heap_used_bytes: u64,
    /// *Farmer*: size of the kernel heap.
    pub heap_size_bytes: u64,
}

/// A data disk in [`NodeStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DiskInfo {
    /// `vda`, `vdb`, ...
    pub name: String,
    /// `mounted`, `formatted`, `refused` or `failed`.
    pub state: String,
    /// Bytes of its shard store.
    pub capacity_bytes: u64,
    /// Bytes still free for records.
    pub free_bytes: u64,
    /// Live shards (all owners).
    pub shards: u64,
}

/// A NIC in [`NodeStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NicInfo {
    /// The kernel's name for it.
    pub name: String,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Frames received since boot.
    pub rx_frames: u64,
    /// Frames sent since boot.
    pub tx_frames: u64,
}

/// A shard as the service describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// blake3 of its bytes.
    pub key: [u8; 32],
    /// Its length.
    pub len: u64,
    /// Its Merkle root.
    pub merkle_root: [u8; 32],
}

/// An overlay node the answering node routes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its overlay address.
    pub address: [u8; 16],
    /// Its overlay key, when the node knows it (its direct links).
    pub key: Option<[u8; 32]>,
    /// A direct link (not through another node).
    pub direct: bool,
}

impl Response {
    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error { code, message: message.into() }
    }
}

impl From<NodeInfo> for Response {
    fn from(i: NodeInfo) -> Response {
        Response::NodeInfo {
            key: i.key,
            address: i.address,
            uptime_ms: i.uptime_ms,
            workloads: i.workloads,
            storage_free_bytes: i.storage_free_bytes,
        }
    }
}
