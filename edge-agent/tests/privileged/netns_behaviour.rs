//! Behavioural tests of the `edge-agent` binary between real network namespaces (see
//! `support/netns.rs`): a client, the agent, and three backends, with traffic through the VIP.
//!
//! Every scenario runs against both data planes where it applies: `ebpf` (XDP/TC on `l0`, full
//! NAT) and `userspace` (the TCP proxy listening on the VIP). They need root and skip otherwise.
//! eBPF pins are global to the host (`/sys/fs/bpf/edge`), so the tests of this file run one at a
//! time, and every eBPF test removes the pins before and after it (`edge-agent cleanup`).
//!
//! Set `EDGE_TEST_LOG=debug` to have the agents log at that level; a failing assertion prints the
//! tail of the agent's log, and the full log is kept in the temporary directory.

use std::net::SocketAddrV4;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::netns::{Agent, BACKENDS, Backends, BpfCleanup, KeepAlive, Topology, VIP, eventually, tally};

/// The agent binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_edge-agent");
/// Client socket timeout.
const T: Duration = Duration::from_secs(3);
/// How long an agent may take to become ready.
const READY: Duration = Duration::from_secs(20);
/// How long a change (health, drain, strategy) may take to reach new flows.
const SETTLE: Duration = Duration::from_secs(5);

/// One test at a time: eBPF pins are host-wide.
static LOCK: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The data plane under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Ebpf,
    Userspace,
}

/// The VIP's HTTP service.
pub(crate) fn vip80() -> SocketAddrV4 {
    SocketAddrV4::new(VIP, 80)
}

/// `run` arguments for the HTTP service on VIP:80 over the three backends, HTTP health checks
/// every 200 ms with rise 2 and fall 2, plus `extra`. eBPF agents get `--cleanup`.
pub(crate) fn agent_args(mode: Mode, extra: &[&str]) -> Vec<String> {
    let mut args = plane_args(mode);
    for b in BACKENDS {
        args.extend(["--backend".to_string(), format!("{b}:80")]);
    }
    args.extend(COMMON.iter().chain(extra).map(|s| s.to_string()));
    args
}

/// The data plane's own arguments: eBPF on `l0` for the VIP (with `--cleanup`), or the userspace
/// TCP proxy listening on the VIP.
pub(crate) fn plane_args(mode: Mode) -> Vec<String> {
    match mode {
        Mode::Ebpf => {
            ["--mode", "ebpf", "--iface", "l0", "--vip", "10.91.1.1:80", "--cleanup"].map(String::from).to_vec()
        }
        Mode::Userspace => ["--mode", "userspace", "--listen-tcp", "10.91.1.1:80"].map(String::from).to_vec(),
    }
}

/// Health checks and admin address of every HTTP scenario.
pub(crate) const COMMON: [&str; 12] = [
    "--health-check",
    "http",
    "--health-path",
    "/healthz",
    "--health-interval",
    "200ms",
    "--rise",
    "2",
    "--fall",
    "2",
    "--admin",
    "127.0.0.1:9901",
];

