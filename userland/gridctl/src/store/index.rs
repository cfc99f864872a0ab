//! The local index of the user's files: `store-index.json` beside the key file, one entry
//! per file put from this machine (id, name, size, K, M). It is a convenience for `ls` and
//! for naming files by name; the grid does not need it (`get ID` works from the key alone).
//! Written whole to a temporary file and renamed into place, so a crash leaves the old or
//! the new index, never half of one. At most [`ENTRIES_MAX`] entries and
//! [`INDEX_BYTES_MAX`] bytes are read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{bail, Context, Result};

/// Most files the index keeps.
pub const ENTRIES_MAX: usize = 100_000;
/// Largest index file read.
pub const INDEX_BYTES_MAX: u64 = 64 << 20;

/// One file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The file id (hex).
    pub id: String,
    /// Its name at put.
    pub name: String,
    /// Plaintext bytes.
    pub size: u64,
    /// K.
    pub data_shards: u8,
    /// M.
    pub parity_shards: u8,
    /// Segments.
    pub segments: u64,
    /// When it was stored or last repaired (Unix seconds).
    pub stored_at: u64,
}

/// The index file's path for the key file at `key_path`.
pub fn path_for(key_path: &Path) -> PathBuf {
    key_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("store-index.json")
}

/// Reads the index (empty when there is none).
pub fn load(path: &Path) -> Result<Vec<Entry>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    if meta.len() > INDEX_BYTES_MAX {
        bail!("{} is larger than {} MiB; not reading it", path.display(), INDEX_BYTES_MAX >> 20);
    }
    let text = std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
    let entries: Vec<Entry> =
        serde_json::from_str(&text).context(|| format!("{} is not a gridctl store index", path.display()))?;
    if entries.len() > ENTRIES_MAX {
        bail!("{} has more than {ENTRIES_MAX} entries", path.display());
    }
    Ok(entries)
}

/// Writes the index atomically.
pub fn save(path: &Path, entries: &[Entry]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(entries).context(|| "cannot encode the index".into())?;
    let temp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    std::fs::write(&temp, text).context(|| format!("cannot write {}", temp.display()))?;
    std::fs::rename(&temp, path).context(|| format!("cannot replace {}", path.display()))
}

/// Adds `entry` (replacing `replaces` and any entry with the same id), keeping the newest
/// [`ENTRIES_MAX`].
pub fn upsert(path: &Path, entry: Entry, replaces: Option<&str>) -> Result<()> {
    let mut entries = load(path)?;
    entries.retain(|e| e.id != entry.id && Some(e.id.as_str()) != replaces);
    entries.push(entry);
    if entries.len() > ENTRIES_MAX {
        let extra = entries.len() - ENTRIES_MAX;
        entries.drain(..extra);
    }
    save(path, &entries)
}

/// Removes the entry with `id`, if any.
pub fn remove(path: &Path, id: &str) -> Result<()> {
    let mut entries = load(path)?;
    let before = entries.len();
    entries.retain(|e| e.id != id);
    if entries.len() != before {
        save(path, &entries)?;
    }
    Ok(())
}

/// Resolves what the user typed: 64 hex digits are an id; otherwise the one indexed file
/// with that name (an error when none or several match).
pub fn resolve(path: &Path, id_or_name: &str) -> Result<[u8; 32]> {
    if let Some(id) = crate::parse_hex::<32>(id_or_name) {
        return Ok(id);
    }
    let entries = load(path)?;
    let matches: Vec<&Entry> = entries.iter().filter(|e| e.name == id_or_name).collect();
    match matches.as_slice() {
        [one] => crate::parse_hex::<32>(&one.id).ok_or_else(|| crate::Error(format!("bad id in {}", path.display()))),
        [] => bail!("{id_or_name:?} is neither a file id (64 hex digits) nor a file name in {}", path.display()),
        _ => bail!("{} files are named {id_or_name:?}: give the id (see `gridctl store ls`)", matches.len()),
    }
}

/// Now, in Unix seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn index_round_trips_replaces_and_resolves_names() {
        let dir = std::env::temp_dir().join(format!("gridctl-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = path_for(&dir.join("key"));
        assert!(load(&path).unwrap().is_empty());
        let e = |id: u8, name: &str| Entry {
            id: crate::hex(&[id; 32]),
            name: name.into(),
            size: 1,
            data_shards: 3,
            parity_shards: 2,
            segments: 1,
            stored_at: 0,
        };
        upsert(&path, e(1, "a"), None).unwrap();
        upsert(&path, e(2, "b"), None).unwrap();
        upsert(&path, e(3, "b2"), Some(&crate::hex(&[2; 32]))).unwrap();
        let names: Vec<String> = load(&path).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["a", "b2"]);
        assert_eq!(resolve(&path, "b2").unwrap(), [3; 32]);
        assert_eq!(resolve(&path, &crate::hex(&[9; 32])).unwrap(), [9; 32]);
        assert!(resolve(&path, "nope").is_err());
        remove(&path, &crate::hex(&[1; 32])).unwrap();
        assert_eq!(load(&path).unwrap().len(), 1);
        std::fs::write(&path, "junk").unwrap();
        assert!(load(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
