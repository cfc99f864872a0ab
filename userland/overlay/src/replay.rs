//! The anti-replay sliding window over 64-bit message counters (as in WireGuard / RFC 6479).
//!
//! A counter is accepted once, if it is newer than everything seen or within `WINDOW_BITS`
//! of the newest and not yet seen. The window is only updated for messages that already
//! passed authentication, so forged packets cannot move it.

/// Width of the window in counters.
pub const WINDOW_BITS: u64 = 2048;
const WORDS: usize = (WINDOW_BITS / 64) as usize;
const _: () = assert!(WINDOW_BITS.is_multiple_of(64) && WORDS * 64 == WINDOW_BITS as usize);

/// Seen-counter bitmap; bit `c % WINDOW_BITS` is counter `c` for the last `WINDOW_BITS` counters.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// One past the highest accepted counter (0 = nothing accepted yet).
    top: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { top: 0, bits: [0; WORDS] }
    }
}

impl ReplayWindow {
    /// A window that has accepted nothing.
    pub fn new() -> ReplayWindow {
        ReplayWindow::default()
    }

    fn bit(counter: u64) -> (usize, u64) {
        let slot = counter % WINDOW_BITS;
        ((slot / 64) as usize, 1u64 << (slot % 64))
    }

    /// Would `counter` be accepted (without recording it)?
    pub fn check(&self, counter: u64) -> bool {
        if counter == u64::MAX {
            return false;
        }
        if counter >= self.top {
            return true;
        }
        if self.top - counter > WINDOW_BITS {
            return false;
        }
        let (word, mask) = Self::bit(counter);
        self.bits[word] & mask == 0
    }

    /// Records `counter` if acceptable; returns whether it was.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.top {
            let advance = counter - self.top + 1;
            if advance >= WINDOW_BITS {
                self.bits = [0; WORDS];
            } else {
                // Bounded by WINDOW_BITS iterations; clear the slots the window slides over.
                for c in self.top..=counter {
                    let (word, mask) = Self::bit(c);
                    self.bits[word] &= !mask;
                }
            }
            self.top = counter + 1;
        }
        let (word, mask) = Self::bit(counter);
        self.bits[word] |= mask;
        debug_assert!(!self.check(counter));
        true
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn accepts_each_counter_once_in_any_order_within_window() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(w.accept(1));
        assert!(w.accept(5000));
        assert!(!w.accept(5000 - WINDOW_BITS - 1), "too old");
        assert!(w.accept(5000 - WINDOW_BITS + 1), "inside the window and unseen");
        assert!(!w.accept(5000 - WINDOW_BITS + 1));
        assert!(!w.accept(u64::MAX));
    }

    #[test]
    fn sliding_clears_reused_slots() {
        let mut w = ReplayWindow::new();
        for c in 0..10_000u64 {
            assert!(w.accept(c));
        }
        for c in 10_000 - WINDOW_BITS..10_000 {
            assert!(!w.check(c));
        }
        assert!(w.accept(10_000 + WINDOW_BITS / 2));
        assert!(w.accept(10_000), "slot reused after slide must read as unseen");
    }
}
