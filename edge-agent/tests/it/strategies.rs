//! Strategies end to end, and switching them at run time through the admin API.

use std::collections::{HashMap, HashSet};

use crate::support::*;

async fn three() -> (Vec<TestBackend>, Vec<String>) {
    let bs = vec![TestBackend::start("a").await, TestBackend::start("b").await, TestBackend::start("c").await];
    let specs = bs.iter().map(TestBackend::spec).collect();
    (bs, specs)
}

fn args(specs: &[String], extra: &[&str]) -> Args {
    Args::http().backends(specs).with(extra)
}

#[tokio::test]
async fn switching_to_consistent_hash_by_header_at_run_time() {
    let (_bs, specs) = three().await;
    let agent = args(&specs, &[]).ready().await;
    let admin_addr = agent.admin_addr.unwrap();
    let (status, body) = admin(
        admin_addr,
        "PUT",
        "/admin/strategy",
        None,
        Some(r#"{"strategy": "consistent-hash", "hash_key": "header:x-user-id"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = admin(admin_addr, "GET", "/admin/strategy", None, None).await;
    assert!(body.contains("consistent-hash") && body.contains("header:x-user-id"), "{body}");

    let c = client();
    let url = format!("http://{}/", agent.http_addrs[0]);
    let mut owner: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for user in 0..30 {
            let id = format!("user-{user}");
            let (_, backend, _) = get_with(&c, &url, &[("x-user-id", &id)]).await;
            if round == 0 {
                owner.insert(id, backend);
            } else {
                assert_eq!(owner[&id], backend, "user {id} moved");
            }
        }
    }
    let used: HashSet<&String> = owner.values().collect();
    assert!(used.len() >= 2, "30 users spread over several backends: {used:?}");
    let m = agent.metrics.render();
    assert!(m.contains("edge_strategy_switches_total{service=\"default\"} 1"), "{m}");
    let info = "edge_strategy{service=\"default\",strategy=\"consistent-hash\",hash_key=\"header:x-user-id\"} 1";
    assert!(m.contains(info), "{m}");
    assert!(!m.contains("strategy=\"round-robin\""), "old strategy info removed:\n{m}");
    agent.shutdown().await;
}

#[tokio::test]
async fn consistent_hash_by_source_sticks_a_client_to_one_backend() {
    let (_bs, specs) = three().await;
    let agent = args(&specs, &["--strategy", "consistent-hash"]).ready().await;
    let c = client();
    let seen: HashSet<String> = futures_join(&c, &format!("http://{}/", agent.http_addrs[0]), 20).await;
    assert_eq!(seen.len(), 1, "one client address, one backend: {seen:?}");
    agent.shutdown().await;
}

async fn futures_join(
    c: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    url: &str,
    n: usize,
) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        seen.insert(get(c, url).await.1);
    }
    seen
}

#[tokio::test]
async fn least_connections_avoids_a_busy_backend() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let (sa, sb) = (a.spec(), b.spec());
    let specs = [sa.clone(), sb.clone()];
    let agent = args(&specs, &["--strategy", "least-connections"]).ready().await;
    // Make a busy: with b drained, three hanging requests all land on a.
    agent.monitor.drain(&sb).await.unwrap();
    let url = format!("http://{}/hang", agent.http_addrs[0]);
    let mut hanging = Vec::new();
    for _ in 0..3 {
        let c = client();
        let u = url.clone();
        hanging.push(tokio::spawn(async move {
            let _ = c.get(u.parse().unwrap()).await;
        }));
    }
    assert!(eventually(std::time::Duration::from_secs(5), || a.served() == 3).await);
    agent.monitor.undrain(&sb).await.unwrap();
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &format!("http://{}/", agent.http_addrs[0])).await.1, "b", "b has no active requests");
    }
    let (_, body) = admin(agent.admin_addr.unwrap(), "GET", "/admin/backends", None, None).await;
    assert!(body.contains("\"active\": 3"), "{body}");
    for h in hanging {
        h.abort();
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn bad_strategy_requests_are_rejected_and_change_nothing() {
    let (_bs, specs) = three().await;
    let agent = args(&specs, &[]).start().await;
    let admin_addr = agent.admin_addr.unwrap();
    for (body, want) in [
        (r#"{"strategy": "random"}"#, "unknown strategy"),
        (r#"{"strategy": "consistent-hash", "hash_key": "cookie:x"}"#, "unknown hash key"),
        (r#"{"strategy": "round-robin", "extra": 1}"#, "invalid JSON"),
        ("not json", "invalid JSON"),
    ] {
        let (status, text) = admin(admin_addr, "PUT", "/admin/strategy", None, Some(body)).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    assert_eq!(agent.balancer.strategy().kind.as_str(), "round-robin");
    assert!(agent.metrics.render().contains("edge_strategy_switches_total{service=\"default\"} 0"));
    agent.shutdown().await;
}
