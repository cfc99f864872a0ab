//! Typed errors of format, mount and shard operations.
//!
//! Disk contents never cause a panic: what a decoder refuses comes back as one of these.

use blockdev::BlockError;

/// Why `ShardStore::format` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// The device failed a request.
    Device(BlockError),
    /// The device has fewer sectors than the smallest store needs.
    DeviceTooSmall,
    /// A format option is out of range (see `FormatOptions`).
    InvalidOptions,
}

/// Why `ShardStore::mount` refused a disk. A refused disk has not been written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountError {
    /// The device failed a request.
    Device(BlockError),
    /// No shard-store superblock: a blank, garbage or foreign disk.
    NotFormatted,
    /// A shard-store superblock of a format version this code does not read.
    UnsupportedVersion(u32),
    /// The superblock's checksum or fields are wrong (a damaged superblock).
    BadSuperblock,
    /// The device is smaller than the superblock says.
    DeviceTooSmall,
    /// Neither checkpoint slot is valid, or the valid one points outside the log.
    BadCheckpoint,
    /// The log holds more records than a store keeps in RAM (`RECORDS_MAX`, or the
    /// store's own lower limit): a disk no store wrote, refused before it fills the heap.
    TooManyRecords {
        /// The limit that was reached.
        records_max: u64,
    },
}

/// Why a shard operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The device failed a request; the operation did not take effect in memory.
    Device(BlockError),
    /// No shard with this key.
    NotFound,
    /// The shard's record fails its checksum: its bytes are not returned.
    Corrupt,
    /// The key is not the blake3 hash of the bytes.
    KeyMismatch,
    /// The shard is larger than this store accepts.
    TooLarge,
    /// Not enough free space, even after compaction.
    NoSpace,
}

impl From<BlockError> for Error {
    fn from(error: BlockError) -> Self {
        Error::Device(error)
    }
}

impl From<BlockError> for MountError {
    fn from(error: BlockError) -> Self {
        MountError::Device(error)
    }
}

impl From<BlockError> for FormatError {
    fn from(error: BlockError) -> Self {
        FormatError::Device(error)
    }
}

impl core::fmt::Display for FormatError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FormatError::Device(error) => write!(f, "device error: {error}"),
            FormatError::DeviceTooSmall => f.write_str("device too small for a shard store"),
            FormatError::InvalidOptions => f.write_str("format option out of range"),
        }
    }
}

impl core::fmt::Display for MountError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MountError::Device(error) => write!(f, "device error: {error}"),
            MountError::NotFormatted => f.write_str("not a shard-store disk (no superblock magic)"),
            MountError::UnsupportedVersion(version) => {
                write!(f, "unsupported shard-store format version {version}")
            }
            MountError::BadSuperblock => f.write_str("damaged shard-store superblock"),
            MountError::DeviceTooSmall => f.write_str("device smaller than its superblock says"),
            MountError::BadCheckpoint => f.write_str("no valid checkpoint"),
            MountError::TooManyRecords { records_max } => {
                write!(f, "the log holds more than {records_max} records, more than a store keeps in memory")
            }
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Device(error) => write!(f, "device error: {error}"),
            Error::NotFound => f.write_str("shard not found"),
            Error::Corrupt => f.write_str("shard record is corrupt"),
            Error::KeyMismatch => f.write_str("key is not the blake3 hash of the shard"),
            Error::TooLarge => f.write_str("shard too large"),
            Error::NoSpace => f.write_str("no space left"),
        }
    }
}
