//! Data in and out of a workload: its file area (`/data`) read and written by its owner
//! through the control protocol, a workload stored held and started later (so its area
//! can be seeded first), and its output as raw bytes. Sans-IO: the area, the run and
//! the output are behind [`FileBackend`]; the rules are here.
//!
//! # Rules
//! - **Authorization.** Every request names a workload id; `serve` answers someone
//!   else's id exactly as one that does not exist (`NotFound`) before anything here runs.
//! - **Names** are paths in the area: components joined by `/`, each passing
//!   `workloads::wasi::check_name` (no `.`, `..`, empty or control characters), no
//!   leading or trailing `/`, at most [`AREA_PATH_BYTES_MAX`] bytes in all. A put makes the
//!   missing parent directories.
//! - **Quota.** A put fits when the area's bytes, less the file it replaces, plus its
//!   length stay within the manifest's `storage_bytes`, and the area's entries (files and
//!   directories) within [`AREA_FILES_MAX`]: `NoSpace` otherwise, checked at the first
//!   piece and again before the commit. A file is at most [`FILE_BYTES_MAX`] (one shard).
//! - **Uploads** stream in `FilePut` pieces of at most [`FILE_PIECE_BYTES`], in order, on
//!   one connection (one upload per connection: offset 0 starts one and drops one in
//!   progress; a piece that does not continue it exactly is `BadRequest` and drops it).
//!   The bytes are buffered within the node-wide budget that shard transfers use
//!   (`ShardBackend::buffer_reserve`; beyond it, `Busy`), and the last piece is answered
//!   `FileStored` only after the area committed the file (durable).
//! - **Reads.** `FileGet` answers at most [`FILE_PIECE_BYTES`]; the area reads a file
//!   whole, so the connection keeps it (within the same budget) for its next ranges
//!   until the read reaches the end or the connection asks anything else.
//! - **While it runs.** A running program keeps its own view of its area (open files,
//!   the bytes it has used), so puts and removes wait until it has ended (`Busy`); lists
//!   and reads show what is committed at any time.
//! - **Runs.** `DeployHeld` stores a workload without starting it; `Start` runs a
//!   workload that is not running, optionally with one file of its area as standard
//!   input (read whole when the run starts; it is an area file, so within the quota).
//!   A restart at boot (`--restart`) runs with empty stdin: the node records only that
//!   the owner asked it to run.
//! - **Raw output** ([`RAW_LOG_PIECE_BYTES`] per answer): the node keeps every byte a
//!   run wrote to stdout and stderr, as written; a log's cap bounds them (a workload that
//!   writes past it is stopped), and the node charges them to the workload's memory.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::message::{ErrorCode, FileInfo, OutputStream, Response};
use crate::serve::BackendError;
use crate::shard::{Connection, ShardBackend, SHARD_BYTES_MAX, SHARD_PIECE_BYTES};

/// Most file bytes in one `FilePut` or `FileData` frame (a shard piece's size, so a
/// piece's frame is as small as the node's control service expects of shard pieces).
pub const FILE_PIECE_BYTES: usize = SHARD_PIECE_BYTES;
/// Largest file of an area: the node stores each file as one shard.
pub const FILE_BYTES_MAX: u64 = SHARD_BYTES_MAX;
/// Most raw output bytes in one `LogsRaw` answer.
pub const RAW_LOG_PIECE_BYTES: usize = 1 << 20;
/// Longest path in an area: the file area's (`workloads::wasi::MAX_PATH_BYTES`, each
/// component at most `workloads::wasi::MAX_NAME_BYTES`, which `check_name` checks).
pub const AREA_PATH_BYTES_MAX: usize = workloads::wasi::MAX_PATH_BYTES as usize;
/// Most entries (files, directories, symlinks, hard links) of an area: the file area's
/// (`workloads::wasi::MAX_FILES`, the workload table's bound). The table also bounds
/// the bytes of all names of an area (`workloads::wasi::MAX_AREA_NAME_BYTES`); a put
/// past that is refused by the node's area (`NoSpace`).
pub const AREA_FILES_MAX: usize = workloads::wasi::MAX_FILES;

const _: () = assert!(FILE_PIECE_BYTES as u64 <= FILE_BYTES_MAX);
const _: () = assert!(RAW_LOG_PIECE_BYTES + 1024 < crate::MAX_FRAME_BYTES);

/// A workload's area as the node holds it now.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AreaView {
    /// Every entry (path, length), directories ending in `/`.
    pub files: Vec<(String, u64)>,
    /// The manifest's `storage_bytes` (0: the workload has no area).
    pub quota_bytes: u64,
    /// Its program is running (or about to): puts and removes wait.
    pub running: bool,
}

