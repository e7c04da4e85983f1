//! gRPC probe: the standard health protocol (`grpc.health.v1.Health/Check`, what Envoy's
//! `grpc_health_check` and Kubernetes' gRPC probes ask), over a fresh HTTP/2 connection (TLS with
//! ALPN `h2` for a backend spoken to over TLS, after a `LOCAL` PROXY header for one that asks for
//! it). It passes when the call ends with `grpc-status: 0` and the answer says `SERVING`.
//!
//! The two messages are one optional string and one enum, so they are encoded and decoded here in
//! a few lines of protobuf wire format rather than with a code generator and its runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use super::connect::{ProbeConn, connect};
use super::{HealthCheck, ProbeError, Reach};
use crate::util::BoxFuture;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The health service's method.
const PATH: &str = "/grpc.health.v1.Health/Check";

/// The largest answer read (a `HealthCheckResponse` is a few bytes).
const MAX_ANSWER: usize = 16 * 1024;

/// Passes when `grpc.health.v1.Health/Check` for `service` answers `SERVING`.
#[derive(Debug, Clone)]
pub struct GrpcCheck {
    service: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl GrpcCheck {
    /// A probe of `service` (empty: the server as a whole, by the protocol's convention).
    pub fn new(service: impl Into<String>) -> Self {
        Self { service: service.into(), tls: None }
    }

    /// The TLS settings for backends spoken to over TLS (`,tls`); the probe offers only `h2`.
    #[must_use]
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        self.tls = tls.map(|c| {
            let mut c = (*c).clone();
            c.alpn_protocols = vec![b"h2".to_vec()];
            Arc::new(c)
        });
        self
    }

    /// Makes the call on `io` and judges the answer.
    async fn call(&self, io: ProbeConn, authority: &str) -> Result<String, ProbeError> {
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| ProbeError::Grpc(format!("http/2 handshake: {e}")))?;
        let request = http::Request::post(format!("http://{authority}{PATH}"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, concat!("edge-health/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(request_frame(&self.service)))
            .map_err(|e| ProbeError::Grpc(e.to_string()))?;
        let exchange = async {
            let resp = sender.send_request(request).await.map_err(|e| ProbeError::Grpc(e.to_string()))?;
            let status = resp.status().as_u16();
            if status != 200 {
                return Err(ProbeError::Status(status));
            }
            let head_status = resp.headers().get("grpc-status").cloned();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| ProbeError::Grpc(format!("reading the answer: {e}")))?;
            let trailer_status = body.trailers().and_then(|t| t.get("grpc-status")).cloned();
            let code = trailer_status.or(head_status).ok_or_else(|| ProbeError::Grpc("no grpc-status".into()))?;
            judge(code.as_bytes(), body.to_bytes(), &self.service)
        };
        // The connection lives only as long as the probe: dropping it closes it.
        tokio::pin!(conn);
        tokio::select! {
            r = exchange => r,
            r = &mut conn => Err(ProbeError::Grpc(match r {
                Ok(()) => "the connection closed before the answer".into(),
                Err(e) => e.to_string(),
            })),
        }
    }
}

impl HealthCheck for GrpcCheck {
    fn check(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
        self.check_with(addr, Reach::default())
    }

    fn check_with(&self, addr: SocketAddr, reach: Reach) -> BoxFuture<'_, Result<String, ProbeError>> {
        Box::pin(async move {
            let (conn, authority) = connect(addr, reach, self.tls.as_ref(), ProbeError::Grpc).await?;
            self.call(conn, &authority).await
        })
    }
}

