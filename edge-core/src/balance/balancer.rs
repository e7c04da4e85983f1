//! The balancer actor: turns backend snapshots and the chosen strategy into the published
//! [`Selector`], and applies run-time strategy switches atomically.
//!
//! It rebuilds only when what selection depends on changed (the eligible backends and their
//! weights, or the strategy), not on every probe, so a Maglev table is rebuilt once per real change.
//! A switch to a strategy the data plane cannot carry out is refused before it reaches the actor.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::{Plane, Selector, StrategySpec, Unsupported};
use crate::backend::BackendSet;

/// Settings that do not change at run time.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// Maglev table size.
    pub table_size: u32,
    /// The data plane the selection serves; switches it cannot carry out are refused.
    pub plane: Plane,
}

/// Why a switch did not happen.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwitchError {
    /// The data plane cannot carry out the strategy.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// The balancer is gone.
    #[error("the balancer stopped; the agent is shutting down")]
    Stopped,
}

type Switch = (StrategySpec, oneshot::Sender<StrategySpec>);

/// A handle to the balancer.
#[derive(Debug, Clone)]
pub struct BalancerHandle {
    selector: Arc<ArcSwap<Selector>>,
    strategy: watch::Receiver<StrategySpec>,
    commands: mpsc::Sender<Switch>,
    plane: Plane,
    switches: Arc<AtomicU64>,
    ready: watch::Receiver<bool>,
}

impl BalancerHandle {
    /// True once the selector reflects the monitor's first complete probe round: a request that
    /// arrives after this finds the backends that passed their first probe.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until [`Self::is_ready`].
    pub async fn wait_ready(&self) {
        let mut r = self.ready.clone();
        let _ = r.wait_for(|v| *v).await;
    }

    /// The selector the data path reads.
    pub fn selector(&self) -> Arc<ArcSwap<Selector>> {
        self.selector.clone()
    }

    /// The current strategy.
    pub fn strategy(&self) -> StrategySpec {
        self.strategy.borrow().clone()
    }

    /// A receiver that sees every strategy switch.
    pub fn subscribe(&self) -> watch::Receiver<StrategySpec> {
        self.strategy.clone()
    }

    /// The data plane this balancer serves.
    pub fn plane(&self) -> Plane {
        self.plane
    }

    /// Strategy switches so far.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// Switches strategy; returns the previous one once the new selector is live.
    pub async fn set_strategy(&self, spec: StrategySpec) -> Result<StrategySpec, SwitchError> {
        self.plane.supports(&spec)?;
        let (tx, rx) = oneshot::channel();
        self.commands.send((spec, tx)).await.map_err(|_| SwitchError::Stopped)?;
        rx.await.map_err(|_| SwitchError::Stopped)
    }
}

/// What selection depends on: the backends served and their effective weights, and panic mode.
fn selection_key(set: &BackendSet) -> (Vec<(Arc<str>, u32)>, bool) {
    (set.serving().map(|b| (b.id().clone(), b.effective_weight)).collect(), set.panic.is_some())
}

