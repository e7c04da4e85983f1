//! Which data plane runs, and why: `--mode userspace` the proxy; `--mode ebpf` the eBPF data plane
//! or a start failure that says why; `--mode auto` the eBPF data plane when a service has a VIP,
//! every service's strategy is one the kernel can carry out ([`Plane::supports`], the same check
//! configuration and the admin API use) and the program loads and attaches, otherwise the proxy,
//! with the reason logged and shown in `/admin/state`. Without any VIP, auto only probes (load,
//! attach to the interface, detach) and reports. When the proxy runs instead, [`fallback_listeners`]
//! says where it serves the VIPs.

use std::net::SocketAddr;

use edge_core::balance::Plane;
use edge_core::service::Proto;
use edge_dataplane::{Attachment, Loaded, ProbeReport, StartError, StartOptions};
use serde::Serialize;

use crate::config::{Config, Origin};
use crate::values::ModeChoice;

/// What runs and why.
#[derive(Debug, Clone, Serialize)]
pub struct DataplaneStatus {
    /// What the operator asked for.
    #[serde(serialize_with = "display")]
    pub requested: ModeChoice,
    /// What runs.
    #[serde(serialize_with = "plane_name")]
    pub mode: Plane,
    /// Why this mode runs.
    pub reason: String,
    /// The eBPF probe, if it ran.
    pub ebpf_probe: Option<ProbeReport>,
    /// Where the eBPF programs are attached (eBPF mode).
    pub attachments: Vec<Attachment>,
    /// Whether pinned maps of an earlier agent were adopted (eBPF mode).
    pub adopted: bool,
    /// In userspace mode: what an earlier eBPF agent left attached (steering none of this
    /// agent's VIPs, or the agent would have refused to start).
    pub leftover: Option<Leftover>,
}

fn display<S: serde::Serializer>(m: &ModeChoice, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(m)
}

fn plane_name<S: serde::Serializer>(p: &Plane, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

impl DataplaneStatus {
    fn userspace(requested: ModeChoice, reason: String, probe: Option<ProbeReport>) -> Self {
        Self {
            requested,
            mode: Plane::Userspace,
            reason,
            ebpf_probe: probe,
            attachments: Vec::new(),
            adopted: false,
            leftover: None,
        }
    }

    /// Whether this host can run the eBPF data plane, as far as is known.
    pub fn ebpf_capable(&self) -> bool {
        self.mode == Plane::Ebpf || self.ebpf_probe.as_ref().is_some_and(|p| p.capable)
    }

    /// Decides the data plane. In eBPF mode the returned object is loaded and attached.
    pub fn decide(cfg: &Config) -> Result<(Self, Option<Loaded>), StartError> {
        let requested = cfg.mode;
        if requested == ModeChoice::Userspace {
            return Ok((Self::userspace(requested, "--mode userspace".into(), None), None));
        }
        let iface = cfg.ebpf.probe_iface().to_string();
        if requested == ModeChoice::Auto && cfg.vips().next().is_none() {
            let report = edge_dataplane::probe(&iface);
            let reason = if report.capable {
                format!(
                    "eBPF is available ({}), but no --vip or [[service]] is given, so the userspace proxy runs",
                    report.reason
                )
            } else {
                format!("eBPF is not available ({}); running the userspace proxy", report.reason)
            };
            return Ok((Self::userspace(requested, reason, Some(report)), None));
        }
        // Configuration refused unsupported strategies under --mode ebpf; under auto they decide.
        // Only services with a VIP would be carried by the kernel.
        let unsupported = |s: &crate::config::ServiceConfig| {
            s.vip?;
            let strategy = Plane::Ebpf.supports(&s.strategy).err().map(|e| e.to_string());
            strategy.or_else(|| s.kernel_cannot_serve()).map(|e| (s.name.clone(), e))
        };
        if let Some((name, e)) = cfg.services.iter().find_map(unsupported) {
            let reason = format!("service '{name}' needs the userspace proxy ({e}); running the userspace proxy");
            return Ok((Self::userspace(requested, reason, None), None));
        }
        match edge_dataplane::start(&start_options(cfg)) {
            Ok(loaded) => {
                let status = Self {
                    requested,
                    mode: Plane::Ebpf,
                    reason: format!(
                        "the eBPF data plane steers {} in the kernel{}",
                        cfg.vips().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
                        if loaded.adopted_maps { " (adopted the pinned maps of an earlier agent)" } else { "" }
                    ),
                    ebpf_probe: None,
                    attachments: loaded.attachments.clone(),
                    adopted: loaded.adopted_maps,
                    leftover: None,
                };
                Ok((status, Some(loaded)))
            }
            Err(e) if requested == ModeChoice::Auto => {
                let reason = format!("the eBPF data plane cannot start ({e}); running the userspace proxy");
                let report = ProbeReport { capable: false, reason: e.to_string(), iface };
                Ok((Self::userspace(requested, reason, Some(report)), None))
            }
            Err(e) => Err(e),
        }
    }
}

/// The backends known at start, from flags and from backends files alike: the interfaces toward
/// them get the TC program that steers replies. (A file that does not read is reported when its
/// source opens; here it adds nothing.)
fn start_backends(cfg: &Config) -> Vec<std::net::SocketAddr> {
    let mut out: Vec<std::net::SocketAddr> = Vec::new();
    for s in &cfg.services {
        out.extend(s.backends.iter().map(|b| b.addr));
        if let Some(f) = &s.backends_file
            && let Ok(list) = edge_core::discovery::load_backends_file(f)
        {
            out.extend(list.iter().map(|b| b.addr));
        }
    }
    out
}

/// What an earlier eBPF agent left steering in the kernel: its pinned links, and the VIPs its
/// pinned services map steers. Links stay attached after an agent exits without `--cleanup`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Leftover {
    /// Pinned link names (`tc_eth0`, `xdp-native_eth0`).
    pub links: Vec<String>,
    /// The VIPs the pinned services map steers (`10.0.0.10:80/tcp`).
    pub vips: Vec<String>,
}

