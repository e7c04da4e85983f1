//! The request key consistent hashing looks up: what a [`HashKey`] means for one request or
//! connection, hashed with the stable hash of `hash`.

use std::net::SocketAddr;

use http::HeaderMap;

use super::HashKey;
use super::hash::{SEED_KEY, hash_ip, hash64};

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
    use http::{HeaderName, HeaderValue};

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
