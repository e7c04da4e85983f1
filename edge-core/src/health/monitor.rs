//! The health monitor: the one actor that owns every backend's state.
//!
//! It merges discovery updates from all sources, runs one probe loop per backend, feeds each
//! backend's state machine (`lifecycle`) with probe verdicts and, every tick, with the passive
//! outcomes the data planes counted (lock-free atomics on the backend), enforces the ejection cap
//! and the panic threshold over the whole service, applies operators' drain commands, keeps the
//! event log, and publishes an immutable [`BackendSet`] through a `watch` channel. Nothing else
//! mutates backend state, so state changes flow one way: discovery and traffic → monitor →
//! balancer / data plane / admin API.
//!
//! Backends that discovery removes are not cut: they turn `removed` and leave once their last
//! request or connection finishes (or after `drain_timeout`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::lifecycle::{Change, Lifecycle, Passive};
use super::outlier::{OutlierConfig, may_eject};
use super::prober::{ProbeDone, Prober};
use super::{Event, EventLog, HealthCheck, HealthConfig};
use crate::backend::{
    Backend, BackendId, BackendSet, BackendSpec, BackendView, Panic, ProbeResult, ProbeSummary, State, panic_at,
};
use crate::discovery::{Discover, Sink, SourceStats, SourcedUpdate, Update};

/// How often passive outcomes are read, ejections and slow starts advanced, cosmetic changes (last
/// probe details) published and drained backends reaped. It bounds how late an ejection follows
/// the failure that called for it.
const TICK: Duration = Duration::from_millis(100);

/// Monitor settings.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Probe timing and hysteresis.
    pub health: HealthConfig,
    /// Outlier detection and slow start.
    pub outlier: OutlierConfig,
    /// Panic threshold in percent (0: never).
    pub panic_threshold: u32,
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
    events: watch::Receiver<Arc<Vec<Event>>>,
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

    /// The latest events, newest first.
    pub fn events(&self) -> Arc<Vec<Event>> {
        self.events.borrow().clone()
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
struct Entry {
    backend: Arc<Backend>,
    weight: u32,
    life: Lifecycle,
    drained: bool,
    removed_at: Option<Instant>,
    /// Which source stopped reporting it, for its reason.
    removed_by: &'static str,
    last_probe: Option<ProbeSummary>,
    since: SystemTime,
    probe: Option<Prober>,
    epoch: u64,
    /// The state last published, to tell changes from the gate's point of view.
    shown: State,
    /// The weight step last seen by the tick.
    steps: u32,
    /// Outlier detection asked to eject this backend and the cap refused; cleared when the
    /// streak ends, so the refusal is logged once per streak.
    refused: bool,
}

impl Entry {
    fn state(&self) -> State {
        if self.removed_at.is_some() {
            State::Removed
        } else if self.drained {
            State::Draining
        } else {
            self.life.state()
        }
    }

    fn reason(&self) -> String {
        match self.state() {
            State::Removed => format!("no longer reported by {}", self.removed_by),
            State::Draining => "drained by admin".into(),
            _ => self.life.reason().to_string(),
        }
    }

    fn view(&self, now: Instant, wall: SystemTime, panic: Option<Panic>) -> BackendView {
        let state = self.state();
        let mut reason = self.reason();
        if let Some(p) = panic.filter(|_| !state.usable() && !state.gone()) {
            reason = format!("{p}; {reason}");
        }
        let to_wall = |t: Instant| wall + t.saturating_duration_since(now);
        BackendView {
            backend: self.backend.clone(),
            weight: self.weight,
            effective_weight: self.weight * self.life.weight_steps(now),
            state,
            reason,
            health: self.life.health(),
            drained: self.drained,
            removed: self.removed_at.is_some(),
            streak: self.life.streak(),
            last_probe: self.last_probe.clone(),
            since: self.since,
            next_probe: self.probe.as_ref().map(Prober::next_probe).unwrap_or_default(),
            ejections: self.life.ejections(),
            ejected_until: self.life.ejected_until().map(to_wall),
            slow_start: self.life.slow_start_progress(now),
        }
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
        let (events_tx, events_rx) = watch::channel(Arc::new(Vec::new()));
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
            last_change: "discovery",
            sources: sources.clone(),
            cfg,
            checker,
            entries: BTreeMap::new(),
            probe_tx,
            set_tx,
            events_tx,
            log: EventLog::default(),
            ready_tx,
            pending_first: HashSet::new(),
            generation: 0,
            next_epoch: 0,
            dirty: false,
            panic: None,
        };
        // The caller's span (the service, when there are several) labels the actor's logs.
        tokio::spawn(actor.run(update_rx, probe_rx, cmd_rx).in_current_span());
        MonitorHandle { backends: set_rx, events: events_rx, ready: ready_rx, commands: cmd_tx, sources }
    }
}

