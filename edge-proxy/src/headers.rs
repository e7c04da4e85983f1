//! Header rewriting between client and backend: hop-by-hop removal, trailer filtering and
//! X-Forwarded-*.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// How many hop-by-hop headers [`HOP_BY_HOP`] lists.
const HOP_COUNT: usize = 8;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the common non-standard ones).
const HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// End-to-end headers a `Connection` header may not name: routing, authentication, framing, and
/// the forwarding headers the proxy vouches for. Without this, `Connection: host` or
/// `Connection: authorization` would make the proxy strip them (the "hop-by-hop header abuse"
/// that let clients hide their address from backends behind other proxies).
const PROTECTED: [HeaderName; 9] = [
    header::HOST,
    header::AUTHORIZATION,
    header::COOKIE,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
];

/// Fields a trailer may not carry (RFC 9110 section 6.5.1): framing, routing, request modifiers,
/// authentication, response control and content handling. A sender cannot change these after the
/// head, so a proxy drops them rather than let a backend act on them.
const NOT_IN_TRAILERS: [HeaderName; 24] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONTENT_ENCODING,
    header::CONTENT_TYPE,
    header::CONTENT_RANGE,
    header::TRAILER,
    header::HOST,
    header::CONNECTION,
    header::TE,
    header::UPGRADE,
    header::EXPECT,
    header::MAX_FORWARDS,
    header::CACHE_CONTROL,
    header::RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::SET_COOKIE,
    header::WWW_AUTHENTICATE,
    header::LOCATION,
];

/// X-Forwarded-For.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// X-Forwarded-Proto.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes hop-by-hop headers, those the `Connection` header names (except [`PROTECTED`] ones),
/// and `Upgrade`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the message's few names finds which of these it carries, so that only those
    // are looked up again to be removed. Most requests carry none; most responses carry only
    // `Connection: keep-alive`, which then costs one removal instead of ten.
    let mut present = [false; HOP_COUNT];
    let mut upgrade = false;
    for k in h.keys() {
        if k == header::UPGRADE {
            upgrade = true;
        } else if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            present[i] = true;
        }
    }
    if !upgrade && !present.contains(&true) {
        return;
    }
    // `keep-alive` is hop-by-hop already; every other option names a header to remove.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| !PROTECTED.contains(n))
        .collect();
    for n in named {
        h.remove(n);
    }
    for (n, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        h.remove(n);
    }
    if upgrade {
        h.remove(header::UPGRADE);
    }
}

/// Whether the client takes response trailers: an HTTP/2 client always, an HTTP/1.1 client when it
/// says `TE: trailers` (RFC 9110 section 10.1.4).
pub fn accepts_trailers(h: &HeaderMap, version: Version) -> bool {
    version >= Version::HTTP_2
        || h.get_all(header::TE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| {
            let name = t.split(';').next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case("trailers")
        })
}

/// The backend's `Trailer` declaration, less the fields a trailer may not carry, for a client
/// that takes trailers: hyper's HTTP/1.1 server sends only the trailer fields the response head
/// declares, so stripping `Trailer` as hop-by-hop would silently drop every trailer.
pub fn declared_trailers(h: &HeaderMap) -> Option<HeaderValue> {
    let names: Vec<HeaderName> = h
        .get_all(header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !NOT_IN_TRAILERS.contains(n) && !HOP_BY_HOP.contains(n) && !PROTECTED.contains(n))
        .collect();
    if names.is_empty() {
        return None;
    }
    let list = names.iter().map(HeaderName::as_str).collect::<Vec<_>>().join(", ");
    HeaderValue::from_str(&list).ok()
}

/// Drops the trailer fields RFC 9110 section 6.5.1 forbids, and hop-by-hop ones.
pub fn sanitize_trailers(t: &mut HeaderMap) {
    for n in NOT_IN_TRAILERS.iter().chain(&HOP_BY_HOP) {
        t.remove(n);
    }
    t.remove(header::FORWARDED);
    t.remove(&X_FORWARDED_FOR);
    t.remove(&X_FORWARDED_PROTO);
}

/// Appends the client's address to X-Forwarded-For (joining repeated headers) and sets
/// X-Forwarded-Proto.
pub fn add_forwarded(h: &mut HeaderMap, client: IpAddr, https: bool) {
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if https { "https" } else { "http" }));
    if !h.contains_key(&X_FORWARDED_FOR)
        && let Some(v) = client_value(client)
    {
        // The common case, first proxy in line: the address is the whole value.
        h.insert(X_FORWARDED_FOR.clone(), v);
        return;
    }
    let mut xff = String::new();
    for v in h.get_all(&X_FORWARDED_FOR).iter() {
        if let Ok(s) = v.to_str()
            && !s.trim().is_empty()
        {
            xff.push_str(s.trim());
            xff.push_str(", ");
        }
    }
    xff.push_str(&client.to_string());
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
}

