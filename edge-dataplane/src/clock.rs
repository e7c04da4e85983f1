//! Calibrating the data path's clock.
//!
//! The data path tells time by the kernel's tick counter (`jiffies`, one inlined load) scaled to
//! nanoseconds: `jiffies × ns_per_tick + offset` (see `edge_common::Settings::clock_ns_per_tick`).
//! Neither the tick rate (CONFIG_HZ) nor the counter is published to userspace in a stable form,
//! so the agent reads the counter through the object's `edge_clock` program (run with
//! `BPF_PROG_TEST_RUN`, never attached) twice, [`WINDOW`] apart, next to CLOCK_MONOTONIC. The
//! tick rate is the standard CONFIG_HZ value nearest to the measured one; the offset makes the
//! result CLOCK_MONOTONIC, so the agent's sweep and `edge-agent maps` compare the data path's
//! timestamps with their own clock directly.

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use edge_core::util::error_chain;

/// How long the two readings are apart: ±1 tick of rounding is then at most 10 % at 100 Hz, well
/// clear of the gaps between the candidate rates.
pub const WINDOW: Duration = Duration::from_millis(100);

/// The CONFIG_HZ choices Linux offers on x86-64 and arm64.
const RATES: [u64; 4] = [100, 250, 300, 1000];

/// The verdict the clock program returns.
const XDP_PASS: u32 = 2;

/// How far the measured rate may be from the chosen one.
const TOLERANCE: f64 = 0.15;

/// The clock's parameters, as written into the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    /// The kernel's tick rate.
    pub hz: u64,
    /// Nanoseconds per tick, rounded as the kernel's TICK_NSEC.
    pub ns_per_tick: u64,
    /// Added (wrapping) to `jiffies × ns_per_tick`.
    pub offset_ns: u64,
}

/// Calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// The clock program did not run.
    #[error("running the eBPF clock program failed: {0}; the agent needs CAP_BPF (run it as root)")]
    Run(String),
    /// The measured rate is no known CONFIG_HZ.
    #[error(
        "the kernel's tick counter advanced at {measured:.0} Hz, which is no known CONFIG_HZ (100, 250, 300, 1000); is the host overloaded? start the agent again"
    )]
    Rate {
        /// Ticks per second measured.
        measured: f64,
    },
}

/// Measures the tick rate and the offset, with `clock` the loaded `edge_clock` program.
pub fn calibrate(clock: &mut Xdp) -> Result<Calibration, ClockError> {
    let (m0, j0) = sample(clock)?;
    std::thread::sleep(WINDOW);
    let (m1, j1) = sample(clock)?;
    from_samples((m0, j0), (m1, j1))
}

/// The calibration for two (CLOCK_MONOTONIC ns, jiffies) readings.
pub fn from_samples(first: (u64, u64), second: (u64, u64)) -> Result<Calibration, ClockError> {
    let seconds = second.0.saturating_sub(first.0) as f64 / 1e9;
    let measured = second.1.wrapping_sub(first.1) as f64 / seconds.max(1e-9);
    let hz = RATES
        .into_iter()
        .min_by(|a, b| (measured / *a as f64 - 1.0).abs().total_cmp(&(measured / *b as f64 - 1.0).abs()))
        .unwrap_or(RATES[0]);
    if (measured / hz as f64 - 1.0).abs() > TOLERANCE {
        return Err(ClockError::Rate { measured });
    }
    // The kernel's TICK_NSEC: (NSEC_PER_SEC + HZ / 2) / HZ. Jiffies advance once per TICK_NSEC of
    // CLOCK_MONOTONIC, so using the same rounding keeps the two clocks from drifting apart.
    let ns_per_tick = (1_000_000_000 + hz / 2) / hz;
    let offset_ns = second.0.wrapping_sub(second.1.wrapping_mul(ns_per_tick));
    Ok(Calibration { hz, ns_per_tick, offset_ns })
}

/// One reading: CLOCK_MONOTONIC just before the tick counter.
fn sample(clock: &mut Xdp) -> Result<(u64, u64), ClockError> {
    // The kernel needs a frame of at least an Ethernet header to run an XDP program.
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    let mono = monotonic_ns();
    let opts = TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..TestRunOptions::new() };
    let r = clock.test_run(opts).map_err(|e| ClockError::Run(error_chain(&e)))?;
    if r.return_value != XDP_PASS {
        return Err(ClockError::Run(format!("it returned {} instead of XDP_PASS", r.return_value)));
    }
    let mut ticks = [0u8; 8];
    ticks.copy_from_slice(&out[..8]);
    Ok((mono, u64::from_ne_bytes(ticks)))
}

/// CLOCK_MONOTONIC in ns, which the data path's clock follows to within a tick or two.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_nearest_standard_rate_is_chosen_and_the_offset_matches_the_monotonic_clock() {
        // 250 Hz with a tick of rounding either way.
        for ticks in [24, 25, 26] {
            let c = from_samples((1_000 * S, 4_295_000_000), (1_000 * S + S / 10, 4_295_000_000 + ticks)).unwrap();
            assert_eq!((c.hz, c.ns_per_tick), (250, 4_000_000));
            let now = (4_295_000_000 + ticks).wrapping_mul(c.ns_per_tick).wrapping_add(c.offset_ns);
            assert_eq!(now, 1_000 * S + S / 10, "the data path's clock reads CLOCK_MONOTONIC");
        }
        let c = from_samples((0, 0), (S / 10, 30)).unwrap();
        assert_eq!((c.hz, c.ns_per_tick), (300, 3_333_333));
        let c = from_samples((0, 0), (S / 10, 100)).unwrap();
        assert_eq!(c.hz, 1000);
        let c = from_samples((0, 0), (S / 10, 11)).unwrap();
        assert_eq!(c.hz, 100);
    }

    #[test]
    fn a_rate_far_from_every_standard_one_is_refused() {
        let e = from_samples((0, 0), (S / 10, 60)).unwrap_err();
        assert!(e.to_string().contains("600 Hz"), "{e}");
        // The counter did not move at all (or the readings are not ordered).
        assert!(from_samples((0, 5), (S / 10, 5)).is_err());
    }
}
