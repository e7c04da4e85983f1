//! The validated configuration: built once from [`RunArgs`] (flags, `EDGE_*`, `--config`), so that
//! everything after start works with typed values and every mistake is reported up front, naming
//! the flag and the fix.
//!
//! Services (`service`): the top-level `--vip`/`--backend`/`--backends-file` make the first one,
//! each `[[service]]` table of the config file another, each with its own backends and strategy.

mod ebpf;
mod file;
mod service;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::backend::{BackendSpec, SpecError};
use crate::balance::maglev::{DEFAULT_TABLE_SIZE, validate_size};
use crate::balance::{HashKey, NoBackendPolicy, StrategyKind, StrategySpec};
use crate::cli::RunArgs;
use crate::duration::parse_duration;
use crate::health::HealthConfig;

pub use ebpf::{DEFAULT_SNAT_PORTS, EbpfConfig, Proto, Vip, XdpMode};
pub use file::merge_str as merge_config_str;
pub use service::{DEFAULT_NAME as DEFAULT_SERVICE_NAME, MAX_SERVICES, Origin, RawService, ServiceConfig};

/// A configuration mistake.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A flag's value is wrong.
    #[error("invalid --{flag} '{value}': {reason}")]
    Invalid {
        /// The flag, without dashes.
        flag: &'static str,
        /// What was given.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Something required is missing, or flags conflict.
    #[error("{0}")]
    Usage(String),
    /// The `--config` file is unreadable or wrong.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { flag, value: value.to_string(), reason: reason.into() }
}

/// Which data plane to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeChoice {
    /// eBPF when a service has a VIP (`--vip` or `[[service]]`) and the host can load and attach
    /// it; otherwise userspace (without any VIP, probe eBPF and report the result).
    Auto,
    /// The eBPF data plane, or fail at start.
    Ebpf,
    /// The userspace proxy, no probe.
    Userspace,
}

/// Which health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// TCP connect.
    Tcp,
    /// HTTP GET of a path.
    Http(String),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (CloudWatch).
    Json,
}

/// TLS certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Proxy limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Time for a client to send a complete request head.
    pub header_read_timeout: Duration,
    /// Time to connect to a backend.
    pub connect_timeout: Duration,
    /// Time for a backend to send its response head.
    pub upstream_timeout: Duration,
    /// Idle keep-alive (and TCP-mode) connections close after this.
    pub idle_timeout: Duration,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
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
    /// Data plane choice.
    pub mode: ModeChoice,
    /// Interface for the eBPF probe (the first `--iface`, or lo).
    pub iface: String,
    /// eBPF data plane settings.
    pub ebpf: EbpfConfig,
    /// Probe kind.
    pub check: CheckKind,
    /// Probe timing and hysteresis.
    pub health: HealthConfig,
    /// The top-level strategy: the first service's, and the default of every `[[service]]`.
    pub strategy: StrategySpec,
    /// Maglev table size.
    pub table_size: u32,
    /// No-backend policy.
    pub on_no_backend: NoBackendPolicy,
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
}

/// The userspace default hash key: the client's address.
pub const USERSPACE_DEFAULT_HASH_KEY: HashKey = HashKey::Source;

fn listen_addr(flag: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    let t = s.trim();
    let fix = "write IP:PORT or :PORT, for example 0.0.0.0:8080 or :8080";
    if let Some(port) = t.strip_prefix(':') {
        let p: u16 = port.parse().map_err(|_| invalid(flag, s, fix))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    if t.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        && let Some(a) = t.to_socket_addrs().ok().and_then(|mut i| i.next())
    {
        return Ok(a);
    }
    Err(invalid(flag, s, fix))
}

fn duration(flag: &'static str, v: Option<&str>, default: Duration, min: Duration) -> Result<Duration, ConfigError> {
    let Some(s) = v else { return Ok(default) };
    let d = parse_duration(s).map_err(|e| invalid(flag, s, e.to_string()))?;
    if d < min {
        return Err(invalid(flag, s, format!("must be at least {min:?}")));
    }
    Ok(d)
}

fn number<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
    flag: &'static str,
    v: Option<&str>,
    default: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    let Some(s) = v else { return Ok(default) };
    let n: T = s.trim().parse().map_err(|_| invalid(flag, s, format!("use an integer from {lo} to {hi}")))?;
    if n < lo || n > hi {
        return Err(invalid(flag, s, format!("use an integer from {lo} to {hi}")));
    }
    Ok(n)
}

