//! `BPF_PROG_TEST_RUN` tests of the real embedded object: seeded maps, crafted frames, and checks
//! of verdicts, rewritten bytes (addresses, ports, MACs, checksums), conntrack and counters.
//! They need root; the harness (`main.rs`) reports them as ignored without it.

use crate::bpf::{self, *};
use edge_common::{
    CT_CLOSING, CT_ESTABLISHED, CT_NEW, CT_REFUSED, CT_TIME_WAIT, Event, PROTO_TCP, PROTO_UDP, SVC_HASH_SOURCE,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

fn client(port: u16) -> (std::net::Ipv4Addr, u16) {
    (CLIENT, port)
}

/// Sends a SYN through XDP and returns the rewritten view.
fn syn(h: &mut Harness, port: u16) -> View {
    let (v, out) = h.xdp(&frame(client(port), (VIP, 80), PROTO_TCP, SYN, &[]));
    assert_eq!(v, XDP_REDIRECT, "a SYN to the VIP is redirected toward its backend");
    view(&out)
}

fn syn_to_vip_is_full_natted_toward_a_backend() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let out = syn(&mut h, 40000);
        assert!(BACKENDS.contains(&out.dst), "destination is a backend: {out:?}");
        assert_eq!(out.dport, 8080);
        assert_eq!(out.src, VIP, "source is the SNAT address");
        assert!((NAT_PORTS.0..=NAT_PORTS.1).contains(&out.sport), "NAT port {} in range", out.sport);
        assert_eq!(out.dmac, BACKEND_MAC, "next hop MAC from bpf_fib_lookup");
        assert!(out.ip_ok && out.l4_ok, "checksums stay valid: {out:?}");

        let flow = h.flow(&flow_key(client(40000), 80, PROTO_TCP)).expect("conntrack entry");
        assert_eq!(flow.state, CT_NEW);
        assert_eq!(u16::from_be(flow.nat_port), out.sport);
        let backend = BACKENDS.iter().position(|b| *b == out.dst).unwrap() as u32 + 1;
        assert_eq!(flow.backend, backend);
        let nat = h.nat(&nat_key(out.dst, flow.nat_port, PROTO_TCP)).expect("reverse NAT entry");
        assert_eq!(nat.client_addr, u32::from(CLIENT).to_be());
        assert_eq!(h.event(Event::NewFlow), 1);
        assert_eq!(h.event(Event::Forwarded), 1);
        let c = h.backend_counters(backend);
        assert_eq!((c.packets, c.new_flows), (1, 1));
        assert_eq!(c.bytes, 54);
    });
}

fn established_flow_keeps_its_backend_when_the_table_changes() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let first = syn(&mut h, 40001);
        let backend = BACKENDS.iter().position(|b| *b == first.dst).unwrap() as u32 + 1;
        // Swap in a table (generation 1) that holds only another backend.
        let other = backend % 3 + 1;
        h.write_table(1, &[other]);
        h.set_service(80, PROTO_TCP, 1, 1, 0);
        let (v, out) = h.xdp(&frame(client(40001), (VIP, 80), PROTO_TCP, ACK, b"GET / HTTP/1.1\r\n\r\n"));
        assert_eq!(v, XDP_REDIRECT);
        let out = view(&out);
        assert_eq!((out.dst, out.sport), (first.dst, first.sport), "same backend and NAT port");
        assert!(out.ip_ok && out.l4_ok);
        // A new flow uses the new table.
        let new = syn(&mut h, 40002);
        assert_eq!(new.dst, BACKENDS[other as usize - 1]);
    });
}

