//! The upstream response head parser on arbitrary bytes, checked against httparse on its own.
//!
//! edge's parser frames what httparse parses; where both see a complete head, they must agree on
//! its length, status and headers; and a head edge accepts must have a framing that follows the
//! RFC 9112 section 6.3 rules (no body for HEAD, 204 and 304).
#![no_main]

use bytes::BytesMut;
use edge_proxy::fuzz::{BodyFraming, parse_response_head};
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else { return };
    let method = if selector & 1 == 1 { Method::HEAD } else { Method::GET };
    let mut buf = BytesMut::from(data);
    let Ok(Some(head)) = parse_response_head(&mut buf, &method) else { return };
    let consumed = data.len() - buf.len();
    if method == Method::HEAD || head.status == 204 || head.status == 304 {
        assert_eq!(head.framing, BodyFraming::Length(0));
    }
    // Differential: httparse alone on the same bytes, when edge skipped no interim 1xx head.
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut r = httparse::Response::new(&mut slots);
    if let Ok(httparse::Status::Complete(n)) = r.parse(data)
        && r.code.is_some_and(|c| !(100..200).contains(&c))
    {
        assert_eq!(n, consumed, "head length");
        assert_eq!(r.code, Some(head.status.as_u16()), "status");
        assert_eq!(r.headers.len(), head.headers.len(), "header count");
        for h in r.headers.iter() {
            assert!(head.headers.get_all(h.name).iter().any(|v| v.as_bytes() == h.value), "header {}", h.name);
        }
    }
});
