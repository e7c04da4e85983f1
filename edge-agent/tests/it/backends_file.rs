//! `--backends-file`: initial load, reloads that add and remove backends without dropping
//! connections, and bad files that change nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn write(path: &std::path::Path, text: &str) {
    // Write then rename, as deploy tools do, so the agent never reads a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn echo_once(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test]
async fn reload_moves_traffic_without_dropping_connections() {
    let dir = temp_dir("backends-file");
    let path = dir.join("backends.json");
    let (e1, e2) = (EchoBackend::start().await, EchoBackend::start().await);
    write(&path, &format!(r#"["{}"]"#, e1.addr));
    let p = path.to_str().unwrap().to_string();
    let agent = Args::tcp().with(&["--backends-file", &p, "--health-interval", "50ms"]).ready().await;
    let mut old = TcpStream::connect(agent.tcp_addrs[0]).await.unwrap();
    echo_once(&mut old, b"before").await;
    assert_eq!(e1.used.load(Ordering::SeqCst), 1);

    // Replace backend 1 with backend 2, in the wrapped form and with a weight.
    write(&path, &format!(r#"{{"backends": [{{"address": "{}", "weight": 2}}]}}"#, e2.addr));
    let id1 = e1.addr.to_string();
    assert!(
        eventually(Duration::from_secs(5), || agent.monitor.snapshot().get(&id1).is_some_and(|b| b.removed)).await,
        "backend 1 drains"
    );
    assert!(
        eventually(Duration::from_secs(5), || agent.monitor.snapshot().eligible().count() == 1
            && agent.monitor.snapshot().eligible().next().unwrap().backend.addr == e2.addr)
        .await
    );
    let mut fresh = TcpStream::connect(agent.tcp_addrs[0]).await.unwrap();
    echo_once(&mut fresh, b"new").await;
    assert_eq!(e2.used.load(Ordering::SeqCst), 1, "new connections go to backend 2");
    assert_eq!(agent.monitor.snapshot().get(&e2.addr.to_string()).unwrap().weight, 2);
    // The connection opened before the reload still works, and backend 1 stays (removed, draining
    // its traffic) for it.
    echo_once(&mut old, b"after").await;
    assert_eq!(state_of(agent.admin_addr.unwrap(), &id1).await, "removed");
    drop(old);
    assert!(
        eventually(Duration::from_secs(5), || agent.monitor.snapshot().get(&id1).is_none()).await,
        "drained backend leaves once idle"
    );
    drop(fresh);
    agent.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bad_reload_keeps_the_last_good_list() {
    let dir = temp_dir("backends-file");
    let path = dir.join("backends.toml");
    let e1 = EchoBackend::start().await;
    write(&path, &format!("backends = [\"{}\"]\n", e1.addr));
    let p = path.to_str().unwrap().to_string();
    let agent = Args::tcp().with(&["--backends-file", &p]).ready().await;
    write(&path, "backends = [\"not an address\"\n");
    assert!(
        eventually(Duration::from_secs(5), || agent
            .metrics
            .render()
            .contains("edge_discovery_errors_total{service=\"default\",source=\"file\"} 1"))
        .await
    );
    write(&path, "backends = [\"10.0.0.1:80,weight=999\"]\n");
    assert!(
        eventually(Duration::from_secs(5), || agent
            .metrics
            .render()
            .contains("edge_discovery_errors_total{service=\"default\",source=\"file\"} 2"))
        .await
    );
    let mut s = TcpStream::connect(agent.tcp_addrs[0]).await.unwrap();
    echo_once(&mut s, b"still works").await;
    assert_eq!(agent.monitor.snapshot().backends.len(), 1);
    drop(s);
    agent.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
