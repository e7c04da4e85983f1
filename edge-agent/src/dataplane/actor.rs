//! The dataplane actor: the one owner of the loaded eBPF object and the only writer of its maps.
//!
//! It follows each service's backend snapshots and strategy (the same watch channels the userspace
//! balancer reads) and keeps the kernel in step:
//! - every known backend (healthy or not, draining or not) has an entry in the backends map, so
//!   its established flows keep flowing; a backend that discovery removed loses its entry, and its
//!   id is reused only after a conntrack sweep found no flow still pointing at it;
//! - the service's Maglev table holds the eligible backends (healthy, not draining) with the
//!   strategy's weights (see `weights`). A new table is written into the generation the data path
//!   is not reading, then the service entry flips to it in one map update;
//! - every sweep (`SWEEP_INTERVAL`) it expires idle and closed flows, counts live flows per backend
//!   for least-connections and the `edge_ebpf_flows` gauge.
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
use tokio::sync::watch;

use super::kmaps::Maps;
use super::loader::Loaded;
use super::netinfo;
use super::sweep::{self, SweepConfig};
use super::weights::{self, Member};
use crate::backend::BackendSet;
use crate::balance::StrategySpec;
use crate::balance::maglev::{self, Member as MaglevMember};
use crate::config::Vip;
use crate::health::MonitorHandle;
use crate::metrics::Metrics;

/// How often conntrack is swept (and least-connections weights refreshed).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// A service the actor programs.
#[derive(Debug)]
pub struct ServiceInput {
    /// Its address.
    pub vip: Vip,
    /// Its backends (and their health).
    pub monitor: MonitorHandle,
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
    /// Remove the pins when the actor stops.
    pub cleanup: bool,
}

/// A map write failed.
#[derive(Debug, thiserror::Error)]
#[error("writing the eBPF map {map} failed: {reason}")]
pub struct WriteError {
    map: &'static str,
    reason: String,
}

fn werr(map: &'static str) -> impl Fn(aya::maps::MapError) -> WriteError {
    move |e| WriteError { map, reason: super::error_chain(&e) }
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
pub struct Actor {
    cfg: ActorConfig,
    maps: Maps,
    services: Vec<Service>,
    /// Ids in use (by this agent's backends, or by an earlier agent's flows).
    used: BTreeSet<u32>,
    /// Ids whose backend left; free once a sweep finds no flow using them.
    retiring: BTreeSet<u32>,
    /// Live flows per backend id, from the last sweep.
    flows: HashMap<u32, u64>,
    metrics: Arc<Metrics>,
    _loaded: Loaded,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor").field("services", &self.services.len()).finish_non_exhaustive()
    }
}

