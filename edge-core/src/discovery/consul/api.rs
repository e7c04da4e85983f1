//! Consul's `/v1/health/service/:service` answer, read: each instance's address, port and weight,
//! and the blocking-query index from `X-Consul-Index`, checked as Consul's "Blocking Queries"
//! documentation prescribes.
//!
//! Only instances whose every check is `passing` are kept. The query asks Consul for that
//! (`?passing`); checking again here keeps the decision the same behind a cache or proxy that
//! drops the parameter. `warning` instances are left out, as fabio does and Traefik does not:
//! a warning is a service telling Consul it is degraded, and edge's own probes and outlier
//! detection decide about the rest.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use crate::backend::{BackendSpec, MAX_WEIGHT};

/// What is wrong with an answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    /// The body is not the documented JSON shape.
    #[error("consul answered JSON that is not a list of health entries: {0}")]
    Json(String),
    /// `X-Consul-Index` is missing or not a number.
    #[error("consul answered without a valid X-Consul-Index header; is the address a Consul agent?")]
    Index,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    node: Node,
    service: Service,
    #[serde(default)]
    checks: Vec<Check>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Node {
    #[serde(default)]
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Service {
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    weights: Option<Weights>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Weights {
    #[serde(default)]
    passing: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Check {
    #[serde(default)]
    status: String,
}

/// The instances of one answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Instances {
    /// The backends, each address once (the first entry wins), in Consul's order.
    pub backends: Vec<BackendSpec>,
    /// Entries left out: not passing, port 0, or an address that is not an IP (Consul allows
    /// host names; edge needs addresses for both data planes).
    pub skipped: usize,
}

/// Reads an answer's body.
pub fn parse(body: &[u8]) -> Result<Instances, AnswerError> {
    let entries: Vec<Entry> = serde_json::from_slice(body).map_err(|e| AnswerError::Json(e.to_string()))?;
    let mut out = Instances::default();
    let mut seen = HashSet::new();
    for e in entries {
        let passing = e.checks.iter().all(|c| c.status == "passing");
        let host = if e.service.address.is_empty() { &e.node.address } else { &e.service.address };
        let Ok(ip) = host.parse::<IpAddr>() else {
            out.skipped += 1;
            continue;
        };
        if !passing || e.service.port == 0 {
            out.skipped += 1;
            continue;
        }
        let addr = SocketAddr::new(ip, e.service.port);
        let weight = e.service.weights.and_then(|w| w.passing).unwrap_or(1).clamp(1, MAX_WEIGHT);
        if seen.insert(addr) {
            out.backends.push(BackendSpec::new(addr, weight));
        }
    }
    Ok(out)
}

/// The next blocking query's index from the answer's `X-Consul-Index` and the previous index:
/// reset to 0 when it went backwards (Consul restarted, or a snapshot was restored), and never 0
/// itself, which would not block and turn the watch into a busy loop.
pub fn next_index(header: Option<&str>, previous: u64) -> Result<u64, AnswerError> {
    let index: u64 = header.and_then(|h| h.trim().parse().ok()).ok_or(AnswerError::Index)?;
    Ok(if index < previous { 0 } else { index.max(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From Consul's API reference ("List Service Instances for Service", sample response),
    /// trimmed to the fields that matter and with a second, warning, instance.
    const DOCUMENTED: &str = r#"[
      {
        "Node": {"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "foobar", "Address": "10.1.10.12",
                 "Datacenter": "dc1", "TaggedAddresses": {"lan": "10.1.10.12", "wan": "10.1.10.12"}, "Meta": {}},
        "Service": {"ID": "redis", "Service": "redis", "Tags": ["primary"], "Address": "10.1.10.12",
                    "TaggedAddresses": {}, "Meta": null, "Port": 8000, "Weights": {"Passing": 10, "Warning": 1},
                    "Namespace": "default"},
        "Checks": [
          {"Node": "foobar", "CheckID": "service:redis", "Name": "Service 'redis' check", "Status": "passing",
           "Notes": "", "Output": "", "ServiceID": "redis", "ServiceName": "redis", "ServiceTags": ["primary"],
           "Namespace": "default"},
          {"Node": "foobar", "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
           "Notes": "", "Output": "", "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Namespace": "default"}
        ]
      },
      {
        "Node": {"Node": "baz", "Address": "10.1.10.13"},
        "Service": {"ID": "redis2", "Service": "redis", "Address": "", "Port": 8000},
        "Checks": [{"CheckID": "service:redis2", "Status": "warning"}]
      }
    ]"#;

    #[test]
    fn the_documented_answer_reads_with_weights_and_without_warnings() {
        let got = parse(DOCUMENTED.as_bytes()).unwrap();
        assert_eq!(got.backends, [BackendSpec::new("10.1.10.12:8000".parse().unwrap(), 10)]);
        assert_eq!(got.skipped, 1, "the warning instance");
    }

    #[test]
    fn node_address_fills_in_duplicates_collapse_and_hostnames_are_skipped() {
        let body = r#"[
          {"Node": {"Address": "10.0.0.1"}, "Service": {"Address": "", "Port": 80}},
          {"Node": {"Address": "10.0.0.1"}, "Service": {"Port": 80, "Weights": {"Passing": 5}}},
          {"Node": {"Address": "10.0.0.2"}, "Service": {"Address": "db.internal", "Port": 80}},
          {"Node": {"Address": "fd00::2"}, "Service": {"Port": 81, "Weights": {"Passing": 100000}}},
          {"Node": {"Address": "10.0.0.3"}, "Service": {"Port": 0}}
        ]"#;
        let got = parse(body.as_bytes()).unwrap();
        let addrs: Vec<String> = got.backends.iter().map(|b| format!("{} {}", b.addr, b.weight)).collect();
        assert_eq!(addrs, ["10.0.0.1:80 1", "[fd00::2]:81 256"]);
        assert_eq!(got.skipped, 2);
        assert_eq!(parse(b"[]").unwrap(), Instances::default());
    }

    #[test]
    fn malformed_answers_are_errors() {
        for body in [&b"{"[..], b"{}", b"[{\"Node\": {}}]", b"[{\"Node\":{},\"Service\":{\"Port\":70000}}]", b""] {
            assert!(matches!(parse(body), Err(AnswerError::Json(_))), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_index_follows_the_blocking_query_rules() {
        assert_eq!(next_index(Some("42"), 0), Ok(42));
        assert_eq!(next_index(Some("42"), 42), Ok(42), "unchanged: block again");
        assert_eq!(next_index(Some("7"), 42), Ok(0), "went backwards: reset");
        assert_eq!(next_index(Some("0"), 0), Ok(1), "never 0");
        assert_eq!(next_index(None, 5), Err(AnswerError::Index));
        assert_eq!(next_index(Some("x"), 5), Err(AnswerError::Index));
    }
}