fn replies_are_translated_back_by_tc() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let fwd = syn(&mut h, 40003);
        let reply = frame((fwd.dst, 8080), (VIP, fwd.sport), PROTO_TCP, SYN | ACK, &[]);
        let (v, out) = h.tc(&reply);
        assert_eq!(v, TC_ACT_REDIRECT, "the reply is redirected toward the client");
        let out = view(&out);
        assert_eq!((out.src, out.sport, out.dst, out.dport), (VIP, 80, CLIENT, 40003));
        assert_eq!(out.dmac, CLIENT_MAC);
        assert!(out.ip_ok && out.l4_ok, "checksums stay valid: {out:?}");
        assert_eq!(h.flow(&flow_key(client(40003), 80, PROTO_TCP)).unwrap().state, CT_ESTABLISHED);
        assert_eq!(h.event(Event::Replied), 1);
        // The same reply through XDP (the one-interface case) is translated alike.
        let (v, out) = h.xdp(&reply);
        assert_eq!(v, XDP_REDIRECT);
        let out = view(&out);
        assert_eq!((out.src, out.sport, out.dst, out.dport), (VIP, 80, CLIENT, 40003));
        assert!(out.ip_ok && out.l4_ok);
    });
}

fn tc_steers_client_packets_too() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let (v, out) = h.tc(&frame(client(40004), (VIP, 80), PROTO_TCP, SYN, &[]));
        assert_eq!(v, TC_ACT_REDIRECT);
        let out = view(&out);
        assert!(BACKENDS.contains(&out.dst) && out.ip_ok && out.l4_ok, "{out:?}");
    });
}

fn fin_marks_closing_and_a_new_syn_starts_a_new_flow() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        syn(&mut h, 40005);
        let key = flow_key(client(40005), 80, PROTO_TCP);
        let (v, _) = h.xdp(&frame(client(40005), (VIP, 80), PROTO_TCP, FIN | ACK, &[]));
        assert_eq!(v, XDP_REDIRECT, "the FIN itself is forwarded");
        assert_eq!(h.flow(&key).unwrap().state, CT_CLOSING);
        let before = h.event(Event::NewFlow);
        syn(&mut h, 40005);
        assert_eq!(h.event(Event::NewFlow), before + 1, "a SYN on a closing flow is a new flow");
        assert_eq!(h.flow(&key).unwrap().state, CT_NEW);
    });
}

fn a_backend_fin_marks_time_wait_and_the_client_tuple_keeps_its_snat_port() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let first = syn(&mut h, 40010);
        let key = flow_key(client(40010), 80, PROTO_TCP);
        // The backend closes first (HTTP with Connection: close): it will sit in TIME_WAIT.
        let fin = frame((first.dst, 8080), (VIP, first.sport), PROTO_TCP, FIN | ACK, &[]);
        assert_eq!(h.tc(&fin).0, TC_ACT_REDIRECT);
        assert_eq!(h.flow(&key).unwrap().state, CT_TIME_WAIT);
        // The client reuses its port: same backend (same 5-tuple, same table) and the same SNAT
        // port, so the backend sees the tuple of its TIME_WAIT connection and accepts the SYN.
        let again = syn(&mut h, 40010);
        assert_eq!((again.dst, again.sport), (first.dst, first.sport));
        assert_eq!(h.flow(&key).unwrap().state, CT_NEW);
        // A client that closes first leaves the flow closing (no TIME_WAIT at the backend).
        let (v, _) = h.xdp(&frame(client(40010), (VIP, 80), PROTO_TCP, FIN | ACK, &[]));
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(h.flow(&key).unwrap().state, CT_CLOSING);
    });
}

fn a_client_port_inside_the_snat_range_is_kept_and_collisions_move_on() {
    in_test_netns(|| {
        let mut h = Harness::load();
        // One backend, so every flow competes for the same SNAT ports.
        h.seed_service(80, PROTO_TCP, 1, 0);
        let port = NAT_PORTS.0 + 7;
        let out = syn(&mut h, port);
        assert_eq!(out.sport, port, "a client port inside the SNAT range is kept, as masquerading does");
        // Another client address with the same port cannot have it: it gets another free port.
        let other = std::net::Ipv4Addr::new(10, 9, 9, 9);
        let (v, out2) = h.xdp(&frame((other, port), (VIP, 80), PROTO_TCP, SYN, &[]));
        assert_eq!(v, XDP_REDIRECT);
        let out2 = view(&out2);
        assert_ne!(out2.sport, port);
        assert!((NAT_PORTS.0..=NAT_PORTS.1).contains(&out2.sport));
        // Client ports outside the range map to a port chosen from the tuple: the same tuple gets
        // the same port after its flow was released.
        let a = syn(&mut h, 50000);
        let (v, _) = h.xdp(&frame(client(50000), (VIP, 80), PROTO_TCP, RST, &[]));
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(syn(&mut h, 50000).sport, a.sport);
    });
}

