//! Backends: how operators name them, the handles the data path shares, and the state snapshot.
//!
//! The health monitor owns every backend's state and publishes an immutable [`BackendSet`] on each
//! change; everything downstream (selectors, the eBPF map writer, the admin API) reads snapshots.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::balance::Target;
use crate::health::Health;
pub use crate::metrics::BackendMetrics;

/// A backend's stable id: its `ip:port` (IPv6 in brackets).
pub type BackendId = Arc<str>;

/// Largest accepted weight (HAProxy's range).
pub const MAX_WEIGHT: u32 = 256;

/// Errors in a backend's spelling.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not `HOST:PORT`.
    #[error(
        "backend '{0}' is not HOST:PORT; write it like 10.0.1.2:8080 or [fd00::2]:8080, optionally followed by ,weight=N"
    )]
    Address(String),
    /// The host name did not resolve.
    #[error("backend '{0}' does not resolve to an address; use an IP address or a name this host can resolve")]
    Resolve(String),
    /// Port zero.
    #[error("backend '{0}' has port 0; give the port the backend listens on")]
    Port(String),
    /// Weight out of range or not a number.
    #[error("backend '{0}' has weight '{1}'; use an integer from 1 to 256")]
    Weight(String, String),
    /// An unknown `,key=value` option.
    #[error("backend '{0}' has unknown option '{1}'; the only option is weight=N")]
    Option(String, String),
}

/// A backend as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
pub struct BackendSpec {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Relative weight, 1..=256.
    pub weight: u32,
}

impl BackendSpec {
    /// The backend's id.
    pub fn id(&self) -> BackendId {
        self.addr.to_string().into()
    }

    /// Parses `HOST:PORT[,weight=N]`. Host names are resolved once, here, to their first address
    /// (IPv4 preferred), as HAProxy does at start.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        let mut parts = s.split(',');
        let addr_part = parts.next().unwrap_or_default().trim();
        let mut weight = 1;
        for opt in parts {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            match k.trim() {
                "weight" => {
                    weight = v
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|w| (1..=MAX_WEIGHT).contains(w))
                        .ok_or_else(|| SpecError::Weight(s.to_string(), v.trim().to_string()))?;
                }
                other => return Err(SpecError::Option(s.to_string(), other.to_string())),
            }
        }
        let addr = parse_addr(addr_part).map_err(|e| match e {
            AddrError::Syntax => SpecError::Address(s.to_string()),
            AddrError::Resolve => SpecError::Resolve(s.to_string()),
        })?;
        if addr.port() == 0 {
            return Err(SpecError::Port(s.to_string()));
        }
        Self::checked(addr, weight).map_err(|_| SpecError::Weight(s.to_string(), weight.to_string()))
    }

    /// Builds a spec, checking the weight.
    pub fn checked(addr: SocketAddr, weight: u32) -> Result<Self, SpecError> {
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(SpecError::Weight(addr.to_string(), weight.to_string()));
        }
        Ok(Self { addr, weight })
    }
}

enum AddrError {
    Syntax,
    Resolve,
}

/// Parses an `ip:port` literal, or resolves `host:port`.
fn parse_addr(s: &str) -> Result<SocketAddr, AddrError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = s.rsplit_once(':').ok_or(AddrError::Syntax)?;
    if host.is_empty() || port.parse::<u16>().is_err() || host.contains(['/', ' ', '[', ']']) {
        return Err(AddrError::Syntax);
    }
    let addrs: Vec<SocketAddr> = s.to_socket_addrs().map_err(|_| AddrError::Resolve)?.collect();
    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied().ok_or(AddrError::Resolve)
}

/// Handles that outlive state snapshots: the metrics a backend's traffic updates.
#[derive(Debug)]
pub struct BackendShared {
    /// The backend's id.
    pub id: BackendId,
    /// Its address.
    pub addr: SocketAddr,
    /// Its address as an HTTP authority, computed once for the request path.
    pub authority: http::uri::Authority,
    /// Counters and gauges (shared with the registry).
    pub metrics: BackendMetrics,
}

impl BackendShared {
    /// Handles for a backend at `addr`.
    pub fn new(addr: SocketAddr, metrics: BackendMetrics) -> Self {
        Self { id: addr.to_string().into(), addr, authority: crate::proxy::http::authority_of(addr), metrics }
    }
}

