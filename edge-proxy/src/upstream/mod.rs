//! The upstream HTTP/1.1 client: one exchange at a time on a connection owned by the request, in
//! the client connection's own task, with idle connections kept in a per-worker pool.
//!
//! hyper's pooled client runs every upstream connection as a task of its own and passes each
//! request and response through channels, with a locked pool around them. In a proxy that doubles
//! the task wake-ups per request; here the request future writes the head, reads the response head
//! and hands the connection to the response body, which returns it to the pool when done.

pub(crate) mod body;
pub(crate) mod clock;
pub(crate) mod codec;
pub(crate) mod h2;
pub(crate) mod pool;
pub(crate) mod replay;
pub(crate) mod stream;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use codec::{CodecError, RequestFraming, ResponseHead};

use clock::BodyClock;
use pool::PoolKey;
use stream::Stream;

/// How to reach a backend beyond its address: where the client came in (for a PROXY header), the
/// connect limit (TLS handshake included), and for a backend spoken to over TLS, the settings and
/// the name its certificate must be valid for.
#[derive(Debug)]
pub struct Reach<'a> {
    /// The listener address the client reached.
    pub local: SocketAddr,
    /// The connect limit.
    pub timeout: Duration,
    /// TLS settings and the server name, for a backend spoken to over TLS.
    pub tls: Option<(&'a Arc<rustls::ClientConfig>, Arc<String>)>,
}

use crate::config::ProxyConfig;
use crate::headers::sanitize_trailers;

/// One connection to a backend.
///
/// It lives in a box from its connect on: on every request it moves from the pool to the request,
/// into the response body and back to the pool, and each move of the box copies a pointer where
/// the connection itself is some two hundred bytes.
#[derive(Debug)]
pub struct UpstreamConn {
    stream: Stream,
    buf: BytesMut,
    key: PoolKey,
    /// The response-head timer, kept with the connection and moved forward for each exchange:
    /// moving a registered timer later is one atomic update, where a timer per exchange was
    /// registered with the runtime's timer wheel and removed again on every request.
    head_timer: Pin<Box<Sleep>>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connect failed or timed out: nothing reached the backend.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The connection closed or reset before any response byte arrived.
    #[error("connection closed before a response")]
    Empty,
    /// No response head within the upstream timeout.
    #[error("timed out waiting for the response head")]
    Timeout,
    /// The backend answered with something that is not HTTP/1.1.
    #[error("protocol: {0}")]
    Protocol(#[from] CodecError),
    /// I/O failed after the backend started answering.
    #[error("i/o: {0}")]
    Io(io::Error),
    /// The client's request body failed.
    #[error("client request body: {0}")]
    ClientBody(String),
    /// The client's request body stalled or crawled (see [`BodyClock`]).
    #[error("client request body too slow")]
    ClientBodyTimeout,
    /// An HTTP/2 backend refused the request unprocessed (`REFUSED_STREAM`, or its `GOAWAY` came
    /// before it took the stream): safe to send again, whatever the method (RFC 9113 section 8.7).
    #[error("refused by the backend unprocessed: {0}")]
    Refused(String),
    /// The backend answered with a gateway error (502, 503, 504) that was to be retried.
    #[error("http {0}")]
    Status(u16),
}

impl UpstreamConn {
    /// Connects to `addr` within `timeout` (tests; the proxy connects for a [`PoolKey`]).
    #[cfg(test)]
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Box<Self>, SendError> {
        Self::connect_to(PoolKey::plain(addr), &Reach { local: addr, timeout, tls: None }).await
    }

