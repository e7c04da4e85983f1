//! The overload benchmark's load generator (`cargo xtask bench overload` runs it): an agent
//! binary in front of an in-process backend (64 requests at a time, 2 ms each, the rest queue),
//! measured first closed-loop for its capacity, then driven open-loop at a multiple of that
//! capacity while the admin listener is probed.
//!
//! Open loop: request `i` is due at `start + i / rate` whether or not earlier ones were answered,
//! and its latency counts from when it was due, so queueing anywhere (the generator's own
//! connection pool included) shows in the figures instead of slowing the load down (the
//! "coordinated omission" of closed-loop tools). The schedule is dealt round robin over
//! `OPEN_CONNS` keep-alive connections (as wrk2 does, with more connections than the agent admits
//! requests, so that its admission control is what decides). Everything is bounded: the phases
//! last seconds, every request and probe has a 10 s timeout, and the process stops itself.
//!
//! Usage: `overload AGENT_BINARY [MULTIPLE] [EXTRA AGENT ARGS...]`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OPEN_CONNS: u64 = 2048;
const BACKEND_CONCURRENCY: usize = 64;
const BACKEND_SERVICE: Duration = Duration::from_millis(2);
const CAPACITY_CONNS: usize = 64;
const CAPACITY_SECS: u64 = 4;
const OVERLOAD_SECS: u64 = 6;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Test double: a backend with a fixed service time and a concurrency limit beyond which
/// requests queue, so that it, not the proxy, is what saturates (as backends do in practice).
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let slots = Arc::new(tokio::sync::Semaphore::new(BACKEND_CONCURRENCY));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let slots = slots.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 2048];
                loop {
                    let n = match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let Ok(_slot) = slots.acquire().await else { return };
                        tokio::time::sleep(BACKEND_SERVICE).await;
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Reads one response; returns its status and whether the connection may be reused.
async fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, bool)> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status: u16 = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        return Ok((status, !head.contains("connection: close")));
    }
}

#[derive(Default)]
struct Tally {
    /// 200s: latency from when the request was due, and from when it was sent.
    ok: Mutex<Vec<(Duration, Duration)>>,
    shed: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
}

