//! `cargo xtask test`: the one command CI runs. Setup, formatting, lints (host crates and the
//! eBPF crate), then every test. Tests that need root run when root and say so when skipped.

use std::process::Command;

use crate::setup::{self, NIGHTLY, Needs};
use crate::util::{cargo, exec, is_root, path_with_tools, root};

/// Runs the whole suite; extra arguments go to `cargo test` (e.g. a test name filter).
pub fn run(extra: &[String]) -> anyhow::Result<()> {
    setup::run(Needs::Test)?;
    step("cargo fmt --check");
    exec(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("cargo clippy (host crates)");
    exec(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    step("cargo clippy (eBPF crate, bpfel-unknown-none)");
    // `$CARGO` is the stable toolchain's cargo itself, which knows no `+nightly`; rustup does.
    let mut clippy = Command::new("rustup");
    clippy
        .args(["run", NIGHTLY, "cargo", "clippy", "-p", "edge-ebpf", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"])
        .current_dir(root())
        .env("PATH", path_with_tools())
        .env("CARGO_TARGET_DIR", root().join("target/ebpf-clippy"))
        // aya-ebpf expects the cfg that aya-build sets when it builds the program.
        .env("CARGO_ENCODED_RUSTFLAGS", "--cfg=bpf_target_arch=\"x86_64\"")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    exec(&mut clippy)?;
    if is_root() {
        step("cargo test (running as root: privileged tests included)");
    } else {
        step("cargo test (not root: privileged tests will report that they skip)");
    }
    exec(cargo().args(["test", "--workspace", "--exclude", "edge-ebpf"]).args(extra))
}

fn step(name: &str) {
    eprintln!("\n== {name}");
}