/// A length-prefixed gRPC message holding `HealthCheckRequest { service }`.
fn request_frame(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        // Field 1, wire type 2 (length-delimited).
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(&message);
    frame.freeze()
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn varint(buf: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let b = buf.get_u8();
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The names of `HealthCheckResponse.ServingStatus`.
fn serving_status(v: u64) -> &'static str {
    match v {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown status",
    }
}

/// Judges a finished call: its `grpc-status` and its body (one length-prefixed message).
fn judge(code: &[u8], mut body: Bytes, service: &str) -> Result<String, ProbeError> {
    match code {
        b"0" => {}
        b"12" => {
            return Err(ProbeError::Grpc(
                "status 12 (unimplemented): the backend does not serve grpc.health.v1.Health; \
                 serve it, or probe with --health-check tcp"
                    .into(),
            ));
        }
        b"5" => {
            return Err(ProbeError::Grpc(format!(
                "status 5 (not found): the backend does not know service '{service}'; check --health-grpc-service"
            )));
        }
        other => return Err(ProbeError::Grpc(format!("status {}", String::from_utf8_lossy(other)))),
    }
    if body.remaining() < 5 {
        return Err(ProbeError::Grpc("the answer holds no message".into()));
    }
    if body.get_u8() != 0 {
        return Err(ProbeError::Grpc("the answer is compressed, which the probe did not ask for".into()));
    }
    let len = body.get_u32() as usize;
    if body.remaining() < len {
        return Err(ProbeError::Grpc("the answer's message is cut short".into()));
    }
    let mut message = body.split_to(len);
    // Proto3 leaves a default (0, UNKNOWN) out of the message.
    let mut status = 0;
    while message.has_remaining() {
        let bad = || ProbeError::Grpc("malformed HealthCheckResponse".into());
        let key = varint(&mut message).ok_or_else(bad)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = varint(&mut message).ok_or_else(bad)?,
            (_, 0) => {
                varint(&mut message).ok_or_else(bad)?;
            }
            (_, 2) => {
                let n = usize::try_from(varint(&mut message).ok_or_else(bad)?).map_err(|_| bad())?;
                if message.remaining() < n {
                    return Err(bad());
                }
                message.advance(n);
            }
            (_, 1) if message.remaining() >= 8 => message.advance(8),
            (_, 5) if message.remaining() >= 4 => message.advance(4),
            _ => return Err(bad()),
        }
    }
    if status == 1 { Ok("grpc SERVING".into()) } else { Err(ProbeError::Grpc(serving_status(status).into())) }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use hyper::body::{Frame, Incoming};
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn the_request_names_the_service() {
        assert_eq!(&request_frame("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&request_frame("api")[..], &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'p', b'i']);
        let long = "s".repeat(200);
        assert_eq!(&request_frame(&long)[5..8], &[0x0a, 0xc8, 0x01], "a two-byte length");
    }

    fn answer(message: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u32(message.len() as u32);
        b.put_slice(message);
        b.freeze()
    }

    #[test]
    fn only_serving_with_status_0_passes() {
        assert_eq!(judge(b"0", answer(&[0x08, 0x01]), ""), Ok("grpc SERVING".into()));
        // An unknown field before the status is skipped.
        assert_eq!(judge(b"0", answer(&[0x12, 0x02, b'h', b'i', 0x08, 0x01]), ""), Ok("grpc SERVING".into()));
        let e = judge(b"0", answer(&[0x08, 0x02]), "").unwrap_err();
        assert_eq!(e, ProbeError::Grpc("NOT_SERVING".into()));
        assert_eq!(judge(b"0", answer(&[]), "").unwrap_err(), ProbeError::Grpc("UNKNOWN".into()));
        assert!(judge(b"12", Bytes::new(), "").unwrap_err().to_string().contains("--health-check tcp"));
        assert!(judge(b"5", Bytes::new(), "api").unwrap_err().to_string().contains("service 'api'"));
        assert!(judge(b"0", Bytes::from_static(&[0, 0, 0]), "").is_err(), "no message");
        assert!(judge(b"0", answer(&[0x08]), "").unwrap_err().to_string().contains("malformed"));
        assert!(judge(b"0", Bytes::from_static(&[0, 0, 0, 0, 9, 0x08]), "").unwrap_err().to_string().contains("cut"));
    }

    proptest::proptest! {
        /// An answer from the network is judged, never a panic.
        #[test]
        fn any_answer_is_judged_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = judge(b"0", Bytes::from(body.clone()), "");
            let _ = judge(b"0", answer(&body), "");
        }
    }

    /// Test double: a response body of ready frames.
    struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// Test double: an HTTP/2 gRPC server on hyper that answers the health method with `status`
    /// (a `ServingStatus` number) for the service `known`, 5 for another, in trailers.
    async fn server(status: u8, known: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<Incoming>| async move {
                        let path_ok = req.uri().path() == PATH;
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let asked = String::from_utf8_lossy(body.get(7..).unwrap_or_default()).into_owned();
                        let mut trailers = http::HeaderMap::new();
                        let mut frames = std::collections::VecDeque::new();
                        let code = if !path_ok {
                            "12"
                        } else if asked != known {
                            "5"
                        } else {
                            frames.push_back(Frame::data(answer(&[0x08, status])));
                            "0"
                        };
                        trailers.insert("grpc-status", code.parse().unwrap());
                        frames.push_back(Frame::trailers(trailers));
                        let resp = http::Response::builder().header("content-type", "application/grpc");
                        Ok::<_, Infallible>(resp.body(Frames(frames)).unwrap())
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn probes_a_grpc_server_for_the_service_asked() {
        let serving = server(1, "api").await;
        assert_eq!(GrpcCheck::new("api").check(serving).await, Ok("grpc SERVING".into()));
        let e = GrpcCheck::new("other").check(serving).await.unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        let down = server(2, "").await;
        assert_eq!(GrpcCheck::new("").check(down).await, Err(ProbeError::Grpc("NOT_SERVING".into())));
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(matches!(GrpcCheck::new("").check(closed).await, Err(ProbeError::Connect(_))));
    }
}
