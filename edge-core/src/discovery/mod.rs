//! Service discovery: sources of backends, one implementation per file, behind [`Discover`].
//!
//! A source sends [`Update`]s into a [`Sink`]; the health monitor merges all sources (the union of
//! their backends, by address) and decides what each change means for traffic. Sources never touch
//! backend state themselves, which is what lets Consul or DNS SRV plug in without the rest knowing.

pub mod consul;
pub mod dns;
mod file;
mod fixed;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::backend::BackendSpec;
use crate::util::BoxFuture;

/// Parses a backends file's text (for the fuzz targets in `fuzz/`).
#[cfg(fuzzing)]
pub use file::parse as parse_backends_file;
pub use file::{FileError, FileSource, load as load_backends_file};
pub use fixed::Fixed;

/// The wait before the n-th retry (from 1) of a source whose last attempt failed: doubling from
/// 250 ms to 30 s, each wait between half and all of its ceiling, so that many agents that lost
/// the same server do not come back to it together, and a wait is never zero.
pub fn retry_delay(n: u32) -> Duration {
    let ceiling =
        Duration::from_millis(250).saturating_mul(1u32 << n.saturating_sub(1).min(7)).min(Duration::from_secs(30));
    ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// A change reported by a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The source's complete list; replaces everything it reported before.
    Reset(Vec<BackendSpec>),
    /// One backend appeared (or changed weight).
    Add(BackendSpec),
    /// One backend went away.
    Remove(SocketAddr),
}

/// An update tagged with the source that sent it.
#[derive(Debug, Clone)]
pub struct SourcedUpdate {
    /// Index of the source, in start order.
    pub source: usize,
    /// The change.
    pub update: Update,
}

/// A source's counters: updates applied and errors that left its last good list in place.
#[derive(Debug)]
pub struct SourceStats {
    /// The source's name (`static`, `file`), for logs and metric labels.
    pub name: &'static str,
    updates: AtomicU64,
    errors: AtomicU64,
    /// When the source last heard from its origin successfully, milliseconds since the Unix epoch
    /// (0: never).
    last_ok_ms: AtomicU64,
}

impl SourceStats {
    /// Zeroed counters for a source called `name`.
    pub fn new(name: &'static str) -> Self {
        Self { name, updates: AtomicU64::new(0), errors: AtomicU64::new(0), last_ok_ms: AtomicU64::new(0) }
    }

    /// Counts an applied update.
    pub fn updated(&self) {
        self.updates.fetch_add(1, Ordering::Relaxed);
    }

    /// Updates applied so far.
    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// When the source last heard from its origin successfully (its list is as fresh as that).
    pub fn last_success(&self) -> Option<SystemTime> {
        match self.last_ok_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    fn mark_ok(&self) {
        let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_millis().max(1));
        self.last_ok_ms.store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The monitor hung up; the agent is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the health monitor stopped; the agent is shutting down")]
pub struct Closed;

/// Where a source sends its updates and reports its errors.
#[derive(Debug, Clone)]
pub struct Sink {
    source: usize,
    tx: mpsc::Sender<SourcedUpdate>,
    stats: Arc<SourceStats>,
}

impl Sink {
    /// A sink for source number `source`, counting its errors into `stats`.
    pub fn new(source: usize, tx: mpsc::Sender<SourcedUpdate>, stats: Arc<SourceStats>) -> Self {
        Self { source, tx, stats }
    }

    /// Sends an update (which also counts as hearing from the origin).
    pub async fn send(&self, update: Update) -> Result<(), Closed> {
        self.stats.mark_ok();
        self.tx.send(SourcedUpdate { source: self.source, update }).await.map_err(|_| Closed)
    }

    /// Records a successful answer from the origin that changed nothing.
    pub fn ok(&self) {
        self.stats.mark_ok();
    }

    /// A good answer with the source's complete list: sent as a `Reset` when it differs from
    /// `last` (which it then becomes), otherwise only counted as fresh.
    pub async fn offer(&self, last: &mut Option<Vec<BackendSpec>>, list: Vec<BackendSpec>) -> Result<(), Closed> {
        if last.as_ref() == Some(&list) {
            self.ok();
            return Ok(());
        }
        *last = Some(list.clone());
        self.send(Update::Reset(list)).await
    }

    /// Records a failure that left the source's last good list in place.
    pub fn error(&self, err: &dyn std::error::Error) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(source = self.stats.name, error = %err, "discovery error; keeping the last good backend list");
    }
}

/// A source of backends.
pub trait Discover: Send + fmt::Debug {
    /// Short name for logs and metric labels (`static`, `file`).
    fn name(&self) -> &'static str;
    /// Runs until the source has nothing more to say or the sink closes. The first update must
    /// describe the complete initial set (normally a `Reset`), because readiness waits for it.
    fn run(self: Box<Self>, sink: Sink) -> BoxFuture<'static, Result<(), Closed>>;
}
