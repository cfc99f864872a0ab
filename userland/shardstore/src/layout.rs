//! On-disk encodings: superblock, checkpoint and record header.
//!
//! Pure functions from structs to sector bytes and back; no device access. Every
//! `decode` treats its input as hostile: it checks magic, checksum and field ranges and
//! returns an error or `None`, never panics. The byte layout is documented in the crate
//! docs (`lib.rs`); the offsets live in the private `field` modules here.

use blockdev::SECTOR_SIZE;

/// Superblock magic, bytes 0..8 of sector 0.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"GRIDSHRD";
/// Checkpoint magic, bytes 0..8 of sectors 8 and 16.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"GSHRDCKP";
/// Record magic, bytes 0..8 of a record's first sector.
pub const RECORD_MAGIC: [u8; 8] = *b"GSHRDREC";
/// The on-disk format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 3;
/// Sector of the superblock.
pub const SUPERBLOCK_SECTOR: u64 = 0;
/// Sectors of the two checkpoint slots (generation `g` lives in slot `g % 2`). The
/// superblock and each slot sit in their own 4 KiB block, so that a torn
/// read-modify-write of a checkpoint on a 4 KiB-sector disk cannot hit the others.
pub const CHECKPOINT_SECTORS: [u64; 2] = [8, 16];
/// First sector of the log region.
pub const LOG_START_SECTORS: u64 = 24;
/// Allowed record alignments (sectors per block): 512 B up to 4 KiB.
pub const BLOCK_SECTORS_ALLOWED: [u32; 4] = [1, 2, 4, 8];
/// The alignment `format` uses unless told otherwise: 4 KiB, the physical sector of
/// most disks, so that appending never rewrites a block that holds older records.
pub const BLOCK_SECTORS_DEFAULT: u32 = 8;
/// The smallest log region accepted, in sectors.
pub const LOG_SECTORS_MIN: u64 = 16;
/// The largest log region accepted (2^48 sectors, 128 PiB), so that sums of two
/// offsets never overflow.
pub const LOG_SECTORS_MAX: u64 = 1 << 48;
/// Bytes of a record header (in the record's first sector; the rest of it is zero).
pub const RECORD_HEADER_SIZE_BYTES: usize = 208;
/// Where a put record's payload starts: its second sector, so that the payload is
/// written from and read into the caller's buffer directly, sector-aligned.
pub const RECORD_PAYLOAD_OFFSET_BYTES: usize = SECTOR_SIZE;
/// Chunk size of the storage-proof Merkle tree (a protocol constant).
pub const CHUNK_SIZE_BYTES: usize = 4096;

const _: () = assert!(RECORD_HEADER_SIZE_BYTES <= SECTOR_SIZE);
const _: () = assert!(CHUNK_SIZE_BYTES.is_multiple_of(SECTOR_SIZE));
const _: () = assert!(superblock_field::CHECKSUM.end <= SECTOR_SIZE);
const _: () = assert!(CHECKPOINT_SECTORS[0] >= 8 && CHECKPOINT_SECTORS[1] >= CHECKPOINT_SECTORS[0] + 8);
const _: () = assert!(LOG_START_SECTORS >= CHECKPOINT_SECTORS[1] + 8);
const _: () = assert!(LOG_START_SECTORS.is_multiple_of(8));
const _: () = assert!(checkpoint_field::CHECKSUM.end <= SECTOR_SIZE);
const _: () = assert!(record_field::HEADER_CHECKSUM.end == RECORD_HEADER_SIZE_BYTES);

mod superblock_field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..8;
    pub const VERSION: Range<usize> = 8..12;
    pub const SECTOR_SIZE: Range<usize> = 12..16;
    pub const NODE_ID: Range<usize> = 16..48;
    pub const DISK_ID: Range<usize> = 48..64;
    pub const FORMAT_SALT: Range<usize> = 64..80;
    pub const SECTOR_COUNT: Range<usize> = 80..88;
    pub const LOG_START: Range<usize> = 88..96;
    pub const LOG_SECTORS: Range<usize> = 96..104;
    pub const CHUNK_SIZE: Range<usize> = 104..108;
    pub const BLOCK_SECTORS: Range<usize> = 108..112;
    pub const CHECKSUM: Range<usize> = 112..144;
}

