//! In-process HTTP backends for the demo: each answers `GET /` with its name and `GET /healthz`
//! with 200, and can be killed (listener and every connection closed) and restarted on its port.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// One demo backend.
#[derive(Debug)]
pub struct DemoBackend {
    /// Display name.
    pub name: String,
    /// Its address (fixed across restarts).
    pub addr: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl DemoBackend {
    /// Starts a backend on a free loopback port.
    pub async fn start(name: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut b = Self { name: name.to_string(), addr, tasks: None };
        b.serve(listener);
        Ok(b)
    }

    fn serve(&mut self, listener: TcpListener) {
        let mut tasks = JoinSet::new();
        let body = Bytes::from(format!("hello from {}\n", self.name));
        let tag = self.name.clone();
        // One task owns the listener and every connection task; aborting it drops both, which
        // closes the port and every open connection at once.
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        if let Ok((stream, _)) = r {
                            conns.spawn(serve_conn(stream, body.clone(), tag.clone()));
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes the listener and every open connection, like a crashed process.
    pub fn kill(&mut self) {
        if let Some(mut t) = self.tasks.take() {
            t.abort_all();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        // The aborted tasks release the listener asynchronously; retry the bind briefly.
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.serve(l);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
    }
}

async fn serve_conn(stream: tokio::net::TcpStream, body: Bytes, tag: String) {
    let svc = service_fn(move |req: Request<Incoming>| {
        let text = if req.uri().path() == "/healthz" { Bytes::from_static(b"ok\n") } else { body.clone() };
        let tag = tag.clone();
        async move {
            let mut r = Response::new(Full::new(text));
            if let Ok(v) = tag.parse() {
                r.headers_mut().insert("x-backend", v);
            }
            Ok::<_, Infallible>(r)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
}
