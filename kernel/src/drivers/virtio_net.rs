//! virtio-net NICs as smoltcp `Device`s, over virtio-drivers' non-blocking queues.
//!
//! Receive buffers go back to the device as soon as smoltcp has consumed them.
//! Transmission does not wait for the device: frames are queued, and their buffers
//! are reclaimed from the used ring later, so a burst of segments costs one pass
//! through the queue rather than one device round trip per frame. The device's
//! interrupt (MSI-X entry 0 where offered, see `virtio::move_to_msix`, else the
//! shared INTx line) signals the NIC's [`Event`] so the network task polls only
//! when there is work. The device hears of new frames and receive buffers once per
//! poll ([`VirtioNic::flush`], see `virtio_kick`), not once per frame.

use alloc::vec;
use alloc::vec::Vec;
use core::marker::PhantomData;

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::PciTransport;

use super::virtio::{Found, KernelHal};
use super::virtio_kick::{self, KickTransport, Kicker};
use crate::executor::Event;
use crate::net::timing;

const QUEUE_SIZE: usize = 64;
const BUFFER_BYTES: usize = 2048;
/// Consumed receive buffers are given back to the device this many at a time.
const RX_REFILL_BATCH: usize = QUEUE_SIZE / 2;
/// Frames a poll queues before it kicks the device itself; fewer wait for the idle
/// flush (see [`VirtioNic::flush`]).
const TX_KICK_BATCH: u16 = 8;
/// Longest a deferred kick waits for the CPU to go idle (a busy CPU may never be).
pub const KICK_DEFER_MAX_NS: u64 = 1_000_000;
/// virtio-net's queues (virtio 1.2, 5.1.2).
const QUEUE_RECEIVE: u16 = 0;
const QUEUE_TRANSMIT: u16 = 1;
/// Ethernet MTU (payload) the interface uses.
pub const MTU_BYTES: usize = 1500;

type Net = VirtIONetRaw<KernelHal, KickTransport<PciTransport>, QUEUE_SIZE>;

/// One virtio-net NIC. NICs live as long as the kernel: the device keeps DMA
/// access to the buffers below.
pub struct VirtioNic {
    device: Net,
    /// Sends the kicks the device's queues held back, after each poll.
    kicker: Kicker<PciTransport>,
    /// Receive buffers the device holds, by token.
    rx_posted: Vec<Option<Vec<u8>>>,
    /// Receive buffers consumed and not given back yet (see [`Self::flush`]).
    rx_returned: Vec<Vec<u8>>,
    /// Entries taken off each queue's used ring (modulo 2^16), for `used_event`.
    rx_used: u16,
    tx_used: u16,
    /// When the oldest frame whose kick was deferred was queued (see [`Self::flush`]).
    tx_deferred_ns: Option<u64>,
    /// Frames the device has not finished sending: (buffer, length), by token.
    tx_in_flight: Vec<Option<(Vec<u8>, usize)>>,
    tx_free: Vec<Vec<u8>>,
    pub event: &'static Event,
    /// Frames dropped because the device refused them.
    pub tx_errors: u64,
    /// When set, only frames the overlay's underlay filter accepts (for this
    /// overlay UDP port) reach the stack.
    pub ingress_filter_port: Option<u16>,
    /// Frames the ingress filter dropped.
    pub rx_filtered: u64,
    /// Frames (and their bytes, without the virtio header) handed to the stack and
    /// queued to the device, for `/metrics`.
    pub counters: NicCounters,
}

pub use super::nic::NicCounters;

