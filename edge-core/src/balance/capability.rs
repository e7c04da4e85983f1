//! What each data plane can carry out: the one check that configuration (exit 2 at start), the
//! admin API (400 with the reason), the data-plane choice of `--mode auto` and the balancer all ask,
//! so none of them can accept a strategy the running data plane would silently do otherwise.

use super::{HashKey, StrategySpec};

crate::label_enum! {
    /// The data plane that carries traffic.
    pub enum Plane {
        /// The userspace proxy: HTTP and TCP, every strategy and key.
        Userspace => "userspace",
        /// The eBPF program: packets, so no HTTP headers.
        Ebpf => "ebpf",
    }
}

impl Plane {
    /// Whether this plane can carry out `spec`; the error says why not and what to use instead.
    pub fn supports(self, spec: &StrategySpec) -> Result<(), Unsupported> {
        match (self, &spec.hash_key) {
            (Self::Ebpf, HashKey::Header(_)) => Err(Unsupported {
                reason: "the eBPF data plane sees packets, not HTTP headers; use source or five-tuple",
            }),
            _ => Ok(()),
        }
    }
}

/// A strategy the data plane cannot carry out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unsupported {
    reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::StrategyKind;

    #[test]
    fn header_keys_need_the_userspace_proxy() {
        for kind in [StrategyKind::RoundRobin, StrategyKind::LeastConnections, StrategyKind::ConsistentHash] {
            let header = StrategySpec { kind, hash_key: "header:x-user".parse().unwrap() };
            assert_eq!(Plane::Userspace.supports(&header), Ok(()));
            let e = Plane::Ebpf.supports(&header).unwrap_err().to_string();
            assert!(e.contains("sees packets, not HTTP headers; use source or five-tuple"), "{e}");
            for key in [HashKey::Source, HashKey::FiveTuple] {
                let spec = StrategySpec { kind, hash_key: key };
                assert_eq!(Plane::Ebpf.supports(&spec), Ok(()));
                assert_eq!(Plane::Userspace.supports(&spec), Ok(()));
            }
        }
    }
}
