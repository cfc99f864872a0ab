//! The outbox: datagrams the overlay produced that the underlay could not take yet,
//! bounded node-wide and per destination.
//!
//! A relay receives a burst (a TCP window of someone else's traffic) in one read and
//! forwards it at once; the underlay's per-destination send buffer holds a few dozen
//! datagrams, and dropping the rest cost each relayed connection losses and
//! retransmission timeouts. The outbox keeps them, in order per destination, until the
//! underlay has room. One destination that never drains (a neighbour that stopped
//! answering ARP, a slow link) may hold at most [`Limits::per_destination`] of the
//! node-wide [`Limits::total`], so traffic to every other neighbour keeps flowing.
//! Beyond either bound the newest datagram is dropped, as a full link queue would, and
//! TCP above backs off.
//!
//! Generic over the destination (the kernel uses smoltcp's `IpEndpoint`) and the send
//! function, so it is tested here without a network stack.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// The outbox's bounds, in datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Datagrams waiting, node-wide.
    pub total: usize,
    /// Datagrams waiting for one destination.
    pub per_destination: usize,
}

impl Limits {
    /// The kernel's bounds: 512 datagrams (about 700 KiB at full size, a few TCP windows
    /// of relayed traffic), at most half of them for one destination.
    pub const DEFAULT: Limits = Limits { total: 512, per_destination: 256 };
}

/// Why [`Outbox::push`] dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The outbox holds [`Limits::total`] datagrams.
    Full,
    /// The outbox holds [`Limits::per_destination`] datagrams for this destination.
    DestinationFull,
}

/// What the send function did with one datagram in [`Outbox::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The underlay took it.
    Taken,
    /// No room for this destination now: keep it (and every later one for the same
    /// destination, so their order holds) for the next flush.
    Full,
    /// It can never be sent (no route, no socket): forget it.
    Discard,
}

/// Counters of what the outbox dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Dropped because the outbox was full node-wide.
    pub dropped_full: u64,
    /// Dropped because their destination had its share.
    pub dropped_destination_full: u64,
    /// Discarded by the send function (unreachable).
    pub discarded: u64,
}

/// Datagrams waiting for the underlay, in order per destination.
pub struct Outbox<D> {
    limits: Limits,
    queue: VecDeque<(D, Vec<u8>)>,
    /// Destinations that had no room at the last flush.
    blocked: Vec<D>,
    stats: OutboxStats,
}

impl<D: Copy + PartialEq> Outbox<D> {
    /// An empty outbox with these bounds.
    pub fn new(limits: Limits) -> Self {
        Outbox { limits, queue: VecDeque::new(), blocked: Vec::new(), stats: OutboxStats::default() }
    }

    /// Queues `datagram` for `to`, unless a bound is reached (then it is dropped and
    /// counted).
    pub fn push(&mut self, to: D, datagram: Vec<u8>) -> Result<(), Dropped> {
        if self.queue.len() >= self.limits.total {
            self.stats.dropped_full += 1;
            return Err(Dropped::Full);
        }
        if self.waiting_for(to) >= self.limits.per_destination {
            self.stats.dropped_destination_full += 1;
            return Err(Dropped::DestinationFull);
        }
        self.queue.push_back((to, datagram));
        Ok(())
    }

    /// Hands queued datagrams to `send` in order; those it has no room for stay, and so
    /// does every later one for the same destination.
    pub fn flush(&mut self, mut send: impl FnMut(D, &[u8]) -> Sent) {
        self.blocked.clear();
        let blocked = &mut self.blocked;
        let stats = &mut self.stats;
        self.queue.retain(|(to, datagram)| {
            if blocked.contains(to) {
                return true;
            }
            match send(*to, datagram) {
                Sent::Taken => false,
                Sent::Full => {
                    blocked.push(*to);
                    true
                }
                Sent::Discard => {
                    stats.discarded += 1;
                    false
                }
            }
        });
        if self.queue.capacity() > 2 * self.queue.len().max(16) {
            self.queue.shrink_to_fit();
        }
    }

