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

/// Bytes interrupt entry reserves for the FPU/SSE/AVX state (512 for `fxsave`; the
/// XSAVE area's size once [`enable_extended_state`] turned XSAVE on). Read by the
/// entry stub in `idt.rs`.
#[no_mangle]
static ISR_SAVE_AREA_BYTES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(512);
/// The state components interrupt entry saves with `xsave` (XCR0), 0 for `fxsave`.
#[no_mangle]
static ISR_XSAVE_MASK: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The largest XSAVE area interrupt entry accepts (the IST stacks are 64 KiB).
const XSAVE_AREA_BYTES_MAX: u32 = 8192;

/// What [`enable_extended_state`] turned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorState {
    /// SSE only (no XSAVE on this CPU): `fxsave` at interrupt entry.
    Sse,
    /// AVX (YMM) state: blake3, wasmtime and the rest may use AVX and AVX2.
    Avx,
    /// AVX and AVX-512 (opmask and ZMM) state.
    Avx512,
}

/// Whether this CPU is QEMU's TCG emulator (hypervisor signature "TCGTCGTCGTCG").
pub fn is_qemu_tcg() -> bool {
    let hypervisor = cpuid(1).ecx & (1 << 31) != 0;
    if !hypervisor {
        return false;
    }
    let leaf = cpuid(0x4000_0000);
    let mut signature = [0u8; 12];
    signature[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    signature[8..].copy_from_slice(&leaf.edx.to_le_bytes());
    &signature == b"TCGTCGTCGTCG"
}

/// Turns on XSAVE and the AVX (and AVX-512) register state the CPU has, so that code
/// that detects them at run time (blake3 through `cpufeatures`, which also asks XCR0)
/// may use them, and makes interrupt entry save all of it with `xsave`. Call on the
/// boot CPU before interrupts are enabled and before anything has asked for CPU
/// features; application processors copy CR4 and XCR0 from the boot CPU.
pub fn enable_extended_state() -> VectorState {
    use core::sync::atomic::Ordering;
    let max_leaf = cpuid(0).eax;
    let leaf1 = cpuid(1);
    let xsave = leaf1.ecx & (1 << 26) != 0;
    let avx = leaf1.ecx & (1 << 28) != 0;
    if !xsave || !avx || max_leaf < 0xd {
        return VectorState::Sse;
    }
    let avx512f = max_leaf >= 7 && cpuid_sub(7, 0).ebx & (1 << 16) != 0;
    // Components the CPU can save (CPUID.(0xD,0):EAX): x87 | SSE | AVX, plus opmask,
    // ZMM_Hi256 and Hi16_ZMM for AVX-512 when all three are there.
    let supported = u64::from(cpuid_sub(0xd, 0).eax);
    let mut mask = 0b111;
    if avx512f && supported & 0xe0 == 0xe0 {
        mask |= 0xe0;
    }
    // SAFETY: CPUID says XSAVE exists, so CR4.OSXSAVE may be set; XCR0 gets only
    // components CPUID lists as supported, x87 and SSE included (as XSETBV requires).
    // Interrupts are still off, and interrupt entry switches from `fxsave` to `xsave`
    // only once the globals below are set, before the first interrupt.
    unsafe {
        let cr4 = x86_64::registers::control::Cr4::read_raw();
        x86_64::registers::control::Cr4::write_raw(cr4 | (1 << 18));
        core::arch::x86_64::_xsetbv(0, mask & supported);
    }
    // The area for what XCR0 enables now (CPUID.(0xD,0):EBX).
    let area_bytes = cpuid_sub(0xd, 0).ebx;
    if area_bytes > XSAVE_AREA_BYTES_MAX {
        // SAFETY: back to x87 | SSE only, which fxsave covers; nothing used AVX yet.
        unsafe { core::arch::x86_64::_xsetbv(0, 0b11) };
        return VectorState::Sse;
    }
    ISR_SAVE_AREA_BYTES.store(u64::from(area_bytes), Ordering::SeqCst);
    ISR_XSAVE_MASK.store(mask & supported, Ordering::SeqCst);
    if mask & 0xe0 != 0 { VectorState::Avx512 } else { VectorState::Avx }
}
