//! A backend's live counters, owned by the backend and updated by the data plane with relaxed
//! atomic adds (no lock, no map lookup on the request path). Least connections and drain reaping
//! read `active` from here; the metrics exporter reads everything at scrape time. Label values are
//! the enums below, so every exported series has a fixed, bounded set of them.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::State;
use crate::histogram::Histogram;
use crate::util::Gauge;

crate::label_enum! {
    /// An HTTP status class.
    pub enum StatusClass {
        /// 1xx.
        Informational => "1xx",
        /// 2xx.
        Success => "2xx",
        /// 3xx.
        Redirection => "3xx",
        /// 4xx.
        ClientError => "4xx",
        /// 5xx.
        ServerError => "5xx",
    }
}

impl StatusClass {
    /// The class of a status code (codes outside 100..=599 count as 5xx or 1xx).
    pub fn of(status: u16) -> Self {
        Self::ALL[usize::from(status / 100).clamp(1, 5) - 1]
    }
}

crate::label_enum! {
    /// How an exchange with a backend failed.
    pub enum Failure {
        /// The connection could not be made.
        Connect => "connect",
        /// No answer in time.
        Timeout => "timeout",
        /// The connection broke, or the backend spoke something else than HTTP.
        Reset => "reset",
    }
}

crate::label_enum! {
    /// A gateway failure: what outlier detection counts against a backend. Both data planes
    /// report them, the userspace proxy from request outcomes and the eBPF agent from conntrack.
    pub enum GatewayFailure {
        /// The connection was refused or could not be made in time.
        Connect => "connect",
        /// The connection closed or reset before a response.
        Reset => "reset",
        /// No response head within the upstream timeout.
        Timeout => "timeout",
        /// The backend answered 502.
        Http502 => "http_502",
        /// The backend answered 503.
        Http503 => "http_503",
        /// The backend answered 504.
        Http504 => "http_504",
        /// The backend answered another 5xx (counted only with `--outlier-5xx on`).
        Http5xx => "http_5xx",
        /// A SYN the eBPF data plane forwarded got no SYN-ACK in time.
        SynUnanswered => "syn_unanswered",
        /// The backend answered a SYN with a RST (eBPF data plane).
        SynRefused => "syn_refused",
        /// A gRPC call ended with status 14, UNAVAILABLE (the backend's own "try elsewhere").
        GrpcUnavailable => "grpc_unavailable",
    }
}

impl GatewayFailure {
    /// The failure a response status is, if it is one (`all_5xx`: count every 5xx).
    pub fn of_status(status: u16, all_5xx: bool) -> Option<Self> {
        match status {
            502 => Some(Self::Http502),
            503 => Some(Self::Http503),
            504 => Some(Self::Http504),
            500..=599 if all_5xx => Some(Self::Http5xx),
            _ => None,
        }
    }

    /// Words for reasons and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Connect => "connect failed",
            Self::Reset => "closed before a response",
            Self::Timeout => "response timeout",
            Self::Http502 => "http 502",
            Self::Http503 => "http 503",
            Self::Http504 => "http 504",
            Self::Http5xx => "http 5xx",
            Self::SynUnanswered => "syn unanswered",
            Self::SynRefused => "syn answered with rst",
            Self::GrpcUnavailable => "grpc unavailable",
        }
    }
}

/// What the health monitor reads of a backend's passive outcomes on each tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassiveSample {
    /// Gateway failures since the last good outcome.
    pub consecutive: u32,
    /// Good outcomes so far.
    pub ok: u64,
    /// Gateway failures so far.
    pub failed: u64,
    /// The latest gateway failure.
    pub last: Option<GatewayFailure>,
}

crate::label_enum! {
    /// A probe's verdict.
    pub enum ProbeResult {
        /// Passed.
        Success => "success",
        /// Failed.
        Failure => "failure",
    }
}

crate::label_enum! {
    /// Which way TCP-mode bytes went.
    pub enum Direction {
        /// From the backend.
        Rx => "rx",
        /// To the backend.
        Tx => "tx",
    }
}

