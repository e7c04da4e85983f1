//! One wrk run and what it reports: requests per second, the 99th percentile latency and errors.

use std::process::Command;

use anyhow::Context as _;

use super::procs::run;

/// What one wrk run measured.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// Requests per second.
    pub rps: f64,
    /// Requests completed.
    pub requests: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Socket errors and non-2xx/3xx answers, as wrk words them ("none" when there were none).
    pub errors: String,
}

/// Runs `wrk` (through `prefix`, e.g. `ip netns exec NS`) with `args` and parses its report.
pub(crate) fn wrk(prefix: &[&str], args: &[String]) -> anyhow::Result<Run> {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("wrk");
            c
        }
        None => Command::new("wrk"),
    };
    cmd.arg("--latency").args(args);
    let out = run(&mut cmd)?;
    parse(&out).with_context(|| format!("cannot read wrk's report:\n{out}"))
}

fn parse(out: &str) -> Option<Run> {
    let rps = out.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:"))?.trim().parse().ok()?;
    let requests = out.lines().map(str::trim).find(|l| l.contains(" requests in "))?.split_whitespace().next()?;
    let requests = requests.parse().ok()?;
    let p99 = out.lines().map(str::trim).find_map(|l| l.strip_prefix("99%"))?.trim();
    let errors: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Socket errors:") || l.starts_with("Non-2xx or 3xx responses:"))
        .collect();
    Some(Run {
        rps,
        requests,
        p99_us: micros(p99)?,
        errors: if errors.is_empty() { "none".into() } else { errors.join("; ") },
    })
}

/// wrk's latency (`850.00us`, `1.90ms`, `1.02s`) in microseconds.
fn micros(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_reports() {
        let out = "Running 10s test @ http://127.0.0.1:18092/\n  1 threads and 64 connections\n  Latency Distribution\n     50%  690.00us\n     99%    1.90ms\n  868000 requests in 10.00s, 99.06MB read\n  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec:  86758.01\nTransfer/sec:      9.91MB\n";
        let r = parse(out).unwrap();
        assert_eq!((r.rps, r.p99_us, r.requests), (86758.01, 1900.0, 868000.0));
        assert_eq!(r.errors, "Socket errors: connect 0, read 3, write 0, timeout 0");
        assert_eq!(micros("850.00us"), Some(850.0));
        assert_eq!(micros("1.02s"), Some(1_020_000.0));
        assert!(parse("garbage").is_none());
    }
}
