//! The A/B record on a fault-injecting in-memory disk: after any crash, torn write or
//! failed request, `load` returns the last acknowledged value or (for a failed update)
//! the value that was being written, never anything else; garbage never panics.

use blockdev::mem::MemDisk;
use blockdev::BlockDevice;
use nodestate::record::{Loaded, RecordError, SlotPair};
use proptest::prelude::*;

const START: u64 = 4;
const SLOT_SECTORS: u64 = 8;

fn value(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as usize * 31 + i * 7) as u8).collect()
}

/// The loaded value; `Damaged` counts as none (a torn first write looks like that).
fn loaded_payload(disk: &mut MemDisk) -> Option<Vec<u8>> {
    match SlotPair::new(START, SLOT_SECTORS).load(disk).expect("load") {
        Loaded::Value { payload, .. } => Some(payload),
        Loaded::Empty | Loaded::Damaged => None,
    }
}

#[test]
fn blank_then_values_then_reload() {
    let mut disk = MemDisk::new(64);
    let mut slots = SlotPair::new(START, SLOT_SECTORS);
    assert_eq!(slots.load(&mut disk), Ok(Loaded::Empty));
    for n in 1..6u64 {
        slots.store(&mut disk, &value(n, 100 * n as usize)).expect("store");
        disk.crash();
        let mut again = SlotPair::new(START, SLOT_SECTORS);
        assert_eq!(again.load(&mut disk), Ok(Loaded::Value { generation: n, payload: value(n, 100 * n as usize) }));
    }
    assert_eq!(slots.generation(), 5);
}

#[test]
fn too_large_and_too_small_are_errors() {
    let mut disk = MemDisk::new(64);
    let mut slots = SlotPair::new(START, SLOT_SECTORS);
    let max = slots.max_payload_bytes();
    assert_eq!(max, 8 * 512 - 64);
    assert!(slots.store(&mut disk, &value(1, max)).is_ok());
    assert_eq!(slots.store(&mut disk, &value(1, max + 1)), Err(RecordError::TooLarge { len_bytes: max + 1, max_bytes: max }));
    let mut small = MemDisk::new(START + SLOT_SECTORS);
    assert_eq!(SlotPair::new(START, SLOT_SECTORS).load(&mut small), Err(RecordError::DeviceTooSmall));
}

#[test]
fn garbage_is_damaged_and_never_returned() {
    let mut disk = MemDisk::new(64);
    let garbage: Vec<u8> = (0..512 * 16).map(|i| (i * 13 + 5) as u8).collect();
    disk.write(START, &garbage).unwrap();
    assert_eq!(SlotPair::new(START, SLOT_SECTORS).load(&mut disk), Ok(Loaded::Damaged));
    // A store after that works and does not need the damaged slots.
    let mut slots = SlotPair::new(START, SLOT_SECTORS);
    let _ = slots.load(&mut disk);
    slots.store(&mut disk, b"fresh").unwrap();
    assert_eq!(loaded_payload(&mut disk), Some(b"fresh".to_vec()));
}

#[test]
fn a_flipped_bit_in_the_newest_slot_falls_back_to_the_older_value() {
    let mut disk = MemDisk::new(64);
    let mut slots = SlotPair::new(START, SLOT_SECTORS);
    slots.store(&mut disk, &value(1, 700)).unwrap();
    slots.store(&mut disk, &value(2, 700)).unwrap();
    // Generation 2 is in slot 0; damage its payload.
    disk.flip_bits(START * 512 + 64 + 300, 1, 0x10);
    assert_eq!(loaded_payload(&mut disk), Some(value(1, 700)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Updates with a power cut after a random request, a random part of the unflushed
    /// sectors landing, and sometimes a transient failure first.
    #[test]
    fn crash_anywhere_keeps_the_last_acknowledged_value(
        lens in proptest::collection::vec(0usize..3000, 1..12),
        cut_after in 0u64..30,
        landed in 0usize..10,
        keep_seed in any::<u64>(),
        glitch in proptest::option::of((0u64..30, 0usize..10)),
    ) {
        let mut disk = MemDisk::new(64);
        let mut slots = SlotPair::new(START, SLOT_SECTORS);
        prop_assert_eq!(slots.load(&mut disk), Ok(Loaded::Empty));
        disk.power_cut_after(cut_after, landed);
        if let Some((after, landed)) = glitch {
            disk.glitch_after(after, landed);
        }
        let mut acknowledged: Option<Vec<u8>> = None;
        let mut in_doubt: Option<Vec<u8>> = None;
        for (n, len) in lens.iter().enumerate() {
            let v = value(n as u64, *len);
            match slots.store(&mut disk, &v) {
                Ok(()) => {
                    acknowledged = Some(v);
                    in_doubt = None;
                }
                Err(RecordError::Device(_)) => {
                    in_doubt = Some(v);
                    if disk.is_failed() {
                        break;
                    }
                }
                Err(e) => prop_assert!(false, "{e:?}"),
            }
        }
        disk.crash_keeping(keep_seed);
        let got = loaded_payload(&mut disk);
        prop_assert!(got == acknowledged || (in_doubt.is_some() && got == in_doubt),
            "got {:?} bytes, acknowledged {:?}", got.as_ref().map(Vec::len), acknowledged.as_ref().map(Vec::len));
    }

    /// Random bytes in the slot area: load never panics.
    #[test]
    fn load_never_panics_on_random_slots(bytes in proptest::collection::vec(any::<u8>(), 0..(512 * 16)), magic in any::<bool>()) {
        let mut disk = MemDisk::new(64);
        let mut image = bytes;
        if magic && image.len() >= 32 {
            image[0..8].copy_from_slice(b"GRIDSLOT");
            image[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        image.resize(image.len().div_ceil(512) * 512, 0);
        if !image.is_empty() {
            disk.write(START, &image).unwrap();
        }
        let _ = SlotPair::new(START, SLOT_SECTORS).load(&mut disk);
    }
}
