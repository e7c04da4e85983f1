//! Runs one scenario with one strategy: simulated backends, the agent (or two) in this process on
//! the userspace data plane, the seeded open-loop traffic, and the failure schedule; returns what
//! every request met and what every agent decided.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use edge_core::backend::State;

use super::netns::{self, Lab};
use super::peers::{Peer, Running, Settings};
use super::scenario::{Action, Keys, Scenario};
use crate::app::{self, AgentHandle};
use crate::cli::{self, Command};
use crate::config::Config;
use crate::sim::{Behaviour, SimBackend};

/// Longest wait for one client request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Most requests in flight from the generator; beyond it a request counts as failed at once
/// (the open loop must not turn into an unbounded pile of tasks).
const MAX_IN_FLIGHT: usize = 4096;

/// One client request and what it met.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Record {
    /// When it was due, seconds from the start of the traffic.
    pub at: f64,
    /// Time to the complete response (or to the failure), microseconds.
    pub latency_us: u64,
    /// When it ended, seconds from the start of the traffic (later than `at` plus the latency
    /// when the generator sent it late).
    pub done: f64,
    /// Answered 2xx.
    pub ok: bool,
    /// The status (0: no answer).
    pub status: u16,
    /// A GET (else a POST).
    pub idempotent: bool,
    /// Its key.
    pub key: u32,
    /// The backend that answered (index), if one did.
    pub backend: Option<u8>,
    /// Which agent it went through.
    pub agent: u8,
}

/// A state change an agent made, from its event log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transition {
    /// Seconds from the start of the traffic.
    pub at: f64,
    /// Which agent.
    pub agent: u8,
    /// The backend's index.
    pub backend: u8,
    /// Before.
    pub from: Option<State>,
    /// After.
    pub to: State,
    /// Why.
    pub reason: String,
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The strategy.
    pub strategy: String,
    /// The data plane.
    pub plane: &'static str,
    /// Every request, in due order.
    pub records: Vec<Record>,
    /// Requests each backend received (retries included, probes not).
    pub received: Vec<u64>,
    /// Every agent's state changes after the start of the traffic.
    pub transitions: Vec<Transition>,
}

/// The request sequence: (due time, key, idempotent), fixed by the seed.
pub fn schedule(s: &Scenario) -> Vec<(Duration, u32, bool)> {
    let mut rng = fastrand::Rng::with_seed(s.seed);
    let t = &s.traffic;
    let n = (f64::from(t.rate) * s.duration.as_secs_f64()) as u64;
    let cdf: Vec<f64> = match t.keys {
        Keys::Uniform => Vec::new(),
        Keys::Zipf => {
            let w: Vec<f64> = (1..=t.key_count).map(|k| 1.0 / f64::from(k).powf(t.zipf_exponent)).collect();
            let total: f64 = w.iter().sum();
            w.iter()
                .scan(0.0, |acc, x| {
                    *acc += x / total;
                    Some(*acc)
                })
                .collect()
        }
    };
    (0..n)
        .map(|i| {
            let due = Duration::from_secs_f64(i as f64 / f64::from(t.rate));
            let key = match t.keys {
                Keys::Uniform => rng.u32(..t.key_count),
                Keys::Zipf => {
                    let u = rng.f64();
                    u32::try_from(cdf.partition_point(|c| *c < u)).unwrap_or(0).min(t.key_count - 1)
                }
            };
            (due, key, rng.f64() < t.idempotent)
        })
        .collect()
}

