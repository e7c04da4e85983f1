//! Types and constants shared by the edge eBPF program and the agent: the kernel/user wire format.
//!
//! Everything here is `#[repr(C)]` plain data without implicit padding (explicit `_pad` fields fill
//! the gaps, so a key hashes the same on both sides). Addresses and ports are kept in network byte
//! order, exactly as they sit in the packet, so the data path never swaps bytes. The `user` feature
//! adds `aya::Pod` impls so the agent can read and write the maps; the eBPF side uses the types as
//! is. Nothing else defines a map layout: a change to any type here must bump [`LAYOUT_VERSION`],
//! which renames every pinned map, so an agent never adopts maps of another layout.

#![no_std]

/// Version of the map layout; part of every pinned map's name (`EDGE_*_V2`).
pub const LAYOUT_VERSION: u32 = 2;

/// Where maps and links are pinned (bpffs).
pub const PIN_DIR: &str = "/sys/fs/bpf/edge";

/// Map names, as the eBPF object defines them and as they are pinned under [`PIN_DIR`].
pub mod map_names {
    /// [`crate::ServiceKey`] → [`crate::ServiceValue`].
    pub const SERVICES: &str = "EDGE_SVC_V2";
    /// Backend id → [`crate::BackendValue`].
    pub const BACKENDS: &str = "EDGE_BACKENDS_V2";
    /// Maglev lookup tables: `u32` backend ids, see [`crate::table_index`].
    pub const MAGLEV: &str = "EDGE_MAGLEV_V2";
    /// Client-side conntrack: [`crate::FlowKey`] → [`crate::FlowValue`].
    pub const CONNTRACK: &str = "EDGE_CT_V2";
    /// Reverse NAT: [`crate::NatKey`] → [`crate::NatValue`].
    pub const REVNAT: &str = "EDGE_REVNAT_V2";
    /// Per-CPU [`crate::Counters`] by service id.
    pub const SERVICE_STATS: &str = "EDGE_SVC_STATS_V2";
    /// Per-CPU [`crate::Counters`] by backend id.
    pub const BACKEND_STATS: &str = "EDGE_BE_STATS_V2";
    /// Per-CPU `u64` packet counts by [`crate::Event`].
    pub const EVENTS: &str = "EDGE_EVENTS_V2";
    /// Single-entry array holding the [`crate::Settings`].
    pub const SETTINGS: &str = "EDGE_SETTINGS_V2";
    /// Per-CPU [`crate::NextHop`] cache by backend id (not pinned: it is rebuilt in a second).
    pub const NEXTHOP: &str = "EDGE_NEXTHOP_V2";
    /// Single-entry array holding the [`crate::MonitorSettings`].
    pub const MONITOR: &str = "EDGE_MONITOR_V1";
    /// Ring buffer of [`crate::MonitorEvent`]s.
    pub const MONITOR_RING: &str = "EDGE_MONITOR_RING_V1";
}

/// Program names inside the object.
pub mod program_names {
    /// XDP program for client-facing interfaces.
    pub const XDP: &str = "edge_xdp";
    /// TC (TCX ingress) program: the same steering as XDP, plus the reply path that must keep GSO.
    pub const TC: &str = "edge_tc";
    /// Never attached: the agent runs it (`BPF_PROG_TEST_RUN`) to read the kernel's tick counter
    /// when it calibrates the data path's clock (see [`crate::Settings::clock_ns_per_tick`]).
    pub const CLOCK: &str = "edge_clock";
}

/// Most services (VIP, port, protocol) one agent programs.
pub const MAX_SERVICES: u32 = 16;
/// Most backends over all services; id 0 means "none".
pub const MAX_BACKENDS: u32 = 4096;
/// Default number of conntrack (and reverse NAT) entries.
pub const DEFAULT_CONNTRACK_SIZE: u32 = 262_144;

/// IP protocol numbers used in keys.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// Service flag: hash only the client address (otherwise the full 5-tuple).
pub const SVC_HASH_SOURCE: u32 = 1;

/// Backend flag: present in the backends map (an all-zero slot means "no backend").
pub const BE_ACTIVE: u32 = 1;

