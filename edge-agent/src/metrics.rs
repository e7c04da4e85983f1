//! Prometheus metrics: an exporter that reads, at scrape time, the state the rest of the agent
//! owns — each backend's counters (`edge_core::backend::BackendStats`), each service's monitor,
//! balancer and traffic counters, the proxy's and the dataplane actor's counters, and the kernel's
//! per-CPU counters from the pinned maps. It holds no state of its own, so nothing the data path
//! touches is behind its locks, and a backend's series go when the backend goes.
//!
//! Names carry the `edge_` prefix and base units; label values come from enums or from names the
//! operator chose (service, backend address), never from a client. Per-backend and per-service
//! series carry a `service` label.

use std::sync::Arc;

use edge_core::backend::{BackendView, Direction, Failure, GatewayFailure, ProbeResult, State, StatusClass};
use edge_core::balance::{Plane, StrategyKind};
use edge_core::histogram::Snapshot;
use edge_dataplane::{DataplaneStats, Expiry};
use edge_proxy::{Admission, ClientError, ListenerKind, NoBackend, ProxyStats, RetryOutcome, RetryReason};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::kernel::{BackendCounters, Kernel, ServiceCounters};
use crate::service::ServiceHandle;

/// What the exporter reads.
#[derive(Debug)]
pub struct Sources {
    /// Every service.
    pub services: Vec<ServiceHandle>,
    /// The userspace proxy's counters.
    pub proxy: Arc<ProxyStats>,
    /// The userspace proxy's request budget.
    pub admission: Arc<Admission>,
    /// The data plane that runs.
    pub plane: Plane,
    /// Whether this host can run the eBPF data plane, as far as is known.
    pub ebpf_capable: bool,
    /// The dataplane actor's counters (eBPF mode).
    pub dataplane: Option<Arc<DataplaneStats>>,
    /// The ECS task, when the agent runs in one.
    pub ecs: Option<crate::ecs::Task>,
    /// The kernel's counters (eBPF mode).
    pub kernel: Option<Arc<Kernel>>,
}

/// The registry, with the exporter in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// An exporter over `sources`.
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Exporter { sources }));
        Self { registry }
    }

    /// Renders the OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[derive(Debug)]
struct Exporter {
    sources: Sources,
}

type Result = std::result::Result<(), std::fmt::Error>;

fn counter<L: EncodeLabelSet>(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, rows: &[(L, u64)]) -> Result {
    let mut me = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(me.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge<L: EncodeLabelSet>(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, rows: &[(L, i64)]) -> Result {
    let mut me = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(me.encode_family(labels)?)?;
    }
    Ok(())
}

fn histogram<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(L, Snapshot)],
) -> Result {
    let mut me = e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, s) in rows {
        me.encode_family(labels)?.encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &s.per_bucket, None)?;
    }
    Ok(())
}

type Labels<'a, const N: usize> = [(&'static str, &'a str); N];

/// What to export of one backend: (value of the third label if any, value) pairs.
type Values<'a> = &'a dyn Fn(&BackendView) -> Vec<(Option<&'static str>, u64)>;

/// A per-backend value: service, backend, the value of a third label if any, the value.
type Row<'a> = (&'a str, &'a str, Option<&'static str>, u64);

/// Rows labelled by service and backend.
fn sb<'a>(rows: &[Row<'a>]) -> Vec<(Labels<'a, 2>, u64)> {
    rows.iter().map(|(svc, be, _, v)| ([("service", *svc), ("backend", *be)], *v)).collect()
}

/// Rows labelled by service, backend and `key`.
fn sbk<'a>(key: &'static str, rows: &[Row<'a>]) -> Vec<(Labels<'a, 3>, u64)> {
    rows.iter()
        .map(|(svc, be, k, v)| ([("service", *svc), ("backend", *be), (key, k.unwrap_or_default())], *v))
        .collect()
}

