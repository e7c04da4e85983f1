//! Typed handles on the pinned maps, opened from `/sys/fs/bpf/edge`, and read-only views of them.
//! The dataplane actor opens them to write (it is the only writer); `edge-agent maps` and the
//! Prometheus collector open them to read.

use std::net::{Ipv4Addr, SocketAddrV4};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use edge_common::{
    BE_ACTIVE, BackendValue, Counters, EVENTS_LEN, Event, FlowKey, FlowValue, NatKey, NatValue, ServiceKey,
    ServiceValue, Settings, map_names,
};
use serde::Serialize;

use super::pins;

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
pub struct Maps {
    /// Services.
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    /// Backends.
    pub backends: Array<MapData, BackendValue>,
    /// Maglev tables.
    pub maglev: Array<MapData, u32>,
    /// Conntrack.
    pub conntrack: HashMap<MapData, FlowKey, FlowValue>,
    /// Reverse NAT.
    pub revnat: HashMap<MapData, NatKey, NatValue>,
    /// Per-service counters.
    pub service_stats: PerCpuArray<MapData, Counters>,
    /// Per-backend counters.
    pub backend_stats: PerCpuArray<MapData, Counters>,
    /// Events.
    pub events: PerCpuArray<MapData, u64>,
    /// Settings.
    pub settings: Array<MapData, Settings>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps").finish_non_exhaustive()
    }
}

fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(name: &'static str) -> Result<T, OpenError> {
    let e = |reason: String| OpenError { name, reason };
    let data = MapData::from_pin(pins::map_dir().join(name)).map_err(|x| e(super::error_chain(&x)))?;
    let map = Map::from_map_data(data).map_err(|x| e(super::error_chain(&x)))?;
    T::try_from(map).map_err(|x| e(super::error_chain(&x)))
}

impl Maps {
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
    pub fn services(&self) -> Vec<ServiceRow> {
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
    pub fn backends(&self) -> Vec<BackendRow> {
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
    pub fn flows(&self, limit: usize) -> Vec<FlowRow> {
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
    pub fn counters(&self, map: &PerCpuArray<MapData, Counters>, index: u32) -> Counters {
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
    pub fn events(&self) -> Vec<(Event, u64)> {
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

/// An address from the maps' network-order `u32`.
pub fn ip(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

/// The `ip:port` of a backend value.
pub fn backend_addr(b: &BackendValue) -> String {
    SocketAddrV4::new(ip(b.addr), u16::from_be(b.port)).to_string()
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
        _ => "?",
    }
}

/// CLOCK_MONOTONIC in ns, which the data path's clock follows to within a tick or two (see
/// `super::clock`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
