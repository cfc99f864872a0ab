//! Node metrics for Prometheus, sans-IO (`no_std + alloc`).
//!
//! - [`http`]: reads one HTTP/1.x request from bytes as they arrive (bounded: a request
//!   head larger than [`http::REQUEST_HEAD_BYTES_MAX`] is refused with 431) and builds
//!   the response bytes. It knows one route, `GET /metrics` (and `HEAD`).
//! - [`text`]: a writer of the Prometheus text exposition format (version 0.0.4),
//!   escaping label values and help text.
//! - [`node`]: the node's figures as plain data ([`node::NodeMetrics`]) and their
//!   rendering with conventional names (units in names, `_total` counters, labels for
//!   disks, NICs and workloads).
//!
//! The kernel owns sockets, deadlines and connection limits, and fills
//! [`node::NodeMetrics`] from its services; nothing here reads a clock or a device.
#![no_std]

extern crate alloc;

pub mod http;
pub mod node;
pub mod text;

/// The TCP port the node serves `/metrics` on (overlay only): Prometheus' node
/// exporter's conventional port.
pub const PORT: u16 = 9100;
