//! The dataplane actor: the one owner of the loaded eBPF object and the only writer of its maps.
//!
//! It follows each service's backend snapshots and strategy (the same watch channels the userspace
//! balancer reads) and keeps the kernel in step, through [`KernelMaps`]:
//! - every known backend (healthy or not, draining or not) has an entry in the backends map, so
//!   its established flows keep flowing; a backend that discovery removed loses its entry, and its
//!   id is reused only after a conntrack sweep found no flow still pointing at it;
//! - the service's Maglev table holds the eligible backends (healthy, not draining) with the
//!   strategy's weights (see `weights`). A new table is written into the generation the data path
//!   is not reading, then the service entry flips to it in one map update;
//! - every sweep (`SWEEP_INTERVAL`) it expires idle and closed flows, counts live flows per backend
//!   for least-connections and the `edge_ebpf_flows` gauge, and records them in each backend's
//!   `active` count, which is what keeps a backend that discovery removed draining (in the
//!   snapshot, in the backends map, out of the table) until its flows end or `--drain-timeout`.
//!
//! A table write is a few syscalls per changed slot; Maglev's minimal disruption keeps that small,
//! and the first fill of a 65537-slot table takes tens of milliseconds.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use edge_common::{BE_ACTIVE, BackendValue, SVC_HASH_SOURCE, ServiceKey, ServiceValue, Settings, table_index};
use edge_core::backend::{BackendSet, GatewayFailure};
use edge_core::balance::StrategySpec;
use edge_core::balance::maglev::{self, Member as MaglevMember};
use edge_core::service::Vip;
use edge_core::util::stopped;
use tokio::sync::watch;

use crate::clock::{Calibration, monotonic_ns};
use crate::kmaps::{KernelMaps, MapError, backend_addr, ip};
use crate::links::Links;
use crate::netinfo;
use crate::stats::{DataplaneStats, FlowCount};
use crate::sweep::{self, SweepConfig};
use crate::synwatch::SynWatch;
use crate::weights::{self, Member};

/// How often conntrack is swept (and least-connections weights refreshed).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// A service the actor programs.
#[derive(Debug)]
pub struct ServiceInput {
    /// Its name (metric labels).
    pub name: String,
    /// Its address.
    pub vip: Vip,
    /// Its backends and their health (the health monitor's snapshots).
    pub backends: watch::Receiver<Arc<BackendSet>>,
    /// Turns true once its monitor finished the first discovery and probe round.
    pub ready: watch::Receiver<bool>,
    /// Its strategy.
    pub strategy: watch::Receiver<StrategySpec>,
}

/// Actor settings.
#[derive(Debug, Clone)]
pub struct ActorConfig {
    /// Maglev table size.
    pub table_size: u32,
    /// SNAT port range (inclusive).
    pub snat_ports: (u16, u16),
    /// Sweep timeouts.
    pub sweep: SweepConfig,
    /// Remove the pins when the actor stops (after draining, up to `drain_timeout`).
    pub cleanup: bool,
    /// Longest wait, at a `--cleanup` stop, for established flows to end before the programs are
    /// detached.
    pub drain_timeout: Duration,
    /// The data path's clock, for the settings.
    pub clock: Calibration,
}

struct Service {
    id: u32,
    input: ServiceInput,
    key: ServiceKey,
    /// Kernel ids of this service's backends, by `ip:port`.
    ids: HashMap<String, u32>,
    /// The table contents of each generation as last written (None: unknown, write all).
    tables: [Option<Vec<u32>>; 2],
    live: u32,
    last_members: Option<(Vec<Member>, bool)>,
    /// The local address each backend is reached from, looked up once.
    snat: HashMap<String, Ipv4Addr>,
}

/// The actor's state.
pub struct Actor<M: KernelMaps> {
    cfg: ActorConfig,
    maps: M,
    services: Vec<Service>,
    /// Ids in use (by this agent's backends, or by an earlier agent's flows).
    used: BTreeSet<u32>,
    /// Ids whose backend left, with the value it had (for its flows' reverse-NAT keys); free once
    /// a sweep finds no flow using them.
    retiring: HashMap<u32, BackendValue>,
    /// What the kernel's SYNs came to, between sweeps.
    syns: SynWatch,
    /// Live flows per backend id, from the last sweep.
    flows: HashMap<u32, u64>,
    /// Set at a `--cleanup` stop: every table empties (no new flows) while established ones end.
    stopping: bool,
    stats: Arc<DataplaneStats>,
    /// Attaches the TC program toward new backends' interfaces (none in tests).
    links: Option<Box<dyn Links>>,
}

