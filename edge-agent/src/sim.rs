//! Simulated HTTP backends for the demo and the replay: in-process servers whose behaviour a
//! script controls while they run. Each answers any path with its name (in the body and in
//! `x-backend`) and `/healthz` for the probes; it can be crashed (listener and every connection
//! closed) and restarted on its port, made to hang, slowed down, made to answer 503 to a share of
//! requests or to lose a share of its probes, and it queues requests beyond a concurrency limit.
//!
//! Decisions are deterministic: the n-th request errs when `floor((n+1) x rate)` passes an integer
//! (evenly spaced, exactly `rate` of them), and its latency jitter is a hash of the seed and `n`.
//! They are test doubles for the scenarios, not part of the agent's product path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How a simulated backend answers now; every field may change while it runs.
#[derive(Debug)]
pub struct Behaviour {
    /// Base latency, microseconds.
    pub latency_us: AtomicU64,
    /// Mean of an exponential extra latency, microseconds.
    pub jitter_us: AtomicU64,
    /// Latency multiplier, in hundredths (100: normal).
    pub slow_percent: AtomicU64,
    /// Share of requests answered 503, in millionths.
    pub error_ppm: AtomicU64,
    /// Share of probes answered 503, in millionths.
    pub probe_loss_ppm: AtomicU64,
    /// Requests are accepted and never answered.
    pub hang: AtomicBool,
    /// Requests other than probes received.
    pub served: AtomicU64,
    probes: AtomicU64,
    seed: u64,
    /// Beyond this many requests at once, requests queue.
    slots: Semaphore,
}

impl Behaviour {
    /// A backend answering at once, with `concurrency` requests at a time (0: no limit).
    pub fn new(seed: u64, concurrency: usize) -> Self {
        let permits = if concurrency == 0 { Semaphore::MAX_PERMITS } else { concurrency };
        Self {
            latency_us: AtomicU64::new(0),
            jitter_us: AtomicU64::new(0),
            slow_percent: AtomicU64::new(100),
            error_ppm: AtomicU64::new(0),
            probe_loss_ppm: AtomicU64::new(0),
            hang: AtomicBool::new(false),
            served: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            seed,
            slots: Semaphore::new(permits),
        }
    }

    /// Sets a share (0.0 to 1.0) into one of the millionths fields.
    pub fn set_share(field: &AtomicU64, share: f64) {
        field.store((share.clamp(0.0, 1.0) * 1e6).round() as u64, Ordering::Relaxed);
    }

    /// The latency of request `n`: base plus jitter, times the slow factor.
    fn latency(&self, n: u64) -> Duration {
        let base = self.latency_us.load(Ordering::Relaxed) as f64;
        let mean = self.jitter_us.load(Ordering::Relaxed) as f64;
        // A uniform in (0, 1] from the seed and n, then an exponential with that mean.
        let u = (edge_common::fmix64(self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 11) as f64 + 1.0;
        let jitter = -mean * (u / (1u64 << 53) as f64).ln();
        let factor = self.slow_percent.load(Ordering::Relaxed) as f64 / 100.0;
        Duration::from_micros(((base + jitter) * factor) as u64)
    }
}

/// Whether the n-th event (from 0) of a stream is one of a share `ppm` of them, evenly spaced.
pub fn nth_of_share(n: u64, ppm: u64) -> bool {
    ppm > 0 && (n + 1).saturating_mul(ppm) / 1_000_000 > n.saturating_mul(ppm) / 1_000_000
}

/// Opens a backend's listening socket on an address: where it lives (the host, or a network
/// namespace of the replay's eBPF runs) is the binder's business.
pub type Bind = Arc<dyn Fn(SocketAddr) -> std::io::Result<std::net::TcpListener> + Send + Sync>;

/// One simulated backend.
pub struct SimBackend {
    /// Display name.
    pub name: String,
    /// Its address (fixed across restarts).
    pub addr: SocketAddr,
    /// Its behaviour, shared with the serving tasks.
    pub behaviour: Arc<Behaviour>,
    bind: Bind,
    tasks: Option<JoinSet<()>>,
}

impl std::fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBackend").field("name", &self.name).field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl SimBackend {
    /// Starts a backend on a free loopback port.
    pub async fn start(name: &str, behaviour: Behaviour) -> std::io::Result<Self> {
        Self::start_on(name, behaviour, SocketAddr::from(([127, 0, 0, 1], 0)), Arc::new(std::net::TcpListener::bind))
            .await
    }

