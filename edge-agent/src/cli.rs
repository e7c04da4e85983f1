//! The command line: every `edge-agent run` setting is declared once, here, in [`RunArgs`]: its
//! flag, its `EDGE_*` variable, its `--config` file key (the long flag name), its type (which
//! parses and checks the value wherever it comes from) and its help. Defaults live in
//! `config::defaults` and are shown in `--help` from there. Precedence: flag, variable, file,
//! default.
//!
//! Repeatable flags take several values separated by spaces in their variable, for example
//! `EDGE_BACKEND="10.0.1.2:80 10.0.1.3:80,weight=2"`.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use edge_core::backend::BackendSpec;
use edge_core::balance::{HashKey, StrategyKind};
use edge_dataplane::XdpMode;
use serde::Deserialize;

use std::net::SocketAddr;

use crate::values::{
    AdminAddr, CheckChoice, ConsulAddr, DiscoveryName, Dur, FilePath, GrpcService, Iface, Int, ListenAddr, LogFormat,
    LogLevel, ModeChoice, NamePort, PortRange, RetryOn, Switch, TableSize, Token, UrlPath, VipArg, deserialize_bool,
    deserialize_from_str as one, deserialize_list as many,
};

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
    /// Replay a scenario (traffic and a failure schedule) against every strategy, with a report.
    Replay(ReplayArgs),
    /// Read the pinned eBPF maps of a running (or stopped) agent.
    Maps(MapsArgs),
    /// Ask a running agent whether it is ready: exit 0 if so, 1 if not (a container HEALTHCHECK
    /// that needs no shell).
    Health(HealthArgs),
    /// Stream the kernel's events from a running eBPF agent: drops with their reason and tuple,
    /// new flows when asked (switches the kernel monitor on while it runs).
    Monitor(MonitorArgs),
    /// Detach the eBPF programs and remove every pinned map and link (drops established flows).
    Cleanup,
}

/// A setting source of lower precedence fills in what a higher one left unset.
pub trait Fill {
    /// Takes `lower` if `self` is unset.
    fn fill(&mut self, lower: Self);
    /// The value as `--help` shows a default, if set.
    fn shown(&self) -> Option<String>;
}

impl<T: std::fmt::Display> Fill for Option<T> {
    fn fill(&mut self, lower: Self) {
        if self.is_none() {
            *self = lower;
        }
    }
    fn shown(&self) -> Option<String> {
        self.as_ref().map(ToString::to_string)
    }
}

