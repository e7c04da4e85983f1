//! The states a backend can be in: its probe health, and the state operators see.

use serde::Serialize;

/// A backend's health as the probes see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not probed yet.
    Unknown,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

impl Health {
    /// Lower-case name for logs, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

crate::label_enum! {
    /// The state operators see: one state machine over active probes, passive outcomes of real
    /// traffic, operators' drains and discovery (see `health::lifecycle`).
    pub enum State {
        /// Not probed yet; no traffic.
        Unknown => "unknown",
        /// Passing; full traffic.
        Healthy => "healthy",
        /// Failing its active probes; no new traffic.
        Unhealthy => "unhealthy",
        /// Ejected by outlier detection (real traffic failed); no new traffic until the ejection
        /// time is over and `rise` probes in a row passed.
        Ejected => "ejected",
        /// Back from an ejection: one real request decides whether it stays.
        Probation => "probation",
        /// Taking traffic again with a weight that ramps up over `--slow-start`.
        SlowStart => "slow_start",
        /// Drained by an operator: no new traffic, existing traffic finishes.
        Draining => "draining",
        /// Removed by discovery: no new traffic, existing traffic finishes, then it leaves.
        Removed => "removed",
    }
}

impl State {
    /// True when the state may get new traffic outside panic mode.
    pub fn usable(self) -> bool {
        matches!(self, Self::Healthy | Self::SlowStart | Self::Probation)
    }

    /// True when the backend is gone rather than sick (drained or removed): it never counts
    /// toward the ejection cap or the panic threshold.
    pub fn gone(self) -> bool {
        matches!(self, Self::Draining | Self::Removed)
    }
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
