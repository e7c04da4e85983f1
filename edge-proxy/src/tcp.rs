//! The TCP proxy (`--listen-tcp`): pick a backend per connection, connect (retrying once on another
//! backend if the connect fails), then copy bytes both ways, counting them, until both sides close
//! or the connection idles past `--idle-timeout`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use edge_core::backend::{Backend, Direction, Failure, GatewayFailure};
use edge_core::balance::{PickSource, Target, request_hash};
use edge_core::util::GaugeGuard;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::accept::{Acceptor, accept_until_shutdown, drain};
use crate::served::Served;
use crate::stats::{ListenerKind, NoBackend, RetryOutcome, RetryReason};

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

/// The TCP proxy of one listener on one worker: it balances over the selector of the service the
/// listener serves.
#[derive(Debug)]
pub struct TcpProxy(Served);

impl TcpProxy {
    /// Builds the proxy.
    pub(crate) fn new(served: Served) -> Self {
        Self(served)
    }

    async fn connect(&self, t: &Target) -> io::Result<TcpStream> {
        // A TCP-mode connection's only passive signal is its connect.
        let r = match tokio::time::timeout(self.0.cfg.connect_timeout, TcpStream::connect(t.addr())).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout")),
        };
        match &r {
            Ok(_) => t.backend.stats.passive_ok(),
            Err(_) => {
                t.backend.stats.failure(Failure::Connect);
                t.backend.stats.gateway_failure(GatewayFailure::Connect, 1);
            }
        }
        r
    }

    /// Proxies one client connection.
    pub async fn handle(&self, client: TcpStream, peer: SocketAddr, local: SocketAddr) {
        let selector = self.0.selector.load_full();
        let hash = if selector.needs_hash() { request_hash(selector.hash_key(), peer, local, None) } else { 0 };
        let Some((mut target, source)) = selector.pick_admitted(hash) else {
            self.0.traffic.no_backend(NoBackend::Rejected);
            return;
        };
        if source == PickSource::Panic {
            self.0.traffic.no_backend(NoBackend::Panic);
        }
        let mut active = GaugeGuard::new(&target.backend.stats.active);
        let upstream = match self.connect(target).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(backend = %target.id(), error = %e, "connect failed");
                let Some((other, _)) = selector.pick_other(hash, target.id()).filter(|(t, _)| t.backend.admit()) else {
                    self.0.traffic.retry_outcome(RetryOutcome::NoTarget);
                    return;
                };
                self.0.traffic.retry(RetryReason::Connect);
                target = other;
                active = GaugeGuard::new(&target.backend.stats.active);
                match self.connect(target).await {
                    Ok(s) => {
                        self.0.traffic.retry_outcome(RetryOutcome::Succeeded);
                        s
                    }
                    Err(e) => {
                        self.0.traffic.retry_outcome(RetryOutcome::Failed);
                        tracing::debug!(backend = %target.id(), error = %e, "connect retry failed");
                        return;
                    }
                }
            }
        };
        let _ = upstream.set_nodelay(true);
        let m = &target.backend.stats;
        m.tcp_connection();
        let epoch = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let backend = target.backend.clone();
        let mut c = Counted { inner: client, backend: backend.clone(), dir: Direction::Tx, last: last.clone(), epoch };
        let mut u = Counted { inner: upstream, backend, dir: Direction::Rx, last: last.clone(), epoch };
        let idle = self.0.cfg.idle_timeout;
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                if let Err(e) = r {
                    if e.kind() != io::ErrorKind::ConnectionReset {
                        m.failure(Failure::Reset);
                    }
                    tracing::debug!(backend = %target.id(), error = %e, "tcp copy ended with an error");
                }
            }
            _ = idle_expired(last, epoch, idle) => {
                tracing::debug!(backend = %target.id(), "tcp connection idle; closing");
            }
        }
        drop(active);
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

/// Serves one TCP listener until `shutdown` turns true, then gives open connections up to `limit`
/// to finish before closing them.
pub async fn serve(mut listener: Acceptor, proxy: Arc<TcpProxy>, mut shutdown: watch::Receiver<bool>, limit: Duration) {
    let mut conns = tokio::task::JoinSet::new();
    let stats = proxy.0.stats.clone();
    accept_until_shutdown(&mut listener, &mut shutdown, &stats, ListenerKind::Tcp, &mut conns, |stream, peer| {
        let local = stream.local_addr().unwrap_or(peer);
        let proxy = proxy.clone();
        async move { proxy.handle(stream, peer, local).await }
    })
    .await;
    drop(listener);
    drain(&mut conns, limit, ListenerKind::Tcp, async {}).await;
}