fn rst_removes_the_flow_and_its_nat_entry() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let out = syn(&mut h, 40006);
        let key = flow_key(client(40006), 80, PROTO_TCP);
        let nat = nat_key(out.dst, out.sport.to_be(), PROTO_TCP);
        assert!(h.nat(&nat).is_some());
        let (v, fwd) = h.xdp(&frame(client(40006), (VIP, 80), PROTO_TCP, RST, &[]));
        assert_eq!(v, XDP_REDIRECT, "the RST is forwarded to the backend");
        assert!(view(&fwd).l4_ok);
        assert!(h.flow(&key).is_none() && h.nat(&nat).is_none(), "both entries are gone");
        // A later ACK of that flow is unknown: dropped and counted.
        let (v, _) = h.xdp(&frame(client(40006), (VIP, 80), PROTO_TCP, ACK, &[]));
        assert_eq!(v, XDP_DROP);
        assert_eq!(h.event(Event::DropNoFlow), 1);
    });
}

fn a_rst_answering_the_syn_marks_the_flow_refused_for_the_sweep() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let out = syn(&mut h, 40007);
        let key = flow_key(client(40007), 80, PROTO_TCP);
        // The backend's port is closed: it answers the SYN with a RST.
        let rst = frame((out.dst, 8080), (VIP, out.sport), PROTO_TCP, RST | ACK, &[]);
        let (v, back) = h.tc(&rst);
        assert_eq!(v, TC_ACT_REDIRECT, "the RST reaches the client");
        assert_eq!((view(&back).dst, view(&back).dport), (CLIENT, 40007));
        assert_eq!(h.flow(&key).unwrap().state, CT_REFUSED, "kept for the sweep to count");
        // The client's next SYN on the same tuple is a new flow.
        let before = h.event(Event::NewFlow);
        let again = syn(&mut h, 40007);
        assert_eq!(h.event(Event::NewFlow), before + 1);
        assert_eq!(h.flow(&key).unwrap().state, CT_NEW);
        // A RST on an established flow still removes it at once.
        let ack = frame((again.dst, 8080), (VIP, again.sport), PROTO_TCP, SYN | ACK, &[]);
        assert_eq!(h.tc(&ack).0, TC_ACT_REDIRECT);
        assert_eq!(h.flow(&key).unwrap().state, CT_ESTABLISHED);
        let rst = frame((again.dst, 8080), (VIP, again.sport), PROTO_TCP, RST, &[]);
        assert_eq!(h.tc(&rst).0, TC_ACT_REDIRECT);
        assert!(h.flow(&key).is_none());
    });
}

fn udp_flows_stick_and_keep_a_zero_checksum() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(53, PROTO_UDP, 3, 0);
        let q = frame(client(5353), (VIP, 53), PROTO_UDP, 0, b"query");
        let (v, a) = h.xdp(&q);
        assert_eq!(v, XDP_REDIRECT);
        let a = view(&a);
        assert!(a.ip_ok && a.l4_ok && a.l4_csum != 0, "{a:?}");
        let (_, b) = h.xdp(&q);
        let b = view(&b);
        assert_eq!((a.dst, a.sport), (b.dst, b.sport), "the same UDP flow keeps backend and NAT port");
        assert_eq!(h.event(Event::NewFlow), 1);
        let none = frame_with(client(5354), (VIP, 53), PROTO_UDP, 0, b"q", &[], false);
        let (v, out) = h.xdp(&none);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(view(&out).l4_csum, 0, "no UDP checksum stays none");
        // The reply.
        let (v, r) = h.tc(&frame((a.dst, 8080), (VIP, a.sport), PROTO_UDP, 0, b"answer"));
        assert_eq!(v, TC_ACT_REDIRECT);
        let r = view(&r);
        assert_eq!((r.src, r.sport, r.dst, r.dport), (VIP, 53, CLIENT, 5353));
        assert!(r.ip_ok && r.l4_ok);
    });
}

