//! Code generation options for bpf-linker, which turns this crate's bitcode into the BPF object.
//!
//! `allows-misaligned-mem-access`: header fields sit wherever the frame puts them, so every
//! multi-byte read of the packet is an unaligned read. Without this feature LLVM splits each one
//! into single-byte loads, shifts and ors; with it a field is one load, which the kernel accepts
//! on architectures with efficient unaligned access (x86-64 and arm64, where ECS runs).
//!
//! No `--cpu` is passed: rustc already gives bpf-linker `--cpu generic`, and bpf-linker takes the
//! flag only once (aya-build owns the rustc flags). A v3 build tried through a linker wrapper also
//! failed the verifier, so the object stays at the generic instruction set.

fn main() {
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}
