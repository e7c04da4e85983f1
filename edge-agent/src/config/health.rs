//! Health section: `--health-check`, `--health-path`, `--health-grpc-service`, `--health-port`, `--health-interval`,
//! `--health-fast-interval`, `--health-timeout`, `--health-jitter`, `--rise`, `--fall`, each also a
//! key of a `[[service]]` table (the top-level value is the default), and passive failure handling:
//! `--outlier-*`, `--slow-start`.
//!
//! A UDP service does not inherit the probe kind: its default is a UDP (DNS) exchange, since a TCP
//! or HTTP probe of a UDP port can never pass. Its own `health-check` (and `health-port`) can ask
//! for a TCP or HTTP probe of another port.

use edge_core::health::{HealthConfig, OutlierConfig};

use super::{ConfigError, usage};
use crate::cli::RunArgs;
use crate::values::{CheckChoice, Dur, GrpcService, Int, UrlPath};

/// Which health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// TCP connect.
    Tcp,
    /// HTTP GET of a path.
    Http(String),
    /// A DNS query over UDP.
    Udp,
    /// The gRPC health protocol for a service name (empty: the whole server).
    Grpc(String),
}

/// One service's probe, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceHealth {
    /// The probe.
    pub check: CheckKind,
    /// Its timing, hysteresis and port.
    pub config: HealthConfig,
}

/// Health settings as given, at the top level or in a `[[service]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthKeys {
    /// `health-check`.
    pub check: Option<CheckChoice>,
    /// `health-path`.
    pub path: Option<UrlPath>,
    /// `health-grpc-service`.
    pub grpc_service: Option<GrpcService>,
    /// `health-port`.
    pub port: Option<Int<1, 65_535>>,
    /// `health-interval`.
    pub interval: Option<Dur<10>>,
    /// `health-fast-interval`.
    pub fast_interval: Option<Dur<10>>,
    /// `health-timeout`.
    pub timeout: Option<Dur<1>>,
    /// `health-jitter`.
    pub jitter: Option<Int<0, 50>>,
    /// `rise`.
    pub rise: Option<Int<1, 100>>,
    /// `fall`.
    pub fall: Option<Int<1, 100>>,
}

impl HealthKeys {
    /// The top-level settings.
    pub fn of_args(args: &RunArgs) -> Self {
        Self {
            check: args.health_check,
            path: args.health_path.clone(),
            grpc_service: args.health_grpc_service.clone(),
            port: args.health_port,
            interval: args.health_interval,
            fast_interval: args.health_fast_interval,
            timeout: args.health_timeout,
            jitter: args.health_jitter,
            rise: args.rise,
            fall: args.fall,
        }
    }

    /// These keys, with `top`'s where these are unset.
    pub fn over(&self, top: &Self) -> Self {
        Self {
            check: self.check,
            path: self.path.clone(),
            grpc_service: self.grpc_service.clone(),
            port: self.port.or(top.port),
            interval: self.interval.or(top.interval),
            fast_interval: self.fast_interval.or(top.fast_interval),
            timeout: self.timeout.or(top.timeout),
            jitter: self.jitter.or(top.jitter),
            rise: self.rise.or(top.rise),
            fall: self.fall.or(top.fall),
        }
    }
}

/// Resolves a service's probe from its own keys over the top-level ones. `udp`: a UDP service.
/// Errors name the settings with `dashes` in front (`--` for flags, nothing for table keys).
pub fn resolve(own: &HealthKeys, top: &HealthKeys, udp: bool, dashes: &str) -> Result<ServiceHealth, String> {
    let k = own.over(top);
    // The kind: the service's own, else (for a TCP service) the top level's; a path implies http,
    // a gRPC service name grpc.
    let kind_of = |k: &HealthKeys| {
        k.check
            .or(k.path.is_some().then_some(CheckChoice::Http))
            .or(k.grpc_service.is_some().then_some(CheckChoice::Grpc))
    };
    let kind =
        if udp { kind_of(own).unwrap_or(CheckChoice::Udp) } else { kind_of(own).or(kind_of(top)).unwrap_or_default() };
    if own.path.is_some() && kind != CheckChoice::Http {
        return Err(format!("{dashes}health-path needs {dashes}health-check http; drop one of them"));
    }
    if own.grpc_service.is_some() && kind != CheckChoice::Grpc {
        return Err(format!("{dashes}health-grpc-service needs {dashes}health-check grpc; drop one of them"));
    }
    let check = match kind {
        CheckChoice::Http => {
            CheckKind::Http(own.path.as_ref().or(top.path.as_ref()).map_or_else(|| "/".to_string(), |p| p.0.clone()))
        }
        CheckChoice::Tcp => CheckKind::Tcp,
        CheckChoice::Udp => CheckKind::Udp,
        CheckChoice::Grpc => CheckKind::Grpc(
            own.grpc_service.as_ref().or(top.grpc_service.as_ref()).map_or_else(String::new, |s| s.0.clone()),
        ),
    };
    let d = HealthConfig::default();
    let interval = k.interval.map_or(d.interval, |v| v.0);
    let config = HealthConfig {
        interval,
        // Unless given, never slower than the normal interval.
        fast_interval: k.fast_interval.map_or(d.fast_interval.min(interval), |v| v.0),
        timeout: k.timeout.map_or(d.timeout, |v| v.0),
        jitter: k.jitter.map_or(d.jitter, |v| v.0 as f64 / 100.0),
        rise: k.rise.map_or(d.rise, |v| v.get32()),
        fall: k.fall.map_or(d.fall, |v| v.get32()),
        port: k.port.map(|p| p.0 as u16),
    };
    if config.fast_interval > config.interval {
        return Err(format!(
            "{dashes}health-fast-interval ({}) is longer than {dashes}health-interval ({}); make it shorter or equal",
            Dur::<0>(config.fast_interval),
            Dur::<0>(config.interval)
        ));
    }
    Ok(ServiceHealth { check, config })
}

pub(super) fn build(args: &RunArgs) -> Result<(ServiceHealth, OutlierConfig), ConfigError> {
    let top = HealthKeys::of_args(args);
    let udp = args.vip.as_ref().is_some_and(|v| v.proto() == edge_core::service::Proto::Udp);
    let health = resolve(&top, &HealthKeys::default(), udp, "--").map_err(usage)?;
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
            "--outlier-max-ejection ({}) is shorter than --outlier-base-ejection ({}); raise it or lower the base",
            Dur::<0>(outlier.max_ejection),
            Dur::<0>(outlier.base_ejection)
        )));
    }
    Ok((health, outlier))
}
