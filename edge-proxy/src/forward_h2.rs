//! A request to an HTTP/2 backend (`proto=h2`, for gRPC): sent on the worker's multiplexed
//! connection to it, the client's body streamed, the response (trailers and `grpc-status`
//! included) streamed back. A failed connect is requeued once on another backend, as for
//! upgrades; the request itself is not retried (a gRPC call's body is a stream, and gRPC clients
//! retry on their own policy). A gRPC `UNAVAILABLE` counts against the backend as a gateway
//! failure for outlier detection, as a 503 does.

use std::time::Instant;

use edge_core::balance::Target;
use http::header;
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::admission::Permit;
use crate::attempt::{self, Next};
use crate::body::{Active, ProxyBody, count_grpc_status};
use crate::conn_guard::InFlight;
use crate::served::{ConnInfo, Served};
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
        match attempt::failed(served, &target, hash, &e, body_left, requeued, "http/2 request") {
            Next::Requeue(t) => {
                requeued = true;
                target = t;
            }
            Next::Answer(status, text) => return attempt::local(status, text, Some(in_flight)),
        }
    };
    let (mut head, body) = resp.into_parts();
    attempt::answered(served, &target, head.status, started, requeued);
    // A trailers-only gRPC answer carries its status in the head.
    count_grpc_status(&target.backend, &head.headers);
    crate::headers::strip_hop_by_hop(&mut head.headers);
    let mut r = Response::new(ProxyBody::h2(body, in_flight, permit, active));
    *r.status_mut() = head.status;
    *r.headers_mut() = head.headers;
    r
}
