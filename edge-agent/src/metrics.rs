//! Prometheus metrics: every family the agent exports, with the `edge_` prefix and base units.
//!
//! Label sets are bounded: backend address, state, strategy, reason — never a client address.
//! The data path never touches a `Family` (whose map sits behind a lock): each backend resolves its
//! handles once, into [`BackendMetrics`], and the request path only does atomic increments.
//!
//! Several services share one registry. Per-backend series are labelled by backend address only,
//! so a backend address that two services list is counted together (one set of series, the state
//! gauge showing the last change from either); its series stay until the last service forgets it.
//! `ready` is 1 once every service's monitor is ready.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::State;
use crate::histogram::AtomicHistogram;

/// Labels: one backend.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabel {
    /// `ip:port`.
    pub backend: String,
}

/// Labels: backend and HTTP status class.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `ip:port`, or `none` when no backend was available.
    pub backend: String,
    /// `1xx`..`5xx`.
    pub class: &'static str,
}

/// Labels: backend and state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `ip:port`.
    pub backend: String,
    /// unknown, healthy, unhealthy, draining.
    pub state: &'static str,
}

/// Labels: backend and a result or direction.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendKindLabels {
    /// `ip:port`.
    pub backend: String,
    /// The kind: `success`/`failure` for probes, `rx`/`tx` for bytes, an error kind for errors.
    pub kind: &'static str,
}

/// Labels: a reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// Labels: strategy and hash key.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StrategyLabels {
    /// Strategy name.
    pub strategy: String,
    /// Hash key (empty unless consistent hashing).
    pub hash_key: String,
}

/// Labels: data-plane mode.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    /// `userspace` or `ebpf`.
    pub mode: &'static str,
}

/// Labels: a discovery source.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `static`, `file`, ...
    pub source: String,
}

/// Labels: a listener protocol.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// `http`, `https` or `tcp`.
    pub listener: &'static str,
}

type HistFamily = Family<BackendLabel, AtomicHistogram>;

