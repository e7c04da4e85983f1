//! Health section: `--health-check`, `--health-path`, `--health-interval`, `--health-timeout`,
//! `--health-jitter`, `--rise`, `--fall`.

use edge_core::health::HealthConfig;

use super::{ConfigError, usage};
use crate::cli::RunArgs;
use crate::values::CheckChoice;

/// Which health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// TCP connect.
    Tcp,
    /// HTTP GET of a path.
    Http(String),
}

pub(super) fn build(args: &RunArgs) -> Result<(CheckKind, HealthConfig), ConfigError> {
    let check = match (args.health_check, &args.health_path) {
        (Some(CheckChoice::Tcp), Some(_)) => {
            return Err(usage("--health-path needs --health-check http; drop one of them"));
        }
        (Some(CheckChoice::Tcp), None) | (None, None) => CheckKind::Tcp,
        (Some(CheckChoice::Http), p) | (None, p @ Some(_)) => {
            CheckKind::Http(p.as_ref().map_or_else(|| "/".to_string(), |p| p.0.clone()))
        }
    };
    let d = HealthConfig::default();
    let health = HealthConfig {
        interval: args.health_interval.map_or(d.interval, |v| v.0),
        timeout: args.health_timeout.map_or(d.timeout, |v| v.0),
        jitter: args.health_jitter.map_or(d.jitter, |v| v.0 as f64 / 100.0),
        rise: args.rise.map_or(d.rise, |v| v.get32()),
        fall: args.fall.map_or(d.fall, |v| v.get32()),
    };
    Ok((check, health))
}
