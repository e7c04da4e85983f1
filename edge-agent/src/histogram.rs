//! A lock-free histogram for prometheus-client.
//!
//! prometheus-client's `Histogram` takes a mutex on every observation; the request path records a
//! duration per request on every core, so it would serialise them. This one keeps one atomic
//! counter per bucket and the sum in nanoseconds, and encodes through the same `EncodeMetric`
//! interface, so it sits in a `Family` like any other metric.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds, in seconds, for request and probe latencies: 100 µs to 30 s.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

#[derive(Debug)]
struct Inner {
    bounds: &'static [f64],
    /// Non-cumulative counts; one extra slot for +Inf.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// Histogram of durations; clones share the same counters.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self::latency()
    }
}

impl AtomicHistogram {
    /// A histogram with [`LATENCY_BUCKETS`].
    pub fn latency() -> Self {
        Self::with_bounds(&LATENCY_BUCKETS)
    }

    /// A histogram with the given ascending upper bounds, in seconds.
    pub fn with_bounds(bounds: &'static [f64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self { inner: Arc::new(Inner { bounds, counts, sum_nanos: AtomicU64::new(0) }) }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.inner.bounds.iter().position(|b| secs <= *b).unwrap_or(self.inner.bounds.len());
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Estimates the `q` quantile (0..=1) as the upper bound of the bucket that holds it.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.inner.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(self.inner.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // prometheus-client accumulates the buckets itself: hand it per-bucket counts.
        let mut count = 0u64;
        let mut buckets = Vec::with_capacity(self.inner.counts.len());
        for (i, c) in self.inner.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            let bound = self.inner.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        let sum = self.inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_are_cumulative_in_text() {
        let h = AtomicHistogram::latency();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 3);
        let mut r = Registry::default();
        r.register("lat_seconds", "latency", h.clone());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(out.contains("lat_seconds_bucket{le=\"0.0001\"} 1"), "{out}");
        assert!(out.contains("lat_seconds_bucket{le=\"0.005\"} 2"), "{out}");
        assert!(out.contains("lat_seconds_bucket{le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("lat_seconds_count 3"), "{out}");
        assert_eq!(h.quantile_upper_bound(0.5), Some(0.005));
        assert_eq!(h.quantile_upper_bound(1.0), Some(f64::INFINITY));
    }
}