/// Starts an agent in this process over `backends` with `strategy` and the scenario's settings.
async fn agent(s: &Scenario, strategy: &str, backends: &[SimBackend]) -> anyhow::Result<AgentHandle> {
    let mut argv: Vec<String> = ["edge-agent", "run", "--listen", "127.0.0.1:0", "--admin", "off"]
        .into_iter()
        .chain(["--mode", "userspace", "--strategy", strategy])
        .map(String::from)
        .collect();
    if strategy == "consistent-hash" {
        argv.extend(["--hash-key".into(), "header:x-key".into()]);
    }
    for (k, v) in &s.agent {
        argv.extend([format!("--{k}"), v.clone()]);
    }
    for b in backends {
        argv.extend(["--backend".into(), b.addr.to_string()]);
    }
    let Command::Run(args) = cli::parse_words(&argv, &crate::config::defaults())
        .map_err(|e| anyhow::anyhow!("scenario '{}': [agent] settings: {}", s.name, e.kind()))?
        .command
    else {
        anyhow::bail!("the replay's agent arguments are not a run command");
    };
    let cfg = Config::load(*args).map_err(|e| anyhow::anyhow!("scenario '{}': [agent] settings: {e}", s.name))?;
    let a = app::start(cfg).await.context("starting the agent")?;
    a.wait_ready().await;
    Ok(a)
}

/// Applies one scheduled event.
async fn apply(sims: &mut [SimBackend], scenario: &Scenario, targets: &[usize], action: Action, amount: f64) {
    for &i in targets {
        let b = &sims[i].behaviour;
        match action {
            Action::Crash => sims[i].kill(),
            Action::Hang => b.hang.store(true, Ordering::Relaxed),
            Action::Slow => b.slow_percent.store((amount * 100.0) as u64, Ordering::Relaxed),
            Action::Errors => Behaviour::set_share(&b.error_ppm, amount),
            Action::LoseProbes => Behaviour::set_share(&b.probe_loss_ppm, amount),
            Action::Recover => {
                b.hang.store(false, Ordering::Relaxed);
                b.slow_percent.store(100, Ordering::Relaxed);
                Behaviour::set_share(&b.error_ppm, scenario.backends[i].errors);
                Behaviour::set_share(&b.probe_loss_ppm, 0.0);
                // Only a crashed backend restarts; a slow or failing one keeps its connections.
                if !sims[i].is_running()
                    && let Err(e) = sims[i].restart().await
                {
                    tracing::warn!(backend = %sims[i].name, error = %e, "could not restart a simulated backend");
                }
            }
        }
    }
}

