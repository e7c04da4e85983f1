//! The memory cost of idle client connections: the agent (userspace proxy, 2 workers) in front of
//! one in-process backend; each round opens `EDGE_BENCH_CONNS` (default 5,000) keep-alive
//! connections that each make one request and then stay open, idle, and closes them all. Resident
//! memory (VmRSS) is read before the round, at the peak with every connection open, and 3 s after
//! they closed; three rounds show whether memory goes back down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::procs::{Guard, wait_until};

/// Test double: a backend answering every request head with a 3-byte body, a thread per connection.
fn backend() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = match s.try_clone() {
                    Ok(w) => w,
                    Err(_) => return,
                };
                let mut r = BufReader::new(s);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => {
                            if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// VmRSS of `pid`, MiB.
pub(crate) fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kb as f64 / 1024.0)
}

/// One request on `s`, answered by the 3-byte body.
fn one_request(s: &mut TcpStream) -> anyhow::Result<()> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"ok\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("the agent closed a connection: {}", String::from_utf8_lossy(&got));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Runs the rounds and prints the curve.
pub(crate) fn run(bin: &Path) -> anyhow::Result<()> {
    let n: usize = std::env::var("EDGE_BENCH_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let mut g = Guard::default();
    let w = g.temp_dir("conns")?;
    let b = backend()?;
    let (port, admin) = (free_port()?, free_port()?);
    let listen = format!("127.0.0.1:{port}");
    g.spawn(
        "edge-agent",
        Command::new(bin)
            .args(["run", "--mode", "userspace", "--listen", &listen, "--backend", &b.to_string()])
            .args(["--admin", &format!("127.0.0.1:{admin}"), "--workers", "2", "--log-level", "warn"])
            .args(["--max-connections", &(n + 100).to_string(), "--idle-timeout", "10m"]),
        &w.join("agent.log"),
    )?;
    let pid = g.pid("edge-agent").context("the agent did not start")?;
    if !wait_until(Duration::from_secs(10), || TcpStream::connect(&listen).is_ok()) {
        bail!("the agent did not listen on {listen} within 10 s; see {}", w.join("agent.log").display());
    }
    std::thread::sleep(Duration::from_secs(1));
    println!("idle connections: {n} per round, each after one request");
    println!("{:>5} {:>12} {:>12} {:>12} {:>16}", "round", "before MiB", "peak MiB", "after MiB", "KiB/connection");
    for round in 1..=3 {
        let before = rss_mib(pid)?;
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = TcpStream::connect(&listen).context("connecting to the agent")?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            one_request(&mut s)?;
            conns.push(s);
        }
        std::thread::sleep(Duration::from_secs(1));
        let peak = rss_mib(pid)?;
        drop(conns);
        std::thread::sleep(Duration::from_secs(3));
        let after = rss_mib(pid)?;
        let per = (peak - before) * 1024.0 / n as f64;
        println!("{round:>5} {before:>12.1} {peak:>12.1} {after:>12.1} {per:>16.1}");
    }
    Ok(())
}
