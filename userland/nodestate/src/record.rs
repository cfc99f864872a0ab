//! One byte string kept durably in two slots (A/B), each with a generation number and
//! a checksum.
//!
//! ```text
//! slot = [start + i * slot_sectors, start + (i + 1) * slot_sectors), i in {0, 1}
//! bytes 0..8    magic "GRIDSLOT"
//! 8..12         format version (1), little-endian
//! 12..16        zero
//! 16..24        generation (the valid slot with the highest generation wins)
//! 24..32        payload length in bytes
//! 32..64        blake3 derive_key("gridos nodestate slot v1") of bytes 0..32 || payload
//! 64..          payload, then zero to the end of its last sector
//! ```
//! Generation `g` is written to slot `g % 2`, so an update never touches the slot
//! holding the current value: a write that is torn or lost by a crash fails its
//! checksum (or keeps its old, lower generation) and the other slot wins. [`SlotPair::store`]
//! returns only after the write and a flush succeeded; after a failed one it blanks the
//! slot it wrote (write and flush), so the failed value cannot land later.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use blockdev::{BlockDevice, BlockError, SECTOR_SIZE};

const MAGIC: &[u8; 8] = b"GRIDSLOT";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;
const HASH_CONTEXT: &str = "gridos nodestate slot v1";

/// What [`SlotPair::load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// Neither slot was ever written (both first sectors are zero).
    Empty,
    /// Neither slot holds a valid record, and at least one is not blank: damaged or
    /// someone else's data.
    Damaged,
    /// The newest valid record.
    Value {
        /// Its generation.
        generation: u64,
        /// Its bytes.
        payload: Vec<u8>,
    },
}

/// Why a slot operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The device failed a request.
    Device(BlockError),
    /// The payload does not fit in a slot.
    TooLarge {
        /// Its length.
        len_bytes: usize,
        /// The most a slot holds.
        max_bytes: usize,
    },
    /// The device is smaller than the two slots.
    DeviceTooSmall,
    /// The generation counter is exhausted (only after a forged record).
    GenerationExhausted,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Device(e) => write!(f, "device error: {e}"),
            RecordError::TooLarge { len_bytes, max_bytes } => write!(f, "{len_bytes} bytes do not fit in a slot of {max_bytes}"),
            RecordError::DeviceTooSmall => f.write_str("device too small for the state slots"),
            RecordError::GenerationExhausted => f.write_str("generation counter exhausted"),
        }
    }
}

impl From<BlockError> for RecordError {
    fn from(e: BlockError) -> Self {
        RecordError::Device(e)
    }
}

/// Two slots on a device and the generation last loaded or stored.
#[derive(Debug, Clone)]
pub struct SlotPair {
    start_sector: u64,
    slot_sectors: u64,
    generation: u64,
}

fn checksum(header: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(HASH_CONTEXT);
    hasher.update(header);
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

impl SlotPair {
    /// Slots of `slot_sectors` (at least 1) each, from `start_sector`.
    pub const fn new(start_sector: u64, slot_sectors: u64) -> SlotPair {
        SlotPair { start_sector, slot_sectors: if slot_sectors == 0 { 1 } else { slot_sectors }, generation: 0 }
    }

    /// The largest payload a slot holds.
    pub fn max_payload_bytes(&self) -> usize {
        (self.slot_sectors as usize).saturating_mul(SECTOR_SIZE) - HEADER_BYTES
    }

    /// The generation of the value last loaded or stored (0: none).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn slot_sector(&self, slot: u64) -> u64 {
        self.start_sector + slot * self.slot_sectors
    }

    fn check_device<D: BlockDevice>(&self, dev: &D) -> Result<(), RecordError> {
        let end = self.slot_sector(2);
        if dev.sector_count() < end {
            return Err(RecordError::DeviceTooSmall);
        }
        Ok(())
    }

    /// Reads one slot: `Ok(None)` if blank, `Ok(Some(None))` if invalid.
    fn read_slot<D: BlockDevice>(&self, dev: &mut D, slot: u64) -> Result<Option<Option<(u64, Vec<u8>)>>, RecordError> {
        let mut first = vec![0u8; SECTOR_SIZE];
        dev.read(self.slot_sector(slot), &mut first)?;
        if first.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if &first[0..8] != MAGIC || first[8..12] != VERSION.to_le_bytes() {
            return Ok(Some(None));
        }
        let generation = u64_at(&first, 16);
        let len = u64_at(&first, 24);
        if len > self.max_payload_bytes() as u64 {
            return Ok(Some(None));
        }
        let len = len as usize;
        let sectors = (HEADER_BYTES + len).div_ceil(SECTOR_SIZE);
        let mut bytes = vec![0u8; sectors * SECTOR_SIZE];
        bytes[..SECTOR_SIZE].copy_from_slice(&first);
        if sectors > 1 {
            dev.read(self.slot_sector(slot) + 1, &mut bytes[SECTOR_SIZE..])?;
        }
        let payload = &bytes[HEADER_BYTES..HEADER_BYTES + len];
        if checksum(&bytes[0..32], payload) != bytes[32..64] {
            return Ok(Some(None));
        }
        Ok(Some(Some((generation, payload.to_vec()))))
    }

    /// Reads both slots and returns the newest valid value. Never writes.
    pub fn load<D: BlockDevice>(&mut self, dev: &mut D) -> Result<Loaded, RecordError> {
        self.check_device(dev)?;
        let a = self.read_slot(dev, 0)?;
        let b = self.read_slot(dev, 1)?;
        let newest = [a.clone().flatten(), b.clone().flatten()]
            .into_iter()
            .flatten()
            .max_by_key(|(generation, _)| *generation);
        match newest {
            Some((generation, payload)) => {
                self.generation = generation;
                Ok(Loaded::Value { generation, payload })
            }
            None if a.is_none() && b.is_none() => {
                self.generation = 0;
                Ok(Loaded::Empty)
            }
            None => {
                self.generation = 0;
                Ok(Loaded::Damaged)
            }
        }
    }

    /// Writes `payload` as the next generation into the slot not holding the current
    /// value and flushes; returns once it is durable. On error the previous value stays
    /// the current one (on disk and here).
    pub fn store<D: BlockDevice>(&mut self, dev: &mut D, payload: &[u8]) -> Result<(), RecordError> {
        self.check_device(dev)?;
        if payload.len() > self.max_payload_bytes() {
            return Err(RecordError::TooLarge { len_bytes: payload.len(), max_bytes: self.max_payload_bytes() });
        }
        let generation = self.generation.checked_add(1).ok_or(RecordError::GenerationExhausted)?;
        let sectors = (HEADER_BYTES + payload.len()).div_ceil(SECTOR_SIZE);
        let mut bytes = vec![0u8; sectors * SECTOR_SIZE];
        bytes[0..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&generation.to_le_bytes());
        bytes[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        let sum = checksum(&bytes[0..32], payload);
        bytes[32..64].copy_from_slice(&sum);
        bytes[HEADER_BYTES..HEADER_BYTES + payload.len()].copy_from_slice(payload);
        let slot = self.slot_sector(generation % 2);
        if let Err(e) = dev.write(slot, &bytes).and_then(|()| dev.flush()) {
            // The failed write may still be in the device's cache and land at a later
            // power cut, after the retry's write was lost: a value the caller was told
            // failed would come back. Blank the slot durably (best effort) so only the
            // retry can make it valid again.
            let _ = dev.write(slot, &[0u8; SECTOR_SIZE]).and_then(|()| dev.flush());
            return Err(e.into());
        }
        self.generation = generation;
        Ok(())
    }
}
