//! Validation of the eBPF data plane's flags: `--vip`, `--iface`, `--xdp-mode`, `--snat-ports`,
//! `--conntrack-size`, `--udp-timeout`, `--tcp-timeout`. Whether the interfaces exist and the VIP is
//! local is checked when the data plane starts (it depends on the host, not on the flags).

use std::net::Ipv4Addr;
use std::time::Duration;

use super::{ConfigError, duration, invalid, number};
use crate::cli::RunArgs;

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => edge_common::PROTO_TCP,
            Proto::Udp => edge_common::PROTO_UDP,
        }
    }
}

/// A service address: where clients send traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Vip {
    /// The address (must be local to this host).
    pub addr: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = if self.proto == Proto::Udp { "/udp" } else { "" };
        write!(f, "{}:{}{p}", self.addr, self.port)
    }
}

impl std::str::FromStr for Vip {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let fix = "write IPV4:PORT or IPV4:PORT/udp, for example 10.0.0.5:80 or 10.0.0.5:53/udp";
        let (addr, proto) = match s.trim().rsplit_once('/') {
            Some((a, "tcp")) => (a, Proto::Tcp),
            Some((a, "udp")) => (a, Proto::Udp),
            Some(_) => return Err(format!("unknown protocol; {fix}")),
            None => (s.trim(), Proto::Tcp),
        };
        let sa: std::net::SocketAddr = addr.parse().map_err(|_| fix.to_string())?;
        let std::net::SocketAddr::V4(v4) = sa else {
            return Err("IPv6 VIPs are not supported by the eBPF data plane; give an IPv4 address".into());
        };
        if v4.port() == 0 || v4.ip().is_unspecified() || v4.ip().is_broadcast() || v4.ip().is_multicast() {
            return Err(format!("a VIP needs a unicast address and a non-zero port; {fix}"));
        }
        Ok(Vip { addr: *v4.ip(), port: v4.port(), proto })
    }
}

/// How the XDP program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) XDP where the driver supports it; otherwise only the TC program steers.
    Auto,
    /// Native XDP or fail.
    Native,
    /// Generic (skb) XDP: works everywhere, slower than TC.
    Generic,
    /// No XDP: the TC program steers alone (keeps GSO both ways; the fastest choice on veth).
    Off,
}

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

/// The default SNAT port range: below Linux's default ip_local_port_range (32768-60999).
pub const DEFAULT_SNAT_PORTS: (u16, u16) = (16384, 32767);

pub(super) fn validate(raw: &RunArgs) -> Result<EbpfConfig, ConfigError> {
    let mut ifaces = Vec::new();
    for i in raw.iface.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if i.len() > 15 || i.contains(['/', ' ', ':']) {
            return Err(invalid("iface", i, "give an interface name such as eth0 (at most 15 characters)"));
        }
        if !ifaces.iter().any(|x: &String| x == i) {
            ifaces.push(i.to_string());
        }
    }
    let vip = match raw.vip.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<Vip>().map_err(|e| invalid("vip", s, e))?),
    };
    let xdp_mode = match raw.xdp_mode.as_deref().map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("auto") => XdpMode::Auto,
        Some("native") | Some("drv") => XdpMode::Native,
        Some("generic") | Some("skb") => XdpMode::Generic,
        Some("off") | Some("none") => XdpMode::Off,
        Some(_) => {
            return Err(invalid("xdp-mode", raw.xdp_mode.as_deref().unwrap_or(""), "use auto, native, generic or off"));
        }
    };
    let snat_ports = match raw.snat_ports.as_deref() {
        None => DEFAULT_SNAT_PORTS,
        Some(s) => {
            let fix = "write LOW-HIGH with 1024 <= LOW < HIGH <= 65535, for example 16384-32767";
            let (a, b) = s.trim().split_once('-').ok_or_else(|| invalid("snat-ports", s, fix))?;
            let (lo, hi): (u16, u16) = match (a.trim().parse(), b.trim().parse()) {
                (Ok(lo), Ok(hi)) if lo >= 1024 && lo < hi => (lo, hi),
                _ => return Err(invalid("snat-ports", s, fix)),
            };
            (lo, hi)
        }
    };
    let conntrack_size =
        number("conntrack-size", raw.conntrack_size.as_deref(), edge_common::DEFAULT_CONNTRACK_SIZE, 1024, 1 << 24)?;
    let udp_timeout =
        duration("udp-timeout", raw.udp_timeout.as_deref(), Duration::from_secs(30), Duration::from_secs(1))?;
    let tcp_timeout =
        duration("tcp-timeout", raw.tcp_timeout.as_deref(), Duration::from_secs(3600), Duration::from_secs(10))?;
    Ok(EbpfConfig { ifaces, vip, xdp_mode, snat_ports, conntrack_size, udp_timeout, tcp_timeout, cleanup: raw.cleanup })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_parses_tcp_and_udp() {
        let v: Vip = "10.0.0.5:80".parse().unwrap();
        assert_eq!((v.addr, v.port, v.proto), (Ipv4Addr::new(10, 0, 0, 5), 80, Proto::Tcp));
        let v: Vip = "10.0.0.5:53/udp".parse().unwrap();
        assert_eq!(v.proto, Proto::Udp);
        assert_eq!(v.to_string(), "10.0.0.5:53/udp");
        for bad in ["10.0.0.5", "10.0.0.5:0", "[::1]:80", "0.0.0.0:80", "10.0.0.5:80/sctp", "x:80"] {
            assert!(bad.parse::<Vip>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn snat_ports_are_checked() {
        let raw = RunArgs { snat_ports: Some("20000-10000".into()), ..Default::default() };
        assert!(validate(&raw).unwrap_err().to_string().contains("--snat-ports"));
        let raw = RunArgs { snat_ports: Some("2000-3000".into()), ..Default::default() };
        assert_eq!(validate(&raw).unwrap().snat_ports, (2000, 3000));
    }
}
