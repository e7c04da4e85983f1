//! Small helpers every layer needs: boxed futures for the traits at the seams, one-line error
//! chains for logs, the shutdown signal, and a guard that holds a gauge up while something lives.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error and its sources, joined with ": " (many libraries' top-level messages name only the
/// layer that failed).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Resolves when the shutdown flag turns true (or its sender is gone).
pub async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // Map the borrowed value away at once: holding it across an await would make callers !Send.
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// A gauge: a live count that goes up and down (in-flight requests, open connections).
pub type Gauge = Arc<AtomicI64>;

/// Holds a gauge one higher for as long as it lives: an open connection, a request in flight.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Increments `gauge` until the guard drops.
    pub fn new(gauge: &Gauge) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_hold_the_gauge_while_they_live() {
        let g = Gauge::default();
        let a = GaugeGuard::new(&g);
        let b = GaugeGuard::new(&g);
        assert_eq!(g.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(g.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(g.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn error_chains_name_every_source() {
        let e = Wrapped(std::io::Error::other("refused"));
        assert_eq!(error_chain(&e), "connect: refused");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connect")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
