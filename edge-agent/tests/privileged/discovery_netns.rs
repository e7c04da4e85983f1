//! Discovery with traffic flowing, on both data planes: backends from a real dnsmasq (SRV
//! records) and from the Consul test double, both in the backend namespace, registered and
//! deregistered while a client opens a new connection per request through the VIP. No request
//! may fail, the deregistered backend takes no new connection, and in eBPF mode the interface
//! toward backends that appear later is found when they appear (also when Consul lists none at
//! start, so that no interface toward backends is known).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::consul_double::ConsulDouble;
use crate::netns::{Agent, BACKENDS, Backends, BpfCleanup, Topology, eventually, in_ns};
use crate::netns_behaviour::{COMMON, Mode, plane_args, serial, vip80};

/// The agent binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_edge-agent");
/// Client socket timeout.
const T: Duration = Duration::from_secs(3);
/// How long an agent may take to become ready, and a change to reach traffic.
const LIMIT: Duration = Duration::from_secs(20);

/// Where the discovery servers listen, in the backend namespace.
const SERVER_IP: &str = "10.91.2.2";

/// dnsmasq arguments serving SRV records `_web._tcp.edge.test` for the backends `which`.
fn dnsmasq_args(which: &[usize]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--port=5353",
        "--user=root",
        "--pid-file=",
        "--local-ttl=1",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("--listen-address={SERVER_IP}"));
    for &i in which {
        args.push(format!("--srv-host=_web._tcp.edge.test,b{i}.edge.test,80,0,1"));
        args.push(format!("--host-record=b{i}.edge.test,{}", BACKENDS[i]));
    }
    args
}

/// Sends `GET /` over a new connection through the VIP until `stop`; returns (sent, failed).
fn traffic(topo: &Topology, stop: &AtomicBool) -> (u64, u64) {
    let (sent, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        if topo.http_get(vip80(), T).is_err() {
            failed.fetch_add(1, Ordering::SeqCst);
        }
        sent.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
    }
    (sent.into_inner(), failed.into_inner())
}

/// Starts the agent with `discovery` arguments; it becomes ready and carries traffic.
fn start_agent(topo: &Topology, mode: Mode, discovery: &[&str]) -> Agent {
    let mut args = plane_args(mode);
    args.extend(discovery.iter().map(|s| s.to_string()));
    args.extend(COMMON.iter().map(|s| s.to_string()));
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::spawn(topo, BIN, &words);
    agent.wait_ready(LIMIT);
    let passes = eventually(LIMIT, || topo.http_get(vip80(), T).is_ok());
    assert!(passes, "no request through the VIP succeeded\n{}", agent.log_tail());
    agent
}

/// While traffic flows: `change` moves the backends from {0, 1} to {1, 2}; then backend 2 must
/// get traffic, backend 0 none, and no request may have failed.
fn registrations_lose_no_request(topo: &Topology, backends: &Backends, agent: &Agent, change: &dyn Fn()) {
    let stop = AtomicBool::new(false);
    let (sent, failed) = std::thread::scope(|s| {
        let flow = s.spawn(|| traffic(topo, &stop));
        std::thread::sleep(Duration::from_millis(500));
        change();
        let c_serves = eventually(LIMIT, || backends.served(2) > 0);
        // Flows to backend 0 that were open at the change finish; then no new one comes.
        std::thread::sleep(Duration::from_secs(1));
        let a_before = backends.served(0);
        std::thread::sleep(Duration::from_secs(1));
        let a_after = backends.served(0);
        stop.store(true, Ordering::SeqCst);
        let counts = flow.join().expect("the traffic thread");
        assert!(c_serves, "the registered backend never got traffic\n{}", agent.log_tail());
        assert_eq!(a_after, a_before, "the deregistered backend got new requests\n{}", agent.log_tail());
        counts
    });
    assert!(sent > 50, "traffic flowed ({sent})");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed across the change\n{}", agent.log_tail());
}

