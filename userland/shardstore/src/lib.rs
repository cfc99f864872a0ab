//! Shard store (work in progress).
#![no_std]