/// All metric families, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by backend and status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Request duration by backend, from request head to response head.
    pub request_duration: HistFamily,
    /// One-hot backend state.
    pub backend_state: Family<StateLabels, Gauge>,
    /// Backend weight.
    pub backend_weight: Family<BackendLabel, Gauge>,
    /// Probe results.
    pub health_checks: Family<BackendKindLabels, Counter>,
    /// Probe duration.
    pub health_check_duration: HistFamily,
    /// State transitions by target state.
    pub transitions: Family<BackendKindLabels, Counter>,
    /// In-flight requests and TCP connections per backend.
    pub active: Family<BackendLabel, Gauge>,
    /// TCP-mode bytes per backend and direction (rx = from the backend, tx = to the backend).
    pub tcp_bytes: Family<BackendKindLabels, Counter>,
    /// TCP-mode connections per backend.
    pub tcp_connections: Family<BackendLabel, Counter>,
    /// Upstream errors per backend and kind.
    pub upstream_errors: Family<BackendKindLabels, Counter>,
    /// Upstream attempts retried, by reason (`connect`: refused or timed-out connect, always safe;
    /// `empty_response`: an idempotent bodyless request whose connection closed before any answer).
    pub retries: Family<ReasonLabel, Counter>,
    /// Current strategy (value 1).
    pub strategy_info: Family<StrategyLabels, Gauge>,
    /// Strategy switches.
    pub strategy_switches: Counter,
    /// Data-plane mode (value 1 for the active one).
    pub dataplane_mode: Family<ModeLabel, Gauge>,
    /// Whether the eBPF probe succeeded.
    pub ebpf_capable: Gauge,
    /// Discovery updates applied, by source.
    pub discovery_updates: Family<SourceLabel, Counter>,
    /// Discovery errors, by source.
    pub discovery_errors: Family<SourceLabel, Counter>,
    /// Requests or connections that found no eligible backend, by outcome.
    pub no_backend: Family<ReasonLabel, Counter>,
    /// Client-side protocol errors answered by the proxy (400, 408, 431, TLS handshake).
    pub client_errors: Family<ReasonLabel, Counter>,
    /// Accepted client connections per listener kind.
    pub connections: Family<ListenerLabel, Counter>,
    /// Open client connections per listener kind.
    pub open_connections: Family<ListenerLabel, Gauge>,
    /// Whether the agent is ready (first discovery and probe round done).
    pub ready: Gauge,
    /// eBPF conntrack flows per backend that are not closing (from the last conntrack sweep).
    pub ebpf_flows: Family<BackendLabel, Gauge>,
    /// eBPF conntrack entries removed by the agent's sweep, by reason.
    pub ebpf_expired: Family<ReasonLabel, Counter>,
    /// Maglev tables written to the kernel.
    pub ebpf_table_swaps: Counter,
    /// Monitors sharing this registry, and how many of them are ready.
    readiness: Mutex<(usize, usize)>,
    /// How many monitors (services) hold each backend's handles.
    backend_users: Mutex<HashMap<String, usize>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("edge");
        let m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: HistFamily::new_with_constructor(AtomicHistogram::latency),
            backend_state: Family::default(),
            backend_weight: Family::default(),
            health_checks: Family::default(),
            health_check_duration: HistFamily::new_with_constructor(AtomicHistogram::latency),
            transitions: Family::default(),
            active: Family::default(),
            tcp_bytes: Family::default(),
            tcp_connections: Family::default(),
            upstream_errors: Family::default(),
            retries: Family::default(),
            strategy_info: Family::default(),
            strategy_switches: Counter::default(),
            dataplane_mode: Family::default(),
            ebpf_capable: Gauge::default(),
            discovery_updates: Family::default(),
            discovery_errors: Family::default(),
            no_backend: Family::default(),
            client_errors: Family::default(),
            connections: Family::default(),
            open_connections: Family::default(),
            ready: Gauge::default(),
            ebpf_flows: Family::default(),
            ebpf_expired: Family::default(),
            ebpf_table_swaps: Counter::default(),
            readiness: Mutex::default(),
            backend_users: Mutex::default(),
        };
        r.register("requests", "HTTP requests by backend and status class", m.requests.clone());
        r.register_with_unit(
            "request_duration",
            "Time from request head to response head, by backend",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register("backend_state", "Backend state, one-hot", m.backend_state.clone());
        r.register("backend_weight", "Backend weight", m.backend_weight.clone());
        r.register("health_checks", "Health probe results by backend", m.health_checks.clone());
        r.register_with_unit(
            "health_check_duration",
            "Health probe duration by backend",
            Unit::Seconds,
            m.health_check_duration.clone(),
        );
        r.register("backend_transitions", "Backend state transitions by new state", m.transitions.clone());
        r.register(
            "backend_active_connections",
            "In-flight HTTP requests and open TCP connections per backend",
            m.active.clone(),
        );
        r.register_with_unit(
            "tcp",
            "Bytes proxied in TCP mode per backend; rx from the backend, tx to it",
            Unit::Bytes,
            m.tcp_bytes.clone(),
        );
        r.register("tcp_connections", "TCP-mode connections per backend", m.tcp_connections.clone());
        r.register("upstream_errors", "Upstream failures by backend and kind", m.upstream_errors.clone());
        r.register("upstream_retries", "Upstream attempts retried, by reason", m.retries.clone());
        r.register("strategy", "Current selection strategy", m.strategy_info.clone());
        r.register("strategy_switches", "Strategy switches at run time", m.strategy_switches.clone());
        r.register("dataplane_mode", "Active data plane", m.dataplane_mode.clone());
        r.register("ebpf_capable", "1 when this host can load and attach the eBPF program", m.ebpf_capable.clone());
        r.register("discovery_updates", "Discovery updates by source", m.discovery_updates.clone());
        r.register("discovery_errors", "Discovery errors by source", m.discovery_errors.clone());
        r.register("no_backend", "Requests or connections with no eligible backend", m.no_backend.clone());
        r.register("client_errors", "Client protocol errors by reason", m.client_errors.clone());
        r.register("connections", "Accepted client connections by listener", m.connections.clone());
        r.register("open_connections", "Open client connections by listener", m.open_connections.clone());
        r.register("ready", "1 once the first discovery and probe round completed", m.ready.clone());
        r.register("ebpf_flows", "eBPF conntrack flows per backend, not closing", m.ebpf_flows.clone());
        r.register(
            "ebpf_expired_flows",
            "eBPF conntrack entries removed by the sweep, by reason",
            m.ebpf_expired.clone(),
        );
        r.register("ebpf_table_swaps", "Maglev tables written and swapped in", m.ebpf_table_swaps.clone());
        Self { registry: root, ..m }
    }

    /// Adds a collector that computes values at scrape time (for example eBPF map counters).
    pub fn register_collector(&mut self, c: Box<dyn prometheus_client::collector::Collector>) {
        self.registry.register_collector(c);
    }

    /// Renders the OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts a new monitor (one per service): the agent is not ready until it is.
    pub fn monitor_started(&self) {
        let mut r = self.readiness.lock().unwrap_or_else(PoisonError::into_inner);
        r.0 += 1;
        self.ready.set(i64::from(r.1 >= r.0));
    }

    /// Counts a monitor that became ready; `ready` turns 1 with the last one.
    pub fn monitor_ready(&self) {
        let mut r = self.readiness.lock().unwrap_or_else(PoisonError::into_inner);
        r.1 += 1;
        self.ready.set(i64::from(r.1 >= r.0));
    }

    /// Resolves a backend's handles; call once per backend and service (a backend several
    /// services list shares one set of series, kept until each of them called `forget_backend`).
    pub fn backend(&self, id: &str) -> BackendMetrics {
        *self.backend_users.lock().unwrap_or_else(PoisonError::into_inner).entry(id.to_string()).or_insert(0) += 1;
        let b = || BackendLabel { backend: id.to_string() };
        let kind = |kind| BackendKindLabels { backend: id.to_string(), kind };
        let class = |class| RequestLabels { backend: id.to_string(), class };
        BackendMetrics {
            requests: Arc::new(STATUS_CLASSES.map(|c| self.requests.get_or_create_owned(&class(c)))),
            duration: self.request_duration.get_or_create_owned(&b()),
            active: self.active.get_or_create_owned(&b()),
            tcp_rx: self.tcp_bytes.get_or_create_owned(&kind("rx")),
            tcp_tx: self.tcp_bytes.get_or_create_owned(&kind("tx")),
            tcp_connections: self.tcp_connections.get_or_create_owned(&b()),
            probe_ok: self.health_checks.get_or_create_owned(&kind("success")),
            probe_fail: self.health_checks.get_or_create_owned(&kind("failure")),
            probe_duration: self.health_check_duration.get_or_create_owned(&b()),
            err_connect: self.upstream_errors.get_or_create_owned(&kind("connect")),
            err_timeout: self.upstream_errors.get_or_create_owned(&kind("timeout")),
            err_reset: self.upstream_errors.get_or_create_owned(&kind("reset")),
        }
    }

    /// Drops a removed backend's series so that label sets stay bounded, unless another service
    /// still lists the same address.
    pub fn forget_backend(&self, id: &str) {
        {
            let mut users = self.backend_users.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = users.get_mut(id) {
                *n = n.saturating_sub(1);
                if *n > 0 {
                    return;
                }
                users.remove(id);
            }
        }
        let b = BackendLabel { backend: id.to_string() };
        for c in STATUS_CLASSES {
            self.requests.remove(&RequestLabels { backend: id.to_string(), class: c });
        }
        for s in State::ALL {
            self.backend_state.remove(&StateLabels { backend: id.to_string(), state: s.as_str() });
        }
        for k in ["success", "failure"] {
            self.health_checks.remove(&BackendKindLabels { backend: id.to_string(), kind: k });
        }
        for k in ["rx", "tx"] {
            self.tcp_bytes.remove(&BackendKindLabels { backend: id.to_string(), kind: k });
        }
        for k in ["connect", "timeout", "reset"] {
            self.upstream_errors.remove(&BackendKindLabels { backend: id.to_string(), kind: k });
        }
        for k in State::ALL {
            self.transitions.remove(&BackendKindLabels { backend: id.to_string(), kind: k.as_str() });
        }
        self.request_duration.remove(&b);
        self.health_check_duration.remove(&b);
        self.active.remove(&b);
        self.tcp_connections.remove(&b);
        self.backend_weight.remove(&b);
    }

    /// Retries for `reason` so far.
    pub fn retries(&self, reason: &'static str) -> u64 {
        self.retries.get_or_create(&ReasonLabel { reason }).get()
    }

    /// Sets a backend's one-hot state gauge.
    pub fn set_state(&self, id: &str, state: State) {
        for s in State::ALL {
            let l = StateLabels { backend: id.to_string(), state: s.as_str() };
            self.backend_state.get_or_create(&l).set(i64::from(s == state));
        }
    }
}