impl<T: std::fmt::Display> Fill for Vec<T> {
    fn fill(&mut self, lower: Self) {
        if self.is_empty() {
            *self = lower;
        }
    }
    fn shown(&self) -> Option<String> {
        (!self.is_empty()).then(|| self.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "))
    }
}

/// Declares the settings struct once and derives from the same field list how sources merge
/// ([`RunArgs::fill_from`]), which keys a file may have ([`RunArgs::KEYS`]) and how defaults show
/// ([`RunArgs::shown`]).
macro_rules! settings {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty, )* }) => {
        $(#[$m])*
        pub struct $name { $( $(#[$fm])* pub $f: $t, )* }

        impl $name {
            /// Every setting, by field name (the flag's clap id).
            pub const FIELDS: &[&str] = &[$(stringify!($f),)*];

            /// Fills every setting that is still unset from `lower`, a source of lower precedence.
            pub fn fill_from(&mut self, lower: Self) {
                $( Fill::fill(&mut self.$f, lower.$f); )*
            }

            /// The settings that are set, as (field name, value as written).
            pub fn shown(&self) -> Vec<(&'static str, String)> {
                let mut out = Vec::new();
                $( if let Some(v) = Fill::shown(&self.$f) { out.push((stringify!($f), v)); } )*
                out
            }
        }
    };
}

settings! {
    /// `edge-agent run` settings as given (flags and variables by clap, or a file by serde). Each
    /// value is already checked; what depends on several settings is checked by `config`.
    #[derive(Debug, Clone, Default, Args, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct RunArgs {
        /// TOML file with any of these settings (keys are the long flag names), plus [[service]]
        /// tables for more services; flags and EDGE_* variables override it.
        #[arg(long, env = "EDGE_CONFIG", value_name = "FILE")]
        #[serde(skip)]
        pub config: Option<FilePath>,

        /// HTTP listener address, e.g. 0.0.0.0:80 or :80 (repeatable).
        #[arg(long = "listen", env = "EDGE_LISTEN", value_name = "ADDR", value_delimiter = ' ')]
        #[serde(default, deserialize_with = "many")]
        pub listen: Vec<ListenAddr>,
        /// Raw TCP listener address (repeatable).
        #[arg(long = "listen-tcp", env = "EDGE_LISTEN_TCP", value_name = "ADDR", value_delimiter = ' ')]
        #[serde(default, deserialize_with = "many")]
        pub listen_tcp: Vec<ListenAddr>,

        /// Backend HOST:PORT[,weight=N] (repeatable; weight 1..256, default 1).
        #[arg(long = "backend", env = "EDGE_BACKEND", value_name = "SPEC", value_delimiter = ' ')]
        #[serde(default, alias = "backends", deserialize_with = "many")]
        pub backend: Vec<BackendSpec>,
        /// JSON or TOML list of backends, re-read when it changes.
        #[arg(long, env = "EDGE_BACKENDS_FILE", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub backends_file: Option<FilePath>,
        /// Consul service whose passing instances are backends (blocking queries on its health
        /// API).
        #[arg(long, env = "EDGE_CONSUL_SERVICE", value_name = "NAME")]
        #[serde(default, deserialize_with = "one")]
        pub consul_service: Option<DiscoveryName>,
        /// Only Consul instances with this tag (repeatable: every tag).
        #[arg(long = "consul-tag", env = "EDGE_CONSUL_TAG", value_name = "TAG", value_delimiter = ' ')]
        #[serde(default, alias = "consul-tags", deserialize_with = "many")]
        pub consul_tag: Vec<DiscoveryName>,
        /// Consul datacenter to ask about [default: the Consul agent's].
        #[arg(long, env = "EDGE_CONSUL_DC", value_name = "DC")]
        #[serde(default, deserialize_with = "one")]
        pub consul_dc: Option<DiscoveryName>,
        /// Consul HTTP API, [http://|https://]HOST:PORT; HTTPS with https:// or
        /// CONSUL_HTTP_SSL=true [default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500].
        #[arg(long, env = "EDGE_CONSUL_ADDR", value_name = "ADDR")]
        #[serde(default, deserialize_with = "one")]
        pub consul_addr: Option<ConsulAddr>,
        /// Consul ACL token, sent as X-Consul-Token [default: CONSUL_HTTP_TOKEN].
        #[arg(long, env = "EDGE_CONSUL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
        #[serde(default, deserialize_with = "one")]
        pub consul_token: Option<Token>,
        /// File holding the Consul ACL token [default: CONSUL_HTTP_TOKEN_FILE].
        #[arg(long, env = "EDGE_CONSUL_TOKEN_FILE", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub consul_token_file: Option<FilePath>,
        /// PEM CA certificates that sign Consul's HTTPS certificate [default: CONSUL_CACERT, else
        /// the system's roots].
        #[arg(long, env = "EDGE_CONSUL_CA_CERT", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub consul_ca_cert: Option<FilePath>,
        /// PEM client certificate chain for HTTPS to a Consul that verifies clients
        /// (verify_incoming) [default: CONSUL_CLIENT_CERT].
        #[arg(long, env = "EDGE_CONSUL_CLIENT_CERT", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub consul_client_cert: Option<FilePath>,
        /// PEM private key for --consul-client-cert [default: CONSUL_CLIENT_KEY].
        #[arg(long, env = "EDGE_CONSUL_CLIENT_KEY", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub consul_client_key: Option<FilePath>,
        /// Let any Consul server answer, not only the leader (?stale): on or off [default: off].
        #[arg(long, env = "EDGE_CONSUL_STALE", value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
        #[serde(default, deserialize_with = "deserialize_bool")]
        pub consul_stale: Option<Switch>,
        /// How long Consul may hold a blocking query [default: 60s].
        #[arg(long, env = "EDGE_CONSUL_WAIT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub consul_wait: Option<Dur<1000>>,
        /// DNS SRV name whose targets are backends, e.g. a Cloud Map service (repeatable).
        #[arg(long = "dns-srv", env = "EDGE_DNS_SRV", value_name = "NAME", value_delimiter = ' ')]
        #[serde(default, deserialize_with = "many")]
        pub dns_srv: Vec<DiscoveryName>,
        /// DNS name whose A and AAAA records are backends, on PORT (repeatable).
        #[arg(long = "dns-a", env = "EDGE_DNS_A", value_name = "NAME:PORT", value_delimiter = ' ')]
        #[serde(default, deserialize_with = "many")]
        pub dns_a: Vec<NamePort>,
        /// DNS server for --dns-srv and --dns-a, IP:PORT [default: the system's resolver
        /// configuration].
        #[arg(long, env = "EDGE_DNS_SERVER", value_name = "ADDR")]
        #[serde(default, deserialize_with = "one")]
        pub dns_server: Option<SocketAddr>,

        /// Data plane: auto, ebpf or userspace (auto: eBPF when a VIP is given and the host can
        /// load, attach and carry it out, otherwise userspace).
        #[arg(long, env = "EDGE_MODE", value_name = "MODE")]
        #[serde(default, deserialize_with = "one")]
        pub mode: Option<ModeChoice>,
        /// Client-facing interface for the eBPF data plane (repeatable); without --vip, the
        /// interface the eBPF probe uses [default: lo].
        #[arg(long = "iface", env = "EDGE_IFACE", value_name = "NAME", value_delimiter = ' ')]
        #[serde(default, deserialize_with = "many")]
        pub iface: Vec<Iface>,
        /// The eBPF service: ADDR:PORT[/udp], a local address such as 10.0.0.5:80, or IFACE:PORT
        /// for the interface's first IPv4 address, such as eth0:80 (one setting for every host;
        /// it also becomes the --iface when none is given).
        #[arg(long, env = "EDGE_VIP", value_name = "ADDR:PORT[/udp]")]
        #[serde(default, deserialize_with = "one")]
        pub vip: Option<VipArg>,
        /// XDP attach mode: auto (native where the driver has it, not on veth; else TC only),
        /// native, generic or off.
        #[arg(long, env = "EDGE_XDP_MODE", value_name = "MODE")]
        #[serde(default, deserialize_with = "one")]
        pub xdp_mode: Option<XdpMode>,
        /// SNAT port range for eBPF flows, outside the kernel's ip_local_port_range.
        #[arg(long, env = "EDGE_SNAT_PORTS", value_name = "LOW-HIGH")]
        #[serde(default, deserialize_with = "one")]
        pub snat_ports: Option<PortRange>,
        /// Conntrack entries (LRU) for eBPF flows.
        #[arg(long, env = "EDGE_CONNTRACK_SIZE", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub conntrack_size: Option<Int<1024, 16_777_216>>,
        /// A UDP flow idle this long picks a backend again and is removed.
        #[arg(long, env = "EDGE_UDP_TIMEOUT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub udp_timeout: Option<Dur<1000>>,
        /// An established TCP flow idle this long is removed.
        #[arg(long, env = "EDGE_TCP_TIMEOUT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub tcp_timeout: Option<Dur<10_000>>,
        /// Remove the pinned maps and links when the agent stops (otherwise they stay, and the
        /// kernel keeps steering established flows until the next agent adopts them).
        #[arg(long, env = "EDGE_CLEANUP", value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
        #[serde(default, deserialize_with = "deserialize_bool")]
        pub cleanup: Option<Switch>,

        /// Health probe: tcp, http, grpc (grpc.health.v1 over HTTP/2) or udp (a DNS query)
        /// [default: http when --health-path is set, grpc when --health-grpc-service is, else tcp;
        /// udp for a UDP service].
        #[arg(long, env = "EDGE_HEALTH_CHECK", value_name = "KIND")]
        #[serde(default, deserialize_with = "one")]
        pub health_check: Option<CheckChoice>,
        /// Path for HTTP probes, e.g. /healthz (implies --health-check http) [default: / with
        /// --health-check http].
        #[arg(long, env = "EDGE_HEALTH_PATH", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub health_path: Option<UrlPath>,
        /// Service name that gRPC probes ask about (implies --health-check grpc) [default: the
        /// server as a whole].
        #[arg(long, env = "EDGE_HEALTH_GRPC_SERVICE", value_name = "NAME")]
        #[serde(default, deserialize_with = "one")]
        pub health_grpc_service: Option<GrpcService>,
        /// Probe this port of each backend instead of its service port.
        #[arg(long, env = "EDGE_HEALTH_PORT", value_name = "PORT")]
        #[serde(default, deserialize_with = "one")]
        pub health_port: Option<Int<1, 65_535>>,
        /// Time between probes of a backend.
        #[arg(long, env = "EDGE_HEALTH_INTERVAL", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub health_interval: Option<Dur<10>>,
        /// Limit for one probe, connect included.
        #[arg(long, env = "EDGE_HEALTH_TIMEOUT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub health_timeout: Option<Dur<1>>,
        /// Random spread of the probe interval, in percent.
        #[arg(long, env = "EDGE_HEALTH_JITTER", value_name = "PERCENT")]
        #[serde(default, deserialize_with = "one")]
        pub health_jitter: Option<Int<0, 50>>,
        /// Passing probes in a row to become healthy.
        #[arg(long, env = "EDGE_RISE", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub rise: Option<Int<1, 100>>,
        /// Failing probes in a row to become unhealthy.
        #[arg(long, env = "EDGE_FALL", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub fall: Option<Int<1, 100>>,
        /// Time between probes of a suspect backend (a failed probe or request), an ejected one,
        /// or one on its way back.
        #[arg(long, env = "EDGE_HEALTH_FAST_INTERVAL", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub health_fast_interval: Option<Dur<10>>,

        /// Gateway failures in a row (connect, reset, timeout, 502/503/504) that eject a
        /// backend; 0 turns outlier detection off.
        #[arg(long, env = "EDGE_OUTLIER_CONSECUTIVE", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub outlier_consecutive: Option<Int<0, 10_000>>,
        /// Share of gateway failures (percent) over the last 10 s that ejects a backend; 0 turns
        /// this rule off.
        #[arg(long, env = "EDGE_OUTLIER_FAILURE_PERCENT", value_name = "PERCENT")]
        #[serde(default, deserialize_with = "one")]
        pub outlier_failure_percent: Option<Int<0, 100>>,
        /// Requests a backend must have had in the last 10 s before its failure share counts.
        #[arg(long, env = "EDGE_OUTLIER_MIN_REQUESTS", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub outlier_min_requests: Option<Int<1, 1_000_000>>,
        /// Count every 5xx toward outlier detection, not only 502, 503 and 504: on or off.
        #[arg(long = "outlier-5xx", env = "EDGE_OUTLIER_5XX", value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
        #[serde(default, rename = "outlier-5xx", deserialize_with = "deserialize_bool")]
        pub outlier_5xx: Option<Switch>,
        /// The first ejection's length; the n-th lasts n times this (plus up to 10 % jitter).
        #[arg(long, env = "EDGE_OUTLIER_BASE_EJECTION", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub outlier_base_ejection: Option<Dur<100>>,
        /// The longest ejection.
        #[arg(long, env = "EDGE_OUTLIER_MAX_EJECTION", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub outlier_max_ejection: Option<Dur<100>>,
        /// Most of a service's backends that may be ejected at once, in percent, counted after
        /// the ejection (drained and removed backends do not count).
        #[arg(long, env = "EDGE_OUTLIER_MAX_EJECTED", value_name = "PERCENT")]
        #[serde(default, deserialize_with = "one")]
        pub outlier_max_ejected: Option<Int<0, 100>>,
        /// Time a returning backend's weight takes to ramp from 10 % to full; 0s turns it off.
        #[arg(long, env = "EDGE_SLOW_START", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub slow_start: Option<Dur<0>>,
        /// Below this share of usable backends (percent), spread traffic over every backend that
        /// is not drained or removed; 0: never, answer 503 when none is usable.
        #[arg(long, env = "EDGE_PANIC_THRESHOLD", value_name = "PERCENT")]
        #[serde(default, deserialize_with = "one")]
        pub panic_threshold: Option<Int<0, 100>>,

        /// Most retries of one request, each to another backend (0: none).
        #[arg(long, env = "EDGE_RETRIES", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub retries: Option<Int<0, 5>>,
        /// What is retried: connect-failure, reset, gateway-error, refused-stream (comma-separated),
        /// or none.
        #[arg(long, env = "EDGE_RETRY_ON", value_name = "LIST")]
        #[serde(default, deserialize_with = "one")]
        pub retry_on: Option<RetryOn>,
        /// Retries per service may be this percent of its requests.
        #[arg(long, env = "EDGE_RETRY_BUDGET", value_name = "PERCENT")]
        #[serde(default, deserialize_with = "one")]
        pub retry_budget: Option<Int<0, 100>>,
        /// Retries per second a service may always make, however little traffic it has (a
        /// floor, not added to the percentage).
        #[arg(long, env = "EDGE_RETRY_MIN_RATE", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub retry_min_rate: Option<Int<0, 100_000>>,
        /// Request bodies up to this many bytes are kept so the request can be retried.
        #[arg(long, env = "EDGE_RETRY_BODY_LIMIT", value_name = "BYTES")]
        #[serde(default, deserialize_with = "one")]
        pub retry_body_limit: Option<Int<0, 16_777_216>>,

        /// round-robin, least-connections or consistent-hash.
        #[arg(long, env = "EDGE_STRATEGY", value_name = "NAME")]
        #[serde(default, deserialize_with = "one")]
        pub strategy: Option<StrategyKind>,
        /// Consistent-hash key: source, five-tuple or header:NAME (header keys need the
        /// userspace proxy).
        #[arg(long, env = "EDGE_HASH_KEY", value_name = "KEY")]
        #[serde(default, deserialize_with = "one")]
        pub hash_key: Option<HashKey>,
        /// Maglev table size, a prime.
        #[arg(long, env = "EDGE_TABLE_SIZE", value_name = "PRIME")]
        #[serde(default, deserialize_with = "one")]
        pub table_size: Option<TableSize>,

        /// Admin API address, or off.
        #[arg(long, env = "EDGE_ADMIN", value_name = "ADDR")]
        #[serde(default, deserialize_with = "one")]
        pub admin: Option<AdminAddr>,
        /// Bearer token required for mutating admin calls.
        #[arg(long, env = "EDGE_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
        #[serde(default, deserialize_with = "one")]
        pub admin_token: Option<Token>,
        /// Serve the admin API on a non-loopback address without --admin-token: on or off.
        #[arg(long, env = "EDGE_ADMIN_INSECURE", value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
        #[serde(default, deserialize_with = "deserialize_bool")]
        pub admin_insecure: Option<Switch>,

        /// PEM certificate chain; makes every --listen listener HTTPS.
        #[arg(long, env = "EDGE_TLS_CERT", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub tls_cert: Option<FilePath>,
        /// PEM private key for --tls-cert.
        #[arg(long, env = "EDGE_TLS_KEY", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub tls_key: Option<FilePath>,
        /// PEM CA certificates that backends spoken to over TLS (,tls) are verified against
        /// [default: the system's roots].
        #[arg(long, env = "EDGE_BACKEND_CA", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub backend_ca: Option<FilePath>,
        /// PEM client certificate chain for backends over TLS that ask for one (mutual TLS).
        #[arg(long, env = "EDGE_BACKEND_CERT", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub backend_cert: Option<FilePath>,
        /// PEM private key for --backend-cert.
        #[arg(long, env = "EDGE_BACKEND_KEY", value_name = "PATH")]
        #[serde(default, deserialize_with = "one")]
        pub backend_key: Option<FilePath>,

        /// Limit for a client to send a complete request head.
        #[arg(long, env = "EDGE_HEADER_READ_TIMEOUT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub header_read_timeout: Option<Dur<10>>,
        /// Limit for connecting to a backend.
        #[arg(long, env = "EDGE_CONNECT_TIMEOUT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub connect_timeout: Option<Dur<1>>,
        /// Limit for a backend to answer with a response head.
        #[arg(long, env = "EDGE_UPSTREAM_TIMEOUT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub upstream_timeout: Option<Dur<1>>,
        /// Idle client connections (and idle TCP-mode connections) close after this.
        #[arg(long, env = "EDGE_IDLE_TIMEOUT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub idle_timeout: Option<Dur<10>>,
        /// Longest gap between body bytes from a backend, or from a client sending a request body.
        #[arg(long, env = "EDGE_BODY_TIMEOUT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub body_timeout: Option<Dur<10>>,
        /// Slowest average request body in bytes per second (0: only --body-timeout applies).
        #[arg(long, env = "EDGE_BODY_MIN_RATE", value_name = "BYTES")]
        #[serde(default, deserialize_with = "one")]
        pub body_min_rate: Option<Int<0, 1_073_741_824>>,
        /// Longest wait for traffic to finish on a removed backend, and at shutdown.
        #[arg(long, env = "EDGE_DRAIN_TIMEOUT", value_name = "DURATION")]
        #[serde(default, deserialize_with = "one")]
        pub drain_timeout: Option<Dur<0>>,
        /// Most open client connections over every listener; more wait in the accept queue.
        #[arg(long, env = "EDGE_MAX_CONNECTIONS", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub max_connections: Option<Int<1, 10_000_000>>,
        /// Most HTTP requests in flight over the process; more are answered 503 at once.
        #[arg(long, env = "EDGE_MAX_REQUESTS", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub max_requests: Option<Int<1, 10_000_000>>,
        /// Largest request head in bytes.
        #[arg(long, env = "EDGE_MAX_HEADER_BYTES", value_name = "BYTES")]
        #[serde(default, deserialize_with = "one")]
        pub max_header_bytes: Option<Int<8192, 1_048_576>>,
        /// Most request headers.
        #[arg(long, env = "EDGE_MAX_HEADERS", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub max_headers: Option<Int<1, 1000>>,
        /// Client connections on every userspace listener start with a PROXY protocol header
        /// (v1 or v2, as an AWS NLB sends): on or off. When on, a connection without one is closed.
        #[arg(long, env = "EDGE_ACCEPT_PROXY_PROTOCOL", value_name = "on|off", num_args = 0..=1, default_missing_value = "on")]
        #[serde(default, deserialize_with = "deserialize_bool")]
        pub accept_proxy_protocol: Option<Switch>,

        /// Data-plane worker threads, each with its own event loop [default: one per CPU].
        #[arg(long, env = "EDGE_WORKERS", value_name = "N")]
        #[serde(default, deserialize_with = "one")]
        pub workers: Option<Int<1, 256>>,
        /// Pin each worker to its own CPU: on or off [default: on, or off when --tls-cert is given].
        #[arg(long, env = "EDGE_CPU_PINNING", value_name = "on|off")]
        #[serde(default, deserialize_with = "deserialize_bool")]
        pub cpu_pinning: Option<Switch>,

        /// Log format: text or json.
        #[arg(long, env = "EDGE_LOG_FORMAT", value_name = "FORMAT")]
        #[serde(default, deserialize_with = "one")]
        pub log_format: Option<LogFormat>,
        /// Log level or directives, e.g. info, debug or info,edge_proxy=debug.
        #[arg(long, env = "EDGE_LOG_LEVEL", value_name = "LEVEL")]
        #[serde(default, deserialize_with = "one")]
        pub log_level: Option<LogLevel>,
    }
}

/// `edge-agent demo` flags.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to drive traffic.
    #[arg(long, default_value = "15s", value_name = "DURATION")]
    pub duration: Dur<3000>,
    /// Concurrent client connections.
    #[arg(long, default_value = "8", value_name = "N")]
    pub concurrency: Int<1, 256>,
    /// Plain line output instead of a live table (automatic when stdout is not a terminal).
    #[arg(long)]
    pub plain: bool,
}

/// `edge-agent replay` arguments.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// A built-in scenario's name or a scenario file; without one, the built-ins are listed.
    pub scenario: Option<String>,
    /// Run every built-in scenario.
    #[arg(long)]
    pub all: bool,
    /// Seed of the request sequence and keys (default: the scenario's).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Compress each scenario to this duration (its failure times scale with it).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<Dur<1000>>,
    /// Folder for results.json and report.html.
    #[arg(long, default_value = "replay-report", value_name = "DIR")]
    pub out: FilePath,
    /// Do not run HAProxy and NGINX beside edge (they run when installed).
    #[arg(long)]
    pub no_peers: bool,
    /// Do not run L4 scenarios on the eBPF data plane (they do when the host allows eBPF).
    #[arg(long)]
    pub no_ebpf: bool,
}

