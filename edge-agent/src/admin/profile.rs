//! `GET /debug/pprof/profile?seconds=N[&format=flamegraph]`: a CPU profile of the running agent,
//! sampled by pprof-rs (a SIGPROF timer and a stack walk per sample), as pprof's protobuf (what
//! `go tool pprof` and other pprof tools read) or as a flame graph in SVG.
//!
//! One profile at a time (the timer is process-wide), for 1 to `MAX_SECONDS` seconds. The
//! sampling and the symbolisation run on a blocking thread, so the admin listener keeps answering
//! while a profile is taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pprof::protos::Message as _;

/// Longest profile, in seconds.
pub const MAX_SECONDS: u64 = 60;
/// The duration without `?seconds=`: shorter than Go's 30 s, since an incident wants an answer
/// soon.
pub const DEFAULT_SECONDS: u64 = 10;
/// Samples per second: 99, not 100, so the timer does not beat with periodic work (as Go's and
/// perf's users pick).
const FREQUENCY: i32 = 99;

static RUNNING: AtomicBool = AtomicBool::new(false);

/// What to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// pprof's protobuf, gzip-free (pprof tools read both).
    Pprof,
    /// An SVG flame graph.
    Flamegraph,
}

/// A profile request, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// How long to sample.
    pub seconds: u64,
    /// The output.
    pub format: Format,
}

/// Why no profile was taken.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A query parameter is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// Another profile is being taken.
    #[error("a profile is already being taken; wait for it to finish and ask again")]
    Busy,
    /// The process did not run on a CPU while sampled, so a flame graph would be empty.
    #[error("no CPU samples in {0} s: the agent was idle; take a longer profile or one under load")]
    NoSamples(u64),
    /// The profiler failed.
    #[error("the profiler failed: {0}")]
    Failed(String),
}

impl Request {
    /// Parses `seconds=N` (1 to `MAX_SECONDS`) and `format=pprof|flamegraph`.
    pub fn parse(query: Option<&str>) -> Result<Self, ProfileError> {
        let mut out = Self { seconds: DEFAULT_SECONDS, format: Format::Pprof };
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "seconds" => match v.parse::<u64>() {
                    Ok(n) if (1..=MAX_SECONDS).contains(&n) => out.seconds = n,
                    _ => {
                        return Err(ProfileError::BadRequest(format!(
                            "seconds must be a whole number from 1 to {MAX_SECONDS}, not '{v}'"
                        )));
                    }
                },
                "format" => {
                    out.format = match v {
                        "pprof" | "proto" => Format::Pprof,
                        "flamegraph" | "svg" => Format::Flamegraph,
                        _ => {
                            return Err(ProfileError::BadRequest(format!(
                                "format must be pprof or flamegraph, not '{v}'"
                            )));
                        }
                    }
                }
                _ => {
                    return Err(ProfileError::BadRequest(format!(
                        "unknown parameter '{k}'; use seconds=N and format=pprof|flamegraph"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// Clears the one-at-a-time flag when the profile ends, however it ends.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Samples the whole process for `req.seconds` and returns the encoded profile.
pub async fn take(req: Request) -> Result<Vec<u8>, ProfileError> {
    if RUNNING.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return Err(ProfileError::Busy);
    }
    let slot = Slot;
    let out = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        sample(req)
    })
    .await;
    out.map_err(|e| ProfileError::Failed(e.to_string()))?
}

fn sample(req: Request) -> Result<Vec<u8>, ProfileError> {
    let failed = |e: pprof::Error| ProfileError::Failed(e.to_string());
    // Samples whose innermost frame is in these libraries are skipped: unwinding from inside them
    // can deadlock in the signal handler, pprof-rs's documentation says.
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(failed)?;
    std::thread::sleep(Duration::from_secs(req.seconds));
    let report = guard.report().build().map_err(failed)?;
    drop(guard);
    let mut out = Vec::new();
    match req.format {
        Format::Pprof => {
            report.pprof().map_err(failed)?.encode(&mut out).map_err(|e| ProfileError::Failed(e.to_string()))?
        }
        Format::Flamegraph if report.data.is_empty() => return Err(ProfileError::NoSamples(req.seconds)),
        Format::Flamegraph => report.flamegraph(&mut out).map_err(failed)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_bounds() {
        assert_eq!(Request::parse(None).unwrap(), Request { seconds: DEFAULT_SECONDS, format: Format::Pprof });
        let r = Request::parse(Some("seconds=3&format=flamegraph")).unwrap();
        assert_eq!(r, Request { seconds: 3, format: Format::Flamegraph });
        for bad in ["seconds=0", "seconds=61", "seconds=x", "format=png", "debug=1"] {
            let e = Request::parse(Some(bad)).unwrap_err().to_string();
            assert!(!e.is_empty() && !e.ends_with('.'), "{bad}: {e}");
        }
    }
}
