//! Streaming put and get over `std::io` (feature `std`), with memory bounded by one segment.
//!
//! [`Putter`] reads a file segment by segment, seals and encodes each one and hands its K + M
//! shards to a [`ShardSink`] (which places them on distinct nodes, possibly in parallel, and
//! returns once they are durable); then it seals the manifest. [`Getter`] asks a
//! [`ShardSource`] for the data shards of each segment first and for parity shards only when
//! some are missing or corrupt, decodes, decrypts and writes in order; [`Getter::get_to_path`]
//! writes a temporary file beside the target and renames it into place only when every segment
//! decrypted, so an error leaves no output. Both hold one segment at a time and report the most
//! bytes they held at once (`peak_buffered_bytes`). The transport, node choice, retries and
//! parallelism are the sink's and source's; storing the sealed manifest is the caller's.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::string::String;
use std::vec::Vec;

use crate::{
    decode_segment_report, encode_segment, file_id, shard_len, shard_ref, EncodedSegment, FileKey, FilesError,
    Manifest, Params, SegmentEntry, ShardRef, MANIFEST_SEALED_BYTES_MAX,
};

/// Where a put's shards go: one call per segment.
pub trait ShardSink {
    /// The transport's error (aborts the put).
    type Error: fmt::Debug;
    /// Stores the K + M shards of `segment` (`segment.shards[i]` has manifest entry `refs[i]`:
    /// key, length, Merkle root), each on a distinct node where possible, and sets `refs[i].node`
    /// to the node holding it. Returns only when every shard is durable.
    fn put_segment(&mut self, segment: &EncodedSegment, refs: &mut [ShardRef]) -> Result<(), Self::Error>;
}

/// Where a get's shards come from.
pub trait ShardSource {
    /// The transport's error (aborts the get; a shard that is merely unreachable is `None`).
    type Error: fmt::Debug;
    /// Fetches the shards `wanted` (indices into `segment.shards`) into `out[i]` (`out` has K + M
    /// slots); a shard it cannot fetch stays `None`. The bytes need not be checked: the caller
    /// checks each against its manifest hash.
    fn get_shards(
        &mut self,
        segment: &SegmentEntry,
        wanted: &[usize],
        out: &mut [Option<Vec<u8>>],
    ) -> Result<(), Self::Error>;
}

/// Why a put failed.
#[derive(Debug)]
pub enum PutError<E> {
    /// Reading the input failed.
    Io(io::Error),
    /// Encoding or sealing refused (parameters, manifest size).
    Files(FilesError),
    /// The sink failed.
    Sink(E),
}

/// Why a get failed (no output file is left behind by [`Getter::get_to_path`]).
#[derive(Debug)]
pub enum GetError<E> {
    /// Writing the output failed.
    Io(io::Error),
    /// A segment is lost (more than M shards missing or corrupt) or the key is wrong.
    Files(FilesError),
    /// The source failed.
    Source(E),
}

impl<E: fmt::Debug> fmt::Display for PutError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Io(e) => write!(f, "reading the file: {e}"),
            PutError::Files(e) => write!(f, "{e}"),
            PutError::Sink(e) => write!(f, "storing shards: {e:?}"),
        }
    }
}

impl<E: fmt::Debug> fmt::Display for GetError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Io(e) => write!(f, "writing the file: {e}"),
            GetError::Files(e) => write!(f, "{e}"),
            GetError::Source(e) => write!(f, "fetching shards: {e:?}"),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for PutError<E> {}
impl<E: fmt::Debug> std::error::Error for GetError<E> {}

/// A finished put: the manifest, its sealed bytes (to store on several nodes under key
/// `file_id`) and the file id.
#[derive(Clone, Debug)]
pub struct PutDone {
    /// The manifest as built.
    pub manifest: Manifest,
    /// `manifest.seal(owner_seed)`.
    pub sealed: Vec<u8>,
    /// `file_id(&sealed)`.
    pub file_id: [u8; 32],
}

/// Bytes the encoder holds at once for a segment of `plain_len`, besides the read buffer:
/// the sealed, padded segment and the K + M shards (the former is freed as the latter fill).
fn encode_held_bytes(params: &Params, plain_len: u32) -> u64 {
    let len = shard_len(params, plain_len);
    len * u64::from(params.data_shards) + len * params.total_shards() as u64
}

