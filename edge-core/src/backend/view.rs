//! The state snapshot: what the health monitor publishes on every change, and the long-lived
//! handle each backend's traffic updates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{BackendId, BackendStats, Health, State};

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
}

impl Backend {
    /// A backend at `addr` with zeroed counters.
    pub fn new(addr: SocketAddr) -> Self {
        Self { id: addr.to_string().into(), addr, stats: BackendStats::default() }
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
        &self.backend.id
    }

    /// The state operators see.
    pub fn state(&self) -> State {
        State::of(self.health, self.drained || self.removed)
    }

    /// True when it may get new traffic.
    pub fn eligible(&self) -> bool {
        self.state() == State::Healthy
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
        self.backends.iter().find(|b| &*b.backend.id == id)
    }
}
