//! Service discovery: sources of backends, one implementation per file, behind [`Discover`].
//!
//! A source sends [`Update`]s into a [`Sink`]; the health monitor merges all sources (the union of
//! their backends, by address) and decides what each change means for traffic. Sources never touch
//! backend state themselves, which is what lets Consul or DNS SRV plug in without the rest knowing.

pub mod file;
pub mod fixed;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use crate::backend::BackendSpec;
use crate::health::BoxFuture;

pub use file::{FileError, FileSource};
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
    /// The source's name, for logs and metrics.
    pub name: Arc<str>,
    /// The change.
    pub update: Update,
}

/// The monitor hung up; the agent is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the health monitor stopped; the agent is shutting down")]
pub struct Closed;

/// Where a source sends its updates and reports its errors.
#[derive(Debug, Clone)]
pub struct Sink {
    source: usize,
    name: Arc<str>,
    tx: mpsc::Sender<SourcedUpdate>,
    errors: Counter,
}

impl Sink {
    /// A sink for source number `source`, counting errors into `errors`.
    pub fn new(source: usize, name: &str, tx: mpsc::Sender<SourcedUpdate>, errors: Counter) -> Self {
        Self { source, name: name.into(), tx, errors }
    }

    /// Sends an update.
    pub async fn send(&self, update: Update) -> Result<(), Closed> {
        let u = SourcedUpdate { source: self.source, name: self.name.clone(), update };
        self.tx.send(u).await.map_err(|_| Closed)
    }

    /// Records a failure that left the source's last good list in place.
    pub fn error(&self, err: &dyn std::error::Error) {
        self.errors.inc();
        tracing::warn!(source = %self.name, error = %err, "discovery error; keeping the last good backend list");
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
