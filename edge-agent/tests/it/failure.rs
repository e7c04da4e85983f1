//! Failure handling end to end in userspace mode: outlier ejection of a backend that passes its
//! probes but fails real requests, retries that hide it from clients, the return through probation
//! and slow start, and the bound on retries under a total outage.

use std::sync::atomic::Ordering;
use std::time::Duration;

use edge_core::backend::State;
use edge_proxy::RetryOutcome;
use http::StatusCode;

use crate::support::{Args, TestBackend, client, eventually, get};

fn state(agent: &edge_agent::app::AgentHandle, b: &TestBackend) -> (State, String) {
    let set = agent.monitor.snapshot();
    let v = set.get(&b.spec()).expect("known backend");
    (v.state(), v.reason.clone())
}

#[tokio::test]
async fn a_gray_backend_is_ejected_retries_hide_it_and_it_returns_gradually() {
    let (a, b, c) = (TestBackend::start("a").await, TestBackend::start("b").await, TestBackend::start("c").await);
    // a passes every probe but answers 503 to every other request.
    a.behaviour.fail_every.store(2, Ordering::SeqCst);
    let specs = [a.spec(), b.spec(), c.spec()];
    let agent = Args::http()
        .backends(&specs)
        .with(&["--health-path", "/healthz", "--health-interval", "100ms", "--outlier-base-ejection", "1500ms"])
        .with(&["--slow-start", "2s"])
        .ready()
        .await;
    let url = format!("http://{}/", agent.http_addrs[0]);
    let http = client();

    // Idempotent requests never see a failure: a's 503s are retried elsewhere, then a is out.
    for i in 0..300 {
        let (status, _, _) = get(&http, &url).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
    }
    let (st, reason) = state(&agent, &a);
    assert_eq!(st, State::Ejected, "{reason}");
    assert!(reason.starts_with("outlier: ") && reason.contains("last: http 503"), "{reason}");
    assert_eq!(agent.services[0].traffic.retry_outcomes(RetryOutcome::BudgetExhausted), 0);
    assert!(agent.services[0].traffic.retry_outcomes(RetryOutcome::Succeeded) > 0);
    let served = a.served();
    for _ in 0..30 {
        assert_eq!(get(&http, &url).await.0, StatusCode::OK);
    }
    assert_eq!(a.served(), served, "no traffic to an ejected backend");

    // a recovers: after its ejection time it takes one request on probation, then ramps up.
    a.behaviour.fail_every.store(0, Ordering::SeqCst);
    let mut saw_slow_start_share = None;
    let back = eventually(Duration::from_secs(10), || state(&agent, &a).0 != State::Ejected).await;
    assert!(back, "returns after its ejection time");
    // Keep traffic flowing so probation gets its request, and measure a's share during slow start.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline && state(&agent, &a).0 != State::Healthy {
        if state(&agent, &a).0 == State::SlowStart && saw_slow_start_share.is_none() {
            let (before_a, before_b) = (a.served(), b.served());
            for _ in 0..40 {
                assert_eq!(get(&http, &url).await.0, StatusCode::OK);
            }
            saw_slow_start_share = Some((a.served() - before_a, b.served() - before_b));
        }
        assert_eq!(get(&http, &url).await.0, StatusCode::OK);
    }
    assert_eq!(state(&agent, &a).0, State::Healthy);
    let (to_a, to_b) = saw_slow_start_share.expect("slow start was seen");
    assert!(to_a * 2 < to_b, "slow start sends a less than b: {to_a} vs {to_b}");
    let path: Vec<String> = agent
        .monitor
        .events()
        .iter()
        .rev()
        .filter(|e| e.backend.as_deref() == Some(a.spec().as_str()))
        .filter_map(|e| e.to.map(|s| s.as_str().to_string()))
        .collect();
    assert_eq!(path, ["unknown", "healthy", "ejected", "probation", "slow_start", "healthy"], "{path:?}");
    agent.shutdown().await;
}

/// Requests every backend received, probes excluded.
fn reached(backends: &[TestBackend]) -> u64 {
    backends.iter().map(TestBackend::served).sum()
}

/// Sends `rate` requests per second for `secs` seconds, as a steady open loop; returns how many.
async fn steady_load(url: &str, rate: u64, secs: u64) -> u64 {
    let http = client();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate).unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..rate * secs {
        tick.tick().await;
        let (http, url) = (http.clone(), url.to_string());
        tasks.spawn(async move { get(&http, &url).await.0 });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        r.expect("request task");
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_total_outage_is_not_amplified_by_retries() {
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await, TestBackend::start("c").await];
    let specs: Vec<String> = backends.iter().map(TestBackend::spec).collect();
    let agent =
        Args::http().backends(&specs).with(&["--health-path", "/healthz", "--health-interval", "200ms"]).ready().await;
    let url = format!("http://{}/", agent.http_addrs[0]);
    // Every backend answers 503 to everything, probes included, for the whole 10 s of load.
    for b in &backends {
        b.behaviour.fail_every.store(1, Ordering::SeqCst);
        b.behaviour.unhealthy.store(true, Ordering::SeqCst);
    }
    let before = reached(&backends);
    let sent = steady_load(&url, 100, 10).await;
    let ratio = (reached(&backends) - before) as f64 / sent as f64;
    assert!(ratio <= 1.2, "attempts reaching backends per client request: {ratio:.3}");
    assert!(ratio >= 1.0, "every request reached a backend (panic mode spreads over all): {ratio:.3}");
    println!("total outage: {sent} requests, {ratio:.3} attempts per request");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_gray_total_outage_is_bounded_by_the_budget() {
    // Probes pass, every request fails: no panic mode, so the budget alone bounds retries.
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await, TestBackend::start("c").await];
    let specs: Vec<String> = backends.iter().map(TestBackend::spec).collect();
    let agent = Args::http().backends(&specs).with(&["--health-path", "/healthz"]).ready().await;
    let url = format!("http://{}/", agent.http_addrs[0]);
    for b in &backends {
        b.behaviour.fail_every.store(1, Ordering::SeqCst);
    }
    let before = reached(&backends);
    let sent = steady_load(&url, 100, 5).await;
    let retries = reached(&backends) - before - sent;
    // The budget: 20 % of requests plus the bucket's 10 tokens it starts with.
    assert!(retries <= sent / 5 + 10, "{retries} retries for {sent} requests");
    assert!(retries >= sent / 10, "the budget was used: {retries}");
    let traffic = &agent.services[0].traffic;
    assert!(traffic.retry_outcomes(RetryOutcome::BudgetExhausted) > 0, "exhaustion is counted");
    let m = agent.metrics.render();
    assert!(m.contains("edge_retry_outcomes_total{service=\"default\",outcome=\"budget_exhausted\"}"), "{m}");
    agent.shutdown().await;
}
