//! TLS to backends (`,tls`): the proxy and the health probes speak TLS to such a backend, verify
//! its certificate against `--backend-ca` (or the system's roots) for the name the spec gives, send
//! that name as SNI when it is a DNS name, and present `--backend-cert` to a backend that asks for
//! a client certificate. The backends are test doubles speaking TLS with the test certificates in
//! `tests/fixtures/`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// What a TLS backend saw: per request, the SNI of its connection and the request line.
type Seen = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// Test double: an HTTP/1.1 backend over TLS with the test server certificate; with `client_ca`,
/// it requires a client certificate issued by (or equal to) that PEM file's certificate.
async fn tls_backend(client_ca: Option<&str>) -> (SocketAddr, Seen) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(fixture("test-cert.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("test-key.pem")).unwrap();
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let config = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    }
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(s)).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let line = head.lines().next().unwrap_or_default().to_string();
                        log.lock().unwrap().push((sni.clone(), line));
                        let close = head.to_ascii_lowercase().contains("connection: close");
                        if tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ntls\n").await.is_err() || close {
                            let _ = tls.shutdown().await;
                            return;
                        }
                    }
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn get_status(agent: &edge_agent::app::AgentHandle, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = raw_exchange(agent.http_addrs[0], req.as_bytes(), Duration::from_secs(5)).await;
    (r.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0), r)
}

#[tokio::test]
async fn tls_backends_are_verified_probed_and_given_their_name() {
    let (by_name, seen_name) = tls_backend(None).await;
    let (by_ip, seen_ip) = tls_backend(None).await;
    let agent = Args::http()
        .with(&["--health-check", "http", "--health-path", "/healthz", "--backend-ca", &fixture("test-cert.pem")])
        .backends(&[format!("localhost:{},tls", by_name.port()), format!("{by_ip},tls")])
        .ready()
        .await;
    let list = backends(agent.admin_addr.unwrap()).await;
    for b in list.as_array().unwrap() {
        assert_eq!(b["state"], "healthy", "probed over TLS: {list}");
    }
    for i in 0..6 {
        let (status, r) = get_status(&agent, &format!("/r{i}")).await;
        assert_eq!(status, 200, "{r}");
        assert!(r.ends_with("tls\n"), "{r}");
    }
    let name = seen_name.lock().unwrap().clone();
    assert!(name.iter().any(|(_, l)| l.starts_with("GET /healthz ")), "{name:?}");
    assert!(name.iter().any(|(_, l)| l.starts_with("GET /r")), "{name:?}");
    assert!(name.iter().all(|(sni, _)| sni.as_deref() == Some("localhost")), "SNI is the name as written: {name:?}");
    let ip = seen_ip.lock().unwrap().clone();
    assert!(ip.iter().any(|(_, l)| l.starts_with("GET /r")), "{ip:?}");
    assert!(ip.iter().all(|(sni, _)| sni.is_none()), "no SNI for an IP address (it is verified instead): {ip:?}");
    agent.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_backend_certificate_is_refused() {
    let (addr, seen) = tls_backend(None).await;
    // The system's roots do not know the test certificate.
    let agent = Args::http()
        .with(&["--health-check", "http", "--health-path", "/healthz", "--panic-threshold", "0"])
        .backends(&[format!("{addr},tls")])
        .start()
        .await;
    let admin = agent.admin_addr.unwrap();
    let mut reason = String::new();
    for _ in 0..50 {
        let list = backends(admin).await;
        reason = list[0]["reason"].as_str().unwrap_or_default().to_string();
        if list[0]["state"] == "unhealthy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reason.contains("tls") && reason.contains("certificate"), "the reason names the certificate: {reason}");
    let (status, r) = get_status(&agent, "/x").await;
    assert_eq!(status, 503, "{r}");
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent to an unverified backend");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_asks_for_a_client_certificate_gets_one() {
    let client_cert = fixture("test-client-cert.pem");
    let (addr, seen) = tls_backend(Some(&client_cert)).await;
    let ca = fixture("test-cert.pem");
    let key = fixture("test-client-key.pem");
    let common = ["--health-check", "tcp", "--backend-ca", ca.as_str()];
    let with_cert = Args::http()
        .with(&common)
        .with(&["--backend-cert", &client_cert, "--backend-key", &key])
        .backends(&[format!("{addr},tls")])
        .ready()
        .await;
    let (status, r) = get_status(&with_cert, "/mtls").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    with_cert.shutdown().await;

    let without = Args::http().with(&common).backends(&[format!("{addr},tls")]).ready().await;
    let (status, r) = get_status(&without, "/no-cert").await;
    assert_eq!(status, 502, "the backend refused the handshake: {r}");
    assert_eq!(seen.lock().unwrap().len(), 1, "the request without a certificate never reached it");
    without.shutdown().await;
}
