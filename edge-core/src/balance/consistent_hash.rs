//! Consistent hashing: a Maglev table over the eligible targets, looked up by the request's key.

use super::maglev::{Member, build_table, slot};
use super::{Select, Target};

/// Maglev selector; the key hash is computed by the proxy from the configured hash key.
#[derive(Debug)]
pub struct ConsistentHash {
    targets: Vec<Target>,
    table: Vec<u32>,
}

impl ConsistentHash {
    /// Builds the table; `targets` must be sorted by id so that agents agree.
    pub fn new(targets: Vec<Target>, table_size: u32) -> Self {
        let members: Vec<Member<'_>> = targets.iter().map(|t| Member { name: t.id(), weight: t.weight }).collect();
        let table = build_table(&members, table_size);
        Self { targets, table }
    }
}

impl Select for ConsistentHash {
    fn pick(&self, hash: u64) -> Option<&Target> {
        if self.table.is_empty() {
            return None;
        }
        self.targets.get(self.table[slot(hash, self.table.len())] as usize)
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::hash::{SEED_KEY, hash64};
    use crate::balance::tests::targets;

    #[test]
    fn same_key_same_target_and_keys_spread() {
        let ch = ConsistentHash::new(targets(&[1, 1, 1]), 65_537);
        let mut seen = std::collections::HashSet::new();
        for k in 0u32..300 {
            let h = hash64(&k.to_be_bytes(), SEED_KEY);
            let a = ch.pick(h).unwrap().id().clone();
            assert_eq!(&a, ch.pick(h).unwrap().id());
            seen.insert(a);
        }
        assert_eq!(seen.len(), 3);
    }
}
