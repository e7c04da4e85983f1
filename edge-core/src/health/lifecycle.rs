//! One backend's failure-handling state machine, free of I/O: active probe verdicts (through
//! hysteresis), passive outcomes of real traffic and the passing of time go in; the state, the
//! reason with its evidence, the selection weight and the probe pace come out.
//!
//! ```text
//!             first probe passes                 fall probes fail
//!  unknown ──────────────────────▶ healthy ─────────────────────────▶ unhealthy
//!     │                             ▲  │ N gateway failures in a row       │ rise probes pass
//!     └─ first probe fails ─▶ unhealthy │ (cap allowing)                    ▼
//!                                   │  ▼                               slow start ──▶ healthy
//!              slow start over ─────┤ ejected ── time over and rise probes passed ─▶ probation
//!                                   │    ▲                                              │
//!                                   │    └──────────── its one request fails ───────────┤
//!                                   └──────── slow start ◀── its one request succeeds ──┘
//!                                               (or no request within the base ejection time)
//! ```
//!
//! Rules that make it predictable:
//! - A passing probe never ends an ejection early: the backend that passes its probes but fails
//!   real requests is exactly the one outlier detection is for. It needs both the ejection time
//!   and `rise` passes in a row, then one real request.
//! - Active failure rules over an ejection: an ejected backend whose probes fail is `unhealthy`,
//!   and comes back through `rise` passes and (if its ejection ended meanwhile) probation.
//! - A probation waits for its one request for at most the base ejection time. Traffic that
//!   never comes (a quiet service, or long-lived connections that all went elsewhere) would
//!   otherwise leave a backend whose probes pass at the floor weight indefinitely; it goes on
//!   to slow start instead, and outlier detection watches the requests it then gets.
//! - The ejection count grows with each ejection and decays by one per base ejection time spent
//!   healthy, so a backend that keeps failing stays out longer, and one that recovered is forgiven.
//! - Drains and removals are not here: they are operators' and discovery's decisions, applied on
//!   top by the monitor, and they never count as sickness.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::Hysteresis;
use super::outlier::OutlierConfig;
use crate::backend::{GatewayFailure, Health, PassiveSample, State, WEIGHT_STEPS};

/// Slow start's weight floor, in tenths (Envoy's 10 %).
const FLOOR_STEPS: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// What hysteresis says, at full weight.
    Normal,
    /// Out until `until`, then back after `rise` passing probes in a row.
    Ejected { until: Instant },
    /// One real request decides, or, when none came within the base ejection time of `since`
    /// while the probes kept passing, that time does.
    Probation { since: Instant },
    /// Ramping up since `since`.
    SlowStart { since: Instant },
}

/// A state change, with the words that explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why.
    pub reason: String,
}

/// What a passive sample asks of the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passive {
    /// Nothing to do.
    Nothing,
    /// The state changed.
    Changed(Change),
    /// Outlier detection wants to eject the backend for the reason given; the monitor checks the
    /// cap, then calls [`Lifecycle::eject`].
    WantsEjection(String),
}

/// How long the failure-percentage window looks back.
const WINDOW: Duration = Duration::from_secs(10);

/// How often a window sample is taken.
const WINDOW_STEP: Duration = Duration::from_secs(1);

/// One backend's machine.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    cfg: OutlierConfig,
    rise: u32,
    fall: u32,
    hyst: Hysteresis,
    phase: Phase,
    /// Passing probes in a row (for the return from an ejection).
    passes: u32,
    /// Times ejected (the multiplier), and when it last decayed or was raised.
    ejections: u32,
    decay_mark: Instant,
    /// The passive counters as of the last sample.
    seen_ok: u64,
    seen_failed: u64,
    consecutive: u32,
    /// Samples of (when, good outcomes, gateway failures) over the last [`WINDOW`], oldest first,
    /// for the failure-percentage rule.
    window: VecDeque<(Instant, u64, u64)>,
    /// A first pass goes through slow start (a backend added while others already serve).
    slow_first: bool,
    reason: String,
}

