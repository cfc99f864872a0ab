//! Time: the TSC calibrated against the PIT, the periodic tick, and the CMOS
//! real-time clock read once at boot for wall-clock time.
//!
//! Monotonic time is TSC cycles since the kernel's first instruction, scaled by the
//! measured TSC rate. Wall-clock time is the RTC's reading at calibration plus the
//! monotonic time since.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

use super::{apic, cpu, idt, start};

/// Vector of the periodic local APIC timer.
pub const TIMER_VECTOR: u8 = 0x20;
/// Periodic tick rate.
pub const TICK_HZ: u32 = 100;

const PIT_HZ: u64 = 1_193_182;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);
static RTC_UNIX_AT_CALIBRATION_S: AtomicU64 = AtomicU64::new(0);
static TSC_AT_RTC_READ: AtomicU64 = AtomicU64::new(0);

/// One measurement of the TSC rate over `window_ms` of PIT channel 2 (one-shot, gate on
/// port 0x61): the rate, and whether it can be trusted. Returns `None` if the PIT output
/// never rises (no PIT).
///
/// Under an emulator on a busy host the virtual CPU can be descheduled for a long time
/// while the PIT keeps counting host time; the wait loop then sees the output rise late
/// and the TSC count covers far more than the window (a node once measured its TSC 40
/// times too fast and its clock crawled). So each read of the gate is bracketed by two
/// TSC reads: a measurement is trusted only if the start of the window and the rise of
/// the output were each seen within a small fraction of the window.
fn measure_tsc_hz(window_ms: u64) -> Option<(u64, bool)> {
    let latch = PIT_HZ * window_ms / 1000;
    assert!(latch > 0 && latch <= 0xffff);
    // SAFETY: PIT channel 2 and the port-0x61 gate are fixed legacy hardware used only here.
    unsafe {
        let mut gate = Port::<u8>::new(0x61);
        let mut command = Port::<u8>::new(0x43);
        let mut channel2 = Port::<u8>::new(0x42);
        let g = gate.read();
        gate.write((g & !0x02) | 0x01);
        command.write(0xb0); // channel 2, lobyte/hibyte, mode 0, binary
        channel2.write((latch & 0xff) as u8);
        let before_start = cpu::rdtsc();
        channel2.write((latch >> 8) as u8); // counting starts here
        let start = cpu::rdtsc();
        let mut last_clear = start;
        let mut spins: u64 = 0;
        loop {
            let set = gate.read() & 0x20 != 0;
            let now = cpu::rdtsc();
            if set {
                let total = now.saturating_sub(start).max(1);
                // Uncertainty at each end, as a share of the window: 1/64 (1.6%) at most.
                let start_slack = start.saturating_sub(before_start);
                let end_slack = now.saturating_sub(last_clear);
                let trusted = start_slack.saturating_mul(64) < total && end_slack.saturating_mul(64) < total;
                return Some((total * 1000 / window_ms, trusted));
            }
            last_clear = now;
            spins += 1;
            if spins > 500_000_000 {
                return None;
            }
        }
    }
}

/// Calibrates the TSC and reads the RTC. Returns the TSC rate in Hz.
pub fn init() -> u64 {
    // The lowest trusted measurement (emulators delay the loop, never speed it up); up to
    // 40 tries of 10 ms for three trusted ones, else the lowest of all.
    let (mut trusted, mut any): (Option<u64>, Option<u64>) = (None, None);
    let mut trusted_runs = 0;
    for _ in 0..40 {
        let Some((hz, ok)) = measure_tsc_hz(10) else { break };
        any = Some(any.map_or(hz, |b: u64| b.min(hz)));
        if ok {
            trusted = Some(trusted.map_or(hz, |b: u64| b.min(hz)));
            trusted_runs += 1;
            if trusted_runs == 3 {
                break;
            }
        }
    }
    if trusted.is_none() && any.is_some() {
        log::warn!("TSC calibration: no undisturbed PIT window in 40 tries; the clock may run slow");
    }
    let hz = match trusted.or(any) {
        Some(hz) if hz > 1_000_000 => hz,
        _ => {
            log::warn!("PIT calibration failed; assuming a 2 GHz TSC");
            2_000_000_000
        }
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    let unix_s = read_rtc_unix_s();
    TSC_AT_RTC_READ.store(cpu::rdtsc(), Ordering::Relaxed);
    RTC_UNIX_AT_CALIBRATION_S.store(unix_s, Ordering::Relaxed);
    hz
}

/// Starts the periodic tick on the local APIC timer.
pub fn start_tick() -> u64 {
    let apic_hz = apic::calibrate_timer(TSC_HZ.load(Ordering::Relaxed));
    idt::register(TIMER_VECTOR, on_tick);
    apic::start_periodic_timer(TIMER_VECTOR, TICK_HZ);
    apic_hz
}

pub fn on_tick(_vector: u8) {
    let ticks = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
    if ticks % u64::from(TICK_HZ) == 0 {
        crate::executor::watchdog_check();
    }
}

/// Timer interrupts taken since the tick started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}


fn cycles_to_ns(cycles: u64) -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    (u128::from(cycles) * 1_000_000_000 / u128::from(hz)) as u64
}

