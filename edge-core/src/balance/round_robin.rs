//! Smooth weighted round robin (NGINX's algorithm), made lock-free.
//!
//! NGINX keeps a mutable "current weight" per backend and updates it on every pick, which needs a
//! lock shared by all workers. The sequence it produces is periodic, though: it repeats every
//! `sum(weights) / gcd` picks. So the selector computes one period up front, when the backend set
//! changes, and each pick is one atomic increment and an index. With weights 5, 1, 1 the period is
//! `a a b a c a a`, spreading the light backends instead of sending them bursts.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Select, Target};

/// Round robin over the eligible targets, honouring weights smoothly.
#[derive(Debug)]
pub struct RoundRobin {
    targets: Vec<Target>,
    sequence: Vec<u32>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// Builds the selector; the starting point is random so that several agents started together
    /// do not all send their first requests to the same backend.
    pub fn new(targets: Vec<Target>) -> Self {
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let sequence = smooth_sequence(&weights);
        let start = if sequence.is_empty() { 0 } else { fastrand::usize(..sequence.len()) };
        Self { targets, sequence, next: AtomicUsize::new(start) }
    }
}

impl Select for RoundRobin {
    fn pick(&self, _hash: u64) -> Option<&Target> {
        if self.sequence.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sequence.len();
        self.targets.get(self.sequence[i] as usize)
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One period of NGINX's smooth weighted round robin over `weights` (indexes into it).
/// Zero weights never appear.
pub fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().filter(|w| **w > 0).fold(0u64, |g, w| gcd(g, u64::from(*w)));
    if g == 0 {
        return Vec::new();
    }
    let w: Vec<i64> = weights.iter().map(|x| (u64::from(*x) / g) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for i in 0..w.len() {
            if w[i] == 0 {
                continue;
            }
            current[i] += w[i];
            if best == usize::MAX || current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best as u32);
    }
    seq
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::targets;

    #[test]
    fn nginx_example_is_smooth() {
        // NGINX documents { a:5, b:1, c:1 } -> a a b a c a a.
        assert_eq!(smooth_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_alternate() {
        assert_eq!(smooth_sequence(&[3, 3, 3]), vec![0, 1, 2]);
        assert_eq!(smooth_sequence(&[0, 2]), vec![1]);
        assert!(smooth_sequence(&[0, 0]).is_empty());
        assert!(smooth_sequence(&[]).is_empty());
    }

    #[test]
    fn shares_follow_weights_over_many_picks() {
        let rr = RoundRobin::new(targets(&[1, 2, 7]));
        let mut hits = [0u32; 3];
        for _ in 0..1000 {
            let t = rr.pick(0).unwrap();
            hits[rr.targets().iter().position(|x| x.id() == t.id()).unwrap()] += 1;
        }
        assert_eq!(hits, [100, 200, 700]);
    }

    #[test]
    fn no_targets_no_pick() {
        assert!(RoundRobin::new(Vec::new()).pick(0).is_none());
    }
}
