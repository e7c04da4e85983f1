//! WebSocket through the userspace proxy, with a real client and a real server library
//! (tokio-tungstenite): the upgrade and messages both ways, the tunnel counted while it lives, a
//! backend that declines the upgrade, the idle timeout, and the drain at shutdown; and WebSocket
//! over HTTP/2 (RFC 8441's extended CONNECT) to an HTTP/1.1 backend.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};

use crate::support::*;

/// Test double: a WebSocket echo server that records each handshake's headers.
struct EchoServer {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<HeaderMap>>>,
}

/// Keeps the handshake's request headers.
struct Recorder(Arc<Mutex<Vec<HeaderMap>>>);

impl Callback for Recorder {
    fn on_request(self, req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
        self.0.lock().unwrap().push(req.headers().clone());
        Ok(resp)
    }
}

impl EchoServer {
    async fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, Recorder(seen)).await else { return };
                    while let Some(Ok(m)) = ws.next().await {
                        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, heads }
    }
}

async fn agent_for(backend: SocketAddr, extra: &[&str]) -> edge_agent::app::AgentHandle {
    Args::http().with(&["--health-check", "tcp"]).with(extra).backends(&[backend.to_string()]).ready().await
}

fn metric(agent: &edge_agent::app::AgentHandle, name: &str) -> Option<f64> {
    let text = agent.metrics.render();
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.strip_prefix("{}").unwrap_or(rest).strip_prefix(' ')?.parse().ok()
    })
}

#[tokio::test]
async fn websocket_messages_cross_edge_both_ways() {
    let server = EchoServer::start().await;
    let agent = agent_for(server.addr, &[]).await;
    let url = format!("ws://{}/chat?room=1", agent.http_addrs[0]);
    let (mut ws, resp) = tokio_tungstenite::connect_async(&url).await.expect("the upgrade through edge");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    // Many messages, some larger than a socket buffer, in both directions at once.
    let big = vec![7u8; 300_000];
    for i in 0..50u8 {
        ws.send(Message::binary(vec![i; 1 + usize::from(i) * 10])).await.unwrap();
    }
    ws.send(Message::binary(big.clone())).await.unwrap();
    for i in 0..50u8 {
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![i; 1 + usize::from(i) * 10]));
    }
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    assert_eq!(metric(&agent, "edge_open_tunnels"), Some(1.0));
    assert_eq!(metric(&agent, "edge_tunnels_total"), Some(1.0));

    let head = server.heads.lock().unwrap()[0].clone();
    let get = |k: &str| head.get(k).map(|v| v.to_str().unwrap_or_default().to_ascii_lowercase());
    assert_eq!(get("upgrade").as_deref(), Some("websocket"), "{head:?}");
    assert_eq!(get("connection").as_deref(), Some("upgrade"), "{head:?}");
    assert_eq!(get("x-forwarded-for").as_deref(), Some("127.0.0.1"), "{head:?}");

    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    assert!(eventually(Duration::from_secs(5), || metric(&agent, "edge_open_tunnels") == Some(0.0)).await);
    agent.shutdown().await;
}

/// An HTTP/2 connection to edge over cleartext (prior knowledge), after one request so that
/// edge's SETTINGS (with `SETTINGS_ENABLE_CONNECT_PROTOCOL`) have arrived.
async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let probe = http::Request::get(format!("http://{addr}/")).body(http_body_util::Empty::new()).unwrap();
    let _ = sender.send_request(probe).await.unwrap();
    sender
}

/// An extended CONNECT (RFC 8441) for WebSocket on `path`.
fn extended_connect(addr: SocketAddr, path: &str) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
    let mut req = http::Request::connect(format!("http://{addr}{path}"))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    req
}

