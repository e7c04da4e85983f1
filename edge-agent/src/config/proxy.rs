//! Proxy section: timeouts, limits and retries of the userspace proxy (`--retries`, `--retry-on`,
//! `--retry-budget`, `--retry-min-rate`, `--retry-body-limit`, `--outlier-5xx`), `--workers`,
//! `--cpu-pinning`, `--drain-timeout`.

use std::path::PathBuf;
use std::time::Duration;

use edge_core::balance::RetryBudgetConfig;
use edge_proxy::{ProxyConfig, RetryPolicy};

use super::defaults::DRAIN_TIMEOUT;
use super::{ConfigError, usage};
use crate::cli::RunArgs;

/// The proxy's settings, validated.
#[derive(Debug)]
pub(super) struct Proxy {
    pub proxy: ProxyConfig,
    pub budget: RetryBudgetConfig,
    pub drain_timeout: Duration,
    pub workers: usize,
    /// As given; the default depends on the listeners (`defaults::cpu_pinning`).
    pub cpu_pinning: Option<bool>,
    pub backend_tls: BackendTls,
}

/// The files of TLS to backends (`--backend-ca`, `--backend-cert`, `--backend-key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendTls {
    /// CA certificates (else the system's roots).
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key, for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

pub(super) fn build(args: &RunArgs) -> Result<Proxy, ConfigError> {
    let d = ProxyConfig::default();
    let on = args.retry_on.unwrap_or_default();
    let proxy = ProxyConfig {
        header_read_timeout: args.header_read_timeout.map_or(d.header_read_timeout, |v| v.0),
        connect_timeout: args.connect_timeout.map_or(d.connect_timeout, |v| v.0),
        upstream_timeout: args.upstream_timeout.map_or(d.upstream_timeout, |v| v.0),
        idle_timeout: args.idle_timeout.map_or(d.idle_timeout, |v| v.0),
        body_timeout: args.body_timeout.map_or(d.body_timeout, |v| v.0),
        body_min_rate: args.body_min_rate.map_or(d.body_min_rate, |v| v.0),
        max_connections: args.max_connections.map_or(d.max_connections, |v| v.get()),
        max_requests: args.max_requests.map_or(d.max_requests, |v| v.get()),
        max_header_bytes: args.max_header_bytes.map_or(d.max_header_bytes, |v| v.get()),
        max_headers: args.max_headers.map_or(d.max_headers, |v| v.get()),
        accept_proxy_protocol: args.accept_proxy_protocol.map_or(d.accept_proxy_protocol, |v| v.0),
        retry: RetryPolicy {
            retries: args.retries.map_or(d.retry.retries, |v| v.get32()),
            connect_failure: on.connect_failure,
            reset: on.reset,
            gateway_error: on.gateway_error,
            refused_stream: on.refused_stream,
            body_limit: args.retry_body_limit.map_or(d.retry.body_limit, |v| v.get()),
            outlier_5xx: args.outlier_5xx.map_or(d.retry.outlier_5xx, |v| v.0),
            backoff: d.retry.backoff,
        },
    };
    let b = RetryBudgetConfig::default();
    let budget = RetryBudgetConfig {
        percent: args.retry_budget.map_or(b.percent, |v| v.get32()),
        min_per_sec: args.retry_min_rate.map_or(b.min_per_sec, |v| v.get32()),
    };
    // One worker per CPU this process may use (cpusets and container limits apply).
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let identity = match (&args.backend_cert, &args.backend_key) {
        (Some(c), Some(k)) => Some((c.0.clone(), k.0.clone())),
        (None, None) => None,
        (Some(_), None) => return Err(usage("--backend-cert needs --backend-key; give both PEM files")),
        (None, Some(_)) => return Err(usage("--backend-key needs --backend-cert; give both PEM files")),
    };
    let backend_tls = BackendTls { ca: args.backend_ca.as_ref().map(|f| f.0.clone()), identity };
    Ok(Proxy {
        backend_tls,
        proxy,
        budget,
        drain_timeout: args.drain_timeout.map_or(DRAIN_TIMEOUT, |v| v.0),
        workers: args.workers.map_or(cpus, |v| v.get()),
        cpu_pinning: args.cpu_pinning.map(|v| v.0),
    })
}
