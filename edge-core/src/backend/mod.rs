//! Backends: how operators name them (`spec`, with the PROXY protocol option in `proxy_protocol`), the states they can be in (`state`), their live
//! counters (`stats`), and the snapshot the health monitor publishes (`view`).
//!
//! The health monitor owns every backend's state and publishes an immutable [`BackendSet`] on each
//! change; everything downstream (selectors, the eBPF map writer, the admin API, the metrics
//! exporter) reads snapshots. Counters live with the backend ([`Backend::stats`]), so the metrics
//! only export them and hold nothing.

mod proxy_protocol;
mod spec;
mod state;
mod stats;
mod view;

pub use proxy_protocol::{ProxyProtocol, V2_SIGNATURE};
pub use spec::{BackendId, BackendSpec, MAX_WEIGHT, SpecError};
pub use state::{Health, State};
pub use stats::{BackendStats, Direction, Failure, GatewayFailure, PassiveSample, ProbeResult, StatusClass};
pub use view::{Backend, BackendSet, BackendView, NextProbe, Panic, ProbeSummary, WEIGHT_STEPS, panic_at};
