//! Retries to HTTP/2 backends (`proto=h2`), against a test double written on the `h2` crate so
//! that it can refuse streams the way real servers do: `RST_STREAM(REFUSED_STREAM)`, a `GOAWAY`
//! before it takes a stream (what a gRPC server shutting down gracefully sends), a 503 or a gRPC
//! `UNAVAILABLE`. A refused request goes to another backend with its body, whatever its method; a
//! 503 or an `UNAVAILABLE` is retried only for an idempotent request (and passed on as it is when
//! no retry can be made); and `--retry-on` without `refused-stream` turns it off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;

use crate::support::*;

/// How the double answers every stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// `RST_STREAM` with `REFUSED_STREAM`, before reading anything.
    Refuse,
    /// A `GOAWAY` (no error, no stream taken) as soon as the connection is up, the connection
    /// kept open for a while after it.
    GoAway,
    /// 503 with a body.
    Unavailable,
    /// A trailers-only gRPC `UNAVAILABLE` (200 with `grpc-status: 14` in the head).
    GrpcUnavailable,
    /// 200 with the request's method and body echoed.
    Echo,
}

/// Test double: an HTTP/2 backend on the `h2` crate; counts the streams it saw.
struct H2Double {
    addr: SocketAddr,
    streams: Arc<AtomicU64>,
}

impl H2Double {
    async fn start(behaviour: Behaviour) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let streams = Arc::new(AtomicU64::new(0));
        let seen = streams.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(s).await else { return };
                    if behaviour == Behaviour::GoAway {
                        conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                        while let Some(r) = conn.accept().await {
                            if r.is_err() {
                                break;
                            }
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                        // The connection stays open a while, as a server draining its calls keeps
                        // it: a request written into a socket closed at once could be lost in the
                        // reset, and nobody could then tell whether it was processed.
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        drop(conn);
                        return;
                    }
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        seen.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            match behaviour {
                                Behaviour::Refuse | Behaviour::GoAway => respond.send_reset(h2::Reason::REFUSED_STREAM),
                                Behaviour::Unavailable => {
                                    let resp = http::Response::builder().status(503).body(()).unwrap();
                                    if let Ok(mut tx) = respond.send_response(resp, false) {
                                        let _ = tx.send_data(Bytes::from_static(b"down\n"), true);
                                    }
                                }
                                Behaviour::GrpcUnavailable => {
                                    let resp = http::Response::builder()
                                        .status(200)
                                        .header("content-type", "application/grpc")
                                        .header("grpc-status", "14")
                                        .body(())
                                        .unwrap();
                                    let _ = respond.send_response(resp, true);
                                }
                                Behaviour::Echo => {
                                    let (parts, mut body) = req.into_parts();
                                    let mut got = Vec::new();
                                    while let Some(Ok(chunk)) = body.data().await {
                                        let _ = body.flow_control().release_capacity(chunk.len());
                                        got.extend_from_slice(&chunk);
                                    }
                                    let text = format!("{} {}", parts.method, String::from_utf8_lossy(&got));
                                    let resp = http::Response::builder()
                                        .status(200)
                                        .header("content-length", text.len())
                                        .body(())
                                        .unwrap();
                                    if let Ok(mut tx) = respond.send_response(resp, false) {
                                        let _ = tx.send_data(Bytes::from(text), true);
                                    }
                                }
                            }
                        });
                    }
                });
            }
        });
        Self { addr, streams }
    }

    fn spec(&self) -> String {
        format!("{},proto=h2", self.addr)
    }

    fn streams(&self) -> u64 {
        self.streams.load(Ordering::SeqCst)
    }
}

/// Sends `method` with `body` through edge over HTTP/1.1; the status and the body.
async fn send(agent: &edge_agent::app::AgentHandle, method: &str, body: &str) -> (u16, String) {
    let (status, _, body) = send_with(agent, method, "", body).await;
    (status, body)
}

