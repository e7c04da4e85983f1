//! The HTTP reverse proxy: a hyper 1.x server (HTTP/1.1 and h2, optional TLS) per listener and
//! worker, in front of the upstream HTTP/1.1 client in `upstream` with its per-worker pool.
//!
//! Per request: take a slot of the request budget (else 503 at once), settle the one `Host` (else
//! 400), load the selector snapshot (no lock), hash the key if the strategy needs one, pick a
//! backend, rewrite headers, encode the head once, and exchange it on a pooled or new connection.
//! Every outcome feeds the backend's passive counters (outlier detection). Retries are bounded and
//! safe: `--retries` per request, each to another backend when there is one, after a full-jitter
//! back-off, within one deadline for all attempts, and only while the service's retry budget has a
//! token. What is retried (`--retry-on`): a failed connect for a request whose body was kept or
//! absent (nothing reached a backend), a connection that closed before answering and a 502, 503 or
//! 504 answer for an idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or any request
//! with `Idempotency-Key`) whose body was kept or absent. A failed connect reached no backend, so
//! its retry (a requeue) spends no budget; in panic mode only requeues are made. Bodies up to `--retry-body-limit` are
//! kept; a pooled connection found closed (a stale keep-alive) is replaced by a fresh one to the
//! same backend once. Otherwise: 502, a timeout 504, no backend 503.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use edge_core::backend::{Failure, GatewayFailure, StatusClass};
use edge_core::balance::{PickSource, Target, request_hash};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::accept::{Acceptor, accept_until_shutdown, drain};
use crate::attempt::{RetryPlan, Where, local};
use crate::authority::settle_host;
use crate::body::{Active, ProxyBody};
use crate::conn_guard::{Activity, ConnGuard, GuardTimeouts};
use crate::headers::{accepts_trailers, add_forwarded, declared_trailers, strip_hop_by_hop};
use crate::io::ClientIo;
use crate::served::{ConnInfo, Served};
use crate::stats::{ClientError, ListenerKind, NoBackend, ProxyStats, RetryOutcome, RetryReason};
use crate::tunnel::Tunnels;
use crate::upstream::body::UpstreamBody;
use crate::upstream::codec::{self, BodyFraming, RequestFraming, ResponseHead};
use crate::upstream::pool::PoolKey;
use crate::upstream::{SendError, UpstreamConn, pool};

/// The HTTP proxy of one listener on one worker, shared by the listener's connections.
#[derive(Debug)]
pub struct HttpProxy(Served, Arc<Tunnels>);

/// The request as it goes to every attempt.
struct Outgoing {
    method: Method,
    /// The head, encoded once for every attempt (never frozen or cloned: each attempt writes it
    /// from here).
    head: BytesMut,
    body: Option<(Incoming, RequestFraming)>,
    /// Safe to send twice: idempotent method and no body.
    replayable: bool,
    /// When the request was taken.
    started: Instant,
}

impl HttpProxy {
    /// Builds the proxy for one listener on one worker.
    pub(crate) fn new(served: Served, tunnels: Tunnels) -> Self {
        Self(served, Arc::new(tunnels))
    }

    /// One attempt on `target`: a pooled connection when there is a usable one, else a new one.
    /// Returns whether a pooled connection was used, with the outcome.
    async fn attempt(
        &self,
        target: &Target,
        conn: &ConnInfo,
        out: &mut Outgoing,
        fresh: bool,
        deadline: tokio::time::Instant,
    ) -> (bool, Result<(Box<UpstreamConn>, ResponseHead), SendError>) {
        let key = PoolKey::for_target(target, conn.client);
        let pooled = if fresh { None } else { pool::checkout(key, tokio::time::Instant::from_std(out.started)) };
        // A request that must not be sent twice only goes on a pooled connection that is
        // verifiably open; a replayable one is retried if the connection turns out stale.
        let pooled = pooled.and_then(|mut c| (out.replayable || c.is_alive()).then_some(c));
        let reused = pooled.is_some();
        let mut upstream = match pooled {
            Some(c) => c,
            // Boxed: a connect (with its TLS handshake) is a kilobyte and a half of state that a
            // request on a pooled connection never needs, and every request's future would
            // otherwise be allocated, copied and moved at that size (see `handle`).
            None => {
                let mut reach = self.0.reach(target, conn.local);
                // The connect too must end by the request's deadline; cut short by it, the
                // request timed out rather than the backend failing to accept.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let cut = left < reach.timeout;
                reach.timeout = reach.timeout.min(left);
                match Box::pin(UpstreamConn::connect_to(key, &reach)).await {
                    Ok(c) => c,
                    Err(SendError::Connect(e)) if cut && e.kind() == std::io::ErrorKind::TimedOut => {
                        return (false, Err(SendError::Timeout));
                    }
                    Err(e) => return (false, Err(e)),
                }
            }
        };
        let r = upstream.exchange(&out.method, &out.head, out.body.take(), &self.0.cfg, deadline).await;
        (reused, r.map(|h| (upstream, h)))
    }

