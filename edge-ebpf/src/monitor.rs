//! Kernel events for `edge-agent monitor`: drops with their reason and tuple (SNAT port
//! exhaustion and next-hop failures among them) and, when asked, new flows, written to a ring
//! buffer the agent reads.
//!
//! Off by default, and then a report costs one array read, on drop and new-flow paths only: the
//! established-flow path never comes here. When on, a token bucket per CPU bounds the events a
//! second, so a flood of bad packets cannot turn into a flood of events; what the bucket or a full
//! buffer refuses is counted and carried in the next event that gets through.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, PerCpuArray, RingBuf};
use edge_common::{
    Event, MONITOR_DROPS, MONITOR_FLOWS, MONITOR_MAX_RATE, MONITOR_RING_BYTES, MonitorBudget, MonitorEvent,
    MonitorSettings,
};

use crate::parse::Tuple;

/// The monitor's switches (one entry); pinned, so the agent and a new program share them.
#[map(name = "EDGE_MONITOR_V1")]
pub static MONITOR: Array<MonitorSettings> = Array::pinned(1, 0);

/// The events.
#[map(name = "EDGE_MONITOR_RING_V1")]
pub static MONITOR_RING: RingBuf = RingBuf::pinned(MONITOR_RING_BYTES, 0);

/// Each CPU's token bucket (not pinned: a new program starts with a full one).
#[map(name = "EDGE_MONITOR_BUDGET_V1")]
pub static MONITOR_BUDGET: PerCpuArray<MonitorBudget> = PerCpuArray::with_max_entries(1, 0);

/// One event costs this many nanosecond-tokens.
const TOKEN: u64 = 1_000_000_000;

/// Reports `event` for `t` if the monitor asks for it and the CPU's budget allows.
#[inline(always)]
pub fn report(event: Event, t: &Tuple, ifindex: u32) {
    let Some(cfg) = MONITOR.get(0) else { return };
    let want = if matches!(event, Event::NewFlow) { MONITOR_FLOWS } else { MONITOR_DROPS };
    if cfg.flags & want == 0 {
        return;
    }
    send(event, t, ifindex, cfg.rate);
}

/// The rare part, kept out of line so that the callers stay small for the verifier and the cache.
#[inline(never)]
fn send(event: Event, t: &Tuple, ifindex: u32, rate: u32) {
    let Some(b) = MONITOR_BUDGET.get_ptr_mut(0) else { return };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot of a per-CPU array; nothing else writes it concurrently.
    let b = unsafe { &mut *b };
    // Plain multiplications: BPF has no 128-bit arithmetic for the saturating ones. The agent
    // keeps `rate` at most `MONITOR_MAX_RATE`, and two seconds fill any bucket, so nothing here
    // overflows.
    let rate = u64::from(rate.min(MONITOR_MAX_RATE));
    let cap = rate * TOKEN;
    let elapsed = now.wrapping_sub(b.last_ns).min(2 * TOKEN);
    b.tokens = (b.tokens.min(cap) + elapsed * rate).min(cap);
    b.last_ns = now;
    if b.tokens < TOKEN {
        b.lost = b.lost.saturating_add(1);
        return;
    }
    let e = MonitorEvent {
        event: event as u32,
        ifindex,
        src: t.src,
        dst: t.dst,
        sport: t.sport,
        dport: t.dport,
        proto: t.proto,
        _pad: [0; 3],
        lost: b.lost,
        _pad2: 0,
    };
    if MONITOR_RING.output::<MonitorEvent>(&e, 0).is_ok() {
        b.tokens -= TOKEN;
        b.lost = 0;
    } else {
        b.lost = b.lost.saturating_add(1);
    }
}