    /// Whether `to` had no room at the last flush.
    pub fn is_blocked_on(&self, to: D) -> bool {
        self.blocked.contains(&to)
    }

    /// Datagrams waiting for `to`.
    pub fn waiting_for(&self, to: D) -> usize {
        self.queue.iter().filter(|(d, _)| *d == to).count()
    }

    /// Datagrams waiting, node-wide.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// What was dropped so far.
    pub fn stats(&self) -> OutboxStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const LIMITS: Limits = Limits { total: 8, per_destination: 4 };

    #[test]
    fn a_destination_that_never_drains_holds_only_its_share_and_others_keep_flowing() {
        let mut outbox = Outbox::new(LIMITS);
        // Destination 1 is dead: a flood for it fills only its share.
        for i in 0..100u8 {
            let _ = outbox.push(1u32, vec![i]);
            outbox.flush(|to, _| if to == 1 { Sent::Full } else { Sent::Taken });
        }
        assert_eq!(outbox.waiting_for(1), 4);
        assert_eq!(outbox.stats().dropped_destination_full, 96);
        assert!(outbox.is_blocked_on(1));
        // Every other destination still gets through, in order.
        let mut sent = Vec::new();
        for i in 0..50u8 {
            assert_eq!(outbox.push(2 + u32::from(i % 3), vec![i]), Ok(()));
            outbox.flush(|to, d| {
                if to == 1 {
                    Sent::Full
                } else {
                    sent.push(d[0]);
                    Sent::Taken
                }
            });
        }
        assert_eq!(sent, (0..50).collect::<Vec<u8>>());
        assert_eq!(outbox.len(), 4);
    }

    #[test]
    fn many_blocked_destinations_are_bounded_node_wide() {
        let mut outbox = Outbox::new(LIMITS);
        let mut refused = Vec::new();
        for to in 0..10u32 {
            for _ in 0..4 {
                if let Err(e) = outbox.push(to, vec![0; 1400]) {
                    refused.push(e);
                }
            }
        }
        assert_eq!(outbox.len(), 8);
        assert_eq!(refused.len(), 32);
        assert!(refused.iter().all(|e| *e == Dropped::Full));
        assert_eq!(outbox.stats().dropped_full, 32);
    }

    #[test]
    fn order_holds_per_destination_when_its_room_comes_back() {
        let mut outbox = Outbox::new(LIMITS);
        for i in 0..4u8 {
            outbox.push(7u32, vec![i]).unwrap();
            outbox.push(9u32, vec![10 + i]).unwrap();
        }
        // Room for one datagram to 7 per flush; 9 takes everything; 9 is never held
        // back by 7.
        let mut seven = Vec::new();
        let mut nine = Vec::new();
        for _ in 0..4 {
            let mut room = 1;
            outbox.flush(|to, d| {
                if to == 9 {
                    nine.push(d[0]);
                    return Sent::Taken;
                }
                if room == 0 {
                    return Sent::Full;
                }
                room -= 1;
                seven.push(d[0]);
                Sent::Taken
            });
        }
        assert_eq!(seven, vec![0, 1, 2, 3]);
        assert_eq!(nine, vec![10, 11, 12, 13]);
        assert!(outbox.is_empty());
    }

    #[test]
    fn unsendable_datagrams_are_discarded_and_counted() {
        let mut outbox = Outbox::new(LIMITS);
        outbox.push(3u32, vec![1]).unwrap();
        outbox.push(4u32, vec![2]).unwrap();
        outbox.flush(|to, _| if to == 3 { Sent::Discard } else { Sent::Taken });
        assert!(outbox.is_empty());
        assert_eq!(outbox.stats().discarded, 1);
        assert!(!outbox.is_blocked_on(3));
    }
}