impl VirtioNic {
    pub fn new(found: Found) -> Result<VirtioNic, virtio_drivers::Error> {
        let (transport, kicker) = virtio_kick::wrap(found.transport);
        let mut device = Net::new(transport)?;
        let mut rx_posted: Vec<Option<Vec<u8>>> = (0..QUEUE_SIZE).map(|_| None).collect();
        for _ in 0..QUEUE_SIZE {
            let mut buf = vec![0u8; BUFFER_BYTES];
            // SAFETY: the buffer's heap memory stays in `rx_posted` (moving the Vec
            // does not move it) until `receive_complete` hands it back.
            let token = unsafe { device.receive_begin(&mut buf)? };
            match rx_posted.get_mut(usize::from(token)) {
                Some(slot) => *slot = Some(buf),
                None => return Err(virtio_drivers::Error::WrongToken),
            }
        }
        device.enable_interrupts();
        kicker.flush(QUEUE_RECEIVE);
        Ok(VirtioNic {
            device,
            kicker,
            rx_posted,
            rx_returned: Vec::with_capacity(QUEUE_SIZE),
            rx_used: 0,
            tx_used: 0,
            tx_deferred_ns: None,
            tx_in_flight: (0..QUEUE_SIZE).map(|_| None).collect(),
            tx_free: Vec::new(),
            event: found.event,
            tx_errors: 0,
            ingress_filter_port: None,
            rx_filtered: 0,
            counters: NicCounters::default(),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.device.mac_address()
    }

    /// Tells the device about the receive buffers and frames queued since the last
    /// flush, if it asked to hear (one kick per queue at most). Call after every poll
    /// with `idle` false, and when the CPU has nothing else to do with `idle` true.
    ///
    /// A kick traps to QEMU and waits for its global lock, which its I/O thread holds
    /// while it moves frames: 50-1000 us under TCG on a loaded host, more than sealing a
    /// packet. So a poll that queued only a few frames (acknowledgements, mostly) leaves
    /// them for the idle flush, when the wait costs nothing, or for the next poll's burst,
    /// for at most [`KICK_DEFER_MAX_NS`]; returns when they must go at the latest.
    pub fn flush(&mut self, idle: bool) -> Option<u64> {
        let start_ns = crate::executor::now_ns();
        // Receive buffers go back once half the ring is out (the device still holds the
        // other half), or when idle: giving them back after every poll made the device
        // ask for a kick on most polls.
        if idle || self.rx_returned.len() >= RX_REFILL_BATCH {
            self.refill_rx();
        }
        let mut kicks = u64::from(self.kicker.flush(QUEUE_RECEIVE));
        let added = self.kicker.added(QUEUE_TRANSMIT);
        let overdue = self.tx_deferred_ns.is_some_and(|at| start_ns.saturating_sub(at) >= KICK_DEFER_MAX_NS);
        let deferred = !idle && !overdue && added > 0 && added < TX_KICK_BATCH;
        if deferred {
            self.tx_deferred_ns.get_or_insert(start_ns);
        } else {
            kicks += u64::from(self.kicker.flush(QUEUE_TRANSMIT));
            self.tx_deferred_ns = None;
        }
        // Sent frames are taken back at the next transmit: their completions need no
        // interrupt, and each interrupt waits on QEMU's lock like a kick.
        self.kicker.set_used_event(QUEUE_TRANSMIT, self.tx_used, false);
        let stage = if idle { timing::Stage::NicKickIdle } else { timing::Stage::NicKick };
        timing::add(stage, crate::executor::now_ns().saturating_sub(start_ns), kicks);
        self.tx_deferred_ns.map(|at| at + KICK_DEFER_MAX_NS)
    }

    /// Kicks sent to the device so far: (receive queue, transmit queue).
    pub fn kicks(&self) -> (u64, u64) {
        let [rx, tx] = self.kicker.kicks();
        (rx, tx)
    }

    /// Whether the device has handed back a received frame not taken yet.
    pub fn rx_pending(&self) -> bool {
        self.device.poll_receive().is_some()
    }

    /// Takes back the buffers of frames the device has sent.
    fn reclaim_tx(&mut self) {
        while let Some(token) = self.device.poll_transmit() {
            let Some(slot) = self.tx_in_flight.get_mut(usize::from(token)) else {
                log::warn!("virtio-net: completion for unknown transmit token {token}");
                return;
            };
            let Some((buf, len)) = slot.take() else {
                log::warn!("virtio-net: completion for idle transmit token {token}");
                return;
            };
            // SAFETY: the same buffer and length that `transmit_begin` got for `token`.
            if let Err(e) = unsafe { self.device.transmit_complete(token, &buf[..len]) } {
                // Not taken off the used ring: the device may still own the buffer.
                log::warn!("virtio-net: transmit completion failed: {e}");
                *slot = Some((buf, len));
                return;
            }
            self.tx_used = self.tx_used.wrapping_add(1);
            self.tx_free.push(buf);
        }
    }

    /// Takes the next received frame: (buffer, header length, frame length).
    fn take_rx(&mut self) -> Option<(Vec<u8>, usize, usize)> {
        let token = self.device.poll_receive()?;
        let slot = self.rx_posted.get_mut(usize::from(token))?;
        let mut buf = slot.take()?;
        // SAFETY: the same buffer that `receive_begin` got for `token`.
        match unsafe { self.device.receive_complete(token, &mut buf) } {
            Ok((header, len)) if header + len <= buf.len() => {
                self.rx_used = self.rx_used.wrapping_add(1);
                Some((buf, header, len))
            }
            // Taken off the used ring, but not a frame (shorter than its header, or
            // longer than the buffer): the buffer is ours again.
            Ok(_) | Err(virtio_drivers::Error::IoError) => {
                self.rx_used = self.rx_used.wrapping_add(1);
                self.repost_rx(buf);
                None
            }
            // Not taken: the device still owns the buffer.
            Err(_) => {
                *slot = Some(buf);
                None
            }
        }
    }

    /// Keeps a consumed receive buffer for the device; [`Self::flush`] gives buffers back
    /// in batches.
    fn repost_rx(&mut self, buf: Vec<u8>) {
        self.rx_returned.push(buf);
    }

    /// Gives every returned receive buffer back to the device.
    fn refill_rx(&mut self) {
        while let Some(mut buf) = self.rx_returned.pop() {
            // SAFETY: as in `new`: the buffer is kept in `rx_posted` until completed.
            match unsafe { self.device.receive_begin(&mut buf) } {
                Ok(token) => match self.rx_posted.get_mut(usize::from(token)) {
                    Some(slot) => *slot = Some(buf),
                    None => {
                        // The device may write into it: never free it.
                        log::warn!("virtio-net: receive token {token} out of range; buffer leaked");
                        core::mem::forget(buf);
                    }
                },
                Err(e) => log::warn!("virtio-net: could not repost a receive buffer: {e}"),
            }
        }
    }

    /// Queues one frame built by `f` into a buffer of `len` bytes.
    fn send_with<R>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.reclaim_tx();
        let mut buf = self.tx_free.pop().unwrap_or_default();
        let header = self.device.fill_buffer_header(&mut [0u8; 16]).unwrap_or(12);
        if buf.len() < header + len {
            buf.resize(header + len, 0);
        }
        let result = f(&mut buf[header..header + len]);
        if self.device.fill_buffer_header(&mut buf).is_err() || !self.device.can_send() {
            self.tx_errors += 1;
            self.tx_free.push(buf);
            return result;
        }
        let start_ns = crate::executor::now_ns();
        // SAFETY: the buffer is kept in `tx_in_flight` until `transmit_complete`. The
        // device hears of it at the next `flush`.
        let queued = unsafe { self.device.transmit_begin(&buf[..header + len]) };
        timing::add(timing::Stage::NicTransmit, crate::executor::now_ns().saturating_sub(start_ns), 1);
        match queued {
            Ok(token) => match self.tx_in_flight.get_mut(usize::from(token)) {
                Some(slot) => {
                    *slot = Some((buf, header + len));
                    self.counters.tx_frames += 1;
                    self.counters.tx_bytes += len as u64;
                }
                None => self.tx_errors += 1,
            },
            Err(_) => {
                self.tx_errors += 1;
                self.tx_free.push(buf);
            }
        }
        result
    }
}

/// Receive token. Holds a raw pointer because smoltcp consumes the transmit token
/// for a reply *inside* the receive closure: both tokens point at the same NIC.
pub struct NicRxToken<'a> {
    nic: *mut VirtioNic,
    buffer: Vec<u8>,
    header: usize,
    len: usize,
    _nic: PhantomData<&'a mut VirtioNic>,
}

