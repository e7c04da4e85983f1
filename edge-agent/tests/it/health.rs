//! Health checking with real backends: detection, recovery, no flapping, readiness, draining.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::*;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn failing_backend_leaves_rotation_and_returns_after_rise() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let agent = Args::http()
        .backends(&[a.spec(), b.spec()])
        .with(&["--health-path", "/healthz", "--health-interval", "50ms", "--health-jitter", "0"])
        .with(&["--rise", "2", "--fall", "3"])
        .ready()
        .await;
    let admin_addr = agent.admin_addr.unwrap();
    a.behaviour.unhealthy.store(true, Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    let id = a.spec();
    let mut down = false;
    for _ in 0..200 {
        if state_of(admin_addr, &id).await == "unhealthy" {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(down, "backend a should be marked unhealthy");
    // fall 3 at 50 ms: the third failed probe lands 100-150 ms after the first; allow scheduling.
    assert!(t0.elapsed() < Duration::from_secs(2), "detected in {:?}", t0.elapsed());
    let c = client();
    let url = format!("http://{}/", agent.http_addrs[0]);
    let before = a.served();
    for _ in 0..20 {
        assert_eq!(get(&c, &url).await.1, "b");
    }
    assert_eq!(a.served(), before, "no traffic to an unhealthy backend");

    a.behaviour.unhealthy.store(false, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(5), || agent.monitor.snapshot().eligible().count() == 2).await);
    // It returns through probation (one request) and slow start (a weight that ramps up), so
    // its first requests are few: keep asking for up to 3 s.
    let mut seen_a = false;
    let t1 = std::time::Instant::now();
    while !seen_a && t1.elapsed() < Duration::from_secs(3) {
        seen_a = get(&c, &url).await.1 == "a";
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(seen_a, "recovered backend is back in rotation");
    let m = agent.metrics.render();
    let transitions =
        |kind: &str| format!("edge_backend_transitions_total{{service=\"default\",backend=\"{id}\",kind=\"{kind}\"}}");
    assert!(m.contains(&format!("{} 1", transitions("unhealthy"))), "{m}");
    // Healthy once (the first verdict); the recovery goes through slow start first.
    assert!(m.contains(&format!("{} 1", transitions("healthy"))), "{m}");
    assert!(m.contains(&format!("{} 1", transitions("slow_start"))), "{m}");
    agent.shutdown().await;
}

#[tokio::test]
async fn backend_failing_one_probe_in_three_does_not_flap() {
    let a = TestBackend::start("a").await;
    a.behaviour.flapping.store(true, Ordering::SeqCst);
    let spec = a.spec();
    let agent = Args::http()
        .backends(&[&spec])
        .with(&["--health-path", "/healthz", "--health-interval", "20ms", "--health-jitter", "0"])
        .ready()
        .await;
    let mut rx = agent.monitor.subscribe();
    let watcher = tokio::spawn(async move {
        let mut states = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while let Ok(Ok(())) = tokio::time::timeout_at(deadline, rx.changed()).await {
            states.insert(rx.borrow().backends[0].state());
        }
        states
    });
    let states = watcher.await.unwrap();
    assert_eq!(states, [edge_core::backend::State::Healthy].into(), "published states: {states:?}");
    let m = agent.metrics.render();
    let failures = m
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "edge_health_checks_total{{service=\"default\",backend=\"{spec}\",kind=\"failure\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failures >= 10, "the backend really failed probes ({failures})");
    assert!(!m.contains("kind=\"unhealthy\"} 1"), "never went unhealthy:\n{m}");
    agent.shutdown().await;
}

#[tokio::test]
async fn readyz_waits_for_the_first_probe_round() {
    let a = TestBackend::start("a").await;
    let spec = a.spec();
    // The probe path makes the first probe take 400 ms.
    let agent =
        Args::http().backends(&[&spec]).with(&["--health-path", "/sleep/400", "--health-timeout", "2s"]).start().await;
    let admin_addr = agent.admin_addr.unwrap();
    let (status, body) = admin(admin_addr, "GET", "/readyz", None, None).await;
    assert_eq!((status, body.contains("false")), (503, true), "{body}");
    assert!(eventually(Duration::from_secs(5), || agent.monitor.is_ready()).await);
    let (status, _) = admin(admin_addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200);
    let (status, _) = admin(admin_addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    agent.shutdown().await;
}

#[tokio::test]
async fn draining_keeps_open_connections_and_stops_new_ones() {
    let (e1, e2) = (EchoBackend::start().await, EchoBackend::start().await);
    let (s1, s2) = (e1.addr.to_string(), e2.addr.to_string());
    let agent = Args::tcp().backends(&[&s1, &s2]).with(&["--health-interval", "50ms"]).ready().await;
    let admin_addr = agent.admin_addr.unwrap();
    let proxy = agent.tcp_addrs[0];
    // Open connections until one lands on e1 (round robin: at most two).
    let mut held = None;
    for _ in 0..2 {
        let before = e1.used.load(Ordering::SeqCst);
        let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        if e1.used.load(Ordering::SeqCst) > before {
            held = Some(s);
            break;
        }
    }
    let mut held = held.expect("a connection to backend 1");
    let (status, body) = admin(admin_addr, "POST", &format!("/admin/backends/{s1}/drain"), None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"state\": \"draining\""), "{body}");
    let e1_before = e1.used.load(Ordering::SeqCst);
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
    }
    assert_eq!(e1.used.load(Ordering::SeqCst), e1_before, "no new connection to a draining backend");
    // The connection opened before the drain still works.
    held.write_all(b"still").await.unwrap();
    let mut buf = [0u8; 5];
    held.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still");
    let (status, _) = admin(admin_addr, "POST", &format!("/admin/backends/{s1}/undrain"), None, None).await;
    assert_eq!(status, 200);
    assert_eq!(state_of(admin_addr, &s1).await, "healthy");
    drop(held);
    agent.shutdown().await;
}

#[tokio::test]
async fn draining_applies_to_http_traffic() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let (sa, sb) = (a.spec(), b.spec());
    let agent = Args::http().backends(&[&sa, &sb]).ready().await;
    agent.monitor.drain(&sa).await.unwrap();
    let c = client();
    for _ in 0..10 {
        let (status, backend, _) = get(&c, &format!("http://{}/", agent.http_addrs[0])).await;
        assert_eq!((status, backend.as_str()), (StatusCode::OK, "b"));
    }
    agent.shutdown().await;
}
