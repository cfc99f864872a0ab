//! The request engine the NVMe and AHCI drivers share: one chunk in flight per
//! disk (one command, or several the controller starts together and reports as one),
//! completed by the controller's interrupt (the CPU halts meanwhile, as virtio-blk's
//! does), with a deadline. It turns a [`Controller`] (start a chunk, report its
//! completion) into a [`BlockDevice`] and an [`AsyncBlockDevice`].
//!
//! Data moves directly between the device and the caller's buffer whenever the
//! controller can describe that buffer ([`Controller::start_direct`]), as virtio-blk
//! does: all memory is identity-mapped (`mm`), so a slice's address is its physical
//! address and a slice is physically contiguous. A request becomes the chunks the
//! controller takes (its transfer limits: NVMe's MDTS and PRP list, AHCI's PRD
//! table), issued one after another. A chunk the controller cannot take as it is (an
//! address it cannot describe, such as an odd one) goes through the controller's
//! DMA bounce buffer instead and is copied.
//!
//! The device must never touch memory that was handed back. The caller's buffer
//! stays borrowed until the chunk in flight has completed: the synchronous calls
//! wait for it, and an asynchronous request dropped unfinished waits for it in
//! `Drop` (as virtio-blk's does; a request future leaked with `mem::forget` would
//! escape this, and the kernel never leaks one). A disk that does not complete a
//! command by its deadline is shut down (its DMA turned off, see
//! [`Controller::shut_down`]) before the request fails, and every later request
//! fails at once with [`BlockError::Failed`]. An error completion fails that
//! request with [`BlockError::Io`]; the shard store above takes the disk out of
//! service then. Command formats, queues and registers are the controllers'.

use alloc::string::String;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{fence, Ordering};
use core::task::{Context, Poll};

use blockdev::{check_request, AsyncBlockDevice, BlockDevice, BlockError, SECTOR_SIZE};

use crate::arch::x86_64::{interrupts, time};
use crate::executor::{self, Event};

/// How long one command may take before the disk is declared dead (TCG is slow;
/// a real disk answers in milliseconds).
pub const COMMAND_TIMEOUT_NS: u64 = 15_000_000_000;

/// What a command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Flush,
}

/// A caller's buffer as the device sees it: identity mapping makes the address
/// physical, and the bytes are contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaBuf {
    /// Address of the first byte (physical = virtual).
    pub addr: u64,
    /// Length: a whole number of sectors, at least one.
    pub bytes: usize,
}

impl DmaBuf {
    /// `buf` as the device would see it: `None` unless it is a whole number of
    /// sectors (at least one) in identity-mapped memory.
    fn of(buf: &[u8]) -> Option<DmaBuf> {
        let addr = buf.as_ptr() as u64;
        let whole = !buf.is_empty() && buf.len() % SECTOR_SIZE == 0;
        (whole && crate::mm::is_identity_mapped(addr, buf.len() as u64)).then_some(DmaBuf { addr, bytes: buf.len() })
    }

    /// The first byte past the buffer.
    pub fn end(&self) -> u64 {
        self.addr + self.bytes as u64
    }
}

