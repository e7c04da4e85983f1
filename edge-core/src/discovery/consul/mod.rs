//! Backends from Consul (`--consul-service`): a watch on `/v1/health/service/:service` with
//! blocking queries, exactly as Consul's "Blocking Queries" documentation prescribes: the `index`
//! of the last `X-Consul-Index`, a `wait`, the index reset when it goes backwards and never 0,
//! successive queries at least [`MIN_GAP`] apart, and a jittered back-off after errors.
//!
//! The last good list stays in force through any failure (refused connection, timeout, 5xx,
//! malformed JSON, an answer cut short): the error is counted and logged, and nothing changes
//! until Consul answers well again. A good answer is Consul's truth, an empty one included: the
//! instances it no longer lists are removed and drain.
//!
//! `api` reads the answers; `client` makes the HTTP exchange; `tls` sets up HTTPS.

mod api;
mod client;

use std::time::Duration;

pub use api::{AnswerError, Instances, next_index, parse};
pub use client::{Endpoint, ExchangeError, MAX_ANSWER_BYTES};

use super::{Closed, Discover, Sink, retry_delay};
use crate::backend::BackendSpec;
use crate::util::BoxFuture;

/// Least time between the starts of two queries of one watch. Consul answers a blocking query at
/// once when anything changed; a service that churns would otherwise be queried in a tight loop.
pub const MIN_GAP: Duration = Duration::from_millis(100);

/// Limit of a query that does not block (the first one, and the first after an index reset).
pub const FIRST_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The Consul service name.
    pub service: String,
    /// Only instances with every one of these tags.
    pub tags: Vec<String>,
    /// The datacenter (default: the agent's).
    pub datacenter: Option<String>,
    /// Let any server answer (`?stale`), not only the leader: more load spread, a little staleness.
    pub stale: bool,
    /// How long Consul may hold a blocking query (Consul caps it at 10 minutes).
    pub wait: Duration,
}

impl Query {
    /// The path and query string for a blocking query from `index` (0: answer at once).
    pub fn path(&self, index: u64) -> String {
        let mut p = format!("/v1/health/service/{}?passing=1", encode(&self.service));
        if index > 0 {
            p.push_str(&format!("&index={index}&wait={}ms", self.wait.as_millis()));
        }
        if let Some(dc) = &self.datacenter {
            p.push_str(&format!("&dc={}", encode(dc)));
        }
        for t in &self.tags {
            p.push_str(&format!("&tag={}", encode(t)));
        }
        if self.stale {
            p.push_str("&stale");
        }
        p
    }

    /// The deadline of one exchange from `index`: a blocking one may last the wait plus the up to
    /// wait/16 of jitter Consul adds, and the answer must still travel; the first query (index
    /// 0) does not block, so a Consul that hangs is noticed within [`FIRST_QUERY_TIMEOUT`].
    pub fn deadline(&self, index: u64) -> Duration {
        if index == 0 { FIRST_QUERY_TIMEOUT } else { self.wait + self.wait / 16 + Duration::from_secs(5) }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Consul watch for one service.
#[derive(Debug, Clone)]
pub struct ConsulSource {
    endpoint: Endpoint,
    query: Query,
}

impl ConsulSource {
    /// Watches `query` at `endpoint`.
    pub fn new(endpoint: Endpoint, query: Query) -> Self {
        Self { endpoint, query }
    }

    async fn watch(self, sink: Sink) -> Result<(), Closed> {
        let mut index = 0u64;
        let mut last: Option<Vec<BackendSpec>> = None;
        let mut failures = 0u32;
        let mut next_start = tokio::time::Instant::now();
        loop {
            tokio::time::sleep_until(next_start).await;
            next_start = tokio::time::Instant::now() + MIN_GAP;
            let answer = self
                .endpoint
                .get(&self.query.path(index), self.query.deadline(index))
                .await
                .map_err(WatchError::Exchange)
                .and_then(|a| {
                    let instances = parse(&a.body).map_err(WatchError::Answer)?;
                    let next = next_index(a.index.as_deref(), index).map_err(WatchError::Answer)?;
                    Ok((instances, next))
                });
            match answer {
                Ok((instances, next)) => {
                    failures = 0;
                    if next == 0 {
                        tracing::info!(service = %self.query.service, "consul's index went backwards; starting over");
                    }
                    index = next;
                    if instances.skipped > 0 {
                        tracing::debug!(
                            service = %self.query.service,
                            skipped = instances.skipped,
                            "consul instances left out (not passing, port 0, or not an IP address)"
                        );
                    }
                    sink.offer(&mut last, instances.backends).await?;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    sink.error(&e);
                    next_start = tokio::time::Instant::now() + retry_delay(failures);
                }
            }
        }
    }
}

/// One failed round of a watch.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    #[error(transparent)]
    Exchange(ExchangeError),
    #[error(transparent)]
    Answer(AnswerError),
}

impl Discover for ConsulSource {
    fn name(&self) -> &'static str {
        "consul"
    }

    fn run(self: Box<Self>, sink: Sink) -> BoxFuture<'static, Result<(), Closed>> {
        Box::pin(self.watch(sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_service_index_wait_and_filters() {
        let q = Query {
            service: "web api".into(),
            tags: vec!["v1".into(), "a&b".into()],
            datacenter: Some("dc2".into()),
            stale: true,
            wait: Duration::from_secs(30),
        };
        assert_eq!(q.path(0), "/v1/health/service/web%20api?passing=1&dc=dc2&tag=v1&tag=a%26b&stale");
        assert_eq!(
            q.path(7),
            "/v1/health/service/web%20api?passing=1&index=7&wait=30000ms&dc=dc2&tag=v1&tag=a%26b&stale"
        );
        assert!(q.deadline(7) > Duration::from_secs(30) + Duration::from_millis(1875));
        assert_eq!(q.deadline(0), FIRST_QUERY_TIMEOUT, "a query that does not block needs no wait");
    }
}