/// One backend's counters. Everything is monotonic except `active`.
#[derive(Debug, Default)]
pub struct BackendStats {
    requests: [AtomicU64; StatusClass::ALL.len()],
    /// Time from request head to response head.
    pub duration: Histogram,
    /// In-flight HTTP requests and open TCP connections (least connections' load).
    pub active: Gauge,
    /// Live flows in the kernel's conntrack (eBPF mode), as of the dataplane actor's last sweep.
    kernel_flows: AtomicU64,
    bytes: [AtomicU64; Direction::ALL.len()],
    tcp_connections: AtomicU64,
    probes: [AtomicU64; ProbeResult::ALL.len()],
    /// Probe durations.
    pub probe_duration: Histogram,
    failures: [AtomicU64; Failure::ALL.len()],
    transitions: [AtomicU64; State::ALL.len()],
    /// Passive outcomes: gateway failures in a row, by kind, the latest kind (index + 1), and
    /// good outcomes. The data planes write them; the health monitor reads them every tick.
    consecutive: AtomicU32,
    gateway_failures: [AtomicU64; GatewayFailure::ALL.len()],
    last_gateway_failure: AtomicU8,
    gateway_ok: AtomicU64,
    ejections: [AtomicU64; GatewayFailure::ALL.len()],
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl BackendStats {
    /// Counts an answered request.
    pub fn request(&self, class: StatusClass) {
        add(&self.requests[class as usize], 1);
    }

    /// Requests answered with `class`.
    pub fn requests(&self, class: StatusClass) -> u64 {
        get(&self.requests[class as usize])
    }

    /// Requests answered, all classes.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().map(get).sum()
    }

    /// In-flight requests and open connections now, over both data planes: the userspace proxy's
    /// own count plus the kernel's live flows. Least connections, drain reaping and the admin API
    /// all read this, so a backend removed in eBPF mode drains until its kernel flows end.
    pub fn active(&self) -> i64 {
        self.active.load(Ordering::Relaxed) + i64::try_from(get(&self.kernel_flows)).unwrap_or(i64::MAX)
    }

    /// Records the kernel's live flows on this backend (the dataplane actor, every sweep).
    pub fn set_kernel_flows(&self, n: u64) {
        self.kernel_flows.store(n, Ordering::Relaxed);
    }

    /// Counts TCP-mode bytes.
    pub fn add_bytes(&self, dir: Direction, n: u64) {
        add(&self.bytes[dir as usize], n);
    }

    /// TCP-mode bytes so far.
    pub fn bytes(&self, dir: Direction) -> u64 {
        get(&self.bytes[dir as usize])
    }

    /// Counts a TCP-mode connection.
    pub fn tcp_connection(&self) {
        add(&self.tcp_connections, 1);
    }

    /// TCP-mode connections so far.
    pub fn tcp_connections(&self) -> u64 {
        get(&self.tcp_connections)
    }

    /// Counts a probe verdict.
    pub fn probe(&self, result: ProbeResult) {
        add(&self.probes[result as usize], 1);
    }

    /// Probes with `result` so far.
    pub fn probes(&self, result: ProbeResult) -> u64 {
        get(&self.probes[result as usize])
    }

    /// Counts a failed exchange.
    pub fn failure(&self, kind: Failure) {
        add(&self.failures[kind as usize], 1);
    }

    /// Failed exchanges of `kind` so far.
    pub fn failures(&self, kind: Failure) -> u64 {
        get(&self.failures[kind as usize])
    }

    /// Counts a transition into `state`.
    pub fn transition(&self, state: State) {
        add(&self.transitions[state as usize], 1);
    }

    /// Transitions into `state` so far.
    pub fn transitions(&self, state: State) -> u64 {
        get(&self.transitions[state as usize])
    }

    /// Records an exchange that was not a gateway failure. The store is skipped when the streak
    /// is already zero, so healthy traffic does not bounce the cache line between workers.
    pub fn passive_ok(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        add(&self.gateway_ok, 1);
    }

