//! Outlier detection's settings and arithmetic: how long an ejection lasts, and whether the cap on
//! a service's ejected share allows one more.

use std::time::Duration;

/// Passive failure handling (`--outlier-*`, `--slow-start`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Gateway failures in a row that eject a backend; 0 turns outlier detection off.
    pub consecutive: u32,
    /// Count every 5xx, not only 502, 503 and 504.
    pub all_5xx: bool,
    /// Share of gateway failures (percent) over the last 10 s that ejects a backend; 0 turns the
    /// rule off.
    pub failure_percent: u32,
    /// Outcomes the last 10 s must hold before the failure share counts.
    pub min_requests: u32,
    /// The first ejection's length; the n-th lasts n times this.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// Most of a service's backends (percent, counted after the ejection) that may be ejected at
    /// once; drained and removed backends do not count.
    pub max_ejected_percent: u32,
    /// Extra random length of an ejection, as a fraction (0.1: up to 10 % longer), so that
    /// backends ejected together do not return together.
    pub jitter: f64,
    /// How long a returning backend's weight takes to ramp from 10 % to full; zero turns slow
    /// start off.
    pub slow_start: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        // Envoy's consecutive-failure count and ejection times; a cap that can never eject the
        // only backend, nor more than half of any service (see `may_eject`).
        Self {
            consecutive: 5,
            all_5xx: false,
            failure_percent: 50,
            min_requests: 20,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
            jitter: 0.1,
            slow_start: Duration::from_secs(10),
        }
    }
}

impl OutlierConfig {
    /// The length of ejection number `n` (from 1) before jitter: `base x n`, capped.
    pub fn ejection_time(&self, n: u32) -> Duration {
        self.base_ejection.saturating_mul(n.max(1)).min(self.max_ejection)
    }

    /// The length of ejection number `n` with jitter applied (never shorter than without).
    pub fn jittered_ejection_time(&self, n: u32) -> Duration {
        self.ejection_time(n).mul_f64(1.0 + self.jitter.max(0.0) * fastrand::f64())
    }
}

/// Whether one more backend may be ejected when `ejected` of the `countable` backends (those not
/// drained or removed) are ejected now: the share *after* the ejection must stay within
/// `max_percent`. Computing it after the ejection is what keeps small services sane: with 50 % the
/// only backend is never ejected, one of two or of three may be, and five of ten. (Envoy computes
/// it before, which on two- and three-host clusters ejected all or none.)
pub fn may_eject(ejected: usize, countable: usize, max_percent: u32) -> bool {
    countable > 0 && (ejected as u64 + 1) * 100 <= u64::from(max_percent) * countable as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_time_grows_and_is_capped() {
        let c = OutlierConfig::default();
        let secs: Vec<u64> = (1..=12).map(|n| c.ejection_time(n).as_secs()).collect();
        assert_eq!(secs, [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]);
        for n in 1..=12 {
            let d = c.jittered_ejection_time(n);
            assert!(d >= c.ejection_time(n) && d <= c.ejection_time(n).mul_f64(1.1), "{n}: {d:?}");
        }
    }

    #[test]
    fn the_cap_is_counted_after_the_ejection() {
        // How many of n backends may be out at once at 50 %: eject one at a time until refused.
        let most = |n: usize, pct: u32| (0..=n).take_while(|e| *e < n && may_eject(*e, n, pct)).count();
        assert_eq!(most(1, 50), 0, "never the only backend");
        assert_eq!(most(2, 50), 1);
        assert_eq!(most(3, 50), 1);
        assert_eq!(most(10, 50), 5);
        assert_eq!(most(10, 10), 1);
        assert_eq!(most(3, 10), 0);
        assert_eq!(most(3, 100), 3, "100 % lets every backend go (panic mode then spreads)");
        assert_eq!(most(0, 100), 0);
    }
}
