//! The PROXY protocol end to end: a client's header accepted on a listener that asks for it
//! (`--accept-proxy-protocol`), and the client's address sent on to backends that ask for it
//! (`,proxy=v1|v2`), in HTTP and TCP modes; health probes send a `LOCAL` header; a connection
//! without a header is refused. The backend is a test double that parses headers with `ppp`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ppp::{HeaderResult, PartialResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// One connection the backend saw: what its PROXY header named ("local" for a `LOCAL` or
/// `UNKNOWN` header) and the request heads that came on it.
#[derive(Debug, Clone)]
struct Seen {
    source: String,
    version: u8,
    heads: Vec<String>,
}

/// Test double: an HTTP/1.1 backend whose every connection must start with a PROXY header.
struct ProxiedBackend {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Seen>>>,
}

impl ProxiedBackend {
    async fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let all = conns.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let all = all.clone();
                tokio::spawn(serve(s, all));
            }
        });
        Self { addr, conns }
    }

    fn seen(&self) -> Vec<Seen> {
        self.conns.lock().unwrap().clone()
    }
}

async fn serve(mut s: TcpStream, all: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (source, version, used) = loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let h = HeaderResult::parse(&buf);
        if h.is_incomplete() {
            continue;
        }
        match h {
            HeaderResult::V1(Ok(h)) => {
                let source = match h.addresses {
                    ppp::v1::Addresses::Tcp4(a) => format!("{}:{}", a.source_address, a.source_port),
                    ppp::v1::Addresses::Tcp6(a) => format!("[{}]:{}", a.source_address, a.source_port),
                    ppp::v1::Addresses::Unknown => "local".into(),
                };
                break (source, 1, h.header.len());
            }
            HeaderResult::V2(Ok(h)) => {
                let source = match (h.command, &h.addresses) {
                    (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                        format!("{}:{}", a.source_address, a.source_port)
                    }
                    _ => "local".into(),
                };
                break (source, 2, h.len());
            }
            // No valid header: a real backend would close; so does this one.
            _ => return,
        }
    };
    buf.drain(..used);
    let index = {
        let mut all = all.lock().unwrap();
        all.push(Seen { source, version, heads: Vec::new() });
        all.len() - 1
    };
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            all.lock().unwrap()[index].heads.push(head);
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").await.is_err() {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `bytes` on a new connection and reads the answer until the connection closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    raw_exchange(addr, bytes, Duration::from_secs(5)).await
}

fn xff(head: &str) -> Option<String> {
    head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("x-forwarded-for: ").map(str::to_string))
}

#[tokio::test]
async fn http_backends_see_each_client_through_the_proxy_protocol() {
    let b = ProxiedBackend::start().await;
    let agent = Args::http()
        .with(&["--accept-proxy-protocol", "--health-check", "http", "--health-path", "/healthz"])
        .backends(&[format!("{},proxy=v2", b.addr)])
        .ready()
        .await;
    let addr = agent.http_addrs[0];
    // The probes came with a LOCAL header, and passed.
    assert!(b.seen().iter().any(|c| c.source == "local" && c.version == 2), "{:?}", b.seen());

    let a = exchange(
        addr,
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\nGET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a:?}");
    let v2_in = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        ("198.51.100.2:40000".parse::<SocketAddr>().unwrap(), "10.0.0.1:80".parse::<SocketAddr>().unwrap()),
    )
    .build()
    .unwrap();
    let mut second = v2_in;
    second.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = exchange(addr, &second).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");

    let seen = b.seen();
    let on = |path: &str| {
        seen.iter()
            .find(|c| c.heads.iter().any(|h| h.starts_with(&format!("GET {path} "))))
            .cloned()
            .unwrap_or_else(|| panic!("no connection carried {path}: {seen:?}"))
    };
    let (ca, cb) = (on("/a"), on("/b"));
    assert_eq!((ca.source.as_str(), ca.version), ("203.0.113.7:51000", 2));
    assert_eq!(cb.source, "198.51.100.2:40000", "the second client got a connection of its own, not the first's");
    assert_eq!(xff(&ca.heads[0]).as_deref(), Some("203.0.113.7"), "{}", ca.heads[0]);
    assert_eq!(xff(&cb.heads[0]).as_deref(), Some("198.51.100.2"));

    // Without a header the connection is closed unanswered, and counted.
    let plain = exchange(addr, b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(plain, "", "{plain:?}");
    assert!(b.seen().iter().all(|c| c.heads.iter().all(|h| !h.starts_with("GET /c "))));
    let m = agent.metrics.render();
    assert!(m.contains("edge_client_errors_total{reason=\"proxy_protocol\"} 1"), "{m}");
    agent.shutdown().await;
}

#[tokio::test]
async fn keep_alive_requests_of_one_client_reuse_its_own_backend_connection() {
    let b = ProxiedBackend::start().await;
    let agent = Args::http()
        .with(&["--accept-proxy-protocol", "--health-check", "tcp"])
        .backends(&[format!("{},proxy=v1", b.addr)])
        .ready()
        .await;
    let mut s = TcpStream::connect(agent.http_addrs[0]).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.9 10.0.0.1 52000 80\r\n").await.unwrap();
    let mut answer = [0u8; 256];
    for path in ["/1", "/2", "/3"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer)).await.unwrap().unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer[..n]));
    }
    let mine: Vec<Seen> = b.seen().into_iter().filter(|c| c.source == "203.0.113.9:52000").collect();
    assert_eq!(mine.len(), 1, "one backend connection for the client's three requests: {mine:?}");
    assert_eq!((mine[0].version, mine[0].heads.len()), (1, 3));
    agent.shutdown().await;
}

#[tokio::test]
async fn tcp_backends_see_the_client_through_the_proxy_protocol() {
    let b = ProxiedBackend::start().await;
    let agent = Args::tcp()
        .with(&["--accept-proxy-protocol", "--health-check", "tcp"])
        .backends(&[format!("{},proxy=v1", b.addr)])
        .ready()
        .await;
    let mut s = TcpStream::connect(agent.tcp_addrs[0]).await.unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.33 10.0.0.1 53000 443\r\nGET /t HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer)).await.unwrap().unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&answer[..n]));
    let seen = b.seen();
    let c = seen.iter().find(|c| c.heads.iter().any(|h| h.starts_with("GET /t "))).expect("the request arrived");
    assert_eq!((c.source.as_str(), c.version), ("192.0.2.33:53000", 1));
    drop(s);
    agent.shutdown().await;
}
