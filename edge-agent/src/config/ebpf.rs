//! eBPF section: `--vip`, `--iface`, `--xdp-mode`, `--snat-ports`, `--conntrack-size`,
//! `--udp-timeout`, `--tcp-timeout`, `--cleanup`. Whether the interfaces exist and the VIP is local
//! is checked when the data plane starts; only a VIP given as `IFACE:PORT` reads the host here, to
//! learn the interface's address.

use std::time::Duration;

use edge_core::service::Vip;
use edge_dataplane::XdpMode;

use edge_common::DEFAULT_CONNTRACK_SIZE;

use super::ConfigError;
use super::defaults::{CLEANUP, SNAT_PORTS, TCP_TIMEOUT, UDP_TIMEOUT};
use crate::cli::RunArgs;
use crate::values::VipArg;

/// Settings of the eBPF data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EbpfConfig {
    /// Client-facing interfaces; empty means "lo" for the probe only.
    pub ifaces: Vec<String>,
    /// The service from `--vip`.
    pub vip: Option<Vip>,
    /// `--vip` as written: the top-level service's name, the same on every host when it names an
    /// interface.
    pub vip_written: Option<String>,
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
    let vip = match &args.vip {
        None => None,
        Some(v) => {
            Some(resolve_vip(v).map_err(|reason| ConfigError::Invalid { flag: "vip", value: v.to_string(), reason })?)
        }
    };
    // `--vip eth0:80` names the client-facing interface too, unless `--iface` says otherwise.
    if ifaces.is_empty()
        && let Some(i) = args.vip.as_ref().and_then(VipArg::iface)
    {
        ifaces.push(i.to_string());
    }
    Ok(EbpfConfig {
        ifaces,
        vip,
        vip_written: args.vip.as_ref().map(VipArg::to_string),
        xdp_mode: args.xdp_mode.unwrap_or_default(),
        snat_ports: args.snat_ports.map_or((SNAT_PORTS.0, SNAT_PORTS.1), |p| (p.0, p.1)),
        conntrack_size: args.conntrack_size.map_or(DEFAULT_CONNTRACK_SIZE, |n| n.get32()),
        udp_timeout: args.udp_timeout.map_or(UDP_TIMEOUT, |t| t.0),
        tcp_timeout: args.tcp_timeout.map_or(TCP_TIMEOUT, |t| t.0),
        cleanup: args.cleanup.map_or(CLEANUP, |c| c.0),
    })
}

/// The VIP of `--vip` or a `[[service]]` table's `vip`; the interface form reads this host's
/// addresses, the literal form does not.
pub(super) fn resolve_vip(v: &VipArg) -> Result<Vip, String> {
    if v.iface().is_none() {
        return v.resolve(&[]);
    }
    let addrs = edge_dataplane::local_addrs().map_err(|e| e.to_string())?;
    v.resolve(&addrs)
}
