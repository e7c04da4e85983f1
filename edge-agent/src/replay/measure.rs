//! What a run's records say: success rates, latency percentiles, detection and recovery, flaps,
//! retry amplification, load shares, and for consistent hashing the keys remapped on a failure
//! and moved back after it, and, with two agents, whether they agree.

use std::collections::HashMap;

use edge_core::backend::State;
use serde::Serialize;

use super::engine::{Outcome, Record, Transition};
use super::scenario::{Action, Scenario};

/// Width of a timeline bucket, seconds.
pub const BUCKET: f64 = 0.25;

/// Margin after a detection or a recovery before a window counts as settled, seconds.
const SETTLE: f64 = 0.5;

/// For a peer, whose state is not observed: when its failure window is taken to start, seconds
/// after the failure.
const PEER_DETECTION: f64 = 1.5;

/// For a peer: when its recovery window is taken to start, seconds after the recovery.
const PEER_RECOVERY: f64 = 3.0;

/// Figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Strategy.
    pub strategy: String,
    /// Data plane.
    pub plane: String,
    /// Client requests.
    pub requests: u64,
    /// Share of idempotent requests answered 2xx.
    pub success_idempotent: Option<f64>,
    /// Share of other requests answered 2xx.
    pub success_other: Option<f64>,
    /// Latency percentiles of every request, milliseconds.
    pub p50_ms: f64,
    /// p99.
    pub p99_ms: f64,
    /// p99.9.
    pub p999_ms: f64,
    /// From the first failure to the first agent taking a broken backend out, seconds.
    pub detection_s: Option<f64>,
    /// Requests that failed between the failure and its detection: those in flight when it struck
    /// and those sent before it was detected.
    pub failed_before_detection: u64,
    /// From the recovery to the backend healthy again, seconds.
    pub recovery_s: Option<f64>,
    /// Times a backend left a usable state more than once per failure aimed at it (edge only: a
    /// peer's state is not observed).
    pub flaps: Option<u64>,
    /// Attempts that reached the backends per client request.
    pub amplification: f64,
    /// Each backend's share of the attempts.
    pub shares: Vec<f64>,
    /// The largest share over the mean share.
    pub max_over_mean: f64,
    /// Consistent hashing: share of keys on another backend during the failure than before it.
    pub remapped: Option<f64>,
    /// The ideal remapped share: the broken backends' share of the backends (1/N for one).
    pub remapped_ideal: Option<f64>,
    /// The share of those keys that were on a broken backend before (what had to move); the rest
    /// of `remapped` is the strategy's own disruption.
    pub remapped_lost: Option<f64>,
    /// Consistent hashing: of the remapped keys, the share back on their first backend after.
    pub moved_back: Option<f64>,
    /// Two agents: share of keys both sent to the same backend, before, during and after.
    pub agents_agree: Option<[Option<f64>; 3]>,
    /// Per bucket: requests due, and those that failed.
    pub timeline: Vec<(u32, u32)>,
}

