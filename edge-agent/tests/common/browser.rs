//! A small WebDriver client for the console's browser tests: chromedriver (Debian's
//! chromium-driver) on a loopback port, headless Chromium, and the handful of calls the tests make.
//! Shared by the unprivileged tests (agent on loopback) and the privileged ones (agent in a network
//! namespace, where chromedriver runs too). Screenshots go to `target/test-output/console/`.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How the test reaches chromedriver: a loopback connection made where the driver runs (the
/// test's own network namespace, or one the test created).
pub type Connect = Arc<dyn Fn(SocketAddr) -> io::Result<std::net::TcpStream> + Send + Sync>;

/// chromedriver on a free loopback port, in a process group of its own; on drop the whole group
/// is killed. Killing chromedriver alone left Chromium's processes running (reparented to init,
/// each using a quarter of a CPU), which slowed every later test and benchmark on the machine.
struct Driver {
    child: Child,
    addr: SocketAddr,
    connect: Connect,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)` at spawn).
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session; closed on drop, which makes chromedriver quit Chromium.
pub struct Browser {
    driver: Driver,
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Synchronous (drop cannot await) and bounded: the driver's group is killed right after,
        // so a quit that does not answer in time loses nothing.
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session,
            self.driver.addr.port()
        );
        if let Ok(mut s) = (self.driver.connect)(self.driver.addr) {
            use std::io::{Read as _, Write as _};
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            if s.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
            }
        }
    }
}

/// A WebDriver call: chromedriver accepts only a loopback Host header, so this sets its own.
async fn call(driver: &Driver, method: &str, path: &str, body: Option<Value>) -> Value {
    let addr = driver.addr;
    let stream = (driver.connect)(addr).and_then(|s| {
        s.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(s)
    });
    let stream = stream.expect("chromedriver answers");
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{}", addr.port()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(60), s.send_request(req))
        .await
        .expect("webdriver call in time")
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    v["value"].clone()
}

impl Browser {
    /// Headless Chromium at `width` x `height`; below 500 px wide, as a phone (Chromium's window
    /// has a minimum width, so a phone is emulated).
    pub async fn start(width: u32, height: u32) -> Self {
        let connect: Connect = Arc::new(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)));
        Self::start_with(width, height, |mut cmd| cmd.spawn(), connect).await
    }

    /// As [`Browser::start`], with chromedriver (and so Chromium) started by `spawn` and reached
    /// through `connect`: both run in a network namespace the test created.
    pub async fn start_with(
        width: u32,
        height: u32,
        spawn: impl FnOnce(Command) -> io::Result<Child>,
        connect: Connect,
    ) -> Self {
        // A port free here; in a namespace the test created only the test's own listeners run,
        // so it is free there too.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}")).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = spawn(cmd).unwrap_or_else(|e| {
            panic!("cannot start chromedriver: {e}; Debian's chromium-driver: run `cargo xtask setup`")
        });
        let driver = Driver { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), connect };
        let deadline = Instant::now() + Duration::from_secs(15);
        while (driver.connect)(driver.addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut options = json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-crash-reporter", "--disable-breakpad",
                     format!("--window-size={},{}", width.max(600), height)],
        });
        if width < 500 {
            options["mobileEmulation"] =
                json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1 } });
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options, "goog:loggingPrefs": { "browser": "ALL" }
        } } });
        let v = call(&driver, "POST", "/session", Some(caps)).await;
        let session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {v}")).to_string();
        Self { driver, session }
    }

    async fn s(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(&self.driver, method, &format!("/session/{}{path}", self.session), body).await
    }

    pub async fn open(&self, url: &str) {
        self.s("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.s("POST", "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    /// The first element matching `css`, as a WebDriver element id.
    pub async fn find(&self, css: &str) -> Option<String> {
        let v = self.s("POST", "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).map(str::to_string)
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await.unwrap_or_else(|| panic!("no element {css}"));
        self.s("POST", &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await.unwrap_or_else(|| panic!("no element {css}"));
        self.s("POST", &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    /// The text of the first element matching `css` ("" when there is none).
    pub async fn text(&self, css: &str) -> String {
        let sel = serde_json::to_string(css).unwrap();
        self.js(&format!("const e = document.querySelector({sel}); return e ? e.textContent.trim() : '';"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls until `css`'s text satisfies `ok`, for up to `limit`; the time it took.
    pub async fn until_text(&self, css: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if ok(&self.text(css).await) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    pub async fn screenshot(&self, name: &str) {
        let v = self.s("GET", "/screenshot", None).await;
        let png = decode_base64(v.as_str().expect("a screenshot"));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    /// The browser's console messages at warning level or worse (CSP violations and script errors
    /// are SEVERE), less the network log of the one 401 the token prompt is for.
    pub async fn problems(&self) -> Vec<String> {
        let v = self.s("POST", "/se/log", Some(json!({ "type": "browser" }))).await;
        v.as_array()
            .map(|l| {
                l.iter()
                    .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
                    .filter(|e| {
                        let m = e["message"].as_str().unwrap_or_default();
                        !(e["source"] == "network" && m.contains("/drain") && m.contains("401 (Unauthorized)"))
                    })
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Standard base64, as WebDriver sends screenshots.
fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| acc | (u32::from(val(*c)) << (18 - 6 * i)));
        out.extend(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