    /// Serves one request.
    ///
    /// The future is copied once per request into the place hyper keeps for it, so its size is a
    /// cost on every request: paths that most requests do not take (upgrades, HTTP/2 backends,
    /// new connections, request bodies) are boxed where they are awaited. That took it from
    /// 4.2 KiB to 2.2 KiB; running each attempt under its connection's head timer, not a timer of its
    /// own, took it to 1.8 KiB.
    ///
    /// It owns what it needs (the proxy, the connection's activity) and answers with the `Result`
    /// hyper's service wants, so that it is the service's future itself, neither wrapped nor
    /// boxed: hyper's HTTP/1.1 connection keeps one allocation for its request futures and reuses
    /// it, where a boxed future cost an allocation of this size (beyond the allocator's
    /// per-thread cache) on every request, and a wrapper copied its state again.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
        activity: Arc<Activity>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let in_flight = activity.begin();
        let started = Instant::now();
        let Some(permit) = self.0.admission.try_admit() else {
            let mut r = local(StatusCode::SERVICE_UNAVAILABLE, "overloaded; retry later\n", Some(in_flight));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(r);
        };
        let (mut parts, body) = req.into_parts();
        // Asked once: on HTTP/2 each asking locks the connection's stream store.
        let empty = body.is_end_stream();
        let mut upgrade = if empty { crate::tunnel::wanted(parts.version, &parts.headers) } else { None };
        let extended = crate::extended_connect::wanted(&parts);
        if let Err(e) = settle_host(&mut parts.headers, &parts.uri, parts.version) {
            self.0.stats.client_error(ClientError::BadRequest);
            tracing::debug!(client = %conn.client, error = %e, "refused a request");
            let mut r =
                local(StatusCode::BAD_REQUEST, "bad request: missing, repeated or invalid host\n", Some(in_flight));
            // The request may have a body we will not read: end the connection after answering.
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(r);
        }
        let trailers_ok = accepts_trailers(&parts.headers, parts.version);
        strip_hop_by_hop(&mut parts.headers);
        if trailers_ok {
            // This hop takes trailers too (the upstream codec reads them), so say so: some
            // backends send trailers only to a request that asks for them.
            parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let traffic = &self.0.traffic;
        traffic.budget.request();
        let selector = self.0.selector.load();
        let hash = if selector.needs_hash() {
            request_hash(selector.hash_key(), conn.client, conn.local, Some(&parts.headers))
        } else {
            0
        };
        let Some((target, source)) = selector.pick_admitted(hash) else {
            traffic.no_backend(NoBackend::Rejected);
            traffic.unrouted();
            return Ok(local(StatusCode::SERVICE_UNAVAILABLE, "no healthy backend\n", Some(in_flight)));
        };
        if source == PickSource::Panic {
            traffic.no_backend(NoBackend::Panic);
        }
        add_forwarded(&mut parts.headers, conn.client.ip(), conn.tls);
        if let Some(protocol) = &extended {
            if target.backend.is_h2() {
                return Ok(local(
                    StatusCode::NOT_IMPLEMENTED,
                    "websocket over http/2 reaches http/1.1 backends only\n",
                    Some(in_flight),
                ));
            }
            crate::extended_connect::as_upgrade(&mut parts, protocol);
            upgrade = Some(protocol.clone());
        }
        // An HTTP/2 backend cannot take an HTTP/1.1 upgrade: it gets the request without one.
        if let Some(protocol) = upgrade.filter(|_| !target.backend.is_h2()) {
            crate::tunnel::keep_upgrade(&mut parts.headers, protocol);
            let key = PoolKey::for_target(target, conn.client);
            let extended = extended.is_some();
            let req =
                crate::tunnel::Request { parts, target: target.clone(), key, conn, hash, in_flight, permit, extended };
            return Ok(Box::pin(crate::tunnel::open(&self.0, &self.1, req)).await);
        }
        if target.backend.is_h2() {
            let req =
                crate::forward_h2::H2Request { parts, body, target: target.clone(), hash, conn, in_flight, permit };
            return Ok(Box::pin(crate::forward_h2::forward(&self.0, req)).await);
        }
        let policy = &self.0.cfg.retry;
        let idempotent = crate::headers::idempotent(&parts.method, &parts.headers);
        let exact = body.size_hint().exact();
        // A small body is read whole first, so that the request can be sent again; a larger one
        // streams and is never sent twice.
        let keep = matches!(exact, Some(n) if !empty && policy.retries > 0 && n <= policy.body_limit as u64);
        let (kept, body) = match (keep, body) {
            (true, body) => {
                let kept = match tokio::time::timeout(self.0.cfg.body_timeout, body.collect()).await {
                    Ok(Ok(b)) => Some(b.to_bytes()),
                    Ok(Err(e)) => {
                        self.0.stats.client_error(ClientError::RequestBody);
                        tracing::debug!(error = %e, "client request body failed");
                        return Ok(local(StatusCode::BAD_REQUEST, "bad request body\n", Some(in_flight)));
                    }
                    Err(_) => {
                        self.0.stats.client_error(ClientError::BodyTimeout);
                        let mut r = local(StatusCode::REQUEST_TIMEOUT, "request body too slow\n", Some(in_flight));
                        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                        return Ok(r);
                    }
                };
                (kept, None)
            }
            (false, body) => (None, (!empty).then_some(body)),
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let framing = codec::request_framing(&parts.method, empty, exact);
        let mut head = BytesMut::new();
        codec::encode_request_head(&mut head, &parts.method, path, &parts.headers, framing);
        if let Some(bytes) = &kept {
            head.extend_from_slice(bytes);
        }
        let streamed = body.map(|b| (b, framing));
        // Nothing of the request is lost by sending it again: no body, or a body kept whole.
        let resendable = streamed.is_none();
        let mut out =
            Outgoing { method: parts.method, head, body: streamed, replayable: resendable && idempotent, started };

        // One deadline covers every attempt and the waits between them. It counts from when the
        // request was taken (a clock read less than asking again).
        let deadline =
            tokio::time::Instant::from_std(started) + self.0.cfg.connect_timeout + self.0.cfg.upstream_timeout;
        let mut target = target;
        let mut active = Active::new(&target.backend);
        let (mut retries, mut refreshed) = (0u32, false);
        let result = loop {
            // No timer of its own: the attempt keeps to `deadline` with its connection's timers.
            let (reused, r) = self.attempt(target, &conn, &mut out, refreshed, deadline).await;
            let m = &target.backend.stats;
            let (err, reason) = match r {
                Ok((upstream, head)) => {
                    let status = head.status.as_u16();
                    let failure = GatewayFailure::of_status(status, policy.outlier_5xx);
                    match failure {
                        Some(g) => m.gateway_failure(g, 1),
                        None => m.passive_ok(),
                    }
                    let gateway = matches!(status, 502..=504);
                    if retries > 0 {
                        traffic.retry_outcome(if gateway { RetryOutcome::Failed } else { RetryOutcome::Succeeded });
                    }
                    if !(gateway && policy.gateway_error && out.replayable && retries < policy.retries) {
                        break Ok((upstream, head));
                    }
                    // The answer is dropped unread with its connection; the retry decides.
                    m.request(StatusClass::of(status));
                    (SendError::Status(status), RetryReason::GatewayError)
                }
                Err(e) => {
                    // A pooled keep-alive connection the backend had closed: not its fault.
                    if reused && matches!(e, SendError::Empty) && out.replayable && !refreshed {
                        traffic.retry(RetryReason::StaleConnection);
                        refreshed = true;
                        continue;
                    }
                    let (failure, reason) = match &e {
                        SendError::Connect(_) => {
                            m.failure(Failure::Connect);
                            let ok = policy.connect_failure && resendable;
                            (Some(GatewayFailure::Connect), ok.then_some(RetryReason::Connect))
                        }
                        SendError::Empty => {
                            m.failure(Failure::Reset);
                            let ok = policy.reset && out.replayable;
                            (Some(GatewayFailure::Reset), ok.then_some(RetryReason::EmptyResponse))
                        }
                        SendError::Timeout => {
                            m.failure(Failure::Timeout);
                            (Some(GatewayFailure::Timeout), None)
                        }
                        SendError::ClientBody(_) | SendError::ClientBodyTimeout | SendError::Status(_) => (None, None),
                        SendError::Protocol(_) | SendError::Io(_) | SendError::Refused(_) => {
                            m.failure(Failure::Reset);
                            (Some(GatewayFailure::Reset), None)
                        }
                    };
                    if let Some(g) = failure {
                        m.gateway_failure(g, 1);
                    }
                    tracing::debug!(backend = %target.id(), error = %e, "upstream exchange failed");
                    if retries > 0 {
                        traffic.retry_outcome(RetryOutcome::Failed);
                    }
                    match reason {
                        Some(r) if retries < policy.retries => (e, r),
                        _ => break Err(e),
                    }
                }
            };
            // Another backend when there is one; a connection that closed unanswered is worth
            // one more try on the same backend when it is the only one. A failed connect reached
            // no backend: sending it elsewhere (a requeue, as Linkerd calls it) is free.
            let plan = RetryPlan {
                reason,
                free: matches!(err, SendError::Connect(_)),
                same_ok: matches!(err, SendError::Empty),
            };
            // Boxed: a rare path, kept out of every request's future (see `handle`).
            match Box::pin(crate::attempt::prepare_retry(&self.0, &selector, target, hash, plan, retries, deadline))
                .await
            {
                None => break Err(err),
                Some(Where::Other(t)) => target = t,
                Some(Where::Same) => {}
            }
            retries += 1;
            refreshed = true;
            active = Active::new(&target.backend);
        };
        let m = &target.backend.stats;
        Ok(match result {
            Ok((upstream, head)) => {
                let ResponseHead { status, mut headers, framing, keep_alive, .. } = head;
                let declared = if trailers_ok { declared_trailers(&headers) } else { None };
                strip_hop_by_hop(&mut headers);
                if let Some(names) = declared
                    && matches!(framing, BodyFraming::Chunked)
                {
                    headers.insert(header::TRAILER, names);
                }
                if !matches!(framing, BodyFraming::Length(_)) {
                    headers.remove(header::CONTENT_LENGTH);
                }
                m.request(StatusClass::of(status.as_u16()));
                m.duration.observe(started.elapsed());
                let body = UpstreamBody::new(upstream, framing, keep_alive, self.0.cfg.body_timeout);
                let mut resp = Response::new(ProxyBody::upstream(body, in_flight, permit, active));
                *resp.status_mut() = status;
                *resp.headers_mut() = headers;
                resp
            }
            Err(SendError::ClientBodyTimeout) => {
                self.0.stats.client_error(ClientError::BodyTimeout);
                drop(active);
                let mut r = local(StatusCode::REQUEST_TIMEOUT, "request body too slow\n", Some(in_flight));
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            Err(SendError::ClientBody(e)) => {
                self.0.stats.client_error(ClientError::RequestBody);
                tracing::debug!(error = %e, "client request body failed");
                drop(active);
                local(StatusCode::BAD_REQUEST, "bad request body\n", Some(in_flight))
            }
            Err(SendError::Status(status)) => {
                // The last attempt was answered with a gateway error that a retry could not fix.
                m.duration.observe(started.elapsed());
                drop(active);
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                local(code, "backend failed; retried without success\n", Some(in_flight))
            }
            Err(e) => {
                m.request(StatusClass::ServerError);
                m.duration.observe(started.elapsed());
                drop(active);
                match e {
                    SendError::Timeout => local(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n", Some(in_flight)),
                    _ => local(StatusCode::BAD_GATEWAY, "bad gateway\n", Some(in_flight)),
                }
            }
        })
    }
}

/// Serves one HTTP(S) listener until `shutdown` turns true, then lets its open connections finish
/// their current requests for up to `limit` before closing them.
pub async fn serve(
    mut listener: Acceptor,
    proxy: Arc<HttpProxy>,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    limit: std::time::Duration,
) {
    let kind = if tls.is_some() { ListenerKind::Https } else { ListenerKind::Http };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(proxy.0.cfg.max_header_bytes)
        .max_headers(proxy.0.cfg.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(proxy.0.cfg.max_header_bytes).unwrap_or(u32::MAX))
        // WebSocket over HTTP/2 (RFC 8441): clients may open tunnels with an extended CONNECT.
        .enable_connect_protocol()
        .keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10));
    // Shared, not cloned per connection: a connection borrows it for its whole life.
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut conns = tokio::task::JoinSet::new();
    let listen_addr = listener.local_addr().ok();
    let stats = proxy.0.stats.clone();
    accept_until_shutdown(&mut listener, &mut shutdown, &stats, kind, &mut conns, |stream, client| {
        let local = stream.local_addr().ok().or(listen_addr).unwrap_or(client);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        async move {
            let (mut stream, mut client) = (stream, client);
            if proxy.0.cfg.accept_proxy_protocol {
                let Some(from) = proxy.0.accept_proxy_header(&mut stream, client).await else { return };
                client = from;
            }
            // Boxed: a TLS handshake's state is kilobytes, and an unboxed await would size every
            // connection's task for it for as long as the connection lives.
            let shake = Box::pin(handshake(stream, tls.as_ref(), proxy.0.cfg.header_read_timeout, &proxy.0.stats));
            let Some((io, h2)) = shake.await else {
                return;
            };
            let info = ConnInfo { client, local, tls: tls.is_some() };
            let activity = Arc::new(Activity::default());
            let timeouts =
                GuardTimeouts { header_read: proxy.0.cfg.header_read_timeout, idle: proxy.0.cfg.idle_timeout };
            let io = ConnGuard::new(io, activity.clone(), timeouts, h2, proxy.0.stats.clone());
            let stats = proxy.0.stats.clone();
            // Not boxed per request: hyper keeps one slot the size of this future (1.8 KiB) for the
            // connection's whole life, idle or not, and reuses it; a box per request cost more
            // CPU than that memory (ARCHITECTURE.md, "Per-request cost").
            let svc = service_fn(move |req| proxy.clone().handle(req, info, activity.clone()));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            if let Err(e) = watcher.watch(conn).await {
                // hyper answered 400 or 431 itself before closing; count it.
                if let Some(h) = e.downcast_ref::<hyper::Error>() {
                    if h.is_parse_too_large() {
                        stats.client_error(ClientError::HeaderTooLarge);
                    } else if h.is_parse() {
                        stats.client_error(ClientError::BadRequest);
                    }
                }
                tracing::debug!(client = %client, error = %e, "client connection ended with an error");
            }
        }
    })
    .await;
    drop(listener);
    // Keep-alive connections close after their current request; give them `limit` to do so.
    drain(&mut conns, limit, kind, graceful.shutdown()).await;
    // Tunnels close by themselves `limit` after shutdown began; this only waits for them.
    if tokio::time::timeout(limit + std::time::Duration::from_secs(1), proxy.1.drained()).await.is_err() {
        tracing::warn!("tunnels still open after the drain timeout");
    }
}

async fn handshake(
    stream: TcpStream,
    tls: Option<&TlsAcceptor>,
    limit: std::time::Duration,
    stats: &ProxyStats,
) -> Option<(ClientIo, bool)> {
    let Some(acceptor) = tls else { return Some((ClientIo::Plain(stream), false)) };
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
            Some((ClientIo::Tls(Box::new(s)), h2))
        }
        Ok(Err(e)) => {
            stats.client_error(ClientError::TlsHandshake);
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            stats.client_error(ClientError::TlsHandshake);
            None
        }
    }
}
