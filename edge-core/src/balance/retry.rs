//! Retries that cannot amplify an outage: a per-service retry budget and full-jitter back-off.
//!
//! The budget is a token bucket shared by all workers without a lock. Each client request earns
//! `ratio` of a token (20 %: one retry per five requests); a retry spends a whole one. Services
//! with little traffic get a floor of `min_per_sec` retries per second, and the floor does not add
//! to the share: each second earns `max(ratio x requests, min_per_sec)` tokens. The bucket holds
//! at most `max(1, min_per_sec)` tokens, the burst a quiet service can spend at once. So over any
//! stretch of N requests at more than `min_per_sec / ratio` per second, retries stay at or below
//! `ratio x N` plus that burst, whatever the backends do. The bucket starts full.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Budget settings (`--retry-budget`, `--retry-min-rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// Hundredths of a token each request earns (20: retries may be 20 % of requests).
    pub percent: u32,
    /// The floor, in retries per second.
    pub min_per_sec: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        // Finagle's and Linkerd's budget.
        Self { percent: 20, min_per_sec: 10 }
    }
}

const MILLI: i64 = 1000;

/// One service's budget.
#[derive(Debug)]
pub struct RetryBudget {
    ratio_milli: i64,
    floor_milli: i64,
    cap_milli: i64,
    start: Instant,
    /// Tokens, in thousandths.
    tokens: AtomicI64,
    /// Requests not yet turned into tokens.
    unsettled: AtomicU64,
    /// Requests in the current floor window, and the second that window started.
    window_requests: AtomicU64,
    window_second: AtomicU64,
    granted: AtomicU64,
    denied: AtomicU64,
}

impl RetryBudget {
    /// A full bucket: a starting service may retry at once.
    pub fn new(cfg: RetryBudgetConfig) -> Self {
        let floor_milli = i64::from(cfg.min_per_sec) * MILLI;
        Self {
            ratio_milli: i64::from(cfg.percent.min(1000)) * MILLI / 100,
            floor_milli,
            cap_milli: floor_milli.max(MILLI),
            start: Instant::now(),
            tokens: AtomicI64::new(floor_milli.max(MILLI)),
            unsettled: AtomicU64::new(0),
            window_requests: AtomicU64::new(0),
            window_second: AtomicU64::new(0),
            granted: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    /// Counts a client request (one relaxed add on the request path).
    pub fn request(&self) {
        self.unsettled.fetch_add(1, Ordering::Relaxed);
    }

    /// Spends a token for a retry; false when the budget is exhausted.
    pub fn try_retry(&self) -> bool {
        self.settle();
        let ok = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| (t >= MILLI).then_some(t - MILLI))
            .is_ok();
        let counter = if ok { &self.granted } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        ok
    }

    /// Retries granted so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    /// Retries refused for want of budget so far.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Turns counted requests into tokens, and tops up to the floor for each second that passed.
    fn settle(&self) {
        let new = self.unsettled.swap(0, Ordering::Relaxed);
        let mut credit = i64::try_from(new).unwrap_or(i64::MAX / MILLI).saturating_mul(self.ratio_milli);
        let window = self.window_requests.fetch_add(new, Ordering::Relaxed) + new;
        let second = self.start.elapsed().as_secs();
        let was = self.window_second.load(Ordering::Relaxed);
        if second > was
            && self.window_second.compare_exchange(was, second, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            // The window's share was credited request by request; the floor adds what is missing
            // to reach `min_per_sec` per second of the window.
            self.window_requests.fetch_sub(window, Ordering::Relaxed);
            let secs = i64::try_from(second - was).unwrap_or(i64::MAX / MILLI);
            let earned = i64::try_from(window).unwrap_or(i64::MAX / MILLI).saturating_mul(self.ratio_milli);
            credit = credit.saturating_add((self.floor_milli.saturating_mul(secs) - earned).max(0));
        }
        if credit > 0 {
            let cap = self.cap_milli;
            let _ = self.tokens.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| Some((t + credit).min(cap)));
        }
    }
}

/// Full-jitter exponential back-off between attempts: the n-th retry waits a random time in
/// `[0, min(cap, base x 2^(n-1)))`, so retries of many clients spread instead of arriving together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's ceiling.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        // Envoy's: 25 ms base, 250 ms cap.
        Self { base: Duration::from_millis(25), cap: Duration::from_millis(250) }
    }
}

impl Backoff {
    /// The wait before retry `n` (from 1).
    pub fn delay(&self, n: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << n.saturating_sub(1).min(16)).min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `rps` requests per second for `secs` seconds, each failing and asking for a retry;
    /// returns the retries granted.
    async fn outage(b: &RetryBudget, rps: u32, secs: u32) -> u64 {
        let gap = Duration::from_secs(1) / rps;
        let mut granted = 0;
        for _ in 0..rps * secs {
            b.request();
            if b.try_retry() {
                granted += 1;
            }
            tokio::time::sleep(gap).await;
        }
        granted
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_share_under_a_total_outage() {
        for rps in [100u32, 200, 500, 1000] {
            let b = RetryBudget::new(RetryBudgetConfig::default());
            let n = u64::from(rps) * 10;
            let granted = outage(&b, rps, 10).await;
            assert!(granted <= n / 5 + 10, "{rps}/s: {granted} retries for {n} requests");
            assert!(granted >= n / 5 - 12, "{rps}/s: the budget is not stingier than its share: {granted}");
            assert_eq!(b.granted() + b.denied(), n);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_services_get_the_floor_not_more() {
        let b = RetryBudget::new(RetryBudgetConfig::default());
        // 20 requests per second: 20 % would be 4; the floor allows 10 a second.
        let granted = outage(&b, 20, 10).await;
        assert!((80..=110).contains(&granted), "{granted}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_warm_bucket_bursts_at_most_its_cap() {
        let b = RetryBudget::new(RetryBudgetConfig::default());
        for _ in 0..10_000 {
            b.request();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let burst = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(burst, 10, "the cap is the floor's ten tokens");
    }

    #[test]
    fn backoff_is_full_jitter_under_a_growing_capped_ceiling() {
        let b = Backoff::default();
        for n in 1..=8u32 {
            let ceiling = Duration::from_millis((25u64 << (n - 1)).min(250));
            let mut most = Duration::ZERO;
            for _ in 0..2000 {
                let d = b.delay(n);
                assert!(d < ceiling || ceiling.is_zero(), "{n}: {d:?}");
                most = most.max(d);
            }
            assert!(most > ceiling.mul_f64(0.9), "{n}: spread reaches the ceiling");
        }
    }
}