fn ip_options_are_kept_and_checksums_fixed() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        // Two NOPs and an end-of-options list, padded to 4 bytes.
        let f = frame_with(client(40007), (VIP, 80), PROTO_TCP, SYN, &[], &[1, 1, 1, 0], true);
        let (v, out) = h.xdp(&f);
        assert_eq!(v, XDP_REDIRECT);
        let out = view(&out);
        assert!(BACKENDS.contains(&out.dst) && out.ip_ok && out.l4_ok, "{out:?}");
    });
}

fn source_hash_sends_every_flow_of_a_client_to_one_backend() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, SVC_HASH_SOURCE);
        let dsts: std::collections::HashSet<_> = (0..20).map(|i| syn(&mut h, 41000 + i).dst).collect();
        assert_eq!(dsts.len(), 1, "one client address, one backend");
        h.set_service(80, PROTO_TCP, 0, 3, 0);
        let dsts: std::collections::HashSet<_> = (0..30).map(|i| syn(&mut h, 42000 + i).dst).collect();
        assert!(dsts.len() >= 2, "the 5-tuple hash spreads a client's flows");
    });
}

fn no_backend_drops_and_counts() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        h.set_service(80, PROTO_TCP, 0, 0, 0);
        let (v, _) = h.xdp(&frame(client(40008), (VIP, 80), PROTO_TCP, SYN, &[]));
        assert_eq!(v, XDP_DROP);
        assert_eq!(h.event(Event::DropNoBackend), 1);
        assert_eq!(h.flows(), 0);
    });
}

/// The monitor: off by default (no event), then drops reported with their reason and tuple
/// (a malformed header's without ports), new flows only when asked.
fn monitor_reports_drops_and_new_flows_only_when_on() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let mut bad_ihl = frame(client(40020), (VIP, 80), PROTO_TCP, SYN, &[]);
        bad_ihl[14] = 0x43;
        assert_eq!(h.xdp(&bad_ihl).0, XDP_DROP);
        assert_eq!(h.xdp(&frame(client(40021), (VIP, 80), PROTO_TCP, SYN, &[])).0, XDP_REDIRECT);
        assert!(h.monitor_events().is_empty(), "monitoring is off by default");

        h.monitor(edge_common::MONITOR_DROPS, 1000);
        assert_eq!(h.xdp(&bad_ihl).0, XDP_DROP);
        let e = h.monitor_events();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].event, Event::DropMalformed as u32);
        assert_eq!((e[0].src, e[0].dst), (u32::from(client(40020).0).to_be(), u32::from(VIP).to_be()));
        assert_eq!((e[0].proto, e[0].sport, e[0].dport), (PROTO_TCP, 0, 0), "no ports from a malformed header");
        assert_eq!(h.xdp(&frame(client(40022), (VIP, 80), PROTO_TCP, SYN, &[])).0, XDP_REDIRECT);
        assert!(h.monitor_events().is_empty(), "new flows only when asked");

        h.set_service(80, PROTO_TCP, 0, 0, 0);
        assert_eq!(h.xdp(&frame(client(40023), (VIP, 80), PROTO_TCP, SYN, &[])).0, XDP_DROP);
        let e = h.monitor_events();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].event, Event::DropNoBackend as u32);
        assert_eq!((e[0].sport, e[0].dport), (40023u16.to_be(), 80u16.to_be()));

        h.set_service(80, PROTO_TCP, 0, 3, 0);
        h.monitor(edge_common::MONITOR_DROPS | edge_common::MONITOR_FLOWS, 1000);
        assert_eq!(h.xdp(&frame(client(40024), (VIP, 80), PROTO_TCP, SYN, &[])).0, XDP_REDIRECT);
        let e = h.monitor_events();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].event, e[0].sport), (Event::NewFlow as u32, 40024u16.to_be()));
        h.monitor(0, 0);
        assert_eq!(h.xdp(&bad_ihl).0, XDP_DROP);
        assert!(h.monitor_events().is_empty(), "off again");
    });
}

