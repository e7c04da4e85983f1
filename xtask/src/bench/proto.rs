//! The protocol benchmark (`cargo xtask bench proto`): HTTP/2 from the client and TLS termination,
//! edge next to HAProxy (2 threads) and NGINX (2 workers) on the same three NGINX backends, as in
//! the HTTP benchmark. Three loads, each peer in turn (each round starting one peer later), three
//! rounds, medians and ratios:
//! - `h2`: h2load, cleartext HTTP/2 with prior knowledge, 64 connections, 10 streams each;
//! - `tls-keepalive`: wrk over HTTPS, 64 keep-alive connections (requests per second over TLS);
//! - `tls-new`: wrk over HTTPS with `Connection: close`, 16 connections: every request is a new
//!   TLS connection. wrk resumes the session it was last given, so after the first these are
//!   TLS 1.3 resumptions (a PSK with a fresh X25519 exchange, no certificate), not full handshakes.
//!
//! Every peer is held to TLS 1.3: NGINX 1.22 offers only up to TLS 1.2 unless told otherwise, and
//! a TLS 1.2 resumption skips the key exchange altogether, which made NGINX look three times as
//! fast on `tls-new` for a weaker handshake. The certificate is the test suite's self-signed one
//! (ECDSA P-256), the same for every peer. Beside each rate the run reports the CPU time the peer
//! spent per request: with one wrk thread on 2 shared cores, `tls-new` is capped by wrk's own
//! handshake work as much as by the server's.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

use super::cpu;
use super::procs::{Guard, nginx_backends, require, run as run_cmd, wait_until};
use super::wrk::wrk;
use super::{Settings, median, round_order};
use crate::util::root;

const BACKENDS: [u16; 3] = [18181, 18182, 18183];
/// h2c ports: HAProxy, NGINX, edge.
const H2C: [u16; 3] = [18190, 18191, 18192];
/// HTTPS ports: HAProxy, NGINX, edge.
const TLS: [u16; 3] = [18193, 18194, 18195];
const THREADS: u32 = 2;
const SECONDS: u64 = 10;
const PEERS: [&str; 3] = ["haproxy", "nginx", "edge"];
/// The process that serves each peer's h2c port and each peer's HTTPS port.
const H2C_PROCS: [&str; 3] = ["haproxy", "nginx", "edge"];
const TLS_PROCS: [&str; 3] = ["haproxy", "nginx", "edge-tls"];

