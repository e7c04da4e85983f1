//! Starting the eBPF data plane: check the host (interfaces exist, VIPs are local, the SNAT ports
//! stay clear of the kernel's own), then load and attach (`loader`). Every failure says which
//! check failed and how to fix it, so `--mode ebpf` stops with a reason and `--mode auto` can log
//! why it fell back.

use std::net::{IpAddr, SocketAddr};

use edge_core::service::Vip;

use crate::loader::{self, LoadError, LoadOptions, Loaded, XdpMode};
use crate::netinfo::{self, NetError};

/// What to steer, and where.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Client-facing interfaces (XDP per `xdp_mode`, and TC).
    pub client_ifaces: Vec<String>,
    /// Every service's VIP; each must be an address of this host.
    pub vips: Vec<Vip>,
    /// The backends known at start: the interfaces toward them get the TC program for replies.
    pub backends: Vec<SocketAddr>,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// SNAT port range, inclusive.
    pub snat_ports: (u16, u16),
    /// Maglev table size.
    pub table_size: u32,
    /// Conntrack (and reverse NAT) entries.
    pub conntrack_size: u32,
}

/// Why the eBPF data plane cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Host network lookups.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The VIP is not an address of this host.
    #[error("the VIP {0} is not an address of this host; add it to an interface (ip addr add) or give a local address")]
    NotLocal(std::net::Ipv4Addr),
    /// Load or attach.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The kernel ports range overlaps the SNAT ports.
    #[error(
        "--snat-ports {lo}-{hi} overlaps the kernel's ephemeral ports {klo}-{khi} (net.ipv4.ip_local_port_range); pick a range outside it"
    )]
    Ports {
        /// SNAT low.
        lo: u16,
        /// SNAT high.
        hi: u16,
        /// Kernel low.
        klo: u16,
        /// Kernel high.
        khi: u16,
    },
}

/// Checks the host, then loads and attaches.
pub fn start(opts: &StartOptions) -> Result<Loaded, StartError> {
    for i in &opts.client_ifaces {
        netinfo::ifindex(i)?;
    }
    let local = netinfo::local_addrs()?;
    if let Some(vip) = opts.vips.iter().find(|v| !local.iter().any(|(_, a)| *a == v.addr)) {
        return Err(StartError::NotLocal(vip.addr));
    }
    if let Some((klo, khi)) = kernel_port_range() {
        let (lo, hi) = opts.snat_ports;
        if lo <= khi && klo <= hi {
            return Err(StartError::Ports { lo, hi, klo, khi });
        }
    }
    // Interfaces toward the backends get the TC program for replies. A backend without a route
    // is reported and skipped: the others still work, and the actor reports it again when it
    // programs it.
    let mut backend_ifaces: Vec<String> = Vec::new();
    for b in &opts.backends {
        let IpAddr::V4(addr) = b.ip() else { continue };
        let src = match netinfo::source_for(addr) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(backend = %b, error = %e, "no interface leads to this backend; its flows will be dropped");
                continue;
            }
        };
        if let Some(i) = netinfo::iface_of(src)?
            && !opts.client_ifaces.contains(&i)
            && !backend_ifaces.contains(&i)
        {
            backend_ifaces.push(i);
        }
    }
    let load = LoadOptions {
        client_ifaces: opts.client_ifaces.clone(),
        backend_ifaces,
        xdp_mode: opts.xdp_mode,
        table_entries: edge_common::table_entries(edge_common::MAX_SERVICES, opts.table_size),
        conntrack_size: opts.conntrack_size,
    };
    Ok(loader::load(&load)?)
}

/// net.ipv4.ip_local_port_range, if readable.
fn kernel_port_range() -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}
