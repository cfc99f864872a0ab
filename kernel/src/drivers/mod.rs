//! Device drivers. One PCI probe loop finds devices; drivers register from it.

pub mod pci;
