//! The peers a replay compares edge with: HAProxy and NGINX, when installed, configured with the
//! scenario's health-check and retry settings as far as each can express them, in front of the
//! same simulated backends, started as child processes on loopback and stopped after the run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::values::parse_duration;

/// A peer load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// HAProxy: active checks, passive checks (`observe layer7`), `retry-on`.
    Haproxy,
    /// NGINX (open source): passive checks only (`max_fails`), `proxy_next_upstream`.
    Nginx,
}

/// The agent settings a peer copies, from the scenario's `[agent]` table and edge's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Probe interval.
    pub interval: Duration,
    /// Fast probe interval.
    pub fast_interval: Duration,
    /// Probe path.
    pub path: String,
    /// Passes to return.
    pub rise: u32,
    /// Failures to leave.
    pub fall: u32,
    /// Retries per request.
    pub retries: u32,
    /// Consecutive failures that take a backend out passively.
    pub consecutive: u32,
    /// How long a passively failed backend stays out.
    pub ejection: Duration,
}

impl Settings {
    /// Reads the settings from `[agent]` key-value pairs, edge's defaults elsewhere.
    pub fn from_agent(agent: &[(String, String)]) -> Self {
        let get = |k: &str| agent.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let dur = |k: &str, d: u64| get(k).and_then(|v| parse_duration(v).ok()).unwrap_or(Duration::from_millis(d));
        let num = |k: &str, d: u32| get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        let interval = dur("health-interval", 2000);
        Self {
            interval,
            fast_interval: dur("health-fast-interval", 500).min(interval),
            path: get("health-path").unwrap_or("/healthz").to_string(),
            rise: num("rise", 2),
            fall: num("fall", 3),
            retries: num("retries", 1),
            consecutive: num("outlier-consecutive", 5),
            ejection: dur("outlier-base-ejection", 30_000),
        }
    }
}

impl Peer {
    /// Both, in report order.
    pub const ALL: [Peer; 2] = [Peer::Haproxy, Peer::Nginx];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Haproxy => "haproxy",
            Self::Nginx => "nginx",
        }
    }

    /// Where its binary is, if installed.
    pub fn binary(self) -> Option<PathBuf> {
        let name = self.name();
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    /// Its configuration for `strategy` over `backends`, listening on `listen`.
    pub fn config(
        self,
        strategy: &str,
        backends: &[SocketAddr],
        listen: SocketAddr,
        s: &Settings,
        dir: &Path,
    ) -> String {
        let ms = |d: Duration| d.as_millis();
        match self {
            Self::Haproxy => {
                let balance = match strategy {
                    "least-connections" => "balance leastconn",
                    "consistent-hash" => "balance hdr(x-key)\n    hash-type consistent",
                    _ => "balance roundrobin",
                };
                let servers: String =
                    backends.iter().enumerate().map(|(i, b)| format!("    server s{i} {b}\n")).collect();
                format!(
                    "global\n    maxconn 4096\n    pidfile {pid}\n\ndefaults\n    mode http\n    timeout connect 2s\n    \
                     timeout client 30s\n    timeout server 30s\n    retries {retries}\n    option redispatch 1\n    \
                     retry-on conn-failure empty-response response-timeout 502 503 504\n\nfrontend f\n    bind {listen}\n    \
                     default_backend b\n\nbackend b\n    {balance}\n    option httpchk GET {path}\n    \
                     default-server check inter {inter}ms fastinter {fast}ms rise {rise} fall {fall} observe layer7 \
                     error-limit {errors} on-error mark-down\n{servers}",
                    pid = dir.join("haproxy.pid").display(),
                    retries = s.retries,
                    path = s.path,
                    inter = ms(s.interval),
                    fast = ms(s.fast_interval),
                    rise = s.rise,
                    fall = s.fall,
                    errors = s.consecutive.max(1),
                )
            }
            Self::Nginx => {
                let balance = match strategy {
                    "least-connections" => "least_conn;\n",
                    "consistent-hash" => "hash $http_x_key consistent;\n",
                    _ => "",
                };
                let servers: String = backends
                    .iter()
                    .map(|b| {
                        // NGINX takes whole seconds here.
                        let secs = s.ejection.as_secs().max(1);
                        format!("        server {b} max_fails={} fail_timeout={secs}s;\n", s.consecutive.max(1))
                    })
                    .collect();
                format!(
                    "worker_processes 1;\ndaemon off;\npid {pid};\nerror_log {log} crit;\nevents {{ worker_connections 8192; }}\n\
                     http {{\n    access_log off;\n    upstream b {{\n        {balance}{servers}        keepalive 64;\n    }}\n    \
                     server {{\n        listen {listen};\n        location / {{\n            proxy_pass http://b;\n            \
                     proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            \
                     proxy_connect_timeout 2s;\n            proxy_next_upstream error timeout http_502 http_503 http_504;\n            \
                     proxy_next_upstream_tries {tries};\n        }}\n    }}\n}}\n",
                    pid = dir.join("nginx.pid").display(),
                    log = dir.join("nginx.log").display(),
                    tries = s.retries + 1,
                )
            }
        }
    }

    /// What this peer cannot do that edge does, for the report.
    pub fn caveat(self) -> &'static str {
        match self {
            Self::Haproxy => {
                "haproxy: active checks with rise/fall and fastinter, passive checks (observe layer7, mark-down after the same count), retry-on with redispatch; its state changes are not observed, so no detection time"
            }
            Self::Nginx => {
                "nginx: open source NGINX has no active health checks; passive max_fails/fail_timeout and proxy_next_upstream only; its state is not observed, so no detection time"
            }
        }
    }
}