    /// Records `n` good outcomes at once (the eBPF sweep's answered SYNs).
    pub fn passive_ok_n(&self, n: u64) {
        if n > 0 {
            self.consecutive.store(0, Ordering::Relaxed);
            add(&self.gateway_ok, n);
        }
    }

    /// Records a gateway failure.
    pub fn gateway_failure(&self, kind: GatewayFailure, n: u32) {
        if n == 0 {
            return;
        }
        self.consecutive.fetch_add(n, Ordering::Relaxed);
        add(&self.gateway_failures[kind as usize], u64::from(n));
        self.last_gateway_failure.store(kind as u8 + 1, Ordering::Relaxed);
    }

    /// Gateway failures of `kind` so far.
    pub fn gateway_failures(&self, kind: GatewayFailure) -> u64 {
        get(&self.gateway_failures[kind as usize])
    }

    /// The passive outcomes as of now.
    pub fn passive(&self) -> PassiveSample {
        let last = usize::from(self.last_gateway_failure.load(Ordering::Relaxed));
        PassiveSample {
            consecutive: self.consecutive.load(Ordering::Relaxed),
            ok: get(&self.gateway_ok),
            failed: self.gateway_failures.iter().map(get).sum(),
            last: last.checked_sub(1).and_then(|i| GatewayFailure::ALL.get(i).copied()),
        }
    }

    /// Starts a new streak (the monitor, when it ejects the backend or puts it on probation).
    pub fn reset_streak(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
    }

    /// Counts an ejection caused by `kind`.
    pub fn ejection(&self, kind: GatewayFailure) {
        add(&self.ejections[kind as usize], 1);
    }

    /// Ejections caused by `kind` so far.
    pub fn ejections(&self, kind: GatewayFailure) -> u64 {
        get(&self.ejections[kind as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_indexes_agree() {
        for (i, c) in StatusClass::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert_eq!(StatusClass::of(101).as_str(), "1xx");
        assert_eq!(StatusClass::of(204).as_str(), "2xx");
        assert_eq!(StatusClass::of(503).as_str(), "5xx");
        assert_eq!(StatusClass::of(999).as_str(), "5xx");
        assert_eq!(StatusClass::of(42).as_str(), "1xx");
        for (i, f) in Failure::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
        for (i, s) in State::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }

    #[test]
    fn counters_count() {
        let s = BackendStats::default();
        s.request(StatusClass::Success);
        s.request(StatusClass::ServerError);
        s.add_bytes(Direction::Rx, 10);
        s.failure(Failure::Timeout);
        s.transition(State::Draining);
        assert_eq!((s.total_requests(), s.requests(StatusClass::Success)), (2, 1));
        assert_eq!((s.bytes(Direction::Rx), s.bytes(Direction::Tx)), (10, 0));
        assert_eq!(s.failures(Failure::Timeout), 1);
        assert_eq!(s.transitions(State::Draining), 1);
    }

    #[test]
    fn passive_outcomes_count_streaks() {
        let s = BackendStats::default();
        assert_eq!(s.passive(), PassiveSample::default());
        s.gateway_failure(GatewayFailure::Http503, 1);
        s.gateway_failure(GatewayFailure::Connect, 2);
        assert_eq!(
            s.passive(),
            PassiveSample { consecutive: 3, ok: 0, failed: 3, last: Some(GatewayFailure::Connect) }
        );
        s.passive_ok();
        assert_eq!((s.passive().consecutive, s.passive().ok, s.passive().failed), (0, 1, 3));
        s.gateway_failure(GatewayFailure::SynRefused, 1);
        s.reset_streak();
        assert_eq!(s.passive().consecutive, 0);
        assert_eq!(GatewayFailure::of_status(503, false), Some(GatewayFailure::Http503));
        assert_eq!(GatewayFailure::of_status(500, false), None);
        assert_eq!(GatewayFailure::of_status(500, true), Some(GatewayFailure::Http5xx));
        assert_eq!(GatewayFailure::of_status(404, true), None);
        for (i, f) in GatewayFailure::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
    }
}
