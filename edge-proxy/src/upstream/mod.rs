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
pub(crate) mod pool;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use codec::{CodecError, RequestFraming, ResponseHead};

use clock::BodyClock;
use pool::PoolKey;

use crate::config::ProxyConfig;
use crate::headers::sanitize_trailers;

/// One connection to a backend.
#[derive(Debug)]
pub struct UpstreamConn {
    stream: TcpStream,
    buf: BytesMut,
    key: PoolKey,
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
    /// The backend answered with a gateway error (502, 503, 504) that was to be retried.
    #[error("http {0}")]
    Status(u16),
}

impl UpstreamConn {
    /// Connects to `addr` within `timeout` (tests; the proxy connects for a [`PoolKey`]).
    #[cfg(test)]
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, SendError> {
        Self::connect_to(PoolKey::plain(addr), addr, timeout).await
    }

    /// Connects for `key` within `timeout`; a key that names a client gets the PROXY header for
    /// that client (which reached the proxy at `local`) before anything else.
    pub async fn connect_to(key: PoolKey, local: SocketAddr, timeout: Duration) -> Result<Self, SendError> {
        let timed_out = || SendError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect timeout"));
        let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(key.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(timed_out()),
        };
        let _ = stream.set_nodelay(true);
        if let Some((version, client)) = key.client {
            // Nothing of the request has gone yet: a failure here is a failed connect.
            let header = crate::proxy_protocol::header(version, client, local);
            match tokio::time::timeout(timeout, stream.write_all(&header)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(SendError::Connect(e)),
                Err(_) => return Err(timed_out()),
            }
        }
        Ok(Self { stream, buf: BytesMut::with_capacity(8 * 1024), key })
    }

    /// What the connection may be reused for.
    pub fn key(&self) -> PoolKey {
        self.key
    }

    /// Cheap check that an idle connection is still open: a non-blocking read must find nothing.
    pub fn is_alive(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read_buf(&mut self.buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read_more(cx)).await
    }

    /// Sends a request (head already encoded, body streamed if any) and reads the response head.
    /// The client's body must keep to [`BodyClock`]'s rules; each write of it to the backend gets
    /// the idle timeout; the response head gets the upstream timeout from the end of the request.
    pub async fn exchange(
        &mut self,
        method: &Method,
        head: Bytes,
        body: Option<(Incoming, RequestFraming)>,
        cfg: &ProxyConfig,
    ) -> Result<ResponseHead, SendError> {
        self.buf.clear();
        let idle = cfg.idle_timeout;
        let write_failed = |e: io::Error| {
            if matches!(e.kind(), io::ErrorKind::TimedOut) { SendError::Timeout } else { SendError::Empty }
        };
        match body {
            None => self.stream.write_all(&head).await.map_err(write_failed)?,
            Some((mut body, framing)) => {
                self.stream.write_all(&head).await.map_err(write_failed)?;
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
                                return self.read_head(method, cfg.upstream_timeout).await;
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
            }
        }
        self.read_head(method, cfg.upstream_timeout).await
    }

    async fn write_timed(&mut self, data: &[u8], idle: Duration) -> Result<(), SendError> {
        match tokio::time::timeout(idle, self.stream.write_all(data)).await {
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
        self.read_head_with(method, cfg.upstream_timeout, true).await
    }

    /// The socket and what was read past the response head (the new protocol's first bytes).
    pub fn into_parts(self) -> (TcpStream, BytesMut) {
        (self.stream, self.buf)
    }

    async fn read_head(&mut self, method: &Method, timeout: Duration) -> Result<ResponseHead, SendError> {
        self.read_head_with(method, timeout, false).await
    }

    async fn read_head_with(
        &mut self,
        method: &Method,
        timeout: Duration,
        upgrade: bool,
    ) -> Result<ResponseHead, SendError> {
        let read = async {
            loop {
                let parsed = if upgrade {
                    codec::parse_upgrade_response_head(&mut self.buf, method)?
                } else {
                    codec::parse_response_head(&mut self.buf, method)?
                };
                if let Some(head) = parsed {
                    return Ok(head);
                }
                match self.read_more().await {
                    Ok(0) if self.buf.is_empty() => return Err(SendError::Empty),
                    Ok(0) => return Err(SendError::Io(io::ErrorKind::UnexpectedEof.into())),
                    Ok(_) => {}
                    Err(e) if self.buf.is_empty() => {
                        tracing::trace!(error = %e, "upstream read failed before any response byte");
                        return Err(SendError::Empty);
                    }
                    Err(e) => return Err(SendError::Io(e)),
                }
            }
        };
        tokio::time::timeout(timeout, read).await.map_err(|_| SendError::Timeout)?
    }
}
