//! Next-hop lookup through the kernel's FIB (`bpf_fib_lookup`): the egress interface and the MAC
//! addresses for a rewritten packet.

use aya_ebpf::bindings::bpf_fib_lookup as FibParams;
use aya_ebpf::helpers::bpf_fib_lookup;
use core::ffi::c_void;

use edge_common::{NEXTHOP_TTL_NS, NextHop};

use crate::maps::NEXTHOP;
use crate::steer::Rewrite;

const AF_INET: u8 = 2;
/// The lookup succeeded: interface and both MACs are known.
pub const FIB_SUCCESS: i64 = 0;
/// The route is known but the neighbour (next hop's MAC) is not resolved yet.
pub const FIB_NO_NEIGH: i64 = 7;

/// Looks up the route of a rewritten packet; `ctx` is the program's context pointer.
#[inline(always)]
pub fn lookup(ctx: *mut c_void, ifindex: u32, proto: u8, rw: &Rewrite) -> (i64, FibParams) {
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = proto;
    params.sport = rw.sport;
    params.dport = rw.dport;
    params.ifindex = ifindex;
    params.__bindgen_anon_3.ipv4_src = rw.src;
    params.__bindgen_anon_4.ipv4_dst = rw.dst;
    // SAFETY: the helper reads and writes only `params`, whose size we pass.
    let rc = unsafe { bpf_fib_lookup(ctx, &mut params as *mut FibParams, core::mem::size_of::<FibParams>() as i32, 0) };
    (rc, params)
}

/// A route: egress interface and MACs.
pub struct Route {
    /// `FIB_SUCCESS` or `FIB_NO_NEIGH` (or another `bpf_fib_lookup` code).
    pub rc: i64,
    /// Egress interface.
    pub ifindex: u32,
    /// Destination MAC.
    pub dmac: [u8; 6],
    /// Source MAC.
    pub smac: [u8; 6],
}

/// The route of a rewritten packet: from this CPU's next-hop cache for a backend when it is fresh,
/// otherwise from the FIB (and then cached).
#[inline(always)]
pub fn route(ctx: *mut c_void, ifindex: u32, proto: u8, rw: &Rewrite) -> Route {
    let cache = if rw.backend != 0 { NEXTHOP.get_ptr_mut(rw.backend) } else { None };
    if let Some(c) = cache {
        // SAFETY: this CPU's slot of a per-CPU array.
        let hop = unsafe { *c };
        if hop.expires_ns > rw.now {
            return Route { rc: FIB_SUCCESS, ifindex: hop.ifindex, dmac: hop.dmac, smac: hop.smac };
        }
    }
    let (rc, p) = lookup(ctx, ifindex, proto, rw);
    if rc == FIB_SUCCESS
        && let Some(c) = cache
    {
        let hop = NextHop { expires_ns: rw.now + NEXTHOP_TTL_NS, ifindex: p.ifindex, dmac: p.dmac, smac: p.smac };
        // SAFETY: as above.
        unsafe { *c = hop };
    }
    Route { rc, ifindex: p.ifindex, dmac: p.dmac, smac: p.smac }
}
