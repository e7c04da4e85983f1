//! The health monitor: the one actor that owns every backend's state.
//!
//! It merges discovery updates from all sources, runs one probe task per backend, applies
//! hysteresis to the verdicts, applies operators' drain commands, and publishes an immutable
//! [`BackendSet`] through a `watch` channel. Nothing else mutates backend state, so the state
//! changes flow one way: discovery → monitor → balancer / data plane / admin API.
//!
//! Backends that discovery removes are not cut: they turn `draining` and leave once their last
//! request or connection finishes (or after `drain_timeout`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::{HealthCheck, HealthConfig, Hysteresis, ProbeError};
use crate::backend::{Backend, BackendId, BackendSet, BackendSpec, BackendView, ProbeResult, ProbeSummary, State};
use crate::discovery::{Discover, Sink, SourceStats, SourcedUpdate, Update};

/// How often cosmetic changes (last probe details) are published and drained backends reaped.
const TICK: Duration = Duration::from_millis(250);

/// Monitor settings.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Probe timing and hysteresis.
    pub health: HealthConfig,
    /// Longest time a removed backend is kept draining while traffic is still open.
    pub drain_timeout: Duration,
}

/// Operator commands (from the admin API).
#[derive(Debug)]
pub enum Command {
    /// Stop new traffic to a backend; existing traffic finishes.
    Drain(String, oneshot::Sender<Result<(), CommandError>>),
    /// Let a drained backend take traffic again (once healthy).
    Undrain(String, oneshot::Sender<Result<(), CommandError>>),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// No such backend.
    #[error("no backend with id '{0}'; list the ids with GET /admin/backends")]
    NotFound(String),
    /// The backend was removed by discovery and is leaving.
    #[error("backend '{0}' was removed by discovery and is leaving; it cannot be undrained")]
    Removed(String),
    /// The monitor is gone.
    #[error("the health monitor stopped; the agent is shutting down")]
    Stopped,
}

/// A cheap handle to the monitor.
#[derive(Debug, Clone)]
pub struct MonitorHandle {
    backends: watch::Receiver<Arc<BackendSet>>,
    ready: watch::Receiver<bool>,
    commands: mpsc::Sender<Command>,
    sources: Arc<[Arc<SourceStats>]>,
}

impl MonitorHandle {
    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<BackendSet> {
        self.backends.borrow().clone()
    }

    /// A receiver that sees every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<BackendSet>> {
        self.backends.clone()
    }

    /// True once the first discovery and the first probe of each initial backend completed.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// A receiver that turns true once the monitor is ready.
    pub fn subscribe_ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// The discovery sources' counters, in start order.
    pub fn sources(&self) -> &[Arc<SourceStats>] {
        &self.sources
    }

    /// Waits until ready.
    pub async fn wait_ready(&self) {
        let mut r = self.ready.clone();
        let _ = r.wait_for(|v| *v).await;
    }

    /// Drains a backend.
    pub async fn drain(&self, id: &str) -> Result<(), CommandError> {
        self.command(|tx| Command::Drain(id.to_string(), tx)).await
    }

    /// Undrains a backend.
    pub async fn undrain(&self, id: &str) -> Result<(), CommandError> {
        self.command(|tx| Command::Undrain(id.to_string(), tx)).await
    }

    async fn command(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), CommandError>>) -> Command,
    ) -> Result<(), CommandError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| CommandError::Stopped)?;
        rx.await.map_err(|_| CommandError::Stopped)?
    }
}

#[derive(Debug)]
struct ProbeDone {
    id: BackendId,
    epoch: u64,
    outcome: Result<String, ProbeError>,
    duration: Duration,
}

#[derive(Debug)]
struct Entry {
    backend: Arc<Backend>,
    weight: u32,
    hyst: Hysteresis,
    drained: bool,
    removed_at: Option<Instant>,
    last_probe: Option<ProbeSummary>,
    since: SystemTime,
    probe: Option<AbortHandle>,
    epoch: u64,
}

impl Entry {
    fn view(&self) -> BackendView {
        BackendView {
            backend: self.backend.clone(),
            weight: self.weight,
            health: self.hyst.health(),
            drained: self.drained,
            removed: self.removed_at.is_some(),
            streak: self.hyst.streak(),
            last_probe: self.last_probe.clone(),
            since: self.since,
        }
    }

    fn state(&self) -> State {
        self.view().state()
    }
}

