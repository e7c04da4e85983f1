//! The pinned maps under `/sys/fs/bpf/edge`, opened with aya: the product's implementation of
//! [`KernelMaps`] (the dataplane actor opens them to write; it is the only writer), and read-only
//! rows for `edge-agent maps` and the metrics exporter's kernel counters.

use std::net::SocketAddrV4;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use edge_common::{
    BE_ACTIVE, BackendValue, Counters, EVENTS_LEN, Event, FlowKey, FlowValue, NatKey, NatValue, ServiceKey,
    ServiceValue, Settings, map_names,
};
use edge_core::util::error_chain;
use serde::Serialize;

use crate::clock::monotonic_ns;
use crate::kmaps::{KernelMaps, MapError, backend_addr, ip};
use crate::pins;

/// A map could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open the pinned map {name} in /sys/fs/bpf/edge: {reason}; is an agent running in eBPF mode (or did one run)?"
)]
pub struct OpenError {
    name: &'static str,
    reason: String,
}

/// Every map of the data path.
pub struct PinnedMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: Array<MapData, BackendValue>,
    maglev: Array<MapData, u32>,
    conntrack: HashMap<MapData, FlowKey, FlowValue>,
    revnat: HashMap<MapData, NatKey, NatValue>,
    service_stats: PerCpuArray<MapData, Counters>,
    backend_stats: PerCpuArray<MapData, Counters>,
    events: PerCpuArray<MapData, u64>,
    settings: Array<MapData, Settings>,
}

impl std::fmt::Debug for PinnedMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedMaps").finish_non_exhaustive()
    }
}

pub(crate) fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(name: &'static str) -> Result<T, OpenError> {
    let e = |reason: String| OpenError { name, reason };
    let data = MapData::from_pin(pins::map_dir().join(name)).map_err(|x| e(error_chain(&x)))?;
    let map = Map::from_map_data(data).map_err(|x| e(error_chain(&x)))?;
    T::try_from(map).map_err(|x| e(error_chain(&x)))
}

impl PinnedMaps {
    /// Opens every pinned map.
    pub fn open() -> Result<Self, OpenError> {
        Ok(Self {
            services: open(map_names::SERVICES)?,
            backends: open(map_names::BACKENDS)?,
            maglev: open(map_names::MAGLEV)?,
            conntrack: open(map_names::CONNTRACK)?,
            revnat: open(map_names::REVNAT)?,
            service_stats: open(map_names::SERVICE_STATS)?,
            backend_stats: open(map_names::BACKEND_STATS)?,
            events: open(map_names::EVENTS)?,
            settings: open(map_names::SETTINGS)?,
        })
    }

    /// Services with a port (port-0 entries that an earlier layout wrote are left out).
    pub fn service_rows(&self) -> Vec<ServiceRow> {
        let mut out: Vec<ServiceRow> = self
            .services
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.port != 0)
            .map(|(k, v)| ServiceRow {
                id: v.id,
                vip: SocketAddrV4::new(ip(k.addr), u16::from_be(k.port)).to_string(),
                proto: proto_name(k.proto),
                hash: if v.flags & edge_common::SVC_HASH_SOURCE != 0 { "source" } else { "five-tuple" },
                generation: v.generation,
                table_size: v.table_size,
                backends: v.backends,
                stats: self.counters(&self.service_stats, v.id),
            })
            .collect();
        out.sort_by_key(|s| s.id);
        out
    }

    /// Backends present in the map.
    pub fn backend_rows(&self) -> Vec<BackendRow> {
        (1..self.backends.len())
            .filter_map(|i| self.backends.get(&i, 0).ok().map(|b| (i, b)))
            .filter(|(_, b)| b.flags & BE_ACTIVE != 0)
            .map(|(id, b)| BackendRow {
                id,
                service: b.service,
                addr: backend_addr(&b),
                snat_addr: ip(b.snat_addr).to_string(),
                stats: self.counters(&self.backend_stats, id),
            })
            .collect()
    }

    /// The live Maglev table of a service: backend id per slot.
    pub fn table(&self, service: u32) -> Option<(ServiceValue, Vec<u32>)> {
        let v = self.services.iter().filter_map(Result::ok).map(|(_, v)| v).find(|v| v.id == service)?;
        if v.table_size == 0 {
            return Some((v, Vec::new()));
        }
        let slots = (0..v.table_size)
            .map(|s| {
                let i = edge_common::table_index(v.id, v.generation, v.table_size, s);
                self.maglev.get(&i, 0).unwrap_or(0)
            })
            .collect();
        Some((v, slots))
    }

    /// Conntrack entries, at most `limit`.
    pub fn flow_rows(&self, limit: usize) -> Vec<FlowRow> {
        let now = monotonic_ns();
        self.conntrack
            .iter()
            .filter_map(Result::ok)
            .take(limit)
            .map(|(k, v)| FlowRow {
                client: SocketAddrV4::new(ip(k.src_addr), u16::from_be(k.src_port)).to_string(),
                vip: SocketAddrV4::new(ip(k.dst_addr), u16::from_be(k.dst_port)).to_string(),
                proto: proto_name(k.proto),
                backend: v.backend,
                nat_port: u16::from_be(v.nat_port),
                state: state_name(v.state),
                idle_ms: now.saturating_sub(v.last_seen_ns) / 1_000_000,
                age_ms: now.saturating_sub(v.created_ns) / 1_000_000,
            })
            .collect()
    }

    /// Sum over CPUs of one counters slot.
    fn counters(&self, map: &PerCpuArray<MapData, Counters>, index: u32) -> Counters {
        let mut t = Counters::default();
        if let Ok(values) = map.get(&index, 0) {
            for c in values.iter() {
                t.packets += c.packets;
                t.bytes += c.bytes;
                t.new_flows += c.new_flows;
            }
        }
        t
    }

    /// Every event counter, summed over CPUs.
    pub fn event_counts(&self) -> Vec<(Event, u64)> {
        Event::ALL
            .iter()
            .take(EVENTS_LEN as usize)
            .map(|e| (*e, self.events.get(&(*e as u32), 0).map(|v| v.iter().sum()).unwrap_or(0)))
            .collect()
    }
}

