//! The XDP side: parse, decide, rewrite the frame in place, and send it out with XDP_TX (same
//! interface) or XDP_REDIRECT (another one). When the next hop's MAC is not known yet the frame is
//! passed untouched to the kernel, where the TC program on the same interface steers it with
//! `bpf_redirect_neigh`, which resolves the neighbour. So are frames whose L4 checksum is only a
//! pseudo-header sum (CHECKSUM_PARTIAL, from a local sender such as a veth peer with checksum
//! offload): XDP cannot see the skb's checksum state, TC can, and its helpers finish such sums.

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX};
use aya_ebpf::helpers::bpf_redirect;
use aya_ebpf::programs::XdpContext;
use edge_common::Event;

use crate::csum::{is_partial, replace2, replace4};
use crate::fib::{FIB_NO_NEIGH, FIB_SUCCESS, route};
use crate::maps::count;
use crate::monitor::report;
use crate::parse::{OFF_IP_CSUM, OFF_IP_DST, OFF_IP_SRC, Packet, Tuple, ptr_at};
use crate::steer::{Rewrite, Verdict, decide, ours, parse_packet};

/// Steers one frame.
#[inline(always)]
pub fn try_steer(ctx: &XdpContext) -> Result<u32, ()> {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let len = (data_end - data) as u64;
    // SAFETY: the context pointer is the program's own xdp_md.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let p = match parse_packet(data, data_end) {
        Ok(p) => p,
        Err(settled) => return Ok(settled.action(XDP_PASS, XDP_DROP, ifindex)),
    };
    if !p.udp_no_csum && is_partial(p.l4_csum, p.src, p.dst, p.proto, p.l4_len) {
        // Only TC knows how to finish such a checksum (and XDP cannot tell it apart otherwise).
        return Ok(pass(if ours(&p) { Event::PartialCsumPassed } else { Event::Passed }));
    }
    let rw = match decide(&p, len) {
        Verdict::Forward(rw) => rw,
        Verdict::Settled(settled) => return Ok(settled.action(XDP_PASS, XDP_DROP, ifindex)),
    };
    let fib = route(ctx.ctx as *mut _, ifindex, p.proto, &rw);
    let rc = fib.rc;
    if rc == FIB_NO_NEIGH {
        return Ok(pass(Event::NeighPassed));
    }
    if rc != FIB_SUCCESS {
        count(Event::DropNoRoute);
        report(Event::DropNoRoute, &Tuple::of(&p), ifindex);
        crate::rare::no_route(rw.dst, rc, ifindex, rw.reply);
        return Ok(XDP_DROP);
    }
    rewrite(data, data_end, &p, &rw, &fib.dmac, &fib.smac)?;
    count(if rw.reply { Event::Replied } else { Event::Forwarded });
    if fib.ifindex == ifindex {
        Ok(XDP_TX)
    } else {
        // SAFETY: plain helper call.
        Ok(unsafe { bpf_redirect(fib.ifindex, 0) } as u32)
    }
}

#[inline(always)]
fn pass(e: Event) -> u32 {
    count(e);
    XDP_PASS
}

#[inline(always)]
fn rewrite(data: usize, data_end: usize, p: &Packet, rw: &Rewrite, dmac: &[u8; 6], smac: &[u8; 6]) -> Result<(), ()> {
    let eth = ptr_at::<[u8; 12]>(data, data_end, 0).ok_or(())?;
    let ip_csum = ptr_at::<u16>(data, data_end, OFF_IP_CSUM).ok_or(())?;
    let ip_src = ptr_at::<u32>(data, data_end, OFF_IP_SRC).ok_or(())?;
    let ip_dst = ptr_at::<u32>(data, data_end, OFF_IP_DST).ok_or(())?;
    let ports = ptr_at::<[u16; 2]>(data, data_end, p.l4_off).ok_or(())?;
    let l4_csum = ptr_at::<u16>(data, data_end, p.l4_csum_off()).ok_or(())?;
    // SAFETY: every pointer was bounds-checked above; unaligned accesses of plain data.
    unsafe {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(dmac);
        macs[6..].copy_from_slice(smac);
        core::ptr::write_unaligned(eth, macs);

        let c = core::ptr::read_unaligned(ip_csum);
        let c = replace4(replace4(c, p.src, rw.src), p.dst, rw.dst);
        core::ptr::write_unaligned(ip_csum, c);
        core::ptr::write_unaligned(ip_src, rw.src);
        core::ptr::write_unaligned(ip_dst, rw.dst);

        let l4 = core::ptr::read_unaligned(l4_csum);
        if !p.udp_no_csum {
            let mut c = replace4(replace4(l4, p.src, rw.src), p.dst, rw.dst);
            c = replace2(replace2(c, p.sport, rw.sport), p.dport, rw.dport);
            // In UDP an all-zero checksum means "none"; a computed zero is sent as all ones.
            if p.proto == edge_common::PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            core::ptr::write_unaligned(l4_csum, c);
        }
        core::ptr::write_unaligned(ports, [rw.sport, rw.dport]);
    }
    Ok(())
}
