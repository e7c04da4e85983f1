//! The report of a replay: `results.json` (every figure, the seed, versions and the machine) and a
//! self-contained `report.html` (charts as inline SVG drawn by plotters, no network needed), plus
//! the table printed in the terminal.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;
use serde::Serialize;

use super::measure::{BUCKET, Figures};

/// One scenario's results.
#[derive(Debug, Serialize)]
pub struct ScenarioResults {
    /// Its name.
    pub scenario: String,
    /// Its lesson.
    pub lesson: String,
    /// Seed of the request sequence.
    pub seed: u64,
    /// Traffic duration, seconds.
    pub duration_s: f64,
    /// Failure window (first failure, recovery), seconds.
    pub failure_window: (Option<f64>, Option<f64>),
    /// Backend names, in the order of `shares`.
    pub backends: Vec<String>,
    /// One entry per run.
    pub runs: Vec<Figures>,
    /// Runs that could not be made here, and why.
    pub not_run: Vec<String>,
    /// What the peers' runs do differently.
    pub notes: Vec<String>,
    /// The best strategy for this scenario, and why.
    pub verdict: String,
}

/// Everything a replay produced.
#[derive(Debug, Serialize)]
pub struct Results {
    /// edge's version.
    pub edge_version: &'static str,
    /// The machine: host name, CPUs, kernel.
    pub machine: String,
    /// When, seconds since the Unix epoch.
    pub at: u64,
    /// Per scenario.
    pub scenarios: Vec<ScenarioResults>,
}

/// Describes this machine for the report.
pub fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{} ({} CPUs, Linux {})", read("/proc/sys/kernel/hostname"), cpus, read("/proc/sys/kernel/osrelease"))
}

/// Names the best strategy for a scenario from its figures: the most idempotent successes, then
/// the most other successes; among runs within 0.1 % of those and within 10 % of the lowest p99 (the
/// difference between such runs is noise), the most even load.
pub fn verdict(runs: &[Figures]) -> String {
    let ok = |f: &Figures| (f.success_idempotent.unwrap_or(1.0), f.success_other.unwrap_or(1.0));
    let best_ok = runs.iter().map(ok).fold((0.0, 0.0), |a, b| if b > a { b } else { a });
    let close = |f: &&Figures| best_ok.0 - ok(f).0 < 0.001 && best_ok.1 - ok(f).1 < 0.001;
    let lowest_p99 = runs.iter().filter(close).map(|f| f.p99_ms).fold(f64::INFINITY, f64::min);
    let best = runs
        .iter()
        .filter(close)
        .filter(|f| f.p99_ms <= lowest_p99 * 1.1)
        .min_by(|a, b| a.max_over_mean.total_cmp(&b.max_over_mean));
    let Some(best) = best else { return String::new() };
    let mut why = Vec::new();
    if let Some(s) = best.success_idempotent {
        why.push(format!("{:.2} % of idempotent requests answered", s * 100.0));
    }
    if let Some(s) = best.success_other {
        why.push(format!("{:.2} % of the others", s * 100.0));
    }
    why.push(format!("p99 {:.1} ms", best.p99_ms));
    why.push(format!("load max/mean {:.2}", best.max_over_mean));
    format!("{} ({}): {}", best.strategy, best.plane, why.join(", "))
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

/// The terminal table of one scenario.
pub fn table(r: &ScenarioResults) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>6} {:>7} {:>8}",
        "strategy",
        "ok idem",
        "ok other",
        "p50 ms",
        "p99 ms",
        "p99.9",
        "detect",
        "flaps",
        "failed<d",
        "ampl",
        "max/mu",
        "remapped"
    );
    for f in &r.runs {
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>6} {:>9} {:>6.3} {:>7.2} {:>8}",
            format!("{} ({})", f.strategy, f.plane),
            opt(f.success_idempotent, |v| format!("{:.2}%", v * 100.0)),
            opt(f.success_other, |v| format!("{:.2}%", v * 100.0)),
            f.p50_ms,
            f.p99_ms,
            f.p999_ms,
            opt(f.detection_s, |v| format!("{v:.2}s")),
            opt(f.flaps.map(|n| n as f64), |v| format!("{v}")),
            f.failed_before_detection,
            f.amplification,
            f.max_over_mean,
            opt(f.remapped, |v| format!("{:.1}%", v * 100.0)),
        );
    }
    if let Some(a) = r.runs.iter().find_map(|f| f.agents_agree) {
        let p = |v: Option<f64>| opt(v, |x| format!("{:.1}%", x * 100.0));
        let _ = writeln!(out, "two agents agree per key: before {}, during {}, after {}", p(a[0]), p(a[1]), p(a[2]));
    }
    for n in &r.not_run {
        let _ = writeln!(out, "not run: {n}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(out, "best: {}", r.verdict);
    out
}

/// Okabe and Ito's palette (distinct for the common colour blindnesses), then grey: one colour per
/// run of a scenario (three strategies on edge and on two peers).
const COLOURS: [RGBColor; 9] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
    RGBColor(128, 128, 128),
];

