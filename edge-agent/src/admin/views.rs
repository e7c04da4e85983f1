//! JSON shapes of the admin API.

use std::time::{Duration, SystemTime};

use edge_core::backend::{BackendView, Health, ProbeSummary, State};
use serde::Serialize;

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
    /// State operators see.
    pub state: State,
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
    /// Consecutive verdicts toward the next flip.
    pub streak: u32,
    /// The last probe.
    pub last_probe: Option<ProbeJson>,
    /// Seconds since the Unix epoch when the state last changed.
    pub since: f64,
    /// In eBPF mode, why the data plane cannot reach it (absent when it can).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
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
            state: b.state(),
            health: b.health,
            drained: b.drained,
            removed: b.removed,
            eligible: b.eligible(),
            active: b.backend.stats.active(),
            requests: b.backend.stats.total_requests(),
            streak: b.streak,
            last_probe: b.last_probe.as_ref().map(ProbeJson::from),
            since: b.since.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
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
    /// Its backends, as in `GET /admin/backends`.
    pub backends: Vec<BackendJson>,
}

/// Counts of backends by state.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    /// All known backends.
    pub total: usize,
    /// Healthy and not draining.
    pub healthy: usize,
    /// Failing probes.
    pub unhealthy: usize,
    /// Not probed yet.
    pub unknown: usize,
    /// Draining.
    pub draining: usize,
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
    /// Snapshot generation (increases with every backend change).
    pub generation: u64,
}