impl AreaView {
    /// The length of `name`, if it exists.
    fn len_of(&self, name: &str) -> Option<u64> {
        self.files.iter().find(|(n, _)| n == name).map(|(_, l)| *l)
    }

    /// Bytes committed in all.
    fn used_bytes(&self) -> u64 {
        self.files.iter().fold(0u64, |a, (_, l)| a.saturating_add(*l))
    }

    /// Whether a file `name` of `len` bytes (and its missing parents) fits.
    fn check_put(&self, name: &str, len: u64) -> Result<(), BackendError> {
        if len > FILE_BYTES_MAX {
            return Err(BackendError::new(ErrorCode::NoSpace, format!("a file of {len} bytes exceeds the {FILE_BYTES_MAX}-byte maximum")));
        }
        let replaced = self.len_of(name).unwrap_or(0);
        let used = self.used_bytes();
        if used.saturating_sub(replaced).saturating_add(len) > self.quota_bytes {
            return Err(BackendError::new(
                ErrorCode::NoSpace,
                format!("area quota: a file of {len} bytes does not fit ({used} of {} bytes used)", self.quota_bytes),
            ));
        }
        let new_entries = missing_parents(self, name).len() + usize::from(self.len_of(name).is_none());
        if self.files.len() + new_entries > AREA_FILES_MAX {
            return Err(BackendError::new(
                ErrorCode::NoSpace,
                format!("area quota: {} entries, at most {AREA_FILES_MAX}", self.files.len() + new_entries),
            ));
        }
        Ok(())
    }
}

/// The raw output bytes of a `LogsRaw` answer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RawChunk {
    /// Bytes from the asked offset (at most the asked maximum).
    pub data: Vec<u8>,
    /// Bytes of the stream held so far.
    pub end: u64,
    /// The run ended.
    pub finished: bool,
}

/// What the node provides for these requests. Ids passed in belong to the signer
/// (`serve` checked); names passed in passed [`check_path`].
pub trait FileBackend: ShardBackend {
    /// The area of `id`; `Rejected` when it has none (or the node keeps no areas).
    fn area(&mut self, _id: u64) -> Result<AreaView, BackendError> {
        Err(unsupported())
    }
    /// The committed contents of `name`, `None` if absent.
    fn file_read(&mut self, _id: u64, _name: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Err(unsupported())
    }
    /// Replaces `name` (creating it; a name ending in `/` with no bytes is a directory);
    /// durable when it returns `Ok`.
    fn file_write(&mut self, _id: u64, _name: &str, _bytes: &[u8]) -> Result<(), BackendError> {
        Err(unsupported())
    }
    /// Removes `name`; `false` if absent. Durable when it returns `Ok`.
    fn file_remove(&mut self, _id: u64, _name: &str) -> Result<bool, BackendError> {
        Err(unsupported())
    }
    /// Stores a workload without starting it (as `Backend::deploy` otherwise).
    fn deploy_held(&mut self, _deployment: crate::Deployment) -> Result<u64, BackendError> {
        Err(unsupported())
    }
    /// Starts `id`, which is not running, with `stdin` as its standard input.
    fn start(&mut self, _id: u64, _stdin: Vec<u8>) -> Result<(), BackendError> {
        Err(unsupported())
    }
    /// At most `max_bytes` of `stream` from `offset` on.
    fn raw_log(&mut self, _id: u64, _stream: OutputStream, _offset: u64, _max_bytes: usize) -> Result<RawChunk, BackendError> {
        Err(unsupported())
    }
}

fn unsupported() -> BackendError {
    BackendError::new(ErrorCode::Rejected, "this node does not offer file areas, held deploys or raw output")
}

/// An upload in progress on a connection.
#[derive(Debug)]
pub(crate) struct PendingFile {
    id: u64,
    name: String,
    total_len: u64,
    data: Vec<u8>,
    reserved: u64,
}

/// The last file a connection read, kept for its next ranges.
#[derive(Debug)]
pub(crate) struct CachedFile {
    id: u64,
    name: String,
    bytes: Vec<u8>,
    reserved: u64,
}

impl PendingFile {
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }
}

impl CachedFile {
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }
}

fn refuse(e: BackendError) -> Response {
    Response::Error { code: e.code, message: e.message }
}

fn bad(message: String) -> BackendError {
    BackendError::new(ErrorCode::BadRequest, message)
}

/// Checks a path in an area (see the module docs); `BadRequest` with the reason.
pub fn check_path(name: &str) -> Result<(), BackendError> {
    if name.is_empty() || name.len() > AREA_PATH_BYTES_MAX {
        return Err(bad(format!("a path in the area has 1 to {AREA_PATH_BYTES_MAX} bytes, not {}", name.len())));
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Err(bad(format!("{name:?}: a path in the area neither starts nor ends with '/'")));
    }
    for component in name.split('/') {
        if workloads::wasi::check_name(component.as_bytes()).is_err() {
            return Err(bad(format!("{name:?}: {component:?} is not a valid name (empty, '.', '..' or a control character)")));
        }
    }
    Ok(())
}