/// Sends `method` with the extra header lines `extra` and `body`; the status, the head and the
/// body.
async fn send_with(
    agent: &edge_agent::app::AgentHandle,
    method: &str,
    extra: &str,
    body: &str,
) -> (u16, String, String) {
    let req = format!(
        "{method} /call HTTP/1.1\r\nhost: edge.test\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let text = raw_exchange(agent.http_addrs[0], req.as_bytes(), Duration::from_secs(10)).await;
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").map(|(h, b)| (h.to_string(), b.to_string())).unwrap_or_default();
    (status, head, body)
}

fn retries(agent: &edge_agent::app::AgentHandle, reason: &str) -> u64 {
    let text = agent.metrics.render();
    let want = format!("edge_upstream_retries_total{{service=\"default\",reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(want.as_str())?.trim().parse().ok()).unwrap_or(0)
}

async fn agent_for(backends: &[&H2Double], extra: &[&str]) -> edge_agent::app::AgentHandle {
    let specs: Vec<String> = backends.iter().map(|b| b.spec()).collect();
    Args::http().with(&["--health-check", "tcp"]).with(extra).backends(&specs).ready().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_refused_by_an_http2_backend_goes_to_another_with_its_body() {
    for behaviour in [Behaviour::Refuse, Behaviour::GoAway] {
        let (bad, good) = (H2Double::start(behaviour).await, H2Double::start(Behaviour::Echo).await);
        let agent = agent_for(&[&bad, &good], &[]).await;
        for i in 0..12 {
            let payload = format!("order {i}");
            let (status, body) = send(&agent, "POST", &payload).await;
            assert_eq!((status, body.as_str()), (200, format!("POST {payload}").as_str()), "request {i}");
        }
        let name = if behaviour == Behaviour::Refuse { "RST_STREAM" } else { "GOAWAY" };
        assert!(retries(&agent, "refused_stream") > 0, "{name}: the refusals were retried");
        if behaviour == Behaviour::Refuse {
            assert!(bad.streams() > 0, "the refusing backend was tried");
        }
        agent.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_from_an_http2_backend_is_retried_for_idempotent_requests_only() {
    let (bad, good) = (H2Double::start(Behaviour::Unavailable).await, H2Double::start(Behaviour::Echo).await);
    let agent = agent_for(
        &[&bad, &good],
        &["--retry-budget", "100", "--outlier-consecutive", "0", "--outlier-failure-percent", "0"],
    )
    .await;
    let mut posts_503 = 0;
    // Two PUTs and a POST per round, so that neither kind keeps landing on the same backend first
    // under round robin.
    for i in 0..10 {
        for _ in 0..2 {
            let (status, body) = send(&agent, "PUT", "x").await;
            assert_eq!((status, body.as_str()), (200, "PUT x"), "an idempotent PUT is retried ({i})");
        }
        let (status, _) = send(&agent, "POST", "y").await;
        assert!(status == 200 || status == 503, "{status}");
        posts_503 += u32::from(status == 503);
    }
    assert!(posts_503 > 0, "a POST answered 503 is not sent again");
    assert!(retries(&agent, "gateway_error") > 0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_refused_stream_in_retry_on_a_refusal_reaches_the_client() {
    let (bad, good) = (H2Double::start(Behaviour::Refuse).await, H2Double::start(Behaviour::Echo).await);
    let agent = agent_for(&[&bad, &good], &["--retry-on", "connect-failure,reset,gateway-error"]).await;
    let mut failed = 0;
    for _ in 0..8 {
        let (status, _) = send(&agent, "POST", "z").await;
        assert!(status == 200 || status == 502, "{status}");
        failed += u32::from(status == 502);
    }
    assert!(failed > 0, "refusals reach the client when refused-stream is off");
    assert_eq!(retries(&agent, "refused_stream"), 0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_unavailable_is_retried_for_a_call_with_an_idempotency_key_and_passed_on_when_alone() {
    let (bad, good) = (H2Double::start(Behaviour::GrpcUnavailable).await, H2Double::start(Behaviour::Echo).await);
    let agent = agent_for(&[&bad, &good], &["--outlier-consecutive", "0", "--outlier-failure-percent", "0"]).await;
    for i in 0..6 {
        let (status, _, body) = send_with(&agent, "POST", "idempotency-key: k1\r\n", "call").await;
        assert_eq!((status, body.as_str()), (200, "POST call"), "call {i} is retried on the other backend");
    }
    assert!(retries(&agent, "gateway_error") > 0);
    agent.shutdown().await;

    // With no other backend, the client gets the backend's own UNAVAILABLE, not an answer of edge's.
    let alone = agent_for(&[&bad], &["--outlier-consecutive", "0", "--outlier-failure-percent", "0"]).await;
    let (status, head, _) = send_with(&alone, "POST", "idempotency-key: k2\r\n", "call").await;
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("grpc-status: 14"), "{head}");
    alone.shutdown().await;
}
