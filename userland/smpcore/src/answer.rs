//! The wait for CPUs to answer an IPI: which CPUs to send it to again, and when to
//! give up on a CPU that does not answer.
//!
//! CPUs are bits of a `u64` (bit i = CPU index i; the kernel brings up at most 64).
//! The caller sends the IPI to `targets`, creates an [`AnswerWait`], and then calls
//! [`AnswerWait::poll`] with the time and the CPUs that have answered until it says
//! [`Step::Done`]. A CPU that has not answered after [`Bounds::resend_ns`] gets the IPI
//! again (a lost or coalesced interrupt is not fatal), every `resend_ns`; after
//! [`Bounds::give_up_ns`] in all, the wait gives up on it ([`Step::GiveUp`], once), unless
//! it is in `keep` (a CPU the node cannot do without, such as the boot CPU): for those
//! it says [`Step::Overdue`] once and waits on, resending.

/// The two time bounds of a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Send again to CPUs that have not answered, this often.
    pub resend_ns: u64,
    /// Give up on CPUs that have not answered after this long in all.
    pub give_up_ns: u64,
}

impl Bounds {
    /// 10 ms between sends, 100 ms in all: a CPU with interrupts enabled answers
    /// within microseconds on hardware and within milliseconds under emulation.
    pub const DEFAULT: Bounds = Bounds { resend_ns: 10_000_000, give_up_ns: 100_000_000 };

    /// `give_up_ms` in all (at least 1 ms), resending every tenth of it (at least
    /// every millisecond, at most every 10 ms).
    pub fn from_give_up_ms(give_up_ms: u64) -> Bounds {
        let give_up_ns = give_up_ms.clamp(1, 60_000) * 1_000_000;
        Bounds { resend_ns: (give_up_ns / 10).clamp(1_000_000, 10_000_000), give_up_ns }
    }
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every target answered (or was given up on).
    Done,
    /// Keep waiting (poll again).
    Wait,
    /// Send the IPI again to these CPUs, then poll again.
    Resend(u64),
    /// These CPUs did not answer within the bound: take them out of service. Given once
    /// per CPU; they no longer count as pending.
    GiveUp(u64),
    /// These CPUs (in `keep`) did not answer within the bound; the wait goes on. Given once.
    Overdue(u64),
}

/// One wait for answers.
#[derive(Debug, Clone)]
pub struct AnswerWait {
    bounds: Bounds,
    start_ns: u64,
    last_send_ns: u64,
    pending: u64,
    keep: u64,
    overdue_said: bool,
}

impl AnswerWait {
    /// The IPI went to `targets` at `now_ns`; CPUs in `keep` are never given up on.
    pub fn new(now_ns: u64, targets: u64, keep: u64, bounds: Bounds) -> AnswerWait {
        AnswerWait { bounds, start_ns: now_ns, last_send_ns: now_ns, pending: targets, keep, overdue_said: false }
    }

