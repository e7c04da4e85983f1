//! The HTTP proxy end to end: balancing, header rewriting, HTTP/2, TLS, limits and timeouts, and
//! every way a backend can fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edge_proxy::RetryReason;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

fn base<S: AsRef<str>>(backends: &[S]) -> Args {
    Args::http().with(&["--health-interval", "50ms"]).backends(backends)
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let bs = [TestBackend::start("a").await, TestBackend::start("b").await, TestBackend::start("c").await];
    let specs: Vec<String> = bs.iter().map(TestBackend::spec).collect();
    let agent = base(&specs).ready().await;
    let url = format!("http://{}/", agent.http_addrs[0]);
    let c = client();
    for _ in 0..30 {
        assert_eq!(get(&c, &url).await.0, StatusCode::OK);
    }
    let served: Vec<u64> = bs.iter().map(TestBackend::served).collect();
    assert_eq!(served, vec![10, 10, 10]);
    agent.shutdown().await;
}

#[tokio::test]
async fn weights_shape_round_robin() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let specs = [a.spec(), format!("{},weight=3", b.spec())];
    let agent = base(&specs).ready().await;
    let url = format!("http://{}/", agent.http_addrs[0]);
    let c = client();
    for _ in 0..40 {
        get(&c, &url).await;
    }
    assert_eq!((a.served(), b.served()), (10, 30));
    agent.shutdown().await;
}

#[tokio::test]
async fn forwards_headers_and_strips_hop_by_hop() {
    let b = TestBackend::start("a").await;
    let agent = base(&[b.spec()]).ready().await;
    let url = format!("http://{}/path?q=1", agent.http_addrs[0]);
    let (status, _, body) = get_with(
        &client(),
        &url,
        &[
            ("host", "app.example"),
            ("x-forwarded-for", "203.0.113.7"),
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("x-keep", "yes"),
        ],
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a\n"));
    let h = b.behaviour.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["host"], "app.example", "Host is preserved");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1", "client address appended");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-keep"], "yes");
    assert!(!h.contains_key("x-hop"), "headers named by Connection are hop-by-hop");
    assert!(h.get("connection").is_none_or(|v| v != "x-hop"));
    agent.shutdown().await;
}

#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    let b = TestBackend::start("a").await;
    let agent = base(&[b.spec()]).ready().await;
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let resp = c.get(format!("http://{}/", agent.http_addrs[0]).parse().unwrap()).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"a\n");
    let h = b.behaviour.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(h["host"], agent.http_addrs[0].to_string(), "h2 :authority becomes Host for the HTTP/1.1 backend");
    agent.shutdown().await;
}

/// HTTP/2 requests in flight when shutdown begins are answered before their connection closes.
#[tokio::test]
async fn http2_requests_in_flight_at_shutdown_are_answered() {
    let b = TestBackend::start("a").await;
    let agent = base(&[b.spec()]).with(&["--drain-timeout", "5s"]).ready().await;
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let url = format!("http://{}/sleep/700", agent.http_addrs[0]);
    let calls: Vec<_> = (0..3).map(|_| tokio::spawn(c.get(url.parse().unwrap()))).collect();
    // All three have reached the backend, which answers each 700 ms after it came.
    assert!(eventually(Duration::from_secs(5), || b.served() == 3).await);
    let stopping = tokio::spawn(agent.shutdown());
    for call in calls {
        let resp =
            tokio::time::timeout(Duration::from_secs(5), call).await.expect("answered in time").unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"a\n");
    }
    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("the agent stops").unwrap();
}

