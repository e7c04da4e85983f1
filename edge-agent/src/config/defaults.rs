//! Every default of `edge-agent run`, in one place: the constants here, or the component that owns
//! one (probe timing in `HealthConfig`, proxy limits in `ProxyConfig`, table and conntrack sizes
//! next to the code that sizes the maps). [`defaults`] shows them as settings, for `--help` and the
//! README; each `config` section applies the same value, from the same constant, to a setting
//! that was not given (a test checks that the two agree).

use std::net::SocketAddr;
use std::time::Duration;

use edge_core::balance::RetryBudgetConfig;
use edge_core::balance::maglev::DEFAULT_TABLE_SIZE;
use edge_core::balance::{HashKey, StrategyKind};
use edge_core::health::{HealthConfig, OutlierConfig};
use edge_dataplane::XdpMode;
use edge_proxy::ProxyConfig;

use crate::cli::RunArgs;
use crate::values::{AdminAddr, Dur, Int, LogFormat, LogLevel, ModeChoice, PortRange, RetryOn, Switch, TableSize};

/// The admin listener when `--admin` is not given.
pub const ADMIN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

/// A non-loopback admin listener needs a token.
pub const ADMIN_INSECURE: bool = false;

/// SNAT ports: below Linux's default ip_local_port_range (32768-60999).
pub const SNAT_PORTS: PortRange = PortRange(16384, 32767);

/// A UDP flow idle this long picks a backend again.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(30);

/// An established TCP flow idle this long is removed.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest wait for traffic on removed backends, and at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether workers are pinned to CPUs when `--cpu-pinning` is not given: yes, unless the listeners
/// terminate TLS. Pinning halves keep-alive tail latency on shared CPUs, but with TLS the work
/// around each connection is heavy on both sides, and pinned workers keep the scheduler from
/// giving a busy neighbour a CPU of its own: unpinned took 1.4 times the new TLS connections per
/// second on 2 cores, and moving only the handshakes off the workers did not (docs/benchmarks.md).
pub fn cpu_pinning(terminates_tls: bool) -> bool {
    !terminates_tls
}

/// Panic threshold, percent (Envoy's).
pub const PANIC_THRESHOLD: u32 = 50;

/// Pinned maps and links stay when the agent stops.
pub const CLEANUP: bool = false;

/// Every default, as settings (for `--help` and the documentation; the sections apply the same
/// values, from the same constants, to what was not given).
pub fn defaults() -> RunArgs {
    let h = HealthConfig::default();
    let o = OutlierConfig::default();
    let b = RetryBudgetConfig::default();
    let p = ProxyConfig::default();
    RunArgs {
        mode: Some(ModeChoice::default()),
        xdp_mode: Some(XdpMode::default()),
        snat_ports: Some(SNAT_PORTS),
        conntrack_size: Some(Int(u64::from(edge_common::DEFAULT_CONNTRACK_SIZE))),
        udp_timeout: Some(Dur(UDP_TIMEOUT)),
        tcp_timeout: Some(Dur(TCP_TIMEOUT)),
        cleanup: Some(Switch(CLEANUP)),
        health_interval: Some(Dur(h.interval)),
        health_timeout: Some(Dur(h.timeout)),
        health_jitter: Some(Int((h.jitter * 100.0).round() as u64)),
        rise: Some(Int(u64::from(h.rise))),
        fall: Some(Int(u64::from(h.fall))),
        health_fast_interval: Some(Dur(h.fast_interval)),
        outlier_consecutive: Some(Int(u64::from(o.consecutive))),
        outlier_5xx: Some(Switch(o.all_5xx)),
        outlier_failure_percent: Some(Int(u64::from(o.failure_percent))),
        outlier_min_requests: Some(Int(u64::from(o.min_requests))),
        outlier_base_ejection: Some(Dur(o.base_ejection)),
        outlier_max_ejection: Some(Dur(o.max_ejection)),
        outlier_max_ejected: Some(Int(u64::from(o.max_ejected_percent))),
        slow_start: Some(Dur(o.slow_start)),
        retries: Some(Int(u64::from(p.retry.retries))),
        retry_on: Some(RetryOn::default()),
        retry_budget: Some(Int(u64::from(b.percent))),
        retry_min_rate: Some(Int(u64::from(b.min_per_sec))),
        retry_body_limit: Some(Int(p.retry.body_limit as u64)),
        strategy: Some(StrategyKind::default()),
        hash_key: Some(HashKey::default()),
        table_size: Some(TableSize(DEFAULT_TABLE_SIZE)),
        panic_threshold: Some(Int(u64::from(PANIC_THRESHOLD))),
        admin: Some(AdminAddr(Some(ADMIN))),
        admin_insecure: Some(Switch(ADMIN_INSECURE)),
        header_read_timeout: Some(Dur(p.header_read_timeout)),
        connect_timeout: Some(Dur(p.connect_timeout)),
        upstream_timeout: Some(Dur(p.upstream_timeout)),
        idle_timeout: Some(Dur(p.idle_timeout)),
        body_timeout: Some(Dur(p.body_timeout)),
        body_min_rate: Some(Int(p.body_min_rate)),
        drain_timeout: Some(Dur(DRAIN_TIMEOUT)),
        max_connections: Some(Int(p.max_connections as u64)),
        max_requests: Some(Int(p.max_requests as u64)),
        max_header_bytes: Some(Int(p.max_header_bytes as u64)),
        max_headers: Some(Int(p.max_headers as u64)),
        accept_proxy_protocol: Some(Switch(p.accept_proxy_protocol)),
        log_format: Some(LogFormat::default()),
        log_level: Some(LogLevel::default()),
        ..RunArgs::default()
    }
}
