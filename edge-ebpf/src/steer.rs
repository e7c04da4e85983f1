//! The steering decision, shared by the XDP and TC entry points: is this packet for a VIP (pick or
//! keep a backend, full NAT toward it), a reply from a backend (translate back toward the client),
//! or neither (pass untouched)? It updates conntrack and reverse NAT, but does not touch the packet;
//! the caller applies the returned [`Rewrite`] in its own way (XDP writes bytes and checksums
//! itself, TC uses the skb helpers that also handle checksum offload and GSO).

use edge_common::{
    BE_ACTIVE, BackendValue, CT_CLOSING, CT_ESTABLISHED, CT_NEW, CT_REFUSED, CT_TIME_WAIT, Event, FlowKey, FlowValue,
    LAST_SEEN_GRANULARITY_NS, NatKey, NatValue, PROTO_TCP, SVC_HASH_SOURCE, ServiceKey, ServiceValue, Settings,
    flow_hash, table_index,
};

use crate::clock::now;
use crate::maps::{BACKEND_STATS, BACKENDS, CONNTRACK, MAGLEV, REVNAT, SERVICE_STATS, SERVICES, SETTINGS, add, count};
use crate::monitor::report;
use crate::parse::{Packet, Parsed, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Tuple, parse};

/// How many SNAT ports a new flow tries before it is dropped as "ports exhausted".
const NAT_PORT_TRIES: u32 = 8;
/// Step between a flow's SNAT port candidates (the golden ratio in 32 bits: successive candidates
/// spread over the whole range instead of clustering).
const NAT_PORT_STEP: u32 = 0x9e37_79b1;

/// The new addresses and ports of a packet (network order).
#[derive(Clone, Copy)]
pub struct Rewrite {
    /// New source address.
    pub src: u32,
    /// New destination address.
    pub dst: u32,
    /// New source port.
    pub sport: u16,
    /// New destination port.
    pub dport: u16,
    /// Whether this is a reply (counted as such).
    pub reply: bool,
    /// The backend id for a forwarded packet (its next hop may be cached), 0 for a reply.
    pub backend: u32,
    /// Time of the decision (the data path's clock).
    pub now: u64,
}

impl Rewrite {
    /// A client packet of a flow to backend `id` (`be`), leaving from SNAT port `nat_port`.
    #[inline(always)]
    fn to_backend(be: &BackendValue, id: u32, nat_port: u16, now: u64) -> Self {
        Self { src: be.snat_addr, dst: be.addr, sport: nat_port, dport: be.port, reply: false, backend: id, now }
    }
}

/// The decision for one packet.
pub enum Verdict {
    /// Pass or drop, counted.
    Settled(Settled),
    /// Rewrite and forward.
    Forward(Rewrite),
}

/// A packet that is not forwarded; both hooks count it the same and differ only in their codes.
pub enum Settled {
    /// Not ours: pass untouched, counted under the event.
    Pass(Event),
    /// Drop, counted under the event (the reason), and reported to the monitor with the tuple.
    Drop(Event, Tuple),
}

impl Verdict {
    #[inline(always)]
    const fn pass(e: Event) -> Self {
        Self::Settled(Settled::Pass(e))
    }

    #[inline(always)]
    fn drop(e: Event, p: &Packet) -> Self {
        Self::Settled(Settled::Drop(e, Tuple::of(p)))
    }
}

impl Settled {
    /// Counts the event (and reports a drop to the monitor, with the interface it came in on) and
    /// returns the hook's code for it: `pass` or `drop`.
    #[inline(always)]
    pub fn action<A>(self, pass: A, drop: A, ifindex: u32) -> A {
        match self {
            Settled::Pass(e) => {
                count(e);
                pass
            }
            Settled::Drop(e, t) => {
                count(e);
                report(e, &t, ifindex);
                drop
            }
        }
    }
}

/// Parses a frame for [`decide`]; a frame that is no TCP/UDP packet to decide on is settled here:
/// other traffic and fragments pass, a malformed TCP/UDP header toward a VIP address is dropped
/// (one toward anything else passes; the kernel deals with it as it would without us).
#[inline(always)]
pub fn parse_packet(data: usize, data_end: usize) -> Result<Packet, Settled> {
    match parse(data, data_end) {
        Parsed::Ok(p) => Ok(p),
        Parsed::Other => Err(Settled::Pass(Event::Passed)),
        Parsed::Fragment => Err(Settled::Pass(Event::FragmentPassed)),
        Parsed::Malformed(t) if is_vip_addr(t.dst) => Err(Settled::Drop(Event::DropMalformed, t)),
        Parsed::Malformed(_) => Err(Settled::Pass(Event::Passed)),
    }
}