    /// Connects for `key` as `reach` says; a key that names a client gets the PROXY header for
    /// that client (which reached the proxy at `reach.local`) before anything else, then a key
    /// for TLS gets the TLS handshake, all within `reach.timeout`.
    pub async fn connect_to(key: PoolKey, reach: &Reach<'_>) -> Result<Box<Self>, SendError> {
        match tokio::time::timeout(reach.timeout, Self::open(key, reach)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))),
        }
    }

    async fn open(key: PoolKey, reach: &Reach<'_>) -> Result<Box<Self>, SendError> {
        let mut stream = TcpStream::connect(key.addr).await.map_err(SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        if let Some((version, client)) = key.client {
            // Nothing of the request has gone yet: a failure here is a failed connect.
            let header = crate::proxy_protocol::header(version, client, reach.local);
            stream.write_all(&header).await.map_err(SendError::Connect)?;
        }
        let stream = if key.tls {
            let Some((config, name)) = &reach.tls else {
                return Err(SendError::Connect(io::Error::other(
                    "this backend is spoken to over TLS but there are no TLS settings for backends; give --backend-ca",
                )));
            };
            let server = rustls::pki_types::ServerName::try_from(name.as_str().to_owned())
                .map_err(|e| SendError::Connect(io::Error::other(format!("tls name {name}: {e}"))))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(server, stream)
                .await
                .map_err(|e| SendError::Connect(io::Error::other(format!("tls handshake: {e}"))))?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(stream)
        };
        let head_timer = Box::pin(tokio::time::sleep(reach.timeout));
        Ok(Box::new(Self { stream, buf: BytesMut::with_capacity(8 * 1024), key, head_timer }))
    }

    /// The local port of a plain connection, which tells connections apart (tests).
    #[cfg(test)]
    pub fn local_port(&self) -> u16 {
        match &self.stream {
            Stream::Plain(s) => s.local_addr().map_or(0, |a| a.port()),
            Stream::Tls(s) => s.get_ref().0.local_addr().map_or(0, |a| a.port()),
        }
    }

    /// What the connection may be reused for.
    pub fn key(&self) -> PoolKey {
        self.key
    }

    /// Cheap check that an idle connection is still open: a read that does not wait must find
    /// nothing.
    pub fn is_alive(&mut self) -> bool {
        self.stream.is_alive()
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_read_into(&mut self.stream, &mut self.buf, cx)
    }

    /// Sends a request (head already encoded, body streamed if any) and reads the response head,
    /// all by `deadline` (the request's, over all its attempts).
    ///
    /// Without a streamed body, the head is written and the answer's head read under the
    /// connection's own timer, set to the upstream timeout or `deadline`, whichever comes first:
    /// a timer of the request's own was registered with the runtime's timer wheel and removed
    /// again on every request. With one, the client's body must keep to [`BodyClock`]'s rules,
    /// each write of it to the backend gets the idle timeout, and the response head gets the
    /// upstream timeout from the end of the request.
    pub async fn exchange(
        &mut self,
        method: &Method,
        head: &[u8],
        body: Option<(Incoming, RequestFraming)>,
        cfg: &ProxyConfig,
        deadline: Instant,
    ) -> Result<ResponseHead, SendError> {
        self.buf.clear();
        if let Some((body, framing)) = body {
            // Boxed: streaming a body is most of this future's state, and most requests have none.
            let streamed = Box::pin(self.exchange_streamed(method, head, body, framing, cfg));
            return tokio::time::timeout_at(deadline, streamed).await.unwrap_or(Err(SendError::Timeout));
        }
        let until = deadline.min(Instant::now() + cfg.upstream_timeout);
        self.arm(until);
        {
            let Self { stream, head_timer, .. } = &mut *self;
            let mut write = std::pin::pin!(write_flushed(stream, head));
            poll_fn(|cx| {
                if let Poll::Ready(r) = write.as_mut().poll(cx) {
                    return Poll::Ready(r.map_err(write_failed));
                }
                head_timer.as_mut().poll(cx).map(|()| Err(SendError::Timeout))
            })
            .await?;
        }
        self.read_head_with(method, until, false).await
    }

    /// [`UpstreamConn::exchange`] with a body to stream after the head.
    async fn exchange_streamed(
        &mut self,
        method: &Method,
        head: &[u8],
        body: Incoming,
        framing: RequestFraming,
        cfg: &ProxyConfig,
    ) -> Result<ResponseHead, SendError> {
        write_flushed(&mut self.stream, head).await.map_err(write_failed)?;
        if let Some(head) = self.send_body(method, body, framing, cfg).await? {
            return Ok(head);
        }
        self.read_head(method, cfg.upstream_timeout).await
    }

    /// Streams the client's body after the head; with trailers, the response head is read here
    /// (`Some`), otherwise the caller reads it.
    async fn send_body(
        &mut self,
        method: &Method,
        mut body: Incoming,
        framing: RequestFraming,
        cfg: &ProxyConfig,
    ) -> Result<Option<ResponseHead>, SendError> {
        let idle = cfg.idle_timeout;
        let mut out = BytesMut::new();
        let mut clock = BodyClock::start(cfg.body_timeout, cfg.body_min_rate);
        loop {
            let frame = match tokio::time::timeout_at(clock.deadline(), body.frame()).await {
                Ok(Some(Ok(f))) => f,
                Ok(Some(Err(e))) => return Err(SendError::ClientBody(e.to_string())),
                Ok(None) => break,
                Err(_) => return Err(SendError::ClientBodyTimeout),
            };
            out.clear();
            match frame.into_data() {
                Ok(data) => {
                    clock.received(data.len());
                    if framing == RequestFraming::Chunked {
                        codec::encode_chunk(&mut out, &data);
                    } else {
                        out.extend_from_slice(&data);
                    }
                }
                Err(frame) => {
                    if let (Ok(mut trailers), RequestFraming::Chunked) = (frame.into_trailers(), framing) {
                        sanitize_trailers(&mut trailers);
                        codec::encode_last_chunk(&mut out, Some(&trailers));
                        self.write_timed(&out, idle).await?;
                        return self.read_head(method, cfg.upstream_timeout).await.map(Some);
                    }
                    continue;
                }
            }
            self.write_timed(&out, idle).await?;
        }
        if framing == RequestFraming::Chunked {
            out.clear();
            codec::encode_last_chunk(&mut out, None);
            self.write_timed(&out, idle).await?;
        }
        Ok(None)
    }

    async fn write_timed(&mut self, data: &[u8], idle: Duration) -> Result<(), SendError> {
        match tokio::time::timeout(idle, write_flushed(&mut self.stream, data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendError::Empty),
            Err(_) => Err(SendError::Timeout),
        }
    }

    /// Sends a request that asks to upgrade (no body) and reads the answer's head, which may be a
    /// `101`; then [`UpstreamConn::into_parts`] gives the connection to the tunnel.
    pub async fn upgrade(
        &mut self,
        method: &Method,
        head: Bytes,
        cfg: &ProxyConfig,
    ) -> Result<ResponseHead, SendError> {
        self.buf.clear();
        self.write_timed(&head, cfg.idle_timeout).await?;
        self.read_head_with(method, Instant::now() + cfg.upstream_timeout, true).await
    }

    /// The socket and what was read past the response head (the new protocol's first bytes).
    pub fn into_parts(self) -> (Stream, BytesMut) {
        (self.stream, self.buf)
    }

    /// Sets the head timer to `until`. Moving it later, as each exchange on a kept connection
    /// does, is one atomic update; only an earlier time goes back to the timer wheel.
    fn arm(&mut self, until: Instant) {
        if self.head_timer.deadline() != until {
            self.head_timer.as_mut().reset(until);
        }
    }

    async fn read_head(&mut self, method: &Method, timeout: Duration) -> Result<ResponseHead, SendError> {
        self.read_head_with(method, Instant::now() + timeout, false).await
    }

    /// Reads the response head by `until`.
    async fn read_head_with(
        &mut self,
        method: &Method,
        until: Instant,
        upgrade: bool,
    ) -> Result<ResponseHead, SendError> {
        self.arm(until);
        let Self { stream, buf, head_timer, .. } = self;
        rewind(buf);
        let read = async {
            loop {
                let parsed = if upgrade {
                    codec::parse_upgrade_response_head(buf, method)?
                } else {
                    codec::parse_response_head(buf, method)?
                };
                if let Some(head) = parsed {
                    return Ok(head);
                }
                match poll_fn(|cx| poll_read_into(stream, buf, cx)).await {
                    Ok(0) if buf.is_empty() => return Err(SendError::Empty),
                    Ok(0) => return Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())),
                    Ok(_) => {}
                    Err(e) if buf.is_empty() => {
                        tracing::trace!(error = %e, "upstream read failed before any response byte");
                        return Err(SendError::Empty);
                    }
                    Err(e) => return Err(SendError::Io(e)),
                }
            }
        };
        let mut read = std::pin::pin!(read);
        poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            head_timer.as_mut().poll(cx).map(|()| Err(SendError::Timeout))
        })
        .await
    }
}