/// Starts the balancer over the monitor's snapshots. The initial strategy must be one the plane
/// supports (configuration checks it with [`Plane::supports`]). `monitor_ready` is the monitor's
/// readiness: the balancer is ready once it built a selector from a snapshot taken after it.
pub fn spawn(
    cfg: BalancerConfig,
    initial: StrategySpec,
    mut backends: watch::Receiver<Arc<BackendSet>>,
    mut monitor_ready: watch::Receiver<bool>,
) -> BalancerHandle {
    let set = backends.borrow_and_update().clone();
    let build = move |spec: &StrategySpec, set: &BackendSet| Selector::build(spec, set, cfg.table_size);
    let selector = Arc::new(ArcSwap::from_pointee(build(&initial, &set)));
    let (strategy_tx, strategy_rx) = watch::channel(initial.clone());
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Switch>(8);
    let published = selector.clone();
    let switches = Arc::new(AtomicU64::new(0));
    let counted = switches.clone();
    let (ready_tx, ready_rx) = watch::channel(false);
    let task = async move {
        let mut spec = initial;
        let mut last = selection_key(&set);
        loop {
            tokio::select! {
                r = backends.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let set = backends.borrow_and_update().clone();
                    let key = selection_key(&set);
                    if key != last {
                        published.store(Arc::new(build(&spec, &set)));
                        tracing::debug!(serving = key.0.len(), panic = key.1, "selector rebuilt");
                        last = key;
                    }
                }
                r = monitor_ready.changed(), if !*ready_tx.borrow() => {
                    if r.is_err() {
                        break;
                    }
                    if *monitor_ready.borrow_and_update() {
                        // The monitor turns ready after publishing its first complete round: build
                        // from the snapshot as it is now, then say so.
                        let set = backends.borrow_and_update().clone();
                        let key = selection_key(&set);
                        if key != last {
                            published.store(Arc::new(build(&spec, &set)));
                            last = key;
                        }
                        let _ = ready_tx.send(true);
                    }
                }
                Some((next, reply)) = cmd_rx.recv() => {
                    let set = backends.borrow().clone();
                    published.store(Arc::new(build(&next, &set)));
                    let prev = std::mem::replace(&mut spec, next.clone());
                    tracing::info!(from = %prev.kind, to = %next.kind, hash_key = %next.hash_key, "strategy switched");
                    counted.fetch_add(1, Ordering::Relaxed);
                    strategy_tx.send_replace(next);
                    let _ = reply.send(prev);
                }
            }
        }
    };
    // The caller's span (the service, when there are several) labels the logs.
    tokio::spawn(task.in_current_span());
    BalancerHandle { selector, strategy: strategy_rx, commands: cmd_tx, plane: cfg.plane, switches, ready: ready_rx }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::{HashKey, StrategyKind};

    fn cfg(plane: Plane) -> BalancerConfig {
        BalancerConfig { table_size: 65_537, plane }
    }

    #[tokio::test(start_paused = true)]
    async fn switches_apply_atomically_and_unsupported_ones_are_refused() {
        let (_tx, rx) = watch::channel(Arc::new(BackendSet::default()));
        let (_ready_tx, ready) = watch::channel(false);
        let rr = StrategySpec { kind: StrategyKind::RoundRobin, hash_key: HashKey::Source };
        let h = spawn(cfg(Plane::Ebpf), rr.clone(), rx, ready);
        let header = StrategySpec { kind: StrategyKind::ConsistentHash, hash_key: "header:x-user".parse().unwrap() };
        assert!(matches!(h.set_strategy(header).await, Err(SwitchError::Unsupported(_))));
        assert_eq!((h.strategy(), h.switches()), (rr.clone(), 0), "nothing changed");
        let ch = StrategySpec { kind: StrategyKind::ConsistentHash, hash_key: HashKey::FiveTuple };
        assert_eq!(h.set_strategy(ch.clone()).await, Ok(rr));
        assert_eq!((h.strategy(), h.switches()), (ch.clone(), 1));
        assert_eq!(h.selector().load().spec(), &ch, "the new selector is live when the switch returns");
    }

    #[tokio::test(start_paused = true)]
    async fn ready_only_once_the_selector_holds_the_first_round() {
        use crate::backend::{Backend, BackendView, Health};
        let (tx, rx) = watch::channel(Arc::new(BackendSet::default()));
        let (ready_tx, ready) = watch::channel(false);
        let rr = StrategySpec { kind: StrategyKind::RoundRobin, hash_key: HashKey::Source };
        let h = spawn(cfg(Plane::Userspace), rr, rx, ready);
        tokio::task::yield_now().await;
        assert!(!h.is_ready());
        // The monitor publishes its first round and turns ready at once, as it does.
        let b = BackendView::probed(Arc::new(Backend::new("10.0.0.1:80".parse().unwrap())), 1, Health::Healthy);
        tx.send_replace(Arc::new(BackendSet { backends: vec![b], generation: 1, panic: None }));
        ready_tx.send_replace(true);
        h.wait_ready().await;
        assert_eq!(h.selector().load().eligible(), 1, "a request sent now finds the backend");
    }
}