/// Rare conditions write aya-log records that reach the agent's logs (target `edge_ebpf`) with
/// what the counters lack, at most one a second per condition and CPU; the next record says how
/// many were held back.
fn rare_conditions_write_rate_limited_log_records() {
    in_test_netns(|| {
        let mut h = Harness::load();
        let mut log = edge_dataplane::KernelLog::take(&mut h.ebpf).expect("the object has aya-log's ring buffer");
        pin_to_cpu0();
        h.seed_service(80, PROTO_TCP, 1, 0);
        // One SNAT port toward the one backend: the first flow takes it, the next finds none.
        h.set_nat_ports(NAT_PORTS.0, 1);
        assert_eq!(h.xdp(&frame(client(40040), (VIP, 80), PROTO_TCP, SYN, &[])).0, XDP_REDIRECT);
        assert!(bpf::kernel_log_lines(&mut log).is_empty(), "no record while nothing is wrong");
        for port in 40041..40045 {
            assert_eq!(h.xdp(&frame(client(port), (VIP, 80), PROTO_TCP, SYN, &[])).0, XDP_DROP);
        }
        assert_eq!(h.event(Event::DropNatPorts), 4);
        let lines = bpf::kernel_log_lines(&mut log);
        assert_eq!(lines.len(), 1, "one record a second, not one per drop: {lines:#?}");
        let want = format!(
            "WARN edge_ebpf: no free SNAT port toward backend {}:8080 for client {}:40041 (the 1 ports of the range are taken by flows to this backend); widen --snat-ports or add backends; 0 more held back on this CPU",
            BACKENDS[0], CLIENT
        );
        assert_eq!(lines[0].trim(), want);

        // A second later (when the next-hop cache has expired too), a backend without a route:
        // the lookup's own code is in the record.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        h.set_nat_ports(NAT_PORTS.0, u32::from(NAT_PORTS.1 - NAT_PORTS.0) + 1);
        let nowhere = std::net::Ipv4Addr::new(192, 0, 2, 7);
        bpf::ip(&["route", "add", "blackhole", "192.0.2.0/24"]);
        h.set_backend_addr(1, nowhere);
        assert_eq!(h.xdp(&frame(client(40050), (VIP, 80), PROTO_TCP, SYN, &[])).0, XDP_DROP);
        assert_eq!(h.event(Event::DropNoRoute), 1);
        let lines = bpf::kernel_log_lines(&mut log);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].contains(&format!("no route toward backend {nowhere} for a packet that came in on interface "))
                && lines[0].contains("(bpf_fib_lookup code 1: 1 blackhole,")
                && lines[0].ends_with("0 more held back on this CPU"),
            "{}",
            lines[0]
        );

        // The SNAT condition may write again, and says what it held back.
        h.set_backend_addr(1, BACKENDS[0]);
        h.set_nat_ports(NAT_PORTS.0, 1);
        assert_eq!(h.xdp(&frame(client(40060), (VIP, 80), PROTO_TCP, SYN, &[])).0, XDP_DROP);
        let lines = bpf::kernel_log_lines(&mut log);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].contains("client 10.0.1.9:40060") && lines[0].ends_with("3 more held back on this CPU"),
            "{}",
            lines[0]
        );
    });
}

/// Keeps this thread on CPU 0: the kernel's limits are per CPU, and a test run runs on the
/// caller's.
fn pin_to_cpu0() {
    // SAFETY: a CPU set on the stack, for this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// The kernel's token bucket: a flood of drops yields about `rate` events, and the next event that
/// gets through says how many were not reported.
fn monitor_is_rate_limited_in_the_kernel() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let mut bad = frame(client(40030), (VIP, 80), PROTO_TCP, SYN, &[]);
        bad[14] = 0x43;
        pin_to_cpu0();
        h.monitor(edge_common::MONITOR_DROPS, 5);
        for _ in 0..200 {
            assert_eq!(h.xdp(&bad).0, XDP_DROP);
        }
        let first = h.monitor_events();
        assert!((5..=7).contains(&first.len()), "a burst of about 5 events, not {}", first.len());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(h.xdp(&bad).0, XDP_DROP);
        let next = h.monitor_events();
        assert_eq!(next.len(), 1);
        assert!(next[0].lost >= 190, "the next event carries the count not reported: {}", next[0].lost);
    });
}

