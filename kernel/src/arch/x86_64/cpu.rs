//! CPU identification and the hardware random-number instructions.

use core::arch::x86_64::{CpuidResult, __cpuid, __cpuid_count, _rdtsc};

fn cpuid(leaf: u32) -> CpuidResult {
    __cpuid(leaf)
}

fn cpuid_sub(leaf: u32, sub: u32) -> CpuidResult {
    __cpuid_count(leaf, sub)
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86-64 CPU and CR4.TSD is clear.
    unsafe { _rdtsc() }
}

/// Features the kernel asks about.
/// Read through `Debug` in the boot log (`gridos.log=debug`).
#[derive(Debug, Clone, Copy, Default)]
#[allow(dead_code)]
pub struct Features {
    pub rdrand: bool,
    pub rdseed: bool,
    pub invariant_tsc: bool,
    pub x2apic: bool,
    pub avx2: bool,
    pub page_1gib: bool,
}

/// Reads the feature flags from CPUID.
pub fn features() -> Features {
    let max_leaf = cpuid(0).eax;
    let leaf1 = cpuid(1);
    let leaf7 = if max_leaf >= 7 { cpuid_sub(7, 0) } else { CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 } };
    let max_ext = cpuid(0x8000_0000).eax;
    let ext1 = if max_ext >= 0x8000_0001 { cpuid(0x8000_0001).edx } else { 0 };
    let ext7 = if max_ext >= 0x8000_0007 { cpuid(0x8000_0007).edx } else { 0 };
    Features {
        rdrand: leaf1.ecx & (1 << 30) != 0,
        rdseed: leaf7.ebx & (1 << 18) != 0,
        invariant_tsc: ext7 & (1 << 8) != 0,
        x2apic: leaf1.ecx & (1 << 21) != 0,
        avx2: leaf7.ebx & (1 << 5) != 0,
        page_1gib: ext1 & (1 << 26) != 0,
    }
}

/// The CPU's brand string, e.g. "QEMU Virtual CPU version 2.5+".
pub fn brand(buf: &mut [u8; 48]) -> &str {
    if cpuid(0x8000_0000).eax < 0x8000_0004 {
        return "unknown";
    }
    for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
        let r = cpuid(leaf);
        for (j, reg) in [r.eax, r.ebx, r.ecx, r.edx].iter().enumerate() {
            let off = i * 16 + j * 4;
            buf[off..off + 4].copy_from_slice(&reg.to_le_bytes());
        }
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(48);
    core::str::from_utf8(&buf[..end]).unwrap_or("unknown").trim()
}

/// One 64-bit value from RDSEED, if the CPU has it and it delivers within a few tries.
pub fn rdseed() -> Option<u64> {
    for _ in 0..64 {
        let mut value: u64;
        let ok: u8;
        // SAFETY: only executed after `features().rdseed` said the instruction exists.
        unsafe {
            core::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok,
                options(nomem, nostack));
        }
        if ok != 0 {
            return Some(value);
        }
        core::hint::spin_loop();
    }
    None
}

/// One 64-bit value from RDRAND, retried as Intel recommends.
pub fn rdrand() -> Option<u64> {
    for _ in 0..10 {
        let mut value: u64;
        let ok: u8;
        // SAFETY: only executed after `features().rdrand` said the instruction exists.
        unsafe {
            core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok,
                options(nomem, nostack));
        }
        if ok != 0 {
            return Some(value);
        }
    }
    None
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: the caller guarantees the MSR exists.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).read() }
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and the value must not break memory safety (e.g. the APIC base).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the write is sound.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).write(value) }
}
