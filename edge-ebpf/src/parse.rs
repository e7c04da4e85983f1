//! Header parsing over the raw packet bounds that XDP and TC both expose. Every access is
//! bounds-checked against `data_end` right before it, in the shape the verifier can follow.

use edge_common::{PROTO_TCP, PROTO_UDP};

/// Ethernet header length (no VLAN tag: tagged frames are passed untouched).
pub const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
/// TCP flag bits (in the 14th byte of the TCP header).
pub const TCP_FIN: u8 = 0x01;
/// SYN.
pub const TCP_SYN: u8 = 0x02;
/// RST.
pub const TCP_RST: u8 = 0x04;
/// ACK.
pub const TCP_ACK: u8 = 0x10;

/// Offsets of the fields the data path rewrites, relative to the start of the frame.
pub const OFF_IP_CSUM: usize = ETH_LEN + 10;
/// Source address.
pub const OFF_IP_SRC: usize = ETH_LEN + 12;
/// Destination address.
pub const OFF_IP_DST: usize = ETH_LEN + 16;

/// The parsed headers of an IPv4 TCP or UDP packet.
#[derive(Clone, Copy)]
pub struct Packet {
    /// Offset of the L4 header (depends on IP options).
    pub l4_off: usize,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Source address (network order, as in the packet).
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port (network order).
    pub sport: u16,
    /// Destination port (network order).
    pub dport: u16,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// UDP checksum was 0 (none).
    pub udp_no_csum: bool,
    /// The L4 checksum as found (network order).
    pub l4_csum: u16,
    /// IPv4 total length minus the IP header (host order).
    pub l4_len: u16,
}

impl Packet {
    /// Offset of the L4 checksum field.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        if self.proto == PROTO_TCP { self.l4_off + 16 } else { self.l4_off + 6 }
    }
}

/// The addresses and ports of a packet, as far as they could be read (network order), for the
/// monitor's reports. Aligned to 8 bytes: the compiler reads two fields at once, and the
/// verifier refuses an 8-byte stack read that is not aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Tuple {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port, 0 if unread.
    pub sport: u16,
    /// Destination port, 0 if unread.
    pub dport: u16,
    /// Protocol.
    pub proto: u8,
}

impl Tuple {
    /// A parsed packet's tuple.
    #[inline(always)]
    pub fn of(p: &Packet) -> Self {
        Self { src: p.src, dst: p.dst, sport: p.sport, dport: p.dport, proto: p.proto }
    }
}

/// What the first look at a frame found.
pub enum Parsed {
    /// Not IPv4 TCP/UDP (ARP, IPv6, VLAN, ICMP, ...): pass untouched.
    Other,
    /// An IPv4 fragment (non-first fragments carry no ports): pass to the kernel.
    Fragment,
    /// An IPv4 TCP/UDP header too short or inconsistent. Whether that is a drop depends on
    /// whether it is aimed at a VIP, which the caller decides from the destination address.
    Malformed(Tuple),
    /// A usable packet.
    Ok(Packet),
}

/// A pointer to a `T` at `off`, if the frame is long enough.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, off: usize) -> Option<*mut T> {
    if data + off + core::mem::size_of::<T>() > data_end {
        return None;
    }
    Some((data + off) as *mut T)
}

/// Reads a `T` at `off` (unaligned), if the frame is long enough.
#[inline(always)]
pub fn read<T: Copy>(data: usize, data_end: usize, off: usize) -> Option<T> {
    // SAFETY: bounds checked by `ptr_at`; unaligned read of plain data.
    ptr_at::<T>(data, data_end, off).map(|p| unsafe { core::ptr::read_unaligned(p) })
}

/// Parses Ethernet + IPv4 + TCP/UDP.
#[inline(always)]
pub fn parse(data: usize, data_end: usize) -> Parsed {
    let Some(ethertype) = read::<u16>(data, data_end, 12) else { return Parsed::Other };
    if u16::from_be(ethertype) != ETH_P_IP {
        return Parsed::Other;
    }
    let Some(vihl) = read::<u8>(data, data_end, ETH_LEN) else { return Parsed::Other };
    let Some(dst) = read::<u32>(data, data_end, OFF_IP_DST) else { return Parsed::Other };
    let Some(src) = read::<u32>(data, data_end, OFF_IP_SRC) else { return Parsed::Other };
    let Some(proto) = read::<u8>(data, data_end, ETH_LEN + 9) else { return Parsed::Other };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Parsed::Other;
    }
    // What a malformed packet's report can name: the addresses and protocol, no ports.
    let bad = Tuple { src, dst, sport: 0, dport: 0, proto };
    let ihl = (vihl & 0x0f) as usize;
    if vihl >> 4 != 4 || ihl < 5 {
        return Parsed::Malformed(bad);
    }
    let Some(frag) = read::<u16>(data, data_end, ETH_LEN + 6) else { return Parsed::Malformed(bad) };
    // More-fragments flag or a fragment offset: either way not a whole datagram.
    if u16::from_be(frag) & 0x3fff != 0 {
        return Parsed::Fragment;
    }
    let l4_off = ETH_LEN + ihl * 4;
    let Some(tot_len) = read::<u16>(data, data_end, ETH_LEN + 2) else { return Parsed::Malformed(bad) };
    let l4_len = u16::from_be(tot_len).wrapping_sub((ihl * 4) as u16);
    if proto == PROTO_TCP {
        let Some(ports) = read::<[u16; 2]>(data, data_end, l4_off) else { return Parsed::Malformed(bad) };
        let Some(off_flags) = read::<[u8; 2]>(data, data_end, l4_off + 12) else { return Parsed::Malformed(bad) };
        // The TCP header must be complete (checksum at 16..18, and data offset at least 5 words).
        let Some(csum) = read::<u16>(data, data_end, l4_off + 16) else { return Parsed::Malformed(bad) };
        if read::<u16>(data, data_end, l4_off + 18).is_none() || off_flags[0] >> 4 < 5 {
            return Parsed::Malformed(bad);
        }
        Parsed::Ok(Packet {
            l4_off,
            proto,
            src,
            dst,
            sport: ports[0],
            dport: ports[1],
            tcp_flags: off_flags[1],
            udp_no_csum: false,
            l4_csum: csum,
            l4_len,
        })
    } else {
        let Some(h) = read::<[u16; 4]>(data, data_end, l4_off) else { return Parsed::Malformed(bad) };
        Parsed::Ok(Packet {
            l4_off,
            proto,
            src,
            dst,
            sport: h[0],
            dport: h[1],
            tcp_flags: 0,
            udp_no_csum: h[3] == 0,
            l4_csum: h[3],
            l4_len,
        })
    }
}
