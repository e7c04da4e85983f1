//! The `edge-agent` binary: parse, validate, run. Everything else lives in the library.

use std::process::ExitCode;

use edge_agent::cli::{self, Command};
use edge_agent::config::{Config, ConfigError};

/// The static (musl) build, the container image's, allocates with jemalloc: musl's own malloc
/// cost the proxy 11 to 15 % more CPU per request than glibc's (docs/benchmarks.md). The glibc
/// build keeps the system allocator, which `malloc_trim` manages (edge-proxy's `trim`).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: a background thread returns freed pages within a second
/// (the glibc build calls `malloc_trim` for the same), where by default they stayed until the
/// next allocations.
#[cfg(target_env = "musl")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string jemalloc reads; a raw pointer to a `'static` literal, so safe to share.
#[cfg(target_env = "musl")]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a string literal, immutable for the life of the process.
#[cfg(target_env = "musl")]
unsafe impl Sync for MallocConf {}

fn main() -> ExitCode {
    let cli = match cli::parse_from(std::env::args_os(), &edge_agent::config::defaults()) {
        Ok(c) => c,
        // clap prints help and version to stdout with status 0, and errors to stderr with 2.
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Run(args) => {
            let cfg = match Config::load(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    // A file that cannot be read is a start-up problem (1); a wrong setting is a
                    // usage error (2).
                    return ExitCode::from(if matches!(e, ConfigError::Unreadable { .. }) { 1 } else { 2 });
                }
            };
            edge_agent::logging::init(cfg.log_format, &cfg.log_level);
            // The control plane (discovery, probes, balancer, admin) needs one thread; the data
            // plane runs on its own worker threads (see edge-proxy's workers).
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(edge_agent::app::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Maps(args) => match edge_agent::maps::render(&args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Health(args) => edge_agent::healthcheck::main(&args),
        Command::Monitor(args) => edge_agent::monitor::main(&args),
        Command::Cleanup => match edge_dataplane::pins::cleanup() {
            Ok(removed) => {
                println!("removed {} pinned maps and links under {}", removed.len(), edge_common::PIN_DIR);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo(args) => match edge_agent::demo::main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Replay(args) => match edge_agent::replay::main(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