/// Status classes, indexed by `status / 100 - 1`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Index into [`STATUS_CLASSES`] for a status code.
pub fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// One backend's metric handles; clones share the counters.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    /// Requests by status class.
    pub requests: Arc<[Counter; 5]>,
    /// Request duration.
    pub duration: AtomicHistogram,
    /// In-flight requests and open TCP connections (also least-connections' load).
    pub active: Gauge,
    /// TCP bytes from the backend.
    pub tcp_rx: Counter,
    /// TCP bytes to the backend.
    pub tcp_tx: Counter,
    /// TCP connections.
    pub tcp_connections: Counter,
    /// Passed probes.
    pub probe_ok: Counter,
    /// Failed probes.
    pub probe_fail: Counter,
    /// Probe duration.
    pub probe_duration: AtomicHistogram,
    /// Connect failures.
    pub err_connect: Counter,
    /// Upstream timeouts.
    pub err_timeout: Counter,
    /// Upstream resets and protocol errors.
    pub err_reset: Counter,
}

impl BackendMetrics {
    /// Handles not registered anywhere, for tests and tools.
    pub fn detached() -> Self {
        Self {
            requests: Arc::new(Default::default()),
            duration: AtomicHistogram::latency(),
            active: Gauge::default(),
            tcp_rx: Counter::default(),
            tcp_tx: Counter::default(),
            tcp_connections: Counter::default(),
            probe_ok: Counter::default(),
            probe_fail: Counter::default(),
            probe_duration: AtomicHistogram::latency(),
            err_connect: Counter::default(),
            err_timeout: Counter::default(),
            err_reset: Counter::default(),
        }
    }

