//! The proxy's own counters (backends count into their own `BackendStats`): connections per
//! listener kind and the client errors the proxy answered, for the whole process
//! ([`ProxyStats`]); retries and requests that found no backend, per service
//! ([`ServiceTraffic`]). Plain atomics, shared by every worker; the metrics exporter reads them.
//! Label values are the enums here.

use edge_core::balance::{RetryBudget, RetryBudgetConfig};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use edge_core::util::Gauge;

edge_core::label_enum! {
    /// A listener's protocol.
    pub enum ListenerKind {
        /// Cleartext HTTP.
        Http => "http",
        /// HTTP over TLS.
        Https => "https",
        /// Raw TCP.
        Tcp => "tcp",
    }
}

edge_core::label_enum! {
    /// A client mistake the proxy answered itself.
    pub enum ClientError {
        /// A malformed request head (400).
        BadRequest => "bad_request",
        /// A request head over the size or count limits (431).
        HeaderTooLarge => "header_too_large",
        /// A request head that did not complete in time (408).
        HeaderTimeout => "header_timeout",
        /// A failed TLS handshake.
        TlsHandshake => "tls_handshake",
        /// A request body that failed (400).
        RequestBody => "request_body",
        /// A request body that stalled or crawled below `--body-min-rate` (408).
        BodyTimeout => "body_timeout",
        /// A client that stopped reading its responses for `--idle-timeout` (connection closed).
        WriteStall => "write_stall",
        /// A connection without a valid PROXY protocol header on a listener that requires one
        /// (closed).
        ProxyProtocol => "proxy_protocol",
    }
}

edge_core::label_enum! {
    /// Why an upstream attempt was made again.
    pub enum RetryReason {
        /// A refused or timed-out connect: nothing reached the backend.
        Connect => "connect",
        /// An idempotent bodyless request whose connection closed before any answer.
        EmptyResponse => "empty_response",
        /// A pooled keep-alive connection the backend had already closed.
        StaleConnection => "stale_connection",
        /// An idempotent request answered 502, 503 or 504.
        GatewayError => "gateway_error",
        /// An HTTP/2 backend refused the stream unprocessed (`REFUSED_STREAM` or `GOAWAY`).
        RefusedStream => "refused_stream",
    }
}

edge_core::label_enum! {
    /// How a request that wanted a retry fared.
    pub enum RetryOutcome {
        /// The retry got a response that was not a gateway failure.
        Succeeded => "succeeded",
        /// The retry failed too.
        Failed => "failed",
        /// The retry budget was spent: no retry.
        BudgetExhausted => "budget_exhausted",
        /// No other backend, or no time left before the request's deadline: no retry.
        NoTarget => "no_target",
    }
}

edge_core::label_enum! {
    /// What happened to a request or connection that found no eligible backend.
    pub enum NoBackend {
        /// Answered 503 (or the TCP connection closed).
        Rejected => "rejected",
        /// The service was in panic mode: sent to a backend regardless of health.
        Panic => "panic",
    }
}

/// Process-wide proxy counters.
#[derive(Debug, Default)]
pub struct ProxyStats {
    connections: [AtomicU64; ListenerKind::ALL.len()],
    open: [Gauge; ListenerKind::ALL.len()],
    client_errors: [AtomicU64; ClientError::ALL.len()],
    limited: AtomicU64,
    tunnels: AtomicU64,
    open_tunnels: AtomicI64,
}

impl ProxyStats {
    /// Counts an accepted connection; returns the gauge of open ones to hold while it lives.
    pub(crate) fn accepted(&self, kind: ListenerKind) -> &Gauge {
        self.connections[kind as usize].fetch_add(1, Ordering::Relaxed);
        &self.open[kind as usize]
    }

    /// Accepted connections so far.
    pub fn connections(&self, kind: ListenerKind) -> u64 {
        self.connections[kind as usize].load(Ordering::Relaxed)
    }

