//! Admission of HTTP requests: at most `--max-requests` in flight over the whole process; beyond
//! that a request is answered 503 at once, without touching a backend.
//!
//! Under overload a proxy that admits everything lets every request queue behind every other, so
//! latency grows without bound for all of them, and retries from clients make it worse. Bounding
//! the requests in flight keeps the latency of the admitted ones near `max / throughput`, and
//! the rejected ones cost a parse and a short answer (Envoy's `max_requests` circuit breaker, 1024
//! per cluster by default, works the same way). A streamed response (server-sent events, a long
//! download) counts until it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The process's request budget.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    in_flight: AtomicUsize,
    shed: AtomicU64,
}

impl Admission {
    /// Admits at most `max` requests at a time.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), in_flight: AtomicUsize::new(0), shed: AtomicU64::new(0) })
    }

    /// A permit for one request, or `None` (counted) when `max` are in flight.
    pub(crate) fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        let mut n = self.in_flight.load(Ordering::Relaxed);
        loop {
            if n >= self.max {
                self.shed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.in_flight.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Permit(self.clone())),
                Err(now) => n = now,
            }
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests answered 503 because the budget was spent.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

/// One admitted request; dropping it returns the slot.
#[derive(Debug)]
pub struct Permit(Arc<Admission>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_max_and_counts_the_rest() {
        let a = Admission::new(2);
        let p1 = a.try_admit().unwrap();
        let _p2 = a.try_admit().unwrap();
        assert!(a.try_admit().is_none());
        assert_eq!((a.in_flight(), a.shed()), (2, 1));
        drop(p1);
        assert!(a.try_admit().is_some(), "a slot freed is a slot again");
    }
}