struct Actor {
    cfg: MonitorConfig,
    checker: Arc<dyn HealthCheck>,
    /// Each source's counters.
    sources: Arc<[Arc<SourceStats>]>,
    /// Each source's current list; `None` until it reported once.
    lists: Vec<Option<HashMap<SocketAddr, BackendSpec>>>,
    /// The source of the update being applied (`static`, `file`, `consul`, `dns`).
    last_change: &'static str,
    entries: BTreeMap<BackendId, Entry>,
    probe_tx: mpsc::Sender<ProbeDone>,
    set_tx: watch::Sender<Arc<BackendSet>>,
    events_tx: watch::Sender<Arc<Vec<Event>>>,
    log: EventLog,
    ready_tx: watch::Sender<bool>,
    /// Backends added before readiness that have no verdict yet.
    pending_first: HashSet<BackendId>,
    generation: u64,
    next_epoch: u64,
    dirty: bool,
    panic: Option<Panic>,
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
                    self.on_tick();
                    self.reap();
                    if self.dirty {
                        self.publish();
                    }
                }
            }
            self.check_ready();
        }
        for e in self.entries.values_mut() {
            e.probe = None;
        }
    }

    fn on_update(&mut self, u: SourcedUpdate) {
        self.sources[u.source].updated();
        self.last_change = self.sources[u.source].name;
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
            let readded = self.entries.get(id).filter(|e| e.removed_at.is_some()).map(|e| e.backend.clone());
            let restart = readded.map(|b| self.start_probe(id.clone(), &b));
            match self.entries.get_mut(id) {
                Some(e) => {
                    if let Some((prober, epoch)) = restart {
                        e.removed_at = None;
                        e.since = SystemTime::now();
                        e.probe = Some(prober);
                        e.epoch = epoch;
                        let to = e.state();
                        self.log.push(Some(id), Some(State::Removed), Some(to), "re-added by discovery".into());
                        changed = true;
                    }
                    if e.backend.proxy() != spec.proxy {
                        let name = |p: Option<crate::backend::ProxyProtocol>| p.map_or("none", |p| p.as_str());
                        tracing::info!(backend = %id, from = name(e.backend.proxy()), to = name(spec.proxy), "backend PROXY protocol changed");
                        e.backend.set_proxy(spec.proxy);
                    }
                    if e.backend.tls().as_deref() != spec.tls.as_ref() {
                        tracing::info!(backend = %id, tls = spec.tls.as_deref().unwrap_or("off"), "backend TLS setting changed");
                        e.backend.set_tls(spec.tls.clone());
                    }
                    if e.backend.is_h2() != spec.h2 {
                        tracing::info!(backend = %id, h2 = spec.h2, "backend protocol changed");
                        e.backend.set_h2(spec.h2);
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
                let from = e.state();
                e.removed_at = Some(now);
                e.removed_by = self.last_change;
                e.since = SystemTime::now();
                e.probe = None;
                // The update being applied is the one that dropped it: name its source, so
                // that an operator sees whether Consul, DNS or a file ruled (edge's own verdicts
                // are the other states).
                let reason =
                    format!("no longer reported by {}; draining {} open", self.last_change, e.backend.stats.active());
                self.log.push(Some(id), Some(from), Some(State::Removed), reason);
                e.backend.stats.transition(State::Removed);
                self.pending_first.remove(id);
                changed = true;
            }
        }
        if changed {
            self.publish();
        }
    }

    fn add(&mut self, id: BackendId, spec: &BackendSpec) {
        let backend = Arc::new(Backend::new(spec.addr));
        backend.set_proxy(spec.proxy);
        backend.set_tls(spec.tls.clone());
        backend.set_h2(spec.h2);
        let (prober, epoch) = self.start_probe(id.clone(), &backend);
        let ready = *self.ready_tx.borrow();
        if !ready {
            self.pending_first.insert(id.clone());
        }
        // A backend that joins a serving service ramps up; the first ones at start take traffic
        // at once, or the service would start at a tenth of its capacity.
        let slow_first = ready && self.entries.values().any(|e| e.state().usable());
        let health = &self.cfg.health;
        let life = Lifecycle::new(self.cfg.outlier.clone(), health.rise, health.fall, slow_first, Instant::now());
        self.log.push(
            Some(&id),
            None,
            Some(State::Unknown),
            format!("added by discovery (weight {}); probing", spec.weight),
        );
        self.entries.insert(
            id,
            Entry {
                backend,
                weight: spec.weight,
                life,
                drained: false,
                removed_at: None,
                removed_by: "",
                last_probe: None,
                since: SystemTime::now(),
                probe: Some(prober),
                epoch,
                shown: State::Unknown,
                steps: crate::backend::WEIGHT_STEPS,
                refused: false,
            },
        );
    }

    fn start_probe(&mut self, id: BackendId, backend: &Arc<Backend>) -> (Prober, u64) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        let p = Prober::spawn(
            id,
            backend.clone(),
            epoch,
            self.checker.clone(),
            self.cfg.health.clone(),
            self.probe_tx.clone(),
        );
        (p, epoch)
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
        let change = e.life.probe(passed, &detail, Instant::now());
        e.last_probe = Some(ProbeSummary { passed, detail, duration: r.duration, at: SystemTime::now() });
        if let Some(p) = &e.probe {
            p.set_fast(e.life.fast());
        }
        self.pending_first.remove(&r.id);
        match change {
            Some(c) => self.changed(&r.id, c),
            None => self.dirty = true,
        }
    }

    /// Reads every backend's passive outcomes, lets time pass in each machine, and paces probes.
    fn on_tick(&mut self) {
        let now = Instant::now();
        let mut changes: Vec<(BackendId, Change)> = Vec::new();
        let mut wants: Vec<(BackendId, String)> = Vec::new();
        for (id, e) in &mut self.entries {
            if e.removed_at.is_some() {
                continue;
            }
            let sample = e.backend.stats.passive();
            match e.life.passive(sample, now) {
                Passive::Changed(c) => changes.push((id.clone(), c)),
                Passive::WantsEjection(words) if !e.drained => wants.push((id.clone(), words)),
                _ => {}
            }
            if sample.consecutive == 0 {
                e.refused = false;
            }
            if let Some(c) = e.life.tick(now) {
                changes.push((id.clone(), c));
            }
            // Slow start ramps the weight: publish when its step moved, not every tick.
            let steps = e.life.weight_steps(now);
            if steps != e.steps {
                e.steps = steps;
                self.dirty = true;
            }
            if let Some(p) = &e.probe {
                p.set_fast(e.life.fast());
            }
        }
        for (id, c) in changes {
            if let (State::Ejected, Some(e)) = (c.to, self.entries.get(&id)) {
                e.backend.stats.reset_streak();
            }
            self.changed(&id, c);
        }
        for (id, words) in wants {
            self.try_eject(&id, words, now);
        }
    }

    /// Ejects a backend if the cap allows: counted over backends that are not drained or
    /// removed, after the ejection.
    fn try_eject(&mut self, id: &BackendId, words: String, now: Instant) {
        let countable = self.entries.values().filter(|e| !e.state().gone()).count();
        let ejected = self.entries.values().filter(|e| !e.state().gone() && e.life.is_ejected()).count();
        let pct = self.cfg.outlier.max_ejected_percent;
        let Some(e) = self.entries.get_mut(id) else { return };
        if !may_eject(ejected, countable, pct) {
            if !e.refused {
                e.refused = true;
                let state = e.state();
                let reason =
                    format!("{words}; not ejected: {} of {countable} would be out, over the {pct} % cap", ejected + 1);
                self.log.push(Some(id), Some(state), None, reason);
                self.dirty = true;
            }
            return;
        }
        let last = e.backend.stats.passive().last;
        e.backend.stats.reset_streak();
        if let Some(kind) = last {
            e.backend.stats.ejection(kind);
        }
        if let Some(c) = e.life.eject(words, now) {
            if let Some(p) = &e.probe {
                p.set_fast(true);
            }
            self.changed(id, c);
        }
    }

    /// Records a state change of the machine under drains and removals, and publishes.
    fn changed(&mut self, id: &BackendId, c: Change) {
        if let Some(e) = self.entries.get_mut(id) {
            e.since = SystemTime::now();
            let to = e.state();
            if to == c.to {
                e.backend.stats.transition(to);
            }
            self.log.push(Some(id), Some(c.from), Some(c.to), c.reason);
        }
        self.publish();
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
            let from = e.state();
            e.drained = drain;
            e.since = SystemTime::now();
            let to = e.state();
            let words = if drain {
                format!("drained by admin; {} open", e.backend.stats.active())
            } else {
                "undrained by admin".to_string()
            };
            e.backend.stats.transition(to);
            let key = e.backend.id.clone();
            self.log.push(Some(&key), Some(from), Some(to), words);
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
        let now = Instant::now();
        let wall = SystemTime::now();
        // The probation gate follows the state: armed for one request on entering probation,
        // open otherwise.
        for e in self.entries.values_mut() {
            let state = e.state();
            if state != e.shown {
                if state == State::Probation {
                    e.backend.arm_probation();
                } else if e.shown == State::Probation {
                    e.backend.open_gate();
                }
                e.shown = state;
            }
        }
        let mut backends: Vec<BackendView> = self.entries.values().map(|e| e.view(now, wall, None)).collect();
        let panic = panic_at(&backends, self.cfg.panic_threshold);
        if panic != self.panic {
            match (self.panic, panic) {
                (None, Some(p)) => {
                    self.log.push(None, None, None, format!("{p}; spreading over every backend that is not gone"))
                }
                (Some(_), None) => self.log.push(None, None, None, "panic mode over".into()),
                _ => {}
            }
            self.panic = panic;
        }
        if panic.is_some() {
            backends = self.entries.values().map(|e| e.view(now, wall, panic)).collect();
        }
        self.generation += 1;
        self.dirty = false;
        self.set_tx.send_replace(Arc::new(BackendSet { backends, generation: self.generation, panic }));
        let events = self.log.snapshot();
        self.events_tx.send_if_modified(|old| {
            let changed = !Arc::ptr_eq(old, &events);
            *old = events;
            changed
        });
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
    use crate::health::ProbeError;
    use crate::util::BoxFuture;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Test double: answers probes from a script per address, then repeats the last answer.
    #[derive(Debug, Default)]
    struct ScriptedCheck {
        scripts: Mutex<HashMap<SocketAddr, VecDeque<bool>>>,
        pattern: Mutex<HashMap<SocketAddr, (Vec<bool>, usize)>>,
        /// Every address probed, in order.
        seen: Mutex<Vec<SocketAddr>>,
    }

    impl ScriptedCheck {
        fn cycle(&self, addr: SocketAddr, pattern: &[bool]) {
            self.pattern.lock().unwrap().insert(addr, (pattern.to_vec(), 0));
        }
    }

    impl HealthCheck for ScriptedCheck {
        fn check(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
            self.seen.lock().unwrap().push(addr);
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
                fast_interval: Duration::from_millis(500),
                timeout: Duration::from_secs(1),
                jitter: 0.0,
                rise: 2,
                fall: 3,
                port: None,
            },
            outlier: OutlierConfig { jitter: 0.0, ..OutlierConfig::default() },
            panic_threshold: 50,
            drain_timeout: Duration::from_secs(30),
        }
    }

    fn spawn(check: Arc<ScriptedCheck>, n: u8) -> MonitorHandle {
        let specs = (1..=n).map(|i| BackendSpec::new(addr(i), 1)).collect();
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
        // 10 minutes of probes every 2 s (faster after a failure).
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
        // A failed probe makes the backend suspect, so the next one comes at the fast pace.
        let (failed, passed) = (stats.stats.probes(ProbeResult::Failure), stats.stats.probes(ProbeResult::Success));
        assert!(
            failed >= 100 && (passed / 2).abs_diff(failed) <= 1,
            "every third of {} probes failed",
            failed + passed
        );
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
        // fall = 3: the first failure at the next probe (within 2 s), the other two at the fast
        // pace (500 ms apart).
        let took = t0.elapsed();
        assert!(took >= Duration::from_secs(1) && took <= Duration::from_secs(3), "{took:?}");
        assert!(took <= cfg().health.detection_bound());
        let t1 = tokio::time::Instant::now();
        check.cycle(addr(1), &[true]);
        rx.wait_for(|s| s.backends[0].health == Health::Healthy).await.unwrap();
        let took = t1.elapsed();
        assert!(took >= Duration::from_millis(500) && took <= Duration::from_millis(2500), "{took:?}");
        assert_eq!(state_of(&h, 1), State::SlowStart, "back through slow start");
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(state_of(&h, 1), State::Healthy);
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
        tx.send(Update::Reset(vec![BackendSpec::new(addr(1), 1), BackendSpec::new(addr(2), 1)])).await.unwrap();
        h.wait_ready().await;
        let b1 = h.snapshot().get(&addr(1).to_string()).unwrap().backend.clone();
        let open = crate::util::GaugeGuard::new(&b1.stats.active);
        tx.send(Update::Remove(addr(1))).await.unwrap();
        let mut rx = h.subscribe();
        rx.wait_for(|s| s.get(&addr(1).to_string()).is_some_and(|b| b.state() == State::Removed)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(h.snapshot().get(&addr(1).to_string()).is_some(), "kept while a request is open");
        drop(open);
        rx.wait_for(|s| s.get(&addr(1).to_string()).is_none()).await.unwrap();
        assert_eq!(h.snapshot().backends.len(), 1);
        // Weight changes apply in place.
        tx.send(Update::Add(BackendSpec::new(addr(2), 9))).await.unwrap();
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
        let h = Monitor::spawn(cfg(), Arc::new(Slow), vec![Box::new(Fixed::new(vec![BackendSpec::new(addr(1), 1)]))]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!h.is_ready());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(h.is_ready());
    }

    /// Reports `n` gateway failures in a row on every listed backend, as a data plane would.
    fn fail(h: &MonitorHandle, ids: &[u8], n: u32) {
        for i in ids {
            let b = h.snapshot().get(&addr(*i).to_string()).unwrap().backend.clone();
            b.stats.gateway_failure(crate::backend::GatewayFailure::Http503, n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_ejection_cap_holds_on_1_2_3_and_10_backends() {
        for (n, most) in [(1u8, 0usize), (2, 1), (3, 1), (10, 5)] {
            let h = spawn(Arc::new(ScriptedCheck::default()), n);
            h.wait_ready().await;
            fail(&h, &(1..=n).collect::<Vec<_>>(), 5);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let set = h.snapshot();
            let ejected = set.backends.iter().filter(|b| b.state() == State::Ejected).count();
            assert_eq!(ejected, most, "{n} backends all failing: {most} may be out");
            assert_eq!(set.panic, None, "the cap keeps half serving, so no panic");
            let refused = h.events().iter().filter(|e| e.reason.contains("over the 50 % cap")).count();
            assert_eq!(refused, usize::from(n) - most, "each refusal is logged once");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drained_backends_do_not_count_toward_the_cap() {
        let h = spawn(Arc::new(ScriptedCheck::default()), 4);
        h.wait_ready().await;
        h.drain(&addr(1).to_string()).await.unwrap();
        h.drain(&addr(2).to_string()).await.unwrap();
        // Two countable backends: one of them may go, and draining never made room for more.
        fail(&h, &[3, 4], 5);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let states: Vec<State> = h.snapshot().backends.iter().map(BackendView::state).collect();
        assert_eq!(states.iter().filter(|s| **s == State::Ejected).count(), 1, "{states:?}");
        assert_eq!(states.iter().filter(|s| **s == State::Draining).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ejected_backend_returns_through_probation_and_slow_start() {
        let h = spawn(Arc::new(ScriptedCheck::default()), 3);
        h.wait_ready().await;
        fail(&h, &[1], 4);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(state_of(&h, 1), State::Healthy, "four in a row is not five");
        fail(&h, &[1], 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = h.snapshot().get(&addr(1).to_string()).unwrap().clone();
        assert_eq!(v.state(), State::Ejected);
        assert!(
            v.reason.starts_with("outlier: 5 consecutive gateway errors, last: http 503; ejected for 30.0s"),
            "{}",
            v.reason
        );
        assert_eq!(h.snapshot().eligible().count(), 2);
        // Probes keep passing, yet it stays out for its ejection time.
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(state_of(&h, 1), State::Ejected);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let b = h.snapshot().get(&addr(1).to_string()).unwrap().backend.clone();
        assert_eq!(state_of(&h, 1), State::Probation);
        assert!(b.admit(), "probation takes one request");
        assert!(!b.admit(), "and only one");
        b.stats.passive_ok();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let v = h.snapshot().get(&addr(1).to_string()).unwrap().clone();
        assert_eq!(v.state(), State::SlowStart);
        assert!(v.effective_weight < 10 && b.admit(), "ramping, gate open");
        tokio::time::sleep(Duration::from_secs(11)).await;
        let v = h.snapshot().get(&addr(1).to_string()).unwrap().clone();
        assert_eq!((v.state(), v.effective_weight, v.ejections), (State::Healthy, 10, 1));
        let words: Vec<String> =
            h.events().iter().filter(|e| e.backend.is_some()).map(|e| format!("{:?}", e.to)).collect();
        assert_eq!(
            &words[..4],
            ["Some(Healthy)", "Some(SlowStart)", "Some(Probation)", "Some(Ejected)"],
            "newest first"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn panic_mode_engages_and_disengages_at_the_threshold() {
        let check = Arc::new(ScriptedCheck::default());
        let h = spawn(check.clone(), 4);
        h.wait_ready().await;
        let mut rx = h.subscribe();
        for i in 1..=2 {
            check.cycle(addr(i), &[false]);
        }
        rx.wait_for(|s| s.eligible().count() == 2).await.unwrap();
        assert_eq!(h.snapshot().panic, None, "2 of 4 is the threshold, not below it");
        check.cycle(addr(3), &[false]);
        rx.wait_for(|s| s.panic.is_some()).await.unwrap();
        let set = h.snapshot();
        assert_eq!(set.panic, Some(Panic { usable: 1, total: 4 }));
        assert_eq!(set.serving().count(), 4, "traffic spreads over all four");
        assert!(set.get(&addr(1).to_string()).unwrap().reason.starts_with("panic: 1 of 4 usable; health:"));
        check.cycle(addr(3), &[true]);
        rx.wait_for(|s| s.panic.is_none()).await.unwrap();
        let events = h.events();
        let service: Vec<&str> = events.iter().filter(|e| e.backend.is_none()).map(|e| e.reason.as_str()).collect();
        assert_eq!(service.len(), 2, "engaged and over, logged: {service:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn probes_go_to_the_health_port_and_speed_up_when_suspect() {
        let check = Arc::new(ScriptedCheck::default());
        let mut c = cfg();
        c.health.port = Some(9);
        let h = Monitor::spawn(c, check.clone(), vec![Box::new(Fixed::new(vec![BackendSpec::new(addr(1), 1)]))]);
        h.wait_ready().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let seen = check.seen.lock().unwrap().clone();
        assert!(seen.iter().all(|a| *a == SocketAddr::from(([10, 0, 0, 1], 9))), "{seen:?}");
        assert!((5..=6).contains(&seen.len()), "every 2 s while healthy: {seen:?}");
        let next = h.snapshot().backends[0].next_probe.get().expect("scheduled");
        assert!(next > SystemTime::now() - Duration::from_secs(1), "the schedule is current");
        // One failed probe: the next ones come at the fast pace (500 ms) until it passes again.
        check.scripts.lock().unwrap().insert(SocketAddr::from(([10, 0, 0, 1], 9)), VecDeque::from([false]));
        let before = check.seen.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(2600)).await;
        let after = check.seen.lock().unwrap().len();
        assert!(after - before >= 3, "{} probes in 2.6 s after a failure", after - before);
        assert_eq!(state_of(&h, 1), State::Healthy, "one failure of three is not a fall");
    }
}
