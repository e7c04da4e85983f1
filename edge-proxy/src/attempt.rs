//! What attempts to reach a backend share. For upgrades and connects (`failed`): what a failed
//! attempt counts against its backend, whether another backend takes the request (only when
//! nothing of it was sent, and once), and the answer when none does; `answered`: what an answer
//! counts. For HTTP/1.1 and HTTP/2 requests (`prepare_retry`): whether and where a failed attempt
//! is made again, after the back-off, within the deadline, outside panic mode and within the
//! retry budget.

use std::time::Instant;

use edge_core::backend::{Failure, GatewayFailure, StatusClass};
use edge_core::balance::{Selector, Target};
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

/// How a retry is paid for and where it may go.
pub(crate) struct RetryPlan {
    /// Why the attempt is made again (the metric's label).
    pub reason: RetryReason,
    /// Nothing of the request was processed by a backend (a failed connect, a refused HTTP/2
    /// stream): sending it elsewhere adds no load, so it spends no budget and goes on in panic
    /// mode; `--retries` still bounds it.
    pub free: bool,
    /// With no other backend, the same one may take it again (on a new connection).
    pub same_ok: bool,
}

/// Where the next attempt goes.
pub(crate) enum Where<'s> {
    /// Another backend.
    Other(&'s Target),
    /// The same backend, on a new connection.
    Same,
}

/// Decides whether a failed attempt on `from` (after `retries` retries so far) is made again under `plan`: another backend, or the same one when the plan
/// allows and there is no other; within `deadline` after the back-off; not in panic mode and
/// within the retry budget, unless free. Counts the retry and waits the back-off; `None` when no
/// retry follows (its outcome counted).
pub(crate) async fn prepare_retry<'s>(
    served: &Served,
    selector: &'s Selector,
    from: &Target,
    hash: u64,
    plan: RetryPlan,
    retries: u32,
    deadline: tokio::time::Instant,
) -> Option<Where<'s>> {
    let traffic = &served.traffic;
    let other = selector.pick_other(hash, from.id()).map(|(t, _)| t).filter(|t| t.backend.admit());
    let next = match other {
        Some(t) => Where::Other(t),
        None if plan.same_ok => Where::Same,
        None => {
            traffic.retry_outcome(RetryOutcome::NoTarget);
            return None;
        }
    };
    let wait = served.cfg.retry.backoff.delay(retries + 1);
    if tokio::time::Instant::now() + wait >= deadline {
        traffic.retry_outcome(RetryOutcome::NoTarget);
        return None;
    }
    // In panic mode no backend is known good, so a retry only moves load between sick ones.
    if !plan.free && selector.panic() {
        traffic.retry_outcome(RetryOutcome::NoTarget);
        return None;
    }
    if !plan.free && !traffic.budget.try_retry() {
        traffic.retry_outcome(RetryOutcome::BudgetExhausted);
        return None;
    }
    traffic.retry(plan.reason);
    let to = match &next {
        Where::Other(t) => t.id(),
        Where::Same => from.id(),
    };
    tracing::debug!(from = %from.id(), to = %to, reason = plan.reason.as_str(), "retrying the request");
    tokio::time::sleep(wait).await;
    Some(next)
}

/// An answer of the proxy's own.
pub(crate) fn local(status: StatusCode, text: &'static str, in_flight: Option<InFlight>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local(text, in_flight));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
