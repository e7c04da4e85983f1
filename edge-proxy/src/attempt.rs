//! The bookkeeping of one-attempt exchanges (upgrades, and requests to HTTP/2 backends), which are
//! never sent twice: what a failed attempt counts against its backend, whether another backend
//! takes the request (only when nothing of it was sent, and once), the answer when none does, and
//! what an answer counts. HTTP/1.1 requests have the full retry rules in `http`.

use std::time::Instant;

use edge_core::backend::{Failure, GatewayFailure, StatusClass};
use edge_core::balance::Target;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ProxyBody;
use crate::conn_guard::InFlight;
use crate::served::Served;
use crate::stats::{RetryOutcome, RetryReason};
use crate::upstream::SendError;

/// What follows a failed attempt.
pub(crate) enum Next {
    /// Send the request to this backend instead.
    Requeue(Target),
    /// Answer the client with this.
    Answer(StatusCode, &'static str),
}

/// Counts the failed attempt `e` (`what` names it in the log) against `target`, and says what
/// follows: another backend when the request was not sent (`unsent`) and was not requeued yet,
/// else an answer (504 for a timeout, 502 otherwise).
pub(crate) fn failed(
    served: &Served,
    target: &Target,
    hash: u64,
    e: &SendError,
    unsent: bool,
    requeued: bool,
    what: &str,
) -> Next {
    let m = &target.backend.stats;
    let (failure, kind) = match e {
        SendError::Connect(_) => (Failure::Connect, GatewayFailure::Connect),
        SendError::Timeout => (Failure::Timeout, GatewayFailure::Timeout),
        _ => (Failure::Reset, GatewayFailure::Reset),
    };
    m.failure(failure);
    m.gateway_failure(kind, 1);
    tracing::debug!(backend = %target.id(), error = %e, "{what} failed");
    let selector = served.selector.load();
    let other = selector.pick_other(hash, target.id()).map(|(t, _)| t.clone()).filter(|t| t.backend.admit());
    match other {
        Some(t) if unsent && !requeued => {
            served.traffic.retry(RetryReason::Connect);
            Next::Requeue(t)
        }
        _ => {
            if requeued {
                served.traffic.retry_outcome(RetryOutcome::Failed);
            }
            m.request(StatusClass::ServerError);
            match e {
                SendError::Timeout => Next::Answer(StatusCode::GATEWAY_TIMEOUT, "backend timed out\n"),
                _ => Next::Answer(StatusCode::BAD_GATEWAY, "bad gateway\n"),
            }
        }
    }
}

/// Counts `target`'s answer `status`, given `started` after the attempts began (`requeued`: after
/// a requeue).
pub(crate) fn answered(served: &Served, target: &Target, status: StatusCode, started: Instant, requeued: bool) {
    if requeued {
        served.traffic.retry_outcome(RetryOutcome::Succeeded);
    }
    let m = &target.backend.stats;
    m.request(StatusClass::of(status.as_u16()));
    m.duration.observe(started.elapsed());
    match GatewayFailure::of_status(status.as_u16(), served.cfg.retry.outlier_5xx) {
        Some(g) => m.gateway_failure(g, 1),
        None => m.passive_ok(),
    }
}

/// An answer of the proxy's own.
pub(crate) fn local(status: StatusCode, text: &'static str, in_flight: Option<InFlight>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local(text, in_flight));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
