//! What the dataplane actor counts, for the metrics exporter: conntrack entries the sweep removed
//! (by [`Expiry`]), Maglev tables swapped in, and the live flows per backend from the last sweep.
//! The kernel's own per-CPU counters are read from the maps at scrape time (`PinnedMaps`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

edge_core::label_enum! {
    /// Why the sweep removed a conntrack entry.
    pub enum Expiry {
        /// Its backend left the maps.
        BackendRemoved => "backend_removed",
        /// A UDP flow idle past `--udp-timeout`.
        UdpIdle => "udp_idle",
        /// A closed TCP flow past its linger time.
        TcpClosed => "tcp_closed",
        /// A SYN that never got an answer.
        TcpSynUnanswered => "tcp_syn_unanswered",
        /// A SYN the backend answered with a RST.
        TcpRefused => "tcp_refused",
        /// An established TCP flow idle past `--tcp-timeout`.
        TcpIdle => "tcp_idle",
    }
}

/// Live (not closing) flows toward one backend of one service, from the last sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowCount {
    /// The service's name.
    pub service: String,
    /// The backend's `ip:port`.
    pub backend: String,
    /// Live flows.
    pub flows: u64,
}

/// The actor's counters.
#[derive(Debug, Default)]
pub struct DataplaneStats {
    expired: [AtomicU64; Expiry::ALL.len()],
    table_swaps: AtomicU64,
    flows: ArcSwap<Vec<FlowCount>>,
    unreachable: ArcSwap<Vec<Unreachable>>,
}

/// A backend the data plane cannot reach through any interface it can attach to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// The backend (`ip:port`).
    pub backend: String,
    /// Why, and what happens to its flows.
    pub reason: String,
}

impl DataplaneStats {
    pub(crate) fn expired(&self, reason: Expiry, n: u64) {
        self.expired[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn table_swapped(&self) {
        self.table_swaps.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_flows(&self, flows: Vec<FlowCount>) {
        self.flows.store(Arc::new(flows));
    }

    pub(crate) fn set_unreachable(&self, backend: &str, reason: Option<String>) {
        let mut list: Vec<Unreachable> =
            self.unreachable.load().iter().filter(|u| u.backend != backend).cloned().collect();
        if let Some(reason) = reason {
            list.push(Unreachable { backend: backend.to_string(), reason });
        }
        self.unreachable.store(Arc::new(list));
    }

    /// Backends the data plane cannot reach, with the reason.
    pub fn unreachable(&self) -> Arc<Vec<Unreachable>> {
        self.unreachable.load_full()
    }

    /// Entries removed for `reason` so far.
    pub fn expirations(&self, reason: Expiry) -> u64 {
        self.expired[reason as usize].load(Ordering::Relaxed)
    }

    /// Tables written and swapped in so far.
    pub fn table_swaps(&self) -> u64 {
        self.table_swaps.load(Ordering::Relaxed)
    }

    /// Live flows per service and backend, from the last sweep.
    pub fn flows(&self) -> Arc<Vec<FlowCount>> {
        self.flows.load_full()
    }
}
