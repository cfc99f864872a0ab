//! The overlay interface's smoltcp device: IPv6 packets in and out of queues that
//! the overlay task fills and drains (medium IP, no link layer).

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

/// Overlay MTU: the most that fits a 1500-byte underlay without fragmentation once
/// encapsulated for a relay (`overlay::wire::ENCAPSULATION_MAX_BYTES`: IPv6 and UDP
/// headers, link and end-to-end transport headers and tags, routed header); 6% fewer
/// packets per byte than the IPv6 minimum (1280) it was.
pub const MTU_BYTES: usize = overlay::wire::OVERLAY_MTU_BYTES;
/// Most packets queued in each direction; more are dropped (as a link would).
const QUEUE_PACKETS_MAX: usize = 512;

/// Queues between smoltcp and the overlay task.
pub struct OverlayDevice {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl OverlayDevice {
    pub fn new() -> OverlayDevice {
        OverlayDevice { incoming: VecDeque::new(), outgoing: VecDeque::new() }
    }

    /// Queues a packet for the local stack; drops it when the queue is full.
    pub fn push_incoming(&mut self, packet: Vec<u8>) {
        if self.incoming.len() < QUEUE_PACKETS_MAX {
            self.incoming.push_back(packet);
        }
    }

    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// "incoming N outgoing M", for diagnostics.
    pub fn queue_lengths(&self) -> alloc::string::String {
        alloc::format!("incoming {} outgoing {}", self.incoming.len(), self.outgoing.len())
    }

    pub fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        self.outgoing.drain(..).collect()
    }
}

pub struct OverlayRxToken(Vec<u8>);

pub struct OverlayTxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for OverlayRxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for OverlayTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0u8; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

impl Device for OverlayDevice {
    type RxToken<'a> = OverlayRxToken;
    type TxToken<'a> = OverlayTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if self.outgoing.len() >= QUEUE_PACKETS_MAX {
            return None;
        }
        let packet = self.incoming.pop_front()?;
        Some((OverlayRxToken(packet), OverlayTxToken(&mut self.outgoing)))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        (self.outgoing.len() < QUEUE_PACKETS_MAX).then(|| OverlayTxToken(&mut self.outgoing))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU_BYTES;
        caps
    }
}
