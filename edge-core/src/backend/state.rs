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
    /// The state operators see: health, overridden by draining.
    #[derive(Serialize)]
    #[serde(rename_all = "lowercase")]
    pub enum State {
        /// Not probed yet; no traffic.
        Unknown => "unknown",
        /// Passing; gets traffic.
        Healthy => "healthy",
        /// Failing; no new traffic.
        Unhealthy => "unhealthy",
        /// Drained by an operator or removed by discovery: no new traffic, existing traffic finishes.
        Draining => "draining",
    }
}

impl State {
    /// The state for a health, a drain and a removal.
    pub fn of(health: Health, drained_or_removed: bool) -> Self {
        match (drained_or_removed, health) {
            (true, _) => Self::Draining,
            (false, Health::Unknown) => Self::Unknown,
            (false, Health::Healthy) => Self::Healthy,
            (false, Health::Unhealthy) => Self::Unhealthy,
        }
    }
}