/// One disk behind a controller that runs one chunk at a time (one command, or
/// several reported together), on the caller's buffer or on its bounce buffer.
///
/// # Implementation safety
/// Once `poll` has reported a command's outcome, and once `shut_down` has returned,
/// the device no longer reads or writes the memory that command named. A buffer
/// handed to `start_direct` is accessed only within the sectors it says it moves.
pub unsafe trait Controller {
    /// The DMA bounce buffer: a whole number of sectors, at most what one command moves.
    fn bounce(&mut self) -> &mut [u8];
    /// Starts `op` on `sectors` sectors at `sector` (reads land in, writes come
    /// from, the start of the bounce buffer). `sectors` fits the bounce buffer.
    fn start(&mut self, op: Op, sector: u64, sectors: u32) -> Result<(), BlockError>;
    /// Starts `op` ([`Op::Read`] or [`Op::Write`]) at `sector` on the leading
    /// sectors of `buf` itself: how many sectors the command moves (at least one, at
    /// most `buf.bytes / SECTOR_SIZE`), or `None`, with nothing started, when the
    /// controller cannot describe `buf` (the engine then uses the bounce buffer).
    /// An error means nothing was started either. The default takes no buffer.
    ///
    /// # Safety
    /// `buf` is the caller's memory and stays so, untouched by the CPU (for a write:
    /// not written), until `poll` has reported the command's outcome or `shut_down`
    /// has returned.
    unsafe fn start_direct(&mut self, op: Op, sector: u64, buf: DmaBuf) -> Result<Option<u32>, BlockError> {
        let _ = (op, sector, buf);
        Ok(None)
    }
    /// The started command's outcome, once the device has completed it.
    fn poll(&mut self) -> Option<Result<(), BlockError>>;
    /// Signalled by the controller's interrupt.
    fn event(&self) -> &'static Event;
    /// Stops the device's access to memory for good (after a timeout).
    fn shut_down(&mut self);
}

/// The part of a read's or a write's buffer not moved yet.
enum Rest<'b> {
    Read(&'b mut [u8]),
    Write(&'b [u8]),
}

/// The chunk in flight: how many bytes it moves, and whether through the bounce buffer.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    bytes: usize,
    bounced: bool,
}

/// A [`Controller`] as a block device of `sectors` sectors.
pub struct Queued<C: Controller> {
    pub controller: C,
    sectors: u64,
    name: String,
    failed: bool,
    in_flight: bool,
}

impl<C: Controller> Queued<C> {
    pub fn new(controller: C, sectors: u64, name: String) -> Queued<C> {
        Queued { controller, sectors, name, failed: false, in_flight: false }
    }

    /// Starts a command without data (flush).
    fn start(&mut self, op: Op) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::Failed);
        }
        debug_assert!(!self.in_flight);
        self.controller.start(op, 0, 0)?;
        self.in_flight = true;
        Ok(())
    }

    /// Starts the next chunk of a read or write at `sector`, `rest` being what is
    /// left of its buffer: on `rest` itself when the controller takes it, else
    /// through the bounce buffer (a write's data copied in first).
    ///
    /// # Safety
    /// The memory `rest` borrows stays the caller's, untouched, until the chunk's
    /// outcome has been taken ([`Queued::wait`], the request's `poll`) or the disk
    /// has been shut down; the borrow of `rest` itself may end before.
    unsafe fn start_chunk(&mut self, sector: u64, rest: Rest<'_>) -> Result<Chunk, BlockError> {
        if self.failed {
            return Err(BlockError::Failed);
        }
        debug_assert!(!self.in_flight);
        let (op, data): (Op, &[u8]) = match &rest {
            Rest::Read(b) => (Op::Read, &**b),
            Rest::Write(b) => (Op::Write, *b),
        };
        if let Some(buf) = DmaBuf::of(data) {
            // SAFETY: forwarded from this function's caller: the memory stays the
            // caller's until the outcome is taken or the disk is shut down.
            if let Some(sectors) = unsafe { self.controller.start_direct(op, sector, buf)? } {
                let bytes = sectors as usize * SECTOR_SIZE;
                debug_assert!(bytes > 0 && bytes <= buf.bytes);
                self.in_flight = true;
                return Ok(Chunk { bytes, bounced: false });
            }
        }
        let bytes = self.chunk_bytes().min(data.len());
        if let Rest::Write(src) = rest {
            self.controller.bounce()[..bytes].copy_from_slice(&src[..bytes]);
        }
        self.controller.start(op, sector, (bytes / SECTOR_SIZE) as u32)?;
        self.in_flight = true;
        Ok(Chunk { bytes, bounced: true })
    }

    /// After a chunk of a read completed: copies it from the bounce buffer if it
    /// went through it (`dst` is where the chunk belongs).
    fn land(&mut self, chunk: Chunk, dst: &mut [u8]) {
        // The device's writes to memory are complete before its completion was seen.
        fence(Ordering::Acquire);
        if chunk.bounced {
            dst[..chunk.bytes].copy_from_slice(&self.controller.bounce()[..chunk.bytes]);
        }
    }

    fn outcome(&mut self, op: Op, result: Result<(), BlockError>) -> Result<(), BlockError> {
        self.in_flight = false;
        if let Err(e) = result {
            log::warn!("disk {}: {op:?} failed: {e}", self.name);
        }
        result
    }

    /// Halts until the command in flight completes or its deadline passes.
    fn wait(&mut self, op: Op) -> Result<(), BlockError> {
        let deadline = time::since_boot_ns() + COMMAND_TIMEOUT_NS;
        loop {
            interrupts::disable();
            if let Some(result) = self.controller.poll() {
                interrupts::enable();
                let _ = self.controller.event().take();
                return self.outcome(op, result);
            }
            if time::since_boot_ns() > deadline {
                interrupts::enable();
                return Err(self.time_out(op));
            }
            // The controller's interrupt or the next timer tick ends the halt.
            interrupts::enable_and_wait();
        }
    }

    fn time_out(&mut self, op: Op) -> BlockError {
        log::error!(
            "disk {}: {op:?} did not complete in {} s; the disk is shut down and taken out of service",
            self.name,
            COMMAND_TIMEOUT_NS / 1_000_000_000
        );
        self.failed = true;
        self.in_flight = false;
        self.controller.shut_down();
        BlockError::Failed
    }

    /// Bytes one chunk moves through the bounce buffer.
    fn chunk_bytes(&mut self) -> usize {
        self.controller.bounce().len() / SECTOR_SIZE * SECTOR_SIZE
    }
}