mod checkpoint_field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..8;
    pub const GENERATION: Range<usize> = 8..16;
    pub const HEAD_OFFSET: Range<usize> = 16..24;
    pub const HEAD_SEQ: Range<usize> = 24..32;
    pub const HEAD_PREV_CHECKSUM: Range<usize> = 32..64;
    pub const CHECKSUM: Range<usize> = 64..96;
}

mod record_field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..8;
    pub const KIND: usize = 8;
    pub const RESERVED: Range<usize> = 9..12;
    pub const PAYLOAD_LEN: Range<usize> = 12..16;
    pub const SEQ: Range<usize> = 16..24;
    pub const RECORD_SECTORS: Range<usize> = 24..32;
    pub const KEY: Range<usize> = 32..64;
    pub const OWNER: Range<usize> = 64..96;
    pub const RESERVED_ROOT: Range<usize> = 96..128;
    pub const PREV_CHECKSUM: Range<usize> = 128..160;
    pub const RECORD_CHECKSUM: Range<usize> = 160..192;
    pub const HEADER_CHECKSUM: Range<usize> = 192..208;
}

fn u32_at(bytes: &[u8], range: core::ops::Range<usize>) -> u32 {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[range]);
    u32::from_le_bytes(out)
}

fn u64_at(bytes: &[u8], range: core::ops::Range<usize>) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[range]);
    u64::from_le_bytes(out)
}

fn array_at<const N: usize>(bytes: &[u8], range: core::ops::Range<usize>) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[range]);
    out
}

/// Why a superblock sector was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperblockError {
    /// No shard-store magic: a blank, garbage or foreign disk.
    NotFormatted,
    /// Our magic with a format version this code does not know.
    UnsupportedVersion(u32),
    /// Our magic and version, but the checksum or a field is wrong.
    Invalid,
}

/// The superblock: written once by `format`, never rewritten by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// The node that owns this disk.
    pub node_id: [u8; 32],
    /// This disk's identity.
    pub disk_id: [u8; 16],
    /// Differs on every format of the same disk, so records of an earlier format never verify.
    pub format_salt: [u8; 16],
    /// Device size at format time.
    pub sector_count: u64,
    /// First sector of the log region.
    pub log_start_sectors: u64,
    /// Length of the log region (a whole number of blocks).
    pub log_sectors: u64,
    /// Record alignment: every record starts and ends on a block of this many sectors.
    pub block_sectors: u32,
}

impl Superblock {
    /// The sector image of this superblock.
    pub fn encode(&self) -> [u8; SECTOR_SIZE] {
        use superblock_field as f;
        let mut sector = [0u8; SECTOR_SIZE];
        sector[f::MAGIC].copy_from_slice(&SUPERBLOCK_MAGIC);
        sector[f::VERSION].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        sector[f::SECTOR_SIZE].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        sector[f::NODE_ID].copy_from_slice(&self.node_id);
        sector[f::DISK_ID].copy_from_slice(&self.disk_id);
        sector[f::FORMAT_SALT].copy_from_slice(&self.format_salt);
        sector[f::SECTOR_COUNT].copy_from_slice(&self.sector_count.to_le_bytes());
        sector[f::LOG_START].copy_from_slice(&self.log_start_sectors.to_le_bytes());
        sector[f::LOG_SECTORS].copy_from_slice(&self.log_sectors.to_le_bytes());
        sector[f::CHUNK_SIZE].copy_from_slice(&(CHUNK_SIZE_BYTES as u32).to_le_bytes());
        sector[f::BLOCK_SECTORS].copy_from_slice(&self.block_sectors.to_le_bytes());
        let checksum = blake3::hash(&sector[..f::CHECKSUM.start]);
        sector[f::CHECKSUM].copy_from_slice(checksum.as_bytes());
        sector
    }

