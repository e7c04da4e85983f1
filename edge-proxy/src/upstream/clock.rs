//! The clock a client's request body runs against.

use std::time::Duration;

use tokio::time::Instant;

/// The deadline of a client's request body. Two rules, the stricter wins: no gap between bytes
/// longer than `gap`, and on average at least `min_rate` bytes per second after a first `gap`
/// (Apache's mod_reqtimeout `body=GAP,MinRate=RATE`). The gap rule alone lets a client that
/// sends a byte every few seconds hold a connection, a backend connection and a backend slot
/// forever; the rate rule ends that, and a real upload at any usable speed never meets it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyClock {
    start: Instant,
    last: Instant,
    gap: Duration,
    min_rate: u64,
    bytes: u64,
}

impl BodyClock {
    /// Starts the clock now.
    pub(crate) fn start(gap: Duration, min_rate: u64) -> Self {
        let now = Instant::now();
        Self { start: now, last: now, gap, min_rate, bytes: 0 }
    }

    /// Counts `n` bytes received now.
    pub(crate) fn received(&mut self, n: usize) {
        if n > 0 {
            self.bytes += n as u64;
            self.last = Instant::now();
        }
    }

    /// When the body must have made its next progress.
    pub(crate) fn deadline(&self) -> Instant {
        let by_gap = self.last + self.gap;
        if self.min_rate == 0 {
            return by_gap;
        }
        let earned = Duration::from_secs_f64(self.bytes as f64 / self.min_rate as f64);
        by_gap.min(self.start + self.gap + earned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_secs(30);

    #[tokio::test(start_paused = true)]
    async fn a_drip_meets_the_rate_rule_a_stall_the_gap_rule() {
        let t0 = Instant::now();
        let mut c = BodyClock::start(GAP, 1024);
        assert_eq!(c.deadline(), t0 + GAP);
        // A byte every 5 s: each gap is short, but the average rate is far too low.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(5)).await;
            c.received(1);
        }
        assert!(c.deadline() < t0 + GAP + Duration::from_millis(10), "the drip has earned nothing");
        // A fast upload earns time: 1 MiB at 1 KiB/s is 1024 s, but a gap still ends it.
        let mut c = BodyClock::start(GAP, 1024);
        c.received(1 << 20);
        assert_eq!(c.deadline(), t0 + Duration::from_secs(25) + GAP, "the gap rule is the stricter");
        let mut c = BodyClock::start(GAP, 0);
        tokio::time::advance(Duration::from_secs(100)).await;
        c.received(1);
        assert_eq!(c.deadline(), Instant::now() + GAP, "no rate rule with 0");
    }
}