/// Flow state: a TCP SYN (or the first UDP packet) went out, nothing else seen yet.
pub const CT_NEW: u8 = 0;
/// Packets flowed both ways (a reply was seen).
pub const CT_ESTABLISHED: u8 = 1;
/// The client sent the first FIN: the backend closes passively and keeps no TIME_WAIT, so the agent
/// ages the entry (and frees its SNAT port) after a short idle time.
pub const CT_CLOSING: u8 = 2;
/// The backend sent the first FIN: it holds the connection in TIME_WAIT (60 s on Linux), and a new
/// connection from the same SNAT address and port would be refused by its PAWS check unless it
/// comes from the same client tuple. The agent keeps the SNAT port reserved for that long.
pub const CT_TIME_WAIT: u8 = 3;
/// The backend answered the SYN with a RST (its port refused the connection). The flow is over;
/// the entry stays until the agent's next sweep, which counts it against the backend (a passive
/// failure for outlier detection) and removes it. A client SYN on it starts a new flow.
pub const CT_REFUSED: u8 = 4;

/// Whether a flow state means the flow is over once the last packets pass: a FIN was seen, or the
/// backend refused the connection.
pub const fn ct_is_closing(state: u8) -> bool {
    state == CT_CLOSING || state == CT_TIME_WAIT || state == CT_REFUSED
}

/// A service key: where clients send packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// VIP, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Zero.
    pub _pad: u8,
}

impl ServiceKey {
    /// The key of (VIP, port, protocol), network order, built from whole words (see [`words`]).
    #[inline(always)]
    pub fn new(addr: u32, port: u16, proto: u8) -> Self {
        let port = port.to_ne_bytes();
        words([addr, u32::from_ne_bytes([port[0], port[1], proto, 0])])
    }
}

/// What the data path needs to know about a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Service id, 1..=[`MAX_SERVICES`]; also the index of its counters.
    pub id: u32,
    /// `SVC_*` flags.
    pub flags: u32,
    /// Which of the two table generations is live (0 or 1).
    pub generation: u32,
    /// Maglev table size (a prime); 0 while the service has no table.
    pub table_size: u32,
    /// Healthy backends in the live table; 0 means drop new flows (counted).
    pub backends: u32,
    /// Zero.
    pub _pad: u32,
}

/// A backend: where flows are sent, and from which local address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendValue {
    /// Backend address, network byte order.
    pub addr: u32,
    /// The local address packets to this backend leave from (the SNAT address), network order.
    pub snat_addr: u32,
    /// Backend port, network byte order.
    pub port: u16,
    /// Zero.
    pub _pad: u16,
    /// `BE_*` flags.
    pub flags: u32,
    /// The service this backend belongs to.
    pub service: u32,
}

/// Builds a key type from whole 32-bit words in memory order.
///
/// The kernel hashes a map key word by word. A key written field by field (bytes and half-words)
/// makes each of those word loads wait for the stores it overlaps to retire, because a CPU cannot
/// forward several narrow stores to one wide load; measured, that cost ~10 ns per lookup on the
/// established-flow path. Writing the key as words avoids it.
#[inline(always)]
fn words<T: Copy, const N: usize>(w: [u32; N]) -> T {
    const { assert!(core::mem::size_of::<T>() == N * 4) };
    // SAFETY: `T` is one of this crate's `repr(C)` key types, all plain integers without implicit
    // padding and exactly `N` words long (asserted above), so every bit pattern is a valid `T`.
    unsafe { core::mem::transmute_copy(&w) }
}

/// Two ports (network order) as the word they form in a key, in memory order.
#[inline(always)]
fn ports_word(first: u16, second: u16) -> u32 {
    let (a, b) = (first.to_ne_bytes(), second.to_ne_bytes());
    u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
}

/// A client-side flow: the packet as the client sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client address.
    pub src_addr: u32,
    /// VIP.
    pub dst_addr: u32,
    /// Client port.
    pub src_port: u16,
    /// VIP port.
    pub dst_port: u16,
    /// Protocol.
    pub proto: u8,
    /// Zero.
    pub _pad: u8,
    /// Zero.
    pub _pad2: u16,
}

