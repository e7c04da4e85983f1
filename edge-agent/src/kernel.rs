//! The kernel's counters as an operator reads them, for the metrics and the admin API alike: per
//! service (named as configured, not by VIP), per backend, and per data-path event, read from the
//! pinned maps when asked. Nothing here is on the data path; the maps are opened at the first read
//! in eBPF mode, since the dataplane actor creates the pins only once it starts.

use std::sync::Mutex;

use edge_common::Counters;
use edge_core::service::Vip;
use edge_dataplane::PinnedMaps;

/// Reads the pinned maps and names what it finds.
#[derive(Debug)]
pub struct Kernel {
    /// Every service with a VIP, by name.
    services: Vec<(String, Vip)>,
    maps: Mutex<Option<PinnedMaps>>,
}

/// One service's kernel counters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceCounters {
    /// The service's name (or `VIP/proto` for one the configuration does not name).
    pub service: String,
    /// Packets steered.
    pub packets: u64,
    /// Bytes steered.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
}

/// One backend's kernel counters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendCounters {
    /// The service's name.
    pub service: String,
    /// The backend's `ip:port`.
    pub backend: String,
    /// Packets steered.
    pub packets: u64,
    /// Bytes steered.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
}

/// What the kernel counted, at one moment.
#[derive(Debug, Clone, Default)]
pub struct KernelView {
    /// Per service.
    pub services: Vec<ServiceCounters>,
    /// Per backend.
    pub backends: Vec<BackendCounters>,
    /// Per data-path event: its name, whether it is a drop, and the count.
    pub events: Vec<(&'static str, bool, u64)>,
}

impl Kernel {
    /// A reader that names kernel services after `services` (name and VIP).
    pub fn new(services: Vec<(String, Vip)>) -> Self {
        Self { services, maps: Mutex::new(None) }
    }

    /// The counters now, or `None` while the pins do not exist yet.
    pub fn view(&self) -> Option<KernelView> {
        let mut guard = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = PinnedMaps::open().ok();
        }
        let maps = guard.as_ref()?;
        let name_of = |vip: &str, proto: &str| -> String {
            self.services
                .iter()
                .find(|(_, v)| v.socket_addr().to_string() == vip && v.proto.number() == proto_number(proto))
                .map_or_else(|| format!("{vip}/{proto}"), |(name, _)| name.clone())
        };
        let rows = maps.service_rows();
        let names: std::collections::HashMap<u32, String> =
            rows.iter().map(|s| (s.id, name_of(&s.vip, s.proto))).collect();
        let services = rows.iter().map(|s| service_counters(names[&s.id].clone(), &s.stats)).collect();
        let backends = maps
            .backend_rows()
            .iter()
            .map(|b| {
                let service = names.get(&b.service).cloned().unwrap_or_default();
                let (packets, bytes, new_flows) = (b.stats.packets, b.stats.bytes, b.stats.new_flows);
                BackendCounters { service, backend: b.addr.clone(), packets, bytes, new_flows }
            })
            .collect();
        let events = maps.event_counts().iter().map(|(ev, n)| (ev.name(), ev.is_drop(), *n)).collect();
        Some(KernelView { services, backends, events })
    }
}

fn service_counters(service: String, c: &Counters) -> ServiceCounters {
    ServiceCounters { service, packets: c.packets, bytes: c.bytes, new_flows: c.new_flows }
}

fn proto_number(name: &str) -> u8 {
    match name {
        "udp" => edge_common::PROTO_UDP,
        _ => edge_common::PROTO_TCP,
    }
}
