//! Test doubles and helpers shared by the integration tests: in-process HTTP and TCP backends
//! whose behaviour the test controls, an agent started from command-line words ([`Args`]), and
//! small clients.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edge_agent::app::{self, AgentHandle};
use edge_agent::cli::{self, Command};
use edge_agent::config::Config;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// `edge-agent run` arguments for a test agent, built up from a base.
#[derive(Debug, Clone, Default)]
pub struct Args(Vec<String>);

impl Args {
    /// An HTTP listener and the admin API on free loopback ports, in userspace mode.
    pub fn http() -> Self {
        Self::words(&["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--mode", "userspace"])
    }

    /// A TCP listener on a free loopback port and the admin API, in userspace mode.
    pub fn tcp() -> Self {
        Self::words(&["--listen-tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--mode", "userspace"])
    }

    /// Exactly these words.
    pub fn words(words: &[&str]) -> Self {
        Self(words.iter().map(|w| w.to_string()).collect())
    }

    /// Adds words.
    pub fn with(mut self, words: &[&str]) -> Self {
        self.0.extend(words.iter().map(|w| w.to_string()));
        self
    }

    /// Adds `--backend SPEC` for each spec.
    pub fn backends<S: AsRef<str>>(mut self, specs: &[S]) -> Self {
        for s in specs {
            self.0.extend(["--backend".to_string(), s.as_ref().to_string()]);
        }
        self
    }

    /// Starts the agent.
    pub async fn start(&self) -> AgentHandle {
        let words: Vec<&str> = self.0.iter().map(String::as_str).collect();
        agent(&words).await
    }

    /// Starts the agent and waits for its first probe round.
    pub async fn ready(&self) -> AgentHandle {
        let agent = self.start().await;
        agent.wait_ready().await;
        agent
    }
}

/// Starts an agent from `edge-agent run` arguments (without the program and subcommand names).
/// Set `EDGE_TEST_LOG=debug` (or any `--log-level` directives) to see the agents' logs.
pub async fn agent(args: &[&str]) -> AgentHandle {
    if let Ok(level) = std::env::var("EDGE_TEST_LOG") {
        edge_agent::logging::init(edge_agent::values::LogFormat::Text, &level);
    }
    let mut words = vec!["edge-agent", "run"];
    words.extend_from_slice(args);
    let cli = cli::parse_words(words, &edge_agent::config::defaults())
        .unwrap_or_else(|e| panic!("arguments do not parse: {e}"));
    let Command::Run(args) = cli.command else { panic!("not a run command") };
    let cfg = Config::load(*args).unwrap_or_else(|e| panic!("configuration is invalid: {e}"));
    app::start(cfg).await.expect("agent starts")
}

/// A new, empty folder under the system's temporary folder, unique to this process and call.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("edge-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How a [`TestBackend`] answers.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// `/healthz` answers 500.
    pub unhealthy: AtomicBool,
    /// `/healthz` fails one probe in three.
    pub flapping: AtomicBool,
    health_calls: AtomicU64,
    /// Requests other than `/healthz` served.
    pub served: AtomicU64,
    /// Headers of the last request other than `/healthz`.
    pub last_headers: Mutex<Option<HeaderMap>>,
    /// Connections accepted (probes included).
    pub connections: AtomicU64,
    /// Answer 503 to every n-th request other than `/healthz` (0: never; 1: all; 2: every other).
    pub fail_every: AtomicU64,
}

/// Test double: an in-process HTTP/1.1 backend. Paths: `/healthz` (per [`Behaviour`]), any other
/// answers 503 when [`Behaviour::fail_every`] says so, else: `/hang` (never answers), `/die` (drops the connection without answering), `/truncate` (sends part of
/// a body, then drops the connection), `/sleep/MS`, anything else: 200 with the backend's name.
#[derive(Debug)]
pub struct TestBackend {
    /// Name in bodies and the `x-backend` header.
    pub name: String,
    /// Address.
    pub addr: SocketAddr,
    /// Controls.
    pub behaviour: Arc<Behaviour>,
    tasks: JoinSet<()>,
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn respond(
    req: Request<Incoming>,
    name: String,
    b: Arc<Behaviour>,
) -> Result<Response<TestBody>, std::io::Error> {
    let path = req.uri().path().to_string();
    let full = |status: StatusCode, text: String| {
        let mut r = Response::new(Full::new(Bytes::from(text)).map_err(|n: Infallible| match n {}).boxed());
        *r.status_mut() = status;
        r.headers_mut().insert("x-backend", name.parse().unwrap());
        r
    };
    if path == "/healthz" {
        let n = b.health_calls.fetch_add(1, Ordering::SeqCst);
        let fail = b.unhealthy.load(Ordering::SeqCst) || (b.flapping.load(Ordering::SeqCst) && n % 3 == 2);
        return Ok(full(if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }, "health\n".into()));
    }
    let n = b.served.fetch_add(1, Ordering::SeqCst) + 1;
    *b.last_headers.lock().unwrap() = Some(req.headers().clone());
    let every = b.fail_every.load(Ordering::SeqCst);
    if every > 0 && n.is_multiple_of(every) {
        return Ok(full(StatusCode::SERVICE_UNAVAILABLE, "overloaded\n".into()));
    }
    match path.as_str() {
        "/hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/die" => Err(std::io::Error::other("backend died")),
        "/echo" => {
            let body = req.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
            Ok(full(StatusCode::OK, String::from_utf8_lossy(&body).into_owned()))
        }
        "/truncate" => {
            let delay = Box::pin(tokio::time::sleep(Duration::from_millis(50)));
            let mut r = Response::new(TruncatedBody { sent: false, delay }.boxed());
            r.headers_mut().insert("content-length", "1000".parse().unwrap());
            Ok(r)
        }
        p if p.starts_with("/sleep/") => {
            let ms: u64 = p["/sleep/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(full(StatusCode::OK, format!("{name}\n")))
        }
        _ => Ok(full(StatusCode::OK, format!("{name}\n"))),
    }
}

/// A body that sends one chunk, then fails 50 ms later: a backend dying in the middle of a
/// response, after its head and first bytes went out.
#[derive(Debug)]
struct TruncatedBody {
    sent: bool,
    delay: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for TruncatedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.sent {
            self.sent = true;
            return std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"partial ")))));
        }
        std::task::ready!(self.delay.as_mut().poll(cx));
        std::task::Poll::Ready(Some(Err(std::io::Error::other("backend died mid-body"))))
    }
}

