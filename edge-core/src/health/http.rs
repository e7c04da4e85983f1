//! HTTP probe: `GET --health-path` over a fresh HTTP/1.1 connection (TLS for a backend spoken to
//! over TLS, after a `LOCAL` PROXY header for one that asks for it); 2xx and 3xx pass.
//!
//! Each probe opens its own connection (`Connection: close`), like HAProxy's `option httpchk`, so a
//! backend whose accept queue is stuck fails its probe even when pooled connections still work.
//! Only the status line matters, so the probe writes one request head and reads until the status
//! of the final response is known (interim 1xx answers are skipped); httparse parses. A full HTTP
//! client would add nothing here but a dependency this crate does not otherwise need.

use std::net::SocketAddr;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::connect::connect;
use super::{HealthCheck, ProbeError, Reach};
use crate::util::BoxFuture;

/// The largest response head a probe reads before giving up on the backend (large cookies and
/// many headers fit; a backend that sends more is broken).
const MAX_HEAD: usize = 64 * 1024;

/// The most response headers a probe parses (hyper's client allows 100).
const MAX_HEADERS: usize = 128;

/// Passes when `GET path` answers 2xx or 3xx.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    path: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl HttpCheck {
    /// A probe of `path` (starts with `/`; validated by the configuration).
    pub fn new(path: impl Into<String>) -> Self {
        Self { path: path.into(), tls: None }
    }

    /// The TLS settings for backends spoken to over TLS (`,tls`): probes to them speak TLS too.
    #[must_use]
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        self.tls = tls;
        self
    }
}

impl HealthCheck for HttpCheck {
    fn check(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
        self.check_with(addr, Reach::default())
    }

    fn check_with(&self, addr: SocketAddr, reach: Reach) -> BoxFuture<'_, Result<String, ProbeError>> {
        Box::pin(async move {
            let (conn, _) = connect(addr, reach, self.tls.as_ref(), ProbeError::Http).await?;
            self.exchange(conn, addr).await
        })
    }
}

impl HttpCheck {
    /// Writes the probe's request on `stream` and judges the answer's status.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        addr: SocketAddr,
    ) -> Result<String, ProbeError> {
        let head = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: edge-health/{}\r\nConnection: close\r\n\r\n",
            self.path,
            env!("CARGO_PKG_VERSION")
        );
        let written = stream.write_all(head.as_bytes()).await;
        // A backend may answer (and close) before it reads the request; its answer counts.
        let status = match (read_status(&mut stream).await, written) {
            (Ok(status), _) => status,
            (Err(_), Err(e)) => return Err(ProbeError::Http(e.to_string())),
            (Err(e), Ok(())) => return Err(e),
        };
        if (200..400).contains(&status) { Ok(format!("http {status}")) } else { Err(ProbeError::Status(status)) }
    }
}

/// Reads response heads until a final (non-1xx) one; returns its status code.
async fn read_status<S: AsyncRead + Unpin>(stream: &mut S) -> Result<u16, ProbeError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let code = resp.code.unwrap_or(0);
                if (100..200).contains(&code) && code != 101 {
                    buf.drain(..len);
                    continue;
                }
                return Ok(code);
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(ProbeError::Http(format!("malformed response: {e}"))),
        }
        if buf.len() >= MAX_HEAD {
            return Err(ProbeError::Http(format!("response head larger than {MAX_HEAD} bytes")));
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.map_err(|e| ProbeError::Http(e.to_string()))?;
        if n == 0 {
            return Err(ProbeError::Http("connection closed before a complete response head".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Test double: a backend that answers one connection with `answer` and records the request.
    async fn backend(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut req = Vec::new();
            let mut chunk = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&chunk[..n]);
            }
            // Split the answer to exercise partial heads.
            let (a, b) = answer.split_at(answer.len() / 2);
            s.write_all(a).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let _ = s.write_all(b).await;
            String::from_utf8_lossy(&req).into_owned()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn passes_on_2xx_and_3xx_and_sends_a_closing_get() {
        let (addr, req) = backend(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(HttpCheck::new("/healthz").check(addr).await, Ok("http 204".into()));
        let req = req.await.unwrap();
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
        assert!(req.contains(&format!("Host: {addr}\r\n")) && req.contains("Connection: close\r\n"), "{req}");
        let (addr, _) = backend(b"HTTP/1.1 302 Found\r\nLocation: /x\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(HttpCheck::new("/").check(addr).await, Ok("http 302".into()));
    }

    #[tokio::test]
    async fn a_backend_that_asks_for_the_proxy_protocol_gets_a_local_header_first() {
        let (addr, req) = backend(b"HTTP/1.1 200 OK\r\n\r\n").await;
        let check = HttpCheck::new("/healthz");
        let reach = Reach { proxy: Some(crate::backend::ProxyProtocol::V1), tls: None };
        assert_eq!(check.check_with(addr, reach).await, Ok("http 200".into()));
        let req = req.await.unwrap();
        assert!(req.starts_with("PROXY UNKNOWN\r\nGET /healthz HTTP/1.1\r\n"), "{req:?}");
    }

    #[tokio::test]
    async fn large_heads_within_reason_pass() {
        let head: String = (0..110).map(|i| format!("x-h{i}: {}\r\n", "v".repeat(200))).collect();
        let answer: &'static [u8] = Box::leak(format!("HTTP/1.1 200 OK\r\n{head}\r\n").into_bytes().into_boxed_slice());
        let (addr, _) = backend(answer).await;
        assert_eq!(HttpCheck::new("/").check(addr).await, Ok("http 200".into()));
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        let (addr, _) =
            backend(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\n\r\n").await;
        assert_eq!(HttpCheck::new("/").check(addr).await, Ok("http 200".into()));
    }

    #[tokio::test]
    async fn fails_on_errors_garbage_and_silence() {
        let (addr, _) = backend(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(HttpCheck::new("/").check(addr).await, Err(ProbeError::Status(503)));
        let (addr, _) = backend(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
        assert!(matches!(HttpCheck::new("/").check(addr).await, Err(ProbeError::Http(m)) if m.contains("malformed")));
        let (addr, _) = backend(b"HTTP/1.1 200").await;
        assert!(matches!(HttpCheck::new("/").check(addr).await, Err(ProbeError::Http(m)) if m.contains("closed")));
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(matches!(HttpCheck::new("/").check(closed).await, Err(ProbeError::Connect(_))));
    }
}
