//! Admission limits: beyond `--max-connections`, new connections wait in the accept queue (served
//! once another closes) and the pause is counted; beyond `--max-requests` in flight, requests get
//! 503 at once.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn request(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let b = TestBackend::start("a").await;
    let agent = Args::http().with(&["--max-connections", "2", "--workers", "2"]).backends(&[b.spec()]).ready().await;
    let addr = agent.http_addrs[0];
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(request(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(request(&mut second).await.starts_with("HTTP/1.1 200"));
    // The kernel completes the handshake, but the agent does not accept it yet.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "a third connection is not served while two are open");
    let m = agent.metrics.render();
    let paused: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("edge_connections_limited_total{} "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("counted:\n{m}"));
    assert!(paused >= 1, "each worker that paused counts once: {paused}");
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "served once one closed");
    agent.shutdown().await;
}

#[tokio::test]
async fn requests_beyond_the_budget_get_503_at_once_and_are_counted() {
    let b = TestBackend::start("a").await;
    let agent = Args::http().with(&["--max-requests", "1"]).backends(&[b.spec()]).ready().await;
    let addr = agent.http_addrs[0];
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /sleep/1000 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    assert!(eventually(Duration::from_secs(2), || b.served() == 1).await, "the first request is in flight");
    let t0 = std::time::Instant::now();
    let mut other = TcpStream::connect(addr).await.unwrap();
    let r = request(&mut other).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 1"), "{r}");
    assert!(t0.elapsed() < Duration::from_millis(500), "answered at once, not queued");
    assert_eq!(b.served(), 1, "the shed request never reached the backend");
    let m = agent.metrics.render();
    assert!(m.contains("edge_requests_shed_total{} 1"), "{m}");
    // Once the first one finishes, requests are admitted again.
    let mut buf = vec![0u8; 1024];
    let n = slow.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(request(&mut other).await.starts_with("HTTP/1.1 200"));
    agent.shutdown().await;
}
