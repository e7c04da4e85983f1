//! HTTP/2 to backends (`proto=h2`, for gRPC): hyper's HTTP/2 client, by prior knowledge in
//! cleartext or by ALPN over TLS. One multiplexed connection per backend (per PROXY client, for
//! a backend that asks for the PROXY protocol) per worker carries every request to it; a closed
//! one is replaced on the next request, and one no request used for [`MAX_IDLE_AGE`] is let go by
//! the worker's pool sweep (its last requests finish first), so a removed backend keeps no
//! connection. Keep-alive pings (every 30 s, 10 s to answer) find a backend that went away
//! without closing.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::body::BodyError;
use super::pool::{KeyMap, MAX_IDLE_AGE, PoolKey};
use super::{Reach, SendError, UpstreamConn};

/// A request body toward an HTTP/2 backend: the client's, streamed, or one kept whole.
pub type H2Body = UnsyncBoxBody<Bytes, BodyError>;

thread_local! {
    static CONNS: RefCell<KeyMap<(http2::SendRequest<H2Body>, Instant)>> = RefCell::new(KeyMap::default());
}

/// Lets go of this worker's connections that are closed or that no request used for
/// [`MAX_IDLE_AGE`]; returns how many stay.
pub fn sweep() -> usize {
    CONNS.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|_, (s, used)| !s.is_closed() && used.elapsed() < MAX_IDLE_AGE);
        c.len()
    })
}

/// The worker's open connection for `key`, or a new one.
pub async fn sender(key: PoolKey, reach: &Reach<'_>) -> Result<http2::SendRequest<H2Body>, SendError> {
    let open = CONNS.with(|c| {
        let mut c = c.borrow_mut();
        let (s, used) = c.get_mut(&key).filter(|(s, _)| !s.is_closed())?;
        *used = Instant::now();
        Some(s.clone())
    });
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
    CONNS.with(|c| c.borrow_mut().insert(key, (sender.clone(), Instant::now())));
    Ok(sender)
}

/// Why a request to an HTTP/2 backend got no response head: the error, and the request itself
/// when it never left (the connection was closing), to be sent as it is on another connection.
pub type SendFailure = (SendError, Option<Request<H2Body>>);

/// Sends `req` on `sender` (the connection for `key`) and waits up to `timeout` for the response
/// head.
pub async fn send(
    key: PoolKey,
    mut sender: http2::SendRequest<H2Body>,
    req: Request<H2Body>,
    timeout: Duration,
) -> Result<Response<Incoming>, SendFailure> {
    let sent = async {
        if let Err(e) = sender.ready().await {
            return Err((e, Some(req)));
        }
        sender.try_send_request(req).await.map_err(|mut e| {
            let unsent = e.take_message();
            (e.into_error(), unsent)
        })
    };
    match tokio::time::timeout(timeout, sent).await {
        Err(_) => Err((SendError::Timeout, None)),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err((error, unsent))) => {
            // The connection is of no more use for this key.
            CONNS.with(|c| c.borrow_mut().remove(&key));
            let kind = if unsent.is_some() { SendError::Refused(error.to_string()) } else { classify(&error) };
            Err((kind, unsent))
        }
    }
}

/// What a failed HTTP/2 exchange means for sending the request again. A stream the backend reset
/// with `REFUSED_STREAM`, or one its `GOAWAY` left out (above the last stream it took), was not
/// processed (RFC 9113 sections 6.8 and 8.7); any other reset or close before the head may have
/// been.
fn classify(e: &hyper::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<::h2::Error>() {
            let refused = h.is_remote() && (h.is_go_away() || h.reason() == Some(::h2::Reason::REFUSED_STREAM));
            return if refused { SendError::Refused(h.to_string()) } else { SendError::Empty };
        }
        source = err.source();
    }
    if e.is_canceled() || e.is_closed() { SendError::Empty } else { SendError::Io(io::Error::other(e.to_string())) }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Empty};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_shared_then_let_go_when_idle() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let svc = service_fn(|_| async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
        let key = PoolKey { addr, client: None, tls: false, h2: true };
        let reach = Reach { local: addr, timeout: Duration::from_secs(1), tls: None };
        let first = sender(key, &reach).await.unwrap();
        let req = Request::get(format!("http://{addr}/")).body(Empty::new().map_err(|e| match e {}).boxed_unsync());
        let resp = send(key, first, req.unwrap(), Duration::from_secs(1)).await.unwrap();
        assert_eq!(resp.status(), 200);
        // The same connection serves the next request (the server accepts only one).
        let again = sender(key, &reach).await.unwrap();
        let req = Request::get(format!("http://{addr}/")).body(Empty::new().map_err(|e| match e {}).boxed_unsync());
        assert_eq!(send(key, again, req.unwrap(), Duration::from_secs(1)).await.unwrap().status(), 200);
        assert_eq!(sweep(), 1, "a connection in use stays");
        tokio::time::advance(MAX_IDLE_AGE + Duration::from_secs(1)).await;
        assert_eq!(sweep(), 0, "an idle one is let go");
    }
}
