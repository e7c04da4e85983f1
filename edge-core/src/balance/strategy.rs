//! Strategy names and hash keys as operators write them (`--strategy`, `--hash-key`, the admin API).

use std::fmt;
use std::str::FromStr;

use http::HeaderName;

/// Errors parsing a strategy or hash key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StrategyError {
    /// Unknown strategy name.
    #[error("unknown strategy '{0}'; use round-robin, least-connections or consistent-hash")]
    UnknownStrategy(String),
    /// Unknown hash key form.
    #[error("unknown hash key '{0}'; use source, five-tuple or header:NAME (for example header:x-user-id)")]
    UnknownHashKey(String),
    /// `header:` with an invalid header name.
    #[error("hash key header name '{0}' is not a valid HTTP header name; use letters, digits and '-'")]
    BadHeader(String),
}

/// The selection strategies; round robin unless configured otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StrategyKind {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest active requests or connections per weight.
    LeastConnections,
    /// Maglev consistent hashing on the hash key.
    ConsistentHash,
}

impl StrategyKind {
    /// The name operators use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::LeastConnections => "least-connections",
            Self::ConsistentHash => "consistent-hash",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StrategyKind {
    type Err = StrategyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "round-robin" | "roundrobin" | "rr" => Ok(Self::RoundRobin),
            "least-connections" | "leastconn" | "least-conn" => Ok(Self::LeastConnections),
            "consistent-hash" | "maglev" => Ok(Self::ConsistentHash),
            _ => Err(StrategyError::UnknownStrategy(s.to_string())),
        }
    }
}

/// What consistent hashing hashes. The default, on both data planes, is the client's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum HashKey {
    /// The client's IP address: a client sticks to a backend across connections.
    #[default]
    Source,
    /// Client address and port plus the listener address and port: each connection on its own.
    FiveTuple,
    /// An HTTP request header's value; requests without it fall back to the client address.
    Header(HeaderName),
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Source => f.write_str("source"),
            Self::FiveTuple => f.write_str("five-tuple"),
            Self::Header(h) => write!(f, "header:{h}"),
        }
    }
}

impl FromStr for HashKey {
    type Err = StrategyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "source" | "source-ip" | "client" => return Ok(Self::Source),
            "five-tuple" | "5-tuple" => return Ok(Self::FiveTuple),
            _ => {}
        }
        if let Some(name) = t.strip_prefix("header:") {
            return HeaderName::from_str(name.trim())
                .map(Self::Header)
                .map_err(|_| StrategyError::BadHeader(name.to_string()));
        }
        Err(StrategyError::UnknownHashKey(s.to_string()))
    }
}

/// A strategy with its hash key, as configured or switched at run time. The key matters only for
/// consistent hashing; it defaults to the client's address ([`HashKey::Source`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategySpec {
    /// The strategy.
    pub kind: StrategyKind,
    /// The hash key.
    pub hash_key: HashKey,
}

impl StrategySpec {
    /// Parses a strategy name and an optional hash key (default: the client's address).
    pub fn parse(kind: &str, hash_key: Option<&str>) -> Result<Self, StrategyError> {
        Ok(Self { kind: kind.parse()?, hash_key: hash_key.map(str::parse).transpose()?.unwrap_or_default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_keys() {
        assert_eq!("least-connections".parse(), Ok(StrategyKind::LeastConnections));
        assert_eq!(" Maglev ".parse(), Ok(StrategyKind::ConsistentHash));
        assert!(matches!("random".parse::<StrategyKind>(), Err(StrategyError::UnknownStrategy(_))));
        assert_eq!("source".parse(), Ok(HashKey::Source));
        assert_eq!("header:X-User-Id".parse(), Ok(HashKey::Header(HeaderName::from_static("x-user-id"))));
        assert!(matches!("header:bad header".parse::<HashKey>(), Err(StrategyError::BadHeader(_))));
        assert!(matches!("cookie:x".parse::<HashKey>(), Err(StrategyError::UnknownHashKey(_))));
        assert_eq!(HashKey::Header(HeaderName::from_static("x-a")).to_string(), "header:x-a");
        assert_eq!(StrategySpec::parse("maglev", None).unwrap().hash_key, HashKey::Source, "one default");
    }

    #[test]
    fn error_messages_name_the_fix() {
        let e = "wrr".parse::<StrategyKind>().unwrap_err().to_string();
        assert!(e.contains("round-robin") && e.contains("consistent-hash"), "{e}");
    }
}
