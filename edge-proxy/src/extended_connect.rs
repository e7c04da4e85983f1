//! WebSocket over HTTP/2 (RFC 8441): an HTTP/2 client opens a tunnel with an extended `CONNECT`
//! (`:protocol = websocket`), which edge advertises with `SETTINGS_ENABLE_CONNECT_PROTOCOL`. The
//! backends behind it speak HTTP/1.1, so the request is translated to the HTTP/1.1 `Upgrade` it
//! stands for (a `GET` with `Connection: upgrade`, `Upgrade` and, for WebSocket, a fresh
//! `Sec-WebSocket-Key`), and the backend's `101` back to the `200` that opens the HTTP/2 stream
//! as a tunnel, as Envoy and HAProxy translate it. The tunnel itself is the one HTTP/1.1 upgrades
//! get (`tunnel`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version, request::Parts};

/// `Sec-WebSocket-Key`, which RFC 8441 leaves out and an HTTP/1.1 WebSocket server requires.
const KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
/// `Sec-WebSocket-Accept`, the HTTP/1.1 server's proof for that key: meaningless to the client,
/// which sent no key.
const ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// The protocol an HTTP/2 extended `CONNECT` asks for, if `parts` is one.
pub(crate) fn wanted(parts: &Parts) -> Option<HeaderValue> {
    if parts.method != Method::CONNECT || parts.version != Version::HTTP_2 {
        return None;
    }
    let protocol = parts.extensions.get::<hyper::ext::Protocol>()?;
    HeaderValue::from_str(protocol.as_str()).ok().filter(|p| !p.is_empty())
}

/// Rewrites an extended `CONNECT` into the HTTP/1.1 `GET` that asks for the same switch (the
/// caller adds `Connection: upgrade` and `Upgrade`, as for any upgrade).
pub(crate) fn as_upgrade(parts: &mut Parts, protocol: &HeaderValue) {
    parts.method = Method::GET;
    parts.version = Version::HTTP_11;
    if protocol.as_bytes().eq_ignore_ascii_case(b"websocket") && !parts.headers.contains_key(KEY) {
        parts.headers.insert(KEY, websocket_key());
    }
}

/// Turns the backend's `101` head into the answer that opens the client's HTTP/2 stream: `200`,
/// with no upgrade headers (HTTP/2 forbids them) and no `Sec-WebSocket-Accept`.
pub(crate) fn answer_headers(headers: &mut HeaderMap) {
    headers.remove(ACCEPT);
    headers.remove(header::UPGRADE);
    headers.remove(header::CONNECTION);
    headers.remove(header::CONTENT_LENGTH);
}

/// A WebSocket key: 16 random bytes in base64 (RFC 6455 section 4.1). Its job is to show that the
/// server speaks WebSocket, not to be secret, so a fast generator will do.
fn websocket_key() -> HeaderValue {
    let nonce: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let text = data_encoding::BASE64.encode(&nonce);
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(protocol: Option<&'static str>, version: Version) -> Parts {
        let mut req = http::Request::connect("https://edge.test/chat").version(version).body(()).unwrap();
        if let Some(p) = protocol {
            req.extensions_mut().insert(hyper::ext::Protocol::from_static(p));
        }
        req.into_parts().0
    }

    #[test]
    fn only_an_http2_connect_with_a_protocol_is_extended() {
        assert_eq!(wanted(&connect(Some("websocket"), Version::HTTP_2)).unwrap(), "websocket");
        assert_eq!(wanted(&connect(None, Version::HTTP_2)), None, "a plain CONNECT");
        assert_eq!(wanted(&connect(Some("websocket"), Version::HTTP_11)), None);
        let mut get = connect(Some("websocket"), Version::HTTP_2);
        get.method = Method::GET;
        assert_eq!(wanted(&get), None);
    }

    #[test]
    fn a_websocket_connect_becomes_a_get_with_a_fresh_key() {
        let mut p = connect(Some("websocket"), Version::HTTP_2);
        as_upgrade(&mut p, &HeaderValue::from_static("websocket"));
        assert_eq!((p.method.clone(), p.version), (Method::GET, Version::HTTP_11));
        let key = p.headers.get(KEY).unwrap().to_str().unwrap().to_string();
        assert_eq!(data_encoding::BASE64.decode(key.as_bytes()).unwrap().len(), 16);
        let mut q = connect(Some("websocket"), Version::HTTP_2);
        as_upgrade(&mut q, &HeaderValue::from_static("websocket"));
        assert_ne!(q.headers.get(KEY).unwrap(), key.as_str(), "a key per request");
        // Another protocol gets no WebSocket key.
        let mut other = connect(Some("connect-udp"), Version::HTTP_2);
        as_upgrade(&mut other, &HeaderValue::from_static("connect-udp"));
        assert!(!other.headers.contains_key(KEY));
    }

    #[test]
    fn the_answer_loses_the_http11_switch_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [("upgrade", "websocket"), ("connection", "upgrade"), ("sec-websocket-accept", "x")] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h.insert(HeaderName::from_static("sec-websocket-protocol"), HeaderValue::from_static("chat"));
        answer_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("sec-websocket-protocol").unwrap(), "chat", "the negotiated subprotocol stays");
    }
}
