//! A backend's live counters, owned by the backend and updated by the data plane with relaxed
//! atomic adds (no lock, no map lookup on the request path). Least connections and drain reaping
//! read `active` from here; the metrics exporter reads everything at scrape time. Label values are
//! the enums below, so every exported series has a fixed, bounded set of them.

use std::sync::atomic::{AtomicU64, Ordering};

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
}