/// Starts the monitor and the discovery sources; returns its handle.
#[derive(Debug)]
pub struct Monitor;

impl Monitor {
    /// Spawns the actor, one task per discovery source, and the probe tasks as backends appear.
    pub fn spawn(cfg: MonitorConfig, checker: Arc<dyn HealthCheck>, sources: Vec<Box<dyn Discover>>) -> MonitorHandle {
        let (update_tx, update_rx) = mpsc::channel(64);
        let (probe_tx, probe_rx) = mpsc::channel(256);
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let (set_tx, set_rx) = watch::channel(Arc::new(BackendSet::default()));
        let (ready_tx, ready_rx) = watch::channel(false);
        let mut stats = Vec::new();
        for (i, src) in sources.into_iter().enumerate() {
            let name = src.name();
            let source = Arc::new(SourceStats::new(name));
            stats.push(source.clone());
            let sink = Sink::new(i, update_tx.clone(), source);
            tokio::spawn(
                async move {
                    if src.run(sink).await.is_err() {
                        tracing::debug!(source = name, "discovery source stopped: monitor gone");
                    }
                }
                .in_current_span(),
            );
        }
        drop(update_tx);
        if stats.is_empty() {
            // No source at all: nothing to wait for.
            let _ = ready_tx.send(true);
        }
        let sources: Arc<[Arc<SourceStats>]> = stats.into();
        let actor = Actor {
            lists: vec![None; sources.len()],
            sources: sources.clone(),
            cfg,
            checker,
            entries: BTreeMap::new(),
            probe_tx,
            set_tx,
            ready_tx,
            pending_first: HashSet::new(),
            generation: 0,
            next_epoch: 0,
            dirty: false,
        };
        // The caller's span (the service, when there are several) labels the actor's logs.
        tokio::spawn(actor.run(update_rx, probe_rx, cmd_rx).in_current_span());
        MonitorHandle { backends: set_rx, ready: ready_rx, commands: cmd_tx, sources }
    }
}

struct Actor {
    cfg: MonitorConfig,
    checker: Arc<dyn HealthCheck>,
    /// Each source's counters.
    sources: Arc<[Arc<SourceStats>]>,
    /// Each source's current list; `None` until it reported once.
    lists: Vec<Option<HashMap<SocketAddr, BackendSpec>>>,
    entries: BTreeMap<BackendId, Entry>,
    probe_tx: mpsc::Sender<ProbeDone>,
    set_tx: watch::Sender<Arc<BackendSet>>,
    ready_tx: watch::Sender<bool>,
    /// Backends added before readiness that have no verdict yet.
    pending_first: HashSet<BackendId>,
    generation: u64,
    next_epoch: u64,
    dirty: bool,
}

