//! Network-namespace harness for behavioural tests of the real `edge-agent` binary.
//!
//! A [`Topology`] is three namespaces joined by veth pairs:
//!
//! ```text
//!  client ns                 lb ns                          backend ns
//!  c0 10.91.1.2/24  <->  l0 10.91.1.1/24 (the VIP)
//!                        l1 10.91.2.1/24           <->  b0 10.91.2.2, .3, .4 /24
//! ```
//!
//! The client routes everything through the lb namespace, the backends answer through it too, and
//! the lb namespace forwards. The agent runs as a process inside the lb namespace ([`Agent`]),
//! backends are threads whose sockets live in the backend namespace ([`Backends`]), and the client
//! helpers create their sockets in the client namespace, so traffic between them really crosses the
//! agent's data plane (the userspace proxy, or the XDP/TC programs on `l0`).
//!
//! The agent is started from a thread that has entered the lb namespace with `setns`, not through
//! `ip netns exec`: that command also gives its child a private mount namespace with a fresh sysfs,
//! which hides the host's bpffs, so the eBPF pins of one agent would be invisible to the next.
//!
//! Only std, libc and serde_json; every socket has timeouts and every loop a bound.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The client's address (on `c0`).
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 91, 1, 2);
/// The lb namespace's client-facing address (on `l0`), which is also the VIP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 91, 1, 1);
/// The lb namespace's backend-facing address (on `l1`).
pub const LB_INNER: Ipv4Addr = Ipv4Addr::new(10, 91, 2, 1);
/// The backends' addresses (all on `b0`).
pub const BACKENDS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(10, 91, 2, 2), Ipv4Addr::new(10, 91, 2, 3), Ipv4Addr::new(10, 91, 2, 4)];

/// Timeout of harness-internal socket operations (admin calls, backend writes).
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// How often server threads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);
/// A backend closes a keep-alive connection idle this long.
const BACKEND_IDLE: Duration = Duration::from_secs(60);
/// Largest request head a backend accepts, and largest response head or body a client reads.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: u64 = 1024 * 1024;

/// Panics with a clear message when iproute2 or ethtool is missing.
pub fn require_tools() {
    for (tool, arg) in [("ip", "-V"), ("ethtool", "--version")] {
        match Command::new(tool).arg(arg).output() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "`{tool}` is not installed; the network-namespace tests need iproute2 and ethtool: \
                 run `cargo xtask setup`"
            ),
            Err(e) => panic!("cannot run `{tool}`: {e}"),
        }
    }
}

/// Runs a command to completion; panics with its output when it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}`: {e}; run `cargo xtask setup`"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a new thread that has entered the network namespace `ns` (a name under
/// `/run/netns`), and returns its result. Sockets created inside stay in that namespace and can be
/// used afterwards from any thread; processes spawned inside start in it.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        // SAFETY: the descriptor is valid for the call; setns changes only this thread's network
        // namespace, and the thread ends with `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({}) failed: {}", path.display(), io::Error::last_os_error());
        drop(file);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Polls `cond` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Three network namespaces (client, lb, backend) joined by veth pairs; see the module docs.
/// Dropping it kills every process left in them and deletes them.
#[derive(Debug)]
pub struct Topology {
    client: String,
    lb: String,
    backend: String,
}

