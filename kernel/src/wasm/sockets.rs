//! A workload's TCP sockets in the kernel: the `Sockets` the WASI layer calls, over
//! the kernel's socket API on the overlay interface only (the underlay never reaches a
//! workload). One listener per port of the manifest's `listen`, bound at deploy;
//! everything is non-blocking, and [`Sockets::wait`] parks the workload's fiber until
//! the scheduler's next round, checking its limits on the way.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

use workloads::wasi::{ConnId, ConnReadiness, Interrupt, Shutdown, SockError, Sockets};
use workloads::runtime::StopReason;

use super::{fiber, limit_reached, Slot};
use crate::arch::x86_64::time;
use crate::net::socket::{NetError, TcpListener, TcpStream};
use crate::net::Network;

/// Connections one workload holds at once: each pins 256 KiB of kernel socket buffers,
/// so 32 bound that to 8 MiB per workload whatever its peers (or its own bugs) do.
const CONNECTIONS_MAX: usize = 32;
/// Connections one peer (overlay address) may hold with one workload: keys are free, but
/// one key alone cannot take every slot. The workload sees a refused one as never
/// having arrived (the peer gets a reset).
const CONNECTIONS_PER_PEER_MAX: usize = 8;
/// Log of refused connections, at most a line a second.
static REFUSED_LOG: Mutex<crate::net::guard::RateLimitedLog> = Mutex::new(crate::net::guard::RateLimitedLog::new());

/// Ports no workload may listen on (the node's own services on the overlay).
const RESERVED_PORTS: &[u16] = &[control::PORT, 7, 9, 19];

/// Overlay ports bound by workloads (smoltcp would let two listeners share a port).
static BOUND: Mutex<alloc::collections::BTreeSet<u16>> = Mutex::new(alloc::collections::BTreeSet::new());

pub struct WorkloadSockets {
    listeners: BTreeMap<u16, TcpListener>,
    conns: BTreeMap<u64, TcpStream>,
    next_conn: u64,
    slot: Arc<Mutex<Slot>>,
}

// SAFETY: its sockets are plain ids (listener id, smoltcp handle) into the network
// stack behind `net::STACK`'s mutex, and the slot is an `Arc<Mutex<_>>`; it is used by
// one CPU at a time: the workload's fiber (on the CPU running its slice, while the
// boot CPU waits in `Manager::run_round`) or the executor on the boot CPU.
unsafe impl Send for WorkloadSockets {}

impl WorkloadSockets {
    /// Binds a listener on the overlay for every port of `listen`.
    pub(super) fn bind(listen: &[u16], slot: Arc<Mutex<Slot>>) -> Result<WorkloadSockets, String> {
        let mut listeners = BTreeMap::new();
        for &port in listen {
            if RESERVED_PORTS.contains(&port) {
                return Err(format!("port {port} is reserved for the node's services"));
            }
            if BOUND.lock().contains(&port) || listeners.contains_key(&port) {
                return Err(format!("overlay port {port} is in use by another workload"));
            }
            let listener = TcpListener::bind(Network::Overlay, port).map_err(|e| match e {
                NetError::AddressInUse => format!("overlay port {port} is in use"),
                other => format!("cannot listen on overlay port {port}: {other:?}"),
            })?;
            listeners.insert(port, listener);
        }
        BOUND.lock().extend(listeners.keys().copied());
        Ok(WorkloadSockets { listeners, conns: BTreeMap::new(), next_conn: 0, slot })
    }
}

impl Drop for WorkloadSockets {
    fn drop(&mut self) {
        let mut bound = BOUND.lock();
        for port in self.listeners.keys() {
            bound.remove(port);
        }
    }
}

fn sock_error(e: NetError) -> SockError {
    match e {
        NetError::ConnectionReset => SockError::Reset,
        NetError::Closed => SockError::Pipe,
        _ => SockError::Io,
    }
}

