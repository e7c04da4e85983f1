//! What each strategy means on the eBPF data plane, as pure functions: which backends go into a
//! service's Maglev table and with what weight, and which flows the table lookup hashes.
//!
//! - `consistent-hash`: the configured weights; the lookup hashes the client address with the
//!   default `--hash-key source` (every connection of a client lands on one backend), or the
//!   5-tuple with `five-tuple`.
//! - `round-robin`: the configured weights; the lookup hashes the 5-tuple, so new flows spread in
//!   proportion to the weights (statistically, not in strict turns: the kernel keeps no cursor).
//! - `least-connections`: weights derived from the conntrack's live flows per backend, refreshed
//!   every sweep: a backend gets a share of new flows inversely proportional to its live flows per
//!   unit of configured weight, quantised to [`LC_LEVELS`] levels so the table is rebuilt only
//!   when the balance really moved.

use edge_core::balance::{HashKey, StrategyKind, StrategySpec};

/// Quantisation of least-connections weights.
pub const LC_LEVELS: u32 = 16;

/// One table member: the backend's kernel id, its `ip:port` (Maglev's permutation seed) and weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Kernel backend id.
    pub id: u32,
    /// `ip:port`.
    pub name: String,
    /// Weight in the table.
    pub weight: u32,
}

/// Whether the lookup hashes only the source address.
pub fn hash_source_only(spec: &StrategySpec) -> bool {
    spec.kind == StrategyKind::ConsistentHash && spec.hash_key == HashKey::Source
}

/// The table members for a strategy. `eligible` holds (id, name, configured weight, live flows).
pub fn members(spec: &StrategySpec, eligible: &[(u32, String, u32, u64)]) -> Vec<Member> {
    match spec.kind {
        StrategyKind::RoundRobin | StrategyKind::ConsistentHash => eligible
            .iter()
            .map(|(id, name, w, _)| Member { id: *id, name: name.clone(), weight: (*w).max(1) })
            .collect(),
        StrategyKind::LeastConnections => {
            // Load per unit of weight; the least loaded backend gets the top level.
            let load = |flows: u64, w: u32| (flows as f64 + 1.0) / f64::from(w.max(1));
            let min = eligible.iter().map(|(_, _, w, f)| load(*f, *w)).fold(f64::INFINITY, f64::min);
            eligible
                .iter()
                .map(|(id, name, w, f)| {
                    let level = (f64::from(LC_LEVELS) * min / load(*f, *w)).round() as u32;
                    Member { id: *id, name: name.clone(), weight: level.clamp(1, LC_LEVELS) }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: StrategyKind) -> StrategySpec {
        StrategySpec { kind, hash_key: HashKey::FiveTuple }
    }

    #[test]
    fn weighted_strategies_keep_configured_weights() {
        let e = vec![(1, "a".into(), 1, 100), (2, "b".into(), 3, 0)];
        for k in [StrategyKind::RoundRobin, StrategyKind::ConsistentHash] {
            let m = members(&spec(k), &e);
            assert_eq!(m.iter().map(|m| m.weight).collect::<Vec<_>>(), vec![1, 3]);
        }
    }

    #[test]
    fn least_connections_favours_the_idle_backend() {
        let e = vec![(1, "a".into(), 1, 99), (2, "b".into(), 1, 0), (3, "c".into(), 1, 1)];
        let m = members(&spec(StrategyKind::LeastConnections), &e);
        assert_eq!(m.iter().map(|m| m.weight).collect::<Vec<_>>(), vec![1, 16, 8]);
        // Equal loads mean equal weights.
        let e = vec![(1, "a".into(), 1, 5), (2, "b".into(), 1, 5)];
        let m = members(&spec(StrategyKind::LeastConnections), &e);
        assert_eq!(m[0].weight, m[1].weight);
    }

    #[test]
    fn only_consistent_hash_with_source_key_hashes_the_source() {
        let mut s = spec(StrategyKind::ConsistentHash);
        assert!(!hash_source_only(&s));
        s.hash_key = HashKey::Source;
        assert!(hash_source_only(&s));
        s.kind = StrategyKind::RoundRobin;
        assert!(!hash_source_only(&s));
    }
}
