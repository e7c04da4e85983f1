//! Services: a VIP with its own backends and strategy. The top-level `--vip`, `--backend` and
//! `--backends-file` settings make one (listed first); each `[[service]]` table of the `--config`
//! file makes another:
//!
//! ```toml
//! [[service]]
//! name = "api"                       # optional; default: the VIP text
//! vip = "10.0.0.5:8080"              # IPV4:PORT[/udp] or IFACE:PORT[/udp], like --vip
//! backend = ["10.0.1.2:8080", "10.0.1.3:8080,weight=2"]
//! backends-file = "/etc/edge/api.json"
//! consul-service = "api"             # its passing instances (and consul-tag, consul-dc)
//! dns-srv = ["api.prod.local"]       # SRV targets, e.g. AWS Cloud Map
//! dns-a = ["api.internal:8080"]      # A/AAAA records on a port
//! strategy = "consistent-hash"       # default: the top-level --strategy
//! hash-key = "source"                # default: the top-level --hash-key
//! health-check = "http"              # and health-path, health-port, health-interval,
//! health-path = "/ready"             # health-fast-interval, health-timeout, rise, fall
//! ```
//!
//! Timeouts and limits stay global. A service without `strategy`, `hash-key` or a health key takes
//! the top-level value, so `--strategy` sets the default for every service; a UDP service's probe
//! kind is its own (default: a DNS exchange, see `health`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use edge_core::backend::BackendSpec;
use edge_core::balance::{HashKey, Plane, StrategyKind, StrategySpec};
use edge_core::service::{Proto, Vip};
use serde::Deserialize;

use super::ConfigError;
use super::discovery::Discovery;
use super::file::{normalise, typed};
use super::health::{HealthKeys, ServiceHealth, resolve};
use crate::values::{
    CheckChoice, DiscoveryName, Dur, FilePath, GrpcService, Int, ModeChoice, NamePort, UrlPath, VipArg,
    deserialize_from_str as one, deserialize_list as many,
};

/// The name of the top-level service when there is no `--vip` to name it after.
pub const DEFAULT_NAME: &str = "default";

/// The kernel maps hold this many services.
pub const MAX_SERVICES: usize = edge_common::MAX_SERVICES as usize;

/// Longest service name.
const MAX_NAME: usize = 64;

/// The keys a `[[service]]` table may have, for error messages.
/// The keys a `[[service]]` table takes, as `Keys` declares them (in its order, with their
/// aliases), read from serde's own list so that the two can never disagree.
fn keys() -> &'static [&'static str] {
    /// A deserializer that only notes the field names a struct asks for.
    struct Fields(Option<&'static [&'static str]>);

    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("only a struct's field names are read"))
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(serde::de::Error::custom("field names read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    static KEYS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut fields = Fields(None);
        let _ = Keys::deserialize(&mut fields);
        fields.0.unwrap_or_default()
    })
}

/// The typed keys of a `[[service]]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Keys {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "one")]
    vip: Option<VipArg>,
    #[serde(default, alias = "backends", deserialize_with = "many")]
    backend: Vec<BackendSpec>,
    #[serde(default, deserialize_with = "one")]
    backends_file: Option<FilePath>,
    #[serde(default, deserialize_with = "one")]
    consul_service: Option<DiscoveryName>,
    #[serde(default, alias = "consul-tags", deserialize_with = "many")]
    consul_tag: Vec<DiscoveryName>,
    #[serde(default, deserialize_with = "one")]
    consul_dc: Option<DiscoveryName>,
    #[serde(default, deserialize_with = "many")]
    dns_srv: Vec<DiscoveryName>,
    #[serde(default, deserialize_with = "many")]
    dns_a: Vec<NamePort>,
    #[serde(default, deserialize_with = "one")]
    strategy: Option<StrategyKind>,
    #[serde(default, deserialize_with = "one")]
    hash_key: Option<HashKey>,
    #[serde(default, deserialize_with = "one")]
    health_check: Option<CheckChoice>,
    #[serde(default, deserialize_with = "one")]
    health_path: Option<UrlPath>,
    #[serde(default, deserialize_with = "one")]
    health_grpc_service: Option<GrpcService>,
    #[serde(default, deserialize_with = "one")]
    health_port: Option<Int<1, 65_535>>,
    #[serde(default, deserialize_with = "one")]
    health_interval: Option<Dur<10>>,
    #[serde(default, deserialize_with = "one")]
    health_fast_interval: Option<Dur<10>>,
    #[serde(default, deserialize_with = "one")]
    health_timeout: Option<Dur<1>>,
    #[serde(default, deserialize_with = "one")]
    rise: Option<Int<1, 100>>,
    #[serde(default, deserialize_with = "one")]
    fall: Option<Int<1, 100>>,
}