/// `edge-agent health` arguments.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The agent's admin API address (0.0.0.0 and :: are asked on loopback) [default:
    /// 127.0.0.1:9901].
    #[arg(long, env = "EDGE_ADMIN", value_name = "ADDR")]
    pub admin: Option<AdminAddr>,
    /// Give up after this long.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub timeout: Dur<1>,
}

/// `edge-agent monitor` arguments.
#[derive(Debug, Clone, Args)]
pub struct MonitorArgs {
    /// The agent's admin API address (0.0.0.0 and :: are asked on loopback) [default:
    /// 127.0.0.1:9901].
    #[arg(long, env = "EDGE_ADMIN", value_name = "ADDR")]
    pub admin: Option<AdminAddr>,
    /// The admin token, when the agent has one.
    #[arg(long, env = "EDGE_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<Token>,
    /// What to report: drop, flow (new flows) or all.
    #[arg(long = "type", default_value = "drop", value_name = "TYPE")]
    pub r#type: String,
    /// Most events a second per CPU, enforced in the kernel (1 to 100000).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this long.
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<Dur<1>>,
    /// Print each event as a JSON line.
    #[arg(long)]
    pub json: bool,
}

/// `edge-agent maps` arguments.
#[derive(Debug, Clone, Args)]
pub struct MapsArgs {
    /// What to show: services, backends, table, conntrack or stats.
    pub what: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// For `table`: the service id.
    #[arg(long, default_value_t = 1)]
    pub service: u32,
    /// Most rows to print for `table` and `conntrack`.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// The command tree, with each `run` setting's default (from `defaults`, which the configuration
/// owns) appended to its help.
pub fn command(defaults: &RunArgs) -> clap::Command {
    Cli::command().mut_subcommand("run", |mut run| {
        for (id, value) in defaults.shown() {
            run = run.mut_arg(id, |a| {
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                a.help(format!("{help} [default: {value}]"))
            });
        }
        run
    })
}

/// Parses `argv` and the `EDGE_*` variables (help shows `defaults`); errors come back ready to
/// print (exit status 2), naming the flag or the variable a bad value came from.
pub fn parse_from<I, T>(argv: I, defaults: &RunArgs) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let (cmd, words) = listed_variables(command(defaults), &argv);
    parse(cmd, &argv, words)
}

