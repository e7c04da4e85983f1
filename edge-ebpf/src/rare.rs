//! Log records for rare conditions, through aya-log: SNAT port exhaustion, a failed conntrack
//! insert, and no route for a rewritten packet. The agent prints them among its own logs (target
//! `edge_ebpf`) with what a drop counter and a monitor event lack: the backend, the helper's error
//! code, what to change.
//!
//! These conditions are rare by nature, but a burst of them must not become a burst of records
//! (aya-log costs far more than the program): each condition writes at most one record a second
//! per CPU, and the next record says how many were held back, as the kernel's own `net_ratelimit`
//! does. The functions are out of line, so the verifier and the instruction cache see them only on
//! these drop paths; no other path reaches them.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;
use aya_log_ebpf::warn;

use crate::parse::Tuple;

/// One record a second per condition and CPU.
const INTERVAL_NS: u64 = 1_000_000_000;

/// The conditions, each with its own limit.
#[derive(Clone, Copy)]
#[repr(u32)]
enum Rare {
    NatPorts = 0,
    Conntrack = 1,
    NoRoute = 2,
}

/// When a condition last wrote a record on this CPU, and how many it held back since.
#[repr(C)]
pub struct Limit {
    last_ns: u64,
    held: u64,
}

/// Each CPU's limits (not pinned: a new program starts with none spent).
#[map(name = "EDGE_RARE_LIMIT_V1")]
static LIMITS: PerCpuArray<Limit> = PerCpuArray::with_max_entries(3, 0);

/// Whether `rare` may write a record now; if so, how many it held back since its last one.
#[inline(always)]
fn allow(rare: Rare) -> Option<u64> {
    let slot = LIMITS.get_ptr_mut(rare as u32)?;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot of a per-CPU array; nothing else writes it concurrently.
    let limit = unsafe { &mut *slot };
    if limit.last_ns != 0 && now.wrapping_sub(limit.last_ns) < INTERVAL_NS {
        limit.held = limit.held.saturating_add(1);
        return None;
    }
    let held = limit.held;
    limit.held = 0;
    limit.last_ns = now;
    Some(held)
}

/// A new flow found no free SNAT port toward its backend (`addr`:`port`, network order) among the
/// `range` ports it may use.
#[inline(never)]
pub fn nat_ports(t: &Tuple, addr: u32, port: u16, range: u32) {
    let Some(held) = allow(Rare::NatPorts) else { return };
    warn!(
        &(),
        target: "edge_ebpf",
        "no free SNAT port toward backend {:i}:{} for client {:i}:{} (the {} ports of the range are taken by flows to this backend); widen --snat-ports or add backends; {} more held back on this CPU",
        u32::from_be(addr),
        u16::from_be(port),
        u32::from_be(t.src),
        u16::from_be(t.sport),
        range,
        held
    );
}

/// A new flow could not enter conntrack; `rc` is the map update's error (negative errno).
#[inline(never)]
pub fn conntrack(t: &Tuple, rc: i32) {
    let Some(held) = allow(Rare::Conntrack) else { return };
    warn!(
        &(),
        target: "edge_ebpf",
        "conntrack insert failed with error {} for client {:i}:{} to {:i}:{}; -12 (out of memory) or -7 (full) call for a larger --conntrack-size; {} more held back on this CPU",
        rc,
        u32::from_be(t.src),
        u16::from_be(t.sport),
        u32::from_be(t.dst),
        u16::from_be(t.dport),
        held
    );
}

/// The route lookup for a rewritten packet toward `dst` (network order) failed with `rc`, a
/// `bpf_fib_lookup` code; `reply` says whether it was a reply toward a client.
#[inline(never)]
pub fn no_route(dst: u32, rc: i64, ifindex: u32, reply: bool) {
    let Some(held) = allow(Rare::NoRoute) else { return };
    let toward = if reply { "client" } else { "backend" };
    warn!(
        &(),
        target: "edge_ebpf",
        "no route toward {} {:i} for a packet that came in on interface {} (bpf_fib_lookup code {}: 1 blackhole, 2 unreachable, 3 prohibited, 4 not forwarded, 5 forwarding disabled, 6 unsupported tunnel, 8 fragmentation needed, 9 no source address, negative an invalid lookup); check the host's routes and net.ipv4.ip_forward; {} more held back on this CPU",
        toward,
        u32::from_be(dst),
        ifindex,
        rc,
        held
    );
}
