//! Upgraded connections: WebSocket and any other HTTP/1.1 `Upgrade`. The request goes to the
//! backend on a connection of its own (an upgraded connection never returns to the pool) with its
//! `Connection: upgrade` and `Upgrade` kept; when the backend answers `101`, the client gets the
//! `101` and the two connections become a tunnel that copies bytes both ways, counted into the
//! backend's byte counters, until either side closes, no byte moves for `--idle-timeout`, or the
//! drain after shutdown ends (a tunnel has no request boundary at which to stop, so it gets the
//! drain timeout, then closes). Any other answer goes to the client as an ordinary response.
//!
//! While it lives, a tunnel counts as a request in flight on its client connection (so the
//! connection's own idle rule leaves it to the tunnel's), as an active request on its backend
//! (least-connections sees it), and in `edge_open_tunnels`.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use edge_core::backend::Failure;
use edge_core::balance::Target;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, watch};

use crate::admission::Permit;
use crate::attempt::{self, Next};
use crate::body::{Active, ProxyBody};
use crate::conn_guard::InFlight;
use crate::relay::{Ended, relay};
use crate::served::{ConnInfo, Served};
use crate::stats::ProxyStats;
use crate::upstream::body::UpstreamBody;
use crate::upstream::codec::{self, BodyFraming, RequestFraming, ResponseHead};
use crate::upstream::pool::PoolKey;
use crate::upstream::{SendError, UpstreamConn};

/// How long the client has to take the `101` before the tunnel gives up on it.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `Upgrade` value of an HTTP/1.1 request that asks to switch protocols (`Connection:
/// upgrade` and an `Upgrade` header), if it does. HTTP/2 has no `Upgrade` (RFC 9113 section 8.2.2).
pub(crate) fn wanted(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    // Most requests have no `Upgrade`: one lookup settles them.
    let protocol = headers.get(header::UPGRADE)?;
    if version != Version::HTTP_11 {
        return None;
    }
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    (asks && !protocol.is_empty()).then(|| protocol.clone())
}

/// Puts back the two headers that ask for (or confirm) the switch, after hop-by-hop removal.
pub(crate) fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// The open tunnels of one listener on one worker, so that the drain after shutdown can wait for
/// them; and the shutdown signal and drain timeout each tunnel keeps to.
#[derive(Debug)]
pub(crate) struct Tunnels {
    open: AtomicUsize,
    closed: Notify,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
}

impl Tunnels {
    /// Tunnels that close `drain` after `shutdown` turns true.
    pub(crate) fn new(shutdown: watch::Receiver<bool>, drain: Duration) -> Self {
        Self { open: AtomicUsize::new(0), closed: Notify::new(), shutdown, drain }
    }

