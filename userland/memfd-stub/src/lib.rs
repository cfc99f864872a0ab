//! Stand-in for the `memfd` crate (see ../shared/DESIGN.md, wasmtime notes).
//!
//! wasmtime's `runtime` feature depends on `memfd` whenever the target OS is linux,
//! and the real crate brings `std` into the no_std kernel ("duplicate lang item
//! panic_impl"). The kernel's wasmtime has no `std`, so its unix layer, the only user
//! of memfd, is not compiled, and this crate is empty there.
//!
//! Host tools that build wasmtime *with* `std` (the precompiler, host tests) share the
//! workspace's `[patch.crates-io]`, so with the `std` feature this crate offers the small
//! API wasmtime's unix layer names, and `create` always fails with
//! `ErrorKind::Unsupported`, which wasmtime handles by skipping its memfd-backed
//! copy-on-write memory images (gridos sets `memory_init_cow(false)` anyway).
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
mod hosted {
    use std::fs::File;
    use std::io;

    /// Why a memfd could not be made. Only `Create` ever happens here.
    #[derive(Debug)]
    pub enum Error {
        Create(io::Error),
        AddSeals(io::Error),
    }

    impl core::fmt::Display for Error {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                Error::Create(e) => write!(f, "memfd_create: {e}"),
                Error::AddSeals(e) => write!(f, "memfd add seals: {e}"),
            }
        }
    }

    impl std::error::Error for Error {}

    /// Seals (named for API compatibility; never applied).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum FileSeal {
        SealGrow,
        SealShrink,
        SealWrite,
        SealSeal,
    }

    /// A memfd: this stand-in can never make one.
    #[derive(Debug)]
    pub enum Memfd {}

    impl Memfd {
        pub fn as_file(&self) -> &File {
            match *self {}
        }

        pub fn add_seals(&self, _seals: &[FileSeal]) -> Result<(), Error> {
            match *self {}
        }
    }

    /// Options for `create`.
    #[derive(Debug, Clone, Default)]
    pub struct MemfdOptions {
        _sealing: bool,
    }

    impl MemfdOptions {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn allow_sealing(mut self, value: bool) -> Self {
            self._sealing = value;
            self
        }

        /// Always `Err(Error::Create(Unsupported))`.
        pub fn create(&self, _name: &str) -> Result<Memfd, Error> {
            Err(Error::Create(io::Error::from(io::ErrorKind::Unsupported)))
        }
    }
}

#[cfg(feature = "std")]
pub use hosted::*;
