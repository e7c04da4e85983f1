//! The validated configuration: built once from the settings (flags and `EDGE_*` variables, then
//! the `--config` file, then `defaults`), so that everything after start works with typed values
//! and every mistake is reported up front, naming the flag, variable or key and the fix.
//!
//! Each value is checked by its type where it is read (`values`, `cli`); this module checks what
//! depends on several settings, one section at a time: listeners (`listeners`), the eBPF data plane
//! (`ebpf`), health checks (`health`), the proxy (`proxy`) and the services (`service`): the
//! top-level `--vip`/`--backend`/`--backends-file` make the first, each `[[service]]` table of the
//! file another.

mod defaults;
mod discovery;
mod ebpf;
mod file;
mod health;
mod listeners;
mod proxy;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edge_core::balance::{Plane, RetryBudgetConfig, StrategySpec};
use edge_core::health::{HealthConfig, OutlierConfig};
use edge_core::service::{Proto, Vip};
use edge_proxy::ProxyConfig;

pub use defaults::{ADMIN as DEFAULT_ADMIN, defaults};
pub use discovery::{ConsulConfig, ConsulService, Discovery, DiscoveryConfig};
pub use ebpf::EbpfConfig;
#[cfg(fuzzing)]
pub(crate) use file::parse as parse_file;
pub use health::{CheckKind, ServiceHealth};
pub use listeners::TlsFiles;
pub use proxy::BackendTls;
pub use service::{DEFAULT_NAME as DEFAULT_SERVICE_NAME, MAX_SERVICES, Origin, ServiceConfig};

use crate::cli::RunArgs;
use crate::values::{LogFormat, ModeChoice};

/// A configuration mistake.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting's value is wrong.
    #[error("invalid --{flag} '{value}': {reason}")]
    Invalid {
        /// The flag, without dashes.
        flag: &'static str,
        /// What was given.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Something required is missing, or settings conflict.
    #[error("{0}")]
    Usage(String),
    /// The `--config` file is wrong.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The `--config` file cannot be read (a start-up problem: exit status 1, not 2).
    #[error("cannot read config file {path}: {reason}; check the path and permissions")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The `--config` file is larger than `file::MAX_CONFIG_BYTES` (exit status 2: fix the file).
    #[error("config file {path} is larger than {limit} bytes; put long backend lists in a --backends-file")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
}

fn usage(msg: impl Into<String>) -> ConfigError {
    ConfigError::Usage(msg.into())
}

/// Everything `edge-agent run` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP(S) listeners.
    pub listen: Vec<SocketAddr>,
    /// TCP listeners.
    pub listen_tcp: Vec<SocketAddr>,
    /// Every service, never empty: the top-level one (`--backend`/`--backends-file`, with `--vip`
    /// if given) first when it has backends, then each `[[service]]`. `--listen` and
    /// `--listen-tcp` serve the first.
    pub services: Vec<ServiceConfig>,
    /// Settings every Consul and DNS source shares.
    pub discovery: DiscoveryConfig,
    /// Data plane choice.
    pub mode: ModeChoice,
    /// eBPF data plane settings.
    pub ebpf: EbpfConfig,
    /// Probe kind.
    pub check: CheckKind,
    /// Probe timing and hysteresis.
    pub health: HealthConfig,
    /// Maglev table size.
    pub table_size: u32,
    /// Outlier detection and slow start.
    pub outlier: OutlierConfig,
    /// Panic threshold, percent.
    pub panic_threshold: u32,
    /// Each service's retry budget.
    pub retry_budget: RetryBudgetConfig,
    /// Admin listener, if any.
    pub admin: Option<SocketAddr>,
    /// Bearer token for mutating admin calls.
    pub admin_token: Option<String>,
    /// TLS for HTTP listeners.
    pub tls: Option<TlsFiles>,
    /// Proxy limits.
    pub proxy: ProxyConfig,
    /// Drain limit for removed backends and shutdown.
    pub drain_timeout: Duration,
    /// Data-plane worker threads.
    pub workers: usize,
    /// Pin workers to CPUs.
    pub cpu_pinning: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Log directives.
    pub log_level: String,
    /// TLS to backends: CA and client certificate files.
    pub backend_tls: BackendTls,
}

