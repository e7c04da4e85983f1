//! Where clients reach a service: its VIP (an IPv4 address, a port and a transport protocol), as
//! operators write it (`10.0.0.5:80`, `10.0.0.5:53/udp`) and as the kernel maps key it.

use std::net::{Ipv4Addr, SocketAddr};

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vip {
    /// The address (must be local to the host for the eBPF data plane).
    pub addr: Ipv4Addr,
    /// The port.
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
}

impl Vip {
    /// The address and port as a socket address (what a userspace listener binds).
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.port))
    }
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = if self.proto == Proto::Udp { "/udp" } else { "" };
        write!(f, "{}:{}{p}", self.addr, self.port)
    }
}

/// Why a VIP does not parse; the message says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VipError(String);

impl std::str::FromStr for Vip {
    type Err = VipError;
    fn from_str(s: &str) -> Result<Self, VipError> {
        let fix = "write IPV4:PORT or IPV4:PORT/udp, for example 10.0.0.5:80 or 10.0.0.5:53/udp";
        let (addr, proto) = match s.trim().rsplit_once('/') {
            Some((a, "tcp")) => (a, Proto::Tcp),
            Some((a, "udp")) => (a, Proto::Udp),
            Some(_) => return Err(VipError(format!("unknown protocol; {fix}"))),
            None => (s.trim(), Proto::Tcp),
        };
        let sa: SocketAddr = addr.parse().map_err(|_| VipError(fix.to_string()))?;
        let SocketAddr::V4(v4) = sa else {
            return Err(VipError("IPv6 VIPs are not supported by the eBPF data plane; give an IPv4 address".into()));
        };
        if v4.port() == 0 || v4.ip().is_unspecified() || v4.ip().is_broadcast() || v4.ip().is_multicast() {
            return Err(VipError(format!("a VIP needs a unicast address and a non-zero port; {fix}")));
        }
        Ok(Vip { addr: *v4.ip(), port: v4.port(), proto })
    }
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
        assert_eq!("10.0.0.5:80/tcp".parse::<Vip>().unwrap().to_string(), "10.0.0.5:80");
        for bad in ["10.0.0.5", "10.0.0.5:0", "[::1]:80", "0.0.0.0:80", "10.0.0.5:80/sctp", "x:80"] {
            assert!(bad.parse::<Vip>().is_err(), "{bad} should be rejected");
        }
    }
}
