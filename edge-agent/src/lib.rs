//! edge-agent: the binary's library half: the command line (`cli`, `values`), the validated
//! configuration (`config`), the wiring of the control plane and the data planes (`app`, with the
//! data-plane choice in `plane` and the running services in `service`), the admin API (`admin`),
//! the Prometheus exporter (`metrics`), `edge-agent maps` (`maps`), logging, the demo and the
//! strategy replay (`replay`), both over simulated backends (`sim`). `main.rs`
//! only parses arguments and calls [`app::run`]; integration tests start agents through
//! [`app::start`]. See ARCHITECTURE.md for the code map and the invariants.
//!
//! Module dependencies point one way: `values` is a leaf, `cli` uses it, `config` uses `cli`,
//! `logging`, `plane` and `maps` use those, `service` and `metrics` sit above, `admin` uses
//! `metrics`, `app` wires everything, and `demo` and `replay` drive `app` over `sim`, drawing with
//! `term` (both leaves).

mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod ecs;
pub mod healthcheck;
pub mod kernel;
pub mod kernel_events;
pub mod logging;
pub mod maps;
pub mod metrics;
pub mod monitor;
pub mod plane;
pub mod replay;
pub mod service;
pub mod sim;
pub mod term;
pub mod values;

/// Entry points for the fuzz targets in `fuzz/` (built only with `--cfg fuzzing`): everything that
/// parses input from files or from the admin API's clients.
#[cfg(fuzzing)]
pub mod fuzz {
    /// Parses a `--config` file's text.
    pub fn config_file(text: &str) {
        let _ = crate::config::parse_file(std::path::Path::new("fuzz.toml"), text);
    }

    /// Parses a `PUT /admin/strategy` body.
    pub fn strategy_body(body: &[u8]) {
        let _ = crate::admin::parse_strategy_body(body);
    }

    /// Decodes a query parameter as the admin API does.
    pub fn query_param(query: &str) {
        let _ = crate::admin::query::param(Some(query), "service");
    }
}
