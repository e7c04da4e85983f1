//! The proxy's settings and their defaults (the binary's flags fill them in).

use std::time::Duration;

use edge_core::balance::Backoff;

/// When a failed attempt is tried again on another backend (`--retry-on`, `--retries`,
/// `--retry-body-limit`, `--outlier-5xx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most retries per request (0: none).
    pub retries: u32,
    /// Retry a connect that failed or timed out (nothing reached the backend).
    pub connect_failure: bool,
    /// Retry an idempotent request whose connection closed or reset before any response byte.
    pub reset: bool,
    /// Retry an idempotent request answered 502, 503 or 504.
    pub gateway_error: bool,
    /// Send again, whatever its method, a request that an HTTP/2 backend refused unprocessed.
    pub refused_stream: bool,
    /// Request bodies up to this size are kept so the request can be sent again; larger ones
    /// stream and are never retried once sent.
    pub body_limit: usize,
    /// Outlier detection counts every 5xx, not only 502, 503 and 504.
    pub outlier_5xx: bool,
    /// Waits between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 1,
            connect_failure: true,
            reset: true,
            gateway_error: true,
            refused_stream: true,
            body_limit: 64 * 1024,
            outlier_5xx: false,
            backoff: Backoff::default(),
        }
    }
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
    /// Client connections start with a PROXY protocol header (refused without one).
    pub accept_proxy_protocol: bool,
    /// Retries.
    pub retry: RetryPolicy,
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
            accept_proxy_protocol: false,
            retry: RetryPolicy::default(),
        }
    }
}
