//! The monitoring artifacts in `deploy/prometheus/`: the alert rules, their unit tests and the
//! scrape configuration checked by promtool, and the backend-down alert proven on a real
//! Prometheus (Debian's package, installed by `cargo xtask setup`) scraping a real agent.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Args, TestBackend, temp_dir};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// Runs promtool with `args` in deploy/prometheus; panics with its output when it fails.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool").args(args).current_dir(deploy_dir()).output().unwrap_or_else(|e| {
        panic!("cannot run promtool: {e}; it comes with Debian's prometheus: run `cargo xtask setup`")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
    text
}

#[test]
fn promtool_checks_the_rules_their_unit_tests_and_the_scrape_config() {
    let rules = promtool(&["check", "rules", "alerts.yml"]);
    assert!(rules.contains("SUCCESS: 9 rules found"), "{rules}");
    let tests = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(tests.contains("SUCCESS"), "{tests}");
    // Every alert has a unit test.
    let alerts = std::fs::read_to_string(deploy_dir().join("alerts.yml")).unwrap();
    let cases = std::fs::read_to_string(deploy_dir().join("alerts_test.yml")).unwrap();
    for name in alerts.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(cases.contains(&format!("alertname: {name}")), "{name} has no promtool unit test");
    }
    promtool(&["check", "config", "prometheus.yml"]);
}

/// A Prometheus server on a free loopback port; killed on drop.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` every second and evaluates deploy/prometheus/alerts.yml every second.
    fn start(target: std::net::SocketAddr) -> Self {
        let dir = temp_dir("prometheus");
        let config = dir.join("prometheus.yml");
        let rules = deploy_dir().join("alerts.yml").canonicalize().unwrap();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: edge\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus: {e}; run `cargo xtask setup`"));
        Self { child, addr }
    }

    /// `GET path` on its HTTP API, as JSON (null while it does not answer).
    async fn get(&self, path: &str) -> serde_json::Value {
        let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(self.addr)).await
        else {
            return serde_json::Value::Null;
        };
        drop(stream);
        let (status, body) = crate::support::admin(self.addr, "GET", path, None, None).await;
        if status == 200 { serde_json::from_str(&body).unwrap_or_default() } else { serde_json::Value::Null }
    }

    /// The EdgeBackendDown alerts for `backend` in `state` (`pending` or `firing`).
    async fn backend_down(&self, backend: &str, state: &str) -> bool {
        let v = self.get("/api/v1/alerts").await;
        v["data"]["alerts"].as_array().is_some_and(|list| {
            list.iter().any(|a| {
                a["labels"]["alertname"] == "EdgeBackendDown"
                    && a["labels"]["backend"] == backend
                    && a["state"] == state
            })
        })
    }
}

/// Polls `cond` every 250 ms for up to `limit`.
async fn within(limit: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_and_resolves_backend_down() {
    let (a, mut b, c) = (TestBackend::start("a").await, TestBackend::start("b").await, TestBackend::start("c").await);
    let agent = Args::http()
        .backends(&[a.spec(), b.spec(), c.spec()])
        .with(&["--health-path", "/healthz", "--health-interval", "200ms"])
        .ready()
        .await;
    let prom = Prometheus::start(agent.admin_addr.unwrap());
    let scraped = within(Duration::from_secs(30), async || {
        let v = prom.get("/api/v1/query?query=edge_ready").await;
        v["data"]["result"][0]["value"][1] == "1"
    })
    .await;
    assert!(scraped, "prometheus never scraped the agent");

    b.kill();
    // `for: 30s`: pending first, firing after.
    assert!(
        within(Duration::from_secs(15), async || prom.backend_down(&b.spec(), "pending").await).await,
        "no pending alert"
    );
    assert!(
        within(Duration::from_secs(45), async || prom.backend_down(&b.spec(), "firing").await).await,
        "never fired"
    );
    let (_, alerts) = crate::support::admin(prom.addr, "GET", "/api/v1/alerts", None, None).await;
    assert!(!alerts.contains(&format!("\"backend\":\"{}\"", a.spec())), "only the dead backend alerts: {alerts}");

    b.restart().await;
    let resolved = within(Duration::from_secs(30), async || {
        let v = prom.get("/api/v1/alerts").await;
        v["data"]["alerts"].as_array().is_some_and(|l| !l.iter().any(|x| x["labels"]["alertname"] == "EdgeBackendDown"))
    })
    .await;
    assert!(resolved, "the alert did not resolve after the backend returned");
    agent.shutdown().await;
}