    /// Parses and checks a superblock sector (at least [`SECTOR_SIZE`] bytes).
    pub fn decode(sector: &[u8]) -> Result<Superblock, SuperblockError> {
        use superblock_field as f;
        if sector.len() < SECTOR_SIZE || sector[f::MAGIC] != SUPERBLOCK_MAGIC {
            return Err(SuperblockError::NotFormatted);
        }
        let version = u32_at(sector, f::VERSION);
        if version != FORMAT_VERSION {
            return Err(SuperblockError::UnsupportedVersion(version));
        }
        let checksum = blake3::hash(&sector[..f::CHECKSUM.start]);
        if checksum.as_bytes()[..] != sector[f::CHECKSUM] {
            return Err(SuperblockError::Invalid);
        }
        let superblock = Superblock {
            node_id: array_at(sector, f::NODE_ID),
            disk_id: array_at(sector, f::DISK_ID),
            format_salt: array_at(sector, f::FORMAT_SALT),
            sector_count: u64_at(sector, f::SECTOR_COUNT),
            log_start_sectors: u64_at(sector, f::LOG_START),
            log_sectors: u64_at(sector, f::LOG_SECTORS),
            block_sectors: u32_at(sector, f::BLOCK_SECTORS),
        };
        let block_sectors = u64::from(superblock.block_sectors);
        let log_end_sectors = superblock.log_start_sectors.checked_add(superblock.log_sectors);
        let valid = u32_at(sector, f::SECTOR_SIZE) == SECTOR_SIZE as u32
            && u32_at(sector, f::CHUNK_SIZE) == CHUNK_SIZE_BYTES as u32
            && BLOCK_SECTORS_ALLOWED.contains(&superblock.block_sectors)
            && superblock.log_start_sectors == LOG_START_SECTORS
            && superblock.log_sectors >= LOG_SECTORS_MIN * block_sectors
            && superblock.log_sectors <= LOG_SECTORS_MAX
            && superblock.log_sectors.is_multiple_of(block_sectors)
            && log_end_sectors.is_some_and(|end| end <= superblock.sector_count);
        if !valid {
            return Err(SuperblockError::Invalid);
        }
        Ok(superblock)
    }

    /// The key of every keyed checksum on this disk (checkpoints, record headers and
    /// payloads): derived from the whole superblock, so it changes with each format.
    pub fn checksum_key(&self) -> [u8; 32] {
        blake3::derive_key("gridos shardstore v3 checksum key", &self.encode())
    }
}

/// A checkpoint: where the log's oldest needed record (the head) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Higher wins; generation `g` is stored in slot `g % 2`.
    pub generation: u64,
    /// Offset of the head record in the log region.
    pub head_offset_sectors: u64,
    /// Sequence number the head record must carry.
    pub head_seq: u64,
    /// Record checksum of the record before the head (all zero at format).
    pub head_prev_checksum: [u8; 32],
}

impl Checkpoint {
    /// The sector image of this checkpoint.
    pub fn encode(&self, key: &[u8; 32]) -> [u8; SECTOR_SIZE] {
        use checkpoint_field as f;
        let mut sector = [0u8; SECTOR_SIZE];
        sector[f::MAGIC].copy_from_slice(&CHECKPOINT_MAGIC);
        sector[f::GENERATION].copy_from_slice(&self.generation.to_le_bytes());
        sector[f::HEAD_OFFSET].copy_from_slice(&self.head_offset_sectors.to_le_bytes());
        sector[f::HEAD_SEQ].copy_from_slice(&self.head_seq.to_le_bytes());
        sector[f::HEAD_PREV_CHECKSUM].copy_from_slice(&self.head_prev_checksum);
        let checksum = blake3::keyed_hash(key, &sector[..f::CHECKSUM.start]);
        sector[f::CHECKSUM].copy_from_slice(checksum.as_bytes());
        sector
    }

