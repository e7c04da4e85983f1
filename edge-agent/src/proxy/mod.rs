//! The userspace data plane: an HTTP reverse proxy and a TCP proxy, both reading the selector
//! snapshot without locks.

pub mod body;
pub mod conn_guard;
pub mod headers;
pub mod http;
pub mod io;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod workers;

use std::net::SocketAddr;

use ::http::HeaderMap;
use prometheus_client::metrics::gauge::Gauge;

use crate::balance::HashKey;
use crate::balance::hash::{SEED_KEY, hash_ip, hash64};

/// Counts an open client connection while alive.
#[derive(Debug)]
pub struct OpenConn(Gauge);

impl OpenConn {
    /// Increments `g` until dropped.
    pub fn new(g: &Gauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An error and its sources, joined with ": " (hyper's top-level messages name only the layer).
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

/// Hashes a request's consistent-hash key. A header key falls back to the client address when the
/// header is absent (and always in TCP mode, where there are no headers).
pub fn request_hash(key: &HashKey, client: SocketAddr, local: SocketAddr, headers: Option<&HeaderMap>) -> u64 {
    match key {
        HashKey::Source => hash_ip(client.ip()),
        HashKey::FiveTuple => {
            let mut buf = Vec::with_capacity(40);
            buf.extend_from_slice(client.to_string().as_bytes());
            buf.push(b'>');
            buf.extend_from_slice(local.to_string().as_bytes());
            hash64(&buf, SEED_KEY)
        }
        HashKey::Header(name) => match headers.and_then(|h| h.get(name)) {
            Some(v) => hash64(v.as_bytes(), SEED_KEY),
            None => hash_ip(client.ip()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::{HeaderName, HeaderValue};

    #[test]
    fn header_key_falls_back_to_source() {
        let c: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let l: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let key = HashKey::Header(HeaderName::from_static("x-user-id"));
        let mut h = HeaderMap::new();
        assert_eq!(request_hash(&key, c, l, Some(&h)), request_hash(&HashKey::Source, c, l, None));
        h.insert("x-user-id", HeaderValue::from_static("42"));
        assert_ne!(request_hash(&key, c, l, Some(&h)), request_hash(&HashKey::Source, c, l, None));
        let c2: SocketAddr = "10.0.0.1:5001".parse().unwrap();
        assert_eq!(request_hash(&HashKey::Source, c, l, None), request_hash(&HashKey::Source, c2, l, None));
        assert_ne!(request_hash(&HashKey::FiveTuple, c, l, None), request_hash(&HashKey::FiveTuple, c2, l, None));
    }
}
