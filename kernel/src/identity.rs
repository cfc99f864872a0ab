//! The node's identity: an ed25519 seed made at first boot from the hardware random
//! source and kept on the first disk, so the node's key and overlay address survive
//! reboots.
//!
//! Disk layout: the first MiB of the first disk is the node area. Sectors 0 and 1
//! each hold a copy of the identity record (a torn write can spoil only one):
//!
//! | bytes  | field                                   |
//! |--------|-----------------------------------------|
//! | 0..8   | magic `GRIDOSND`                        |
//! | 8..12  | format version (1), little-endian       |
//! | 12..16 | zero                                    |
//! | 16..48 | identity seed                           |
//! | 48..80 | blake3 of bytes 0..48                   |
//! | 80..512| zero                                    |
//!
//! A disk whose first sector is neither a valid record nor all zeros holds someone
//! else's data: it is never written unless the command line says
//! `gridos.format=NAME` (e.g. `vda`).

use blockdev::{BlockDevice, SECTOR_SIZE};

use crate::disks;
use crate::entropy::Unsound;

/// Sectors at the start of the first disk that belong to the node area.
pub const NODE_AREA_SECTORS: u64 = 2048;
const MAGIC: &[u8; 8] = b"GRIDOSND";
const VERSION: u32 = 1;

/// Where the identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Read back from the disk.
    Disk,
    /// Made now and written to a blank (or to-be-formatted) disk.
    Created,
    /// Made now and kept in memory only (no usable disk).
    Ephemeral,
}

fn record(seed: &[u8; 32]) -> [u8; SECTOR_SIZE] {
    let mut r = [0u8; SECTOR_SIZE];
    r[0..8].copy_from_slice(MAGIC);
    r[8..12].copy_from_slice(&VERSION.to_le_bytes());
    r[16..48].copy_from_slice(seed);
    let hash = blake3::hash(&r[0..48]);
    r[48..80].copy_from_slice(hash.as_bytes());
    r
}

fn parse(r: &[u8]) -> Option<[u8; 32]> {
    if r.len() < 80 || &r[0..8] != MAGIC || r[8..12] != VERSION.to_le_bytes() {
        return None;
    }
    if blake3::hash(&r[0..48]).as_bytes()[..] != r[48..80] {
        return None;
    }
    let mut seed = [0u8; 32];
    seed.copy_from_slice(&r[16..48]);
    // An all-zero seed is no key at all: treat the record as damaged.
    seed.iter().any(|&b| b != 0).then_some(seed)
}

/// A new identity seed, from a generator just reseeded by health-tested sources; none
/// when the node has no sound source (see `crate::entropy`).
fn fresh_seed() -> Result<[u8; 32], Unsound> {
    let mut seed = [0u8; 32];
    while seed.iter().all(|&b| b == 0) {
        crate::entropy::fill_key(&mut seed)?;
    }
    Ok(seed)
}

/// Loads the identity seed from the first disk, creating it on a blank disk. A node
/// without a sound entropy source keeps an identity it already has but makes no new
/// one: the error says why.
pub fn load_or_create(format_disk: Option<&str>) -> Result<([u8; 32], Origin), Unsound> {
    let result = disks::with_disk(0, |disk| {
        let mut sectors = [0u8; 2 * SECTOR_SIZE];
        if let Err(e) = disk.read(0, &mut sectors) {
            log::error!("identity: cannot read {}: {e}; using an in-memory identity", disk.name);
            return Ok((fresh_seed()?, Origin::Ephemeral));
        }
        let forced = format_disk == Some(disk.name.as_str());
        // A node record is kept even with `gridos.format=NAME` (which only takes over
        // foreign data), so a command line that keeps the word keeps the identity.
        if let Some(seed) = parse(&sectors[..SECTOR_SIZE]).or_else(|| parse(&sectors[SECTOR_SIZE..])) {
            return Ok((seed, Origin::Disk));
        }
        if !forced {
            if sectors[..SECTOR_SIZE].iter().any(|&b| b != 0) {
                log::error!(
                    "identity: {} holds data that is not a gridos node area; not touching it \
                     (boot with gridos.format={} to take the disk over); using an in-memory identity",
                    disk.name, disk.name
                );
                return Ok((fresh_seed()?, Origin::Ephemeral));
            }
        }
        let seed = fresh_seed()?;
        let r = record(&seed);
        sectors[..SECTOR_SIZE].copy_from_slice(&r);
        sectors[SECTOR_SIZE..].copy_from_slice(&r);
        match disk.write(0, &sectors).and_then(|()| disk.flush()) {
            Ok(()) => Ok((seed, Origin::Created)),
            Err(e) => {
                log::error!("identity: cannot write {}: {e}; using an in-memory identity", disk.name);
                Ok((seed, Origin::Ephemeral))
            }
        }
    });
    result.unwrap_or_else(|| Ok((fresh_seed()?, Origin::Ephemeral)))
}
