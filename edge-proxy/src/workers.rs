//! Thread-per-core workers for the userspace data plane.
//!
//! Each worker is an OS thread running its own single-threaded tokio runtime and its own upstream
//! connection pool. All workers accept on the same listening socket; whoever accepts a connection
//! keeps it if it has the fewest open connections, and otherwise hands it to the worker that has
//! (HAProxy balances its threads the same way). Leaving the split to the kernel, by waking order or
//! by `SO_REUSEPORT` hashing, put most of a burst of connections on one worker in our benchmarks,
//! which halved throughput and doubled tail latency on those runs. A client connection, its requests and the upstream
//! connections serving them all stay on one thread: no work stealing, no cross-thread wake-ups,
//! which is most of what a tokio multi-thread runtime spends on a proxy's short requests. This is
//! the model HAProxy, NGINX and Envoy use. Only the selector snapshots and the metric atomics are
//! shared between workers.
//!
//! Each listener carries the selector of the service it serves ([`Listener`]): with several
//! services, each VIP's TCP listener balances over its own backends. A worker builds one proxy per
//! listener, so the request path still does a single `ArcSwap::load` of a selector it already
//! holds, with no lookup by service.
//!
//! With pinning (`--cpu-pinning on`; the agent's default unless its listeners terminate TLS)
//! worker `i` is bound to the `i`-th CPU the process may use. Unpinned, the scheduler's
//! wake-affine placement now and then puts both workers of a 2-core host on one CPU while the
//! other runs something else; in the benchmark that doubled p99 latency (4.7 ms against 2.1 ms
//! pinned). It is better off when the host's CPUs are shared with busy neighbours that the
//! scheduler should be free to move the workers away from (the operator's call), and when
//! connections are short and over TLS (hence the agent's default): the work around each
//! connection is heavy on both sides, and pinned workers keep the scheduler from giving a busy
//! neighbour (in the benchmark, the load generator) a CPU of its own. On the 2-core benchmark host
//! pinning cost a third of the new TLS connections per second (2,060 pinned against 3,030
//! unpinned, 16 clients each opening a connection per request), while unpinned keep-alive p99
//! was twice HAProxy's (4.49 ms against 2.22 ms) where pinned it was below it.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use edge_core::balance::Selector;
use tokio::sync::watch;

use crate::accept::AcceptorParts;
use crate::admission::Admission;
use crate::config::ProxyConfig;
use crate::served::Served;
use crate::stats::{ProxyStats, ServiceTraffic};

/// One worker's end of one listener, with what the listener serves.
#[derive(Debug)]
pub struct Listener {
    /// The shared socket and the handoff channels.
    pub acceptor: AcceptorParts,
    /// The selector of the service this listener serves.
    pub selector: Arc<ArcSwap<Selector>>,
    /// That service's counters.
    pub traffic: Arc<ServiceTraffic>,
}

/// What one worker serves.
pub struct WorkerSockets {
    /// HTTP listeners, each with its TLS acceptor if any.
    pub http: Vec<(Listener, Option<tokio_rustls::TlsAcceptor>)>,
    /// TCP listeners.
    pub tcp: Vec<Listener>,
}

impl std::fmt::Debug for WorkerSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSockets").field("http", &self.http.len()).field("tcp", &self.tcp.len()).finish()
    }
}

/// The CPUs this process may run on (its affinity mask: cpusets and container limits apply).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|c| libc::CPU_ISSET(*c, &set)).collect()
    }
}

/// Binds the calling thread to `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: as above; sched_setaffinity reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Shared inputs for every worker.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    /// Process-wide proxy counters.
    pub stats: Arc<ProxyStats>,
    /// The process's request budget (`--max-requests`).
    pub admission: Arc<Admission>,
    /// Proxy settings.
    pub cfg: ProxyConfig,
    /// TLS settings for backends spoken to over TLS, when they could be made.
    pub backend_tls: Option<Arc<rustls::ClientConfig>>,
    /// Turns true at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// How long open connections may take to finish after shutdown.
    pub drain_timeout: Duration,
    /// CPUs to pin workers to, in order (empty: no pinning).
    pub cpus: Vec<usize>,
}

impl WorkerContext {
    fn served(&self, selector: Arc<ArcSwap<Selector>>, traffic: Arc<ServiceTraffic>) -> Served {
        Served {
            selector,
            traffic,
            stats: self.stats.clone(),
            admission: self.admission.clone(),
            cfg: self.cfg.clone(),
            backend_tls: self.backend_tls.clone(),
            backend_tls_h2: self.backend_tls.as_ref().map(|c| {
                let mut h2 = (**c).clone();
                h2.alpn_protocols = vec![b"h2".to_vec()];
                std::sync::Arc::new(h2)
            }),
        }
    }
}

/// Starts one worker thread; it returns once its listeners closed and its connections finished
/// (or the drain timeout passed).
pub fn spawn(index: usize, sockets: WorkerSockets, ctx: WorkerContext) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("edge-worker-{index}")).spawn(move || {
        if !ctx.cpus.is_empty() {
            let cpu = ctx.cpus[index % ctx.cpus.len()];
            match pin_to(cpu) {
                Ok(()) => tracing::debug!(worker = index, cpu, "worker pinned"),
                Err(e) => tracing::warn!(worker = index, cpu, error = %e, "cannot pin worker; it runs unpinned"),
            }
        }
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "cannot start a worker runtime; this worker serves nothing");
                return;
            }
        };
        rt.block_on(async move {
            let sweeper = tokio::spawn(crate::upstream::pool::sweep_every(crate::upstream::pool::SWEEP_EVERY));
            let mut loops = tokio::task::JoinSet::new();
            for (l, tls) in sockets.http {
                let tunnels = crate::tunnel::Tunnels::new(ctx.shutdown.clone(), ctx.drain_timeout);
                let http = Arc::new(crate::http::HttpProxy::new(ctx.served(l.selector, l.traffic), tunnels));
                match l.acceptor.register() {
                    Ok(a) => {
                        loops.spawn(crate::http::serve(a, http, tls, ctx.shutdown.clone(), ctx.drain_timeout));
                    }
                    Err(e) => tracing::error!(worker = index, error = %e, "cannot register an HTTP listener"),
                }
            }
            for l in sockets.tcp {
                let tcp = Arc::new(crate::tcp::TcpProxy::new(ctx.served(l.selector, l.traffic)));
                match l.acceptor.register() {
                    Ok(a) => {
                        loops.spawn(crate::tcp::serve(a, tcp, ctx.shutdown.clone(), ctx.drain_timeout));
                    }
                    Err(e) => tracing::error!(worker = index, error = %e, "cannot register a TCP listener"),
                }
            }
            while loops.join_next().await.is_some() {}
            sweeper.abort();
        });
    })
}
