//! The TCP proxy: bytes both ways, counters, connect retry, idle timeout.

use std::time::{Duration, Instant};

use edge_core::backend::Direction;
use edge_proxy::RetryReason;

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn copies_bytes_both_ways_and_counts_them() {
    let e = EchoBackend::start().await;
    let spec = e.addr.to_string();
    let agent = Args::tcp().backends(&[&spec]).ready().await;
    let mut s = TcpStream::connect(agent.tcp_addrs[0]).await.unwrap();
    let payload = vec![7u8; 100_000];
    let (mut r, mut w) = s.split();
    let writer = async {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let reader = r.read_to_end(&mut back);
    let (_, n) = tokio::join!(writer, reader);
    assert_eq!(n.unwrap(), 100_000);
    assert_eq!(back, payload);
    drop(s);
    let backend = agent.monitor.snapshot().backends[0].backend.clone();
    let m = &backend.stats;
    assert!(
        eventually(Duration::from_secs(2), || m.bytes(Direction::Tx) == 100_000 && m.bytes(Direction::Rx) == 100_000)
            .await,
        "tx {} rx {}",
        m.bytes(Direction::Tx),
        m.bytes(Direction::Rx)
    );
    assert!(eventually(Duration::from_secs(2), || m.active() == 0).await);
    let text = agent.metrics.render();
    let labels = format!("service=\"default\",backend=\"{spec}\"");
    assert!(text.contains(&format!("edge_tcp_bytes_total{{{labels},kind=\"tx\"}} 100000")), "{text}");
    assert!(text.contains(&format!("edge_tcp_connections_total{{{labels}}} 1")), "{text}");
    agent.shutdown().await;
}

#[tokio::test]
async fn refused_connect_moves_to_another_backend() {
    let (e1, e2) = (EchoBackend::start().await, EchoBackend::start().await);
    let (s1, s2) = (e1.addr.to_string(), e2.addr.to_string());
    let agent = Args::tcp().backends(&[&s1, &s2]).with(&["--health-interval", "1m"]).ready().await;
    e1.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..6 {
        let mut s = TcpStream::connect(agent.tcp_addrs[0]).await.unwrap();
        s.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut b)).await.unwrap().unwrap();
        assert_eq!(&b, b"hi");
    }
    assert!(agent.services[0].traffic.retries(RetryReason::Connect) >= 2);
    agent.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let e = EchoBackend::start().await;
    let spec = e.addr.to_string();
    let agent = Args::tcp().backends(&[&spec]).with(&["--idle-timeout", "200ms"]).ready().await;
    let mut s = TcpStream::connect(agent.tcp_addrs[0]).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await.expect("closed by the proxy");
    assert_eq!(n.unwrap_or(0), 0);
    assert!(t0.elapsed() >= Duration::from_millis(150), "{:?}", t0.elapsed());
    agent.shutdown().await;
}
