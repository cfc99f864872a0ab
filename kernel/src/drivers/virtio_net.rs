//! virtio-net NICs as smoltcp `Device`s.
//!
//! Receive buffers are recycled to the device as soon as smoltcp has consumed
//! them; the device's interrupt signals the NIC's [`Event`] so the network task
//! polls only when there is work.

use core::marker::PhantomData;

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::pci::PciTransport;

use super::virtio::{Found, KernelHal};
use crate::executor::Event;

const QUEUE_SIZE: usize = 64;
const BUFFER_BYTES: usize = 2048;
/// Ethernet MTU (payload) the interface uses.
pub const MTU_BYTES: usize = 1500;

type Net = VirtIONet<KernelHal, PciTransport, QUEUE_SIZE>;

/// One virtio-net NIC.
pub struct VirtioNic {
    device: Net,
    pub event: &'static Event,
    /// Frames dropped because the device refused them.
    pub tx_errors: u64,
    /// When set, only frames the overlay's underlay filter accepts (for this
    /// overlay UDP port) reach the stack.
    pub ingress_filter_port: Option<u16>,
    /// Frames the ingress filter dropped.
    pub rx_filtered: u64,
}

impl VirtioNic {
    pub fn new(found: Found) -> Result<VirtioNic, virtio_drivers::Error> {
        let mut device = Net::new(found.transport, BUFFER_BYTES)?;
        device.enable_interrupts();
        Ok(VirtioNic { device, event: found.event, tx_errors: 0, ingress_filter_port: None, rx_filtered: 0 })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.device.mac_address()
    }
}

/// Receive token. Holds a raw pointer because smoltcp consumes the transmit token
/// for a reply *inside* the receive closure: both tokens point at the same device.
pub struct NicRxToken<'a> {
    device: *mut Net,
    buffer: RxBuffer,
    _nic: PhantomData<&'a mut Net>,
}

/// Transmit token; see [`NicRxToken`] for why it holds raw pointers.
pub struct NicTxToken<'a> {
    device: *mut Net,
    tx_errors: *mut u64,
    _nic: PhantomData<&'a mut Net>,
}

impl RxToken for NicRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(self.buffer.packet());
        // SAFETY: the device outlives the token ('a); the transmit token's use of it
        // (inside `f`) has ended, so this is the only access now.
        if let Err(e) = unsafe { &mut *self.device }.recycle_rx_buffer(self.buffer) {
            log::warn!("virtio-net: could not recycle a receive buffer: {e}");
        }
        result
    }
}

impl TxToken for NicTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // SAFETY: the device outlives the token ('a) and the receive token does not
        // touch it while this one is in use (it only recycles its buffer afterwards).
        let device = unsafe { &mut *self.device };
        let mut tx = device.new_tx_buffer(len);
        let result = f(tx.packet_mut());
        if device.send(tx).is_err() {
            // SAFETY: points at the NIC's counter, alive for 'a, used by one token at a time.
            unsafe { *self.tx_errors += 1 };
        }
        result
    }
}

impl Device for VirtioNic {
    type RxToken<'a> = NicRxToken<'a>;
    type TxToken<'a> = NicTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.device.can_send() {
            return None;
        }
        let mut buffer = self.device.receive().ok()?;
        if let Some(port) = self.ingress_filter_port {
            // Drop what the underlay must not answer, a bounded number per call.
            let mut dropped = 0;
            while !overlay::filter::underlay_accepts(buffer.packet(), port) {
                self.rx_filtered += 1;
                if let Err(e) = self.device.recycle_rx_buffer(buffer) {
                    log::warn!("virtio-net: could not recycle a receive buffer: {e}");
                }
                dropped += 1;
                if dropped == QUEUE_SIZE {
                    return None;
                }
                buffer = self.device.receive().ok()?;
            }
        }
        let device: *mut Net = &mut self.device;
        Some((
            NicRxToken { device, buffer, _nic: PhantomData },
            NicTxToken { device, tx_errors: &mut self.tx_errors, _nic: PhantomData },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if !self.device.can_send() {
            return None;
        }
        Some(NicTxToken { device: &mut self.device, tx_errors: &mut self.tx_errors, _nic: PhantomData })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU_BYTES + 14;
        caps.max_burst_size = Some(QUEUE_SIZE / 2);
        caps
    }
}
