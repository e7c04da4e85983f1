//! The `edge-agent` binary: parse, validate, run. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use edge_agent::cli::{Cli, Command};
use edge_agent::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let cfg = match Config::from_args(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            edge_agent::logging::init(cfg.log_format, &cfg.log_level);
            // The control plane (discovery, probes, balancer, admin) needs one thread; the data
            // plane runs on its own worker threads (see proxy/workers.rs).
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
        Command::Maps(args) => match edge_agent::dataplane::view::render(&args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Cleanup => match edge_agent::dataplane::pins::cleanup() {
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
    }
}