/// The parent directories of `name` the area lacks, outermost first (as `dir/`).
fn missing_parents(area: &AreaView, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in name.match_indices('/') {
        let dir = format!("{}/", &name[..i]);
        if area.len_of(&dir).is_none() {
            out.push(dir);
        }
    }
    out
}

fn writable(area: &AreaView, id: u64) -> Result<(), BackendError> {
    if area.running {
        return Err(BackendError::new(
            ErrorCode::Busy,
            format!("workload {id} is running: its area can be changed once it has ended (stop it, or wait)"),
        ));
    }
    Ok(())
}

/// Handles a `FileList`.
pub fn list(backend: &mut impl FileBackend, id: u64) -> Response {
    match backend.area(id) {
        Ok(mut area) => {
            area.files.sort();
            area.files.truncate(AREA_FILES_MAX);
            let files = area.files.into_iter().map(|(name, len)| FileInfo { name, len }).collect();
            Response::Files { files, quota_bytes: area.quota_bytes }
        }
        Err(e) => refuse(e),
    }
}

/// Handles one `FilePut` piece.
pub fn put(backend: &mut impl FileBackend, conn: &mut Connection, id: u64, name: String, total_len: u64, offset: u64, data: Vec<u8>) -> Response {
    if data.len() > FILE_PIECE_BYTES {
        conn.drop_file_put(backend);
        return refuse(bad(format!("a piece of {} bytes exceeds the {FILE_PIECE_BYTES}-byte maximum", data.len())));
    }
    if offset == 0 {
        conn.drop_file_put(backend);
        return match start_put(backend, id, name, total_len, &data) {
            Ok(p) => advance(backend, conn, p),
            Err(e) => refuse(e),
        };
    }
    let Some(mut p) = conn.file_put.take() else {
        return refuse(bad(format!("no upload of {name:?} in progress on this connection: pieces start at offset 0")));
    };
    let continues = p.id == id && p.name == name && p.total_len == total_len && p.data.len() as u64 == offset;
    let fits = !data.is_empty() && offset.saturating_add(data.len() as u64) <= total_len;
    if !continues || !fits {
        let expected = p.data.len();
        backend.buffer_release(p.reserved);
        return refuse(bad(format!(
            "piece out of order: expected offset {expected} of {:?} ({} bytes), got {} bytes at {offset} of {name:?}; upload dropped",
            p.name,
            p.total_len,
            data.len()
        )));
    }
    p.data.extend_from_slice(&data);
    advance(backend, conn, p)
}

fn start_put(backend: &mut impl FileBackend, id: u64, name: String, total_len: u64, data: &[u8]) -> Result<PendingFile, BackendError> {
    check_path(&name)?;
    if data.len() as u64 > total_len {
        return Err(bad(format!("a piece of {} bytes is longer than its file ({total_len})", data.len())));
    }
    let area = backend.area(id)?;
    writable(&area, id)?;
    area.check_put(&name, total_len)?;
    if !backend.buffer_reserve(total_len) {
        return Err(BackendError::new(ErrorCode::Busy, "the node is buffering as many transfers as it can; try again"));
    }
    let mut buf = Vec::new();
    if buf.try_reserve_exact(total_len as usize).is_err() {
        backend.buffer_release(total_len);
        return Err(BackendError::new(ErrorCode::Busy, "no memory for the file's buffer; try again"));
    }
    buf.extend_from_slice(data);
    Ok(PendingFile { id, name, total_len, data: buf, reserved: total_len })
}

fn advance(backend: &mut impl FileBackend, conn: &mut Connection, p: PendingFile) -> Response {
    debug_assert!(p.data.len() as u64 <= p.total_len);
    if (p.data.len() as u64) < p.total_len {
        let received = p.data.len() as u64;
        conn.file_put = Some(p);
        return Response::FilePartial { received };
    }
    let result = finish_put(backend, &p);
    backend.buffer_release(p.reserved);
    match result {
        Ok(()) => Response::FileStored { len: p.total_len },
        Err(e) => refuse(e),
    }
}

/// Checks again (the area may have changed since the first piece) and commits.
fn finish_put(backend: &mut impl FileBackend, p: &PendingFile) -> Result<(), BackendError> {
    let area = backend.area(p.id)?;
    writable(&area, p.id)?;
    area.check_put(&p.name, p.total_len)?;
    for dir in missing_parents(&area, &p.name) {
        backend.file_write(p.id, &dir, &[])?;
    }
    if area.len_of(&format!("{}/", p.name)).is_some() {
        return Err(BackendError::new(ErrorCode::Rejected, format!("{:?} is a directory", p.name)));
    }
    backend.file_write(p.id, &p.name, &p.data)
}