impl Actor {
    /// Prepares the actor: writes the settings, claims the services and adopts the ids an earlier
    /// agent left in the backends map.
    pub fn new(
        loaded: Loaded,
        maps: Maps,
        cfg: ActorConfig,
        inputs: Vec<ServiceInput>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, WriteError> {
        let clock = loaded.clock;
        let mut actor = Self {
            cfg,
            maps,
            services: Vec::new(),
            used: BTreeSet::new(),
            retiring: BTreeSet::new(),
            flows: HashMap::new(),
            metrics,
            _loaded: loaded,
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
        actor.maps.settings.set(0, settings, 0).map_err(werr("settings"))?;

        // Backends an earlier agent wrote: keep their ids so that adopted flows still resolve.
        let adopted: Vec<(u32, BackendValue)> = (1..actor.maps.backends.len())
            .filter_map(|i| actor.maps.backends.get(&i, 0).ok().map(|b| (i, b)))
            .filter(|(_, b)| b.flags & BE_ACTIVE != 0)
            .collect();
        let keys: Vec<ServiceKey> = inputs.iter().map(|i| service_key(i.vip)).collect();
        let service_ids = actor.service_ids(&keys)?;
        for ((input, key), id) in inputs.into_iter().zip(keys).zip(service_ids) {
            let mut ids = HashMap::new();
            for (kid, b) in adopted.iter().filter(|(_, b)| b.service == id) {
                ids.insert(super::kmaps::backend_addr(b), *kid);
            }
            // The live generation of an adopted service stays live until the first new table.
            let live = actor.maps.services.get(&key, 0).map(|v| v.generation).unwrap_or(0);
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
            actor.maps.services.keys().filter_map(Result::ok).filter(|k| !keep.contains(k)).collect();
        for k in stale {
            let _ = actor.maps.services.remove(&k);
        }
        Ok(actor)
    }

    /// A service id per key, see [`assign_service_ids`].
    fn service_ids(&self, keys: &[ServiceKey]) -> Result<Vec<u32>, WriteError> {
        let earlier: BTreeSet<u32> = self.maps.services.iter().filter_map(Result::ok).map(|(_, v)| v.id).collect();
        let old: Vec<Option<u32>> = keys.iter().map(|k| self.maps.services.get(k, 0).ok().map(|v| v.id)).collect();
        assign_service_ids(&old, &earlier).ok_or_else(|| WriteError {
            map: "services",
            reason: format!("more than {} services; the maps hold no more", edge_common::MAX_SERVICES),
        })
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sets: Vec<watch::Receiver<Arc<BackendSet>>> =
            self.services.iter().map(|s| s.input.monitor.subscribe()).collect();
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
                tokio::select! {
                    _ = crate::proxy::stopped(&mut shutdown) => break,
                    _ = tick.tick() => true,
                    _ = first_of(futs) => false,
                }
            };
            if tick_fired {
                self.sweep();
            }
        }
        let cleanup = self.cfg.cleanup;
        // Closes the maps and the object; the pinned links keep the programs attached.
        drop(self);
        if cleanup {
            match super::pins::cleanup() {
                Ok(removed) => {
                    tracing::info!(pins = removed.len(), "--cleanup: detached the programs and removed the pinned maps")
                }
                Err(e) => tracing::error!(error = %e, "--cleanup failed; run `edge-agent cleanup`"),
            }
        } else {
            tracing::info!(
                "the eBPF programs stay attached and keep steering established flows until the next agent adopts them"
            );
        }
    }

    fn sweep(&mut self) {
        let report = sweep::sweep(&mut self.maps, &self.cfg.sweep);
        for (reason, n) in &report.expired {
            self.metrics.ebpf_expired.get_or_create(&crate::metrics::ReasonLabel { reason }).inc_by(*n);
        }
        self.flows = report.live;
        // Retired ids with no flow left can be handed out again.
        let free: Vec<u32> = self.retiring.iter().copied().filter(|i| !report.referenced.contains(i)).collect();
        for i in free {
            self.retiring.remove(&i);
            self.used.remove(&i);
        }
        // The gauge is labelled by backend address only: a backend that several services list has
        // one kernel id per service, and its series is their sum.
        let mut per_backend: HashMap<&str, u64> = HashMap::new();
        for s in &self.services {
            for (name, id) in &s.ids {
                *per_backend.entry(name).or_insert(0) += self.flows.get(id).copied().unwrap_or(0);
            }
        }
        for (name, n) in per_backend {
            self.metrics
                .ebpf_flows
                .get_or_create(&crate::metrics::BackendLabel { backend: name.to_string() })
                .set(n as i64);
        }
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
    fn sync(&mut self, index: usize) -> Result<(), WriteError> {
        let set = self.services[index].input.monitor.snapshot();
        let spec = self.services[index].input.strategy.borrow().clone();
        let ready = self.services[index].input.monitor.is_ready();
        let svc_id = self.services[index].id;

        // Backends: every one in the snapshot has an entry; those gone from it lose theirs (but
        // only once the monitor is ready, so an adopting agent does not cut flows of backends
        // its discovery has not reported yet).
        let mut present: Vec<String> = Vec::new();
        for b in &set.backends {
            let IpAddr::V4(addr) = b.shared.addr.ip() else { continue };
            let name = b.shared.addr.to_string();
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
            let snat = *self.services[index].snat.entry(name.clone()).or_insert_with(|| snat_for(addr, &name));
            let value = backend_value(addr, snat, b.shared.addr.port(), svc_id);
            if self.maps.backends.get(&id, 0).ok() != Some(value) {
                self.maps.backends.set(id, value, 0).map_err(werr("backends"))?;
                tracing::debug!(backend = %name, id, snat = %super::kmaps::ip(value.snat_addr), "backend programmed");
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
                self.maps.backends.set(id, BackendValue::default(), 0).map_err(werr("backends"))?;
                self.services[index].ids.remove(&name);
                self.retiring.insert(id);
                if !self.services.iter().any(|s| s.ids.contains_key(&name)) {
                    self.metrics.ebpf_flows.remove(&crate::metrics::BackendLabel { backend: name.clone() });
                }
                tracing::info!(backend = %name, id, "backend removed from the eBPF maps");
            }
        }
        if !ready {
            // Keep whatever table is live (an earlier agent's) until the first probe round.
            return Ok(());
        }

        let eligible: Vec<(u32, String, u32, u64)> = set
            .eligible()
            .filter_map(|b| {
                let name = b.shared.addr.to_string();
                let id = *self.services[index].ids.get(&name)?;
                Some((id, name, b.weight, self.flows.get(&id).copied().unwrap_or(0)))
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

    fn write_table(&mut self, index: usize, members: &[Member], source_only: bool) -> Result<(), WriteError> {
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
                    let i = table_index(svc.id, next, size, slot as u32);
                    self.maps.maglev.set(i, *id, 0).map_err(werr("maglev"))?;
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
        self.maps.services.insert(svc.key, value, 0).map_err(werr("services"))?;
        svc.tables[next as usize] = if table.is_empty() { svc.tables[next as usize].take() } else { Some(table) };
        svc.live = next;
        self.metrics.ebpf_table_swaps.inc();
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

fn snat_for(addr: Ipv4Addr, name: &str) -> Ipv4Addr {
    netinfo::source_for(addr).unwrap_or_else(|e| {
        tracing::error!(backend = name, error = %e, "no route to the backend; its flows will be dropped (drop_no_route)");
        Ipv4Addr::UNSPECIFIED
    })
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
    use super::*;

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