    /// Total requests over all classes.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().map(Counter::get).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_prefix_and_units() {
        let m = Metrics::new();
        let b = m.backend("10.0.0.1:80");
        b.requests[class_index(204)].inc();
        b.tcp_rx.inc_by(10);
        m.set_state("10.0.0.1:80", State::Healthy);
        let out = m.render();
        assert!(out.contains("edge_requests_total{backend=\"10.0.0.1:80\",class=\"2xx\"} 1"), "{out}");
        assert!(out.contains("edge_tcp_bytes_total{backend=\"10.0.0.1:80\",kind=\"rx\"} 10"), "{out}");
        assert!(out.contains("edge_backend_state{backend=\"10.0.0.1:80\",state=\"healthy\"} 1"), "{out}");
        assert!(out.contains("edge_request_duration_seconds_bucket"), "{out}");
        m.forget_backend("10.0.0.1:80");
        assert!(!m.render().contains("10.0.0.1:80"));
    }

    #[test]
    fn shared_backend_series_stay_until_the_last_user_forgets() {
        let m = Metrics::new();
        let (a, b) = (m.backend("10.0.0.1:80"), m.backend("10.0.0.1:80"));
        a.tcp_rx.inc_by(3);
        b.tcp_rx.inc_by(4);
        m.forget_backend("10.0.0.1:80");
        assert!(m.render().contains("edge_tcp_bytes_total{backend=\"10.0.0.1:80\",kind=\"rx\"} 7"), "counted together");
        m.forget_backend("10.0.0.1:80");
        assert!(!m.render().contains("10.0.0.1:80"));
    }

    #[test]
    fn ready_waits_for_every_monitor() {
        let m = Metrics::new();
        m.monitor_started();
        m.monitor_started();
        m.monitor_ready();
        assert_eq!(m.ready.get(), 0);
        m.monitor_ready();
        assert_eq!(m.ready.get(), 1);
    }

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[class_index(101)], "1xx");
        assert_eq!(STATUS_CLASSES[class_index(503)], "5xx");
        assert_eq!(STATUS_CLASSES[class_index(999)], "5xx");
    }
}
