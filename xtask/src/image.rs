//! `cargo xtask image`: the container image, offline. The binary is built here, static (musl) and
//! stripped, then buildah builds the Dockerfile's final stage from a context holding only it
//! (`--target local`), so no base image is pulled. The result is checked: the
//! user, the health check and the entry point in its configuration, and the binary inside it runs,
//! as an agent too, with jemalloc's background thread (the static build's allocator, `main.rs`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::setup::MUSL;
use crate::util::{cargo, exec, output, root, tools_dir};

/// The image's name.
pub const NAME: &str = "localhost/edge-agent";

fn buildah() -> Command {
    // vfs: no overlay mounts needed; chroot isolation: no user namespaces needed.
    let mut c = Command::new("buildah");
    c.args(["--storage-driver", "vfs"]);
    c
}

/// How the image's binary is optimised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimise {
    /// As shipped: the release profile (fat LTO over one codegen unit).
    Shipped,
    /// For checking the packaging only (`cargo xtask test`): thin LTO over the default codegen
    /// units, which builds in about half the time on 2 cores; the image is checked the same way.
    Check,
}

/// Lints the Dockerfile, builds the image and checks it; returns its tag.
pub fn run(optimise: Optimise) -> anyhow::Result<String> {
    // The pinned hadolint that setup installed, not whatever is on PATH.
    exec(Command::new(tools_dir().join("bin/hadolint")).args(["--no-color", "Dockerfile"]).current_dir(root()))?;
    let mut build = cargo();
    build
        .args(["build", "--release", "--locked", "--target", MUSL, "-p", "edge-agent"])
        // Debug information goes; the symbol table stays, so CPU profiles name functions.
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    if optimise == Optimise::Check {
        build.env("CARGO_PROFILE_RELEASE_LTO", "thin").env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
    }
    exec(&mut build)?;
    let binary = root().join("target").join(MUSL).join("release/edge-agent");
    let context = root().join("target/image-context");
    std::fs::create_dir_all(&context)?;
    std::fs::copy(&binary, context.join("edge-agent")).with_context(|| format!("copying {}", binary.display()))?;
    let version = env!("CARGO_PKG_VERSION");
    let revision = output(Command::new("git").args(["rev-parse", "--short", "HEAD"]).current_dir(root()))
        .map_or_else(|| "unknown".to_string(), |r| r.trim().to_string());
    let tag = format!("{NAME}:{version}");
    exec(
        buildah()
            .args([
                "bud",
                "--quiet",
                "--isolation",
                "chroot",
                "--format",
                "docker",
                "--layers=false",
                "--target",
                "local",
            ])
            .args(["--build-arg", &format!("VERSION={version}"), "--build-arg", &format!("REVISION={revision}")])
            .args(["-t", &tag, "-f"])
            .arg(root().join("Dockerfile"))
            .arg(&context),
    )?;
    check(&tag, version)?;
    // The replaced image and the binary-only stage are left untagged by every build; drop them.
    let _ = output(buildah().args(["rmi", "--prune"]));
    Ok(tag)
}

/// Checks the image's configuration and runs the binary it holds.
fn check(tag: &str, version: &str) -> anyhow::Result<()> {
    let text = output(buildah().args(["inspect", "--type", "image", tag])).context("buildah inspect failed")?;
    let v: serde_json::Value = serde_json::from_str(&text).context("buildah inspect printed no JSON")?;
    let config = &v["Docker"]["config"];
    let want = [
        (config["User"] == "65534:65534", "runs as 65534:65534 (nobody)"),
        (config["Entrypoint"] == serde_json::json!(["/edge-agent"]), "entry point /edge-agent"),
        (config["Healthcheck"]["Test"] == serde_json::json!(["CMD", "/edge-agent", "health"]), "health check"),
        (config["Labels"]["org.opencontainers.image.version"] == version, "the version label"),
    ];
    for (ok, what) in want {
        if !ok {
            bail!("the image lacks {what}: {config}");
        }
    }
    // Mount it and run what it holds: a static binary runs on the host as it will in the task.
    let container = output(buildah().args(["from", "--pull-never", tag])).context("buildah from failed")?;
    let container = container.trim().to_string();
    let result = (|| -> anyhow::Result<String> {
        let dir = output(buildah().args(["mount", &container])).context("buildah mount failed")?;
        let bin = std::path::Path::new(dir.trim()).join("edge-agent");
        let said = output(Command::new(&bin).arg("--version")).context("the image's binary does not run")?;
        jemalloc_runs(&bin)?;
        let files: Vec<String> = std::fs::read_dir(dir.trim())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let size = std::fs::metadata(&bin)?.len();
        Ok(format!("{} ({} MB); the image holds: {}", said.trim(), size / 1_000_000, files.join(" ")))
    })();
    let _ = output(buildah().args(["umount", &container]));
    let _ = output(buildah().args(["rm", &container]));
    let said = result?;
    if !said.contains(version) {
        bail!("the image's binary says {said}, not version {version}");
    }
    eprintln!("image {tag}: {said}");
    Ok(())
}

/// Starts `bin` as an agent and checks that jemalloc is its allocator, configured as `main.rs`
/// says: the background thread that returns freed memory must appear.
fn jemalloc_runs(bin: &Path) -> anyhow::Result<()> {
    let mut child = Command::new(bin)
        .args(["run", "--listen", "127.0.0.1:0", "--admin", "off", "--mode", "userspace", "--log-level", "warn"])
        .args(["--backend", "127.0.0.1:9"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the image's binary as an agent")?;
    let tasks = format!("/proc/{}/task", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let (names, exited) = loop {
        let names = thread_names(&tasks);
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || names.iter().any(|n| n == "jemalloc_bg_thd") || Instant::now() >= deadline {
            break (names, exited);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    if let Some(status) = exited {
        bail!("the image's binary stopped as an agent ({status})");
    }
    if !names.iter().any(|n| n == "jemalloc_bg_thd") {
        bail!(
            "the image's binary runs no jemalloc background thread within 10 s (threads: {}); check its \
             global allocator and `_rjem_malloc_conf` in edge-agent/src/main.rs",
            names.join(" ")
        );
    }
    Ok(())
}

/// The names of a process's threads, from `/proc/PID/task`.
fn thread_names(tasks: &str) -> Vec<String> {
    std::fs::read_dir(tasks)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}