/// Transmit token; see [`NicRxToken`] for why it holds a raw pointer.
pub struct NicTxToken<'a> {
    nic: *mut VirtioNic,
    _nic: PhantomData<&'a mut VirtioNic>,
}

impl RxToken for NicRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // SAFETY: the NIC outlives the token ('a) and nothing else uses it during this
        // update (the transmit token is consumed only inside `f`, below).
        let counters = &mut unsafe { &mut *self.nic }.counters;
        counters.rx_frames += 1;
        counters.rx_bytes += self.len as u64;
        let result = f(&self.buffer[self.header..self.header + self.len]);
        let start_ns = crate::executor::now_ns();
        // SAFETY: the NIC outlives the token ('a); the transmit token's use of it
        // (inside `f`) has ended, so this is the only access now.
        unsafe { &mut *self.nic }.repost_rx(self.buffer);
        timing::add(timing::Stage::NicReceive, crate::executor::now_ns().saturating_sub(start_ns), 0);
        result
    }
}

impl TxToken for NicTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // SAFETY: the NIC outlives the token ('a) and the receive token does not
        // touch it while this one is in use (it only reposts its buffer afterwards).
        unsafe { &mut *self.nic }.send_with(len, f)
    }
}

impl Device for VirtioNic {
    type RxToken<'a> = NicRxToken<'a>;
    type TxToken<'a> = NicTxToken<'a>;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let start_ns = crate::executor::now_ns();
        let received = self.receive_frame();
        timing::add(timing::Stage::NicReceive, crate::executor::now_ns().saturating_sub(start_ns), received.is_some().into());
        let (buffer, header, len) = received?;
        let nic: *mut VirtioNic = self;
        Some((
            NicRxToken { nic, buffer, header, len, _nic: PhantomData },
            NicTxToken { nic, _nic: PhantomData },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        self.reclaim_tx();
        if !self.device.can_send() {
            return None;
        }
        Some(NicTxToken { nic: self, _nic: PhantomData })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU_BYTES + 14;
        caps.max_burst_size = Some(QUEUE_SIZE / 2);
        caps
    }
}

impl VirtioNic {
    /// The next received frame the ingress filter lets through: (buffer, header, length).
    fn receive_frame(&mut self) -> Option<(Vec<u8>, usize, usize)> {
        self.reclaim_tx();
        if !self.device.can_send() {
            return None;
        }
        let (mut buffer, mut header, mut len) = self.take_rx()?;
        if let Some(port) = self.ingress_filter_port {
            // Drop what the underlay must not answer, a bounded number per call.
            let mut dropped = 0;
            while !overlay::filter::underlay_accepts(&buffer[header..header + len], port) {
                self.rx_filtered += 1;
                self.repost_rx(buffer);
                dropped += 1;
                if dropped == QUEUE_SIZE {
                    return None;
                }
                (buffer, header, len) = self.take_rx()?;
            }
        }
        Some((buffer, header, len))
    }
}