/// Handles a `FileGet`.
pub fn get(backend: &mut impl FileBackend, conn: &mut Connection, id: u64, name: String, offset: u64, len: u64) -> Response {
    if let Err(e) = check_path(&name) {
        return refuse(e);
    }
    let cached = conn.file_read.as_ref().is_some_and(|r| r.id == id && r.name == name);
    if !cached {
        conn.drop_file_read(backend);
        let area = match backend.area(id) {
            Ok(a) => a,
            Err(e) => return refuse(e),
        };
        let Some(total) = area.len_of(&name) else { return refuse(no_file(&name)) };
        if !backend.buffer_reserve(total) {
            return refuse(BackendError::new(ErrorCode::Busy, "the node is buffering as many transfers as it can; try again"));
        }
        match backend.file_read(id, &name) {
            Ok(Some(bytes)) if bytes.len() as u64 == total => conn.file_read = Some(CachedFile { id, name: name.clone(), bytes, reserved: total }),
            Ok(Some(_)) => {
                backend.buffer_release(total);
                return refuse(BackendError::new(ErrorCode::Busy, "the file changed while it was read; try again"));
            }
            Ok(None) => {
                backend.buffer_release(total);
                return refuse(no_file(&name));
            }
            Err(e) => {
                backend.buffer_release(total);
                return refuse(e);
            }
        }
    }
    let Some(file) = conn.file_read.as_ref() else { return refuse(no_file(&name)) };
    let total_len = file.bytes.len() as u64;
    if offset > total_len {
        return refuse(bad(format!("offset {offset} is past the file's end ({total_len} bytes)")));
    }
    let take = len.min(FILE_PIECE_BYTES as u64).min(total_len - offset);
    let data = file.bytes[offset as usize..(offset + take) as usize].to_vec();
    if offset + take >= total_len {
        conn.drop_file_read(backend);
    }
    Response::FileData { total_len, offset, data }
}

fn no_file(name: &str) -> BackendError {
    BackendError::new(ErrorCode::NotFound, format!("no file {name:?} in the area"))
}

/// Handles a `FileRemove`: a file, or an empty directory (`name` without the `/`).
pub fn remove(backend: &mut impl FileBackend, conn: &mut Connection, id: u64, name: String) -> Response {
    if let Err(e) = check_path(&name) {
        return refuse(e);
    }
    conn.drop_file_read(backend);
    let area = match backend.area(id).and_then(|a| writable(&a, id).map(|()| a)) {
        Ok(a) => a,
        Err(e) => return refuse(e),
    };
    let dir = format!("{name}/");
    let target = if area.len_of(&name).is_some() {
        name
    } else if area.len_of(&dir).is_some() {
        if area.files.iter().any(|(n, _)| n.len() > dir.len() && n.starts_with(&dir)) {
            return refuse(BackendError::new(ErrorCode::Rejected, format!("directory {dir:?} is not empty")));
        }
        dir
    } else {
        return refuse(no_file(&name));
    };
    match backend.file_remove(id, &target) {
        Ok(true) => Response::FileRemoved,
        Ok(false) => refuse(no_file(&target)),
        Err(e) => refuse(e),
    }
}

/// Handles a `Start`: reads the stdin file (if any) and starts the run.
pub fn start(backend: &mut impl FileBackend, id: u64, stdin: Option<String>) -> Response {
    let input = match stdin {
        None => Vec::new(),
        Some(name) => {
            if let Err(e) = check_path(&name) {
                return refuse(e);
            }
            match backend.file_read(id, &name) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return refuse(no_file(&name)),
                Err(e) => return refuse(e),
            }
        }
    };
    match backend.start(id, input) {
        Ok(()) => Response::Started,
        Err(e) => refuse(e),
    }
}

/// Handles a `LogsRaw`.
pub fn raw_log(backend: &mut impl FileBackend, id: u64, stream: OutputStream, offset: u64) -> Response {
    match backend.raw_log(id, stream, offset, RAW_LOG_PIECE_BYTES) {
        Ok(mut chunk) => {
            // A backend returning too much is cut here, so one answer stays bounded.
            if chunk.data.len() > RAW_LOG_PIECE_BYTES {
                chunk.data.truncate(RAW_LOG_PIECE_BYTES);
            }
            let finished = chunk.finished && offset.saturating_add(chunk.data.len() as u64) >= chunk.end;
            Response::LogsRaw { offset, data: chunk.data, end: chunk.end, finished }
        }
        Err(e) => refuse(e),
    }
}
