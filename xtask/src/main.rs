//! Repository tasks (`cargo xtask <task>`), in Rust so they run wherever cargo does.
//!
//! - `setup`: make this machine ready (nightly rust-src, bpf-linker, Debian packages); idempotent.
//! - `test`: setup, then formatting, the layering check, lints and every test (the privileged
//!   ones too when root).
//! - `demo`: setup, then the self-contained demo.
//! - `replay`: setup, then `edge-agent replay` (the strategy replay and its report).
//! - `bench`: setup, then the HTTP comparison with HAProxy and NGINX, and the idle memory check;
//!   `bench conns` for the memory of idle connections; `bench overload` for admission under
//!   twice the capacity; `bench l4` and `bench prog` for the eBPF
//!   data plane. The harnesses are in `bench/`.
//! - `fuzz`: build the fuzz targets in `fuzz/` and run each for a bounded time.
//! - `image`: setup, then the container image, offline (hadolint, a static binary, buildah).
//! - `deploy-check`: setup, then every artifact in deploy/ and the workflows through a real
//!   validator (botocore's ECS model, cfn-lint, actionlint, Grafana's types).

mod bench;
mod deploy;
mod fuzz;
mod image;
mod modcycles;
mod setup;
mod test;
mod util;

use anyhow::bail;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        // `setup build`: only what building needs (the Dockerfile's build stage).
        "setup" if rest.iter().any(|a| a == "build") => setup::run(setup::Needs::Build),
        "setup" => setup::run(setup::Needs::Test),
        "test" => test::run(&rest),
        "demo" => {
            setup::run(setup::Needs::Build)?;
            let mut cmd = util::cargo();
            cmd.args(["run", "--release", "--quiet", "-p", "edge-agent", "--", "demo"]).args(&rest);
            util::exec(&mut cmd)
        }
        "replay" => {
            setup::run(setup::Needs::Build)?;
            let mut cmd = util::cargo();
            cmd.args(["run", "--release", "--quiet", "-p", "edge-agent", "--", "replay"]).args(&rest);
            util::exec(&mut cmd)
        }
        "bench" => bench::run(&rest),
        "image" => {
            setup::run(setup::Needs::Test)?;
            let tag = image::run(image::Optimise::Shipped)?;
            println!("built {tag} (buildah --storage-driver vfs images lists it)");
            Ok(())
        }
        "deploy-check" => {
            setup::run(setup::Needs::Test)?;
            deploy::run()
        }
        "fuzz" => {
            setup::run(setup::Needs::Build)?;
            fuzz::run(&rest)
        }
        "" | "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <setup|test|demo|replay|bench|fuzz|image|deploy-check> [args]");
            println!("  setup [build] install what building and testing need, or building only (idempotent)");
            println!("  test          formatting, lints, all tests (privileged ones when root)");
            println!("  demo [ARGS]   run the self-contained demo (ARGS go to `edge-agent demo`)");
            println!("  replay [ARGS] replay scenarios against every strategy (ARGS go to `edge-agent replay`)");
            println!("  bench [http]  compare edge with HAProxy and NGINX; report idle memory");
            println!("  bench l4      (root) edge eBPF vs direct, nftables DNAT, HAProxy TCP");
            println!("  bench conns   memory of 5,000 idle client connections: before, peak, after");
            println!("  bench overload  open-loop load at twice the capacity; admitted latency, admin latency");
            println!("  bench prog    (root) ns per packet of the data path (BPF_PROG_TEST_RUN)");
            println!("  fuzz [TARGET...] [--seconds N] [--merge]  run the fuzz targets (60 s each)");
            println!("  image         the container image, offline: hadolint, a static binary, buildah");
            println!("  deploy-check  deploy/ and the workflows: botocore's ECS model, cfn-lint, actionlint, tsc");
            Ok(())
        }
        other => bail!("unknown task '{other}'; use setup, test, demo, replay, bench, fuzz, image or deploy-check"),
    }
}
