//! Bytes both ways between a client and a backend, for the TCP proxy and for upgraded HTTP
//! connections (WebSocket): counted into the backend's byte counters as they pass, and ended when
//! either side closes, when no byte moved for the idle timeout, or when the caller stops it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use edge_core::backend::{Backend, Direction};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// How a relay ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Both sides closed.
    Closed,
    /// No byte moved for the idle timeout.
    Idle,
    /// The caller's stop future resolved (the drain after shutdown ended).
    Stopped,
    /// A read or write failed.
    Error(io::Error),
}

/// Counts bytes read through it into its backend's counters and stamps the time of the last byte.
#[derive(Debug)]
struct Counted<S> {
    inner: S,
    backend: Arc<Backend>,
    dir: Direction,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.backend.stats.add_bytes(self.dir, n as u64);
            let ms = self.epoch.elapsed().as_millis() as u64;
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies `client` ⇄ `upstream` until it ends (see [`Ended`]); bytes from the client count as the
/// backend's transmitted bytes, bytes from the backend as its received ones.
pub(crate) async fn relay<C, U>(
    client: C,
    upstream: U,
    backend: &Arc<Backend>,
    idle: Duration,
    stop: impl Future<Output = ()>,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut c = Counted { inner: client, backend: backend.clone(), dir: Direction::Tx, last: last.clone(), epoch };
    let mut u = Counted { inner: upstream, backend: backend.clone(), dir: Direction::Rx, last: last.clone(), epoch };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut c, &mut u) => match r {
            Ok(_) => Ended::Closed,
            Err(e) => Ended::Error(e),
        },
        () = idle_expired(last, epoch, idle) => Ended::Idle,
        () = stop => Ended::Stopped,
    }
}

/// Resolves once no byte moved for `idle`.
async fn idle_expired(last: Arc<AtomicU64>, epoch: Instant, idle: Duration) {
    loop {
        let last_at = epoch + Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = last_at + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}
