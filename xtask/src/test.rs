//! `cargo xtask test`: the one command CI runs. Setup, formatting, the layering check, the deploy/
//! validators (`deploy`), lints (host crates and the eBPF crate), then every test, then the
//! container image (`image`), then every fuzz target for a bounded time. Privileged tests run when
//! root and report as ignored, with the reason, otherwise; with `CI` set, not being root is an
//! error.

use std::process::Command;

use anyhow::bail;

use crate::setup::{self, NIGHTLY, Needs};
use crate::util::{cargo, exec, is_root, path_with_tools, root};

/// Runs the whole suite; extra arguments go to `cargo test` (e.g. a test name filter).
pub fn run(extra: &[String]) -> anyhow::Result<()> {
    let root_user = is_root();
    if std::env::var_os("CI").is_some() && !root_user {
        bail!("CI is set but this is not root: the privileged tests would not run; run cargo xtask test as root");
    }
    setup::run(Needs::Test)?;
    step("cargo fmt --check");
    exec(cargo().args(["fmt", "--all", "--", "--check"]))?;
    exec(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
    step("layering: no cycle among any crate's top-level modules");
    crate::modcycles::check(&root())?;
    step("deploy/ and the workflows, each through its validator");
    crate::deploy::run()?;
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
    if root_user {
        step("cargo test (running as root: privileged tests included)");
    } else {
        step("cargo test (not root: privileged tests will report as ignored, with the reason)");
    }
    exec(cargo().args(["test", "--workspace", "--exclude", "edge-ebpf"]).args(extra))?;
    if !extra.is_empty() {
        step("fuzzing skipped: a test filter was given");
        return Ok(());
    }
    step("the container image: hadolint, a static binary, buildah, and the image checked");
    crate::image::run(crate::image::Optimise::Check)?;
    step(&format!("fuzzing: every target for {FUZZ_SECONDS} s from its corpus"));
    let bins = crate::fuzz::build()?;
    for t in crate::fuzz::TARGETS {
        crate::fuzz::report(&crate::fuzz::run_one(&bins, t, FUZZ_SECONDS)?);
    }
    Ok(())
}

/// Seconds each fuzz target runs in the test command: enough to replay its corpus and explore a
/// little; `cargo xtask fuzz` runs longer.
const FUZZ_SECONDS: u64 = 20;

fn step(name: &str) {
    eprintln!("\n== {name}");
}
