//! Entropy from the CPU: RDSEED and RDRAND mixed, with a clearly logged
//! TSC-jitter fallback on CPUs that have neither (not fit for key generation).

use core::sync::atomic::{AtomicU8, Ordering};

use crate::arch::x86_64::cpu;

const UNKNOWN: u8 = 0;
const HARDWARE: u8 = 1;
const JITTER_ONLY: u8 = 2;

static SOURCE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether a hardware random source exists. Logs once when it does not.
pub fn has_hardware_source() -> bool {
    match SOURCE.load(Ordering::Relaxed) {
        HARDWARE => true,
        JITTER_ONLY => false,
        _ => {
            let f = cpu::features();
            let hw = f.rdrand || f.rdseed;
            SOURCE.store(if hw { HARDWARE } else { JITTER_ONLY }, Ordering::Relaxed);
            if !hw {
                log::warn!("entropy: CPU has neither RDRAND nor RDSEED; falling back to TSC jitter");
            }
            hw
        }
    }
}

fn jitter_u64() -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..64 {
        let t = cpu::rdtsc();
        x = (x ^ t).wrapping_mul(0xbf58_476d_1ce4_e5b9).rotate_left(31);
        core::hint::spin_loop();
    }
    x
}

/// One 64-bit random value.
pub fn u64() -> u64 {
    if !has_hardware_source() {
        return jitter_u64();
    }
    let f = cpu::features();
    let seed = if f.rdseed { cpu::rdseed() } else { None };
    let rand = if f.rdrand { cpu::rdrand() } else { None };
    match (seed, rand) {
        (Some(s), Some(r)) => s.rotate_left(29) ^ r,
        (Some(v), None) | (None, Some(v)) => v ^ jitter_u64().rotate_left(7),
        (None, None) => jitter_u64(),
    }
}

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let v = u64().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}
