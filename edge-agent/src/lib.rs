//! edge-agent: a load-balancer agent for AWS ECS.
//!
//! Control plane (discovery → health monitor → balancer) and the userspace data plane (HTTP and
//! TCP proxies), plus the admin API and metrics. The binary (`main.rs`) only parses arguments and
//! calls [`app::run`]; integration tests start agents through [`app::start`]. See ARCHITECTURE.md
//! for the code map and the invariants.

pub mod admin;
pub mod app;
pub mod backend;
pub mod balance;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod demo;
pub mod discovery;
pub mod duration;
pub mod health;
pub mod histogram;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod service;
