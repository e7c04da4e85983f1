//! Thread-per-core workers for the userspace data plane.
//!
//! Each worker is an OS thread running its own single-threaded tokio runtime, with its own socket
//! per listener (bound with `SO_REUSEPORT`, so the kernel spreads new connections across workers)
//! and its own upstream connection pool. A client connection, its requests and the upstream
//! connections serving them all stay on one thread: no work stealing, no cross-thread wake-ups,
//! which is most of what a tokio multi-thread runtime spends on a proxy's short requests. This is
//! the model HAProxy, NGINX and Envoy use. Only the selector snapshot and the metric atomics are
//! shared between workers.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::balance::Selector;
use crate::config::ProxyConfig;
use crate::metrics::Metrics;

/// Binds `workers` sockets to `addr` with `SO_REUSEPORT`; returns the bound address (port 0
/// resolved) and the listeners.
pub fn bind_group(addr: SocketAddr, workers: usize) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let mut bound = addr;
    let mut out = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let s = Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.set_tcp_nodelay(true)?;
        s.bind(&bound.into())?;
        s.listen(4096)?;
        let l: std::net::TcpListener = s.into();
        // With port 0 the first socket picks the port; the others join it.
        bound = l.local_addr()?;
        out.push(l);
    }
    Ok((bound, out))
}

/// What one worker serves.
pub struct WorkerSockets {
    /// HTTP listeners: (socket, TLS acceptor if any).
    pub http: Vec<(std::net::TcpListener, Option<tokio_rustls::TlsAcceptor>)>,
    /// TCP listeners.
    pub tcp: Vec<std::net::TcpListener>,
}

impl std::fmt::Debug for WorkerSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSockets").field("http", &self.http.len()).field("tcp", &self.tcp.len()).finish()
    }
}

/// Shared inputs for every worker.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    /// The selector snapshot.
    pub selector: Arc<ArcSwap<Selector>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Proxy settings.
    pub cfg: ProxyConfig,
    /// Turns true at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// How long open connections may take to finish after shutdown.
    pub drain_timeout: Duration,
}

/// Starts one worker thread; it returns once its listeners closed and its connections finished
/// (or the drain timeout passed).
pub fn spawn(index: usize, sockets: WorkerSockets, ctx: WorkerContext) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("edge-worker-{index}")).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "cannot start a worker runtime; this worker serves nothing");
                return;
            }
        };
        rt.block_on(async move {
            let http = Arc::new(super::http::HttpProxy::new(ctx.selector.clone(), ctx.metrics.clone(), ctx.cfg.clone()));
            let tcp = Arc::new(super::tcp::TcpProxy::new(ctx.selector.clone(), ctx.metrics.clone(), ctx.cfg.clone()));
            let mut loops = tokio::task::JoinSet::new();
            for (l, tls) in sockets.http {
                match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => {
                        loops.spawn(super::http::serve(l, http.clone(), tls, ctx.shutdown.clone(), ctx.drain_timeout));
                    }
                    Err(e) => tracing::error!(worker = index, error = %e, "cannot register an HTTP listener"),
                }
            }
            for l in sockets.tcp {
                match tokio::net::TcpListener::from_std(l) {
                    Ok(l) => {
                        loops.spawn(super::tcp::serve(l, tcp.clone(), ctx.shutdown.clone(), ctx.drain_timeout));
                    }
                    Err(e) => tracing::error!(worker = index, error = %e, "cannot register a TCP listener"),
                }
            }
            while loops.join_next().await.is_some() {}
        });
    })
}
