//! `cargo xtask bench [http]`: edge side by side with HAProxy and NGINX on the same backends and
//! load, through ../shared/bench/peers.sh, then the agent's idle resident memory.
//!
//! Ratios are what count: absolute numbers on a 2-core machine with the load generator, three
//! backends and the proxy all sharing the cores say little; same-run ratios say who is faster.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::setup::{self, Needs};
use crate::util::{cargo, exec, root};

/// Entry point.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let which = args.first().map(String::as_str).unwrap_or("http");
    if which != "http" {
        bail!("unknown benchmark '{which}'; use http");
    }
    setup::run(Needs::Bench)?;
    exec(cargo().args(["build", "--release", "-p", "edge-agent"]))?;
    let bin = root().join("target/release/edge-agent");
    idle_memory(&bin)?;
    http(&bin)
}

fn idle_memory(bin: &std::path::Path) -> anyhow::Result<()> {
    let mut child = Command::new(bin)
        .args(["run", "--listen", "127.0.0.1:0", "--listen-tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--backend", "127.0.0.1:9", "--backend", "127.0.0.1:10", "--backend", "127.0.0.1:11"])
        .args(["--mode", "userspace", "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting edge-agent")?;
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("cannot read VmRSS of the agent")?;
    let mb = kb as f64 / 1024.0;
    println!(
        "idle resident memory: {mb:.1} MiB (VmRSS after 3 s with 3 backends probed; target < 20 MB) {}",
        if mb < 20.0 { "OK" } else { "OVER" }
    );
    Ok(())
}

fn http(bin: &std::path::Path) -> anyhow::Result<()> {
    let script = root().join("../shared/bench/peers.sh");
    if !script.is_file() {
        bail!("{} not found; the benchmark needs ../shared beside the repository", script.display());
    }
    let candidate = format!(
        "{} run --listen 127.0.0.1:{{PORT}} --backend 127.0.0.1:{{B1}} --backend 127.0.0.1:{{B2}} --backend 127.0.0.1:{{B3}} --admin off --mode userspace --log-level warn",
        bin.display()
    );
    println!("running {} (HAProxy, NGINX and edge; same backends, same wrk load)", script.display());
    let out = Command::new("bash").arg(&script).env("CANDIDATE", &candidate).output().context("running peers.sh")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    // peers.sh's cleanup trap kills its servers and reports that as its exit status (143), even
    // after a complete run; the medians it printed are what tells success.
    if !text.contains("median ") {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("peers.sh printed no results (exit status {})", out.status);
    }
    let mut med: HashMap<String, (f64, f64)> = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("median ")) {
        let mut name = String::new();
        let (mut rps, mut p99) = (0.0, 0.0);
        for (i, tok) in line.split_whitespace().enumerate() {
            if i == 1 {
                name = tok.to_string();
            } else if let Some(v) = tok.strip_prefix("rps=") {
                rps = v.parse().unwrap_or(0.0);
            } else if let Some(v) = tok.strip_prefix("p99_us=") {
                p99 = v.parse().unwrap_or(0.0);
            }
        }
        med.insert(name, (rps, p99));
    }
    let (Some(h), Some(c)) = (med.get("haproxy"), med.get("candidate")) else {
        bail!("peers.sh printed no medians for haproxy and the candidate");
    };
    println!();
    println!(
        "edge vs HAProxy: requests/s {:.3}x (target >= 1.0), p99 latency {:.3}x (target <= 1.0)",
        c.0 / h.0,
        c.1 / h.1
    );
    if let Some(n) = med.get("nginx") {
        println!("edge vs NGINX:   requests/s {:.3}x, p99 latency {:.3}x", c.0 / n.0, c.1 / n.1);
    }
    Ok(())
}
