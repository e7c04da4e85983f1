//! Health section: `--health-check`, `--health-path`, `--health-interval`,
//! `--health-fast-interval`, `--health-timeout`, `--health-jitter`, `--rise`, `--fall`, and
//! passive failure handling: `--outlier-*`, `--slow-start`.

use edge_core::health::{HealthConfig, OutlierConfig};

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

pub(super) fn build(args: &RunArgs) -> Result<(CheckKind, HealthConfig, OutlierConfig), ConfigError> {
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
        // Unless given, never slower than the normal interval.
        fast_interval: args
            .health_fast_interval
            .map_or_else(|| d.fast_interval.min(args.health_interval.map_or(d.interval, |v| v.0)), |v| v.0),
        timeout: args.health_timeout.map_or(d.timeout, |v| v.0),
        jitter: args.health_jitter.map_or(d.jitter, |v| v.0 as f64 / 100.0),
        rise: args.rise.map_or(d.rise, |v| v.get32()),
        fall: args.fall.map_or(d.fall, |v| v.get32()),
    };
    if health.fast_interval > health.interval {
        return Err(usage(format!(
            "--health-fast-interval ({:?}) is longer than --health-interval ({:?}); make it shorter or equal",
            health.fast_interval, health.interval
        )));
    }
    let o = OutlierConfig::default();
    let outlier = OutlierConfig {
        consecutive: args.outlier_consecutive.map_or(o.consecutive, |v| v.get32()),
        all_5xx: args.outlier_5xx.map_or(o.all_5xx, |v| v.0),
        failure_percent: args.outlier_failure_percent.map_or(o.failure_percent, |v| v.get32()),
        min_requests: args.outlier_min_requests.map_or(o.min_requests, |v| v.get32()),
        base_ejection: args.outlier_base_ejection.map_or(o.base_ejection, |v| v.0),
        max_ejection: args.outlier_max_ejection.map_or(o.max_ejection, |v| v.0),
        max_ejected_percent: args.outlier_max_ejected.map_or(o.max_ejected_percent, |v| v.get32()),
        jitter: o.jitter,
        slow_start: args.slow_start.map_or(o.slow_start, |v| v.0),
    };
    if outlier.max_ejection < outlier.base_ejection {
        return Err(usage(format!(
            "--outlier-max-ejection ({:?}) is shorter than --outlier-base-ejection ({:?}); raise it or lower the base",
            outlier.max_ejection, outlier.base_ejection
        )));
    }
    Ok((check, health, outlier))
}
