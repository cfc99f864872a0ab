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

use workloads::wasi::{ConnId, Interrupt, Shutdown, SockError, Sockets};
use workloads::runtime::StopReason;

use super::{fiber, limit_reached, Slot};
use crate::arch::x86_64::time;
use crate::net::socket::{NetError, TcpListener, TcpStream};
use crate::net::Network;

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

// SAFETY: used only on the boot CPU, from the workload's fiber and the executor.
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
            Some(stream) => {
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

    fn wait(&mut self) -> Result<(), Interrupt> {
        let check = |slot: &Arc<Mutex<Slot>>| match limit_reached(&slot.lock(), time::since_boot_ns()) {
            None => Ok(()),
            Some(StopReason::CpuLimit { used_ms }) => Err(Interrupt::CpuLimit { used_ms }),
            Some(StopReason::WallDeadline) => Err(Interrupt::WallDeadline),
            Some(_) => Err(Interrupt::Stopped),
        };
        check(&self.slot)?;
        self.slot.lock().blocked = true;
        fiber::suspend();
        self.slot.lock().blocked = false;
        check(&self.slot)
    }
}

/// Ports the node's workloads listen on (for the log).
pub fn describe(listen: &[u16]) -> String {
    let ports: Vec<String> = listen.iter().map(|p| format!("{p}")).collect();
    ports.join(",")
}