impl<M: KernelMaps> std::fmt::Debug for Actor<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor").field("services", &self.services.len()).finish_non_exhaustive()
    }
}

impl<M: KernelMaps> Actor<M> {
    /// Prepares the actor: writes the settings, claims the services and adopts the ids an earlier
    /// agent left in the backends map.
    pub fn new(
        maps: M,
        cfg: ActorConfig,
        inputs: Vec<ServiceInput>,
        stats: Arc<DataplaneStats>,
    ) -> Result<Self, MapError> {
        let clock = cfg.clock;
        let mut actor = Self {
            cfg,
            maps,
            services: Vec::new(),
            used: BTreeSet::new(),
            retiring: HashMap::new(),
            syns: SynWatch::default(),
            flows: HashMap::new(),
            stopping: false,
            stats,
            links: None,
        };
        let (lo, hi) = actor.cfg.snat_ports;
        let mut vips = [0u32; edge_common::MAX_SERVICES as usize];
        let mut vip_count = 0;
        for addr in inputs.iter().map(|i| u32::from(i.vip.addr).to_be()) {
            if !vips[..vip_count].contains(&addr) && vip_count < vips.len() {
                vips[vip_count] = addr;
                vip_count += 1;
            }
        }
        let settings = Settings {
            nat_port_min: u32::from(lo),
            nat_port_count: u32::from(hi - lo) + 1,
            udp_timeout_ns: actor.cfg.sweep.udp_timeout.as_nanos() as u64,
            vip_count: vip_count as u32,
            _pad: 0,
            vips,
            clock_ns_per_tick: clock.ns_per_tick,
            clock_offset_ns: clock.offset_ns,
        };
        actor.maps.set_settings(settings)?;

        // Backends an earlier agent wrote: keep their ids so that adopted flows still resolve.
        let adopted: Vec<(u32, BackendValue)> = (1..actor.maps.backend_slots())
            .filter_map(|i| actor.maps.backend(i).map(|b| (i, b)))
            .filter(|(_, b)| b.flags & BE_ACTIVE != 0)
            .collect();
        let keys: Vec<ServiceKey> = inputs.iter().map(|i| service_key(i.vip)).collect();
        let service_ids = actor.service_ids(&keys)?;
        for ((input, key), id) in inputs.into_iter().zip(keys).zip(service_ids) {
            let mut ids = HashMap::new();
            for (kid, b) in adopted.iter().filter(|(_, b)| b.service == id) {
                ids.insert(backend_addr(b), *kid);
            }
            // The live generation of an adopted service stays live until the first new table.
            let live = actor.maps.service(&key).map(|v| v.generation).unwrap_or(0);
            actor.services.push(Service {
                id,
                input,
                key,
                ids,
                tables: [None, None],
                live,
                last_members: None,
                snat: HashMap::new(),
            });
        }
        actor.used = adopted.iter().map(|(i, _)| *i).collect();
        // Services of an earlier configuration that this one does not have.
        // (Earlier layouts also wrote a per-VIP catch-all entry, port 0; the VIP list in the
        // settings replaced it, so such entries go too.)
        let keep: Vec<ServiceKey> = actor.services.iter().map(|s| s.key).collect();
        let stale: Vec<ServiceKey> =
            actor.maps.services().into_iter().map(|(k, _)| k).filter(|k| !keep.contains(k)).collect();
        for k in stale {
            let _ = actor.maps.remove_service(&k);
        }
        Ok(actor)
    }

