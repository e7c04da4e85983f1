//! The processes and namespaces a benchmark starts, stopped when the run ends or fails: every
//! process gets SIGTERM (then SIGKILL after a grace period), every namespace is deleted, every
//! temporary folder removed, in the guard's `Drop`. A run killed outright leaves them; the next
//! run deletes a leftover namespace or folder of the same name before it makes its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// What a benchmark run owns.
#[derive(Debug, Default)]
pub(crate) struct Guard {
    children: Vec<(String, Child)>,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Guard {
    /// A fresh temporary folder, removed at the end.
    pub fn temp_dir(&mut self, tag: &str) -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("edge-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        self.dirs.push(dir.clone());
        Ok(dir)
    }

    /// Starts `cmd` (output to `log`), to be stopped at the end.
    pub fn spawn(&mut self, name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// The process id of the process started as `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.iter().find(|(n, _)| n == name).map(|(_, c)| c.id())
    }

    /// Stops the process started as `name` now.
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, child) = self.children.remove(i);
            terminate(child);
        }
    }

    /// Fails unless every process is still running (one that exited early names itself).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited early ({status})");
            }
        }
        Ok(())
    }

    /// Creates network namespace `name` (deleting a leftover one first), deleted at the end.
    pub fn namespace(&mut self, name: &str) -> anyhow::Result<()> {
        let _ = quiet(Command::new("ip").args(["netns", "del", name]));
        run(Command::new("ip").args(["netns", "add", name]))?;
        self.namespaces.push(name.to_string());
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"])).map(|_| ())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (_, child) in self.children.drain(..).rev() {
            terminate(child);
        }
        for ns in self.namespaces.drain(..) {
            let _ = quiet(Command::new("ip").args(["netns", "del", &ns]));
        }
        for d in self.dirs.drain(..) {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// SIGTERM, up to 5 s to exit, then SIGKILL; reaps the process.
fn terminate(mut child: Child) {
    let _ = quiet(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a command to completion; fails with its output.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command, ignoring its output and status.
pub(crate) fn quiet(cmd: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status()
}

/// Polls `check` every 100 ms for up to `limit`.
pub(crate) fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// Fails with what to install unless every one of `tools` is on the PATH (`debs`: their Debian
/// packages, which `cargo xtask setup` installs).
pub(crate) fn require(tools: &[&str], debs: &str) -> anyhow::Result<()> {
    for tool in tools {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| !o.status.success())? {
            anyhow::bail!("{tool} is not installed; cargo xtask setup installs it (Debian: {debs})");
        }
    }
    Ok(())
}

/// Starts one NGINX worker serving three backends on loopback `ports`, each answering `bN` to
/// every request, with its files in `w`.
pub(crate) fn nginx_backends(g: &mut Guard, w: &Path, ports: [u16; 3]) -> anyhow::Result<()> {
    let [b1, b2, b3] = ports;
    std::fs::write(
        w.join("backends.conf"),
        format!(
            "worker_processes 1; daemon off; error_log {w}/b.err; pid {w}/b.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 100000;\n\
               server {{ listen 127.0.0.1:{b1}; location / {{ return 200 \"b1\\n\"; }} }}\n\
               server {{ listen 127.0.0.1:{b2}; location / {{ return 200 \"b2\\n\"; }} }}\n\
               server {{ listen 127.0.0.1:{b3}; location / {{ return 200 \"b3\\n\"; }} }} }}\n",
            w = w.display()
        ),
    )?;
    g.spawn(
        "backends (nginx)",
        Command::new("nginx").arg("-c").arg(w.join("backends.conf")).arg("-p").arg(w),
        &w.join("backends.log"),
    )
}
