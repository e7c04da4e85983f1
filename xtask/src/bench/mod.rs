//! `cargo xtask bench [http|l4|prog]`:
//! - `http` (default): edge side by side with HAProxy and NGINX on the same backends and load,
//!   through ../shared/bench/peers.sh, then the agent's idle resident memory;
//! - `l4` (root): edge in eBPF mode against direct routing, nftables DNAT and HAProxy in TCP mode
//!   across network namespaces, through ../shared/bench/l4-peers.sh, with medians and ratios;
//! - `prog` (root): ns per packet of the data path from `BPF_PROG_TEST_RUN`, next to an XDP
//!   program that only passes, in the same run.
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
    if !["http", "l4", "prog"].contains(&which) {
        bail!("unknown benchmark '{which}'; use http, l4 or prog");
    }
    setup::run(Needs::Bench)?;
    if which == "prog" {
        return exec(cargo().args([
            "test",
            "--release",
            "-p",
            "edge-agent",
            "--test",
            "ebpf_prog",
            "bench_ns_per_packet",
            "--",
            "--ignored",
            "--nocapture",
        ]));
    }
    exec(cargo().args(["build", "--release", "-p", "edge-agent"]))?;
    let bin = root().join("target/release/edge-agent");
    if which == "l4" {
        return l4(&bin);
    }
    idle_memory(&bin)?;
    http(&bin)
}

/// Stops what l4-peers.sh leaves behind. Its exit trap runs under `set -e` and ends at the first
/// `kill` of a process that is already gone (HAProxy, stopped earlier), so the candidate agent
/// after it keeps running and the namespaces stay. The script is shared, so the fix lives here.
fn reap_l4_leftovers(bin: &std::path::Path) {
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    let mut pids = Vec::new();
    for pid in procs.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let mut args = cmdline.split(|b| *b == 0);
        if args.next() == Some(bin.as_os_str().as_encoded_bytes()) && args.next() == Some(b"run".as_slice()) {
            pids.push(pid.to_string());
        }
    }
    if !pids.is_empty() {
        println!("stopping the candidate agent that l4-peers.sh left running (pids {})", pids.join(" "));
        let _ = Command::new("kill").args(&pids).status();
        for _ in 0..50 {
            if pids.iter().all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    for ns in ["e4c", "e4l", "e4b"] {
        if std::path::Path::new("/run/netns").join(ns).exists() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn l4(bin: &std::path::Path) -> anyhow::Result<()> {
    let script = root().join("../shared/bench/l4-peers.sh");
    if !script.is_file() {
        bail!("{} not found; the benchmark needs ../shared beside the repository", script.display());
    }
    if !crate::util::is_root() {
        bail!("the L4 benchmark builds network namespaces and loads eBPF: run it as root");
    }
    let candidate = format!(
        "{} run --mode ebpf --iface {{IF_CLIENT}} --vip {{VIP}}:80 --backend {{B1}}:80 --backend {{B2}}:80 --backend {{B3}}:80 --admin off --log-level warn",
        bin.display()
    );
    println!("running {} (direct, nftables, HAProxy TCP and edge eBPF; same backends and load)", script.display());
    let out = Command::new("bash").arg(&script).env("CANDIDATE", &candidate).output().context("running l4-peers.sh")?;
    reap_l4_leftovers(bin);
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    // name -> mode -> requests/s of each round
    let mut runs: HashMap<(String, String), Vec<f64>> = HashMap::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() >= 4
            && t[2].starts_with("round=")
            && let Ok(v) = t[3].parse::<f64>()
        {
            runs.entry((t[0].to_string(), t[1].to_string())).or_default().push(v);
        }
    }
    let median = |name: &str, mode: &str| -> Option<f64> {
        let mut v = runs.get(&(name.to_string(), mode.to_string()))?.clone();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    };
    println!();
    for mode in ["keepalive", "close", "bulk"] {
        let row: Vec<String> = ["direct", "nftables", "haproxy", "candidate"]
            .iter()
            .map(|n| format!("{n}={:.0}", median(n, mode).unwrap_or(0.0)))
            .collect();
        println!("median {mode:<9} requests/s: {}", row.join(" "));
    }
    let (Some(c_close), Some(c_keep), Some(c_bulk)) =
        (median("candidate", "close"), median("candidate", "keepalive"), median("candidate", "bulk"))
    else {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("l4-peers.sh printed no candidate results (exit status {})", out.status);
    };
    let ratio = |a: f64, b: Option<f64>| b.map(|b| format!("{:.2}x", a / b)).unwrap_or_else(|| "n/a".into());
    println!(
        "new connections/s: {} nftables (target >= 1.5x), {} HAProxy (target >= 2x)",
        ratio(c_close, median("nftables", "close")),
        ratio(c_close, median("haproxy", "close"))
    );
    println!("keep-alive requests/s: {} direct (target >= 0.9x)", ratio(c_keep, median("direct", "keepalive")));
    println!("bulk: {} nftables (target >= 1.0x)", ratio(c_bulk, median("nftables", "bulk")));
    Ok(())
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
