//! The L4 benchmark (root): three network namespaces joined by veth pairs,
//!
//! ```text
//!  client ns e4c ──veth── lb ns e4l ──veth── backend ns e4b (10.77.2.2, .3, .4; NGINX on each)
//!  c0 10.77.1.2          l0 10.77.1.1 (the VIP)
//!                        l1 10.77.2.1
//! ```
//!
//! and four ways across the lb namespace, one after another, under the same wrk loads from the
//! client namespace: `direct` (routed to one backend, no balancing: the floor), `nftables` (kernel
//! DNAT with round robin by `numgen`, and masquerade: kube-proxy's nftables way), `haproxy` (TCP
//! mode, 2 threads) and `candidate` (edge in eBPF mode on `l0`). Loads: `keepalive` (64
//! connections, small answers), `close` (16 connections, a new TCP connection per request) and
//! `bulk` (8 connections, 1 MiB answers), 8 s each, three rounds; medians and ratios at the end.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::procs::{Guard, quiet, run as sh, wait_until};
use super::wrk::wrk;
use super::{Settings, median};

const CLIENT: &str = "e4c";
const LB: &str = "e4l";
const BACKEND: &str = "e4b";
const VIP: &str = "10.77.1.1";
const BACKENDS: [&str; 3] = ["10.77.2.2", "10.77.2.3", "10.77.2.4"];
const SECONDS: u64 = 8;
const MODES: [&str; 3] = ["keepalive", "close", "bulk"];
const PEERS: [&str; 4] = ["direct", "nftables", "haproxy", "candidate"];

fn ip(args: &[&str]) -> anyhow::Result<()> {
    sh(Command::new("ip").args(args)).map(|_| ())
}

fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    sh(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// Whether `GET /` through `target` answers from the client namespace.
fn reachable(target: &str) -> bool {
    quiet(
        Command::new("ip")
            .args(["netns", "exec", CLIENT, "curl", "-fsS", "-m", "2", "-o", "/dev/null"])
            .arg(format!("http://{target}/")),
    )
    .is_ok_and(|s| s.success())
}

/// Runs the comparison and prints each run, the medians and the ratios.
pub(crate) fn run(bin: &Path, settings: &Settings) -> anyhow::Result<()> {
    if !crate::util::is_root() {
        bail!("the L4 benchmark builds network namespaces and loads eBPF: run it as root");
    }
    let mut g = Guard::default();
    let w = g.temp_dir("l4")?;
    for ns in [CLIENT, LB, BACKEND] {
        g.namespace(ns)?;
    }
    ip(&["link", "add", "c0", "netns", CLIENT, "type", "veth", "peer", "name", "l0", "netns", LB])?;
    ip(&["link", "add", "b0", "netns", BACKEND, "type", "veth", "peer", "name", "l1", "netns", LB])?;
    ip(&["-n", CLIENT, "addr", "add", "10.77.1.2/24", "dev", "c0"])?;
    ip(&["-n", CLIENT, "link", "set", "c0", "up"])?;
    ip(&["-n", CLIENT, "route", "add", "default", "via", VIP])?;
    ip(&["-n", LB, "addr", "add", &format!("{VIP}/24"), "dev", "l0"])?;
    ip(&["-n", LB, "addr", "add", "10.77.2.1/24", "dev", "l1"])?;
    ip(&["-n", LB, "link", "set", "l0", "up"])?;
    ip(&["-n", LB, "link", "set", "l1", "up"])?;
    in_ns(LB, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    for b in BACKENDS {
        ip(&["-n", BACKEND, "addr", "add", &format!("{b}/24"), "dev", "b0"])?;
    }
    ip(&["-n", BACKEND, "link", "set", "b0", "up"])?;
    ip(&["-n", BACKEND, "route", "add", "default", "via", "10.77.2.1"])?;
    // GRO on the outer veth ends gives them NAPI, so frames an XDP program in the lb namespace
    // redirects toward them are received as on a real NIC; it is on for every peer alike.
    in_ns(CLIENT, &["ethtool", "-K", "c0", "gro", "on"])?;
    in_ns(BACKEND, &["ethtool", "-K", "b0", "gro", "on"])?;

    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(w.join("big"), big)?;
    sh(Command::new("chmod").args(["755"]).arg(&w))?;
    std::fs::write(
        w.join("b.conf"),
        format!(
            "worker_processes 1; daemon off; error_log {w}/b.err; pid {w}/b.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 100000;\n\
               server {{ listen 80; root {w}; location = / {{ return 200 \"$server_addr\\n\"; }} }} }}\n",
            w = w.display()
        ),
    )?;
    let mut nginx = Command::new("ip");
    nginx.args(["netns", "exec", BACKEND, "nginx", "-c"]).arg(w.join("b.conf")).arg("-p").arg(&w);
    g.spawn("backends (nginx)", &mut nginx, &w.join("backends.log"))?;
    if !wait_until(Duration::from_secs(5), || reachable(BACKENDS[0])) {
        bail!("the backends do not answer; see {}", w.join("b.err").display());
    }

    let seconds = settings.seconds.unwrap_or(SECONDS);
    let mut runs: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    let mut measure = |name: &'static str, target: &str| -> anyhow::Result<()> {
        for mode in MODES {
            for round in 1..=settings.rounds {
                let (conns, path, extra): (u32, &str, &[&str]) = match mode {
                    "close" => (16, "/", &["-H", "Connection: close"]),
                    "bulk" => (8, "/big", &[]),
                    _ => (64, "/", &[]),
                };
                let mut args = vec!["-t1".to_string(), format!("-c{conns}"), format!("-d{seconds}s")];
                args.extend(extra.iter().map(|s| s.to_string()));
                args.push(format!("http://{target}{path}"));
                let r = wrk(&["ip", "netns", "exec", CLIENT], &args)?;
                println!("{name} {mode} round={round} {:.2} {:.0}us {}", r.rps, r.p99_us, r.errors);
                runs.entry((name, mode)).or_default().push(r.rps);
            }
        }
        Ok(())
    };

    measure("direct", BACKENDS[0])?;

    let [b1, b2, b3] = BACKENDS;
    let rules = format!(
        "table ip lb {{\n  chain pre {{ type nat hook prerouting priority dstnat; ip daddr {VIP} tcp dport 80 dnat to numgen inc mod 3 map {{ 0 : {b1}, 1 : {b2}, 2 : {b3} }}; }}\n  \
         chain post {{ type nat hook postrouting priority srcnat; ip daddr {{ {b1}, {b2}, {b3} }} oifname \"l1\" masquerade; }}\n}}\n"
    );
    std::fs::write(w.join("lb.nft"), rules)?;
    in_ns(LB, &["nft", "-f", &w.join("lb.nft").display().to_string()])?;
    if !wait_until(Duration::from_secs(5), || reachable(VIP)) {
        bail!("nftables DNAT does not answer on {VIP}:80");
    }
    measure("nftables", VIP)?;
    in_ns(LB, &["nft", "delete", "table", "ip", "lb"])?;

    std::fs::write(
        w.join("h.cfg"),
        format!(
            "global\n  nbthread 2\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  \
             timeout server 30s\nfrontend fe\n  bind {VIP}:80\n  default_backend be\nbackend be\n  balance roundrobin\n  \
             server b1 {b1}:80 check\n  server b2 {b2}:80 check\n  server b3 {b3}:80 check\n"
        ),
    )?;
    let mut haproxy = Command::new("ip");
    haproxy.args(["netns", "exec", LB, "haproxy", "-f"]).arg(w.join("h.cfg")).arg("-db");
    g.spawn("haproxy", &mut haproxy, &w.join("h.log"))?;
    if !wait_until(Duration::from_secs(5), || reachable(VIP)) {
        bail!("HAProxy does not answer on {VIP}:80; see {}", w.join("h.log").display());
    }
    measure("haproxy", VIP)?;
    g.stop("haproxy");

    let mut edge = Command::new("ip");
    edge.args(["netns", "exec", LB]).arg(bin).args(["run", "--mode", "ebpf", "--iface", "l0"]);
    edge.args(["--vip", &format!("{VIP}:80"), "--admin", "off", "--log-level", "warn", "--cleanup"]);
    for b in BACKENDS {
        edge.args(["--backend", &format!("{b}:80")]);
    }
    g.spawn("edge", &mut edge, &w.join("edge.log"))?;
    if !wait_until(Duration::from_secs(10), || reachable(VIP)) {
        let log = std::fs::read_to_string(w.join("edge.log")).unwrap_or_default();
        bail!("edge did not answer on {VIP}:80; its log:\n{log}");
    }
    measure("candidate", VIP)?;
    g.check_running().context("a peer stopped during the run; its numbers are not comparable")?;
    g.stop("edge");

    let med = |name: &str, mode: &str| runs.get(&(name, mode)).map(|v| median(v));
    println!();
    for mode in MODES {
        let row: Vec<String> = PEERS.iter().map(|n| format!("{n}={:.0}", med(n, mode).unwrap_or(0.0))).collect();
        println!("median {mode:<9} requests/s: {}", row.join(" "));
    }
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    };
    let c = |mode| med("candidate", mode);
    println!(
        "new connections/s: {} nftables (target >= 1.5x), {} HAProxy (target >= 2x)",
        ratio(c("close"), med("nftables", "close")),
        ratio(c("close"), med("haproxy", "close"))
    );
    println!("keep-alive requests/s: {} direct (target >= 0.9x)", ratio(c("keepalive"), med("direct", "keepalive")));
    println!("bulk: {} nftables (target >= 1.0x)", ratio(c("bulk"), med("nftables", "bulk")));
    Ok(())
}