/// Streams a file into shards. Holds one segment: its memory does not grow with the file.
pub struct Putter<R: Read> {
    reader: R,
    owner_seed: [u8; 32],
    key: FileKey,
    manifest: Manifest,
    buf: Vec<u8>,
    eof: bool,
    peak_buffered_bytes: u64,
}

impl<R: Read> Putter<R> {
    /// A put of `reader` named `name`, for the owner with `owner_seed`. `file_nonce` must be
    /// fresh random bytes (it makes the file key unique).
    pub fn new(
        reader: R,
        owner_seed: &[u8; 32],
        file_nonce: [u8; 24],
        name: String,
        params: Params,
    ) -> Result<Putter<R>, FilesError> {
        params.validate()?;
        if name.len() > crate::manifest::NAME_BYTES_MAX {
            return Err(FilesError::ManifestFormat("name too long"));
        }
        Ok(Putter {
            reader,
            owner_seed: *owner_seed,
            key: FileKey::derive(owner_seed, &file_nonce),
            manifest: Manifest::new(name, params, file_nonce),
            buf: Vec::new(),
            eof: false,
            peak_buffered_bytes: 0,
        })
    }

    /// Plaintext bytes read and stored so far.
    pub fn bytes_done(&self) -> u64 {
        self.manifest.size
    }

    /// The most bytes the pipeline held at once (read buffer, sealed segment, shards).
    pub fn peak_buffered_bytes(&self) -> u64 {
        self.peak_buffered_bytes
    }