impl Keys {
    fn health(&self) -> HealthKeys {
        HealthKeys {
            check: self.health_check,
            path: self.health_path.clone(),
            grpc_service: self.health_grpc_service.clone(),
            port: self.health_port,
            interval: self.health_interval,
            fast_interval: self.health_fast_interval,
            timeout: self.health_timeout,
            jitter: None,
            rise: self.rise,
            fall: self.fall,
        }
    }
}

/// A `[[service]]` table as written, its values typed, not yet checked against the rest.
#[derive(Debug)]
pub struct ServiceTable {
    file: PathBuf,
    label: String,
    keys: Keys,
}

impl ServiceTable {
    /// Reads table number `index` (from 1) of the file's `service` array.
    pub(super) fn from_toml(file: &Path, index: usize, value: toml::Value) -> Result<Self, ConfigError> {
        let toml::Value::Table(table) = value else {
            let reason =
                format!("[[service]] #{index}: not a table; write each service as [[service]] followed by its keys");
            return Err(ConfigError::File { path: file.into(), reason });
        };
        let table = normalise(table);
        // The label needs the name and VIP as written, whatever order the keys come in.
        let text = |k: &str| table.get(k).and_then(toml::Value::as_str).map(str::trim).filter(|s| !s.is_empty());
        let label = match text("name").or(text("vip")) {
            Some(n) => format!("[[service]] '{n}' (#{index})"),
            None => format!("[[service]] #{index}"),
        };
        let mut st = Self { file: file.into(), label, keys: Keys::default() };
        if let Some(key) = table.keys().find(|k| !keys().contains(&k.as_str())) {
            // Aliases (`backends`, `consul-tags`) are accepted but not advertised.
            let listed: Vec<&str> =
                keys().iter().copied().filter(|k| !matches!(*k, "backends" | "consul-tags")).collect();
            return Err(st.error(format!(
                "unknown key '{key}'; a service takes {} (global settings such as timeouts and retries go at the top \
                 of the file, before the first [[service]])",
                listed.join(", ")
            )));
        }
        st.keys = typed(table).map_err(|e| st.error(e))?;
        Ok(st)
    }

    fn error(&self, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError::File { path: self.file.clone(), reason: format!("{}: {reason}", self.label) }
    }
}

/// Where a service was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The top-level `--vip`, `--backend`, `--backends-file` (flags, variables or file keys).
    TopLevel,
    /// A `[[service]]` table of this file.
    File(PathBuf),
}

/// One validated service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Unique name (`?service=NAME` in the admin API).
    pub name: String,
    /// Where clients send its traffic. Only the top-level service may lack one (it then serves
    /// the `--listen` and `--listen-tcp` listeners alone).
    pub vip: Option<Vip>,
    /// Fixed backends.
    pub backends: Vec<BackendSpec>,
    /// A backends file, re-read when it changes.
    pub backends_file: Option<PathBuf>,
    /// Consul and DNS sources.
    pub discovery: Discovery,
    /// Strategy at start.
    pub strategy: StrategySpec,
    /// Its probe.
    pub health: ServiceHealth,
    /// Where it was configured.
    pub origin: Origin,
}

impl ServiceConfig {
    /// Why the eBPF data plane cannot carry this service's fixed backends, if it cannot: it
    /// rewrites packets, so it cannot open a connection with a PROXY protocol header.
    pub fn kernel_cannot_serve(&self) -> Option<String> {
        let b = self.backends.iter().find(|b| b.proxy.is_some() || b.tls.is_some())?;
        let (what, option) = if b.proxy.is_some() { ("the PROXY protocol", ",proxy=") } else { ("TLS", ",tls") };
        Some(format!(
            "backend {b} asks for {what}, which the eBPF data plane cannot speak (it rewrites packets, it opens no connection); serve service '{}' with --mode userspace, or drop {option}",
            self.name
        ))
    }
}

/// What validation of the `[[service]]` tables needs from the rest of the configuration.
#[derive(Debug)]
pub(super) struct Context<'a> {
    /// The data plane asked for.
    pub mode: ModeChoice,
    /// The top-level strategy, every service's default.
    pub strategy: &'a StrategySpec,
    /// The top-level health settings, every service's defaults.
    pub health: &'a HealthKeys,
    /// `--listen` and `--listen-tcp` addresses, with their flag.
    pub listeners: Vec<(&'static str, SocketAddr)>,
}

