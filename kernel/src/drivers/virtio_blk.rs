//! virtio-blk disks as [`blockdev::BlockDevice`]s.
//!
//! Requests are submitted without blocking and the CPU halts until the device's
//! interrupt reports the completion (no busy polling). Flush is a real
//! `VIRTIO_BLK_T_FLUSH` when the device offers it (virtio 1.2, 5.2.6); a device
//! without a volatile write cache completes writes durably and needs none.

use alloc::string::String;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use blockdev::{check_request, AsyncBlockDevice, BlockDevice, BlockError, SECTOR_SIZE};
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::pci::PciTransport;

use super::virtio::{Found, KernelHal};
use crate::arch::x86_64::interrupts;
use crate::executor::Event;

/// Largest single request, in bytes (bounded so one request never monopolizes the device).
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// One virtio-blk disk.
pub struct VirtioDisk {
    device: VirtIOBlk<KernelHal, PciTransport>,
    event: &'static Event,
    pub serial: String,
    sectors: u64,
    read_only: bool,
}

impl VirtioDisk {
    /// Initializes the disk behind `found`.
    pub fn new(found: Found) -> Result<VirtioDisk, virtio_drivers::Error> {
        let mut device = VirtIOBlk::<KernelHal, _>::new(found.transport)?;
        device.enable_interrupts();
        let mut id = [0u8; 20];
        let serial = match device.device_id(&mut id) {
            Ok(n) => String::from_utf8_lossy(&id[..n.min(20)]).into_owned(),
            Err(_) => String::new(),
        };
        let sectors = device.capacity();
        let read_only = device.readonly();
        // Its queue is set up: completions move to MSI-X where the function offers it.
        let event = match super::virtio::move_to_msix(found.address, found.source) {
            Some(event) => {
                log::debug!("virtio-blk {}: interrupts MSI-X", found.address);
                event
            }
            None => found.event,
        };
        Ok(VirtioDisk { device, event, serial, sectors, read_only })
    }

    /// Whether the disk is read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Halts until the request with `token` has completed.
    fn wait_for(&mut self, token: u16) {
        loop {
            interrupts::disable();
            if self.device.peek_used() == Some(token) {
                interrupts::enable();
                let _ = self.event.take();
                return;
            }
            interrupts::enable_and_wait();
        }
    }

    fn read_chunk(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        // SAFETY: `req`, `buf` and `resp` stay borrowed and untouched until
        // `complete_read_blocks` below, after the device has finished with them.
        unsafe {
            let token = self.device.read_blocks_nb(sector as usize, &mut req, buf, &mut resp).map_err(io)?;
            self.wait_for(token);
            self.device.complete_read_blocks(token, &req, buf, &mut resp).map_err(io)
        }
    }

    fn write_chunk(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        // SAFETY: as in `read_chunk`.
        unsafe {
            let token = self.device.write_blocks_nb(sector as usize, &mut req, buf, &mut resp).map_err(io)?;
            self.wait_for(token);
            self.device.complete_write_blocks(token, &req, buf, &mut resp).map_err(io)
        }
    }
}

fn io(e: virtio_drivers::Error) -> BlockError {
    log::warn!("virtio-blk: request failed: {e}");
    BlockError::Io
}

impl BlockDevice for VirtioDisk {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_request(self.sectors, sector, buf.len())?;
        for (i, chunk) in buf.chunks_mut(MAX_REQUEST_BYTES).enumerate() {
            self.read_chunk(sector + (i * MAX_REQUEST_BYTES / SECTOR_SIZE) as u64, chunk)?;
        }
        Ok(())
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_request(self.sectors, sector, buf.len())?;
        for (i, chunk) in buf.chunks(MAX_REQUEST_BYTES).enumerate() {
            self.write_chunk(sector + (i * MAX_REQUEST_BYTES / SECTOR_SIZE) as u64, chunk)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        // The crate's flush waits by polling; flushes are rare next to reads and writes.
        self.device.flush().map_err(io)
    }
}

/// One in-flight request of [`AsyncBlockDevice`]: completes when the device's
/// interrupt reports it. If dropped early, it waits for the device to finish with
/// the buffers before they can be freed. The request header and status live in
/// boxes so their addresses, given to the device, survive moves of the future.
struct Request<'a> {
    disk: &'a mut VirtioDisk,
    buf: RequestBuf<'a>,
    req: alloc::boxed::Box<BlkReq>,
    resp: alloc::boxed::Box<BlkResp>,
    token: Option<u16>,
}

enum RequestBuf<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Request<'_> {
    fn complete(&mut self, token: u16) -> Result<(), BlockError> {
        // SAFETY: the same req/buf/resp that were submitted with `token`, which the
        // device has finished with (it is in the used ring).
        unsafe {
            match &mut self.buf {
                RequestBuf::Read(b) => self.disk.device.complete_read_blocks(token, &self.req, b, &mut self.resp),
                RequestBuf::Write(b) => self.disk.device.complete_write_blocks(token, &self.req, b, &mut self.resp),
            }
        }
        .map_err(io)
    }
}

impl Future for Request<'_> {
    type Output = Result<(), BlockError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(token) = this.token else { return Poll::Ready(Err(BlockError::Io)) };
        this.disk.event.register_waker(cx.waker());
        if this.disk.device.peek_used() != Some(token) {
            return Poll::Pending;
        }
        this.token = None;
        let _ = this.disk.event.take();
        Poll::Ready(this.complete(token))
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.disk.wait_for(token);
            let _ = self.complete(token);
        }
    }
}

impl VirtioDisk {
    fn submit<'a>(&'a mut self, sector: u64, buf: RequestBuf<'a>) -> Result<Request<'a>, BlockError> {
        let len = match &buf {
            RequestBuf::Read(b) => b.len(),
            RequestBuf::Write(b) => b.len(),
        };
        check_request(self.sectors, sector, len)?;
        if matches!(buf, RequestBuf::Write(_)) && self.read_only {
            return Err(BlockError::ReadOnly);
        }
        if len > MAX_REQUEST_BYTES {
            return Err(BlockError::OutOfRange);
        }
        let mut request = Request {
            disk: self,
            buf,
            req: alloc::boxed::Box::default(),
            resp: alloc::boxed::Box::default(),
            token: None,
        };
        // SAFETY: the buffer is borrowed for 'a and the header/status are boxed, so
        // all three stay in place and untouched until the request completes: in
        // `poll`, or in `Drop`, which waits for the device.
        let token = unsafe {
            let Request { disk, buf, req, resp, .. } = &mut request;
            match buf {
                RequestBuf::Read(b) => disk.device.read_blocks_nb(sector as usize, req, b, resp),
                RequestBuf::Write(b) => disk.device.write_blocks_nb(sector as usize, req, b, resp),
            }
        }
        .map_err(io)?;
        request.token = Some(token);
        Ok(request)
    }
}

impl AsyncBlockDevice for VirtioDisk {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    async fn read_async<'a>(&'a mut self, sector: u64, buf: &'a mut [u8]) -> Result<(), BlockError> {
        self.submit(sector, RequestBuf::Read(buf))?.await
    }

    async fn write_async<'a>(&'a mut self, sector: u64, buf: &'a [u8]) -> Result<(), BlockError> {
        self.submit(sector, RequestBuf::Write(buf))?.await
    }
}