fn partial_checksums_go_to_tc() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let mut f = frame(client(40009), (VIP, 80), PROTO_TCP, SYN, &[]);
        // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not complemented.
        let mut s: u32 = 0;
        for w in [CLIENT.octets(), VIP.octets()].concat().chunks(2) {
            s += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        s += 6 + 20;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        f[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&(s as u16).to_be_bytes());
        let (v, out) = h.xdp(&f);
        assert_eq!((v, out), (XDP_PASS, f.clone()), "passed untouched");
        assert_eq!(h.event(Event::PartialCsumPassed), 1);
        assert_eq!(h.flows(), 0, "XDP left the state alone");
    });
}

fn everything_else_passes_untouched() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let other_port = frame(client(40010), (VIP, 22), PROTO_TCP, SYN, &[]);
        let other_addr = frame(client(40010), (std::net::Ipv4Addr::new(10, 0, 0, 99), 80), PROTO_TCP, SYN, &[]);
        let udp_same_port = frame(client(40010), (VIP, 80), PROTO_UDP, 0, b"x");
        let mut ipv6 = vec![0u8; 74];
        ipv6[12] = 0x86;
        ipv6[13] = 0xdd;
        ipv6[14] = 0x60;
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        let mut icmp = frame(client(1), (VIP, 1), PROTO_TCP, 0, &[]);
        icmp[14 + 9] = 1;
        let mut frag = frame(client(40011), (VIP, 80), PROTO_TCP, SYN, &[]);
        frag[14 + 6] = 0x20; // more fragments
        for (name, f) in [
            ("other port", &other_port),
            ("other address", &other_addr),
            ("udp to a tcp service", &udp_same_port),
            ("ipv6", &ipv6),
            ("arp", &arp),
            ("icmp", &icmp),
            ("fragment", &frag),
        ] {
            let (v, out) = h.xdp(f);
            assert_eq!(v, XDP_PASS, "{name}: XDP passes");
            assert_eq!(&out, f, "{name}: untouched");
            let (v, out) = h.tc(f);
            assert_eq!(v, TC_ACT_OK, "{name}: TC passes");
            assert_eq!(&out, f, "{name}: untouched by TC");
        }
        assert_eq!(h.flows(), 0);
        assert_eq!(h.event(Event::FragmentPassed), 2);
    });
}

fn truncated_and_malformed_frames() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let full = frame(client(40012), (VIP, 80), PROTO_TCP, SYN, &[]);
        // Every prefix of a SYN to the VIP: too short for Ethernet or IPv4 passes (not ours to
        // judge), an IPv4 header that names the VIP but cuts the TCP header is dropped.
        // (The kernel refuses test frames shorter than an Ethernet header, as NICs drop them.)
        for len in 14..full.len() {
            let (v, _) = h.xdp(&full[..len]);
            let expect = if len < 14 + 20 { XDP_PASS } else { XDP_DROP };
            assert_eq!(v, expect, "prefix of {len} bytes");
        }
        let mut bad_ihl = full.clone();
        bad_ihl[14] = 0x43;
        assert_eq!(h.xdp(&bad_ihl).0, XDP_DROP, "IHL below 5 toward the VIP");
        let mut bad_off = full.clone();
        bad_off[14 + 20 + 12] = 0x30;
        assert_eq!(h.xdp(&bad_off).0, XDP_DROP, "TCP data offset below 5 toward the VIP");
        assert!(h.event(Event::DropMalformed) >= 3);
        // The same toward another address passes.
        let mut elsewhere = bad_ihl.clone();
        elsewhere[14 + 19] = 99;
        assert_eq!(h.xdp(&elsewhere).0, XDP_PASS);
        assert_eq!(h.tc(&bad_ihl).0, TC_ACT_SHOT);
        assert_eq!(h.flows(), 0);
    });
}