impl<C: Controller> BlockDevice for Queued<C> {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        let mut done = 0;
        // Bounded: every chunk moves at least one sector.
        for _ in 0..buf.len() / SECTOR_SIZE {
            if done >= buf.len() {
                break;
            }
            let at = sector + (done / SECTOR_SIZE) as u64;
            // SAFETY: `buf` stays borrowed by this call, untouched, until `wait` has
            // taken the chunk's outcome or shut the disk down.
            let chunk = unsafe { self.start_chunk(at, Rest::Read(&mut buf[done..]))? };
            self.wait(Op::Read)?;
            self.land(chunk, &mut buf[done..]);
            done += chunk.bytes;
        }
        if done < buf.len() { Err(BlockError::Failed) } else { Ok(()) }
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        let mut done = 0;
        // Bounded: every chunk moves at least one sector.
        for _ in 0..buf.len() / SECTOR_SIZE {
            if done >= buf.len() {
                break;
            }
            let at = sector + (done / SECTOR_SIZE) as u64;
            // SAFETY: as in `read`.
            let chunk = unsafe { self.start_chunk(at, Rest::Write(&buf[done..]))? };
            self.wait(Op::Write)?;
            done += chunk.bytes;
        }
        if done < buf.len() { Err(BlockError::Failed) } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.start(Op::Flush)?;
        self.wait(Op::Flush)
    }
}

/// One asynchronous read or write: its chunks run one after another, each on the
/// caller's buffer or through the bounce buffer; the controller's interrupt wakes
/// the task, or the executor's timer at the chunk's deadline. Dropped unfinished,
/// it waits for the chunk in flight, so the device is done with the caller's
/// buffer before the borrow ends (and the next request meets an idle device).
struct Request<'a, C: Controller> {
    disk: &'a mut Queued<C>,
    op: Op,
    sector: u64,
    read: Option<&'a mut [u8]>,
    write: Option<&'a [u8]>,
    /// Bytes done; the chunk in flight starts here.
    done_bytes: usize,
    /// The chunk in flight.
    chunk: Chunk,
    /// Wakes the task at the chunk in flight's deadline (a hung device never signals).
    deadline: Option<executor::Sleep>,
    /// When that deadline is (boot ns).
    deadline_ns: u64,
}

