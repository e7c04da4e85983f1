//! eBPF section: `--vip`, `--iface`, `--xdp-mode`, `--snat-ports`, `--conntrack-size`,
//! `--udp-timeout`, `--tcp-timeout`, `--cleanup`. Whether the interfaces exist and the VIP is local
//! is checked when the data plane starts (it depends on the host, not on the settings).

use std::time::Duration;

use edge_core::service::Vip;
use edge_dataplane::XdpMode;

use edge_common::DEFAULT_CONNTRACK_SIZE;

use super::ConfigError;
use super::defaults::{CLEANUP, SNAT_PORTS, TCP_TIMEOUT, UDP_TIMEOUT};
use crate::cli::RunArgs;

/// Settings of the eBPF data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EbpfConfig {
    /// Client-facing interfaces; empty means "lo" for the probe only.
    pub ifaces: Vec<String>,
    /// The service from `--vip`.
    pub vip: Option<Vip>,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// SNAT ports, inclusive.
    pub snat_ports: (u16, u16),
    /// Conntrack entries.
    pub conntrack_size: u32,
    /// UDP idle timeout.
    pub udp_timeout: Duration,
    /// Established TCP idle timeout.
    pub tcp_timeout: Duration,
    /// Remove pins at exit.
    pub cleanup: bool,
}

impl EbpfConfig {
    /// The interface the `--mode auto` probe uses: the first `--iface`, or lo.
    pub fn probe_iface(&self) -> &str {
        self.ifaces.first().map_or("lo", String::as_str)
    }
}

pub(super) fn build(args: &RunArgs) -> Result<EbpfConfig, ConfigError> {
    let mut ifaces: Vec<String> = Vec::new();
    for i in &args.iface {
        if !ifaces.contains(&i.0) {
            ifaces.push(i.0.clone());
        }
    }
    Ok(EbpfConfig {
        ifaces,
        vip: args.vip,
        xdp_mode: args.xdp_mode.unwrap_or_default(),
        snat_ports: args.snat_ports.map_or((SNAT_PORTS.0, SNAT_PORTS.1), |p| (p.0, p.1)),
        conntrack_size: args.conntrack_size.map_or(DEFAULT_CONNTRACK_SIZE, |n| n.get32()),
        udp_timeout: args.udp_timeout.map_or(UDP_TIMEOUT, |t| t.0),
        tcp_timeout: args.tcp_timeout.map_or(TCP_TIMEOUT, |t| t.0),
        cleanup: args.cleanup.map_or(CLEANUP, |c| c.0),
    })
}
