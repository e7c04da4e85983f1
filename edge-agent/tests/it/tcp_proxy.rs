//! The TCP proxy: bytes both ways, counters, connect retry, idle timeout.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn copies_bytes_both_ways_and_counts_them() {
    let e = EchoBackend::start().await;
    let spec = e.addr.to_string();
    let agent =
        agent(&["--listen-tcp", "127.0.0.1:0", "--admin", "off", "--mode", "userspace", "--backend", &spec]).await;
    agent.monitor.wait_ready().await;
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
    let m = &agent.monitor.snapshot().backends[0].shared.metrics;
    assert!(
        eventually(Duration::from_secs(2), || m.tcp_tx.get() == 100_000 && m.tcp_rx.get() == 100_000).await,
        "tx {} rx {}",
        m.tcp_tx.get(),
        m.tcp_rx.get()
    );
    assert!(eventually(Duration::from_secs(2), || m.active.get() == 0).await);
    let text = agent.metrics.render();
    assert!(text.contains(&format!("edge_tcp_bytes_total{{backend=\"{spec}\",kind=\"tx\"}} 100000")), "{text}");
    assert!(text.contains(&format!("edge_tcp_connections_total{{backend=\"{spec}\"}} 1")), "{text}");
    agent.shutdown().await;
}

#[tokio::test]
async fn refused_connect_moves_to_another_backend() {
    let (e1, e2) = (EchoBackend::start().await, EchoBackend::start().await);
    let (s1, s2) = (e1.addr.to_string(), e2.addr.to_string());
    let agent = agent(&[
        "--listen-tcp",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--mode",
        "userspace",
        "--backend",
        &s1,
        "--backend",
        &s2,
        "--health-interval",
        "1m",
    ])
    .await;
    agent.monitor.wait_ready().await;
    e1.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..6 {
        let mut s = TcpStream::connect(agent.tcp_addrs[0]).await.unwrap();
        s.write_all(b"hi").await.unwrap();
        let mut b = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut b)).await.unwrap().unwrap();
        assert_eq!(&b, b"hi");
    }
    assert!(agent.metrics.retries("connect") >= 2);
    agent.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let e = EchoBackend::start().await;
    let spec = e.addr.to_string();
    let agent = agent(&[
        "--listen-tcp",
        "127.0.0.1:0",
        "--admin",
        "off",
        "--mode",
        "userspace",
        "--backend",
        &spec,
        "--idle-timeout",
        "200ms",
    ])
    .await;
    agent.monitor.wait_ready().await;
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
