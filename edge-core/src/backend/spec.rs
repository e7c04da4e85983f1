//! How operators name a backend: `HOST:PORT[,weight=N][,proxy=v1|v2][,tls][,sni=NAME][,proto=h2]`,
//! from a flag, a file or a discovery source.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use super::ProxyProtocol;

/// A backend's stable id: its `ip:port` (IPv6 in brackets).
pub type BackendId = Arc<str>;

/// Largest accepted weight (HAProxy's range).
pub const MAX_WEIGHT: u32 = 256;

/// Errors in a backend's spelling.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not `HOST:PORT`.
    #[error(
        "backend '{0}' is not HOST:PORT; write it like 10.0.1.2:8080 or [fd00::2]:8080, optionally followed by ,weight=N, ,proxy=v1 or ,proxy=v2, ,tls, ,sni=NAME and ,proto=h2"
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
    #[error(
        "backend '{0}' has unknown option '{1}'; the options are weight=N, proxy=v1 or proxy=v2, tls, sni=NAME and proto=h1 or proto=h2"
    )]
    Option(String, String),
    /// A `proto` that is not `h1` or `h2`.
    #[error("backend '{0}' has proto '{1}'; use proto=h1 (HTTP/1.1, the default) or proto=h2 (HTTP/2, for gRPC)")]
    Proto(String, String),
    /// An `sni` that is not a DNS name or an IP address.
    #[error("backend '{0}' has sni '{1}'; give the name its certificate is for, such as sni=api.internal")]
    Sni(String, String),
    /// A PROXY protocol version that is not `v1` or `v2`.
    #[error("backend '{0}' has proxy '{1}'; use proxy=v1 (text) or proxy=v2 (binary)")]
    Proxy(String, String),
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
    /// The PROXY protocol header its connections start with, if it asks for one.
    pub proxy: Option<ProxyProtocol>,
    /// For a backend spoken to over TLS, the name its certificate must be valid for (sent as SNI
    /// when it is a DNS name): `sni=` when given, else the host as written (a name, or the IP
    /// address, checked against the certificate's IP addresses).
    pub tls: Option<String>,
    /// Spoken to over HTTP/2 (`proto=h2`: by prior knowledge in cleartext, by ALPN over TLS).
    pub h2: bool,
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
        let mut proxy = None;
        let (mut tls, mut sni, mut h2) = (false, None::<String>, false);
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
                "proxy" => {
                    if proxy.is_some() {
                        return Err(SpecError::Repeated(s.to_string(), "proxy".into()));
                    }
                    proxy = Some(
                        ProxyProtocol::parse(v).ok_or_else(|| SpecError::Proxy(s.to_string(), v.trim().to_string()))?,
                    );
                }
                "tls" if v.trim().is_empty() || v.trim() == "on" => tls = true,
                "proto" => match v.trim().to_ascii_lowercase().as_str() {
                    "h2" | "http2" => h2 = true,
                    "h1" | "http1" | "http/1.1" => h2 = false,
                    _ => return Err(SpecError::Proto(s.to_string(), v.trim().to_string())),
                },
                "sni" => {
                    let name = v.trim();
                    if rustls::pki_types::ServerName::try_from(name).is_err() || name.is_empty() {
                        return Err(SpecError::Sni(s.to_string(), name.to_string()));
                    }
                    sni = Some(name.to_string());
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
        // The name to verify: sni= first, then the host as written (a name is lost once resolved).
        let written = addr_part.rsplit_once(':').map_or(addr_part, |(h, _)| h).trim_matches(['[', ']']);
        let tls = (tls || sni.is_some()).then(|| sni.unwrap_or_else(|| written.to_string()));
        Ok(Self { addr, weight: weight.unwrap_or(1), proxy, tls, h2 })
    }

    /// Builds a spec, checking the weight.
    pub fn checked(addr: SocketAddr, weight: u32) -> Result<Self, SpecError> {
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(SpecError::Weight(addr.to_string(), weight.to_string()));
        }
        Ok(Self { addr, weight, proxy: None, tls: None, h2: false })
    }

    /// A backend at `addr` with `weight` and no PROXY protocol (what discovery reports).
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        Self { addr, weight, proxy: None, tls: None, h2: false }
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
        write!(f, "{}", self.addr)?;
        if self.weight != 1 {
            write!(f, ",weight={}", self.weight)?;
        }
        if let Some(p) = self.proxy {
            write!(f, ",proxy={}", p.as_str())?;
        }
        match &self.tls {
            Some(name) if *name == self.addr.ip().to_string() => f.write_str(",tls")?,
            Some(name) => write!(f, ",tls,sni={name}")?,
            None => {}
        }
        if self.h2 { f.write_str(",proto=h2") } else { Ok(()) }
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
    fn the_tls_options() {
        let b = BackendSpec::parse("10.0.1.2:443,tls").unwrap();
        assert_eq!(b.tls.as_deref(), Some("10.0.1.2"), "an IP address is checked against the certificate");
        assert_eq!(b.to_string(), "10.0.1.2:443,tls");
        let b = BackendSpec::parse("localhost:443,tls").unwrap();
        assert_eq!(b.tls.as_deref(), Some("localhost"), "the host as written, not the address it resolved to");
        let b = BackendSpec::parse("10.0.1.2:443,sni=api.internal").unwrap();
        assert_eq!(b.tls.as_deref(), Some("api.internal"), "sni implies tls");
        assert_eq!(b.to_string(), "10.0.1.2:443,tls,sni=api.internal");
        assert_eq!(BackendSpec::parse(&b.to_string()).unwrap(), b, "it reads back");
        let b = BackendSpec::parse("[::1]:443,tls").unwrap();
        assert_eq!(b.tls.as_deref(), Some("::1"));
        assert_eq!(BackendSpec::parse("10.0.1.2:80").unwrap().tls, None);
        let e = BackendSpec::parse("10.0.1.2:443,sni=bad name").unwrap_err();
        assert!(e.to_string().contains("give the name its certificate is for"), "{e}");
        assert!(matches!(BackendSpec::parse("10.0.1.2:443,tls=maybe"), Err(SpecError::Option(..))));
    }

    #[test]
    fn the_protocol_option() {
        let b = BackendSpec::parse("10.0.1.2:50051,proto=h2").unwrap();
        assert!(b.h2);
        assert_eq!(b.to_string(), "10.0.1.2:50051,proto=h2");
        assert!(!BackendSpec::parse("10.0.1.2:80,proto=h1").unwrap().h2);
        let e = BackendSpec::parse("10.0.1.2:80,proto=h3").unwrap_err();
        assert!(e.to_string().contains("use proto=h1 (HTTP/1.1, the default) or proto=h2"), "{e}");
    }

    #[test]
    fn the_proxy_protocol_option() {
        let b = BackendSpec::parse("10.0.1.2:80,proxy=v2,weight=3").unwrap();
        assert_eq!((b.proxy, b.weight), (Some(ProxyProtocol::V2), 3));
        assert_eq!(b.to_string(), "10.0.1.2:80,weight=3,proxy=v2");
        assert_eq!(BackendSpec::parse("10.0.1.2:80,proxy=v1").unwrap().proxy, Some(ProxyProtocol::V1));
        assert_eq!(BackendSpec::parse("10.0.1.2:80").unwrap().proxy, None);
        let e = BackendSpec::parse("10.0.1.2:80,proxy=v3").unwrap_err();
        assert!(e.to_string().contains("use proxy=v1 (text) or proxy=v2 (binary)"), "{e}");
        assert!(matches!(BackendSpec::parse("10.0.1.2:80,proxy=v1,proxy=v2"), Err(SpecError::Repeated(..))));
    }

    #[test]
    fn a_weight_given_twice_is_an_error_not_the_last_one() {
        let e = BackendSpec::parse("10.0.1.2:80,weight=1,weight=2").unwrap_err();
        assert_eq!(e, SpecError::Repeated("10.0.1.2:80,weight=1,weight=2".into(), "weight".into()));
        assert!(e.to_string().contains("gives weight twice; give it once"), "{e}");
    }
}