impl Actor {
    async fn run(
        mut self,
        mut updates: mpsc::Receiver<SourcedUpdate>,
        mut probes: mpsc::Receiver<ProbeDone>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(u) = updates.recv() => self.on_update(u),
                Some(r) = probes.recv() => self.on_probe(r),
                c = commands.recv() => match c {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tick.tick() => {
                    self.reap();
                    if self.dirty {
                        self.publish();
                    }
                }
            }
            self.check_ready();
        }
        for e in self.entries.values_mut() {
            if let Some(p) = e.probe.take() {
                p.abort();
            }
        }
    }

    fn on_update(&mut self, u: SourcedUpdate) {
        self.sources[u.source].updated();
        let list = self.lists[u.source].get_or_insert_with(HashMap::new);
        match u.update {
            Update::Reset(specs) => {
                *list = specs.into_iter().map(|s| (s.addr, s)).collect();
            }
            Update::Add(s) => {
                list.insert(s.addr, s);
            }
            Update::Remove(a) => {
                list.remove(&a);
            }
        }
        self.reconcile();
    }

    /// Brings entries in line with the union of all sources.
    fn reconcile(&mut self) {
        let mut desired: BTreeMap<BackendId, BackendSpec> = BTreeMap::new();
        for list in self.lists.iter().flatten() {
            for spec in list.values() {
                // The first source to name an address decides its weight.
                desired.entry(spec.id()).or_insert_with(|| spec.clone());
            }
        }
        let mut changed = false;
        for (id, spec) in &desired {
            let readded = self.entries.get(id).is_some_and(|e| e.removed_at.is_some());
            let restart = if readded { Some(self.start_probe(id.clone(), spec.addr)) } else { None };
            match self.entries.get_mut(id) {
                Some(e) => {
                    if let Some((abort, epoch)) = restart {
                        e.removed_at = None;
                        tracing::info!(backend = %id, "backend re-added by discovery");
                        e.since = SystemTime::now();
                        if let Some(old) = e.probe.replace(abort) {
                            old.abort();
                        }
                        e.epoch = epoch;
                        changed = true;
                    }
                    if e.weight != spec.weight {
                        tracing::info!(backend = %id, from = e.weight, to = spec.weight, "backend weight changed");
                        e.weight = spec.weight;
                        changed = true;
                    }
                }
                None => {
                    self.add(id.clone(), spec);
                    changed = true;
                }
            }
        }
        let now = Instant::now();
        for (id, e) in self.entries.iter_mut() {
            if !desired.contains_key(id) && e.removed_at.is_none() {
                tracing::info!(backend = %id, active = e.backend.stats.active(), "backend removed by discovery; draining");
                e.removed_at = Some(now);
                e.since = SystemTime::now();
                if let Some(p) = e.probe.take() {
                    p.abort();
                }
                self.pending_first.remove(id);
                changed = true;
            }
        }
        if changed {
            self.publish();
        }
    }

    fn add(&mut self, id: BackendId, spec: &BackendSpec) {
        let (abort, epoch) = self.start_probe(id.clone(), spec.addr);
        tracing::info!(backend = %id, weight = spec.weight, "backend added; probing");
        if !*self.ready_tx.borrow() {
            self.pending_first.insert(id.clone());
        }
        self.entries.insert(
            id,
            Entry {
                backend: Arc::new(Backend::new(spec.addr)),
                weight: spec.weight,
                hyst: Hysteresis::new(self.cfg.health.rise, self.cfg.health.fall),
                drained: false,
                removed_at: None,
                last_probe: None,
                since: SystemTime::now(),
                probe: Some(abort),
                epoch,
            },
        );
    }

    fn start_probe(&mut self, id: BackendId, addr: SocketAddr) -> (AbortHandle, u64) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        let checker = self.checker.clone();
        let tx = self.probe_tx.clone();
        let health = self.cfg.health.clone();
        let task = tokio::spawn(async move {
            loop {
                let start = tokio::time::Instant::now();
                let outcome = match tokio::time::timeout(health.timeout, checker.check(addr)).await {
                    Ok(r) => r,
                    Err(_) => Err(ProbeError::Timeout(health.timeout)),
                };
                let r = ProbeDone { id: id.clone(), epoch, outcome, duration: start.elapsed() };
                if tx.send(r).await.is_err() {
                    return;
                }
                tokio::time::sleep(health.next_interval()).await;
            }
        });
        (task.abort_handle(), epoch)
    }

    fn on_probe(&mut self, r: ProbeDone) {
        let Some(e) = self.entries.get_mut(&r.id) else { return };
        if e.epoch != r.epoch || e.removed_at.is_some() {
            return;
        }
        let passed = r.outcome.is_ok();
        let stats = &e.backend.stats;
        stats.probe(if passed { ProbeResult::Success } else { ProbeResult::Failure });
        stats.probe_duration.observe(r.duration);
        let detail = match &r.outcome {
            Ok(d) => d.clone(),
            Err(err) => err.to_string(),
        };
        let before = e.state();
        let flipped = e.hyst.observe(passed);
        e.last_probe =
            Some(ProbeSummary { passed, detail: detail.clone(), duration: r.duration, at: SystemTime::now() });
        self.pending_first.remove(&r.id);
        match flipped {
            Some(h) => {
                e.since = SystemTime::now();
                let after = e.state();
                tracing::info!(backend = %r.id, health = h.as_str(), state = after.as_str(),
                    from = before.as_str(), probe = %detail, "backend health changed");
                e.backend.stats.transition(after);
                self.publish();
            }
            None => self.dirty = true,
        }
    }

    fn on_command(&mut self, c: Command) {
        let (id, drain, reply) = match c {
            Command::Drain(id, r) => (id, true, r),
            Command::Undrain(id, r) => (id, false, r),
        };
        let Some(e) = self.entries.get_mut(id.as_str()) else {
            let _ = reply.send(Err(CommandError::NotFound(id)));
            return;
        };
        if !drain && e.removed_at.is_some() {
            let _ = reply.send(Err(CommandError::Removed(id)));
            return;
        }
        if e.drained != drain {
            e.drained = drain;
            e.since = SystemTime::now();
            let state = e.state();
            tracing::info!(backend = %id, state = state.as_str(), active = e.backend.stats.active(),
                "{}", if drain { "backend drained by operator" } else { "backend undrained by operator" });
            e.backend.stats.transition(state);
            self.publish();
        }
        let _ = reply.send(Ok(()));
    }

    /// Forgets removed backends whose traffic finished or whose drain timed out.
    fn reap(&mut self) {
        let timeout = self.cfg.drain_timeout;
        let gone: Vec<BackendId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.removed_at.is_some_and(|t| e.backend.stats.active() <= 0 || t.elapsed() >= timeout))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            if let Some(e) = self.entries.remove(id) {
                let active = e.backend.stats.active();
                if active > 0 {
                    tracing::warn!(backend = %id, active, "drain timeout; forgetting backend with traffic still open");
                } else {
                    tracing::info!(backend = %id, "drained backend removed");
                }
            }
        }
        if !gone.is_empty() {
            self.publish();
        }
    }

    fn publish(&mut self) {
        self.generation += 1;
        self.dirty = false;
        let set =
            BackendSet { backends: self.entries.values().map(Entry::view).collect(), generation: self.generation };
        self.set_tx.send_replace(Arc::new(set));
    }

    fn check_ready(&mut self) {
        if *self.ready_tx.borrow() {
            return;
        }
        if self.lists.iter().all(Option::is_some) && self.pending_first.is_empty() {
            tracing::info!(backends = self.entries.len(), "ready: first discovery and probe round complete");
            let _ = self.ready_tx.send(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Health;
    use crate::discovery::Fixed;
    use crate::util::BoxFuture;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Test double: answers probes from a script per address, then repeats the last answer.
    #[derive(Debug, Default)]
    struct ScriptedCheck {
        scripts: Mutex<HashMap<SocketAddr, VecDeque<bool>>>,
        pattern: Mutex<HashMap<SocketAddr, (Vec<bool>, usize)>>,
    }

    impl ScriptedCheck {
        fn cycle(&self, addr: SocketAddr, pattern: &[bool]) {
            self.pattern.lock().unwrap().insert(addr, (pattern.to_vec(), 0));
        }
    }

    impl HealthCheck for ScriptedCheck {
        fn check(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
            let ok = if let Some(q) = self.scripts.lock().unwrap().get_mut(&addr).and_then(|q| q.pop_front()) {
                q
            } else if let Some((p, i)) = self.pattern.lock().unwrap().get_mut(&addr) {
                let v = p[*i % p.len()];
                *i += 1;
                v
            } else {
                true
            };
            Box::pin(async move { if ok { Ok("ok".into()) } else { Err(ProbeError::Status(503)) } })
        }
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 80))
    }

    fn cfg() -> MonitorConfig {
        MonitorConfig {
            health: HealthConfig {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                jitter: 0.0,
                rise: 2,
                fall: 3,
            },
            drain_timeout: Duration::from_secs(30),
        }
    }

    fn spawn(check: Arc<ScriptedCheck>, n: u8) -> MonitorHandle {
        let specs = (1..=n).map(|i| BackendSpec { addr: addr(i), weight: 1 }).collect();
        Monitor::spawn(cfg(), check, vec![Box::new(Fixed::new(specs))])
    }

    fn state_of(h: &MonitorHandle, i: u8) -> State {
        h.snapshot().get(&addr(i).to_string()).map(|b| b.state()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn first_probe_decides_and_ready_follows() {
        let check = Arc::new(ScriptedCheck::default());
        check.cycle(addr(2), &[false]);
        let h = spawn(check, 2);
        h.wait_ready().await;
        assert_eq!(state_of(&h, 1), State::Healthy);
        assert_eq!(state_of(&h, 2), State::Unhealthy);
        assert!(h.is_ready());
        assert_eq!((h.sources()[0].name, h.sources()[0].updates()), ("static", 1));
    }

    #[tokio::test(start_paused = true)]
    async fn backend_failing_one_probe_in_three_never_flaps() {
        let check = Arc::new(ScriptedCheck::default());
        check.cycle(addr(1), &[true, true, false]);
        let h = spawn(check, 1);
        h.wait_ready().await;
        let mut rx = h.subscribe();
        // 10 minutes of probes every 2 s: 300 verdicts, 100 of them failures.
        let watcher = tokio::spawn(async move {
            let mut seen = HashSet::new();
            while rx.changed().await.is_ok() {
                seen.insert(rx.borrow().backends[0].state());
            }
            seen
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(state_of(&h, 1), State::Healthy);
        let stats = &h.snapshot().backends[0].backend.clone();
        assert_eq!(stats.stats.probes(ProbeResult::Failure), 100, "300 probes, every third failed");
        assert_eq!(stats.stats.transitions(State::Unhealthy), 0, "no transition to unhealthy");
        drop(h);
        let seen = watcher.await.unwrap();
        assert_eq!(seen, HashSet::from([State::Healthy]), "published states: {seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn goes_down_after_fall_and_up_after_rise() {
        let check = Arc::new(ScriptedCheck::default());
        check.cycle(addr(1), &[true]);
        let h = spawn(check.clone(), 1);
        h.wait_ready().await;
        let t0 = tokio::time::Instant::now();
        check.cycle(addr(1), &[false]);
        let mut rx = h.subscribe();
        rx.wait_for(|s| s.backends[0].health == Health::Unhealthy).await.unwrap();
        // fall = 3 failures at 2 s intervals: detected on the third failed probe, 4-6 s later.
        let took = t0.elapsed();
        assert!(took >= Duration::from_secs(4) && took <= Duration::from_secs(6), "{took:?}");
        let t1 = tokio::time::Instant::now();
        check.cycle(addr(1), &[true]);
        rx.wait_for(|s| s.backends[0].health == Health::Healthy).await.unwrap();
        let took = t1.elapsed();
        assert!(took >= Duration::from_secs(2) && took <= Duration::from_secs(4), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_and_undrain_commands() {
        let check = Arc::new(ScriptedCheck::default());
        let h = spawn(check, 2);
        h.wait_ready().await;
        h.drain(&addr(1).to_string()).await.unwrap();
        assert_eq!(state_of(&h, 1), State::Draining);
        assert_eq!(h.snapshot().eligible().count(), 1);
        h.undrain(&addr(1).to_string()).await.unwrap();
        assert_eq!(state_of(&h, 1), State::Healthy);
        assert_eq!(h.drain("10.9.9.9:1").await, Err(CommandError::NotFound("10.9.9.9:1".into())));
    }

    /// Test double: a discovery source driven by the test through a channel.
    #[derive(Debug)]
    struct ScriptedSource(mpsc::Receiver<Update>);

    impl Discover for ScriptedSource {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn run(mut self: Box<Self>, sink: Sink) -> BoxFuture<'static, Result<(), crate::discovery::Closed>> {
            Box::pin(async move {
                while let Some(u) = self.0.recv().await {
                    sink.send(u).await?;
                }
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn removed_backend_drains_until_idle_then_leaves() {
        let (tx, rx) = mpsc::channel(4);
        let h = Monitor::spawn(cfg(), Arc::new(ScriptedCheck::default()), vec![Box::new(ScriptedSource(rx))]);
        tx.send(Update::Reset(vec![
            BackendSpec { addr: addr(1), weight: 1 },
            BackendSpec { addr: addr(2), weight: 1 },
        ]))
        .await
        .unwrap();
        h.wait_ready().await;
        let b1 = h.snapshot().get(&addr(1).to_string()).unwrap().backend.clone();
        let open = crate::util::GaugeGuard::new(&b1.stats.active);
        tx.send(Update::Remove(addr(1))).await.unwrap();
        let mut rx = h.subscribe();
        rx.wait_for(|s| s.get(&addr(1).to_string()).is_some_and(|b| b.state() == State::Draining)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(h.snapshot().get(&addr(1).to_string()).is_some(), "kept while a request is open");
        drop(open);
        rx.wait_for(|s| s.get(&addr(1).to_string()).is_none()).await.unwrap();
        assert_eq!(h.snapshot().backends.len(), 1);
        // Weight changes apply in place.
        tx.send(Update::Add(BackendSpec { addr: addr(2), weight: 9 })).await.unwrap();
        rx.wait_for(|s| s.backends[0].weight == 9).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn not_ready_until_every_initial_backend_has_a_verdict() {
        #[derive(Debug)]
        struct Slow;
        impl HealthCheck for Slow {
            fn check(&self, _: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
                Box::pin(async {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    Ok("ok".into())
                })
            }
        }
        let h = Monitor::spawn(
            cfg(),
            Arc::new(Slow),
            vec![Box::new(Fixed::new(vec![BackendSpec { addr: addr(1), weight: 1 }]))],
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!h.is_ready());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(h.is_ready());
    }
}