impl TestBackend {
    /// Starts a backend on a free loopback port.
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut b = Self { name: name.into(), addr, behaviour: Arc::default(), tasks: JoinSet::new() };
        b.serve(listener);
        b
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, behaviour) = (self.name.clone(), self.behaviour.clone());
        self.tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((s, _)) = r else { continue };
                        behaviour.connections.fetch_add(1, Ordering::SeqCst);
                        let (name, behaviour) = (name.clone(), behaviour.clone());
                        conns.spawn(async move {
                            let svc = service_fn(move |req| respond(req, name.clone(), behaviour.clone()));
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc).await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
    }

    /// The backend's `--backend` spelling.
    pub fn spec(&self) -> String {
        self.addr.to_string()
    }

    /// Closes the listener and every connection.
    pub fn kill(&mut self) {
        self.tasks.abort_all();
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..100 {
            if let Ok(l) = TcpListener::bind(self.addr).await {
                self.serve(l);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot rebind {}", self.addr);
    }

    /// Requests served (not counting health checks).
    pub fn served(&self) -> u64 {
        self.behaviour.served.load(Ordering::SeqCst)
    }
}

/// Test double: a TCP echo backend that counts connections and can be killed.
#[derive(Debug)]
pub struct EchoBackend {
    /// Address.
    pub addr: SocketAddr,
    /// Connections that sent at least one byte (TCP health probes connect and close silently, so
    /// they are not counted).
    pub used: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoBackend {
    /// Starts an echo server that prefixes nothing and echoes bytes until EOF.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let used = Arc::new(AtomicU64::new(0));
        let count = used.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((mut s, _)) = r else { continue };
                        let count = count.clone();
                        conns.spawn(async move {
                            let mut first = [0u8; 1];
                            if !matches!(s.read(&mut first).await, Ok(1)) {
                                return;
                            }
                            count.fetch_add(1, Ordering::SeqCst);
                            if s.write_all(&first).await.is_err() {
                                return;
                            }
                            let (mut r, mut w) = s.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self { addr, used, task }
    }

    /// Stops accepting and closes connections.
    pub fn kill(&self) {
        self.task.abort();
    }
}

/// A plain HTTP/1.1 client with pooling.
pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `url`; returns status, `x-backend` and body.
pub async fn get(c: &Client<HttpConnector, Empty<Bytes>>, url: &str) -> (StatusCode, String, String) {
    get_with(c, url, &[]).await
}

/// GET with extra headers.
pub async fn get_with(
    c: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req.body(Empty::new()).unwrap()))
        .await
        .expect("response within 10 s")
        .expect("request succeeds");
    let status = resp.status();
    let backend = resp.headers().get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    (status, backend, body)
}

/// Sends raw bytes on a fresh connection and reads until the peer closes or `limit` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// One admin API call; the status and the body as text.
pub async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let (status, bytes) = exchange(addr, method, path, token, body.unwrap_or("")).await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// GET `path` on the admin API with a bearer token; the status and the body's bytes.
pub async fn admin_bytes(addr: SocketAddr, path: &str, token: &str) -> (u16, Vec<u8>) {
    exchange(addr, "GET", path, Some(token), "").await
}

async fn exchange(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", "admin");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default())
}

/// The JSON list of `GET /admin/backends`.
pub async fn backends(addr: SocketAddr) -> serde_json::Value {
    let (_, body) = admin(addr, "GET", "/admin/backends", None, None).await;
    serde_json::from_str(&body).unwrap()
}

/// The state of one backend as the admin API shows it.
pub async fn state_of(addr: SocketAddr, id: &str) -> String {
    backends(addr)
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .map(|b| b["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Test double: a raw TCP backend that answers each request head with scripted bytes, so tests
/// control framing exactly. After `close_after` answers on a connection it closes it.
#[derive(Debug)]
pub struct RawBackend {
    /// Address.
    pub addr: SocketAddr,
    /// Request heads received, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    /// Starts a backend answering every request with `answer`.
    pub async fn start(answer: &'static [u8], close_after: usize) -> Self {
        Self::start_on("127.0.0.1:0", answer, close_after).await
    }

    /// As [`RawBackend::start`], listening on `bind` (for example `[::1]:0`).
    pub async fn start_on(bind: &str, answer: &'static [u8], close_after: usize) -> Self {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let (reqs, conns) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                conns.fetch_add(1, Ordering::SeqCst);
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut served = 0;
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                            // Bodies are not used by these tests beyond content-length ones.
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if buf.len() < end + 4 + len {
                                break;
                            }
                            buf.drain(..end + 4 + len);
                            reqs.lock().unwrap().push(head);
                            if s.write_all(answer).await.is_err() {
                                return;
                            }
                            served += 1;
                            if served >= close_after {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, requests, connections, task }
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
