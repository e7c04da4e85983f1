//! `edge-agent demo` (and `cargo xtask demo`): the main job on an embedded default.
//!
//! Three in-process HTTP backends, the agent in front of them with fast health checks, and paced
//! client traffic. Partway through, one backend is killed (listener and connections closed, like a
//! crashed task); the table shows the agent detect it and route around it, then the backend comes
//! back and rejoins after `rise` passing probes. It ends with a summary. Nothing else is needed:
//! no root, no network beyond loopback, no other program.

mod render;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use edge_core::backend::State;
use edge_proxy::RetryReason;

use crate::app;
use crate::cli::{self, Command, DemoArgs};
use crate::config::Config;
use crate::sim::{Behaviour, SimBackend};
use crate::values::LogFormat;
use render::{Frame, Row, Screen};

/// Requests per second the demo clients send in total.
const RATE: u64 = 2000;

/// Runs the demo.
pub fn main(args: DemoArgs) -> anyhow::Result<()> {
    crate::logging::init(LogFormat::Text, "warn");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let live = !args.plain && std::io::stdout().is_terminal();
    rt.block_on(run(args.duration.0, args.concurrency.get(), live))
}

#[derive(Default)]
struct Tally {
    per_backend: HashMap<String, AtomicU64>,
    errors: AtomicU64,
    done: AtomicU64,
}