/// Whether any service uses `addr` as its VIP (malformed packets carry no trustworthy port, so
/// the address alone decides), from the VIP list in the settings.
#[inline(always)]
fn is_vip_addr(addr: u32) -> bool {
    settings().is_some_and(|s| s.is_vip(addr))
}

/// Decides what to do with a parsed packet of `len` bytes.
#[inline(always)]
pub fn decide(p: &Packet, len: u64) -> Verdict {
    // Until the agent has written the settings nothing is steered (and counted as such).
    let Some(settings) = settings() else { return Verdict::pass(Event::NotConfigured) };
    // A VIP address can also be a SNAT address (one interface, one host address), so a packet to
    // it that is neither a flow's nor a service's may still be a reply.
    if settings.is_vip(p.dst) {
        // Every packet but a TCP SYN first looks for its flow: an established flow needs no
        // service lookup (its backend is in the flow), so the common case costs one hash lookup.
        if let Some((fkey, ct, flow, now)) = live_flow(p, settings) {
            return established(p, &fkey, ct, &flow, now, len);
        }
        // Without a live flow the service decides; a port that is no service's may be a reply.
        // SAFETY: the value is only read; the agent replaces whole values with single updates.
        if let Some(svc) = unsafe { SERVICES.get(service_key(p)) } {
            let svc = *svc;
            return forward(p, &svc, settings, len);
        }
    }
    // Replies go to a SNAT port: anything else skips the reverse-NAT lookup, which keeps the
    // cost of traffic that is not ours low.
    if u32::from(u16::from_be(p.dport)).wrapping_sub(settings.nat_port_min) >= settings.nat_port_count {
        return Verdict::pass(Event::Passed);
    }
    let nkey = reply_key(p);
    // SAFETY: read-only copy of a map value.
    if let Some(nat) = unsafe { REVNAT.get(nkey) } {
        let nat = *nat;
        return reply(p, &nkey, &nat, settings, len);
    }
    Verdict::pass(Event::Passed)
}

/// The live flow of a packet to a VIP address, unless it is a TCP SYN (which may start a new flow
/// on a closing one) or a UDP flow that idled out.
#[inline(always)]
fn live_flow(p: &Packet, settings: &Settings) -> Option<(FlowKey, *mut FlowValue, FlowValue, u64)> {
    let tcp = p.proto == PROTO_TCP;
    if tcp && p.tcp_flags & TCP_SYN != 0 {
        return None;
    }
    let fkey = flow_key(p);
    let ct = CONNTRACK.get_ptr_mut(fkey)?;
    // SAFETY: see `forward`.
    let flow = unsafe { *ct };
    let now = now(settings);
    if tcp || now.saturating_sub(flow.last_seen_ns) < settings.udp_timeout_ns {
        Some((fkey, ct, flow, now))
    } else {
        None
    }
}

/// The conntrack key of a packet from a client.
#[inline(always)]
fn flow_key(p: &Packet) -> FlowKey {
    FlowKey::new(p.src, p.dst, p.sport, p.dport, p.proto)
}

/// The service a packet is addressed to.
#[inline(always)]
fn service_key(p: &Packet) -> ServiceKey {
    ServiceKey::new(p.dst, p.dport, p.proto)
}

/// The reverse-NAT entry a packet would match if it were a reply from a backend.
#[inline(always)]
fn reply_key(p: &Packet) -> NatKey {
    NatKey::new(p.src, p.dst, p.sport, p.dport, p.proto)
}

/// Whether the packet is for a service or a reply to a NAT flow (without changing any state).
#[inline(always)]
pub fn ours(p: &Packet) -> bool {
    let skey = service_key(p);
    let nkey = reply_key(p);
    // SAFETY: read-only lookups.
    unsafe { SERVICES.get(skey).is_some() || REVNAT.get(nkey).is_some() }
}

