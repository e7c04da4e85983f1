//! The edge XDP program. For now it counts packets and bytes per CPU and passes every packet; the
//! agent's `--mode auto` probe loads and attaches it to learn whether this host can run eBPF.

#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::PerCpuArray;
use aya_ebpf::programs::XdpContext;
use edge_common::{STAT_BYTES, STAT_PACKETS, STATS_LEN};

/// Per-CPU packet and byte counters, indexed by `STAT_*`.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

#[inline(always)]
fn bump(index: u32, by: u64) {
    if let Some(p) = STATS.get_ptr_mut(index) {
        // SAFETY: the pointer is into this CPU's slot of a per-CPU array; no other writer.
        unsafe { *p += by };
    }
}

/// Entry point: thin, returns the verdict of `try_edge_xdp`.
#[xdp]
pub fn edge_xdp(ctx: XdpContext) -> u32 {
    try_edge_xdp(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn try_edge_xdp(ctx: &XdpContext) -> Result<u32, ()> {
    let len = ctx.data_end().saturating_sub(ctx.data()) as u64;
    bump(STAT_PACKETS, 1);
    bump(STAT_BYTES, len);
    Ok(xdp_action::XDP_PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
