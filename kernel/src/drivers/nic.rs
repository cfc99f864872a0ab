//! The NICs the network stack drives, behind one type: virtio-net (`virtio_net`)
//! and the Intel e1000 family (`e1000`). Each is a smoltcp `Device`; [`on_device!`]
//! runs code on the inner device, so the stack stays generic over the kind. Health
//! (link, failures) is reported through [`NicDevice::service`].
//!
//! Further Intel NICs would fit as more variants, each its own driver module with
//! the same shape (rings in frame-allocator DMA memory, `service` for health):
//! igb (82576/I350/I210; QEMU `-device igb`) keeps e1000e's register names but has
//! per-queue rings (RDBAL(n)...), advanced descriptors (SRRCTL), queue enables
//! (RXDCTL/TXDCTL.ENABLE) and EICR/EIMS-style MSI-X; ixgbe (82599/X5x0) has its own
//! register map, SFP+/PHY link handling and wants one queue pair and MSI-X vector
//! per CPU with RSS and offloads to reach 10 Gb/s; i40e (X710) is driven through a
//! firmware admin queue (link, MAC, VSIs) and HMC queue contexts, a much larger
//! driver. Past three or four kinds this enum becomes a trait object.

use super::e1000::{E1000Nic, NicNews};
use super::virtio_net::VirtioNic;
use crate::executor::Event;
use crate::inventory::Link;

/// A NIC's traffic counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct NicCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
}

/// One NIC of any supported kind.
pub enum NicDevice {
    Virtio(VirtioNic),
    Intel(E1000Nic),
}

/// Runs `$body` with `$d` bound to the inner device (`&mut` or `&` as `$nic` is).
macro_rules! on_device {
    ($nic:expr, $d:ident => $body:expr) => {
        match $nic {
            $crate::drivers::nic::NicDevice::Virtio($d) => $body,
            $crate::drivers::nic::NicDevice::Intel($d) => $body,
        }
    };
}
pub(crate) use on_device;

impl NicDevice {
    pub fn mac(&self) -> [u8; 6] {
        on_device!(self, d => d.mac())
    }

    /// The model, for the inventory.
    pub fn model(&self) -> &'static str {
        match self {
            NicDevice::Virtio(_) => "virtio-net",
            NicDevice::Intel(d) => d.model.name(),
        }
    }

    pub fn link(&self) -> Link {
        match self {
            NicDevice::Virtio(_) => Link::NotReported,
            NicDevice::Intel(d) => d.link(),
        }
    }

    /// Whether a received frame may be waiting: an interrupt may also mean only that sent
    /// frames completed, which the next transmit reclaims anyway. True unless the driver
    /// can tell.
    pub fn rx_pending(&self) -> bool {
        match self {
            NicDevice::Virtio(d) => d.rx_pending(),
            NicDevice::Intel(_) => true,
        }
    }

    /// Signalled when the NIC interrupts.
    pub fn event(&self) -> &'static Event {
        on_device!(self, d => d.event)
    }

    pub fn counters(&self) -> NicCounters {
        on_device!(self, d => d.counters)
    }

    pub fn tx_errors(&self) -> u64 {
        on_device!(self, d => d.tx_errors)
    }

    pub fn rx_filtered(&self) -> u64 {
        on_device!(self, d => d.rx_filtered)
    }

    pub fn set_ingress_filter(&mut self, port: Option<u16>) {
        on_device!(self, d => d.ingress_filter_port = port)
    }

    /// Tells the device about what the last poll queued (virtio-net batches its
    /// notifications; e1000 writes its tail per frame). With `idle` false, a few frames
    /// may be left for a later flush: returns by when it must come (ns), if so.
    pub fn flush(&mut self, idle: bool) -> Option<u64> {
        match self {
            NicDevice::Virtio(d) => d.flush(idle),
            NicDevice::Intel(_) => None,
        }
    }

    /// Notifications sent to the device (virtio kicks; none for e1000): (receive queue,
    /// transmit queue).
    pub fn kicks(&self) -> (u64, u64) {
        match self {
            NicDevice::Virtio(d) => d.kicks(),
            NicDevice::Intel(_) => (0, 0),
        }
    }

    /// Whether no interrupt reaches this NIC (the stack then polls it on a timer).
    pub fn polled(&self) -> bool {
        match self {
            NicDevice::Virtio(_) => false,
            NicDevice::Intel(d) => d.polled(),
        }
    }

    /// Interrupt acknowledgement and health checks before a poll; what changed.
    pub fn service(&mut self, now_ns: u64) -> Option<NicNews> {
        match self {
            NicDevice::Virtio(_) => None,
            NicDevice::Intel(d) => d.service(now_ns),
        }
    }

    /// Driver-specific counters for diagnostics.
    pub fn diagnostics(&self) -> alloc::string::String {
        match self {
            NicDevice::Virtio(_) => alloc::string::String::new(),
            NicDevice::Intel(d) => alloc::format!(
                " rx_errors {} rx_overruns {} interrupts {}{}",
                d.rx_errors,
                d.rx_overruns,
                d.interrupts,
                d.failure().map(|f| alloc::format!(" OUT OF SERVICE: {f}")).unwrap_or_default()
            ),
        }
    }
}
