//! `edge-agent monitor`: streams the kernel's events (drops with their reason and tuple, new flows
//! when asked) from a running eBPF agent, as `cilium monitor --type drop` does. It switches the
//! kernel monitor on through the admin API for a lease it renews while it runs, reads the agent's
//! numbered events every 250 ms, and switches the monitor off when it ends (Ctrl-C, `--count`,
//! `--duration`). Blocking std I/O with timeouts, as `edge-agent health`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::MonitorArgs;
use crate::healthcheck::{request, target};

/// The lease asked for, renewed every `RENEW`: a watcher killed without a word leaves the kernel
/// reporting for at most this long.
const LEASE_SECONDS: u64 = 30;
const RENEW: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(250);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// `edge-agent monitor`.
pub fn main(args: &MonitorArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &MonitorArgs) -> Result<(), String> {
    let Some(admin) = args.admin.map_or(Some(crate::config::DEFAULT_ADMIN), |a| a.0) else {
        return Err("the admin API is off (--admin off); `edge-agent monitor` reads it, so enable it".into());
    };
    let addr = target(Some(admin));
    let token = args.token.as_ref().map(|t| t.0.as_str());
    let (drops, flows) = match args.r#type.as_str() {
        "drop" | "drops" => (true, false),
        "flow" | "flows" => (false, true),
        "all" => (true, true),
        other => return Err(format!("unknown --type '{other}'; use drop, flow or all")),
    };
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let switch = |seconds: u64| -> Result<serde_json::Value, String> {
        let body = serde_json::json!({ "drops": drops, "flows": flows, "rate": args.rate, "seconds": seconds });
        match request(addr, "POST", "/admin/monitor", token, &body.to_string(), CALL_TIMEOUT)? {
            (200, text) => serde_json::from_str(&text).map_err(|e| format!("the agent's answer is not JSON: {e}")),
            (401, _) => Err("the agent needs the admin token; give --token or set EDGE_ADMIN_TOKEN".into()),
            (status, text) => Err(format!("the agent refused ({status}): {}", error_text(&text))),
        }
    };
    let status = switch(LEASE_SECONDS)?;
    let mut since = status["last_seq"].as_u64().unwrap_or(0);
    eprintln!("monitoring {} at most {} a second per CPU; Ctrl-C to stop", what(drops, flows), args.rate);
    let started = Instant::now();
    let mut renewed = Instant::now();
    let mut seen = 0u64;
    let result = loop {
        if STOP.load(Ordering::Relaxed) || args.duration.is_some_and(|d| started.elapsed() >= d.0) {
            break Ok(());
        }
        std::thread::sleep(POLL);
        if renewed.elapsed() >= RENEW {
            if let Err(e) = switch(LEASE_SECONDS) {
                break Err(e);
            }
            renewed = Instant::now();
        }
        let page = match request(addr, "GET", &format!("/admin/monitor?since={since}"), token, "", CALL_TIMEOUT) {
            Ok((200, text)) => serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
            Ok((status, text)) => break Err(format!("the agent answered {status}: {}", error_text(&text))),
            Err(e) => break Err(e),
        };
        let mut done = false;
        for e in page["events"].as_array().into_iter().flatten() {
            since = since.max(e["seq"].as_u64().unwrap_or(since));
            println!("{}", if args.json { e.to_string() } else { line(e) });
            seen += 1;
            if args.count.is_some_and(|n| seen >= n) {
                done = true;
                break;
            }
        }
        if done {
            break Ok(());
        }
    };
    // Off at once rather than at the lease's end (another watcher's next renewal switches it on).
    let _ = switch(0);
    result
}

fn what(drops: bool, flows: bool) -> &'static str {
    match (drops, flows) {
        (true, true) => "drops and new flows",
        (true, false) => "drops",
        _ => "new flows",
    }
}

fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string())
}

/// One event as a line: time, kind, reason, protocol, tuple, interface, and what was not reported.
fn line(e: &serde_json::Value) -> String {
    let at = e["at"].as_f64().unwrap_or(0.0);
    let secs = at as u64;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let ms = ((at - secs as f64) * 1000.0) as u64;
    let event = e["event"].as_str().unwrap_or("?");
    let reason = event.strip_prefix("drop_").unwrap_or(event);
    let lost = e["lost"].as_u64().unwrap_or(0);
    let lost = if lost > 0 { format!(" (+{lost} not reported)") } else { String::new() };
    format!(
        "{h:02}:{m:02}:{s:02}.{ms:03} {:<8} {:<14} {} {} -> {} if {}{lost}",
        e["kind"].as_str().unwrap_or("?"),
        reason,
        e["proto"].as_str().unwrap_or("?"),
        e["src"].as_str().unwrap_or("?"),
        e["dst"].as_str().unwrap_or("?"),
        e["ifindex"].as_u64().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_reason_and_the_tuple() {
        let e = serde_json::json!({"seq": 1, "at": 3661.25, "kind": "drop", "event": "drop_no_backend", "proto": "tcp",
            "src": "10.0.0.9:40023", "dst": "10.0.0.5:80", "ifindex": 2, "lost": 3});
        assert_eq!(
            line(&e),
            "01:01:01.250 drop     no_backend     tcp 10.0.0.9:40023 -> 10.0.0.5:80 if 2 (+3 not reported)"
        );
    }
}
