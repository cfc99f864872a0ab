//! The block-device trait: what a raw disk offers to the storage engines above it.
//!
//! A device is an array of fixed-size sectors. Writes may sit in a volatile cache
//! until [`BlockDevice::flush`] returns; only then are they durable. The kernel's
//! virtio-blk driver implements this trait (flush is `VIRTIO_BLK_T_FLUSH`), and
//! host tests implement it in memory with fault injection.
//!
//! The trait is synchronous: an implementation may wait for an interrupt-driven
//! completion underneath (the kernel's driver yields to its executor), but callers
//! see a plain call that returns once the request has completed.
#![no_std]

#[cfg(feature = "mem")]
extern crate alloc;

#[cfg(feature = "mem")]
pub mod mem;

/// Bytes in one sector.
pub const SECTOR_SIZE: usize = 512;

/// Why a block request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The request reaches past the end of the device.
    OutOfRange,
    /// A buffer whose length is not a whole number of sectors.
    Misaligned,
    /// The device reported an I/O error.
    Io,
    /// The device is gone or refuses all requests.
    Failed,
    /// The device is read-only.
    ReadOnly,
}

impl core::fmt::Display for BlockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            BlockError::OutOfRange => "request past the end of the device",
            BlockError::Misaligned => "buffer is not a whole number of sectors",
            BlockError::Io => "device I/O error",
            BlockError::Failed => "device failed",
            BlockError::ReadOnly => "device is read-only",
        })
    }
}

/// A disk of `sector_count()` sectors of [`SECTOR_SIZE`] bytes.
pub trait BlockDevice {
    /// Number of sectors on the device.
    fn sector_count(&self) -> u64;

    /// Reads `buf.len() / SECTOR_SIZE` sectors starting at `sector`.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError>;

    /// Writes `buf.len() / SECTOR_SIZE` sectors starting at `sector`. Not durable until
    /// [`flush`](Self::flush) returns `Ok`.
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError>;

    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), BlockError>;

    /// Device size in bytes.
    fn size_bytes(&self) -> u64 {
        self.sector_count() * SECTOR_SIZE as u64
    }
}

/// A disk whose requests complete asynchronously: the caller submits a request and
/// awaits its completion (in the kernel, the device's interrupt wakes the task), so
/// other tasks run while the disk works. Dropping an unfinished request's future
/// must not free its buffer under the device: implementations wait for it.
pub trait AsyncBlockDevice {
    /// Number of sectors on the device.
    fn sector_count(&self) -> u64;

    /// Reads `buf.len() / SECTOR_SIZE` sectors starting at `sector`.
    fn read_async<'a>(
        &'a mut self,
        sector: u64,
        buf: &'a mut [u8],
    ) -> impl core::future::Future<Output = Result<(), BlockError>> + 'a;

    /// Writes `buf.len() / SECTOR_SIZE` sectors starting at `sector` (durable after a flush).
    fn write_async<'a>(
        &'a mut self,
        sector: u64,
        buf: &'a [u8],
    ) -> impl core::future::Future<Output = Result<(), BlockError>> + 'a;
}

/// Checks that a request of `len` bytes at `sector` fits a device of `sector_count` sectors.
pub fn check_request(sector_count: u64, sector: u64, len: usize) -> Result<(), BlockError> {
    if len % SECTOR_SIZE != 0 {
        return Err(BlockError::Misaligned);
    }
    let sectors = (len / SECTOR_SIZE) as u64;
    match sector.checked_add(sectors) {
        Some(end) if end <= sector_count => Ok(()),
        _ => Err(BlockError::OutOfRange),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn request_bounds() {
        assert_eq!(check_request(8, 0, 4096), Ok(()));
        assert_eq!(check_request(8, 1, 4096), Err(BlockError::OutOfRange));
        assert_eq!(check_request(8, 0, 100), Err(BlockError::Misaligned));
        assert_eq!(check_request(8, u64::MAX, 512), Err(BlockError::OutOfRange));
    }
}
