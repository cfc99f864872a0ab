//! NVMe Identify data (NVM Express Base Specification 1.4, 5.15.2), read with
//! checks: what a controller says about itself (CNS 01h), which namespaces are
//! active (CNS 02h, or a bounded scan of 1..=NN before NVMe 1.1), and whether a
//! namespace (CNS 00h) is one the kernel can use as a disk of 512-byte sectors.
//!
//! Identify data is device input: every field is read with bounds checks, nothing
//! here panics on any bytes, and whatever is out of the specification's ranges is
//! reported as unsupported or malformed rather than trusted. Commands, queues,
//! registers and naming the disks are the kernel driver's (`kernel/src/drivers/nvme.rs`).
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Bytes of one Identify data structure.
pub const IDENTIFY_BYTES: usize = 4096;
/// Most namespaces of one controller used as disks (each gets an I/O queue pair
/// and a bounce buffer); more active ones are reported and left alone.
pub const NAMESPACES_MAX: usize = 16;
/// Most namespace IDs probed one by one on a controller without the active
/// namespace list (NVMe 1.0): NN is device input and may say 2^32 - 1.
pub const NSID_SCAN_MAX: u32 = 1024;
/// The logical block size the kernel's disks have (the block-device trait's sector).
pub const BLOCK_BYTES: u32 = 512;
const BLOCK_LOG2: u8 = 9;
const _: () = assert!(1u32 << BLOCK_LOG2 == BLOCK_BYTES);
const _: () = assert!(NAMESPACES_MAX as u32 <= NSID_SCAN_MAX);
/// IDs in one active namespace list (4096 bytes of u32).
const LIST_ENTRIES_MAX: usize = IDENTIFY_BYTES / 4;

/// The controller's version (register VS, 3.1.2): major, minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u16,
    pub minor: u8,
}

impl Version {
    pub fn from_register(vs: u32) -> Version {
        Version { major: (vs >> 16) as u16, minor: (vs >> 8) as u8 }
    }

    /// Whether Identify CNS 02h (the active namespace ID list) is mandatory: NVMe 1.1 on.
    pub fn has_active_list(self) -> bool {
        self >= Version { major: 1, minor: 1 }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What Identify Controller (CNS 01h) says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controller {
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// NN: the largest namespace ID the controller may have.
    pub namespace_count: u32,
    /// MDTS: the largest transfer is 2^mdts minimum pages (0: no limit).
    pub mdts: u8,
    /// VWC bit 0: a volatile write cache (Flush matters).
    pub volatile_cache: bool,
}

fn field(data: &[u8], start: usize, len: usize) -> &[u8] {
    data.get(start..start + len).unwrap_or(&[])
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    field(data, at, 4).try_into().map(u32::from_le_bytes).unwrap_or(0)
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    field(data, at, 8).try_into().map(u64::from_le_bytes).unwrap_or(0)
}

fn byte_at(data: &[u8], at: usize) -> u8 {
    data.get(at).copied().unwrap_or(0)
}

/// Printable ASCII of a space-padded text field; anything else becomes `?`.
fn ascii(bytes: &[u8]) -> String {
    let text: String = bytes.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' }).collect();
    String::from(text.trim())
}

/// Reads Identify Controller data (fields a short buffer lacks read as zero/empty).
pub fn controller(data: &[u8]) -> Controller {
    Controller {
        serial: ascii(field(data, 4, 20)),
        model: ascii(field(data, 24, 40)),
        firmware: ascii(field(data, 64, 8)),
        mdts: byte_at(data, 77),
        namespace_count: u32_at(data, 516),
        volatile_cache: byte_at(data, 525) & 1 != 0,
    }
}

/// The active namespace IDs a controller listed (CNS 02h with NSID 0), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveList {
    /// The first [`NAMESPACES_MAX`] IDs, ascending.
    pub ids: Vec<u32>,
    /// IDs listed beyond those (not used).
    pub more: usize,
    /// The list broke the rules (an ID not above the one before, above NN, or
    /// 0xffffffff): it was read up to there.
    pub malformed: bool,
}

/// Reads an active namespace ID list: IDs ascending, ended by 0 or the buffer's end.
/// `namespace_count` is the controller's NN (no active ID is above it).
pub fn active_list(data: &[u8], namespace_count: u32) -> ActiveList {
    let mut list = ActiveList::default();
    let mut last = 0u32;
    for entry in data.chunks_exact(4).take(LIST_ENTRIES_MAX) {
        let id = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        if id == 0 {
            break;
        }
        if id <= last || id > namespace_count || id == u32::MAX {
            list.malformed = true;
            break;
        }
        last = id;
        if list.ids.len() < NAMESPACES_MAX {
            list.ids.push(id);
        } else {
            list.more += 1;
        }
    }
    list
}

/// The namespace IDs to probe one by one when there is no active list: 1..=NN, at
/// most [`NSID_SCAN_MAX`] of them (whether IDs past that exist is not known).
pub fn scan_ids(namespace_count: u32) -> core::ops::RangeInclusive<u32> {
    1..=namespace_count.min(NSID_SCAN_MAX)
}

/// Why a namespace is not used as a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// Its logical block is 2^log2 bytes, not 512 (4096-byte "4Kn" formats among
    /// them: the block-device trait and the shard store work in 512-byte sectors).
    BlockSize { log2: u8 },
    /// Its LBA format carries this many metadata bytes per block (end-to-end
    /// protection and the like), which the driver does not transfer.
    Metadata { bytes: u16 },
    /// FLBAS selects LBA format `index` but the namespace lists only `count`.
    Format { index: u8, count: u8 },
    /// NSZE blocks of 512 bytes do not fit in 64 bits of bytes.
    TooLarge { blocks: u64 },
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Unsupported::BlockSize { log2 } => match 1u64.checked_shl(u32::from(log2)) {
                Some(bytes) if log2 < 64 => write!(f, "{bytes}-byte logical blocks (only {BLOCK_BYTES}-byte blocks are supported)"),
                _ => write!(f, "2^{log2}-byte logical blocks (only {BLOCK_BYTES}-byte blocks are supported)"),
            },
            Unsupported::Metadata { bytes } => write!(f, "{bytes} bytes of metadata per block (not supported)"),
            Unsupported::Format { index, count } => write!(f, "LBA format {index} selected of {count} listed"),
            Unsupported::TooLarge { blocks } => write!(f, "{blocks} blocks (too large)"),
        }
    }
}

