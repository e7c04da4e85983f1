//! One backend's probe loop: probes on a start-to-start schedule at the normal or the fast
//! interval, whichever the monitor asks for, and reports each verdict to the monitor.
//!
//! The schedule counts from each probe's start, and a probe that takes longer than the interval
//! (a timeout) is followed at once by the next; when the backend turns suspect mid-wait, the wait
//! shortens to the fast interval from the last start. So once a backend is suspect, its next
//! `fall - 1` verdicts come at most `max(fast interval, timeout)` apart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::{HealthCheck, HealthConfig, ProbeError, Reach};
use crate::backend::{Backend, BackendId, NextProbe};

/// A finished probe.
#[derive(Debug)]
pub(super) struct ProbeDone {
    pub id: BackendId,
    pub epoch: u64,
    pub outcome: Result<String, ProbeError>,
    pub duration: Duration,
}

/// The monitor's side of a probe loop.
#[derive(Debug)]
pub(super) struct Prober {
    abort: AbortHandle,
    fast: watch::Sender<bool>,
    /// When the next probe starts, in milliseconds since the Unix epoch (0: unknown).
    next_ms: Arc<AtomicU64>,
}

impl Prober {
    /// Starts probing `backend` at once (at `--health-port` when one is set).
    pub fn spawn(
        id: BackendId,
        backend: Arc<Backend>,
        epoch: u64,
        checker: Arc<dyn HealthCheck>,
        cfg: HealthConfig,
        tx: mpsc::Sender<ProbeDone>,
    ) -> Self {
        let (fast, mut fast_rx) = watch::channel(false);
        let addr = cfg.port.map_or(backend.addr, |p| SocketAddr::new(backend.addr.ip(), p));
        let next_ms = Arc::new(AtomicU64::new(0));
        let next = next_ms.clone();
        let task = tokio::spawn(async move {
            loop {
                let start = Instant::now();
                let outcome = match tokio::time::timeout(
                    cfg.timeout,
                    checker.check_with(addr, Reach { proxy: backend.proxy(), tls: backend.tls() }),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(ProbeError::Timeout(cfg.timeout)),
                };
                let done = ProbeDone { id: id.clone(), epoch, outcome, duration: start.elapsed() };
                if tx.send(done).await.is_err() {
                    return;
                }
                // Let the monitor apply the verdict (and maybe ask for the fast pace) first.
                tokio::task::yield_now().await;
                let mut due =
                    start + if *fast_rx.borrow_and_update() { cfg.fast_interval } else { cfg.next_interval() };
                loop {
                    let wait = due.saturating_duration_since(Instant::now());
                    next.store(unix_ms(SystemTime::now() + wait), Ordering::Relaxed);
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => break,
                        r = fast_rx.changed() => {
                            if r.is_err() {
                                return;
                            }
                            if *fast_rx.borrow_and_update() {
                                due = due.min(start + cfg.fast_interval);
                            }
                        }
                    }
                }
            }
        });
        Self { abort: task.abort_handle(), fast, next_ms }
    }

    /// Asks for the fast or the normal pace.
    pub fn set_fast(&self, fast: bool) {
        self.fast.send_if_modified(|f| std::mem::replace(f, fast) != fast);
    }

    /// When the next probe starts, read live.
    pub fn next_probe(&self) -> NextProbe {
        NextProbe::new(self.next_ms.clone())
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