fn random_garbage_only_passes_or_drops() {
    in_test_netns(|| {
        let mut h = Harness::load();
        h.seed_service(80, PROTO_TCP, 3, 0);
        let mut rng = fastrand::Rng::with_seed(0xed9e);
        let base = frame(client(40013), (std::net::Ipv4Addr::new(10, 0, 0, 77), 80), PROTO_TCP, SYN, b"payload");
        for i in 0..5000 {
            let mut f: Vec<u8> = if i % 2 == 0 {
                // Mutate a plausible frame (not for a VIP).
                let mut f = base.clone();
                for _ in 0..rng.usize(1..8) {
                    let at = rng.usize(0..f.len());
                    f[at] = rng.u8(..);
                }
                f
            } else {
                (0..rng.usize(14..120)).map(|_| rng.u8(..)).collect()
            };
            // At least an Ethernet header: the kernel refuses shorter test frames.
            f.truncate(rng.usize(14..=f.len()));
            let vip = f.len() >= 34 && f[30..34] == VIP.octets();
            let (xv, _) = h.xdp(&f);
            // The kernel refuses skb test frames that claim IPv4 without a whole IPv4 header.
            let short_ip = f[12..14] == [0x08, 0x00] && f.len() < 34;
            let tv = if short_ip { TC_ACT_OK } else { h.tc(&f).0 };
            if vip {
                assert!(xv != 0, "XDP_ABORTED on frame {i}: {f:02x?}");
                continue;
            }
            assert!(xv == XDP_PASS || xv == XDP_DROP, "frame {i}: XDP verdict {xv} for {f:02x?}");
            assert!(tv == TC_ACT_OK || tv == TC_ACT_SHOT, "frame {i}: TC verdict {tv} for {f:02x?}");
        }
    });
}

/// ns per packet in the kernel for an established flow, a new flow and a non-VIP packet, next to
/// an XDP program that only returns XDP_PASS (the floor) and one that only does one LRU hash
/// lookup (what the conntrack lookup alone costs here). A benchmark, not a test: run it with
/// `cargo xtask bench prog` (or `cargo test --test ebpf_prog -- --ignored --nocapture`).
///
/// Each figure is the median of [`ROUNDS`] runs of `REPEAT` packets, the programs taking turns,
/// so that a noisy neighbour on a shared host moves all of them alike.
fn bench_ns_per_packet() {
    in_test_netns(|| {
        const REPEAT: u32 = 1_000_000;
        const ROUNDS: usize = 7;
        let c = client(50000);
        let ack = frame(c, (MIRROR, 80), PROTO_TCP, ACK, b"GET / HTTP/1.1\r\n\r\n");
        let other = frame(c, (std::net::Ipv4Addr::new(10, 0, 0, 77), 80), PROTO_TCP, ACK, &[]);
        let query = frame(c, (MIRROR, 53), PROTO_UDP, 0, b"query");

        let mut tcp = Harness::load();
        tcp.seed_mirror(80, PROTO_TCP, c);
        assert_eq!(tcp.xdp(&frame(c, (MIRROR, 80), PROTO_TCP, SYN, &[])).0, XDP_REDIRECT);
        // A new flow on every run: UDP flows that idle out at once, so each datagram releases the
        // previous flow and takes the whole new-flow path (service and table lookup, SNAT port
        // reservation, two inserts).
        let mut udp = Harness::load();
        udp.seed_mirror(53, PROTO_UDP, c);
        udp.set_udp_timeout_ns(0);

        // Malformed frames toward the VIP: the drop path, which reads the monitor's switches.
        let mut bad = frame(c, (MIRROR, 80), PROTO_TCP, SYN, &[]);
        bad[14] = 0x43;

        let mut runs: [Vec<f64>; 8] = Default::default();
        for _ in 0..ROUNDS {
            tcp.monitor(0, 0);
            runs[5].push(tcp.xdp_ns(&bad, REPEAT));
            tcp.monitor(edge_common::MONITOR_DROPS | edge_common::MONITOR_FLOWS, edge_common::MONITOR_MAX_RATE);
            runs[6].push(tcp.xdp_ns(&bad, REPEAT));
            runs[7].push(tcp.xdp_ns(&ack, REPEAT));
            tcp.monitor(0, 0);
            let _ = tcp.monitor_events();
            runs[0].push(bpf::xdp_pass_floor_ns(&ack, REPEAT));
            runs[1].push(bpf::lru_lookup_reference_ns(&ack, REPEAT));
            let before = tcp.event(Event::Forwarded);
            runs[2].push(tcp.xdp_ns(&ack, REPEAT));
            assert_eq!(tcp.event(Event::Forwarded) - before, u64::from(REPEAT), "every run was steered");
            let before = udp.event(Event::NewFlow);
            runs[3].push(udp.xdp_ns(&query, REPEAT));
            assert_eq!(udp.event(Event::NewFlow) - before, u64::from(REPEAT), "every run took the new-flow path");
            runs[4].push(tcp.xdp_ns(&other, REPEAT));
        }
        let [floor, lookup, established, new_flow, non_vip, drop_off, drop_on, established_on] = runs.map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        });
        println!("medians of {ROUNDS} rounds of {REPEAT} packets each");
        println!("xdp_pass_floor_ns {floor:.1}");
        println!("one_lru_lookup_ns {lookup:.1} ({:.2}x floor)", lookup / floor);
        println!("established_ns {established:.1} ({:.2}x floor)", established / floor);
        println!("new_flow_ns {new_flow:.1} ({:.2}x floor)", new_flow / floor);
        println!("non_vip_ns {non_vip:.1} ({:.2}x floor)", non_vip / floor);
        println!("drop_monitor_off_ns {drop_off:.1} ({:.2}x floor)", drop_off / floor);
        println!("drop_monitor_on_ns {drop_on:.1} ({:.2}x floor)", drop_on / floor);
        println!(
            "established_monitor_on_ns {established_on:.1} ({:.2}x established, off)",
            established_on / established
        );
    });
}

