//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as Envoy does it.
//!
//! Each backend gets a permutation of the table's slots from two hashes of its name (offset and
//! skip); backends take turns claiming their next free preferred slot until the table is full.
//! The result: every backend owns `size / n` slots (±1 when weights are equal), and removing one of
//! `n` backends moves little more than the `1/n` of slots it owned. Weights decide how often a
//! backend gets a turn: one with half the largest weight claims a slot every second round.
//!
//! The table is a pure function of the (name, weight) pairs and the size. Callers sort backends by
//! name first, so two agents that see the same set in a different order still build the same table.
//! The eBPF data plane copies this table into the kernel; the userspace proxy looks keys up in it.

use super::hash::{SEED_OFFSET, SEED_SKIP, hash64};

/// Default table size: a prime well above 100 × the expected number of backends, as the paper
/// advises, so that per-backend shares stay within about 1 % of even.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// Largest accepted table size; keeps one table under 4 MiB of u32 slots.
pub const MAX_TABLE_SIZE: u32 = 1_048_573;

/// Errors building a table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    /// The size is not a prime, so permutations would not visit every slot.
    #[error("maglev table size {0} is not a prime; use a prime such as 65537")]
    NotPrime(u32),
    /// The size is outside the supported range.
    #[error("maglev table size {0} is out of range; use a prime between 3 and {MAX_TABLE_SIZE}")]
    OutOfRange(u32),
}

/// Checks that `size` can be used as a Maglev table size.
pub fn validate_size(size: u32) -> Result<(), MaglevError> {
    if !(3..=MAX_TABLE_SIZE).contains(&size) {
        return Err(MaglevError::OutOfRange(size));
    }
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    Ok(())
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// One backend as Maglev sees it: a stable name (its address) and a weight.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// The name the permutation is derived from; the backend's `ip:port`.
    pub name: &'a str,
    /// Relative weight; zero means the member gets no slots.
    pub weight: u32,
}