fn tls_connector(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let cert =
        CertificateDer::from_pem_file(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test-cert.pem")).unwrap();
    roots.add(cert).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn terminates_tls_for_http1_and_h2() {
    let b = TestBackend::start("a").await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let (cert, key) = (format!("{fixtures}/test-cert.pem"), format!("{fixtures}/test-key.pem"));
    let specs = [b.spec()];
    let agent = base(&specs).with(&["--tls-cert", &cert, "--tls-key", &key]).ready().await;
    for (alpn, version) in [(b"http/1.1".as_slice(), http::Version::HTTP_11), (b"h2".as_slice(), http::Version::HTTP_2)]
    {
        let tcp = tokio::net::TcpStream::connect(agent.http_addrs[0]).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tls_connector(&[alpn]).connect(name, tcp).await.unwrap();
        let req = Request::get("https://localhost/").header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
        let resp = if version == http::Version::HTTP_2 {
            let (mut s, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        } else {
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        };
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), StatusCode::OK);
        let h = b.behaviour.last_headers.lock().unwrap().clone().unwrap();
        assert_eq!(h["x-forwarded-proto"], "https");
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn malformed_oversized_and_slow_clients_get_400_431_408() {
    let b = TestBackend::start("a").await;
    let specs = [b.spec()];
    let agent = base(&specs)
        .with(&["--header-read-timeout", "300ms", "--max-headers", "20", "--max-header-bytes", "16384"])
        .ready()
        .await;
    let addr = agent.http_addrs[0];
    let limit = Duration::from_secs(3);

    let r = raw_exchange(addr, b"THIS IS NOT HTTP\r\n\r\n", limit).await;
    assert!(r.starts_with("HTTP/1.1 400"), "malformed: {r:?}");

    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(40_000));
    let r = raw_exchange(addr, big.as_bytes(), limit).await;
    assert!(r.starts_with("HTTP/1.1 431"), "oversized head: {r:?}");

    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..40 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = raw_exchange(addr, many.as_bytes(), limit).await;
    assert!(r.starts_with("HTTP/1.1 431"), "too many headers: {r:?}");

    let t0 = Instant::now();
    let r = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ", limit).await;
    assert!(r.starts_with("HTTP/1.1 408"), "slow head: {r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "closed after the header timeout, took {:?}", t0.elapsed());

    // A silent connection is closed without an answer.
    let r = raw_exchange(addr, b"", limit).await;
    assert_eq!(r, "");

    // And the agent still serves normal requests.
    assert_eq!(get(&client(), &format!("http://{addr}/")).await.0, StatusCode::OK);
    let m = agent.metrics.render();
    for reason in ["bad_request", "header_too_large", "header_timeout"] {
        assert!(m.contains(&format!("edge_client_errors_total{{reason=\"{reason}\"}}")), "{reason} counted:\n{m}");
    }
    agent.shutdown().await;
}

#[tokio::test]
async fn backend_failures_become_502_504_or_an_aborted_body() {
    let b = TestBackend::start("a").await;
    let specs = [b.spec()];
    let agent = base(&specs).with(&["--upstream-timeout", "300ms"]).ready().await;
    let c = client();
    let base_url = format!("http://{}", agent.http_addrs[0]);

    // The backend drops the connection without answering: one retry (GET is idempotent), then 502.
    assert_eq!(get(&c, &format!("{base_url}/die")).await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(agent.services[0].traffic.retries(RetryReason::EmptyResponse), 1);
    assert_eq!(b.served(), 2, "tried twice, not more");

    // The backend hangs: 504 after the upstream timeout.
    let t0 = Instant::now();
    assert_eq!(get(&c, &format!("{base_url}/hang")).await.0, StatusCode::GATEWAY_TIMEOUT);
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "took {took:?}");

    // The backend dies in the middle of the body: the client's body fails, nothing hangs.
    let resp = c.get(format!("{base_url}/truncate").parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await.expect("no hang");
    assert!(body.is_err(), "truncated body must surface as an error");

    // Still serving; errors are counted per backend and kind.
    assert_eq!(get(&c, &format!("{base_url}/")).await.0, StatusCode::OK);
    let m = agent.metrics.render();
    let id = b.spec();
    assert!(
        m.contains(&format!("edge_upstream_errors_total{{service=\"default\",backend=\"{id}\",kind=\"timeout\"}} 1")),
        "{m}"
    );
    assert!(m.contains(&format!("edge_requests_total{{service=\"default\",backend=\"{id}\",class=\"5xx\"}} 2")), "{m}");
    assert!(
        m.contains(&format!("edge_backend_active_connections{{service=\"default\",backend=\"{id}\"}} 0")),
        "no leaked in-flight count:\n{m}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn refused_connect_is_retried_on_another_backend() {
    let (mut a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let specs = [a.spec(), b.spec()];
    // Probes far apart: the agent has not noticed the death when the requests arrive.
    let agent = base(&specs).with(&["--health-interval", "1m"]).ready().await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let url = format!("http://{}/", agent.http_addrs[0]);
    let c = client();
    for _ in 0..10 {
        let (status, backend, _) = get(&c, &url).await;
        assert_eq!((status, backend.as_str()), (StatusCode::OK, "b"));
    }
    let retries = agent.services[0].traffic.retries(RetryReason::Connect);
    assert!(retries >= 4, "retries: {retries}");
    agent.shutdown().await;
}

#[tokio::test]
async fn no_usable_backend_means_panic_mode_or_503_at_threshold_0() {
    let b = TestBackend::start("a").await;
    b.behaviour.unhealthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let specs = [b.spec()];
    let args = base(&specs).with(&["--health-path", "/healthz"]);
    let reject = args.clone().with(&["--panic-threshold", "0"]).ready().await;
    let (status, _, body) = get(&client(), &format!("http://{}/", reject.http_addrs[0])).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "no healthy backend\n"));
    assert!(reject.metrics.render().contains("edge_no_backend_total{service=\"default\",reason=\"rejected\"} 1"));
    reject.shutdown().await;

    // The default threshold (50 %): nothing usable is below it, so traffic spreads over all.
    let all = args.ready().await;
    assert_eq!(get(&client(), &format!("http://{}/", all.http_addrs[0])).await.0, StatusCode::OK);
    let m = all.metrics.render();
    assert!(m.contains("edge_no_backend_total{service=\"default\",reason=\"panic\"} 1"), "{m}");
    assert!(m.contains("edge_service_panic{service=\"default\"} 1"), "{m}");
    all.shutdown().await;
}

#[tokio::test]
async fn request_metrics_by_backend_and_class() {
    let b = TestBackend::start("a").await;
    let agent = base(&[b.spec()]).ready().await;
    let c = client();
    for _ in 0..3 {
        get(&c, &format!("http://{}/", agent.http_addrs[0])).await;
    }
    let m = agent.metrics.render();
    let id = b.spec();
    assert!(m.contains(&format!("edge_requests_total{{service=\"default\",backend=\"{id}\",class=\"2xx\"}} 3")), "{m}");
    assert!(
        m.contains(&format!("edge_request_duration_seconds_count{{service=\"default\",backend=\"{id}\"}} 3")),
        "{m}"
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn random_garbage_never_breaks_the_proxy() {
    let b = TestBackend::start("a").await;
    let specs = [b.spec()];
    let agent = base(&specs).with(&["--header-read-timeout", "200ms"]).ready().await;
    let addr = agent.http_addrs[0];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let prefixes: [&[u8]; 4] =
        [b"", b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut bytes = prefixes[i % prefixes.len()].to_vec();
        let n = rng.usize(0..600);
        bytes.extend((0..n).map(|_| if rng.bool() { rng.u8(..) } else { b"\r\n:aZ /"[rng.usize(..7)] }));
        tasks.push(tokio::spawn(async move { raw_exchange(addr, &bytes, Duration::from_secs(3)).await }));
    }
    for t in tasks {
        let answer = t.await.expect("no panic in the exchange");
        // Whatever was answered is an HTTP/1.1 status line, an HTTP/2 frame, or nothing.
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 ") || !answer.is_ascii(), "{answer:?}");
    }
    assert_eq!(get(&client(), &format!("http://{addr}/")).await.0, StatusCode::OK, "still serving");
    agent.shutdown().await;
}
