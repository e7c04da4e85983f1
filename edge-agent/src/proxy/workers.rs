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
//! With `--cpu-pinning on` (the default) worker `i` is bound to the `i`-th CPU the process may
//! use. Unpinned, the scheduler's wake-affine placement now and then puts both workers of a
//! 2-core host on one CPU while the other runs something else; in the benchmark that doubled p99
//! latency (4.7 ms against 2.1 ms pinned). Turn it off when the host's CPUs are shared with busy
//! neighbours that the scheduler should be free to move the workers away from.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::balance::Selector;
use crate::config::ProxyConfig;
use crate::metrics::Metrics;

/// Binds `addr` once and returns the bound address (port 0 resolved) and one handle of the socket
/// per worker.
pub fn bind_group(addr: SocketAddr, workers: usize) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    let l: std::net::TcpListener = s.into();
    let bound = l.local_addr()?;
    let mut out = Vec::with_capacity(workers);
    for _ in 1..workers.max(1) {
        out.push(l.try_clone()?);
    }
    out.push(l);
    Ok((bound, out))
}

/// Open connections per worker, for choosing where a new connection goes.
#[derive(Debug)]
pub struct Loads {
    per_worker: Vec<AtomicUsize>,
}

impl Loads {
    /// Counters for `workers` workers.
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Self { per_worker: (0..workers.max(1)).map(|_| AtomicUsize::new(0)).collect() })
    }

    /// The least-loaded worker; `me` wins ties, so an idle set keeps connections where they land.
    fn pick(&self, me: usize) -> usize {
        let mut best = me;
        let mut best_load = self.per_worker[me].load(Ordering::Relaxed);
        for (i, l) in self.per_worker.iter().enumerate() {
            let l = l.load(Ordering::Relaxed);
            if l < best_load {
                best = i;
                best_load = l;
            }
        }
        best
    }

    fn enter(self: &Arc<Self>, w: usize) -> LoadGuard {
        self.per_worker[w].fetch_add(1, Ordering::Relaxed);
        LoadGuard { loads: self.clone(), w }
    }
}

/// Counts one connection on one worker until dropped.
#[derive(Debug)]
pub struct LoadGuard {
    loads: Arc<Loads>,
    w: usize,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.loads.per_worker[self.w].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection accepted by one worker for another.
#[derive(Debug)]
pub struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    load: LoadGuard,
}

/// One worker's end of one listener: the shared socket, its inbox of handed-over connections,
/// and the other workers' inboxes.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    inbox: mpsc::UnboundedReceiver<Handoff>,
    peers: Vec<mpsc::UnboundedSender<Handoff>>,
    loads: Arc<Loads>,
    me: usize,
}

/// Pending acceptor parts, made before the worker runtimes exist.
#[derive(Debug)]
pub struct AcceptorParts {
    listener: std::net::TcpListener,
    inbox: mpsc::UnboundedReceiver<Handoff>,
    peers: Vec<mpsc::UnboundedSender<Handoff>>,
    loads: Arc<Loads>,
    me: usize,
}

/// Builds the acceptor parts of one listener for every worker.
pub fn acceptors(sockets: Vec<std::net::TcpListener>, loads: &Arc<Loads>) -> Vec<AcceptorParts> {
    let (txs, rxs): (Vec<_>, Vec<_>) = sockets.iter().map(|_| mpsc::unbounded_channel()).unzip();
    sockets
        .into_iter()
        .zip(rxs)
        .enumerate()
        .map(|(me, (listener, inbox))| AcceptorParts { listener, inbox, peers: txs.clone(), loads: loads.clone(), me })
        .collect()
}

impl AcceptorParts {
    /// Registers the socket with the current (worker) runtime.
    pub fn register(self) -> io::Result<Acceptor> {
        Ok(Acceptor {
            listener: TcpListener::from_std(self.listener)?,
            inbox: self.inbox,
            peers: self.peers,
            loads: self.loads,
            me: self.me,
        })
    }
}

impl Acceptor {
    /// The listening address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection this worker should serve, with its load ticket.
    pub async fn next(&mut self) -> io::Result<(TcpStream, SocketAddr, LoadGuard)> {
        loop {
            tokio::select! {
                r = self.listener.accept() => {
                    let (stream, peer) = r?;
                    let target = self.loads.pick(self.me);
                    let load = self.loads.enter(target);
                    if target == self.me {
                        return Ok((stream, peer, load));
                    }
                    let stream = stream.into_std()?;
                    if let Err(mpsc::error::SendError(h)) = self.peers[target].send(Handoff { stream, peer, load }) {
                        // That worker is gone (shutting down): serve it here.
                        let load = self.loads.enter(self.me);
                        drop(h.load);
                        return Ok((TcpStream::from_std(h.stream)?, h.peer, load));
                    }
                }
                Some(h) = self.inbox.recv() => {
                    return Ok((TcpStream::from_std(h.stream)?, h.peer, h.load));
                }
            }
        }
    }
}

/// One worker's end of one listener, with what the listener serves.
#[derive(Debug)]
pub struct Listener {
    /// The shared socket and the handoff channels.
    pub acceptor: AcceptorParts,
    /// The selector of the service this listener serves.
    pub selector: Arc<ArcSwap<Selector>>,
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
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Proxy settings.
    pub cfg: ProxyConfig,
    /// Turns true at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// How long open connections may take to finish after shutdown.
    pub drain_timeout: Duration,
    /// CPUs to pin workers to, in order (empty: no pinning).
    pub cpus: Vec<usize>,
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
            let mut loops = tokio::task::JoinSet::new();
            for (l, tls) in sockets.http {
                let http = Arc::new(super::http::HttpProxy::new(l.selector, ctx.metrics.clone(), ctx.cfg.clone()));
                match l.acceptor.register() {
                    Ok(a) => {
                        loops.spawn(super::http::serve(a, http, tls, ctx.shutdown.clone(), ctx.drain_timeout));
                    }
                    Err(e) => tracing::error!(worker = index, error = %e, "cannot register an HTTP listener"),
                }
            }
            for l in sockets.tcp {
                let tcp = Arc::new(super::tcp::TcpProxy::new(l.selector, ctx.metrics.clone(), ctx.cfg.clone()));
                match l.acceptor.register() {
                    Ok(a) => {
                        loops.spawn(super::tcp::serve(a, tcp, ctx.shutdown.clone(), ctx.drain_timeout));
                    }
                    Err(e) => tracing::error!(worker = index, error = %e, "cannot register a TCP listener"),
                }
            }
            while loops.join_next().await.is_some() {}
        });
    })
}