/// Parses `argv` alone, ignoring `EDGE_*` variables: for agents the program builds itself (the
/// demo) and for tests, which the operator's environment must not change.
pub fn parse_words<I, T>(argv: I, defaults: &RunArgs) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let cmd = command(defaults).mut_subcommand("run", |run| run.mut_args(|a| a.env(None)));
    parse(cmd, &argv, argv.clone())
}

fn parse(mut cmd: clap::Command, argv: &[OsString], words: Vec<OsString>) -> Result<Cli, clap::Error> {
    let matches = cmd.try_get_matches_from_mut(words).map_err(|e| explain(e, &cmd, argv))?;
    Cli::from_arg_matches(&matches).map_err(|e| explain(e, &cmd, argv))
}

/// The variables of repeatable settings hold values separated by spaces. Clap would keep the
/// empty pieces of `"a  b"`, `"a "` or `""` as values, so they are read here: each piece becomes a
/// flag after `run` (a flag given on the command line wins, as clap would have it), and a blank
/// variable is ignored.
fn listed_variables(mut cmd: clap::Command, argv: &[OsString]) -> (clap::Command, Vec<OsString>) {
    let mut words = argv.to_vec();
    if argv.get(1).is_none_or(|a| a != "run") {
        return (cmd, words);
    }
    let Some(run) = cmd.find_subcommand("run") else { return (cmd, words) };
    let listed: Vec<(String, String, String)> = run
        .get_arguments()
        .filter(|a| a.get_value_delimiter() == Some(' '))
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some((a.get_id().to_string(), a.get_long()?.to_string(), env))
        })
        .collect();
    for (id, long, env) in listed {
        let Ok(value) = std::env::var(&env) else { continue };
        if flag_given(argv, &long) {
            continue;
        }
        if value.trim().is_empty() {
            cmd = cmd.mut_subcommand("run", |run| run.mut_arg(&id, |a| a.env(None)));
        }
        words.extend(value.split_whitespace().map(|piece| OsString::from(format!("--{long}={piece}"))));
    }
    (cmd, words)
}