/// The agent's settings, once it has written them.
#[inline(always)]
pub fn settings() -> Option<&'static Settings> {
    let s = SETTINGS.get(0)?;
    if s.nat_port_count == 0 { None } else { Some(s) }
}

#[inline(always)]
fn forward(p: &Packet, svc: &ServiceValue, settings: &Settings, len: u64) -> Verdict {
    let now = now(settings);
    let fkey = flow_key(p);
    let tcp = p.proto == PROTO_TCP;
    let syn = tcp && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;

    let existing = CONNTRACK.get_ptr_mut(fkey);
    if let Some(ct) = existing {
        // SAFETY: a pointer into the LRU map's value; races with other CPUs only on the coarse
        // timestamp and state bytes, which tolerate a lost update.
        let flow = unsafe { *ct };
        let reuse = if tcp {
            // A SYN on a closing flow is the client reusing its port: a new flow.
            !(syn && edge_common::ct_is_closing(flow.state))
        } else {
            now.saturating_sub(flow.last_seen_ns) < settings.udp_timeout_ns
        };
        if reuse {
            return established(p, &fkey, ct, &flow, now, len);
        }
        // The old flow is over: release its SNAT port before it gets a new one.
        if let Some(be) = BACKENDS.get(flow.backend) {
            let be = *be;
            forget(&fkey, &flow, &be, p.proto);
        }
    } else if tcp && !syn {
        return Verdict::drop(Event::DropNoFlow, p);
    }
    new_flow(p, svc, settings, &fkey, now, len)
}

/// A packet of a live flow: it follows the flow's backend, whatever the table says now.
#[inline(always)]
fn established(p: &Packet, fkey: &FlowKey, ct: *mut FlowValue, flow: &FlowValue, now: u64, len: u64) -> Verdict {
    let Some(be) = BACKENDS.get(flow.backend) else { return Verdict::drop(Event::DropStaleBackend, p) };
    if be.flags & BE_ACTIVE == 0 {
        return Verdict::drop(Event::DropStaleBackend, p);
    }
    let be = *be;
    if p.proto == PROTO_TCP && p.tcp_flags & TCP_RST != 0 {
        forget(fkey, flow, &be, p.proto);
    } else {
        touch(ct, flow, now, p.tcp_flags & TCP_FIN != 0, CT_CLOSING);
    }
    add(&SERVICE_STATS, be.service, len, false);
    add(&BACKEND_STATS, flow.backend, len, false);
    Verdict::Forward(Rewrite::to_backend(&be, flow.backend, flow.nat_port, now))
}

#[inline(always)]
fn new_flow(p: &Packet, svc: &ServiceValue, settings: &Settings, fkey: &FlowKey, now: u64, len: u64) -> Verdict {
    if svc.backends == 0 || svc.table_size == 0 || svc.id == 0 || svc.generation > 1 {
        return Verdict::drop(Event::DropNoBackend, p);
    }
    let hash = flow_hash(p.src, p.dst, p.sport, p.dport, p.proto, svc.flags & SVC_HASH_SOURCE != 0);
    let slot = hash % svc.table_size;
    let Some(&id) = MAGLEV.get(table_index(svc.id, svc.generation, svc.table_size, slot)) else {
        return Verdict::drop(Event::DropNoBackend, p);
    };
    let Some(be) = BACKENDS.get(id) else { return Verdict::drop(Event::DropNoBackend, p) };
    if id == 0 || be.flags & BE_ACTIVE == 0 {
        return Verdict::drop(Event::DropNoBackend, p);
    }
    let be = *be;
    let nat = NatValue { client_addr: p.src, vip: p.dst, client_port: p.sport, vip_port: p.dport, backend: id };
    let mut nkey = NatKey::for_backend(&be, 0, p.proto);
    let count = settings.nat_port_count.max(1);
    // The SNAT port is a function of the client's tuple (its own port when that lies in the range,
    // like masquerading): a client that reuses its port gets the backend-side tuple it had before,
    // which the backend's TIME_WAIT accepts (its timestamps continue), while a different client
    // tuple landing on a port in TIME_WAIT would be refused by PAWS and stall for a SYN timeout.
    let client_port = u32::from(u16::from_be(p.sport));
    let start = if client_port.wrapping_sub(settings.nat_port_min) < count {
        client_port - settings.nat_port_min
    } else if svc.flags & SVC_HASH_SOURCE == 0 {
        hash
    } else {
        flow_hash(p.src, p.dst, p.sport, p.dport, p.proto, false)
    };
    let mut got = false;
    let mut i: u32 = 0;
    while i < NAT_PORT_TRIES {
        let offset = start.wrapping_add(i.wrapping_mul(NAT_PORT_STEP)) % count;
        nkey.nat_port = ((settings.nat_port_min + offset) as u16).to_be();
        // BPF_NOEXIST: the port is ours only if no other flow to this backend holds it.
        if REVNAT.insert(nkey, nat, 1).is_ok() {
            got = true;
            break;
        }
        i += 1;
    }
    if !got {
        crate::rare::nat_ports(&Tuple::of(p), be.addr, be.port, count);
        return Verdict::drop(Event::DropNatPorts, p);
    }
    let flow =
        FlowValue { backend: id, nat_port: nkey.nat_port, state: CT_NEW, _pad: 0, last_seen_ns: now, created_ns: now };
    if let Err(rc) = CONNTRACK.insert(fkey, flow, 0) {
        crate::rare::conntrack(&Tuple::of(p), rc);
        let _ = REVNAT.remove(nkey);
        return Verdict::drop(Event::DropConntrack, p);
    }
    add(&SERVICE_STATS, svc.id, len, true);
    add(&BACKEND_STATS, id, len, true);
    crate::maps::count(Event::NewFlow);
    report(Event::NewFlow, &Tuple::of(p), 0);
    Verdict::Forward(Rewrite::to_backend(&be, id, nkey.nat_port, now))
}

