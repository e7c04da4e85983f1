//! The admin API (`--admin`, default 127.0.0.1:9901), separate from traffic listeners.
//!
//! `GET /admin/services`, `GET /admin/backends`, `POST /admin/backends/{id}/drain|undrain`,
//! `GET|PUT /admin/strategy`, `GET /admin/state`, `GET /admin/events` (the latest state changes
//! and decisions, newest first), `GET /healthz`, `GET /readyz`, `GET /metrics`.
//! Responses are JSON (metrics are OpenMetrics text). With `--admin-token`, mutating calls need
//! `Authorization: Bearer TOKEN`. Reads go to snapshots; commands go through the same channels as
//! everything else (the monitor for drains, the balancer for strategy), so the admin API never
//! mutates state itself.
//!
//! With several services, the backend, strategy and state calls act on the first service unless
//! the query names another (`?service=NAME`, see `query`), so a single-service agent's API is
//! unchanged; `/readyz` waits for every service.

mod console;
mod profile;
pub(crate) mod query;
mod views;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ring::digest::{SHA256, digest};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use edge_core::balance::{BalancerHandle, StrategySpec, SwitchError};
use edge_core::health::CommandError;
use edge_core::util::stopped;

use crate::kernel_events::{KernelEvents, MonitorError, Switch};
use crate::metrics::Metrics;
use crate::plane::DataplaneStatus;
use crate::service::{self, ServiceHandle};
use views::{BackendJson, Counts, DataplaneJson, EventJson, ServiceJson, SourceJson, StateJson, StrategyJson};

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;

/// Most admin connections open at once; more wait in the accept queue. Every one of them closes
/// within the head timeout when idle, so a flood of connections delays health checks by that
/// much at most instead of exhausting the process's file descriptors.
const MAX_CONNECTIONS: usize = 256;

/// Everything the admin API reads or commands.
#[derive(Debug)]
pub struct Admin {
    /// Every service (backend state, strategy), the default first.
    pub services: Vec<ServiceHandle>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Data-plane status.
    pub dataplane: DataplaneStatus,
    /// Required bearer token for mutating calls.
    pub token: Option<String>,
    /// HTTP listener addresses.
    pub listen: Vec<SocketAddr>,
    /// TCP listener addresses.
    pub listen_tcp: Vec<SocketAddr>,
    /// TLS on HTTP listeners.
    pub tls: bool,
    /// Start time.
    pub started: Instant,
    /// Limit for a request head, and for a request body to arrive (`--header-read-timeout`).
    pub read_timeout: std::time::Duration,
    /// The eBPF dataplane actor's findings (eBPF mode): backends it cannot reach.
    pub dataplane_stats: Option<Arc<edge_dataplane::DataplaneStats>>,
    /// The kernel's counters (eBPF mode).
    pub kernel: Option<Arc<crate::kernel::Kernel>>,
    /// The kernel monitor (eBPF mode).
    pub monitor: Option<Arc<KernelEvents>>,
    /// The ECS task this agent runs in, when it does.
    pub ecs: Option<crate::ecs::Task>,
}

type Resp = Response<Full<Bytes>>;

fn json<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(status: StatusCode, msg: impl Into<String>) -> Resp {
    json(status, &serde_json::json!({ "error": msg.into() }))
}

