//! Code generation options for bpf-linker, which turns this crate's bitcode into the BPF object.
//!
//! - `--cpu=v3`: 32-bit jumps and ALU operations (kernel 5.1 and later), which keep the address,
//!   port and checksum arithmetic in fewer instructions than the v1 ("generic") default.
//! - `allows-misaligned-mem-access`: header fields sit wherever the frame puts them, so every
//!   multi-byte read of the packet is an unaligned read. Without this feature LLVM splits each one
//!   into single-byte loads, shifts and ors; with it a field is one load, which the kernel accepts
//!   on architectures with efficient unaligned access (x86-64 and arm64, where ECS runs).

fn main() {
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}
