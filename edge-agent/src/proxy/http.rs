//! The HTTP reverse proxy: hyper 1.x server (HTTP/1.1 and h2, optional TLS) in front of a pooled
//! HTTP/1.1 client to the backends.
//!
//! Per request: load the selector snapshot (no lock), hash the key if the strategy needs one, pick a
//! backend, rewrite headers, forward with the upstream timeout. A failed *connect* is retried once on
//! another backend when the request has no body (nothing reached any backend, so this is safe even
//! for POST); any other failure answers 502, a timeout 504, and no backend 503.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::body::{ActiveGuard, ProxyBody};
use super::conn_guard::{Activity, ConnGuard, GuardTimeouts, InFlight};
use super::headers::{add_forwarded, strip_hop_by_hop};
use super::io::ClientIo;
use super::{OpenConn, request_hash};
use crate::balance::{PickSource, Selector, Target};
use crate::config::ProxyConfig;
use crate::metrics::{ListenerLabel, Metrics, ReasonLabel, RequestLabels, class_index};

type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// What a request handler knows about its client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// The listener address the client reached.
    pub local: SocketAddr,
    /// Whether TLS was terminated.
    pub tls: bool,
}

/// The HTTP proxy shared by all connections of all HTTP listeners.
#[derive(Debug)]
pub struct HttpProxy {
    selector: Arc<ArcSwap<Selector>>,
    client: Client<HttpConnector, UpstreamBody>,
    metrics: Arc<Metrics>,
    cfg: ProxyConfig,
    no_backend: Counter,
    fallback: Counter,
    none_5xx: Counter,
    retry_connect: Counter,
    retry_empty: Counter,
}

fn local_response(status: StatusCode, text: &'static str, in_flight: Option<InFlight>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local(text, in_flight));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

enum Failure {
    Connect,
    /// The connection closed before any response byte: a backend that died, or a pooled
    /// keep-alive connection the backend closed just as it was reused.
    Empty,
    Timeout,
    Other,
}

fn closed_before_response(e: &hyper_util::client::legacy::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message() || h.is_canceled();
        }
        cur = err.source();
    }
    false
}

impl HttpProxy {
    /// Builds the proxy and its upstream connection pool.
    pub fn new(selector: Arc<ArcSwap<Selector>>, metrics: Arc<Metrics>, cfg: ProxyConfig) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(http);
        let no_backend = metrics.no_backend.get_or_create_owned(&ReasonLabel { reason: "rejected" });
        let fallback = metrics.no_backend.get_or_create_owned(&ReasonLabel { reason: "fallback" });
        let none_5xx = metrics.requests.get_or_create_owned(&RequestLabels { backend: "none".into(), class: "5xx" });
        let retry_connect = metrics.retries.get_or_create_owned(&ReasonLabel { reason: "connect" });
        let retry_empty = metrics.retries.get_or_create_owned(&ReasonLabel { reason: "empty_response" });
        Self { selector, client, metrics, cfg, no_backend, fallback, none_5xx, retry_connect, retry_empty }
    }

    /// Serves one request.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        activity: &Arc<Activity>,
    ) -> Response<ProxyBody> {
        let in_flight = activity.begin();
        let started = Instant::now();
        let selector = self.selector.load();
        let hash = if selector.needs_hash() {
            request_hash(selector.hash_key(), conn.client, conn.local, Some(req.headers()))
        } else {
            0
        };
        let Some((target, source)) = selector.pick(hash) else {
            self.no_backend.inc();
            self.none_5xx.inc();
            return local_response(StatusCode::SERVICE_UNAVAILABLE, "no healthy backend\n", Some(in_flight));
        };
        if source == PickSource::Fallback {
            self.fallback.inc();
        }
        let (mut parts, body) = req.into_parts();
        prepare_request_head(&mut parts.headers, &parts.uri, parts.version, conn);
        let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        // Only a request without a body can be sent twice; keep its head for one retry. A refused
        // connect is retried for any method (nothing reached a backend); a connection that closed
        // before answering only for idempotent methods (the backend may have acted on it).
        let retry_head = body.is_end_stream().then(|| (parts.method.clone(), parts.headers.clone()));
        let idempotent = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );

        let mut target = target;
        let mut active = ActiveGuard::new(&target.shared.metrics.active);
        let mut up = build_upstream(parts.method, parts.headers, &path, target, Either::Left(body));
        let mut retried = false;
        let result = loop {
            let attempt = tokio::time::timeout(self.cfg.upstream_timeout, self.client.request(up)).await;
            let failure = match attempt {
                Ok(Ok(resp)) => break Ok(resp),
                Ok(Err(e)) if e.is_connect() => Failure::Connect,
                Ok(Err(e)) => {
                    tracing::debug!(backend = %target.id, error = %super::error_chain(&e), "upstream request failed");
                    if closed_before_response(&e) { Failure::Empty } else { Failure::Other }
                }
                Err(_) => Failure::Timeout,
            };
            let m = &target.shared.metrics;
            match failure {
                Failure::Connect => m.err_connect.inc(),
                Failure::Timeout => m.err_timeout.inc(),
                Failure::Empty | Failure::Other => m.err_reset.inc(),
            };
            let retry = match failure {
                Failure::Connect => Some(&self.retry_connect),
                Failure::Empty if idempotent => Some(&self.retry_empty),
                _ => None,
            };
            if let (Some(counter), false, Some((method, headers))) = (retry, retried, &retry_head) {
                // Prefer another backend; a stale pooled connection is worth one more try on
                // the same backend when it is the only one.
                let other = selector.pick_other(hash, &target.id).map(|(t, _)| t);
                let next = match (&failure, other) {
                    (_, Some(t)) => Some(t),
                    (Failure::Empty, None) => Some(target),
                    _ => None,
                };
                if let Some(next) = next {
                    counter.inc();
                    tracing::debug!(from = %target.id, to = %next.id, "retrying the request once");
                    retried = true;
                    target = next;
                    active = ActiveGuard::new(&target.shared.metrics.active);
                    up = build_upstream(method.clone(), headers.clone(), &path, target, Either::Right(Empty::new()));
                    continue;
                }
            }
            break Err(failure);
        };
        let m = &target.shared.metrics;
        match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                m.requests[class_index(parts.status.as_u16())].inc();
                m.duration.observe(started.elapsed());
                Response::from_parts(parts, ProxyBody::upstream(body, in_flight, active))
            }
            Err(f) => {
                m.requests[4].inc();
                m.duration.observe(started.elapsed());
                drop(active);
                match f {
                    Failure::Timeout => {
                        local_response(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n", Some(in_flight))
                    }
                    _ => local_response(StatusCode::BAD_GATEWAY, "bad gateway\n", Some(in_flight)),
                }
            }
        }
    }
}

