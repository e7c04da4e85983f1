//! The state snapshot: what the health monitor publishes on every change, and the long-lived
//! handle each backend's traffic updates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use std::time::{Duration, SystemTime};

use super::{BackendId, BackendStats, Health, ProxyProtocol, State};

/// Full weight, in the units [`BackendView::effective_weight`] uses: slow start scales a weight
/// in tenths, so the selectors see `weight x 10` at full weight and `weight x 1` at the floor.
pub const WEIGHT_STEPS: u32 = 10;

/// `Backend::reach` bits.
const REACH_PROXY: u8 = 0b0011;
const REACH_TLS: u8 = 0b0100;
const REACH_H2: u8 = 0b1000;

/// The probation gate's states.
const GATE_OPEN: u8 = 0;
const GATE_ONE: u8 = 1;
const GATE_TAKEN: u8 = 2;

/// A backend's identity and its live counters; it outlives the snapshots that mention it, so
/// a request keeps counting into it after the backend left the selection.
#[derive(Debug)]
pub struct Backend {
    /// The backend's id (`ip:port`).
    pub id: BackendId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: BackendStats,
    /// The probation gate: the monitor arms it for one request, the proxy takes that request.
    gate: AtomicU8,
    /// How its connections are made, in one byte because the proxy reads it on every request:
    /// the PROXY protocol version (bits 0-1: 0 none, 1 v1, 2 v2), TLS (bit 2) and HTTP/2 (bit 3).
    /// The monitor sets it from the spec.
    reach: AtomicU8,
    /// For a backend spoken to over TLS, the name its certificate must be valid for (the monitor
    /// sets it with the TLS bit; read when a connection is opened).
    tls: ArcSwapOption<String>,
}

impl Backend {
    /// A backend at `addr` with zeroed counters.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            id: addr.to_string().into(),
            addr,
            stats: BackendStats::default(),
            gate: AtomicU8::new(GATE_OPEN),
            reach: AtomicU8::new(0),
            tls: ArcSwapOption::empty(),
        }
    }

    /// Whether it is spoken to over HTTP/2.
    pub fn is_h2(&self) -> bool {
        self.reach.load(Ordering::Relaxed) & REACH_H2 != 0
    }

    /// Sets HTTP/2 (the monitor, from the backend's spec).
    pub fn set_h2(&self, h2: bool) {
        self.set_bits(REACH_H2, if h2 { REACH_H2 } else { 0 });
    }

    /// The name to verify its certificate against, when it is spoken to over TLS.
    pub fn tls(&self) -> Option<Arc<String>> {
        self.tls.load_full()
    }

    /// Whether it is spoken to over TLS.
    pub fn is_tls(&self) -> bool {
        self.reach.load(Ordering::Relaxed) & REACH_TLS != 0
    }

    /// Sets the TLS name (the monitor, from the backend's spec).
    pub fn set_tls(&self, name: Option<String>) {
        let on = name.is_some();
        self.tls.store(name.map(Arc::new));
        self.set_bits(REACH_TLS, if on { REACH_TLS } else { 0 });
    }

    /// The PROXY protocol its connections start with, if any.
    pub fn proxy(&self) -> Option<ProxyProtocol> {
        match self.reach.load(Ordering::Relaxed) & REACH_PROXY {
            1 => Some(ProxyProtocol::V1),
            2 => Some(ProxyProtocol::V2),
            _ => None,
        }
    }

    /// Sets the PROXY protocol (the monitor, from the backend's spec).
    pub fn set_proxy(&self, proxy: Option<ProxyProtocol>) {
        let v = match proxy {
            None => 0,
            Some(ProxyProtocol::V1) => 1,
            Some(ProxyProtocol::V2) => 2,
        };
        self.set_bits(REACH_PROXY, v);
    }

    /// Replaces the `mask` bits of `reach` with `value` (only the monitor writes them).
    fn set_bits(&self, mask: u8, value: u8) {
        let _ = self.reach.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| Some((r & !mask) | value));
    }

    /// True when a request may go to this backend now: always, except on probation, where only
    /// the first request after the gate was armed may (one atomic compare-and-swap, no lock).
    pub fn admit(&self) -> bool {
        match self.gate.load(Ordering::Relaxed) {
            GATE_OPEN => true,
            GATE_ONE => self.gate.compare_exchange(GATE_ONE, GATE_TAKEN, Ordering::Relaxed, Ordering::Relaxed).is_ok(),
            _ => false,
        }
    }

    /// Arms the gate for exactly one request (the monitor, on entering probation).
    pub fn arm_probation(&self) {
        self.gate.store(GATE_ONE, Ordering::Relaxed);
    }

    /// Opens the gate for all traffic (the monitor, on leaving probation).
    pub fn open_gate(&self) {
        self.gate.store(GATE_OPEN, Ordering::Relaxed);
    }
}

