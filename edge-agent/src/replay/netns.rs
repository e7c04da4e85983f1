//! A small lab of network namespaces for the replay's eBPF runs. The eBPF data plane steers
//! packets as they cross an interface, so the client, the agent and the backends must sit on
//! different hosts; three namespaces joined by veth pairs stand in for them:
//!
//! ```text
//!  client ns                 lb ns                          backend ns
//!  c0 10.93.1.2/24  <->  l0 10.93.1.1/24 (the VIP)
//!                        l1 10.93.2.1/24           <->  b0 10.93.2.2, .3, ... /24
//! ```
//!
//! The agent is this same binary, started with `ip netns exec` in the lb namespace. That command
//! also gives it a private mount namespace with a fresh sysfs, so its bpffs and pins are its own:
//! a replay never touches the pins of an agent that serves the host, and nothing outlives the run.
//! The simulated backends bind their sockets in the backend namespace and the traffic generator
//! runs on threads that entered the client namespace (a socket stays in the namespace it was
//! created in, and a thread's children inherit its namespace).
//!
//! Everything is removed when the [`Lab`] drops; namespaces a killed replay left behind are
//! removed by the next one.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sim::Bind;

/// The client's address.
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 93, 1, 2);
/// The VIP, on the lb namespace's client side.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 93, 1, 1);
/// The lb namespace's backend side.
const LB_INNER: Ipv4Addr = Ipv4Addr::new(10, 93, 2, 1);
/// The port of the VIP and of every backend.
pub const PORT: u16 = 80;
/// The agent's admin listener, inside the lb namespace (which is private, so it never clashes).
const ADMIN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9901);
/// The namespaces' name prefix; the pid follows, so a stale lab is recognised by a dead pid.
const PREFIX: &str = "edgereplay";
/// Timeout of each admin call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the agent to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the agent to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong setting up or driving the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The host cannot run the lab at all.
    #[error("{0}")]
    Unavailable(String),
    /// A setup command failed.
    #[error("`{command}` failed: {output}; is iproute2 installed and are you root?")]
    Command {
        /// The command line.
        command: String,
        /// What it printed, or why it could not run.
        output: String,
    },
    /// Entering a namespace or creating a socket in it failed.
    #[error("namespace {ns}: {source}")]
    Ns {
        /// The namespace.
        ns: String,
        /// The error.
        source: io::Error,
    },
    /// The agent did not start or did not become ready.
    #[error("the eBPF agent {0}")]
    Agent(String),
}

/// Whether this host can run the lab: root, iproute2, and a kernel with BTF. The reason when not.
pub fn available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces and BPF); run the replay as root".into());
    }
    if Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Err("needs iproute2 (`ip`); apt-get install iproute2".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err("needs a kernel with BTF (/sys/kernel/btf/vmlinux is missing)".into());
    }
    Ok(())
}

/// Runs `f` on a new thread that entered network namespace `ns` and returns its result. Threads
/// that `f` starts inherit the namespace; sockets it creates stay in it wherever they are used.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, LabError> {
    let path = Path::new("/run/netns").join(ns);
    let name = ns.to_string();
    std::thread::spawn(move || {
        let file = File::open(&path)?;
        // SAFETY: the descriptor is open for the duration of the call; setns changes only this
        // thread's network namespace, and the thread ends when `f` returns.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| LabError::Ns { ns: name.clone(), source: io::Error::other("the thread panicked") })?
    .map_err(|source| LabError::Ns { ns: name, source })
}

fn run(args: &[&str]) -> Result<(), LabError> {
    let fail = |output: String| LabError::Command { command: format!("ip {}", args.join(" ")), output };
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() { Ok(()) } else { Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string())) }
}

/// Deletes the namespaces of labs whose replay process is gone.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !Path::new("/proc").join(&pid).exists() {
            let _ = run(&["netns", "del", &name]);
        }
    }
}

/// Three namespaces, the backends' addresses, and (once started) the agent; see the module docs.
#[derive(Debug)]
pub struct Lab {
    client: String,
    lb: String,
    backend: String,
    created: Vec<String>,
    agent: Option<Child>,
    log: PathBuf,
}