/// Nanoseconds since the kernel's first instruction (0 before calibration).
pub fn since_boot_ns() -> u64 {
    cycles_to_ns(cpu::rdtsc().saturating_sub(start::boot_tsc()))
}

/// Microseconds since the kernel's first instruction (0 before calibration).
pub fn since_boot_us() -> u64 {
    since_boot_ns() / 1000
}

/// Wall-clock time as (seconds, nanoseconds) since the Unix epoch.
pub fn unix_time() -> (u64, u32) {
    let base_s = RTC_UNIX_AT_CALIBRATION_S.load(Ordering::Relaxed);
    let since_ns = cycles_to_ns(cpu::rdtsc().saturating_sub(TSC_AT_RTC_READ.load(Ordering::Relaxed)));
    (base_s + since_ns / 1_000_000_000, (since_ns % 1_000_000_000) as u32)
}

/// Sleeps for at least `us` microseconds, halting between timer interrupts.
pub fn sleep_us(us: u64) {
    let deadline = since_boot_ns().saturating_add(us.saturating_mul(1000));
    while since_boot_ns() < deadline {
        if super::interrupts::are_enabled() {
            super::interrupts::enable_and_wait();
        } else {
            core::hint::spin_loop();
        }
    }
}

fn cmos_read(reg: u8) -> u8 {
    // SAFETY: CMOS index/data ports; bit 7 of the index keeps NMIs disabled during the read.
    unsafe {
        Port::<u8>::new(0x70).write(0x80 | reg);
        Port::<u8>::new(0x71).read()
    }
}

/// Reads the CMOS RTC (UTC assumed) as Unix seconds.
fn read_rtc_unix_s() -> u64 {
    // Wait for no update in progress, then read twice until two reads agree.
    let read = || {
        let mut spins = 0;
        while cmos_read(0x0a) & 0x80 != 0 && spins < 1_000_000 {
            spins += 1;
        }
        [cmos_read(0x00), cmos_read(0x02), cmos_read(0x04), cmos_read(0x07), cmos_read(0x08), cmos_read(0x09), cmos_read(0x32)]
    };
    let mut r = read();
    for _ in 0..5 {
        let again = read();
        if again == r {
            break;
        }
        r = again;
    }
    let status_b = cmos_read(0x0b);
    let bcd = status_b & 0x04 == 0;
    let conv = |v: u8| if bcd { (v & 0x0f) + (v >> 4) * 10 } else { v };
    let second = u64::from(conv(r[0]));
    let minute = u64::from(conv(r[1]));
    let hour_raw = r[2];
    let mut hour = u64::from(conv(hour_raw & 0x7f));
    if status_b & 0x02 == 0 && hour_raw & 0x80 != 0 {
        hour = (hour % 12) + 12; // 12-hour mode, PM
    }
    let day = u64::from(conv(r[3]));
    let month = u64::from(conv(r[4]));
    let century = match conv(r[6]) {
        c @ 19..=30 => u64::from(c),
        _ => 20,
    };
    let year = century * 100 + u64::from(conv(r[5]));
    days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let month = month.clamp(1, 12);
    let day = day.clamp(1, 31);
    let y = if month <= 2 { year - 1 } else { year } as i64;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 719_468).max(0) as u64
}
