//! Services: a VIP with its own backends and strategy. The top-level `--vip`, `--backend` and
//! `--backends-file` flags make one (listed first); each `[[service]]` table of the `--config`
//! file makes another:
//!
//! ```toml
//! [[service]]
//! name = "api"                       # optional; default: the VIP text
//! vip = "10.0.0.5:8080"              # IPV4:PORT[/udp], like --vip
//! backend = ["10.0.1.2:8080", "10.0.1.3:8080,weight=2"]
//! backends-file = "/etc/edge/api.json"
//! strategy = "consistent-hash"       # default: the top-level --strategy
//! hash-key = "source"                # default: the top-level --hash-key
//! ```
//!
//! Health checks, timeouts and limits stay global. A service without `strategy` or `hash-key`
//! takes the top-level value, so `--strategy` sets the default for every service.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::file::{list, scalar};
use super::{ConfigError, ModeChoice, Proto, Vip};
use crate::backend::BackendSpec;
use crate::balance::{HashKey, StrategyKind, StrategySpec};

/// The name of the top-level service when there is no `--vip` to name it after.
pub const DEFAULT_NAME: &str = "default";

/// The kernel maps hold this many services.
pub const MAX_SERVICES: usize = edge_common::MAX_SERVICES as usize;

/// Longest service name.
const MAX_NAME: usize = 64;

/// The keys a `[[service]]` table may have, for error messages.
const KEYS: &str = "name, vip, backend, backends-file, strategy, hash-key";

/// A `[[service]]` table as written: raw strings, validated by [`validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawService {
    /// The file it came from.
    pub file: PathBuf,
    /// Its position among the file's `[[service]]` tables, from 1.
    pub index: usize,
    /// `name`.
    pub name: Option<String>,
    /// `vip`.
    pub vip: Option<String>,
    /// `backend` and `backends`, in order.
    pub backends: Vec<String>,
    /// `backends-file`.
    pub backends_file: Option<String>,
    /// `strategy`.
    pub strategy: Option<String>,
    /// `hash-key`.
    pub hash_key: Option<String>,
}

impl RawService {
    /// How errors name this service: its name (or VIP) and its position in the file.
    fn label(&self) -> String {
        match self.name.as_deref().or(self.vip.as_deref()).map(str::trim) {
            Some(n) if !n.is_empty() => format!("[[service]] '{n}' (#{})", self.index),
            _ => format!("[[service]] #{}", self.index),
        }
    }

    fn error(&self, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError::File { path: self.file.clone(), reason: format!("{}: {reason}", self.label()) }
    }
}

/// Reads the `service` key of a config file: an array of tables.
pub(super) fn from_toml(path: &Path, value: &toml::Value) -> Result<Vec<RawService>, ConfigError> {
    let file_err = |reason: String| ConfigError::File { path: path.into(), reason };
    let toml::Value::Array(items) = value else {
        return Err(file_err("'service' must be an array of tables; write each service as [[service]]".into()));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut rs = RawService { file: path.into(), index: i + 1, ..Default::default() };
        let toml::Value::Table(table) = item else {
            return Err(rs.error("not a table; write each service as [[service]] followed by its keys"));
        };
        // The label needs the name and VIP, whatever order the keys come in.
        let text = |k: &str| table.get(k).and_then(toml::Value::as_str).map(str::to_string);
        rs.name = text("name");
        rs.vip = text("vip");
        for (key, v) in table {
            let k = key.replace('_', "-");
            let one = |rs: &RawService| scalar(&k, v).map_err(|e| rs.error(e));
            match k.as_str() {
                "name" => rs.name = Some(one(&rs)?),
                "vip" => rs.vip = Some(one(&rs)?),
                "backend" | "backends" => {
                    let mut l = list(&k, v).map_err(|e| rs.error(e))?;
                    rs.backends.append(&mut l);
                }
                "backends-file" => rs.backends_file = Some(one(&rs)?),
                "strategy" => rs.strategy = Some(one(&rs)?),
                "hash-key" => rs.hash_key = Some(one(&rs)?),
                _ => {
                    return Err(rs.error(format!(
                        "unknown key '{key}'; a service takes {KEYS} (global settings such as health checks \
                         go at the top of the file, before the first [[service]])"
                    )));
                }
            }
        }
        out.push(rs);
    }
    Ok(out)
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Strategy at start.
    pub strategy: StrategySpec,
    /// Where it was configured.
    pub origin: Origin,
}

