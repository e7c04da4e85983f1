//! Backends from DNS (`--dns-srv`, `--dns-a`): AWS Cloud Map, Consul DNS, or any server with SRV
//! or A/AAAA records, resolved with hickory (the system's resolver configuration, or
//! `--dns-server`).
//!
//! - SRV: every target of the lowest priority group, each target's addresses with the record's
//!   port and weight (0 counts as 1, above 256 as 256).
//! - A/AAAA: every address of the name, on the given port, weight 1.
//!
//! A name is resolved again when its records expire: at the shortest TTL of the answer, clamped
//! between [`TTL_FLOOR`] (a TTL of 0 must not turn into a query loop) and [`TTL_CEILING`] (a long
//! TTL must not hide a change for long; a caching resolver in between may still). SERVFAIL,
//! timeouts and refused queries keep the last good list and are retried with a back-off. NXDOMAIN
//! and an empty answer keep it too: a name that suddenly has no records is more often a mistake
//! (a deleted namespace, a typo in a new task definition) than a service with no instances, and
//! edge's own probes take out instances that are really gone. Before the first good answer they
//! mean no backends.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;

use super::{Closed, Discover, Sink, Update, retry_delay};
use crate::backend::{BackendSpec, MAX_WEIGHT};
use crate::util::BoxFuture;

/// Shortest time between two resolutions of a name.
pub const TTL_FLOOR: Duration = Duration::from_secs(1);
/// Longest time between two resolutions of a name.
pub const TTL_CEILING: Duration = Duration::from_secs(30);
/// Limit of one DNS query (hickory tries each server with it).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// What to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsQuery {
    /// SRV records of this name.
    Srv(String),
    /// A and AAAA records of this name, on this port.
    Addr {
        /// The name.
        name: String,
        /// The backends' port.
        port: u16,
    },
}

impl std::fmt::Display for DnsQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Srv(n) => write!(f, "SRV {n}"),
            Self::Addr { name, port } => write!(f, "A/AAAA {name}:{port}"),
        }
    }
}

/// Why a resolution gave no list.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The resolver configuration could not be read.
    #[error("cannot read the system's DNS configuration: {0}; give --dns-server ADDR:PORT")]
    Config(String),
    /// The name does not exist, or has no such records.
    #[error("{query}: no records ({reason}); keeping the last good list")]
    Empty {
        /// The query.
        query: String,
        /// The resolver's words.
        reason: String,
    },
    /// The query failed (SERVFAIL, timeout, refused, network).
    #[error("{query}: {reason}; keeping the last good list")]
    Failed {
        /// The query.
        query: String,
        /// The resolver's words.
        reason: String,
    },
}

/// A resolver for the DNS sources: the system's configuration, or `server`.
pub fn resolver(server: Option<SocketAddr>) -> Result<Arc<TokioResolver>, DnsError> {
    let mut builder = match server {
        Some(s) => TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from_ips_clear(&[s.ip()], s.port(), true)),
            TokioConnectionProvider::default(),
        ),
        None => TokioResolver::builder_tokio().map_err(|e| DnsError::Config(e.to_string()))?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 2;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // No cache in edge: every refresh asks the server, so the TTL that schedules the next one is
    // the server's, not what is left of a cached copy.
    opts.cache_size = 0;
    Ok(Arc::new(builder.build()))
}

/// The backends of an SRV answer: (target, port, weight, priority) and each target's addresses.
pub fn from_srv(
    records: &[(String, u16, u16, u16)],
    addrs: &dyn Fn(&str) -> Vec<std::net::IpAddr>,
) -> Vec<BackendSpec> {
    let Some(lowest) = records.iter().map(|r| r.3).min() else { return Vec::new() };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (target, port, weight, _) in records.iter().filter(|r| r.3 == lowest) {
        if *port == 0 {
            continue;
        }
        for ip in addrs(target) {
            let addr = SocketAddr::new(ip, *port);
            if seen.insert(addr) {
                out.push(BackendSpec::new(addr, u32::from(*weight).clamp(1, MAX_WEIGHT)));
            }
        }
    }
    out
}

/// The backends a raw DNS answer would give for an SRV query: its SRV records, their targets'
/// addresses from the answer's A/AAAA records. For the fuzz targets in `fuzz/`: hostile answers go
/// through hickory's parser and then through [`from_srv`], as they do when resolved.
#[cfg(fuzzing)]
pub fn backends_from_answer(bytes: &[u8]) -> Vec<BackendSpec> {
    use hickory_resolver::proto::op::Message;
    use hickory_resolver::proto::rr::RData;
    let Ok(msg) = Message::from_vec(bytes) else { return Vec::new() };
    let records = msg.answers().iter().chain(msg.additionals());
    let mut srv = Vec::new();
    let mut ips: std::collections::HashMap<String, Vec<std::net::IpAddr>> = std::collections::HashMap::new();
    for r in records {
        match r.data() {
            RData::SRV(s) => srv.push((s.target().to_ascii(), s.port(), s.weight(), s.priority())),
            RData::A(a) => ips.entry(r.name().to_ascii()).or_default().push(std::net::IpAddr::V4(a.0)),
            RData::AAAA(a) => ips.entry(r.name().to_ascii()).or_default().push(std::net::IpAddr::V6(a.0)),
            _ => {}
        }
    }
    from_srv(&srv, &|t| ips.get(t).cloned().unwrap_or_default())
}

