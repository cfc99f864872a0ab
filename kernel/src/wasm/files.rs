//! A workload's persistent file area in the kernel: the `FileArea` the WASI layer
//! calls, over the workload table and the shard store ([`super::persist`]).
//!
//! A write stores the file's bytes as a new (wrapped) shard, then commits the table
//! entry naming it (with its metadata: kind, inode number, times), then deletes the
//! shard it replaced: durable when it returns, and a crash at any point leaves either
//! the old or the new contents. A rename, a hard link and a change of times each
//! change the table entries (the shards stay) in one table commit, so each is atomic
//! (`nodestate`'s crash tests cut the power in the middle of them). A symlink is a
//! name whose shard holds its target. A commit that would not fit in the table's slot
//! (the node-wide bound) is `NoSpace` for the program.

use alloc::string::String;
use alloc::vec::Vec;

use nodestate::workloads::TableError;
use workloads::wasi::{FileArea, FileAreaError, FileMeta};

use super::persist::{self, CommitError, ShardKind};

/// The files of workload `id`.
pub struct StoredFiles {
    id: u64,
}

impl StoredFiles {
    /// The area of workload `id` (whose table entry may be committed after this, but
    /// before the workload runs).
    pub fn for_id(id: u64) -> StoredFiles {
        StoredFiles { id }
    }
}

fn io<E: core::fmt::Display>(id: u64, what: &str) -> impl FnOnce(E) -> FileAreaError + '_ {
    move |e| {
        log::warn!("workload {id}: file {what}: {e}");
        if alloc::format!("{e}").contains("NoSpace") { FileAreaError::NoSpace } else { FileAreaError::Io }
    }
}

/// The area's error for a failed table commit (logged).
fn commit_err(id: u64, what: &str, e: CommitError) -> FileAreaError {
    log::warn!("workload {id}: file {what}: {e}");
    match e {
        CommitError::TableFull => FileAreaError::NoSpace,
        CommitError::NotPersisting | CommitError::Device(_) => FileAreaError::Io,
    }
}

/// The area's error for a change the table refused (its bounds; the WASI layer checks
/// them first, so this is a node error).
fn table_err(id: u64, what: &str, e: TableError) -> FileAreaError {
    log::warn!("workload {id}: file {what}: {e}");
    FileAreaError::NoSpace
}

impl StoredFiles {
    /// Stores `bytes` as a shard, then commits `change` naming it; deletes what the
    /// commit replaced (or the new shard when the commit failed).
    fn put_then_commit(
        &mut self,
        name: &str,
        bytes: &[u8],
        change: impl FnOnce(&mut nodestate::workloads::Entry, nodestate::workloads::Key) -> Result<Option<nodestate::workloads::Key>, TableError>,
    ) -> Result<(), FileAreaError> {
        let id = self.id;
        let key = persist::put(id, ShardKind::File, bytes).map_err(io(id, name))?;
        let committed = persist::commit_typed(|t| t.get_mut(id).map(|e| change(e, key)));
        match committed {
            Ok(Some(Ok(replaced))) => {
                persist::delete_unreferenced(replaced);
                Ok(())
            }
            Ok(Some(Err(e))) => {
                persist::delete_unreferenced([key]);
                Err(table_err(id, name, e))
            }
            Ok(None) => {
                // The workload was removed meanwhile.
                persist::delete_unreferenced([key]);
                Err(FileAreaError::Io)
            }
            Err(e) => {
                persist::delete_unreferenced([key]);
                Err(commit_err(id, name, e))
            }
        }
    }

    /// Commits a change of names only (no new shard).
    fn commit_names<R>(&mut self, what: &str, change: impl FnOnce(&mut nodestate::workloads::Entry) -> Result<R, TableError>) -> Result<R, FileAreaError> {
        let id = self.id;
        match persist::commit_typed(|t| t.get_mut(id).map(change)) {
            Ok(Some(Ok(r))) => Ok(r),
            Ok(Some(Err(e))) => Err(table_err(id, what, e)),
            Ok(None) => Err(FileAreaError::Io),
            Err(e) => Err(commit_err(id, what, e)),
        }
    }
}

impl FileArea for StoredFiles {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, FileAreaError> {
        let Some(key) = persist::with_table(|t| t.get(self.id).and_then(|e| e.file(name)).map(|f| f.key)) else {
            return Ok(None);
        };
        persist::get(self.id, ShardKind::File, &key).map(Some).map_err(io(self.id, name))
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FileAreaError> {
        let len = bytes.len() as u64;
        self.put_then_commit(name, bytes, |e, key| e.try_set_file(name, key, len))
    }

    fn remove(&mut self, name: &str) -> Result<bool, FileAreaError> {
        let id = self.id;
        let removed = persist::commit(|t| t.get_mut(id).and_then(|e| e.remove_file(name))).map_err(io(id, name))?;
        match removed {
            Some(key) => {
                persist::delete_unreferenced([key]);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn list(&mut self) -> Result<Vec<(String, u64)>, FileAreaError> {
        Ok(persist::with_table(|t| {
            t.get(self.id).map(|e| e.files.iter().map(|f| (f.name.clone(), f.len_bytes)).collect()).unwrap_or_default()
        }))
    }

    fn rename(&mut self, moves: &[(String, String)]) -> Result<(), FileAreaError> {
        let replaced = self.commit_names("rename", |e| e.rename_files(moves))?;
        persist::delete_unreferenced(replaced);
        Ok(())
    }

    fn list_meta(&mut self) -> Result<Vec<(String, u64, FileMeta)>, FileAreaError> {
        Ok(persist::with_table(|t| {
            t.get(self.id).map(|e| e.files.iter().map(|f| (f.name.clone(), f.len_bytes, f.meta)).collect()).unwrap_or_default()
        }))
    }

    fn write_meta(&mut self, name: &str, bytes: &[u8], meta: &FileMeta) -> Result<(), FileAreaError> {
        let (len, meta) = (bytes.len() as u64, *meta);
        self.put_then_commit(name, bytes, |e, key| e.try_set_file_meta(name, key, len, meta))
    }

    fn set_meta(&mut self, name: &str, meta: &FileMeta) -> Result<(), FileAreaError> {
        self.commit_names(name, |e| e.set_meta(name, *meta))
    }

    fn link(&mut self, from: &str, to: &str, meta: &FileMeta) -> Result<(), FileAreaError> {
        self.commit_names(to, |e| e.link_file(from, to, *meta))
    }
}