#[tokio::test]
async fn websocket_over_http2_reaches_an_http11_backend() {
    use tokio_tungstenite::tungstenite::protocol::Role;
    let server = EchoServer::start().await;
    let agent = agent_for(server.addr, &[]).await;
    let addr = agent.http_addrs[0];
    let mut sender = h2_client(addr).await;
    let resp = sender.send_request(extended_connect(addr, "/chat?room=2")).await.expect("the extended CONNECT");
    assert_eq!(resp.status(), 200, "RFC 8441: a 2xx opens the tunnel");
    assert!(!resp.headers().contains_key("sec-websocket-accept"), "{:?}", resp.headers());
    let upgraded = hyper::upgrade::on(resp).await.expect("the HTTP/2 stream as a tunnel");
    let io = hyper_util::rt::TokioIo::new(upgraded);
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over h2"));
    let big = vec![9u8; 200_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    assert_eq!(metric(&agent, "edge_open_tunnels"), Some(1.0));

    // The backend saw the HTTP/1.1 upgrade that the CONNECT stands for, with a key of its own.
    let head = server.heads.lock().unwrap()[0].clone();
    let get = |k: &str| head.get(k).map(|v| v.to_str().unwrap_or_default().to_ascii_lowercase());
    assert_eq!(get("upgrade").as_deref(), Some("websocket"), "{head:?}");
    assert_eq!(get("connection").as_deref(), Some("upgrade"), "{head:?}");
    assert_eq!(get("sec-websocket-key").map(|k| k.len()), Some(24), "{head:?}");
    assert_eq!(get("x-forwarded-for").as_deref(), Some("127.0.0.1"), "{head:?}");

    // A second tunnel on the same HTTP/2 connection, beside the first.
    let resp = sender.send_request(extended_connect(addr, "/second")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    let mut second = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    second.send(Message::text("two")).await.unwrap();
    assert_eq!(second.next().await.unwrap().unwrap(), Message::text("two"));
    assert_eq!(metric(&agent, "edge_open_tunnels"), Some(2.0));

    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop((ws, second, sender));
    assert!(eventually(Duration::from_secs(5), || metric(&agent, "edge_open_tunnels") == Some(0.0)).await);
    agent.shutdown().await;
}

#[tokio::test]
async fn an_extended_connect_that_the_backend_answers_without_switching_is_a_502() {
    let raw = RawBackend::start(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi\n", usize::MAX).await;
    let agent = agent_for(raw.addr, &[]).await;
    let addr = agent.http_addrs[0];
    let mut sender = h2_client(addr).await;
    let resp = sender.send_request(extended_connect(addr, "/")).await.unwrap();
    assert_eq!(resp.status(), 502, "a 200 to the GET must not look like an open tunnel");
    let refused = RawBackend::start(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n", usize::MAX).await;
    let agent2 = agent_for(refused.addr, &[]).await;
    let addr2 = agent2.http_addrs[0];
    let mut sender = h2_client(addr2).await;
    let resp = sender.send_request(extended_connect(addr2, "/")).await.unwrap();
    assert_eq!(resp.status(), 426, "a refusal goes back as it is");
    assert_eq!(metric(&agent, "edge_tunnels_total"), Some(0.0));
    agent.shutdown().await;
    agent2.shutdown().await;
}

#[tokio::test]
async fn a_declined_upgrade_is_an_ordinary_answer() {
    let raw = RawBackend::start(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 4\r\n\r\nno\r\n", usize::MAX).await;
    let agent = agent_for(raw.addr, &[]).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/", agent.http_addrs[0])).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 426),
        e => panic!("expected the backend's 426, got {e}"),
    }
    assert_eq!(metric(&agent, "edge_tunnels_total"), Some(0.0));
    agent.shutdown().await;
}

#[tokio::test]
async fn an_idle_tunnel_closes_after_the_idle_timeout() {
    let server = EchoServer::start().await;
    let agent = agent_for(server.addr, &["--idle-timeout", "500ms"]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", agent.http_addrs[0])).await.unwrap();
    // Traffic keeps it open past the timeout.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ws.send(Message::text("tick")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("tick"));
    }
    let start = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("the tunnel closes");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(2), "closed after {took:?}");
    assert!(eventually(Duration::from_secs(2), || metric(&agent, "edge_open_tunnels") == Some(0.0)).await);
    agent.shutdown().await;
}

#[tokio::test]
async fn an_open_tunnel_works_through_the_drain_then_closes() {
    let server = EchoServer::start().await;
    let agent = agent_for(server.addr, &["--drain-timeout", "1s"]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", agent.http_addrs[0])).await.unwrap();
    let start = Instant::now();
    let stopping = tokio::spawn(agent.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("still here"), "the tunnel works while draining");
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("the tunnel closes");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    tokio::time::timeout(Duration::from_secs(5), stopping).await.expect("the agent stops").unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "stopped after {took:?}");
}

/// Round trips of `conns` WebSocket connections to `url`, each sending `per_conn` messages of 32
/// bytes and waiting for each echo: (round trips per second, p99 round trip in microseconds).
async fn round_trips(url: &str, conns: usize, per_conn: usize) -> (f64, f64) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("connect");
                let mut times = Vec::with_capacity(per_conn);
                let msg = "x".repeat(32);
                for _ in 0..per_conn {
                    let t = Instant::now();
                    ws.send(Message::text(msg.clone())).await.unwrap();
                    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("echo in time");
                    assert!(matches!(echo, Some(Ok(Message::Text(_)))), "{echo:?}");
                    times.push(t.elapsed().as_micros() as f64);
                }
                times
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    (rate, all[(all.len() * 99 / 100).min(all.len() - 1)])
}

/// `cargo xtask bench ws`: WebSocket echo round trips per second through edge against a direct
/// connection to the same echo server, one connection and 16 at once, three rounds, medians.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo xtask bench ws"]
async fn websocket_round_trips_bench() {
    let server = EchoServer::start().await;
    let agent = agent_for(server.addr, &["--workers", "1"]).await;
    let direct = format!("ws://{}/", server.addr);
    let through = format!("ws://{}/", agent.http_addrs[0]);
    for (conns, per_conn) in [(1, 5_000), (16, 1_000)] {
        let (mut d, mut e) = (Vec::new(), Vec::new());
        for round in 1..=3 {
            let a = round_trips(&direct, conns, per_conn).await;
            let b = round_trips(&through, conns, per_conn).await;
            println!(
                "round {round} conns={conns} direct rps={:.0} p99={:.0}us edge rps={:.0} p99={:.0}us",
                a.0, a.1, b.0, b.1
            );
            d.push(a);
            e.push(b);
        }
        let med = |v: &mut Vec<(f64, f64)>| {
            v.sort_by(|x, y| x.0.total_cmp(&y.0));
            v[v.len() / 2]
        };
        let (a, b) = (med(&mut d), med(&mut e));
        println!(
            "median conns={conns}: direct {:.0} round trips/s (p99 {:.0} us), through edge {:.0} (p99 {:.0} us), ratio {:.3}",
            a.0,
            a.1,
            b.0,
            b.1,
            b.0 / a.0
        );
    }
    agent.shutdown().await;
}