/// A DNS source for one name.
#[derive(Debug, Clone)]
pub struct DnsSource {
    resolver: Arc<TokioResolver>,
    query: DnsQuery,
}

impl DnsSource {
    /// Resolves `query` with `resolver`.
    pub fn new(resolver: Arc<TokioResolver>, query: DnsQuery) -> Self {
        Self { resolver, query }
    }

    /// One resolution: the backends and when the records expire.
    async fn resolve(&self) -> Result<(Vec<BackendSpec>, Instant), DnsError> {
        let q = self.query.to_string();
        let fail = |e: hickory_resolver::ResolveError| {
            if e.is_no_records_found() || e.is_nx_domain() {
                DnsError::Empty { query: q.clone(), reason: e.to_string() }
            } else {
                DnsError::Failed { query: q.clone(), reason: e.to_string() }
            }
        };
        let (backends, until) = match &self.query {
            DnsQuery::Addr { name, port } => {
                let ips = self.resolver.lookup_ip(name.as_str()).await.map_err(fail)?;
                let mut seen = HashSet::new();
                let list: Vec<BackendSpec> = ips
                    .iter()
                    .map(|ip| SocketAddr::new(ip, *port))
                    .filter(|a| seen.insert(*a))
                    .map(|addr| BackendSpec::new(addr, 1))
                    .collect();
                (list, ips.valid_until())
            }
            DnsQuery::Srv(name) => {
                let srv = self.resolver.srv_lookup(name.as_str()).await.map_err(fail)?;
                let mut until = srv.as_lookup().valid_until();
                let records: Vec<(String, u16, u16, u16)> =
                    srv.iter().map(|r| (r.target().to_ascii(), r.port(), r.weight(), r.priority())).collect();
                let mut resolved = std::collections::HashMap::new();
                for (target, ..) in &records {
                    if resolved.contains_key(target) {
                        continue;
                    }
                    let ips = self.resolver.lookup_ip(target.as_str()).await.map_err(fail)?;
                    until = until.min(ips.valid_until());
                    resolved.insert(target.clone(), ips.iter().collect::<Vec<_>>());
                }
                (from_srv(&records, &|t| resolved.get(t).cloned().unwrap_or_default()), until)
            }
        };
        if backends.is_empty() {
            return Err(DnsError::Empty { query: q, reason: "the answer has no usable record".into() });
        }
        Ok((backends, until))
    }

    async fn watch(self, sink: Sink) -> Result<(), Closed> {
        let mut last: Option<Vec<BackendSpec>> = None;
        let mut failures = 0u32;
        loop {
            let wait = match self.resolve().await {
                Ok((backends, until)) => {
                    failures = 0;
                    sink.offer(&mut last, backends).await?;
                    until.saturating_duration_since(Instant::now()).clamp(TTL_FLOOR, TTL_CEILING)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    sink.error(&e);
                    if last.is_none() && matches!(e, DnsError::Empty { .. }) {
                        // Before any good answer, no records means no backends (and lets the
                        // agent report the service instead of waiting for it).
                        sink.send(Update::Reset(Vec::new())).await?;
                        last = Some(Vec::new());
                    }
                    retry_delay(failures).min(TTL_CEILING)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

impl Discover for DnsSource {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn run(self: Box<Self>, sink: Sink) -> BoxFuture<'static, Result<(), Closed>> {
        Box::pin(self.watch(sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srv_keeps_the_lowest_priority_group_with_weights() {
        let records = vec![
            ("a.svc.".to_string(), 8080, 10, 1),
            ("b.svc.".to_string(), 8080, 0, 1),
            ("c.svc.".to_string(), 8080, 5, 2),
            ("a.svc.".to_string(), 8080, 10, 1),
            ("d.svc.".to_string(), 0, 1, 1),
            ("e.svc.".to_string(), 9000, 60000, 1),
        ];
        let ips = |t: &str| match t {
            "a.svc." => vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            "b.svc." => vec!["10.0.0.2".parse().unwrap()],
            "e.svc." => vec!["10.0.0.5".parse().unwrap()],
            _ => vec!["10.0.0.9".parse().unwrap()],
        };
        let got: Vec<String> = from_srv(&records, &ips).iter().map(|b| format!("{} {}", b.addr, b.weight)).collect();
        assert_eq!(got, ["10.0.0.1:8080 10", "[fd00::1]:8080 10", "10.0.0.2:8080 1", "10.0.0.5:9000 256"]);
        assert!(from_srv(&[], &ips).is_empty());
    }
}
