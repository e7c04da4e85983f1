//! The `edge-agent` binary: bad input fails at start naming the flag and the fix; settings come
//! from flags, `EDGE_*` variables and `--config` files; the README's flag table matches `--help`.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edge-agent"));
    // Do not inherit EDGE_* settings from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("EDGE_") {
            c.env_remove(k);
        }
    }
    c
}

fn fails_with(args: &[&str], envs: &[(&str, &str)], code: i32, want: &str) {
    let out = bin().args(args).envs(envs.iter().copied()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: expected {want:?} in {err:?}");
}

#[test]
fn bad_flags_fail_at_start_naming_flag_and_fix() {
    let ok = ["run", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"];
    let with = |extra: &[&'static str]| ok.iter().copied().chain(extra.iter().copied()).collect::<Vec<&str>>();
    fails_with(&with(&["--health-interval", "2x"]), &[], 2, "invalid --health-interval '2x': '2x' is not a duration");
    fails_with(&with(&["--rise", "0"]), &[], 2, "invalid --rise '0': use an integer from 1 to 100");
    fails_with(&with(&["--strategy", "fastest"]), &[], 2, "use round-robin, least-connections or consistent-hash");
    fails_with(&with(&["--backend", "10.0.0.1"]), &[], 2, "invalid --backend '10.0.0.1'");
    fails_with(&with(&["--hash-key", "header:"]), &[], 2, "invalid --hash-key");
    fails_with(&with(&["--mode", "kernel"]), &[], 2, "invalid --mode 'kernel': use auto, ebpf or userspace");
    fails_with(&with(&["--mode", "ebpf"]), &[], 2, "--mode ebpf needs a service; give --vip");
    fails_with(&with(&["--vip", "10.0.0.5:53/udp"]), &[], 2, "a UDP --vip needs --mode ebpf");
    fails_with(&with(&["--snat-ports", "100-50"]), &[], 2, "invalid --snat-ports '100-50'");
    fails_with(&["run", "--backend", "127.0.0.1:9"], &[], 2, "nothing to listen on");
    fails_with(&["run", "--listen", ":0"], &[], 2, "no backends; give --backend");
    fails_with(&with(&["--bogus"]), &[], 2, "unexpected argument '--bogus'");
    let open = "--admin 0.0.0.0:0 is reachable from other hosts but has no token; set --admin-token TOKEN";
    fails_with(&with(&["--admin", "0.0.0.0:0"]), &[], 2, open);
    fails_with(&with(&[]), &[("EDGE_ADMIN", "[::]:0")], 2, "pass --admin-insecure to serve it unprotected");
}

#[test]
fn environment_variables_are_read_and_checked_naming_the_variable() {
    fails_with(
        &["run"],
        &[("EDGE_LISTEN", "127.0.0.1:0"), ("EDGE_BACKEND", "127.0.0.1:9"), ("EDGE_FALL", "-1")],
        2,
        "invalid EDGE_FALL '-1' (it sets --fall): use an integer from 1 to 100",
    );
    fails_with(
        &["run"],
        &[("EDGE_LISTEN", "127.0.0.1:0"), ("EDGE_BACKEND", "127.0.0.1:9 bad")],
        2,
        "invalid EDGE_BACKEND 'bad' (it sets --backend)",
    );
    // Booleans take the usual spellings, and say which when given something else.
    fails_with(
        &["run", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"],
        &[("EDGE_CLEANUP", "maybe")],
        2,
        "invalid EDGE_CLEANUP 'maybe' (it sets --cleanup): use on or off (or true/false, yes/no, 1/0)",
    );
    // Lists in variables are separated by any run of spaces, and a blank list is no list: both get
    // past parsing to the next problem (nothing to listen on).
    fails_with(&["run"], &[("EDGE_BACKEND", " 127.0.0.1:9  127.0.0.1:10 ")], 2, "nothing to listen on");
    fails_with(&["run", "--backend", "127.0.0.1:9"], &[("EDGE_LISTEN", "")], 2, "nothing to listen on");
    // A flag overrides its variable, so a bad variable under a good flag is not an error.
    fails_with(&["run", "--backend", "127.0.0.1:9", "--fall", "2"], &[("EDGE_FALL", "-1")], 2, "nothing to listen on");
}

#[test]
fn bad_config_files_fail_with_the_key_and_unreadable_ones_as_start_up_problems() {
    let dir = temp_dir("cli-config");
    let cfg = dir.join("c.toml");
    let run = |text: &str, code: i32, want: &str| {
        std::fs::write(&cfg, text).unwrap();
        fails_with(&["run", "--config", cfg.to_str().unwrap()], &[], code, want);
    };
    run("listen = \":0\"\nbackend = \"127.0.0.1:9\"\ncleanup = \"yes\"\n", 2, "key 'cleanup' must be true or false");
    run("listen = \":0\"\nbackend = \"127.0.0.1:9,weight=1,weight=2\"\n", 2, "gives weight twice; give it once");
    run("listen = \":0\"\nbackend = \"127.0.0.1:9\"\nrise = 0\n", 2, "invalid rise '0': use an integer from 1 to 100");
    run(&format!("listen = \":0\"\n{}", "# padding\n".repeat(120_000)), 2, "is larger than 1048576 bytes");
    let backends = dir.join("b.json");
    std::fs::write(&backends, format!("[{}1]", "1,".repeat(9 << 20))).unwrap();
    fails_with(
        &["run", "--listen", ":0", "--backends-file", backends.to_str().unwrap()],
        &[],
        1,
        "is larger than 16777216 bytes; list fewer backends",
    );
    fails_with(
        &["run", "--config", "/nonexistent/edge.toml"],
        &[],
        1,
        "cannot read config file /nonexistent/edge.toml",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--flag` -> default, from the README's flag table (a row per flag; no default: empty).
fn readme_flags() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("| flag | default | meaning |").expect("the README has a flag table");
    let mut out = BTreeMap::new();
    for line in readme[start..].lines().skip(2).take_while(|l| l.starts_with('|')) {
        // Cells are separated by `|`; an escaped `\|` belongs to the cell.
        let mut cells = vec![String::new()];
        let mut prev = ' ';
        for c in line.trim().trim_matches('|').chars() {
            match c {
                '|' if prev != '\\' => cells.push(String::new()),
                c => cells.last_mut().unwrap().push(c),
            }
            prev = c;
        }
        let flag = cells[0].trim().trim_matches('`').split(' ').next().unwrap().to_string();
        out.insert(flag, cells[1].trim().trim_matches('`').to_string());
    }
    out
}

/// `--flag` -> default, from `edge-agent run --help` (no default shown: empty). clap puts the help
/// on the flag's line or, when flag names are long, on the lines below it; both are read.
fn help_flags() -> BTreeMap<String, String> {
    let out = bin().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let mut texts: Vec<(String, String)> = Vec::new();
    for line in help.lines().map(str::trim_start) {
        if line.starts_with("--") || line.starts_with("-h") {
            let flag = line.split([' ', ',']).next().unwrap().to_string();
            texts.push((flag, line.to_string()));
        } else if let Some((_, text)) = texts.last_mut() {
            text.push(' ');
            text.push_str(line);
        }
    }
    let mut flags = BTreeMap::new();
    for (flag, text) in texts {
        let default = text.split("[default: ").nth(1).and_then(|d| d.split(']').next()).unwrap_or("").to_string();
        flags.insert(flag, default);
    }
    flags.remove("--help");
    flags.remove("-h");
    flags
}

#[test]
fn the_readme_flag_table_matches_help() {
    let (readme, help) = (readme_flags(), help_flags());
    let only_readme: Vec<&String> = readme.keys().filter(|k| !help.contains_key(*k)).collect();
    let only_help: Vec<&String> = help.keys().filter(|k| !readme.contains_key(*k)).collect();
    assert!(only_readme.is_empty() && only_help.is_empty(), "README only: {only_readme:?}; --help only: {only_help:?}");
    for (flag, default) in &help {
        assert_eq!(&readme[flag], default, "the default of {flag}: README vs --help");
    }
}

#[test]
fn start_up_failures_name_the_cause() {
    let dir = temp_dir("cli");
    let bad = dir.join("b.json");
    std::fs::write(&bad, r#"["10.0.0.1:80", "oops"]"#).unwrap();
    let bad = bad.to_str().unwrap();
    let base = ["run", "--listen", "127.0.0.1:0", "--admin", "off", "--mode", "userspace"];
    let args: Vec<&str> = base.iter().copied().chain(["--backends-file", bad]).collect();
    fails_with(&args, &[], 1, "invalid --backends-file");
    let args: Vec<&str> = base.iter().copied().chain(["--backends-file", "/nonexistent/x.json"]).collect();
    fails_with(&args, &[], 1, "cannot read backends file");
    let args: Vec<&str> =
        base.iter().copied().chain(["--backend", "127.0.0.1:9", "--tls-cert", bad, "--tls-key", bad]).collect();
    fails_with(&args, &[], 1, "invalid --tls-cert");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    fails_with(
        &["run", "--listen", &addr, "--backend", "127.0.0.1:9", "--admin", "off", "--mode", "userspace"],
        &[],
        1,
        &format!("cannot listen on --listen {addr}"),
    );
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, "listen = \":0\"\nbakend = []\n").unwrap();
    fails_with(&["run", "--config", cfg.to_str().unwrap()], &[], 2, "unknown key 'bakend'");
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the binary until `check` passes against its admin API, then stops it with SIGTERM.
async fn run_and_check(mut cmd: Command, admin_port: u16, listen_port: u16, expect_backends: usize) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let mut ready = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(admin_addr).await.is_ok()
            && admin(admin_addr, "GET", "/readyz", None, None).await.0 == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !ready {
        let _ = child.kill();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        panic!("agent did not become ready: {err}");
    }
    assert_eq!(backends(admin_addr).await.as_array().unwrap().len(), expect_backends);
    let (status, _, _) = get(&client(), &format!("http://127.0.0.1:{listen_port}/")).await;
    assert_eq!(status, http::StatusCode::OK);
    // SIGTERM: a clean, prompt exit.
    unsafe { libc_kill(child.id() as i32, 15) };
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("admin api ready"), "{log}");
    assert!(!log.contains("Some("), "log values print plainly, not as Rust options:\n{log}");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[tokio::test]
async fn runs_from_environment_variables() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let (lp, ap) = (free_port(), free_port());
    let mut cmd = bin();
    cmd.arg("run")
        .env("EDGE_LISTEN", format!("127.0.0.1:{lp}"))
        .env("EDGE_BACKEND", format!("{} {},weight=2", a.spec(), b.spec()))
        .env("EDGE_ADMIN", format!("127.0.0.1:{ap}"))
        .env("EDGE_MODE", "userspace")
        .env("EDGE_HEALTH_PATH", "/healthz")
        .env("EDGE_LOG_FORMAT", "json");
    run_and_check(cmd, ap, lp, 2).await;
}

#[tokio::test]
async fn runs_from_a_config_file_with_flags_on_top() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let (lp, ap) = (free_port(), free_port());
    let dir = temp_dir("cli-cfg");
    let cfg = dir.join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = [\"127.0.0.1:{lp}\"]\nbackend = [\"{}\", \"{}\"]\nmode = \"userspace\"\nhealth-interval = \"100ms\"\nrise = 2\nadmin = \"127.0.0.1:1\"\n",
            a.spec(),
            b.spec()
        ),
    )
    .unwrap();
    let mut cmd = bin();
    // The flag overrides the file's admin address.
    cmd.args(["run", "--config", cfg.to_str().unwrap(), "--admin", &format!("127.0.0.1:{ap}")]);
    run_and_check(cmd, ap, lp, 2).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ebpf_mode_checks_the_host_at_start() {
    // These checks run before anything is loaded, so they need no privileges.
    let base = ["run", "--mode", "ebpf", "--backend", "127.0.0.1:9", "--admin", "off"];
    let with = |extra: &[&'static str]| base.iter().copied().chain(extra.iter().copied()).collect::<Vec<&str>>();
    fails_with(
        &with(&["--iface", "no-such-if0", "--vip", "127.0.0.1:80"]),
        &[],
        1,
        "interface no-such-if0 does not exist; check the name with `ip link`",
    );
    fails_with(
        &with(&["--iface", "lo", "--vip", "192.0.2.1:80"]),
        &[],
        1,
        "the VIP 192.0.2.1 is not an address of this host",
    );
}