    /// Reads up to one segment into `buf`; returns the bytes read (short only at end of input).
    fn fill(&mut self) -> io::Result<usize> {
        let segment_bytes = self.manifest.params.segment_bytes as usize;
        self.buf.resize(segment_bytes, 0);
        let mut filled = 0;
        while filled < segment_bytes {
            match self.reader.read(&mut self.buf[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.truncate(filled);
        Ok(filled)
    }

    /// Reads, seals, encodes and stores the next segment; `Ok(None)` at the end of the input.
    pub fn put_next<S: ShardSink>(&mut self, sink: &mut S) -> Result<Option<&SegmentEntry>, PutError<S::Error>> {
        if self.eof {
            return Ok(None);
        }
        let filled = self.fill().map_err(PutError::Io)?;
        if filled == 0 {
            return Ok(None);
        }
        let index = self.manifest.segments.len() as u64;
        let params = self.manifest.params;
        let held = self.buf.capacity() as u64 + encode_held_bytes(&params, filled as u32);
        self.peak_buffered_bytes = self.peak_buffered_bytes.max(held);

        let encoded = encode_segment(&self.key, &params, index, &self.buf).map_err(PutError::Files)?;
        let mut refs: Vec<ShardRef> = encoded.shards.iter().map(|s| shard_ref(s, [0; 32])).collect();
        sink.put_segment(&encoded, &mut refs).map_err(PutError::Sink)?;
        self.manifest.size += u64::from(encoded.plain_len);
        self.manifest.segments.push(SegmentEntry { index, plain_len: encoded.plain_len, shards: refs });
        Ok(self.manifest.segments.last())
    }

    /// Seals the manifest of the segments stored so far (call after `put_next` returned `None`).
    pub fn finish(self) -> Result<PutDone, FilesError> {
        self.manifest.validate()?;
        let sealed = self.manifest.seal(&self.owner_seed);
        if sealed.len() > MANIFEST_SEALED_BYTES_MAX {
            return Err(FilesError::ManifestTooLarge);
        }
        Ok(PutDone { file_id: file_id(&sealed), manifest: self.manifest, sealed })
    }

    /// Puts the whole input through `sink` and seals the manifest.
    pub fn run<S: ShardSink>(mut self, sink: &mut S) -> Result<PutDone, PutError<S::Error>> {
        while self.put_next(sink)?.is_some() {}
        self.finish().map_err(PutError::Files)
    }
}

/// Most (segment, shard) pairs a [`GetReport`] lists per kind; beyond, only the counts grow.
pub const REPORT_ENTRIES_MAX: usize = 1024;

/// What a get met on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetReport {
    /// Segments written.
    pub segments: u64,
    /// Plaintext bytes written.
    pub bytes: u64,
    /// Shards asked for that the source could not fetch.
    pub missing_count: u64,
    /// Shards fetched that failed their hash.
    pub corrupt_count: u64,
    /// The first [`REPORT_ENTRIES_MAX`] missing shards as (segment, shard index).
    pub missing: Vec<(u64, usize)>,
    /// The first [`REPORT_ENTRIES_MAX`] corrupt shards as (segment, shard index).
    pub corrupt: Vec<(u64, usize)>,
}

impl GetReport {
    fn note(list: &mut Vec<(u64, usize)>, count: &mut u64, segment: u64, shard: usize) {
        *count += 1;
        if list.len() < REPORT_ENTRIES_MAX {
            list.push((segment, shard));
        }
    }
}

/// Streams a file back from its shards. Holds one segment at a time.
pub struct Getter {
    manifest: Manifest,
    key: FileKey,
    report: GetReport,
    peak_buffered_bytes: u64,
}

impl Getter {
    /// A get of the file `manifest` describes (opened with [`Manifest::open`]), for the owner
    /// with `owner_seed`.
    pub fn new(manifest: Manifest, owner_seed: &[u8; 32]) -> Getter {
        let key = manifest.file_key(owner_seed);
        Getter { manifest, key, report: GetReport::default(), peak_buffered_bytes: 0 }
    }

    /// The manifest being fetched.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What the get met so far.
    pub fn report(&self) -> &GetReport {
        &self.report
    }

    /// The most bytes the pipeline held at once (fetched shards, sealed segment, plaintext).
    pub fn peak_buffered_bytes(&self) -> u64 {
        self.peak_buffered_bytes
    }

    /// Fetches and decodes segment `index`: the K data shards first, then untried shards for
    /// each one missing or corrupt, until K are intact or none are left.
    pub fn get_segment<S: ShardSource>(&mut self, source: &mut S, index: u64) -> Result<Vec<u8>, GetError<S::Error>> {
        let Some(seg) = self.manifest.segments.get(index as usize) else {
            return Err(GetError::Files(FilesError::ManifestFormat("no such segment")));
        };
        let params = self.manifest.params;
        let k = usize::from(params.data_shards);
        let total = params.total_shards();
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
        let mut untried: BTreeSet<usize> = (0..total).collect();
        let mut intact = 0usize;
        while intact < k && !untried.is_empty() {
            let wanted: Vec<usize> = untried.iter().copied().take(k - intact).collect();
            for i in &wanted {
                untried.remove(i);
            }
            source.get_shards(seg, &wanted, &mut shards).map_err(GetError::Source)?;
            for &i in &wanted {
                if shards[i].is_none() {
                    GetReport::note(&mut self.report.missing, &mut self.report.missing_count, index, i);
                }
            }
            let mut only_wanted: Vec<Option<Vec<u8>>> = vec![None; total];
            for &i in &wanted {
                only_wanted[i] = shards[i].take();
            }
            for i in crate::verify_shards(seg, &mut only_wanted) {
                GetReport::note(&mut self.report.corrupt, &mut self.report.corrupt_count, index, i);
            }
            for &i in &wanted {
                if only_wanted[i].is_some() {
                    intact += 1;
                }
                shards[i] = only_wanted[i].take();
            }
        }
        let len = shard_len(&params, seg.plain_len);
        let held = len * intact as u64 + len * k as u64 + u64::from(seg.plain_len);
        self.peak_buffered_bytes = self.peak_buffered_bytes.max(held);
        let decoded = decode_segment_report(&self.key, &params, seg, &mut shards).map_err(GetError::Files)?;
        Ok(decoded.plaintext)
    }

    /// Writes every segment in order to `out`. On error, `out` may hold a prefix of the file:
    /// use [`Getter::get_to_path`] for all-or-nothing output.
    pub fn write_to<S: ShardSource, W: Write>(&mut self, source: &mut S, out: &mut W) -> Result<(), GetError<S::Error>> {
        for index in 0..self.manifest.segments.len() as u64 {
            let plaintext = self.get_segment(source, index)?;
            out.write_all(&plaintext).map_err(GetError::Io)?;
            self.report.segments += 1;
            self.report.bytes += plaintext.len() as u64;
        }
        out.flush().map_err(GetError::Io)
    }

    /// Writes the file to `path` atomically: into a temporary file beside it, synced, then
    /// renamed over `path`. On any error the temporary file is removed and `path` is untouched.
    pub fn get_to_path<S: ShardSource>(&mut self, source: &mut S, path: &Path) -> Result<GetReport, GetError<S::Error>> {
        let temp = temp_path(path);
        let file = OpenOptions::new().write(true).create_new(true).open(&temp).map_err(GetError::Io)?;
        let result = self.write_synced(source, file).and_then(|()| fs::rename(&temp, path).map_err(GetError::Io));
        match result {
            Ok(()) => {
                sync_parent(path);
                Ok(self.report.clone())
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    fn write_synced<S: ShardSource>(&mut self, source: &mut S, file: File) -> Result<(), GetError<S::Error>> {
        let mut out = io::BufWriter::with_capacity(1 << 16, file);
        self.write_to(source, &mut out)?;
        let file = out.into_inner().map_err(|e| GetError::Io(e.into_error()))?;
        file.sync_all().map_err(GetError::Io)
    }
}

/// `dir/.name.gridos-part-PID` beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.gridos-part-{}", std::process::id()))
}

/// Makes the rename durable where the platform allows (best effort: the data is synced).
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// In-memory nodes implementing both [`ShardSink`] and [`ShardSource`], for tests: shard `i` of
/// segment `s` goes to node `(s + i) % nodes`; nodes can be taken down and shards corrupted.
#[derive(Clone, Debug, Default)]
pub struct MemoryNodes {
    /// Node keys, in placement order.
    pub keys: Vec<[u8; 32]>,
    /// Each node's shards by key.
    pub shards: Vec<HashMap<[u8; 32], Vec<u8>>>,
    /// Nodes that answer nothing.
    pub down: BTreeSet<usize>,
}

/// [`MemoryNodes`] never fails as a whole; unreachable shards are `None`.
#[derive(Debug)]
pub enum MemoryError {
    /// Fewer nodes than shards per segment.
    TooFewNodes,
}

impl MemoryNodes {
    /// `count` empty nodes with keys `[n; 32]`.
    pub fn new(count: u8) -> MemoryNodes {
        MemoryNodes {
            keys: (0..count).map(|n| [n; 32]).collect(),
            shards: vec![HashMap::new(); usize::from(count)],
            down: BTreeSet::new(),
        }
    }

    fn node_index(&self, key: &[u8; 32]) -> Option<usize> {
        self.keys.iter().position(|k| k == key)
    }

    /// Total bytes stored on all nodes.
    pub fn stored_bytes(&self) -> u64 {
        self.shards.iter().flat_map(|m| m.values()).map(|v| v.len() as u64).sum()
    }
}

impl ShardSink for MemoryNodes {
    type Error = MemoryError;
    fn put_segment(&mut self, segment: &EncodedSegment, refs: &mut [ShardRef]) -> Result<(), MemoryError> {
        let n = self.keys.len();
        if n < segment.shards.len() {
            return Err(MemoryError::TooFewNodes);
        }
        for (i, (bytes, r)) in segment.shards.iter().zip(refs.iter_mut()).enumerate() {
            let node = (segment.index as usize + i) % n;
            self.shards[node].insert(r.key, bytes.clone());
            r.node = self.keys[node];
        }
        Ok(())
    }
}

impl ShardSource for MemoryNodes {
    type Error = MemoryError;
    fn get_shards(
        &mut self,
        segment: &SegmentEntry,
        wanted: &[usize],
        out: &mut [Option<Vec<u8>>],
    ) -> Result<(), MemoryError> {
        for &i in wanted {
            let (Some(r), Some(slot)) = (segment.shards.get(i), out.get_mut(i)) else { continue };
            *slot = self
                .node_index(&r.node)
                .filter(|n| !self.down.contains(n))
                .and_then(|n| self.shards[n].get(&r.key).cloned());
        }
        Ok(())
    }
}
