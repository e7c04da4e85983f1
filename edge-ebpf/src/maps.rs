//! The maps, named and laid out by `edge-common`. All are pinned by name, so an agent that starts
//! again adopts them (and with them the established flows) instead of creating new ones. The sizes
//! here are placeholders for the ones the agent sets at load time.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};
use edge_common::{
    BackendValue, Counters, EVENTS_LEN, FlowKey, FlowValue, MAX_BACKENDS, MAX_SERVICES, NatKey, NatValue, NextHop,
    ServiceKey, ServiceValue, Settings,
};

/// (VIP, port, protocol) → service.
#[map(name = "EDGE_SVC_V2")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICES * 2, 0);

/// Backend id → backend; id 0 is never written ("none").
#[map(name = "EDGE_BACKENDS_V2")]
pub static BACKENDS: Array<BackendValue> = Array::pinned(MAX_BACKENDS, 0);

/// Two generations of Maglev table per service (see `edge_common::table_index`).
#[map(name = "EDGE_MAGLEV_V2")]
pub static MAGLEV: Array<u32> = Array::pinned(1, 0);

/// Client-side conntrack.
#[map(name = "EDGE_CT_V2")]
pub static CONNTRACK: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(1, 0);

/// Reverse NAT for replies; its keys are also the SNAT port reservations.
#[map(name = "EDGE_REVNAT_V2")]
pub static REVNAT: LruHashMap<NatKey, NatValue> = LruHashMap::pinned(1, 0);

/// Per-CPU counters by service id.
#[map(name = "EDGE_SVC_STATS_V2")]
pub static SERVICE_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(MAX_SERVICES + 1, 0);

/// Per-CPU counters by backend id.
#[map(name = "EDGE_BE_STATS_V2")]
pub static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::pinned(MAX_BACKENDS, 0);

/// Per-CPU packet counts by `edge_common::Event`.
#[map(name = "EDGE_EVENTS_V2")]
pub static EVENTS: PerCpuArray<u64> = PerCpuArray::pinned(EVENTS_LEN, 0);

/// The agent's settings (one entry).
#[map(name = "EDGE_SETTINGS_V2")]
pub static SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// Counts one packet under `event`.
#[inline(always)]
pub fn count(event: edge_common::Event) {
    if let Some(p) = EVENTS.get_ptr_mut(event as u32) {
        // SAFETY: this CPU's slot of a per-CPU array; nothing else writes it concurrently.
        unsafe { *p += 1 };
    }
}

/// Adds a packet of `bytes` (and a new flow if `new_flow`) to a counters slot.
#[inline(always)]
pub fn add(map: &PerCpuArray<Counters>, index: u32, bytes: u64, new_flow: bool) {
    if let Some(p) = map.get_ptr_mut(index) {
        // SAFETY: as above.
        unsafe {
            (*p).packets += 1;
            (*p).bytes += bytes;
            if new_flow {
                (*p).new_flows += 1;
            }
        }
    }
}

/// Per-CPU next-hop cache by backend id (not pinned: a new agent's program refills it at once).
#[map(name = "EDGE_NEXTHOP_V2")]
pub static NEXTHOP: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);