/// Runs the three loads and prints each round, the medians and the ratios to HAProxy.
pub(crate) fn run(bin: &Path, settings: &Settings) -> anyhow::Result<()> {
    require(&["nginx", "haproxy", "wrk", "h2load"], "nginx-light haproxy wrk nghttp2-client")?;
    let fixtures = root().join("edge-agent/tests/fixtures");
    let (cert, key) = (fixtures.join("test-cert.pem"), fixtures.join("test-key.pem"));
    let mut g = Guard::default();
    let w = g.temp_dir("proto")?;
    // HAProxy wants the certificate and its key in one file.
    let combined = w.join("combined.pem");
    std::fs::write(&combined, [std::fs::read(&cert)?, std::fs::read(&key)?].concat())?;
    let [b1, b2, b3] = BACKENDS;
    nginx_backends(&mut g, &w, BACKENDS)?;
    std::fs::write(
        w.join("haproxy.cfg"),
        format!(
            "global\n  nbthread {THREADS}\n  maxconn 8000\n  tune.ssl.default-dh-param 2048\ndefaults\n  mode http\n  \
             timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n\
             frontend h2c\n  bind 127.0.0.1:{h}  proto h2\n  default_backend be\n\
             frontend tls\n  bind 127.0.0.1:{t} ssl crt {pem} alpn h2,http/1.1\n  default_backend be\n\
             backend be\n  balance roundrobin\n  server b1 127.0.0.1:{b1} check inter 2s\n  \
             server b2 127.0.0.1:{b2} check inter 2s\n  server b3 127.0.0.1:{b3} check inter 2s\n",
            h = H2C[0],
            t = TLS[0],
            pem = combined.display()
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
             http {{ access_log off; keepalive_requests 100000; http2_max_requests 1000000;\n\
               upstream be {{ server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; server 127.0.0.1:{b3}; keepalive 64; }}\n\
               server {{ listen 127.0.0.1:{h} http2; listen 127.0.0.1:{t} ssl http2;\n\
                 ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.3;\n\
                 location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n",
            w = w.display(),
            h = H2C[1],
            t = TLS[1],
            cert = cert.display(),
            key = key.display()
        ),
    )?;
    g.spawn("nginx", Command::new("nginx").arg("-c").arg(w.join("lb.conf")).arg("-p").arg(&w), &w.join("lb.log"))?;
    let mut edge = Command::new(bin);
    edge.args(["run", "--admin", "off", "--mode", "userspace", "--log-level", "warn"]);
    edge.args(["--listen", &format!("127.0.0.1:{}", H2C[2])]);
    for b in BACKENDS {
        edge.args(["--backend", &format!("127.0.0.1:{b}")]);
    }
    g.spawn("edge", &mut edge, &w.join("edge.log"))?;
    // A second edge for HTTPS: --tls-cert makes every --listen listener HTTPS.
    let mut edge_tls = Command::new(bin);
    edge_tls.args(["run", "--admin", "off", "--mode", "userspace", "--log-level", "warn"]);
    edge_tls
        .args(["--listen", &format!("127.0.0.1:{}", TLS[2])])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    for b in BACKENDS {
        edge_tls.args(["--backend", &format!("127.0.0.1:{b}")]);
    }
    g.spawn("edge-tls", &mut edge_tls, &w.join("edge-tls.log"))?;
    for (i, peer) in PEERS.iter().enumerate() {
        let ready =
            wait_until(std::time::Duration::from_secs(10), || h2load(H2C[i], 64, 1, 1).is_ok() && https_ok(TLS[i]));
        if !ready {
            bail!(
                "{peer} did not answer on its h2c ({}) and HTTPS ({}) ports; logs in {}",
                H2C[i],
                TLS[i],
                w.display()
            );
        }
    }
    g.check_running()?;
    let seconds = settings.seconds.unwrap_or(SECONDS);
    println!("HTTP/2 and TLS termination through HAProxy, NGINX and edge; same backends");
    // Per run: requests per second, wrk's p99 or h2load's mean (it reports no percentiles), and
    // the requests completed.
    type Load = (&'static str, [&'static str; 3], Box<dyn Fn(usize) -> anyhow::Result<(f64, f64, f64)>>);
    let loads: Vec<Load> = vec![
        ("h2", H2C_PROCS, Box::new(move |i| h2load_timed(H2C[i], seconds))),
        (
            "tls-keepalive",
            TLS_PROCS,
            Box::new(move |i| {
                let r = wrk(&[], &["-t1".into(), "-c64".into(), format!("-d{seconds}s"), url(TLS[i])])?;
                Ok((r.rps, r.p99_us, r.requests))
            }),
        ),
        (
            "tls-new",
            TLS_PROCS,
            Box::new(move |i| {
                let args = [
                    "-t1".into(),
                    "-c16".into(),
                    format!("-d{seconds}s"),
                    "-H".into(),
                    "Connection: close".into(),
                    url(TLS[i]),
                ];
                let r = wrk(&[], &args)?;
                Ok((r.rps, r.p99_us, r.requests))
            }),
        ),
    ];
    for (load, procs, f) in &loads {
        let mut rps = vec![Vec::new(); PEERS.len()];
        let mut p99 = vec![Vec::new(); PEERS.len()];
        let mut cost = vec![Vec::new(); PEERS.len()];
        for round in 1..=settings.rounds {
            for i in round_order(round, PEERS.len()) {
                let peer = PEERS[i];
                let pid = g.pid(procs[i]).context("a peer has no process")?;
                let before = cpu::used_us(pid);
                let (r, p, n) = f(i).with_context(|| format!("{load} through {peer}"))?;
                let spent = cpu::used_us(pid).zip(before).map_or(f64::NAN, |(a, b)| (a - b) / n.max(1.0));
                println!(
                    "{load} round {round} {peer} rps={r:.0} {}={p:.0}us cpu_per_request={spent:.1}us",
                    latency(load)
                );
                rps[i].push(r);
                p99[i].push(p);
                cost[i].push(spent);
            }
        }
        let base = median(&rps[0]).max(1e-9);
        let base_cost = median(&cost[0]).max(1e-9);
        for (i, peer) in PEERS.iter().enumerate() {
            let (r, p, c) = (median(&rps[i]), median(&p99[i]), median(&cost[i]));
            println!(
                "median {load:<14} {peer:<8} rps={r:<10.0} {}_us={p:<8.0} cpu_us_per_request={c:<7.1} \
                 ratio_to_haproxy={:.3} cpu_ratio_to_haproxy={:.3}",
                latency(load),
                r / base,
                c / base_cost
            );
        }
        println!();
    }
    g.check_running().context("a peer stopped during the run; its numbers are not comparable")
}

/// Which latency figure a load reports.
fn latency(load: &str) -> &'static str {
    if load == "h2" { "mean" } else { "p99" }
}

fn url(port: u16) -> String {
    format!("https://127.0.0.1:{port}/")
}

/// Whether `GET /` over HTTPS answers 200 (wrk's TLS client, one request).
fn https_ok(port: u16) -> bool {
    wrk(&[], &["-t1".into(), "-c1".into(), "-d1s".into(), url(port)]).is_ok_and(|r| r.rps > 0.0 && r.errors == "none")
}

/// One h2load run of `n` requests over `c` connections with `m` streams each: requests per second.
fn h2load(port: u16, n: u32, c: u32, m: u32) -> anyhow::Result<f64> {
    let out = run_cmd(
        Command::new("h2load")
            .args(["-n", &n.to_string(), "-c", &c.to_string(), "-m", &m.to_string()])
            .arg(format!("http://127.0.0.1:{port}/")),
    )?;
    parse_h2load(&out).with_context(|| format!("cannot read h2load's report:\n{out}"))
}

/// A timed h2load run (64 connections, 10 streams each, for `seconds`): requests per second, and
/// the mean request time in microseconds (h2load reports no percentiles).
fn h2load_timed(port: u16, seconds: u64) -> anyhow::Result<(f64, f64, f64)> {
    let out = run_cmd(
        Command::new("h2load")
            .args(["-c", "64", "-m", "10", "-D", &seconds.to_string()])
            .arg(format!("http://127.0.0.1:{port}/")),
    )?;
    let rps = parse_h2load(&out).with_context(|| format!("cannot read h2load's report:\n{out}"))?;
    let mean = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("time for request:"))
        .and_then(|l| l.split_whitespace().nth(5))
        .and_then(to_us)
        .unwrap_or(0.0);
    let done = out
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("requests:"))
        .and_then(|l| l.split(',').find_map(|p| p.trim().strip_suffix(" succeeded")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(rps * seconds as f64);
    Ok((rps, mean, done))
}

/// "finished in 10.00s, 81234.50 req/s, ..." and every request succeeded.
fn parse_h2load(out: &str) -> Option<f64> {
    let status = out.lines().map(str::trim).find(|l| l.starts_with("requests:"))?;
    let failed: u64 = status.split(',').find_map(|p| p.trim().strip_suffix(" failed"))?.trim().parse().ok()?;
    if failed > 0 {
        return None;
    }
    let line = out.lines().map(str::trim).find(|l| l.starts_with("finished in"))?;
    line.split(',').nth(1)?.trim().strip_suffix(" req/s")?.trim().parse().ok()
}

/// "1.23ms" or "812us" or "1.1s" in microseconds.
fn to_us(s: &str) -> Option<f64> {
    if let Some(v) = s.strip_suffix("us") {
        v.parse().ok()
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse::<f64>().ok().map(|v| v * 1e3)
    } else {
        s.strip_suffix('s')?.parse::<f64>().ok().map(|v| v * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2load_reports() {
        let out = "finished in 10.00s, 81234.50 req/s, 3.00MB/s\nrequests: 812345 total, 812345 started, 812345 done, 812345 succeeded, 0 failed, 0 errored, 0 timeout\n\
                   time for request:      120us      9.80ms       780us       410us    71.23%\n";
        assert_eq!(parse_h2load(out), Some(81234.5));
        assert_eq!(to_us("780us"), Some(780.0));
        assert_eq!(to_us("9.80ms"), Some(9800.0));
        let failed = out.replace(" 0 failed", " 3 failed");
        assert_eq!(parse_h2load(&failed), None, "a run with failures is no figure");
    }
}
