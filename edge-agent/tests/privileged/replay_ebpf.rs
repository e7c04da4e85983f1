//! `edge-agent replay` on the eBPF data plane: the binary builds its own namespace lab, runs an
//! L4 scenario through an eBPF agent, and reports what the agent decided.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The agent binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_edge-agent");
/// Longest a short replay may take (three userspace and three eBPF runs of 18 s, plus set-up).
const LIMIT: Duration = Duration::from_secs(240);

/// The privileged tests of this file.
pub const TESTS: &[(&str, fn())] = &[("replay::crash_on_the_ebpf_plane", crash_on_the_ebpf_plane)];

/// Runs `edge-agent replay NAME` for `secs` seconds without peers; returns results.json and what
/// the replay described (`EDGE_REPLAY_DEBUG`): the failed requests and the agents' state changes,
/// and anything it warned about.
fn replay(name: &str, secs: u64, out: &Path) -> (Value, String) {
    let mut child = Command::new(BIN)
        .env("EDGE_REPLAY_DEBUG", "1")
        .args(["replay", name, "--no-peers", "--duration", &format!("{secs}s"), "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edge-agent replay");
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the replay") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the replay took longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = child.wait_with_output().expect("the replay's output");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(status.success(), "the replay failed ({status}):\n{text}");
    let json = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let debug: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("failed:") || l.starts_with("transition:") || l.contains("WARN"))
        .collect();
    (serde_json::from_str(&json).expect("results.json is JSON"), debug.join("\n"))
}

/// `crash` on the eBPF plane: every strategy runs, the agent takes the dead backend out and
/// brings it back with no flap, and no request fails once the decision has reached the kernel's
/// table (an L4 balancer cannot save the requests already on a connection to it, nor new
/// connections before it knows, but must send no new connection there after).
fn crash_on_the_ebpf_plane() {
    let _one = crate::netns_behaviour::serial();
    let dir = std::env::temp_dir().join(format!("edge-replay-ebpf-{}", std::process::id()));
    // 18 s: the crash at 6 s, the recovery at 12 s, and 6 s after it. A backend the probes took
    // out is back 2.3 to 2.8 s after its recovery (rise, then 2 s of slow start; 18 runs). One
    // that refused SYNs ejected first returns through probation, which the client's keep-alive
    // connections, all moved elsewhere, may never reach: then the base ejection time (2 s) ends
    // it, and it is back about 4.5 s after its recovery.
    let (results, debug) = replay("crash", 18, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let scenario = &results["scenarios"][0];
    let ebpf: Vec<&Value> =
        scenario["runs"].as_array().expect("runs").iter().filter(|r| r["plane"] == "ebpf").collect();
    let strategies: Vec<&str> = ebpf.iter().filter_map(|r| r["strategy"].as_str()).collect();
    assert_eq!(
        strategies,
        ["round-robin", "least-connections", "consistent-hash"],
        "one eBPF run per strategy; not run: {}",
        scenario["not_run"]
    );
    for r in ebpf {
        let name = &r["strategy"];
        assert!(
            r["detection_s"].as_f64().is_some(),
            "{name}: the crashed backend was never taken out: {r}\nwhat the replay saw (every run):\n{debug}"
        );
        assert!(
            r["recovery_s"].as_f64().is_some(),
            "{name}: the backend never came back: {r}\nwhat the replay saw (every run):\n{debug}"
        );
        assert_eq!(r["flaps"], 0, "{name}: flaps: {r}\nwhat the replay saw (every run):\n{debug}");
        // From one timeline bucket after the detection (time for the decision to reach the
        // kernel's table) to the end, through the recovery, no request fails.
        let fail_at = scenario["failure_window"][0].as_f64().expect("the crash's time");
        let settled = fail_at + r["detection_s"].as_f64().unwrap_or(f64::MAX);
        let timeline = r["timeline"].as_array().expect("timeline");
        let bucket = scenario["duration_s"].as_f64().expect("duration") / timeline.len() as f64;
        let late: Vec<(f64, u64)> = timeline
            .iter()
            .enumerate()
            .map(|(i, b)| (i as f64 * bucket, b[1].as_u64().expect("failed count")))
            .filter(|(from, failed)| *from >= settled + bucket && *failed > 0)
            .collect();
        assert!(
            late.is_empty(),
            "{name}: requests failed after the backend was taken out (bucket start, failed): {late:?}\n{r}\n\
             what the replay saw (every run):\n{debug}"
        );
        assert!(r["remapped"].is_null(), "{name}: key remapping does not apply at L4: {r}");
    }
}
