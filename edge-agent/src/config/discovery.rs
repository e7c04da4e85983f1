//! Discovery section: where a service's backends come from besides `backend` and
//! `backends-file` (Consul, DNS SRV, DNS A/AAAA), and the settings every Consul watch shares
//! (`--consul-addr`, `--consul-token`, `--consul-token-file`, `--consul-ca-cert`,
//! `--consul-client-cert`, `--consul-client-key`, `--consul-stale`, `--consul-wait`) and every DNS source shares (`--dns-server`).
//!
//! Consul's own environment variables are honoured as its CLI honours them
//! (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_SSL`,
//! `CONSUL_CACERT`, `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`); edge's flags, `EDGE_*` variables and file keys win over them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use edge_core::discovery::dns::DnsQuery;

use super::{ConfigError, usage};
use crate::cli::RunArgs;
use crate::values::{ConsulAddr, DiscoveryName, NamePort};

/// Default `--consul-wait`.
pub const CONSUL_WAIT: Duration = Duration::from_secs(60);
/// Consul caps a blocking query's wait here.
const CONSUL_MAX_WAIT: Duration = Duration::from_secs(600);
/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// One service's discovery sources beyond fixed backends and a backends file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// A Consul service to watch.
    pub consul: Option<ConsulService>,
    /// DNS names to resolve.
    pub dns: Vec<DnsQuery>,
}

impl Discovery {
    /// From a service's keys (or the top-level flags).
    pub fn new(
        service: Option<&DiscoveryName>,
        tags: &[DiscoveryName],
        dc: Option<&DiscoveryName>,
        srv: &[DiscoveryName],
        a: &[NamePort],
    ) -> Self {
        Self {
            consul: service.map(|s| ConsulService {
                service: s.0.clone(),
                tags: tags.iter().map(|t| t.0.clone()).collect(),
                datacenter: dc.map(|d| d.0.clone()),
            }),
            dns: srv
                .iter()
                .map(|n| DnsQuery::Srv(n.0.clone()))
                .chain(a.iter().map(|n| DnsQuery::Addr { name: n.name.clone(), port: n.port }))
                .collect(),
        }
    }

    /// True when any source is given.
    pub fn is_some(&self) -> bool {
        self.consul.is_some() || !self.dns.is_empty()
    }
}

/// A Consul service and its filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulService {
    /// The Consul service name.
    pub service: String,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// The datacenter.
    pub datacenter: Option<String>,
}

/// How to reach Consul; used only when a service names a Consul service.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulConfig {
    /// `HOST:PORT`.
    pub authority: String,
    /// HTTPS.
    pub https: bool,
    /// The ACL token.
    pub token: Option<String>,
    /// CA certificates for HTTPS (`None`: the system's roots).
    pub ca_cert: Option<PathBuf>,
    /// The client certificate chain and its key, for a Consul that verifies clients.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// `?stale` queries.
    pub stale: bool,
    /// A blocking query's wait.
    pub wait: Duration,
}

impl std::fmt::Debug for ConsulConfig {
    // By hand, so that the token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("authority", &self.authority)
            .field("https", &self.https)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("ca_cert", &self.ca_cert)
            .field("identity", &self.identity)
            .field("stale", &self.stale)
            .field("wait", &self.wait)
            .finish()
    }
}

/// The discovery settings every source shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Consul, from flags and Consul's environment variables.
    pub consul: ConsulConfig,
    /// The DNS server (`None`: the system's configuration).
    pub dns_server: Option<SocketAddr>,
}

