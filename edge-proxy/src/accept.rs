//! Accepting connections: one listening socket shared by every worker, a least-loaded handoff
//! between workers (see `workers` for why), a cap on open client connections, and the
//! accept-until-shutdown and drain loop both proxies share.
//!
//! At the cap (`--max-connections`, over every listener and worker) the workers stop calling
//! `accept`: new connections wait in the kernel's accept queue (4096 deep) and are taken as soon as
//! an open one closes; beyond the queue the kernel drops their SYNs, and clients retry. This is
//! HAProxy's `maxconn` behaviour; refusing with a reset instead would turn a burst into errors.
//! Each worker takes a slot before it waits in `accept`, so the cap is never exceeded; a worker
//! waiting on a quiet listener holds one slot meanwhile, so at the cap up to one slot per worker
//! and listener may sit unused.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edge_core::util::{GaugeGuard, stopped};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::stats::{ListenerKind, ProxyStats};

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

/// Open connections per worker, for choosing where a new connection goes, and in all, for the cap.
#[derive(Debug)]
pub struct Loads {
    per_worker: Vec<AtomicUsize>,
    total: AtomicUsize,
    max: usize,
    /// Woken when a connection closes while the total is at the cap.
    freed: Notify,
    /// Counts the pauses at the cap.
    stats: Arc<ProxyStats>,
}

impl Loads {
    /// Counters for `workers` workers, admitting at most `max` open client connections in all;
    /// pauses at the cap count into `stats`.
    pub fn new(workers: usize, max: usize, stats: Arc<ProxyStats>) -> Arc<Self> {
        Arc::new(Self {
            per_worker: (0..workers.max(1)).map(|_| AtomicUsize::new(0)).collect(),
            total: AtomicUsize::new(0),
            max: max.max(1),
            freed: Notify::new(),
            stats,
        })
    }

    /// Open client connections over every listener (and slots acceptors hold for the next one).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
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

    /// Takes one of the `max` connection slots, waiting while all are taken. Slots are taken
    /// before `accept`, not counted after it, so that workers blocked in `accept` at once cannot
    /// overshoot the cap together.
    async fn reserve(self: &Arc<Self>) -> Slot {
        let mut paused = false;
        loop {
            let open = self.total.load(Ordering::Acquire);
            if open < self.max {
                if self.total.compare_exchange(open, open + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return Slot(self.clone());
                }
                continue;
            }
            if !paused {
                self.stats.limit_reached();
                paused = true;
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Register before looking again, so a close in between is not missed.
            freed.as_mut().enable();
            if self.total.load(Ordering::Acquire) < self.max {
                continue;
            }
            // The timeout is only a safety net; a close wakes us.
            let _ = tokio::time::timeout(Duration::from_millis(100), freed).await;
        }
    }

    fn enter(self: &Arc<Self>, w: usize, slot: Slot) -> LoadGuard {
        self.per_worker[w].fetch_add(1, Ordering::Relaxed);
        LoadGuard { loads: self.clone(), w, _slot: slot }
    }
}

/// One of the `--max-connections` slots, held by a connection (or by an acceptor about to take
/// one) until dropped.
#[derive(Debug)]
pub struct Slot(Arc<Loads>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.total.fetch_sub(1, Ordering::AcqRel) >= self.0.max {
            self.0.freed.notify_waiters();
        }
    }
}

/// Counts one connection on one worker until dropped.
#[derive(Debug)]
pub struct LoadGuard {
    loads: Arc<Loads>,
    w: usize,
    _slot: Slot,
}

impl LoadGuard {
    /// The same connection, counted on worker `w` instead.
    fn move_to(mut self, w: usize) -> Self {
        self.loads.per_worker[self.w].fetch_sub(1, Ordering::Relaxed);
        self.loads.per_worker[w].fetch_add(1, Ordering::Relaxed);
        self.w = w;
        self
    }
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
            let (loads, listener) = (&self.loads, &self.listener);
            tokio::select! {
                (r, slot) = async { let slot = loads.reserve().await; (listener.accept().await, slot) } => {
                    let (stream, peer) = r?;
                    let target = self.loads.pick(self.me);
                    let load = self.loads.enter(target, slot);
                    if target == self.me {
                        return Ok((stream, peer, load));
                    }
                    let stream = stream.into_std()?;
                    if let Err(mpsc::error::SendError(h)) = self.peers[target].send(Handoff { stream, peer, load }) {
                        // That worker is gone (shutting down): serve it here.
                        let load = h.load.move_to(self.me);
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

/// Accepts connections until `shutdown` turns true. Each one is counted under `kind`, held in
/// the open-connections gauge and its worker's load while it lives, and served by the future
/// `serve` makes for it, in `conns`.
pub(crate) async fn accept_until_shutdown<F, Fut>(
    acceptor: &mut Acceptor,
    shutdown: &mut watch::Receiver<bool>,
    stats: &ProxyStats,
    kind: ListenerKind,
    conns: &mut JoinSet<()>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (stream, peer, load) = tokio::select! {
            r = acceptor.next() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = stopped(shutdown) => return,
        };
        let open = GaugeGuard::new(stats.accepted(kind));
        let _ = stream.set_nodelay(true);
        let conn = serve(stream, peer);
        conns.spawn(async move {
            let _held = (open, load);
            conn.await;
        });
    }
}

/// After the listener closed: resolves `closing` (which asks open connections to finish), then
/// gives them up to `limit` before they are dropped.
pub(crate) async fn drain(
    conns: &mut JoinSet<()>,
    limit: Duration,
    kind: ListenerKind,
    closing: impl Future<Output = ()>,
) {
    let left = tokio::time::timeout(limit, async {
        closing.await;
        while conns.join_next().await.is_some() {}
    })
    .await;
    if left.is_err() {
        tracing::warn!(
            open = conns.len(),
            "drain timeout at shutdown; closing remaining {} connections",
            kind.as_str()
        );
    }
}
