//! A request to an HTTP/2 backend (`proto=h2`, for gRPC): sent on the worker's multiplexed
//! connection to it, the client's body streamed, the response (trailers and `grpc-status`
//! included) streamed back. A failed connect is requeued once on another backend, as for
//! upgrades; the request itself is not retried (a gRPC call's body is a stream, and gRPC clients
//! retry on their own policy). A gRPC `UNAVAILABLE` counts against the backend as a gateway
//! failure for outlier detection, as a 503 does.

use std::time::Instant;

use edge_core::backend::{Failure, GatewayFailure, StatusClass};
use edge_core::balance::Target;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::admission::Permit;
use crate::body::{Active, ProxyBody, count_grpc_status};
use crate::conn_guard::InFlight;
use crate::served::{ConnInfo, Served};
use crate::stats::{RetryOutcome, RetryReason};
use crate::upstream::SendError;
use crate::upstream::h2::{self, H2Body};
use crate::upstream::pool::PoolKey;

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

/// Forwards `req` and answers the client.
pub(crate) async fn forward(served: &Served, req: H2Request) -> Response<ProxyBody> {
    let H2Request { mut parts, body, mut target, hash, conn, in_flight, permit } = req;
    // HTTP/2 names the authority in the request line (`:authority`), not in `Host`.
    let host = parts.headers.remove(header::HOST);
    let authority = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<Authority>().ok())
        .or_else(|| parts.uri.authority().cloned());
    let started = Instant::now();
    let mut body: Option<H2Body> = Some(body.map_err(|e| Box::new(e) as _).boxed_unsync());
    let mut requeued = false;
    let (resp, active) = loop {
        let active = Active::new(&target.backend);
        let m = &target.backend.stats;
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
        let Ok(uri) = uri else { return local(StatusCode::BAD_REQUEST, "bad request target\n", in_flight) };
        // Connect first: a refused connect leaves the body unread, for another backend.
        let (e, body_left) = match h2::sender(key, &served.reach(&target, conn.local)).await {
            Ok(sender) => {
                let empty = || http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync();
                let mut out = Request::new(body.take().unwrap_or_else(empty));
                *out.method_mut() = std::mem::take(&mut parts.method);
                *out.uri_mut() = uri;
                *out.headers_mut() = std::mem::take(&mut parts.headers);
                let r = h2::send(key, sender, out, served.cfg.upstream_timeout).await;
                match r {
                    Ok(resp) => break (resp, active),
                    Err(e) => (e, false),
                }
            }
            Err(e) => (e, true),
        };
        let kind = match &e {
            SendError::Connect(_) => GatewayFailure::Connect,
            SendError::Timeout => GatewayFailure::Timeout,
            _ => GatewayFailure::Reset,
        };
        m.failure(match kind {
            GatewayFailure::Connect => Failure::Connect,
            GatewayFailure::Timeout => Failure::Timeout,
            _ => Failure::Reset,
        });
        m.gateway_failure(kind, 1);
        tracing::debug!(backend = %target.id(), error = %e, "http/2 request failed");
        // Only a refused connect left the client's body unread: requeue it once.
        let selector = served.selector.load();
        let other = selector.pick_other(hash, target.id()).map(|(t, _)| t.clone()).filter(|t| t.backend.admit());
        match other {
            Some(t) if body_left && !requeued => {
                served.traffic.retry(RetryReason::Connect);
                requeued = true;
                target = t;
            }
            _ => {
                if requeued {
                    served.traffic.retry_outcome(RetryOutcome::Failed);
                }
                m.request(StatusClass::ServerError);
                return match e {
                    SendError::Timeout => local(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n", in_flight),
                    _ => local(StatusCode::BAD_GATEWAY, "bad gateway\n", in_flight),
                };
            }
        }
    };
    if requeued {
        served.traffic.retry_outcome(RetryOutcome::Succeeded);
    }
    let m = &target.backend.stats;
    let (mut head, body) = resp.into_parts();
    m.request(StatusClass::of(head.status.as_u16()));
    m.duration.observe(started.elapsed());
    match GatewayFailure::of_status(head.status.as_u16(), served.cfg.retry.outlier_5xx) {
        Some(g) => m.gateway_failure(g, 1),
        None => m.passive_ok(),
    }
    // A trailers-only gRPC answer carries its status in the head.
    count_grpc_status(&target.backend, &head.headers);
    crate::headers::strip_hop_by_hop(&mut head.headers);
    let mut r = Response::new(ProxyBody::h2(body, in_flight, permit, active));
    *r.status_mut() = head.status;
    *r.headers_mut() = head.headers;
    r
}

fn local(status: StatusCode, text: &'static str, in_flight: InFlight) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local(text, Some(in_flight)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
