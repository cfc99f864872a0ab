//! The workload manager's portable half: everything about running WebAssembly
//! workloads on a node that does not need the kernel.
//!
//! - [`manifest`]: signed workload manifests (owner ed25519 key, module blake3 hash,
//!   limits, args/env; postcard), accepted only when signature and hash check out.
//! - [`oci`]: OCI image layouts in a tar (index.json -> manifest -> wasm layer), every
//!   sha256 digest verified, every offset bounds-checked.
//! - [`wasi`]: WASI preview 1 host functions over a linear-memory byte slice and a
//!   small [`wasi::HostServices`] trait (clock, entropy); output goes to a capped log;
//!   an optional persistent file area (`/data`, [`wasi::FileArea`]) and listening
//!   sockets ([`wasi::Sockets`]), both implemented by the kernel.
//! - [`artifact`]: bundles of native code attested by a compiler (module hash, engine
//!   fingerprint, code hash, ed25519 signature), verified against the node's trusted keys.
//! - [`runtime`] (feature `runtime`): the wasmtime side shared by the kernel and the
//!   compile service: one engine configuration, the WASI linker, the memory limiter,
//!   the reasons a workload stops; `runtime::interp` (feature `interp`): the same for
//!   the wasmi interpreter, which runs every module without attested native code.
//!
//! What it leaves to the kernel: the wasmtime platform hooks (TLS, code memory, CPU
//! features), stacks and time slicing, the clock and entropy sources, the console,
//! the storage behind file areas, the TCP stack behind sockets.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod artifact;
pub mod log;
pub mod logstore;
pub mod admission;
pub mod manifest;
pub mod module;
pub mod oci;
#[cfg(any(feature = "runtime", feature = "interp", test))]
pub mod runtime;
pub mod wasi;

pub use ed25519_compact;

/// Cases per property test: `default`, or `GRIDOS_FUZZ_CASES` when set (the long
/// fuzzing runs of the README's "Fuzzing" section).
#[cfg(test)]
pub(crate) fn test_cases(default: u32) -> u32 {
    std::env::var("GRIDOS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
pub use manifest::{Limits, Manifest, SignedManifest};
