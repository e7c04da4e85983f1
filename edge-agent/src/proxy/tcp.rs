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

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::ActiveGuard;
use super::workers::Acceptor;
use super::{OpenConn, request_hash};
use crate::balance::{PickSource, Selector, Target};
use crate::config::ProxyConfig;
use crate::metrics::{ListenerLabel, Metrics, ReasonLabel};

/// Counts bytes read through it and stamps the time of the last byte.
#[derive(Debug)]
struct Counted<S> {
    inner: S,
    counter: Counter,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counter.inc_by(n as u64);
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
pub struct TcpProxy {
    selector: Arc<ArcSwap<Selector>>,
    metrics: Arc<Metrics>,
    cfg: ProxyConfig,
}

impl TcpProxy {
    /// Builds the proxy.
    pub fn new(selector: Arc<ArcSwap<Selector>>, metrics: Arc<Metrics>, cfg: ProxyConfig) -> Self {
        Self { selector, metrics, cfg }
    }

    async fn connect(&self, t: &Target) -> io::Result<TcpStream> {
        match tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(t.addr)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                t.shared.metrics.err_connect.inc();
                Err(e)
            }
            Err(_) => {
                t.shared.metrics.err_connect.inc();
                Err(io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))
            }
        }
    }

    /// Proxies one client connection.
    pub async fn handle(&self, client: TcpStream, peer: SocketAddr, local: SocketAddr) {
        let selector = self.selector.load_full();
        let hash = if selector.needs_hash() { request_hash(selector.hash_key(), peer, local, None) } else { 0 };
        let Some((mut target, source)) = selector.pick(hash) else {
            self.metrics.no_backend.get_or_create(&ReasonLabel { reason: "rejected" }).inc();
            return;
        };
        if source == PickSource::Fallback {
            self.metrics.no_backend.get_or_create(&ReasonLabel { reason: "fallback" }).inc();
        }
        let mut active = ActiveGuard::new(&target.shared.metrics.active);
        let upstream = match self.connect(target).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(backend = %target.id, error = %e, "connect failed");
                let Some((other, _)) = selector.pick_other(hash, &target.id) else { return };
                self.metrics.retries.get_or_create(&ReasonLabel { reason: "connect" }).inc();
                target = other;
                active = ActiveGuard::new(&target.shared.metrics.active);
                match self.connect(target).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(backend = %target.id, error = %e, "connect retry failed");
                        return;
                    }
                }
            }
        };
        let _ = upstream.set_nodelay(true);
        let m = &target.shared.metrics;
        m.tcp_connections.inc();
        let epoch = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let mut c = Counted { inner: client, counter: m.tcp_tx.clone(), last: last.clone(), epoch };
        let mut u = Counted { inner: upstream, counter: m.tcp_rx.clone(), last: last.clone(), epoch };
        let idle = self.cfg.idle_timeout;
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                if let Err(e) = r {
                    if e.kind() != io::ErrorKind::ConnectionReset {
                        m.err_reset.inc();
                    }
                    tracing::debug!(backend = %target.id, error = %e, "tcp copy ended with an error");
                }
            }
            _ = idle_expired(last, epoch, idle) => {
                tracing::debug!(backend = %target.id, "tcp connection idle; closing");
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

/// Serves one TCP listener until `shutdown` turns true, then gives open connections up to `drain`
/// to finish before closing them.
pub async fn serve(mut listener: Acceptor, proxy: Arc<TcpProxy>, mut shutdown: watch::Receiver<bool>, drain: Duration) {
    let accepted = proxy.metrics.connections.get_or_create_owned(&ListenerLabel { listener: "tcp" });
    let open = proxy.metrics.open_connections.get_or_create_owned(&ListenerLabel { listener: "tcp" });
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer, load) = tokio::select! {
            r = listener.next() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = crate::proxy::stopped(&mut shutdown) => break,
        };
        accepted.inc();
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let proxy = proxy.clone();
        let open = OpenConn::new(&open);
        conns.spawn(async move {
            let (_open, _load) = (open, load);
            proxy.handle(stream, peer, local).await;
        });
    }
    drop(listener);
    let left = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if left.is_err() {
        tracing::warn!(open = conns.len(), "drain timeout at shutdown; closing remaining tcp connections");
    }
}
