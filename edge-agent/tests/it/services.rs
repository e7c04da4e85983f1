//! Several services through `--config` `[[service]]` tables, on the userspace data plane: each
//! VIP gets a TCP listener that balances over that service's backends only, `--listen-tcp` keeps
//! serving the top-level backends, and the admin API lists the services and acts on one of them
//! with `?service=NAME`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::*;

/// A loopback port nothing listens on right now (the agent binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes `text` as a config file in a fresh temporary folder.
fn config_file(text: &str) -> PathBuf {
    let path = temp_dir("services").join("edge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An agent with only the services of the config file at `path`.
fn with_config(path: &std::path::Path) -> Args {
    Args::words(&["--mode", "userspace", "--admin", "127.0.0.1:0", "--config", path.to_str().unwrap()])
}

/// One request on a fresh connection (the TCP proxy picks a backend per connection); the name of
/// the backend that answered (its `x-backend` header).
async fn backend_via(addr: SocketAddr) -> String {
    let text =
        raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n", Duration::from_secs(5)).await;
    text.lines()
        .find_map(|l| l.strip_prefix("x-backend: "))
        .unwrap_or_else(|| panic!("no x-backend header in the answer through {addr}: {text:?}"))
        .trim()
        .to_string()
}

async fn backends_via(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(backend_via(addr).await);
    }
    out
}

async fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = admin(addr, "GET", path, None, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

fn addresses(backends: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> =
        backends.as_array().unwrap().iter().map(|b| b["address"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn each_service_reaches_only_its_own_backends_and_admin_names_them() {
    let (a1, a2, b1) = (TestBackend::start("a1").await, TestBackend::start("a2").await, TestBackend::start("b1").await);
    let (web, api): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{}", free_port()).parse().unwrap(), format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let path = config_file(&format!(
        r#"health-interval = "100ms"

[[service]]
name = "web"
vip = "{web}"
backend = ["{}", "{}"]

[[service]]
name = "api"
vip = "{api}"
backends = ["{}"]
strategy = "least-connections"
"#,
        a1.spec(),
        a2.spec(),
        b1.spec()
    ));
    let agent = with_config(&path).start().await;
    assert_eq!(agent.services.len(), 2);
    for s in &agent.services {
        s.balancer.wait_ready().await;
    }
    assert_eq!(agent.tcp_addrs, vec![web, api], "one TCP listener per service VIP");
    let a = agent.admin_addr.unwrap();

    // Traffic: each VIP only reaches its own backends.
    let through_web = backends_via(web, 20).await;
    assert!(through_web.iter().all(|b| b == "a1" || b == "a2"), "{through_web:?}");
    assert!(through_web.contains(&"a1".into()) && through_web.contains(&"a2".into()), "{through_web:?}");
    let through_api = backends_via(api, 10).await;
    assert!(through_api.iter().all(|b| b == "b1"), "{through_api:?}");
    assert_eq!(b1.served(), 10);
    assert_eq!(a1.served() + a2.served(), 20);

    // GET /admin/services lists both, with their own backends, strategy and listener.
    let list = json(a, "/admin/services").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["vip"], web.to_string());
    assert_eq!(list[0]["ready"], true);
    assert_eq!(list[0]["strategy"]["strategy"], "round-robin");
    assert_eq!(list[0]["listeners"], serde_json::json!([web.to_string()]));
    let mut want = vec![a1.spec(), a2.spec()];
    want.sort();
    assert_eq!(addresses(&list[0]["backends"]), want);
    assert_eq!(list[0]["backends"][0]["state"], "healthy");
    assert_eq!(list[1]["name"], "api");
    assert_eq!(list[1]["strategy"]["strategy"], "least-connections");
    assert_eq!(addresses(&list[1]["backends"]), vec![b1.spec()]);

    // The other endpoints: the first service by default, another one by name.
    assert_eq!(addresses(&json(a, "/admin/backends").await), want);
    assert_eq!(addresses(&json(a, "/admin/backends?service=api").await), vec![b1.spec()]);
    assert_eq!(json(a, "/admin/strategy").await["strategy"], "round-robin");
    assert_eq!(json(a, "/admin/strategy?service=api").await["strategy"], "least-connections");
    let state = json(a, "/admin/state?service=api").await;
    assert_eq!((state["service"].clone(), state["services"].clone()), ("api".into(), 2.into()), "{state}");
    assert_eq!(state["backends"]["total"], 1, "{state}");
    assert_eq!(state["ready"], true);
    assert_eq!(admin(a, "GET", "/readyz", None, None).await.0, 200);
    agent.shutdown().await;
}

#[tokio::test]
async fn drain_and_strategy_act_on_the_named_service_only() {
    let (a1, a2, b1) = (TestBackend::start("a1").await, TestBackend::start("a2").await, TestBackend::start("b1").await);
    let (web, api): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{}", free_port()).parse().unwrap(), format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let path = config_file(&format!(
        "[[service]]\nname = \"web\"\nvip = \"{web}\"\nbackend = [\"{}\", \"{}\"]\n\
             [[service]]\nname = \"api\"\nvip = \"{api}\"\nbackend = \"{}\"\n",
        a1.spec(),
        a2.spec(),
        b1.spec()
    ));
    let agent = with_config(&path).start().await;
    for s in &agent.services {
        s.balancer.wait_ready().await;
    }
    let a = agent.admin_addr.unwrap();

    // a1 belongs to web: draining it under api's name is a 404 that says where it looked.
    let (status, body) =
        admin(a, "POST", &format!("/admin/backends/{}/drain?service=api", a1.spec()), None, None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("service 'api' has no backend with id"), "{body}");
    let (status, body) =
        admin(a, "POST", &format!("/admin/backends/{}/drain?service=nope", a1.spec()), None, None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no service named 'nope'; the services are 'web', 'api'"), "{body}");
    for path in ["/admin/backends?service=nope", "/admin/strategy?service=nope", "/admin/state?service=nope"] {
        assert_eq!(admin(a, "GET", path, None, None).await.0, 404, "{path}");
    }

    let (status, body) =
        admin(a, "POST", &format!("/admin/backends/{}/drain?service=web", a1.spec()), None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"draining\""), "{body}");
    let only_a2 = async {
        for _ in 0..200 {
            if backends_via(web, 4).await.iter().all(|b| b == "a2") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    assert!(only_a2.await, "new connections to web still reach the drained a1");
    let after = backends_via(web, 10).await;
    assert!(after.iter().all(|b| b == "a2"), "{after:?}");
    assert!(backends_via(api, 5).await.iter().all(|b| b == "b1"), "api is untouched");
    assert_eq!(agent.services[1].monitor.snapshot().eligible().count(), 1);

    // A strategy switch of api leaves web's strategy alone.
    let (status, body) =
        admin(a, "PUT", "/admin/strategy?service=api", None, Some(r#"{"strategy":"consistent-hash"}"#)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(a, "/admin/strategy?service=api").await["strategy"], "consistent-hash");
    assert_eq!(json(a, "/admin/strategy").await["strategy"], "round-robin");
    assert_eq!(json(a, "/admin/strategy?service=web").await["strategy"], "round-robin");

    // Undrain by name as well.
    let (status, body) =
        admin(a, "POST", &format!("/admin/backends/{}/undrain?service=web", a1.spec()), None, None).await;
    assert_eq!(status, 200, "{body}");
    agent.shutdown().await;
}

#[tokio::test]
async fn top_level_flags_stay_the_first_service_next_to_the_tables() {
    let (t1, s1) = (TestBackend::start("t1").await, TestBackend::start("s1").await);
    let vip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = config_file(&format!("[[service]]\nvip = \"{vip}\"\nbackend = \"{}\"\n", s1.spec()));
    let agent = Args::tcp().backends(&[t1.spec()]).with(&["--config", path.to_str().unwrap()]).start().await;
    for s in &agent.services {
        s.balancer.wait_ready().await;
    }
    let names: Vec<&str> = agent.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["default", vip.to_string().as_str()], "the VIP text names an unnamed service");
    assert_eq!(agent.tcp_addrs.len(), 2);
    assert_eq!(agent.tcp_addrs[1], vip);
    assert!(backends_via(agent.tcp_addrs[0], 5).await.iter().all(|b| b == "t1"));
    assert!(backends_via(vip, 5).await.iter().all(|b| b == "s1"));
    let a = agent.admin_addr.unwrap();
    let query = format!("/admin/backends?service={}", vip.to_string().replace(':', "%3A"));
    assert_eq!(addresses(&json(a, &query).await), vec![s1.spec()], "percent-encoded names work");
    assert_eq!(addresses(&json(a, "/admin/backends").await), vec![t1.spec()]);
    agent.shutdown().await;
}
