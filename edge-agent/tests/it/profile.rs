//! `GET /debug/pprof/profile`: a CPU profile of a running agent (its own process, so the profiler's
//! timer signal reaches no other test), readable by pprof tools, or a flame graph; behind the
//! admin token; one at a time; bounded.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pprof::protos::Message as _;

use crate::support::{TestBackend, admin, client, get};

/// The agent as a child process; killed on drop.
struct Agent {
    child: Child,
    admin: std::net::SocketAddr,
    listen: std::net::SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn agent(backend: &str) -> Agent {
    let (admin_addr, listen) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["run", "--listen", &listen.to_string(), "--backend", backend, "--admin", &admin_addr.to_string()])
        .args(["--admin-token", "tok", "--health-interval", "200ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let a = Agent { child, admin: admin_addr, listen };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(a.admin).await.is_err()
        || admin(a.admin, "GET", "/readyz", None, None).await.0 != 200
    {
        assert!(Instant::now() < deadline, "the agent did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a
}

/// Sends requests through the agent for `d` (at most 20,000); the handle yields how many.
fn busy(listen: std::net::SocketAddr, d: Duration) -> tokio::task::JoinHandle<u32> {
    let url = format!("http://{listen}/");
    tokio::spawn(async move {
        let c = client();
        let end = Instant::now() + d;
        let mut n = 0u32;
        while Instant::now() < end && n < 20_000 {
            get(&c, &url).await;
            n += 1;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_of_a_busy_agent_reads_as_pprof_and_as_a_flame_graph() {
    let b = TestBackend::start("a").await;
    let a = agent(&b.spec()).await;
    let path = "/debug/pprof/profile?seconds=2";
    let (status, body) = admin(a.admin, "GET", path, None, None).await;
    assert_eq!(status, 401, "the token guards profiles: {body}");
    for (bad, says) in
        [("seconds=0", "from 1 to 60"), ("seconds=61", "from 1 to 60"), ("format=png", "pprof or flamegraph")]
    {
        let (status, body) = admin(a.admin, "GET", &format!("/debug/pprof/profile?{bad}"), Some("tok"), None).await;
        assert!(status == 400 && body.contains(says), "{bad}: {status} {body}");
    }

    // Load during the profile, so the proxy's code is on the CPU when the timer fires.
    let load = busy(a.listen, Duration::from_secs(2));
    let started = Instant::now();
    let first = tokio::spawn(async move { crate::support::admin_bytes(a.admin, path, "tok").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = admin(a.admin, "GET", path, Some("tok"), None).await;
    assert_eq!(status, 409, "one profile at a time: {body}");
    let (status, bytes) = first.await.unwrap();
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_secs(2), "it sampled for the time asked");
    assert!(load.await.unwrap() > 0);
    let profile = pprof::protos::Profile::decode(bytes.as_slice()).expect("pprof's protobuf");
    assert!(!profile.sample.is_empty(), "no samples from a busy agent");
    let names: Vec<&String> = profile.string_table.iter().filter(|s| s.contains("edge_proxy")).collect();
    assert!(!names.is_empty(), "the proxy's functions are in the profile");

    let load = busy(a.listen, Duration::from_secs(1));
    let (status, svg) =
        crate::support::admin_bytes(a.admin, "/debug/pprof/profile?seconds=1&format=flamegraph", "tok").await;
    assert!(load.await.unwrap() > 0);
    assert_eq!(status, 200);
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{}", &svg[..svg.len().min(300)]);
    drop(a);
    let _ = b;
}