#[inline(always)]
fn reply(p: &Packet, nkey: &NatKey, nat: &NatValue, settings: &Settings, len: u64) -> Verdict {
    let fkey = FlowKey::new(nat.client_addr, nat.vip, nat.client_port, nat.vip_port, p.proto);
    let now = now(settings);
    if let Some(ct) = CONNTRACK.get_ptr_mut(fkey) {
        // SAFETY: as in `forward`.
        let flow = unsafe { *ct };
        if p.proto == PROTO_TCP && p.tcp_flags & TCP_RST != 0 {
            if flow.state == CT_NEW {
                // A RST answering the SYN: the backend refused. Kept for the agent's sweep to
                // count against the backend, which removes it.
                // SAFETY: as above.
                unsafe { (*ct).state = CT_REFUSED };
            } else {
                let _ = CONNTRACK.remove(fkey);
                let _ = REVNAT.remove(nkey);
            }
        } else {
            let fin = p.tcp_flags & TCP_FIN != 0;
            if flow.state == CT_NEW && !fin {
                // SAFETY: as above.
                unsafe { (*ct).state = CT_ESTABLISHED };
            }
            // A first FIN from the backend means the backend will sit in TIME_WAIT.
            touch(ct, &flow, now, fin, CT_TIME_WAIT);
        }
    }
    if let Some(be) = BACKENDS.get(nat.backend) {
        add(&SERVICE_STATS, be.service, len, false);
    }
    add(&BACKEND_STATS, nat.backend, len, false);
    Verdict::Forward(Rewrite {
        src: nat.vip,
        dst: nat.client_addr,
        sport: nat.vip_port,
        dport: nat.client_port,
        reply: true,
        backend: 0,
        now,
    })
}

/// Refreshes the coarse last-seen time, and on the first FIN marks the flow `closing` (the state
/// that says which side closed first).
#[inline(always)]
fn touch(ct: *mut FlowValue, flow: &FlowValue, now: u64, fin: bool, closing: u8) {
    // SAFETY: `ct` points at a live map value (see `forward`).
    unsafe {
        if now.saturating_sub(flow.last_seen_ns) > LAST_SEEN_GRANULARITY_NS {
            (*ct).last_seen_ns = now;
        }
        if fin && !edge_common::ct_is_closing(flow.state) {
            (*ct).state = closing;
        }
    }
}

/// Removes a flow and its reverse NAT entry (which frees its SNAT port).
#[inline(always)]
fn forget(fkey: &FlowKey, flow: &FlowValue, be: &BackendValue, proto: u8) {
    let nkey = NatKey::for_backend(be, flow.nat_port, proto);
    let _ = CONNTRACK.remove(fkey);
    let _ = REVNAT.remove(nkey);
}