/// What a run sends its traffic through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// edge on the userspace data plane (the scenario's agents, in this process) with this
    /// strategy.
    Edge(&'a str),
    /// edge on the eBPF data plane (an agent process in a network namespace lab) with this
    /// strategy.
    Ebpf(&'a str),
    /// A peer with the equivalent of this strategy.
    Peer(Peer, &'a str),
}

impl<'a> Target<'a> {
    /// The strategy and the plane's name.
    pub fn describe(self) -> (&'a str, &'static str) {
        match self {
            Self::Edge(st) => (st, "userspace"),
            Self::Ebpf(st) => (st, "ebpf"),
            Self::Peer(p, st) => (st, p.name()),
        }
    }
}

/// What the generator needs, owned, so that it can run on a runtime of its own in another
/// network namespace.
struct Traffic {
    plan: Vec<(Duration, u32, bool)>,
    urls: Vec<String>,
    index: HashMap<String, u8>,
    keep_alive: bool,
    start: Instant,
}

/// Sends the planned requests open loop and records what each met; `progress` gets (sent,
/// failed) about once a second and at the end.
async fn generate(t: Traffic, progress: impl Fn(u64, u64)) -> anyhow::Result<Vec<Record>> {
    let mut builder = Client::builder(TokioExecutor::new());
    if !t.keep_alive {
        builder.pool_max_idle_per_host(0);
    }
    let client: Client<HttpConnector, Full<Bytes>> = builder.build_http();
    let index = Arc::new(t.index);
    let in_flight = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_report = Instant::now();
    let start = t.start;
    for (i, (due, key, idempotent)) in t.plan.iter().copied().enumerate() {
        tokio::time::sleep_until(start + due).await;
        let agent = u8::try_from(i % t.urls.len()).unwrap_or(0);
        let at = due.as_secs_f64();
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT as u64 {
            failed.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                Record { at, latency_us: 0, done: at, ok: false, status: 0, idempotent, key, backend: None, agent }
            });
            continue;
        }
        let (client, url, index, in_flight, failures_seen) =
            (client.clone(), t.urls[usize::from(agent)].clone(), index.clone(), in_flight.clone(), failed.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let t0 = Instant::now();
            let (method, body) = if idempotent { (Method::GET, Bytes::new()) } else { (Method::POST, Bytes::from_static(b"x")) };
            let req = Request::builder()
                .method(method)
                .uri(&url)
                .header("x-key", key.to_string())
                .body(Full::new(body))
                .expect("a request from fixed parts");
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let resp = client.request(req).await.ok()?;
                let status = resp.status().as_u16();
                let backend = resp.headers().get("x-backend").and_then(|v| v.to_str().ok()).and_then(|n| index.get(n).copied());
                let complete = resp.into_body().collect().await.is_ok();
                Some((status, backend, complete))
            })
            .await
            .ok()
            .flatten();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let latency_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            let (status, backend, complete) = answer.unwrap_or((0, None, false));
            let ok = complete && (200..300).contains(&status);
            if !ok && std::env::var_os("EDGE_REPLAY_DEBUG").is_some() {
                eprintln!("failed: at {at:.3} status {status} backend {backend:?} complete {complete} key {key} latency {latency_us}");
            }
            if !ok {
                failures_seen.fetch_add(1, Ordering::Relaxed);
            }
            let done = start.elapsed().as_secs_f64();
            Record { at, latency_us, done, ok, status, idempotent, key, backend, agent }
        });
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            progress(i as u64 + 1, failed.load(Ordering::Relaxed));
        }
    }
    let mut records = Vec::with_capacity(t.plan.len());
    while let Some(r) = tasks.join_next().await {
        records.push(r.context("a request task")?);
    }
    records.sort_by(|a, b| a.at.total_cmp(&b.at));
    progress(t.plan.len() as u64, failed.load(Ordering::Relaxed));
    Ok(records)
}

/// Runs the generator on a runtime of its own on a thread in the lab's client namespace, passing
/// its progress on.
async fn generate_in(lab: &Lab, t: Traffic, progress: &(dyn Fn(u64, u64) + Sync)) -> anyhow::Result<Vec<Record>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut done = lab.in_client(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the client's runtime")?;
        rt.block_on(generate(t, move |sent, failed| {
            let _ = tx.send((sent, failed));
        }))
    });
    loop {
        tokio::select! {
            Some((sent, failed)) = rx.recv() => progress(sent, failed),
            r = &mut done => {
                while let Ok((sent, failed)) = rx.try_recv() {
                    progress(sent, failed);
                }
                return r.context("the client thread")??;
            }
        }
    }
}

/// One entry of the eBPF agent's `GET /admin/events`.
#[derive(Debug, serde::Deserialize)]
struct EventJson {
    at: f64,
    backend: Option<String>,
    from: Option<String>,
    to: Option<String>,
    reason: String,
}

/// A state change as an agent reported it, before it is put on the run's clock.
struct Change {
    agent: u8,
    /// The backend's address.
    backend: String,
    /// Seconds since the Unix epoch.
    at: f64,
    from: Option<State>,
    /// `None` for a decision that changed nothing.
    to: Option<State>,
    reason: String,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn state(name: Option<&str>) -> Option<State> {
    name.and_then(|n| State::ALL.iter().copied().find(|s| s.as_str() == n))
}

/// The agent binary for the eBPF runs: this one, when it is edge-agent.
fn agent_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("finding this program")?;
    let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    anyhow::ensure!(
        name.starts_with("edge-agent"),
        "the eBPF runs start the agent binary itself; run them with `edge-agent replay` (this is {name})"
    );
    Ok(exe)
}