impl Config {
    /// The services with a VIP (those the eBPF data plane steers), in order.
    pub fn vips(&self) -> impl Iterator<Item = Vip> + '_ {
        self.services.iter().filter_map(|s| s.vip)
    }

    /// Reads `--config` if given, fills in the defaults, and validates.
    pub fn load(mut args: RunArgs) -> Result<Self, ConfigError> {
        let mut tables = Vec::new();
        if let Some(path) = args.config.clone() {
            let (from_file, services) = file::read(&path.0)?;
            args.fill_from(from_file);
            tables = services;
        }
        Self::build(args, &tables)
    }

    /// Validates settings and `[[service]]` tables; what was not given takes its default.
    fn build(args: RunArgs, tables: &[service::ServiceTable]) -> Result<Self, ConfigError> {
        let listeners = listeners::build(&args)?;
        let file_services = !tables.is_empty();
        let ebpf = ebpf::build(&args)?;
        if listeners.listen.is_empty() && listeners.listen_tcp.is_empty() && ebpf.vip.is_none() && !file_services {
            return Err(usage(
                "nothing to listen on; give --listen ADDR for HTTP, --listen-tcp ADDR for TCP (for example --listen \
                 :8080), --vip ADDR:PORT for the eBPF data plane, or [[service]] tables in --config",
            ));
        }

        let mut backends = Vec::new();
        for b in &args.backend {
            if backends.iter().any(|x: &edge_core::backend::BackendSpec| x.addr == b.addr) {
                return Err(ConfigError::Invalid {
                    flag: "backend",
                    value: b.to_string(),
                    reason: "this backend is given twice (by --backend or EDGE_BACKEND); give each backend once".into(),
                });
            }
            backends.push(b.clone());
        }
        let backends_file = args.backends_file.as_ref().map(|f| f.0.clone());
        let found = Discovery::new(
            args.consul_service.as_ref(),
            &args.consul_tag,
            args.consul_dc.as_ref(),
            &args.dns_srv,
            &args.dns_a,
        );
        if found.consul.is_none() && (!args.consul_tag.is_empty() || args.consul_dc.is_some()) {
            return Err(usage("--consul-tag and --consul-dc filter --consul-service; give --consul-service NAME"));
        }
        let has_backends = !backends.is_empty() || backends_file.is_some() || found.is_some();
        // With [[service]] tables the top-level backends are optional, unless --vip needs them.
        if !has_backends && (!file_services || ebpf.vip.is_some()) {
            return Err(usage(
                "no backends; give --backend HOST:PORT (repeatable), --backends-file PATH, --consul-service NAME, \
                 --dns-srv NAME or --dns-a NAME:PORT",
            ));
        }
        let discovery = discovery::build(&args, &|k| std::env::var(k).ok())?;

        let mode = args.mode.unwrap_or_default();
        if mode == ModeChoice::Ebpf {
            if ebpf.vip.is_none() && !file_services {
                return Err(usage(
                    "--mode ebpf needs a service; give --vip ADDR:PORT (a local address), for example --vip \
                     10.0.0.5:80, or [[service]] tables in --config",
                ));
            }
            if ebpf.ifaces.is_empty() {
                return Err(usage(
                    "--mode ebpf needs the client-facing interface; give --iface NAME, for example --iface eth0",
                ));
            }
        }
        if ebpf.vip.is_some_and(|v| v.proto == Proto::Udp) && mode != ModeChoice::Ebpf {
            return Err(usage("a UDP --vip needs --mode ebpf (the userspace proxy has no UDP); add --mode ebpf"));
        }

        let (top_health, outlier) = health::build(&args)?;
        let strategy = StrategySpec {
            kind: args.strategy.unwrap_or_default(),
            hash_key: args.hash_key.clone().unwrap_or_default(),
        };
        // The kernel carries the top-level service only when it has a VIP; `[[service]]` tables
        // are checked with the strategy they end up with.
        if mode == ModeChoice::Ebpf
            && ebpf.vip.is_some()
            && let Err(e) = Plane::Ebpf.supports(&strategy)
        {
            return Err(ConfigError::Invalid {
                flag: "hash-key",
                value: strategy.hash_key.to_string(),
                reason: e.to_string(),
            });
        }
        let table_size = args.table_size.map_or(edge_core::balance::maglev::DEFAULT_TABLE_SIZE, |t| t.0);
        let panic_threshold = args.panic_threshold.map_or(defaults::PANIC_THRESHOLD, |v| v.get32());
        let proxy = proxy::build(&args)?;
        if listeners.tls.is_some() && listeners.listen.is_empty() {
            return Err(usage("--tls-cert applies to --listen listeners; add a --listen address"));
        }

        let top = has_backends.then(|| ServiceConfig {
            name: ebpf.vip_written.clone().unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string()),
            vip: ebpf.vip,
            backends,
            backends_file,
            discovery: found,
            strategy: strategy.clone(),
            health: top_health.clone(),
            origin: Origin::TopLevel,
        });
        let addrs = listeners.listen.iter().map(|a| ("listen", *a));
        let top_keys = health::HealthKeys::of_args(&args);
        let cx = service::Context {
            mode,
            health: &top_keys,
            strategy: &strategy,
            listeners: addrs.chain(listeners.listen_tcp.iter().map(|a| ("listen-tcp", *a))).collect(),
        };
        let services = service::validate(top, tables, &cx)?;
        if mode == ModeChoice::Ebpf
            && let Some(why) = services.iter().filter(|s| s.vip.is_some()).find_map(ServiceConfig::kernel_cannot_serve)
        {
            return Err(usage(why));
        }

        let terminates_tls = listeners.tls.is_some();
        Ok(Self {
            listen: listeners.listen,
            listen_tcp: listeners.listen_tcp,
            services,
            discovery,
            mode,
            ebpf,
            check: top_health.check.clone(),
            health: top_health.config.clone(),
            table_size,
            outlier,
            panic_threshold,
            retry_budget: proxy.budget,
            admin: listeners.admin,
            admin_token: listeners.admin_token,
            tls: listeners.tls,
            proxy: proxy.proxy,
            drain_timeout: proxy.drain_timeout,
            workers: proxy.workers,
            cpu_pinning: proxy.cpu_pinning.unwrap_or_else(|| defaults::cpu_pinning(terminates_tls)),
            backend_tls: proxy.backend_tls,
            log_format: args.log_format.unwrap_or_default(),
            log_level: args.log_level.unwrap_or_default().0,
        })
    }
}

#[cfg(test)]
mod tests;
