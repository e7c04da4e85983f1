//! What the eBPF data plane needs to know about the host's network: interface indexes, which
//! addresses are local and on which interface, and which local address the kernel would use to
//! reach a backend (that address becomes the backend's SNAT address).

use std::ffi::{CStr, CString};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// A lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No such interface.
    #[error("interface {0} does not exist; check the name with `ip link`")]
    NoIface(String),
    /// The address list could not be read.
    #[error("cannot list the host's addresses: {0}")]
    Addrs(std::io::Error),
    /// No route to a backend.
    #[error("no route to backend {addr}: {source}; add a route or fix the backend address")]
    NoRoute {
        /// The backend.
        addr: Ipv4Addr,
        /// The kernel's error.
        source: std::io::Error,
    },
}

/// The interface index of `name`.
pub fn ifindex(name: &str) -> Result<u32, NetError> {
    let c = CString::new(name).map_err(|_| NetError::NoIface(name.to_string()))?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 { Err(NetError::NoIface(name.to_string())) } else { Ok(i) }
}

/// Every local IPv4 address with its interface name.
pub fn local_addrs() -> Result<Vec<(String, Ipv4Addr)>, NetError> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(NetError::Addrs(std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list getifaddrs returned; entries stay valid until freeifaddrs.
        unsafe {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                let name = CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
                out.push((name, addr));
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The local address the kernel picks to reach `backend` (a connected UDP socket sends nothing).
pub fn source_for(backend: Ipv4Addr) -> Result<Ipv4Addr, NetError> {
    let err = |source| NetError::NoRoute { addr: backend, source };
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(err)?;
    s.connect((backend, 9)).map_err(err)?;
    match s.local_addr().map_err(err)? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(_) => Err(err(std::io::Error::other("the route is IPv6"))),
    }
}

/// The interface that holds local address `addr`.
pub fn iface_of(addr: Ipv4Addr) -> Result<Option<String>, NetError> {
    Ok(local_addrs()?.into_iter().find(|(_, a)| *a == addr).map(|(n, _)| n))
}

/// The driver of interface `name` (`ethtool -i`), e.g. "veth", "ena", "virtio_net"; `None` when
/// the interface does not answer the ethtool query.
pub fn driver(name: &str) -> Option<String> {
    // `Ioctl` is the request type of the C library in use: an unsigned long in glibc, an int in musl.
    const SIOCETHTOOL: libc::Ioctl = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
    // erom_version[32], reserved2[12], n_priv_flags, n_stats, testinfo_len, eedump_len, regdump_len.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 4 * 5],
    }
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut info = DrvInfo { cmd: ETHTOOL_GDRVINFO, driver: [0; 32], rest: [0; 32 * 4 + 12 + 4 * 5] };
    // SAFETY: a zeroed ifreq; the name fits (checked above) and stays NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    // SAFETY: SIOCETHTOOL with ETHTOOL_GDRVINFO writes at most size_of::<DrvInfo>() bytes into
    // `info`, which outlives the call; `req` points at it.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&sock), SIOCETHTOOL, &mut req) };
    if rc != 0 {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_known() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert!(ifindex("no-such-if0").is_err());
        assert_eq!(iface_of(Ipv4Addr::LOCALHOST).unwrap().as_deref(), Some("lo"));
        assert_eq!(source_for(Ipv4Addr::LOCALHOST).unwrap(), Ipv4Addr::LOCALHOST);
        assert_eq!(driver("no-such-if0"), None);
        assert_eq!(driver("an-interface-name-far-too-long"), None);
    }
}