/// Compares two secrets in time that depends neither on where they differ nor on their lengths:
/// both are hashed to SHA-256 first (whose time depends only on the presented value's length,
/// which the client knows anyway), and the fixed-size digests are compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (digest(&SHA256, a), digest(&SHA256, b));
    da.as_ref().iter().zip(db.as_ref()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Admin {
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else { return true };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.as_bytes()))
    }

    /// The service the query names (`?service=NAME`), or the first; the error status and message
    /// otherwise.
    fn service(&self, query: Option<&str>) -> Result<&ServiceHandle, (StatusCode, String)> {
        let name = query::param(query, "service");
        service::find(&self.services, name.as_deref()).ok_or_else(|| match name {
            Some(n) => (
                StatusCode::NOT_FOUND,
                format!(
                    "no service named '{n}'; the services are {}; see GET /admin/services",
                    self.services.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ")
                ),
            ),
            None => (StatusCode::SERVICE_UNAVAILABLE, "no service is running".to_string()),
        })
    }

    fn ready(&self) -> bool {
        service::all_ready(&self.services)
    }

    /// Routes one request.
    pub async fn route(&self, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let query = req.uri().query().map(str::to_string);
        let method = req.method().clone();
        let mutating = matches!(method, Method::POST | Method::PUT);
        // A profile reads no secret but costs CPU and shows the code's insides: the token guards it
        // too.
        let guarded = mutating || path.starts_with("/debug/");
        if guarded && !self.authorized(&req) {
            let mut r =
                error(StatusCode::UNAUTHORIZED, "this call needs the admin token; send Authorization: Bearer TOKEN");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // Calls on one service resolve it first, so that an unknown name is a 404 whatever the call.
        let svc = match segments.as_slice() {
            ["admin", "backends", ..] | ["admin", "strategy"] | ["admin", "state"] => {
                match self.service(query.as_deref()) {
                    Ok(s) => Some(s),
                    Err((status, msg)) => return error(status, msg),
                }
            }
            _ => None,
        };
        match (method.clone(), segments.as_slice(), svc) {
            (Method::GET, [] | ["index.html" | "console.js" | "console.css"], _) => {
                console::asset(segments.first().copied().unwrap_or(""))
                    .unwrap_or_else(|| error(StatusCode::NOT_FOUND, "no such file"))
            }
            (_, [] | ["index.html" | "console.js" | "console.css"], _) => method_not_allowed("GET"),
            (Method::GET, ["healthz"], _) => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
            (Method::GET, ["readyz"], _) => {
                let ready = self.ready();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                json(status, &serde_json::json!({ "ready": ready }))
            }
            (Method::GET, ["metrics"], _) => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                r
            }
            (Method::GET, ["debug", "pprof", "profile"], _) => match profile::Request::parse(query.as_deref()) {
                Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
                Ok(p) => match profile::take(p).await {
                    Ok(body) => {
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        let (kind, disposition) = match p.format {
                            profile::Format::Pprof => {
                                ("application/octet-stream", "attachment; filename=\"edge-agent.cpu.pb\"")
                            }
                            profile::Format::Flamegraph => ("image/svg+xml", "inline"),
                        };
                        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
                        r.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(disposition));
                        r
                    }
                    Err(e @ profile::ProfileError::Busy) => error(StatusCode::CONFLICT, e.to_string()),
                    Err(e @ profile::ProfileError::NoSamples(_)) => {
                        error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
                    }
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                },
            },
            (_, ["admin", "monitor"], _) if self.monitor.is_none() => error(
                StatusCode::CONFLICT,
                "the kernel monitor needs the eBPF data plane, and this agent runs the userspace proxy (see GET /admin/state)",
            ),
            (Method::GET, ["admin", "monitor"], _) => {
                let since = query.as_deref().and_then(|q| {
                    q.split('&').find_map(|p| p.strip_prefix("since=")).and_then(|v| v.parse::<u64>().ok())
                });
                json(StatusCode::OK, &self.monitor.as_ref().map(|m| m.status(since.unwrap_or(0))))
            }
            (Method::POST, ["admin", "monitor"], _) => match &self.monitor {
                Some(m) => post_monitor(m, req, self.read_timeout).await,
                None => error(StatusCode::CONFLICT, "no kernel monitor"),
            },
            (_, ["admin", "monitor"], _) => method_not_allowed("GET, POST"),
            (Method::GET, ["admin", "dataplane"], _) => {
                let kernel = self.kernel.as_ref().and_then(|k| k.view());
                let view = DataplaneJson::new(self.dataplane.mode.as_str(), self.dataplane_stats.as_deref(), kernel);
                json(StatusCode::OK, &view)
            }
            (Method::GET, ["admin", "services"], _) => {
                let list: Vec<ServiceJson> = self.services.iter().map(service_json).collect();
                json(StatusCode::OK, &list)
            }
            (Method::GET, ["admin", "backends"], Some(svc)) => {
                let set = svc.monitor.snapshot();
                let reach = self.dataplane_stats.as_deref();
                let list: Vec<BackendJson> =
                    set.backends.iter().map(|b| BackendJson::from(b).with_reach(reach)).collect();
                json(StatusCode::OK, &list)
            }
            (Method::GET, ["admin", "backends", id], Some(svc)) => match svc.monitor.snapshot().get(id) {
                Some(b) => json(StatusCode::OK, &BackendJson::from(b).with_reach(self.dataplane_stats.as_deref())),
                None => error(StatusCode::NOT_FOUND, not_found(svc, id, &self.services)),
            },
            (Method::POST, ["admin", "backends", id, action @ ("drain" | "undrain")], Some(svc)) => {
                let id = (*id).to_string();
                let r = if *action == "drain" { svc.monitor.drain(&id).await } else { svc.monitor.undrain(&id).await };
                match r {
                    Ok(()) => match svc.monitor.snapshot().get(&id) {
                        Some(b) => {
                            json(StatusCode::OK, &BackendJson::from(b).with_reach(self.dataplane_stats.as_deref()))
                        }
                        None => error(StatusCode::NOT_FOUND, not_found(svc, &id, &self.services)),
                    },
                    Err(CommandError::NotFound(_)) => error(StatusCode::NOT_FOUND, not_found(svc, &id, &self.services)),
                    Err(e @ CommandError::Removed(_)) => error(StatusCode::CONFLICT, e.to_string()),
                    Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                }
            }
            (Method::GET, ["admin", "events"], _) => {
                let only = match query.as_deref().map(|_| self.service(query.as_deref())) {
                    Some(Ok(s)) => Some(s.name.clone()),
                    Some(Err((status, msg))) => return error(status, msg),
                    None => None,
                };
                let mut list: Vec<EventJson> = self
                    .services
                    .iter()
                    .filter(|s| only.as_ref().is_none_or(|n| *n == s.name))
                    .flat_map(|s| s.monitor.events().iter().map(|e| EventJson::new(&s.name, e)).collect::<Vec<_>>())
                    .collect();
                list.sort_by(|a, b| b.at.total_cmp(&a.at));
                json(StatusCode::OK, &list)
            }
            (Method::GET, ["admin", "strategy"], Some(svc)) => {
                json(StatusCode::OK, &strategy_json(&svc.balancer.strategy()))
            }
            (Method::PUT, ["admin", "strategy"], Some(svc)) => {
                put_strategy(&svc.balancer, req, self.read_timeout).await
            }
            (Method::GET, ["admin", "state"], Some(svc)) => {
                let set = svc.monitor.snapshot();
                let counts = Counts::of(&set);
                let state = StateJson {
                    version: env!("CARGO_PKG_VERSION"),
                    uptime_seconds: (self.started.elapsed().as_secs_f64() * 1e3).round() / 1e3,
                    ready: self.ready(),
                    dataplane: &self.dataplane,
                    service: svc.name.clone(),
                    services: self.services.len(),
                    strategy: strategy_json(&svc.balancer.strategy()),
                    listen: self.listen.iter().map(ToString::to_string).collect(),
                    listen_tcp: self.listen_tcp.iter().map(ToString::to_string).collect(),
                    tls: self.tls,
                    backends: counts,
                    panic: set.panic.map(|p| p.to_string()),
                    generation: set.generation,
                    ecs: self.ecs.as_ref(),
                };
                json(StatusCode::OK, &state)
            }
            (_, ["healthz" | "readyz" | "metrics"], _)
            | (_, ["admin", "services" | "events" | "dataplane"], _)
            | (_, ["debug", "pprof", "profile"], _)
            | (_, ["admin", "backends"], _)
            | (_, ["admin", "backends", _], _)
            | (_, ["admin", "state"], _) => method_not_allowed("GET"),
            (_, ["admin", "backends", _, "drain" | "undrain"], _) => method_not_allowed("POST"),
            (_, ["admin", "strategy"], _) => method_not_allowed("GET, PUT"),
            _ => error(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint {method} {path}; see GET /admin/state, GET /admin/services and GET /admin/backends"
                ),
            ),
        }
    }
}