impl Lab {
    /// Creates the namespaces and links for `backends` backends.
    pub fn new(backends: usize) -> Result<Self, LabError> {
        available().map_err(LabError::Unavailable)?;
        remove_stale();
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = format!("{PREFIX}{}-{}", std::process::id(), SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let mut lab = Self {
            client: format!("{base}c"),
            lb: format!("{base}l"),
            backend: format!("{base}b"),
            created: Vec::new(),
            agent: None,
            log: std::env::temp_dir().join(format!("{base}-agent.log")),
        };
        // A failing step returns early; dropping `lab` removes what was created.
        lab.setup(backends)?;
        Ok(lab)
    }

    fn setup(&mut self, backends: usize) -> Result<(), LabError> {
        let (c, l, b) = (self.client.clone(), self.lb.clone(), self.backend.clone());
        for ns in [&c, &l, &b] {
            run(&["netns", "add", ns])?;
            self.created.push(ns.clone());
            run(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        run(&["link", "add", "c0", "netns", &c, "type", "veth", "peer", "name", "l0", "netns", &l])?;
        run(&["link", "add", "b0", "netns", &b, "type", "veth", "peer", "name", "l1", "netns", &l])?;
        run(&["-n", &c, "addr", "add", &format!("{CLIENT}/24"), "dev", "c0"])?;
        run(&["-n", &l, "addr", "add", &format!("{VIP}/24"), "dev", "l0"])?;
        run(&["-n", &l, "addr", "add", &format!("{LB_INNER}/24"), "dev", "l1"])?;
        for i in 0..backends {
            run(&["-n", &b, "addr", "add", &format!("{}/24", Self::backend_ip(i)), "dev", "b0"])?;
        }
        for (ns, dev) in [(&c, "c0"), (&l, "l0"), (&l, "l1"), (&b, "b0")] {
            run(&["-n", ns, "link", "set", dev, "up"])?;
        }
        run(&["-n", &c, "route", "add", "default", "via", &VIP.to_string()])?;
        run(&["-n", &b, "route", "add", "default", "via", &LB_INNER.to_string()])?;
        // The lb namespace forwards what the eBPF program passes (the probes' answers, for one).
        in_ns(&l, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
            .map_err(|source| LabError::Ns { ns: l.clone(), source })
    }

    fn backend_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 93, 2, u8::try_from(i + 2).unwrap_or(u8::MAX))
    }

    /// Backend `i`'s address, in the backend namespace.
    pub fn backend_addr(i: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Self::backend_ip(i), PORT))
    }

    /// Opens listening sockets in the backend namespace.
    pub fn bind(&self) -> Bind {
        let ns = self.backend.clone();
        Arc::new(move |addr| {
            in_ns(&ns, move || std::net::TcpListener::bind(addr)).map_err(|e| io::Error::other(e.to_string()))?
        })
    }

    /// Runs `f` on a thread in the client namespace; the receiver gets its result.
    pub fn in_client<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<Result<T, LabError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ns = self.client.clone();
        std::thread::spawn(move || {
            let _ = tx.send(in_ns(&ns, f));
        });
        rx
    }

    /// Starts `exe run ARGS --admin ...` in the lb namespace and waits until it is ready.
    pub fn start_agent(&mut self, exe: &Path, args: &[String]) -> Result<(), LabError> {
        let log = File::create(&self.log).map_err(|e| LabError::Agent(format!("log {}: {e}", self.log.display())))?;
        let err_log = log.try_clone().map_err(|e| LabError::Agent(e.to_string()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.lb])
            .arg(exe)
            .arg("run")
            .args(args)
            .args(["--admin", &ADMIN.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| LabError::Agent(format!("could not start: {e}")))?;
        self.agent = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(c) = self.agent.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(LabError::Agent(format!("exited ({status}) before it was ready: {}", self.log_tail())));
            }
            if matches!(self.admin_get("/readyz"), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Agent(format!("was not ready within {READY_TIMEOUT:?}: {}", self.log_tail())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }

    /// `GET path` on the agent's admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String), LabError> {
        let request = format!("GET {path} HTTP/1.1\r\nhost: edge\r\nconnection: close\r\n\r\n");
        let exchange = move || -> io::Result<(u16, String)> {
            let mut s = TcpStream::connect_timeout(&SocketAddr::V4(ADMIN), ADMIN_TIMEOUT)?;
            s.set_read_timeout(Some(ADMIN_TIMEOUT))?;
            s.set_write_timeout(Some(ADMIN_TIMEOUT))?;
            s.write_all(request.as_bytes())?;
            let mut raw = Vec::new();
            s.take(16 << 20).read_to_end(&mut raw)?;
            let text = String::from_utf8_lossy(&raw);
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            // The admin API answers JSON with a length; no chunked bodies to undo.
            Ok((status, body.to_string()))
        };
        in_ns(&self.lb, exchange)?.map_err(|source| LabError::Ns { ns: self.lb.clone(), source })
    }

    /// Stops the agent: SIGTERM, then SIGKILL after a while.
    pub fn stop_agent(&mut self) {
        let Some(mut child) = self.agent.take() else { return };
        super::stop::stop(&mut child, STOP_TIMEOUT);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_agent();
        for ns in self.created.drain(..) {
            let _ = run(&["netns", "del", &ns]);
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
