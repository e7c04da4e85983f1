//! The data plane choice: probing whether this host can run the embedded eBPF program, and the
//! status the admin API and metrics report.

pub mod object;
pub mod probe;

use serde::Serialize;

use crate::config::ModeChoice;
use crate::metrics::{Metrics, ModeLabel};

/// The eBPF probe's verdict.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProbeReport {
    /// Whether the program loaded and attached.
    pub capable: bool,
    /// Why, in words (the failing step and the kernel's error, or what succeeded).
    pub reason: String,
    /// The interface probed.
    pub iface: String,
}

/// What runs and why.
#[derive(Debug, Clone, Serialize)]
pub struct DataplaneStatus {
    /// What the operator asked for.
    pub requested: ModeChoice,
    /// What runs: `userspace` (or `ebpf` once that data plane exists).
    pub mode: &'static str,
    /// Why this mode runs.
    pub reason: String,
    /// The eBPF probe, if it ran.
    pub ebpf_probe: Option<ProbeReport>,
}

impl DataplaneStatus {
    /// Decides the data plane for `requested`, probing eBPF on `iface` in auto mode.
    pub fn decide(requested: ModeChoice, iface: &str) -> Self {
        match requested {
            ModeChoice::Userspace => {
                Self { requested, mode: "userspace", reason: "--mode userspace".into(), ebpf_probe: None }
            }
            ModeChoice::Auto => {
                let report = probe::probe(iface);
                let reason = if report.capable {
                    format!(
                        "eBPF is available ({}); the eBPF data plane is not part of this build, so the userspace proxy runs",
                        report.reason
                    )
                } else {
                    format!("eBPF is not available ({}); running the userspace proxy", report.reason)
                };
                Self { requested, mode: "userspace", reason, ebpf_probe: Some(report) }
            }
        }
    }

    /// Publishes the decision as metrics.
    pub fn record(&self, metrics: &Metrics) {
        for m in ["userspace", "ebpf"] {
            metrics.dataplane_mode.get_or_create(&ModeLabel { mode: m }).set(i64::from(m == self.mode));
        }
        metrics.ebpf_capable.set(i64::from(self.ebpf_probe.as_ref().is_some_and(|p| p.capable)));
    }
}
