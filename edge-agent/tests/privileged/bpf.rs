//! Test support for `BPF_PROG_TEST_RUN` tests: a private network namespace with fixed routes and
//! neighbours (so the program's FIB lookups are deterministic), the real embedded object loaded
//! with its maps in a private bpffs folder, map seeding, frame builders and checksum checks.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp};
use aya::{Ebpf, EbpfLoader};
use edge_common::{
    BE_ACTIVE, BackendValue, Counters, Event, FlowKey, FlowValue, NatKey, NatValue, ServiceKey, ServiceValue, Settings,
    map_names, program_names, table_index,
};
use edge_dataplane::object::EBPF_OBJECT;
use edge_dataplane::{Calibration, calibrate, retry_interrupted};

/// The test namespace's layout: d0 toward backends, d1 toward clients.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Backends (on d0).
pub const BACKENDS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)];
/// A non-local VIP for benchmarks whose only backend is itself (see [`Harness::seed_mirror`]).
pub const MIRROR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);
/// A client (behind d1).
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 9);
/// MAC of every backend neighbour entry.
pub const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// MAC of the client neighbour entry.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];
/// Table size used in tests (a prime).
pub const TABLE: u32 = 251;
/// SNAT ports.
pub const NAT_PORTS: (u16, u16) = (20000, 20999);

/// Runs `ip ARGS` (in the calling thread's namespace); panics with its error output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2 (`ip`) is needed; run `cargo xtask setup`");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Runs `f` on a new thread inside a new, private network namespace set up for the tests.
pub fn in_test_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which ends with the test.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare(CLONE_NEWNET) failed");
        ip(&["link", "set", "lo", "up"]);
        // veth pairs stand in for NICs (this kernel has no dummy driver); their peers stay idle.
        ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]);
        ip(&["link", "add", "d1", "type", "veth", "peer", "name", "d1p"]);
        ip(&["link", "set", "d0p", "up"]);
        ip(&["link", "set", "d1p", "up"]);
        ip(&["addr", "add", "10.0.0.1/24", "dev", "d0"]);
        ip(&["addr", "add", "10.0.1.1/24", "dev", "d1"]);
        ip(&["link", "set", "d0", "up"]);
        ip(&["link", "set", "d1", "up"]);
        for b in BACKENDS {
            ip(&["neigh", "add", &b.to_string(), "lladdr", "02:00:00:00:00:02", "dev", "d0", "nud", "permanent"]);
        }
        ip(&["neigh", "add", &MIRROR.to_string(), "lladdr", "02:00:00:00:00:02", "dev", "d0", "nud", "permanent"]);
        ip(&["neigh", "add", &CLIENT.to_string(), "lladdr", "02:00:00:00:00:09", "dev", "d1", "nud", "permanent"]);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable forwarding in the test namespace");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The loaded object with maps in a private pin folder.
