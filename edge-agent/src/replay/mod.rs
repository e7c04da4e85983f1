//! `edge-agent replay` (and `cargo xtask replay`): the same seeded traffic and the same failure
//! schedule against each strategy, with a report people read.
//!
//! `scenario` reads a scenario file (the built-ins are in `builtin`), `engine` runs one scenario
//! with one strategy against simulated backends (`crate::sim`) and in-process agents, `measure`
//! turns the records into figures, and `report` writes `results.json`, `report.html` and the
//! terminal table. Dependencies point one way: `scenario` is a leaf, `engine` uses it, `measure`
//! uses both, `report` uses `measure`, and this module drives them.

mod builtin;
mod engine;
mod measure;
mod netns;
mod peers;
mod report;
mod scenario;
mod stop;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};

pub use builtin::BUILTIN;
pub use engine::{Outcome, Record, Target, Transition};
pub use measure::{Figures, figures};
pub use peers::Peer;
pub use scenario::{Scenario, ScenarioError};

use crate::cli::ReplayArgs;
use crate::values::LogFormat;
use report::Results;
pub use report::ScenarioResults;

/// Finds a scenario: a built-in name, or a path to a TOML file.
pub fn load(name: &str) -> anyhow::Result<Scenario> {
    if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) {
        return Ok(Scenario::parse(name, text)?);
    }
    let path = PathBuf::from(name);
    if !path.exists() {
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        bail!(
            "no built-in scenario '{name}' and no such file; use one of {} or a path to a TOML file",
            names.join(", ")
        );
    }
    let text = edge_core::util::read_bounded(&path, 1 << 20)
        .with_context(|| format!("cannot read scenario file {}", path.display()))?;
    Ok(Scenario::parse(&path.display().to_string(), &text)?)
}

/// What a replay runs besides edge's userspace data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planes {
    /// HAProxy and NGINX, when installed.
    pub peers: bool,
    /// edge's eBPF data plane, for L4 scenarios when the host allows it (needs a multi-thread
    /// runtime and the `edge-agent` binary as the running program).
    pub ebpf: bool,
}

