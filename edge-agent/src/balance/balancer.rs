//! The balancer actor: turns backend snapshots and the chosen strategy into the published
//! [`Selector`], and applies run-time strategy switches atomically.
//!
//! It rebuilds only when what selection depends on changed (the eligible backends and their
//! weights, or the strategy), not on every probe, so a Maglev table is rebuilt once per real change.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::{HashKey, NoBackendPolicy, Selector, StrategyKind, StrategySpec};
use crate::backend::BackendSet;
use crate::metrics::{Metrics, StrategyLabels};

/// Settings that do not change at run time.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// Hash key when the strategy spec has none.
    pub default_key: HashKey,
    /// Maglev table size.
    pub table_size: u32,
    /// No-backend policy.
    pub policy: NoBackendPolicy,
    /// Whether `edge_strategy` shows this balancer's strategy. It has no service label (adding one
    /// would change the series every dashboard reads), so only the first service's balancer sets it;
    /// `GET /admin/services` shows every service's strategy.
    pub publish_info: bool,
}

/// A handle to the balancer.
#[derive(Debug, Clone)]
pub struct BalancerHandle {
    selector: Arc<ArcSwap<Selector>>,
    strategy: watch::Receiver<StrategySpec>,
    commands: mpsc::Sender<(StrategySpec, oneshot::Sender<StrategySpec>)>,
    default_key: HashKey,
}

impl BalancerHandle {
    /// The selector the data path reads.
    pub fn selector(&self) -> Arc<ArcSwap<Selector>> {
        self.selector.clone()
    }

    /// The current strategy.
    pub fn strategy(&self) -> StrategySpec {
        self.strategy.borrow().clone()
    }

    /// The hash key in force for `spec`.
    pub fn effective_key(&self, spec: &StrategySpec) -> HashKey {
        spec.hash_key.clone().unwrap_or_else(|| self.default_key.clone())
    }

    /// A receiver that sees every strategy switch.
    pub fn subscribe(&self) -> watch::Receiver<StrategySpec> {
        self.strategy.clone()
    }

    /// Switches strategy; returns the previous one once the new selector is live.
    pub async fn set_strategy(&self, spec: StrategySpec) -> Option<StrategySpec> {
        let (tx, rx) = oneshot::channel();
        self.commands.send((spec, tx)).await.ok()?;
        rx.await.ok()
    }
}

fn selection_key(set: &BackendSet) -> Vec<(Arc<str>, u32)> {
    set.eligible().map(|b| (b.id().clone(), b.weight)).collect()
}

fn all_key(set: &BackendSet) -> Vec<Arc<str>> {
    set.backends.iter().filter(|b| !b.removed).map(|b| b.id().clone()).collect()
}

fn record_strategy(metrics: &Metrics, spec: &StrategySpec, key: &HashKey) {
    metrics.strategy_info.clear();
    let hash_key = if spec.kind == StrategyKind::ConsistentHash { key.to_string() } else { String::new() };
    metrics.strategy_info.get_or_create(&StrategyLabels { strategy: spec.kind.to_string(), hash_key }).set(1);
}

/// Starts the balancer over the monitor's snapshots.
pub fn spawn(
    cfg: BalancerConfig,
    initial: StrategySpec,
    mut backends: watch::Receiver<Arc<BackendSet>>,
    metrics: Arc<Metrics>,
) -> BalancerHandle {
    let set = backends.borrow_and_update().clone();
    let build = {
        let cfg = cfg.clone();
        move |spec: &StrategySpec, set: &BackendSet| {
            Selector::build(spec, &cfg.default_key, set, cfg.table_size, cfg.policy)
        }
    };
    let selector = Arc::new(ArcSwap::from_pointee(build(&initial, &set)));
    let key0 = initial.hash_key.clone().unwrap_or_else(|| cfg.default_key.clone());
    if cfg.publish_info {
        record_strategy(&metrics, &initial, &key0);
    }
    let (strategy_tx, strategy_rx) = watch::channel(initial.clone());
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<(StrategySpec, oneshot::Sender<StrategySpec>)>(8);
    let published = selector.clone();
    let default_key = cfg.default_key.clone();
    let task = async move {
        let mut spec = initial;
        let mut last = (selection_key(&set), all_key(&set));
        loop {
            tokio::select! {
                r = backends.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let set = backends.borrow_and_update().clone();
                    let key = (selection_key(&set), all_key(&set));
                    if key != last {
                        published.store(Arc::new(build(&spec, &set)));
                        tracing::debug!(eligible = key.0.len(), "selector rebuilt");
                        last = key;
                    }
                }
                Some((next, reply)) = cmd_rx.recv() => {
                    let set = backends.borrow().clone();
                    published.store(Arc::new(build(&next, &set)));
                    let prev = std::mem::replace(&mut spec, next.clone());
                    let key = next.hash_key.clone().unwrap_or_else(|| cfg.default_key.clone());
                    tracing::info!(from = %prev.kind, to = %next.kind, hash_key = %key, "strategy switched");
                    metrics.strategy_switches.inc();
                    if cfg.publish_info {
                        record_strategy(&metrics, &next, &key);
                    }
                    strategy_tx.send_replace(next);
                    let _ = reply.send(prev);
                }
            }
        }
    };
    // The caller's span (the service, when there are several) labels the logs.
    tokio::spawn(task.in_current_span());
    BalancerHandle { selector, strategy: strategy_rx, commands: cmd_tx, default_key }
}
