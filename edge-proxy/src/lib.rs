//! edge-proxy: the userspace data plane, for hosts without eBPF (Fargate) and for HTTP.
//!
//! An HTTP reverse proxy (hyper server for HTTP/1.1 and h2, TLS by rustls, its own upstream
//! HTTP/1.1 client with a per-worker pool, hyper's HTTP/2 client for HTTP/2 backends, upgrades to
//! tunnels) and a TCP proxy, on thread-per-core workers. Every listener carries its service's
//! selector snapshot (from `edge_core::balance`) and reads it without a lock; outcomes are counted
//! into the backends' own counters and into [`ProxyStats`] and [`ServiceTraffic`], which the
//! binary's metrics exporter reads.
//!
//! Module dependencies point one way:
//! - leaves: `config`, `stats`, `admission`, `authority`, `headers`, `io` (plain or TLS streams),
//!   `tls`, `conn_guard`, `relay` (bytes both ways, counted, with an idle limit) and
//!   `proxy_protocol` (PROXY headers read and built);
//! - `upstream` (the backend side) uses `headers`, `io` and `proxy_protocol`;
//! - `served` (what a listener's proxy works with, and what a handler knows of its client
//!   connection) and `accept` use `stats`; `served` also uses `proxy_protocol` and `upstream`;
//! - `body` uses `conn_guard` and `upstream`; `attempt` (the bookkeeping of one-attempt exchanges)
//!   uses `body`, `served` and `upstream`;
//! - `tunnel` (upgraded connections) and `forward_h2` (requests to HTTP/2 backends) use `attempt`,
//!   `body`, `served` and `upstream`, and `tunnel` also `relay`;
//! - `http` uses `tunnel`, `forward_h2` and the rest, `tcp` uses `relay`, `served` and
//!   `upstream`; `workers` starts both; `trim` uses `accept`.

mod accept;
mod admission;
mod attempt;
mod authority;
mod body;
mod config;
mod conn_guard;
mod extended_connect;
mod forward_h2;
mod headers;
mod http;
mod io;
mod proxy_protocol;
mod relay;
mod served;
mod stats;
mod tcp;
mod tls;
mod trim;
mod tunnel;
mod upstream;
mod workers;

pub use accept::{AcceptorParts, Loads, acceptors, bind_group};
pub use admission::Admission;
pub use config::{ProxyConfig, RetryPolicy};
pub use stats::{ClientError, ListenerKind, NoBackend, ProxyStats, RetryOutcome, RetryReason, ServiceTraffic};
pub use tls::{TlsError, acceptor as tls_acceptor};
pub use trim::trim_after_closes;
/// The upstream codec, for the fuzz targets in `fuzz/` (built only with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzz {
    pub use crate::upstream::codec::{
        BodyFraming, Chunk, ChunkedDecoder, CodecError, ResponseHead, parse_response_head,
    };
}
pub use workers::{Listener, WorkerContext, WorkerSockets, allowed_cpus, spawn as spawn_worker};
