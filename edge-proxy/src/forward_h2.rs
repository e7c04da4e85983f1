//! A request to an HTTP/2 backend (`proto=h2`, for gRPC): sent on the worker's multiplexed
//! connection to it, the client's body streamed (and kept up to `--retry-body-limit`, so that it
//! can be sent again), the response (trailers and `grpc-status` included) streamed back.
//!
//! The retry rules are those of HTTP/1.1 requests, with HTTP/2's own case added: a failed connect
//! is requeued, free; a stream the backend refused unprocessed (`REFUSED_STREAM`, or left out by
//! its `GOAWAY`, as a backend that shuts down gracefully does) is sent again whatever its method,
//! free (`refused-stream`); an idempotent request reset before its head (`reset`) or answered 502,
//! 503, 504 or with a trailers-only gRPC `UNAVAILABLE` (`gateway-error`) is retried within the
//! budget. A gRPC `UNAVAILABLE` counts against the backend as a gateway failure for outlier
//! detection, as a 503 does.

use std::time::Instant;

use edge_core::backend::{Failure, GatewayFailure, StatusClass};
use edge_core::balance::Target;
use http::header;
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::admission::Permit;
use crate::attempt::{self, Next, RetryPlan, Where};
use crate::body::{Active, ProxyBody, count_grpc_status};
use crate::conn_guard::InFlight;
use crate::served::{ConnInfo, Served};
use crate::stats::{RetryOutcome, RetryReason};
use crate::upstream::SendError;
use crate::upstream::h2::{self, H2Body};
use crate::upstream::pool::PoolKey;
use crate::upstream::replay::ReplayBody;

/// A request for an HTTP/2 backend, its headers already rewritten for the backend.
pub(crate) struct H2Request {
    /// The request head.
    pub parts: http::request::Parts,
    /// The client's body.
    pub body: Incoming,
    /// The picked backend.
    pub target: Target,
    /// The request's hash (for another backend when the connect fails).
    pub hash: u64,
    /// The client connection.
    pub conn: ConnInfo,
    /// The request in flight on the client connection.
    pub in_flight: InFlight,
    /// The request's slot of the process budget.
    pub permit: Permit,
}

/// Whether a response head is a trailers-only gRPC `UNAVAILABLE`.
fn grpc_unavailable(headers: &http::HeaderMap) -> bool {
    headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"14")
}

