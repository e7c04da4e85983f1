//! Test double of Consul's HTTP API, kept out of the product: `GET /v1/health/service/NAME`
//! written from Consul's documented responses and blocking semantics. A query with `index=N`
//! is held until the service's index moves past N or the `wait` ends; answers carry
//! `X-Consul-Index`. It can misbehave on demand: 500s, hangs, malformed JSON, answers cut short,
//! and an index that is always 0 or that goes backwards. It records every request's path and
//! `X-Consul-Token`.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How the double misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// As Consul does.
    #[default]
    Normal,
    /// 500 with an error text.
    Error500,
    /// Accepts and never answers.
    Hang,
    /// 200 with a body that is not the documented JSON.
    Malformed,
    /// A Content-Length longer than the body, then the connection closes.
    Truncated,
    /// `X-Consul-Index: 0` on every answer, and no blocking.
    IndexZero,
}

#[derive(Debug, Default)]
struct State {
    index: u64,
    /// (address, port, weight, status) per instance.
    instances: Vec<(String, u16, u32, &'static str)>,
    mode: Mode,
    /// Requests seen: (path and query, token).
    seen: Vec<(String, Option<String>)>,
}

/// The double; dropping it stops it (its listener and every connection close).
#[derive(Debug)]
pub struct ConsulDouble {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    tasks: JoinSet<()>,
}

impl ConsulDouble {
    /// Starts a double on a free loopback port, index 1, no instances.
    pub async fn start() -> Self {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// Starts a double on `listener` (which may live in another network namespace); call it
    /// within a tokio runtime.
    pub fn start_on(listener: std::net::TcpListener) -> Self {
        Self::serve(listener, None)
    }

    /// Starts a double on a free loopback port that speaks HTTPS with the test certificate
    /// (`tests/fixtures/test-cert.pem`, for localhost and 127.0.0.1).
    pub async fn start_tls() -> Self {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let acceptor = edge_proxy::tls_acceptor(
            std::path::Path::new(&format!("{fixtures}/test-cert.pem")),
            std::path::Path::new(&format!("{fixtures}/test-key.pem")),
        )
        .unwrap();
        Self::serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), Some(acceptor))
    }

    /// Starts an HTTPS double, as [`Self::start_tls`], that also requires a client certificate
    /// signed by (or equal to) `client_ca`, as a Consul with `verify_incoming` does.
    pub async fn start_mtls(client_ca: &std::path::Path) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(client_ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(format!("{fixtures}/test-cert.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{fixtures}/test-key.pem")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), Some(acceptor))
    }

    fn serve(listener: std::net::TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        listener.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { index: 1, ..State::default() }));
        let (changed, _) = watch::channel(1);
        let mut tasks = JoinSet::new();
        let (st, rx) = (state.clone(), changed.subscribe());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((s, _)) = r else { continue };
                        let (st, rx, tls) = (st.clone(), rx.clone(), tls.clone());
                        conns.spawn(async move {
                            let svc = service_fn(move |req| answer(req, st.clone(), rx.clone()));
                            let http = hyper::server::conn::http1::Builder::new();
                            match tls {
                                None => {
                                    let _ = http.serve_connection(TokioIo::new(s), svc).await;
                                }
                                Some(acceptor) => {
                                    if let Ok(t) = acceptor.accept(s).await {
                                        let _ = http.serve_connection(TokioIo::new(t), svc).await;
                                    }
                                }
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Self { addr, state, changed, tasks }
    }

    /// Replaces the instance list: (address, port, weight, check status); bumps the index.
    pub fn set(&self, instances: &[(&str, u16, u32, &'static str)]) {
        let mut s = self.state.lock().unwrap();
        s.instances = instances.iter().map(|(a, p, w, st)| ((*a).to_string(), *p, *w, *st)).collect();
        s.index += 1;
        self.changed.send_replace(s.index);
    }

    /// Sets the index as a restarted Consul would (it may go backwards); wakes held queries.
    pub fn set_index(&self, index: u64) {
        let mut s = self.state.lock().unwrap();
        s.index = index;
        self.changed.send_replace(index);
    }

    /// Misbehaves (or stops misbehaving).
    pub fn mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
        // Wake held queries so that they answer in the new mode.
        let i = self.state.lock().unwrap().index;
        self.changed.send_replace(i);
    }

    /// Every request so far: (path and query, X-Consul-Token).
    pub fn seen(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Stops listening and closes every connection.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Consul's wait syntax: a number with a unit (`ms`, `s`, `m`), capped at 10 minutes.
fn wait_of(s: &str) -> Duration {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().unwrap_or(300);
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        _ => Duration::from_secs(n),
    };
    d.min(Duration::from_secs(600))
}

fn body_of(s: &State) -> String {
    let entries: Vec<String> = s
        .instances
        .iter()
        .enumerate()
        .map(|(i, (addr, port, weight, status))| {
            format!(
                r#"{{"Node":{{"ID":"n{i}","Node":"node{i}","Address":"{addr}","Datacenter":"dc1"}},
                "Service":{{"ID":"web-{i}","Service":"web","Tags":["v1"],"Address":"{addr}","Port":{port},
                "Weights":{{"Passing":{weight},"Warning":1}},"Namespace":"default"}},
                "Checks":[{{"CheckID":"service:web-{i}","Status":"{status}"}},{{"CheckID":"serfHealth","Status":"passing"}}]}}"#
            )
        })
        .collect();
    format!("[{}]", entries.join(","))
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    mut changed: watch::Receiver<u64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
    let token = req.headers().get("x-consul-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let query = req.uri().query().unwrap_or("").to_string();
    let mode = {
        let mut s = state.lock().unwrap();
        s.seen.push((path.clone(), token));
        s.mode
    };
    if !req.uri().path().starts_with("/v1/health/service/") {
        return Ok(Response::builder().status(404).body(Full::new(Bytes::from("not found"))).unwrap());
    }
    let asked: u64 = param(&query, "index").and_then(|i| i.parse().ok()).unwrap_or(0);
    let wait = param(&query, "wait").map_or(Duration::from_secs(300), wait_of);
    // Blocking: hold while the index is the one asked about, up to the wait.
    if asked > 0 && mode != Mode::IndexZero {
        let _ = tokio::time::timeout(wait, changed.wait_for(|i| *i != asked)).await;
    }
    let (mode, index, body) = {
        let s = state.lock().unwrap();
        (s.mode, s.index, body_of(&s))
    };
    let resp = |status: u16, index: u64, body: String| {
        Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", "application/json")
            .header("x-consul-index", index.to_string())
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    Ok(match mode {
        Mode::Normal => resp(200, index, body),
        Mode::IndexZero => resp(200, 0, body),
        Mode::Error500 => resp(500, index, "rpc error making call: No cluster leader".into()),
        Mode::Malformed => resp(200, index, "[{\"Node\": {\"Address\": 42".into()),
        Mode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Mode::Truncated => {
            let mut r = resp(200, index, body[..body.len() / 2].to_string());
            r.headers_mut().insert("content-length", (body.len()).to_string().parse().unwrap());
            r
        }
    })
}