/// Builds the shared settings; `env` reads Consul's environment variables (a parameter, so that
/// tests need not touch the process environment).
pub(super) fn build(args: &RunArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<DiscoveryConfig, ConfigError> {
    let invalid = |flag: &'static str, value: String, reason: String| ConfigError::Invalid { flag, value, reason };
    let from_env = env("CONSUL_HTTP_ADDR").filter(|v| !v.trim().is_empty());
    let addr = match (&args.consul_addr, from_env) {
        (Some(a), _) => a.clone(),
        (None, Some(v)) => {
            ConsulAddr::from_str(&v).map_err(|e| invalid("consul-addr", format!("CONSUL_HTTP_ADDR={v}"), e))?
        }
        (None, None) => ConsulAddr { https: None, authority: "127.0.0.1:8500".into() },
    };
    let ssl_env = env("CONSUL_HTTP_SSL").map(|v| v.trim().to_ascii_lowercase());
    let https = match (addr.https, ssl_env.as_deref()) {
        (Some(h), _) => h,
        (None, Some("1" | "true" | "yes" | "on")) => true,
        (None, Some("" | "0" | "false" | "no" | "off") | None) => false,
        (None, Some(v)) => {
            return Err(usage(format!("CONSUL_HTTP_SSL={v} is not a boolean; set it to true or false, or unset it")));
        }
    };
    let token_file = args.consul_token_file.as_ref().map(|f| f.0.clone());
    let token = match (&args.consul_token, token_file) {
        (Some(t), _) => Some(t.0.clone()),
        (None, Some(path)) => Some(read_token(&path, "--consul-token-file")?),
        (None, None) => match (env("CONSUL_HTTP_TOKEN").filter(|t| !t.is_empty()), env("CONSUL_HTTP_TOKEN_FILE")) {
            (Some(t), _) => Some(t),
            (None, Some(path)) if !path.is_empty() => Some(read_token(&PathBuf::from(path), "CONSUL_HTTP_TOKEN_FILE")?),
            _ => None,
        },
    }
    .filter(|t| !t.is_empty());
    if token.as_ref().is_some_and(|t| t.chars().any(|c| c.is_whitespace() || c.is_control())) {
        return Err(usage("the Consul token contains spaces or control characters; check the token or its file"));
    }
    let ca_cert = args
        .consul_ca_cert
        .as_ref()
        .map(|f| f.0.clone())
        .or_else(|| env("CONSUL_CACERT").filter(|v| !v.is_empty()).map(PathBuf::from));
    let identity = consul_identity(args, env, https)?;
    let wait = args.consul_wait.map_or(CONSUL_WAIT, |d| d.0);
    if wait > CONSUL_MAX_WAIT {
        return Err(invalid(
            "consul-wait",
            format!("{wait:?}"),
            "Consul holds a query at most 10m; give 10m or less".into(),
        ));
    }
    let consul = ConsulConfig {
        authority: addr.authority,
        https,
        token,
        ca_cert,
        identity,
        stale: args.consul_stale.is_some_and(|s| s.0),
        wait,
    };
    Ok(DiscoveryConfig { consul, dns_server: args.dns_server })
}

/// The client certificate for mutual TLS with Consul: both flags or neither, else both of Consul's
/// variables (`CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`) as its CLI reads them. Flags over plain
/// HTTP are a mistake worth an error; the variables over plain HTTP are ignored, as Consul's CLI
/// ignores them, since a shell may set them for other Consul agents.
fn consul_identity(
    args: &RunArgs,
    env: &dyn Fn(&str) -> Option<String>,
    https: bool,
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    let flags = match (&args.consul_client_cert, &args.consul_client_key) {
        (Some(c), Some(k)) => Some((c.0.clone(), k.0.clone())),
        (None, None) => None,
        (Some(_), None) => return Err(usage("--consul-client-cert needs --consul-client-key; give both PEM files")),
        (None, Some(_)) => return Err(usage("--consul-client-key needs --consul-client-cert; give both PEM files")),
    };
    if let Some(pair) = flags {
        if !https {
            return Err(usage(
                "--consul-client-cert is for HTTPS to Consul; give --consul-addr https://HOST:PORT \
                 (or set CONSUL_HTTP_SSL=true), or drop the client certificate",
            ));
        }
        return Ok(Some(pair));
    }
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    match (var("CONSUL_CLIENT_CERT"), var("CONSUL_CLIENT_KEY")) {
        (Some(c), Some(k)) => Ok(https.then_some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(usage(
            "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY go together; set both, or unset both \
             (--consul-client-cert and --consul-client-key win over them)",
        )),
    }
}

fn read_token(path: &std::path::Path, what: &str) -> Result<String, ConfigError> {
    edge_core::util::read_bounded(path, MAX_TOKEN_FILE)
        .map(|t| t.trim().to_string())
        .map_err(|e| usage(format!("cannot read {what} {}: {e}; check the path and permissions", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_string())
    }

    #[test]
    fn consul_environment_variables_fill_in_and_flags_win() {
        let args = RunArgs::default();
        let c = build(&args, &env_of(&[])).unwrap().consul;
        assert_eq!(
            (c.authority.as_str(), c.https, c.token.as_deref(), c.wait),
            ("127.0.0.1:8500", false, None, CONSUL_WAIT)
        );
        let env = env_of(&[
            ("CONSUL_HTTP_ADDR", "consul.internal:8501"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_HTTP_TOKEN", "s3cr3t"),
            ("CONSUL_CACERT", "/etc/consul/ca.pem"),
        ]);
        let c = build(&args, &env).unwrap().consul;
        assert_eq!((c.authority.as_str(), c.https, c.token.as_deref()), ("consul.internal:8501", true, Some("s3cr3t")));
        assert_eq!(c.ca_cert, Some(PathBuf::from("/etc/consul/ca.pem")));
        assert!(!format!("{c:?}").contains("s3cr3t"), "the token stays out of Debug");
        let args = RunArgs {
            consul_addr: Some("http://10.0.0.9".parse().unwrap()),
            consul_token: Some("mine".parse().unwrap()),
            ..RunArgs::default()
        };
        let c = build(&args, &env).unwrap().consul;
        assert_eq!((c.authority.as_str(), c.https, c.token.as_deref()), ("10.0.0.9:8500", false, Some("mine")));
    }

    #[test]
    fn the_token_comes_from_a_file_trimmed() {
        let path = std::env::temp_dir().join(format!("edge-consul-token-{}", std::process::id()));
        std::fs::write(&path, "  from-file\n").unwrap();
        let args =
            RunArgs { consul_token_file: Some(path.display().to_string().parse().unwrap()), ..RunArgs::default() };
        let c = build(&args, &env_of(&[("CONSUL_HTTP_TOKEN", "from-env")])).unwrap().consul;
        assert_eq!(c.token.as_deref(), Some("from-file"), "edge's setting wins over CONSUL_HTTP_TOKEN");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bad_consul_settings_say_what_to_do() {
        let args = RunArgs::default();
        let e = build(&args, &env_of(&[("CONSUL_HTTP_SSL", "maybe")])).unwrap_err().to_string();
        assert!(e.contains("CONSUL_HTTP_SSL=maybe is not a boolean"), "{e}");
        let e = build(&args, &env_of(&[("CONSUL_HTTP_ADDR", "ftp://x")])).unwrap_err().to_string();
        assert!(e.contains("CONSUL_HTTP_ADDR=ftp://x") && e.contains("scheme 'ftp'"), "{e}");
        let args = RunArgs { consul_token_file: Some("/nonexistent/token".parse().unwrap()), ..RunArgs::default() };
        let e = build(&args, &env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("cannot read --consul-token-file /nonexistent/token"), "{e}");
    }

    #[test]
    fn a_consul_client_certificate_comes_in_pairs_from_flags_or_consul_variables() {
        let https = |more: RunArgs| RunArgs { consul_addr: Some("https://consul:8501".parse().unwrap()), ..more };
        let pair = env_of(&[("CONSUL_CLIENT_CERT", "/env/c.pem"), ("CONSUL_CLIENT_KEY", "/env/k.pem")]);
        let c = build(&https(RunArgs::default()), &pair).unwrap().consul;
        assert_eq!(c.identity, Some((PathBuf::from("/env/c.pem"), PathBuf::from("/env/k.pem"))));
        let c = build(&RunArgs::default(), &pair).unwrap().consul;
        assert_eq!(c.identity, None, "Consul's variables over plain HTTP are ignored, as its CLI does");

        let flags = https(RunArgs {
            consul_client_cert: Some("/flag/c.pem".parse().unwrap()),
            consul_client_key: Some("/flag/k.pem".parse().unwrap()),
            ..RunArgs::default()
        });
        let c = build(&flags, &pair).unwrap().consul;
        assert_eq!(c.identity, Some((PathBuf::from("/flag/c.pem"), PathBuf::from("/flag/k.pem"))), "flags win");

        let half = https(RunArgs { consul_client_cert: Some("/flag/c.pem".parse().unwrap()), ..RunArgs::default() });
        let e = build(&half, &env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("--consul-client-cert needs --consul-client-key"), "{e}");
        let e = build(&https(RunArgs::default()), &env_of(&[("CONSUL_CLIENT_KEY", "/k")])).unwrap_err().to_string();
        assert!(e.contains("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY go together"), "{e}");
        let plain = RunArgs { consul_addr: Some("http://consul:8500".parse().unwrap()), ..flags };
        let e = build(&plain, &env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("--consul-client-cert is for HTTPS to Consul"), "{e}");
    }
}