impl FlowKey {
    /// The flow of a packet from a client (all network order), built from whole words.
    #[inline(always)]
    pub fn new(src_addr: u32, dst_addr: u32, src_port: u16, dst_port: u16, proto: u8) -> Self {
        words([src_addr, dst_addr, ports_word(src_port, dst_port), u32::from_ne_bytes([proto, 0, 0, 0])])
    }
}

/// Where a client flow goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Backend id.
    pub backend: u32,
    /// The SNAT port, network byte order.
    pub nat_port: u16,
    /// `CT_*`.
    pub state: u8,
    /// Zero.
    pub _pad: u8,
    /// Last packet seen (either direction), on the data path's clock (CLOCK_MONOTONIC at tick
    /// granularity, see [`Settings::clock_ns_per_tick`]), and coarser still: it is refreshed at
    /// most once per [`LAST_SEEN_GRANULARITY_NS`] to keep writes off the fast path.
    pub last_seen_ns: u64,
    /// When the flow was created.
    pub created_ns: u64,
}

/// How stale `last_seen_ns` may get before a packet refreshes it.
pub const LAST_SEEN_GRANULARITY_NS: u64 = 1_000_000_000;

/// A reply as the backend sends it: backend → SNAT address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatKey {
    /// Backend address.
    pub backend_addr: u32,
    /// SNAT address.
    pub snat_addr: u32,
    /// Backend port.
    pub backend_port: u16,
    /// SNAT port.
    pub nat_port: u16,
    /// Protocol.
    pub proto: u8,
    /// Zero.
    pub _pad: u8,
    /// Zero.
    pub _pad2: u16,
}

impl NatKey {
    /// The key of a reply (all network order), built from whole words.
    #[inline(always)]
    pub fn new(backend_addr: u32, snat_addr: u32, backend_port: u16, nat_port: u16, proto: u8) -> Self {
        words([backend_addr, snat_addr, ports_word(backend_port, nat_port), u32::from_ne_bytes([proto, 0, 0, 0])])
    }

    /// The key of replies from backend `be` to SNAT port `nat_port` (network order).
    #[inline(always)]
    pub fn for_backend(be: &BackendValue, nat_port: u16, proto: u8) -> Self {
        Self::new(be.addr, be.snat_addr, be.port, nat_port, proto)
    }
}

/// How to translate a reply back: it leaves as VIP:port → client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatValue {
    /// Client address.
    pub client_addr: u32,
    /// VIP.
    pub vip: u32,
    /// Client port.
    pub client_port: u16,
    /// VIP port.
    pub vip_port: u16,
    /// Backend id (for its counters).
    pub backend: u32,
}

/// A cached route to a backend: what `bpf_fib_lookup` answered, reused until `expires_ns` so that
/// the per-packet path skips the FIB and neighbour lookups (the dearest part of it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Time (the data path's clock) after which the entry must be looked up again.
    pub expires_ns: u64,
    /// Egress interface.
    pub ifindex: u32,
    /// Destination MAC.
    pub dmac: [u8; 6],
    /// Source MAC.
    pub smac: [u8; 6],
}

/// How long a cached next hop is trusted: a neighbour's new MAC is picked up within this time.
pub const NEXTHOP_TTL_NS: u64 = 1_000_000_000;

/// Per-CPU traffic counters of a service or a backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets steered (both directions).
    pub packets: u64,
    /// Bytes steered (frame lengths).
    pub bytes: u64,
    /// New flows assigned.
    pub new_flows: u64,
}

/// Data-path settings written once by the agent at start.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// First SNAT port (host order).
    pub nat_port_min: u32,
    /// Number of SNAT ports; 0 disables steering (the agent has not configured the data path).
    pub nat_port_count: u32,
    /// A UDP flow idle longer than this picks a backend again.
    pub udp_timeout_ns: u64,
    /// How many entries of `vips` are used.
    pub vip_count: u32,
    /// Padding.
    pub _pad: u32,
    /// Every VIP address (network order), each once: the data path compares a packet's
    /// destination with these before any hash lookup, which keeps both other traffic and
    /// established flows off the services map.
    pub vips: [u32; MAX_SERVICES as usize],
    /// Nanoseconds per kernel tick (1e9 / CONFIG_HZ, rounded as the kernel rounds it).
    ///
    /// The data path's clock is `jiffies × clock_ns_per_tick + clock_offset_ns`. `bpf_jiffies64`
    /// is inlined by the JIT into one load, while `bpf_ktime_get_coarse_ns` is a helper call that
    /// cost ~15 ns per packet (measured with `BPF_PROG_TEST_RUN`). The kernel does not publish
    /// its tick rate, so the agent measures it and the offset at start (edge-dataplane's `clock`),
    /// which makes the clock CLOCK_MONOTONIC to within a tick or two.
    pub clock_ns_per_tick: u64,
    /// See [`Self::clock_ns_per_tick`] (wrapping arithmetic).
    pub clock_offset_ns: u64,
}

