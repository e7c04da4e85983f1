//! Backend selection: the strategies and the immutable selector snapshot the proxy reads.
//!
//! A [`Selector`] is built from the eligible backends whenever the set or the strategy changes and
//! is published through an `ArcSwap` by the balancer actor (`balancer`); the proxy loads it
//! without a lock and calls [`Selector::pick`]. Each strategy implements [`Select`] in its own
//! file; `capability` says which strategies each data plane can carry out, and `key` what a hash
//! key means for one request.

mod balancer;
mod capability;
mod consistent_hash;
mod hash;
mod key;
mod least_conn;
pub mod maglev;
mod round_robin;
mod strategy;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

pub use balancer::{BalancerConfig, BalancerHandle, SwitchError, spawn};
pub use capability::{Plane, Unsupported};
pub use key::request_hash;
pub use strategy::{HashKey, StrategyError, StrategyKind, StrategySpec};

use crate::backend::{Backend, BackendId, BackendSet, BackendView};

/// One backend as a selector sees it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Identity and counters (shared with the snapshot and the metrics exporter).
    pub backend: Arc<Backend>,
    /// Relative weight (1..=256).
    pub weight: u32,
}

impl Target {
    /// Stable id: the backend's `ip:port`.
    pub fn id(&self) -> &BackendId {
        &self.backend.id
    }

    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    /// Requests or connections in flight to this backend.
    pub fn active(&self) -> u64 {
        u64::try_from(self.backend.stats.active()).unwrap_or(0)
    }
}

impl From<&BackendView> for Target {
    fn from(b: &BackendView) -> Self {
        Self { backend: b.backend.clone(), weight: b.weight }
    }
}

/// A selection strategy over a fixed list of targets.
pub trait Select: Send + Sync + fmt::Debug {
    /// Picks a target; `hash` is the request key's hash (ignored by strategies without a key).
    fn pick(&self, hash: u64) -> Option<&Target>;
    /// The targets this selector chooses among.
    fn targets(&self) -> &[Target];
}

/// What to do when no backend is eligible (`--on-no-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBackendPolicy {
    /// Answer 503 (HTTP) or close the connection (TCP).
    Reject,
    /// Spread traffic over every known backend regardless of health, as Envoy's panic mode does:
    /// better a chance of an answer than a certain error when health checks themselves are broken.
    All,
}

/// The immutable selection snapshot: a strategy over the eligible targets.
#[derive(Debug)]
pub struct Selector {
    inner: Box<dyn Select>,
    spec: StrategySpec,
    /// Round robin over all known backends, used only under [`NoBackendPolicy::All`].
    fallback: Option<round_robin::RoundRobin>,
}

/// Where a pick came from, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickSource {
    /// A healthy, non-draining backend chosen by the strategy.
    Strategy,
    /// No backend was eligible; `--on-no-backend all` chose among all known backends.
    Fallback,
}

impl Selector {
    /// Builds a selector for `spec` over the eligible backends of `set`.
    pub fn build(spec: &StrategySpec, set: &BackendSet, table_size: u32, policy: NoBackendPolicy) -> Self {
        let eligible: Vec<Target> = set.eligible().map(Target::from).collect();
        let inner: Box<dyn Select> = match spec.kind {
            StrategyKind::RoundRobin => Box::new(round_robin::RoundRobin::new(eligible)),
            StrategyKind::LeastConnections => Box::new(least_conn::LeastConnections::new(eligible)),
            StrategyKind::ConsistentHash => Box::new(consistent_hash::ConsistentHash::new(eligible, table_size)),
        };
        let fallback = (policy == NoBackendPolicy::All).then(|| {
            round_robin::RoundRobin::new(set.backends.iter().filter(|b| !b.removed).map(Target::from).collect())
        });
        Self { inner, spec: spec.clone(), fallback }
    }

    /// The strategy this selector implements.
    pub fn spec(&self) -> &StrategySpec {
        &self.spec
    }

    /// The key consistent hashing uses; meaningful only when [`Self::needs_hash`] is true.
    pub fn hash_key(&self) -> &HashKey {
        &self.spec.hash_key
    }

    /// True when picks depend on the request's key, so the proxy must hash it.
    pub fn needs_hash(&self) -> bool {
        self.spec.kind == StrategyKind::ConsistentHash
    }

    /// Number of eligible targets.
    pub fn eligible(&self) -> usize {
        self.inner.targets().len()
    }

    /// Picks a target for a request whose key hashes to `hash`.
    pub fn pick(&self, hash: u64) -> Option<(&Target, PickSource)> {
        if let Some(t) = self.inner.pick(hash) {
            return Some((t, PickSource::Strategy));
        }
        self.fallback.as_ref()?.pick(hash).map(|t| (t, PickSource::Fallback))
    }

    /// Picks a target other than `avoid`, for a retry after a failed connect. Returns `None` when
    /// there is no other eligible target.
    pub fn pick_other(&self, hash: u64, avoid: &BackendId) -> Option<(&Target, PickSource)> {
        // Strategies are deterministic per hash for consistent hashing and advance for the others,
        // so a few tries with a perturbed hash find another target when one exists.
        for k in 1..=8u64 {
            let h = hash.wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            match self.pick(h) {
                Some((t, s)) if t.id() != avoid => return Some((t, s)),
                Some(_) => {}
                None => return None,
            }
        }
        let targets = self.inner.targets();
        targets.iter().find(|t| t.id() != avoid).map(|t| (t, PickSource::Strategy))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Test targets with the given weights and zeroed counters.
    pub(crate) fn targets(weights: &[u32]) -> Vec<Target> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let addr: SocketAddr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
                Target { backend: Arc::new(Backend::new(addr)), weight: *w }
            })
            .collect()
    }

    /// Sets a target's in-flight count.
    pub(crate) fn set_active(t: &Target, n: i64) {
        t.backend.stats.active.store(n, std::sync::atomic::Ordering::Relaxed);
    }
}