    /// A service id per key, see [`assign_service_ids`].
    fn service_ids(&self, keys: &[ServiceKey]) -> Result<Vec<u32>, MapError> {
        let earlier: BTreeSet<u32> = self.maps.services().into_iter().map(|(_, v)| v.id).collect();
        let old: Vec<Option<u32>> = keys.iter().map(|k| self.maps.service(k).map(|v| v.id)).collect();
        assign_service_ids(&old, &earlier).ok_or_else(|| MapError {
            map: "services",
            reason: format!("more than {} services; the maps hold no more", edge_common::MAX_SERVICES),
        })
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sets: Vec<watch::Receiver<Arc<BackendSet>>> =
            self.services.iter().map(|s| s.input.backends.clone()).collect();
        let mut readies: Vec<watch::Receiver<bool>> = self.services.iter().map(|s| s.input.ready.clone()).collect();
        let mut strategies: Vec<watch::Receiver<StrategySpec>> =
            self.services.iter().map(|s| s.input.strategy.clone()).collect();
        loop {
            self.sync_all();
            let tick_fired = {
                let mut futs: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = Vec::new();
                for c in sets.iter_mut() {
                    futs.push(Box::pin(async move { changed_or_forever(c.changed().await.is_ok()).await }));
                }
                for c in strategies.iter_mut() {
                    futs.push(Box::pin(async move { changed_or_forever(c.changed().await.is_ok()).await }));
                }
                for c in readies.iter_mut() {
                    futs.push(Box::pin(async move { changed_or_forever(c.changed().await.is_ok()).await }));
                }
                tokio::select! {
                    _ = stopped(&mut shutdown) => break,
                    _ = tick.tick() => true,
                    _ = first_of(futs) => false,
                }
            };
            if tick_fired {
                self.sweep();
            }
        }
        let cleanup = self.cfg.cleanup;
        if cleanup {
            self.drain().await;
        }
        // Closes this agent's descriptors of the maps (the caller holds the loaded object until the
        // actor returns); the pinned links keep the programs attached.
        drop(self);
        if cleanup {
            match crate::pins::cleanup() {
                Ok(removed) => {
                    tracing::info!(pins = removed.len(), "--cleanup: detached the programs and removed the pinned maps")
                }
                Err(e) => tracing::error!(error = %e, "--cleanup failed; run `edge-agent cleanup`"),
            }
        } else if crate::pins::outlive_agent() {
            tracing::info!(
                "the eBPF programs stay attached and keep steering established flows until the next agent adopts them"
            );
        } else {
            tracing::warn!(
                "this agent mounted /sys/fs/bpf in a mount namespace of its own (as under `ip netns exec`), which goes \
                 away with it: the eBPF programs are detached now and established flows end; run the agent with \
                 `nsenter --net=/run/netns/NAME` to keep them across restarts"
            );
        }
    }