async fn run(total: Duration, concurrency: usize, live: bool) -> anyhow::Result<()> {
    let mut backends = Vec::new();
    for i in 1..=3 {
        backends.push(
            SimBackend::start(&format!("backend-{i}"), Behaviour::new(i, 0))
                .await
                .context("starting a demo backend on 127.0.0.1")?,
        );
    }
    // The agent as an operator would start it.
    let mut argv: Vec<String> = ["edge-agent", "run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        .into_iter()
        .chain(["--health-path", "/healthz", "--health-interval", "250ms", "--health-timeout", "200ms"])
        // Short ejections and slow start, so the return (probation, then slow start) fits the run.
        .chain(["--health-fast-interval", "100ms", "--outlier-base-ejection", "1s", "--slow-start", "1s"])
        .map(String::from)
        .collect();
    for b in &backends {
        argv.extend(["--backend".to_string(), b.addr.to_string()]);
    }
    let Command::Run(args) = cli::parse_words(argv, &crate::config::defaults())?.command else {
        anyhow::bail!("the demo's agent arguments are not a run command")
    };
    let cfg = Config::load(*args)?;
    let (rise, fall, interval) = (cfg.health.rise, cfg.health.fall, cfg.health.interval);
    let agent = app::start(cfg).await?;
    agent.wait_ready().await;
    let url: hyper::Uri = format!("http://{}/", agent.http_addrs[0]).parse()?;
    let names: HashMap<String, String> = backends.iter().map(|b| (b.addr.to_string(), b.name.clone())).collect();
    let tally = Arc::new(Tally {
        per_backend: backends.iter().map(|b| (b.name.clone(), AtomicU64::new(0))).collect(),
        ..Default::default()
    });

    let title = format!(
        "edge demo: 3 backends behind http://{}  strategy {}  health every {:?}, rise {rise}, fall {fall}\ndata plane: {} ({})  admin: http://{}/admin/backends",
        agent.http_addrs[0],
        agent.balancer.strategy().kind,
        interval,
        agent.dataplane.mode.as_str(),
        agent.dataplane.reason,
        agent.admin_addr.map(|a| a.to_string()).unwrap_or_default(),
    );

    // Paced, bounded client load: `concurrency` workers, RATE requests per second in total.
    let start = Instant::now();
    let deadline = start + total;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
        let period = Duration::from_secs_f64(concurrency as f64 / RATE as f64);
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while Instant::now() < deadline {
                tick.tick().await;
                let t0 = Instant::now();
                let ok = match tokio::time::timeout(Duration::from_secs(2), client.get(url.clone())).await {
                    Ok(Ok(resp)) if resp.status().is_success() => {
                        let name = resp.headers().get("x-backend").and_then(|v| v.to_str().ok()).map(str::to_string);
                        let body_ok = resp.into_body().collect().await.is_ok();
                        match (name, body_ok) {
                            (Some(n), true) => {
                                if let Some(c) = tally.per_backend.get(&n) {
                                    c.fetch_add(1, Ordering::Relaxed);
                                }
                                true
                            }
                            _ => false,
                        }
                    }
                    _ => false,
                };
                lat.push(t0.elapsed().as_micros() as u32);
                tally.done.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        });
    }

    // The script: kill backend-2 at 30 %, restart it at 60 %.
    let victim = 1usize;
    let victim_id = backends[victim].addr.to_string();
    let kill_at = start + total.mul_f64(0.3);
    let restart_at = start + total.mul_f64(0.6);
    let mut killed: Option<Instant> = None;
    let mut restarted: Option<Instant> = None;
    let mut detected: Option<Duration> = None;
    let mut recovered: Option<Duration> = None;
    let mut errors_at_detection = 0;
    let mut events: Vec<String> = Vec::new();
    let mut last_states: HashMap<String, State> = HashMap::new();
    let mut screen = Screen::new(live);
    let frame_every = if live { Duration::from_millis(200) } else { Duration::from_secs(1) };
    let mut last_frame = start;
    let mut last_done = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let t = (now - start).as_secs_f64();
        if killed.is_none() && now >= kill_at {
            backends[victim].kill();
            killed = Some(now);
            events.push(format!("{t:>5.1}s  killed {} (listener and open connections closed)", backends[victim].name));
        }
        if restarted.is_none() && now >= restart_at && killed.is_some() {
            backends[victim].restart().await.context("restarting the demo backend")?;
            restarted = Some(now);
            events.push(format!("{t:>5.1}s  restarted {}", backends[victim].name));
        }
        let set = agent.monitor.snapshot();
        for b in &set.backends {
            let id = b.id().to_string();
            let state = b.state();
            let name = names.get(&id).cloned().unwrap_or_else(|| id.clone());
            if let Some(prev) = last_states.insert(id.clone(), state)
                && prev != state
            {
                let mut note = String::new();
                if id == victim_id
                    && matches!(state, State::Unhealthy | State::Ejected)
                    && detected.is_none()
                    && let Some(k) = killed
                {
                    let d = now - k;
                    detected = Some(d);
                    errors_at_detection = tally.errors.load(Ordering::Relaxed);
                    note = format!(" - detected {:.2}s after the kill; no new traffic goes there", d.as_secs_f64());
                }
                if id == victim_id && prev != state {
                    note.push_str(&format!(" ({})", b.reason));
                }
                if id == victim_id
                    && state == State::Healthy
                    && let Some(r) = restarted
                {
                    let d = now - r;
                    recovered.get_or_insert(d);
                    note = format!(" - back in rotation {:.2}s after the restart", d.as_secs_f64());
                }
                events.push(format!("{t:>5.1}s  {name}: {} -> {}{note}", prev.as_str(), state.as_str()));
            }
        }
        if now - last_frame >= frame_every || now >= deadline {
            let done = tally.done.load(Ordering::Relaxed);
            let rate = (done - last_done) as f64 / (now - last_frame).as_secs_f64().max(1e-3);
            last_done = done;
            last_frame = now;
            let rows = backends
                .iter()
                .map(|b| {
                    let view = set.get(&b.addr.to_string());
                    Row {
                        name: b.name.clone(),
                        addr: b.addr.to_string(),
                        state: view.map(|v| v.state().as_str()).unwrap_or("unknown").to_string(),
                        requests: tally.per_backend[&b.name].load(Ordering::Relaxed),
                        active: view.map(|v| v.backend.stats.active()).unwrap_or(0),
                    }
                })
                .collect();
            screen.draw(&Frame {
                title: title.clone(),
                elapsed: t.min(total.as_secs_f64()),
                total: total.as_secs_f64(),
                rate,
                done,
                errors: tally.errors.load(Ordering::Relaxed),
                rows,
                events: events.clone(),
            });
        }
        if now >= deadline {
            break;
        }
    }
    let mut lat: Vec<u32> = Vec::new();
    while let Some(r) = workers.join_next().await {
        lat.extend(r.context("a demo client task failed")?);
    }
    lat.sort_unstable();
    let q = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    let done = tally.done.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let retries = agent.services[0].traffic.retries(RetryReason::Connect);
    println!();
    println!("summary");
    println!(
        "  {done} requests in {:.1}s ({:.0} req/s), {errors} failed ({:.3} %)",
        total.as_secs_f64(),
        done as f64 / total.as_secs_f64(),
        errors as f64 * 100.0 / done.max(1) as f64
    );
    println!(
        "  client latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        q(0.5) as f64 / 1e3,
        q(0.99) as f64 / 1e3,
        q(1.0) as f64 / 1e3
    );
    match detected {
        Some(d) => println!(
            "  failure detection: {:.2}s after the kill (outlier detection on real requests, or fall {fall} x interval {:?} of probes, whichever first); {} requests failed before it",
            d.as_secs_f64(),
            interval,
            errors_at_detection
        ),
        None => println!("  failure detection: not observed within the run"),
    }
    println!(
        "  connect retries on another backend: {retries} (requests that met the dead backend's closed port before detection, sent elsewhere instead of failing)"
    );
    match recovered {
        Some(d) => println!(
            "  recovery: healthy {:.2}s after the restart (rise {rise} probes, the ejection's end, one request on probation, then slow start)",
            d.as_secs_f64()
        ),
        None => println!("  recovery: not observed within the run"),
    }
    for b in &backends {
        println!("  {:<10} {:>8} requests", b.name, tally.per_backend[&b.name].load(Ordering::Relaxed));
    }
    println!(
        "\nnext: `edge-agent replay` (or `cargo xtask replay`) runs the same kind of failure against every strategy,\n\
         with seven built-in scenarios (crash, slow, hot-key, gray, flap, outage, replicas) and a report"
    );
    agent.shutdown().await;
    Ok(())
}
