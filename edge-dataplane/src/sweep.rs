//! The conntrack sweep: the agent's half of flow aging. The data path only marks flows (closing on
//! FIN, removed at once on RST, UDP flows re-picked when idle); the sweep deletes entries that are
//! over, together with their reverse-NAT entries (which frees their SNAT ports), and counts the
//! live flows per backend for least-connections and the metrics.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use edge_common::{BackendValue, CT_CLOSING, CT_NEW, CT_REFUSED, CT_TIME_WAIT, FlowKey, FlowValue, NatKey, PROTO_UDP};

use crate::kmaps::KernelMaps;
use crate::stats::Expiry;
use crate::synwatch::{SynOutcomes, SynWatch};

/// How long flows may idle in each state before the sweep removes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepConfig {
    /// UDP flows.
    pub udp_timeout: Duration,
    /// Established TCP flows.
    pub tcp_timeout: Duration,
    /// TCP flows the client closed first (the backend keeps no TIME_WAIT).
    pub closing_timeout: Duration,
    /// TCP flows the backend closed first: their SNAT port stays reserved while the backend may
    /// still hold the connection in TIME_WAIT (60 s on Linux), so no other client tuple gets it.
    pub time_wait_timeout: Duration,
    /// TCP flows whose SYN never got an answer.
    pub syn_timeout: Duration,
}

impl SweepConfig {
    /// Defaults for the closing and SYN timeouts with the given UDP and TCP ones.
    pub fn new(udp_timeout: Duration, tcp_timeout: Duration) -> Self {
        Self {
            udp_timeout,
            tcp_timeout,
            closing_timeout: Duration::from_secs(10),
            time_wait_timeout: Duration::from_secs(61),
            syn_timeout: Duration::from_secs(30),
        }
    }
}

/// What a sweep found.
#[derive(Debug, Default)]
pub struct Report {
    /// Flows per backend id that are not closing.
    pub live: HashMap<u32, u64>,
    /// Every backend id some remaining flow points at.
    pub referenced: HashSet<u32>,
    /// Removed entries by reason.
    pub expired: Vec<(Expiry, u64)>,
    /// What the SYNs toward each backend id came to since the last sweep.
    pub syns: HashMap<u32, SynOutcomes>,
}

/// Why a flow is over, if it is.
pub fn expired(cfg: &SweepConfig, now: u64, key: &FlowKey, v: &FlowValue, backend_active: bool) -> Option<Expiry> {
    let idle = Duration::from_nanos(now.saturating_sub(v.last_seen_ns));
    if !backend_active {
        return Some(Expiry::BackendRemoved);
    }
    if key.proto == PROTO_UDP {
        return (idle > cfg.udp_timeout).then_some(Expiry::UdpIdle);
    }
    match v.state {
        // Counted by the sweep's SYN watch first, then removed at once.
        CT_REFUSED => Some(Expiry::TcpRefused),
        CT_CLOSING => (idle > cfg.closing_timeout).then_some(Expiry::TcpClosed),
        CT_TIME_WAIT => (idle > cfg.time_wait_timeout).then_some(Expiry::TcpClosed),
        CT_NEW => (idle > cfg.syn_timeout).then_some(Expiry::TcpSynUnanswered),
        _ => (idle > cfg.tcp_timeout).then_some(Expiry::TcpIdle),
    }
}

/// Sweeps conntrack once, at `now` (CLOCK_MONOTONIC ns, the data path's clock). `retired` holds
/// the last map value of backends the actor removed: their slots are zeroed, and a flow's reverse
/// NAT key is built from its backend's address. `syns` sees every flow first.
pub fn sweep(
    maps: &mut impl KernelMaps,
    cfg: &SweepConfig,
    now: u64,
    retired: &HashMap<u32, BackendValue>,
    syns: &mut SynWatch,
) -> Report {
    let mut report = Report::default();
    let mut doomed: Vec<(FlowKey, FlowValue, Expiry)> = Vec::new();
    let mut backends = HashMap::new();
    maps.for_each_flow(&mut |k, v| {
        syns.observe(k, v, now);
        let be = *backends.entry(v.backend).or_insert_with(|| maps.backend(v.backend));
        let active = be.is_some_and(|b| b.flags & edge_common::BE_ACTIVE != 0);
        match expired(cfg, now, k, v, active) {
            Some(reason) => doomed.push((*k, *v, reason)),
            None => {
                report.referenced.insert(v.backend);
                if !edge_common::ct_is_closing(v.state) {
                    *report.live.entry(v.backend).or_default() += 1;
                }
            }
        }
    });
    let mut counts: HashMap<Expiry, u64> = HashMap::new();
    for (k, v, reason) in doomed {
        maps.remove_flow(&k);
        let active = backends.get(&v.backend).copied().flatten().filter(|b| b.flags & edge_common::BE_ACTIVE != 0);
        if let Some(b) = active.as_ref().or(retired.get(&v.backend)) {
            maps.remove_nat(&NatKey::for_backend(b, v.nat_port, k.proto));
        }
        *counts.entry(reason).or_default() += 1;
    }
    report.expired = counts.into_iter().collect();
    report.syns = syns.finish(now);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_common::{CT_ESTABLISHED, CT_REFUSED, PROTO_TCP};

    #[test]
    fn timeouts_follow_the_state() {
        let cfg = SweepConfig::new(Duration::from_secs(30), Duration::from_secs(3600));
        let s = 1_000_000_000u64;
        let now = 10_000 * s;
        let tcp = FlowKey { proto: PROTO_TCP, ..Default::default() };
        let udp = FlowKey { proto: PROTO_UDP, ..Default::default() };
        let flow = |state, idle: u64| FlowValue { state, last_seen_ns: now - idle * s, ..Default::default() };
        assert_eq!(expired(&cfg, now, &udp, &flow(CT_NEW, 31), true), Some(Expiry::UdpIdle));
        assert_eq!(expired(&cfg, now, &udp, &flow(CT_NEW, 29), true), None);
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_CLOSING, 11), true), Some(Expiry::TcpClosed));
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_CLOSING, 9), true), None);
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_TIME_WAIT, 11), true), None, "the backend may be in TIME_WAIT");
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_TIME_WAIT, 62), true), Some(Expiry::TcpClosed));
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_NEW, 31), true), Some(Expiry::TcpSynUnanswered));
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_REFUSED, 0), true), Some(Expiry::TcpRefused), "at once");
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_ESTABLISHED, 3000), true), None);
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_ESTABLISHED, 3601), true), Some(Expiry::TcpIdle));
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_ESTABLISHED, 0), false), Some(Expiry::BackendRemoved));
    }
}
