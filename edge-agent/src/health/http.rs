//! HTTP probe: `GET --health-path` over a fresh HTTP/1.1 connection; 2xx and 3xx pass.
//!
//! Each probe opens its own connection (`Connection: close`), like HAProxy's `option httpchk`, so a
//! backend whose accept queue is stuck fails its probe even when pooled connections still work.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{BoxFuture, HealthCheck, ProbeError};

/// Passes when `GET path` answers 2xx or 3xx.
#[derive(Debug, Clone)]
pub struct HttpCheck {
    path: String,
}

impl HttpCheck {
    /// A probe of `path` (starts with `/`).
    pub fn new(path: impl Into<String>) -> Self {
        Self { path: path.into() }
    }
}

impl HealthCheck for HttpCheck {
    fn check(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await.map_err(|e| ProbeError::Connect(e.kind().to_string()))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ProbeError::Http(e.to_string()))?;
            let req = Request::get(&self.path)
                .header(header::HOST, addr.to_string())
                .header(header::USER_AGENT, concat!("edge-health/", env!("CARGO_PKG_VERSION")))
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .map_err(|e| ProbeError::Http(e.to_string()))?;
            let mut conn = std::pin::pin!(conn);
            let mut send = std::pin::pin!(sender.send_request(req));
            // With `Connection: close` the connection task ends right after delivering the
            // response, so when it finishes first the response is already waiting in `send`.
            let resp = tokio::select! {
                biased;
                r = &mut send => r,
                _ = &mut conn => send.await,
            }
            .map_err(|e| ProbeError::Http(e.to_string()))?;
            let status = resp.status().as_u16();
            if (200..400).contains(&status) { Ok(format!("http {status}")) } else { Err(ProbeError::Status(status)) }
        })
    }
}
