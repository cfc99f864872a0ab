//! An in-memory [`BlockDevice`] with deterministic fault injection, for tests.
//!
//! `MemDisk` keeps two layers: a *durable image* (what survives a power loss) and a
//! *volatile overlay* of written but not yet flushed sectors. Reads see the overlay
//! first. [`BlockDevice::flush`] moves the overlay into the durable image.
//!
//! Faults, all deterministic (a seed in, the same outcome out):
//! - [`MemDisk::crash`]: power loss, every unflushed sector is lost;
//! - [`MemDisk::crash_keeping`]: power loss where a seed-chosen subset of the unflushed
//!   sectors did land (the disk cache wrote some back in any order), which also models
//!   a torn multi-sector write;
//! - [`MemDisk::power_cut_after`]: after N more write/flush requests the device dies; the
//!   write that hits the cut lands only its first `landed_sectors` sectors (a torn write),
//!   and every later request fails with [`BlockError::Failed`] until a crash "reboots" it;
//! - [`MemDisk::glitch_after`]: after N more write/flush requests, one request fails (a
//!   write landing only its first sectors, unflushed) and the device carries on;
//! - [`MemDisk::flip_bits`]: bit rot in a byte range (durable and volatile copies);
//! - [`MemDisk::set_failed`]: the whole device refuses all requests.
//!
//! What it leaves out: timing, partial-sector tears (a sector is atomic here, as on
//! disks with 512-byte atomic writes) and read errors on single sectors.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::{check_request, BlockDevice, BlockError, SECTOR_SIZE};

/// Counters of the requests a [`MemDisk`] has served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemDiskStats {
    /// Successful read requests.
    pub read_count: u64,
    /// Successful write requests.
    pub write_count: u64,
    /// Successful flush requests.
    pub flush_count: u64,
    /// Sectors written by successful write requests.
    pub written_sectors: u64,
}

/// A pending power cut: see [`MemDisk::power_cut_after`].
#[derive(Debug, Clone, Copy)]
struct PowerCut {
    requests_left: u64,
    landed_sectors: usize,
}

/// An in-memory disk with a durable image, a volatile overlay and injectable faults.
#[derive(Debug, Clone)]
pub struct MemDisk {
    sector_count: u64,
    durable: Vec<u8>,
    volatile: BTreeMap<u64, Vec<u8>>,
    failed: bool,
    power_cut: Option<PowerCut>,
    glitch: Option<PowerCut>,
    stats: MemDiskStats,
}

impl MemDisk {
    /// A zero-filled disk of `sector_count` sectors.
    ///
    /// # Panics
    /// If the image does not fit in memory (`sector_count * 512` overflows `usize`).
    pub fn new(sector_count: u64) -> Self {
        let size_bytes = usize::try_from(sector_count)
            .ok()
            .and_then(|count| count.checked_mul(SECTOR_SIZE))
            .expect("MemDisk size fits in memory");
        MemDisk {
            sector_count,
            durable: vec![0; size_bytes],
            volatile: BTreeMap::new(),
            failed: false,
            power_cut: None,
            glitch: None,
            stats: MemDiskStats::default(),
        }
    }

    /// A disk whose durable image is `image`. Fails if the length is not whole sectors.
    pub fn from_image(image: Vec<u8>) -> Result<Self, BlockError> {
        if !image.len().is_multiple_of(SECTOR_SIZE) {
            return Err(BlockError::Misaligned);
        }
        Ok(MemDisk {
            sector_count: (image.len() / SECTOR_SIZE) as u64,
            durable: image,
            volatile: BTreeMap::new(),
            failed: false,
            power_cut: None,
            glitch: None,
            stats: MemDiskStats::default(),
        })
    }

    /// The durable image: what a crash right now would leave behind (with [`crash`](Self::crash)).
    pub fn durable_image(&self) -> &[u8] {
        &self.durable
    }

    /// Number of written sectors not yet flushed.
    pub fn unflushed_sectors(&self) -> usize {
        self.volatile.len()
    }

    /// Request counters.
    pub fn stats(&self) -> MemDiskStats {
        self.stats
    }

    /// Power loss: every unflushed write is lost. The device comes back healthy
    /// (a pending power cut and a [`set_failed`](Self::set_failed) are cleared).
    pub fn crash(&mut self) {
        self.volatile.clear();
        self.reboot();
    }

    /// Power loss where a subset of the unflushed sectors, chosen by `seed`, did land.
    pub fn crash_keeping(&mut self, seed: u64) {
        let mut rng = SplitMix64(seed);
        let volatile = core::mem::take(&mut self.volatile);
        for (sector, data) in volatile {
            if rng.next() & 1 == 1 {
                let start = sector as usize * SECTOR_SIZE;
                self.durable[start..start + SECTOR_SIZE].copy_from_slice(&data);
            }
        }
        self.reboot();
    }

