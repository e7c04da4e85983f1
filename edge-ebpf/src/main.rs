//! The edge data path: full-NAT L4 steering of VIP traffic to backends, in XDP and TC.
//!
//! A packet for a service (VIP, port, protocol) gets a backend from the service's Maglev table when
//! it starts a flow (TCP SYN, or a UDP packet without a live flow), and keeps it through the
//! conntrack map afterwards. It leaves rewritten as SNAT-address:NAT-port → backend:port; the
//! backend's replies are matched in the reverse-NAT map and leave as VIP:port → client. Everything
//! else passes untouched. `steer` decides, `xdp` and `tc` apply the decision to their kind of
//! packet; `maps` holds the shared state, whose layout lives in `edge-common`.

#![no_std]
#![no_main]

mod clock;
mod csum;
mod fib;
mod maps;
mod monitor;
mod parse;
mod rare;
mod steer;
mod tc;
mod xdp;

use aya_ebpf::bindings::{TC_ACT_SHOT, xdp_action};
use aya_ebpf::macros::{classifier, xdp};
use aya_ebpf::programs::{TcContext, XdpContext};

/// XDP entry point: thin, returns the verdict of `xdp::try_steer`.
#[xdp]
pub fn edge_xdp(ctx: XdpContext) -> u32 {
    xdp::try_steer(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

/// Calibration entry point (run by the agent, never attached): see `clock::try_clock`.
#[xdp]
pub fn edge_clock(ctx: XdpContext) -> u32 {
    clock::try_clock(&ctx)
}

/// TC entry point: thin, returns the verdict of `tc::try_steer`.
#[classifier]
pub fn edge_tc(ctx: TcContext) -> i32 {
    tc::try_steer(&ctx).unwrap_or(TC_ACT_SHOT)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