impl Topology {
    /// Creates and configures the namespaces. Panics (after removing what it created) when a step
    /// fails.
    pub fn new() -> Self {
        require_tools();
        remove_stale_namespaces();
        let base = format!("edt{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let topo = Self { client: format!("{base}c"), lb: format!("{base}l"), backend: format!("{base}b") };
        // From here on a panic drops `topo`, which deletes whatever was created.
        topo.setup();
        topo
    }

    fn setup(&self) {
        let (c, l, b) = (self.client.as_str(), self.lb.as_str(), self.backend.as_str());
        for ns in [c, l, b] {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        run("ip", &["link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "l0", "netns", l]);
        run("ip", &["link", "add", "b0", "netns", b, "type", "veth", "peer", "name", "l1", "netns", l]);

        run("ip", &["-n", c, "addr", "add", &format!("{CLIENT}/24"), "dev", "c0"]);
        run("ip", &["-n", l, "addr", "add", &format!("{VIP}/24"), "dev", "l0"]);
        run("ip", &["-n", l, "addr", "add", &format!("{LB_INNER}/24"), "dev", "l1"]);
        for addr in BACKENDS {
            run("ip", &["-n", b, "addr", "add", &format!("{addr}/24"), "dev", "b0"]);
        }
        for (ns, dev) in [(c, "c0"), (l, "l0"), (l, "l1"), (b, "b0")] {
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
        }
        run("ip", &["-n", c, "route", "add", "default", "via", &VIP.to_string()]);
        run("ip", &["-n", b, "route", "add", "default", "via", &LB_INNER.to_string()]);
        run("ip", &["netns", "exec", l, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        // GRO gives the outer veth ends NAPI, without which frames that an XDP program redirects
        // into their peers (l0, l1) are dropped.
        run("ip", &["netns", "exec", c, "ethtool", "-K", "c0", "gro", "on"]);
        run("ip", &["netns", "exec", b, "ethtool", "-K", "b0", "gro", "on"]);
    }

    /// The client namespace's name.
    pub fn client_ns(&self) -> &str {
        &self.client
    }

    /// The lb namespace's name (where the agent runs).
    pub fn lb_ns(&self) -> &str {
        &self.lb
    }

    /// The backend namespace's name.
    pub fn backend_ns(&self) -> &str {
        &self.backend
    }

    /// Starts one HTTP/1.1 server per address in [`BACKENDS`] on `port`, in the backend namespace.
    pub fn start_tcp_backends(&self, port: u16) -> Backends {
        let mut backends = Backends::new(port);
        for (i, ip) in BACKENDS.into_iter().enumerate() {
            let addr = SocketAddrV4::new(ip, port);
            let listener = in_ns(&self.backend, move || TcpListener::bind(addr))
                .unwrap_or_else(|e| panic!("cannot listen on {addr} in the backend namespace: {e}"));
            listener.set_nonblocking(true).expect("nonblocking listener");
            let (ctl, stop) = (backends.ctl[i].clone(), backends.stop.clone());
            backends.threads.push(std::thread::spawn(move || accept_loop(&listener, &ctl, &stop)));
        }
        backends
    }

    /// Starts one UDP server per address in [`BACKENDS`] on `port`, in the backend namespace; each
    /// answers every datagram with its own IP address as text.
    pub fn start_udp_backends(&self, port: u16) -> Backends {
        let mut backends = Backends::new(port);
        for (i, ip) in BACKENDS.into_iter().enumerate() {
            let addr = SocketAddrV4::new(ip, port);
            let socket = in_ns(&self.backend, move || UdpSocket::bind(addr))
                .unwrap_or_else(|e| panic!("cannot bind UDP {addr} in the backend namespace: {e}"));
            socket.set_read_timeout(Some(POLL)).expect("read timeout");
            socket.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
            let (ctl, stop) = (backends.ctl[i].clone(), backends.stop.clone());
            backends.threads.push(std::thread::spawn(move || udp_loop(&socket, &ctl, &stop)));
        }
        backends
    }

    /// Runs `program` with `args` in the backend namespace (an nftables rule, for example); panics
    /// with its output when it fails.
    pub fn run_in_backend(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", self.backend.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Starts a long-running `program` in the backend namespace (a real DNS server, for example);
    /// it is killed with the namespace when the topology drops.
    pub fn spawn_in_backend(&self, program: &str, args: &[&str]) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", self.backend.as_str(), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{program}` in the backend namespace: {e}; run `cargo xtask setup`")
            })
    }

    /// Opens a TCP connection from the client namespace, with read and write timeouts `timeout`.
    pub fn connect(&self, addr: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
        let stream = in_ns(&self.client, move || TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// `GET /` from the client namespace over a new connection (`Connection: close`); the body of
    /// a 200 answer (a backend answers with its address and a newline), an error otherwise.
    pub fn http_get(&self, addr: SocketAddrV4, timeout: Duration) -> io::Result<String> {
        let mut stream = self.connect(addr, timeout)?;
        write_request(&mut stream, &addr.to_string(), "GET", "/", None, true)?;
        let (status, body) = read_response(&mut BufReader::new(stream))?;
        ok_body(status, body)
    }

    /// Sends one datagram from the client namespace (from `10.91.1.2:local_port`, or an ephemeral
    /// port) to `addr` and returns the answer, which must come from `addr`.
    pub fn udp_query(&self, local_port: Option<u16>, addr: SocketAddrV4, timeout: Duration) -> io::Result<String> {
        let local = SocketAddrV4::new(CLIENT, local_port.unwrap_or(0));
        let socket = in_ns(&self.client, move || UdpSocket::bind(local))?;
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        // A connected socket only receives datagrams from `addr`: a reply with a wrong source
        // (a missing reverse NAT) times out instead of passing.
        socket.connect(addr)?;
        socket.send(b"query")?;
        let mut buf = [0u8; 1500];
        let n = socket.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.client, &self.lb, &self.backend] {
            kill_processes_in(ns);
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// SIGKILLs every process still in the namespace `ns` (only ever one of ours) and reaps nothing:
/// their owners ([`Agent`]) wait for them.
fn kill_processes_in(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).stderr(Stdio::null()).output() else { return };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<libc::pid_t>().ok()) {
        // SAFETY: kill has no memory-safety preconditions; the pid is a process in our namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Deletes namespaces named `edt<pid>-...` whose test process is gone (left by a crashed run).
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
    for entry in dir.flatten().take(10_000) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("edt").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            kill_processes_in(&name);
            let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
        }
    }
}

/// Controls and counters of one backend.
#[derive(Debug)]
struct BackendCtl {
    addr: SocketAddrV4,
    healthy: AtomicBool,
    connections: AtomicU64,
    served: AtomicU64,
    probes: AtomicU64,
}

/// The three backends of a [`Topology`] (TCP/HTTP or UDP), indexed like [`BACKENDS`]. Dropping it
/// stops their threads and closes their sockets.
#[derive(Debug)]
pub struct Backends {
    ctl: Vec<Arc<BackendCtl>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Backends {
    fn new(port: u16) -> Self {
        let ctl = BACKENDS
            .iter()
            .map(|ip| {
                Arc::new(BackendCtl {
                    addr: SocketAddrV4::new(*ip, port),
                    healthy: AtomicBool::new(true),
                    connections: AtomicU64::new(0),
                    served: AtomicU64::new(0),
                    probes: AtomicU64::new(0),
                })
            })
            .collect();
        Self { ctl, stop: Arc::default(), threads: Vec::new() }
    }

    /// Backend `i`'s address.
    pub fn addr(&self, i: usize) -> SocketAddrV4 {
        self.ctl[i].addr
    }

    /// The index of the backend whose IP address is `ip` (as a backend's answer spells it;
    /// surrounding whitespace is ignored).
    pub fn index_of(&self, ip: &str) -> Option<usize> {
        self.ctl.iter().position(|c| c.addr.ip().to_string() == ip.trim())
    }

    /// Makes `GET /healthz` on backend `i` answer 200 (healthy) or 503; other paths keep
    /// answering 200, so established connections keep working.
    pub fn set_healthy(&self, i: usize, healthy: bool) {
        self.ctl[i].healthy.store(healthy, Ordering::SeqCst);
    }

    /// TCP connections backend `i` accepted (health probes included).
    pub fn connections(&self, i: usize) -> u64 {
        self.ctl[i].connections.load(Ordering::SeqCst)
    }

    /// HTTP requests other than `/healthz` (TCP), or datagrams (UDP), backend `i` answered.
    pub fn served(&self, i: usize) -> u64 {
        self.ctl[i].served.load(Ordering::SeqCst)
    }

    /// `/healthz` requests backend `i` answered.
    pub fn probes(&self, i: usize) -> u64 {
        self.ctl[i].probes.load(Ordering::SeqCst)
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accepts connections until `stop`; each gets a thread, joined before returning.
fn accept_loop(listener: &TcpListener, ctl: &Arc<BackendCtl>, stop: &Arc<AtomicBool>) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                ctl.connections.fetch_add(1, Ordering::SeqCst);
                let (ctl, stop) = (ctl.clone(), stop.clone());
                conns.push(std::thread::spawn(move || {
                    let _ = serve_http(stream, &ctl, &stop);
                }));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
        conns.retain(|c| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Serves minimal HTTP/1.1 on one connection: every request (its head; bodies are not expected)
/// gets the backend's address as the body, `/healthz` a 503 while the backend is unhealthy.
/// Keep-alive unless the client sends `Connection: close`.
fn serve_http(mut stream: TcpStream, ctl: &BackendCtl, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut last_activity = Instant::now();
    while !stop.load(Ordering::SeqCst) && last_activity.elapsed() < BACKEND_IDLE {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let mut lines = head.lines();
            let path = lines.next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("/").to_string();
            let close = lines.any(|l| {
                l.split_once(':').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close")
                })
            });
            let (status, body) = if path == "/healthz" {
                ctl.probes.fetch_add(1, Ordering::SeqCst);
                if ctl.healthy.load(Ordering::SeqCst) {
                    ("200 OK", format!("{}\n", ctl.addr.ip()))
                } else {
                    ("503 Service Unavailable", "unhealthy\n".to_string())
                }
            } else {
                ctl.served.fetch_add(1, Ordering::SeqCst);
                ("200 OK", format!("{}\n", ctl.addr.ip()))
            };
            let conn = if close { "Connection: close\r\n" } else { "" };
            let response = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n{conn}\r\n{body}", body.len());
            stream.write_all(response.as_bytes())?;
            if close {
                return Ok(());
            }
            continue;
        }
        if buf.len() > MAX_HEAD {
            return Ok(());
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                last_activity = Instant::now();
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answers every datagram with the backend's address until `stop`.
fn udp_loop(socket: &UdpSocket, ctl: &BackendCtl, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    let answer = ctl.addr.ip().to_string();
    while !stop.load(Ordering::SeqCst) {
        if let Ok((_, peer)) = socket.recv_from(&mut buf) {
            ctl.served.fetch_add(1, Ordering::SeqCst);
            let _ = socket.send_to(answer.as_bytes(), peer);
        }
    }
}

/// Writes an HTTP/1.1 request head (and body).
fn write_request(
    w: &mut impl Write,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    close: bool,
) -> io::Result<()> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    match body {
        Some(body) => req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len())),
        None if method != "GET" && method != "HEAD" => req.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    w.write_all(req.as_bytes())?;
    w.flush()
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one line (at most [`MAX_HEAD`] bytes) without its line ending.
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    let n = r.by_ref().take(MAX_HEAD as u64).read_line(&mut line)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a complete response"));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or until the connection closes); returns
/// its status and body.
fn read_response(r: &mut impl BufRead) -> io::Result<(u16, String)> {
    let status_line = read_line(r)?;
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("not an HTTP/1.x status line: {status_line:?}")))?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for _ in 0..200 {
        let line = read_line(r)?;
        if line.is_empty() {
            let body = if chunked {
                read_chunked(r)?
            } else if let Some(n) = length {
                if n > MAX_BODY {
                    return Err(invalid(format!("response body of {n} bytes is too large")));
                }
                let mut body = vec![0u8; usize::try_from(n).map_err(|_| invalid("body length"))?];
                r.read_exact(&mut body)?;
                body
            } else {
                let mut body = Vec::new();
                r.by_ref().take(MAX_BODY).read_to_end(&mut body)?;
                body
            };
            return Ok((status, String::from_utf8_lossy(&body).into_owned()));
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.trim().eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse().map_err(|_| invalid(format!("bad Content-Length: {value:?}")))?);
        } else if name.trim().eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    Err(invalid("too many response headers"))
}

/// Reads a chunked body (trailers are skipped).
fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    for _ in 0..10_000 {
        let line = read_line(r)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid(format!("bad chunk size: {line:?}")))?;
        if size == 0 {
            for _ in 0..200 {
                if read_line(r)?.is_empty() {
                    return Ok(body);
                }
            }
            return Err(invalid("too many trailers"));
        }
        if (body.len() + size) as u64 > MAX_BODY {
            return Err(invalid("chunked body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        read_line(r)?;
    }
    Err(invalid("too many chunks"))
}

/// The body of a 200 answer; other statuses become errors that show the body.
fn ok_body(status: u16, body: String) -> io::Result<String> {
    if status == 200 { Ok(body) } else { Err(io::Error::other(format!("HTTP {status}: {}", body.trim()))) }
}

/// One client TCP connection from the client namespace, reused for several HTTP/1.1 requests (an
/// established flow).
#[derive(Debug)]
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    host: String,
}

impl KeepAlive {
    /// Connects from the client namespace to `addr`; reads and writes time out after `timeout`.
    pub fn connect(topo: &Topology, addr: SocketAddrV4, timeout: Duration) -> io::Result<Self> {
        let stream = topo.connect(addr, timeout)?;
        Ok(Self { reader: BufReader::new(stream), host: addr.to_string() })
    }

    /// `GET /` over this connection; the body of a 200 answer (the backend's address and a
    /// newline), an error otherwise.
    pub fn get(&mut self) -> io::Result<String> {
        write_request(self.reader.get_mut(), &self.host, "GET", "/", None, false)?;
        let (status, body) = read_response(&mut self.reader)?;
        ok_body(status, body)
    }

    /// The connection's local address (the client side of the flow).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.reader.get_ref().local_addr()
    }
}

/// Runs `<bin> cleanup` (detach the eBPF programs, remove the pins under `/sys/fs/bpf/edge`) when
/// created, to start from a clean state, and again when dropped. eBPF pins are global to the host,
/// not per namespace, so every test that starts an agent in eBPF mode holds one.
#[derive(Debug)]
pub struct BpfCleanup {
    bin: String,
}

impl BpfCleanup {
    /// Cleans up now and on drop.
    pub fn new(bin: &str) -> Self {
        let c = Self { bin: bin.to_string() };
        c.run();
        c
    }

    fn run(&self) {
        let _ = Command::new(&self.bin)
            .arg("cleanup")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for BpfCleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// An `edge-agent run` process in the lb namespace of a [`Topology`], its output in a log file.
/// Dropping it SIGKILLs the process; the log file is removed unless the thread is panicking.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    lb_ns: String,
    admin: SocketAddrV4,
    log: PathBuf,
}

impl Agent {
    /// Starts `<bin> run <args...>` in the lb namespace. `EDGE_*` variables of the test's
    /// environment are not passed on; with `EDGE_TEST_LOG=LEVEL` the agent logs at that level
    /// (`EDGE_LOG_LEVEL`). The admin API address is read from `--admin` (default 127.0.0.1:9901).
    pub fn spawn(topo: &Topology, bin: &str, args: &[&str]) -> Self {
        let admin = args
            .iter()
            .position(|a| *a == "--admin")
            .and_then(|i| args.get(i + 1))
            .and_then(|a| a.parse().ok())
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9901));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("edge-agent-{}-{n}.log", topo.lb));
        let out = File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the log file handle");

        let mut cmd = Command::new(bin);
        cmd.arg("run").args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("EDGE_") {
                cmd.env_remove(key);
            }
        }
        if let Ok(level) = std::env::var("EDGE_TEST_LOG") {
            cmd.env("EDGE_LOG_LEVEL", level);
        }
        // A child starts in the network namespace of the thread that forks it.
        let child = in_ns(&topo.lb, move || cmd.spawn()).unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Self { child, lb_ns: topo.lb.clone(), admin, log }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `GET /readyz` answers 200; panics with the log's tail when the agent exits or
    /// `limit` passes first.
    pub fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the agent exited ({status}) before it was ready; its log:\n{}", self.log_tail());
            }
            match self.admin("GET", "/readyz", None) {
                Ok((200, _)) => return,
                Ok((status, body)) => last = format!("HTTP {status}: {}", body.trim()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the agent was not ready within {limit:?} (last /readyz: {last}); its log:\n{}", self.log_tail());
    }

    /// One admin API call (`Connection: close`) from inside the lb namespace; the status and body.
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> io::Result<(u16, String)> {
        let addr = self.admin;
        let mut stream = in_ns(&self.lb_ns, move || TcpStream::connect_timeout(&SocketAddr::V4(addr), IO_TIMEOUT))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        write_request(&mut stream, &addr.to_string(), method, path, body, true)?;
        read_response(&mut BufReader::new(stream))
    }

    /// An admin `GET` whose 200 answer is parsed as JSON.
    pub fn admin_json(&self, path: &str) -> io::Result<serde_json::Value> {
        let (status, body) = self.admin("GET", path, None)?;
        let body = ok_body(status, body)?;
        serde_json::from_str(&body).map_err(|e| invalid(format!("GET {path}: not JSON ({e}): {body}")))
    }

    /// SIGKILLs the agent and reaps it (no cleanup of any kind runs).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERMs the agent and waits up to 10 s for it to exit (then SIGKILLs it); its exit
    /// status, `None` when it had to be killed.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        None
    }

    /// The last 80 lines of the agent's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// Where the agent's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("the agent's full log is kept at {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Counts answers per backend address (as the backends spell it, trimmed).
pub fn tally<'a>(answers: impl IntoIterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for a in answers {
        *counts.entry(a.trim().to_string()).or_insert(0) += 1;
    }
    counts
}
