//! The TC (TCX ingress) side: the same decision as XDP, applied through the skb helpers. It runs
//! where XDP does not (interfaces toward backends, so replies keep their GSO super-packets, and
//! interfaces where native XDP cannot attach), and behind XDP for the frames XDP passed because the
//! next hop's MAC was unknown: `bpf_redirect_neigh` resolves it.

use aya_ebpf::bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT};
use aya_ebpf::helpers::{bpf_redirect, bpf_redirect_neigh};
use aya_ebpf::programs::TcContext;
use edge_common::{Event, PROTO_UDP};

use crate::fib::{FIB_NO_NEIGH, FIB_SUCCESS, route};
use crate::maps::count;
use crate::monitor::report;
use crate::parse::{ETH_LEN, OFF_IP_CSUM, OFF_IP_DST, OFF_IP_SRC, Packet, Tuple, ptr_at};
use crate::steer::{Rewrite, Verdict, decide, parse_packet};

/// Headers the parser may need in the linear part of the skb: Ethernet, IPv4 with the largest
/// options, TCP without options.
const PULL_LEN: u32 = (ETH_LEN + 60 + 20) as u32;

/// Steers one skb.
#[inline(always)]
pub fn try_steer(ctx: &TcContext) -> Result<i32, ()> {
    if ctx.data_end() - ctx.data() < PULL_LEN as usize {
        // Not all headers are in the linear area (or the packet is short): pull what there is.
        let _ = ctx.pull_data(PULL_LEN.min(ctx.len()));
    }
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let len = u64::from(ctx.len());
    // SAFETY: the context pointer is the program's own __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let p = match parse_packet(data, data_end) {
        Ok(p) => p,
        Err(settled) => return Ok(settled.action(TC_ACT_OK, TC_ACT_SHOT, ifindex)),
    };
    let rw = match decide(&p, len) {
        Verdict::Forward(rw) => rw,
        Verdict::Settled(settled) => return Ok(settled.action(TC_ACT_OK, TC_ACT_SHOT, ifindex)),
    };
    let fib = route(ctx.skb.skb as *mut _, ifindex, p.proto, &rw);
    let rc = fib.rc;
    if rc != FIB_SUCCESS && rc != FIB_NO_NEIGH {
        count(Event::DropNoRoute);
        report(Event::DropNoRoute, &Tuple::of(&p), ifindex);
        crate::rare::no_route(rw.dst, rc, ifindex, rw.reply);
        return Ok(TC_ACT_SHOT);
    }
    rewrite(ctx, &p, &rw, (rc == FIB_SUCCESS).then_some((&fib.dmac, &fib.smac)))?;
    count(if rw.reply { Event::Replied } else { Event::Forwarded });
    // SAFETY: plain helper calls.
    let action = unsafe {
        if rc == FIB_SUCCESS {
            bpf_redirect(fib.ifindex, 0)
        } else {
            bpf_redirect_neigh(fib.ifindex, core::ptr::null_mut(), 0, 0)
        }
    };
    Ok(action as i32)
}

#[inline(always)]
fn rewrite(ctx: &TcContext, p: &Packet, rw: &Rewrite, macs: Option<(&[u8; 6], &[u8; 6])>) -> Result<(), ()> {
    let (data, data_end) = (ctx.data(), ctx.data_end());
    let eth = ptr_at::<[u8; 12]>(data, data_end, 0).ok_or(())?;
    let ip_src = ptr_at::<u32>(data, data_end, OFF_IP_SRC).ok_or(())?;
    let ip_dst = ptr_at::<u32>(data, data_end, OFF_IP_DST).ok_or(())?;
    let ports = ptr_at::<[u16; 2]>(data, data_end, p.l4_off).ok_or(())?;
    // SAFETY: bounds-checked pointers into the linear part of the skb.
    unsafe {
        if let Some((dmac, smac)) = macs {
            let mut m = [0u8; 12];
            m[..6].copy_from_slice(dmac);
            m[6..].copy_from_slice(smac);
            core::ptr::write_unaligned(eth, m);
        }
        core::ptr::write_unaligned(ip_src, rw.src);
        core::ptr::write_unaligned(ip_dst, rw.dst);
        core::ptr::write_unaligned(ports, [rw.sport, rw.dport]);
    }
    // The helpers below invalidate packet pointers; none is used after this point. They also
    // keep the checksum right for CHECKSUM_PARTIAL (offloaded, GSO) packets, where only the
    // pseudo-header part of the L4 checksum is in the packet.
    let l4 = p.l4_csum_off();
    let mangled0 = if p.proto == PROTO_UDP { u64::from(BPF_F_MARK_MANGLED_0) } else { 0 };
    let pseudo = u64::from(BPF_F_PSEUDO_HDR) | mangled0;
    ctx.l3_csum_replace(OFF_IP_CSUM, u64::from(p.src), u64::from(rw.src), 4).map_err(|_| ())?;
    ctx.l3_csum_replace(OFF_IP_CSUM, u64::from(p.dst), u64::from(rw.dst), 4).map_err(|_| ())?;
    if !p.udp_no_csum {
        ctx.l4_csum_replace(l4, u64::from(p.src), u64::from(rw.src), pseudo | 4).map_err(|_| ())?;
        ctx.l4_csum_replace(l4, u64::from(p.dst), u64::from(rw.dst), pseudo | 4).map_err(|_| ())?;
        ctx.l4_csum_replace(l4, u64::from(p.sport), u64::from(rw.sport), mangled0 | 2).map_err(|_| ())?;
        ctx.l4_csum_replace(l4, u64::from(p.dport), u64::from(rw.dport), mangled0 | 2).map_err(|_| ())?;
    }
    Ok(())
}
