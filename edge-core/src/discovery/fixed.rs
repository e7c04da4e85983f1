//! Backends given on the command line (`--backend`): one `Reset`, then silence.

use super::{Closed, Discover, Sink, Update};
use crate::backend::BackendSpec;
use crate::util::BoxFuture;

/// A fixed list of backends.
#[derive(Debug, Clone)]
pub struct Fixed {
    backends: Vec<BackendSpec>,
}

impl Fixed {
    /// The list to report.
    pub fn new(backends: Vec<BackendSpec>) -> Self {
        Self { backends }
    }
}

impl Discover for Fixed {
    fn name(&self) -> &'static str {
        "static"
    }

    fn run(self: Box<Self>, sink: Sink) -> BoxFuture<'static, Result<(), Closed>> {
        Box::pin(async move { sink.send(Update::Reset(self.backends)).await })
    }
}
