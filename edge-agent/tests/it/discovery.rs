//! Discovery from Consul (against the test double in `consul_double`) and from DNS (against a
//! real dnsmasq on a loopback port), with traffic flowing through the agent.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::consul_double::{ConsulDouble, Mode};
use crate::support::{Args, TestBackend, admin, backends, client, get};

/// The backends the admin API lists, with their states.
async fn listed(admin_addr: std::net::SocketAddr) -> BTreeSet<(String, String)> {
    backends(admin_addr)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["id"].as_str().unwrap().to_string(), b["state"].as_str().unwrap().to_string()))
        .collect()
}

/// The ids of the backends that take new traffic (not removed or draining).
async fn serving(admin_addr: std::net::SocketAddr) -> BTreeSet<String> {
    listed(admin_addr).await.into_iter().filter(|(_, s)| s != "removed" && s != "draining").map(|(id, _)| id).collect()
}

/// Waits up to `limit` for the serving set to be `want`.
async fn until_serving(admin_addr: std::net::SocketAddr, want: &[&TestBackend], limit: Duration) -> BTreeSet<String> {
    let want: BTreeSet<String> = want.iter().map(|b| b.spec()).collect();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = serving(admin_addr).await;
        if now == want || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first service's discovery sources from `GET /admin/services`.
async fn sources(admin_addr: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let (_, body) = admin(admin_addr, "GET", "/admin/services", None, None).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v[0]["sources"].as_array().unwrap().clone()
}

/// Waits up to `limit` for the first source's error count to pass `above`; returns the sources.
async fn until_errors(admin_addr: std::net::SocketAddr, above: u64, limit: Duration) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let src = sources(admin_addr).await;
        if src[0]["errors"].as_u64().unwrap() > above || tokio::time::Instant::now() >= deadline {
            return src;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Requests in a loop until stopped; counts those that did not get a 200.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(url: String) -> Self {
        let (stop, sent, failed) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, n, f) = (stop.clone(), sent.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let c = client();
            // Bounded: at most 20,000 requests, and the test stops it long before.
            for _ in 0..20_000 {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                if get(&c, &url).await.0 != 200 {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                n.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Self { stop, sent, failed, task }
    }

    /// Stops; returns (sent, failed).
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (self.sent.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

fn consul_args(double: &ConsulDouble) -> Args {
    Args::http().with(&[
        "--consul-service",
        "web",
        "--consul-addr",
        &format!("http://{}", double.addr),
        "--consul-token",
        "tok-3f9a",
        "--consul-wait",
        "2s",
        "--health-path",
        "/healthz",
        "--health-interval",
        "50ms",
        "--slow-start",
        "0s",
    ])
}

fn port(b: &TestBackend) -> u16 {
    b.addr.port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_instances_become_backends_and_registrations_lose_no_request() {
    let (a, b, c) = (TestBackend::start("a").await, TestBackend::start("b").await, TestBackend::start("c").await);
    let double = ConsulDouble::start().await;
    double.set(&[
        ("127.0.0.1", port(&a), 1, "passing"),
        ("127.0.0.1", port(&b), 3, "passing"),
        ("127.0.0.1", port(&c), 1, "warning"),
    ]);
    let agent = consul_args(&double).ready().await;
    let admin_addr = agent.admin_addr.unwrap();
    assert_eq!(
        until_serving(admin_addr, &[&a, &b], Duration::from_secs(5)).await.len(),
        2,
        "a warning instance stays out"
    );
    let weights = backends(admin_addr).await;
    let weight_b = weights.as_array().unwrap().iter().find(|x| x["id"] == b.spec()).unwrap()["weight"].clone();
    assert_eq!(weight_b, 3, "Weights.Passing is the weight");

    let traffic = Traffic::start(format!("http://{}/", agent.http_addrs[0]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Registration: c passes now.
    double.set(&[
        ("127.0.0.1", port(&a), 1, "passing"),
        ("127.0.0.1", port(&b), 3, "passing"),
        ("127.0.0.1", port(&c), 1, "passing"),
    ]);
    assert_eq!(until_serving(admin_addr, &[&a, &b, &c], Duration::from_secs(2)).await.len(), 3);
    assert!(crate::support::eventually(Duration::from_secs(5), || c.served() > 0).await, "c gets traffic");
    // Deregistration: a leaves and drains.
    double.set(&[("127.0.0.1", port(&b), 3, "passing"), ("127.0.0.1", port(&c), 1, "passing")]);
    assert_eq!(until_serving(admin_addr, &[&b, &c], Duration::from_secs(2)).await.len(), 2);
    let a_before = a.served();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sent, failed) = traffic.stop().await;
    assert!(sent > 100, "traffic flowed ({sent})");
    assert_eq!(failed, 0, "no request failed across the registration and the deregistration ({sent} sent)");
    assert!(a.served() <= a_before + 1, "a deregistered backend takes no new requests");

    let (_, events) = admin(admin_addr, "GET", "/admin/events", None, None).await;
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let removal = events.as_array().unwrap().iter().find(|e| e["backend"] == a.spec() && e["to"] == "removed");
    let reason = removal.map(|e| e["reason"].to_string()).unwrap_or_default();
    assert!(reason.contains("no longer reported by consul"), "the reason says which source ruled: {events}");
    let seen = double.seen();
    assert!(seen.iter().all(|(_, t)| t.as_deref() == Some("tok-3f9a")), "every query carries the token in the header");
    assert!(seen.iter().all(|(p, _)| !p.contains("tok-3f9a")), "never in the URL");
    assert!(seen.iter().any(|(p, _)| p.contains("index=") && p.contains("wait=2000ms")), "blocking queries: {seen:?}");
    let src = sources(admin_addr).await;
    assert_eq!(src[0]["source"], "consul");
    assert_eq!(src[0]["errors"], 0);
    assert!(src[0]["updates"].as_u64().unwrap() >= 3 && src[0]["last_success"].is_f64(), "{src:?}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_failures_keep_the_last_good_list() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let mut double = ConsulDouble::start().await;
    double.set(&[("127.0.0.1", port(&a), 1, "passing"), ("127.0.0.1", port(&b), 1, "passing")]);
    let agent = consul_args(&double).ready().await;
    let admin_addr = agent.admin_addr.unwrap();
    assert_eq!(until_serving(admin_addr, &[&a, &b], Duration::from_secs(5)).await.len(), 2);
    let traffic = Traffic::start(format!("http://{}/", agent.http_addrs[0]));
    let errors = |s: &[serde_json::Value]| s[0]["errors"].as_u64().unwrap();
    for mode in [Mode::Error500, Mode::Malformed, Mode::Truncated] {
        let before = errors(&sources(admin_addr).await);
        double.mode(mode);
        // What Consul would say now, were it well: nothing. The agent must not hear it.
        double.set(&[]);
        let counted = errors(&until_errors(admin_addr, before, Duration::from_secs(6)).await) > before;
        assert!(counted, "{mode:?} is counted as an error");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(serving(admin_addr).await.len(), 2, "{mode:?} leaves the last good list in force");
        double.mode(Mode::Normal);
        double.set(&[("127.0.0.1", port(&a), 1, "passing"), ("127.0.0.1", port(&b), 1, "passing")]);
    }
    // A hang, then Consul gone altogether: nothing changes, and the list grows stale.
    double.mode(Mode::Hang);
    double.set(&[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    double.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(serving(admin_addr).await.len(), 2, "consul unreachable changes no backend");
    let src = sources(admin_addr).await;
    assert!(src[0]["stale_seconds"].as_f64().unwrap() >= 1.5, "staleness shows: {src:?}");
    let metrics = agent.metrics.render();
    assert!(metrics.contains("edge_discovery_errors_total{service=\"default\",source=\"consul\"}"), "{metrics}");
    assert!(metrics.contains("edge_discovery_last_success_timestamp_seconds{service=\"default\",source=\"consul\"}"));
    let (sent, failed) = traffic.stop().await;
    assert_eq!(failed, 0, "no request failed while consul misbehaved ({sent} sent)");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_index_zero_never_loops_and_a_backwards_index_starts_over() {
    let a = TestBackend::start("a").await;
    let double = ConsulDouble::start().await;
    double.set(&[("127.0.0.1", port(&a), 1, "passing")]);
    let agent = consul_args(&double).ready().await;
    // Index 0 on every answer, no blocking: the watch must not spin.
    double.mode(Mode::IndexZero);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = double.seen().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_a_second = double.seen().len() - before;
    assert!(in_a_second <= 12, "at most one query per 100 ms, got {in_a_second} in a second");
    double.mode(Mode::Normal);
    double.set_index(500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Consul restarted with a lower index: the next query starts from 0 (no index at all).
    double.set_index(5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen: Vec<String> = double.seen().into_iter().map(|(p, _)| p).collect();
    let at_500 = seen.iter().rposition(|p| p.contains("index=500")).expect("a query from index 500");
    assert!(
        seen[at_500 + 1..].iter().any(|p| !p.contains("index=")),
        "after the index went backwards a query starts over: {:?}",
        &seen[at_500..]
    );
    assert_eq!(serving(agent.admin_addr.unwrap()).await.len(), 1);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_consul_instances_arrive_as_one_list() {
    use edge_core::discovery::consul::{ConsulSource, Endpoint, Query};
    use edge_core::discovery::{Discover, Sink, SourceStats, Update};
    let double = ConsulDouble::start().await;
    let many: Vec<(String, u16)> =
        (0..10_000u32).map(|i| (format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), 8080)).collect();
    let list: Vec<(&str, u16, u32, &'static str)> = many.iter().map(|(a, p)| (a.as_str(), *p, 1, "passing")).collect();
    double.set(&list);
    let endpoint = Endpoint { authority: double.addr.to_string(), tls: None, token: None };
    let query =
        Query { service: "web".into(), tags: vec![], datacenter: None, stale: false, wait: Duration::from_secs(2) };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let stats = Arc::new(SourceStats::new("consul"));
    let t0 = std::time::Instant::now();
    let task = tokio::spawn(Box::new(ConsulSource::new(endpoint, query)).run(Sink::new(0, tx, stats)));
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an answer within 10 s").unwrap();
    let Update::Reset(list) = first.update else { panic!("the first update is the whole list") };
    assert_eq!(list.len(), 10_000);
    eprintln!("10,000 instances read in {:?}", t0.elapsed());
    task.abort();
}

#[test]
fn the_consul_token_never_reaches_the_logs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let double = rt.block_on(ConsulDouble::start());
    double.mode(Mode::Error500);
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--listen", "127.0.0.1:0", "--admin", "off", "--log-level", "debug", "--consul-service", "web"])
        .args(["--consul-addr", &double.addr.to_string(), "--consul-token", "SECRET-7c1e"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("discovery error"), "the failing queries are logged: {text}");
    assert!(!text.contains("SECRET-7c1e"), "the token is not: {text}");
    assert!(rt.block_on(async { double.seen() }).iter().any(|(_, t)| t.as_deref() == Some("SECRET-7c1e")));
}

/// A real dnsmasq on a free loopback port serving `records` (dnsmasq flags); killed on drop.
struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    /// Starts dnsmasq on `port` and waits until it answers. A start that fails at once (its port
    /// taken for a moment) is tried again twice; a failure names dnsmasq's own words.
    fn start(port: u16, records: &[String]) -> Self {
        let mut why = String::new();
        for _ in 0..3 {
            match Self::try_start(port, records) {
                Ok(this) => return this,
                Err(e) => why = e,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("dnsmasq did not answer on 127.0.0.1:{port}: {why}");
    }

    fn try_start(port: u16, records: &[String]) -> Result<Self, String> {
        let mut cmd = Command::new("dnsmasq");
        cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", &format!("--port={port}"), "--pid-file=", "--local-ttl=1"])
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if crate::root::is_root() {
            cmd.arg("--user=root");
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start dnsmasq: {e}; the DNS discovery tests need it: run `cargo xtask setup`")
        });
        // Ready when it answers on its port; dropping `this` kills it if it never does.
        let mut this = Self { child };
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let query = [0x12u8, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
        for _ in 0..50 {
            let _ = sock.send_to(&query, ("127.0.0.1", port));
            let mut buf = [0u8; 512];
            if sock.recv_from(&mut buf).is_ok() {
                return Ok(this);
            }
            if let Ok(Some(status)) = this.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = this.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("it exited ({status}): {}", err.trim()));
            }
        }
        Err("no answer within 5 s".into())
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free for both UDP and TCP (dnsmasq binds both), below the ephemeral range, so
/// that the suite's own outgoing connections do not take it before dnsmasq does.
fn free_udp_port() -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for dnsmasq in 20000-31999");
}

fn srv(name: &str, b: &TestBackend, weight: u16) -> [String; 2] {
    [
        format!("--srv-host=_web._tcp.edge.test,{name}.edge.test,{},0,{weight}", b.addr.port()),
        format!("--host-record={name}.edge.test,127.0.0.1"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_srv_records_become_backends_and_follow_changes_and_outages() {
    let (a, b, c) = (TestBackend::start("a").await, TestBackend::start("b").await, TestBackend::start("c").await);
    let dns_port = free_udp_port();
    let mut dns = Some(Dnsmasq::start(dns_port, &[srv("a", &a, 1), srv("b", &b, 2)].concat()));
    let agent = Args::http()
        .with(&["--dns-srv", "_web._tcp.edge.test", "--dns-server", &format!("127.0.0.1:{dns_port}")])
        .with(&["--health-path", "/healthz", "--health-interval", "50ms", "--slow-start", "0s"])
        .ready()
        .await;
    let admin_addr = agent.admin_addr.unwrap();
    assert_eq!(until_serving(admin_addr, &[&a, &b], Duration::from_secs(5)).await.len(), 2);
    let listed = backends(admin_addr).await;
    assert_eq!(listed.as_array().unwrap().iter().find(|x| x["id"] == b.spec()).unwrap()["weight"], 2, "SRV weight");

    let traffic = Traffic::start(format!("http://{}/", agent.http_addrs[0]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The records change: a leaves, c arrives (dnsmasq re-reads its records on a restart).
    drop(dns.take());
    dns = Some(Dnsmasq::start(dns_port, &[srv("b", &b, 2), srv("c", &c, 1)].concat()));
    let now = until_serving(admin_addr, &[&b, &c], Duration::from_secs(10)).await;
    assert_eq!(now.len(), 2, "the new records are followed at their TTL: {now:?}");
    // The server goes away: the last good list stays.
    drop(dns.take());
    // A query to a dead server fails after its timeouts (2 s, twice): wait for the first error.
    let src = until_errors(admin_addr, 0, Duration::from_secs(10)).await;
    assert_eq!(src[0]["source"], "dns");
    assert!(src[0]["errors"].as_u64().unwrap() > 0, "the failed resolutions are counted: {src:?}");
    assert_eq!(serving(admin_addr).await.len(), 2, "a DNS outage changes no backend");
    let (sent, failed) = traffic.stop().await;
    assert!(sent > 100);
    assert_eq!(failed, 0, "no request failed across the change and the outage ({sent} sent)");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_a_records_on_a_port_and_a_missing_name_means_no_backends_at_start() {
    let a = TestBackend::start("a").await;
    let dns_port = free_udp_port();
    let _dns = Dnsmasq::start(dns_port, &["--host-record=web.edge.test,127.0.0.1".to_string()]);
    let server = format!("127.0.0.1:{dns_port}");
    let agent = Args::http()
        .with(&["--dns-a", &format!("web.edge.test:{}", a.addr.port()), "--dns-server", &server])
        .ready()
        .await;
    let admin_addr = agent.admin_addr.unwrap();
    assert_eq!(until_serving(admin_addr, &[&a], Duration::from_secs(5)).await.len(), 1);
    assert_eq!(get(&client(), &format!("http://{}/", agent.http_addrs[0])).await.1, "a");
    agent.shutdown().await;

    let missing = Args::http().with(&["--dns-a", "nothere.edge.test:80", "--dns-server", &server]).ready().await;
    assert!(serving(missing.admin_addr.unwrap()).await.is_empty());
    let src = sources(missing.admin_addr.unwrap()).await;
    assert!(src[0]["errors"].as_u64().unwrap() >= 1, "NXDOMAIN is reported: {src:?}");
    missing.shutdown().await;
}

/// A benchmark figure, not a timed test (`cargo test -p edge-agent --test it registration_latency
/// -- --ignored --nocapture`): from Consul answering a held query with a new instance to the
/// instance in the balancer's snapshot, taking traffic. edge probes it first (HTTP, here on
/// loopback), so this is Consul's answer plus one probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it with --ignored --nocapture"]
async fn registration_latency() {
    let mut pool = Vec::new();
    for i in 0..21 {
        pool.push(TestBackend::start(&format!("b{i}")).await);
    }
    let double = ConsulDouble::start().await;
    double.set(&[("127.0.0.1", port(&pool[0]), 1, "passing")]);
    let agent = consul_args(&double).ready().await;
    let mut took = Vec::new();
    for n in 1..pool.len() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let list: Vec<(&str, u16, u32, &'static str)> =
            pool[..=n].iter().map(|b| ("127.0.0.1", port(b), 1, "passing")).collect();
        let id = pool[n].spec();
        let t0 = std::time::Instant::now();
        double.set(&list);
        let reached = crate::support::eventually(Duration::from_secs(2), || {
            agent.monitor.snapshot().eligible().any(|b| b.id().as_ref() == id)
        })
        .await;
        assert!(reached, "instance {n} never reached the balancer");
        took.push(t0.elapsed());
    }
    took.sort();
    eprintln!(
        "registration to balancer, {} instances: min {:?}, p50 {:?}, max {:?}",
        took.len(),
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_over_https_verifies_its_certificate() {
    let a = TestBackend::start("a").await;
    let double = ConsulDouble::start_tls().await;
    double.set(&[("127.0.0.1", port(&a), 1, "passing")]);
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-cert.pem");
    let url = format!("https://127.0.0.1:{}", double.addr.port());
    let base = ["--consul-service", "web", "--consul-addr", url.as_str(), "--consul-wait", "2s"];
    let agent = Args::http().with(&base).with(&["--consul-ca-cert", ca]).ready().await;
    assert_eq!(until_serving(agent.admin_addr.unwrap(), &[&a], Duration::from_secs(5)).await.len(), 1);
    agent.shutdown().await;

    // Without the CA (the system's roots), the certificate is refused: errors, no backends.
    let untrusting = Args::http().with(&base).start().await;
    let admin_addr = untrusting.admin_addr.unwrap();
    let src = until_errors(admin_addr, 0, Duration::from_secs(4)).await;
    assert!(src[0]["errors"].as_u64().unwrap() > 0, "an untrusted certificate is an error: {src:?}");
    assert!(src[0]["last_success"].is_null());
    assert!(serving(admin_addr).await.is_empty());
    untrusting.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_that_verifies_clients_gets_the_client_certificate() {
    let a = TestBackend::start("a").await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let (client_cert, client_key) =
        (format!("{fixtures}/test-client-cert.pem"), format!("{fixtures}/test-client-key.pem"));
    let double = ConsulDouble::start_mtls(std::path::Path::new(&client_cert)).await;
    double.set(&[("127.0.0.1", port(&a), 1, "passing")]);
    let ca = format!("{fixtures}/test-cert.pem");
    let url = format!("https://127.0.0.1:{}", double.addr.port());
    let base =
        ["--consul-service", "web", "--consul-addr", url.as_str(), "--consul-wait", "2s", "--consul-ca-cert", &ca];
    let with_cert = ["--consul-client-cert", client_cert.as_str(), "--consul-client-key", client_key.as_str()];
    let agent = Args::http().with(&base).with(&with_cert).ready().await;
    assert_eq!(until_serving(agent.admin_addr.unwrap(), &[&a], Duration::from_secs(5)).await.len(), 1);
    agent.shutdown().await;

    // Without a client certificate the handshake fails: errors, no backends.
    let refused = Args::http().with(&base).start().await;
    let admin_addr = refused.admin_addr.unwrap();
    let src = until_errors(admin_addr, 0, Duration::from_secs(4)).await;
    assert!(src[0]["errors"].as_u64().unwrap() > 0, "no client certificate is an error: {src:?}");
    assert!(src[0]["last_success"].is_null());
    assert!(serving(admin_addr).await.is_empty());
    refused.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_file_that_still_parses_stays_fresh() {
    let a = TestBackend::start("a").await;
    let file = crate::support::temp_dir("fresh").join("backends.json");
    std::fs::write(&file, format!("[\"{}\"]", a.spec())).unwrap();
    let agent = Args::http().with(&["--backends-file", &file.display().to_string()]).ready().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let src = sources(agent.admin_addr.unwrap()).await;
    assert_eq!(src[0]["source"], "file");
    assert!(src[0]["stale_seconds"].as_f64().unwrap() < 1.5, "checked every second, so fresh: {src:?}");
    // A broken file is not fresh: the last good list stays, and it ages.
    std::fs::write(&file, "[not json").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let src = sources(agent.admin_addr.unwrap()).await;
    assert!(src[0]["stale_seconds"].as_f64().unwrap() >= 1.0 && src[0]["errors"] == 1, "{src:?}");
    assert_eq!(serving(agent.admin_addr.unwrap()).await.len(), 1);
    agent.shutdown().await;
}
