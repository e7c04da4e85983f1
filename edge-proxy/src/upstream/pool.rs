//! Idle upstream connections, one pool per worker thread.
//!
//! Workers are single-threaded (see `workers`), so the pool is thread-local: checkout
//! and checkin are a `RefCell` borrow, with no lock and no atomics. Connections are reused
//! last-in first-out, so the warm ones stay warm and the cold ones age out. Each worker runs
//! [`sweep_every`], which closes connections idle for [`MAX_IDLE_AGE`] and those the backend has
//! closed, so idle connections do not pile up on backends no request goes to any more.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use edge_core::backend::ProxyProtocol;
use edge_core::balance::Target;
use tokio::time::Instant;

use super::UpstreamConn;

/// Idle connections older than this are closed rather than reused: backends close idle
/// keep-alive connections too (NGINX after 75 s, Node.js after 5 s, Gunicorn after 2 s), and an
/// old connection is the likeliest to be half-closed already.
pub const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Most idle connections kept per backend per worker.
pub const MAX_IDLE_PER_BACKEND: usize = 256;

/// How often each worker sweeps its pool: idle connections close at most this long after
/// [`MAX_IDLE_AGE`].
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What an idle connection may be reused for: its backend, and for a backend that asks for the
/// PROXY protocol, the client whose header opened it (such a connection names one client for its
/// whole life, so only that client's requests may reuse it, as HAProxy keeps such connections
/// private).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The backend.
    pub addr: SocketAddr,
    /// The PROXY protocol version and the client it named, if any.
    pub client: Option<(ProxyProtocol, SocketAddr)>,
    /// Whether it speaks TLS.
    pub tls: bool,
    /// Whether it speaks HTTP/2 (its connections are multiplexed, not pooled here).
    pub h2: bool,
}

impl PoolKey {
    /// Where a request to `target` from `client` may go: the backend's pool of idle connections,
    /// which for a backend that asks for the PROXY protocol is this client's own.
    pub fn for_target(target: &Target, client: SocketAddr) -> Self {
        let b = &target.backend;
        Self { addr: target.addr(), client: b.proxy().map(|p| (p, client)), tls: b.is_tls(), h2: b.is_h2() }
    }

    /// A connection to `addr` without a PROXY header.
    #[cfg(test)]
    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, client: None, tls: false, h2: false }
    }
}

/// A map keyed by [`PoolKey`], hashed with foldhash: the standard library's SipHash was a visible
/// share of a request's cost for a key of a few words. The seed is still random per process, as a
/// key can hold a client's address.
pub type KeyMap<V> = HashMap<PoolKey, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct Pool {
    idle: KeyMap<Vec<(Box<UpstreamConn>, Instant)>>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Takes the most recently used idle connection for `key`, if one is young enough at `now` (the
/// request's start: a clock read less per request).
pub fn checkout(key: PoolKey, now: Instant) -> Option<Box<UpstreamConn>> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.idle.get_mut(&key)?;
        while let Some((conn, since)) = list.pop() {
            if now.saturating_duration_since(since) < MAX_IDLE_AGE {
                return Some(conn);
            }
        }
        None
    })
}

/// Returns a connection whose last exchange ended cleanly.
pub fn checkin(conn: Box<UpstreamConn>) {
    let now = Instant::now();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.idle.entry(conn.key()).or_default();
        if list.len() < MAX_IDLE_PER_BACKEND {
            list.push((conn, now));
        }
    });
}

/// Closes this worker's idle connections that aged out or that the backend closed; returns how
/// many stay open.
pub fn sweep() -> usize {
    let now = Instant::now();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        for list in p.idle.values_mut() {
            list.retain_mut(|(c, since)| now.duration_since(*since) < MAX_IDLE_AGE && c.is_alive());
        }
        p.idle.retain(|_, l| !l.is_empty());
        p.idle.values().map(Vec::len).sum()
    })
}

/// Sweeps this worker's pool every `period`, forever; run it on the worker's own runtime.
pub async fn sweep_every(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep();
        super::h2::sweep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn idle_connections_close_after_the_max_age_without_any_checkin() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut peers = Vec::new();
        for _ in 0..3 {
            let c = UpstreamConn::connect(addr, Duration::from_secs(1)).await.unwrap();
            peers.push(l.accept().await.unwrap().0);
            checkin(c);
        }
        let sweeper = tokio::spawn(sweep_every(SWEEP_EVERY));
        tokio::time::sleep(MAX_IDLE_AGE - Duration::from_secs(2)).await;
        assert_eq!(sweep(), 3, "young connections stay");
        tokio::time::sleep(Duration::from_secs(2) + SWEEP_EVERY).await;
        assert_eq!(sweep(), 0, "aged out with no checkin to trigger it");
        for mut p in peers {
            let mut b = [0u8; 1];
            assert_eq!(p.read(&mut b).await.unwrap(), 0, "the backend sees the close");
        }
        // A connection the backend closed goes at the next sweep, young as it is.
        let c = UpstreamConn::connect(addr, Duration::from_secs(1)).await.unwrap();
        drop(l.accept().await.unwrap().0);
        checkin(c);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(sweep(), 0);
        sweeper.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn checkout_takes_the_newest_connection_young_enough_at_the_time_given() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let key = PoolKey::plain(addr);
        let (old, _p1) = (UpstreamConn::connect(addr, Duration::from_secs(1)).await.unwrap(), l.accept().await);
        let old_port = old.local_port();
        checkin(old);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (new, _p2) = (UpstreamConn::connect(addr, Duration::from_secs(1)).await.unwrap(), l.accept().await);
        let new_port = new.local_port();
        checkin(new);
        let now = Instant::now();
        let c = checkout(key, now).expect("a young connection");
        assert_eq!(c.local_port(), new_port, "last in, first out");
        checkin(c);
        // At a time when the newer one is still young and the older one is not.
        let later = now + MAX_IDLE_AGE - Duration::from_secs(1);
        assert_eq!(checkout(key, later).map(|c| c.local_port()), Some(new_port));
        assert!(checkout(key, later).is_none(), "the older one has aged out at that time: {old_port}");
        assert!(checkout(key, now).is_none(), "and was closed, not kept");
    }
}