    /// Parses a checkpoint slot; `None` if it is blank, torn or from another format.
    pub fn decode(sector: &[u8], key: &[u8; 32]) -> Option<Checkpoint> {
        use checkpoint_field as f;
        if sector.len() < SECTOR_SIZE || sector[f::MAGIC] != CHECKPOINT_MAGIC {
            return None;
        }
        let checksum = blake3::keyed_hash(key, &sector[..f::CHECKSUM.start]);
        if checksum.as_bytes()[..] != sector[f::CHECKSUM] {
            return None;
        }
        Some(Checkpoint {
            generation: u64_at(sector, f::GENERATION),
            head_offset_sectors: u64_at(sector, f::HEAD_OFFSET),
            head_seq: u64_at(sector, f::HEAD_SEQ),
            head_prev_checksum: array_at(sector, f::HEAD_PREV_CHECKSUM),
        })
    }
}

/// What a log record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A shard: the payload is its bytes.
    Put = 1,
    /// The shard `key` is gone. No payload.
    Delete = 2,
    /// Filler up to the end of the log region; the next record starts at offset 0.
    Pad = 3,
}

impl RecordKind {
    fn from_u8(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Put),
            2 => Some(RecordKind::Delete),
            3 => Some(RecordKind::Pad),
            _ => None,
        }
    }
}

/// A record header (the first [`RECORD_HEADER_SIZE_BYTES`] of a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// What the record says.
    pub kind: RecordKind,
    /// Payload bytes after the header.
    pub payload_len_bytes: u32,
    /// Position in the log's sequence; each record is its predecessor's plus one.
    pub seq: u64,
    /// Sectors the record occupies, header included.
    pub record_sectors: u64,
    /// Shard key (zero for pads).
    pub key: [u8; 32],
    /// The shard's owner: the namespace of `key` (zero for pads).
    pub owner: [u8; 32],
    /// Record checksum of the previous record in the log (the hash chain).
    pub prev_checksum: [u8; 32],
    /// Keyed blake3 over header bytes 0..160 (owner and key included): the header
    /// only, since the key (the shard's blake3) already commits to the payload.
    pub record_checksum: [u8; 32],
}

/// Sectors a record with `payload_len_bytes` of payload needs, before block alignment.
pub fn record_sectors_for(payload_len_bytes: u64) -> u64 {
    1 + payload_len_bytes.div_ceil(SECTOR_SIZE as u64)
}

/// `sectors` rounded up to a whole number of blocks of `block_sectors`.
pub fn align_up(sectors: u64, block_sectors: u64) -> u64 {
    assert!(block_sectors > 0);
    sectors.div_ceil(block_sectors) * block_sectors
}

impl RecordHeader {
    /// The keyed record checksum over this header's first 160 bytes (everything before
    /// the checksum, owner and shard key included). The payload is not hashed again: a
    /// put's key is its blake3, checked whenever the payload is read.
    pub fn compute_record_checksum(&self, key: &[u8; 32]) -> [u8; 32] {
        let bytes = self.encode_unsealed();
        *blake3::keyed_hash(key, &bytes[..record_field::RECORD_CHECKSUM.start]).as_bytes()
    }

    fn encode_unsealed(&self) -> [u8; RECORD_HEADER_SIZE_BYTES] {
        use record_field as f;
        let mut bytes = [0u8; RECORD_HEADER_SIZE_BYTES];
        bytes[f::MAGIC].copy_from_slice(&RECORD_MAGIC);
        bytes[f::KIND] = self.kind as u8;
        bytes[f::PAYLOAD_LEN].copy_from_slice(&self.payload_len_bytes.to_le_bytes());
        bytes[f::SEQ].copy_from_slice(&self.seq.to_le_bytes());
        bytes[f::RECORD_SECTORS].copy_from_slice(&self.record_sectors.to_le_bytes());
        bytes[f::KEY].copy_from_slice(&self.key);
        bytes[f::OWNER].copy_from_slice(&self.owner);
        bytes[f::PREV_CHECKSUM].copy_from_slice(&self.prev_checksum);
        bytes[f::RECORD_CHECKSUM].copy_from_slice(&self.record_checksum);
        bytes
    }