/// A backend id the service does not have. With several services the id may belong to another
/// one, so the message names the service it looked in.
fn not_found(svc: &ServiceHandle, id: &str, all: &[ServiceHandle]) -> String {
    if all.len() > 1 {
        let n = &svc.name;
        format!(
            "service '{n}' has no backend with id '{id}'; list its ids with GET /admin/backends?service={n}, \
             or name another service with ?service=NAME"
        )
    } else {
        CommandError::NotFound(id.to_string()).to_string()
    }
}

/// A request's body, at most `MAX_BODY` bytes, arriving within `limit`; else the answer to send.
async fn read_body(req: Request<Incoming>, limit: std::time::Duration) -> Result<Bytes, Resp> {
    match tokio::time::timeout(limit, Limited::new(req.into_body(), MAX_BODY).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(_)) => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("body too large; send at most {MAX_BODY} bytes")))
        }
        Err(_) => {
            let mut r = error(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time; send it at once");
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(r)
        }
    }
}

/// `POST /admin/monitor`: switches the kernel monitor for a lease.
async fn post_monitor(events: &KernelEvents, req: Request<Incoming>, limit: std::time::Duration) -> Resp {
    let body = match read_body(req, limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &body };
    let switch: Switch = match serde_json::from_slice(body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{e}; send {{\"drops\": true, \"flows\": false, \"rate\": 100, \"seconds\": 60}} (all optional)"
                ),
            );
        }
    };
    match events.switch(switch) {
        Ok(status) => json(StatusCode::OK, &status),
        Err(e @ MonitorError::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn put_strategy(balancer: &BalancerHandle, req: Request<Incoming>, limit: std::time::Duration) -> Resp {
    let body = match read_body(req, limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let spec = match parse_strategy_body(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match balancer.set_strategy(spec.clone()).await {
        Ok(prev) => json(
            StatusCode::OK,
            &serde_json::json!({ "previous": strategy_json(&prev), "current": strategy_json(&spec) }),
        ),
        Err(e @ SwitchError::Unsupported(_)) => {
            error(StatusCode::BAD_REQUEST, format!("the {} data plane cannot do this: {e}", balancer.plane().as_str()))
        }
        Err(e @ SwitchError::Stopped) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The strategy a `PUT /admin/strategy` body asks for, or the message for a 400.
pub(crate) fn parse_strategy_body(body: &[u8]) -> Result<StrategySpec, String> {
    let parsed: StrategyJson = serde_json::from_slice(body).map_err(|e| {
        format!(
            "invalid JSON: {e}; send {{\"strategy\": \"consistent-hash\", \"hash_key\": \"header:x-user-id\"}} (hash_key optional)"
        )
    })?;
    StrategySpec::parse(&parsed.strategy, parsed.hash_key.as_deref()).map_err(|e| e.to_string())
}

fn strategy_json(spec: &StrategySpec) -> StrategyJson {
    StrategyJson { strategy: spec.kind.to_string(), hash_key: Some(spec.hash_key.to_string()) }
}

fn service_json(s: &ServiceHandle) -> ServiceJson {
    ServiceJson {
        name: s.name.clone(),
        vip: s.vip.map(|v| v.to_string()),
        ready: s.monitor.is_ready(),
        strategy: strategy_json(&s.balancer.strategy()),
        listeners: s.listeners.iter().map(ToString::to_string).collect(),
        sources: s.monitor.sources().iter().map(|x| SourceJson::new(x)).collect(),
        backends: s.monitor.snapshot().backends.iter().map(BackendJson::from).collect(),
    }
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed; use {allow}"));
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Serves the admin API until `shutdown` turns true.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's head timer also runs while a keep-alive connection idles, so idle ones close too.
    builder.timer(TokioTimer::new()).header_read_timeout(admin.read_timeout);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, slot) = tokio::select! {
            r = async { (slots.clone().acquire_owned().await, listener.accept().await) } => match r {
                (Ok(slot), Ok((s, _))) => (s, slot),
                (_, Err(e)) => {
                    tracing::warn!(error = %e, "admin accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                (Err(_), _) => break,
            },
            _ = stopped(&mut shutdown) => break,
        };
        let admin = admin.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.route(req).await) }
            }),
        );
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(constant_time_eq(b"", b""));
    }
}