    /// Before a `--cleanup` stop detaches the programs: no new flows (every table empties), and
    /// established flows get up to `drain_timeout` to end, as the userspace plane's connections do.
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + self.cfg.drain_timeout;
        self.stopping = true;
        self.sync_all();
        loop {
            self.sweep();
            let live: u64 = self.flows.values().sum();
            if live == 0 {
                tracing::info!("no established flow left; detaching the eBPF programs");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(flows = live, "drain timeout; detaching the eBPF programs with flows still open");
                return;
            }
            tracing::info!(flows = live, "waiting for established flows to end before detaching");
            tokio::time::sleep(SWEEP_INTERVAL).await;
        }
    }

    fn sweep(&mut self) {
        let report = sweep::sweep(&mut self.maps, &self.cfg.sweep, monotonic_ns(), &self.retiring, &mut self.syns);
        for (reason, n) in &report.expired {
            self.stats.expired(*reason, *n);
        }
        self.flows = report.live;
        // Retired ids with no flow left can be handed out again.
        let free: Vec<u32> = self.retiring.keys().copied().filter(|i| !report.referenced.contains(i)).collect();
        for i in free {
            self.retiring.remove(&i);
            self.used.remove(&i);
        }
        let mut counts = Vec::new();
        for s in &self.services {
            for (backend, id) in &s.ids {
                let flows = self.flows.get(id).copied().unwrap_or(0);
                counts.push(FlowCount { service: s.input.name.clone(), backend: backend.clone(), flows });
            }
            // The backends' own `active` includes their kernel flows, so that a removed backend
            // drains (the monitor keeps it while flows live) and the admin API shows them.
            for b in &s.input.backends.borrow().backends {
                let id = s.ids.get(&b.backend.addr.to_string());
                let stats = &b.backend.stats;
                stats.set_kernel_flows(id.and_then(|i| self.flows.get(i)).copied().unwrap_or(0));
                // The kernel's passive signals, into the counters outlier detection reads. Within
                // one sweep the order is unknown; successes go first, so a sweep with failures
                // ends on them (the cautious reading).
                if let Some(o) = id.and_then(|i| report.syns.get(i)) {
                    stats.passive_ok_n(o.answered);
                    let n = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
                    stats.gateway_failure(GatewayFailure::SynRefused, n(o.refused));
                    stats.gateway_failure(GatewayFailure::SynUnanswered, n(o.unanswered));
                }
            }
        }
        counts.sort_by(|a, b| (&a.service, &a.backend).cmp(&(&b.service, &b.backend)));
        self.stats.set_flows(counts);
    }

    /// Takes over what attaches the TC program on interfaces found at run time.
    pub fn with_links(mut self, links: Box<dyn Links>) -> Self {
        self.links = Some(links);
        self
    }

    /// Looks up how a new backend is reached: the local address that becomes its SNAT address, and
    /// the interface toward it, where the TC program must steer its replies. A backend no
    /// interface leads to is logged and listed in the stats (the admin API shows it); its flows
    /// are dropped (`drop_no_route`).
    fn reach(&mut self, addr: Ipv4Addr, name: &str) -> Ipv4Addr {
        let src = match netinfo::source_for(addr) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(backend = name, error = %e, "no route to the backend; its flows will be dropped (drop_no_route)");
                self.stats.set_unreachable(name, Some(format!("{e}; its flows are dropped (drop_no_route)")));
                return Ipv4Addr::UNSPECIFIED;
            }
        };
        self.stats.set_unreachable(name, None);
        if let Some(links) = self.links.as_mut() {
            match netinfo::iface_of(src) {
                Ok(Some(iface)) => match links.ensure_tc(&iface) {
                    Ok(true) => tracing::info!(backend = name, iface, "attached the TC program toward a new backend"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(backend = name, iface, error = %e, "cannot attach toward this backend; its replies will not be steered");
                        self.stats.set_unreachable(name, Some(format!("cannot attach the TC program on {iface}: {e}")));
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(backend = name, error = %e, "cannot find the interface toward this backend"),
            }
        }
        src
    }

    fn sync_all(&mut self) {
        for i in 0..self.services.len() {
            if let Err(e) = self.sync(i) {
                tracing::error!(error = %e, "programming the eBPF maps failed; the data path keeps its last state");
            }
        }
    }

    fn alloc(&mut self) -> Option<u32> {
        let id = (1..edge_common::MAX_BACKENDS).find(|i| !self.used.contains(i))?;
        self.used.insert(id);
        Some(id)
    }

    /// Brings one service's backends, table and entry in line with its snapshot and strategy.
    fn sync(&mut self, index: usize) -> Result<(), MapError> {
        let set = self.services[index].input.backends.borrow().clone();
        let spec = self.services[index].input.strategy.borrow().clone();
        let ready = *self.services[index].input.ready.borrow();
        let svc_id = self.services[index].id;

        // Backends: every one in the snapshot has an entry; those gone from it lose theirs (but
        // only once the monitor is ready, so an adopting agent does not cut flows of backends
        // its discovery has not reported yet).
        let mut present: Vec<String> = Vec::new();
        for b in &set.backends {
            let IpAddr::V4(addr) = b.backend.addr.ip() else { continue };
            let name = b.backend.addr.to_string();
            present.push(name.clone());
            let id = match self.services[index].ids.get(&name) {
                Some(id) => *id,
                None => {
                    let Some(id) = self.alloc() else {
                        tracing::error!(backend = %name, "no free backend id; raise MAX_BACKENDS");
                        continue;
                    };
                    self.services[index].ids.insert(name.clone(), id);
                    id
                }
            };
            let snat = match self.services[index].snat.get(&name) {
                Some(s) => *s,
                None => {
                    if let Some(p) = b.backend.proxy() {
                        // Discovery can name such a backend at run time; the configuration refuses
                        // fixed ones. The kernel forwards packets and opens no connection of its own.
                        tracing::warn!(backend = %name, proxy = p.as_str(), "this backend asks for the PROXY protocol, which the eBPF data plane cannot send; its flows reach it without a header");
                    }
                    let s = self.reach(addr, &name);
                    self.services[index].snat.insert(name.clone(), s);
                    s
                }
            };
            let value = backend_value(addr, snat, b.backend.addr.port(), svc_id);
            if self.maps.backend(id) != Some(value) {
                self.maps.set_backend(id, value)?;
                tracing::debug!(backend = %name, id, snat = %ip(value.snat_addr), "backend programmed");
            }
        }
        if ready {
            let gone: Vec<(String, u32)> = self.services[index]
                .ids
                .iter()
                .filter(|(n, _)| !present.contains(n))
                .map(|(n, i)| (n.clone(), *i))
                .collect();
            for (name, id) in gone {
                let last = self.maps.backend(id).unwrap_or_default();
                self.maps.set_backend(id, BackendValue::default())?;
                self.services[index].ids.remove(&name);
                self.retiring.insert(id, last);
                tracing::info!(backend = %name, id, "backend removed from the eBPF maps");
            }
        }
        if !ready {
            // Keep whatever table is live (an earlier agent's) until the first probe round.
            return Ok(());
        }

        // The backends the monitor says serve: the usable ones, or every one not gone in panic
        // mode; with slow start's weights.
        let eligible: Vec<(u32, String, u32, u64)> = set
            .serving()
            .filter(|_| !self.stopping)
            .filter_map(|b| {
                let name = b.backend.addr.to_string();
                let id = *self.services[index].ids.get(&name)?;
                Some((id, name, b.selection_weight(), self.flows.get(&id).copied().unwrap_or(0)))
            })
            .collect();
        let members = weights::members(&spec, &eligible);
        let source_only = weights::hash_source_only(&spec);
        let state = (members.clone(), source_only);
        if self.services[index].last_members.as_ref() == Some(&state) {
            return Ok(());
        }
        self.write_table(index, &members, source_only)?;
        self.services[index].last_members = Some(state);
        Ok(())
    }

    fn write_table(&mut self, index: usize, members: &[Member], source_only: bool) -> Result<(), MapError> {
        let size = self.cfg.table_size;
        let svc = &mut self.services[index];
        let table: Vec<u32> = if members.is_empty() {
            Vec::new()
        } else {
            let mm: Vec<MaglevMember<'_>> =
                members.iter().map(|m| MaglevMember { name: &m.name, weight: m.weight }).collect();
            maglev::build_table(&mm, size).into_iter().map(|i| members[i as usize].id).collect()
        };
        let next = 1 - svc.live.min(1);
        let mut written = 0usize;
        if !table.is_empty() {
            let old = svc.tables[next as usize].take();
            for (slot, id) in table.iter().enumerate() {
                if old.as_ref().and_then(|o| o.get(slot)) != Some(id) {
                    self.maps.set_slot(table_index(svc.id, next, size, slot as u32), *id)?;
                    written += 1;
                }
            }
        }
        let value = ServiceValue {
            id: svc.id,
            flags: if source_only { SVC_HASH_SOURCE } else { 0 },
            generation: next,
            table_size: size,
            backends: members.len() as u32,
            _pad: 0,
        };
        self.maps.set_service(svc.key, value)?;
        svc.tables[next as usize] = if table.is_empty() { svc.tables[next as usize].take() } else { Some(table) };
        svc.live = next;
        self.stats.table_swapped();
        tracing::info!(
            service = %svc.input.vip,
            backends = members.len(),
            generation = next,
            slots_written = written,
            hash = if source_only { "source" } else { "five-tuple" },
            "maglev table swapped in"
        );
        Ok(())
    }
}