pub struct Harness {
    /// The object.
    pub ebpf: Ebpf,
    dir: PathBuf,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Harness {
    /// Loads the object and both programs; writes the settings.
    pub fn load() -> Self {
        edge_dataplane::pins::prepare().expect("bpffs");
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!("/sys/fs/bpf/edge-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&dir)
            .map_max_entries(map_names::MAGLEV, edge_common::table_entries(2, TABLE))
            .map_max_entries(map_names::CONNTRACK, 4096)
            .map_max_entries(map_names::REVNAT, 4096)
            .load(EBPF_OBJECT)
            .expect("load the eBPF object");
        let xdp: &mut Xdp = ebpf.program_mut(program_names::XDP).unwrap().try_into().unwrap();
        retry_interrupted(|| xdp.load()).expect("the verifier accepts the XDP program");
        let tc: &mut SchedClassifier = ebpf.program_mut(program_names::TC).unwrap().try_into().unwrap();
        retry_interrupted(|| tc.load()).expect("the verifier accepts the TC program");
        let clock: &mut Xdp = ebpf.program_mut(program_names::CLOCK).unwrap().try_into().unwrap();
        retry_interrupted(|| clock.load()).expect("the verifier accepts the clock program");
        // The calibration is the host's: once per test process (it takes 100 ms).
        static CLOCK: std::sync::OnceLock<Calibration> = std::sync::OnceLock::new();
        let clock = *CLOCK.get_or_init(|| calibrate(clock).expect("the data path's clock calibrates"));
        let mut h = Self { ebpf, dir };
        let mut settings: Array<&mut MapData, Settings> =
            Array::try_from(h.ebpf.map_mut(map_names::SETTINGS).unwrap()).unwrap();
        settings
            .set(
                0,
                Settings {
                    nat_port_min: u32::from(NAT_PORTS.0),
                    nat_port_count: u32::from(NAT_PORTS.1 - NAT_PORTS.0) + 1,
                    udp_timeout_ns: 30_000_000_000,
                    vip_count: 1,
                    _pad: 0,
                    vips: {
                        let mut v = [0; edge_common::MAX_SERVICES as usize];
                        v[0] = u32::from(VIP).to_be();
                        v
                    },
                    clock_ns_per_tick: clock.ns_per_tick,
                    clock_offset_ns: clock.offset_ns,
                },
                0,
            )
            .unwrap();
        h
    }

    /// Seeds service 1 as a "mirror" for `BPF_PROG_TEST_RUN` benchmarks: VIP [`MIRROR`]:`port`
    /// whose one backend is [`MIRROR`]:`port` itself, reached from the client's own address and
    /// port (the SNAT range is that one port). The rewrite of a packet from `client` then yields
    /// the same packet, so a test run with a large `repeat` (which feeds the program its own
    /// output) measures the steering path on every run, not the pass path after the first.
    pub fn seed_mirror(&mut self, port: u16, proto: u8, client: (Ipv4Addr, u16)) {
        let mut backends: Array<&mut MapData, BackendValue> =
            Array::try_from(self.ebpf.map_mut(map_names::BACKENDS).unwrap()).unwrap();
        let v = BackendValue {
            addr: u32::from(MIRROR).to_be(),
            snat_addr: u32::from(client.0).to_be(),
            port: port.to_be(),
            _pad: 0,
            flags: BE_ACTIVE,
            service: 1,
        };
        backends.set(1, v, 0).unwrap();
        self.write_table(0, &[1]);
        let mut svc: HashMap<&mut MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.ebpf.map_mut(map_names::SERVICES).unwrap()).unwrap();
        let value = ServiceValue { id: 1, flags: 0, generation: 0, table_size: TABLE, backends: 1, _pad: 0 };
        svc.insert(ServiceKey { addr: u32::from(MIRROR).to_be(), port: port.to_be(), proto, _pad: 0 }, value, 0)
            .unwrap();
        let mut settings: Array<&mut MapData, Settings> =
            Array::try_from(self.ebpf.map_mut(map_names::SETTINGS).unwrap()).unwrap();
        let mut s = settings.get(&0, 0).unwrap();
        s.nat_port_min = u32::from(client.1);
        s.nat_port_count = 1;
        s.vips[s.vip_count as usize] = u32::from(MIRROR).to_be();
        s.vip_count += 1;
        settings.set(0, s, 0).unwrap();
    }

    /// Changes the UDP idle timeout in the settings.
    pub fn set_udp_timeout_ns(&mut self, ns: u64) {
        let mut settings: Array<&mut MapData, Settings> =
            Array::try_from(self.ebpf.map_mut(map_names::SETTINGS).unwrap()).unwrap();
        let mut s = settings.get(&0, 0).unwrap();
        s.udp_timeout_ns = ns;
        settings.set(0, s, 0).unwrap();
    }

    /// Changes the SNAT port range in the settings: `count` ports from `min`.
    pub fn set_nat_ports(&mut self, min: u16, count: u32) {
        let mut settings: Array<&mut MapData, Settings> =
            Array::try_from(self.ebpf.map_mut(map_names::SETTINGS).unwrap()).unwrap();
        let mut s = settings.get(&0, 0).unwrap();
        s.nat_port_min = u32::from(min);
        s.nat_port_count = count;
        settings.set(0, s, 0).unwrap();
    }

    /// Moves backend `id` (seeded by [`Harness::seed_service`]) to `addr`.
    pub fn set_backend_addr(&mut self, id: u32, addr: Ipv4Addr) {
        let mut backends: Array<&mut MapData, BackendValue> =
            Array::try_from(self.ebpf.map_mut(map_names::BACKENDS).unwrap()).unwrap();
        let mut v = backends.get(&id, 0).unwrap();
        v.addr = u32::from(addr).to_be();
        backends.set(id, v, 0).unwrap();
    }

    /// Seeds service 1 at VIP:`port`/`proto` with backends 1..=n (BACKENDS[..n], port 8080), the
    /// table filled round robin, `healthy` of them in it.
    pub fn seed_service(&mut self, port: u16, proto: u8, n: usize, flags: u32) {
        let mut backends: Array<&mut MapData, BackendValue> =
            Array::try_from(self.ebpf.map_mut(map_names::BACKENDS).unwrap()).unwrap();
        for (i, b) in BACKENDS.iter().take(n).enumerate() {
            let v = BackendValue {
                addr: u32::from(*b).to_be(),
                snat_addr: u32::from(VIP).to_be(),
                port: 8080u16.to_be(),
                _pad: 0,
                flags: BE_ACTIVE,
                service: 1,
            };
            backends.set(i as u32 + 1, v, 0).unwrap();
        }
        let ids: Vec<u32> = (1..=n as u32).collect();
        self.write_table(0, &ids);
        self.set_service(port, proto, 0, n as u32, flags);
    }

    /// Writes generation `generation` of service 1's table from `ids` (round robin).
    pub fn write_table(&mut self, generation: u32, ids: &[u32]) {
        let mut maglev: Array<&mut MapData, u32> =
            Array::try_from(self.ebpf.map_mut(map_names::MAGLEV).unwrap()).unwrap();
        for slot in 0..TABLE {
            let id = if ids.is_empty() { 0 } else { ids[slot as usize % ids.len()] };
            maglev.set(table_index(1, generation, TABLE, slot), id, 0).unwrap();
        }
    }

    /// Writes service 1's entries.
    pub fn set_service(&mut self, port: u16, proto: u8, generation: u32, backends: u32, flags: u32) {
        let mut svc: HashMap<&mut MapData, ServiceKey, ServiceValue> =
            HashMap::try_from(self.ebpf.map_mut(map_names::SERVICES).unwrap()).unwrap();
        let v = ServiceValue { id: 1, flags, generation, table_size: TABLE, backends, _pad: 0 };
        let addr = u32::from(VIP).to_be();
        svc.insert(ServiceKey { addr, port: port.to_be(), proto, _pad: 0 }, v, 0).unwrap();
    }

    /// Runs the XDP program once: (verdict, output frame).
    pub fn xdp(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &mut Xdp = self.ebpf.program_mut(program_names::XDP).unwrap().try_into().unwrap();
        run(&mut |o| prog.test_run(o), frame, 1).0
    }

    /// Runs the TC program once: (verdict, output frame).
    pub fn tc(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &mut SchedClassifier = self.ebpf.program_mut(program_names::TC).unwrap().try_into().unwrap();
        run(&mut |o| prog.test_run(o), frame, 1).0
    }

    /// Runs the XDP program `repeat` times in the kernel: average ns per run.
    pub fn xdp_ns(&mut self, frame: &[u8], repeat: u32) -> f64 {
        let prog: &mut Xdp = self.ebpf.program_mut(program_names::XDP).unwrap().try_into().unwrap();
        run(&mut |o| prog.test_run(o), frame, repeat).1
    }

    /// The conntrack entry of a client flow.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowValue> {
        let m: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map(map_names::CONNTRACK).unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    /// Number of conntrack entries.
    pub fn flows(&self) -> usize {
        let m: HashMap<&MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.ebpf.map(map_names::CONNTRACK).unwrap()).unwrap();
        m.keys().count()
    }

