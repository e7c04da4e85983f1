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

/// The state operators see: health, overridden by draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Not probed yet; no traffic.
    Unknown,
    /// Passing; gets traffic.
    Healthy,
    /// Failing; no new traffic.
    Unhealthy,
    /// Drained by an operator or removed by discovery: no new traffic, existing traffic finishes.
    Draining,
}

impl State {
    /// Every state, for one-hot metrics.
    pub const ALL: [State; 4] = [State::Unknown, State::Healthy, State::Unhealthy, State::Draining];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Draining => "draining",
        }
    }

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
