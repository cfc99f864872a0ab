//! Data in and out of a workload on one node: `gridctl files ID ls|get|put|rm` (its file
//! area, `/data`), the seeding of that area at deploy (`--file`, `--dir`, `--stdin`) and
//! `gridctl logs ID --raw` (its output byte for byte). Files and output move in pieces
//! of at most `control::files::FILE_PIECE_BYTES` on one connection; a put is done when
//! the node answers that the file is committed. Rules on the node: `control::files`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use control::files::{FILE_BYTES_MAX, FILE_PIECE_BYTES};
use control::{OutputStream, Request, Response};

use crate::cli::unexpected;
use crate::client::Client;
use crate::{bail, Context, Error, Result};

/// Where `--stdin FILE` is put in the area, and read from by the run.
pub const STDIN_NAME: &str = ".stdin";
/// Most files one `--dir` puts (an area holds at most `control::files::AREA_FILES_MAX`).
pub const DIR_FILES_MAX: usize = control::files::AREA_FILES_MAX;

/// `gridctl files ID ...`
#[derive(Subcommand, Debug)]
pub enum FilesCommand {
    /// List the area's files and directories (`dir/`) with their sizes.
    Ls,
    /// Write a file of the area to stdout, or to `--output`.
    Get {
        /// Path in the area.
        name: String,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Put a local file into the area (replacing one of that name; the workload must
    /// not be running).
    Put {
        /// The local file.
        path: PathBuf,
        /// Path in the area (default: the file's name).
        name: Option<String>,
    },
    /// Remove a file, or an empty directory, of the area (the workload must not be running).
    Rm {
        /// Path in the area.
        name: String,
    },
}

/// A file to seed: its bytes and its path in the area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// Path in the area.
    pub name: String,
    /// Where it comes from (for messages).
    pub from: PathBuf,
}

/// Parses `PATH[:NAME]` (NAME defaults to the file's name).
pub fn parse_file_seed(arg: &str) -> Result<Seed> {
    let (path, name) = match arg.rsplit_once(':') {
        Some((p, n)) if !p.is_empty() && !n.is_empty() && !n.contains('\\') => (p, n.to_string()),
        _ => (arg, file_name(Path::new(arg))?),
    };
    control::files::check_path(&name).map_err(|e| Error(format!("--file {arg}: {}", e.message)))?;
    Ok(Seed { name, from: PathBuf::from(path) })
}

fn file_name(path: &Path) -> Result<String> {
    match path.file_name().and_then(|n| n.to_str()) {
        Some(n) => Ok(n.to_string()),
        None => bail!("{}: no file name to use in the area", path.display()),
    }
}

/// Every regular file under `dir` (recursively, sorted), named by its path below `dir`
/// joined with `/`, under `prefix` when given. Symlinks are not followed.
pub fn dir_seeds(dir: &Path, prefix: Option<&str>) -> Result<Vec<Seed>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), prefix.map(str::to_string))];
    while let Some((at, under)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&at)
            .context(|| format!("cannot read directory {}", at.display()))?
            .collect::<std::result::Result<_, _>>()
            .context(|| format!("cannot read directory {}", at.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().into_string().map_err(|n| Error(format!("{n:?}: not a UTF-8 name")))?;
            let path = under.as_ref().map_or_else(|| name.clone(), |u| format!("{u}/{name}"));
            let kind = e.file_type().context(|| format!("cannot stat {}", e.path().display()))?;
            if kind.is_dir() {
                stack.push((e.path(), Some(path)));
            } else if kind.is_file() {
                control::files::check_path(&path).map_err(|err| Error(format!("--dir {}: {}", dir.display(), err.message)))?;
                out.push(Seed { name: path, from: e.path() });
                if out.len() > DIR_FILES_MAX {
                    bail!("--dir {}: more than {DIR_FILES_MAX} files (an area holds at most that many)", dir.display());
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads a local file that is to go into an area (at most `FILE_BYTES_MAX`).
pub fn read_local(path: &Path) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path).context(|| format!("cannot read {}", path.display()))?.len();
    if len > FILE_BYTES_MAX {
        bail!("{}: {len} bytes, above the {FILE_BYTES_MAX}-byte maximum of a file in a workload's area", path.display());
    }
    std::fs::read(path).context(|| format!("cannot read {}", path.display()))
}

/// Puts `bytes` as `name` in workload `id`'s area, in pieces; returns once committed.
pub fn put(client: &mut Client, id: u64, name: &str, bytes: &[u8]) -> Result<()> {
    let total_len = bytes.len() as u64;
    let mut offset = 0usize;
    loop {
        let end = (offset + FILE_PIECE_BYTES).min(bytes.len());
        let request = Request::FilePut { id, name: name.into(), total_len, offset: offset as u64, data: bytes[offset..end].to_vec() };
        match client.call(&request)? {
            Response::FileStored { len } if len == total_len && end == bytes.len() => return Ok(()),
            Response::FilePartial { received } if received == end as u64 && end < bytes.len() => offset = end,
            other => return Err(unexpected(other)),
        }
    }
}

/// The whole file `name` of workload `id`'s area, in pieces.
pub fn get(client: &mut Client, id: u64, name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let request = Request::FileGet { id, name: name.into(), offset: out.len() as u64, len: FILE_PIECE_BYTES as u64 };
        match client.call(&request)? {
            Response::FileData { total_len, offset, data } if offset == out.len() as u64 && total_len <= FILE_BYTES_MAX => {
                if data.is_empty() && out.len() as u64 != total_len {
                    bail!("the node sent an empty piece of {name:?} at {offset} of {total_len}");
                }
                out.extend_from_slice(&data);
                if out.len() as u64 >= total_len {
                    if out.len() as u64 != total_len {
                        bail!("the node sent {} bytes of {name:?}, which has {total_len}", out.len());
                    }
                    return Ok(out);
                }
            }
            other => return Err(unexpected(other)),
        }
    }
}

/// Writes all of `stream` of workload `id` to `out`, byte for byte; with `follow`, until
/// the run ends.
pub fn raw_logs(client: &mut Client, id: u64, stream: OutputStream, follow: bool, out: &mut dyn Write) -> Result<()> {
    let mut at = 0u64;
    loop {
        let (data, end, finished) = match client.call(&Request::LogsRaw { id, stream, offset: at })? {
            Response::LogsRaw { offset, data, end, finished } if offset == at => (data, end, finished),
            other => return Err(unexpected(other)),
        };
        out.write_all(&data).context(|| "cannot write output".into())?;
        at += data.len() as u64;
        if finished || (!follow && at >= end) {
            break;
        }
        if data.is_empty() {
            client.idle(std::time::Duration::from_secs(1))?;
        }
    }
    out.flush().context(|| "cannot write output".into())
}

/// Runs `gridctl files ID COMMAND`.
pub fn run(client: &mut Client, id: u64, command: FilesCommand, out: &mut dyn Write) -> Result<()> {
    let w = |r: std::io::Result<()>| r.context(|| "cannot write output".into());
    match command {
        FilesCommand::Ls => match client.call(&Request::FileList { id })? {
            Response::Files { files, quota_bytes } => {
                let used: u64 = files.iter().map(|f| f.len).sum();
                for f in &files {
                    w(writeln!(out, "{:>10} {}", f.len, f.name))?;
                }
                w(writeln!(out, "{used} of {quota_bytes} bytes used, {} entries", files.len()))
            }
            other => Err(unexpected(other)),
        },
        FilesCommand::Get { name, output } => {
            let bytes = get(client, id, &name)?;
            match output {
                Some(path) => std::fs::write(&path, &bytes).context(|| format!("cannot write {}", path.display())),
                None => w(out.write_all(&bytes).and_then(|()| out.flush())),
            }
        }
        FilesCommand::Put { path, name } => {
            let name = match name {
                Some(n) => n,
                None => file_name(&path)?,
            };
            control::files::check_path(&name).map_err(|e| Error(e.message))?;
            let bytes = read_local(&path)?;
            put(client, id, &name, &bytes)?;
            w(writeln!(out, "put {name} ({} bytes)", bytes.len()))
        }
        FilesCommand::Rm { name } => match client.call(&Request::FileRemove { id, name: name.clone() })? {
            Response::FileRemoved => w(writeln!(out, "removed {name}")),
            other => Err(unexpected(other)),
        },
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn file_seeds_name_themselves_or_take_a_name() {
        assert_eq!(parse_file_seed("/tmp/in.bin").unwrap(), Seed { name: "in.bin".into(), from: "/tmp/in.bin".into() });
        assert_eq!(parse_file_seed("a/in.bin:data/x").unwrap(), Seed { name: "data/x".into(), from: "a/in.bin".into() });
        assert!(parse_file_seed("x:../escape").is_err());
        assert!(parse_file_seed("x:/abs").is_err());
        assert!(parse_file_seed("/").is_err());
    }

    #[test]
    fn dir_seeds_walk_the_tree_sorted_and_bounded() {
        let dir = std::env::temp_dir().join(format!("gridctl-dir-seeds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        std::fs::write(dir.join("b.txt"), b"b").unwrap();
        std::fs::write(dir.join("sub/a.txt"), b"a").unwrap();
        std::fs::write(dir.join("sub/deeper/c"), b"c").unwrap();
        let names: Vec<String> = dir_seeds(&dir, None).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["b.txt", "sub/a.txt", "sub/deeper/c"]);
        let names: Vec<String> = dir_seeds(&dir, Some("in")).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["in/b.txt", "in/sub/a.txt", "in/sub/deeper/c"]);
        for i in 0..DIR_FILES_MAX {
            std::fs::write(dir.join(format!("f{i}")), b"").unwrap();
        }
        assert!(dir_seeds(&dir, None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
