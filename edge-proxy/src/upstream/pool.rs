//! Idle upstream connections, one pool per worker thread.
//!
//! Workers are single-threaded (see `workers`), so the pool is thread-local: checkout
//! and checkin are a `RefCell` borrow, with no lock and no atomics. Connections are reused
//! last-in first-out, so the warm ones stay warm and the cold ones age out.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::UpstreamConn;

/// Idle connections older than this are closed rather than reused: backends close idle
/// keep-alive connections too (NGINX after 75 s, Node.js after 5 s, Gunicorn after 2 s), and an
/// old connection is the likeliest to be half-closed already.
pub const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Most idle connections kept per backend per worker.
pub const MAX_IDLE_PER_BACKEND: usize = 256;

#[derive(Default)]
struct Pool {
    idle: HashMap<SocketAddr, Vec<(UpstreamConn, Instant)>>,
    checkins: u64,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Takes the most recently used idle connection to `addr`, if one is young enough.
pub fn checkout(addr: SocketAddr) -> Option<UpstreamConn> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.idle.get_mut(&addr)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < MAX_IDLE_AGE {
                return Some(conn);
            }
        }
        None
    })
}

/// Returns a connection whose last exchange ended cleanly.
pub fn checkin(conn: UpstreamConn) {
    let now = Instant::now();
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.checkins += 1;
        if p.checkins.is_multiple_of(1024) {
            // Now and then, close connections that aged out, including those to backends that
            // are no longer asked for at all.
            for list in p.idle.values_mut() {
                list.retain(|(_, since)| now.duration_since(*since) < MAX_IDLE_AGE);
            }
            p.idle.retain(|_, l| !l.is_empty());
        }
        let list = p.idle.entry(conn.addr()).or_default();
        if list.len() < MAX_IDLE_PER_BACKEND {
            list.push((conn, now));
        }
    });
}