    /// The header bytes, sealed with the header checksum.
    pub fn encode(&self, key: &[u8; 32]) -> [u8; RECORD_HEADER_SIZE_BYTES] {
        use record_field as f;
        let mut bytes = self.encode_unsealed();
        let checksum = blake3::keyed_hash(key, &bytes[..f::HEADER_CHECKSUM.start]);
        bytes[f::HEADER_CHECKSUM].copy_from_slice(&checksum.as_bytes()[..f::HEADER_CHECKSUM.len()]);
        bytes
    }

    /// Parses a header and checks its header checksum and internal consistency. Says
    /// nothing about the payload (see [`compute_record_checksum`](Self::compute_record_checksum)).
    pub fn decode(bytes: &[u8], key: &[u8; 32]) -> Option<RecordHeader> {
        use record_field as f;
        if bytes.len() < RECORD_HEADER_SIZE_BYTES || bytes[f::MAGIC] != RECORD_MAGIC {
            return None;
        }
        let checksum = blake3::keyed_hash(key, &bytes[..f::HEADER_CHECKSUM.start]);
        if checksum.as_bytes()[..f::HEADER_CHECKSUM.len()] != bytes[f::HEADER_CHECKSUM] {
            return None;
        }
        if bytes[f::RESERVED] != [0u8; 3] || bytes[f::RESERVED_ROOT] != [0u8; 32] {
            return None;
        }
        let header = RecordHeader {
            kind: RecordKind::from_u8(bytes[f::KIND])?,
            payload_len_bytes: u32_at(bytes, f::PAYLOAD_LEN),
            seq: u64_at(bytes, f::SEQ),
            record_sectors: u64_at(bytes, f::RECORD_SECTORS),
            key: array_at(bytes, f::KEY),
            owner: array_at(bytes, f::OWNER),
            prev_checksum: array_at(bytes, f::PREV_CHECKSUM),
            record_checksum: array_at(bytes, f::RECORD_CHECKSUM),
        };
        // Exact sizes depend on the disk's block size; the store checks them.
        let block_max = u64::from(BLOCK_SECTORS_ALLOWED[BLOCK_SECTORS_ALLOWED.len() - 1]);
        let sized = match header.kind {
            RecordKind::Put => {
                let tight = record_sectors_for(u64::from(header.payload_len_bytes));
                header.record_sectors >= tight && header.record_sectors < tight + block_max
            }
            RecordKind::Delete => {
                header.payload_len_bytes == 0 && (1..=block_max).contains(&header.record_sectors)
            }
            RecordKind::Pad => header.payload_len_bytes == 0 && header.record_sectors >= 1,
        };
        sized.then_some(header)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn superblock() -> Superblock {
        Superblock {
            node_id: [1; 32],
            disk_id: [2; 16],
            format_salt: [3; 16],
            sector_count: 121,
            log_start_sectors: LOG_START_SECTORS,
            log_sectors: 97,
            block_sectors: 1,
        }
    }

    #[test]
    fn superblock_round_trip_and_refusals() {
        let sb = superblock();
        let sector = sb.encode();
        assert_eq!(Superblock::decode(&sector), Ok(sb.clone()));
        assert_eq!(Superblock::decode(&[0u8; SECTOR_SIZE]), Err(SuperblockError::NotFormatted));
        assert_eq!(Superblock::decode(&sector[..10]), Err(SuperblockError::NotFormatted));
        let mut bad = sector;
        bad[8] = 9;
        assert_eq!(Superblock::decode(&bad), Err(SuperblockError::UnsupportedVersion(9)));
        let mut bad = sector;
        bad[20] ^= 1;
        assert_eq!(Superblock::decode(&bad), Err(SuperblockError::Invalid));
        let too_big = Superblock { log_sectors: 98, ..sb.clone() };
        assert_eq!(Superblock::decode(&too_big.encode()), Err(SuperblockError::Invalid));
        let overflow = Superblock { log_sectors: u64::MAX, ..sb.clone() };
        assert_eq!(Superblock::decode(&overflow.encode()), Err(SuperblockError::Invalid));
        let misaligned = Superblock { block_sectors: 8, ..sb.clone() };
        assert_eq!(Superblock::decode(&misaligned.encode()), Err(SuperblockError::Invalid));
        let odd_block = Superblock { block_sectors: 3, ..sb.clone() };
        assert_eq!(Superblock::decode(&odd_block.encode()), Err(SuperblockError::Invalid));
        let aligned = Superblock { block_sectors: 4, log_sectors: 96, ..sb.clone() };
        assert_eq!(Superblock::decode(&aligned.encode()), Ok(aligned.clone()));
        let salted = Superblock { format_salt: [4; 16], ..sb.clone() };
        assert_ne!(salted.checksum_key(), sb.checksum_key());
    }

    #[test]
    fn checkpoint_round_trip() {
        let key = superblock().checksum_key();
        let checkpoint = Checkpoint {
            generation: 7,
            head_offset_sectors: 12,
            head_seq: 99,
            head_prev_checksum: [5; 32],
        };
        let sector = checkpoint.encode(&key);
        assert_eq!(Checkpoint::decode(&sector, &key), Some(checkpoint));
        assert_eq!(Checkpoint::decode(&sector, &[0; 32]), None);
        let mut torn = sector;
        torn[17] ^= 0x10;
        assert_eq!(Checkpoint::decode(&torn, &key), None);
    }

    #[test]
    fn record_header_round_trip() {
        let key = superblock().checksum_key();
        let mut header = RecordHeader {
            kind: RecordKind::Put,
            payload_len_bytes: 1000,
            seq: 3,
            record_sectors: record_sectors_for(1000),
            key: [6; 32],
            owner: [4; 32],
            prev_checksum: [8; 32],
            record_checksum: [0; 32],
        };
        header.record_checksum = header.compute_record_checksum(&key);
        let bytes = header.encode(&key);
        assert_eq!(RecordHeader::decode(&bytes, &key), Some(header));
        assert_eq!(RecordHeader::decode(&bytes, &[9; 32]), None);
        for index in 0..RECORD_HEADER_SIZE_BYTES {
            let mut flipped = bytes;
            flipped[index] ^= 0x01;
            assert_eq!(RecordHeader::decode(&flipped, &key), None, "byte {index}");
        }
        let wrong_size = RecordHeader { record_sectors: 1, ..header };
        let padded = RecordHeader { record_sectors: 8, ..header };
        assert_eq!(RecordHeader::decode(&padded.encode(&key), &key), Some(padded));
        let too_padded = RecordHeader { record_sectors: 11, ..header };
        assert_eq!(RecordHeader::decode(&too_padded.encode(&key), &key), None);
        assert_eq!(align_up(3, 8), 8);
        assert_eq!(align_up(16, 8), 16);
        assert_eq!(align_up(0, 8), 0);
        assert_eq!(RecordHeader::decode(&wrong_size.encode(&key), &key), None);
        assert_eq!(record_sectors_for(0), 1);
        assert_eq!(record_sectors_for(1), 2);
        assert_eq!(record_sectors_for(512), 2);
        assert_eq!(record_sectors_for(513), 3);
        // The owner is covered by both checksums: another owner is another record.
        let other_owner = RecordHeader { owner: [5; 32], ..header };
        assert_ne!(other_owner.compute_record_checksum(&key), header.record_checksum);
        let other_shard = RecordHeader { key: [5; 32], ..header };
        assert_ne!(other_shard.compute_record_checksum(&key), header.record_checksum);
        let mut moved = bytes;
        moved[64..96].copy_from_slice(&[5; 32]);
        assert_eq!(RecordHeader::decode(&moved, &key), None);
    }
}