/// The tests of this file, for the harness.
pub(crate) const TESTS: &[(&str, fn())] = &[
    ("syn_to_vip_is_full_natted_toward_a_backend", syn_to_vip_is_full_natted_toward_a_backend),
    (
        "established_flow_keeps_its_backend_when_the_table_changes",
        established_flow_keeps_its_backend_when_the_table_changes,
    ),
    ("replies_are_translated_back_by_tc", replies_are_translated_back_by_tc),
    ("tc_steers_client_packets_too", tc_steers_client_packets_too),
    ("fin_marks_closing_and_a_new_syn_starts_a_new_flow", fin_marks_closing_and_a_new_syn_starts_a_new_flow),
    (
        "a_backend_fin_marks_time_wait_and_the_client_tuple_keeps_its_snat_port",
        a_backend_fin_marks_time_wait_and_the_client_tuple_keeps_its_snat_port,
    ),
    (
        "a_client_port_inside_the_snat_range_is_kept_and_collisions_move_on",
        a_client_port_inside_the_snat_range_is_kept_and_collisions_move_on,
    ),
    ("rst_removes_the_flow_and_its_nat_entry", rst_removes_the_flow_and_its_nat_entry),
    (
        "a_rst_answering_the_syn_marks_the_flow_refused_for_the_sweep",
        a_rst_answering_the_syn_marks_the_flow_refused_for_the_sweep,
    ),
    ("udp_flows_stick_and_keep_a_zero_checksum", udp_flows_stick_and_keep_a_zero_checksum),
    ("ip_options_are_kept_and_checksums_fixed", ip_options_are_kept_and_checksums_fixed),
    (
        "source_hash_sends_every_flow_of_a_client_to_one_backend",
        source_hash_sends_every_flow_of_a_client_to_one_backend,
    ),
    ("no_backend_drops_and_counts", no_backend_drops_and_counts),
    ("monitor_reports_drops_and_new_flows_only_when_on", monitor_reports_drops_and_new_flows_only_when_on),
    ("monitor_is_rate_limited_in_the_kernel", monitor_is_rate_limited_in_the_kernel),
    ("rare_conditions_write_rate_limited_log_records", rare_conditions_write_rate_limited_log_records),
    ("partial_checksums_go_to_tc", partial_checksums_go_to_tc),
    ("everything_else_passes_untouched", everything_else_passes_untouched),
    ("truncated_and_malformed_frames", truncated_and_malformed_frames),
    ("random_garbage_only_passes_or_drops", random_garbage_only_passes_or_drops),
];

/// The benchmarks of this file: ignored unless asked for (`--ignored`).
pub(crate) const BENCHES: &[(&str, fn())] = &[("bench_ns_per_packet", bench_ns_per_packet)];