impl<'a, C: Controller> Request<'a, C> {
    fn new(disk: &'a mut Queued<C>, sector: u64, read: Option<&'a mut [u8]>, write: Option<&'a [u8]>) -> Self {
        let op = if read.is_some() { Op::Read } else { Op::Write };
        let chunk = Chunk { bytes: 0, bounced: true };
        Request { disk, op, sector, read, write, done_bytes: 0, chunk, deadline: None, deadline_ns: 0 }
    }

    fn len(&self) -> usize {
        self.read.as_ref().map(|b| b.len()).or(self.write.map(|b| b.len())).unwrap_or(0)
    }

    fn start_chunk(&mut self) -> Result<(), BlockError> {
        let at = self.sector + (self.done_bytes / SECTOR_SIZE) as u64;
        let rest = match (self.read.as_deref_mut(), self.write) {
            (Some(dst), _) => Rest::Read(&mut dst[self.done_bytes..]),
            (None, Some(src)) => Rest::Write(&src[self.done_bytes..]),
            (None, None) => return Err(BlockError::Failed),
        };
        self.deadline_ns = executor::now_ns().saturating_add(COMMAND_TIMEOUT_NS);
        self.deadline = Some(executor::sleep_until(self.deadline_ns));
        // SAFETY: the buffer is borrowed for 'a by this request, which touches it
        // again only after the chunk's outcome is taken (`poll`); dropped before,
        // it waits for the outcome (`Drop`); a timeout shuts the disk down first.
        self.chunk = unsafe { self.disk.start_chunk(at, rest)? };
        Ok(())
    }

    fn finish_chunk(&mut self) {
        let chunk = self.chunk;
        if let Some(dst) = self.read.as_deref_mut() {
            self.disk.land(chunk, &mut dst[self.done_bytes..]);
        }
        self.done_bytes += chunk.bytes;
    }
}

impl<C: Controller> Future for Request<'_, C> {
    type Output = Result<(), BlockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Bounded: one pass per chunk of the request (every chunk moves a sector or more).
        for _ in 0..=this.len() / SECTOR_SIZE {
            if !this.disk.in_flight {
                if this.done_bytes >= this.len() {
                    return Poll::Ready(Ok(()));
                }
                if let Err(e) = this.start_chunk() {
                    return Poll::Ready(Err(e));
                }
            }
            this.disk.controller.event().register_waker(cx.waker());
            let polled = interrupts::without(|| this.disk.controller.poll());
            match polled {
                Some(result) => {
                    let _ = this.disk.controller.event().take();
                    if executor::now_ns() >= this.deadline_ns {
                        // Completed, but seen only when the deadline timer woke the task:
                        // the interrupt's wake-up did not reach it.
                        log::warn!(
                            "disk {}: a completion was seen only at its {} s deadline (its interrupt did not wake the request)",
                            this.disk.name,
                            COMMAND_TIMEOUT_NS / 1_000_000_000
                        );
                    }
                    if let Err(e) = this.disk.outcome(this.op, result) {
                        return Poll::Ready(Err(e));
                    }
                    this.finish_chunk();
                }
                None => {
                    let expired = this.deadline.as_mut().is_some_and(|sleep| Pin::new(sleep).poll(cx).is_ready());
                    if expired {
                        return Poll::Ready(Err(this.disk.time_out(this.op)));
                    }
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Err(BlockError::Failed))
    }
}

impl<C: Controller> Drop for Request<'_, C> {
    fn drop(&mut self) {
        // The device may be moving data to or from the caller's buffer: wait until
        // it is done (or shut it down at the deadline) before the borrow ends.
        if self.disk.in_flight {
            let _ = self.disk.wait(self.op);
        }
    }
}

impl<C: Controller> AsyncBlockDevice for Queued<C> {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    async fn read_async<'a>(&'a mut self, sector: u64, buf: &'a mut [u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        Request::new(self, sector, Some(buf), None).await
    }

    async fn write_async<'a>(&'a mut self, sector: u64, buf: &'a [u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        Request::new(self, sector, None, Some(buf)).await
    }
}
