//! IPv6 in userspace mode: HTTP and TCP listeners on `[::1]`, a backend on `[::1]` probed and
//! reached over IPv6, and the client's IPv6 address in `X-Forwarded-For`.

use std::time::Duration;

use crate::support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";

#[tokio::test]
async fn listeners_backends_and_probes_work_over_ipv6() {
    let raw = RawBackend::start_on("[::1]:0", OK, 1).await;
    let spec = raw.addr.to_string();
    assert!(spec.starts_with("[::1]:"), "{spec}");
    let agent = Args::words(&["--listen", "[::1]:0", "--listen-tcp", "[::1]:0", "--admin", "[::1]:0"])
        .with(&["--mode", "userspace", "--health-check", "http", "--health-path", "/healthz"])
        .backends(&[spec.as_str()])
        .ready()
        .await;
    assert!(agent.http_addrs[0].is_ipv6() && agent.tcp_addrs[0].is_ipv6());
    let limit = Duration::from_secs(5);
    let http =
        raw_exchange(agent.http_addrs[0], b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", limit).await;
    assert!(http.starts_with("HTTP/1.1 200"), "{http:?}");
    let tcp = raw_exchange(agent.tcp_addrs[0], b"GET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", limit).await;
    assert!(tcp.starts_with("HTTP/1.1 200"), "{tcp:?}");
    let heads = raw.requests.lock().unwrap().clone();
    assert!(heads.iter().any(|h| h.starts_with("GET /healthz ")), "probed over IPv6: {heads:?}");
    let proxied = heads.iter().find(|h| h.starts_with("GET /x ")).expect("the HTTP request reached the backend");
    assert!(proxied.to_ascii_lowercase().contains("\r\nx-forwarded-for: ::1\r\n"), "{proxied}");
    assert!(heads.iter().any(|h| h.starts_with("GET /y ")), "the TCP listener reached the backend: {heads:?}");
    let list = backends(agent.admin_addr.unwrap()).await;
    assert_eq!(list[0]["id"], spec.as_str(), "{list}");
    assert_eq!(list[0]["state"], "healthy", "{list}");
    agent.shutdown().await;
}