/// Runs one scenario with every strategy it names, on edge's data planes and on every installed
/// peer that `planes` asks for; prints progress and the table.
pub async fn run_scenario(s: &Scenario, live: bool, planes: Planes) -> anyhow::Result<ScenarioResults> {
    println!("\n{}: {}", s.name, s.lesson);
    let mut targets: Vec<Target<'_>> = s.strategies.iter().map(|st| Target::Edge(st)).collect();
    let mut not_run = Vec::new();
    let mut notes = Vec::new();
    if !planes.ebpf {
        not_run.push("edge's eBPF data plane: not asked for (--no-ebpf)".to_string());
    } else if !s.l4 {
        not_run.push("edge's eBPF data plane: not an L4 scenario (l4 = false: its lesson needs HTTP)".to_string());
    } else if let Err(why) = netns::available() {
        not_run.push(format!("edge's eBPF data plane: {why}"));
    } else {
        targets.extend(s.strategies.iter().map(|st| Target::Ebpf(st)));
        notes.push(
            "edge's eBPF data plane balances connections, not requests: with keep-alive the client's few \
             connections carry all its requests, so load shares are lumpy; it cannot retry, so a request on a \
             connection to a backend that dies fails; consistent hashing hashes the connection's addresses, \
             so the remapped-keys figures do not apply"
                .to_string(),
        );
    }
    let peers = planes.peers;
    if !peers {
        not_run.push("HAProxy and NGINX: not asked for (--no-peers)".into());
    } else if s.agents > 1 {
        not_run.push("HAProxy and NGINX: this scenario is about two edge agents".into());
    } else {
        for p in Peer::ALL {
            if p.binary().is_some() {
                targets.extend(s.strategies.iter().map(|st| Target::Peer(p, st)));
                notes.push(p.caveat().to_string());
            } else {
                not_run.push(format!("{}: not installed (apt-get install {})", p.name(), p.name()));
            }
        }
    }
    let mut runs = Vec::new();
    let total = (f64::from(s.traffic.rate) * s.duration.as_secs_f64()) as u64;
    for target in targets {
        let (strategy, plane) = target.describe();
        let label = format!("  {}/{strategy} ({plane})", s.name);
        let screen = std::sync::Mutex::new(crate::term::Screen::default());
        let progress = |sent: u64, failed: u64| {
            let done = if total == 0 { 1.0 } else { sent as f64 / total as f64 };
            let filled = (done * 20.0).round() as usize;
            let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(20 - filled.min(20)));
            let line = format!("{label} {bar} {sent}/{total} requests, {failed} failed");
            if live {
                if let Ok(mut sc) = screen.lock() {
                    let _ = sc.status(&mut std::io::stdout().lock(), &line, crate::term::size().0);
                }
            } else if sent == total {
                // Without a terminal, one line per run.
                println!("{line}");
            }
        };
        let outcome = match (engine::run(s, target, &progress).await, target) {
            (Ok(o), _) => o,
            // A peer that does not start is reported, not fatal.
            (Err(e), Target::Peer(p, st)) => {
                not_run.push(format!("{} {st}: {e:#}", p.name()));
                continue;
            }
            // So is an eBPF run the host turned out not to allow.
            (Err(e), Target::Ebpf(st)) => {
                not_run.push(format!("edge's eBPF data plane, {st}: {e:#}"));
                continue;
            }
            (Err(e), Target::Edge(_)) => return Err(e),
        };
        if live {
            println!();
        }
        runs.push(measure::figures(s, &outcome));
    }
    let (fail, recover) = s.failure_window();
    let results = ScenarioResults {
        scenario: s.name.clone(),
        lesson: s.lesson.clone(),
        seed: s.seed,
        duration_s: s.duration.as_secs_f64(),
        failure_window: (fail.map(|d| d.as_secs_f64()), recover.map(|d| d.as_secs_f64())),
        backends: s.backends.iter().map(|b| b.name.clone()).collect(),
        verdict: report::verdict(&runs),
        runs,
        not_run,
        notes,
    };
    print!("{}", report::table(&results));
    Ok(results)
}

/// `edge-agent replay`.
pub fn main(args: ReplayArgs) -> anyhow::Result<()> {
    crate::logging::init(LogFormat::Text, "warn");
    let names: Vec<String> = match (&args.scenario, args.all) {
        (Some(_), true) => bail!("give a scenario or --all, not both"),
        (Some(n), false) => vec![n.clone()],
        (None, true) => BUILTIN.iter().map(|(n, _)| (*n).to_string()).collect(),
        (None, false) => {
            println!("built-in scenarios (run one with `edge-agent replay NAME`, all with --all):");
            for (name, text) in BUILTIN {
                let lesson = Scenario::parse(name, text).map(|s| s.lesson).unwrap_or_default();
                println!("  {name:<10} {lesson}");
            }
            return Ok(());
        }
    };
    let mut scenarios = Vec::new();
    for n in &names {
        let mut s = load(n)?;
        if let Some(seed) = args.seed {
            s.seed = seed;
        }
        if let Some(d) = args.duration {
            s = s.scaled(d.0);
        }
        scenarios.push(s);
    }
    let live = std::io::stdout().is_terminal();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let mut out = Vec::new();
    for s in &scenarios {
        out.push(rt.block_on(run_scenario(s, live, Planes { peers: !args.no_peers, ebpf: !args.no_ebpf }))?);
    }
    let results = Results {
        edge_version: env!("CARGO_PKG_VERSION"),
        machine: report::machine(),
        at: SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs(),
        scenarios: out,
    };
    report::write(&args.out.0, &results)?;
    println!("\nreport: {} (results.json beside it)", args.out.0.join("report.html").display());
    Ok(())
}
