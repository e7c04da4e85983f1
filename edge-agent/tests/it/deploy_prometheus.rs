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

fn dashboard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/edge.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// What Grafana's types do not check: every panel has a unique id, a title, a description that
/// says what to do, a unit and the data-source variable, and no two panels overlap on the 24-column
/// grid.
#[test]
fn dashboard_panels_are_described_placed_and_use_the_datasource_variable() {
    let d = dashboard();
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = std::collections::HashSet::new();
    let mut cells = std::collections::HashMap::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(ids.insert(p["id"].as_u64().expect("numeric id")), "{title}: id {} is used twice", p["id"]);
        let g = &p["gridPos"];
        let (x, y, w, h) =
            (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {g} leaves the 24 columns");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.to_string()) {
                    panic!("{title} overlaps {other} at column {cx}, row {cy}");
                }
            }
        }
        if p["type"] == "row" {
            assert!(p["panels"].as_array().is_none_or(|a| a.is_empty()) || p["collapsed"] == true, "{title}");
            continue;
        }
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(
            p["description"].as_str().is_some_and(|t| t.len() > 40),
            "{title}: describe what it shows and what to do"
        );
        assert!(p["fieldConfig"]["defaults"]["unit"].as_str().is_some_and(|u| !u.is_empty()), "{title}: no unit");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: use the datasource variable");
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: a target without the datasource variable");
        }
    }
    let vars: Vec<&str> =
        d["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(vars, ["datasource", "instance", "service", "backend"]);
}

/// Every PromQL expression of the Grafana dashboard (panel targets, nested in rows or not), with
/// Grafana's variables given values a query can run with, and the template variables'
/// `label_values(METRIC, LABEL)` as `METRIC`.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    fn walk(v: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                let title = m.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(expr) = m.get("expr").and_then(|e| e.as_str()) {
                    out.push((title.to_string(), expr.to_string()));
                }
                for (_, child) in m {
                    walk(child, title, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|c| walk(c, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], "", &mut out);
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let q = var["query"].as_str().or_else(|| var["query"]["query"].as_str()).unwrap_or_default();
        if let Some(args) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
            let metric = args.rsplit_once(',').map_or(args, |(m, _)| m);
            out.push((format!("variable {}", var["name"]), metric.trim().to_string()));
        }
    }
    let vars = [
        ("$__rate_interval", "1m"),
        ("${__rate_interval}", "1m"),
        ("$__interval", "15s"),
        ("$__range", "5m"),
        ("$instance", ".*"),
        ("$service", ".*"),
        ("$backend", ".*"),
    ];
    out.into_iter().map(|(t, e)| (t, vars.iter().fold(e, |acc, (var, value)| acc.replace(var, value)))).collect()
}

/// Percent-encodes a query for a URL (every byte but the unreserved ones).
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every query of deploy/grafana/edge.json runs on a real Prometheus scraping a real agent that
/// carried traffic, without an error, and names only metrics the agent exports (those this agent
/// cannot export, `ONLY_ELSEWHERE`, as the metrics code declares them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_runs_on_a_real_prometheus() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "the dashboard has {} queries", queries.len());
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let agent = Args::http()
        .backends(&[a.spec(), b.spec()])
        .with(&["--health-path", "/healthz", "--health-interval", "200ms"])
        .ready()
        .await;
    let client = crate::support::client();
    let url = format!("http://{}/", agent.http_addrs[0]);
    for _ in 0..20 {
        crate::support::get(&client, &url).await;
    }
    let prom = Prometheus::start(agent.admin_addr.unwrap());
    let scraped = within(Duration::from_secs(30), async || {
        let v = prom.get("/api/v1/query?query=edge_requests_total").await;
        v["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    assert!(scraped, "prometheus never scraped the agent's request counters");

    let (_, exported) = crate::support::admin(agent.admin_addr.unwrap(), "GET", "/metrics", None, None).await;
    let declared = include_str!("../../src/metrics.rs");
    let mut failures = Vec::new();
    for (title, expr) in &queries {
        let (status, body) =
            crate::support::admin(prom.addr, "GET", &format!("/api/v1/query?query={}", encode(expr)), None, None).await;
        if status != 200 || !body.contains("\"status\":\"success\"") {
            failures.push(format!("{title}: {expr}: {status} {body}"));
        }
        for name in metric_names(expr) {
            let base = ["_total", "_bucket", "_sum", "_count"].iter().fold(name.as_str(), |n, s| n.trim_end_matches(s));
            let known = exported.lines().any(|l| l.starts_with(&name))
                || (ONLY_ELSEWHERE.iter().any(|p| name.starts_with(p)) && declared.contains(&format!("\"{base}\"")));
            if !known {
                failures.push(format!("{title}: {name} is not a metric edge exports"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} queries fail:\n{}", failures.len(), queries.len(), failures.join("\n"));
    agent.shutdown().await;
}

/// Metrics an agent exports only in eBPF mode or on ECS, which this test's agent is not.
const ONLY_ELSEWHERE: [&str; 2] = ["edge_ebpf_", "edge_ecs_"];

/// The `edge_*` names in a PromQL expression, histogram suffixes and all.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("edge_") {
        let start = i + at;
        let word_start = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |e| start + e);
        if word_start {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}
