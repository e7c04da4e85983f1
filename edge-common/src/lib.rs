//! Types and constants shared by the edge eBPF program and the agent: the kernel/user wire format.
//!
//! Everything here is `#[repr(C)]` plain data without implicit padding. The `user` feature adds
//! `aya::Pod` impls so the agent can read and write the maps; the eBPF side uses the types as is.
//! Nothing else defines a map layout.

#![no_std]

/// Index of the packet counter in [`PROBE_STATS`](crate) (per-CPU array, `u64` values).
pub const STAT_PACKETS: u32 = 0;
/// Index of the byte counter.
pub const STAT_BYTES: u32 = 1;
/// Number of entries in the per-CPU stats array.
pub const STATS_LEN: u32 = 2;