    /// A reverse NAT entry.
    pub fn nat(&self, key: &NatKey) -> Option<NatValue> {
        let m: HashMap<&MapData, NatKey, NatValue> =
            HashMap::try_from(self.ebpf.map(map_names::REVNAT).unwrap()).unwrap();
        m.get(key, 0).ok()
    }

    /// An event counter, summed over CPUs.
    pub fn event(&self, e: Event) -> u64 {
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.ebpf.map(map_names::EVENTS).unwrap()).unwrap();
        m.get(&(e as u32), 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Switches the monitor: `flags` (`MONITOR_DROPS`, `MONITOR_FLOWS`), `rate` events a second.
    pub fn monitor(&mut self, flags: u32, rate: u32) {
        let mut m: Array<&mut MapData, edge_common::MonitorSettings> =
            Array::try_from(self.ebpf.map_mut(map_names::MONITOR).unwrap()).unwrap();
        m.set(0, edge_common::MonitorSettings { flags, rate }, 0).unwrap();
    }

    /// The monitor events waiting in the ring buffer, oldest first (reading consumes them).
    pub fn monitor_events(&mut self) -> Vec<edge_common::MonitorEvent> {
        let mut ring = RingBuf::try_from(self.ebpf.map_mut(map_names::MONITOR_RING).unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(item.len(), std::mem::size_of::<edge_common::MonitorEvent>());
            // SAFETY: the length matches and the type is plain data.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<edge_common::MonitorEvent>()) });
        }
        out
    }

    /// A backend's counters, summed over CPUs.
    pub fn backend_counters(&self, id: u32) -> Counters {
        let m: PerCpuArray<&MapData, Counters> =
            PerCpuArray::try_from(self.ebpf.map(map_names::BACKEND_STATS).unwrap()).unwrap();
        let mut t = Counters::default();
        for c in m.get(&id, 0).unwrap().iter() {
            t.packets += c.packets;
            t.bytes += c.bytes;
            t.new_flows += c.new_flows;
        }
        t
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

type RunFn<'p> = dyn FnMut(TestRunOptions<'_>) -> Result<TestRunResult, aya::programs::ProgramError> + 'p;

fn run(prog: &mut RunFn<'_>, frame: &[u8], repeat: u32) -> ((u32, Vec<u8>), f64) {
    // The kernel needs room to write the output frame; frames here never grow.
    let mut out = vec![0u8; frame.len().max(64) + 256];
    let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..TestRunOptions::new() };
    let r = prog(opts).unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {} bytes {frame:02x?}: {e:?}", frame.len()));
    out.truncate(r.data_size_out as usize);
    ((r.return_value, out), r.duration.as_nanos() as f64)
}

/// TCP flags.
pub const SYN: u8 = 0x02;
/// ACK.
pub const ACK: u8 = 0x10;
/// FIN.
pub const FIN: u8 = 0x01;
/// RST.
pub const RST: u8 = 0x04;

/// A frame: Ethernet + IPv4 (+options) + TCP or UDP with valid checksums.
pub fn frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(src, dst, proto, flags, payload, &[], true)
}

