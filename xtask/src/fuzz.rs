//! `cargo xtask fuzz [TARGET...] [--seconds N]`: builds the fuzz targets in `fuzz/` with libFuzzer
//! and coverage instrumentation, and runs each for a bounded time, starting from its corpus in
//! `fuzz/corpus/TARGET`.
//!
//! This is what `cargo fuzz` does, on the stable toolchain: the instrumentation flags are stable
//! rustc flags, and without a sanitizer (`-Zsanitizer`) nothing needs nightly; Rust's own bounds
//! and overflow checks (on in this profile) catch what a sanitizer would in safe code. The flags
//! are given for the host target only (`--target`), so build scripts and the eBPF program, which
//! edge-dataplane's build script compiles, are built without them. New inputs the fuzzer finds go
//! to `target/fuzz/corpus/TARGET`, crashes to `target/fuzz/artifacts/TARGET`; `fuzz/corpus` is only
//! read (refresh it with `--merge`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::util::{cargo, exec, output, root};

/// Every target, in `fuzz/Cargo.toml` order.
pub const TARGETS: [&str; 7] =
    ["response_head", "chunked", "backends_file", "config_file", "admin_request", "consul_answer", "dns_answer"];

const FLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
     -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
     -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing";

fn host() -> anyhow::Result<String> {
    let v = output(Command::new("rustc").arg("-vV")).context("cannot run rustc -vV")?;
    v.lines().find_map(|l| l.strip_prefix("host: ")).map(str::to_string).context("rustc -vV names no host")
}

/// Builds every target; returns the folder holding the binaries.
pub fn build() -> anyhow::Result<std::path::PathBuf> {
    let host = host()?;
    let var = format!("CARGO_TARGET_{}_RUSTFLAGS", host.to_uppercase().replace('-', "_"));
    exec(
        cargo()
            .args(["build", "--release", "--manifest-path", "fuzz/Cargo.toml", "--target-dir", "target/fuzz"])
            .args(["--target", &host, "--bins"])
            .env(var, FLAGS),
    )?;
    Ok(root().join("target/fuzz").join(&host).join("release"))
}

/// One target's run: executions and seconds.
#[derive(Debug)]
pub struct Run {
    /// The target.
    pub target: &'static str,
    /// Inputs executed.
    pub runs: u64,
    /// Seconds it ran.
    pub seconds: f64,
    /// Inputs in the starting corpus.
    pub corpus: usize,
}

/// Runs `target` for `seconds`; fails with the crash's path when it finds one.
pub fn run_one(bins: &Path, target: &'static str, seconds: u64) -> anyhow::Result<Run> {
    let seeds = root().join("fuzz/corpus").join(target);
    let work = root().join("target/fuzz/corpus").join(target);
    let artifacts = root().join("target/fuzz/artifacts").join(target);
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&artifacts)?;
    let corpus = std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0);
    let started = Instant::now();
    let out = Command::new(bins.join(target))
        .arg(&work)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-max_len=65536")
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run the {target} fuzz target"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({}); the input is in {}; reproduce with {} FILE\n{}",
            out.status,
            artifacts.display(),
            bins.join(target).display(),
            tail.join("\n")
        );
    }
    let runs = log
        .lines()
        .find_map(|l| l.strip_prefix("Done ").and_then(|r| r.split_whitespace().next()))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("the {target} fuzz target printed no 'Done N runs' line:\n{log}"))?;
    Ok(Run { target, runs, seconds: started.elapsed().as_secs_f64(), corpus })
}

/// Prints one run.
pub fn report(r: &Run) {
    println!(
        "fuzz {:<14} {:>10} executions in {:>4.0} s ({:>8.0}/s), from {} corpus inputs",
        r.target,
        r.runs,
        r.seconds,
        r.runs as f64 / r.seconds.max(0.001),
        r.corpus
    );
}

/// `cargo xtask fuzz`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut seconds = 60;
    let mut merge = false;
    let mut targets: Vec<&'static str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it.next().and_then(|s| s.parse().ok()).context("--seconds needs a whole number")?;
            }
            "--merge" => merge = true,
            t => match TARGETS.iter().find(|x| **x == t) {
                Some(x) => targets.push(x),
                None => bail!("unknown fuzz target '{t}'; use one of {}", TARGETS.join(", ")),
            },
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    let bins = build()?;
    for t in targets {
        report(&run_one(&bins, t, seconds)?);
        if merge {
            // Keep the smallest set of inputs that covers what the seeds and the new ones cover.
            let seeds = root().join("fuzz/corpus").join(t);
            let merged = root().join("target/fuzz/merged").join(t);
            let _ = std::fs::remove_dir_all(&merged);
            std::fs::create_dir_all(&merged)?;
            exec(
                Command::new(bins.join(t))
                    .arg("-set_cover_merge=1")
                    .arg(&merged)
                    .arg(&seeds)
                    .arg(root().join("target/fuzz/corpus").join(t))
                    .stderr(Stdio::null()),
            )?;
            std::fs::remove_dir_all(&seeds)?;
            std::fs::create_dir_all(&seeds)?;
            for e in std::fs::read_dir(&merged)? {
                let e = e?;
                std::fs::copy(e.path(), seeds.join(e.file_name()))?;
            }
            println!("fuzz {t}: corpus merged into fuzz/corpus/{t}");
        }
    }
    Ok(())
}
