//! Batched queue notifications ("kicks") for virtio devices driven through
//! virtio-drivers.
//!
//! virtio-drivers notifies the device inside each `add` (`VirtIONetRaw::transmit_begin`,
//! `receive_begin`) whenever the device's `avail_event` lies behind the new available
//! index, a looser test than virtio's (2.7.10, `vring_need_event`): once the device has
//! set `avail_event` and is busy, every further buffer kicks it again. Each kick is a
//! write to the notify region, which traps to QEMU: under TCG it takes QEMU's global lock,
//! which the I/O thread holds while it moves frames, so a kick per frame cost 55-145 us
//! while the overlay kept the vCPU busy (`net::timing`, "virtio queue+notify").
//!
//! [`KickTransport`] wraps the real transport and swallows the crate's kicks; the driver
//! calls [`Kicker::flush`] once its burst is queued (after each poll of the NIC). The
//! flush kicks a queue only when virtio's own test says the device asked for it: the
//! available index moved past `avail_event` since the last kick (with `VIRTIO_F_EVENT_IDX`),
//! or the device did not set `VRING_USED_F_NO_NOTIFY` (without it). That is the test
//! Linux's `virtqueue_kick_prepare` applies, once per batch.
//!
//! What this leaves to others: the rings themselves stay virtio-drivers' (`VirtQueue`);
//! this module only reads the available index and the device's suppression fields,
//! whose addresses it learns from `Transport::queue_set`.

use alloc::sync::Arc;
use core::sync::atomic::{fence, AtomicU16, Ordering};

use spin::Mutex;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::PhysAddr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Most queues whose kicks are batched (virtio-net uses 0 and 1; higher queues kick at once).
const QUEUES_MAX: usize = 2;
/// `VIRTIO_F_RING_EVENT_IDX` (virtio 1.2, 6).
const FEATURE_EVENT_IDX: u64 = 1 << 29;
/// `VRING_USED_F_NO_NOTIFY` (virtio 1.2, 2.7.10).
const USED_F_NO_NOTIFY: u16 = 1;

/// One queue's rings, as `queue_set` told them, and its index at the last kick.
#[derive(Clone, Copy, Default)]
struct Rings {
    /// Identity-mapped addresses of the available (driver) and used (device) rings; 0
    /// while the queue is not set up.
    driver_area: u64,
    device_area: u64,
    size: u16,
    /// The available index the device was last kicked at.
    kicked_idx: u16,
}

impl Rings {
    /// Reads a `u16` ring field at `offset_bytes` into the area at `area`.
    ///
    /// # Safety
    /// `area` is a live ring area of this queue (set by `queue_set`, not unset since) and
    /// `offset_bytes` lies within it and is 2-aligned.
    unsafe fn load(area: u64, offset_bytes: u64) -> u16 {
        // SAFETY: the caller's promise: a live, aligned ring field, shared with the device,
        // hence the atomic access.
        unsafe { AtomicU16::from_ptr((area + offset_bytes) as usize as *mut u16) }.load(Ordering::Acquire)
    }

    /// Whether the device wants a kick for what was added since the last one.
    fn needs_kick(&self, event_idx: bool) -> Option<u16> {
        if self.driver_area == 0 || self.device_area == 0 {
            return None;
        }
        // Make the new available index visible before reading the device's suppression
        // fields (virtio 1.2, 2.7.13.4: the driver's barrier before it checks).
        fence(Ordering::SeqCst);
        // SAFETY: the areas are set (checked above) and live until `queue_unset` clears
        // them; `idx` is at offset 2 of the available ring, `flags` at 0 of the used ring,
        // `avail_event` right after the used ring's `size` 8-byte elements (2.7.6, 2.7.8).
        let (new, flags, avail_event) = unsafe {
            (
                Self::load(self.driver_area, 2),
                Self::load(self.device_area, 0),
                Self::load(self.device_area, 4 + 8 * u64::from(self.size)),
            )
        };
        if new == self.kicked_idx {
            return None;
        }
        let wanted = if event_idx {
            need_event(avail_event, new, self.kicked_idx)
        } else {
            flags & USED_F_NO_NOTIFY == 0
        };
        Some(new).filter(|_| wanted)
    }
}

/// virtio's `vring_need_event` (2.7.10): whether moving the index from `old` to `new`
/// crossed `event` (all arithmetic modulo 2^16).
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

struct Shared<T> {
    transport: T,
    rings: [Rings; QUEUES_MAX],
    event_idx: bool,
    /// Kicks sent per queue, for the breakdown.
    kicks: [u64; QUEUES_MAX],
}

/// The real transport behind a lock shared by [`KickTransport`] (owned by the driver)
/// and [`Kicker`] (kept by its owner to flush). Both live in the network task.
pub struct KickTransport<T>(Arc<Mutex<Shared<T>>>);

/// Flushes the kicks a [`KickTransport`] held back.
pub struct Kicker<T>(Arc<Mutex<Shared<T>>>);

/// Wraps `transport`; the device must be driven through the returned transport.
pub fn wrap<T: Transport>(transport: T) -> (KickTransport<T>, Kicker<T>) {
    let shared = Arc::new(Mutex::new(Shared { transport, rings: [Rings::default(); QUEUES_MAX], event_idx: false, kicks: [0; QUEUES_MAX] }));
    (KickTransport(shared.clone()), Kicker(shared))
}

