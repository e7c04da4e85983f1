//! Every stall has a timeout: a backend that stops mid-body, a client that stops reading (HTTP/1.1
//! and HTTP/2), and a client that drips its request body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_core::backend::Failure;
use edge_proxy::ClientError;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Test double: a backend that answers every request head with `head` and then `body` bytes, then
/// keeps the connection open doing nothing. Counts connections it saw closed by the proxy.
struct StallingBackend {
    addr: SocketAddr,
    closed: Arc<AtomicU64>,
}

impl StallingBackend {
    async fn start(head: &'static [u8], body: usize) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let closed = Arc::new(AtomicU64::new(0));
        let seen = closed.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    // Writes block once the proxy stops reading; a closed proxy side fails them.
                    let wrote = async {
                        s.write_all(head).await?;
                        s.write_all(&vec![b'x'; body]).await?;
                        std::io::Result::Ok(())
                    };
                    if wrote.await.is_ok() {
                        // Stall: wait for the proxy to give up on us.
                        while let Ok(n) = s.read(&mut chunk).await {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, closed }
    }
}

async fn start(spec: &str, extra: &[&str]) -> edge_agent::app::AgentHandle {
    Args::http().with(&["--health-interval", "1m"]).backends(&[spec]).with(extra).ready().await
}

fn timeouts(agent: &edge_agent::app::AgentHandle) -> u64 {
    agent.monitor.snapshot().backends.iter().map(|b| b.backend.stats.failures(Failure::Timeout)).sum()
}

/// The `edge_client_errors_total` count for `reason`.
fn client_errors(agent: &edge_agent::app::AgentHandle, reason: ClientError) -> u64 {
    let m = agent.metrics.render();
    let line = format!("edge_client_errors_total{{reason=\"{}\"}} ", reason.as_str());
    m.lines().find_map(|l| l.strip_prefix(line.as_str())).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_backend_that_stalls_mid_body_is_cut_off_and_counted() {
    let b = StallingBackend::start(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", 10).await;
    let agent =
        start(&b.addr.to_string(), &["--upstream-timeout", "3s", "--idle-timeout", "5s", "--body-timeout", "500ms"])
            .await;
    let t0 = Instant::now();
    let mut s = TcpStream::connect(agent.http_addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "the client is not held: {:?}", String::from_utf8_lossy(&got));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &got[got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), 10, "the response is cut off, never completed");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "{took:?}");
    assert!(eventually(Duration::from_secs(3), || b.closed.load(Ordering::SeqCst) == 1).await, "backend closed");
    assert_eq!(timeouts(&agent), 1, "an upstream timeout for that backend");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_its_backend_connection() {
    // 32 MiB: far more than the socket buffers between backend, proxy and client hold.
    let b = StallingBackend::start(b"HTTP/1.1 200 OK\r\ncontent-length: 33554432\r\n\r\n", 32 << 20).await;
    let agent = start(&b.addr.to_string(), &["--idle-timeout", "500ms"]).await;
    let mut s = TcpStream::connect(agent.http_addrs[0]).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut head = [0u8; 1024];
    assert!(s.read(&mut head).await.unwrap() > 0);
    // Now read nothing.
    assert!(eventually(Duration::from_secs(5), || b.closed.load(Ordering::SeqCst) == 1).await, "backend closed");
    let stalls = client_errors(&agent, ClientError::WriteStall);
    assert_eq!(stalls, 1);
    // The client's side is closed too: draining it ends.
    let mut sink = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "client connection closed");
    assert!(sink.len() < 32 << 20, "never completed");
    agent.shutdown().await;
}

#[tokio::test]
async fn an_http2_client_with_a_shut_window_is_closed_with_its_backend_connection() {
    let b = StallingBackend::start(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n", 1 << 20).await;
    let agent = start(&b.addr.to_string(), &["--idle-timeout", "500ms"]).await;
    // The window stays shut because this client never reads the body; it still answers pings.
    let c: Client<_, http_body_util::Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(1024)
        .http2_initial_connection_window_size(65_535)
        .build_http();
    let resp = c.get(format!("http://{}/", agent.http_addrs[0]).parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(eventually(Duration::from_secs(5), || b.closed.load(Ordering::SeqCst) == 1).await, "backend closed");
    assert_eq!(client_errors(&agent, ClientError::WriteStall), 1);
    let r = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
    assert!(matches!(r, Ok(Err(_))), "the stream ends with an error, never complete");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_request_body_that_drips_gets_408() {
    let b = TestBackend::start("a").await;
    let agent = start(&b.spec(), &["--body-timeout", "1s", "--body-min-rate", "100"]).await;
    let mut s = TcpStream::connect(agent.http_addrs[0]).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\ncontent-length: 1000\r\n\r\n").await.unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    // One byte every 200 ms: no gap reaches 1 s, but 5 bytes a second is below the rate.
    for _ in 0..40 {
        if s.write_all(b"x").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            got.extend_from_slice(&buf[..n]);
            if n == 0 || got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");
    assert_eq!(client_errors(&agent, ClientError::BodyTimeout), 1);
    agent.shutdown().await;
}
