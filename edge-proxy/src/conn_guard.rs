//! Per-connection timeouts hyper does not provide: 408 on a slow request head, idle close, and
//! close when the client stops reading.
//!
//! hyper's own `header_read_timeout` closes the connection without answering and counts keep-alive
//! idle time toward the head timer. This wrapper sits between the socket and hyper and knows four
//! phases, driven by the request service through [`Activity`]:
//! - **busy**: a request is in flight and the proxy waits on the backend or on the client's request
//!   body; no timer here (the upstream, body and request-body timeouts govern);
//! - **stalled**: a response (head or body frame) is with hyper but hyper has not asked for the
//!   next frame, because the client does not read (HTTP/1.1 writes block) or keeps its HTTP/2
//!   window shut; when no response on the connection moves for `--idle-timeout`, the connection
//!   closes, which drops the backend connections its responses were streaming from;
//! - **head**: bytes of a request arrived but its head is not complete; after
//!   `--header-read-timeout` the client gets `408 Request Timeout` and the connection closes;
//! - **idle**: nothing in flight and nothing received; the connection closes after
//!   `--idle-timeout` (or `--header-read-timeout` on a new connection that never sent a byte,
//!   which is how slowloris-style clients that connect and wait are shed).
//!
//! On HTTP/2 the 408 is not written (it would be an HTTP/1 answer); the connection just closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::stats::{ClientError, ProxyStats};

const RESPONSE_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// What the request service tells the connection: requests started and still in flight, and
/// whether their responses are moving toward the client.
#[derive(Debug, Default)]
pub struct Activity {
    requests: AtomicU64,
    in_flight: AtomicU32,
    /// Responses whose next frame waits for hyper to ask for it, that is, on the client.
    waiting: AtomicU32,
    /// Frames asked for, over all responses: any change is progress toward the client.
    progress: AtomicU64,
}

impl Activity {
    /// Marks a request head as complete and the request in flight; the returned guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// A request in flight on a connection; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// A response handed to hyper: it waits on the client until its body is polled.
    pub fn client_turn(&self) -> ClientTurn {
        self.0.waiting.fetch_add(1, Ordering::AcqRel);
        ClientTurn { activity: self.0.clone(), waiting: true }
    }
}

/// One response's part in the stall rule: waiting while hyper holds a frame of it (or its head)
/// and has not asked for the next.
#[derive(Debug)]
pub struct ClientTurn {
    activity: Arc<Activity>,
    waiting: bool,
}

