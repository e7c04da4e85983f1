//! The integration tests that need no privileges, in one binary (one link on a 2-core machine
//! instead of one per file): agents started in-process on `127.0.0.1:0` against in-process test
//! doubles, and the `edge-agent` binary itself for command-line behaviour.

#[path = "../common/browser.rs"]
mod browser;
mod consul_double;
#[path = "../common/root.rs"]
mod root;
mod support;

mod admin;
mod backends_file;
mod cli;
mod console;
mod dataplane_probe;
mod deploy_prometheus;
mod discovery;
mod ecs;
mod failure;
mod grpc;
mod h2_retry;
mod health;
mod http_proxy;
mod ipv6;
mod limits;
mod profile;
mod proxy_protocol;
mod replay;
mod semantics;
mod services;
mod stalls;
mod strategies;
mod streaming;
mod tcp_proxy;
mod tls_upstream;
mod upstream;
mod websocket;
