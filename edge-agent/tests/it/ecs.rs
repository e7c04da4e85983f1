//! Running on ECS: `edge-agent health` as the container's health check, and the task metadata
//! endpoint (a test double serving the documented v4 answer) shown in `/admin/state` and as an
//! info metric.

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::{Args, TestBackend, admin};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    for (k, _) in std::env::vars() {
        if k.starts_with("EDGE_") || k == "ECS_CONTAINER_METADATA_URI_V4" {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `edge-agent health ARGS`; returns (exit code, stdout and stderr).
fn health(args: &[&str]) -> (Option<i32>, String) {
    let out = bin().arg("health").args(args).output().unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_exits_0_when_ready_and_1_when_not() {
    let b = TestBackend::start("a").await;
    let agent = Args::http().backends(&[b.spec()]).ready().await;
    let addr = agent.admin_addr.unwrap().to_string();
    let (code, text) = tokio::task::spawn_blocking(move || health(&["--admin", &addr])).await.unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("ready"), "{text}");
    agent.shutdown().await;

    // Not ready: its only source (Consul) never answers.
    let waiting = Args::http().with(&["--consul-service", "web", "--consul-addr", "127.0.0.1:1"]).start().await;
    let addr = waiting.admin_addr.unwrap().to_string();
    let (code, text) = tokio::task::spawn_blocking(move || health(&["--admin", &addr])).await.unwrap();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not ready (503)"), "{text}");
    waiting.shutdown().await;

    // Nothing listening, and the admin API off.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let (code, text) = health(&["--admin", &free, "--timeout", "500ms"]);
    assert_eq!(code, Some(1));
    assert!(text.contains(&format!("cannot reach the admin API at {free}")), "{text}");
    let (code, text) = health(&["--admin", "off"]);
    assert_eq!(code, Some(1));
    assert!(text.contains("the admin API is off"), "{text}");
}

/// Test double of the ECS task metadata endpoint v4: `GET /v4/<id>/task` answers the documented
/// example; anything else 404.
async fn metadata_double() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let (status, body) = if req.uri().path() == "/v4/0f1e/task" {
                        (
                            200,
                            r#"{"Cluster": "arn:aws:ecs:eu-west-1:111122223333:cluster/edge",
                               "TaskARN": "arn:aws:ecs:eu-west-1:111122223333:task/edge/5c0ffee",
                               "Family": "edge-fargate", "Revision": "7", "DesiredStatus": "RUNNING",
                               "AvailabilityZone": "eu-west-1b", "LaunchType": "FARGATE", "Containers": []}"#,
                        )
                    } else {
                        (404, "not found")
                    };
                    Ok::<_, Infallible>(Response::builder().status(status).body(Full::new(Bytes::from(body))).unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecs_task_shows_in_the_state_and_the_metrics() {
    let b = TestBackend::start("a").await;
    let meta = metadata_double().await;
    let admin_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut child = bin()
        .args(["run", "--listen", "127.0.0.1:0", "--backend", &b.spec(), "--admin", &admin_addr.to_string()])
        .env("ECS_CONTAINER_METADATA_URI_V4", format!("http://{meta}/v4/0f1e"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let state = loop {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(admin_addr)).await
        {
            drop(s);
            let (code, body) = admin(admin_addr, "GET", "/admin/state", None, None).await;
            if code == 200 {
                break serde_json::from_str::<serde_json::Value>(&body).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "the agent's admin API never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(state["ecs"]["cluster"], "arn:aws:ecs:eu-west-1:111122223333:cluster/edge", "{state}");
    assert_eq!(state["ecs"]["availability_zone"], "eu-west-1b");
    assert_eq!(state["ecs"]["launch_type"], "FARGATE");
    let (_, metrics) = admin(admin_addr, "GET", "/metrics", None, None).await;
    let info = metrics.lines().find(|l| l.starts_with("edge_ecs_task_info{")).unwrap_or_default().to_string();
    assert!(info.contains("task_arn=\"arn:aws:ecs:eu-west-1:111122223333:task/edge/5c0ffee\""), "{metrics}");
    assert!(info.contains("availability_zone=\"eu-west-1b\"") && info.ends_with(" 1"), "{info}");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn outside_ecs_the_state_says_so() {
    let b = TestBackend::start("a").await;
    // In-process agents read the process environment; the test runner does not set the variable.
    if std::env::var_os("ECS_CONTAINER_METADATA_URI_V4").is_some() {
        panic!("the tests must not run with ECS_CONTAINER_METADATA_URI_V4 set");
    }
    let agent = Args::http().backends(&[b.spec()]).ready().await;
    let (_, body) = admin(agent.admin_addr.unwrap(), "GET", "/admin/state", None, None).await;
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(state["ecs"].is_null(), "{state}");
    agent.shutdown().await;
}