    /// After `requests` more successful write or flush requests, the device loses power:
    /// the next write lands only its first `landed_sectors` sectors (in the volatile
    /// overlay) and fails, and every request after it fails with [`BlockError::Failed`]
    /// until [`crash`](Self::crash) or [`crash_keeping`](Self::crash_keeping).
    pub fn power_cut_after(&mut self, requests: u64, landed_sectors: usize) {
        self.power_cut = Some(PowerCut { requests_left: requests, landed_sectors });
    }

    /// After `requests` more successful write or flush requests, the next one fails once
    /// with [`BlockError::Io`] (a write lands its first `landed_sectors` sectors in the
    /// volatile overlay; a flush makes nothing durable) and the device goes on working.
    pub fn glitch_after(&mut self, requests: u64, landed_sectors: usize) {
        self.glitch = Some(PowerCut { requests_left: requests, landed_sectors });
    }

    /// Whether the device refuses all requests (failed, or after a power cut).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Makes the device refuse (`true`) or serve (`false`) all requests.
    pub fn set_failed(&mut self, failed: bool) {
        self.failed = failed;
    }

    /// XORs `mask` into every byte of `[offset_bytes, offset_bytes + len_bytes)`, in the
    /// durable image and in any unflushed copy. Bytes past the end are ignored.
    pub fn flip_bits(&mut self, offset_bytes: u64, len_bytes: u64, mask: u8) {
        let end_bytes = offset_bytes.saturating_add(len_bytes).min(self.durable.len() as u64);
        for offset in offset_bytes..end_bytes {
            let offset = offset as usize;
            self.durable[offset] ^= mask;
            let sector = (offset / SECTOR_SIZE) as u64;
            if let Some(data) = self.volatile.get_mut(&sector) {
                data[offset % SECTOR_SIZE] ^= mask;
            }
        }
    }

    fn reboot(&mut self) {
        self.failed = false;
        self.power_cut = None;
        self.glitch = None;
    }

    /// Counts one write/flush request against a pending glitch. `Err(landed)` when this
    /// request is the one that fails.
    fn spend_glitch(&mut self) -> Result<(), usize> {
        match &mut self.glitch {
            None => Ok(()),
            Some(glitch) if glitch.requests_left > 0 => {
                glitch.requests_left -= 1;
                Ok(())
            }
            Some(glitch) => {
                let landed = glitch.landed_sectors;
                self.glitch = None;
                Err(landed)
            }
        }
    }

    /// Counts one write/flush request against a pending power cut. Returns how many
    /// sectors of a write may land if this request is the one that hits the cut.
    fn spend_request(&mut self) -> Result<(), usize> {
        match &mut self.power_cut {
            None => Ok(()),
            Some(cut) if cut.requests_left > 0 => {
                cut.requests_left -= 1;
                Ok(())
            }
            Some(cut) => {
                let landed = cut.landed_sectors;
                cut.landed_sectors = 0;
                self.failed = true;
                Err(landed)
            }
        }
    }

    fn write_sectors(&mut self, sector: u64, buf: &[u8]) {
        for (index, chunk) in buf.chunks_exact(SECTOR_SIZE).enumerate() {
            self.volatile.insert(sector + index as u64, chunk.to_vec());
        }
    }
}

impl BlockDevice for MemDisk {
    fn sector_count(&self) -> u64 {
        self.sector_count
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::Failed);
        }
        check_request(self.sector_count, sector, buf.len())?;
        for (index, chunk) in buf.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            let at = sector + index as u64;
            match self.volatile.get(&at) {
                Some(data) => chunk.copy_from_slice(data),
                None => {
                    let start = at as usize * SECTOR_SIZE;
                    chunk.copy_from_slice(&self.durable[start..start + SECTOR_SIZE]);
                }
            }
        }
        self.stats.read_count += 1;
        Ok(())
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::Failed);
        }
        check_request(self.sector_count, sector, buf.len())?;
        if let Err(landed_sectors) = self.spend_request() {
            let landed_bytes = landed_sectors.min(buf.len() / SECTOR_SIZE) * SECTOR_SIZE;
            self.write_sectors(sector, &buf[..landed_bytes]);
            return Err(BlockError::Failed);
        }
        if let Err(landed_sectors) = self.spend_glitch() {
            let landed_bytes = landed_sectors.min(buf.len() / SECTOR_SIZE) * SECTOR_SIZE;
            self.write_sectors(sector, &buf[..landed_bytes]);
            return Err(BlockError::Io);
        }
        self.write_sectors(sector, buf);
        self.stats.write_count += 1;
        self.stats.written_sectors += (buf.len() / SECTOR_SIZE) as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::Failed);
        }
        if self.spend_request().is_err() {
            return Err(BlockError::Failed);
        }
        if self.spend_glitch().is_err() {
            return Err(BlockError::Io);
        }
        let volatile = core::mem::take(&mut self.volatile);
        for (sector, data) in volatile {
            let start = sector as usize * SECTOR_SIZE;
            self.durable[start..start + SECTOR_SIZE].copy_from_slice(&data);
        }
        self.stats.flush_count += 1;
        Ok(())
    }
}

