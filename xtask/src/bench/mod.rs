//! `cargo xtask bench [http|proto|ws|l4|conns|overload|prog]`: edge measured next to its peers in one run, by harnesses
//! the project owns (docs/benchmarks.md says how to read them):
//! - `http` (default): edge, HAProxy and NGINX on the same three NGINX backends and the same wrk
//!   load on loopback (`http`), then the agent's idle resident memory;
//! - `proto`: HTTP/2 from the client (h2load) and TLS termination (keep-alive requests and new
//!   connections per second over HTTPS), edge next to HAProxy and NGINX (`proto`);
//! - `ws`: WebSocket echo round trips per second through edge against a direct connection (an
//!   ignored test of `edge-agent`, `websocket_round_trips_bench`, run in release);
//! - `l4` (root): edge in eBPF mode against direct routing, nftables DNAT and HAProxy in TCP mode,
//!   across network namespaces (`l4`);
//! - `conns`: the resident memory of 5,000 idle keep-alive client connections, over three rounds
//!   (`conns`);
//! - `overload`: edge in front of a backend that saturates first, at twice the measured capacity,
//!   open loop, with no request budget, the default one and a small one; admitted requests'
//!   latency, the shed ones, and the admin endpoints' latency meanwhile (the generator is
//!   `edge-agent/examples/overload.rs`);
//! - `prog` (root): ns per packet of the data path from `BPF_PROG_TEST_RUN`, next to an XDP
//!   program that only passes, in the same run.
//!
//! Ratios are what count: absolute numbers on a 2-core machine with the load generator, the
//! backends and the proxy all sharing the cores say little; same-run ratios say who is faster.
//! `EDGE_BENCH_ROUNDS` and `EDGE_BENCH_SECONDS` shorten or lengthen a run; `EDGE_BENCH_STATIC=1`
//! measures the static (musl) binary the container image ships instead of the glibc build.

mod conns;
mod cpu;
mod http;
mod l4;
mod procs;
mod proto;
mod wrk;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::setup::{self, Needs};
use crate::util::{cargo, exec, root};

/// Entry point.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let which = args.first().map(String::as_str).unwrap_or("http");
    if !["http", "proto", "ws", "l4", "prog", "conns", "overload"].contains(&which) {
        bail!("unknown benchmark '{which}'; use http, proto, ws, l4, conns, overload or prog");
    }
    // Read before any install or build, so that a bad value stops the run at once.
    let settings = Settings::from_env()?;
    if settings.static_build && ["prog", "ws"].contains(&which) {
        bail!("EDGE_BENCH_STATIC=1 applies to http, proto, l4, conns and overload; '{which}' runs a test binary");
    }
    setup::run(Needs::Bench)?;
    if which == "prog" {
        return exec(cargo().args(["test", "--release", "-p", "edge-agent", "--test", "privileged", "--"]).args([
            "--ignored",
            "--exact",
            "bench_ns_per_packet",
            "--nocapture",
        ]));
    }
    if which == "ws" {
        return exec(cargo().args(["test", "--release", "-p", "edge-agent", "--test", "it", "--"]).args([
            "--ignored",
            "--exact",
            "websocket::websocket_round_trips_bench",
            "--nocapture",
        ]));
    }
    let mut build = cargo();
    build.args(["build", "--release", "-p", "edge-agent"]);
    let bin = if settings.static_build {
        setup::musl_target()?;
        exec(build.args(["--target", setup::MUSL]))?;
        root().join("target").join(setup::MUSL).join("release/edge-agent")
    } else {
        exec(&mut build)?;
        root().join("target/release/edge-agent")
    };
    if which == "l4" {
        return l4::run(&bin, &settings);
    }
    if which == "proto" {
        return proto::run(&bin, &settings);
    }
    if which == "conns" {
        return conns::run(&bin);
    }
    if which == "overload" {
        // No budget, the default one, a small one: the same load, twice the capacity, each time.
        for flags in [&["--max-requests", "10000000"][..], &[], &["--max-requests", "128"]] {
            exec(
                cargo()
                    .args(["run", "--release", "-q", "-p", "edge-agent", "--example", "overload", "--"])
                    .arg(&bin)
                    .arg("2")
                    .args(flags),
            )?;
        }
        return Ok(());
    }
    idle_memory(&bin)?;
    http::run(&bin, &settings)
}

/// How long and how often each load runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Rounds per peer and load (the median is reported).
    pub rounds: usize,
    /// Seconds per wrk run; `None`: each harness's own default.
    pub seconds: Option<u64>,
    /// Measure the static (musl) binary the container image ships instead of the glibc one.
    pub static_build: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let num = |name: &str| -> anyhow::Result<Option<u64>> {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().map(Some).with_context(|| format!("{name}='{v}' is not a number of")),
                Err(_) => Ok(None),
            }
        };
        let rounds = num("EDGE_BENCH_ROUNDS")?.unwrap_or(3).max(1) as usize;
        let static_build = match std::env::var("EDGE_BENCH_STATIC").as_deref() {
            Err(_) | Ok("" | "0") => false,
            Ok("1") => true,
            Ok(v) => bail!("EDGE_BENCH_STATIC='{v}' is neither 1 (the image's static binary) nor 0"),
        };
        Ok(Self { rounds, seconds: num("EDGE_BENCH_SECONDS")?, static_build })
    }
}

/// The order in which the peers run in `round` (counted from 1): each round starts one peer later,
/// so that no peer always runs first, on backends rested or warmed by the same neighbour. With a
/// fixed order edge always ran last, right after NGINX, and any drift within a round fell on it.
pub(crate) fn round_order(round: usize, peers: usize) -> impl Iterator<Item = usize> {
    (0..peers).map(move |k| (round.saturating_sub(1) + k) % peers)
}

/// The median of `v` (the upper one of an even count); 0 when empty.
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
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
    let rss = conns::rss_mib(child.id()).context("cannot read VmRSS of the agent");
    let _ = child.kill();
    let _ = child.wait();
    let mb = rss?;
    println!(
        "idle resident memory: {mb:.1} MiB (VmRSS after 3 s with 3 backends probed; target < 20 MB) {}",
        if mb < 20.0 { "OK" } else { "OVER" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_runs_once_per_round_and_each_in_turn_runs_first() {
        let rounds: Vec<Vec<usize>> = (1..=4).map(|r| round_order(r, 3).collect()).collect();
        assert_eq!(rounds, [vec![0, 1, 2], vec![1, 2, 0], vec![2, 0, 1], vec![0, 1, 2]]);
    }

    #[test]
    fn medians_take_the_middle_value() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
    }
}
