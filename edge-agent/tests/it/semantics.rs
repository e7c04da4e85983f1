//! Request semantics at the proxy (RFC 9110, RFC 9112): the one `Host` a backend sees, what the
//! `Connection` header may strip, and which trailer fields pass.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

async fn start(spec: &str) -> edge_agent::app::AgentHandle {
    Args::http().with(&["--health-interval", "1m"]).backends(&[spec]).ready().await
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";

#[tokio::test]
async fn host_must_be_present_once_and_valid() {
    let b = RawBackend::start(OK, usize::MAX).await;
    let agent = start(&b.addr.to_string()).await;
    let addr = agent.http_addrs[0];
    let limit = Duration::from_secs(5);
    for bad in [
        "GET / HTTP/1.1\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n".into(),
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n".into(),
        "GET / HTTP/1.1\r\nHost: user@a.example\r\n\r\n".into(),
        "GET / HTTP/1.1\r\nHost: a.example/x\r\n\r\n".into(),
    ] {
        let r = raw_exchange(addr, bad.as_bytes(), limit).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{bad:?} got {r:?}");
    }
    assert!(b.requests.lock().unwrap().is_empty(), "nothing reached the backend");
    // HTTP/1.0 may omit Host.
    let r = raw_exchange(addr, b"GET / HTTP/1.0\r\n\r\n", limit).await;
    assert!(r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"), "{r:?}");
    agent.shutdown().await;
}

#[tokio::test]
async fn absolute_form_authority_wins_over_host() {
    let b = RawBackend::start(OK, usize::MAX).await;
    let agent = start(&b.addr.to_string()).await;
    let req = b"GET http://a.example/x?y=1 HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n";
    let r = raw_exchange(agent.http_addrs[0], req, Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    let head = b.requests.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
    let hosts: Vec<&str> = head.lines().filter(|l| l.to_ascii_lowercase().starts_with("host:")).collect();
    assert_eq!(hosts, ["host: a.example"], "{head}");
    agent.shutdown().await;
}

#[tokio::test]
async fn connection_header_cannot_remove_host_auth_or_forwarding_headers() {
    let b = RawBackend::start(OK, usize::MAX).await;
    let agent = start(&b.addr.to_string()).await;
    let req = b"GET / HTTP/1.1\r\nHost: a.example\r\nAuthorization: Bearer t\r\nX-Forwarded-For: 192.0.2.1\r\n\
Connection: close, host, authorization, x-forwarded-for, x-forwarded-proto, x-drop\r\nX-Drop: 1\r\n\r\n";
    let r = raw_exchange(agent.http_addrs[0], req, Duration::from_secs(5)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    let head = b.requests.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains("\r\nhost: a.example\r\n"), "{head}");
    assert!(head.contains("\r\nauthorization: bearer t\r\n"), "{head}");
    assert!(head.contains("\r\nx-forwarded-for: 192.0.2.1, 127.0.0.1\r\n"), "{head}");
    assert!(head.contains("\r\nx-forwarded-proto: http\r\n"), "{head}");
    assert!(!head.contains("x-drop"), "other named headers still go: {head}");
    agent.shutdown().await;
}

/// Test double: a backend that records every raw byte of one chunked request and answers 200.
async fn chunked_recorder() -> (std::net::SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let out = out.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The last chunk is `0\r\n`, then trailer lines, then an empty line.
                while !(buf.windows(5).any(|w| w == b"\r\n0\r\n") && buf.ends_with(b"\r\n\r\n")) {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                out.lock().unwrap().extend_from_slice(&buf);
                let _ = s.write_all(OK).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn request_trailers_lose_framing_routing_and_auth_fields() {
    let (addr, seen) = chunked_recorder().await;
    let agent = start(&addr.to_string()).await;
    let mut s = TcpStream::connect(agent.http_addrs[0]).await.unwrap();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nConnection: close\r\n\r\n\
3\r\nabc\r\n0\r\nContent-Length: 999\r\nHost: evil\r\nAuthorization: x\r\nX-Checksum: 42\r\n\r\n",
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp)).await;
    assert!(resp.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&resp));
    let raw = String::from_utf8_lossy(&seen.lock().unwrap()).to_ascii_lowercase();
    let trailer = &raw[raw.rfind("\r\n0\r\n").unwrap()..];
    assert_eq!(trailer, "\r\n0\r\nx-checksum: 42\r\n\r\n", "{raw}");
    agent.shutdown().await;
}
