//! The operator console against an agent on the eBPF data plane, in headless Chromium: the kernel
//! panel (counters by outcome, per-backend packet rates and live flows) and the kernel monitor's
//! drop events, started from the page's own button. chromedriver and Chromium run in the agent's
//! network namespace, where its admin API listens.

use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::browser::{Browser, Connect};
use crate::netns::{BACKENDS, in_ns};
use crate::netns_behaviour::{Env, Mode, agent_args, vip80};

fn ebpf_console_shows_kernel_counters_and_drop_events() {
    let env = Env::start(Mode::Ebpf, &agent_args(Mode::Ebpf, &[]));
    let lb = env.topo.lb_ns().to_string();
    let connect: Connect = {
        let lb = lb.clone();
        Arc::new(move |addr| in_ns(&lb, move || TcpStream::connect_timeout(&addr, Duration::from_secs(5))))
    };
    let spawn = move |mut cmd: Command| in_ns(&lb, move || cmd.spawn());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    rt.block_on(async {
        let browser = Browser::start_with(1280, 900, spawn, connect).await;
        browser.open("http://127.0.0.1:9901/").await;
        let row = |b: &str, field: &str| format!("tr[data-backend=\"{b}:80\"] [data-field=\"{field}\"]");
        for b in BACKENDS {
            let sel = row(&b.to_string(), "state");
            let healthy = browser.until_text(&sel, Duration::from_secs(10), |t| t == "healthy").await;
            assert!(healthy.is_some(), "{b}:80 is not listed as healthy\n{}", env.log());
        }
        let mode = browser.text("#mode").await;
        assert_eq!(mode, "ebpf", "the page names the data plane");

        // Traffic through the kernel shows in the panel and in each backend's kernel cell: the
        // page computes rates between two polls, so keep traffic flowing while it looks.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = false;
        while !seen && Instant::now() < deadline {
            for _ in 0..6 {
                env.topo.http_get(vip80(), Duration::from_secs(2)).expect("a request through the VIP");
            }
            let events = browser.text("#kernel-events").await;
            let cell = browser.text(&row(&BACKENDS[0].to_string(), "kernel")).await;
            seen = events.contains("forwarded") && cell.contains("pkt/s") && !cell.starts_with("— ");
        }
        let cell = browser.text(&row(&BACKENDS[0].to_string(), "kernel")).await;
        assert!(seen, "the kernel panel shows no forwarded packets or backend rates (cell: {cell:?})\n{}", env.log());
        let summary = browser.text("#kernel-summary").await;
        assert!(summary.starts_with("Maglev table swaps:"), "{summary}");

        // The page's button switches the monitor on; a drop then appears with its reason and tuple.
        browser.click("button[data-action=\"monitor\"]").await;
        let on = browser.until_text("#monitor-state", Duration::from_secs(5), |t| t.starts_with("monitor on: drops"));
        assert!(
            on.await.is_some(),
            "the button did not switch the monitor on: {}",
            browser.text("#monitor-state").await
        );
        for b in BACKENDS {
            env.admin_ok("POST", &format!("/admin/backends/{b}:80/drain"), None);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut text = String::new();
        while Instant::now() < deadline {
            let _ = env.topo.http_get(vip80(), Duration::from_millis(300));
            text = browser.text("#monitor-events").await;
            if text.contains("no_backend") && text.contains("10.91.1.1:80") {
                break;
            }
        }
        assert!(text.contains("no_backend") && text.contains("10.91.1.1:80"), "no drop event on the page: {text:?}");
        let top = browser.text("#drops tr:first-child td:first-child").await;
        assert_eq!(top, "no_backend", "the commonest drop reason heads its table: {}", browser.text("#drops").await);
        browser.js("document.getElementById('monitor-events').scrollIntoView(); return null;").await;
        browser.screenshot("ebpf-1280.png").await;
        let problems = browser.problems().await;
        assert!(problems.is_empty(), "the browser's console: {problems:?}");
    });
}

/// The tests of this file, for the harness.
pub(crate) const TESTS: &[(&str, fn())] =
    &[("ebpf_console_shows_kernel_counters_and_drop_events", ebpf_console_shows_kernel_counters_and_drop_events)];
