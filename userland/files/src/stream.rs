//! Streaming put and get over `std::io` (feature `std`), with memory bounded by one segment.
//!
//! [`Putter`] reads a file segment by segment, seals and encodes each one and hands its K + M
//! shards to a [`ShardSink`] (which places them on distinct nodes, possibly in parallel, and
//! returns once they are durable); then it seals the manifest ([`Putter::run_pipelined`]
//! encodes on a second thread while the sink stores, with a bounded queue between). [`Getter`] asks a
//! [`ShardSource`] for the data shards of each segment first and for parity shards only when
//! some are missing or corrupt, decodes, decrypts and writes in order; [`Getter::get_to_path`]
//! writes a temporary file beside the target and renames it into place only when every segment
//! decrypted, so an error leaves no output. Both hold a fixed number of segments (one, or a
//! few when pipelined) and report the most bytes they held at once (`peak_buffered_bytes`). The transport, node choice, retries and
//! parallelism are the sink's and source's; storing the sealed manifest is the caller's.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::string::String;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// checks each against its manifest hash (so a source need never hold more than
    /// `segment.shards[i].len` bytes of a shard: longer answers are corrupt anyway).
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
    /// The putter's [`Putter::peak_buffered_bytes`] over the whole put.
    pub peak_buffered_bytes: u64,
}

/// Bytes the encoder holds at once for a segment of `plain_len`, besides the read buffer:
/// the sealed, padded segment and the K + M shards (the former is freed as the latter fill).
fn encode_held_bytes(params: &Params, plain_len: u32) -> u64 {
    let len = shard_len(params, plain_len);
    len * u64::from(params.data_shards) + len * params.total_shards() as u64
}