/// What a failed write of the request means: nothing was answered, or the socket timed out.
fn write_failed(e: io::Error) -> SendError {
    if matches!(e.kind(), io::ErrorKind::TimedOut) { SendError::Timeout } else { SendError::Empty }
}

/// Writes `data` and flushes it (a no-op on plain TCP; TLS may hold records back otherwise).
async fn write_flushed(stream: &mut Stream, data: &[u8]) -> io::Result<()> {
    stream.write_all(data).await?;
    stream.flush().await
}

/// Moves an empty read buffer's start back to the front of its allocation, when no earlier body
/// still shares it.
///
/// Otherwise each response would be read a little further into the allocation than the one
/// before, and with hundreds of pooled connections the lines written are never in the cache:
/// profiles showed the kernel's copy into them costing more per request than all of HAProxy's
/// receive copies. Read from the front, each connection reuses the same few lines.
fn rewind(buf: &mut BytesMut) {
    if buf.is_empty() {
        // Asking for one byte more than the rest of the allocation holds is what makes `try_reclaim`
        // move the start back; it never allocates, and it refuses while a body shares the buffer.
        let _ = buf.try_reclaim(buf.capacity() + 1);
    }
}

/// Reads what has arrived from `stream` into `buf`, making room first when little is left.
fn poll_read_into(stream: &mut Stream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    stream.poll_read_buf(cx, buf)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn an_empty_buffer_no_body_shares_reads_from_the_front_again() {
        let mut buf = BytesMut::with_capacity(1024);
        let full = buf.capacity();
        buf.extend_from_slice(&[b'x'; 300]);
        let body = buf.split_to(300).freeze();
        // A body still shares the allocation: the start stays where it is.
        rewind(&mut buf);
        assert_eq!(buf.capacity(), full - 300);
        drop(body);
        rewind(&mut buf);
        assert_eq!(buf.capacity(), full);
        // Unread bytes are never moved or dropped.
        buf.extend_from_slice(b"HTTP/1.1");
        let _ = buf.split_to(4);
        rewind(&mut buf);
        assert_eq!(&buf[..], b"/1.1");
        assert_eq!(buf.capacity(), full - 4);
    }

    /// A test server that answers the first `answered` requests on one connection and then holds
    /// it open without answering.
    async fn answer_then_hold(answered: usize) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            for i in 0.. {
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                if i < answered {
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
                }
            }
        });
        addr
    }

    /// The head timer kept with a connection serves every exchange on it: after it went off while
    /// the connection sat idle, the next exchange still waits for its answer, and an exchange
    /// that gets none times out after the upstream timeout.
    #[tokio::test]
    async fn the_head_timer_serves_every_exchange_on_a_kept_connection() {
        let addr = answer_then_hold(2).await;
        let cfg = ProxyConfig { upstream_timeout: Duration::from_millis(150), ..ProxyConfig::default() };
        let mut conn = UpstreamConn::connect(addr, Duration::from_secs(5)).await.unwrap();
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
        let far = || tokio::time::Instant::now() + Duration::from_secs(60);
        let first = conn.exchange(&Method::GET, &head, None, &cfg, far()).await.unwrap();
        assert_eq!(first.status, 200);
        // Idle for longer than the timeout: the timer, last set for the first exchange, goes off.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let second = conn.exchange(&Method::GET, &head, None, &cfg, far()).await.unwrap();
        assert_eq!(second.status, 200);
        let started = Instant::now();
        let third = conn.exchange(&Method::GET, &head, None, &cfg, far()).await;
        let waited = started.elapsed();
        assert!(matches!(third, Err(SendError::Timeout)), "{third:?}");
        assert!(waited >= Duration::from_millis(140) && waited < Duration::from_secs(2), "{waited:?}");
    }

    /// The request's deadline over all its attempts ends an exchange that the upstream timeout
    /// alone would let wait longer.
    #[tokio::test]
    async fn the_request_deadline_ends_an_exchange_before_the_upstream_timeout() {
        let addr = answer_then_hold(1).await;
        let cfg = ProxyConfig { upstream_timeout: Duration::from_secs(30), ..ProxyConfig::default() };
        let mut conn = UpstreamConn::connect(addr, Duration::from_secs(5)).await.unwrap();
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n");
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        assert_eq!(conn.exchange(&Method::GET, &head, None, &cfg, far).await.unwrap().status, 200);
        let started = Instant::now();
        let soon = tokio::time::Instant::now() + Duration::from_millis(150);
        let second = conn.exchange(&Method::GET, &head, None, &cfg, soon).await;
        let waited = started.elapsed();
        assert!(matches!(second, Err(SendError::Timeout)), "{second:?}");
        assert!(waited >= Duration::from_millis(140) && waited < Duration::from_secs(2), "{waited:?}");
    }
}
