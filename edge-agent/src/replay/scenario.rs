//! Replay scenarios: what a TOML scenario file says, checked. A scenario names its backends and
//! how they behave, the traffic (open-loop rate, duration, keep-alive, idempotent share, key
//! distribution), a failure schedule, and agent settings (any `edge-agent run` flag, checked by
//! the same configuration code). Errors name the key and the fix.
//!
//! ```toml
//! name = "crash"
//! lesson = "one of three backends dies and comes back"
//! duration = "12s"
//! seed = 1
//! agents = 1                        # 2: two agents in front of the same backends
//! l4 = false                        # true: the lesson holds at L4; run it on the eBPF plane too
//! strategies = ["round-robin", "least-connections", "consistent-hash"]
//! [traffic]
//! rate = 400                        # requests per second, open loop
//! keep-alive = true
//! idempotent = 1.0                  # share of GETs; the rest are POSTs with a small body
//! keys = "uniform"                  # or "zipf" (with zipf-exponent); the x-key header
//! key-count = 1000
//! [agent]                           # edge-agent run flags, without the dashes
//! health-interval = "250ms"
//! [[backend]]
//! name = "a"
//! latency = "2ms"                   # base; plus an exponential jitter with mean `jitter`
//! jitter = "1ms"
//! errors = 0.0                      # share answered 503
//! concurrency = 64                  # beyond it, requests queue (0: no limit)
//! [[event]]
//! at = "4s"                         # from the start of the traffic
//! backend = "b"
//! action = "crash"                  # crash, hang, slow (factor), errors (rate), lose-probes (rate), recover
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::values::{Dur, deserialize_from_str as one};

/// The most backends a scenario may have.
const MAX_BACKENDS: usize = 32;

/// A key distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keys {
    /// Every key equally likely.
    Uniform,
    /// Zipf-skewed: a few keys carry most requests.
    Zipf,
}

/// What happens at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Listener and connections closed, like a crashed task.
    Crash,
    /// Accepts and never answers (probes included).
    Hang,
    /// Latency multiplied by `factor`.
    Slow,
    /// A share `rate` of requests answered 503 (probes still pass).
    Errors,
    /// A share `rate` of probes answered 503.
    LoseProbes,
    /// Back to the behaviour the scenario gave it (restarted if crashed).
    Recover,
}

impl Action {
    /// True for the actions that break something (not `recover`).
    pub fn is_failure(self) -> bool {
        self != Self::Recover
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    name: Option<String>,
    lesson: Option<String>,
    #[serde(default, deserialize_with = "one")]
    duration: Option<Dur<1000>>,
    seed: Option<u64>,
    agents: Option<u8>,
    l4: Option<bool>,
    strategies: Option<Vec<String>>,
    traffic: Option<TrafficFile>,
    #[serde(default)]
    agent: BTreeMap<String, toml::Value>,
    #[serde(default)]
    backend: Vec<BackendFile>,
    #[serde(default)]
    event: Vec<EventFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TrafficFile {
    rate: Option<u32>,
    keep_alive: Option<bool>,
    idempotent: Option<f64>,
    keys: Option<Keys>,
    key_count: Option<u32>,
    zipf_exponent: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BackendFile {
    name: String,
    #[serde(default, deserialize_with = "one")]
    latency: Option<Dur<0>>,
    #[serde(default, deserialize_with = "one")]
    jitter: Option<Dur<0>>,
    errors: Option<f64>,
    concurrency: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EventFile {
    #[serde(default, deserialize_with = "one")]
    at: Option<Dur<0>>,
    backend: Option<String>,
    action: Action,
    factor: Option<f64>,
    rate: Option<f64>,
}

/// The traffic of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Requests per second, open loop.
    pub rate: u32,
    /// Keep-alive connections (else one new connection per request).
    pub keep_alive: bool,
    /// Share of idempotent requests (GET); the rest are POSTs.
    pub idempotent: f64,
    /// Key distribution.
    pub keys: Keys,
    /// Distinct keys.
    pub key_count: u32,
    /// Zipf exponent.
    pub zipf_exponent: f64,
}

/// One simulated backend.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSim {
    /// Its name (events refer to it).
    pub name: String,
    /// Base latency.
    pub latency: Duration,
    /// Mean exponential jitter.
    pub jitter: Duration,
    /// Share answered 503.
    pub errors: f64,
    /// Requests at once before queueing (0: no limit).
    pub concurrency: u32,
}

/// One scheduled change.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When, from the start of the traffic.
    pub at: Duration,
    /// Which backends (all when the event names none).
    pub backends: Vec<usize>,
    /// What.
    pub action: Action,
    /// `slow`'s factor, or the share of `errors` and `lose-probes`.
    pub amount: f64,
}

/// A checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// The one lesson it shows.
    pub lesson: String,
    /// How long the traffic runs.
    pub duration: Duration,
    /// The seed of the request sequence and keys.
    pub seed: u64,
    /// Agents in front of the same backends (1 or 2).
    pub agents: u8,
    /// The lesson holds at L4 (no HTTP retries, keys or status codes needed), so the scenario
    /// runs on the eBPF data plane too.
    pub l4: bool,
    /// Strategies to run, as `--strategy` names.
    pub strategies: Vec<String>,
    /// Traffic.
    pub traffic: Traffic,
    /// `edge-agent run` flags (without the dashes) and values.
    pub agent: Vec<(String, String)>,
    /// Backends.
    pub backends: Vec<BackendSim>,
    /// Failure schedule, in time order.
    pub events: Vec<Event>,
}