/// When a backend's next probe starts, as its probe loop last scheduled it; read live, so a
/// snapshot shows the current schedule however old the snapshot is.
#[derive(Debug, Clone, Default)]
pub struct NextProbe(Option<Arc<AtomicU64>>);

impl NextProbe {
    /// Reads the schedule a probe loop keeps in `unix_ms` (milliseconds since the Unix epoch, 0
    /// while unknown).
    pub fn new(unix_ms: Arc<AtomicU64>) -> Self {
        Self(Some(unix_ms))
    }

    /// When the next probe starts, if scheduled.
    pub fn get(&self) -> Option<SystemTime> {
        match self.0.as_ref()?.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

/// The last probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSummary {
    /// Whether it passed.
    pub passed: bool,
    /// What happened, e.g. `connect refused` or `http 503`.
    pub detail: String,
    /// How long it took.
    pub duration: Duration,
    /// When it finished.
    pub at: SystemTime,
}

/// One backend in a snapshot.
#[derive(Debug, Clone)]
pub struct BackendView {
    /// Identity and counters.
    pub backend: Arc<Backend>,
    /// Relative weight, as configured.
    pub weight: u32,
    /// The weight selection uses, in tenths of `weight` ([`WEIGHT_STEPS`] is full weight): lower
    /// during slow start.
    pub effective_weight: u32,
    /// The state.
    pub state: State,
    /// Why it is in this state, with the evidence, e.g. `outlier: 5 consecutive gateway errors,
    /// last: http 503`.
    pub reason: String,
    /// Health from the probes.
    pub health: Health,
    /// Drained by an operator.
    pub drained: bool,
    /// Removed by discovery and waiting for its traffic to finish.
    pub removed: bool,
    /// Consecutive probe verdicts toward the next flip.
    pub streak: u32,
    /// The last probe.
    pub last_probe: Option<ProbeSummary>,
    /// When the state last changed.
    pub since: SystemTime,
    /// When the next probe is due.
    pub next_probe: NextProbe,
    /// Times ejected, decaying by one per base ejection time of sustained health.
    pub ejections: u32,
    /// When the current ejection ends.
    pub ejected_until: Option<SystemTime>,
    /// Slow start's progress, 0.0 to 1.0, while in slow start.
    pub slow_start: Option<f64>,
}

impl BackendView {
    /// A view of a backend in the state its health alone gives (tests and simple sources).
    pub fn probed(backend: Arc<Backend>, weight: u32, health: Health) -> Self {
        let state = match health {
            Health::Unknown => State::Unknown,
            Health::Healthy => State::Healthy,
            Health::Unhealthy => State::Unhealthy,
        };
        Self {
            backend,
            weight,
            effective_weight: weight * WEIGHT_STEPS,
            state,
            reason: String::new(),
            health,
            drained: false,
            removed: false,
            streak: 0,
            last_probe: None,
            since: SystemTime::now(),
            next_probe: NextProbe::default(),
            ejections: 0,
            ejected_until: None,
            slow_start: None,
        }
    }

    /// The id.
    pub fn id(&self) -> &BackendId {
        &self.backend.id
    }

    /// The state operators see.
    pub fn state(&self) -> State {
        self.state
    }

    /// True when it may get new traffic outside panic mode.
    pub fn eligible(&self) -> bool {
        self.state.usable()
    }

    /// The weight a selector gives it, in tenths of the configured weight: the effective weight
    /// when usable, the configured one when it serves only because of panic mode.
    pub fn selection_weight(&self) -> u32 {
        let w = if self.eligible() { self.effective_weight } else { self.weight * WEIGHT_STEPS };
        w.max(1)
    }
}

/// Panic mode: too few of a service's backends are usable, so traffic spreads over every backend
/// that is not gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panic {
    /// Usable backends.
    pub usable: usize,
    /// Backends that are not drained or removed.
    pub total: usize,
}

impl std::fmt::Display for Panic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "panic: {} of {} usable", self.usable, self.total)
    }
}

/// An immutable snapshot of all backends, sorted by id.
#[derive(Debug, Clone, Default)]
pub struct BackendSet {
    /// The backends, sorted by id so that every consumer sees the same order.
    pub backends: Vec<BackendView>,
    /// Increases with every published change.
    pub generation: u64,
    /// Set while the service is in panic mode.
    pub panic: Option<Panic>,
}

impl BackendSet {
    /// Backends that may get new traffic outside panic mode, in id order.
    pub fn eligible(&self) -> impl Iterator<Item = &BackendView> {
        self.backends.iter().filter(|b| b.eligible())
    }