fn share(n: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn out_of_service(s: State) -> bool {
    matches!(s, State::Unhealthy | State::Ejected)
}

/// Works out a run's figures.
pub fn figures(s: &Scenario, o: &Outcome) -> Figures {
    let r = &o.records;
    let count = |f: &dyn Fn(&Record) -> bool| r.iter().filter(|x| f(x)).count();
    let idem = count(&|x| x.idempotent);
    let mut lat: Vec<u64> = r.iter().map(|x| x.latency_us).collect();
    lat.sort_unstable();
    let (fail_at, recover_at) = s.failure_window();
    let fail_at = fail_at.map(|d| d.as_secs_f64());
    let recover_at = recover_at.map(|d| d.as_secs_f64());
    // Backends the schedule breaks (lose-probes does not break traffic).
    let broken: Vec<u8> = s
        .events
        .iter()
        .filter(|e| e.action.is_failure() && e.action != Action::LoseProbes)
        .flat_map(|e| e.backends.iter().map(|b| *b as u8))
        .collect();
    // Only edge's own planes expose their state changes; a peer's are not observed.
    let observed = matches!(o.plane, "userspace" | "ebpf");
    let first_out = |t: &Transition| broken.contains(&t.backend) && out_of_service(t.to);
    let detection = fail_at.and_then(|f| o.transitions.iter().find(|t| t.at >= f && first_out(t)).map(|t| t.at - f));
    // A request due just before the failure but still in flight when it struck counts too.
    let ended = |x: &Record| x.done;
    let failed_before_detection = match (fail_at, detection) {
        (Some(f), Some(d)) => count(&|x| !x.ok && ended(x) >= f && x.at < f + d) as u64,
        (Some(f), None) => count(&|x| !x.ok && ended(x) >= f) as u64,
        _ => 0,
    };
    let recovery = recover_at.and_then(|rec| {
        o.transitions
            .iter()
            .find(|t| t.at >= rec && broken.contains(&t.backend) && t.to == State::Healthy)
            .map(|t| t.at - rec)
    });
    // Flaps: leaving a usable state, per agent and backend, beyond one per failure aimed at it.
    let mut leaves: HashMap<(u8, u8), u64> = HashMap::new();
    for t in &o.transitions {
        if out_of_service(t.to) && t.from.is_some_and(State::usable) {
            *leaves.entry((t.agent, t.backend)).or_default() += 1;
        }
    }
    let allowed = |b: u8| {
        s.events
            .iter()
            .filter(|e| e.action.is_failure() && e.action != Action::LoseProbes && e.backends.contains(&(b as usize)))
            .count() as u64
    };
    let flaps = observed.then(|| leaves.iter().map(|((_, b), n)| n.saturating_sub(allowed(*b))).sum());
    let total: u64 = o.received.iter().sum();
    let shares: Vec<f64> = o.received.iter().map(|n| if total > 0 { *n as f64 / total as f64 } else { 0.0 }).collect();
    let mean = 1.0 / shares.len().max(1) as f64;
    let max_over_mean = shares.iter().copied().fold(0.0, f64::max) / mean;

    // Consistent hashing: where each key went in each window. A window starts once every agent
    // has seen the change: each probes on its own clock, and until the last has seen it, two
    // agents disagree by design (on a loaded host the last one came more than `SETTLE` after the
    // first).
    // A peer's state is not observed: its windows start a fixed time after the failure and the
    // recovery instead (longer than any of the peers' checks in the built-in scenarios take).
    let mut agents: Vec<u8> = o.transitions.iter().map(|t| t.agent).collect();
    agents.sort_unstable();
    agents.dedup();
    let every_agent = |from: f64, seen: &dyn Fn(&Transition) -> bool| -> Option<f64> {
        let mut when = agents.iter().map(|a| o.transitions.iter().find(|t| t.agent == *a && t.at >= from && seen(t)));
        when.try_fold(None, |latest: Option<f64>, t| t.map(|t| Some(latest.map_or(t.at, |l| l.max(t.at)))))?
    };
    let all_out = fail_at.and_then(|f| every_agent(f, &first_out)).zip(fail_at).map(|(t, f)| t - f);
    let all_back = recover_at
        .and_then(|r| every_agent(r, &|t| broken.contains(&t.backend) && t.to == State::Healthy))
        .zip(recover_at)
        .map(|(t, r)| t - r);
    let settled_failure =
        fail_at.and_then(|f| all_out.or((!observed).then_some(PEER_DETECTION)).map(|d| f + d + SETTLE));
    let settled_recovery =
        recover_at.and_then(|r| all_back.or((!observed).then_some(PEER_RECOVERY)).map(|d| r + d + SETTLE));
    let window = |x: &Record| -> Option<usize> {
        match (fail_at, settled_failure, recover_at, settled_recovery) {
            (Some(f), _, _, _) if x.at < f => Some(0),
            (_, Some(sf), rec, _) if x.at >= sf && rec.is_none_or(|r| x.at < r) => Some(1),
            (_, _, _, Some(sr)) if x.at >= sr => Some(2),
            (None, ..) => Some(0),
            _ => None,
        }
    };
    let mut place: [HashMap<(u8, u32), u8>; 3] = Default::default();
    for x in r {
        if let (Some(w), Some(b)) = (window(x), x.backend) {
            place[w].insert((x.agent, x.key), b);
        }
    }
    let (remapped, remapped_ideal, remapped_lost, moved_back) =
        // On the eBPF data plane the hash is over the connection's addresses, not the key, so
        // where a key went says nothing about the table.
        if o.strategy == "consistent-hash" && o.plane != "ebpf" && settled_failure.is_some() {
            let both: Vec<(&(u8, u32), &u8, &u8)> =
                place[0].iter().filter_map(|(k, b0)| place[1].get(k).map(|b1| (k, b0, b1))).collect();
            let moved: Vec<&(u8, u32)> = both.iter().filter(|(_, b0, b1)| b0 != b1).map(|(k, ..)| *k).collect();
            let back = moved.iter().filter_map(|k| place[2].get(k).map(|b2| b2 == &place[0][k])).collect::<Vec<_>>();
            let mut uniq = broken.clone();
            uniq.sort_unstable();
            uniq.dedup();
            let lost = both.iter().filter(|(_, b0, _)| uniq.contains(b0)).count();
            (
                share(moved.len(), both.len()),
                Some(uniq.len() as f64 / s.backends.len() as f64),
                share(lost, both.len()),
                share(back.iter().filter(|b| **b).count(), back.len()),
            )
        } else {
            (None, None, None, None)
        };
    let agents_agree = (s.agents == 2).then(|| {
        let agree = |w: usize| {
            let pairs: Vec<bool> = place[w]
                .iter()
                .filter(|((a, _), _)| *a == 0)
                .filter_map(|((_, k), b)| place[w].get(&(1, *k)).map(|b1| b1 == b))
                .collect();
            share(pairs.iter().filter(|x| **x).count(), pairs.len())
        };
        [agree(0), agree(1), agree(2)]
    });
    let buckets = (s.duration.as_secs_f64() / BUCKET).ceil() as usize;
    let mut timeline = vec![(0u32, 0u32); buckets.max(1)];
    for x in r {
        let i = ((x.at / BUCKET) as usize).min(timeline.len() - 1);
        timeline[i].0 += 1;
        if !x.ok {
            timeline[i].1 += 1;
        }
    }
    Figures {
        strategy: o.strategy.clone(),
        plane: o.plane.to_string(),
        requests: r.len() as u64,
        success_idempotent: share(count(&|x| x.idempotent && x.ok), idem),
        success_other: share(count(&|x| !x.idempotent && x.ok), r.len() - idem),
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        p999_ms: percentile(&lat, 0.999),
        detection_s: detection,
        failed_before_detection,
        recovery_s: recovery,
        flaps,
        amplification: if r.is_empty() { 0.0 } else { total as f64 / r.len() as f64 },
        shares,
        max_over_mean,
        remapped,
        remapped_ideal,
        remapped_lost,
        moved_back,
        agents_agree,
        timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(at: f64, ok: bool, key: u32, backend: u8, agent: u8) -> Record {
        Record {
            at,
            latency_us: 1000,
            done: at + 0.001,
            ok,
            status: if ok { 200 } else { 502 },
            idempotent: true,
            key,
            backend: Some(backend),
            agent,
        }
    }

    #[test]
    fn detection_recovery_remapping_and_agreement() {
        let text = "name = \"t\"\nduration = \"10s\"\nagents = 2\n[[backend]]\nname = \"a\"\n[[backend]]\nname = \"b\"\n\
                    [[event]]\nat = \"2s\"\nbackend = \"b\"\naction = \"crash\"\n[[event]]\nat = \"5s\"\nbackend = \"b\"\naction = \"recover\"\n";
        let s = Scenario::parse("t", text).unwrap();
        let t = |at: f64, agent: u8, from: State, to: State| Transition {
            at,
            agent,
            backend: 1,
            from: Some(from),
            to,
            reason: String::new(),
        };
        let mut records = Vec::new();
        for key in 0..10u32 {
            let home = (key % 2) as u8;
            records.push(rec(1.0, true, key, home, 0));
            records.push(rec(1.0, true, key, home, 1));
            records.push(rec(3.5, true, key, 0, 0)); // during: everything on a
            records.push(rec(3.5, true, key, u8::from(key == 3), 1)); // agent 1 agrees but for key 3
            records.push(rec(8.0, true, key, home, 0));
            records.push(rec(8.0, true, key, home, 1));
        }
        // Agent 1 has not seen the recovery yet at 6.7 s (it does at 6.3 + SETTLE): not "after".
        records.push(rec(6.7, true, 20, 1, 1));
        records.push(rec(8.0, true, 20, 0, 0));
        records.push(rec(2.1, false, 1, 1, 0));
        // In flight when the failure struck at 2 s: counted. Failed and over before it: not.
        records.push(Record { latency_us: 50_000, done: 2.04, ..rec(1.99, false, 100, 1, 0) });
        records.push(rec(1.5, false, 101, 1, 0));
        let o = Outcome {
            strategy: "consistent-hash".into(),
            plane: "userspace",
            records,
            received: vec![30, 10],
            transitions: vec![
                t(2.4, 0, State::Healthy, State::Ejected),
                t(2.6, 1, State::Healthy, State::Ejected),
                t(6.0, 0, State::Probation, State::Healthy),
                t(6.3, 1, State::Probation, State::Healthy),
            ],
        };
        let f = figures(&s, &o);
        assert!((f.detection_s.unwrap() - 0.4).abs() < 1e-9);
        assert_eq!(f.failed_before_detection, 2);
        assert!((f.recovery_s.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(f.flaps, Some(0));
        assert_eq!(f.remapped, Some(0.45), "b's keys moved, but key 3 on agent 1");
        assert_eq!(f.remapped_ideal, Some(0.5));
        assert_eq!(f.remapped_lost, Some(0.5), "exactly the keys that were on b");
        assert_eq!(f.moved_back, Some(1.0));
        let agree = f.agents_agree.unwrap();
        assert_eq!(agree[0], Some(1.0));
        assert!(agree[1].unwrap() < 1.0);
        assert_eq!(agree[2], Some(1.0), "the window after the recovery starts once the last agent saw it");
        assert!((f.max_over_mean - 1.5).abs() < 1e-9);
        assert!((f.amplification - 40.0 / 65.0).abs() < 1e-9);
    }
}