/// Service ids (1..=MAX_SERVICES) for services whose keys had the ids `old` in the services map
/// of an earlier agent (`earlier`: every id that map holds). A VIP keeps its earlier id: its
/// adopted backends and its live table are filed under it, so services added, removed or
/// reordered in the configuration across a restart leave the others' flows and tables alone. New
/// VIPs take the lowest id no earlier service used, else the lowest free one. `None` when there
/// are more services than ids.
fn assign_service_ids(old: &[Option<u32>], earlier: &BTreeSet<u32>) -> Option<Vec<u32>> {
    let valid = 1..=edge_common::MAX_SERVICES;
    let mut taken = BTreeSet::new();
    // An earlier id is kept unless out of range or already kept by another key.
    let mut ids: Vec<Option<u32>> =
        old.iter().map(|o| o.filter(|id| valid.contains(id) && taken.insert(*id))).collect();
    for id in ids.iter_mut().filter(|id| id.is_none()) {
        let unused = valid.clone().find(|i| !taken.contains(i) && !earlier.contains(i));
        let free = unused.or_else(|| valid.clone().find(|i| !taken.contains(i)))?;
        taken.insert(free);
        *id = Some(free);
    }
    ids.into_iter().collect()
}

fn service_key(vip: Vip) -> ServiceKey {
    ServiceKey { addr: u32::from(vip.addr).to_be(), port: vip.port.to_be(), proto: vip.proto.number(), _pad: 0 }
}

