//! The admin API: endpoints, JSON shapes, the token, and the metric families it exports.

use crate::support::*;

#[tokio::test]
async fn mutating_calls_need_the_token_reads_do_not() {
    let b = TestBackend::start("a").await;
    let spec = b.spec();
    let agent = Args::http().backends(&[&spec]).with(&["--admin-token", "s3cret"]).ready().await;
    let a = agent.admin_addr.unwrap();
    let drain = format!("/admin/backends/{spec}/drain");
    let (status, body) = admin(a, "POST", &drain, None, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert_eq!(admin(a, "POST", &drain, Some("wrong"), None).await.0, 401);
    assert_eq!(admin(a, "PUT", "/admin/strategy", None, Some(r#"{"strategy":"least-connections"}"#)).await.0, 401);
    assert_eq!(agent.monitor.snapshot().eligible().count(), 1, "nothing changed without the token");
    for path in ["/admin/backends", "/admin/state", "/admin/strategy", "/metrics", "/healthz", "/readyz"] {
        assert_eq!(admin(a, "GET", path, None, None).await.0, 200, "{path}");
    }
    assert_eq!(admin(a, "POST", &drain, Some("s3cret"), None).await.0, 200);
    assert_eq!(state_of(a, &spec).await, "draining");
    assert_eq!(
        admin(a, "PUT", "/admin/strategy", Some("s3cret"), Some(r#"{"strategy":"least-connections"}"#)).await.0,
        200
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn a_non_loopback_admin_listener_starts_with_a_token_or_when_told_to() {
    let b = TestBackend::start("a").await;
    let base = Args::words(&["--listen", "127.0.0.1:0", "--mode", "userspace", "--admin", "0.0.0.0:0"]);
    for extra in [["--admin-token", "t"].as_slice(), ["--admin-insecure"].as_slice()] {
        let agent = base.clone().with(extra).backends(&[b.spec()]).start().await;
        let a = agent.admin_addr.unwrap();
        assert!(a.ip().is_unspecified(), "{a}");
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], a.port()));
        assert_eq!(admin(local, "GET", "/healthz", None, None).await.0, 200, "{extra:?}");
        agent.shutdown().await;
    }
}

#[tokio::test]
async fn endpoints_shapes_and_errors() {
    let b = TestBackend::start("a").await;
    let spec = b.spec();
    let agent = Args::http().with(&["--listen-tcp", "127.0.0.1:0"]).backends(&[&spec]).ready().await;
    let a = agent.admin_addr.unwrap();

    let list = backends(a).await;
    let first = &list[0];
    assert_eq!(first["id"], spec.as_str());
    assert_eq!(first["state"], "healthy");
    assert_eq!(first["weight"], 1);
    assert_eq!(first["last_probe"]["passed"], true);
    assert!(first["reason"].as_str().unwrap().starts_with("health: first probe passed"), "{first}");
    assert_eq!((first["weight_percent"].clone(), first["ejections"].clone()), (100.into(), 0.into()));
    assert!(
        first["next_probe"].as_f64().is_some() && first["ejected_until"].is_null() && first["slow_start"].is_null()
    );

    let (_, body) = admin(a, "GET", "/admin/state", None, None).await;
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["dataplane"]["mode"], "userspace");
    assert_eq!(state["dataplane"]["requested"], "userspace");
    assert_eq!(state["ready"], true);
    assert_eq!(state["strategy"]["strategy"], "round-robin");
    assert_eq!(state["backends"]["healthy"], 1);
    assert_eq!((state["backends"]["ejected"].clone(), state["backends"]["slow_start"].clone()), (0.into(), 0.into()));
    assert!(state["panic"].is_null());

    // The event log: newest first, with the same words as the reasons.
    assert_eq!(admin(a, "POST", &format!("/admin/backends/{spec}/drain"), None, None).await.0, 200);
    let (status, body) = admin(a, "GET", "/admin/events", None, None).await;
    assert_eq!(status, 200, "{body}");
    let events: serde_json::Value = serde_json::from_str(&body).unwrap();
    let newest = &events[0];
    assert_eq!((newest["backend"].as_str(), newest["service"].as_str()), (Some(spec.as_str()), Some("default")));
    assert_eq!((newest["from"].as_str(), newest["to"].as_str()), (Some("healthy"), Some("draining")));
    assert!(newest["reason"].as_str().unwrap().starts_with("drained by admin"), "{newest}");
    let oldest = events.as_array().unwrap().last().unwrap();
    assert_eq!((oldest["to"].as_str(), oldest["from"].is_null()), (Some("unknown"), true), "{events}");
    assert_eq!(admin(a, "GET", "/admin/events?service=nope", None, None).await.0, 404);
    assert_eq!(admin(a, "POST", "/admin/events", None, None).await.0, 405);
    assert_eq!(state["listen_tcp"].as_array().unwrap().len(), 1);

    let (status, body) = admin(a, "POST", "/admin/backends/10.9.9.9:1/drain", None, None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("GET /admin/backends"), "{body}");
    assert_eq!(admin(a, "GET", "/admin/nope", None, None).await.0, 404);
    assert_eq!(admin(a, "DELETE", "/admin/backends", None, None).await.0, 405);
    assert_eq!(admin(a, "GET", &format!("/admin/backends/{spec}/drain"), None, None).await.0, 405);
    let (status, _) = admin(a, "PUT", "/admin/strategy", None, Some(&"x".repeat(70_000))).await;
    assert_eq!(status, 413);
    agent.shutdown().await;
}

/// What the console computes rates and p99 from: responses by class and the latency histogram per
/// backend; and `/admin/dataplane`, empty in userspace mode.
#[tokio::test]
async fn backends_carry_responses_and_latency_and_the_dataplane_view_answers() {
    let b = TestBackend::start("a").await;
    let agent = Args::http().backends(&[b.spec()]).ready().await;
    let a = agent.admin_addr.unwrap();
    let c = client();
    for _ in 0..5 {
        assert_eq!(get(&c, &format!("http://{}/", agent.http_addrs[0])).await.0, 200);
    }
    let list = backends(a).await;
    let first = &list[0];
    assert_eq!(first["responses"]["2xx"], 5, "{first}");
    assert_eq!(first["responses"]["5xx"], 0, "{first}");
    let le = first["latency"]["le"].as_array().unwrap();
    let counts = first["latency"]["counts"].as_array().unwrap();
    assert_eq!(le.len(), counts.len());
    assert!(le.last().unwrap().is_null() && le[0].as_f64().is_some(), "the last bucket is +Inf: {le:?}");
    assert_eq!(counts.iter().map(|n| n.as_u64().unwrap()).sum::<u64>(), 5);
    let (status, body) = admin(a, "GET", "/admin/dataplane", None, None).await;
    assert_eq!(status, 200, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["mode"], "userspace");
    assert_eq!((d["services"].as_array().unwrap().len(), d["backends"].as_array().unwrap().len()), (0, 0));
    assert_eq!(admin(a, "POST", "/admin/dataplane", None, None).await.0, 405);
    let (status, body) = admin(a, "GET", "/admin/monitor", None, None).await;
    assert!(status == 409 && body.contains("needs the eBPF data plane"), "{status} {body}");
    agent.shutdown().await;
}

#[tokio::test]
async fn metrics_cover_the_required_families() {
    let b = TestBackend::start("a").await;
    let spec = b.spec();
    let agent = Args::http().backends(&[&spec]).ready().await;
    get(&client(), &format!("http://{}/", agent.http_addrs[0])).await;
    let (status, text) = admin(agent.admin_addr.unwrap(), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    for family in [
        "edge_requests_total{",
        "edge_request_duration_seconds_bucket{",
        "edge_backend_state{",
        "edge_health_checks_total{",
        "edge_backend_active_connections{",
        "edge_tcp_bytes_total{",
        "edge_strategy{",
        "edge_strategy_switches_total{service=\"default\"} 0",
        "edge_dataplane_mode{mode=\"userspace\"} 1",
        "edge_discovery_updates_total{service=\"default\",source=\"static\"} 1",
        "edge_ready 1",
        "edge_backend_state{service=\"default\",backend=",
        "state=\"ejected\"} 0",
        "state=\"slow_start\"} 0",
        "edge_backend_ejections_total{",
        "edge_backend_gateway_failures_total{",
        "edge_retry_outcomes_total{service=\"default\",outcome=\"budget_exhausted\"} 0",
        "edge_service_panic{service=\"default\"} 0",
    ] {
        assert!(text.contains(family), "missing {family}:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    agent.shutdown().await;
}

#[tokio::test]
async fn a_slow_admin_body_gets_408_and_idle_admin_connections_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = TestBackend::start("a").await;
    let agent = Args::http().with(&["--header-read-timeout", "300ms"]).backends(&[b.spec()]).ready().await;
    let a = agent.admin_addr.unwrap();
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"PUT /admin/strategy HTTP/1.1\r\nHost: admin\r\ncontent-length: 40\r\n\r\n{\"str").await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "the connection is not held");
    assert!(got.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&got));
    // An idle keep-alive connection closes after the same limit.
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "idle admin connection closed");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    agent.shutdown().await;
}