fn dns_registrations_lose_no_request(mode: Mode) {
    let _serial = serial();
    let _pins = (mode == Mode::Ebpf).then(|| BpfCleanup::new(BIN));
    let topo = Topology::new();
    let backends = topo.start_tcp_backends(80);
    let spawn = |which: &[usize]| {
        let args = dnsmasq_args(which);
        topo.spawn_in_backend("dnsmasq", &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let dns = std::cell::RefCell::new(spawn(&[0, 1]));
    let server = format!("{SERVER_IP}:5353");
    let agent = start_agent(&topo, mode, &["--dns-srv", "_web._tcp.edge.test", "--dns-server", &server]);
    registrations_lose_no_request(&topo, &backends, &agent, &|| {
        // dnsmasq reads its records at start: a restart is a change of records.
        let mut old = dns.borrow_mut();
        let _ = old.kill();
        let _ = old.wait();
        *old = spawn(&[1, 2]);
    });
    let mut last = dns.into_inner();
    let _ = last.kill();
    let _ = last.wait();
}

/// The Consul double, listening in the backend namespace, and the runtime it runs on.
fn consul_in_backend_ns(topo: &Topology) -> (tokio::runtime::Runtime, ConsulDouble) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime for the Consul double");
    let listener = in_ns(topo.backend_ns(), || std::net::TcpListener::bind((SERVER_IP, 8500)))
        .expect("the Consul double listens in the backend namespace");
    let double = rt.block_on(async { ConsulDouble::start_on(listener) });
    (rt, double)
}

fn consul_registrations_lose_no_request(mode: Mode) {
    let _serial = serial();
    let _pins = (mode == Mode::Ebpf).then(|| BpfCleanup::new(BIN));
    let topo = Topology::new();
    let backends = topo.start_tcp_backends(80);
    let (rt, double) = consul_in_backend_ns(&topo);
    let ip = |i: usize| BACKENDS[i].to_string();
    let (b0, b1, b2) = (ip(0), ip(1), ip(2));
    double.set(&[(&b0, 80, 1, "passing"), (&b1, 80, 1, "passing")]);
    let addr = format!("http://{SERVER_IP}:8500");
    let agent = start_agent(&topo, mode, &["--consul-service", "web", "--consul-addr", &addr]);
    registrations_lose_no_request(&topo, &backends, &agent, &|| {
        double.set(&[(&b1, 80, 1, "passing"), (&b2, 80, 1, "passing")]);
    });
    drop(double);
    drop(rt);
}

/// An eBPF agent whose only source is Consul, with no instance registered at start, does not
/// know which interface faces the backends; the first registrations must make it find that
/// interface and carry traffic to them.
fn ebpf_consul_first_registrations_find_the_backend_interface() {
    let _serial = serial();
    let _pins = BpfCleanup::new(BIN);
    let topo = Topology::new();
    let backends = topo.start_tcp_backends(80);
    let (rt, double) = consul_in_backend_ns(&topo);
    let addr = format!("http://{SERVER_IP}:8500");
    let mut args = plane_args(Mode::Ebpf);
    args.extend(["--consul-service", "web", "--consul-addr", &addr].map(String::from));
    args.extend(COMMON.iter().map(|s| s.to_string()));
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::spawn(&topo, BIN, &words);
    agent.wait_ready(LIMIT);
    assert!(topo.http_get(vip80(), T).is_err(), "no instance is registered yet, so no request can pass");
    let ip = |i: usize| BACKENDS[i].to_string();
    let (b0, b1) = (ip(0), ip(1));
    double.set(&[(&b0, 80, 1, "passing"), (&b1, 80, 1, "passing")]);
    let passes = eventually(LIMIT, || topo.http_get(vip80(), T).is_ok());
    assert!(passes, "the registered instances were never reached\n{}", agent.log_tail());
    let log = agent.log_tail();
    assert!(log.contains("attached the TC program toward a new backend"), "{log}");
    let both = eventually(LIMIT, || {
        let _ = topo.http_get(vip80(), T);
        backends.served(0) > 0 && backends.served(1) > 0
    });
    assert!(both, "both registered instances take connections\n{}", agent.log_tail());
    drop(agent);
    drop(double);
    drop(rt);
}

fn ebpf_dns_registrations_lose_no_request() {
    dns_registrations_lose_no_request(Mode::Ebpf);
}

fn userspace_dns_registrations_lose_no_request() {
    dns_registrations_lose_no_request(Mode::Userspace);
}

fn ebpf_consul_registrations_lose_no_request() {
    consul_registrations_lose_no_request(Mode::Ebpf);
}

fn userspace_consul_registrations_lose_no_request() {
    consul_registrations_lose_no_request(Mode::Userspace);
}

/// The tests of this file, for the harness.
pub(crate) const TESTS: &[(&str, fn())] = &[
    ("ebpf_dns_registrations_lose_no_request", ebpf_dns_registrations_lose_no_request),
    ("userspace_dns_registrations_lose_no_request", userspace_dns_registrations_lose_no_request),
    ("ebpf_consul_registrations_lose_no_request", ebpf_consul_registrations_lose_no_request),
    ("userspace_consul_registrations_lose_no_request", userspace_consul_registrations_lose_no_request),
    (
        "ebpf_consul_first_registrations_find_the_backend_interface",
        ebpf_consul_first_registrations_find_the_backend_interface,
    ),
];