/// Reads up to `segment_bytes` into `buf`; returns the bytes read (short only at the end of
/// the input, which sets `eof`).
fn fill<R: Read>(reader: &mut R, buf: &mut Vec<u8>, segment_bytes: usize, eof: &mut bool) -> io::Result<usize> {
    buf.resize(segment_bytes, 0);
    let mut filled = 0;
    while filled < segment_bytes {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => {
                *eof = true;
                break;
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(filled)
}

/// Most encoded segments [`Putter::run_pipelined`] lets wait for the sink.
pub const PIPELINE_AHEAD_MAX: usize = 8;

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

    fn fill(&mut self) -> io::Result<usize> {
        fill(&mut self.reader, &mut self.buf, self.manifest.params.segment_bytes as usize, &mut self.eof)
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
        Ok(PutDone {
            file_id: file_id(&sealed),
            manifest: self.manifest,
            sealed,
            peak_buffered_bytes: self.peak_buffered_bytes,
        })
    }

    /// Puts the whole input through `sink` and seals the manifest.
    pub fn run<S: ShardSink>(mut self, sink: &mut S) -> Result<PutDone, PutError<S::Error>> {
        while self.put_next(sink)?.is_some() {}
        self.finish().map_err(PutError::Files)
    }
}

/// Why the encoding thread of [`Putter::run_pipelined`] stopped.
enum EncodeFail {
    Io(io::Error),
    Files(FilesError),
}

/// Bytes held by the pipelined put, and the most held at once.
#[derive(Default)]
struct Held {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Held {
    fn add(&self, bytes: u64) {
        let now = self.now.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self, bytes: u64) {
        self.now.fetch_sub(bytes, Ordering::Relaxed);
    }
}

fn shards_bytes(segment: &EncodedSegment) -> u64 {
    segment.shards.iter().map(|s| s.len() as u64).sum()
}

impl<R: Read + Send> Putter<R> {
    /// Like [`Putter::run`], but reads, seals, encodes and hashes on a second thread while
    /// `sink` stores the previous segment. At most `ahead` (capped at [`PIPELINE_AHEAD_MAX`])
    /// encoded segments wait for the sink, so the pipeline holds the read buffer, one segment
    /// being encoded, `ahead` waiting and one at the sink: bounded, whatever the file size.
    /// The manifest is identical to [`Putter::run`]'s.
    pub fn run_pipelined<S: ShardSink>(mut self, sink: &mut S, ahead: usize) -> Result<PutDone, PutError<S::Error>> {
        if self.eof {
            return self.finish().map_err(PutError::Files);
        }
        let ahead = ahead.min(PIPELINE_AHEAD_MAX);
        let params = self.manifest.params;
        let key = self.key.clone();
        let first_index = self.manifest.segments.len() as u64;
        let held = Held::default();
        let (reader, buf, eof) = (&mut self.reader, &mut self.buf, &mut self.eof);
        let manifest = &mut self.manifest;

        let result = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(EncodedSegment, Vec<ShardRef>), EncodeFail>>(ahead);
            let held = &held;
            scope.spawn(move || {
                held.add(params.segment_bytes as u64); // the read buffer, for the whole run
                let mut index = first_index;
                while !*eof {
                    let filled = match fill(reader, buf, params.segment_bytes as usize, eof) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => {
                            let _ = tx.send(Err(EncodeFail::Io(e)));
                            break;
                        }
                    };
                    let transient = encode_held_bytes(&params, filled as u32);
                    held.add(transient);
                    let item = encode_segment(&key, &params, index, buf).map(|encoded| {
                        let refs: Vec<ShardRef> = encoded.shards.iter().map(|s| shard_ref(s, [0; 32])).collect();
                        (encoded, refs)
                    });
                    match &item {
                        Ok((encoded, _)) => held.sub(transient - shards_bytes(encoded)),
                        Err(_) => held.sub(transient),
                    }
                    let failed = item.is_err();
                    if tx.send(item.map_err(EncodeFail::Files)).is_err() || failed {
                        break; // the sink side stopped, or this is the last message
                    }
                    index += 1;
                }
                held.sub(params.segment_bytes as u64);
            });
            for item in rx.iter() {
                let (encoded, mut refs) = match item {
                    Ok(x) => x,
                    Err(EncodeFail::Io(e)) => return Err(PutError::Io(e)),
                    Err(EncodeFail::Files(e)) => return Err(PutError::Files(e)),
                };
                let stored = sink.put_segment(&encoded, &mut refs);
                held.sub(shards_bytes(&encoded));
                stored.map_err(PutError::Sink)?;
                manifest.size += u64::from(encoded.plain_len);
                manifest.segments.push(SegmentEntry { index: encoded.index, plain_len: encoded.plain_len, shards: refs });
            }
            Ok(())
            // `rx` drops here, before the scope joins the encoder: a blocked send returns.
        });
        self.peak_buffered_bytes = self.peak_buffered_bytes.max(held.peak.load(Ordering::Relaxed));
        result?;
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

/// Fetches segment `index` of `manifest` from `source`: the K data shards first, then untried
/// shards for each one missing or corrupt, until K are intact (the others are `None`) or none
/// are left ([`FilesError::TooFewShards`]). Notes what was missing or corrupt in `report`.
fn fetch_segment<S: ShardSource>(
    manifest: &Manifest,
    report: &mut GetReport,
    source: &mut S,
    index: u64,
) -> Result<Vec<Option<Vec<u8>>>, GetError<S::Error>> {
    let Some(seg) = manifest.segments.get(index as usize) else {
        return Err(GetError::Files(FilesError::ManifestFormat("no such segment")));
    };
    let k = usize::from(manifest.params.data_shards);
    let total = manifest.params.total_shards();
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; total];
    let mut untried: BTreeSet<usize> = (0..total).collect();
    let mut intact = 0usize;
    let mut corrupt = Vec::new();
    while intact < k && !untried.is_empty() {
        let wanted: Vec<usize> = untried.iter().copied().take(k - intact).collect();
        for i in &wanted {
            untried.remove(i);
        }
        let mut fetched: Vec<Option<Vec<u8>>> = vec![None; total];
        source.get_shards(seg, &wanted, &mut fetched).map_err(GetError::Source)?;
        // Only what was asked for counts; everything is checked against the manifest.
        let mut only_wanted: Vec<Option<Vec<u8>>> = vec![None; total];
        for &i in &wanted {
            only_wanted[i] = fetched[i].take();
            if only_wanted[i].is_none() {
                GetReport::note(&mut report.missing, &mut report.missing_count, index, i);
            }
        }
        drop(fetched);
        for i in crate::verify_shards(seg, &mut only_wanted) {
            GetReport::note(&mut report.corrupt, &mut report.corrupt_count, index, i);
            corrupt.push(i);
        }
        for &i in &wanted {
            if only_wanted[i].is_some() {
                intact += 1;
            }
            shards[i] = only_wanted[i].take();
        }
    }
    if intact < k {
        return Err(GetError::Files(FilesError::TooFewShards { segment: index, usable: intact, needed: k, corrupt }));
    }
    Ok(shards)
}

fn fetched_bytes(shards: &[Option<Vec<u8>>]) -> u64 {
    shards.iter().flatten().map(|s| s.len() as u64).sum()
}

/// Bytes decoding a segment adds to its fetched shards: rebuilt data shards and the sealed
/// segment (which becomes the plaintext), at most K shards each.
fn decode_held_bytes(params: &Params, seg: &SegmentEntry) -> u64 {
    2 * shard_len(params, seg.plain_len) * u64::from(params.data_shards)
}

