//! Enabling, disabling and waiting for interrupts.

use x86_64::instructions::interrupts as raw;

/// Runs `f` with interrupts disabled, restoring the previous state afterwards.
pub fn without<R>(f: impl FnOnce() -> R) -> R {
    raw::without_interrupts(f)
}

/// Enables interrupts.
pub fn enable() {
    raw::enable();
}

/// Disables interrupts.
pub fn disable() {
    raw::disable();
}

/// Whether interrupts are enabled.
pub fn are_enabled() -> bool {
    raw::are_enabled()
}

/// Enables interrupts and halts until the next one arrives, atomically (`sti; hlt`),
/// so a wake-up between the check and the halt is not lost.
pub fn enable_and_wait() {
    raw::enable_and_hlt();
}

/// Halts forever with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        raw::disable();
        x86_64::instructions::hlt();
    }
}
