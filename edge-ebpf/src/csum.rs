//! Incremental Internet checksum updates (RFC 1624) for the XDP path, which has no skb helpers.
//! The sums work on values as loaded from the packet (network order): the one's-complement sum is
//! byte-order independent, so no swapping is needed.

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum after a 32-bit field changed from `from` to `to`.
#[inline(always)]
pub fn replace4(csum: u16, from: u32, to: u32) -> u16 {
    let s = u32::from(!csum) + (!from >> 16) + (!from & 0xffff) + (to >> 16) + (to & 0xffff);
    !fold(s)
}

/// The checksum after a 16-bit field changed from `from` to `to`.
#[inline(always)]
pub fn replace2(csum: u16, from: u16, to: u16) -> u16 {
    let s = u32::from(!csum) + u32::from(!from) + u32::from(to);
    !fold(s)
}

/// Whether the L4 checksum field holds only the pseudo-header sum, as a CHECKSUM_PARTIAL packet
/// (its checksum to be finished by the NIC) does. `l4_len` is the L4 length in host order.
#[inline(always)]
pub fn is_partial(csum: u16, src: u32, dst: u32, proto: u8, l4_len: u16) -> bool {
    // Values as loaded from the packet (network order in a little-endian load); the protocol and
    // length words are put in the same order.
    let s = (src >> 16)
        + (src & 0xffff)
        + (dst >> 16)
        + (dst & 0xffff)
        + (u32::from(proto) << 8)
        + u32::from(l4_len.to_be());
    csum == fold(s)
}