/// Rewrites the client's head for the backend: hop-by-hop headers out, Host kept (or taken from an
/// HTTP/2 `:authority`), X-Forwarded-* added.
fn prepare_request_head(h: &mut HeaderMap, uri: &Uri, version: Version, conn: ConnInfo) {
    strip_hop_by_hop(h);
    if (!h.contains_key(header::HOST) || version == Version::HTTP_2)
        && let Some(a) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        h.insert(header::HOST, v);
    }
    add_forwarded(h, conn.client.ip(), conn.tls);
}

fn build_upstream(
    method: Method,
    headers: HeaderMap,
    path: &PathAndQuery,
    target: &Target,
    body: UpstreamBody,
) -> Request<UpstreamBody> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(target.shared.authority.clone());
    parts.path_and_query = Some(path.clone());
    let uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("http://invalid/"));
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    req
}

/// The authority used to reach a backend.
pub fn authority_of(addr: SocketAddr) -> Authority {
    Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("invalid"))
}

/// Serves one HTTP(S) listener until `shutdown` turns true, then lets its open connections finish
/// their current requests for up to `drain` before closing them.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<HttpProxy>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    drain: std::time::Duration,
) {
    let kind = if tls.is_some() { "https" } else { "http" };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(proxy.cfg.max_header_bytes)
        .max_headers(proxy.cfg.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(proxy.cfg.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10));
    let accepted = proxy.metrics.connections.get_or_create_owned(&ListenerLabel { listener: kind });
    let open = proxy.metrics.open_connections.get_or_create_owned(&ListenerLabel { listener: kind });
    let head_timeouts = proxy.metrics.client_errors.get_or_create_owned(&ReasonLabel { reason: "header_timeout" });
    let tls_failures = proxy.metrics.client_errors.get_or_create_owned(&ReasonLabel { reason: "tls_handshake" });
    let graceful = GracefulShutdown::new();
    let mut conns = tokio::task::JoinSet::new();
    let local = listener.local_addr().ok();
    loop {
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            _ = crate::proxy::stopped(&mut shutdown) => break,
        };
        accepted.inc();
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok().or(local).unwrap_or(client);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let open = OpenConn::new(&open);
        let head_timeouts = head_timeouts.clone();
        let tls_failures = tls_failures.clone();
        let watcher = graceful.watcher();
        let metrics = proxy.metrics.clone();
        conns.spawn(async move {
            let _open = open;
            let Some((io, h2)) = handshake(stream, tls.as_ref(), proxy.cfg.header_read_timeout, &tls_failures).await
            else {
                return;
            };
            let info = ConnInfo { client, local, tls: tls.is_some() };
            let activity = Arc::new(Activity::default());
            let timeouts = GuardTimeouts { header_read: proxy.cfg.header_read_timeout, idle: proxy.cfg.idle_timeout };
            let io = ConnGuard::new(io, activity.clone(), timeouts, h2, head_timeouts);
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                let activity = activity.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, info, &activity).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                // hyper answered 400 or 431 itself before closing; count it.
                if let Some(h) = e.downcast_ref::<hyper::Error>() {
                    let reason = if h.is_parse_too_large() {
                        Some("header_too_large")
                    } else if h.is_parse() {
                        Some("bad_request")
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        metrics.client_errors.get_or_create(&ReasonLabel { reason }).inc();
                    }
                }
                tracing::debug!(client = %client, error = %e, "client connection ended with an error");
            }
        });
    }
    drop(listener);
    // Keep-alive connections close after their current request; give them `drain` to do so.
    let left = tokio::time::timeout(drain, async {
        graceful.shutdown().await;
        while conns.join_next().await.is_some() {}
    })
    .await;
    if left.is_err() {
        tracing::warn!(open = conns.len(), "drain timeout at shutdown; closing remaining {kind} connections");
    }
}

async fn handshake(
    stream: TcpStream,
    tls: Option<&TlsAcceptor>,
    limit: std::time::Duration,
    failures: &Counter,
) -> Option<(ClientIo, bool)> {
    let Some(acceptor) = tls else { return Some((ClientIo::Plain(stream), false)) };
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
            Some((ClientIo::Tls(Box::new(s)), h2))
        }
        Ok(Err(e)) => {
            failures.inc();
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            failures.inc();
            None
        }
    }
}
