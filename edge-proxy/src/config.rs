//! The proxy's settings and their defaults (the binary's flags fill them in).

use std::time::Duration;

/// Proxy limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Time for a client to send a complete request head.
    pub header_read_timeout: Duration,
    /// Time to connect to a backend.
    pub connect_timeout: Duration,
    /// Time for a backend to send its response head.
    pub upstream_timeout: Duration,
    /// Idle keep-alive (and TCP-mode) connections close after this; so does a client connection
    /// whose responses make no progress toward the client for this long (a client that stopped
    /// reading).
    pub idle_timeout: Duration,
    /// Longest gap between body bytes: from a backend once its response head arrived, and from a
    /// client sending a request body.
    pub body_timeout: Duration,
    /// Slowest request body accepted, bytes per second on average: a request body must arrive
    /// within `body_timeout` plus one second per this many bytes (0: no rate, only the gap rule).
    pub body_min_rate: u64,
    /// Most open client connections over every listener; more wait in the accept queue.
    pub max_connections: usize,
    /// Most HTTP requests in flight over the process; more are answered 503 at once.
    pub max_requests: usize,
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
            body_timeout: Duration::from_secs(30),
            body_min_rate: 1024,
            max_connections: 10_000,
            max_requests: 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
        }
    }
}