/// Why the decoding thread of [`Getter::get_to_path_pipelined`] stopped.
enum DecodeFail {
    Io(io::Error),
    Files(FilesError),
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
        let mut shards = fetch_segment(&self.manifest, &mut self.report, source, index)?;
        let params = self.manifest.params;
        let Some(seg) = self.manifest.segments.get(index as usize) else {
            return Err(GetError::Files(FilesError::ManifestFormat("no such segment")));
        };
        let held = fetched_bytes(&shards) + decode_held_bytes(&params, seg);
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

    /// Like [`Getter::get_to_path`], but decodes, decrypts and writes on a second thread
    /// while `source` fetches the next segments; at most `ahead` (capped at
    /// [`PIPELINE_AHEAD_MAX`]) fetched segments wait for the decoder. Same output, same report.
    pub fn get_to_path_pipelined<S: ShardSource>(
        &mut self,
        source: &mut S,
        path: &Path,
        ahead: usize,
    ) -> Result<GetReport, GetError<S::Error>> {
        let temp = temp_path(path);
        let file = OpenOptions::new().write(true).create_new(true).open(&temp).map_err(GetError::Io)?;
        let result =
            self.write_pipelined(source, file, ahead).and_then(|()| fs::rename(&temp, path).map_err(GetError::Io));
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

    fn write_pipelined<S: ShardSource>(&mut self, source: &mut S, file: File, ahead: usize) -> Result<(), GetError<S::Error>> {
        let ahead = ahead.min(PIPELINE_AHEAD_MAX);
        let held = Held::default();
        let (manifest, report, key) = (&self.manifest, &mut self.report, &self.key);
        let segments = manifest.segments.len() as u64;
        let result = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<Option<Vec<u8>>>)>(ahead);
            let held = &held;
            let decoder = scope.spawn(move || -> Result<(u64, u64), DecodeFail> {
                let mut out = io::BufWriter::with_capacity(1 << 16, file);
                let (mut written_segments, mut written_bytes) = (0u64, 0u64);
                for (index, mut shards) in rx.iter() {
                    let Some(seg) = manifest.segments.get(index as usize) else { break };
                    let fetched = fetched_bytes(&shards);
                    let extra = decode_held_bytes(&manifest.params, seg);
                    held.add(extra);
                    let decoded = decode_segment_report(key, &manifest.params, seg, &mut shards);
                    drop(shards);
                    let written = match decoded {
                        Ok(d) => out.write_all(&d.plaintext).map(|()| d.plaintext.len() as u64).map_err(DecodeFail::Io),
                        Err(e) => Err(DecodeFail::Files(e)),
                    };
                    held.sub(fetched + extra);
                    written_bytes += written?;
                    written_segments += 1;
                }
                let file = out.into_inner().map_err(|e| DecodeFail::Io(e.into_error()))?;
                file.sync_all().map_err(DecodeFail::Io)?;
                Ok((written_segments, written_bytes))
            });
            for index in 0..segments {
                // On a fetch error `tx` drops with this closure: the decoder ends, the scope joins it.
                let shards = fetch_segment(manifest, report, source, index)?;
                held.add(fetched_bytes(&shards));
                if tx.send((index, shards)).is_err() {
                    break; // the decoder stopped: its error comes from the join
                }
            }
            drop(tx);
            match decoder.join() {
                Ok(Ok(counts)) if counts.0 == segments => Ok(counts),
                Ok(Ok(_)) => Err(GetError::Files(FilesError::ManifestFormat("segment out of range"))),
                Ok(Err(DecodeFail::Io(e))) => Err(GetError::Io(e)),
                Ok(Err(DecodeFail::Files(e))) => Err(GetError::Files(e)),
                Err(_) => Err(GetError::Io(io::Error::other("decoder thread panicked"))),
            }
        });
        self.peak_buffered_bytes = self.peak_buffered_bytes.max(held.peak.load(Ordering::Relaxed));
        let (written_segments, written_bytes) = result?;
        self.report.segments += written_segments;
        self.report.bytes += written_bytes;
        Ok(())
    }

    fn write_synced<S: ShardSource>(&mut self, source: &mut S, file: File) -> Result<(), GetError<S::Error>> {
        let mut out = io::BufWriter::with_capacity(1 << 16, file);
        self.write_to(source, &mut out)?;
        let file = out.into_inner().map_err(|e| GetError::Io(e.into_error()))?;
        file.sync_all().map_err(GetError::Io)
    }
}

/// `dir/.NAME.gridos-part-PID-N` beside `path` (N counts gets in this process, so two gets
/// to one path never share a temporary; the file is created with `create_new`).
fn temp_path(path: &Path) -> PathBuf {
    static GETS: AtomicU64 = AtomicU64::new(0);
    let n = GETS.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.gridos-part-{}-{n}", std::process::id()))
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
