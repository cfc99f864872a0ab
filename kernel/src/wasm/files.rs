//! A workload's persistent file area in the kernel: the `FileArea` the WASI layer
//! calls, over the workload table and the shard store ([`super::persist`]).
//!
//! A write stores the file's bytes as a new (wrapped) shard, then commits the table
//! entry naming it, then deletes the shard it replaced: durable when it returns, and a
//! crash at any point leaves either the old or the new contents. A rename moves the
//! table entries (the shards stay) in one table commit, so it is atomic.

use alloc::string::String;
use alloc::vec::Vec;

use workloads::wasi::{FileArea, FileAreaError};

use super::persist::{self, ShardKind};

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

impl FileArea for StoredFiles {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, FileAreaError> {
        let Some(key) = persist::with_table(|t| t.get(self.id).and_then(|e| e.file(name)).map(|f| f.key)) else {
            return Ok(None);
        };
        persist::get(self.id, ShardKind::File, &key).map(Some).map_err(io(self.id, name))
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), FileAreaError> {
        let id = self.id;
        let key = persist::put(id, ShardKind::File, bytes).map_err(io(id, name))?;
        let committed = persist::commit(|t| t.get_mut(id).map(|e| e.set_file(name, key, bytes.len() as u64)));
        match committed {
            Ok(Some(replaced)) => {
                persist::delete_unreferenced(replaced);
                Ok(())
            }
            Ok(None) => {
                // The workload was removed meanwhile.
                persist::delete_unreferenced([key]);
                Err(FileAreaError::Io)
            }
            Err(e) => {
                persist::delete_unreferenced([key]);
                Err(io(id, name)(e))
            }
        }
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
        let id = self.id;
        let committed = persist::commit(|t| t.get_mut(id).map(|e| e.rename_files(moves)));
        match committed {
            Ok(Some(Ok(replaced))) => {
                persist::delete_unreferenced(replaced);
                Ok(())
            }
            Ok(Some(Err(e))) => Err(io(id, "rename")(e)),
            Ok(None) => Err(FileAreaError::Io),
            Err(e) => Err(io(id, "rename")(e)),
        }
    }
}