/// A run's name in legends.
fn run_label(f: &Figures) -> String {
    let plane = match f.plane.as_str() {
        "userspace" => "edge",
        "ebpf" => "edge eBPF",
        other => other,
    };
    format!("{} {}", plane, f.strategy)
}

type Chart = Result<String, Box<dyn std::error::Error>>;

/// Lines over time, one per run, with the failure window shaded.
fn timeline_chart(r: &ScenarioResults, title: &str, y_label: &str, value: &dyn Fn(u32, u32) -> f64) -> Chart {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let series: Vec<Vec<(f64, f64)>> = r
            .runs
            .iter()
            .map(|f| f.timeline.iter().enumerate().map(|(i, (n, bad))| (i as f64 * BUCKET, value(*n, *bad))).collect())
            .collect();
        let top = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..r.duration_s, 0.0..top)?;
        chart.configure_mesh().x_desc("seconds").y_desc(y_label).draw()?;
        if let (Some(a), b) = r.failure_window {
            let b = b.unwrap_or(r.duration_s);
            chart
                .draw_series(std::iter::once(Rectangle::new([(a, 0.0), (b, top)], RGBColor(240, 228, 200).filled())))?;
        }
        for (i, (f, points)) in r.runs.iter().zip(series).enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))?
                .label(run_label(f))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Grouped bars: per run, one bar per value.
fn bars_chart(
    r: &ScenarioResults,
    title: &str,
    y_label: &str,
    names: &[String],
    values: &dyn Fn(&Figures) -> Vec<f64>,
) -> Chart {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let groups: Vec<Vec<f64>> = r.runs.iter().map(values).collect();
        let top = groups.iter().flatten().copied().fold(0.0, f64::max).max(1e-9) * 1.15;
        let n = names.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n, 0.0..top)?;
        let labels = names.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(names.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.26 {
                    labels.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_label)
            .draw()?;
        let width = 0.8 / groups.len().max(1) as f64;
        for (g, (f, vals)) in r.runs.iter().zip(&groups).enumerate() {
            let c = COLOURS[g % COLOURS.len()];
            chart
                .draw_series(vals.iter().enumerate().map(|(i, v)| {
                    let x0 = i as f64 + 0.1 + g as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, *v)], c.filled())
                }))?
                .label(run_label(f))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
    }
    Ok(svg)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Writes `results.json` and `report.html` into `dir`.