impl Leftover {
    /// Looks under `/sys/fs/bpf/edge/` (nothing when it cannot be read, for example without
    /// root, where no eBPF program could have been attached by this user either).
    pub fn find() -> Self {
        let mut links: Vec<String> = std::fs::read_dir(edge_dataplane::pins::link_dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        links.sort();
        let vips = if links.is_empty() {
            Vec::new()
        } else {
            edge_dataplane::PinnedMaps::open()
                .map(|m| m.service_rows().into_iter().map(|r| format!("{}/{}", r.vip, r.proto)).collect())
                .unwrap_or_default()
        };
        Self { links, vips }
    }
}

/// With the userspace proxy chosen, programs an earlier agent left attached would keep steering
/// the VIPs this agent means to serve, invisibly: refuse, and say how to clear them. `None` when
/// nothing is left, or what is left steers none of this agent's VIPs.
pub fn leftover_conflict(cfg: &Config, left: &Leftover) -> Option<String> {
    if left.links.is_empty() {
        return None;
    }
    let ours: Vec<String> = cfg
        .vips()
        .map(|v| format!("{}:{}/{}", v.addr, v.port, if v.proto == Proto::Udp { "udp" } else { "tcp" }))
        .collect();
    let hit: Vec<&String> = left.vips.iter().filter(|v| ours.contains(v)).collect();
    if hit.is_empty() {
        return None;
    }
    Some(format!(
        "an earlier eBPF agent's programs are still attached ({}) and steer {} in the kernel, so the userspace \
         proxy would never see that traffic; run `edge-agent cleanup` to detach them, or run this agent with \
         --mode ebpf to adopt them",
        left.links.join(", "),
        hit.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
    ))
}

fn start_options(cfg: &Config) -> StartOptions {
    let e = &cfg.ebpf;
    StartOptions {
        client_ifaces: e.ifaces.clone(),
        vips: cfg.vips().collect(),
        backends: start_backends(cfg),
        xdp_mode: e.xdp_mode,
        snat_ports: e.snat_ports,
        table_size: cfg.table_size,
        conntrack_size: e.conntrack_size,
    }
}

/// The TCP listeners the userspace proxy opens for services' VIPs when the eBPF data plane does not
/// run: (index into `cfg.services`, address). A `[[service]]` is always served on its VIP; the
/// `--vip` service only when no `--listen`/`--listen-tcp` is configured (those serve it then, as
/// before several services existed). UDP VIPs are never here: configuration refuses them outside
/// `--mode ebpf`.
pub fn fallback_listeners(cfg: &Config) -> Vec<(usize, SocketAddr)> {
    let no_listeners = cfg.listen.is_empty() && cfg.listen_tcp.is_empty();
    cfg.services
        .iter()
        .enumerate()
        .filter(|(_, s)| no_listeners || matches!(s.origin, Origin::File(_)))
        .filter_map(|(i, s)| s.vip.map(|v| (i, v)))
        .filter(|(_, v)| v.proto == Proto::Tcp)
        .map(|(i, v)| (i, v.socket_addr()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Command};

    fn cfg(extra: &[&str]) -> Config {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("edge-plane-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        let text = "[[service]]\nvip = \"10.0.0.5:81\"\nbackend = \"10.0.1.2:80\"\n\
                    [[service]]\nvip = \"10.0.0.6:82\"\nbackend = \"10.0.1.3:80\"\n";
        std::fs::write(&file, text).unwrap();
        let mut argv = vec!["edge-agent", "run", "--mode", "userspace", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(extra);
        let Command::Run(args) = cli::parse_words(argv, &crate::config::defaults()).unwrap().command else {
            unreachable!()
        };
        let c = Config::load(*args).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        c
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fallback_listeners_cover_every_tcp_service() {
        let c = cfg(&["--vip", "10.0.0.5:80", "--backend", "10.0.1.1:80"]);
        let want = vec![(0, addr("10.0.0.5:80")), (1, addr("10.0.0.5:81")), (2, addr("10.0.0.6:82"))];
        assert_eq!(fallback_listeners(&c), want);

        // --listen-tcp serves the --vip service, as before; the tables keep their own listeners.
        let c = cfg(&["--vip", "10.0.0.5:80", "--backend", "10.0.1.1:80", "--listen-tcp", "127.0.0.1:9000"]);
        assert_eq!(fallback_listeners(&c), want[1..].to_vec());

        let c = cfg(&[]);
        assert_eq!(fallback_listeners(&c), vec![(0, addr("10.0.0.5:81")), (1, addr("10.0.0.6:82"))]);
    }

    #[test]
    fn auto_with_a_header_key_runs_the_userspace_proxy_and_says_why() {
        let mut c = cfg(&["--vip", "10.0.0.5:80", "--backend", "10.0.1.1:80", "--hash-key", "header:x-user"]);
        c.mode = ModeChoice::Auto;
        let (status, loaded) = DataplaneStatus::decide(&c).unwrap();
        assert!(loaded.is_none());
        assert_eq!(status.mode, Plane::Userspace);
        assert!(status.reason.contains("service '10.0.0.5:80' needs the userspace proxy"), "{}", status.reason);
        assert!(status.reason.contains("sees packets, not HTTP headers"), "{}", status.reason);
    }

    #[test]
    fn auto_with_a_proxy_protocol_backend_runs_the_userspace_proxy_and_says_why() {
        let mut c = cfg(&["--vip", "10.0.0.5:80", "--backend", "10.0.1.1:80,proxy=v1"]);
        c.mode = ModeChoice::Auto;
        let (status, loaded) = DataplaneStatus::decide(&c).unwrap();
        assert!(loaded.is_none());
        assert_eq!(status.mode, Plane::Userspace);
        assert!(
            status.reason.contains("backend 10.0.1.1:80,proxy=v1 asks for the PROXY protocol"),
            "{}",
            status.reason
        );
    }
}