impl<T: Transport> Kicker<T> {
    /// Kicks `queue` if the device asked to hear about what was added to it since the
    /// last flush of it; returns whether it kicked.
    pub fn flush(&self, queue: u16) -> bool {
        let mut shared = self.0.lock();
        let event_idx = shared.event_idx;
        let Some(rings) = shared.rings.get(usize::from(queue)).copied() else { return false };
        let kick = rings.needs_kick(event_idx);
        if let Some(new) = kick {
            shared.transport.notify(queue);
            shared.kicks[usize::from(queue)] += 1;
            shared.rings[usize::from(queue)].kicked_idx = new;
        } else if rings.driver_area != 0 {
            // Not needed (or nothing new): the device reads the ring on its own. The next
            // test counts from here, as `vring_need_event` counts from the last check.
            // SAFETY: as in `needs_kick`: a live area (checked), `idx` at offset 2.
            shared.rings[usize::from(queue)].kicked_idx = unsafe { Rings::load(rings.driver_area, 2) };
        }
        kick.is_some()
    }

    /// Buffers added to `queue` since its last flush.
    pub fn added(&self, queue: u16) -> u16 {
        let shared = self.0.lock();
        match shared.rings.get(usize::from(queue)) {
            // SAFETY: as in `needs_kick`: a live area (checked), `idx` at offset 2.
            Some(r) if r.driver_area != 0 => unsafe { Rings::load(r.driver_area, 2) }.wrapping_sub(r.kicked_idx),
            _ => 0,
        }
    }

    /// Sets `queue`'s `used_event` (virtio 1.2, 2.7.10, with `VIRTIO_F_EVENT_IDX`): with
    /// `wanted`, the device interrupts when it next uses a buffer, `used` entries having
    /// been taken off the used ring; without, not before 2^15 more (the next write moves
    /// it again). virtio-drivers sets it to "the next one" whenever it takes an entry.
    pub fn set_used_event(&self, queue: u16, used: u16, wanted: bool) {
        let shared = self.0.lock();
        let Some(r) = shared.rings.get(usize::from(queue)).filter(|r| r.driver_area != 0) else { return };
        if !shared.event_idx {
            return;
        }
        let event = if wanted { used } else { used.wrapping_add(0x8000) };
        // SAFETY: a live available ring (checked); `used_event` follows its `size` 2-byte
        // entries (2.7.6), 2-aligned.
        unsafe { AtomicU16::from_ptr((r.driver_area + 4 + 2 * u64::from(r.size)) as usize as *mut u16) }
            .store(event, Ordering::Release);
    }

    /// Kicks sent so far, per queue.
    pub fn kicks(&self) -> [u64; QUEUES_MAX] {
        self.0.lock().kicks
    }
}

impl<T: Transport> Transport for KickTransport<T> {
    fn device_type(&self) -> DeviceType {
        self.0.lock().transport.device_type()
    }

    fn read_device_features(&mut self) -> u64 {
        self.0.lock().transport.read_device_features()
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        let mut shared = self.0.lock();
        shared.event_idx = driver_features & FEATURE_EVENT_IDX != 0;
        shared.transport.write_driver_features(driver_features)
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.0.lock().transport.max_queue_size(queue)
    }

    /// Held back for [`Kicker::flush`] on batched queues (those whose rings `queue_set`
    /// recorded); any other queue is kicked now.
    fn notify(&mut self, queue: u16) {
        let mut shared = self.0.lock();
        let batched = shared.rings.get(usize::from(queue)).is_some_and(|r| r.driver_area != 0 && r.device_area != 0);
        if !batched {
            shared.transport.notify(queue);
        }
    }

    fn get_status(&self) -> DeviceStatus {
        self.0.lock().transport.get_status()
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.0.lock().transport.set_status(status)
    }

    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.0.lock().transport.set_guest_page_size(guest_page_size)
    }

    fn requires_legacy_layout(&self) -> bool {
        self.0.lock().transport.requires_legacy_layout()
    }

    fn queue_set(&mut self, queue: u16, size: u32, descriptors: PhysAddr, driver_area: PhysAddr, device_area: PhysAddr) {
        let mut shared = self.0.lock();
        if let (Some(rings), Ok(size)) = (shared.rings.get_mut(usize::from(queue)), u16::try_from(size)) {
            // Memory is identity-mapped (see `virtio::KernelHal`): these are the pointers.
            *rings = Rings { driver_area, device_area, size, kicked_idx: 0 };
        }
        shared.transport.queue_set(queue, size, descriptors, driver_area, device_area)
    }

    fn queue_unset(&mut self, queue: u16) {
        let mut shared = self.0.lock();
        if let Some(rings) = shared.rings.get_mut(usize::from(queue)) {
            *rings = Rings::default();
        }
        shared.transport.queue_unset(queue)
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.0.lock().transport.queue_used(queue)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.0.lock().transport.ack_interrupt()
    }

    fn read_config_generation(&self) -> u32 {
        self.0.lock().transport.read_config_generation()
    }

    fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> virtio_drivers::Result<V> {
        self.0.lock().transport.read_config_space(offset)
    }

    fn write_config_space<V: IntoBytes + Immutable>(&mut self, offset: usize, value: V) -> virtio_drivers::Result<()> {
        self.0.lock().transport.write_config_space(offset, value)
    }
}