impl ClientTurn {
    /// hyper asks for the next frame: the client took the last one.
    pub fn polled(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.activity.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        self.activity.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame went to hyper: the client's turn again.
    pub fn handed_out(&mut self) {
        if !self.waiting {
            self.waiting = true;
            self.activity.waiting.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for ClientTurn {
    fn drop(&mut self) {
        if self.waiting {
            self.activity.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Timeouts for one connection.
#[derive(Debug, Clone, Copy)]
pub struct GuardTimeouts {
    /// Request head limit.
    pub header_read: Duration,
    /// Keep-alive idle limit.
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Armed {
    None,
    Head,
    Idle,
    Stall,
}

/// Wraps a client connection's I/O and enforces the head and idle timeouts.
#[derive(Debug)]
pub struct ConnGuard<IO> {
    io: IO,
    activity: Arc<Activity>,
    timeouts: GuardTimeouts,
    seen_requests: u64,
    bytes_since_request: u64,
    total_bytes: u64,
    armed: Armed,
    sleep: Pin<Box<Sleep>>,
    h2: bool,
    expired: bool,
    /// `Activity::progress` when the stall timer was last armed.
    stall_mark: u64,
    stats: Arc<ProxyStats>,
}

impl<IO> ConnGuard<IO> {
    /// Wraps `io`; `h2` is true when ALPN already chose HTTP/2. Head timeouts count into `stats`.
    pub fn new(io: IO, activity: Arc<Activity>, timeouts: GuardTimeouts, h2: bool, stats: Arc<ProxyStats>) -> Self {
        Self {
            io,
            activity,
            timeouts,
            seen_requests: 0,
            bytes_since_request: 0,
            total_bytes: 0,
            armed: Armed::None,
            sleep: Box::pin(tokio::time::sleep(timeouts.header_read)),
            h2,
            expired: false,
            stall_mark: 0,
            stats,
        }
    }

    fn sync(&mut self) {
        let r = self.activity.requests.load(Ordering::Relaxed);
        if r != self.seen_requests {
            self.seen_requests = r;
            self.bytes_since_request = 0;
        }
    }

    /// Arms the timer for the current phase; returns `Ready(kind)` when it expired.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<Armed> {
        self.sync();
        let want = if self.activity.in_flight.load(Ordering::Acquire) > 0 {
            if self.activity.waiting.load(Ordering::Acquire) > 0 { Armed::Stall } else { Armed::None }
        } else if self.bytes_since_request > 0 {
            Armed::Head
        } else {
            Armed::Idle
        };
        if want != self.armed {
            self.armed = want;
            let limit = match want {
                Armed::None => return Poll::Pending,
                Armed::Head => self.timeouts.header_read,
                Armed::Idle if self.total_bytes == 0 => self.timeouts.header_read,
                Armed::Idle | Armed::Stall => self.timeouts.idle,
            };
            self.stall_mark = self.activity.progress.load(Ordering::Relaxed);
            self.sleep.as_mut().reset(Instant::now() + limit);
        }
        if self.armed == Armed::None {
            return Poll::Pending;
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            if self.armed != Armed::Stall {
                return Poll::Ready(self.armed);
            }
            // Some response moved since the timer was armed: not stalled, look again later.
            let now = self.activity.progress.load(Ordering::Relaxed);
            if now == self.stall_mark {
                return Poll::Ready(Armed::Stall);
            }
            self.stall_mark = now;
            self.sleep.as_mut().reset(Instant::now() + self.timeouts.idle);
        }
    }

    /// Checks the deadline while the socket is not ready; on expiry the connection is done.
    fn poll_expiry(&mut self, cx: &mut Context<'_>) -> Poll<Armed> {
        let kind = ready!(self.poll_deadline(cx));
        self.expired = true;
        match kind {
            Armed::Head => self.stats.client_error(ClientError::HeaderTimeout),
            Armed::Stall => self.stats.client_error(ClientError::WriteStall),
            Armed::Idle | Armed::None => {}
        }
        Poll::Ready(kind)
    }
}

fn stalled() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client took no response data within --idle-timeout")
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnGuard<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    if this.total_bytes == 0 && buf.filled()[before..].starts_with(b"PRI") {
                        this.h2 = true;
                    }
                    this.sync();
                    this.total_bytes += n;
                    this.bytes_since_request += n;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_expiry(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(kind) => {
                    if kind == Armed::Head && !this.h2 {
                        // Best effort: the client is slow by definition, so do not wait on it.
                        let _ = Pin::new(&mut this.io).poll_write(cx, RESPONSE_408);
                        let _ = Pin::new(&mut this.io).poll_flush(cx);
                    }
                    // End of stream: hyper closes the connection.
                    Poll::Ready(Ok(()))
                }
            },
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ConnGuard<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Err(stalled()));
        }
        match Pin::new(&mut this.io).poll_write(cx, data) {
            Poll::Pending => this.poll_expiry(cx).map(|_| Err(stalled())),
            r => r,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Err(stalled()));
        }
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.poll_expiry(cx).map(|_| Err(stalled())),
            r => r,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        if r.is_pending() && !self.expired {
            return self.poll_expiry(cx).map(|_| Err(stalled()));
        }
        if r.is_ready() && !self.expired {
            // A response just went out: arm the idle timer now, so that a connection whose
            // reader is not polled again (HTTP/2 with no new streams) is still woken and closed.
            if self.poll_deadline(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    fn timeouts() -> GuardTimeouts {
        GuardTimeouts { header_read: Duration::from_secs(10), idle: Duration::from_secs(60) }
    }

    #[tokio::test(start_paused = true)]
    async fn partial_head_gets_408_after_header_timeout() {
        let (mut client, server) = duplex(1024);
        let act = Arc::new(Activity::default());
        let stats = Arc::new(ProxyStats::default());
        let mut g = ConnGuard::new(server, act, timeouts(), false, stats.clone());
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = g.read(&mut buf).await.unwrap();
        assert!(n > 0);
        let t0 = Instant::now();
        assert_eq!(g.read(&mut buf).await.unwrap(), 0, "EOF after the head timeout");
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        let mut out = Vec::new();
        drop(g);
        client.read_to_end(&mut out).await.unwrap();
        assert!(out.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&out));
        assert_eq!(stats.client_errors(ClientError::HeaderTimeout), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_new_connection_closes_after_header_timeout_without_408() {
        let (mut client, server) = duplex(1024);
        let mut g =
            ConnGuard::new(server, Arc::new(Activity::default()), timeouts(), false, Arc::new(ProxyStats::default()));
        let t0 = Instant::now();
        let mut buf = [0u8; 8];
        assert_eq!(g.read(&mut buf).await.unwrap(), 0);
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        drop(g);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert!(out.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn busy_connection_has_no_timer_and_idle_uses_idle_timeout() {
        let (mut client, server) = duplex(1024);
        let act = Arc::new(Activity::default());
        let mut g = ConnGuard::new(server, act.clone(), timeouts(), false, Arc::new(ProxyStats::default()));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(g.read(&mut buf).await.unwrap() > 0);
        let inflight = act.begin();
        // Busy for far longer than both timeouts: nothing fires.
        let r = tokio::time::timeout(Duration::from_secs(500), g.read(&mut buf)).await;
        assert!(r.is_err(), "no timeout while a request is in flight");
        drop(inflight);
        let t0 = Instant::now();
        assert_eq!(g.read(&mut buf).await.unwrap(), 0);
        assert_eq!(t0.elapsed(), Duration::from_secs(60), "idle keep-alive limit");
    }
}
