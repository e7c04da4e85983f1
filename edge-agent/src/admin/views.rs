//! JSON shapes of the admin API.

use std::time::{Duration, SystemTime};

use std::collections::BTreeMap;

use edge_core::backend::{BackendSet, BackendView, Health, ProbeSummary, State, StatusClass, WEIGHT_STEPS};
use edge_core::health::Event;
use edge_core::histogram::Snapshot;
use edge_dataplane::{DataplaneStats, Expiry};
use serde::Serialize;

use crate::kernel::{BackendCounters, KernelView, ServiceCounters};
use crate::plane::DataplaneStatus;

/// The last probe of a backend.
#[derive(Debug, Serialize)]
pub struct ProbeJson {
    /// Whether it passed.
    pub passed: bool,
    /// What happened, e.g. `connect refused` or `http 503`.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
    /// When it finished, in seconds since the Unix epoch.
    pub at: f64,
}

impl From<&ProbeSummary> for ProbeJson {
    fn from(p: &ProbeSummary) -> Self {
        Self { passed: p.passed, detail: p.detail.clone(), duration_ms: millis(p.duration), at: epoch_secs(p.at) }
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn epoch_secs(t: SystemTime) -> f64 {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    (secs * 1e3).round() / 1e3
}

/// One backend in `GET /admin/backends`.
#[derive(Debug, Serialize)]
pub struct BackendJson {
    /// Id (`ip:port`), used in `/admin/backends/{id}/drain`.
    pub id: String,
    /// Address.
    pub address: String,
    /// Weight.
    pub weight: u32,
    /// The weight selection uses now, in percent of `weight` (lower in slow start and on
    /// probation).
    pub weight_percent: u32,
    /// State operators see.
    pub state: State,
    /// Why it is in this state, with the evidence.
    pub reason: String,
    /// Probe health underneath.
    pub health: Health,
    /// Drained by an operator.
    pub drained: bool,
    /// Removed by discovery, finishing its traffic.
    pub removed: bool,
    /// Whether it gets new traffic.
    pub eligible: bool,
    /// In-flight requests and open TCP connections.
    pub active: i64,
    /// Requests answered, all classes.
    pub requests: u64,
    /// Requests answered, by status class (`1xx` to `5xx`), since start.
    pub responses: BTreeMap<&'static str, u64>,
    /// Time from request head to response head since start, as a histogram.
    pub latency: LatencyJson,
    /// Consecutive verdicts toward the next flip.
    pub streak: u32,
    /// The last probe.
    pub last_probe: Option<ProbeJson>,
    /// Seconds since the Unix epoch when the state last changed.
    pub since: f64,
    /// Seconds since the Unix epoch when the next probe starts.
    pub next_probe: Option<f64>,
    /// Times ejected (decays by one per base ejection time of sustained health).
    pub ejections: u32,
    /// Seconds since the Unix epoch when the current ejection ends.
    pub ejected_until: Option<f64>,
    /// Slow start's progress, 0 to 1, while in slow start.
    pub slow_start: Option<f64>,
    /// Gateway failures in a row, as outlier detection counts them.
    pub consecutive_failures: u32,
    /// In eBPF mode, why the data plane cannot reach it (absent when it can).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

/// A latency histogram in the admin API: a client takes the difference of two readings to get
/// the rate and the quantiles of an interval, as Prometheus does.
#[derive(Debug, Serialize)]
pub struct LatencyJson {
    /// Each bucket's upper bound in seconds; the last is null, for +Inf.
    pub le: Vec<Option<f64>>,
    /// The observations in each bucket alone (not cumulative).
    pub counts: Vec<u64>,
    /// The sum of every observation, in seconds.
    pub sum_seconds: f64,
}

impl From<Snapshot> for LatencyJson {
    fn from(s: Snapshot) -> Self {
        Self {
            le: s.per_bucket.iter().map(|(le, _)| le.is_finite().then_some(*le)).collect(),
            counts: s.per_bucket.iter().map(|(_, n)| *n).collect(),
            sum_seconds: s.sum_seconds,
        }
    }
}

/// `GET /admin/dataplane`: what the kernel counted (eBPF mode; empty in userspace mode).
#[derive(Debug, Serialize)]
pub struct DataplaneJson {
    /// `ebpf` or `userspace`.
    pub mode: &'static str,
    /// Per service: packets, bytes and new flows steered.
    pub services: Vec<ServiceCounters>,
    /// Per backend: packets, bytes and new flows steered, and live flows.
    pub backends: Vec<KernelBackendJson>,
    /// Packets dropped, by reason.
    pub drops: BTreeMap<&'static str, u64>,
    /// Packets seen, by what happened to them.
    pub events: BTreeMap<&'static str, u64>,
    /// Conntrack entries the sweep removed, by reason.
    pub expired: BTreeMap<&'static str, u64>,
    /// Maglev tables written and swapped in.
    pub table_swaps: u64,
}

/// One backend in `GET /admin/dataplane`.
#[derive(Debug, Serialize)]
pub struct KernelBackendJson {
    /// The kernel's counters.
    #[serde(flatten)]
    pub counters: BackendCounters,
    /// Live flows (not closing), as of the last conntrack sweep.
    pub flows: u64,
}

impl DataplaneJson {
    /// From the dataplane actor's counters and the kernel's, when the eBPF data plane runs.
    pub fn new(mode: &'static str, stats: Option<&DataplaneStats>, kernel: Option<KernelView>) -> Self {
        let k = kernel.unwrap_or_default();
        let flows = stats.map(|s| s.flows()).unwrap_or_default();
        let backends = k
            .backends
            .into_iter()
            .map(|counters| {
                let live = flows
                    .iter()
                    .find(|f| f.service == counters.service && f.backend == counters.backend)
                    .map_or(0, |f| f.flows);
                KernelBackendJson { counters, flows: live }
            })
            .collect();
        Self {
            mode,
            services: k.services,
            backends,
            drops: k
                .events
                .iter()
                .filter(|(_, d, _)| *d)
                .map(|(e, _, n)| (e.trim_start_matches("drop_"), *n))
                .collect(),
            events: k.events.iter().map(|(e, _, n)| (*e, *n)).collect(),
            expired: stats
                .map(|s| Expiry::ALL.iter().map(|r| (r.as_str(), s.expirations(*r))).collect())
                .unwrap_or_default(),
            table_swaps: stats.map_or(0, DataplaneStats::table_swaps),
        }
    }
}

impl BackendJson {
    /// With the data plane's verdict on reaching it (eBPF mode).
    pub fn with_reach(mut self, stats: Option<&edge_dataplane::DataplaneStats>) -> Self {
        self.unreachable =
            stats.and_then(|s| s.unreachable().iter().find(|u| u.backend == self.address).map(|u| u.reason.clone()));
        self
    }
}

impl From<&BackendView> for BackendJson {
    fn from(b: &BackendView) -> Self {
        Self {
            id: b.id().to_string(),
            address: b.backend.addr.to_string(),
            weight: b.weight,
            weight_percent: if b.eligible() { b.effective_weight * 100 / b.weight.max(1) / WEIGHT_STEPS } else { 0 },
            state: b.state(),
            reason: b.reason.clone(),
            health: b.health,
            drained: b.drained,
            removed: b.removed,
            eligible: b.eligible(),
            active: b.backend.stats.active(),
            requests: b.backend.stats.total_requests(),
            responses: StatusClass::ALL.iter().map(|c| (c.as_str(), b.backend.stats.requests(*c))).collect(),
            latency: LatencyJson::from(b.backend.stats.duration.snapshot()),
            streak: b.streak,
            last_probe: b.last_probe.as_ref().map(ProbeJson::from),
            since: unix(b.since),
            next_probe: b.next_probe.get().map(unix),
            ejections: b.ejections,
            ejected_until: b.ejected_until.map(unix),
            slow_start: b.slow_start.map(|p| (p * 1000.0).round() / 1000.0),
            consecutive_failures: b.backend.stats.passive().consecutive,
            unreachable: None,
        }
    }
}

/// `GET|PUT /admin/strategy`.
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyJson {
    /// round-robin, least-connections or consistent-hash.
    pub strategy: String,
    /// The hash key in force (responses), or the one to use (requests; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
}

/// One service in `GET /admin/services`.
#[derive(Debug, Serialize)]
pub struct ServiceJson {
    /// Its name, for `?service=NAME`.
    pub name: String,
    /// Its VIP (`IPV4:PORT[/udp]`), if any.
    pub vip: Option<String>,
    /// Whether its first discovery and probe round is done.
    pub ready: bool,
    /// Its strategy.
    pub strategy: StrategyJson,
    /// The userspace listeners serving it (none when only the eBPF data plane does).
    pub listeners: Vec<String>,
    /// Its discovery sources, in start order, with how fresh each one's list is.
    pub sources: Vec<SourceJson>,
    /// Its backends, as in `GET /admin/backends`.
    pub backends: Vec<BackendJson>,
}

/// One discovery source of a service in `GET /admin/services`.
#[derive(Debug, Serialize)]
pub struct SourceJson {
    /// `static`, `file`, `consul` or `dns`.
    pub source: &'static str,
    /// Updates applied.
    pub updates: u64,
    /// Errors that left the last good list in force.
    pub errors: u64,
    /// When it last heard from its origin (seconds since the Unix epoch), or null if never.
    pub last_success: Option<f64>,
    /// Seconds since then (how stale its list may be), or null if never.
    pub stale_seconds: Option<f64>,
}

impl SourceJson {
    /// A source's counters.
    pub fn new(s: &edge_core::discovery::SourceStats) -> Self {
        let last = s.last_success();
        Self {
            source: s.name,
            updates: s.updates(),
            errors: s.errors(),
            last_success: last.map(unix),
            stale_seconds: last.map(|t| (t.elapsed().unwrap_or_default().as_secs_f64() * 1e3).round() / 1e3),
        }
    }
}

/// Seconds since the Unix epoch, to the millisecond.
pub fn unix(t: SystemTime) -> f64 {
    let s = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    (s * 1e3).round() / 1e3
}

/// Counts of backends by state.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    /// All known backends.
    pub total: usize,
    /// Each state's count, by the state's name.
    #[serde(flatten)]
    pub by_state: std::collections::BTreeMap<&'static str, usize>,
}

impl Counts {
    /// Counts a set's backends.
    pub fn of(set: &BackendSet) -> Self {
        let mut by_state: std::collections::BTreeMap<&'static str, usize> =
            State::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for b in &set.backends {
            *by_state.entry(b.state().as_str()).or_default() += 1;
        }
        Self { total: set.backends.len(), by_state }
    }
}

/// One entry of `GET /admin/events`.
#[derive(Debug, Serialize)]
pub struct EventJson {
    /// Seconds since the Unix epoch.
    pub at: f64,
    /// The service.
    pub service: String,
    /// The backend, or null for a decision about the whole service (panic mode).
    pub backend: Option<String>,
    /// The state before, if any.
    pub from: Option<State>,
    /// The state after, or null for a decision that changed nothing (a refused ejection).
    pub to: Option<State>,
    /// Why, with the evidence; the logs carry the same words.
    pub reason: String,
}

impl EventJson {
    /// One service's event.
    pub fn new(service: &str, e: &Event) -> Self {
        Self {
            at: unix(e.at),
            service: service.to_string(),
            backend: e.backend.as_ref().map(ToString::to_string),
            from: e.from,
            to: e.to,
            reason: e.reason.clone(),
        }
    }
}

/// `GET /admin/state`.
#[derive(Debug, Serialize)]
pub struct StateJson<'a> {
    /// Agent version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Ready for traffic.
    pub ready: bool,
    /// Data plane.
    pub dataplane: &'a DataplaneStatus,
    /// The service the strategy and backend counts are of (`?service=NAME`, else the first).
    pub service: String,
    /// How many services run.
    pub services: usize,
    /// Strategy in force.
    pub strategy: StrategyJson,
    /// HTTP listeners.
    pub listen: Vec<String>,
    /// TCP listeners.
    pub listen_tcp: Vec<String>,
    /// Whether HTTP listeners terminate TLS.
    pub tls: bool,
    /// Backends by state.
    pub backends: Counts,
    /// Set while the service is in panic mode, e.g. `panic: 1 of 4 usable`.
    pub panic: Option<String>,
    /// Snapshot generation (increases with every backend change).
    pub generation: u64,
    /// The ECS task (cluster, task ARN, availability zone, ...), or null outside ECS.
    pub ecs: Option<&'a crate::ecs::Task>,
}