/// A running peer; stopped (with its workers) when dropped.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Running {
    /// Starts `peer` for `strategy` in front of `backends`; waits until it accepts connections.
    pub fn start(peer: Peer, strategy: &str, backends: &[SocketAddr], s: &Settings) -> anyhow::Result<Self> {
        let Some(bin) = peer.binary() else { bail!("{} is not installed", peer.name()) };
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let dir =
            std::env::temp_dir().join(format!("edge-replay-{}-{}-{}", peer.name(), std::process::id(), addr.port()));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join(format!("{}.conf", peer.name()));
        std::fs::write(&conf, peer.config(strategy, backends, addr, s, &dir))?;
        let mut cmd = Command::new(&bin);
        match peer {
            Peer::Haproxy => cmd.args(["-db", "-f"]).arg(&conf),
            Peer::Nginx => cmd.args(["-e", "stderr", "-p"]).arg(&dir).arg("-c").arg(&conf),
        };
        let log = std::fs::File::create(dir.join("stderr.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut running = Self { child, addr, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(running);
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                let said = std::fs::read_to_string(running.dir.join("stderr.log")).unwrap_or_default();
                let conf = std::fs::read_to_string(&conf).unwrap_or_default();
                bail!("{} exited at start ({status}): {}\nits configuration was:\n{conf}", peer.name(), said.trim());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{} did not listen on {addr} within 5 s", peer.name())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Terminated, not killed: NGINX's master stops its workers only then.
        super::stop::stop(&mut self.child, Duration::from_secs(3));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_carry_the_scenario_settings() {
        let agent = vec![("health-interval".to_string(), "250ms".to_string()), ("rise".to_string(), "3".to_string())];
        let s = Settings::from_agent(&agent);
        assert_eq!(
            (s.interval, s.fast_interval, s.rise, s.fall),
            (Duration::from_millis(250), Duration::from_millis(250), 3, 3)
        );
        let b: Vec<SocketAddr> = vec!["127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()];
        let l: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let h = Peer::Haproxy.config("consistent-hash", &b, l, &s, Path::new("/tmp/x"));
        assert!(h.contains("balance hdr(x-key)") && h.contains("hash-type consistent"), "{h}");
        assert!(h.contains("inter 250ms") && h.contains("rise 3 fall 3") && h.contains("server s1 127.0.0.1:2"), "{h}");
        assert!(h.contains("retries 1") && h.contains("retry-on conn-failure"), "{h}");
        let n = Peer::Nginx.config("least-connections", &b, l, &s, Path::new("/tmp/x"));
        assert!(
            n.contains("least_conn;")
                && n.contains("server 127.0.0.1:1 max_fails=5")
                && n.contains("listen 127.0.0.1:9"),
            "{n}"
        );
        assert!(n.contains("proxy_next_upstream_tries 2"), "{n}");
    }
}