/// Fills a table of `size` slots with indexes into `members`.
///
/// Returns an empty vector when no member has a positive weight. `size` must have passed
/// [`validate_size`]. Members take their turns in name order whatever order they are given in, so
/// which *name* owns a slot depends only on the set; the table stores indexes into `members`.
pub fn build_table(members: &[Member<'_>], size: u32) -> Vec<u32> {
    let m = u64::from(size);
    let max_weight = members.iter().map(|b| u64::from(b.weight)).max().unwrap_or(0);
    if max_weight == 0 || m == 0 {
        return Vec::new();
    }
    struct Entry {
        index: u32,
        offset: u64,
        skip: u64,
        weight: u64,
        next: u64,
        target: u64,
    }
    let mut entries: Vec<Entry> = members
        .iter()
        .enumerate()
        .filter(|(_, b)| b.weight > 0)
        .map(|(i, b)| Entry {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            offset: hash64(b.name.as_bytes(), SEED_OFFSET) % m,
            skip: hash64(b.name.as_bytes(), SEED_SKIP) % (m - 1) + 1,
            weight: u64::from(b.weight),
            next: 0,
            target: 0,
        })
        .collect();
    // Turn order decides contested slots; make it the names' order, not the caller's.
    entries.sort_by(|a, b| members[a.index as usize].name.cmp(members[b.index as usize].name));

    const EMPTY: u32 = u32::MAX;
    let mut table = vec![EMPTY; size as usize];
    let mut filled: u64 = 0;
    let mut iteration: u64 = 0;
    while filled < m {
        for e in entries.iter_mut() {
            if filled >= m {
                break;
            }
            // A member with the largest weight claims a slot every round; one with a third of it
            // every third round (Envoy's scheme, in integers).
            if iteration * e.weight < e.target {
                continue;
            }
            e.target += max_weight;
            loop {
                let slot = ((e.offset + e.next * e.skip) % m) as usize;
                e.next += 1;
                if table[slot] == EMPTY {
                    table[slot] = e.index;
                    filled += 1;
                    break;
                }
            }
        }
        iteration += 1;
    }
    table
}

/// Slot of `hash` in a table of `size` slots.
#[inline]
pub fn slot(hash: u64, size: usize) -> usize {
    (hash % size as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash::{SEED_KEY, hash64};
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)).collect()
    }

    fn members(names: &[String]) -> Vec<Member<'_>> {
        names.iter().map(|n| Member { name: n, weight: 1 }).collect()
    }

    fn counts(table: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in table {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(validate_size(65_537), Ok(()));
        assert_eq!(validate_size(65_536), Err(MaglevError::NotPrime(65_536)));
        assert_eq!(validate_size(2), Err(MaglevError::OutOfRange(2)));
        assert_eq!(validate_size(MAX_TABLE_SIZE + 1), Err(MaglevError::OutOfRange(MAX_TABLE_SIZE + 1)));
        assert!(is_prime(MAX_TABLE_SIZE));
    }

    #[test]
    fn empty_and_zero_weight_sets_give_empty_tables() {
        assert!(build_table(&[], 13).is_empty());
        assert!(build_table(&[Member { name: "a", weight: 0 }], 13).is_empty());
    }

    #[test]
    fn zero_weight_members_get_no_slots() {
        let t = build_table(&[Member { name: "a", weight: 0 }, Member { name: "b", weight: 3 }], 13);
        assert!(t.iter().all(|&i| i == 1));
    }

    #[test]
    fn same_set_gives_same_table() {
        let n = names(7);
        let a = build_table(&members(&n), DEFAULT_TABLE_SIZE);
        let b = build_table(&members(&n), DEFAULT_TABLE_SIZE);
        assert_eq!(a, b);
        // The permutation depends only on names, so a second agent's table is the same bytes.
        assert_eq!(a.len(), DEFAULT_TABLE_SIZE as usize);
    }

    #[test]
    fn equal_weights_share_slots_within_one() {
        for n in [1, 2, 3, 5, 10, 33, 100] {
            let names = names(n);
            let t = build_table(&members(&names), DEFAULT_TABLE_SIZE);
            let c = counts(&t, n);
            let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(hi - lo <= 1, "n={n}: slot counts {lo}..{hi}");
        }
    }

    #[test]
    fn weights_shape_slot_shares() {
        let names = names(3);
        let m = [
            Member { name: &names[0], weight: 1 },
            Member { name: &names[1], weight: 2 },
            Member { name: &names[2], weight: 3 },
        ];
        let t = build_table(&m, DEFAULT_TABLE_SIZE);
        let c = counts(&t, 3);
        for (i, w) in [1.0, 2.0, 3.0].iter().enumerate() {
            let share = c[i] as f64 / f64::from(DEFAULT_TABLE_SIZE);
            assert!((share - w / 6.0).abs() < 0.01, "backend {i}: share {share}");
        }
    }

    #[test]
    fn key_load_is_within_a_few_percent_of_even() {
        let n = 5;
        let names = names(n);
        let t = build_table(&members(&names), DEFAULT_TABLE_SIZE);
        let mut load = vec![0u32; n];
        let keys = 200_000u32;
        for k in 0..keys {
            let h = hash64(&k.to_be_bytes(), SEED_KEY);
            load[t[slot(h, t.len())] as usize] += 1;
        }
        let even = f64::from(keys) / n as f64;
        for (i, l) in load.iter().enumerate() {
            let dev = (f64::from(*l) - even).abs() / even;
            assert!(dev < 0.03, "backend {i}: {l} keys, {:.2} % off even", dev * 100.0);
        }
    }

    /// Fraction of slots whose owner changed between two tables over different member lists.
    fn moved(a: &[u32], a_names: &[String], b: &[u32], b_names: &[String]) -> f64 {
        let changed = a.iter().zip(b).filter(|(x, y)| a_names[**x as usize] != b_names[**y as usize]).count();
        changed as f64 / a.len() as f64
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [3usize, 5, 10, 20] {
            let all = names(n);
            let full = build_table(&members(&all), DEFAULT_TABLE_SIZE);
            for gone in 0..n {
                let rest: Vec<String> = all.iter().filter(|x| **x != all[gone]).cloned().collect();
                let t = build_table(&members(&rest), DEFAULT_TABLE_SIZE);
                let frac = moved(&full, &all, &t, &rest);
                let ideal = 1.0 / n as f64;
                // The removed backend's own slots must move; Maglev moves only a little more.
                assert!(frac >= ideal * 0.99, "n={n}: moved {frac}");
                assert!(frac <= ideal * 1.6, "n={n}: moved {frac}, ideal {ideal}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any set, any order: which name owns each slot depends only on the set, every slot is
        /// owned, and shares with equal weights differ by at most one.
        #[test]
        fn order_independent_and_balanced(ids in proptest::collection::btree_set(0u32..5000, 1..40)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>()), seed in any::<u64>()) {
            let size = 4_093;
            let name = |i: &u32| format!("10.1.{}.{}:80", i / 256, i % 256);
            let a_names: Vec<String> = ids.iter().map(name).collect();
            let a = build_table(&members(&a_names), size);
            let mut shuffled = ids.clone();
            fastrand::Rng::with_seed(seed).shuffle(&mut shuffled);
            let b_names: Vec<String> = shuffled.iter().map(name).collect();
            let b = build_table(&members(&b_names), size);
            prop_assert_eq!(moved(&a, &a_names, &b, &b_names), 0.0);
            let c = counts(&a, a_names.len());
            prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
        }

        /// Adding a backend only takes slots for itself: no slot moves between two old backends
        /// beyond a small fraction.
        #[test]
        fn adding_one_moves_little_between_others(n in 2usize..30) {
            let size = 65_537;
            let all = names(n + 1);
            let before = build_table(&members(&all[..n]), size);
            let after = build_table(&members(&all), size);
            let between_old = before.iter().zip(&after)
                .filter(|(x, y)| (**y as usize) < n && x != y).count() as f64 / f64::from(size);
            let to_new = after.iter().filter(|y| **y as usize == n).count() as f64 / f64::from(size);
            prop_assert!((to_new - 1.0 / (n + 1) as f64).abs() < 0.001);
            prop_assert!(between_old < 0.6 / (n + 1) as f64, "old-to-old moves {}", between_old);
        }
    }
}
