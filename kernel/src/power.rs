//! Leaving the kernel: QEMU's `isa-debug-exit` device in test mode, halting otherwise.

use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::instructions::port::Port;

/// Value written for success; QEMU exits with `(value << 1) | 1` = 33.
pub const EXIT_SUCCESS_VALUE: u32 = 0x10;
/// Value written for failure; QEMU exits with 35.
pub const EXIT_FAILURE_VALUE: u32 = 0x11;

static TEST_MODE: AtomicBool = AtomicBool::new(false);

/// Marks this boot as a test run: fatal errors exit QEMU with a failure code.
pub fn set_test_mode() {
    TEST_MODE.store(true, Ordering::Relaxed);
}

/// Whether this boot is a test run.
pub fn test_mode() -> bool {
    TEST_MODE.load(Ordering::Relaxed)
}

/// Exits QEMU through `isa-debug-exit` (port 0xf4). On machines without that
/// device the write does nothing and the CPU halts.
pub fn exit_qemu(value: u32) -> ! {
    crate::kprintln!("gridos exit {}", if value == EXIT_SUCCESS_VALUE { "success" } else { "failure" });
    // SAFETY: port 0xf4 is QEMU's debug-exit device when present; elsewhere an unused port.
    unsafe { Port::<u32>::new(0xf4).write(value) };
    crate::arch::x86_64::interrupts::halt_forever()
}

/// Ends the boot after an unrecoverable error.
pub fn fatal(reason: &str) -> ! {
    if test_mode() {
        crate::kprintln!("gridos fatal: {reason}; exiting (test mode)");
        exit_qemu(EXIT_FAILURE_VALUE)
    }
    crate::kprintln!("gridos fatal: {reason}; node halted");
    crate::arch::x86_64::interrupts::halt_forever()
}