impl Settings {
    /// The data path's clock for a `jiffies` reading (see [`Self::clock_ns_per_tick`]).
    #[inline(always)]
    pub fn clock_ns(&self, jiffies: u64) -> u64 {
        jiffies.wrapping_mul(self.clock_ns_per_tick).wrapping_add(self.clock_offset_ns)
    }

    /// Whether `addr` (network order) is a VIP address.
    #[inline(always)]
    pub fn is_vip(&self, addr: u32) -> bool {
        // Only the used entries are compared (usually one); the bound keeps the verifier sure
        // of the index.
        let n = if self.vip_count < MAX_SERVICES { self.vip_count as usize } else { MAX_SERVICES as usize };
        let mut i = 0;
        while i < n {
            // `get`, not indexing: a data-path program must have no panic branch.
            if self.vips.get(i) == Some(&addr) {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// What happened to a packet, counted per CPU in the events map. Drops carry their reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Not for a VIP and not a NAT reply: passed untouched.
    Passed = 0,
    /// A packet for a VIP forwarded to its backend.
    Forwarded = 1,
    /// A reply translated back toward the client.
    Replied = 2,
    /// A new flow got a backend.
    NewFlow = 3,
    /// Drop: the service has no healthy backend.
    DropNoBackend = 4,
    /// Drop: no free SNAT port for this backend.
    DropNatPorts = 5,
    /// Drop: the route lookup failed (no route, blackhole, or a down interface).
    DropNoRoute = 6,
    /// Drop: a VIP packet with a malformed IPv4 or L4 header.
    DropMalformed = 7,
    /// Drop: the flow's backend left the backends map.
    DropStaleBackend = 8,
    /// Drop: a conntrack insert failed.
    DropConntrack = 9,
    /// Drop: a TCP packet other than SYN for a VIP flow conntrack does not know.
    DropNoFlow = 10,
    /// An IPv4 fragment to a VIP: passed to the kernel (not balanced).
    FragmentPassed = 11,
    /// The next hop's MAC is not known yet: XDP passed the packet to TC, which resolves it.
    NeighPassed = 12,
    /// Steering is off (the agent has not written the settings): passed.
    NotConfigured = 13,
    /// XDP saw an L4 checksum that is only the pseudo-header sum (a CHECKSUM_PARTIAL packet from a
    /// local sender, e.g. a veth peer with checksum offload): passed to TC, which has the skb's
    /// checksum state and rewrites it correctly.
    PartialCsumPassed = 14,
}

/// Number of [`Event`] slots.
pub const EVENTS_LEN: u32 = 15;

impl Event {
    /// All events, in index order.
    pub const ALL: [Event; EVENTS_LEN as usize] = [
        Event::Passed,
        Event::Forwarded,
        Event::Replied,
        Event::NewFlow,
        Event::DropNoBackend,
        Event::DropNatPorts,
        Event::DropNoRoute,
        Event::DropMalformed,
        Event::DropStaleBackend,
        Event::DropConntrack,
        Event::DropNoFlow,
        Event::FragmentPassed,
        Event::NeighPassed,
        Event::NotConfigured,
        Event::PartialCsumPassed,
    ];

    /// A stable snake_case name for metrics and `edge-agent maps stats`.
    pub const fn name(self) -> &'static str {
        match self {
            Event::Passed => "passed",
            Event::Forwarded => "forwarded",
            Event::Replied => "replied",
            Event::NewFlow => "new_flow",
            Event::DropNoBackend => "drop_no_backend",
            Event::DropNatPorts => "drop_nat_ports",
            Event::DropNoRoute => "drop_no_route",
            Event::DropMalformed => "drop_malformed",
            Event::DropStaleBackend => "drop_stale_backend",
            Event::DropConntrack => "drop_conntrack",
            Event::DropNoFlow => "drop_no_flow",
            Event::FragmentPassed => "fragment_passed",
            Event::NeighPassed => "neigh_passed",
            Event::NotConfigured => "not_configured",
            Event::PartialCsumPassed => "partial_csum_passed",
        }
    }

    /// Whether this event is a drop.
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Event::DropNoBackend
                | Event::DropNatPorts
                | Event::DropNoRoute
                | Event::DropMalformed
                | Event::DropStaleBackend
                | Event::DropConntrack
                | Event::DropNoFlow
        )
    }
}