impl Config {
    /// The services with a VIP (those the eBPF data plane steers), in order.
    pub fn vips(&self) -> impl Iterator<Item = Vip> + '_ {
        self.services.iter().filter_map(|s| s.vip)
    }

    /// Validates raw arguments, reading `--config` first if given.
    pub fn from_args(mut raw: RunArgs) -> Result<Self, ConfigError> {
        if let Some(path) = raw.config.clone() {
            file::merge(&mut raw, &path)?;
        }
        Self::validate(&raw)
    }

    /// Validates raw arguments (no file).
    pub fn validate(raw: &RunArgs) -> Result<Self, ConfigError> {
        let listen = raw
            .listen
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| listen_addr("listen", s))
            .collect::<Result<Vec<_>, _>>()?;
        let listen_tcp = raw
            .listen_tcp
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| listen_addr("listen-tcp", s))
            .collect::<Result<Vec<_>, _>>()?;
        let ebpf = ebpf::validate(raw)?;
        let file_services = !raw.services.is_empty();
        if listen.is_empty() && listen_tcp.is_empty() && ebpf.vip.is_none() && !file_services {
            return Err(ConfigError::Usage(
                "nothing to listen on; give --listen ADDR for HTTP, --listen-tcp ADDR for TCP (for example --listen :8080), --vip ADDR:PORT for the eBPF data plane, or [[service]] tables in --config".into(),
            ));
        }
        let mut all: Vec<SocketAddr> = listen.iter().chain(&listen_tcp).copied().collect();
        all.sort();
        if let Some(w) = all.windows(2).find(|w| w[0] == w[1] && w[0].port() != 0) {
            return Err(ConfigError::Usage(format!("{} is given as a listener twice; give each address once", w[0])));
        }

        let mut backends: Vec<BackendSpec> = Vec::new();
        for s in raw.backend.iter().filter(|s| !s.trim().is_empty()) {
            let b = BackendSpec::parse(s).map_err(|e: SpecError| invalid("backend", s, e.to_string()))?;
            if backends.iter().any(|x| x.addr == b.addr) {
                return Err(invalid("backend", s, "this backend is given twice; give each backend once"));
            }
            backends.push(b);
        }
        let backends_file = raw.backends_file.as_deref().map(PathBuf::from);
        // With [[service]] tables the top-level backends are optional, unless --vip needs them.
        if backends.is_empty() && backends_file.is_none() && (!file_services || ebpf.vip.is_some()) {
            return Err(ConfigError::Usage(
                "no backends; give --backend HOST:PORT (repeatable) or --backends-file PATH".into(),
            ));
        }

        let mode = match raw.mode.as_deref().map(|m| m.trim().to_ascii_lowercase()) {
            None => ModeChoice::Auto,
            Some(m) if m == "auto" => ModeChoice::Auto,
            Some(m) if m == "userspace" => ModeChoice::Userspace,
            Some(m) if m == "ebpf" => ModeChoice::Ebpf,
            Some(_) => {
                let v = raw.mode.as_deref().unwrap_or_default();
                return Err(invalid("mode", v, "use auto, ebpf or userspace"));
            }
        };
        if mode == ModeChoice::Ebpf {
            if ebpf.vip.is_none() && !file_services {
                return Err(ConfigError::Usage(
                    "--mode ebpf needs a service; give --vip ADDR:PORT (a local address), for example --vip 10.0.0.5:80, or [[service]] tables in --config".into(),
                ));
            }
            if ebpf.ifaces.is_empty() {
                return Err(ConfigError::Usage(
                    "--mode ebpf needs the client-facing interface; give --iface NAME, for example --iface eth0".into(),
                ));
            }
        }
        if ebpf.vip.is_some_and(|v| v.proto == Proto::Udp) && mode != ModeChoice::Ebpf {
            return Err(ConfigError::Usage(
                "a UDP --vip needs --mode ebpf (the userspace proxy has no UDP); add --mode ebpf".into(),
            ));
        }
        let iface = ebpf.ifaces.first().cloned().unwrap_or_else(|| "lo".into());

        let check = match (raw.health_check.as_deref().map(str::trim), raw.health_path.as_deref()) {
            (Some("tcp"), Some(_)) => {
                return Err(ConfigError::Usage("--health-path needs --health-check http; drop one of them".into()));
            }
            (Some("tcp"), None) => CheckKind::Tcp,
            (Some("http"), p) | (None, p @ Some(_)) => {
                let p = p.unwrap_or("/").trim();
                if !p.starts_with('/') || p.contains(char::is_whitespace) {
                    return Err(invalid(
                        "health-path",
                        p,
                        "give an absolute path without spaces, for example /healthz",
                    ));
                }
                if http::uri::PathAndQuery::try_from(p).is_err() {
                    return Err(invalid("health-path", p, "not a valid URL path; use characters allowed in a URL"));
                }
                CheckKind::Http(p.to_string())
            }
            (None, None) => CheckKind::Tcp,
            (Some(other), _) => return Err(invalid("health-check", other, "use tcp or http")),
        };
        let d = HealthConfig::default();
        let ms = Duration::from_millis;
        let interval = duration("health-interval", raw.health_interval.as_deref(), d.interval, ms(10))?;
        let timeout = duration("health-timeout", raw.health_timeout.as_deref(), d.timeout, ms(1))?;
        let jitter_pct: u32 = number("health-jitter", raw.health_jitter.as_deref(), 10, 0, 50)?;
        let health = HealthConfig {
            interval,
            timeout,
            jitter: f64::from(jitter_pct) / 100.0,
            rise: number("rise", raw.rise.as_deref(), d.rise, 1, 100)?,
            fall: number("fall", raw.fall.as_deref(), d.fall, 1, 100)?,
        };

        let kind: StrategyKind = match raw.strategy.as_deref() {
            None => StrategyKind::RoundRobin,
            Some(s) => s.parse().map_err(|e: crate::balance::StrategyError| invalid("strategy", s, e.to_string()))?,
        };
        let hash_key = match raw.hash_key.as_deref() {
            None => None,
            Some(s) => Some(s.parse::<HashKey>().map_err(|e| invalid("hash-key", s, e.to_string()))?),
        };
        if mode == ModeChoice::Ebpf && matches!(hash_key, Some(HashKey::Header(_))) {
            return Err(invalid(
                "hash-key",
                raw.hash_key.as_deref().unwrap_or_default(),
                "the eBPF data plane sees packets, not HTTP headers; use source or five-tuple",
            ));
        }
        let table_size = match raw.table_size.as_deref() {
            None => DEFAULT_TABLE_SIZE,
            Some(s) => {
                let n: u32 = s.trim().parse().map_err(|_| invalid("table-size", s, "use a prime such as 65537"))?;
                validate_size(n).map_err(|e| invalid("table-size", s, e.to_string()))?;
                n
            }
        };
        let on_no_backend = match raw.on_no_backend.as_deref().map(str::trim) {
            None | Some("503") | Some("reject") => NoBackendPolicy::Reject,
            Some("all") => NoBackendPolicy::All,
            Some(other) => return Err(invalid("on-no-backend", other, "use 503 or all")),
        };

        let admin = match raw.admin.as_deref().map(str::trim) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
            Some("off") | Some("none") | Some("") => None,
            Some(a) => Some(listen_addr("admin", a)?),
        };
        let admin_token = raw.admin_token.clone().filter(|t| !t.is_empty());
        if let Some(t) = &admin_token
            && t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("admin-token", "<hidden>", "the token must not contain spaces or control characters"));
        }

        let tls = match (raw.tls_cert.as_deref(), raw.tls_key.as_deref()) {
            (Some(c), Some(k)) => Some(TlsFiles { cert: c.into(), key: k.into() }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Usage("--tls-cert needs --tls-key; give both PEM files".into()));
            }
            (None, Some(_)) => {
                return Err(ConfigError::Usage("--tls-key needs --tls-cert; give both PEM files".into()));
            }
        };
        if tls.is_some() && listen.is_empty() {
            return Err(ConfigError::Usage("--tls-cert applies to --listen listeners; add a --listen address".into()));
        }

        let p = ProxyConfig::default();
        let proxy = ProxyConfig {
            header_read_timeout: duration(
                "header-read-timeout",
                raw.header_read_timeout.as_deref(),
                p.header_read_timeout,
                ms(10),
            )?,
            connect_timeout: duration("connect-timeout", raw.connect_timeout.as_deref(), p.connect_timeout, ms(1))?,
            upstream_timeout: duration("upstream-timeout", raw.upstream_timeout.as_deref(), p.upstream_timeout, ms(1))?,
            idle_timeout: duration("idle-timeout", raw.idle_timeout.as_deref(), p.idle_timeout, ms(10))?,
            max_header_bytes: number(
                "max-header-bytes",
                raw.max_header_bytes.as_deref(),
                p.max_header_bytes,
                8192,
                1 << 20,
            )?,
            max_headers: number("max-headers", raw.max_headers.as_deref(), p.max_headers, 1, 1000)?,
        };
        let drain_timeout =
            duration("drain-timeout", raw.drain_timeout.as_deref(), Duration::from_secs(20), Duration::ZERO)?;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = number("workers", raw.workers.as_deref(), cpus, 1, 256)?;
        let cpu_pinning = match raw.cpu_pinning.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
            None => true,
            Some(v) if v == "on" || v == "true" => true,
            Some(v) if v == "off" || v == "false" => false,
            Some(_) => {
                return Err(invalid("cpu-pinning", raw.cpu_pinning.as_deref().unwrap_or_default(), "use on or off"));
            }
        };
        let log_format = match raw.log_format.as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("log-format", other, "use text or json")),
        };
        let log_level = raw.log_level.clone().unwrap_or_else(|| "info".into());
        if log_level.parse::<tracing_subscriber::filter::Targets>().is_err() {
            return Err(invalid(
                "log-level",
                &log_level,
                "use error, warn, info, debug or trace, or directives like info,edge_agent=debug",
            ));
        }

        let strategy = StrategySpec { kind, hash_key };
        let top = (!backends.is_empty() || backends_file.is_some()).then(|| ServiceConfig {
            name: ebpf.vip.map_or_else(|| service::DEFAULT_NAME.to_string(), |v| v.to_string()),
            vip: ebpf.vip,
            backends,
            backends_file,
            strategy: strategy.clone(),
            origin: Origin::TopLevel,
        });
        let listeners = listen.iter().map(|a| ("listen", *a)).chain(listen_tcp.iter().map(|a| ("listen-tcp", *a)));
        let cx = service::Context { mode, strategy: &strategy, listeners: listeners.collect() };
        let services = service::validate(top, &raw.services, &cx)?;

        Ok(Self {
            listen,
            listen_tcp,
            services,
            mode,
            iface,
            ebpf,
            check,
            health,
            strategy,
            table_size,
            on_no_backend,
            admin,
            admin_token,
            tls,
            proxy,
            drain_timeout,
            workers,
            cpu_pinning,
            log_format,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RunArgs {
        RunArgs { listen: vec![":8080".into()], backend: vec!["127.0.0.1:9000".into()], ..Default::default() }
    }

    fn err(f: impl FnOnce(&mut RunArgs)) -> String {
        let mut r = base();
        f(&mut r);
        Config::validate(&r).unwrap_err().to_string()
    }

    #[test]
    fn defaults_match_haproxy() {
        let c = Config::validate(&base()).unwrap();
        assert_eq!(c.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
        assert_eq!((c.health.rise, c.health.fall), (2, 3));
        assert_eq!(c.health.interval, Duration::from_secs(2));
        assert_eq!(c.health.timeout, Duration::from_secs(1));
        assert_eq!(c.check, CheckKind::Tcp);
        assert_eq!(c.strategy.kind, StrategyKind::RoundRobin);
        assert_eq!(c.table_size, 65_537);
        assert_eq!(c.admin, Some("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(c.mode, ModeChoice::Auto);
    }

    #[test]
    fn health_path_implies_http() {
        let mut r = base();
        r.health_path = Some("/healthz".into());
        assert_eq!(Config::validate(&r).unwrap().check, CheckKind::Http("/healthz".into()));
    }

    #[test]
    fn errors_name_the_flag_and_the_fix() {
        type Case = (Box<dyn FnOnce(&mut RunArgs)>, &'static str);
        let cases: Vec<Case> = vec![
            (Box::new(|r| r.health_interval = Some("2x".into())), "--health-interval '2x'"),
            (Box::new(|r| r.rise = Some("0".into())), "--rise '0': use an integer from 1 to 100"),
            (Box::new(|r| r.fall = Some("many".into())), "--fall 'many'"),
            (Box::new(|r| r.strategy = Some("random".into())), "--strategy 'random'"),
            (Box::new(|r| r.hash_key = Some("cookie".into())), "--hash-key 'cookie'"),
            (Box::new(|r| r.table_size = Some("65536".into())), "not a prime"),
            (Box::new(|r| r.backend = vec!["nohost".into()]), "--backend 'nohost'"),
            (Box::new(|r| r.backend = vec!["1.2.3.4:80,weight=300".into()]), "1 to 256"),
            (Box::new(|r| r.listen = vec!["8080".into()]), "--listen '8080': write IP:PORT"),
            (Box::new(|r| r.mode = Some("kernel".into())), "--mode 'kernel': use auto, ebpf or userspace"),
            (Box::new(|r| r.mode = Some("ebpf".into())), "--mode ebpf needs a service; give --vip"),
            (
                Box::new(|r| {
                    r.mode = Some("ebpf".into());
                    r.vip = Some("10.0.0.5:80".into());
                }),
                "--mode ebpf needs the client-facing interface; give --iface",
            ),
            (Box::new(|r| r.vip = Some("10.0.0.5:53/udp".into())), "a UDP --vip needs --mode ebpf"),
            (Box::new(|r| r.vip = Some("10.0.0.5".into())), "--vip '10.0.0.5'"),
            (
                Box::new(|r| {
                    r.mode = Some("ebpf".into());
                    r.vip = Some("10.0.0.5:80".into());
                    r.iface = vec!["eth0".into()];
                    r.hash_key = Some("header:x-user".into());
                }),
                "the eBPF data plane sees packets, not HTTP headers",
            ),
            (
                Box::new(|r| {
                    r.listen.clear();
                }),
                "nothing to listen on",
            ),
            (
                Box::new(|r| {
                    r.backend.clear();
                }),
                "no backends",
            ),
            (Box::new(|r| r.tls_cert = Some("c.pem".into())), "--tls-cert needs --tls-key"),
            (Box::new(|r| r.health_check = Some("udp".into())), "--health-check 'udp': use tcp or http"),
            (Box::new(|r| r.health_path = Some("healthz".into())), "absolute path"),
            (Box::new(|r| r.max_header_bytes = Some("100".into())), "8192 to 1048576"),
            (Box::new(|r| r.log_format = Some("xml".into())), "use text or json"),
            (Box::new(|r| r.on_no_backend = Some("502".into())), "use 503 or all"),
            (Box::new(|r| r.health_jitter = Some("80".into())), "0 to 50"),
            (Box::new(|r| r.backend = vec!["1.2.3.4:80".into(), "1.2.3.4:80".into()]), "twice"),
        ];
        for (f, want) in cases {
            let e = err(f);
            assert!(e.contains(want), "expected {want:?} in {e:?}");
            assert!(!e.ends_with('.'), "no trailing period: {e:?}");
        }
    }
}
