//! One HTTP exchange with a Consul agent, on the agent's own hyper and rustls stack: a GET with
//! the ACL token in `X-Consul-Token` (never in the URL, so it never reaches a log line), a
//! connect timeout, an overall deadline, and a cap on the answer's size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest answer read: 10,000 instances with their checks take about 15 MB.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Longest wait for a TCP (and TLS) connection to Consul.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Consul is and how to talk to it; shared by every service's watch.
#[derive(Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    /// TLS settings for HTTPS (`None`: plain HTTP).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The ACL token.
    pub token: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    // By hand, so that the token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("authority", &self.authority)
            .field("https", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No connection.
    #[error("cannot connect to consul at {authority}: {reason}; check --consul-addr (or CONSUL_HTTP_ADDR)")]
    Connect {
        /// Where.
        authority: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed.
    #[error("TLS with consul at {authority} failed: {reason}; check --consul-ca-cert (or CONSUL_CACERT)")]
    Tls {
        /// Where.
        authority: String,
        /// Why.
        reason: String,
    },
    /// The exchange did not finish in time.
    #[error("consul did not answer within {0:?}")]
    Timeout(Duration),
    /// HTTP trouble, or an answer cut short.
    #[error("consul exchange failed: {0}")]
    Http(String),
    /// A status other than 200.
    #[error("consul answered {status}: {body}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
}

/// A 200 answer.
#[derive(Debug)]
pub struct Answer {
    /// `X-Consul-Index`, if present.
    pub index: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl Endpoint {
    /// `GET path_and_query`, all within `deadline`.
    pub async fn get(&self, path_and_query: &str, deadline: Duration) -> Result<Answer, ExchangeError> {
        tokio::time::timeout(deadline, self.exchange(path_and_query))
            .await
            .map_err(|_| ExchangeError::Timeout(deadline))?
    }

    async fn exchange(&self, path_and_query: &str) -> Result<Answer, ExchangeError> {
        let connect = |reason: String| ExchangeError::Connect { authority: self.authority.clone(), reason };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| connect(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::get(path_and_query).header(http::header::HOST, &self.authority);
        if let Some(t) = &self.token {
            req = req.header("x-consul-token", t);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| ExchangeError::Http(e.to_string()))?;
        match &self.tls {
            None => send(tcp, req).await,
            Some(cfg) => {
                let tls = |reason: String| ExchangeError::Tls { authority: self.authority.clone(), reason };
                let host = self.authority.rsplit_once(':').map_or(self.authority.as_str(), |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| tls(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls(e.to_string()))?;
                send(stream, req).await
            }
        }
    }
}

async fn send<S>(stream: S, req: Request<Empty<Bytes>>) -> Result<Answer, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let http = |e: &dyn std::fmt::Display| ExchangeError::Http(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| http(&e))?;
    // The connection task ends with the exchange: one query per connection keeps a blocking query
    // from sharing a socket with anything else.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| http(&e))?;
    let status = resp.status();
    let index = resp.headers().get("x-consul-index").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| http(&format!("{e} (answers are read up to {MAX_ANSWER_BYTES} bytes)")))?
        .to_bytes();
    if status != StatusCode::OK {
        let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(ExchangeError::Status { status, body: text.trim().to_string() });
    }
    Ok(Answer { index, body })
}