/// Like [`frame`], with IP options and an optional UDP checksum.
pub fn frame_with(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    proto: u8,
    flags: u8,
    payload: &[u8],
    ip_options: &[u8],
    udp_csum: bool,
) -> Vec<u8> {
    assert!(ip_options.len().is_multiple_of(4));
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x09, 0x08, 0x00];
    let l4_len = if proto == 6 { 20 } else { 8 } + payload.len();
    let ihl = 5 + ip_options.len() / 4;
    let total = ihl * 4 + l4_len;
    let mut ip = vec![0x40 | ihl as u8, 0, (total >> 8) as u8, total as u8, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
    ip.extend_from_slice(&src.0.octets());
    ip.extend_from_slice(&dst.0.octets());
    ip.extend_from_slice(ip_options);
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    if proto == 6 {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    let csum_at = if proto == 6 { 16 } else { 6 };
    if proto == 6 || udp_csum {
        let mut c = checksum(&l4, pseudo(src.0, dst.0, proto, l4_len));
        if proto == 17 && c == 0 {
            c = 0xffff;
        }
        l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    f.extend_from_slice(&l4);
    f
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut s = 0u32;
    for w in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    s + u32::from(proto) + len as u32
}

/// The Internet checksum of `data` with an initial sum.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut s = initial;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A parsed view of an output frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Destination MAC.
    pub dmac: [u8; 6],
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IPv4 header checksum verifies.
    pub ip_ok: bool,
    /// L4 checksum verifies (true for a UDP checksum of 0).
    pub l4_ok: bool,
    /// The raw UDP checksum field (0 = none).
    pub l4_csum: u16,
}

/// Parses an IPv4 TCP/UDP frame built like [`frame`].
pub fn view(f: &[u8]) -> View {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let ip = &f[14..14 + ihl];
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let l4 = &f[14 + ihl..14 + total];
    let csum_at = if proto == 6 { 16 } else { 6 };
    let raw = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
    let l4_ok = (proto == 17 && raw == 0) || checksum(l4, pseudo(src, dst, proto, l4.len())) == 0;
    View {
        dmac: f[0..6].try_into().unwrap(),
        src,
        dst,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        ip_ok: checksum(ip, 0) == 0,
        l4_ok,
        l4_csum: raw,
    }
}

/// The conntrack key of a client flow to the VIP.
pub fn flow_key(client: (Ipv4Addr, u16), port: u16, proto: u8) -> FlowKey {
    FlowKey {
        src_addr: u32::from(client.0).to_be(),
        dst_addr: u32::from(VIP).to_be(),
        src_port: client.1.to_be(),
        dst_port: port.to_be(),
        proto,
        _pad: 0,
        _pad2: 0,
    }
}

/// The reverse NAT key of a flow to backend `b` with NAT port `nat_port` (network order).
pub fn nat_key(b: Ipv4Addr, nat_port: u16, proto: u8) -> NatKey {
    NatKey {
        backend_addr: u32::from(b).to_be(),
        snat_addr: u32::from(VIP).to_be(),
        backend_port: 8080u16.to_be(),
        nat_port,
        proto,
        _pad: 0,
        _pad2: 0,
    }
}

/// ns per run of an XDP program that only returns XDP_PASS: the cost of `BPF_PROG_TEST_RUN`
/// itself, the floor every data-path figure is compared with.
pub fn xdp_pass_floor_ns(frame: &[u8], repeat: u32) -> f64 {
    // r0 = XDP_PASS (2); exit.
    raw_xdp_ns(&[0x0000_0002_0000_00b7, 0x0000_0000_0000_0095], frame, repeat)
}

/// ns per run of an XDP program that looks up one existing 16-byte key in an LRU hash map (the
/// conntrack map's key size) and passes: what one conntrack lookup costs on this host, with
/// nothing of edge's around it.
pub fn lru_lookup_reference_ns(frame: &[u8], repeat: u32) -> f64 {
    let mut attr = [0u8; 144];
    attr[0..4].copy_from_slice(&9u32.to_ne_bytes()); // BPF_MAP_TYPE_LRU_HASH
    attr[4..8].copy_from_slice(&16u32.to_ne_bytes()); // key size
    attr[8..12].copy_from_slice(&24u32.to_ne_bytes()); // value size
    attr[12..16].copy_from_slice(&4096u32.to_ne_bytes()); // max entries
    // SAFETY: the attribute buffer outlives the call.
    let map = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_ptr(), attr.len()) };
    assert!(map >= 0, "BPF_MAP_CREATE: {}", std::io::Error::last_os_error());
    let key: [u32; 4] = [0x0a00_0001, 0x0a00_0002, 0x5000_c350, 6];
    let value = [0u8; 24];
    let mut attr = [0u8; 144];
    attr[0..4].copy_from_slice(&(map as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(key.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(value.as_ptr() as u64).to_ne_bytes());
    // SAFETY: as above (BPF_MAP_UPDATE_ELEM).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 2, attr.as_ptr(), attr.len()) };
    assert_eq!(rc, 0, "BPF_MAP_UPDATE_ELEM: {}", std::io::Error::last_os_error());
    // One instruction: opcode, registers (src << 4 | dst), offset, immediate.
    let insn = |op: u8, regs: u8, off: i16, imm: i32| -> u64 {
        u64::from(op) | u64::from(regs) << 8 | u64::from(off as u16) << 16 | u64::from(imm as u32) << 32
    };
    let mut prog = Vec::new();
    for (i, w) in key.iter().enumerate() {
        prog.push(insn(0x62, 10, -16 + 4 * i as i16, *w as i32)); // *(u32 *)(r10 - 16 + 4i) = w
    }
    prog.push(insn(0xbf, 10 << 4 | 2, 0, 0)); // r2 = r10
    prog.push(insn(0x07, 2, 0, -16)); // r2 += -16
    prog.push(insn(0x18, 1 << 4 | 1, 0, map as i32)); // r1 = map (BPF_PSEUDO_MAP_FD), 2 slots
    prog.push(0);
    prog.push(insn(0x85, 0, 0, 1)); // call bpf_map_lookup_elem
    prog.push(insn(0xb7, 0, 0, 2)); // r0 = XDP_PASS
    prog.push(insn(0x95, 0, 0, 0)); // exit
    let ns = raw_xdp_ns(&prog, frame, repeat);
    // SAFETY: closing our own fd.
    unsafe { libc::close(map as i32) };
    ns
}

/// Loads raw XDP instructions, runs them `repeat` times on `frame` (they must return XDP_PASS)
/// and returns ns per run.
fn raw_xdp_ns(insns: &[u64], frame: &[u8], repeat: u32) -> f64 {
    let license = b"GPL\0";
    let mut attr = [0u8; 144];
    let put32 = |a: &mut [u8; 144], off: usize, v: u32| a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 = |a: &mut [u8; 144], off: usize, v: u64| a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut attr, 0, 6); // BPF_PROG_TYPE_XDP
    put32(&mut attr, 4, insns.len() as u32); // insn_cnt
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    // SAFETY: the attribute buffer and what it points at outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len()) };
    assert!(fd >= 0, "BPF_PROG_LOAD of a reference program: {}", std::io::Error::last_os_error());
    let mut out = vec![0u8; frame.len() + 256];
    let mut t = [0u8; 144];
    put32(&mut t, 0, fd as u32); // prog_fd
    put32(&mut t, 8, frame.len() as u32); // data_size_in
    put32(&mut t, 12, out.len() as u32); // data_size_out
    put64(&mut t, 16, frame.as_ptr() as u64); // data_in
    put64(&mut t, 24, out.as_mut_ptr() as u64); // data_out
    put32(&mut t, 32, repeat);
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 10, t.as_ptr(), t.len()) };
    assert_eq!(rc, 0, "BPF_PROG_TEST_RUN of a reference program: {}", std::io::Error::last_os_error());
    let retval = u32::from_ne_bytes(t[4..8].try_into().unwrap());
    assert_eq!(retval, 2);
    let duration = u32::from_ne_bytes(t[36..40].try_into().unwrap());
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd as i32) };
    f64::from(duration)
}

/// What `log` wrote to the agent's logs (its `tracing` events, formatted without time or colour).
pub fn kernel_log_lines(log: &mut edge_dataplane::KernelLog) -> Vec<String> {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .without_time()
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || out.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || log.read());
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_string).collect()
}