/// What Identify Namespace (CNS 00h) says about one namespace ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// NSZE is 0: the ID is not an active namespace.
    Inactive,
    /// A disk of this many 512-byte blocks.
    Usable { blocks: u64 },
    Unsupported(Unsupported),
}

/// Reads Identify Namespace data.
pub fn namespace(data: &[u8]) -> Namespace {
    let blocks = u64_at(data, 0);
    if blocks == 0 {
        return Namespace::Inactive;
    }
    // NLBAF (0's based) and FLBAS: format index bits 3:0, and bits 6:5 above them (NVMe 2.0).
    let count = byte_at(data, 25).saturating_add(1).min(64);
    let flbas = byte_at(data, 26);
    let index = (flbas & 0xf) | (((flbas >> 5) & 0x3) << 4);
    if index >= count {
        return Namespace::Unsupported(Unsupported::Format { index, count });
    }
    let format = field(data, 128 + 4 * usize::from(index), 4);
    let (metadata, log2) = match format {
        [ms0, ms1, lbads, _] => (u16::from_le_bytes([*ms0, *ms1]), *lbads),
        _ => return Namespace::Unsupported(Unsupported::Format { index, count }),
    };
    if log2 != BLOCK_LOG2 {
        return Namespace::Unsupported(Unsupported::BlockSize { log2 });
    }
    if metadata != 0 {
        return Namespace::Unsupported(Unsupported::Metadata { bytes: metadata });
    }
    if blocks.checked_mul(u64::from(BLOCK_BYTES)).is_none() {
        return Namespace::Unsupported(Unsupported::TooLarge { blocks });
    }
    Namespace::Usable { blocks }
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    /// A namespace of `blocks` blocks whose format 0 is 512 bytes, formats 1 and 2
    /// 4096 and 512+8, with FLBAS selecting `format`.
    fn namespace_data(blocks: u64, format: u8) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_BYTES];
        d[0..8].copy_from_slice(&blocks.to_le_bytes());
        d[8..16].copy_from_slice(&blocks.to_le_bytes());
        d[25] = 2; // three formats
        d[26] = format;
        d[128..132].copy_from_slice(&[0, 0, 9, 0]);
        d[132..136].copy_from_slice(&[0, 0, 12, 0]);
        d[136..140].copy_from_slice(&[8, 0, 9, 0]);
        d
    }

    fn list(ids: &[u32]) -> Vec<u8> {
        let mut d = vec![0u8; IDENTIFY_BYTES];
        for (i, id) in ids.iter().enumerate() {
            d[4 * i..4 * i + 4].copy_from_slice(&id.to_le_bytes());
        }
        d
    }

    #[test]
    fn a_512_byte_namespace_is_usable_and_others_say_why_not() {
        assert_eq!(namespace(&namespace_data(131072, 0)), Namespace::Usable { blocks: 131072 });
        let four_k = namespace(&namespace_data(8192, 1));
        assert_eq!(four_k, Namespace::Unsupported(Unsupported::BlockSize { log2: 12 }));
        let Namespace::Unsupported(why) = four_k else { unreachable!() };
        assert_eq!(why.to_string(), "4096-byte logical blocks (only 512-byte blocks are supported)");
        assert_eq!(namespace(&namespace_data(64, 2)), Namespace::Unsupported(Unsupported::Metadata { bytes: 8 }));
        assert_eq!(namespace(&namespace_data(64, 3)), Namespace::Unsupported(Unsupported::Format { index: 3, count: 3 }));
        assert_eq!(namespace(&namespace_data(0, 0)), Namespace::Inactive);
        assert_eq!(namespace(&[0u8; IDENTIFY_BYTES]), Namespace::Inactive);
        assert_eq!(namespace(&namespace_data(u64::MAX, 0)), Namespace::Unsupported(Unsupported::TooLarge { blocks: u64::MAX }));
    }

    #[test]
    fn garbage_block_sizes_are_reported_not_computed() {
        let mut d = namespace_data(64, 0);
        d[130] = 200;
        let Namespace::Unsupported(why) = namespace(&d) else { panic!("usable") };
        assert_eq!(why.to_string(), "2^200-byte logical blocks (only 512-byte blocks are supported)");
    }

    #[test]
    fn flbas_upper_bits_select_formats_past_16() {
        let mut d = namespace_data(64, 0);
        d[25] = 63; // 64 formats
        d[26] = 0b0010_0001; // index 17
        d[128 + 4 * 17..128 + 4 * 18].copy_from_slice(&[0, 0, 9, 0]);
        assert_eq!(namespace(&d), Namespace::Usable { blocks: 64 });
        d[25] = 255; // more than 64 formats listed: at most 64 are read
        d[26] = 0xff; // index 63
        assert_eq!(namespace(&d), Namespace::Unsupported(Unsupported::BlockSize { log2: 0 }));
    }

    #[test]
    fn short_buffers_read_as_empty() {
        assert_eq!(namespace(&[1, 0, 0, 0]), Namespace::Inactive);
        assert_eq!(namespace(&namespace_data(64, 0)[..130]), Namespace::Unsupported(Unsupported::Format { index: 0, count: 3 }));
        assert_eq!(controller(&[]), Controller::default());
        assert_eq!(active_list(&[1, 0, 0], 10), ActiveList::default());
    }

    #[test]
    fn controller_fields() {
        let mut d = vec![0u8; IDENTIFY_BYTES];
        d[4..24].copy_from_slice(b"gridos-nvme0        ");
        d[24..64].copy_from_slice(b"QEMU NVMe Ctrl                          ");
        d[64..72].copy_from_slice(b"7.2.22\x01 ");
        d[77] = 7;
        d[516..520].copy_from_slice(&256u32.to_le_bytes());
        d[525] = 1;
        let c = controller(&d);
        assert_eq!((c.serial.as_str(), c.model.as_str(), c.firmware.as_str()), ("gridos-nvme0", "QEMU NVMe Ctrl", "7.2.22?"));
        assert_eq!((c.namespace_count, c.mdts, c.volatile_cache), (256, 7, true));
    }

    #[test]
    fn active_lists_are_capped_and_checked() {
        assert_eq!(active_list(&list(&[1, 2, 5]), 256), ActiveList { ids: vec![1, 2, 5], more: 0, malformed: false });
        let many: Vec<u32> = (1..=20).collect();
        let l = active_list(&list(&many), 256);
        assert_eq!((l.ids, l.more, l.malformed), ((1..=16).collect(), 4, false));
        let full: Vec<u32> = (1..=1024).collect();
        assert_eq!(active_list(&list(&full), u32::MAX - 1).more, 1024 - NAMESPACES_MAX);
        for bad in [&[2, 2][..], &[3, 1], &[1, 300], &[1, u32::MAX]] {
            let l = active_list(&list(bad), 256);
            assert!(l.malformed, "{bad:?}");
            assert_eq!(l.ids, vec![bad[0]], "{bad:?}");
        }
        assert_eq!(active_list(&list(&[0, 1]), 256), ActiveList::default());
    }

    #[test]
    fn versions_and_scans() {
        assert!(!Version::from_register(0x0001_0000).has_active_list());
        assert!(Version::from_register(0x0001_0100).has_active_list());
        assert!(Version::from_register(0x0001_0400).has_active_list());
        assert!(Version::from_register(0x0002_0000).has_active_list());
        assert_eq!(Version::from_register(0x0001_0400).to_string(), "1.4");
        assert_eq!(scan_ids(0).count(), 0);
        assert_eq!(scan_ids(3), 1..=3);
        assert_eq!(scan_ids(u32::MAX), 1..=NSID_SCAN_MAX);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_read_without_panicking(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..IDENTIFY_BYTES + 8), nn in proptest::prelude::any::<u32>()) {
            let c = controller(&data);
            proptest::prop_assert!(c.serial.len() <= 20 && c.model.len() <= 40 && c.firmware.len() <= 8);
            let l = active_list(&data, nn);
            proptest::prop_assert!(l.ids.len() <= NAMESPACES_MAX);
            proptest::prop_assert!(l.ids.windows(2).all(|w| w[0] < w[1]) && l.ids.iter().all(|&id| id >= 1 && id <= nn));
            if let Namespace::Usable { blocks } = namespace(&data) {
                proptest::prop_assert!(blocks > 0 && blocks.checked_mul(512).is_some());
            }
        }
    }
}