/// What validation of the `[[service]]` tables needs from the rest of the configuration.
#[derive(Debug)]
pub(super) struct Context<'a> {
    /// The data plane asked for.
    pub mode: ModeChoice,
    /// The top-level strategy, every service's default.
    pub strategy: &'a StrategySpec,
    /// `--listen` and `--listen-tcp` addresses, with their flag.
    pub listeners: Vec<(&'static str, SocketAddr)>,
}

/// Validates the `[[service]]` tables and returns every service, `top` first.
pub(super) fn validate(
    top: Option<ServiceConfig>,
    raws: &[RawService],
    cx: &Context<'_>,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    let mut out: Vec<ServiceConfig> = top.into_iter().collect();
    for rs in raws {
        let s = one(rs, cx)?;
        if let Some(other) = out.iter().find(|o| o.vip.is_some() && o.vip == s.vip) {
            let vip = s.vip.map(|v| v.to_string()).unwrap_or_default();
            return Err(rs.error(format!(
                "vip {vip} is also the VIP of {}; give each service its own VIP:PORT (same address and \
                 port are fine with another protocol)",
                describe(other)
            )));
        }
        if let Some(other) = out.iter().find(|o| o.name == s.name) {
            return Err(rs.error(format!(
                "the name '{}' is also used by {}; give each service its own name",
                s.name,
                describe(other)
            )));
        }
        out.push(s);
    }
    let with_vip = out.iter().filter(|s| s.vip.is_some()).count();
    if with_vip > MAX_SERVICES
        && let Some(rs) = raws.last()
    {
        return Err(ConfigError::File {
            path: rs.file.clone(),
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
fn one(rs: &RawService, cx: &Context<'_>) -> Result<ServiceConfig, ConfigError> {
    let Some(vip_text) = rs.vip.as_deref() else {
        return Err(
            rs.error("missing vip; add vip = \"IPV4:PORT\" (or \"IPV4:PORT/udp\"), for example vip = \"10.0.0.5:80\"")
        );
    };
    let vip: Vip = vip_text.parse().map_err(|e| rs.error(format!("invalid vip '{vip_text}': {e}")))?;
    let name = match rs.name.as_deref().map(str::trim) {
        None => vip.to_string(),
        Some(n) => {
            check_name(n).map_err(|e| rs.error(format!("invalid name '{n}': {e}")))?;
            n.to_string()
        }
    };
    if vip.proto == Proto::Udp && cx.mode != ModeChoice::Ebpf {
        return Err(rs.error("a UDP vip needs --mode ebpf (the userspace proxy has no UDP); add --mode ebpf"));
    }
    if vip.proto == Proto::Tcp {
        let addr = SocketAddr::new(IpAddr::V4(vip.addr), vip.port);
        if let Some((flag, _)) = cx.listeners.iter().find(|(_, l)| *l == addr) {
            return Err(rs.error(format!(
                "vip {vip} is also a --{flag} address; drop one of them (without the eBPF data plane the \
                 userspace proxy listens on a service's VIP itself)"
            )));
        }
    }

    let mut backends: Vec<BackendSpec> = Vec::new();
    for b in rs.backends.iter().filter(|b| !b.trim().is_empty()) {
        let spec = BackendSpec::parse(b).map_err(|e| rs.error(format!("invalid backend '{b}': {e}")))?;
        if backends.iter().any(|x| x.addr == spec.addr) {
            return Err(rs.error(format!("backend '{b}' is given twice; give each backend once")));
        }
        backends.push(spec);
    }
    let backends_file = rs.backends_file.as_deref().map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from);
    if backends.is_empty() && backends_file.is_none() {
        return Err(
            rs.error("no backends; add backend = [\"HOST:PORT\", ...] or backends-file = \"PATH\" to this service")
        );
    }

    let kind: StrategyKind = match rs.strategy.as_deref() {
        None => cx.strategy.kind,
        Some(s) => s.parse().map_err(|e| rs.error(format!("invalid strategy '{s}': {e}")))?,
    };
    let hash_key = match rs.hash_key.as_deref() {
        None => cx.strategy.hash_key.clone(),
        Some(s) => Some(s.parse::<HashKey>().map_err(|e| rs.error(format!("invalid hash-key '{s}': {e}")))?),
    };
    // An inherited header key was already refused with the top-level --hash-key.
    if cx.mode == ModeChoice::Ebpf
        && let Some(HashKey::Header(_)) = &hash_key
    {
        return Err(rs.error(format!(
            "invalid hash-key '{}': the eBPF data plane sees packets, not HTTP headers; use source or five-tuple",
            rs.hash_key.as_deref().unwrap_or_default()
        )));
    }
    Ok(ServiceConfig {
        name,
        vip: Some(vip),
        backends,
        backends_file,
        strategy: StrategySpec { kind, hash_key },
        origin: Origin::File(rs.file.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RunArgs;
    use crate::config::{Config, merge_config_str};

    const FILE: &str = "edge.toml";

    /// Validates flags `f` plus the config file `text`.
    fn load(text: &str, f: impl FnOnce(&mut RunArgs)) -> Result<Config, ConfigError> {
        let mut raw = RunArgs::default();
        f(&mut raw);
        merge_config_str(&mut raw, Path::new(FILE), text)?;
        Config::validate(&raw)
    }

    fn userspace(r: &mut RunArgs) {
        r.mode = Some("userspace".into());
    }

    fn ebpf(r: &mut RunArgs) {
        r.mode = Some("ebpf".into());
        r.iface = vec!["eth0".into()];
    }

    const TWO: &str = r#"
strategy = "least-connections"

[[service]]
name = "web"
vip = "10.0.0.5:80"
backend = ["10.0.1.2:80", "10.0.1.3:80,weight=2"]

[[service]]
vip = "10.0.0.5:53/udp"
backends = "10.0.1.4:53"
backends_file = "/etc/edge/dns.json"
strategy = "consistent-hash"
hash-key = "source"
"#;

    #[test]
    fn services_parse_with_defaults() {
        let c = load(TWO, ebpf).unwrap();
        assert_eq!(c.services.len(), 2, "no top-level service without top-level backends");
        let (web, dns) = (&c.services[0], &c.services[1]);
        assert_eq!(web.name, "web");
        assert_eq!(web.vip, Some("10.0.0.5:80".parse().unwrap()));
        assert_eq!(web.backends.len(), 2);
        assert_eq!(web.backends[1].weight, 2);
        assert_eq!(web.strategy.kind, StrategyKind::LeastConnections, "the top-level strategy is the default");
        assert_eq!(web.origin, Origin::File(FILE.into()));
        assert_eq!(dns.name, "10.0.0.5:53/udp", "the name defaults to the VIP text");
        assert_eq!(dns.backends_file, Some(PathBuf::from("/etc/edge/dns.json")));
        assert_eq!(dns.strategy, StrategySpec { kind: StrategyKind::ConsistentHash, hash_key: Some(HashKey::Source) });
    }

    #[test]
    fn top_level_service_comes_first() {
        let c = load(TWO, |r| {
            ebpf(r);
            r.vip = Some("10.0.0.6:80".into());
            r.backend = vec!["10.0.2.2:80".into()];
        })
        .unwrap();
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["10.0.0.6:80", "web", "10.0.0.5:53/udp"]);
        assert_eq!(c.services[0].origin, Origin::TopLevel);

        // Without --vip the top-level backends still make a service, for the listeners.
        let c = load(&TWO.replace("/udp", ""), |r| {
            userspace(r);
            r.listen = vec![":8080".into()];
            r.backend = vec!["10.0.2.2:80".into()];
        })
        .unwrap();
        assert_eq!(c.services[0].name, DEFAULT_NAME);
        assert_eq!(c.services[0].vip, None);
    }

    #[test]
    fn services_alone_are_something_to_listen_on() {
        let text = "[[service]]\nvip = \"127.0.0.1:8081\"\nbackend = \"127.0.0.1:9000\"\n";
        let c = load(text, userspace).unwrap();
        assert_eq!(c.services.len(), 1);
        assert!(c.listen.is_empty() && c.listen_tcp.is_empty());
    }

    #[test]
    fn no_services_keeps_the_top_level_one() {
        let c = load("", |r| {
            r.listen = vec![":8080".into()];
            r.backend = vec!["10.0.2.2:80".into()];
        })
        .unwrap();
        assert_eq!(c.services.len(), 1);
        assert_eq!((c.services[0].name.as_str(), c.services[0].vip), (DEFAULT_NAME, None));
    }

    #[test]
    fn bad_services_name_the_service_the_file_and_the_fix() {
        let svc = |body: &str| format!("[[service]]\n{body}\n");
        let ok = "vip = \"10.0.0.5:80\"\nbackend = \"10.0.1.2:80\"";
        let many: String =
            (1..=17).map(|i| svc(&format!("vip = \"10.0.0.5:{i}\"\nbackend = \"10.0.1.2:80\""))).collect();
        type Case = (String, fn(&mut RunArgs), &'static str);
        let cases: Vec<Case> = vec![
            (svc("backend = \"10.0.1.2:80\""), ebpf, "[[service]] #1: missing vip; add vip = \"IPV4:PORT\""),
            (svc("name = \"a\"\nbackend = \"10.0.1.2:80\""), ebpf, "[[service]] 'a' (#1): missing vip"),
            (svc("vip = \"10.0.0.5\"\nbackend = \"10.0.1.2:80\""), ebpf, "invalid vip '10.0.0.5': write IPV4:PORT"),
            (
                svc(ok) + &svc(&format!("name = \"10.0.0.5:80\"\n{}", ok.replace(":80\"", ":81\""))),
                ebpf,
                "[[service]] '10.0.0.5:80' (#2): the name '10.0.0.5:80' is also used by service '10.0.0.5:80'",
            ),
            (
                svc(ok) + &svc(&format!("name = \"b\"\n{ok}")),
                ebpf,
                "[[service]] 'b' (#2): vip 10.0.0.5:80 is also the VIP of service '10.0.0.5:80'",
            ),
            (many, ebpf, "17 services with a VIP (--vip included), but the eBPF maps hold at most 16"),
            (svc("vip = \"10.0.0.5:80\""), ebpf, "[[service]] '10.0.0.5:80' (#1): no backends; add backend ="),
            (
                svc(&format!("{ok}\nbakend = \"x\"")),
                ebpf,
                "unknown key 'bakend'; a service takes name, vip, backend, backends-file, strategy, hash-key",
            ),
            (
                svc(&format!("{ok}\nhealth-path = \"/\"")),
                ebpf,
                "global settings such as health checks go at the top of the file",
            ),
            (svc("vip = \"10.0.0.5:53/udp\"\nbackend = \"10.0.1.2:53\""), userspace, "a UDP vip needs --mode ebpf"),
            (svc("vip = \"10.0.0.5:53/udp\"\nbackend = \"10.0.1.2:53\""), |_| {}, "a UDP vip needs --mode ebpf"),
            (svc(&format!("{ok}\nstrategy = \"random\"")), ebpf, "invalid strategy 'random': unknown strategy"),
            (svc(&format!("{ok}\nhash-key = \"cookie\"")), ebpf, "invalid hash-key 'cookie': unknown hash key"),
            (
                svc(&format!("{ok}\nhash-key = \"header:x-user\"")),
                ebpf,
                "invalid hash-key 'header:x-user': the eBPF data plane sees packets",
            ),
            (svc("vip = \"10.0.0.5:80\"\nbackend = \"nohost\""), ebpf, "invalid backend 'nohost'"),
            (
                svc("vip = \"10.0.0.5:80\"\nbackend = [\"10.0.1.2:80\", \"10.0.1.2:80\"]"),
                ebpf,
                "backend '10.0.1.2:80' is given twice",
            ),
            (svc(&format!("name = \"a b\"\n{ok}")), ebpf, "invalid name 'a b': use 1 to 64 letters"),
            ("service = 1".into(), ebpf, "'service' must be an array of tables"),
            ("service = [1]".into(), ebpf, "[[service]] #1: not a table"),
            (svc("vip = 5\nbackend = \"10.0.1.2:80\""), ebpf, "invalid vip '5'"),
            (svc("vip = [[1]]"), ebpf, "must be a string or a number"),
        ];
        for (text, flags, want) in cases {
            let e = load(&text, flags).unwrap_err().to_string();
            assert!(e.starts_with("config file edge.toml: "), "the file is named: {e:?}");
            assert!(e.contains(want), "expected {want:?} in {e:?}");
            assert!(!e.ends_with('.'), "no trailing period: {e:?}");
        }
    }

    #[test]
    fn conflicts_with_the_top_level_flags() {
        let text = "[[service]]\nvip = \"10.0.0.5:80\"\nbackend = \"10.0.1.2:80\"\n";
        let e = load(text, |r| {
            ebpf(r);
            r.vip = Some("10.0.0.5:80".into());
            r.backend = vec!["10.0.2.2:80".into()];
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("vip 10.0.0.5:80 is also the VIP of the --vip service"), "{e}");

        let text = "[[service]]\nvip = \"127.0.0.1:8080\"\nbackend = \"127.0.0.1:9000\"\n";
        let e = load(text, |r| {
            userspace(r);
            r.listen_tcp = vec!["127.0.0.1:8080".into()];
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("vip 127.0.0.1:8080 is also a --listen-tcp address"), "{e}");

        let e = load(&text.replace("127.0.0.1:8080", "10.0.0.5:80"), |r| {
            ebpf(r);
            r.hash_key = Some("header:x-user".into());
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid --hash-key 'header:x-user'"), "the top-level check still runs first: {e}");

        // Same address and port with another protocol is another service.
        let text = "[[service]]\nvip = \"10.0.0.5:53\"\nbackend = \"10.0.1.2:53\"\n\
                    [[service]]\nvip = \"10.0.0.5:53/udp\"\nbackend = \"10.0.1.2:53\"\n";
        assert_eq!(load(text, ebpf).unwrap().services.len(), 2);
    }

    #[test]
    fn top_level_vip_without_backends_is_still_an_error() {
        let text = "[[service]]\nvip = \"10.0.0.5:80\"\nbackend = \"10.0.1.2:80\"\n";
        let e = load(text, |r| {
            ebpf(r);
            r.vip = Some("10.0.0.6:80".into());
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("no backends; give --backend"), "{e}");
    }

    #[test]
    fn sixteen_services_fit() {
        let text: String =
            (1..=16).map(|i| format!("[[service]]\nvip = \"10.0.0.5:{i}\"\nbackend = \"10.0.1.2:80\"\n")).collect();
        assert_eq!(load(&text, ebpf).unwrap().services.len(), 16);
    }
}