impl Lifecycle {
    /// A machine for a new backend, not probed yet. `slow_first`: ramp up after the first pass.
    pub fn new(cfg: OutlierConfig, rise: u32, fall: u32, slow_first: bool, now: Instant) -> Self {
        Self {
            cfg,
            rise: rise.max(1),
            fall: fall.max(1),
            hyst: Hysteresis::new(rise, fall),
            phase: Phase::Normal,
            passes: 0,
            ejections: 0,
            decay_mark: now,
            seen_ok: 0,
            seen_failed: 0,
            consecutive: 0,
            window: VecDeque::from([(now, 0, 0)]),
            slow_first,
            reason: "not probed yet".into(),
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        match (self.hyst.health(), self.phase) {
            (Health::Unknown, _) => State::Unknown,
            (Health::Unhealthy, _) => State::Unhealthy,
            (Health::Healthy, Phase::Normal) => State::Healthy,
            (Health::Healthy, Phase::Ejected { .. }) => State::Ejected,
            (Health::Healthy, Phase::Probation { .. }) => State::Probation,
            (Health::Healthy, Phase::SlowStart { .. }) => State::SlowStart,
        }
    }

    /// Health from the probes alone.
    pub fn health(&self) -> Health {
        self.hyst.health()
    }

    /// Probe verdicts in a row toward the next flip.
    pub fn streak(&self) -> u32 {
        self.hyst.streak()
    }

    /// Why the backend is in its state.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Times ejected (decaying).
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// When the current ejection ends.
    pub fn ejected_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Ejected { until } => Some(until),
            _ => None,
        }
    }

    /// True while ejected (whatever the probes say): what the ejection cap counts.
    pub fn is_ejected(&self) -> bool {
        matches!(self.phase, Phase::Ejected { .. })
    }

    /// Slow start's progress (0.0 to 1.0) while in slow start.
    pub fn slow_start_progress(&self, now: Instant) -> Option<f64> {
        match (self.state(), self.phase) {
            (State::SlowStart, Phase::SlowStart { since }) => {
                let total = self.cfg.slow_start.as_secs_f64();
                Some(if total > 0.0 { (now.duration_since(since).as_secs_f64() / total).min(1.0) } else { 1.0 })
            }
            _ => None,
        }
    }

    /// The selection weight in tenths of the configured one: [`WEIGHT_STEPS`] at full weight,
    /// ramping linearly from 10 % during slow start (quantised so a selector is rebuilt at most
    /// ten times per ramp), the floor on probation.
    pub fn weight_steps(&self, now: Instant) -> u32 {
        match self.state() {
            State::Probation => FLOOR_STEPS,
            State::SlowStart => {
                let p = self.slow_start_progress(now).unwrap_or(1.0);
                let floor = f64::from(FLOOR_STEPS) / f64::from(WEIGHT_STEPS);
                let f = floor + (1.0 - floor) * p;
                ((f * f64::from(WEIGHT_STEPS)).floor() as u32).clamp(FLOOR_STEPS, WEIGHT_STEPS)
            }
            _ => WEIGHT_STEPS,
        }
    }

    /// True when the backend is suspect or on its way back, so it should be probed at the fast
    /// interval: a failed probe while healthy, a pass while unhealthy, a passive failure, an
    /// ejection or probation. A steadily unhealthy backend is probed at the normal interval.
    pub fn fast(&self) -> bool {
        self.consecutive > 0
            || matches!(self.phase, Phase::Ejected { .. } | Phase::Probation { .. })
            || (self.hyst.health() != Health::Unknown && self.hyst.streak() > 0)
    }

    /// Feeds one probe verdict; `detail` says what happened (`http 200`, `timeout after 1s`).
    pub fn probe(&mut self, passed: bool, detail: &str, now: Instant) -> Option<Change> {
        let before = self.state();
        self.passes = if passed { self.passes + 1 } else { 0 };
        match self.hyst.observe(passed) {
            Some(Health::Unhealthy) => {
                if !self.is_ejected() {
                    self.phase = Phase::Normal;
                }
                self.reason = if before == State::Unknown {
                    format!("health: first probe failed: {detail}")
                } else {
                    format!("health: {0} of {0} probes failed, last: {detail}", self.fall)
                };
            }
            Some(Health::Healthy) if before == State::Unknown => {
                self.reason = format!("health: first probe passed: {detail}");
                if self.slow_first {
                    self.start_slow(now, "health: first probe passed; slow start".into());
                }
            }
            Some(Health::Healthy) => {
                let words = format!("health: {0} of {0} probes passed", self.rise);
                match self.phase {
                    Phase::Ejected { until } if now < until => {
                        self.reason = format!("{words}; still ejected for {:.1?}", until - now);
                    }
                    Phase::Ejected { .. } => self.probation(format!("{words} and the ejection is over"), now),
                    _ => self.start_slow(now, words),
                }
            }
            _ => self.ready_to_return(now),
        }
        self.change(before)
    }

    /// Feeds the backend's passive counters as of now.
    pub fn passive(&mut self, s: PassiveSample, now: Instant) -> Passive {
        let ok = s.ok.saturating_sub(self.seen_ok);
        let failed = s.failed.saturating_sub(self.seen_failed);
        (self.seen_ok, self.seen_failed, self.consecutive) = (s.ok, s.failed, s.consecutive);
        if self.window.back().is_none_or(|(t, ..)| now.duration_since(*t) >= WINDOW_STEP) {
            self.window.push_back((now, s.ok, s.failed));
        }
        while self.window.front().is_some_and(|(t, ..)| now.duration_since(*t) > WINDOW) {
            self.window.pop_front();
        }
        let before = self.state();
        match before {
            State::Probation if failed > 0 => {
                let last = s.last.map_or("gateway error", GatewayFailure::describe);
                self.eject(format!("probation: its request failed: {last}"), now);
            }
            State::Probation if ok > 0 => self.start_slow(now, "probation: its request succeeded".into()),
            State::Healthy | State::SlowStart
                if self.cfg.consecutive > 0 && s.consecutive >= self.cfg.consecutive && failed > 0 =>
            {
                return Passive::WantsEjection(Self::outlier_words(s.consecutive, s.last));
            }
            State::Healthy | State::SlowStart if failed > 0 => {
                if let Some(words) = self.failure_share(s) {
                    return Passive::WantsEjection(words);
                }
            }
            _ => {}
        }
        match self.change(before) {
            Some(c) => Passive::Changed(c),
            None => Passive::Nothing,
        }
    }

    /// Ejects the backend for its next ejection time; `why` leads the reason.
    pub fn eject(&mut self, why: String, now: Instant) -> Option<Change> {
        let before = self.state();
        self.ejections = self.ejections.saturating_add(1);
        self.decay_mark = now;
        let time = self.cfg.jittered_ejection_time(self.ejections);
        self.phase = Phase::Ejected { until: now + time };
        self.passes = 0;
        self.consecutive = 0;
        // Outcomes from before the ejection say nothing about the backend when it returns.
        self.window.clear();
        self.window.push_back((now, self.seen_ok, self.seen_failed));
        self.reason = format!("{why}; ejected for {:.1}s (ejection {})", time.as_secs_f64(), self.ejections);
        self.change(before)
    }

    /// The failure-percentage rule: over the window, at least `min_requests` outcomes and at least
    /// `failure_percent` of them gateway failures.
    fn failure_share(&self, s: PassiveSample) -> Option<String> {
        let pct = u64::from(self.cfg.failure_percent);
        let (_, ok0, failed0) = *self.window.front()?;
        let (ok, failed) = (s.ok.saturating_sub(ok0), s.failed.saturating_sub(failed0));
        let total = ok + failed;
        if pct == 0 || total < u64::from(self.cfg.min_requests.max(1)) || failed * 100 < pct * total {
            return None;
        }
        let last = s.last.map_or("gateway error", GatewayFailure::describe);
        Some(format!(
            "outlier: {failed} of the last {total} requests failed ({} %, at least {pct} % ejects), last: {last}",
            failed * 100 / total
        ))
    }

    /// The words for an ejection outlier detection asked for.
    pub fn outlier_words(consecutive: u32, last: Option<GatewayFailure>) -> String {
        let last = last.map_or("gateway error", GatewayFailure::describe);
        format!("outlier: {consecutive} consecutive gateway errors, last: {last}")
    }

    /// Lets time pass: ends ejections whose time is over (once `rise` probes passed), ends
    /// probations no request decided, ends slow starts, and decays the ejection count.
    pub fn tick(&mut self, now: Instant) -> Option<Change> {
        let before = self.state();
        self.ready_to_return(now);
        // A probation waits for one real request, but not forever: traffic may not come (a quiet
        // service, or clients whose long-lived connections all went elsewhere, which new flows
        // alone reach on the eBPF data plane), and a backend left at the floor weight with its
        // probes passing is neither in nor out. Slow start then ramps it up, and outlier
        // detection still watches the first requests it gets.
        if let Phase::Probation { since } = self.phase
            && before == State::Probation
            && now.duration_since(since) >= self.cfg.base_ejection
        {
            let waited = self.cfg.base_ejection.as_secs_f64();
            self.start_slow(now, format!("probation: no request came in {waited:.1}s and its probes kept passing"));
        }
        if let Phase::SlowStart { since } = self.phase
            && now.duration_since(since) >= self.cfg.slow_start
        {
            self.phase = Phase::Normal;
            self.decay_mark = now;
            if before == State::SlowStart {
                self.reason = "slow start complete".into();
            }
        }
        if self.phase == Phase::Normal && self.ejections > 0 {
            let base = self.cfg.base_ejection.max(Duration::from_millis(1));
            if self.hyst.health() != Health::Healthy {
                self.decay_mark = now;
            } else if now.duration_since(self.decay_mark) >= base {
                self.ejections -= 1;
                self.decay_mark = now;
            }
        }
        self.change(before)
    }

    fn ready_to_return(&mut self, now: Instant) {
        if let Phase::Ejected { until } = self.phase
            && now >= until
            && self.hyst.health() == Health::Healthy
            && self.passes >= self.rise
        {
            self.probation(format!("ejection over and {} probes in a row passed", self.rise), now);
        }
    }

    fn probation(&mut self, why: String, now: Instant) {
        self.phase = Phase::Probation { since: now };
        self.consecutive = 0;
        self.window.clear();
        self.reason = format!("{why}; one request on probation");
    }

    fn start_slow(&mut self, now: Instant, why: String) {
        if self.cfg.slow_start.is_zero() {
            self.phase = Phase::Normal;
            self.decay_mark = now;
            self.reason = why;
        } else {
            self.phase = Phase::SlowStart { since: now };
            self.reason = format!("{why}; slow start over {:?}", self.cfg.slow_start);
        }
    }

    fn change(&self, before: State) -> Option<Change> {
        let to = self.state();
        (to != before).then(|| Change { from: before, to, reason: self.reason.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig { jitter: 0.0, ..OutlierConfig::default() }
    }

    fn healthy(now: Instant) -> Lifecycle {
        let mut l = Lifecycle::new(cfg(), 2, 3, false, now);
        l.probe(true, "http 200", now);
        assert_eq!(l.state(), State::Healthy);
        l
    }

    fn failures(l: &mut Lifecycle, sample: &mut PassiveSample, n: u32) -> Passive {
        sample.consecutive += n;
        sample.failed += u64::from(n);
        sample.last = Some(GatewayFailure::Http503);
        l.passive(*sample, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_gateway_failures_ask_for_ejection() {
        let t = Instant::now();
        let mut l = healthy(t);
        let mut s = PassiveSample::default();
        assert_eq!(failures(&mut l, &mut s, 4), Passive::Nothing);
        assert!(l.fast(), "a passive failure makes the backend suspect");
        s.ok += 1;
        s.consecutive = 0;
        assert_eq!(l.passive(s, t), Passive::Nothing, "a success breaks the streak");
        assert!(!l.fast());
        let want = failures(&mut l, &mut s, 5);
        assert_eq!(want, Passive::WantsEjection("outlier: 5 consecutive gateway errors, last: http 503".into()));
        let c = l.eject(Lifecycle::outlier_words(5, Some(GatewayFailure::Http503)), t).unwrap();
        assert_eq!((c.from, c.to), (State::Healthy, State::Ejected));
        assert_eq!(c.reason, "outlier: 5 consecutive gateway errors, last: http 503; ejected for 30.0s (ejection 1)");
        assert_eq!(l.weight_steps(t), WEIGHT_STEPS, "an ejected backend is not selected at all");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_share_over_the_window_asks_for_ejection() {
        let t = Instant::now();
        let mut l = healthy(t);
        // Every other request fails: never five in a row, but half of them.
        let mut s = PassiveSample::default();
        let mut asked = None;
        for i in 0..40u32 {
            if i % 2 == 0 {
                s.ok += 1;
                s.consecutive = 0;
            } else {
                s.failed += 1;
                s.consecutive = 1;
                s.last = Some(GatewayFailure::Http503);
            }
            if let Passive::WantsEjection(w) = l.passive(s, t + Duration::from_millis(100 * u64::from(i))) {
                asked = Some((i, w));
                break;
            }
        }
        let (i, words) = asked.expect("half failing is ejected");
        assert_eq!(i, 19, "as soon as the window holds 20 outcomes");
        assert_eq!(words, "outlier: 10 of the last 20 requests failed (50 %, at least 50 % ejects), last: http 503");
        // A third failing is not enough at 50 %.
        let mut l = healthy(t);
        let mut s = PassiveSample::default();
        for i in 0..300u32 {
            if i % 3 == 0 {
                s.failed += 1;
            } else {
                s.ok += 1;
            }
            let at = t + Duration::from_millis(100 * u64::from(i));
            assert_eq!(l.passive(s, at), Passive::Nothing, "request {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn passing_probes_never_end_an_ejection_early() {
        let t = Instant::now();
        let mut l = healthy(t);
        l.eject("outlier: test".into(), t);
        for i in 1..=58 {
            l.probe(true, "http 200", t + Duration::from_millis(500 * i));
            assert_eq!(l.tick(t + Duration::from_millis(500 * i)), None);
            assert_eq!(l.state(), State::Ejected, "probe {i}");
        }
        let back = l.tick(t + Duration::from_secs(30)).unwrap();
        assert_eq!((back.from, back.to), (State::Ejected, State::Probation));
        assert!(back.reason.contains("one request on probation"), "{}", back.reason);
    }

    #[tokio::test(start_paused = true)]
    async fn return_needs_rise_passes_in_a_row_after_the_time() {
        let t = Instant::now();
        let mut l = healthy(t);
        l.eject("outlier: test".into(), t);
        let after = t + Duration::from_secs(31);
        l.probe(false, "http 503", after);
        assert_eq!(l.tick(after), None, "the last probe failed");
        l.probe(true, "http 200", after);
        assert_eq!(l.state(), State::Ejected, "one pass of two");
        let c = l.probe(true, "http 200", after).unwrap();
        assert_eq!(c.to, State::Probation);
    }

    #[tokio::test(start_paused = true)]
    async fn probation_failure_ejects_longer_and_success_slow_starts() {
        let t = Instant::now();
        let mut l = healthy(t);
        let mut s = PassiveSample::default();
        l.eject("outlier: test".into(), t);
        let t1 = t + Duration::from_secs(30);
        l.probe(true, "ok", t1);
        l.probe(true, "ok", t1);
        assert_eq!(l.state(), State::Probation);
        assert_eq!(l.weight_steps(t1), 1);
        let c = match failures(&mut l, &mut s, 1) {
            Passive::Changed(c) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!((c.from, c.to), (State::Probation, State::Ejected));
        assert!(
            c.reason.starts_with("probation: its request failed: http 503; ejected for 60.0s (ejection 2)"),
            "{}",
            c.reason
        );
        let t2 = Instant::now() + Duration::from_secs(60);
        l.probe(true, "ok", t2);
        l.probe(true, "ok", t2);
        assert_eq!(l.state(), State::Probation);
        s.ok += 1;
        s.consecutive = 0;
        let c = match l.passive(s, t2) {
            Passive::Changed(c) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (c.to, c.reason.as_str()),
            (State::SlowStart, "probation: its request succeeded; slow start over 10s")
        );
        // The weight ramps from 10 % to full over 10 s, in tenths, never down.
        let steps: Vec<u32> = (0..=10).map(|i| l.weight_steps(t2 + Duration::from_secs(i))).collect();
        assert_eq!(steps, [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(l.tick(t2 + Duration::from_secs(9)), None);
        let c = l.tick(t2 + Duration::from_secs(10)).unwrap();
        assert_eq!((c.to, c.reason.as_str()), (State::Healthy, "slow start complete"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probation_no_request_decides_ends_after_the_base_ejection_time() {
        let t = Instant::now();
        let mut l = healthy(t);
        l.eject("outlier: test".into(), t);
        let t1 = t + Duration::from_secs(30);
        l.probe(true, "ok", t1);
        assert_eq!(l.probe(true, "ok", t1).unwrap().to, State::Probation);
        // Probes keep passing, no request comes.
        for i in 1..=59 {
            let at = t1 + Duration::from_millis(500 * i);
            l.probe(true, "ok", at);
            assert_eq!(l.tick(at), None, "{i}");
        }
        let c = l.tick(t1 + Duration::from_secs(30)).unwrap();
        assert_eq!(
            (c.from, c.to, c.reason.as_str()),
            (
                State::Probation,
                State::SlowStart,
                "probation: no request came in 30.0s and its probes kept passing; slow start over 10s"
            )
        );
        assert_eq!(l.weight_steps(t1 + Duration::from_secs(30)), 1, "the ramp starts at the floor");
        // A probation whose probes fail turns unhealthy, and the wait does not bring it back.
        let mut l = healthy(t);
        l.eject("outlier: test".into(), t);
        l.probe(true, "ok", t1);
        l.probe(true, "ok", t1);
        for _ in 0..3 {
            l.probe(false, "connect: refused", t1);
        }
        assert_eq!(l.state(), State::Unhealthy);
        assert_eq!(l.tick(t1 + Duration::from_secs(60)), None);
        assert_eq!(l.state(), State::Unhealthy);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ejection_count_decays_after_sustained_health() {
        let t = Instant::now();
        let mut l = healthy(t);
        l.eject("x".into(), t);
        l.probe(true, "ok", t + Duration::from_secs(30));
        l.probe(true, "ok", t + Duration::from_secs(30));
        l.passive(PassiveSample { ok: 1, ..Default::default() }, t + Duration::from_secs(30));
        assert_eq!(l.state(), State::SlowStart);
        l.tick(t + Duration::from_secs(40));
        assert_eq!((l.state(), l.ejections()), (State::Healthy, 1));
        l.tick(t + Duration::from_secs(69));
        assert_eq!(l.ejections(), 1, "not yet a base ejection time of health");
        l.tick(t + Duration::from_secs(70));
        assert_eq!(l.ejections(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn active_failure_rules_over_an_ejection() {
        let t = Instant::now();
        let mut l = healthy(t);
        l.eject("x".into(), t);
        for _ in 0..2 {
            assert_eq!(l.probe(false, "timeout after 1s", t), None);
        }
        let c = l.probe(false, "timeout after 1s", t).unwrap();
        assert_eq!((c.from, c.to), (State::Ejected, State::Unhealthy));
        assert_eq!(c.reason, "health: 3 of 3 probes failed, last: timeout after 1s");
        assert!(l.is_ejected(), "the ejection still runs");
        // Healthy again before the ejection ends: ejected; after it: probation.
        l.probe(true, "ok", t + Duration::from_secs(10));
        let c = l.probe(true, "ok", t + Duration::from_secs(10)).unwrap();
        assert_eq!(c.to, State::Ejected);
        assert!(c.reason.contains("still ejected for 20.0s"), "{}", c.reason);
        assert_eq!(l.tick(t + Duration::from_secs(30)).unwrap().to, State::Probation);
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_to_healthy_goes_through_slow_start() {
        let t = Instant::now();
        let mut l = healthy(t);
        for _ in 0..3 {
            l.probe(false, "connect: refused", t);
        }
        assert_eq!(l.state(), State::Unhealthy);
        assert!(!l.fast(), "a steadily failing backend is probed at the normal pace");
        l.probe(true, "ok", t);
        assert!(l.fast(), "on its way back");
        assert_eq!(l.probe(true, "ok", t).unwrap().to, State::SlowStart);
        let off = OutlierConfig { slow_start: Duration::ZERO, ..cfg() };
        let mut l = Lifecycle::new(off, 2, 3, false, t);
        l.probe(false, "x", t);
        l.probe(true, "ok", t);
        assert_eq!(l.probe(true, "ok", t).unwrap().to, State::Healthy, "slow start off");
    }

    #[tokio::test(start_paused = true)]
    async fn first_pass_decides_at_once_and_slow_starts_only_when_asked() {
        let t = Instant::now();
        let mut l = Lifecycle::new(cfg(), 2, 3, false, t);
        let c = l.probe(true, "http 200", t).unwrap();
        assert_eq!(
            (c.from, c.to, c.reason.as_str()),
            (State::Unknown, State::Healthy, "health: first probe passed: http 200")
        );
        let mut l = Lifecycle::new(cfg(), 2, 3, true, t);
        assert_eq!(l.probe(true, "http 200", t).unwrap().to, State::SlowStart);
        let mut l = Lifecycle::new(cfg(), 2, 3, false, t);
        assert_eq!(
            l.probe(false, "connect: refused", t).unwrap().reason,
            "health: first probe failed: connect: refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn outlier_detection_off_never_ejects() {
        let t = Instant::now();
        let off = OutlierConfig { consecutive: 0, failure_percent: 0, ..cfg() };
        let mut l = Lifecycle::new(off, 2, 3, false, t);
        l.probe(true, "ok", t);
        let mut s = PassiveSample::default();
        assert_eq!(failures(&mut l, &mut s, 1000), Passive::Nothing);
    }

    /// Exhaustive over short input sequences: whatever happens, the machine's invariants hold.
    #[tokio::test(start_paused = true)]
    async fn invariants_hold_for_every_short_sequence() {
        // Inputs: 0 probe pass, 1 probe fail, 2 passive success, 3 five passive failures (ejected
        // when asked), 4 ten seconds pass.
        const INPUTS: u32 = 5;
        const LEN: u32 = 7;
        let t0 = Instant::now();
        for code in 0..INPUTS.pow(LEN) {
            let mut l = Lifecycle::new(cfg(), 2, 3, false, t0);
            let mut s = PassiveSample::default();
            let mut now = t0;
            let mut c = code;
            for _ in 0..LEN {
                let input = c % INPUTS;
                c /= INPUTS;
                let before = (l.state(), l.ejected_until());
                match input {
                    0 => drop(l.probe(true, "ok", now)),
                    1 => drop(l.probe(false, "fail", now)),
                    2 => {
                        s.ok += 1;
                        s.consecutive = 0;
                        drop(l.passive(s, now));
                    }
                    3 => {
                        s.failed += 5;
                        s.consecutive += 5;
                        if let Passive::WantsEjection(_) = l.passive(s, now) {
                            assert!(matches!(before.0, State::Healthy | State::SlowStart), "{code}: {before:?}");
                            l.eject("x".into(), now);
                        }
                    }
                    _ => {
                        now += Duration::from_secs(10);
                        drop(l.tick(now));
                    }
                }
                let st = l.state();
                // A passing probe never ends an ejection before its time.
                if let (State::Ejected, Some(until)) = before
                    && now < until
                {
                    assert!(matches!(st, State::Ejected | State::Unhealthy), "{code}: left early to {st:?}");
                }
                // Probation and slow start only follow a healthy verdict.
                if matches!(st, State::Probation | State::SlowStart | State::Ejected) {
                    assert_eq!(l.health(), Health::Healthy, "{code}");
                }
                // The weight is full except in slow start and probation.
                let w = l.weight_steps(now);
                assert!((1..=WEIGHT_STEPS).contains(&w));
                if !matches!(st, State::SlowStart | State::Probation) {
                    assert_eq!(w, WEIGHT_STEPS, "{code}");
                }
                assert!(!l.reason().is_empty());
            }
        }
    }
}