    /// The backends new traffic goes to: the usable ones, or in panic mode every backend that is
    /// not gone. Both data planes select among exactly these.
    pub fn serving(&self) -> impl Iterator<Item = &BackendView> {
        let panic = self.panic.is_some();
        self.backends.iter().filter(move |b| if panic { !b.state.gone() } else { b.eligible() })
    }

    /// Finds a backend by id.
    pub fn get(&self, id: &str) -> Option<&BackendView> {
        self.backends.iter().find(|b| &*b.backend.id == id)
    }
}

/// Whether a service with these backends is in panic mode at `threshold` percent: fewer than that
/// share of the backends that are not gone (and have had a first verdict) are usable. A threshold
/// of 0 never panics, so a service without a usable backend rejects (503, or dropped packets on
/// the eBPF data plane). Backends not probed yet do not count, so a starting agent does not panic.
pub fn panic_at(backends: &[BackendView], threshold: u32) -> Option<Panic> {
    let total = backends.iter().filter(|b| !b.state.gone() && b.state != State::Unknown).count();
    let usable = backends.iter().filter(|b| b.eligible()).count();
    (total > 0 && (usable as u64) * 100 < u64::from(threshold) * total as u64).then_some(Panic { usable, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(states: &[State]) -> Vec<BackendView> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let addr = SocketAddr::from(([10, 0, 0, i as u8 + 1], 80));
                let mut v = BackendView::probed(Arc::new(Backend::new(addr)), 1, Health::Healthy);
                v.state = *s;
                v
            })
            .collect()
    }

    #[test]
    fn how_a_backend_is_reached_keeps_each_setting_apart() {
        let b = Backend::new(SocketAddr::from(([10, 0, 0, 1], 443)));
        assert_eq!((b.proxy(), b.is_tls(), b.is_h2()), (None, false, false));
        b.set_proxy(Some(ProxyProtocol::V2));
        b.set_tls(Some("api.internal".into()));
        b.set_h2(true);
        assert_eq!((b.proxy(), b.is_tls(), b.is_h2()), (Some(ProxyProtocol::V2), true, true));
        assert_eq!(b.tls().as_deref().map(String::as_str), Some("api.internal"));
        b.set_proxy(Some(ProxyProtocol::V1));
        b.set_tls(None);
        assert_eq!((b.proxy(), b.is_tls(), b.is_h2(), b.tls()), (Some(ProxyProtocol::V1), false, true, None));
        b.set_h2(false);
        b.set_proxy(None);
        assert_eq!((b.proxy(), b.is_tls(), b.is_h2()), (None, false, false));
    }

    #[test]
    fn panic_engages_below_the_threshold_and_ignores_gone_backends() {
        use State::*;
        assert_eq!(panic_at(&views(&[Healthy, Healthy, Unhealthy, Ejected]), 50), None, "2 of 4 is not below 50 %");
        assert_eq!(
            panic_at(&views(&[Healthy, Unhealthy, Unhealthy, Ejected]), 50),
            Some(Panic { usable: 1, total: 4 })
        );
        assert_eq!(panic_at(&views(&[Healthy, Unhealthy, Draining, Removed]), 50), None, "gone ones do not count");
        assert_eq!(panic_at(&views(&[Unhealthy, Unhealthy]), 0), None, "0 % never panics");
        assert_eq!(panic_at(&views(&[Unhealthy, Unhealthy]), 1), Some(Panic { usable: 0, total: 2 }));
        assert_eq!(panic_at(&views(&[Draining]), 100), None, "nothing to spread over");
        assert_eq!(panic_at(&views(&[Unknown, Unknown]), 100), None, "not probed yet");
        assert_eq!(panic_at(&views(&[SlowStart, Probation, Unhealthy]), 50), None, "slow start and probation serve");
        let set = BackendSet {
            backends: views(&[Healthy, Unhealthy, Draining]),
            generation: 1,
            panic: Some(Panic { usable: 1, total: 2 }),
        };
        assert_eq!(set.serving().count(), 2, "panic spreads over all that are not gone");
        assert_eq!(Panic { usable: 1, total: 4 }.to_string(), "panic: 1 of 4 usable");
    }

    #[test]
    fn the_probation_gate_admits_one_request() {
        let b = Backend::new(SocketAddr::from(([10, 0, 0, 1], 80)));
        assert!(b.admit() && b.admit(), "open by default");
        b.arm_probation();
        assert!(b.admit());
        assert!(!b.admit() && !b.admit(), "only one on probation");
        b.open_gate();
        assert!(b.admit());
    }
}
