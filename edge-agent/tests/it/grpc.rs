//! gRPC through the userspace proxy to an HTTP/2 backend (`proto=h2`), with a real gRPC server
//! and client (Python's grpcio, installed by `cargo xtask setup`; `grpc_peer.py`): a unary call
//! with its trailers, a server stream whose messages arrive one by one with the server's spacing,
//! and an `UNAVAILABLE` that reaches the client and counts against the backend.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::support::*;

fn python() -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/tools/venv/bin/python"));
    assert!(p.exists(), "{} is missing: run `cargo xtask setup` (it installs grpcio)", p.display());
    p
}

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/grpc_peer.py");

/// The gRPC server, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the gRPC server (over TLS with the test certificate when `tls`); its port.
fn start_server(tls: bool) -> (Server, u16) {
    start_server_with(tls, "serving")
}

/// Starts the gRPC server, its health service saying `health` (`serving` or `not_serving`).
fn start_server_with(tls: bool, health: &str) -> (Server, u16) {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut cmd = Command::new(python());
    cmd.env("GRPC_PEER_HEALTH", health);
    cmd.args([PEER, "serve"]);
    if tls {
        cmd.args([format!("{fixtures}/test-cert.pem"), format!("{fixtures}/test-key.pem")]);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("python starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let server = Server(child);
    let port = line.trim().parse().unwrap_or_else(|_| panic!("the gRPC server printed {line:?}, not its port"));
    (server, port)
}

/// Runs the gRPC client against `agent`; its results.
async fn call(agent: &edge_agent::app::AgentHandle) -> serde_json::Value {
    let address = agent.http_addrs[0].to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python()).args([PEER, "call", &address]).stderr(Stdio::inherit()).output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "the gRPC client failed: {text}");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_cross_edge_with_trailers_streams_and_status() {
    let (_server, port) = start_server(false);
    let agent =
        Args::http().with(&["--health-check", "grpc"]).backends(&[format!("127.0.0.1:{port},proto=h2")]).ready().await;
    let r = call(&agent).await;

    assert_eq!(r["unary"], "echo:hello", "{r}");
    assert_eq!(r["unary_code"], "OK", "{r}");
    assert_eq!(
        r["trailing"]["x-seen-forwarded-for"], "127.0.0.1",
        "trailers pass, and the backend saw X-Forwarded-For: {r}"
    );
    let stream = r["stream"].as_array().unwrap();
    assert_eq!(stream.len(), 5, "{r}");
    let times: Vec<f64> = stream.iter().map(|m| m[1].as_f64().unwrap()).collect();
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= 0.1, "stream messages arrived together, not one by one: {times:?}");
    }
    assert_eq!(stream[4][0], "message 4");
    assert_eq!(r["unavailable"], "UNAVAILABLE", "{r}");
    assert_eq!(r["unavailable_details"], "try elsewhere", "{r}");

    let m = agent.metrics.render();
    let counted = m.lines().any(|l| {
        l.starts_with("edge_backend_gateway_failures_total")
            && l.contains("kind=\"grpc_unavailable\"")
            && l.ends_with(" 1")
    });
    assert!(counted, "the UNAVAILABLE counts as a gateway failure:\n{m}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_negotiates_http2_by_alpn() {
    let (_server, port) = start_server(true);
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-cert.pem");
    let agent = Args::http()
        .with(&["--health-grpc-service", "edge.test.Echo", "--backend-ca", ca])
        .backends(&[format!("localhost:{port},tls,proto=h2")])
        .ready()
        .await;
    let r = call(&agent).await;
    assert_eq!((&r["unary"], &r["unary_code"]), (&serde_json::json!("echo:hello"), &serde_json::json!("OK")), "{r}");
    assert_eq!(r["stream"].as_array().map(Vec::len), Some(5), "{r}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_probes_take_out_a_server_that_is_not_serving() {
    let (_up, up_port) = start_server(false);
    let (_down, down_port) = start_server_with(false, "not_serving");
    let specs = [format!("127.0.0.1:{up_port},proto=h2"), format!("127.0.0.1:{down_port},proto=h2")];
    let agent = Args::http()
        .with(&["--health-check", "grpc", "--health-interval", "200ms", "--health-fast-interval", "100ms"])
        .backends(&specs)
        .ready()
        .await;
    let admin_addr = agent.admin_addr.unwrap();
    let down_id = format!("127.0.0.1:{down_port}");
    let mut state = String::new();
    for _ in 0..100 {
        state = state_of(admin_addr, &down_id).await;
        if state == "unhealthy" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let all = backends(admin_addr).await;
    assert_eq!(state, "unhealthy", "{all:#}");
    let reason = all.to_string();
    assert!(reason.contains("grpc: NOT_SERVING"), "the reason names the gRPC verdict: {all:#}");
    assert_eq!(state_of(admin_addr, &format!("127.0.0.1:{up_port}")).await, "healthy");
    // A service the server does not know is refused by name.
    let (_other, other_port) = start_server(false);
    let other = Args::http()
        .with(&["--health-grpc-service", "no.Such", "--health-interval", "200ms"])
        .backends(&[format!("127.0.0.1:{other_port},proto=h2")])
        .start()
        .await;
    let other_admin = other.admin_addr.unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        text = backends(other_admin).await.to_string();
        if text.contains("not found") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(text.contains("does not know service 'no.Such'"), "{text}");
    other.shutdown().await;
    agent.shutdown().await;
}