    /// Starts a backend on `addr` (port 0: a free one), opening its socket with `bind`.
    pub async fn start_on(name: &str, behaviour: Behaviour, addr: SocketAddr, bind: Bind) -> std::io::Result<Self> {
        let listener = listen(&bind, addr)?;
        let addr = listener.local_addr()?;
        let mut b = Self { name: name.to_string(), addr, behaviour: Arc::new(behaviour), bind, tasks: None };
        b.serve(listener);
        Ok(b)
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let (name, behaviour) = (self.name.clone(), self.behaviour.clone());
        // One task owns the listener and every connection task; aborting it drops both, which
        // closes the port and every open connection at once.
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        if let Ok((stream, _)) = r {
                            conns.spawn(serve_conn(stream, name.clone(), behaviour.clone()));
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every open connection, like a crashed process.
    pub fn kill(&mut self) {
        if let Some(mut t) = self.tasks.take() {
            t.abort_all();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        // The aborted tasks release the listener asynchronously; retry the bind briefly.
        let mut last = None;
        for _ in 0..50 {
            match listen(&self.bind, self.addr) {
                Ok(l) => {
                    self.serve(l);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
    }

    /// True unless killed.
    pub fn is_running(&self) -> bool {
        self.tasks.is_some()
    }

    /// Requests other than probes received so far.
    pub fn served(&self) -> u64 {
        self.behaviour.served.load(Ordering::Relaxed)
    }
}

/// Opens a listener with `bind` and hands it to tokio.
fn listen(bind: &Bind, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = bind(addr)?;
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

async fn serve_conn(stream: tokio::net::TcpStream, name: String, b: Arc<Behaviour>) {
    let svc = service_fn(move |req: Request<Incoming>| {
        let (name, b) = (name.clone(), b.clone());
        async move { Ok::<_, Infallible>(answer(req, &name, &b).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
}

async fn answer(req: Request<Incoming>, name: &str, b: &Behaviour) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, text: String| {
        let mut r = Response::new(Full::new(Bytes::from(text)));
        *r.status_mut() = status;
        if let Ok(v) = name.parse() {
            r.headers_mut().insert("x-backend", v);
        }
        r
    };
    if req.uri().path() == "/healthz" {
        let n = b.probes.fetch_add(1, Ordering::Relaxed);
        if b.hang.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        let lost = nth_of_share(n, b.probe_loss_ppm.load(Ordering::Relaxed));
        return reply(if lost { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }, "ok\n".into());
    }
    let n = b.served.fetch_add(1, Ordering::Relaxed);
    // Read the body (a POST's), then take a slot: beyond the limit, requests queue here.
    let _ = req.into_body().collect().await;
    let Ok(_slot) = b.slots.acquire().await else { return reply(StatusCode::SERVICE_UNAVAILABLE, String::new()) };
    if b.hang.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    let wait = b.latency(n);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    if nth_of_share(n, b.error_ppm.load(Ordering::Relaxed)) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "simulated error\n".into());
    }
    reply(StatusCode::OK, format!("hello from {name}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_exact_and_evenly_spaced() {
        let hits: Vec<u64> = (0..12).filter(|n| nth_of_share(*n, 333_334)).collect();
        assert_eq!(hits, [2, 5, 8, 11], "one in three");
        assert_eq!((0..1000).filter(|n| nth_of_share(*n, 300_000)).count(), 300);
        assert_eq!((0..1000).filter(|n| nth_of_share(*n, 0)).count(), 0);
        assert_eq!((0..1000).filter(|n| nth_of_share(*n, 1_000_000)).count(), 1000);
    }

    #[test]
    fn latency_is_deterministic_with_the_mean_asked_for() {
        let b = Behaviour::new(7, 0);
        b.latency_us.store(1000, Ordering::Relaxed);
        b.jitter_us.store(500, Ordering::Relaxed);
        let total: Duration = (0..20_000).map(|n| b.latency(n)).sum();
        let mean = total.as_secs_f64() / 20_000.0;
        assert!((mean - 0.0015).abs() < 0.0001, "{mean}");
        let twin = Behaviour::new(7, 0);
        twin.latency_us.store(1000, Ordering::Relaxed);
        twin.jitter_us.store(500, Ordering::Relaxed);
        assert!((0..100).all(|n| twin.latency(n) == b.latency(n)), "same seed, same latencies");
        assert_ne!(b.latency(1), b.latency(2), "jittered");
        b.slow_percent.store(1000, Ordering::Relaxed);
        assert!(b.latency(1) >= Duration::from_millis(10), "ten times slower");
    }
}
