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
mod retry;
mod round_robin;
mod strategy;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

pub use balancer::{BalancerConfig, BalancerHandle, SwitchError, spawn};
pub use capability::{Plane, Unsupported};
pub use key::request_hash;
pub use retry::{Backoff, RetryBudget, RetryBudgetConfig};
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
        Self { backend: b.backend.clone(), weight: b.selection_weight() }
    }
}

/// A selection strategy over a fixed list of targets.
pub trait Select: Send + Sync + fmt::Debug {
    /// Picks a target; `hash` is the request key's hash (ignored by strategies without a key).
    fn pick(&self, hash: u64) -> Option<&Target>;
    /// The targets this selector chooses among.
    fn targets(&self) -> &[Target];
}

/// The immutable selection snapshot: a strategy over the backends the set serves (the usable
/// ones, or in panic mode every one that is not gone), weighted by their effective weights.
#[derive(Debug)]
pub struct Selector {
    inner: Box<dyn Select>,
    spec: StrategySpec,
    panic: bool,
}

/// Where a pick came from, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickSource {
    /// A usable backend chosen by the strategy.
    Strategy,
    /// The service is in panic mode: the strategy chose among every backend that is not gone.
    Panic,
}

impl Selector {
    /// Builds a selector for `spec` over the backends `set` serves.
    pub fn build(spec: &StrategySpec, set: &BackendSet, table_size: u32) -> Self {
        let serving: Vec<Target> = set.serving().map(Target::from).collect();
        let inner: Box<dyn Select> = match spec.kind {
            StrategyKind::RoundRobin => Box::new(round_robin::RoundRobin::new(serving)),
            StrategyKind::LeastConnections => Box::new(least_conn::LeastConnections::new(serving)),
            StrategyKind::ConsistentHash => Box::new(consistent_hash::ConsistentHash::new(serving, table_size)),
        };
        Self { inner, spec: spec.clone(), panic: set.panic.is_some() }
    }

    /// True when the service is in panic mode.
    pub fn panic(&self) -> bool {
        self.panic
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
        let source = if self.panic { PickSource::Panic } else { PickSource::Strategy };
        self.inner.pick(hash).map(|t| (t, source))
    }

    /// Picks a target that admits the request (see [`Backend::admit`]: a backend on probation
    /// takes one request only), trying others when the first choice does not.
    pub fn pick_admitted(&self, hash: u64) -> Option<(&Target, PickSource)> {
        let (t, s) = self.pick(hash)?;
        if t.backend.admit() {
            return Some((t, s));
        }
        let avoid = t.id().clone();
        self.pick_other(hash, &avoid).filter(|(t, _)| t.backend.admit())
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
        let source = if self.panic { PickSource::Panic } else { PickSource::Strategy };
        let targets = self.inner.targets();
        targets.iter().find(|t| t.id() != avoid).map(|t| (t, source))
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