/// Index into the Maglev array of slot `slot` of service `service` (1-based) in `generation`.
/// Each service owns two consecutive regions of `table_size` entries (the two generations), so
/// the agent can fill one while the data path reads the other, then flip `generation`.
#[inline(always)]
pub const fn table_index(service: u32, generation: u32, table_size: u32, slot: u32) -> u32 {
    ((service - 1) * 2 + generation) * table_size + slot
}

/// Entries in the Maglev array for `services` services of `table_size` slots.
pub const fn table_entries(services: u32, table_size: u32) -> u32 {
    services * 2 * table_size
}

/// The flow hash the data path uses to pick a Maglev slot: the client address alone, or the
/// 5-tuple. Shared so the agent's tests can predict a flow's slot.
#[inline(always)]
pub const fn flow_hash(src: u32, dst: u32, sport: u16, dport: u16, proto: u8, source_only: bool) -> u32 {
    let mut h: u64 = src as u64;
    if !source_only {
        h ^= (dst as u64) << 32;
        h = fmix64(h) ^ (((sport as u64) << 32) | ((dport as u64) << 16) | proto as u64);
    }
    (fmix64(h) >> 32) as u32
}

/// The 64-bit finaliser of MurmurHash3: every input bit affects every output bit. Cheap, and good
/// enough to spread 5-tuples over a table; the agent's stable key hash ends with it too.
#[inline(always)]
pub const fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// What the data path reports to the monitor ring buffer (`MonitorSettings::flags`): drops.
pub const MONITOR_DROPS: u32 = 1;
/// ... and new flows.
pub const MONITOR_FLOWS: u32 = 2;
/// The highest `MonitorSettings::rate` the data path honours (events a second per CPU).
pub const MONITOR_MAX_RATE: u32 = 100_000;
/// Size of the monitor ring buffer in bytes (a power of two; 8,192 events).
pub const MONITOR_RING_BYTES: u32 = 256 * 1024;

/// The monitor's switches (one entry, written by the agent): all zero, the default, is off, and
/// then the data path reads this one value on a drop or a new flow and reports nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorSettings {
    /// `MONITOR_DROPS` and `MONITOR_FLOWS`.
    pub flags: u32,
    /// Most events a second per CPU (a token bucket in the kernel; the rest are counted, not
    /// reported).
    pub rate: u32,
}

/// One event in the monitor ring buffer. Addresses and ports in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorEvent {
    /// What happened: an [`Event`] index (a drop's reason, or `NewFlow`).
    pub event: u32,
    /// The interface the packet came in on (0 where the hook does not know it).
    pub ifindex: u32,
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port (0 when the header could not be read).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Explicit padding.
    pub _pad: [u8; 3],
    /// Events this CPU could not report since its last reported one (rate limit or full buffer).
    pub lost: u32,
    /// Explicit padding.
    pub _pad2: u32,
}

/// A CPU's token bucket for the monitor's rate limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorBudget {
    /// Tokens, in nanosecond-events (one event costs a billion).
    pub tokens: u64,
    /// When the bucket was last filled (the data path's clock, ns).
    pub last_ns: u64,
    /// Events not reported since the last reported one.
    pub lost: u32,
    /// Explicit padding.
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) plain data with explicit padding and no pointers; any bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::BackendValue {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowValue {}
    unsafe impl aya::Pod for super::NatKey {}
    unsafe impl aya::Pod for super::NatValue {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::MonitorSettings {}
    unsafe impl aya::Pod for super::MonitorEvent {}
    unsafe impl aya::Pod for super::MonitorBudget {}
}