/// A tiny deterministic generator (SplitMix64) for seed-driven fault choices.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn sector_of(byte: u8) -> Vec<u8> {
        vec![byte; SECTOR_SIZE]
    }

    #[test]
    fn unflushed_writes_are_lost_on_crash() {
        let mut disk = MemDisk::new(4);
        disk.write(0, &sector_of(1)).unwrap();
        disk.flush().unwrap();
        disk.write(1, &sector_of(2)).unwrap();
        let mut buf = sector_of(0);
        disk.read(1, &mut buf).unwrap();
        assert_eq!(buf, sector_of(2));
        disk.crash();
        disk.read(1, &mut buf).unwrap();
        assert_eq!(buf, sector_of(0));
        disk.read(0, &mut buf).unwrap();
        assert_eq!(buf, sector_of(1));
    }

    #[test]
    fn power_cut_tears_the_write() {
        let mut disk = MemDisk::new(8);
        disk.power_cut_after(1, 2);
        disk.write(0, &sector_of(1)).unwrap();
        let mut four = vec![7u8; 4 * SECTOR_SIZE];
        four[SECTOR_SIZE..].fill(8);
        assert_eq!(disk.write(2, &four), Err(BlockError::Failed));
        assert_eq!(disk.flush(), Err(BlockError::Failed));
        let mut buf = sector_of(0);
        assert_eq!(disk.read(0, &mut buf), Err(BlockError::Failed));
        assert_eq!(disk.unflushed_sectors(), 3);
        // Keeping everything that was in flight: only the first two sectors of the torn write.
        let mut kept = disk.clone();
        kept.flush_all_for_test();
        kept.read(2, &mut buf).unwrap();
        assert_eq!(buf, sector_of(7));
        kept.read(3, &mut buf).unwrap();
        assert_eq!(buf, sector_of(8));
        kept.read(4, &mut buf).unwrap();
        assert_eq!(buf, sector_of(0));
        disk.crash();
        disk.read(2, &mut buf).unwrap();
        assert_eq!(buf, sector_of(0));
    }

    impl MemDisk {
        fn flush_all_for_test(&mut self) {
            self.reboot();
            self.flush().unwrap();
        }
    }

    #[test]
    fn glitch_fails_one_request_then_recovers() {
        let mut disk = MemDisk::new(8);
        disk.glitch_after(1, 1);
        disk.write(0, &sector_of(1)).unwrap();
        assert_eq!(disk.write(1, &vec![2u8; 2 * SECTOR_SIZE]), Err(BlockError::Io));
        assert!(!disk.is_failed());
        assert_eq!(disk.unflushed_sectors(), 2);
        disk.flush().unwrap();
        let mut buf = sector_of(0);
        disk.read(1, &mut buf).unwrap();
        assert_eq!(buf, sector_of(2));
        disk.read(2, &mut buf).unwrap();
        assert_eq!(buf, sector_of(0));
        disk.glitch_after(0, 0);
        disk.write(3, &sector_of(3)).unwrap_err();
        disk.write(3, &sector_of(3)).unwrap();
        disk.glitch_after(0, 0);
        assert_eq!(disk.flush(), Err(BlockError::Io));
        assert_eq!(disk.unflushed_sectors(), 1);
    }

    #[test]
    fn crash_keeping_is_deterministic() {
        let run = |seed| {
            let mut disk = MemDisk::new(64);
            for sector in 0..64 {
                disk.write(sector, &sector_of(9)).unwrap();
            }
            disk.crash_keeping(seed);
            disk.durable_image().to_vec()
        };
        assert_eq!(run(5), run(5));
        let landed = run(5).iter().filter(|&&byte| byte == 9).count() / SECTOR_SIZE;
        assert!(landed > 0 && landed < 64);
    }

    #[test]
    fn flips_and_failure() {
        let mut disk = MemDisk::new(2);
        disk.flip_bits(510, 4, 0xff);
        let mut buf = vec![0u8; 2 * SECTOR_SIZE];
        disk.read(0, &mut buf).unwrap();
        assert_eq!(&buf[508..516], &[0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        disk.set_failed(true);
        assert_eq!(disk.read(0, &mut buf), Err(BlockError::Failed));
        assert_eq!(disk.write(0, &buf), Err(BlockError::Failed));
        assert_eq!(disk.flush(), Err(BlockError::Failed));
        disk.set_failed(false);
        assert_eq!(disk.read(1, &mut buf), Err(BlockError::OutOfRange));
        assert!(MemDisk::from_image(vec![0; 100]).is_err());
    }
}
