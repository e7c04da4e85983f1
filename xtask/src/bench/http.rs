//! The HTTP benchmark: three NGINX backends on loopback, and in front of them HAProxy (2 threads),
//! NGINX (2 workers) and edge (userspace proxy, 2 workers on this host), each configured as its
//! users would (round robin, keep-alive to the backends, health checks every 2 s); wrk drives each
//! in turn (each round starting one peer later) with 64 connections, one thread, for 10 s, for
//! three rounds, and the medians are compared, with the CPU time each proxy spent per request.
//! Ports are fixed (18081-18083 for backends, 18090-18092 for the proxies) so that the
//! configurations stay readable; a port in use stops the run with its name.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::cpu;
use super::procs::{Guard, nginx_backends, require, wait_until};
use super::wrk::wrk;
use super::{Settings, median, round_order};

const BACKENDS: [u16; 3] = [18081, 18082, 18083];
const HAPROXY: u16 = 18090;
const NGINX: u16 = 18091;
const CANDIDATE: u16 = 18092;
const CONNECTIONS: u32 = 64;
const THREADS: u32 = 2;
const SECONDS: u64 = 10;

/// Runs the comparison and prints each round, the medians and the ratios.
pub(crate) fn run(bin: &Path, settings: &Settings) -> anyhow::Result<()> {
    require(&["nginx", "haproxy", "wrk"], "nginx-light haproxy wrk")?;
    let mut g = Guard::default();
    let w = g.temp_dir("http")?;
    let [b1, b2, b3] = BACKENDS;
    nginx_backends(&mut g, &w, BACKENDS)?;
    std::fs::write(
        w.join("haproxy.cfg"),
        format!(
            "global\n  nbthread {THREADS}\n  maxconn 8000\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  \
             timeout server 30s\n  option http-keep-alive\nfrontend fe\n  bind 127.0.0.1:{HAPROXY}\n  default_backend be\n\
             backend be\n  balance roundrobin\n  server b1 127.0.0.1:{b1} check inter 2s rise 2 fall 3\n  \
             server b2 127.0.0.1:{b2} check inter 2s rise 2 fall 3\n  server b3 127.0.0.1:{b3} check inter 2s rise 2 fall 3\n"
        ),
    )?;
    g.spawn(
        "haproxy",
        Command::new("haproxy").arg("-f").arg(w.join("haproxy.cfg")).arg("-db"),
        &w.join("haproxy.log"),
    )?;
    std::fs::write(
        w.join("lb.conf"),
        format!(
            "worker_processes {THREADS}; daemon off; error_log {w}/n.err; pid {w}/n.pid;\n\
             events {{ worker_connections 8192; }}\n\
             http {{ access_log off; keepalive_requests 100000;\n\
               upstream be {{ server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; server 127.0.0.1:{b3}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{NGINX};\n\
                 location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
            w = w.display()
        ),
    )?;
    g.spawn("nginx", Command::new("nginx").arg("-c").arg(w.join("lb.conf")).arg("-p").arg(&w), &w.join("lb.log"))?;
    let mut edge = Command::new(bin);
    edge.args(["run", "--listen", &format!("127.0.0.1:{CANDIDATE}"), "--admin", "off", "--mode", "userspace"])
        .args(["--log-level", "warn"]);
    for b in BACKENDS {
        edge.args(["--backend", &format!("127.0.0.1:{b}")]);
    }
    g.spawn("edge", &mut edge, &w.join("edge.log"))?;

    let peers = [("haproxy", HAPROXY), ("nginx", NGINX), ("candidate", CANDIDATE)];
    // The process each peer runs as, for its CPU time.
    let procs = ["haproxy", "nginx", "edge"];
    for (name, port) in peers {
        if !wait_until(Duration::from_secs(10), || http_ok(port)) {
            let log = ["haproxy.log", "lb.log", "edge.log", "b.err", "n.err"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(w.join(f)).ok())
                .collect::<Vec<_>>()
                .join("\n");
            bail!("{name} did not answer on 127.0.0.1:{port}; logs:\n{log}");
        }
    }
    g.check_running()?;
    println!("HTTP/1.1 keep-alive through HAProxy, NGINX and edge (candidate); same backends, same load");
    let seconds = settings.seconds.unwrap_or(SECONDS);
    let mut results: Vec<[Vec<f64>; 3]> = vec![Default::default(); peers.len()];
    for round in 1..=settings.rounds {
        for i in round_order(round, peers.len()) {
            let (name, port) = peers[i];
            let args = [
                "-t1".to_string(),
                format!("-c{CONNECTIONS}"),
                format!("-d{seconds}s"),
                format!("http://127.0.0.1:{port}/"),
            ];
            let pid = g.pid(procs[i]).context("a peer has no process")?;
            let before = cpu::used_us(pid);
            let r = wrk(&[], &args)?;
            let spent = cpu::used_us(pid).zip(before).map_or(f64::NAN, |(a, b)| (a - b) / r.requests.max(1.0));
            println!(
                "round {round} {name} rps={:.2} p99={:.0}us cpu_per_request={spent:.2}us {}",
                r.rps, r.p99_us, r.errors
            );
            results[i][0].push(r.rps);
            results[i][1].push(r.p99_us);
            results[i][2].push(spent);
        }
    }
    let med: Vec<[f64; 3]> = results.iter().map(|r| [median(&r[0]), median(&r[1]), median(&r[2])]).collect();
    let base = med[0][0].max(1e-9);
    println!();
    for ((name, _), [rps, p99, spent]) in peers.iter().zip(&med) {
        println!(
            "median {name:<10} rps={rps:<10.2} p99_us={p99:<8.0} cpu_us_per_request={spent:<6.2} ratio_to_haproxy={:.3}",
            rps / base
        );
    }
    let (h, n, c) = (med[0], med[1], med[2]);
    println!();
    println!(
        "edge vs HAProxy: requests/s {:.3}x (target >= 1.0), p99 latency {:.3}x (target <= 1.0), CPU per request {:.3}x",
        c[0] / h[0],
        c[1] / h[1],
        c[2] / h[2]
    );
    println!(
        "edge vs NGINX:   requests/s {:.3}x, p99 latency {:.3}x, CPU per request {:.3}x",
        c[0] / n[0],
        c[1] / n[1],
        c[2] / n[2]
    );
    g.check_running().context("a peer stopped during the run; its numbers are not comparable")
}

/// Whether `GET /` on the loopback port answers 200 within a second.
fn http_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}
