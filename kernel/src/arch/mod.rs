//! Architecture support. gridos runs on x86-64 only for now; other architectures
//! would sit beside it with the same module names.

#[cfg(target_arch = "x86_64")]
pub mod x86_64;
