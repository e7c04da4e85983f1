//! The data plane choice and the eBPF data plane's agent side.
//!
//! `decide` picks what runs: `--mode userspace` the proxy; `--mode ebpf` the eBPF data plane or a
//! start failure that says why; `--mode auto` the eBPF data plane when a service has a VIP (`--vip`
//! or `[[service]]`) and it loads and attaches, otherwise the proxy (the reason is logged and shown
//! in `/admin/state`). Without any VIP, auto only probes (load, attach to `--iface`, detach) and
//! reports. When the proxy runs instead, `fallback_listeners` says where it serves the VIPs.
//!
//! The eBPF side: `loader` loads the embedded object (`object`) with its maps pinned or adopted
//! (`pins`), calibrates the data path's clock (`clock`) and attaches it; `actor` is the only writer of the maps (`kmaps`), following the
//! backends and the strategy (`weights`) and sweeping conntrack (`sweep`); `collector` exports the
//! kernel counters to Prometheus; `view` renders `edge-agent maps`.

pub mod actor;
pub mod clock;
pub mod collector;
pub mod kmaps;
pub mod loader;
pub mod netinfo;
pub mod object;
pub mod pins;
pub mod probe;
pub mod sweep;
pub mod view;
pub mod weights;

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::config::{Config, ModeChoice, Origin, Proto};
use crate::metrics::{Metrics, ModeLabel};
pub(crate) use crate::proxy::error_chain as chain;

/// The error chain of `e` in one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    chain(e)
}

/// The eBPF probe's verdict.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProbeReport {
    /// Whether the program loaded and attached.
    pub capable: bool,
    /// Why, in words (the failing step and the kernel's error, or what succeeded).
    pub reason: String,
    /// The interface probed.
    pub iface: String,
}

/// What runs and why.
#[derive(Debug, Clone, Serialize)]
pub struct DataplaneStatus {
    /// What the operator asked for.
    pub requested: ModeChoice,
    /// What runs: `userspace` or `ebpf`.
    pub mode: &'static str,
    /// Why this mode runs.
    pub reason: String,
    /// The eBPF probe, if it ran.
    pub ebpf_probe: Option<ProbeReport>,
    /// Where the eBPF programs are attached (eBPF mode).
    pub attachments: Vec<loader::Attachment>,
    /// Whether pinned maps of an earlier agent were adopted (eBPF mode).
    pub adopted: bool,
}