    /// Resolves once no tunnel is open.
    pub(crate) async fn drained(&self) {
        loop {
            let mut closed = pin!(self.closed.notified());
            closed.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }

    /// Resolves `drain` after shutdown began.
    async fn stop(&self) {
        let mut rx = self.shutdown.clone();
        if rx.wait_for(|stop| *stop).await.is_ok() {
            tokio::time::sleep(self.drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// One open tunnel, counted while it lives.
struct Open {
    tunnels: Arc<Tunnels>,
    stats: Arc<ProxyStats>,
}

impl Open {
    fn new(tunnels: &Arc<Tunnels>, stats: &Arc<ProxyStats>) -> Self {
        tunnels.open.fetch_add(1, Ordering::AcqRel);
        stats.tunnel_opened();
        Self { tunnels: tunnels.clone(), stats: stats.clone() }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.stats.tunnel_closed();
        if self.tunnels.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tunnels.closed.notify_waiters();
        }
    }
}

/// What a tunnel needs once the backend said `101`.
pub(crate) struct Switch {
    /// The client connection's upgrade, from the request's extensions.
    pub on_upgrade: OnUpgrade,
    /// The backend connection that answered.
    pub upstream: Box<UpstreamConn>,
    /// The backend.
    pub target: Target,
    /// The request in flight on the client connection: held for the tunnel's life.
    pub in_flight: InFlight,
    /// The backend's active-request count: held for the tunnel's life.
    pub active: Active,
    /// Idle limit.
    pub idle: Duration,
    /// The client asked with an HTTP/2 extended CONNECT: it gets `200`, not `101`.
    pub extended: bool,
}

/// Answers the client's upgrade request with the backend's `101` (`head`) and starts the tunnel,
/// which runs on its own once hyper hands over the client connection.
pub(crate) fn switch(
    head: ResponseHead,
    s: Switch,
    tunnels: &Arc<Tunnels>,
    stats: &Arc<ProxyStats>,
) -> Response<ProxyBody> {
    let ResponseHead { mut status, mut headers, .. } = head;
    let protocol = headers.get(header::UPGRADE).cloned();
    crate::headers::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    if s.extended {
        crate::extended_connect::answer_headers(&mut headers);
        status = StatusCode::OK;
    } else if let Some(p) = protocol {
        keep_upgrade(&mut headers, p);
    }
    let open = Open::new(tunnels, stats);
    let tunnels = tunnels.clone();
    tokio::spawn(async move {
        let _open = open;
        let Switch { on_upgrade, upstream, target, in_flight, active, idle, .. } = s;
        let client = match tokio::time::timeout(UPGRADE_TIMEOUT, on_upgrade).await {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => {
                tracing::debug!(backend = %target.id(), error = %e, "the client connection did not upgrade");
                return;
            }
            Err(_) => {
                tracing::debug!(backend = %target.id(), "the client did not take the 101 in time");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let (upstream, early): (_, BytesMut) = upstream.into_parts();
        // What the backend sent right behind its 101 belongs to the new protocol.
        if !early.is_empty() {
            target.backend.stats.add_bytes(edge_core::backend::Direction::Rx, early.len() as u64);
            if client.write_all(&early).await.is_err() {
                return;
            }
        }
        match relay(client, upstream, &target.backend, idle, tunnels.stop()).await {
            Ended::Closed => {}
            Ended::Idle => tracing::debug!(backend = %target.id(), "tunnel idle; closing"),
            Ended::Stopped => tracing::debug!(backend = %target.id(), "tunnel closed at the end of the drain"),
            Ended::Error(e) => {
                if e.kind() != std::io::ErrorKind::ConnectionReset {
                    target.backend.stats.failure(Failure::Reset);
                }
                tracing::debug!(backend = %target.id(), error = %e, "tunnel ended with an error");
            }
        }
        drop((in_flight, active));
    });
    let mut r = Response::new(ProxyBody::local("", None));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    debug_assert!(status == StatusCode::SWITCHING_PROTOCOLS || status == StatusCode::OK);
    r
}

/// A request that asks to upgrade, with its backend picked and its head rewritten (hop-by-hop
/// headers gone, `Connection: upgrade` and `Upgrade` put back, forwarding headers added).
pub(crate) struct Request {
    /// The request head.
    pub parts: http::request::Parts,
    /// The picked backend.
    pub target: Target,
    /// Its connection key (which names the client for a backend that asks for the PROXY protocol).
    pub key: PoolKey,
    /// The client connection.
    pub conn: ConnInfo,
    /// The request's hash (for another backend when the connect fails).
    pub hash: u64,
    /// The request in flight on the client connection.
    pub in_flight: InFlight,
    /// The request's slot of the process budget (held until the `101`, or the answer's end).
    pub permit: Permit,
    /// An HTTP/2 client's extended CONNECT (RFC 8441), translated: the `101` goes back as `200`.
    pub extended: bool,
}

/// Sends an upgrade request to its backend on a new connection (once more to another backend if
/// the connect fails, as the TCP proxy does: an upgrade is never sent twice) and answers the
/// client: the tunnel after a `101`, the backend's answer as it is otherwise, 502 or 504 when
/// there is none.
pub(crate) async fn open(served: &Served, tunnels: &Arc<Tunnels>, req: Request) -> Response<ProxyBody> {
    let Request { mut parts, mut target, mut key, conn, hash, in_flight, permit, extended } = req;
    let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
        // Only a connection served with upgrades has one; every HTTP/1.1 listener is.
        return attempt::local(StatusCode::BAD_GATEWAY, "bad gateway\n", Some(in_flight));
    };
    let cfg = &served.cfg;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = BytesMut::new();
    codec::encode_request_head(&mut head, &parts.method, path, &parts.headers, RequestFraming::None);
    let head = head.freeze();
    let started = Instant::now();
    let mut requeued = false;
    let (upstream, answer, active) = loop {
        let active = Active::new(&target.backend);
        let attempt = async {
            let mut c = UpstreamConn::connect_to(key, &served.reach(&target, conn.local)).await?;
            let h = c.upgrade(&parts.method, head.clone(), cfg).await?;
            Ok::<_, SendError>((c, h))
        };
        match attempt.await {
            Ok((c, h)) => break (c, h, active),
            Err(e) => match attempt::failed(
                served,
                &target,
                hash,
                &e,
                matches!(e, SendError::Connect(_)),
                requeued,
                "upgrade request",
            ) {
                Next::Requeue(t) => {
                    requeued = true;
                    key = PoolKey::for_target(&t, conn.client);
                    target = t;
                }
                Next::Answer(status, text) => return attempt::local(status, text, Some(in_flight)),
            },
        }
    };
    attempt::answered(served, &target, answer.status, started, requeued);
    if answer.status == StatusCode::SWITCHING_PROTOCOLS {
        let s = Switch { on_upgrade, upstream, target, in_flight, active, idle: cfg.idle_timeout, extended };
        return switch(answer, s, tunnels, &served.stats);
    }
    if extended && answer.status.is_success() {
        // A success other than 101 would tell the HTTP/2 client that its tunnel is open, while
        // the backend only answered a GET.
        tracing::debug!(backend = %target.id(), status = %answer.status, "the backend did not switch protocols");
        target.backend.stats.failure(Failure::Reset);
        drop(active);
        return attempt::local(StatusCode::BAD_GATEWAY, "the backend did not switch protocols\n", Some(in_flight));
    }
    // The backend declined (or ignored) the upgrade: its answer goes out as any other, and the
    // connection is not reused.
    let ResponseHead { status, mut headers, framing, .. } = answer;
    crate::headers::strip_hop_by_hop(&mut headers);
    if !matches!(framing, BodyFraming::Length(_)) {
        headers.remove(header::CONTENT_LENGTH);
    }
    let body = UpstreamBody::new(upstream, framing, false, cfg.body_timeout);
    let mut r = Response::new(ProxyBody::upstream(body, in_flight, permit, active));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http11_requests_with_connection_upgrade_and_upgrade_ask() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(wanted(Version::HTTP_11, &h), None, "Upgrade without Connection: upgrade");
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(wanted(Version::HTTP_11, &h).unwrap(), "websocket");
        assert_eq!(wanted(Version::HTTP_2, &h), None);
        assert_eq!(wanted(Version::HTTP_10, &h), None);
        h.remove(header::UPGRADE);
        assert_eq!(wanted(Version::HTTP_11, &h), None);
    }

    #[tokio::test]
    async fn drained_waits_for_the_last_tunnel() {
        let (_tx, rx) = watch::channel(false);
        let tunnels = Arc::new(Tunnels::new(rx, Duration::from_secs(1)));
        let stats = Arc::new(ProxyStats::default());
        tunnels.drained().await;
        let a = Open::new(&tunnels, &stats);
        let b = Open::new(&tunnels, &stats);
        assert_eq!(stats.open_tunnels(), 2);
        let waiter = {
            let t = tunnels.clone();
            tokio::spawn(async move { t.drained().await })
        };
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one tunnel is still open");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        assert_eq!((stats.open_tunnels(), stats.tunnels()), (0, 2));
    }
}
