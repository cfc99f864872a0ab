//! Local APIC registers and the interrupt command register (ICR) in xAPIC and x2APIC
//! mode (Intel SDM vol. 3, 11.4 "Local APIC" and 11.12 "Extended XAPIC (x2APIC)").
//!
//! In xAPIC mode a register is 32 bits of MMIO at `base + offset`; in x2APIC mode it is
//! MSR `0x800 + offset / 16`, the ICR is one 64-bit MSR (`0x830`) with the destination
//! in bits 32..63 (there is no ICR high register, and no delivery-status bit to poll),
//! and APIC ids are 32 bits (the ID register holds the whole id, not bits 24..31).

/// `IA32_APIC_BASE`: base address, global enable (bit 11), x2APIC enable (bit 10).
pub const IA32_APIC_BASE_MSR: u32 = 0x1b;
/// `IA32_APIC_BASE` bit 11: the local APIC is enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// `IA32_APIC_BASE` bit 10: x2APIC mode (only together with bit 11).
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
/// CPUID.01H:ECX bit 21: the CPU supports x2APIC mode.
pub const CPUID1_ECX_X2APIC: u32 = 1 << 21;
/// The first x2APIC MSR (the register at offset 0).
pub const X2APIC_MSR_BASE: u32 = 0x800;

/// Register offsets (xAPIC MMIO offsets; x2APIC MSRs via [`x2apic_msr`]).
pub mod reg {
    pub const ID: u16 = 0x20;
    pub const EOI: u16 = 0xb0;
    pub const SVR: u16 = 0xf0;
    pub const ICR_LOW: u16 = 0x300;
    /// xAPIC only: the destination half of the ICR.
    pub const ICR_HIGH: u16 = 0x310;
    pub const LVT_TIMER: u16 = 0x320;
    pub const TIMER_INITIAL: u16 = 0x380;
    pub const TIMER_CURRENT: u16 = 0x390;
    pub const TIMER_DIVIDE: u16 = 0x3e0;
}

/// ICR low word (xAPIC) / bits 0..31 (x2APIC): delivery modes, level assert.
pub mod icr {
    /// Delivery status (xAPIC only): the local APIC has not sent the IPI yet.
    pub const DELIVERY_PENDING: u32 = 1 << 12;
    /// Level: assert (required for every IPI but INIT de-assert).
    pub const LEVEL_ASSERT: u32 = 1 << 14;
    /// A fixed interrupt on `vector`.
    pub const fn fixed(vector: u8) -> u32 {
        LEVEL_ASSERT | vector as u32
    }
    /// A non-maskable interrupt (the vector field is ignored).
    pub const NMI: u32 = LEVEL_ASSERT | (0b100 << 8);
    /// INIT (level assert).
    pub const INIT: u32 = LEVEL_ASSERT | (0b101 << 8);
    /// A STARTUP IPI: the CPU starts in real mode at `page << 12`.
    pub const fn startup(page: u8) -> u32 {
        LEVEL_ASSERT | (0b110 << 8) | page as u32
    }
}

/// How the local APIC is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Memory-mapped registers at the `IA32_APIC_BASE` address; 8-bit APIC ids.
    XApic,
    /// MSRs; 32-bit APIC ids.
    X2Apic,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::XApic => "xAPIC",
            Mode::X2Apic => "x2APIC",
        }
    }
}

/// The mode to run the local APIC in: x2APIC when the firmware left it on (it can
/// only be left by a reset of the APIC, so it must be kept) or when the CPU supports
/// it (CPUID.01H:ECX[21]); xAPIC otherwise.
pub fn choose_mode(cpuid1_ecx: u32, apic_base_msr: u64) -> Mode {
    let firmware_x2 = apic_base_msr & (APIC_BASE_ENABLE | APIC_BASE_X2APIC) == APIC_BASE_ENABLE | APIC_BASE_X2APIC;
    if firmware_x2 || cpuid1_ecx & CPUID1_ECX_X2APIC != 0 {
        Mode::X2Apic
    } else {
        Mode::XApic
    }
}

/// The `IA32_APIC_BASE` value that turns `mode` on, from the current one. The legal
/// transitions are disabled -> xAPIC -> x2APIC (SDM 11.12.5; disabled -> x2APIC and
/// x2APIC -> xAPIC fault), so for x2APIC the caller first writes the
/// [`Mode::XApic`] value if bit 11 was clear.
pub fn apic_base_for(mode: Mode, current: u64) -> u64 {
    match mode {
        Mode::XApic => current | APIC_BASE_ENABLE,
        Mode::X2Apic => current | APIC_BASE_ENABLE | APIC_BASE_X2APIC,
    }
}