fn backend_value(addr: Ipv4Addr, snat: Ipv4Addr, port: u16, service: u32) -> BackendValue {
    BackendValue {
        addr: u32::from(addr).to_be(),
        snat_addr: u32::from(snat).to_be(),
        port: port.to_be(),
        _pad: 0,
        flags: BE_ACTIVE,
        service,
    }
}

/// A closed channel never fires again (instead of firing in a loop).
async fn changed_or_forever(ok: bool) {
    if !ok {
        std::future::pending::<()>().await;
    }
}

/// Resolves when the first of `futs` does.
async fn first_of(mut futs: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>>) {
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if f.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use edge_common::{CT_ESTABLISHED, FlowKey, FlowValue, NatKey, NatValue, PROTO_TCP};
    use edge_core::backend::{Backend, BackendView, Health};
    use edge_core::balance::{HashKey, StrategyKind};

    use super::*;
    use crate::mem::MemMaps;
    use crate::stats::Expiry;

    /// A small prime keeps tables cheap to compare.
    const SIZE: u32 = 251;

    fn vip() -> Vip {
        "127.0.0.1:80".parse().unwrap()
    }

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8000 + i))
    }

    /// A snapshot with the backends `(port, health)`.
    fn set(backends: &[(u16, Health)]) -> Arc<BackendSet> {
        let backends = backends
            .iter()
            .map(|(i, health)| BackendView::probed(Arc::new(Backend::new(addr(*i))), 1, *health))
            .collect();
        Arc::new(BackendSet { backends, generation: 0, panic: None })
    }

    /// The channels a service's monitor and balancer would drive.
    struct Feeds {
        backends: watch::Sender<Arc<BackendSet>>,
        ready: watch::Sender<bool>,
        strategy: watch::Sender<StrategySpec>,
    }

    fn service(initial: Arc<BackendSet>) -> (ServiceInput, Feeds) {
        let (backends, b) = watch::channel(initial);
        let (ready, r) = watch::channel(false);
        let rr = StrategySpec { kind: StrategyKind::RoundRobin, hash_key: HashKey::Source };
        let (strategy, s) = watch::channel(rr);
        let input = ServiceInput { name: "web".into(), vip: vip(), backends: b, ready: r, strategy: s };
        (input, Feeds { backends, ready, strategy })
    }

    fn cfg() -> ActorConfig {
        ActorConfig {
            table_size: SIZE,
            snat_ports: (16384, 32767),
            sweep: SweepConfig::new(Duration::from_secs(30), Duration::from_secs(3600)),
            cleanup: false,
            drain_timeout: Duration::from_secs(20),
            clock: Calibration { hz: 250, ns_per_tick: 4_000_000, offset_ns: 0 },
        }
    }

    /// Starts the actor on `maps`; returns the shutdown switch and its counters.
    fn start(maps: &MemMaps, input: ServiceInput) -> (watch::Sender<bool>, Arc<DataplaneStats>) {
        let stats = Arc::new(DataplaneStats::default());
        let actor = Actor::new(maps.clone(), cfg(), vec![input], stats.clone()).unwrap();
        let (stop, rx) = watch::channel(false);
        tokio::spawn(actor.run(rx));
        (stop, stats)
    }

    /// Lets the actor handle what was sent (paused time advances only when every task waits).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    /// The backend id per `ip:port` in the backends map.
    fn ids(maps: &MemMaps) -> HashMap<String, u32> {
        let s = maps.state();
        (1..s.backends.len() as u32)
            .filter(|i| s.backends[*i as usize].flags & BE_ACTIVE != 0)
            .map(|i| (backend_addr(&s.backends[i as usize]), i))
            .collect()
    }

    /// The live table of the service: backend id per slot.
    fn live_table(maps: &MemMaps) -> Vec<u32> {
        let s = maps.state();
        let v = s.services.values().next().copied().expect("a service entry");
        (0..v.table_size).map(|slot| s.maglev[&table_index(v.id, v.generation, v.table_size, slot)]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn backends_get_ids_at_once_but_the_table_waits_for_the_first_probe_round() {
        let maps = MemMaps::new(16);
        let (input, feeds) = service(set(&[(1, Health::Healthy), (2, Health::Healthy), (3, Health::Unhealthy)]));
        let (_stop, stats) = start(&maps, input);
        settle().await;
        let got = ids(&maps);
        assert_eq!(got.len(), 3, "every known backend is in the map, healthy or not: {got:?}");
        assert_eq!(got.values().copied().collect::<BTreeSet<u32>>(), BTreeSet::from([1, 2, 3]));
        assert!(maps.state().services.is_empty(), "no table before the monitor is ready");
        assert_eq!(maps.state().settings.map(|s| s.nat_port_count), Some(16384));

        feeds.ready.send_replace(true);
        settle().await;
        let table = live_table(&maps);
        let entry = *maps.state().services.values().next().unwrap();
        assert_eq!((entry.id, entry.generation, entry.backends, entry.table_size), (1, 1, 2, SIZE));
        let unhealthy = got[&addr(3).to_string()];
        assert!(!table.contains(&unhealthy), "an unhealthy backend leaves the table");
        assert_eq!(table.iter().collect::<BTreeSet<_>>().len(), 2);
        assert_eq!((maps.state().slot_writes, stats.table_swaps()), (SIZE as usize, 1));
        drop(feeds);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_goes_to_the_other_generation_and_writes_only_the_slots_that_differ() {
        let maps = MemMaps::new(16);
        let all = [(1, Health::Healthy), (2, Health::Healthy), (3, Health::Healthy)];
        let (input, feeds) = service(set(&all));
        feeds.ready.send_replace(true);
        let (_stop, stats) = start(&maps, input);
        settle().await;
        let first = live_table(&maps);
        let gens = |m: &MemMaps| m.state().service_writes.iter().map(|(_, v)| v.generation).collect::<Vec<_>>();
        assert_eq!(gens(&maps), [1]);

        // Backend 3 fails: a full write into generation 0 (never written), then the flip.
        feeds.backends.send_replace(set(&[(1, Health::Healthy), (2, Health::Healthy), (3, Health::Unhealthy)]));
        settle().await;
        assert_eq!(gens(&maps), [1, 0]);
        assert_eq!(maps.state().slot_writes, 2 * SIZE as usize);
        let second = live_table(&maps);
        let three = ids(&maps)[&addr(3).to_string()];
        let kept = first.iter().zip(&second).filter(|(a, _)| **a != three);
        let others_moved = kept.clone().filter(|(a, b)| a != b).count();
        assert!(!second.contains(&three), "backend 3 left the table");
        assert!(others_moved * 20 <= kept.count(), "at most 5 % of the other slots moved: {others_moved}");

        // It recovers: generation 1 still holds the first table, so nothing is written but the flip.
        feeds.backends.send_replace(set(&all));
        settle().await;
        assert_eq!(gens(&maps), [1, 0, 1]);
        assert_eq!(maps.state().slot_writes, 2 * SIZE as usize, "no slot differs");
        assert_eq!(live_table(&maps), first);

        // A strategy switch that changes nothing in the table flips nothing either.
        let same = feeds.strategy.borrow().clone();
        feeds.strategy.send_replace(same);
        settle().await;
        assert_eq!((gens(&maps).len(), stats.table_swaps()), (3, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_backend_keeps_its_id_until_a_sweep_finds_no_flow_on_it() {
        let maps = MemMaps::new(16);
        let (input, feeds) = service(set(&[(1, Health::Healthy), (2, Health::Healthy)]));
        feeds.ready.send_replace(true);
        let (_stop, stats) = start(&maps, input);
        settle().await;
        let before = ids(&maps);
        let (one, two) = (before[&addr(1).to_string()], before[&addr(2).to_string()]);
        // One flow on each backend, with its reverse-NAT entry.
        let now = monotonic_ns();
        for (port, id) in [(40001u16, one), (40002, two)] {
            let key = FlowKey::new(0x0a00_0001, 0x7f00_0001, port.to_be(), 80u16.to_be(), PROTO_TCP);
            let value = FlowValue {
                backend: id,
                nat_port: port.to_be(),
                state: CT_ESTABLISHED,
                _pad: 0,
                last_seen_ns: now,
                created_ns: now,
            };
            let be = maps.state().backends[id as usize];
            let nat = NatKey::for_backend(&be, port.to_be(), PROTO_TCP);
            let mut s = maps.state();
            s.conntrack.insert(key, value);
            s.revnat.insert(nat, NatValue::default());
        }
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let flows = stats.flows();
        assert_eq!(flows.iter().map(|f| (f.service.as_str(), f.flows)).collect::<Vec<_>>(), [("web", 1), ("web", 1)]);
        // The backends' own active counts carry the kernel flows (drain reaping and the admin API
        // read them).
        for b in &feeds.backends.borrow().backends {
            assert_eq!(b.backend.stats.active(), 1, "{}", b.backend.id);
        }

        // Backend 2 leaves and backend 3 arrives before any sweep: 3 must not get 2's id.
        feeds.backends.send_replace(set(&[(1, Health::Healthy), (3, Health::Healthy)]));
        settle().await;
        let after = ids(&maps);
        assert!(!after.contains_key(&addr(2).to_string()), "the removed backend left the map");
        assert_ne!(after[&addr(3).to_string()], two, "a retiring id is not handed out");
        assert_eq!(maps.state().backends[two as usize], BackendValue::default());

        // The next sweep removes the flow of the removed backend (and its NAT entry) and frees
        // the id, which the next new backend gets.
        tokio::time::sleep(SWEEP_INTERVAL).await;
        assert_eq!(stats.expirations(Expiry::BackendRemoved), 1);
        let left = {
            let s = maps.state();
            (s.conntrack.len(), s.revnat.len())
        };
        assert_eq!(left, (1, 1), "the other backend's flow and NAT entry stay");
        feeds.backends.send_replace(set(&[(1, Health::Healthy), (3, Health::Healthy), (4, Health::Healthy)]));
        settle().await;
        assert_eq!(ids(&maps)[&addr(4).to_string()], two, "the freed id is reused");
    }

    #[tokio::test(start_paused = true)]
    async fn an_adopting_agent_keeps_ids_and_the_live_table_until_it_is_ready() {
        let maps = MemMaps::new(16);
        let key = service_key(vip());
        let stale = service_key("127.0.0.1:81".parse().unwrap());
        {
            let mut s = maps.state();
            // An earlier agent's service 3, live in generation 1, with backend 8001 as id 7.
            s.backends[7] = backend_value(std::net::Ipv4Addr::LOCALHOST, std::net::Ipv4Addr::LOCALHOST, 8001, 3);
            let v = ServiceValue { id: 3, flags: 0, generation: 1, table_size: SIZE, backends: 1, _pad: 0 };
            s.services.insert(key, v);
            s.services.insert(stale, ServiceValue { id: 5, ..v });
            for slot in 0..SIZE {
                s.maglev.insert(table_index(3, 1, SIZE, slot), 7);
            }
        }
        let (input, feeds) = service(set(&[(1, Health::Healthy), (2, Health::Healthy)]));
        let (_stop, _) = start(&maps, input);
        settle().await;
        assert!(!maps.state().services.contains_key(&stale), "a service of the old configuration goes");
        assert_eq!(maps.state().services[&key].generation, 1, "the adopted table stays live");
        assert_eq!(ids(&maps)[&addr(1).to_string()], 7, "an adopted backend keeps its id");
        assert_eq!(maps.state().slot_writes, 0);

        feeds.ready.send_replace(true);
        settle().await;
        let entry = maps.state().services[&key];
        assert_eq!((entry.id, entry.generation, entry.backends), (3, 0, 2), "its own table, in the other generation");
        let table = live_table(&maps);
        assert!(table.contains(&7) && table.iter().collect::<BTreeSet<_>>().len() == 2);
    }

    #[test]
    fn service_ids_stay_with_their_vips() {
        let none = BTreeSet::new();
        assert_eq!(assign_service_ids(&[None, None, None], &none), Some(vec![1, 2, 3]), "a fresh start");
        let earlier: BTreeSet<u32> = [1, 2].into();
        // Reordered: each VIP keeps its id; a new VIP skips the ids earlier services used.
        assert_eq!(assign_service_ids(&[Some(2), None, Some(1)], &earlier), Some(vec![2, 3, 1]));
        // A removed service's id is reused only when nothing else is free.
        let full: BTreeSet<u32> = (1..=16).collect();
        assert_eq!(assign_service_ids(&[None, Some(5)], &full), Some(vec![1, 5]));
        // Out-of-range or duplicate earlier ids are replaced.
        assert_eq!(assign_service_ids(&[Some(0), Some(99), Some(3), Some(3)], &none), Some(vec![1, 2, 3, 4]));
        assert_eq!(assign_service_ids(&[None; 17], &none), None);
        assert_eq!(assign_service_ids(&[None; 16], &none).map(|v| v.len()), Some(16));
    }
}