impl Sockets for WorkloadSockets {
    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, SockError> {
        let listener = self.listeners.get_mut(&port).ok_or(SockError::NotConnected)?;
        match listener.try_accept().map_err(sock_error)? {
            Some(mut stream) => {
                // The connection limits (smoltcp timeouts and keep-alive come with accept).
                let Some(remote) = stream.remote() else { return Ok(None) };
                let same_peer = self.conns.values().filter(|c| c.remote().is_some_and(|r| r.addr == remote.addr)).count();
                if self.conns.len() >= CONNECTIONS_MAX || same_peer >= CONNECTIONS_PER_PEER_MAX {
                    let now_ms = time::since_boot_ns() / 1_000_000;
                    REFUSED_LOG.lock().warn(now_ms, format_args!(
                        "workload port {port}: refused a connection from {} ({} open, {same_peer} from that peer; limits {CONNECTIONS_MAX}, {CONNECTIONS_PER_PEER_MAX})",
                        remote.addr,
                        self.conns.len()
                    ));
                    stream.abort();
                    return Ok(None);
                }
                let id = self.next_conn;
                self.next_conn += 1;
                self.conns.insert(id, stream);
                Ok(Some(ConnId(id)))
            }
            None => Ok(None),
        }
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, SockError> {
        let stream = self.conns.get_mut(&conn.0).ok_or(SockError::NotConnected)?;
        stream.try_read(buf).map_err(sock_error)
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, SockError> {
        let stream = self.conns.get_mut(&conn.0).ok_or(SockError::NotConnected)?;
        stream.try_write(data).map_err(sock_error)
    }

    fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), SockError> {
        let stream = self.conns.get_mut(&conn.0).ok_or(SockError::NotConnected)?;
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            stream.shutdown();
        }
        Ok(())
    }

    fn close(&mut self, conn: ConnId) {
        self.conns.remove(&conn.0);
    }

    fn pending(&mut self, port: u16) -> Result<usize, SockError> {
        let listener = self.listeners.get(&port).ok_or(SockError::NotConnected)?;
        listener.pending().map_err(sock_error)
    }

    fn readiness(&mut self, conn: ConnId) -> Result<ConnReadiness, SockError> {
        let stream = self.conns.get(&conn.0).ok_or(SockError::NotConnected)?;
        let r = stream.readiness().map_err(sock_error)?;
        if r.reset {
            return Err(SockError::Reset);
        }
        Ok(ConnReadiness { recv_bytes: r.recv_bytes, recv_eof: r.recv_eof, send_bytes: r.send_bytes, send_closed: r.send_closed })
    }

    fn wait(&mut self) -> Result<(), Interrupt> {
        park(&self.slot, None)
    }
}

/// What a limit (or the owner's stop) means for a parked call.
fn interrupt_for(reason: StopReason) -> Interrupt {
    match reason {
        StopReason::CpuLimit { used_ms } => Interrupt::CpuLimit { used_ms },
        StopReason::WallDeadline => Interrupt::WallDeadline,
        _ => Interrupt::Stopped,
    }
}

/// Parks the calling workload's fiber until the scheduler's next look at it (at the
/// latest at `wake_at_ns`, or within a poll interval when it waits on sockets),
/// checking its limits before and after.
pub(super) fn park(slot: &Arc<Mutex<Slot>>, wake_at_ns: Option<u64>) -> Result<(), Interrupt> {
    let check = |slot: &Arc<Mutex<Slot>>| match limit_reached(&slot.lock(), time::since_boot_ns()) {
        None => Ok(()),
        Some(reason) => Err(interrupt_for(reason)),
    };
    check(slot)?;
    {
        let mut s = slot.lock();
        s.blocked = true;
        s.wake_at_ns = wake_at_ns;
    }
    fiber::suspend();
    {
        let mut s = slot.lock();
        s.blocked = false;
        s.wake_at_ns = None;
    }
    check(slot)
}

/// Ports the node's workloads listen on (for the log).
pub fn describe(listen: &[u16]) -> String {
    let ports: Vec<String> = listen.iter().map(|p| format!("{p}")).collect();
    ports.join(",")
}
