//! The HTTP reverse proxy: a hyper 1.x server (HTTP/1.1 and h2, optional TLS) per listener and
//! worker, in front of the upstream HTTP/1.1 client in `proxy/upstream` with its per-worker pool.
//!
//! Per request: load the selector snapshot (no lock), hash the key if the strategy needs one, pick a
//! backend, rewrite headers, encode the head once, and exchange it on a pooled or new connection.
//! Retries are bounded and safe: a refused connect goes once to another backend for any request
//! without a body (nothing reached a backend); a connection that closes before answering is retried
//! once for idempotent bodyless requests; a pooled connection found closed (a stale keep-alive) is
//! replaced by a fresh one to the same backend once. Otherwise: 502, a timeout 504, no backend 503.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::body::{ActiveGuard, ProxyBody};
use super::conn_guard::{Activity, ConnGuard, GuardTimeouts, InFlight};
use super::headers::{add_forwarded, strip_hop_by_hop};
use super::io::ClientIo;
use super::upstream::body::UpstreamBody;
use super::upstream::codec::{self, BodyFraming, RequestFraming, ResponseHead};
use super::upstream::{SendError, UpstreamConn, pool};
use super::workers::Acceptor;
use super::{OpenConn, request_hash};
use crate::balance::{PickSource, Selector, Target};
use crate::config::ProxyConfig;
use crate::metrics::{ListenerLabel, Metrics, ReasonLabel, RequestLabels, class_index};

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

/// The HTTP proxy of one listener on one worker, shared by the listener's connections.
#[derive(Debug)]
pub struct HttpProxy {
    selector: Arc<ArcSwap<Selector>>,
    metrics: Arc<Metrics>,
    cfg: ProxyConfig,
    no_backend: Counter,
    fallback: Counter,
    none_5xx: Counter,
    retry_connect: Counter,
    retry_empty: Counter,
    retry_stale: Counter,
    bad_body: Counter,
}