/// Forwards `req` and answers the client.
pub(crate) async fn forward(served: &Served, req: H2Request) -> Response<ProxyBody> {
    let H2Request { parts, body, target, hash, conn, in_flight, permit } = req;
    let (mut parts, mut target) = (parts, target);
    // HTTP/2 names the authority in the request line (`:authority`), not in `Host`.
    let host = parts.headers.remove(header::HOST);
    let authority = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<Authority>().ok())
        .or_else(|| parts.uri.authority().cloned());
    let cfg = &served.cfg;
    let policy = &cfg.retry;
    let idempotent = crate::headers::idempotent(&parts.method, &parts.headers);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout + cfg.upstream_timeout;
    let limit = if policy.retries > 0 { policy.body_limit } else { 0 };
    let (first, replayer) = ReplayBody::new(body.map_err(|e| Box::new(e) as _).boxed_unsync(), limit);
    let mut body: Option<H2Body> = Some(first.boxed_unsync());
    let (mut requeued, mut retries) = (false, 0u32);
    let (resp, active) = loop {
        let active = Active::new(&target.backend);
        let key = PoolKey::for_target(&target, conn.client);
        let scheme = if key.tls { Scheme::HTTPS } else { Scheme::HTTP };
        let authority = authority
            .clone()
            .unwrap_or_else(|| target.addr().to_string().parse().unwrap_or_else(|_| Authority::from_static("backend")));
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
            .build();
        let Ok(uri) = uri else {
            return attempt::local(StatusCode::BAD_REQUEST, "bad request target\n", Some(in_flight));
        };
        // Connect first: a refused connect leaves the body unread, for another backend.
        let sender = match h2::sender(key, &served.reach(&target, conn.local)).await {
            Ok(sender) => sender,
            Err(e) => match attempt::failed(served, &target, hash, &e, true, requeued, "http/2 request") {
                Next::Requeue(t) => {
                    requeued = true;
                    target = t;
                    continue;
                }
                Next::Answer(status, text) => return attempt::local(status, text, Some(in_flight)),
            },
        };
        let Some(this_body) = body.take().or_else(|| replayer.replay().map(|b| b.boxed_unsync())) else {
            return attempt::local(StatusCode::BAD_GATEWAY, "bad gateway\n", Some(in_flight));
        };
        let mut out = Request::new(this_body);
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.headers_mut() = parts.headers.clone();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = &target.backend.stats;
        let (err, plan, held) = match h2::send(key, sender, out, left).await {
            Ok(resp) => {
                let status = resp.status();
                let unavailable = grpc_unavailable(resp.headers());
                let gateway = matches!(status.as_u16(), 502..=504) || unavailable;
                if retries > 0 {
                    served.traffic.retry_outcome(if gateway { RetryOutcome::Failed } else { RetryOutcome::Succeeded });
                }
                let again = gateway && policy.gateway_error && idempotent && replayer.can_replay();
                if !(again && retries < policy.retries) {
                    break (resp, active);
                }
                // Held while the retry is decided: without one, it is the answer.
                let plan = RetryPlan { reason: RetryReason::GatewayError, free: false, same_ok: false };
                (SendError::Status(status.as_u16()), Some(plan), Some(resp))
            }
            Err((e, unsent)) => {
                if let Some(req) = unsent {
                    // It never left: the same request (its body unread) goes on a new connection.
                    body = Some(req.into_body());
                }
                let plan = match &e {
                    SendError::Refused(_) => {
                        let can = body.is_some() || replayer.can_replay();
                        (policy.refused_stream && can).then_some(RetryPlan {
                            reason: RetryReason::RefusedStream,
                            free: true,
                            same_ok: true,
                        })
                    }
                    SendError::Timeout => {
                        m.failure(Failure::Timeout);
                        m.gateway_failure(GatewayFailure::Timeout, 1);
                        None
                    }
                    _ => {
                        m.failure(Failure::Reset);
                        m.gateway_failure(GatewayFailure::Reset, 1);
                        (policy.reset && idempotent && replayer.can_replay()).then_some(RetryPlan {
                            reason: RetryReason::EmptyResponse,
                            free: false,
                            same_ok: true,
                        })
                    }
                };
                tracing::debug!(backend = %target.id(), error = %e, "http/2 request failed");
                if retries > 0 {
                    served.traffic.retry_outcome(RetryOutcome::Failed);
                }
                (e, plan, None)
            }
        };
        let selector = served.selector.load();
        let next = match plan.filter(|_| retries < policy.retries) {
            Some(plan) => attempt::prepare_retry(served, &selector, &target, hash, plan, retries, deadline).await,
            None => None,
        };
        let Some(next) = next else {
            // No retry: the backend's own answer when there is one (a 503, or a gRPC UNAVAILABLE
            // the client must see as such), else an answer of the proxy's.
            if let Some(resp) = held {
                break (resp, active);
            }
            m.request(StatusClass::ServerError);
            return match err {
                SendError::Timeout => {
                    attempt::local(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n", Some(in_flight))
                }
                _ => attempt::local(StatusCode::BAD_GATEWAY, "bad gateway\n", Some(in_flight)),
            };
        };
        if let Some(resp) = held {
            // Dropped unread for the retry; it counts as the answer it was.
            attempt::answered(served, &target, resp.status(), started, false);
            count_grpc_status(&target.backend, resp.headers());
        }
        if let Where::Other(t) = next {
            target = t.clone();
        }
        retries += 1;
    };
    let (mut head, body) = resp.into_parts();
    // A requeue's success is counted here; a retry's was counted when its answer came.
    attempt::answered(served, &target, head.status, started, requeued && retries == 0);
    // A trailers-only gRPC answer carries its status in the head.
    count_grpc_status(&target.backend, &head.headers);
    crate::headers::strip_hop_by_hop(&mut head.headers);
    let mut r = Response::new(ProxyBody::h2(body, in_flight, permit, active));
    *r.status_mut() = head.status;
    *r.headers_mut() = head.headers;
    r
}