/// Validates the `[[service]]` tables and returns every service, `top` first.
pub(super) fn validate(
    top: Option<ServiceConfig>,
    tables: &[ServiceTable],
    cx: &Context<'_>,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    let mut out: Vec<ServiceConfig> = top.into_iter().collect();
    for st in tables {
        let s = one_service(st, cx)?;
        if let Some(other) = out.iter().find(|o| o.vip.is_some() && o.vip == s.vip) {
            let vip = s.vip.map(|v| v.to_string()).unwrap_or_default();
            return Err(st.error(format!(
                "vip {vip} is also the VIP of {}; give each service its own VIP:PORT (same address and \
                 port are fine with another protocol)",
                describe(other)
            )));
        }
        if let Some(other) = out.iter().find(|o| o.name == s.name) {
            return Err(st.error(format!(
                "the name '{}' is also used by {}; give each service its own name",
                s.name,
                describe(other)
            )));
        }
        out.push(s);
    }
    let with_vip = out.iter().filter(|s| s.vip.is_some()).count();
    if with_vip > MAX_SERVICES
        && let Some(st) = tables.last()
    {
        return Err(ConfigError::File {
            path: st.file.clone(),
            reason: format!(
                "{with_vip} services with a VIP (--vip included), but the eBPF maps hold at most \
                 {MAX_SERVICES}; remove [[service]] tables"
            ),
        });
    }
    Ok(out)
}

fn describe(s: &ServiceConfig) -> String {
    match &s.origin {
        Origin::TopLevel if s.vip.is_some() => "the --vip service".into(),
        Origin::TopLevel => "the top-level service".into(),
        Origin::File(_) => format!("service '{}'", s.name),
    }
}

/// Validates one `[[service]]` table on its own.
fn one_service(st: &ServiceTable, cx: &Context<'_>) -> Result<ServiceConfig, ConfigError> {
    let k = &st.keys;
    let Some(written) = &k.vip else {
        return Err(
            st.error("missing vip; add vip = \"IPV4:PORT\" (or \"IPV4:PORT/udp\"), for example vip = \"10.0.0.5:80\"")
        );
    };
    let vip = super::ebpf::resolve_vip(written).map_err(|e| st.error(format!("invalid vip '{written}': {e}")))?;
    // The name is the VIP as written, so that `eth0:80` names the same service on every host.
    let name = match k.name.as_deref().map(str::trim) {
        None => written.to_string(),
        Some(n) => {
            check_name(n).map_err(|e| st.error(format!("invalid name '{n}': {e}")))?;
            n.to_string()
        }
    };
    if vip.proto == Proto::Udp && cx.mode != ModeChoice::Ebpf {
        return Err(st.error("a UDP vip needs --mode ebpf (the userspace proxy has no UDP); add --mode ebpf"));
    }
    if vip.proto == Proto::Tcp
        && let Some((flag, _)) = cx.listeners.iter().find(|(_, l)| *l == vip.socket_addr())
    {
        return Err(st.error(format!(
            "vip {vip} is also a --{flag} address; drop one of them (without the eBPF data plane the \
             userspace proxy listens on a service's VIP itself)"
        )));
    }
    let mut backends: Vec<BackendSpec> = Vec::new();
    for b in &k.backend {
        if backends.iter().any(|x| x.addr == b.addr) {
            return Err(st.error(format!("backend '{b}' is given twice; give each backend once")));
        }
        backends.push(b.clone());
    }
    let backends_file = k.backends_file.as_ref().map(|f| f.0.clone());
    let discovery =
        Discovery::new(k.consul_service.as_ref(), &k.consul_tag, k.consul_dc.as_ref(), &k.dns_srv, &k.dns_a);
    if discovery.consul.is_none() && (!k.consul_tag.is_empty() || k.consul_dc.is_some()) {
        return Err(st.error("consul-tag and consul-dc filter consul-service; add consul-service = \"NAME\""));
    }
    if backends.is_empty() && backends_file.is_none() && !discovery.is_some() {
        return Err(st.error(
            "no backends; add backend = [\"HOST:PORT\", ...], backends-file = \"PATH\", consul-service = \"NAME\", \
             dns-srv = [\"NAME\"] or dns-a = [\"NAME:PORT\"] to this service",
        ));
    }
    let strategy = StrategySpec {
        kind: k.strategy.unwrap_or(cx.strategy.kind),
        hash_key: k.hash_key.clone().unwrap_or_else(|| cx.strategy.hash_key.clone()),
    };
    if cx.mode == ModeChoice::Ebpf
        && let Err(e) = Plane::Ebpf.supports(&strategy)
    {
        let from = if k.hash_key.is_some() { "" } else { " (taken from the top-level --hash-key)" };
        return Err(st.error(format!("invalid hash-key '{}'{from}: {e}", strategy.hash_key)));
    }
    let health = resolve(&k.health(), cx.health, vip.proto == Proto::Udp, "").map_err(|e| st.error(e))?;
    Ok(ServiceConfig {
        name,
        vip: Some(vip),
        backends,
        backends_file,
        discovery,
        strategy,
        health,
        origin: Origin::File(st.file.clone()),
    })
}

/// Names go into URLs (`?service=NAME`), log fields and JSON: keep them plain.
fn check_name(n: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/');
    if n.is_empty() || n.len() > MAX_NAME || !n.chars().all(ok) {
        return Err(format!("use 1 to {MAX_NAME} letters, digits and . - _ : /"));
    }
    Ok(())
}
