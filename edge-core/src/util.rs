//! Small helpers every layer needs: boxed futures for the traits at the seams, one-line error
//! chains for logs, the shutdown signal, a guard that holds a gauge up while something lives, and
//! a file read with a size limit.

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

/// Reads a UTF-8 file of at most `limit` bytes. A larger file is an `io::ErrorKind::FileTooLarge`
/// error before more than `limit + 1` bytes are read, so a huge or growing file (or a device
/// such as /dev/zero) cannot make the reader allocate without bound.
pub fn read_bounded(path: &std::path::Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let too_large = || std::io::Error::new(std::io::ErrorKind::FileTooLarge, format!("larger than {limit} bytes"));
    if f.metadata()?.len() > limit {
        return Err(too_large());
    }
    let mut text = String::new();
    f.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(text)
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
    fn bounded_reads_refuse_large_and_endless_files() {
        let p = std::env::temp_dir().join(format!("edge-bounded-{}", std::process::id()));
        std::fs::write(&p, "x".repeat(100)).unwrap();
        assert_eq!(read_bounded(&p, 100).unwrap().len(), 100);
        assert_eq!(read_bounded(&p, 99).unwrap_err().kind(), std::io::ErrorKind::FileTooLarge);
        std::fs::remove_file(&p).unwrap();
        // A device reports no length; the read itself stops at the limit.
        let e = read_bounded(std::path::Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
    }

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
