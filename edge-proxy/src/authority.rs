//! Which authority a request targets, checked once and made the forwarded `Host`.
//!
//! RFC 9112 section 3.2: an HTTP/1.1 request without `Host`, with more than one `Host` line, or
//! with a `Host` that is not a valid authority gets 400. Section 3.2.2: when the target is in
//! absolute form (`GET http://a.example/x`), its authority wins over `Host`. HTTP/2 carries it in
//! `:authority` (RFC 9113 section 8.3.1), which hyper exposes the same way. Routing, logging and
//! the backend all see the one `Host` this module settles on.

use std::cell::RefCell;
use std::str::FromStr;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Uri, Version};

/// Why a request's authority was refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// An HTTP/1.1 or HTTP/2 request named no authority at all.
    #[error("missing host header")]
    Missing,
    /// More than one `Host` line.
    #[error("more than one host header")]
    Duplicate,
    /// A `Host` or target authority that does not parse, or carries user information.
    #[error("invalid host")]
    Invalid,
}

fn valid(a: &str) -> bool {
    // `Authority` accepts `user@host`, which RFC 9110 section 4.2.4 forbids in http(s) URIs.
    Authority::from_str(a).is_ok() && !a.contains('@')
}

/// Longest `Host` kept as [`LAST_VALID`].
const REMEMBERED: usize = 255;

thread_local! {
    /// The last `Host` this thread found valid. A connection's requests, and most of a worker's,
    /// name the same one, and checking it again cost a parse and an allocation per request.
    static LAST_VALID: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether a non-empty `Host` value is a valid authority.
fn valid_host(v: &[u8]) -> bool {
    if LAST_VALID.with(|l| *l.borrow() == v) {
        return true;
    }
    let ok = std::str::from_utf8(v).is_ok_and(valid);
    if ok && v.len() <= REMEMBERED {
        LAST_VALID.with(|l| {
            let mut l = l.borrow_mut();
            l.clear();
            l.extend_from_slice(v);
        });
    }
    ok
}

/// Checks the request's authority and leaves exactly one `Host` in `h`: the target URI's
/// authority when it has one, else the client's own `Host`. HTTP/1.0 may go without.
pub fn settle_host(h: &mut HeaderMap, uri: &Uri, version: Version) -> Result<(), AuthorityError> {
    let mut hosts = h.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::Duplicate);
    }
    // An empty Host is what RFC 9112 asks for when the target has no authority; keep it.
    if let Some(v) = host
        && !v.is_empty()
        && !valid_host(v.as_bytes())
    {
        return Err(AuthorityError::Invalid);
    }
    match uri.authority() {
        // The URI parser took it as an authority already; only user information remains to refuse.
        Some(a) if a.as_str().contains('@') => Err(AuthorityError::Invalid),
        Some(a) => {
            let v = HeaderValue::from_str(a.as_str()).map_err(|_| AuthorityError::Invalid)?;
            h.insert(header::HOST, v);
            Ok(())
        }
        None if host.is_none() && version != Version::HTTP_10 && version != Version::HTTP_09 => {
            Err(AuthorityError::Missing)
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settle(hosts: &[&str], uri: &str, v: Version) -> Result<String, AuthorityError> {
        let mut h = HeaderMap::new();
        for x in hosts {
            h.append(header::HOST, HeaderValue::from_str(x).unwrap());
        }
        settle_host(&mut h, &uri.parse().unwrap(), v)?;
        assert!(h.get_all(header::HOST).iter().count() <= 1);
        Ok(h.get(header::HOST).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default())
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        assert_eq!(settle(&["a.example"], "/x", Version::HTTP_11), Ok("a.example".into()));
        assert_eq!(settle(&["a.example:8080"], "/x", Version::HTTP_11), Ok("a.example:8080".into()));
        assert_eq!(settle(&["[::1]:80"], "/x", Version::HTTP_11), Ok("[::1]:80".into()));
        assert_eq!(settle(&[], "/x", Version::HTTP_11), Err(AuthorityError::Missing));
        assert_eq!(settle(&["a", "b"], "/x", Version::HTTP_11), Err(AuthorityError::Duplicate));
        assert_eq!(settle(&["a", "a"], "/x", Version::HTTP_11), Err(AuthorityError::Duplicate));
        assert_eq!(settle(&["u@a.example"], "/x", Version::HTTP_11), Err(AuthorityError::Invalid));
        assert_eq!(settle(&["a b"], "/x", Version::HTTP_11), Err(AuthorityError::Invalid));
        assert_eq!(settle(&["a/b"], "/x", Version::HTTP_11), Err(AuthorityError::Invalid));
    }

    #[test]
    fn a_host_found_valid_before_passes_again_and_any_other_is_still_checked() {
        for _ in 0..2 {
            assert_eq!(settle(&["c.example"], "/x", Version::HTTP_11), Ok("c.example".into()));
        }
        for bad in ["c.example/", "u@c.example", "c.example ", "c.example?q"] {
            assert_eq!(settle(&[bad], "/x", Version::HTTP_11), Err(AuthorityError::Invalid), "{bad}");
        }
        assert_eq!(settle(&["c.exampl"], "/x", Version::HTTP_11), Ok("c.exampl".into()));
        assert_eq!(settle(&["c.example", "c.example"], "/x", Version::HTTP_11), Err(AuthorityError::Duplicate));
        let long = format!("{}.example", "a".repeat(REMEMBERED));
        for _ in 0..2 {
            assert_eq!(settle(&[&long], "/x", Version::HTTP_11), Ok(long.clone()));
        }
        assert_eq!(settle(&[&format!("{long}/")], "/x", Version::HTTP_11), Err(AuthorityError::Invalid));
    }

    #[test]
    fn http10_may_omit_host_but_not_repeat_it() {
        assert_eq!(settle(&[], "/x", Version::HTTP_10), Ok(String::new()));
        assert_eq!(settle(&["a", "b"], "/x", Version::HTTP_10), Err(AuthorityError::Duplicate));
    }

    #[test]
    fn absolute_form_authority_wins() {
        assert_eq!(settle(&["b.example"], "http://a.example/x", Version::HTTP_11), Ok("a.example".into()));
        assert_eq!(settle(&[], "http://a.example:81/x", Version::HTTP_11), Ok("a.example:81".into()));
        assert_eq!(settle(&["b"], "http://u@a.example/x", Version::HTTP_11), Err(AuthorityError::Invalid));
        // HTTP/2's :authority arrives the same way.
        assert_eq!(settle(&[], "https://a.example/x", Version::HTTP_2), Ok("a.example".into()));
        assert_eq!(settle(&[], "/x", Version::HTTP_2), Err(AuthorityError::Missing));
    }
}
