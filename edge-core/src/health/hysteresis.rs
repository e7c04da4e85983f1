//! The health state machine with hysteresis (`--rise`, `--fall`), free of I/O.
//!
//! A new backend is `Unknown` and gets no traffic. Its first probe decides at once: a pass makes it
//! `Healthy`, a failure `Unhealthy`. From then on it flips only after `rise` passes or `fall`
//! failures in a row, so a backend that fails one probe in three never leaves `Healthy` with the
//! default `fall = 3`, and one that passes one probe in three never enters it with `rise = 2`.

use crate::backend::Health;

/// Hysteresis over a stream of probe verdicts.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    health: Health,
    /// Consecutive passes while unhealthy, or consecutive failures while healthy.
    streak: u32,
}

impl Hysteresis {
    /// A machine for a new backend; `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self { rise: rise.max(1), fall: fall.max(1), health: Health::Unknown, streak: 0 }
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Consecutive verdicts counted toward the next flip.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Feeds one probe verdict; returns the new health when it changed.
    pub fn observe(&mut self, passed: bool) -> Option<Health> {
        let next = match (self.health, passed) {
            (Health::Unknown, true) => Some(Health::Healthy),
            (Health::Unknown, false) => Some(Health::Unhealthy),
            (Health::Healthy, true) | (Health::Unhealthy, false) => {
                self.streak = 0;
                None
            }
            (Health::Healthy, false) => {
                self.streak += 1;
                (self.streak >= self.fall).then_some(Health::Unhealthy)
            }
            (Health::Unhealthy, true) => {
                self.streak += 1;
                (self.streak >= self.rise).then_some(Health::Healthy)
            }
        };
        if let Some(h) = next {
            self.health = h;
            self.streak = 0;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h: &mut Hysteresis, verdicts: &[bool]) -> Vec<Health> {
        verdicts
            .iter()
            .map(|v| {
                h.observe(*v);
                h.health()
            })
            .collect()
    }

    #[test]
    fn first_verdict_decides_at_once() {
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.health(), Health::Unknown);
        assert_eq!(h.observe(true), Some(Health::Healthy));
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(h.observe(false), Some(Health::Unhealthy));
    }

    #[test]
    fn falls_after_fall_failures_in_a_row() {
        use Health::*;
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(
            run(&mut h, &[true, false, false, true, false, false, false]),
            [Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Unhealthy]
        );
    }

    #[test]
    fn rises_after_rise_passes_in_a_row() {
        use Health::*;
        let mut h = Hysteresis::new(2, 3);
        assert_eq!(
            run(&mut h, &[false, true, false, true, true]),
            [Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy]
        );
    }

    #[test]
    fn one_failure_in_three_never_flaps() {
        let mut h = Hysteresis::new(2, 3);
        h.observe(true);
        for i in 0..3000 {
            assert_eq!(h.observe(i % 3 != 2), None, "flipped at probe {i}");
        }
        assert_eq!(h.health(), Health::Healthy);
    }

    #[test]
    fn one_pass_in_three_never_rises() {
        let mut h = Hysteresis::new(2, 3);
        h.observe(false);
        for i in 0..3000 {
            assert_eq!(h.observe(i % 3 == 2), None, "flipped at probe {i}");
        }
        assert_eq!(h.health(), Health::Unhealthy);
    }

    #[test]
    fn exhaustive_small_sequences_flip_only_on_full_streaks() {
        // Every verdict sequence of length 12 with rise 2, fall 3: after the first verdict, a flip
        // happens exactly when the last `rise`/`fall` verdicts agree and the previous state differs.
        for bits in 0u32..(1 << 12) {
            let mut h = Hysteresis::new(2, 3);
            let v: Vec<bool> = (0..12).map(|i| bits >> i & 1 == 1).collect();
            let mut prev = Health::Unknown;
            let mut run_len = 0u32;
            for (i, &ok) in v.iter().enumerate() {
                run_len = if i > 0 && v[i - 1] == ok { run_len + 1 } else { 1 };
                let flipped = h.observe(ok);
                let expect = match prev {
                    Health::Unknown => true,
                    Health::Healthy => !ok && run_len >= 3 && streak_since_state(&v, i, false) >= 3,
                    Health::Unhealthy => ok && run_len >= 2 && streak_since_state(&v, i, true) >= 2,
                };
                assert_eq!(flipped.is_some(), expect, "bits {bits:012b} at {i}");
                prev = h.health();
                if flipped.is_some() {
                    run_len = 0;
                }
            }
        }
    }

    /// Length of the run of `want` ending at `i` (the machine resets its streak on a flip, which
    /// the caller models by resetting its own run counter).
    fn streak_since_state(v: &[bool], i: usize, want: bool) -> u32 {
        v[..=i].iter().rev().take_while(|x| **x == want).count() as u32
    }
}
