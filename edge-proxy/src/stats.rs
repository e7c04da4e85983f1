//! The proxy's own counters (backends count into their own `BackendStats`): connections per
//! listener kind and the client errors the proxy answered, for the whole process
//! ([`ProxyStats`]); retries and requests that found no backend, per service
//! ([`ServiceTraffic`]). Plain atomics, shared by every worker; the metrics exporter reads them.
//! Label values are the enums here.

use std::sync::atomic::{AtomicU64, Ordering};

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
    }
}

edge_core::label_enum! {
    /// What happened to a request or connection that found no eligible backend.
    pub enum NoBackend {
        /// Answered 503 (or the TCP connection closed).
        Rejected => "rejected",
        /// `--on-no-backend all` sent it to a backend regardless of health.
        Fallback => "fallback",
    }
}

/// Process-wide proxy counters.
#[derive(Debug, Default)]
pub struct ProxyStats {
    connections: [AtomicU64; ListenerKind::ALL.len()],
    open: [Gauge; ListenerKind::ALL.len()],
    client_errors: [AtomicU64; ClientError::ALL.len()],
    limited: AtomicU64,
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
}

/// One service's traffic counters that belong to no backend.
#[derive(Debug, Default)]
pub struct ServiceTraffic {
    retries: [AtomicU64; RetryReason::ALL.len()],
    no_backend: [AtomicU64; NoBackend::ALL.len()],
    unrouted: AtomicU64,
}

impl ServiceTraffic {
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
        for (i, k) in NoBackend::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }
}
