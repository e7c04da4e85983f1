//! The data path's clock, and the program the agent calibrates it with.
//!
//! Time is the kernel's tick counter scaled by the agent's calibration in the settings
//! (`Settings::clock_ns`): `bpf_jiffies64` compiles to a single load, where the ktime helpers are
//! calls (about 15 ns per packet on the established-flow path, measured). The agent cannot read
//! the tick counter from userspace, so it runs [`try_clock`] with `BPF_PROG_TEST_RUN`.

use aya_ebpf::bindings::xdp_action::{XDP_ABORTED, XDP_PASS};
use aya_ebpf::helpers::bpf_jiffies64;
use aya_ebpf::programs::XdpContext;
use edge_common::Settings;

use crate::parse::ptr_at;

/// The current time on the data path's clock (ns, CLOCK_MONOTONIC to within a tick or two).
#[inline(always)]
pub fn now(settings: &Settings) -> u64 {
    // SAFETY: a helper without arguments; the JIT inlines it into a load of `jiffies`.
    settings.clock_ns(unsafe { bpf_jiffies64() })
}

/// Writes the tick counter into the first 8 bytes of the frame (native byte order), for the
/// agent's calibration. Never attached to an interface.
#[inline(always)]
pub fn try_clock(ctx: &XdpContext) -> u32 {
    let Some(out) = ptr_at::<u64>(ctx.data(), ctx.data_end(), 0) else { return XDP_ABORTED };
    // SAFETY: bounds-checked above; an unaligned write of plain data.
    unsafe { core::ptr::write_unaligned(out, bpf_jiffies64()) };
    XDP_PASS
}
