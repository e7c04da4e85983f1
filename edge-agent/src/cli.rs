//! The command line as typed: every flag a raw string, parsed by clap, validated later by
//! [`crate::config`] so that each error can name the flag and the fix.
//!
//! Every `run` flag can also come from an `EDGE_*` environment variable (ECS task definitions
//! prefer them); repeatable flags take several values separated by spaces there, for example
//! `EDGE_BACKEND="10.0.1.2:80 10.0.1.3:80,weight=2"`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// edge: a load-balancer agent for AWS ECS.
#[derive(Debug, Parser)]
// A flag given twice takes its last value, so wrapper scripts can append overrides.
#[command(name = "edge-agent", version, about, long_about = None, propagate_version = true, args_override_self = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Balance traffic (the agent).
    Run(Box<RunArgs>),
    /// Run a self-contained demo: three in-process backends, traffic, a failure and a recovery.
    Demo(DemoArgs),
    /// Read the pinned eBPF maps of a running (or stopped) agent.
    Maps(MapsArgs),
    /// Detach the eBPF programs and remove every pinned map and link (drops established flows).
    Cleanup,
}

/// `edge-agent run` flags, unvalidated.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML file with any of these settings (keys are the long flag names), plus [[service]] tables
    /// for more services; flags and EDGE_* variables override it.
    #[arg(long, env = "EDGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// HTTP listener address, e.g. 0.0.0.0:80 or :80 (repeatable).
    #[arg(long = "listen", env = "EDGE_LISTEN", value_name = "ADDR", value_delimiter = ' ')]
    pub listen: Vec<String>,
    /// Raw TCP listener address (repeatable).
    #[arg(long = "listen-tcp", env = "EDGE_LISTEN_TCP", value_name = "ADDR", value_delimiter = ' ')]
    pub listen_tcp: Vec<String>,

    /// Backend HOST:PORT[,weight=N] (repeatable; weight 1..256, default 1).
    #[arg(long = "backend", env = "EDGE_BACKEND", value_name = "SPEC", value_delimiter = ' ')]
    pub backend: Vec<String>,
    /// JSON or TOML list of backends, re-read when it changes.
    #[arg(long, env = "EDGE_BACKENDS_FILE", value_name = "PATH")]
    pub backends_file: Option<String>,

    /// Data plane: auto, ebpf or userspace [default: auto: eBPF when --vip (or a [[service]]) is
    /// given and the host can load and attach it, otherwise userspace].
    #[arg(long, env = "EDGE_MODE", value_name = "MODE")]
    pub mode: Option<String>,
    /// Client-facing interface for the eBPF data plane (repeatable) [default: lo, for the probe].
    #[arg(long = "iface", env = "EDGE_IFACE", value_name = "NAME", value_delimiter = ' ')]
    pub iface: Vec<String>,
    /// The eBPF service: VIP:PORT[/tcp|/udp], a local address, e.g. 10.0.0.5:80.
    #[arg(long, env = "EDGE_VIP", value_name = "ADDR:PORT[/udp]")]
    pub vip: Option<String>,
    /// XDP attach mode: auto (native, else TC only), native or generic [default: auto].
    #[arg(long, env = "EDGE_XDP_MODE", value_name = "MODE")]
    pub xdp_mode: Option<String>,
    /// SNAT port range for eBPF flows, outside the kernel's ip_local_port_range [default: 16384-32767].
    #[arg(long, env = "EDGE_SNAT_PORTS", value_name = "LOW-HIGH")]
    pub snat_ports: Option<String>,
    /// Conntrack entries (LRU) for eBPF flows [default: 262144].
    #[arg(long, env = "EDGE_CONNTRACK_SIZE", value_name = "N")]
    pub conntrack_size: Option<String>,
    /// A UDP flow idle this long picks a backend again and is removed [default: 30s].
    #[arg(long, env = "EDGE_UDP_TIMEOUT", value_name = "DURATION")]
    pub udp_timeout: Option<String>,
    /// An established TCP flow idle this long is removed [default: 1h].
    #[arg(long, env = "EDGE_TCP_TIMEOUT", value_name = "DURATION")]
    pub tcp_timeout: Option<String>,
    /// Remove the pinned maps and links when the agent stops (otherwise they stay, and the
    /// kernel keeps steering established flows until the next agent adopts them).
    #[arg(long, env = "EDGE_CLEANUP")]
    pub cleanup: bool,

    /// Health probe: tcp or http [default: http when --health-path is set, else tcp].
    #[arg(long, env = "EDGE_HEALTH_CHECK", value_name = "KIND")]
    pub health_check: Option<String>,
    /// Path for HTTP probes, e.g. /healthz (implies --health-check http).
    #[arg(long, env = "EDGE_HEALTH_PATH", value_name = "PATH")]
    pub health_path: Option<String>,
    /// Time between probes of a backend [default: 2s].
    #[arg(long, env = "EDGE_HEALTH_INTERVAL", value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Limit for one probe [default: 1s].
    #[arg(long, env = "EDGE_HEALTH_TIMEOUT", value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Random spread of the probe interval, in percent [default: 10].
    #[arg(long, env = "EDGE_HEALTH_JITTER", value_name = "PERCENT")]
    pub health_jitter: Option<String>,
    /// Passing probes in a row to become healthy [default: 2].
    #[arg(long, env = "EDGE_RISE", value_name = "N")]
    pub rise: Option<String>,
    /// Failing probes in a row to become unhealthy [default: 3].
    #[arg(long, env = "EDGE_FALL", value_name = "N")]
    pub fall: Option<String>,

    /// round-robin, least-connections or consistent-hash [default: round-robin].
    #[arg(long, env = "EDGE_STRATEGY", value_name = "NAME")]
    pub strategy: Option<String>,
    /// Consistent-hash key: source, five-tuple or header:NAME [default: source].
    #[arg(long, env = "EDGE_HASH_KEY", value_name = "KEY")]
    pub hash_key: Option<String>,
    /// Maglev table size, a prime [default: 65537].
    #[arg(long, env = "EDGE_TABLE_SIZE", value_name = "PRIME")]
    pub table_size: Option<String>,
    /// When no backend is usable: 503 (reject) or all (try every known backend) [default: 503].
    #[arg(long, env = "EDGE_ON_NO_BACKEND", value_name = "POLICY")]
    pub on_no_backend: Option<String>,

    /// Admin API address, or "off" [default: 127.0.0.1:9901].
    #[arg(long, env = "EDGE_ADMIN", value_name = "ADDR")]
    pub admin: Option<String>,
    /// Bearer token required for mutating admin calls.
    #[arg(long, env = "EDGE_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// PEM certificate chain; makes every --listen listener HTTPS.
    #[arg(long, env = "EDGE_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<String>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "EDGE_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<String>,

    /// Limit for a client to send a complete request head [default: 10s].
    #[arg(long, env = "EDGE_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    pub header_read_timeout: Option<String>,
    /// Limit for connecting to a backend [default: 2s].
    #[arg(long, env = "EDGE_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Limit for a backend to answer with a response head [default: 30s].
    #[arg(long, env = "EDGE_UPSTREAM_TIMEOUT", value_name = "DURATION")]
    pub upstream_timeout: Option<String>,
    /// Idle client connections (and idle TCP-mode connections) close after this [default: 60s].
    #[arg(long, env = "EDGE_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Longest wait for traffic to finish on a removed backend, and at shutdown [default: 20s].
    #[arg(long, env = "EDGE_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Largest request head in bytes, 8192..1048576 [default: 65536].
    #[arg(long, env = "EDGE_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: Option<String>,
    /// Most request headers [default: 100].
    #[arg(long, env = "EDGE_MAX_HEADERS", value_name = "N")]
    pub max_headers: Option<String>,

    /// Data-plane worker threads, each with its own event loop [default: one per CPU].
    #[arg(long, env = "EDGE_WORKERS", value_name = "N")]
    pub workers: Option<String>,

    /// Pin each worker to its own CPU: on or off [default: on].
    #[arg(long, env = "EDGE_CPU_PINNING", value_name = "on|off")]
    pub cpu_pinning: Option<String>,

    /// Log format: text or json [default: text].
    #[arg(long, env = "EDGE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log level or directives, e.g. info or info,edge_agent=debug [default: info].
    #[arg(long, env = "EDGE_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// The `[[service]]` tables of `--config` (no flag: a service needs a table of its own).
    #[arg(skip)]
    pub services: Vec<crate::config::RawService>,
}

/// `edge-agent demo` flags.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to drive traffic.
    #[arg(long, default_value = "15s", value_name = "DURATION")]
    pub duration: String,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub concurrency: usize,
    /// Plain line output instead of a live table (automatic when stdout is not a terminal).
    #[arg(long)]
    pub plain: bool,
}

/// `edge-agent maps` arguments.
#[derive(Debug, Clone, Args)]
pub struct MapsArgs {
    /// What to show: services, backends, table, conntrack or stats.
    pub what: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// For `table`: the service id [default: 1].
    #[arg(long, default_value_t = 1)]
    pub service: u32,
    /// Most rows to print for `table` and `conntrack` [default: 100].
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}
