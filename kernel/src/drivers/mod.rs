//! Device drivers. One PCI probe loop finds devices; drivers register from it.

pub mod ahci;
pub mod blockq;
pub mod e1000;
pub mod msi;
pub mod nic;
pub mod nvme;
pub mod pci;
pub mod virtio;
pub mod virtio_blk;
pub mod virtio_kick;
pub mod virtio_net;
