//! Service discovery: sources of backends, one implementation per file, behind [`Discover`].
//!
//! A source sends [`Update`]s into a [`Sink`]; the health monitor merges all sources (the union of
//! their backends, by address) and decides what each change means for traffic. Sources never touch
//! backend state themselves, which is what lets Consul or DNS SRV plug in without the rest knowing.

mod file;
mod fixed;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::backend::BackendSpec;
use crate::util::BoxFuture;

/// Parses a backends file's text (for the fuzz targets in `fuzz/`).
#[cfg(fuzzing)]
pub use file::parse as parse_backends_file;
pub use file::{FileError, FileSource, load as load_backends_file};
pub use fixed::Fixed;

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
}

impl SourceStats {
    /// Zeroed counters for a source called `name`.
    pub fn new(name: &'static str) -> Self {
        Self { name, updates: AtomicU64::new(0), errors: AtomicU64::new(0) }
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

    /// Sends an update.
    pub async fn send(&self, update: Update) -> Result<(), Closed> {
        self.tx.send(SourcedUpdate { source: self.source, update }).await.map_err(|_| Closed)
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