/// The label set of a metric without labels.
const NO_LABELS: [(&str, &str); 0] = [];

impl Collector for Exporter {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result {
        let s = &self.sources;
        let snaps: Vec<_> = s.services.iter().map(|svc| (svc, svc.monitor.snapshot())).collect();
        // One row per backend of every service, labelled by both.
        let per_backend = |f: Values<'_>| {
            let mut rows = Vec::new();
            for (svc, snap) in &snaps {
                for b in &snap.backends {
                    for (kind, v) in f(b) {
                        rows.push((svc.name.as_str(), &*b.backend.id, kind, v));
                    }
                }
            }
            rows
        };

        // Requests, by backend and status class; requests no backend could take as backend "none".
        let req = per_backend(&|b| {
            StatusClass::ALL.iter().map(|c| (Some(c.as_str()), b.backend.stats.requests(*c))).collect()
        });
        let mut rows = sbk("class", &req);
        let none: Vec<(String, u64)> =
            s.services.iter().map(|svc| (svc.name.clone(), svc.traffic.unrouted_requests())).collect();
        for (svc, n) in &none {
            rows.push(([("service", svc.as_str()), ("backend", "none"), ("class", "5xx")], *n));
        }
        counter(&mut e, "edge_requests", "HTTP requests by service, backend and status class", &rows)?;

