//! Prometheus export of the kernel's per-CPU counters, read from the pinned maps at scrape time
//! (summed over CPUs): packets, bytes and new flows per service and per backend, and every data
//! path event, drops by reason among them.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use super::kmaps::Maps;

/// Reads the maps at each scrape.
#[derive(Debug, Default)]
pub struct KernelCollector {
    maps: Mutex<Option<Maps>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> Result<(), std::fmt::Error> {
    let mut me = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(me.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut guard = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            // The actor creates the pins at start; until then there is nothing to export.
            *guard = Maps::open().ok();
        }
        let Some(maps) = guard.as_ref() else { return Ok(()) };
        let services = maps.services();
        let names: std::collections::HashMap<u32, String> =
            services.iter().map(|s| (s.id, format!("{}/{}", s.vip, s.proto))).collect();
        let svc = |f: fn(&edge_common::Counters) -> u64| -> Vec<(ServiceLabels, u64)> {
            services.iter().map(|s| (ServiceLabels { service: names[&s.id].clone() }, f(&s.stats))).collect()
        };
        family(
            &mut encoder,
            "edge_ebpf_service_packets",
            "Packets steered by the kernel per service",
            &svc(|c| c.packets),
        )?;
        family(&mut encoder, "edge_ebpf_service_bytes", "Bytes steered by the kernel per service", &svc(|c| c.bytes))?;
        family(&mut encoder, "edge_ebpf_service_new_flows", "New flows per service", &svc(|c| c.new_flows))?;
        let backends = maps.backends();
        let be = |f: fn(&edge_common::Counters) -> u64| -> Vec<(BackendLabels, u64)> {
            backends
                .iter()
                .map(|b| {
                    let service = names.get(&b.service).cloned().unwrap_or_default();
                    (BackendLabels { backend: b.addr.clone(), service }, f(&b.stats))
                })
                .collect()
        };
        family(
            &mut encoder,
            "edge_ebpf_backend_packets",
            "Packets steered by the kernel per backend",
            &be(|c| c.packets),
        )?;
        family(&mut encoder, "edge_ebpf_backend_bytes", "Bytes steered by the kernel per backend", &be(|c| c.bytes))?;
        family(&mut encoder, "edge_ebpf_backend_new_flows", "New flows per backend", &be(|c| c.new_flows))?;
        let events = maps.events();
        let all: Vec<(EventLabels, u64)> = events.iter().map(|(e, n)| (EventLabels { event: e.name() }, *n)).collect();
        family(&mut encoder, "edge_ebpf_events", "Packets seen by the data path, by what happened to them", &all)?;
        let drops: Vec<(ReasonLabels, u64)> = events
            .iter()
            .filter(|(e, _)| e.is_drop())
            .map(|(e, n)| (ReasonLabels { reason: e.name().trim_start_matches("drop_") }, *n))
            .collect();
        family(&mut encoder, "edge_ebpf_drops", "Packets the data path dropped, by reason", &drops)?;
        Ok(())
    }
}
