//! Streaming through the userspace proxy: a server-sent-events response reaches the client event by
//! event with the backend's spacing, for longer than the upstream timeout (which covers the head
//! only), and a request body reaches the backend while the client is still sending it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::*;

/// Reads from `s` until `buf` holds a complete request head.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the request head was cut short");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Test double: a backend that answers every request with `events` server-sent events, `gap`
/// apart, as chunks.
async fn sse_backend(events: usize, gap: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                read_head(&mut s, &mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for i in 0..events {
                    tokio::time::sleep(gap).await;
                    let event = format!("data: event {i}\n\n");
                    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one_past_the_upstream_timeout() {
    let gap = Duration::from_millis(250);
    let backend = sse_backend(6, gap).await;
    let agent = Args::http()
        .with(&["--health-check", "tcp", "--upstream-timeout", "500ms"])
        .backends(&[backend.to_string()])
        .ready()
        .await;
    let mut s = TcpStream::connect(agent.http_addrs[0]).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut seen = String::new();
    let mut arrivals = Vec::new();
    let mut chunk = [0u8; 4096];
    while arrivals.len() < 6 {
        let n =
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await.expect("the stream moves").unwrap();
        assert!(n > 0, "the stream ended after {} events: {seen:?}", arrivals.len());
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        while arrivals.len() < 6 && seen.contains(&format!("data: event {}\n", arrivals.len())) {
            arrivals.push(start.elapsed());
        }
    }
    // Each event came on its own, about one gap after the previous one: nothing was held back
    // to be sent in bulk.
    for pair in arrivals.windows(2) {
        let spacing = pair[1] - pair[0];
        assert!(spacing >= gap / 2, "events arrived together: {arrivals:?}");
    }
    assert!(arrivals[5] > Duration::from_secs(1), "the stream outlived the 500 ms upstream timeout: {arrivals:?}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    seen.push_str(&String::from_utf8_lossy(&rest));
    assert!(seen.ends_with("0\r\n\r\n"), "the stream ended cleanly: {seen:?}");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_request_body_reaches_the_backend_while_the_client_sends_it() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                read_head(&mut s, &mut buf).await;
                let mut chunk = [0u8; 4096];
                loop {
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let _ = tx.send(text.clone());
                    if text.ends_with("0\r\n\r\n") {
                        break;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").await;
            });
        }
    });
    let agent = Args::http().with(&["--health-check", "tcp"]).backends(&[backend.to_string()]).ready().await;
    let mut s = TcpStream::connect(agent.http_addrs[0]).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    s.write_all(b"6\r\nfirst \r\n").await.unwrap();
    let got_first = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(text) = rx.recv().await {
            if text.contains("first ") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got_first, Ok(true), "the backend saw nothing of the body before the client finished it");
    s.write_all(b"4\r\nlast\r\n0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    agent.shutdown().await;
}