fn local_response(status: StatusCode, text: &'static str, in_flight: Option<InFlight>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local(text, in_flight));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The request as it goes to every attempt.
struct Outgoing {
    method: Method,
    head: Bytes,
    body: Option<(Incoming, RequestFraming)>,
    /// Safe to send twice: idempotent method and no body.
    replayable: bool,
}

impl HttpProxy {
    /// Builds the proxy for one listener on one worker.
    pub fn new(selector: Arc<ArcSwap<Selector>>, metrics: Arc<Metrics>, cfg: ProxyConfig) -> Self {
        let reason = |reason| metrics.retries.get_or_create_owned(&ReasonLabel { reason });
        Self {
            no_backend: metrics.no_backend.get_or_create_owned(&ReasonLabel { reason: "rejected" }),
            fallback: metrics.no_backend.get_or_create_owned(&ReasonLabel { reason: "fallback" }),
            none_5xx: metrics.requests.get_or_create_owned(&RequestLabels { backend: "none".into(), class: "5xx" }),
            retry_connect: reason("connect"),
            retry_empty: reason("empty_response"),
            retry_stale: reason("stale_connection"),
            bad_body: metrics.client_errors.get_or_create_owned(&ReasonLabel { reason: "request_body" }),
            selector,
            metrics,
            cfg,
        }
    }

    /// One attempt on `target`: a pooled connection when there is a usable one, else a new one.
    /// Returns whether a pooled connection was used, with the outcome.
    async fn attempt(
        &self,
        target: &Target,
        out: &mut Outgoing,
        fresh: bool,
    ) -> (bool, Result<(UpstreamConn, ResponseHead), SendError>) {
        let pooled = if fresh { None } else { pool::checkout(target.addr) };
        // A request that must not be sent twice only goes on a pooled connection that is
        // verifiably open; a replayable one is retried if the connection turns out stale.
        let pooled = pooled.filter(|c| out.replayable || c.is_alive());
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => match UpstreamConn::connect(target.addr, self.cfg.connect_timeout).await {
                Ok(c) => c,
                Err(e) => return (false, Err(e)),
            },
        };
        let r = conn
            .exchange(&out.method, out.head.clone(), out.body.take(), self.cfg.upstream_timeout, self.cfg.idle_timeout)
            .await;
        (reused, r.map(|h| (conn, h)))
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
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let empty = body.is_end_stream();
        let framing = codec::request_framing(&parts.method, empty, body.size_hint().exact());
        let mut head = BytesMut::new();
        codec::encode_request_head(&mut head, &parts.method, path, &parts.headers, framing);
        let idempotent = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );
        let mut out = Outgoing {
            method: parts.method,
            head: head.freeze(),
            body: (!empty).then_some((body, framing)),
            replayable: empty && idempotent,
        };

        let mut target = target;
        let mut active = ActiveGuard::new(&target.shared.metrics.active);
        let (mut retried, mut refreshed) = (false, false);
        let result = loop {
            let (reused, r) = self.attempt(target, &mut out, refreshed).await;
            let err = match r {
                Ok(ok) => break Ok(ok),
                Err(e) => e,
            };
            let m = &target.shared.metrics;
            // A pooled keep-alive connection the backend had closed: not the backend's fault.
            if reused && matches!(err, SendError::Empty) && out.replayable && !refreshed {
                self.retry_stale.inc();
                refreshed = true;
                continue;
            }
            let retry = match &err {
                SendError::Connect(_) => {
                    m.err_connect.inc();
                    empty.then_some(&self.retry_connect)
                }
                SendError::Empty => {
                    m.err_reset.inc();
                    out.replayable.then_some(&self.retry_empty)
                }
                SendError::Timeout => {
                    m.err_timeout.inc();
                    None
                }
                SendError::ClientBody(_) => None,
                SendError::Protocol(_) | SendError::Io(_) => {
                    m.err_reset.inc();
                    None
                }
            };
            tracing::debug!(backend = %target.id, error = %err, "upstream exchange failed");
            if let (Some(counter), false) = (retry, retried) {
                // Prefer another backend; a connection that closed unanswered is worth one more
                // try on the same backend when it is the only one.
                let other = selector.pick_other(hash, &target.id).map(|(t, _)| t);
                let next = match (&err, other) {
                    (_, Some(t)) => Some(t),
                    (SendError::Empty, None) => Some(target),
                    _ => None,
                };
                if let Some(next) = next {
                    counter.inc();
                    tracing::debug!(from = %target.id, to = %next.id, "retrying the request once");
                    retried = true;
                    refreshed = true;
                    target = next;
                    active = ActiveGuard::new(&target.shared.metrics.active);
                    continue;
                }
            }
            break Err(err);
        };
        let m = &target.shared.metrics;
        match result {
            Ok((upstream, head)) => {
                let ResponseHead { status, mut headers, framing, keep_alive, .. } = head;
                strip_hop_by_hop(&mut headers);
                if !matches!(framing, BodyFraming::Length(_)) {
                    headers.remove(header::CONTENT_LENGTH);
                }
                m.requests[class_index(status.as_u16())].inc();
                m.duration.observe(started.elapsed());
                let body = UpstreamBody::new(upstream, framing, keep_alive);
                let mut resp = Response::new(ProxyBody::upstream(body, in_flight, active));
                *resp.status_mut() = status;
                *resp.headers_mut() = headers;
                resp
            }
            Err(SendError::ClientBody(e)) => {
                self.bad_body.inc();
                tracing::debug!(error = %e, "client request body failed");
                drop(active);
                local_response(StatusCode::BAD_REQUEST, "bad request body\n", Some(in_flight))
            }
            Err(e) => {
                m.requests[4].inc();
                m.duration.observe(started.elapsed());
                drop(active);
                match e {
                    SendError::Timeout => {
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

/// The authority used to reach a backend.
pub fn authority_of(addr: SocketAddr) -> Authority {
    Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("invalid"))
}

/// Serves one HTTP(S) listener until `shutdown` turns true, then lets its open connections finish
/// their current requests for up to `drain` before closing them.
pub async fn serve(
    mut listener: Acceptor,
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
        let (stream, client, load) = tokio::select! {
            r = listener.next() => match r {
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
            let (_open, _load) = (open, load);
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