    /// The CPUs that have not answered yet.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Nanoseconds since the wait began.
    pub fn elapsed_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.start_ns)
    }

    /// Notes the CPUs in `answered` and says what to do at `now_ns`.
    #[must_use]
    pub fn poll(&mut self, now_ns: u64, answered: u64) -> Step {
        self.pending &= !answered;
        if self.pending == 0 {
            return Step::Done;
        }
        if self.elapsed_ns(now_ns) >= self.bounds.give_up_ns {
            let out = self.pending & !self.keep;
            if out != 0 {
                self.pending &= !out;
                return Step::GiveUp(out);
            }
            if !self.overdue_said {
                self.overdue_said = true;
                return Step::Overdue(self.pending);
            }
        }
        if now_ns.saturating_sub(self.last_send_ns) >= self.bounds.resend_ns {
            self.last_send_ns = now_ns;
            return Step::Resend(self.pending);
        }
        Step::Wait
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Drives a wait with a fake clock stepping `step_ns`, where CPU i answers at
    /// `answer_at[i]` (None: never); returns the steps taken (without Wait) and the end
    /// time. Bounded to `limit` polls.
    fn drive(targets: u64, keep: u64, answer_at: &[Option<u64>], step_ns: u64, limit: usize) -> (Vec<(u64, Step)>, u64) {
        let mut w = AnswerWait::new(0, targets, keep, Bounds::DEFAULT);
        let mut steps = Vec::new();
        let mut now = 0;
        for _ in 0..limit {
            let answered = answer_at
                .iter()
                .enumerate()
                .filter(|(_, at)| at.is_some_and(|t| t <= now))
                .fold(0u64, |m, (i, _)| m | 1 << i);
            match w.poll(now, answered) {
                Step::Done => {
                    steps.push((now, Step::Done));
                    return (steps, now);
                }
                Step::Wait => {}
                s => steps.push((now, s)),
            }
            now += step_ns;
        }
        (steps, now)
    }

    #[test]
    fn quick_answers_finish_without_resending() {
        let (steps, end) = drive(0b1110, 0b1, &[None, Some(0), Some(1000), Some(5 * MS)], 100_000, 10_000);
        assert_eq!(steps, [(end, Step::Done)]);
        assert_eq!(end, 5 * MS);
    }

    #[test]
    fn a_silent_cpu_gets_resends_then_is_given_up_at_the_bound() {
        let (steps, end) = drive(0b1110, 0b1, &[None, Some(0), None, Some(2 * MS)], MS, 10_000);
        let resends: Vec<_> = steps.iter().filter(|(_, s)| matches!(s, Step::Resend(_))).collect();
        // One resend every 10 ms before the 100 ms bound, each to CPU 2 only.
        assert_eq!(resends.len(), 9);
        assert!(resends.iter().all(|(_, s)| *s == Step::Resend(0b100)));
        assert!(steps.contains(&(100 * MS, Step::GiveUp(0b100))));
        assert_eq!(end, 100 * MS + MS);
        assert_eq!(steps.last(), Some(&(end, Step::Done)));
    }

    #[test]
    fn a_late_answer_before_the_bound_is_not_given_up() {
        let (steps, end) = drive(0b10, 0, &[None, Some(99 * MS)], MS, 10_000);
        assert!(!steps.iter().any(|(_, s)| matches!(s, Step::GiveUp(_))));
        assert_eq!(end, 99 * MS);
    }

    #[test]
    fn a_kept_cpu_is_overdue_once_and_waited_for() {
        // CPU 0 (kept) answers only after 300 ms; CPU 1 never does.
        let (steps, end) = drive(0b11, 0b1, &[Some(300 * MS), None], MS, 10_000);
        let give_ups: Vec<_> = steps.iter().filter(|(_, s)| matches!(s, Step::GiveUp(_))).collect();
        let overdue: Vec<_> = steps.iter().filter(|(_, s)| matches!(s, Step::Overdue(_))).collect();
        assert_eq!(give_ups, [&(100 * MS, Step::GiveUp(0b10))]);
        assert_eq!(overdue, [&(101 * MS, Step::Overdue(0b1))]);
        assert_eq!(end, 300 * MS);
        // Resends went on for the kept CPU after the bound.
        assert!(steps.iter().any(|(t, s)| *t > 200 * MS && *s == Step::Resend(0b1)));
    }

    #[test]
    fn no_targets_is_done_at_once_and_clock_jumps_are_safe() {
        let mut w = AnswerWait::new(50, 0, 0, Bounds::DEFAULT);
        assert_eq!(w.poll(50, 0), Step::Done);
        // A clock read earlier than the start (another CPU's clock) waits, never underflows.
        let mut w = AnswerWait::new(1000, 0b10, 0, Bounds::DEFAULT);
        assert_eq!(w.poll(10, 0), Step::Wait);
        // One poll long after: give up first, then done.
        assert_eq!(w.poll(u64::MAX, 0), Step::GiveUp(0b10));
        assert_eq!(w.poll(u64::MAX, 0), Step::Done);
    }

    #[test]
    fn bounds_from_milliseconds() {
        assert_eq!(Bounds::from_give_up_ms(100), Bounds::DEFAULT);
        assert_eq!(Bounds::from_give_up_ms(0), Bounds { resend_ns: MS, give_up_ns: MS });
        assert_eq!(Bounds::from_give_up_ms(1000), Bounds { resend_ns: 10 * MS, give_up_ns: 1000 * MS });
        assert_eq!(Bounds::from_give_up_ms(u64::MAX).give_up_ns, 60_000 * MS);
    }
}
