//! The request engine the NVMe and AHCI drivers share: one request in flight per
//! disk, through a DMA bounce buffer the controller owns, completed by the
//! controller's interrupt (the CPU halts meanwhile, as virtio-blk's does), with a
//! deadline. It turns a [`Controller`] (start one command, report its completion)
//! into a [`BlockDevice`] and an [`AsyncBlockDevice`].
//!
//! The bounce buffer belongs to the controller for the kernel's lifetime, so a
//! device that stops answering can never write into memory that was handed back:
//! a timed-out disk is shut down (its DMA turned off) and every later request fails
//! at once with [`BlockError::Failed`]. An error completion fails that request with
//! [`BlockError::Io`]; the shard store above takes the disk out of service then.
//! Command formats, queues and registers are the controllers'.

use alloc::string::String;
use core::future::Future;
use core::pin::Pin;
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

/// One disk behind a controller that runs one command at a time on its bounce buffer.
pub trait Controller {
    /// The DMA bounce buffer: a whole number of sectors, at most what one command moves.
    fn bounce(&mut self) -> &mut [u8];
    /// Starts `op` on `sectors` sectors at `sector` (reads land in, writes come
    /// from, the start of the bounce buffer). `sectors` fits the bounce buffer.
    fn start(&mut self, op: Op, sector: u64, sectors: u32) -> Result<(), BlockError>;
    /// The started command's outcome, once the device has completed it.
    fn poll(&mut self) -> Option<Result<(), BlockError>>;
    /// Signalled by the controller's interrupt.
    fn event(&self) -> &'static Event;
    /// Stops the device's access to memory for good (after a timeout).
    fn shut_down(&mut self);
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

    fn start(&mut self, op: Op, sector: u64, sectors: u32) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::Failed);
        }
        debug_assert!(!self.in_flight);
        self.controller.start(op, sector, sectors)?;
        self.in_flight = true;
        Ok(())
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

    fn run(&mut self, op: Op, sector: u64, sectors: u32) -> Result<(), BlockError> {
        self.start(op, sector, sectors)?;
        self.wait(op)
    }

    fn chunk_sectors(&mut self) -> u64 {
        (self.controller.bounce().len() / SECTOR_SIZE) as u64
    }
}

impl<C: Controller> BlockDevice for Queued<C> {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        let chunk_bytes = self.chunk_sectors() as usize * SECTOR_SIZE;
        for (i, chunk) in buf.chunks_mut(chunk_bytes).enumerate() {
            let at = sector + (i * chunk_bytes / SECTOR_SIZE) as u64;
            self.run(Op::Read, at, (chunk.len() / SECTOR_SIZE) as u32)?;
            chunk.copy_from_slice(&self.controller.bounce()[..chunk.len()]);
        }
        Ok(())
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        let chunk_bytes = self.chunk_sectors() as usize * SECTOR_SIZE;
        for (i, chunk) in buf.chunks(chunk_bytes).enumerate() {
            let at = sector + (i * chunk_bytes / SECTOR_SIZE) as u64;
            self.controller.bounce()[..chunk.len()].copy_from_slice(chunk);
            self.run(Op::Write, at, (chunk.len() / SECTOR_SIZE) as u32)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.run(Op::Flush, 0, 0)
    }
}

/// One asynchronous read or write: its chunks go through the bounce buffer one
/// after another; the controller's interrupt wakes the task, or the executor's
/// timer at the chunk's deadline. Dropped unfinished,
/// it waits for the chunk in flight (the buffer is the controller's, so this only
/// keeps the next request from meeting a busy device).
struct Request<'a, C: Controller> {
    disk: &'a mut Queued<C>,
    op: Op,
    sector: u64,
    read: Option<&'a mut [u8]>,
    write: Option<&'a [u8]>,
    /// Bytes done; the chunk in flight starts here.
    done_bytes: usize,
    /// Wakes the task at the chunk in flight's deadline (a hung device never signals).
    deadline: Option<executor::Sleep>,
    /// When that deadline is (boot ns).
    deadline_ns: u64,
}

impl<C: Controller> Request<'_, C> {
    fn len(&self) -> usize {
        self.read.as_ref().map(|b| b.len()).or(self.write.map(|b| b.len())).unwrap_or(0)
    }

    fn start_chunk(&mut self) -> Result<(), BlockError> {
        let chunk_bytes = (self.disk.chunk_sectors() as usize * SECTOR_SIZE).min(self.len() - self.done_bytes);
        if let Some(src) = self.write {
            self.disk.controller.bounce()[..chunk_bytes].copy_from_slice(&src[self.done_bytes..self.done_bytes + chunk_bytes]);
        }
        let at = self.sector + (self.done_bytes / SECTOR_SIZE) as u64;
        self.deadline_ns = executor::now_ns().saturating_add(COMMAND_TIMEOUT_NS);
        self.deadline = Some(executor::sleep_until(self.deadline_ns));
        self.disk.start(self.op, at, (chunk_bytes / SECTOR_SIZE) as u32)
    }

    fn finish_chunk(&mut self) {
        let chunk_bytes = (self.disk.chunk_sectors() as usize * SECTOR_SIZE).min(self.len() - self.done_bytes);
        if let Some(dst) = self.read.as_deref_mut() {
            dst[self.done_bytes..self.done_bytes + chunk_bytes].copy_from_slice(&self.disk.controller.bounce()[..chunk_bytes]);
        }
        self.done_bytes += chunk_bytes;
    }
}

impl<C: Controller> Future for Request<'_, C> {
    type Output = Result<(), BlockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Bounded: one pass per chunk of the request.
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
        Request { disk: self, op: Op::Read, sector, read: Some(buf), write: None, done_bytes: 0, deadline: None, deadline_ns: 0 }.await
    }

    async fn write_async<'a>(&'a mut self, sector: u64, buf: &'a [u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        Request { disk: self, op: Op::Write, sector, read: None, write: Some(buf), done_bytes: 0, deadline: None, deadline_ns: 0 }.await
    }
}
