//! Builds the `edge-ebpf` crate for the BPF target with aya-build and leaves the object in OUT_DIR
//! for `include_bytes_aligned!`.
//!
//! aya-build runs its inner cargo with a target folder under OUT_DIR. OUT_DIR differs between
//! `cargo clippy`, `cargo build` and `cargo test`, so each of them would build the eBPF program
//! from scratch (about 30 s on two cores). This script points aya-build at one stable folder,
//! `<workspace>/target/ebpf-object`, so the inner cargo build is incremental across them, and then
//! copies the object into the real OUT_DIR.
//!
//! The BPF target links with bpf-linker, which `cargo xtask setup` installs into
//! `<workspace>/target/tools/bin`; this script puts that folder on PATH so that a plain
//! `cargo build` works in any shell once setup has run.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir.parent().ok_or_else(|| anyhow!("edge-dataplane has no parent folder"))?;
    let tools = workspace.join("target/tools/bin");
    println!("cargo:rerun-if-changed={}", tools.join("bpf-linker").display());
    println!("cargo:rerun-if-env-changed=AYA_EBPF_TOOLCHAIN");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![tools.clone()];
    dirs.extend(std::env::split_paths(&path));
    if !dirs.iter().any(|d| d.join("bpf-linker").is_file()) {
        return Err(anyhow!(
            "bpf-linker not found in {} or on PATH; run `cargo xtask setup` once (it installs it there)",
            tools.display()
        ));
    }
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PATH", std::env::join_paths(dirs)?) };

    let ebpf_dir: &Path = &workspace.join("edge-ebpf");
    let root = ebpf_dir.to_str().ok_or_else(|| anyhow!("non UTF-8 path {}", ebpf_dir.display()))?;
    let package = aya_build::Package { name: "edge-ebpf", root_dir: root, ..Default::default() };
    println!("cargo:rerun-if-changed={}", workspace.join("edge-common/src").display());
    let toolchain = std::env::var("AYA_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain.as_deref() {
        Some(t) => aya_build::Toolchain::Custom(t),
        None => aya_build::Toolchain::Nightly,
    };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let shared = workspace.join("target/ebpf-object");
    // SAFETY: as above; aya-build reads OUT_DIR to place its inner target folder.
    unsafe { std::env::set_var("OUT_DIR", &shared) };
    aya_build::build_ebpf([package], toolchain).context("building the eBPF program (edge-ebpf) failed")?;
    // Copy cargo's own artifact rather than aya-build's copy in `shared`: another build script run
    // (for example rust-analyzer's) may be rewriting that copy right now, while cargo replaces its
    // artifact under its own lock.
    let target = if std::env::var("CARGO_CFG_TARGET_ENDIAN")? == "big" { "bpfeb" } else { "bpfel" };
    let artifact = shared.join(format!("aya-build/target/edge-ebpf/{target}-unknown-none/release/edge"));
    std::fs::copy(&artifact, out_dir.join("edge"))
        .with_context(|| format!("copying the eBPF object {} into OUT_DIR", artifact.display()))?;
    Ok(())
}
