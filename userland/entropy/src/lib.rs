//! The node's randomness, without I/O: health tests for raw entropy sources and the
//! reseeding generator every key, nonce and seed in the node comes from.
//!
//! - [`health`]: the continuous health tests of NIST SP 800-90B section 4.4 (repetition
//!   count and adaptive proportion) plus a start-up test, for sources that deliver
//!   64-bit words (RDSEED, RDRAND) or bytes (virtio-rng). A source that fails is not
//!   counted again until the node reboots.
//! - [`drbg`]: a deterministic generator keyed by blake3 over everything the sources
//!   gave, with fast key erasure after each request and a reseed after a byte or time
//!   budget. It tracks how many bits of its seed came from sources that passed their
//!   tests, so the kernel can refuse to make long-term keys from anything less than
//!   [`drbg::SOUND_SEED_BITS`].
//!
//! The kernel reads the hardware and the clock and passes both in (see
//! `kernel/src/entropy.rs`).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod drbg;
pub mod health;
