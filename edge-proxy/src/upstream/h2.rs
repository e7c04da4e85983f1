//! HTTP/2 to backends (`proto=h2`, for gRPC): hyper's HTTP/2 client, by prior knowledge in
//! cleartext or by ALPN over TLS. One multiplexed connection per backend (per PROXY client, for
//! a backend that asks for the PROXY protocol) per worker carries every request to it; a closed
//! one is replaced on the next request. Keep-alive pings (every 30 s, 10 s to answer) find a
//! backend that went away without closing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::BodyError;
use super::pool::PoolKey;
use super::{Reach, SendError, UpstreamConn};

/// A request body toward an HTTP/2 backend: the client's, streamed, or one kept whole.
pub type H2Body = UnsyncBoxBody<Bytes, BodyError>;

thread_local! {
    static CONNS: RefCell<HashMap<PoolKey, http2::SendRequest<H2Body>>> = RefCell::new(HashMap::new());
}

/// The worker's open connection for `key`, or a new one.
pub async fn sender(key: PoolKey, reach: &Reach<'_>) -> Result<http2::SendRequest<H2Body>, SendError> {
    let open = CONNS.with(|c| c.borrow().get(&key).filter(|s| !s.is_closed()).cloned());
    if let Some(s) = open {
        return Ok(s);
    }
    let (stream, _) = UpstreamConn::connect_to(key, reach).await?.into_parts();
    let handshake = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream));
    let (sender, conn) = tokio::time::timeout(reach.timeout, handshake)
        .await
        .map_err(|_| SendError::Connect(io::Error::new(io::ErrorKind::TimedOut, "http/2 handshake timeout")))?
        .map_err(|e| SendError::Connect(io::Error::other(format!("http/2 handshake: {e}"))))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "http/2 connection to a backend ended");
        }
    });
    CONNS.with(|c| c.borrow_mut().insert(key, sender.clone()));
    Ok(sender)
}

/// Sends `req` on `sender` (the connection for `key`) and waits up to `timeout` for the response
/// head.
pub async fn send(
    key: PoolKey,
    mut sender: http2::SendRequest<H2Body>,
    req: Request<H2Body>,
    timeout: Duration,
) -> Result<Response<Incoming>, SendError> {
    let sent = async {
        sender.ready().await?;
        sender.send_request(req).await
    };
    match tokio::time::timeout(timeout, sent).await {
        Err(_) => Err(SendError::Timeout),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => {
            // The connection is of no more use for this key.
            CONNS.with(|c| c.borrow_mut().remove(&key));
            Err(if e.is_canceled() || e.is_closed() { SendError::Empty } else { SendError::Io(io::Error::other(e)) })
        }
    }
}
