//! A running service: its name, VIP, health monitor, balancer and traffic counters. `app` starts
//! one per configured service (the top-level settings' first, then each `[[service]]`); the admin
//! API finds them by name (`?service=NAME`), the first one being the default, so that a
//! single-service agent's API is unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use edge_core::balance::BalancerHandle;
use edge_core::health::MonitorHandle;
use edge_core::service::Vip;
use edge_proxy::ServiceTraffic;

/// One running service.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    /// Its unique name.
    pub name: String,
    /// Its VIP, if it has one (only the top-level service may lack one).
    pub vip: Option<Vip>,
    /// Its backends and their state.
    pub monitor: MonitorHandle,
    /// Its strategy and selector.
    pub balancer: BalancerHandle,
    /// Its userspace traffic counters that belong to no backend (retries, no backend).
    pub traffic: Arc<ServiceTraffic>,
    /// The userspace listeners serving it (bound addresses; empty when only the eBPF data plane
    /// serves it).
    pub listeners: Vec<SocketAddr>,
}

/// The service named `name`, or the first one when `name` is `None`.
pub fn find<'a>(services: &'a [ServiceHandle], name: Option<&str>) -> Option<&'a ServiceHandle> {
    match name {
        None => services.first(),
        Some(n) => services.iter().find(|s| s.name == n),
    }
}

/// Whether every service's monitor finished its first discovery and probe round, and its balancer
/// built a selector from it (so a request sent now finds those backends).
pub fn all_ready(services: &[ServiceHandle]) -> bool {
    services.iter().all(|s| s.balancer.is_ready())
}