/// The arguments of the eBPF run's agent.
fn ebpf_args(s: &Scenario, strategy: &str) -> Vec<String> {
    let mut argv: Vec<String> = ["--mode", "ebpf", "--iface", "l0", "--cleanup", "--strategy", strategy]
        .into_iter()
        .map(String::from)
        .collect();
    argv.extend(["--vip".into(), format!("{}:{}", netns::VIP, netns::PORT)]);
    if strategy == "consistent-hash" {
        // One client address: hashing it alone would send everything to one backend.
        argv.extend(["--hash-key".into(), "five-tuple".into()]);
    }
    for (k, v) in &s.agent {
        argv.extend([format!("--{k}"), v.clone()]);
    }
    for i in 0..s.backends.len() {
        argv.extend(["--backend".into(), Lab::backend_addr(i).to_string()]);
    }
    argv
}

/// Runs `s` through `target`; `progress` gets (requests sent, failed so far) about once a second.
pub async fn run(s: &Scenario, target: Target<'_>, progress: &(dyn Fn(u64, u64) + Sync)) -> anyhow::Result<Outcome> {
    let (strategy, plane) = target.describe();
    let mut lab = match target {
        Target::Ebpf(_) => Some(tokio::task::block_in_place(|| Lab::new(s.backends.len()))?),
        _ => None,
    };
    let mut sims = Vec::new();
    for (i, b) in s.backends.iter().enumerate() {
        let behaviour = Behaviour::new(s.seed ^ (i as u64) << 32, b.concurrency as usize);
        behaviour.latency_us.store(u64::try_from(b.latency.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        behaviour.jitter_us.store(u64::try_from(b.jitter.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        Behaviour::set_share(&behaviour.error_ppm, b.errors);
        let sim = match &lab {
            Some(l) => SimBackend::start_on(&b.name, behaviour, Lab::backend_addr(i), l.bind()).await,
            None => SimBackend::start(&b.name, behaviour).await,
        };
        sims.push(sim.context("starting a simulated backend")?);
    }
    let mut agents = Vec::new();
    let mut peer = None;
    let urls: Vec<String> = match (target, lab.as_mut()) {
        (Target::Ebpf(_), Some(l)) => {
            let (exe, args) = (agent_binary()?, ebpf_args(s, strategy));
            tokio::task::block_in_place(|| l.start_agent(&exe, &args))?;
            vec![format!("http://{}:{}/", netns::VIP, netns::PORT)]
        }
        (Target::Peer(p, _), _) => {
            let addrs: Vec<std::net::SocketAddr> = sims.iter().map(|b| b.addr).collect();
            let running = Running::start(p, strategy, &addrs, &Settings::from_agent(&s.agent))?;
            // Let its first health checks pass before the traffic starts.
            tokio::time::sleep(Settings::from_agent(&s.agent).interval * 2).await;
            let url = format!("http://{}/", running.addr);
            peer = Some(running);
            vec![url]
        }
        _ => {
            for _ in 0..s.agents {
                agents.push(agent(s, strategy, &sims).await?);
            }
            agents.iter().map(|a| format!("http://{}/", a.http_addrs[0])).collect()
        }
    };
    let index: HashMap<String, u8> =
        s.backends.iter().enumerate().map(|(i, b)| (b.name.clone(), u8::try_from(i).unwrap_or(u8::MAX))).collect();
    let addr_index: HashMap<String, u8> =
        sims.iter().enumerate().map(|(i, b)| (b.addr.to_string(), u8::try_from(i).unwrap_or(u8::MAX))).collect();
    let received_before: Vec<u64> = sims.iter().map(SimBackend::served).collect();
    let start = Instant::now();
    let wall = unix(SystemTime::now());

    // The failure schedule runs beside the traffic and hands the backends back at the end.
    let events = s.events.clone();
    let scenario = s.clone();
    let failures = tokio::spawn(async move {
        for e in events {
            tokio::time::sleep_until(start + e.at).await;
            apply(&mut sims, &scenario, &e.backends, e.action, e.amount).await;
        }
        sims
    });

    let traffic = Traffic { plan: schedule(s), urls, index, keep_alive: s.traffic.keep_alive, start };
    let records = match &lab {
        Some(l) => generate_in(l, traffic, progress).await?,
        None => generate(traffic, progress).await?,
    };
    let mut sims = failures.await.context("the failure schedule")?;
    let received: Vec<u64> = sims.iter().zip(&received_before).map(|(b, before)| b.served() - before).collect();

    let mut changes: Vec<Change> = Vec::new();
    for (a, handle) in agents.iter().enumerate() {
        for e in handle.monitor.events().iter() {
            let Some(id) = &e.backend else { continue };
            let agent = u8::try_from(a).unwrap_or(0);
            let reason = e.reason.clone();
            changes.push(Change { agent, backend: id.to_string(), at: unix(e.at), from: e.from, to: e.to, reason });
        }
    }
    if let Some(l) = &lab {
        let (status, body) = tokio::task::block_in_place(|| l.admin_get("/admin/events"))?;
        anyhow::ensure!(status == 200, "the eBPF agent's /admin/events answered {status}: {body}");
        let list: Vec<EventJson> = serde_json::from_str(&body).context("reading the eBPF agent's events")?;
        for e in list {
            let Some(id) = e.backend else { continue };
            let (from, to) = (state(e.from.as_deref()), state(e.to.as_deref()));
            changes.push(Change { agent: 0, backend: id, at: e.at, from, to, reason: e.reason });
        }
    }
    let mut transitions: Vec<Transition> = changes
        .into_iter()
        .filter_map(|c| {
            let backend = *addr_index.get(&c.backend)?;
            let to = c.to?;
            (c.at >= wall).then_some(Transition {
                at: c.at - wall,
                agent: c.agent,
                backend,
                from: c.from,
                to,
                reason: c.reason,
            })
        })
        .collect();
    transitions.sort_by(|a, b| a.at.total_cmp(&b.at));
    if std::env::var_os("EDGE_REPLAY_DEBUG").is_some() {
        for t in &transitions {
            let from = t.from.map_or("-", State::as_str);
            eprintln!(
                "transition: {strategy} ({plane}) at {:.3} agent {} backend {} {from} -> {}: {}",
                t.at,
                t.agent,
                t.backend,
                t.to.as_str(),
                t.reason
            );
        }
    }
    for a in agents {
        a.shutdown().await;
    }
    if let Some(mut l) = lab.take() {
        tokio::task::block_in_place(move || {
            l.stop_agent();
            drop(l);
        });
    }
    drop(peer);
    for b in &mut sims {
        b.kill();
    }
    Ok(Outcome { strategy: strategy.to_string(), plane, records, received, transitions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_fixed_by_the_seed() {
        let text = "name = \"t\"\nduration = \"2s\"\n[traffic]\nrate = 100\nkeys = \"zipf\"\nkey-count = 100\n[[backend]]\nname = \"a\"\n";
        let s = Scenario::parse("t", text).unwrap();
        let (a, b) = (schedule(&s), schedule(&s));
        assert_eq!(a, b);
        assert_eq!(a.len(), 200);
        assert_eq!(a[1].0, Duration::from_millis(10), "open loop at the rate");
        // Zipf: key 0 is the most frequent by far.
        let zeros = a.iter().filter(|r| r.1 == 0).count();
        let fifties = a.iter().filter(|r| r.1 == 50).count();
        assert!(zeros > 20 && fifties < 5, "{zeros} {fifties}");
        let other = Scenario { seed: 9, ..s };
        assert_ne!(schedule(&other), a, "another seed, another sequence");
    }
}