fn words(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A running scenario. Fields drop in order: the agent first, the namespaces, then the pins.
pub(crate) struct Env {
    pub(crate) agent: Agent,
    backends: Backends,
    /// Backends answering health probes on another port (`--health-port`), if any.
    _health: Option<Backends>,
    pub(crate) topo: Topology,
    _pins: Option<BpfCleanup>,
    _serial: MutexGuard<'static, ()>,
}

impl Env {
    /// Namespaces, HTTP backends on port 80, and an agent started with `args` that is ready and
    /// passes traffic through the VIP.
    pub(crate) fn start(mode: Mode, args: &[String]) -> Self {
        Self::start_with(mode, args, None)
    }

    /// As [`Env::start`], with a second set of backends on `health_port` for the probes.
    fn start_with(mode: Mode, args: &[String], health_port: Option<u16>) -> Self {
        let serial = serial();
        let pins = (mode == Mode::Ebpf).then(|| BpfCleanup::new(BIN));
        let topo = Topology::new();
        let backends = topo.start_tcp_backends(80);
        let health = health_port.map(|p| topo.start_tcp_backends(p));
        let mut agent = Agent::spawn(&topo, BIN, &words(args));
        agent.wait_ready(READY);
        let env = Self { agent, backends, _health: health, topo, _pins: pins, _serial: serial };
        let want = match mode {
            Mode::Ebpf => "ebpf",
            Mode::Userspace => "userspace",
        };
        let state = env.state();
        assert_eq!(state["dataplane"]["mode"], want, "the agent runs another data plane: {state}\n{}", env.log());
        let passes = eventually(SETTLE, || env.topo.http_get(vip80(), T).is_ok());
        assert!(passes, "no request through the VIP succeeded within {SETTLE:?} of readiness\n{}", env.log());
        let log = env.agent.log_tail();
        assert!(!log.contains("Some("), "log values print plainly, not as Rust options:\n{log}");
        env
    }

    /// The agent's log tail, for assertion messages.
    pub(crate) fn log(&self) -> String {
        format!("--- agent log (tail) ---\n{}\n--- end of agent log ---", self.agent.log_tail())
    }

    /// `GET /admin/state`.
    fn state(&self) -> serde_json::Value {
        self.agent.admin_json("/admin/state").unwrap_or_else(|e| panic!("GET /admin/state failed: {e}\n{}", self.log()))
    }

    /// A new connection's answer (the backend's address), or a panic that shows the log.
    fn get(&self, what: &str) -> String {
        match self.topo.http_get(vip80(), T) {
            Ok(body) => body.trim().to_string(),
            Err(e) => panic!("{what}: request through the VIP failed: {e}\n{}", self.log()),
        }
    }

    /// Whether `n` new connections in a row avoid the backend `ip` (and succeed).
    fn avoids(&self, ip: &str, n: usize) -> bool {
        (0..n).all(|_| self.topo.http_get(vip80(), T).is_ok_and(|b| b.trim() != ip))
    }

    /// Opens keep-alive connections until one lands on backend `ip` (at most 30 tries).
    fn keep_alive_on(&self, ip: &str) -> KeepAlive {
        for _ in 0..30 {
            let mut ka = KeepAlive::connect(&self.topo, vip80(), T)
                .unwrap_or_else(|e| panic!("keep-alive connect failed: {e}\n{}", self.log()));
            let b = ka.get().unwrap_or_else(|e| panic!("keep-alive request failed: {e}\n{}", self.log()));
            if b.trim() == ip {
                return ka;
            }
        }
        panic!("no keep-alive connection landed on {ip} in 30 tries\n{}", self.log());
    }

    /// Backend `ip:80` in `GET /admin/backends`.
    fn admin_backend(&self, ip: &str) -> serde_json::Value {
        let list = self
            .agent
            .admin_json("/admin/backends")
            .unwrap_or_else(|e| panic!("GET /admin/backends failed: {e}\n{}", self.log()));
        let address = format!("{ip}:80");
        list.as_array()
            .and_then(|l| l.iter().find(|b| b["address"] == address.as_str()))
            .cloned()
            .unwrap_or_else(|| panic!("{address} is not in GET /admin/backends: {list}"))
    }

    /// An admin call that must answer 200.
    pub(crate) fn admin_ok(&self, method: &str, path: &str, body: Option<&str>) -> String {
        match self.agent.admin(method, path, body) {
            Ok((200, body)) => body,
            Ok((status, body)) => panic!("{method} {path}: HTTP {status}: {body}\n{}", self.log()),
            Err(e) => panic!("{method} {path} failed: {e}\n{}", self.log()),
        }
    }
}

/// Asserts that a keep-alive connection still answers from `ip`.
fn assert_still_on(env: &Env, ka: &mut KeepAlive, ip: &str, when: &str) {
    match ka.get() {
        Ok(b) => assert_eq!(b.trim(), ip, "{when}: the established connection moved backends\n{}", env.log()),
        Err(e) => panic!("{when}: the established connection to {ip} broke: {e}\n{}", env.log()),
    }
}

/// Generates one test per data plane around a body taking the [`Mode`]:
/// `per_mode!(body, ebpf_test_name, userspace_test_name)`.
macro_rules! per_mode {
    ($body:ident, $ebpf:ident, $userspace:ident) => {
        fn $ebpf() {
            $body(Mode::Ebpf);
        }

        fn $userspace() {
            $body(Mode::Userspace);
        }
    };
}

per_mode!(round_robin_spreads, ebpf_round_robin_spreads, userspace_round_robin_spreads);
per_mode!(
    refusing_backend_is_ejected_and_established_flows_keep_working,
    ebpf_refusing_backend_is_ejected_and_established_flows_keep_working,
    userspace_refusing_backend_is_ejected_and_established_flows_keep_working
);
per_mode!(
    unhealthy_backend_gets_no_new_flows,
    ebpf_unhealthy_backend_gets_no_new_flows,
    userspace_unhealthy_backend_gets_no_new_flows
);
per_mode!(
    drained_backend_finishes_established_flows,
    ebpf_drained_backend_finishes_established_flows,
    userspace_drained_backend_finishes_established_flows
);
per_mode!(
    backends_from_a_file_only_carry_traffic,
    ebpf_backends_from_a_file_only_carry_traffic,
    userspace_backends_from_a_file_only_carry_traffic
);
per_mode!(
    removed_backend_finishes_established_flows,
    ebpf_removed_backend_finishes_established_flows,
    userspace_removed_backend_finishes_established_flows
);
per_mode!(
    strategy_switch_affects_new_flows_only,
    ebpf_strategy_switch_affects_new_flows_only,
    userspace_strategy_switch_affects_new_flows_only
);
per_mode!(
    two_services_balance_to_their_own_backends,
    ebpf_two_services_balance_to_their_own_backends,
    userspace_two_services_balance_to_their_own_backends
);

/// An nftables table in the backend namespace that breaks new connections to `ip:80` with
/// `verdict` ("drop" or "reject with tcp reset"); only SYNs from `sports` are affected (the eBPF
/// data plane's SNAT ports), so that the agent's health probes, from its own ephemeral ports, pass.
fn break_new_connections(env: &Env, ip: &str, sports: &str, verdict: &str) {
    let rules = format!(
        "table ip edge_test {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
         ip daddr {ip} tcp dport 80 tcp sport {sports} tcp flags & (syn | ack) == syn {verdict}\n  }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("edge-test-{}-{ip}.nft", std::process::id()));
    std::fs::write(&file, rules).expect("write the nftables rules");
    env.topo.run_in_backend("nft", &["-f", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
}

/// Opens `n` connections through the VIP at once, each with `timeout`; returns how many failed.
fn connect_burst(env: &Env, n: usize, timeout: Duration) -> usize {
    std::thread::scope(|s| {
        let tries: Vec<_> = (0..n).map(|_| s.spawn(|| env.topo.http_get(vip80(), timeout).is_err())).collect();
        tries.into_iter().map(|t| t.join().unwrap_or(true)).filter(|failed| *failed).count()
    })
}

/// Waits until backend `ip` is ejected, driving new connections meanwhile; returns its entry.
fn wait_ejected(env: &Env, ip: &str, limit: Duration) -> serde_json::Value {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        let b = env.admin_backend(ip);
        if b["state"] == "ejected" {
            return b;
        }
        connect_burst(env, 12, Duration::from_millis(1500));
    }
    panic!("{ip} was not ejected within {limit:?}: {}\n{}", env.admin_backend(ip), env.log());
}

/// A backend whose service port drops SYNs (its health port keeps passing) is ejected on the
/// kernel's evidence alone (SYNs left unanswered) within a few seconds, gets no new flows, and a
/// flow to it that was already established keeps working.
fn ebpf_syn_dropping_backend_is_ejected_and_established_flows_keep_working() {
    let env = Env::start(Mode::Ebpf, &agent_args(Mode::Ebpf, &[]));
    let target = BACKENDS[1].to_string();
    let mut ka = env.keep_alive_on(&target);
    break_new_connections(&env, &target, "16384-32767", "drop");
    let b = wait_ejected(&env, &target, Duration::from_secs(15));
    let reason = b["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("syn unanswered"), "ejected on the kernel's evidence: {b}\n{}", env.log());
    assert_eq!(b["health"], "healthy", "the probes still pass: a gray failure only traffic shows");
    let avoided = eventually(SETTLE, || env.avoids(&target, 6));
    assert!(avoided, "new connections still reach the ejected {target}\n{}", env.log());
    for n in 0..20 {
        assert_ne!(env.get(&format!("connection {n} after the ejection")), target, "{}", env.log());
    }
    assert_still_on(&env, &mut ka, &target, "after the ejection");
    let events = env.agent.admin_json("/admin/events").expect("GET /admin/events");
    let text = events.to_string();
    assert!(text.contains("\"to\":\"ejected\"") && text.contains(&target), "the event log says so: {text}");
}

/// A backend whose service port refuses new connections (a RST answers the SYN) while its health
/// port passes is ejected: on the eBPF data plane from the refused SYNs, in userspace from the
/// refused connects (which are sent to another backend meanwhile). It gets no new flows, and a
/// flow to it that was already established keeps working.
fn refusing_backend_is_ejected_and_established_flows_keep_working(mode: Mode) {
    let env = Env::start_with(mode, &agent_args(mode, &["--health-port", "8080"]), Some(8080));
    let target = BACKENDS[2].to_string();
    let mut ka = env.keep_alive_on(&target);
    // The userspace proxy connects from ephemeral ports; the eBPF data plane from its SNAT ports.
    let sports = if mode == Mode::Ebpf { "16384-32767" } else { "1024-65535" };
    break_new_connections(&env, &target, sports, "reject with tcp reset");
    let b = wait_ejected(&env, &target, Duration::from_secs(15));
    let reason = b["reason"].as_str().unwrap_or_default();
    let want = if mode == Mode::Ebpf { "syn answered with rst" } else { "connect failed" };
    assert!(reason.contains(want), "ejected for the refusals: {b}\n{}", env.log());
    let avoided = eventually(SETTLE, || env.avoids(&target, 6));
    assert!(avoided, "new connections still reach the ejected {target}\n{}", env.log());
    assert_still_on(&env, &mut ka, &target, "after the ejection");
    let metrics = env.agent.admin("GET", "/metrics", None).expect("GET /metrics").1;
    let (service, kind) = if mode == Mode::Ebpf { ("10.91.1.1:80", "syn_refused") } else { ("default", "connect") };
    let series =
        format!("edge_backend_ejections_total{{service=\"{service}\",backend=\"{target}:80\",reason=\"{kind}\"}} 1");
    assert!(metrics.contains(&series), "{series} in\n{metrics}");
}

/// New connections reach all three backends, each at least half its fair share.
fn round_robin_spreads(mode: Mode) {
    let env = Env::start(mode, &agent_args(mode, &[]));
    assert_spread(&env);
}

/// Sends 150 new connections and asserts that each backend got at least 25 of them. The eBPF data
/// plane spreads connections by a hash of their random source ports, so the count per backend is
/// binomial (n 150, p 1/3: mean 50, standard deviation 5.8). A false failure (any backend under 25)
/// happens about once in 240,000 runs; the former bound of 10 of 60 failed about once in 290 runs,
/// and it did fail in CI.
fn assert_spread(env: &Env) {
    let answers: Vec<String> = (0..150).map(|i| env.get(&format!("connection {i}"))).collect();
    let counts = tally(answers.iter().map(String::as_str));
    for ip in BACKENDS {
        let n = counts.get(&ip.to_string()).copied().unwrap_or(0);
        assert!(n >= 25, "{ip} got {n} of 150 connections ({counts:?})\n{}", env.log());
    }
}

/// Backends that come only from a backends file carry traffic: the eBPF agent finds the interface
/// toward them (and attaches there) as it does for `--backend`.
fn backends_from_a_file_only_carry_traffic(mode: Mode) {
    let dir = std::env::temp_dir().join(format!("edge-fileonly-{}-{mode:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("backends.json");
    let list: Vec<String> = BACKENDS.iter().map(|b| format!("\"{b}:80\"")).collect();
    std::fs::write(&file, format!("[{}]", list.join(","))).unwrap();
    let mut args = plane_args(mode);
    args.extend(["--backends-file".to_string(), file.display().to_string()]);
    args.extend(COMMON.iter().map(|s| s.to_string()));
    let env = Env::start(mode, &args);
    let answers: Vec<String> = (0..30).map(|i| env.get(&format!("connection {i}"))).collect();
    let counts = tally(answers.iter().map(String::as_str));
    assert_eq!(counts.len(), 3, "every backend from the file answers ({counts:?})\n{}", env.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same spread with native XDP forced on the veth (`auto` leaves XDP off there): real TCP
/// through the XDP program, which steers what it can and hands partial-checksum frames to TC.
fn ebpf_native_xdp_round_robin_spreads() {
    let env = Env::start(Mode::Ebpf, &agent_args(Mode::Ebpf, &["--xdp-mode", "native"]));
    let state = env.agent.admin_json("/admin/state").expect("admin state");
    let hooks = state.to_string();
    assert!(hooks.contains("xdp-native"), "XDP attached natively: {hooks}");
    assert_spread(&env);
}

/// `--vip l0:80` without `--iface`, as the EC2 task definition in deploy/ runs it: the agent takes
/// l0's address as the VIP and attaches to l0, and traffic to that address reaches every backend.
fn ebpf_vip_by_interface_serves_its_address() {
    let mut args: Vec<String> = ["--mode", "ebpf", "--vip", "l0:80", "--cleanup"].map(String::from).to_vec();
    for b in BACKENDS {
        args.extend(["--backend".to_string(), format!("{b}:80")]);
    }
    args.extend(COMMON.iter().map(|s| s.to_string()));
    let env = Env::start(Mode::Ebpf, &args);
    let services = env.agent.admin_json("/admin/services").expect("GET /admin/services").to_string();
    assert!(services.contains("\"l0:80\""), "the service is named as written: {services}");
    assert_spread(&env);
    // The kernel's counters in the admin API, under the service's name.
    let d = env.agent.admin_json("/admin/dataplane").expect("GET /admin/dataplane");
    assert_eq!(d["mode"], "ebpf", "{d}");
    assert_eq!(d["services"][0]["service"], "l0:80", "{d}");
    assert!(d["services"][0]["packets"].as_u64().unwrap_or(0) > 0, "{d}");
    let new_flows: u64 = d["backends"].as_array().unwrap().iter().map(|b| b["new_flows"].as_u64().unwrap()).sum();
    assert!(new_flows >= 150, "150 connections were steered: {d}");
    let metrics = env.agent.admin("GET", "/metrics", None).expect("GET /metrics").1;
    for series in
        ["edge_ebpf_service_packets_total{service=\"l0:80\"}", "edge_ebpf_backend_new_flows_total{service=\"l0:80\""]
    {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

/// `edge-agent monitor` against a running eBPF agent: new flows stream with their tuple, the
/// kernel monitor is off again when the command ends, and a drop (every backend drained: no
/// backend) reaches `GET /admin/monitor` with its reason.
fn ebpf_monitor_streams_new_flows_and_drops() {
    let env = Env::start(Mode::Ebpf, &agent_args(Mode::Ebpf, &[]));
    let mut watcher = std::process::Command::new("ip")
        .args(["netns", "exec", env.topo.lb_ns(), BIN, "monitor", "--type", "flow", "--count", "3"])
        .args(["--duration", "30s", "--admin", "127.0.0.1:9901"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("edge-agent monitor starts");
    let on = eventually(SETTLE, || env.agent.admin_json("/admin/monitor").is_ok_and(|m| m["on"] == true));
    assert!(on, "the monitor never switched on\n{}", env.log());
    for n in 0..3 {
        env.get(&format!("connection {n} while monitoring"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while watcher.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "edge-agent monitor did not stop after 3 events");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = watcher.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in &lines {
        assert!(l.contains("new_flow") && l.contains("-> 10.91.1.1:80"), "{l}");
    }
    let m = env.agent.admin_json("/admin/monitor").unwrap();
    assert_eq!(m["on"], false, "the command switched the monitor off when it ended: {m}");

    // A drop, read through the admin API as the console does.
    let (status, body) = env.agent.admin("POST", "/admin/monitor", Some(r#"{"drops": true, "seconds": 60}"#)).unwrap();
    assert_eq!(status, 200, "{body}");
    let since = serde_json::from_str::<serde_json::Value>(&body).unwrap()["last_seq"].as_u64().unwrap();
    for b in BACKENDS {
        env.admin_ok("POST", &format!("/admin/backends/{b}:80/drain"), None);
    }
    let dropped = eventually(SETTLE, || {
        let _ = env.topo.http_get(vip80(), Duration::from_millis(300));
        env.agent.admin_json(&format!("/admin/monitor?since={since}")).is_ok_and(|m| {
            m["events"].as_array().is_some_and(|l| {
                l.iter().any(|e| e["event"] == "drop_no_backend" && e["dst"] == "10.91.1.1:80" && e["kind"] == "drop")
            })
        })
    });
    assert!(dropped, "no drop_no_backend event\n{}", env.log());
}

/// SNAT port exhaustion, a rare condition, reaches the agent's own log as a record from the data
/// path (aya-log, target `edge_ebpf`) that names the backend and what to change.
fn ebpf_snat_exhaustion_is_logged_by_the_data_path() {
    // Two SNAT ports per backend: seven open connections over three backends cannot all get one.
    let env = Env::start(Mode::Ebpf, &agent_args(Mode::Ebpf, &["--snat-ports", "20000-20001"]));
    let open: Vec<_> =
        (0..7).filter_map(|_| KeepAlive::connect(&env.topo, vip80(), Duration::from_millis(500)).ok()).collect();
    assert!(open.len() < 7, "seven connections got SNAT ports from a range of two per backend\n{}", env.log());
    let logged = eventually(SETTLE, || {
        let log = env.agent.log_tail();
        log.lines().any(|l| {
            l.contains("edge_ebpf")
                && l.contains("no free SNAT port toward backend 10.91.2.")
                && l.contains("widen --snat-ports or add backends")
        })
    });
    assert!(logged, "no data path record of SNAT port exhaustion\n{}", env.log());
}

/// A restart with another `--xdp-mode` replaces the pinned XDP link instead of adopting it: the
/// interface ends up in the mode asked for, and traffic passes throughout.
fn ebpf_xdp_mode_change_takes_effect_on_restart() {
    let native: Vec<String> =
        agent_args(Mode::Ebpf, &["--xdp-mode", "native"]).into_iter().filter(|a| a != "--cleanup").collect();
    let mut env = Env::start(Mode::Ebpf, &native);
    let xdp_of = |env: &Env| {
        let lb = env.topo.lb_ns().to_string();
        let out = std::process::Command::new("ip")
            .args(["-n", &lb, "-d", "link", "show", "dev", "l0"])
            .output()
            .expect("ip link runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("xdpgeneric") {
            "generic"
        } else if text.contains(" xdp ") || text.contains("prog/xdp") {
            "native"
        } else {
            "none"
        }
    };
    assert_eq!(xdp_of(&env), "native", "{}", env.log());
    env.agent.stop();
    let generic: Vec<String> =
        native.iter().map(|a| if a == "native" { "generic".to_string() } else { a.clone() }).collect();
    env.agent = Agent::spawn(&env.topo, BIN, &words(&generic));
    env.agent.wait_ready(READY);
    assert_eq!(xdp_of(&env), "generic", "the restart kept the old mode\n{}", env.log());
    let state = env.state().to_string();
    assert!(state.contains("xdp-generic"), "/admin/state names the mode in force: {state}");
    assert!(env.agent.log_tail().contains("replaced the XDP link"), "the log says so\n{}", env.log());
    for n in 0..10 {
        env.get(&format!("connection {n} after the mode change"));
    }
}

/// Programs an earlier eBPF agent left attached would keep steering the VIP while a later agent
/// falls back to the userspace proxy (here, a wrong `--iface`), invisibly; the later agent refuses
/// and says to run `edge-agent cleanup`, after which it starts and serves the VIP itself.
fn leftover_steering_is_refused_not_hidden() {
    let first: Vec<String> = agent_args(Mode::Ebpf, &[]).into_iter().filter(|a| a != "--cleanup").collect();
    let mut env = Env::start(Mode::Ebpf, &first);
    env.agent.stop();
    let mut later: Vec<String> =
        ["--mode", "auto", "--iface", "nosuch0", "--vip", "10.91.1.1:80", "--listen-tcp", "10.91.1.1:80"]
            .map(String::from)
            .to_vec();
    for b in BACKENDS {
        later.extend(["--backend".to_string(), format!("{b}:80")]);
    }
    later.extend(COMMON.iter().map(|s| s.to_string()));
    env.agent = Agent::spawn(&env.topo, BIN, &words(&later));
    let exited = eventually(Duration::from_secs(10), || !env.agent.is_running());
    assert!(exited, "the later agent runs while the earlier programs steer its VIP\n{}", env.log());
    let log = env.agent.log_tail();
    assert!(
        log.contains("still attached") && log.contains("10.91.1.1:80/tcp") && log.contains("edge-agent cleanup"),
        "the refusal names the leftover and the fix:\n{log}"
    );
    // Once cleaned up, the same agent starts in userspace and serves the VIP itself.
    drop(BpfCleanup::new(BIN));
    env.agent = Agent::spawn(&env.topo, BIN, &words(&later));
    env.agent.wait_ready(READY);
    assert_eq!(env.state()["dataplane"]["mode"], "userspace", "{}", env.log());
    env.get("a connection through the userspace proxy on the VIP");
}

/// SIGTERM with `--cleanup` drains before it detaches, as the userspace plane does: an established
/// connection keeps working, and the programs go once it ends (well before `--drain-timeout`).
fn ebpf_cleanup_at_stop_drains_first() {
    let env = Env::start(Mode::Ebpf, &agent_args(Mode::Ebpf, &["--drain-timeout", "8s"]));
    let mut ka = KeepAlive::connect(&env.topo, vip80(), T)
        .unwrap_or_else(|e| panic!("keep-alive connect failed: {e}\n{}", env.log()));
    let target =
        ka.get().unwrap_or_else(|e| panic!("keep-alive request failed: {e}\n{}", env.log())).trim().to_string();
    // SAFETY: kill has no memory-safety preconditions; the pid is the agent's.
    unsafe { libc::kill(env.agent.pid() as libc::pid_t, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(1500));
    assert_still_on(&env, &mut ka, &target, "1.5 s into a --cleanup stop");
    let t0 = std::time::Instant::now();
    drop(ka);
    let mut env = env;
    let exited = eventually(Duration::from_secs(6), || !env.agent.is_running());
    assert!(exited, "the agent did not stop once its last flow ended\n{}", env.log());
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    let log = env.agent.log_tail();
    assert!(log.contains("no established flow left"), "{log}");
    assert!(
        !std::path::Path::new("/sys/fs/bpf/edge/links").read_dir().is_ok_and(|mut d| d.next().is_some()),
        "detached"
    );
}

/// Under `ip netns exec` the agent mounts its own /sys/fs/bpf, which goes away with it: its exit
/// message says the programs are detached, not that they "stay attached and keep steering".
fn ebpf_exit_message_under_ip_netns_exec_says_what_happens() {
    let _serial = serial();
    let _pins = BpfCleanup::new(BIN);
    let topo = Topology::new();
    let _backends = topo.start_tcp_backends(80);
    let args: Vec<String> = agent_args(Mode::Ebpf, &[]).into_iter().filter(|a| a != "--cleanup").collect();
    let log = std::env::temp_dir().join(format!("edge-netns-exec-{}.log", std::process::id()));
    let out = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", topo.lb_ns(), BIN, "run"])
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("ip netns exec runs");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    // The signal handler is installed once the start completes (the admin listener is its last
    // step); a SIGTERM before that would end the process before it can say anything.
    let started = eventually(READY, || read().contains("admin api ready"));
    assert!(started, "the agent did not start under ip netns exec:\n{}", read());
    std::thread::sleep(Duration::from_millis(500));
    assert!(read().contains("mode=\"ebpf\""), "not in eBPF mode:\n{}", read());
    // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let exited = eventually(Duration::from_secs(15), || child.try_wait().is_ok_and(|s| s.is_some()));
    assert!(exited, "the agent did not exit on SIGTERM:\n{}", read());
    let text = read();
    assert!(text.contains("the eBPF programs are detached now"), "the exit message says what happens:\n{text}");
    assert!(!text.contains("stay attached and keep steering"), "{text}");
    let _ = std::fs::remove_file(&log);
}

/// A backend whose health check fails gets no new connections within fall × interval (plus
/// slack), while a connection established to it before keeps working.
fn unhealthy_backend_gets_no_new_flows(mode: Mode) {
    let env = Env::start(mode, &agent_args(mode, &[]));
    let target = BACKENDS[1].to_string();
    let i = env.backends.index_of(&target).expect("the target is a backend");
    let mut ka = env.keep_alive_on(&target);

    env.backends.set_healthy(i, false);
    let marked = eventually(SETTLE, || env.admin_backend(&target)["state"] == "unhealthy");
    assert!(
        marked,
        "{target} was not marked unhealthy within {SETTLE:?}: {}\n{}",
        env.admin_backend(&target),
        env.log()
    );
    let avoided = eventually(SETTLE, || env.avoids(&target, 6));
    assert!(avoided, "new connections still reach the unhealthy {target} after {SETTLE:?}\n{}", env.log());
    for n in 0..30 {
        let b = env.get(&format!("connection {n} after {target} failed"));
        assert_ne!(b, target, "connection {n} reached the unhealthy backend\n{}", env.log());
    }

    for n in 0..2 {
        assert_still_on(&env, &mut ka, &target, &format!("request {n} after {target} failed its checks"));
    }
}

/// A drained backend gets no new connections; its established connection keeps working.
fn drained_backend_finishes_established_flows(mode: Mode) {
    let env = Env::start(mode, &agent_args(mode, &[]));
    let mut ka = KeepAlive::connect(&env.topo, vip80(), T)
        .unwrap_or_else(|e| panic!("keep-alive connect failed: {e}\n{}", env.log()));
    let target =
        ka.get().unwrap_or_else(|e| panic!("keep-alive request failed: {e}\n{}", env.log())).trim().to_string();

    let backend = env.admin_backend(&target);
    let id = backend["id"].as_str().unwrap_or_else(|| panic!("backend without an id: {backend}")).to_string();
    let drained = env.admin_ok("POST", &format!("/admin/backends/{id}/drain"), None);
    assert!(drained.contains("\"draining\""), "POST drain did not report the backend draining: {drained}");

    assert_still_on(&env, &mut ka, &target, "right after the drain");
    let avoided = eventually(SETTLE, || env.avoids(&target, 6));
    assert!(avoided, "new connections still reach the drained {target} after {SETTLE:?}\n{}", env.log());
    for n in 0..30 {
        let b = env.get(&format!("connection {n} after draining {target}"));
        assert_ne!(b, target, "connection {n} reached the drained backend\n{}", env.log());
    }
    assert_still_on(&env, &mut ka, &target, "after 30 new connections");
}

/// Backends that appear while the agent runs, behind an interface no backend used at start, are
/// reached: the agent attaches the TC program there. One with no route is named in the log and in
/// `GET /admin/backends`.
fn ebpf_backends_added_later_are_reached_or_reported() {
    let serial = serial();
    let pins = BpfCleanup::new(BIN);
    let topo = Topology::new();
    let backends = topo.start_tcp_backends(80);
    let dir = std::env::temp_dir().join(format!("edge-later-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("backends.json");
    std::fs::write(&file, "[]").unwrap();
    let mut args: Vec<String> =
        ["--mode", "ebpf", "--iface", "l0", "--vip", "10.91.1.1:80", "--cleanup"].map(String::from).to_vec();
    args.extend(["--backends-file".to_string(), file.display().to_string()]);
    args.extend(COMMON.iter().map(|s| s.to_string()));
    let mut agent = Agent::spawn(&topo, BIN, &words(&args));
    agent.wait_ready(READY);
    let env = Env { agent, backends, _health: None, topo, _pins: Some(pins), _serial: serial };
    let mut list: Vec<String> = BACKENDS.iter().map(|b| format!("\"{b}:80\"")).collect();
    list.push("\"203.0.113.9:80\"".into());
    let tmp = dir.join("backends.json.new");
    std::fs::write(&tmp, format!("[{}]", list.join(","))).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let passes = eventually(SETTLE * 2, || env.topo.http_get(vip80(), T).is_ok());
    assert!(passes, "backends added later are not reached\n{}", env.log());
    let log = env.agent.log_tail();
    assert!(log.contains("attached the TC program toward a new backend"), "{log}");
    let lost = env.admin_backend("203.0.113.9");
    let why = lost["unreachable"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("no route") && why.contains("drop_no_route"), "GET /admin/backends says why: {lost}");
    assert!(log.contains("no route to the backend"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backend removed by discovery (here, from a backends file) drains as an operator drain does:
/// no new connections, its established connection keeps working, `active` in the admin API counts
/// it (in eBPF mode, from the kernel's conntrack), and it leaves once that connection closes.
fn removed_backend_finishes_established_flows(mode: Mode) {
    // Two fixed backends (which also tell the eBPF agent which interface faces the backends) and
    // the third from a file.
    let dir = std::env::temp_dir().join(format!("edge-removal-{}-{mode:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("backends.json");
    let third = BACKENDS[2].to_string();
    std::fs::write(&file, format!("[\"{third}:80\"]")).unwrap();
    let mut args = plane_args(mode);
    for b in &BACKENDS[..2] {
        args.extend(["--backend".to_string(), format!("{b}:80")]);
    }
    args.extend(["--backends-file".to_string(), file.display().to_string(), "--drain-timeout".into(), "1m".into()]);
    args.extend(COMMON.iter().map(|s| s.to_string()));
    let env = Env::start(mode, &args);
    let ready = eventually(SETTLE, || env.admin_backend(&third)["state"] == "healthy");
    assert!(ready, "{third} from the file never became healthy\n{}", env.log());
    let mut ka = env.keep_alive_on(&third);

    // Remove it from the file (write and rename, as an editor or a config agent does).
    let tmp = dir.join("backends.json.new");
    std::fs::write(&tmp, "[]").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let removed = eventually(SETTLE, || env.admin_backend(&third)["state"] == "removed");
    assert!(removed, "{third} did not turn removed (draining its flows) after leaving the file\n{}", env.log());
    // Well past the moment an eBPF agent used to retire it (about 20 ms after the removal).
    std::thread::sleep(Duration::from_secs(2));
    assert_still_on(&env, &mut ka, &third, "2 s after the removal");
    let counted = eventually(SETTLE, || env.admin_backend(&third)["active"].as_i64().unwrap_or(0) >= 1);
    assert!(
        counted,
        "GET /admin/backends does not count the open connection on {third}: {}\n{}",
        env.admin_backend(&third),
        env.log()
    );
    for n in 0..20 {
        let b = env.get(&format!("connection {n} after removing {third}"));
        assert_ne!(b, third, "connection {n} reached the removed backend\n{}", env.log());
    }
    assert_still_on(&env, &mut ka, &third, "after 20 new connections");

    // Once its last connection closes, it leaves.
    drop(ka);
    let gone = eventually(Duration::from_secs(10), || {
        env.agent.admin_json("/admin/backends").is_ok_and(|l| {
            l.as_array().is_some_and(|a| a.iter().all(|b| b["address"] != format!("{third}:80").as_str()))
        })
    });
    assert!(gone, "{third} is still listed after its last connection closed\n{}", env.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Switching the strategy leaves established connections on their backends; new connections
/// follow the new strategy (with the source as hash key, all land on one backend).
fn strategy_switch_affects_new_flows_only(mode: Mode) {
    let env = Env::start(mode, &agent_args(mode, &["--strategy", "round-robin"]));
    // The eBPF data plane hashes random source ports, so 6 connections all landed on one of three
    // backends once in 243 runs; with 12 it is once in 177,000.
    let mut conns: Vec<(KeepAlive, String)> = (0..12)
        .map(|n| {
            let mut ka = KeepAlive::connect(&env.topo, vip80(), T)
                .unwrap_or_else(|e| panic!("keep-alive {n}: connect failed: {e}\n{}", env.log()));
            let b = ka.get().unwrap_or_else(|e| panic!("keep-alive {n}: request failed: {e}\n{}", env.log()));
            (ka, b.trim().to_string())
        })
        .collect();
    let before = tally(conns.iter().map(|(_, b)| b.as_str()));
    assert!(before.len() >= 2, "round robin put 12 connections on {before:?}\n{}", env.log());

    env.admin_ok("PUT", "/admin/strategy", Some(r#"{"strategy":"consistent-hash"}"#));
    for (n, (ka, b)) in conns.iter_mut().enumerate() {
        assert_still_on(&env, ka, b, &format!("keep-alive {n} after the switch to consistent-hash"));
    }
    for n in 0..20 {
        env.get(&format!("connection {n} after the switch to consistent-hash"));
    }

    env.admin_ok("PUT", "/admin/strategy", Some(r#"{"strategy":"consistent-hash","hash_key":"source"}"#));
    let one_backend = || {
        let answers: Vec<String> = (0..5).filter_map(|_| env.topo.http_get(vip80(), T).ok()).collect();
        answers.len() == 5 && tally(answers.iter().map(String::as_str)).len() == 1
    };
    let settled = eventually(SETTLE, one_backend);
    assert!(settled, "hashing by source did not settle on one backend within {SETTLE:?}\n{}", env.log());
    let answers: Vec<String> = (0..20).map(|n| env.get(&format!("connection {n} hashed by source"))).collect();
    let counts = tally(answers.iter().map(String::as_str));
    assert_eq!(counts.len(), 1, "20 connections from one client address spread over {counts:?}\n{}", env.log());
    for (n, (ka, b)) in conns.iter_mut().enumerate() {
        assert_still_on(&env, ka, b, &format!("keep-alive {n} after hashing by source"));
    }
}

/// A config file in the temporary directory, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(tag: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("edge-netns-{}-{tag}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Two `[[service]]` tables on two ports of the VIP: `web` (port 80) over the first two backends,
/// `alt` (port 81) over the third (all backends listen on port 80). Each port's connections reach
/// only its own service's backends, and a drain by name (`?service=web`) leaves `alt` alone.
fn two_services_balance_to_their_own_backends(mode: Mode) {
    let [b0, b1, b2] = BACKENDS;
    let config = ConfigFile::new(
        &format!("{mode:?}"),
        &format!(
            "[[service]]\nname = \"web\"\nvip = \"{VIP}:80\"\nbackend = [\"{b0}:80\", \"{b1}:80\"]\n\n\
             [[service]]\nname = \"alt\"\nvip = \"{VIP}:81\"\nbackend = [\"{b2}:80\"]\n"
        ),
    );
    let mut args: Vec<String> = match mode {
        Mode::Ebpf => ["--mode", "ebpf", "--iface", "l0", "--cleanup"].map(String::from).to_vec(),
        Mode::Userspace => ["--mode", "userspace"].map(String::from).to_vec(),
    };
    args.extend(["--config".to_string(), config.0.display().to_string()]);
    args.extend(COMMON.iter().map(|s| s.to_string()));
    let env = Env::start(mode, &args);
    let alt = SocketAddrV4::new(VIP, 81);
    let get_alt = |what: &str| match env.topo.http_get(alt, T) {
        Ok(body) => body.trim().to_string(),
        Err(e) => panic!("{what}: request through {alt} failed: {e}\n{}", env.log()),
    };

    let web_answers: Vec<String> = (0..30).map(|i| env.get(&format!("web connection {i}"))).collect();
    let counts = tally(web_answers.iter().map(String::as_str));
    let (ip0, ip1, ip2) = (b0.to_string(), b1.to_string(), b2.to_string());
    assert!(
        counts.keys().all(|k| *k == ip0 || *k == ip1),
        "web (port 80) reached a backend of another service: {counts:?}\n{}",
        env.log()
    );
    assert_eq!(counts.len(), 2, "30 web connections did not reach both of its backends: {counts:?}\n{}", env.log());
    for i in 0..10 {
        assert_eq!(get_alt(&format!("alt connection {i}")), ip2, "alt (port 81) left its backend\n{}", env.log());
    }

    let list = env.agent.admin_json("/admin/services").unwrap_or_else(|e| panic!("GET /admin/services: {e}"));
    let names: Vec<&str> =
        list.as_array().map(|l| l.iter().filter_map(|s| s["name"].as_str()).collect()).unwrap_or_default();
    assert_eq!(names, ["web", "alt"], "GET /admin/services: {list}");
    assert_eq!(list[1]["vip"], format!("{VIP}:81"), "{list}");
    assert_eq!(list[1]["backends"][0]["address"], format!("{ip2}:80"), "{list}");

    let other = env.agent.admin("POST", &format!("/admin/backends/{ip2}:80/drain?service=web"), None);
    assert!(matches!(other, Ok((404, _))), "draining alt's backend under web's name: {other:?}");
    env.admin_ok("POST", &format!("/admin/backends/{ip0}:80/drain?service=web"), None);
    let avoided = eventually(SETTLE, || env.avoids(&ip0, 6));
    assert!(avoided, "new web connections still reach the drained {ip0} after {SETTLE:?}\n{}", env.log());
    for i in 0..10 {
        assert_eq!(env.get(&format!("web connection {i} after the drain")), ip1, "{}", env.log());
        assert_eq!(get_alt(&format!("alt connection {i} after web's drain")), ip2, "{}", env.log());
    }
}

/// eBPF only (userspace connections end with the proxy): an established flow keeps working while
/// the agent is dead (SIGKILL; the pinned programs keep steering) and after a new agent adopts
/// the pins; new connections work again.
fn ebpf_flows_survive_agent_restart() {
    let args: Vec<String> = agent_args(Mode::Ebpf, &[]).into_iter().filter(|a| a != "--cleanup").collect();
    let mut env = Env::start(Mode::Ebpf, &args);
    let mut ka = KeepAlive::connect(&env.topo, vip80(), T)
        .unwrap_or_else(|e| panic!("keep-alive connect failed: {e}\n{}", env.log()));
    let target =
        ka.get().unwrap_or_else(|e| panic!("keep-alive request failed: {e}\n{}", env.log())).trim().to_string();

    env.agent.kill9();
    for n in 0..2 {
        assert_still_on(&env, &mut ka, &target, &format!("request {n} while the agent is dead"));
    }

    env.agent = Agent::spawn(&env.topo, BIN, &words(&args));
    env.agent.wait_ready(READY);
    let state = env.state();
    assert_eq!(state["dataplane"]["adopted"], true, "the new agent did not adopt the pins: {state}\n{}", env.log());
    assert_still_on(&env, &mut ka, &target, "after the agent restarted");
    let passes = eventually(SETTLE, || env.topo.http_get(vip80(), T).is_ok());
    assert!(passes, "no new connection succeeded within {SETTLE:?} of the restart\n{}", env.log());
    for n in 0..10 {
        env.get(&format!("new connection {n} after the restart"));
    }
    assert_still_on(&env, &mut ka, &target, "after new connections");
}

/// eBPF only (the userspace proxy has no UDP): datagrams from different client ports spread over
/// the backends; datagrams of one flow (same client port) stick to one backend. TCP listeners on
/// the same port serve the (TCP) health checks.
/// The README's two-service example as written (a web service and a UDP DNS service, with
/// `--health-path /healthz` at the top level) becomes healthy: the DNS service's backends, real
/// DNS servers (dnsmasq), are probed with a DNS query, not the web service's HTTP probe, and a
/// query through the VIP is answered.
fn ebpf_readme_two_service_example_becomes_healthy() {
    let _serial = serial();
    let _pins = BpfCleanup::new(BIN);
    let topo = Topology::new();
    let _web = topo.start_tcp_backends(80);
    let _dns: Vec<std::process::Child> = BACKENDS
        .iter()
        .map(|ip| {
            topo.spawn_in_backend(
                "dnsmasq",
                &[
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--conf-file=/dev/null",
                    "--bind-interfaces",
                    &format!("--listen-address={ip}"),
                    "--port=53",
                    "--user=root",
                    "--pid-file=",
                ],
            )
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("edge-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("edge.toml");
    let list = |port: u16, n: usize| -> String {
        BACKENDS[..n].iter().map(|b| format!("\"{b}:{port}\"")).collect::<Vec<_>>().join(", ")
    };
    std::fs::write(
        &file,
        format!(
            "[[service]]\nname = \"web\"\nvip = \"10.91.1.1:80\"\nbackend = [{}]\n\n\
             [[service]]\nname = \"dns\"\nvip = \"10.91.1.1:53/udp\"\nbackend = [{}]\n\
             strategy = \"consistent-hash\"\nhash-key = \"source\"\n",
            list(80, 2),
            list(53, 3)
        ),
    )
    .unwrap();
    let config = file.display().to_string();
    let args = ["--mode", "ebpf", "--iface", "l0", "--health-path", "/healthz", "--cleanup"].into_iter().chain([
        "--admin",
        "127.0.0.1:9901",
        "--config",
        &config,
    ]);
    let args: Vec<String> = args.map(String::from).collect();
    let mut agent = Agent::spawn(&topo, BIN, &words(&args));
    agent.wait_ready(READY);
    let log = |agent: &Agent| format!("--- agent log (tail) ---\n{}\n--- end of agent log ---", agent.log_tail());
    let healthy = |service: &str| {
        agent
            .admin_json(&format!("/admin/backends?service={service}"))
            .ok()
            .and_then(|l| l.as_array().map(|l| l.iter().all(|b| b["state"] == "healthy")))
            .unwrap_or(false)
    };
    assert!(eventually(SETTLE, || healthy("dns")), "the DNS backends never became healthy\n{}", log(&agent));
    assert!(eventually(SETTLE, || healthy("web")), "the web backends never became healthy\n{}", log(&agent));
    let dns = agent.admin_json("/admin/backends?service=dns").unwrap();
    assert!(dns.to_string().contains("dns answer"), "probed with a DNS query: {dns}");
    // A DNS query through the VIP is answered by one of the servers.
    let answered = eventually(SETTLE, || {
        let vip = SocketAddrV4::new(VIP, 53);
        let client = topo.client_ns().to_string();
        crate::netns::in_ns(&client, move || -> std::io::Result<Vec<u8>> {
            let s = std::net::UdpSocket::bind("10.91.1.2:0")?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            s.connect(vip)?;
            s.send(&[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1])?;
            let mut buf = [0u8; 512];
            let n = s.recv(&mut buf)?;
            Ok(buf[..n].to_vec())
        })
        .is_ok_and(|a| a.len() >= 4 && a[..2] == [0x12, 0x34] && a[2] & 0x80 != 0)
    });
    assert!(answered, "no DNS answer through the VIP\n{}", log(&agent));
    assert!(topo.http_get(vip80(), T).is_ok(), "the web service answers too\n{}", log(&agent));
    let _ = std::fs::remove_dir_all(&dir);
}

fn ebpf_udp_spreads_and_sticks() {
    let _serial = serial();
    let _pins = BpfCleanup::new(BIN);
    let topo = Topology::new();
    let _health = topo.start_tcp_backends(53);
    let _udp = topo.start_udp_backends(53);
    let mut args: Vec<String> =
        ["--mode", "ebpf", "--iface", "l0", "--vip", "10.91.1.1:53/udp", "--cleanup"].map(String::from).to_vec();
    for b in BACKENDS {
        args.extend(["--backend".to_string(), format!("{b}:53")]);
    }
    let common = ["--health-check", "tcp", "--health-interval", "200ms", "--rise", "2", "--fall", "2"];
    args.extend(common.iter().chain(&["--admin", "127.0.0.1:9901"]).map(|s| s.to_string()));
    let mut agent = Agent::spawn(&topo, BIN, &words(&args));
    agent.wait_ready(READY);
    let log = |agent: &Agent| format!("--- agent log (tail) ---\n{}\n--- end of agent log ---", agent.log_tail());
    let vip = SocketAddrV4::new(VIP, 53);

    let passes = eventually(SETTLE, || topo.udp_query(None, vip, Duration::from_millis(500)).is_ok());
    assert!(passes, "no UDP query through the VIP was answered within {SETTLE:?}\n{}", log(&agent));

    let answers: Vec<String> = (0..30u16)
        .map(|i| {
            topo.udp_query(Some(40_000 + i), vip, T)
                .unwrap_or_else(|e| panic!("query from port {} failed: {e}\n{}", 40_000 + i, log(&agent)))
        })
        .collect();
    let counts = tally(answers.iter().map(String::as_str));
    assert!(counts.len() >= 2, "30 UDP flows all went to {counts:?}\n{}", log(&agent));

    let same: Vec<String> = (0..5)
        .map(|n| {
            topo.udp_query(Some(41_000), vip, T)
                .unwrap_or_else(|e| panic!("query {n} from port 41000 failed: {e}\n{}", log(&agent)))
        })
        .collect();
    let counts = tally(same.iter().map(String::as_str));
    assert_eq!(counts.len(), 1, "5 datagrams of one flow went to {counts:?}\n{}", log(&agent));
}

/// One check of what the running data plane can do: in eBPF mode a switch to a header hash key
/// is refused with the reason and changes nothing (the kernel would silently hash something else).
fn ebpf_refuses_a_header_hash_key_at_run_time() {
    let env = Env::start(Mode::Ebpf, &agent_args(Mode::Ebpf, &[]));
    let body = r#"{"strategy":"consistent-hash","hash_key":"header:x-user"}"#;
    let (status, text) = env.agent.admin("PUT", "/admin/strategy", Some(body)).expect("admin call");
    assert_eq!(status, 400, "{text}\n{}", env.log());
    assert!(text.contains("sees packets, not HTTP headers"), "{text}");
    let strategy = env.agent.admin_json("/admin/strategy").expect("GET /admin/strategy");
    assert_eq!(strategy["strategy"], "round-robin", "nothing changed: {strategy}");
    env.get("a connection after the refused switch");
}

/// The same check at start: `--mode auto` with a header hash key runs the userspace proxy on the
/// VIP and says why, instead of an eBPF data plane that would hash the 5-tuple.
fn auto_with_a_header_hash_key_runs_the_userspace_proxy() {
    let mut args: Vec<String> = ["--mode", "auto", "--iface", "l0", "--vip", "10.91.1.1:80"].map(String::from).to_vec();
    for b in BACKENDS {
        args.extend(["--backend".to_string(), format!("{b}:80")]);
    }
    let extra = ["--strategy", "consistent-hash", "--hash-key", "header:x-user"];
    args.extend(COMMON.iter().chain(&extra).map(|s| s.to_string()));
    let env = Env::start(Mode::Userspace, &args);
    let state = env.state();
    let reason = state["dataplane"]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("needs the userspace proxy") && reason.contains("HTTP headers"), "{reason}");
    env.get("a connection through the userspace proxy on the VIP");
}

/// The tests of this file, for the harness.
pub(crate) const TESTS: &[(&str, fn())] = &[
    ("ebpf_round_robin_spreads", ebpf_round_robin_spreads),
    ("userspace_round_robin_spreads", userspace_round_robin_spreads),
    (
        "ebpf_syn_dropping_backend_is_ejected_and_established_flows_keep_working",
        ebpf_syn_dropping_backend_is_ejected_and_established_flows_keep_working,
    ),
    (
        "ebpf_refusing_backend_is_ejected_and_established_flows_keep_working",
        ebpf_refusing_backend_is_ejected_and_established_flows_keep_working,
    ),
    (
        "userspace_refusing_backend_is_ejected_and_established_flows_keep_working",
        userspace_refusing_backend_is_ejected_and_established_flows_keep_working,
    ),
    ("ebpf_unhealthy_backend_gets_no_new_flows", ebpf_unhealthy_backend_gets_no_new_flows),
    ("userspace_unhealthy_backend_gets_no_new_flows", userspace_unhealthy_backend_gets_no_new_flows),
    ("ebpf_drained_backend_finishes_established_flows", ebpf_drained_backend_finishes_established_flows),
    ("userspace_drained_backend_finishes_established_flows", userspace_drained_backend_finishes_established_flows),
    ("ebpf_backends_from_a_file_only_carry_traffic", ebpf_backends_from_a_file_only_carry_traffic),
    ("userspace_backends_from_a_file_only_carry_traffic", userspace_backends_from_a_file_only_carry_traffic),
    ("ebpf_removed_backend_finishes_established_flows", ebpf_removed_backend_finishes_established_flows),
    ("userspace_removed_backend_finishes_established_flows", userspace_removed_backend_finishes_established_flows),
    ("ebpf_strategy_switch_affects_new_flows_only", ebpf_strategy_switch_affects_new_flows_only),
    ("userspace_strategy_switch_affects_new_flows_only", userspace_strategy_switch_affects_new_flows_only),
    ("ebpf_two_services_balance_to_their_own_backends", ebpf_two_services_balance_to_their_own_backends),
    ("userspace_two_services_balance_to_their_own_backends", userspace_two_services_balance_to_their_own_backends),
    ("ebpf_native_xdp_round_robin_spreads", ebpf_native_xdp_round_robin_spreads),
    ("ebpf_vip_by_interface_serves_its_address", ebpf_vip_by_interface_serves_its_address),
    ("ebpf_monitor_streams_new_flows_and_drops", ebpf_monitor_streams_new_flows_and_drops),
    ("ebpf_snat_exhaustion_is_logged_by_the_data_path", ebpf_snat_exhaustion_is_logged_by_the_data_path),
    ("ebpf_flows_survive_agent_restart", ebpf_flows_survive_agent_restart),
    ("ebpf_xdp_mode_change_takes_effect_on_restart", ebpf_xdp_mode_change_takes_effect_on_restart),
    ("leftover_steering_is_refused_not_hidden", leftover_steering_is_refused_not_hidden),
    ("ebpf_cleanup_at_stop_drains_first", ebpf_cleanup_at_stop_drains_first),
    ("ebpf_backends_added_later_are_reached_or_reported", ebpf_backends_added_later_are_reached_or_reported),
    (
        "ebpf_exit_message_under_ip_netns_exec_says_what_happens",
        ebpf_exit_message_under_ip_netns_exec_says_what_happens,
    ),
    ("ebpf_udp_spreads_and_sticks", ebpf_udp_spreads_and_sticks),
    ("ebpf_readme_two_service_example_becomes_healthy", ebpf_readme_two_service_example_becomes_healthy),
    ("ebpf_refuses_a_header_hash_key_at_run_time", ebpf_refuses_a_header_hash_key_at_run_time),
    ("auto_with_a_header_hash_key_runs_the_userspace_proxy", auto_with_a_header_hash_key_runs_the_userspace_proxy),
];