/// Why a scenario is not valid: the key and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ScenarioError(String);

fn err(msg: impl Into<String>) -> ScenarioError {
    ScenarioError(msg.into())
}

const STRATEGIES: [&str; 3] = ["round-robin", "least-connections", "consistent-hash"];

impl Scenario {
    /// Parses and checks a scenario's text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ScenarioError> {
        let de = toml::Deserializer::parse(text).map_err(|e| err(format!("{origin}: not TOML: {}", e.message())))?;
        let f: File = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            err(format!("{origin}: key '{key}': {}", e.into_inner().message()))
        })?;
        Self::check(origin, f)
    }

    fn check(origin: &str, f: File) -> Result<Self, ScenarioError> {
        let at = |key: &str, fix: &str| err(format!("{origin}: key '{key}': {fix}"));
        let name = f.name.ok_or_else(|| at("name", "missing; name the scenario, for example name = \"crash\""))?;
        let duration = f.duration.map_or(Duration::from_secs(10), |d| d.0);
        if duration > Duration::from_secs(600) {
            return Err(at("duration", "at most 10m; replays are meant to be short"));
        }
        let agents = f.agents.unwrap_or(1);
        if !(1..=2).contains(&agents) {
            return Err(at("agents", "use 1, or 2 for two agents in front of the same backends"));
        }
        let l4 = f.l4.unwrap_or(false);
        if l4 && agents > 1 {
            return Err(at("l4", "the eBPF runs put one agent in front of the backends; set agents = 1 or l4 = false"));
        }
        let strategies = f.strategies.unwrap_or_else(|| STRATEGIES.map(String::from).to_vec());
        if strategies.is_empty() {
            return Err(at("strategies", "list at least one of round-robin, least-connections, consistent-hash"));
        }
        if let Some(s) = strategies.iter().find(|s| !STRATEGIES.contains(&s.as_str())) {
            return Err(at(
                "strategies",
                &format!("unknown strategy '{s}'; use round-robin, least-connections or consistent-hash"),
            ));
        }
        let t = f.traffic.unwrap_or(TrafficFile {
            rate: None,
            keep_alive: None,
            idempotent: None,
            keys: None,
            key_count: None,
            zipf_exponent: None,
        });
        let traffic = Traffic {
            rate: t.rate.unwrap_or(200),
            keep_alive: t.keep_alive.unwrap_or(true),
            idempotent: t.idempotent.unwrap_or(1.0),
            keys: t.keys.unwrap_or(Keys::Uniform),
            key_count: t.key_count.unwrap_or(1000),
            zipf_exponent: t.zipf_exponent.unwrap_or(1.1),
        };
        if !(1..=20_000).contains(&traffic.rate) {
            return Err(at("traffic.rate", "give requests per second from 1 to 20000"));
        }
        if !(0.0..=1.0).contains(&traffic.idempotent) {
            return Err(at("traffic.idempotent", "give a share from 0.0 to 1.0"));
        }
        if traffic.key_count == 0 {
            return Err(at("traffic.key-count", "give at least 1 key"));
        }
        if !(traffic.zipf_exponent > 0.0 && traffic.zipf_exponent <= 5.0) {
            return Err(at("traffic.zipf-exponent", "give an exponent above 0 and at most 5, for example 1.1"));
        }
        let mut agent = Vec::new();
        for (k, v) in f.agent {
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => if b { "on" } else { "off" }.to_string(),
                _ => return Err(at(&format!("agent.{k}"), "give a string, a number or a boolean, as for the flag")),
            };
            if ["listen", "listen-tcp", "backend", "backends-file", "strategy", "hash-key", "admin", "config", "mode"]
                .contains(&k.as_str())
            {
                return Err(at(&format!("agent.{k}"), "the replay sets this itself; remove it"));
            }
            agent.push((k, value));
        }
        if f.backend.is_empty() || f.backend.len() > MAX_BACKENDS {
            return Err(at("backend", &format!("give 1 to {MAX_BACKENDS} [[backend]] tables, each with a name")));
        }
        let mut backends: Vec<BackendSim> = Vec::new();
        for (i, b) in f.backend.into_iter().enumerate() {
            let key = |k: &str| format!("backend[{i}].{k}");
            if b.name.is_empty() || backends.iter().any(|x| x.name == b.name) {
                return Err(at(&key("name"), "give each backend its own, non-empty name"));
            }
            let errors = b.errors.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&errors) {
                return Err(at(&key("errors"), "give a share from 0.0 to 1.0"));
            }
            backends.push(BackendSim {
                name: b.name,
                latency: b.latency.map_or(Duration::from_millis(1), |d| d.0),
                jitter: b.jitter.map_or(Duration::ZERO, |d| d.0),
                errors,
                concurrency: b.concurrency.unwrap_or(0),
            });
        }
        let mut events = Vec::new();
        for (i, e) in f.event.into_iter().enumerate() {
            let key = |k: &str| format!("event[{i}].{k}");
            let Some(when) = e.at else { return Err(at(&key("at"), "missing; give a time such as \"4s\"")) };
            if when.0 >= duration {
                return Err(at(&key("at"), "must fall within the scenario's duration"));
            }
            let targets = match &e.backend {
                None => (0..backends.len()).collect(),
                Some(n) => match backends.iter().position(|b| &b.name == n) {
                    Some(p) => vec![p],
                    None => {
                        return Err(at(
                            &key("backend"),
                            &format!("no backend named '{n}'; name one of the [[backend]] tables"),
                        ));
                    }
                },
            };
            let amount = match e.action {
                Action::Slow => match e.factor {
                    Some(f) if (1.0..=1000.0).contains(&f) => f,
                    _ => return Err(at(&key("factor"), "a slow event needs factor = N, from 1 to 1000")),
                },
                Action::Errors | Action::LoseProbes => match e.rate {
                    Some(r) if (0.0..=1.0).contains(&r) => r,
                    _ => return Err(at(&key("rate"), "this event needs rate = a share from 0.0 to 1.0")),
                },
                _ => 0.0,
            };
            events.push(Event { at: when.0, backends: targets, action: e.action, amount });
        }
        events.sort_by_key(|e| e.at);
        Ok(Self {
            name,
            lesson: f.lesson.unwrap_or_default(),
            duration,
            seed: f.seed.unwrap_or(1),
            agents,
            l4,
            strategies,
            traffic,
            agent,
            backends,
            events,
        })
    }

    /// The same scenario compressed to `duration`: event times scale with it.
    pub fn scaled(&self, duration: Duration) -> Self {
        let f = duration.as_secs_f64() / self.duration.as_secs_f64();
        let mut s = self.clone();
        s.duration = duration;
        for e in &mut s.events {
            e.at = e.at.mul_f64(f);
        }
        s
    }

    /// The first failure and the recovery after it, if the schedule has them.
    pub fn failure_window(&self) -> (Option<Duration>, Option<Duration>) {
        let fail = self.events.iter().find(|e| e.action.is_failure()).map(|e| e.at);
        let recover = self.events.iter().find(|e| e.action == Action::Recover && fail.is_some_and(|f| e.at > f));
        (fail, recover.map(|e| e.at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "name = \"t\"\nduration = \"10s\"\n[[backend]]\nname = \"a\"\n[[backend]]\nname = \"b\"\n";

    /// A valid scenario with `top` among its top-level keys and `tables` after its backends.
    fn with(top: &str, tables: &str) -> String {
        format!(
            "name = \"t\"\nduration = \"10s\"\n{top}\n[[backend]]\nname = \"a\"\n[[backend]]\nname = \"b\"\n{tables}"
        )
    }

    #[test]
    fn a_scenario_parses_with_defaults() {
        let s = Scenario::parse("t.toml", &format!("{OK}[[event]]\nat = \"4s\"\nbackend = \"b\"\naction = \"crash\"\n[[event]]\nat = \"2s\"\naction = \"slow\"\nfactor = 10\n")).unwrap();
        assert_eq!((s.traffic.rate, s.agents, s.strategies.len(), s.l4), (200, 1, 3, false));
        assert_eq!(s.events[0].action, Action::Slow, "in time order");
        assert_eq!(s.events[0].backends, [0, 1], "no backend: all");
        assert_eq!(s.events[1].backends, [1]);
        assert_eq!(s.failure_window(), (Some(Duration::from_secs(2)), None));
        let short = s.scaled(Duration::from_secs(5));
        assert_eq!((short.events[0].at, short.events[1].at), (Duration::from_secs(1), Duration::from_secs(2)));
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            ("duration = \"10s\"\n[[backend]]\nname = \"a\"\n", "key 'name': missing"),
            (&with("colour = 1", "") as &str, "key 'colour': unknown field `colour`"),
            (&with("strategies = [\"random\"]", ""), "key 'strategies': unknown strategy 'random'"),
            (&with("agents = 2\nl4 = true", ""), "key 'l4': the eBPF runs put one agent in front"),
            (&with("l4 = \"yes\"", ""), "key 'l4': invalid type"),
            (&with("", "[traffic]\nrate = 0\n"), "key 'traffic.rate': give requests per second"),
            (&with("", "[traffic]\nkeys = \"pareto\"\n"), "key 'traffic.keys'"),
            (
                &format!("{OK}[[event]]\nat = \"4s\"\nbackend = \"z\"\naction = \"crash\"\n"),
                "key 'event[0].backend': no backend named 'z'",
            ),
            (&format!("{OK}[[event]]\nat = \"40s\"\naction = \"crash\"\n"), "key 'event[0].at': must fall within"),
            (
                &format!("{OK}[[event]]\nat = \"4s\"\naction = \"slow\"\n"),
                "key 'event[0].factor': a slow event needs factor",
            ),
            (&format!("{OK}[[event]]\nat = \"4s\"\naction = \"explode\"\n"), "key 'event[0].action'"),
            (&with("", "[agent]\nstrategy = \"round-robin\"\n"), "key 'agent.strategy': the replay sets this itself"),
            (&with("agents = 3", ""), "key 'agents': use 1, or 2"),
            ("name = \"t\"\n", "key 'backend': give 1 to 32"),
            ("name = \"t\"\n[[backend]]\nname = \"a\"\n[[backend]]\nname = \"a\"\n", "key 'backend[1].name'"),
            ("name = ", "t.toml: not TOML"),
        ];
        for (text, want) in cases {
            let e = Scenario::parse("t.toml", text).unwrap_err().to_string();
            assert!(e.starts_with("t.toml: "), "{e}");
            assert!(e.contains(want), "expected {want:?} in {e:?}");
            assert!(!e.ends_with('.'), "{e}");
        }
    }
}