/// Why the eBPF data plane cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EbpfStartError {
    /// Host network lookups.
    #[error(transparent)]
    Net(#[from] netinfo::NetError),
    /// The VIP is not an address of this host.
    #[error("the VIP {0} is not an address of this host; add it to an interface (ip addr add) or give a local address")]
    NotLocal(std::net::Ipv4Addr),
    /// Load or attach.
    #[error(transparent)]
    Load(#[from] loader::LoadError),
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

impl DataplaneStatus {
    fn userspace(requested: ModeChoice, reason: String, probe: Option<ProbeReport>) -> Self {
        Self { requested, mode: "userspace", reason, ebpf_probe: probe, attachments: Vec::new(), adopted: false }
    }

    /// Decides the data plane. In eBPF mode the returned object is loaded and attached.
    pub fn decide(cfg: &Config) -> Result<(Self, Option<loader::Loaded>), EbpfStartError> {
        let requested = cfg.mode;
        match requested {
            ModeChoice::Userspace => Ok((Self::userspace(requested, "--mode userspace".into(), None), None)),
            ModeChoice::Auto if cfg.vips().next().is_none() => {
                let report = probe::probe(&cfg.iface);
                let reason = if report.capable {
                    format!(
                        "eBPF is available ({}), but no --vip or [[service]] is given, so the userspace proxy runs",
                        report.reason
                    )
                } else {
                    format!("eBPF is not available ({}); running the userspace proxy", report.reason)
                };
                Ok((Self::userspace(requested, reason, Some(report)), None))
            }
            ModeChoice::Auto | ModeChoice::Ebpf => match start_ebpf(cfg) {
                Ok(loaded) => {
                    let status = Self {
                        requested,
                        mode: "ebpf",
                        reason: format!(
                            "the eBPF data plane steers {} in the kernel{}",
                            cfg.vips().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
                            if loaded.adopted_maps { " (adopted the pinned maps of an earlier agent)" } else { "" }
                        ),
                        ebpf_probe: None,
                        attachments: loaded.attachments.clone(),
                        adopted: loaded.adopted_maps,
                    };
                    Ok((status, Some(loaded)))
                }
                Err(e) if requested == ModeChoice::Auto => {
                    let reason = format!("the eBPF data plane cannot start ({e}); running the userspace proxy");
                    let report = ProbeReport { capable: false, reason: e.to_string(), iface: cfg.iface.clone() };
                    Ok((Self::userspace(requested, reason, Some(report)), None))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Publishes the decision as metrics.
    pub fn record(&self, metrics: &Metrics) {
        for m in ["userspace", "ebpf"] {
            metrics.dataplane_mode.get_or_create(&ModeLabel { mode: m }).set(i64::from(m == self.mode));
        }
        let capable = self.mode == "ebpf" || self.ebpf_probe.as_ref().is_some_and(|p| p.capable);
        metrics.ebpf_capable.set(i64::from(capable));
    }
}

/// Checks the host, then loads and attaches.
fn start_ebpf(cfg: &Config) -> Result<loader::Loaded, EbpfStartError> {
    let e = &cfg.ebpf;
    for i in &e.ifaces {
        netinfo::ifindex(i)?;
    }
    let local = netinfo::local_addrs()?;
    if let Some(vip) = cfg.vips().find(|v| !local.iter().any(|(_, a)| *a == v.addr)) {
        return Err(EbpfStartError::NotLocal(vip.addr));
    }
    if let Some((klo, khi)) = kernel_port_range() {
        let (lo, hi) = e.snat_ports;
        if lo <= khi && klo <= hi {
            return Err(EbpfStartError::Ports { lo, hi, klo, khi });
        }
    }
    // Interfaces toward the backends get the TC program for replies.
    let mut backend_ifaces: Vec<String> = Vec::new();
    for b in cfg.services.iter().flat_map(|s| &s.backends) {
        let IpAddr::V4(addr) = b.addr.ip() else { continue };
        let src = netinfo::source_for(addr)?;
        if let Some(i) = netinfo::iface_of(src)?
            && !e.ifaces.contains(&i)
            && !backend_ifaces.contains(&i)
        {
            backend_ifaces.push(i);
        }
    }
    let opts = loader::LoadOptions {
        client_ifaces: e.ifaces.clone(),
        backend_ifaces,
        xdp_mode: e.xdp_mode,
        table_entries: edge_common::table_entries(edge_common::MAX_SERVICES, cfg.table_size),
        conntrack_size: e.conntrack_size,
    };
    Ok(loader::load(&opts)?)
}

/// net.ipv4.ip_local_port_range, if readable.
fn kernel_port_range() -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// The TCP listeners the userspace proxy opens for services' VIPs when the eBPF data plane does not
/// run: (index into `cfg.services`, address). A `[[service]]` is always served on its VIP; the
/// `--vip` service only when no `--listen`/`--listen-tcp` is configured (those serve it then, as
/// before several services existed). UDP VIPs are never here: config validation refuses them
/// outside `--mode ebpf`.
pub fn fallback_listeners(cfg: &Config) -> Vec<(usize, SocketAddr)> {
    let no_listeners = cfg.listen.is_empty() && cfg.listen_tcp.is_empty();
    cfg.services
        .iter()
        .enumerate()
        .filter(|(_, s)| no_listeners || matches!(s.origin, Origin::File(_)))
        .filter_map(|(i, s)| s.vip.map(|v| (i, v)))
        .filter(|(_, v)| v.proto == Proto::Tcp)
        .map(|(i, v)| (i, SocketAddr::new(IpAddr::V4(v.addr), v.port)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RunArgs;

    fn cfg(f: impl FnOnce(&mut RunArgs)) -> Config {
        let mut raw = RunArgs { mode: Some("userspace".into()), ..Default::default() };
        f(&mut raw);
        let text = "[[service]]\nvip = \"10.0.0.5:81\"\nbackend = \"10.0.1.2:80\"\n\
                    [[service]]\nvip = \"10.0.0.6:82\"\nbackend = \"10.0.1.3:80\"\n";
        crate::config::merge_config_str(&mut raw, std::path::Path::new("c.toml"), text).unwrap();
        Config::validate(&raw).unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fallback_listeners_cover_every_tcp_service() {
        let c = cfg(|r| {
            r.vip = Some("10.0.0.5:80".into());
            r.backend = vec!["10.0.1.1:80".into()];
        });
        let want = vec![(0, addr("10.0.0.5:80")), (1, addr("10.0.0.5:81")), (2, addr("10.0.0.6:82"))];
        assert_eq!(fallback_listeners(&c), want);

        // --listen-tcp serves the --vip service, as before; the tables keep their own listeners.
        let c = cfg(|r| {
            r.vip = Some("10.0.0.5:80".into());
            r.backend = vec!["10.0.1.1:80".into()];
            r.listen_tcp = vec!["127.0.0.1:9000".into()];
        });
        assert_eq!(fallback_listeners(&c), want[1..].to_vec());

        let c = cfg(|_| {});
        assert_eq!(fallback_listeners(&c), vec![(0, addr("10.0.0.5:81")), (1, addr("10.0.0.6:82"))]);
    }
}
