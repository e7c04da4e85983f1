//! How operators name a backend: `HOST:PORT[,weight=N]`, from a flag, a file or a discovery source.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// A backend's stable id: its `ip:port` (IPv6 in brackets).
pub type BackendId = Arc<str>;

/// Largest accepted weight (HAProxy's range).
pub const MAX_WEIGHT: u32 = 256;

/// Errors in a backend's spelling.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not `HOST:PORT`.
    #[error(
        "backend '{0}' is not HOST:PORT; write it like 10.0.1.2:8080 or [fd00::2]:8080, optionally followed by ,weight=N"
    )]
    Address(String),
    /// The host name did not resolve.
    #[error("backend '{0}' does not resolve to an address; use an IP address or a name this host can resolve")]
    Resolve(String),
    /// Port zero.
    #[error("backend '{0}' has port 0; give the port the backend listens on")]
    Port(String),
    /// Weight out of range or not a number.
    #[error("backend '{0}' has weight '{1}'; use an integer from 1 to 256")]
    Weight(String, String),
    /// An unknown `,key=value` option.
    #[error("backend '{0}' has unknown option '{1}'; the only option is weight=N")]
    Option(String, String),
    /// The same option twice.
    #[error("backend '{0}' gives {1} twice; give it once")]
    Repeated(String, String),
}

/// A backend as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Relative weight, 1..=256.
    pub weight: u32,
}

impl BackendSpec {
    /// The backend's id.
    pub fn id(&self) -> BackendId {
        self.addr.to_string().into()
    }

    /// Parses `HOST:PORT[,weight=N]`. Host names are resolved once, here, to their first address
    /// (IPv4 preferred), as HAProxy does at start.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        let mut parts = s.split(',');
        let addr_part = parts.next().unwrap_or_default().trim();
        let mut weight = None;
        for opt in parts {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            match k.trim() {
                "weight" => {
                    if weight.is_some() {
                        return Err(SpecError::Repeated(s.to_string(), "weight".into()));
                    }
                    let w = v
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|w| (1..=MAX_WEIGHT).contains(w))
                        .ok_or_else(|| SpecError::Weight(s.to_string(), v.trim().to_string()))?;
                    weight = Some(w);
                }
                other => return Err(SpecError::Option(s.to_string(), other.to_string())),
            }
        }
        let addr = parse_addr(addr_part).map_err(|e| match e {
            AddrError::Syntax => SpecError::Address(s.to_string()),
            AddrError::Resolve => SpecError::Resolve(s.to_string()),
        })?;
        if addr.port() == 0 {
            return Err(SpecError::Port(s.to_string()));
        }
        Ok(Self { addr, weight: weight.unwrap_or(1) })
    }

    /// Builds a spec, checking the weight.
    pub fn checked(addr: SocketAddr, weight: u32) -> Result<Self, SpecError> {
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(SpecError::Weight(addr.to_string(), weight.to_string()));
        }
        Ok(Self { addr, weight })
    }
}

impl std::str::FromStr for BackendSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Self::parse(s)
    }
}

impl std::fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.weight == 1 { write!(f, "{}", self.addr) } else { write!(f, "{},weight={}", self.addr, self.weight) }
    }
}

enum AddrError {
    Syntax,
    Resolve,
}

/// Parses an `ip:port` literal, or resolves `host:port`.
fn parse_addr(s: &str) -> Result<SocketAddr, AddrError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = s.rsplit_once(':').ok_or(AddrError::Syntax)?;
    if host.is_empty() || port.parse::<u16>().is_err() || host.contains(['/', ' ', '[', ']']) {
        return Err(AddrError::Syntax);
    }
    // Fuzzing must not send the resolver random names (it would query the host's DNS servers).
    if cfg!(fuzzing) {
        return Err(AddrError::Resolve);
    }
    let addrs: Vec<SocketAddr> = s.to_socket_addrs().map_err(|_| AddrError::Resolve)?.collect();
    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied().ok_or(AddrError::Resolve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_weights() {
        let b = BackendSpec::parse("10.0.1.2:8080").unwrap();
        assert_eq!((b.addr.to_string().as_str(), b.weight), ("10.0.1.2:8080", 1));
        let b = BackendSpec::parse(" [fd00::2]:80 , weight=7 ").unwrap();
        assert_eq!((b.addr.to_string().as_str(), b.weight), ("[fd00::2]:80", 7));
        assert_eq!(b.to_string(), "[fd00::2]:80,weight=7");
        let b = BackendSpec::parse("localhost:9000").unwrap();
        assert_eq!(b.addr.port(), 9000);
        assert!(b.addr.ip().is_loopback());
    }

    #[test]
    fn rejects_bad_specs_with_the_fix() {
        assert!(matches!(BackendSpec::parse("10.0.1.2"), Err(SpecError::Address(_))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:99999"), Err(SpecError::Address(_))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:0"), Err(SpecError::Port(_))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:80,weight=0"), Err(SpecError::Weight(..))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:80,weight=257"), Err(SpecError::Weight(..))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:80,weight=x"), Err(SpecError::Weight(..))));
        assert!(matches!(BackendSpec::parse("10.0.1.2:80,backup"), Err(SpecError::Option(..))));
        assert!(matches!(BackendSpec::parse("no-such-host.invalid:80"), Err(SpecError::Resolve(_))));
        let msg = BackendSpec::parse("10.0.1.2:80,weight=0").unwrap_err().to_string();
        assert!(msg.contains("1 to 256"), "{msg}");
    }

    #[test]
    fn a_weight_given_twice_is_an_error_not_the_last_one() {
        let e = BackendSpec::parse("10.0.1.2:80,weight=1,weight=2").unwrap_err();
        assert_eq!(e, SpecError::Repeated("10.0.1.2:80,weight=1,weight=2".into(), "weight".into()));
        assert!(e.to_string().contains("gives weight twice; give it once"), "{e}");
    }
}
