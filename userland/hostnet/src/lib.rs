//! hostnet: the gridos overlay on a host (std), shared by gridctl, the validator daemon, the
//! compile service and `gridctl overlay up`.
//!
//! - [`stack`]: [`Stack`], an `overlay::Node` on one std `UdpSocket` plus a smoltcp interface
//!   on the node's overlay address (`fd67::/16`), driven together by [`Stack::poll`] with the
//!   wall clock, as the kernel drives its own overlay. In packet mode
//!   ([`Stack::deliver_packets_to_host`]) it carries raw IPv6 packets for a host TUN
//!   interface instead (`gridctl overlay up`).
//!
//! What it leaves to its users: which peers to link to, the sockets on the interface and the
//! protocols spoken over them (control, metrics, ledger), and every timeout above one poll.

pub mod stack;

pub use stack::{wall_clock, PacketError, Stack, MTU_BYTES};