        let durations: Vec<(Labels<'_, 2>, Snapshot)> = snaps
            .iter()
            .flat_map(|(svc, snap)| {
                snap.backends.iter().map(|b| {
                    ([("service", svc.name.as_str()), ("backend", &*b.backend.id)], b.backend.stats.duration.snapshot())
                })
            })
            .collect();
        histogram(&mut e, "edge_request_duration", "Time from request head to response head, by backend", &durations)?;

        let states =
            per_backend(&|b| State::ALL.iter().map(|st| (Some(st.as_str()), u64::from(b.state() == *st))).collect());
        let rows: Vec<(Labels<'_, 3>, i64)> = sbk("state", &states).into_iter().map(|(l, v)| (l, v as i64)).collect();
        gauge(&mut e, "edge_backend_state", "Backend state, one-hot", &rows)?;

        let weights = per_backend(&|b| vec![(None, u64::from(b.weight))]);
        let rows: Vec<(Labels<'_, 2>, i64)> = sb(&weights).into_iter().map(|(l, v)| (l, v as i64)).collect();
        gauge(&mut e, "edge_backend_weight", "Backend weight", &rows)?;

        let probes =
            per_backend(&|b| ProbeResult::ALL.iter().map(|r| (Some(r.as_str()), b.backend.stats.probes(*r))).collect());
        counter(&mut e, "edge_health_checks", "Health probe results by backend", &sbk("kind", &probes))?;

        let probe_durations: Vec<(Labels<'_, 2>, Snapshot)> = snaps
            .iter()
            .flat_map(|(svc, snap)| {
                snap.backends.iter().map(|b| {
                    (
                        [("service", svc.name.as_str()), ("backend", &*b.backend.id)],
                        b.backend.stats.probe_duration.snapshot(),
                    )
                })
            })
            .collect();
        histogram(&mut e, "edge_health_check_duration", "Health probe duration by backend", &probe_durations)?;

        let transitions = per_backend(&|b| {
            State::ALL.iter().map(|st| (Some(st.as_str()), b.backend.stats.transitions(*st))).collect()
        });
        counter(
            &mut e,
            "edge_backend_transitions",
            "Backend state transitions by new state",
            &sbk("kind", &transitions),
        )?;

        let active = per_backend(&|b| vec![(None, u64::try_from(b.backend.stats.active()).unwrap_or(0))]);
        let rows: Vec<(Labels<'_, 2>, i64)> = sb(&active).into_iter().map(|(l, v)| (l, v as i64)).collect();
        gauge(
            &mut e,
            "edge_backend_active_connections",
            "In-flight HTTP requests and open TCP connections per backend, plus live kernel flows in eBPF mode",
            &rows,
        )?;

        let bytes =
            per_backend(&|b| Direction::ALL.iter().map(|d| (Some(d.as_str()), b.backend.stats.bytes(*d))).collect());
        let mut me = e.encode_descriptor(
            "edge_tcp",
            "Bytes proxied in TCP mode per backend; rx from the backend, tx to it",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for (labels, v) in sbk("kind", &bytes) {
            ConstCounter::new(v).encode(me.encode_family(&labels)?)?;
        }

        let conns = per_backend(&|b| vec![(None, b.backend.stats.tcp_connections())]);
        counter(&mut e, "edge_tcp_connections", "TCP-mode connections per backend", &sb(&conns))?;

        let failures =
            per_backend(&|b| Failure::ALL.iter().map(|f| (Some(f.as_str()), b.backend.stats.failures(*f))).collect());
        counter(&mut e, "edge_upstream_errors", "Upstream failures by backend and kind", &sbk("kind", &failures))?;

        let passive = per_backend(&|b| {
            GatewayFailure::ALL.iter().map(|f| (Some(f.as_str()), b.backend.stats.gateway_failures(*f))).collect()
        });
        counter(
            &mut e,
            "edge_backend_gateway_failures",
            "Gateway failures outlier detection counted, by backend and kind (both data planes)",
            &sbk("kind", &passive),
        )?;
        let ejections = per_backend(&|b| {
            GatewayFailure::ALL.iter().map(|f| (Some(f.as_str()), b.backend.stats.ejections(*f))).collect()
        });
        counter(
            &mut e,
            "edge_backend_ejections",
            "Outlier ejections by backend and the failure that caused them",
            &sbk("reason", &ejections),
        )?;

        // Per service.
        let per_service = |f: &dyn Fn(&ServiceHandle) -> Vec<(&'static str, u64)>| -> Vec<(String, &'static str, u64)> {
            s.services.iter().flat_map(|svc| f(svc).into_iter().map(|(k, v)| (svc.name.clone(), k, v))).collect()
        };
        let keyed =
            |key: &'static str, rows: &[(String, &'static str, u64)]| -> Vec<([(&'static str, String); 2], u64)> {
                rows.iter().map(|(svc, k, v)| ([("service", svc.clone()), (key, (*k).to_string())], *v)).collect()
            };
        let retries =
            per_service(&|svc| RetryReason::ALL.iter().map(|r| (r.as_str(), svc.traffic.retries(*r))).collect());
        counter(&mut e, "edge_upstream_retries", "Upstream attempts retried, by reason", &keyed("reason", &retries))?;
        let outcomes = per_service(&|svc| {
            RetryOutcome::ALL.iter().map(|r| (r.as_str(), svc.traffic.retry_outcomes(*r))).collect()
        });
        counter(
            &mut e,
            "edge_retry_outcomes",
            "Requests that wanted a retry, by outcome (budget_exhausted: the retry budget said no)",
            &keyed("outcome", &outcomes),
        )?;
        let panic: Vec<([(&'static str, String); 1], i64)> = snaps
            .iter()
            .map(|(svc, snap)| ([("service", svc.name.clone())], i64::from(snap.panic.is_some())))
            .collect();
        gauge(&mut e, "edge_service_panic", "1 while the service is in panic mode", &panic)?;
        let no_backend =
            per_service(&|svc| NoBackend::ALL.iter().map(|r| (r.as_str(), svc.traffic.no_backends(*r))).collect());
        counter(
            &mut e,
            "edge_no_backend",
            "Requests or connections with no eligible backend",
            &keyed("reason", &no_backend),
        )?;

        let strategies: Vec<([(&'static str, String); 3], i64)> = s
            .services
            .iter()
            .map(|svc| {
                let spec = svc.balancer.strategy();
                let key =
                    if spec.kind == StrategyKind::ConsistentHash { spec.hash_key.to_string() } else { String::new() };
                ([("service", svc.name.clone()), ("strategy", spec.kind.to_string()), ("hash_key", key)], 1)
            })
            .collect();
        gauge(&mut e, "edge_strategy", "Current selection strategy of each service", &strategies)?;
        let switches: Vec<([(&'static str, &str); 1], u64)> =
            s.services.iter().map(|svc| ([("service", svc.name.as_str())], svc.balancer.switches())).collect();
        counter(&mut e, "edge_strategy_switches", "Strategy switches at run time", &switches)?;

        let mut updates = Vec::new();
        let mut errors = Vec::new();
        let mut fresh = Vec::new();
        for svc in &s.services {
            for src in svc.monitor.sources() {
                updates.push(([("service", svc.name.as_str()), ("source", src.name)], src.updates()));
                errors.push(([("service", svc.name.as_str()), ("source", src.name)], src.errors()));
                if let Some(t) = src.last_success() {
                    let secs = t
                        .duration_since(std::time::SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                    fresh.push(([("service", svc.name.as_str()), ("source", src.name)], secs));
                }
            }
        }
        counter(&mut e, "edge_discovery_updates", "Discovery updates by source", &updates)?;
        counter(&mut e, "edge_discovery_errors", "Discovery errors by source (the last good list stayed)", &errors)?;
        gauge(
            &mut e,
            "edge_discovery_last_success_timestamp_seconds",
            "When each discovery source last heard from its origin (Unix time); now minus this is its staleness",
            &fresh,
        )?;

        // The process.
        let modes: Vec<([(&'static str, &str); 1], i64)> =
            Plane::ALL.iter().map(|p| ([("mode", p.as_str())], i64::from(*p == s.plane))).collect();
        gauge(&mut e, "edge_dataplane_mode", "Active data plane", &modes)?;
        gauge(
            &mut e,
            "edge_ebpf_capable",
            "1 when this host can load and attach the eBPF program",
            &[(NO_LABELS, i64::from(s.ebpf_capable))],
        )?;
        if let Some(t) = &s.ecs {
            let labels = [
                ("cluster", t.cluster.as_str()),
                ("task_arn", t.task_arn.as_str()),
                ("availability_zone", t.availability_zone.as_str()),
                ("family", t.family.as_str()),
                ("revision", t.revision.as_str()),
                ("launch_type", t.launch_type.as_str()),
            ];
            gauge(&mut e, "edge_ecs_task_info", "The ECS task this agent runs in (always 1)", &[(labels, 1)])?;
        }
        let ready = crate::service::all_ready(&s.services);
        gauge(
            &mut e,
            "edge_ready",
            "1 once the first discovery and probe round of every service completed",
            &[(NO_LABELS, i64::from(ready))],
        )?;
        let client_errors: Vec<([(&'static str, &str); 1], u64)> =
            ClientError::ALL.iter().map(|c| ([("reason", c.as_str())], s.proxy.client_errors(*c))).collect();
        counter(&mut e, "edge_client_errors", "Client protocol errors by reason", &client_errors)?;
        let accepted: Vec<([(&'static str, &str); 1], u64)> =
            ListenerKind::ALL.iter().map(|k| ([("listener", k.as_str())], s.proxy.connections(*k))).collect();
        counter(&mut e, "edge_connections", "Accepted client connections by listener", &accepted)?;
        let open: Vec<([(&'static str, &str); 1], i64)> =
            ListenerKind::ALL.iter().map(|k| ([("listener", k.as_str())], s.proxy.open(*k))).collect();
        gauge(&mut e, "edge_open_connections", "Open client connections by listener", &open)?;
        gauge(
            &mut e,
            "edge_requests_in_flight",
            "HTTP requests in flight in the userspace proxy (at most --max-requests)",
            &[(NO_LABELS, i64::try_from(s.admission.in_flight()).unwrap_or(i64::MAX))],
        )?;
        counter(
            &mut e,
            "edge_requests_shed",
            "HTTP requests answered 503 at once because --max-requests were in flight",
            &[(NO_LABELS, s.admission.shed())],
        )?;
        counter(
            &mut e,
            "edge_connections_limited",
            "Times accepting paused because --max-connections client connections were open",
            &[(NO_LABELS, s.proxy.limited())],
        )?;
        counter(
            &mut e,
            "edge_tunnels",
            "HTTP connections upgraded into tunnels after a backend's 101 (WebSocket and other Upgrades)",
            &[(NO_LABELS, s.proxy.tunnels())],
        )?;
        gauge(
            &mut e,
            "edge_open_tunnels",
            "Upgraded connections (tunnels) open now",
            &[(NO_LABELS, s.proxy.open_tunnels())],
        )?;

        if let Some(d) = &s.dataplane {
            self.encode_dataplane(&mut e, d)?;
        }
        Ok(())
    }
}

impl Exporter {
    fn encode_dataplane(&self, e: &mut DescriptorEncoder<'_>, d: &DataplaneStats) -> Result {
        let flows = d.flows();
        let rows: Vec<(Labels<'_, 2>, i64)> = flows
            .iter()
            .map(|f| ([("service", f.service.as_str()), ("backend", f.backend.as_str())], f.flows as i64))
            .collect();
        gauge(e, "edge_ebpf_flows", "eBPF conntrack flows per backend, not closing", &rows)?;
        let expired: Vec<([(&'static str, &str); 1], u64)> =
            Expiry::ALL.iter().map(|r| ([("reason", r.as_str())], d.expirations(*r))).collect();
        counter(e, "edge_ebpf_expired_flows", "eBPF conntrack entries removed by the sweep, by reason", &expired)?;
        counter(e, "edge_ebpf_table_swaps", "Maglev tables written and swapped in", &[(NO_LABELS, d.table_swaps())])?;

        let Some(k) = self.sources.kernel.as_ref().and_then(|k| k.view()) else { return Ok(()) };
        let svc = |f: fn(&ServiceCounters) -> u64| -> Vec<([(&'static str, &str); 1], u64)> {
            k.services.iter().map(|s| ([("service", s.service.as_str())], f(s))).collect()
        };
        counter(e, "edge_ebpf_service_packets", "Packets steered by the kernel per service", &svc(|c| c.packets))?;
        counter(e, "edge_ebpf_service_bytes", "Bytes steered by the kernel per service", &svc(|c| c.bytes))?;
        counter(e, "edge_ebpf_service_new_flows", "New flows per service", &svc(|c| c.new_flows))?;
        let be = |f: fn(&BackendCounters) -> u64| -> Vec<([(&'static str, &str); 2], u64)> {
            k.backends
                .iter()
                .map(|b| ([("service", b.service.as_str()), ("backend", b.backend.as_str())], f(b)))
                .collect()
        };
        counter(e, "edge_ebpf_backend_packets", "Packets steered by the kernel per backend", &be(|c| c.packets))?;
        counter(e, "edge_ebpf_backend_bytes", "Bytes steered by the kernel per backend", &be(|c| c.bytes))?;
        counter(e, "edge_ebpf_backend_new_flows", "New flows per backend", &be(|c| c.new_flows))?;
        let all: Vec<([(&'static str, &str); 1], u64)> =
            k.events.iter().map(|(ev, _, n)| ([("event", *ev)], *n)).collect();
        counter(e, "edge_ebpf_events", "Packets seen by the data path, by what happened to them", &all)?;
        let drops: Vec<([(&'static str, &str); 1], u64)> = k
            .events
            .iter()
            .filter(|(_, drop, _)| *drop)
            .map(|(ev, _, n)| ([("reason", ev.trim_start_matches("drop_"))], *n))
            .collect();
        counter(e, "edge_ebpf_drops", "Packets the data path dropped, by reason", &drops)?;
        Ok(())
    }
}
