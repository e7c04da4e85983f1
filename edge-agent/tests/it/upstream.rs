//! The upstream HTTP/1.1 client end to end: request bodies, response framing, connection reuse,
//! and stale pooled connections.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use edge_proxy::RetryReason;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

async fn start(spec: &str, extra: &[&str]) -> edge_agent::app::AgentHandle {
    Args::http().with(&["--health-interval", "1m"]).backends(&[spec]).with(extra).ready().await
}

#[tokio::test]
async fn request_bodies_arrive_whole_with_and_without_length() {
    let b = TestBackend::start("a").await;
    let agent = start(&b.spec(), &[]).await;
    let url = format!("http://{}/echo", agent.http_addrs[0]);
    let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let big = "x".repeat(300_000);
    let resp = c.request(Request::post(&url).body(Full::new(Bytes::from(big.clone()))).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), big.len(), "sized body forwarded whole");
    assert_eq!(b.behaviour.last_headers.lock().unwrap().clone().unwrap()["content-length"], "300000");

    // A body of unknown length goes chunked.
    let parts: Vec<Bytes> = (0..50).map(|i| Bytes::from(format!("part{i};"))).collect();
    let sc: Client<_, Frames> = Client::builder(TokioExecutor::new()).build_http();
    let resp = sc.request(Request::post(&url).body(Frames(parts)).unwrap()).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let expected: String = (0..50).map(|i| format!("part{i};")).collect();
    assert_eq!(String::from_utf8_lossy(&body), expected);
    assert_eq!(b.behaviour.last_headers.lock().unwrap().clone().unwrap()["transfer-encoding"], "chunked");

    // An empty POST says so, so that the backend does not wait for a body.
    let resp = c.request(Request::post(&url).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(b.behaviour.last_headers.lock().unwrap().clone().unwrap()["content-length"], "0");
    agent.shutdown().await;
}

/// A request body of unknown length, sent as separate frames.
struct Frames(Vec<Bytes>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.0.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let b = self.0.remove(0);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test]
async fn response_framings_reach_the_client_intact() {
    let cases: [(&'static [u8], &str); 4] = [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 7\r\n\r\n",
            "hello world",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", "hello"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", ""),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end", "until the end"),
    ];
    for (answer, want) in cases {
        let close_after = if want == "until the end" { 1 } else { 100 };
        let raw = RawBackend::start(answer, close_after).await;
        let agent = start(&raw.addr.to_string(), &[]).await;
        let (status, _, body) = get(&client(), &format!("http://{}/", agent.http_addrs[0])).await;
        assert!(status.is_success(), "{status} for {}", String::from_utf8_lossy(answer));
        assert_eq!(body, want);
        agent.shutdown().await;
    }
}

#[tokio::test]
async fn head_requests_get_no_body_and_connections_are_reused() {
    let b = TestBackend::start("a").await;
    let agent = start(&b.spec(), &[]).await;
    let c = client();
    let url = format!("http://{}/", agent.http_addrs[0]);
    let resp = c.request(Request::head(&url).body(http_body_util::Empty::new()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-length"], "2");
    assert!(resp.into_body().collect().await.unwrap().to_bytes().is_empty());
    let before = b.behaviour.connections.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(get(&c, &url).await.0, StatusCode::OK);
    }
    // One worker serves this client connection; its pool keeps reusing one upstream connection.
    let opened = b.behaviour.connections.load(Ordering::SeqCst) - before;
    assert!(opened <= 1, "{opened} new upstream connections for 20 sequential requests");
    agent.shutdown().await;
}

#[tokio::test]
async fn conflicting_framing_from_a_backend_is_a_502() {
    let raw = RawBackend::start(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!", 100).await;
    let agent = start(&raw.addr.to_string(), &[]).await;
    let (status, _, _) = get(&client(), &format!("http://{}/", agent.http_addrs[0])).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    agent.shutdown().await;
}

#[tokio::test]
async fn stale_pooled_connections_are_replaced_not_failed() {
    // The backend answers one request per connection, then closes it: every pooled connection
    // is stale by the time it is reused.
    let raw = RawBackend::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 1).await;
    let agent = start(&raw.addr.to_string(), &["--workers", "1"]).await;
    let url = format!("http://{}/", agent.http_addrs[0]);
    let c = client();
    for _ in 0..5 {
        assert_eq!(get(&c, &url).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stale = agent.services[0].traffic.retries(RetryReason::StaleConnection);
    assert!(stale >= 1, "stale GETs retried on a fresh connection");
    // A POST is never sent on a connection that may be stale: it is checked first.
    let pc: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..3 {
        let req = Request::builder().method(Method::POST).uri(&url).body(Full::new(Bytes::from_static(b"x"))).unwrap();
        assert_eq!(pc.request(req).await.unwrap().status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = agent.metrics.render();
    assert!(!m.contains("class=\"5xx\"} 1"), "no request failed:\n{m}");
    assert_eq!(raw.requests.lock().unwrap().iter().filter(|r| r.starts_with("POST")).count(), 3, "each POST sent once");
    agent.shutdown().await;
}

/// An HTTP/1.1 client that sends `TE: trailers` gets the trailers the backend declared (the
/// backend is asked with `TE: trailers` too); one that does not gets the body alone, and an
/// undeclared or forbidden field never passes.
#[tokio::test]
async fn response_trailers_reach_http11_clients_that_ask() {
    let raw = RawBackend::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum, set-cookie\r\n\r\n\
5\r\nhello\r\n0\r\nx-checksum: 42\r\nset-cookie: a=1\r\nx-undeclared: 1\r\n\r\n",
        100,
    )
    .await;
    let agent = start(&raw.addr.to_string(), &[]).await;
    let addr = agent.http_addrs[0];
    let limit = Duration::from_secs(5);
    let asked =
        raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n", limit).await;
    let lower = asked.to_ascii_lowercase();
    assert!(lower.contains("\r\ntrailer: x-checksum\r\n"), "the head declares what may follow: {asked:?}");
    assert!(asked.ends_with("\r\n5\r\nhello\r\n0\r\nx-checksum: 42\r\n\r\n"), "{asked:?}");
    let head = raw.requests.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains("\r\nte: trailers\r\n"), "the backend is asked for trailers too: {head}");

    let plain = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", limit).await;
    assert!(!plain.to_ascii_lowercase().contains("trailer:"), "{plain:?}");
    assert!(plain.ends_with("\r\n5\r\nhello\r\n0\r\n\r\n"), "{plain:?}");
    let head = raw.requests.lock().unwrap()[1].to_ascii_lowercase();
    assert!(!head.contains("\r\nte:"), "{head}");
    agent.shutdown().await;
}

#[tokio::test]
async fn response_trailers_reach_http2_clients() {
    let raw = RawBackend::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 7\r\n\r\n",
        100,
    )
    .await;
    let agent = start(&raw.addr.to_string(), &[]).await;
    let c: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let resp = c.get(format!("http://{}/", agent.http_addrs[0]).parse().unwrap()).await.unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().map(|t| t["x-sum"].clone()), Some(http::HeaderValue::from_static("7")));
    assert_eq!(&collected.to_bytes()[..], b"hello");
    agent.shutdown().await;
}