    /// Open connections now.
    pub fn open(&self, kind: ListenerKind) -> i64 {
        self.open[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts a client error.
    pub fn client_error(&self, kind: ClientError) {
        self.client_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a pause of accepting at `--max-connections`.
    pub(crate) fn limit_reached(&self) {
        self.limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Times accepting paused at `--max-connections`.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    /// Client errors of `kind` so far.
    pub fn client_errors(&self, kind: ClientError) -> u64 {
        self.client_errors[kind as usize].load(Ordering::Relaxed)
    }

    /// Counts an upgraded connection (a tunnel) opening.
    pub(crate) fn tunnel_opened(&self) {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
        self.open_tunnels.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a tunnel closing.
    pub(crate) fn tunnel_closed(&self) {
        self.open_tunnels.fetch_sub(1, Ordering::Relaxed);
    }

    /// Upgraded connections (WebSocket and other `Upgrade`s) so far.
    pub fn tunnels(&self) -> u64 {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Upgraded connections open now.
    pub fn open_tunnels(&self) -> i64 {
        self.open_tunnels.load(Ordering::Relaxed)
    }
}

/// One service's traffic counters that belong to no backend, and its retry budget (tokens shared by
/// every worker without a lock).
#[derive(Debug)]
pub struct ServiceTraffic {
    retries: [AtomicU64; RetryReason::ALL.len()],
    outcomes: [AtomicU64; RetryOutcome::ALL.len()],
    no_backend: [AtomicU64; NoBackend::ALL.len()],
    unrouted: AtomicU64,
    /// The service's retry budget.
    pub budget: RetryBudget,
    /// The second (since start) of the last budget-exhaustion warning, to log at most one a second.
    warned: AtomicU64,
    start: std::time::Instant,
}

impl Default for ServiceTraffic {
    fn default() -> Self {
        Self::new(RetryBudgetConfig::default())
    }
}

impl ServiceTraffic {
    /// Zeroed counters and an empty budget.
    pub fn new(budget: RetryBudgetConfig) -> Self {
        Self {
            retries: Default::default(),
            outcomes: Default::default(),
            no_backend: Default::default(),
            unrouted: AtomicU64::new(0),
            budget: RetryBudget::new(budget),
            warned: AtomicU64::new(u64::MAX),
            start: std::time::Instant::now(),
        }
    }

    /// Counts how a wanted retry fared; logs budget exhaustion at most once a second.
    pub fn retry_outcome(&self, outcome: RetryOutcome) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if outcome == RetryOutcome::BudgetExhausted {
            let second = self.start.elapsed().as_secs();
            if self.warned.swap(second, Ordering::Relaxed) != second {
                tracing::warn!(
                    denied = self.budget.denied(),
                    granted = self.budget.granted(),
                    "retry budget exhausted: failed requests are not retried (see --retry-budget)"
                );
            }
        }
    }

    /// Wanted retries that fared as `outcome` so far.
    pub fn retry_outcomes(&self, outcome: RetryOutcome) -> u64 {
        self.outcomes[outcome as usize].load(Ordering::Relaxed)
    }

    /// Counts a retry.
    pub fn retry(&self, reason: RetryReason) {
        self.retries[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Retries for `reason` so far.
    pub fn retries(&self, reason: RetryReason) -> u64 {
        self.retries[reason as usize].load(Ordering::Relaxed)
    }

    /// Counts a request or connection without an eligible backend.
    pub fn no_backend(&self, outcome: NoBackend) {
        self.no_backend[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Such requests and connections so far.
    pub fn no_backends(&self, outcome: NoBackend) -> u64 {
        self.no_backend[outcome as usize].load(Ordering::Relaxed)
    }

    /// Counts an HTTP request answered 503 because no backend could take it.
    pub fn unrouted(&self) {
        self.unrouted.fetch_add(1, Ordering::Relaxed);
    }

    /// HTTP requests answered 503 without a backend so far.
    pub fn unrouted_requests(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_the_label_lists() {
        for (i, k) in ListenerKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        for (i, k) in ClientError::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        for (i, k) in RetryReason::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        for (i, k) in RetryOutcome::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        for (i, k) in NoBackend::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }
}