/// A service as the kernel sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceRow {
    /// Id.
    pub id: u32,
    /// VIP:port.
    pub vip: String,
    /// tcp or udp.
    pub proto: &'static str,
    /// What the Maglev lookup hashes.
    pub hash: &'static str,
    /// Live table generation.
    pub generation: u32,
    /// Table size.
    pub table_size: u32,
    /// Backends in the live table.
    pub backends: u32,
    /// Counters.
    #[serde(flatten, with = "counters_serde")]
    pub stats: Counters,
}

/// A backend as the kernel sees it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendRow {
    /// Kernel id.
    pub id: u32,
    /// Service id.
    pub service: u32,
    /// ip:port.
    pub addr: String,
    /// Local address flows to it leave from.
    pub snat_addr: String,
    /// Counters.
    #[serde(flatten, with = "counters_serde")]
    pub stats: Counters,
}

/// A conntrack entry.
#[derive(Debug, Clone, Serialize)]
pub struct FlowRow {
    /// Client ip:port.
    pub client: String,
    /// VIP:port.
    pub vip: String,
    /// tcp or udp.
    pub proto: &'static str,
    /// Backend id.
    pub backend: u32,
    /// SNAT port.
    pub nat_port: u16,
    /// new, established, closing (client closed first), time_wait (backend closed first).
    pub state: &'static str,
    /// Since the last packet (coarse, 1 s).
    pub idle_ms: u64,
    /// Since the flow began.
    pub age_ms: u64,
}

mod counters_serde {
    use serde::ser::SerializeMap;

    pub fn serialize<S: serde::Serializer>(c: &edge_common::Counters, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("packets", &c.packets)?;
        m.serialize_entry("bytes", &c.bytes)?;
        m.serialize_entry("new_flows", &c.new_flows)?;
        m.end()
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        edge_common::PROTO_TCP => "tcp",
        edge_common::PROTO_UDP => "udp",
        _ => "?",
    }
}

fn state_name(s: u8) -> &'static str {
    match s {
        edge_common::CT_NEW => "new",
        edge_common::CT_ESTABLISHED => "established",
        edge_common::CT_CLOSING => "closing",
        edge_common::CT_TIME_WAIT => "time_wait",
        edge_common::CT_REFUSED => "refused",
        _ => "?",
    }
}

fn werr(map: &'static str) -> impl Fn(aya::maps::MapError) -> MapError {
    move |e| MapError { map, reason: error_chain(&e) }
}

impl KernelMaps for PinnedMaps {
    fn set_settings(&mut self, settings: Settings) -> Result<(), MapError> {
        self.settings.set(0, settings, 0).map_err(werr("settings"))
    }

    fn backend_slots(&self) -> u32 {
        self.backends.len()
    }

    fn backend(&self, id: u32) -> Option<BackendValue> {
        self.backends.get(&id, 0).ok()
    }

    fn set_backend(&mut self, id: u32, value: BackendValue) -> Result<(), MapError> {
        self.backends.set(id, value, 0).map_err(werr("backends"))
    }

    fn services(&self) -> Vec<(ServiceKey, ServiceValue)> {
        self.services.iter().filter_map(Result::ok).collect()
    }

    fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
        self.services.get(key, 0).ok()
    }

    fn set_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), MapError> {
        self.services.insert(key, value, 0).map_err(werr("services"))
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), MapError> {
        self.services.remove(key).map_err(werr("services"))
    }

    fn set_slot(&mut self, index: u32, backend: u32) -> Result<(), MapError> {
        self.maglev.set(index, backend, 0).map_err(werr("maglev"))
    }

    fn for_each_flow(&self, f: &mut dyn FnMut(&FlowKey, &FlowValue)) {
        for (k, v) in self.conntrack.iter().filter_map(Result::ok) {
            f(&k, &v);
        }
    }

    fn remove_flow(&mut self, key: &FlowKey) {
        let _ = self.conntrack.remove(key);
    }

    fn remove_nat(&mut self, key: &NatKey) {
        let _ = self.revnat.remove(key);
    }
}