pub fn write(dir: &Path, results: &Results) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the report folder {}", dir.display()))?;
    let json = serde_json::to_string_pretty(results).context("encoding results.json")?;
    std::fs::write(dir.join("results.json"), json).with_context(|| format!("cannot write {}", dir.display()))?;
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>edge replay</title>\
         <style>body{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}\
         table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}\
         th:first-child,td:first-child{text-align:left}.lesson{color:#555}</style></head><body>",
    );
    let _ = write!(
        html,
        "<h1>edge replay</h1><p>edge {} on {}; seed per scenario below. The shaded band is the failure window.</p>",
        esc(results.edge_version),
        esc(&results.machine)
    );
    for r in &results.scenarios {
        let _ = write!(html, "<h2>{}</h2><p class=\"lesson\">{}</p>", esc(&r.scenario), esc(&r.lesson));
        let _ = write!(
            html,
            "<p>seed {}, {:.0} s of traffic. <b>Best: {}</b></p><table><tr><th>strategy</th><th>plane</th>\
             <th>ok idempotent</th><th>ok other</th><th>p50 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>detection</th>\
             <th>failed before</th><th>recovery</th><th>flaps</th><th>attempts per request</th><th>max/mean load</th>\
             <th>keys remapped (were on the lost backend; 1/N)</th><th>moved back</th></tr>",
            r.seed,
            r.duration_s,
            esc(&r.verdict)
        );
        for f in &r.runs {
            let pct = |v: Option<f64>| opt(v, |x| format!("{:.2} %", x * 100.0));
            let secs = |v: Option<f64>| opt(v, |x| format!("{x:.2} s"));
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.2}</td><td>{} ({}; {})</td><td>{}</td></tr>",
                esc(&f.strategy),
                esc(&f.plane),
                pct(f.success_idempotent),
                pct(f.success_other),
                f.p50_ms,
                f.p99_ms,
                f.p999_ms,
                secs(f.detection_s),
                f.failed_before_detection,
                secs(f.recovery_s),
                opt(f.flaps.map(|n| n as f64), |v| format!("{v}")),
                f.amplification,
                f.max_over_mean,
                pct(f.remapped),
                pct(f.remapped_lost),
                pct(f.remapped_ideal),
                pct(f.moved_back),
            );
        }
        html.push_str("</table>");
        if let Some(a) = r.runs.iter().find_map(|f| f.agents_agree) {
            let p = |v: Option<f64>| opt(v, |x| format!("{:.1} %", x * 100.0));
            let _ = write!(
                html,
                "<p>Two agents send a key to the same backend: before {}, during {}, after {}.</p>",
                p(a[0]),
                p(a[1]),
                p(a[2])
            );
        }
        for n in &r.not_run {
            let _ = write!(html, "<p>Not run: {}</p>", esc(n));
        }
        for n in &r.notes {
            let _ = write!(html, "<p>Note: {}</p>", esc(n));
        }
        let per_sec = 1.0 / BUCKET;
        let charts = [
            (
                "throughput",
                timeline_chart(r, "answered requests per second", "req/s", &|n, bad| f64::from(n - bad) * per_sec),
            ),
            (
                "errors",
                timeline_chart(r, "error rate", "% failed", &|n, bad| {
                    if n == 0 { 0.0 } else { f64::from(bad) * 100.0 / f64::from(n) }
                }),
            ),
            (
                "latency",
                bars_chart(r, "latency percentiles", "ms", &["p50".into(), "p99".into(), "p99.9".into()], &|f| {
                    vec![f.p50_ms, f.p99_ms, f.p999_ms]
                }),
            ),
            ("shares", bars_chart(r, "share of attempts per backend", "share", &r.backends, &|f| f.shares.clone())),
        ];
        for (name, c) in charts {
            let svg = c.map_err(|e| anyhow::anyhow!("drawing a chart: {e}"))?;
            // Each chart also stands alone, for pages that link one.
            let file = dir.join(format!("{}-{name}.svg", r.scenario));
            std::fs::write(&file, &svg).with_context(|| format!("cannot write {}", file.display()))?;
            html.push_str(&svg);
        }
    }
    html.push_str("</body></html>\n");
    std::fs::write(dir.join("report.html"), html).with_context(|| format!("cannot write {}", dir.display()))?;
    Ok(())
}
