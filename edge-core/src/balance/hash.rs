//! Stable 64-bit hashing for consistent hashing and Maglev permutations.
//!
//! The hash must give the same answer on every agent, every platform and every release, so that
//! two agents fed the same backend set build the same Maglev table and send a given client to the
//! same backend. `std`'s `DefaultHasher` is explicitly not stable across releases, so this module
//! spells the function out: FNV-1a over the bytes, seeded, then MurmurHash3's 64-bit finalizer
//! (shared with the data path, `edge_common::fmix64`) to spread FNV's weak low bits across the
//! whole word.

use edge_common::fmix64;

/// Seeds for the two independent hashes Maglev needs per backend (offset and skip).
pub const SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;
/// See [`SEED_OFFSET`].
pub const SEED_SKIP: u64 = 0xc2b2_ae3d_27d4_eb4f;
/// Seed for hashing request keys (client address, header value).
pub const SEED_KEY: u64 = 0x1656_67b1_9e37_79f9;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes `bytes` with `seed`; stable across platforms and releases.
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = FNV_OFFSET ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// Hashes an IP address (the default consistent-hash key: the client's address).
pub fn hash_ip(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => hash64(&v4.octets(), SEED_KEY),
        std::net::IpAddr::V6(v6) => hash64(&v6.octets(), SEED_KEY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_releases() {
        // Pinned values (computed independently): if these change, agents of different versions
        // disagree on routing.
        assert_eq!(hash64(b"abc", 0), 0x33eb_af99_27cb_c5bd);
        assert_eq!(hash64(b"10.0.0.1:80", SEED_OFFSET), 0x7d8f_bbfc_6baf_e1f9);
        assert_ne!(hash64(b"10.0.0.1:80", SEED_OFFSET), hash64(b"10.0.0.1:80", SEED_SKIP));
    }

    #[test]
    fn nearby_keys_spread() {
        let a = hash64(b"10.0.0.1", SEED_KEY);
        let b = hash64(b"10.0.0.2", SEED_KEY);
        assert!((a ^ b).count_ones() > 16, "one-bit change should flip many bits");
    }
}
