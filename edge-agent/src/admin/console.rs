//! The operator console: one page, its script and its style sheet, embedded in the binary and
//! served on the admin listener at `/`. It reads only the documented JSON endpoints, as any
//! script could, and sends the admin token only on commands, as a bearer header.
//!
//! A strict Content-Security-Policy allows nothing but these same-origin files and same-origin
//! requests: no inline script or style, no other origin, no framing. With the page's own rule of
//! writing names and reasons as text, never as markup, a hostile backend name from Consul or a
//! file cannot run in an operator's browser.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

const INDEX: &str = include_str!("console_files/index.html");
const SCRIPT: &str = include_str!("console_files/console.js");
const STYLE: &str = include_str!("console_files/console.css");

/// The policy on every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console file at `path` (`""` is the page), with its headers.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (body, kind) = match path {
        "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary; a browser asks again rather than keep an old script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}
