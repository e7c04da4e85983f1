//! The privileged tests, in one binary with its own harness (libtest-mimic): the real eBPF object
//! on crafted frames through `BPF_PROG_TEST_RUN` (`ebpf_prog`, support in `bpf`), and the agent
//! binary between network namespaces on both data planes (`netns_behaviour`, support in `netns`),
//! `edge-agent replay` on the eBPF data plane (`replay_ebpf`), and discovery from DNS and the Consul
//! test double with traffic flowing (`discovery_netns`), and the console in a real browser on the
//! eBPF data plane (`console_ebpf`, with the WebDriver client shared with the unprivileged tests).
//!
//! They need root. The standard harness can only skip at compile time, so a test that is not root
//! used to return early and pass without running; this harness decides at run time and reports
//! such tests as ignored, with the reason. `cargo xtask test` runs as root, and with `CI` set it
//! refuses to run the suite as anyone else.

#[path = "../common/root.rs"]
mod root;

mod bpf;
#[path = "../common/browser.rs"]
mod browser;
mod console_ebpf;
#[path = "../it/consul_double.rs"]
mod consul_double;
mod discovery_netns;
mod ebpf_prog;
mod netns;
mod netns_behaviour;
mod replay_ebpf;

use std::process::ExitCode;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// Why a privileged test cannot run without root.
const NEEDS_ROOT: &str = "needs root: BPF_PROG_TEST_RUN and network namespaces; cargo xtask test runs it as root";

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let root = root::is_root();
    let tests = ebpf_prog::TESTS
        .iter()
        .chain(netns_behaviour::TESTS)
        .chain(replay_ebpf::TESTS)
        .chain(discovery_netns::TESTS)
        .chain(console_ebpf::TESTS);
    let mut trials: Vec<Trial> = tests
        .map(|&(name, test)| {
            Trial::ignorable_test(name, move || {
                if !root {
                    return Ok(Completion::ignored_with(NEEDS_ROOT));
                }
                test();
                Ok(Completion::Completed)
            })
        })
        .collect();
    // Benchmarks run only when asked for (`--ignored`, as `cargo xtask bench prog` does).
    trials.extend(ebpf_prog::BENCHES.iter().map(|&(name, bench)| {
        Trial::test(name, move || {
            if !root {
                return Err(Failed::from(NEEDS_ROOT));
            }
            bench();
            Ok(())
        })
        .with_ignored_flag(true)
    }));
    libtest_mimic::run(&args, trials).exit_code()
}