/// One connection's share of the schedule: requests `i`, `i + n`, `i + 2n`, ... each due at
/// `start + k / rate`. A request sent late (the connection was still busy) counts from its due
/// time.
async fn paced(addr: SocketAddr, i: u64, n: u64, rate: f64, start: Instant, stop: Instant, tally: Arc<Tally>) {
    let mut conn: Option<TcpStream> = None;
    let mut k = i;
    loop {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        if due >= stop {
            return;
        }
        k += n;
        if Instant::now() >= stop {
            // Behind schedule at the end: the rest counts as never sent.
            return;
        }
        tokio::time::sleep_until(due.into()).await;
        let mut s = match conn.take() {
            Some(s) => s,
            None => match tokio::time::timeout(TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    s
                }
                _ => {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let r = tokio::time::timeout(TIMEOUT, async {
            s.write_all(b"GET / HTTP/1.1\r\nHost: overload\r\n\r\n").await?;
            read_response(&mut s).await
        })
        .await;
        match r {
            Ok(Ok((status, reuse))) => {
                match status {
                    200 => tally.ok.lock().unwrap().push((due.elapsed(), sent.elapsed())),
                    503 => drop(tally.shed.fetch_add(1, Ordering::Relaxed)),
                    _ => drop(tally.other.fetch_add(1, Ordering::Relaxed)),
                }
                if reuse {
                    conn = Some(s);
                }
            }
            _ => drop(tally.errors.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1000.0
}

/// Closed loop: `CAPACITY_CONNS` connections, back to back; returns requests per second and the
/// latencies.
async fn capacity(addr: SocketAddr) -> (f64, Vec<Duration>) {
    let stop = Instant::now() + Duration::from_secs(CAPACITY_SECS);
    let lat = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..CAPACITY_CONNS {
        let lat = lat.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else { return };
            let _ = s.set_nodelay(true);
            while Instant::now() < stop {
                let t = Instant::now();
                if s.write_all(b"GET / HTTP/1.1\r\nHost: overload\r\n\r\n").await.is_err() {
                    return;
                }
                match tokio::time::timeout(TIMEOUT, read_response(&mut s)).await {
                    Ok(Ok((200, true))) => lat.lock().unwrap().push(t.elapsed()),
                    _ => return,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let lat = std::mem::take(&mut *lat.lock().unwrap());
    (lat.len() as f64 / CAPACITY_SECS as f64, lat)
}

/// Probes the admin listener every 100 ms until `stop`; latencies per path (a failure counts as
/// the timeout).
async fn probe(admin: SocketAddr, stop: Instant) -> Vec<(&'static str, Vec<Duration>)> {
    let paths = ["/healthz", "/readyz", "/metrics", "/admin/backends"];
    let mut out: Vec<(&'static str, Vec<Duration>)> = paths.iter().map(|p| (*p, Vec::new())).collect();
    while Instant::now() < stop {
        for (path, lat) in &mut out {
            let t = Instant::now();
            let r = tokio::time::timeout(TIMEOUT, async {
                let mut s = TcpStream::connect(admin).await?;
                s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())
                    .await?;
                let mut v = Vec::new();
                s.read_to_end(&mut v).await?;
                Ok::<_, std::io::Error>(v.starts_with(b"HTTP/1.1 200"))
            })
            .await;
            lat.push(if matches!(r, Ok(Ok(true))) { t.elapsed() } else { TIMEOUT });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

async fn open_loop(addr: SocketAddr, admin: SocketAddr, rate: f64) {
    let tally = Arc::new(Tally::default());
    let start = Instant::now() + Duration::from_millis(100);
    let stop = start + Duration::from_secs(OVERLOAD_SECS);
    let prober = tokio::spawn(probe(admin, stop));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..OPEN_CONNS {
        tasks.spawn(paced(addr, i, OPEN_CONNS, rate, start, stop, tally.clone()));
    }
    while tasks.join_next().await.is_some() {}
    let probes = prober.await.unwrap();
    let ok = std::mem::take(&mut *tally.ok.lock().unwrap());
    let (shed, other, errors) =
        (tally.shed.load(Ordering::Relaxed), tally.other.load(Ordering::Relaxed), tally.errors.load(Ordering::Relaxed));
    let due = (rate * OVERLOAD_SECS as f64) as u64;
    let answered = ok.len() as u64 + shed + other + errors;
    println!(
        "  offered {rate:.0}/s for {OVERLOAD_SECS} s on {OPEN_CONNS} connections ({due} due): {} answered 200, \
         {shed} shed (503), {other} other status, {errors} failed or timed out, {} never sent (connections busy)",
        ok.len(),
        due.saturating_sub(answered),
    );
    let (mut from_due, mut from_sent): (Vec<Duration>, Vec<Duration>) = ok.iter().copied().unzip();
    println!(
        "  200s: {:.0}/s; latency from due time p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; from sending p50 {:.1} ms, \
         p99 {:.1} ms",
        ok.len() as f64 / OVERLOAD_SECS as f64,
        pct(&mut from_due, 0.50),
        pct(&mut from_due, 0.99),
        pct(&mut from_due, 1.0),
        pct(&mut from_sent, 0.50),
        pct(&mut from_sent, 0.99),
    );
    for (path, mut lat) in probes {
        println!(
            "  admin {path}: {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            lat.len(),
            pct(&mut lat, 0.50),
            pct(&mut lat, 0.99),
            pct(&mut lat, 1.0)
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let agent = args.next().expect("usage: overload AGENT_BINARY [MULTIPLE] [AGENT ARGS...]");
    let multiple: f64 = args.next().map_or(2.0, |m| m.parse().expect("MULTIPLE is a number"));
    let extra: Vec<String> = args.collect();
    let b = backend().await;
    let (port, admin_port) = (free_port(), free_port());
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let mut child = std::process::Command::new(&agent)
        .args(["run", "--mode", "userspace", "--listen", &listen.to_string(), "--backend", &b.to_string()])
        .args(["--admin", &admin.to_string(), "--log-level", "warn", "--health-interval", "1s"])
        .args(&extra)
        .spawn()
        .expect("the agent binary starts");
    let ready = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).await.is_err() {
        if Instant::now() > ready {
            let _ = child.kill();
            panic!("the agent did not listen within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("agent flags: {}", if extra.is_empty() { "(defaults)".to_string() } else { extra.join(" ") });
    let (cap, mut lat) = capacity(listen).await;
    println!(
        "  capacity (closed loop, {CAPACITY_CONNS} connections, {CAPACITY_SECS} s): {cap:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut lat, 0.50),
        pct(&mut lat, 0.99)
    );
    open_loop(listen, admin, cap * multiple).await;
    let _ = child.kill();
    let _ = child.wait();
}