thread_local! {
    /// The last client address this thread wrote as a header value, with that value: a
    /// connection's requests all come from one address, and writing it again cost a formatting
    /// and an allocation per request, where a copy of the value is a reference count.
    static LAST_CLIENT: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// `client` as a header value.
fn client_value(client: IpAddr) -> Option<HeaderValue> {
    LAST_CLIENT.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, v)) = &*last
            && *ip == client
        {
            return Some(v.clone());
        }
        let mut text = [0u8; 64];
        let len = match client {
            // Written digit by digit: the formatting machinery was a visible share of a request.
            IpAddr::V4(a) => ipv4_text(a, &mut text),
            IpAddr::V6(_) => {
                let mut w = &mut text[..];
                write!(w, "{client}").ok()?;
                64 - w.len()
            }
        };
        let v = HeaderValue::from_bytes(&text[..len]).ok()?;
        *last = Some((client, v.clone()));
        Some(v)
    })
}

/// Writes `a` in dotted decimal at the front of `out` and returns its length (at most 15).
fn ipv4_text(a: Ipv4Addr, out: &mut [u8; 64]) -> usize {
    let mut n = 0;
    for (i, octet) in a.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            out[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            out[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        out[n] = b'0' + octet % 10;
        n += 1;
    }
    n
}

/// Whether a request may be sent twice: an idempotent method (RFC 9110 section 9.2.2), or any
/// request that carries an `Idempotency-Key`.
pub(crate) fn idempotent(method: &http::Method, headers: &HeaderMap) -> bool {
    use http::Method;
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
        || headers.contains_key("idempotency-key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn connection_cannot_strip_protected_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("host, authorization, x-forwarded-for, content-length, cookie, x-gone"),
        );
        for n in ["host", "authorization", "x-forwarded-for", "content-length", "cookie", "x-gone"] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("v"));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-length", "cookie", "host", "x-forwarded-for"]);
    }

    #[test]
    fn trailers_lose_framing_routing_and_auth_fields() {
        let mut t = HeaderMap::new();
        for n in ["content-length", "host", "authorization", "transfer-encoding", "x-forwarded-for", "set-cookie"] {
            t.insert(HeaderName::from_static(n), HeaderValue::from_static("1"));
        }
        t.insert("x-checksum", HeaderValue::from_static("abc"));
        t.insert("grpc-status", HeaderValue::from_static("0"));
        sanitize_trailers(&mut t);
        let mut left: Vec<&str> = t.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["grpc-status", "x-checksum"]);
    }

    #[test]
    fn trailers_are_taken_by_h2_clients_and_by_h1_clients_that_say_so() {
        let mut h = HeaderMap::new();
        assert!(!accepts_trailers(&h, Version::HTTP_11));
        assert!(accepts_trailers(&h, Version::HTTP_2));
        h.insert(header::TE, HeaderValue::from_static("gzip;q=0.5, Trailers"));
        assert!(accepts_trailers(&h, Version::HTTP_11));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailersx"));
        assert!(!accepts_trailers(&h, Version::HTTP_11));
    }

    #[test]
    fn the_trailer_declaration_keeps_only_fields_a_trailer_may_carry() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_trailers(&h), None);
        h.insert(header::TRAILER, HeaderValue::from_static("X-Checksum, content-length, Set-Cookie"));
        h.append(header::TRAILER, HeaderValue::from_static("grpc-status, x-forwarded-for, host, bad name"));
        assert_eq!(declared_trailers(&h).unwrap(), "x-checksum, grpc-status");
        h.insert(header::TRAILER, HeaderValue::from_static("content-length"));
        assert_eq!(declared_trailers(&h), None);
    }

    #[test]
    fn appends_to_existing_forwarded_for() {
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        add_forwarded(&mut h, "10.0.0.9".parse().unwrap(), true);
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        add_forwarded(&mut h, "::1".parse().unwrap(), false);
        assert_eq!(h[&X_FORWARDED_FOR], "::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http", "the client's claim is replaced");
        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static(" "));
        add_forwarded(&mut h, "10.0.0.9".parse().unwrap(), false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9", "an empty claim is dropped");
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe";
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, longest.parse().unwrap(), false);
        assert_eq!(h[&X_FORWARDED_FOR], longest);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn strip_leaves_a_message_without_hop_by_hop_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before, "upgrade alone is found too");
    }

    #[test]
    fn strip_removes_only_what_the_message_carries_and_its_connection_names() {
        // A backend's usual answer: `Connection: keep-alive` and nothing else hop-by-hop.
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_LENGTH));
        // One hop-by-hop header found by the scan still brings the `Connection` names with it,
        // including one that is itself hop-by-hop but absent, and `close`.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-a, te"));
        h.append(header::CONNECTION, HeaderValue::from_static("X-B"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        h.insert("close", HeaderValue::from_static("3"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::ACCEPT]);
    }

    #[test]
    fn ipv4_addresses_are_written_as_the_standard_library_writes_them() {
        let mut text = [0u8; 64];
        // Every octet value in every position, and the edges of each digit count.
        for v in 0..=255u8 {
            for a in [[v, 0, 0, 0], [1, v, 10, 100], [255, 99, v, 9], [0, 0, 0, v], [v, v, v, v]] {
                let a = Ipv4Addr::from(a);
                let n = ipv4_text(a, &mut text);
                assert_eq!(std::str::from_utf8(&text[..n]).unwrap(), a.to_string());
            }
        }
        // The value kept for the last client is used only for that client.
        for client in ["203.0.113.255", "203.0.113.255", "203.0.113.25", "::1", "::1", "203.0.113.255"] {
            let mut h = HeaderMap::new();
            add_forwarded(&mut h, client.parse().unwrap(), false);
            assert_eq!(h[&X_FORWARDED_FOR], client);
        }
    }
}
