//! Failure handling: active probes (one implementation per file) and their pace (`prober`),
//! hysteresis, outlier detection's arithmetic (`outlier`), the per-backend state machine that
//! merges active and passive signals (`lifecycle`), the event log, and the monitor actor that owns
//! every backend's state.

mod connect;
mod events;
mod grpc;
mod http;
mod hysteresis;
mod lifecycle;
mod monitor;
mod outlier;
mod prober;
mod tcp;
mod udp;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use events::{EVENTS_KEPT, Event, EventLog};
pub use grpc::GrpcCheck;
pub use http::HttpCheck;
pub use hysteresis::Hysteresis;
pub use lifecycle::{Change, Lifecycle, Passive};
pub use monitor::{CommandError, Monitor, MonitorConfig, MonitorHandle};
pub use outlier::{OutlierConfig, may_eject};
pub use tcp::TcpCheck;
pub use udp::UdpCheck;

use crate::backend::ProxyProtocol;
use crate::util::BoxFuture;

/// Why a probe failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(String),
    /// The whole probe took longer than `--health-timeout`.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    /// HTTP answered outside 2xx/3xx.
    #[error("http status {0}")]
    Status(u16),
    /// HTTP exchange failed after connecting.
    #[error("http: {0}")]
    Http(String),
    /// A gRPC health call failed or said the backend is not serving.
    #[error("grpc: {0}")]
    Grpc(String),
}

/// One way of probing a backend.
pub trait HealthCheck: Send + Sync + fmt::Debug {
    /// Probes `addr` once; `Ok` carries a short description of the success.
    fn check(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>>;

    /// Probes a backend reached in a particular way (`reach`: the PROXY protocol, TLS): checks
    /// that speak to the backend honour it; checks that only connect need nothing more, which is
    /// what this default does.
    fn check_with(&self, addr: SocketAddr, reach: Reach) -> BoxFuture<'_, Result<String, ProbeError>> {
        let _ = reach;
        self.check(addr)
    }
}

/// How a backend is reached beyond its address, as its spec says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Its connections start with this PROXY protocol version's header (`LOCAL` for a probe).
    pub proxy: Option<ProxyProtocol>,
    /// It is spoken to over TLS; its certificate must be valid for this name.
    pub tls: Option<Arc<String>>,
}

/// Probe timing and hysteresis (`--health-*`, `--rise`, `--fall`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Time between probes of one backend.
    pub interval: Duration,
    /// Time between probes of a suspect backend (a failed probe or real request), an ejected one,
    /// or one on its way back (HAProxy's `fastinter`).
    pub fast_interval: Duration,
    /// Limit for one probe, connect included.
    pub timeout: Duration,
    /// Random spread of the interval, as a fraction (0.1 = ±10 %), so that probes of many backends
    /// and many agents do not synchronise.
    pub jitter: f64,
    /// Passes in a row to become healthy.
    pub rise: u32,
    /// Failures in a row to become unhealthy.
    pub fall: u32,
    /// Probe this port instead of the backend's own (a separate health or admin port).
    pub port: Option<u16>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        // HAProxy's defaults: inter 2s, rise 2, fall 3; timeout 1s.
        Self {
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            jitter: 0.1,
            rise: 2,
            fall: 3,
            port: None,
        }
    }
}

impl HealthConfig {
    /// The longest time from a backend starting to fail every probe to it being marked unhealthy:
    /// up to one interval until the next probe starts, then `fall - 1` more probes at the fast
    /// pace (each at most the longer of the fast interval and the timeout), and the last probe's
    /// own timeout. With the defaults (interval 2 s ±10 %, fast 500 ms, timeout 1 s, fall 3) that
    /// is 2.2 + 2 x 1 + 1 = 5.2 s for probes that time out, and 3.2 s for refused ones.
    pub fn detection_bound(&self) -> Duration {
        let first = self.interval.mul_f64(1.0 + self.jitter.max(0.0));
        let step = self.fast_interval.max(self.timeout);
        first + step * self.fall.saturating_sub(1) + self.timeout
    }

    /// The next wait, with jitter applied.
    pub fn next_interval(&self) -> Duration {
        if self.jitter <= 0.0 {
            return self.interval;
        }
        let f = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        self.interval.mul_f64(f.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_band() {
        let c = HealthConfig { interval: Duration::from_millis(1000), jitter: 0.1, ..Default::default() };
        for _ in 0..1000 {
            let d = c.next_interval();
            assert!(d >= Duration::from_millis(900) && d <= Duration::from_millis(1100), "{d:?}");
        }
        let c = HealthConfig { jitter: 0.0, ..c };
        assert_eq!(c.next_interval(), Duration::from_millis(1000));
    }
}
