//! The eBPF object built from `edge-ebpf` by `build.rs` (aya-build) and embedded in the binary.

/// The ELF object, 4-byte aligned as the loader requires.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge"));
