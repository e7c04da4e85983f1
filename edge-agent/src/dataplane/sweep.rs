//! The conntrack sweep: the agent's half of flow aging. The data path only marks flows (closing on
//! FIN, removed at once on RST, UDP flows re-picked when idle); the sweep deletes entries that are
//! over, together with their reverse-NAT entries (which frees their SNAT ports), and counts the
//! live flows per backend for least-connections and the metrics.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use edge_common::{CT_CLOSING, CT_NEW, CT_TIME_WAIT, FlowKey, FlowValue, NatKey, PROTO_UDP};

use super::kmaps::{Maps, monotonic_ns};

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
    pub expired: Vec<(&'static str, u64)>,
}

/// Why a flow is over, if it is.
pub fn expired(
    cfg: &SweepConfig,
    now: u64,
    key: &FlowKey,
    v: &FlowValue,
    backend_active: bool,
) -> Option<&'static str> {
    let idle = Duration::from_nanos(now.saturating_sub(v.last_seen_ns));
    if !backend_active {
        return Some("backend_removed");
    }
    if key.proto == PROTO_UDP {
        return (idle > cfg.udp_timeout).then_some("udp_idle");
    }
    match v.state {
        CT_CLOSING => (idle > cfg.closing_timeout).then_some("tcp_closed"),
        CT_TIME_WAIT => (idle > cfg.time_wait_timeout).then_some("tcp_closed"),
        CT_NEW => (idle > cfg.syn_timeout).then_some("tcp_syn_unanswered"),
        _ => (idle > cfg.tcp_timeout).then_some("tcp_idle"),
    }
}

/// Sweeps conntrack once.
pub fn sweep(maps: &mut Maps, cfg: &SweepConfig) -> Report {
    let now = monotonic_ns();
    let mut report = Report::default();
    let mut doomed: Vec<(FlowKey, FlowValue, &'static str)> = Vec::new();
    let mut backends = HashMap::new();
    for (k, v) in maps.conntrack.iter().filter_map(Result::ok) {
        let be = *backends.entry(v.backend).or_insert_with(|| maps.backends.get(&v.backend, 0).ok());
        let active = be.is_some_and(|b| b.flags & edge_common::BE_ACTIVE != 0);
        match expired(cfg, now, &k, &v, active) {
            Some(reason) => doomed.push((k, v, reason)),
            None => {
                report.referenced.insert(v.backend);
                if !edge_common::ct_is_closing(v.state) {
                    *report.live.entry(v.backend).or_default() += 1;
                }
            }
        }
    }
    let mut counts: HashMap<&'static str, u64> = HashMap::new();
    for (k, v, reason) in doomed {
        let _ = maps.conntrack.remove(&k);
        if let Some(Some(b)) = backends.get(&v.backend) {
            let nat = NatKey::for_backend(b, v.nat_port, k.proto);
            let _ = maps.revnat.remove(&nat);
        }
        *counts.entry(reason).or_default() += 1;
    }
    report.expired = counts.into_iter().collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_common::{CT_ESTABLISHED, PROTO_TCP};

    #[test]
    fn timeouts_follow_the_state() {
        let cfg = SweepConfig::new(Duration::from_secs(30), Duration::from_secs(3600));
        let s = 1_000_000_000u64;
        let now = 10_000 * s;
        let tcp = FlowKey { proto: PROTO_TCP, ..Default::default() };
        let udp = FlowKey { proto: PROTO_UDP, ..Default::default() };
        let flow = |state, idle: u64| FlowValue { state, last_seen_ns: now - idle * s, ..Default::default() };
        assert_eq!(expired(&cfg, now, &udp, &flow(CT_NEW, 31), true), Some("udp_idle"));
        assert_eq!(expired(&cfg, now, &udp, &flow(CT_NEW, 29), true), None);
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_CLOSING, 11), true), Some("tcp_closed"));
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_CLOSING, 9), true), None);
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_TIME_WAIT, 11), true), None, "the backend may be in TIME_WAIT");
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_TIME_WAIT, 62), true), Some("tcp_closed"));
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_NEW, 31), true), Some("tcp_syn_unanswered"));
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_ESTABLISHED, 3000), true), None);
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_ESTABLISHED, 3601), true), Some("tcp_idle"));
        assert_eq!(expired(&cfg, now, &tcp, &flow(CT_ESTABLISHED, 0), false), Some("backend_removed"));
    }
}