/// The x2APIC MSR of the register at xAPIC offset `offset`, or `None` if the offset
/// is not a register's (not 16-byte aligned, past 0x3f0) or has no MSR in x2APIC mode
/// (ICR high: the destination is in the one 64-bit ICR MSR).
pub fn x2apic_msr(offset: u16) -> Option<u32> {
    if !offset.is_multiple_of(16) || offset > 0x3f0 || offset == reg::ICR_HIGH {
        return None;
    }
    Some(X2APIC_MSR_BASE + u32::from(offset >> 4))
}

/// Why an IPI cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcrError {
    /// xAPIC destinations are 8-bit APIC ids.
    DestinationTooWide(u32),
}

/// The xAPIC ICR as (high, low): the destination in bits 24..31 of the high word
/// (written first; writing the low word sends).
pub fn xapic_icr(destination: u32, low: u32) -> Result<(u32, u32), IcrError> {
    if destination > 0xff {
        return Err(IcrError::DestinationTooWide(destination));
    }
    Ok((destination << 24, low))
}

/// The x2APIC ICR (MSR 0x830): destination in bits 32..63, the command in 0..31.
pub fn x2apic_icr(destination: u32, low: u32) -> u64 {
    (u64::from(destination) << 32) | u64::from(low)
}

/// The APIC id from the ID register's raw value.
pub fn apic_id(mode: Mode, id_register: u32) -> u32 {
    match mode {
        Mode::XApic => id_register >> 24,
        Mode::X2Apic => id_register,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn x2apic_msrs_follow_the_offsets() {
        assert_eq!(x2apic_msr(reg::ID), Some(0x802));
        assert_eq!(x2apic_msr(reg::EOI), Some(0x80b));
        assert_eq!(x2apic_msr(reg::SVR), Some(0x80f));
        assert_eq!(x2apic_msr(reg::ICR_LOW), Some(0x830));
        assert_eq!(x2apic_msr(reg::LVT_TIMER), Some(0x832));
        assert_eq!(x2apic_msr(reg::TIMER_INITIAL), Some(0x838));
        assert_eq!(x2apic_msr(reg::TIMER_CURRENT), Some(0x839));
        assert_eq!(x2apic_msr(reg::TIMER_DIVIDE), Some(0x83e));
        // No ICR high in x2APIC mode; offsets that are no register's.
        assert_eq!(x2apic_msr(reg::ICR_HIGH), None);
        assert_eq!(x2apic_msr(0x24), None);
        assert_eq!(x2apic_msr(0x400), None);
        assert_eq!(x2apic_msr(0x3f0), Some(0x83f));
    }

    #[test]
    fn icr_encodings() {
        assert_eq!(icr::fixed(0xf1), 0x40f1);
        assert_eq!(icr::INIT, 0x4500);
        assert_eq!(icr::startup(8), 0x4608);
        assert_eq!(icr::NMI, 0x4400);
        assert_eq!(xapic_icr(3, icr::fixed(0xf0)), Ok((0x0300_0000, 0x40f0)));
        assert_eq!(xapic_icr(0xff, icr::INIT), Ok((0xff00_0000, 0x4500)));
        assert_eq!(xapic_icr(0x100, icr::INIT), Err(IcrError::DestinationTooWide(0x100)));
        assert_eq!(x2apic_icr(3, icr::fixed(0xf0)), 0x0000_0003_0000_40f0);
        // 32-bit destinations are whole in x2APIC mode.
        assert_eq!(x2apic_icr(0x1_0002, icr::NMI), 0x0001_0002_0000_4400);
        assert_eq!(x2apic_icr(u32::MAX, icr::startup(8)) >> 32, u64::from(u32::MAX));
    }

    #[test]
    fn ids_per_mode() {
        assert_eq!(apic_id(Mode::XApic, 0x0300_0000), 3);
        assert_eq!(apic_id(Mode::X2Apic, 0x0001_0002), 0x1_0002);
    }

    #[test]
    fn mode_choice() {
        let base = 0xfee0_0000u64;
        // QEMU TCG: no x2APIC in CPUID, firmware left xAPIC on.
        assert_eq!(choose_mode(0, base | APIC_BASE_ENABLE), Mode::XApic);
        assert_eq!(choose_mode(CPUID1_ECX_X2APIC, base | APIC_BASE_ENABLE), Mode::X2Apic);
        // Firmware left x2APIC on (the CPUID bit is set then too, but trust the MSR).
        assert_eq!(choose_mode(0, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC), Mode::X2Apic);
        // Bit 10 without bit 11 is an invalid state, not x2APIC.
        assert_eq!(choose_mode(0, base | APIC_BASE_X2APIC), Mode::XApic);
        assert_eq!(apic_base_for(Mode::XApic, base), base | APIC_BASE_ENABLE);
        assert_eq!(apic_base_for(Mode::X2Apic, base | APIC_BASE_ENABLE), base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
    }
}