/// Whether `--long` is on the command line (as `--long VALUE` or `--long=VALUE`).
fn flag_given(argv: &[OsString], long: &str) -> bool {
    argv.iter().any(|a| {
        let a = a.to_string_lossy();
        a == format!("--{long}") || a.starts_with(&format!("--{long}="))
    })
}

/// Rewrites a bad-value error as `invalid --flag 'value': reason`, or `invalid EDGE_VAR 'value'
/// (sets --flag): reason` when the value came from the variable. Other errors stay clap's.
fn explain(e: clap::Error, cmd: &clap::Command, argv: &[OsString]) -> clap::Error {
    if !matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return e;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) =
        (e.get(ContextKind::InvalidArg), e.get(ContextKind::InvalidValue))
    else {
        return e;
    };
    let long = arg.trim_start_matches('-').split([' ', '=']).next().unwrap_or_default().to_string();
    let reason = match std::error::Error::source(&e) {
        Some(s) => s.to_string(),
        None => e.kind().as_str().unwrap_or("invalid value").to_string(),
    };
    let flag_given = flag_given(argv, &long);
    let env = cmd
        .get_subcommands()
        .flat_map(|s| s.get_arguments())
        .find(|a| a.get_long() == Some(long.as_str()))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned());
    let from_env = env.filter(|var| {
        !flag_given && std::env::var(var).is_ok_and(|v| v == *value || v.split(' ').any(|part| part == value.as_str()))
    });
    let msg = match from_env {
        Some(var) => format!("invalid {var} '{value}' (it sets --{long}): {reason}"),
        None => format!("invalid --{long} '{value}': {reason}"),
    };
    clap::Error::raw(ErrorKind::ValueValidation, format!("{msg}\n"))
}
