//! A lock-free latency histogram: one atomic counter per bucket and the sum in nanoseconds.
//!
//! The request path records a duration per request on every core; a histogram behind a mutex (as
//! prometheus-client's is) would serialise them. This one only does relaxed atomic adds, and the
//! metrics exporter reads a [`Snapshot`] at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, for request and probe latencies: 100 µs to 30 s.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

/// A histogram of durations over [`LATENCY_BUCKETS`].
#[derive(Debug)]
pub struct Histogram {
    /// Non-cumulative counts; one extra slot for +Inf.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_nanos: AtomicU64::new(0) }
    }
}

/// What a histogram held at one moment, for the exporter.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// (upper bound in seconds, observations in this bucket alone); the last bound is +Inf.
    pub per_bucket: Vec<(f64, u64)>,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The counts and the sum as they are now.
    pub fn snapshot(&self) -> Snapshot {
        let per_bucket: Vec<(f64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), c.load(Ordering::Relaxed)))
            .collect();
        let count = per_bucket.iter().map(|(_, n)| n).sum();
        Snapshot { per_bucket, sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9, count }
    }

    /// Estimates the `q` quantile (0..=1) as the upper bound of the bucket that holds it.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        let snap = self.snapshot();
        if snap.count == 0 {
            return None;
        }
        let rank = ((snap.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bound, n) in snap.per_bucket {
            seen += n;
            if seen >= rank {
                return Some(bound);
            }
        }
        Some(f64::INFINITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.per_bucket[0], (0.0001, 1));
        assert_eq!(s.per_bucket[5], (0.005, 1));
        assert_eq!(s.per_bucket[16], (f64::INFINITY, 1));
        assert!((s.sum_seconds - 60.00305).abs() < 1e-9, "{}", s.sum_seconds);
        assert_eq!(h.quantile_upper_bound(0.5), Some(0.005));
        assert_eq!(h.quantile_upper_bound(1.0), Some(f64::INFINITY));
        assert_eq!(Histogram::default().quantile_upper_bound(0.5), None);
    }
}