/// The state operators see: health, overridden by draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not probed yet; no traffic.
    Unknown,
    /// Passing; gets traffic.
    Healthy,
    /// Failing; no new traffic.
    Unhealthy,
    /// Drained by an operator or removed by discovery: no new traffic, existing traffic finishes.
    Draining,
}

impl State {
    /// Every state, for one-hot metrics.
    pub const ALL: [State; 4] = [State::Unknown, State::Healthy, State::Unhealthy, State::Draining];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Draining => "draining",
        }
    }
}

/// The last probe's outcome, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeSummary {
    /// Whether it passed.
    pub passed: bool,
    /// What happened, e.g. `connect refused` or `http 503`.
    pub detail: String,
    /// How long it took.
    #[serde(serialize_with = "ser_duration_ms", rename = "duration_ms")]
    pub duration: Duration,
    /// When it finished.
    #[serde(serialize_with = "ser_time")]
    pub at: SystemTime,
}

fn ser_duration_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    s.serialize_f64((secs * 1e3).round() / 1e3)
}

/// One backend in a snapshot.
#[derive(Debug, Clone)]
pub struct BackendView {
    /// Shared handles.
    pub shared: Arc<BackendShared>,
    /// Relative weight.
    pub weight: u32,
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
}

impl BackendView {
    /// The id.
    pub fn id(&self) -> &BackendId {
        &self.shared.id
    }

    /// The state operators see.
    pub fn state(&self) -> State {
        if self.drained || self.removed {
            State::Draining
        } else {
            match self.health {
                Health::Unknown => State::Unknown,
                Health::Healthy => State::Healthy,
                Health::Unhealthy => State::Unhealthy,
            }
        }
    }

    /// True when it may get new traffic.
    pub fn eligible(&self) -> bool {
        self.state() == State::Healthy
    }

    /// The selector's view of it.
    pub fn target(&self) -> Target {
        Target { id: self.shared.id.clone(), addr: self.shared.addr, weight: self.weight, shared: self.shared.clone() }
    }
}

/// An immutable snapshot of all backends, sorted by id.
#[derive(Debug, Clone, Default)]
pub struct BackendSet {
    /// The backends, sorted by id so that every consumer sees the same order.
    pub backends: Vec<BackendView>,
    /// Increases with every published change.
    pub generation: u64,
}

impl BackendSet {
    /// Backends that may get new traffic, in id order.
    pub fn eligible(&self) -> impl Iterator<Item = &BackendView> {
        self.backends.iter().filter(|b| b.eligible())
    }

    /// Finds a backend by id.
    pub fn get(&self, id: &str) -> Option<&BackendView> {
        self.backends.iter().find(|b| &*b.shared.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_weights() {
        let b = BackendSpec::parse("10.0.1.2:8080").unwrap();
        assert_eq!((b.addr.to_string().as_str(), b.weight), ("10.0.1.2:8080", 1));
        let b = BackendSpec::parse(" [fd00::2]:80 , weight=7 ").unwrap();
        assert_eq!((b.addr.to_string().as_str(), b.weight), ("[fd00::2]:80", 7));
        let b = BackendSpec::parse("localhost:9000").unwrap();
        assert_eq!(b.addr.port(), 9000);
        assert!(b.addr.ip().is_loopback());
    }

    #[test]
    fn rejects_bad_specs_with_the_fix() {
        assert!(matches!(BackendSpec::parse("10.0.1.2"), Err(SpecError::Address(_))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:99999"), Err(SpecError::Address(_))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:0"), Err(SpecError::Port(_))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:80,weight=0"), Err(SpecError::Weight(..))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:80,weight=257"), Err(SpecError::Weight(..))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:80,weight=x"), Err(SpecError::Weight(..))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:80,backup"), Err(SpecError::Option(..))));
        assert!(matches!(BackendSpec::parse("no-such-host.invalid:80"), Err(SpecError::Resolve(_))));
        let msg = BackendSpec::parse("10.0.1.2:80,weight=0").unwrap_err().to_string();
        assert!(msg.contains("1 to 256"), "{msg}");
    }
}
