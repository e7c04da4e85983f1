//! Backend selection: the strategies and the immutable selector snapshot the proxy reads.
//!
//! A [`Selector`] is built from the eligible backends whenever the set or the strategy changes and
//! is published through an `ArcSwap`; the proxy loads it without a lock and calls [`Selector::pick`].
//! Each strategy implements [`Select`] in its own file.

pub mod balancer;
pub mod consistent_hash;
pub mod hash;
pub mod least_conn;
pub mod maglev;
pub mod round_robin;
mod strategy;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

pub use strategy::{HashKey, StrategyError, StrategyKind, StrategySpec};

use crate::backend::{BackendId, BackendSet, BackendShared};

/// One backend as a selector sees it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Stable id: the backend's `ip:port`.
    pub id: BackendId,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative weight (1..=256).
    pub weight: u32,
    /// Counters and gauges shared with the metrics registry.
    pub shared: Arc<BackendShared>,
}

impl Target {
    /// Requests or connections in flight to this backend.
    pub fn active(&self) -> u64 {
        u64::try_from(self.shared.metrics.active.get()).unwrap_or(0)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
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
    hash_key: HashKey,
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
    pub fn build(
        spec: &StrategySpec,
        default_key: &HashKey,
        set: &BackendSet,
        table_size: u32,
        policy: NoBackendPolicy,
    ) -> Self {
        let eligible: Vec<Target> = set.eligible().map(|b| b.target()).collect();
        let inner: Box<dyn Select> = match spec.kind {
            StrategyKind::RoundRobin => Box::new(round_robin::RoundRobin::new(eligible)),
            StrategyKind::LeastConnections => Box::new(least_conn::LeastConnections::new(eligible)),
            StrategyKind::ConsistentHash => Box::new(consistent_hash::ConsistentHash::new(eligible, table_size)),
        };
        let fallback = (policy == NoBackendPolicy::All).then(|| {
            round_robin::RoundRobin::new(set.backends.iter().filter(|b| !b.removed).map(|b| b.target()).collect())
        });
        let hash_key = spec.hash_key.clone().unwrap_or_else(|| default_key.clone());
        Self { inner, spec: spec.clone(), hash_key, fallback }
    }

    /// The strategy this selector implements.
    pub fn spec(&self) -> &StrategySpec {
        &self.spec
    }

    /// The key consistent hashing uses; meaningful only when [`Self::needs_hash`] is true.
    pub fn hash_key(&self) -> &HashKey {
        &self.hash_key
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
                Some((t, s)) if &t.id != avoid => return Some((t, s)),
                Some(_) => {}
                None => return None,
            }
        }
        let targets = self.inner.targets();
        targets.iter().find(|t| &t.id != avoid).map(|t| (t, PickSource::Strategy))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::BackendMetrics;

    /// Test targets with the given weights and detached metrics.
    pub(crate) fn targets(weights: &[u32]) -> Vec<Target> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let addr: SocketAddr = format!("10.0.0.{}:80", i + 1).parse().unwrap();
                Target {
                    id: addr.to_string().into(),
                    addr,
                    weight: *w,
                    shared: Arc::new(BackendShared::new(addr, BackendMetrics::detached())),
                }
            })
            .collect()
    }
}
