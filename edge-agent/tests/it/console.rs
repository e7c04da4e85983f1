//! The operator console at `/` on the admin listener: its headers and rules, and the page itself in
//! a real browser (Debian's headless Chromium, driven over WebDriver by chromedriver) against an
//! agent with three backends. Screenshots go to `target/test-output/console/`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::support::{Args, TestBackend, admin, backends, client, get};

const SCRIPT: &str = include_str!("../../src/admin/console_files/console.js");
const PAGE: &str = include_str!("../../src/admin/console_files/index.html");
const STYLE: &str = include_str!("../../src/admin/console_files/console.css");

/// What keeps a hostile backend name or reason from running: the page writes text, never markup,
/// and holds no inline script or style for the policy to allow.
#[test]
fn the_console_writes_text_not_markup_and_has_nothing_inline() {
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setAttribute(\"style\"",
    ] {
        assert!(!SCRIPT.contains(sink), "console.js uses {sink}");
    }
    for inline in ["<style", " style=", "onclick=", "onload=", "javascript:"] {
        assert!(!PAGE.contains(inline), "index.html has {inline}");
    }
    let scripts: Vec<&str> = PAGE
        .match_indices("<script")
        .map(|(i, _)| &PAGE[i..PAGE[i..].find('>').map_or(PAGE.len(), |e| i + e)])
        .collect();
    assert!(!scripts.is_empty() && scripts.iter().all(|s| s.contains("src=")), "only external scripts: {scripts:?}");
    for store in ["localStorage", "sessionStorage", "document.cookie"] {
        assert!(!SCRIPT.contains(store), "the token stays in memory, not in {store}");
    }
    assert!(SCRIPT.lines().count() < 1000 && STYLE.len() < 20_000, "the console stays small enough to read");
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy() {
    let b = TestBackend::start("a").await;
    let agent = Args::http().backends(&[b.spec()]).ready().await;
    let a = agent.admin_addr.unwrap();
    for (path, kind) in [("/", "text/html"), ("/console.js", "text/javascript"), ("/console.css", "text/css")] {
        let stream = tokio::net::TcpStream::connect(a).await.unwrap();
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(path).header("host", "admin").body(Full::new(Bytes::new())).unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}: {:?}", h["content-type"]);
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    assert_eq!(admin(a, "POST", "/", None, None).await.0, 405);
    agent.shutdown().await;
}

/// chromedriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session.
struct Browser {
    driver: Driver,
    session: String,
}

/// A WebDriver call: chromedriver accepts only a loopback Host header, so this sets its own.
async fn call(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("chromedriver answers");
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
    async fn start(width: u32, height: u32) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start chromedriver: {e}; Debian's chromium-driver: run `cargo xtask setup`")
            });
        let driver = Driver { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(driver.addr).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut options = json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={},{}", width.max(600), height)],
        });
        if width < 500 {
            options["mobileEmulation"] =
                json!({ "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1 } });
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options, "goog:loggingPrefs": { "browser": "ALL" }
        } } });
        let v = call(driver.addr, "POST", "/session", Some(caps)).await;
        let session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no WebDriver session: {v}")).to_string();
        Self { driver, session }
    }

    async fn s(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(self.driver.addr, method, &format!("/session/{}{path}", self.session), body).await
    }

    async fn open(&self, url: &str) {
        self.s("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` in the page and returns its value.
    async fn js(&self, script: &str) -> Value {
        self.s("POST", "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }

    /// The first element matching `css`, as a WebDriver element id.
    async fn find(&self, css: &str) -> Option<String> {
        let v = self.s("POST", "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).map(str::to_string)
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await.unwrap_or_else(|| panic!("no element {css}"));
        self.s("POST", &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await.unwrap_or_else(|| panic!("no element {css}"));
        self.s("POST", &format!("/element/{id}/value"), Some(json!({ "text": text }))).await;
    }

    /// The text of the first element matching `css` ("" when there is none).
    async fn text(&self, css: &str) -> String {
        let sel = serde_json::to_string(css).unwrap();
        self.js(&format!("const e = document.querySelector({sel}); return e ? e.textContent.trim() : '';"))
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls until `css`'s text satisfies `ok`, for up to `limit`; the time it took.
    async fn until_text(&self, css: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if ok(&self.text(css).await) {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    async fn screenshot(&self, name: &str) {
        let v = self.s("GET", "/screenshot", None).await;
        let png = decode_base64(v.as_str().expect("a screenshot"));
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    /// The browser's console messages at warning level or worse (CSP violations and script errors
    /// are SEVERE), less the network log of the one 401 the token prompt is for.
    async fn problems(&self) -> Vec<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser_drains_asks_for_the_token_and_shows_a_dead_backend() {
    let (a, mut b, c) = (TestBackend::start("a").await, TestBackend::start("b").await, TestBackend::start("c").await);
    let agent = Args::http()
        .backends(&[a.spec(), b.spec(), c.spec()])
        .with(&["--health-path", "/healthz", "--health-interval", "200ms", "--fall", "2", "--admin-token", "tok"])
        .ready()
        .await;
    let admin_addr = agent.admin_addr.unwrap();
    let http = client();
    for _ in 0..30 {
        get(&http, &format!("http://{}/", agent.http_addrs[0])).await;
    }
    let browser = Browser::start(1280, 800).await;
    browser.open(&format!("http://{admin_addr}/")).await;
    let row = |id: &str, field: &str| format!("tr[data-backend=\"{id}\"] [data-field=\"{field}\"]");
    for x in [&a, &b, &c] {
        let listed = browser.until_text(&row(&x.spec(), "state"), Duration::from_secs(10), |t| t == "healthy").await;
        assert!(listed.is_some(), "{} is not listed as healthy", x.spec());
    }
    browser.screenshot("1280-healthy.png").await;

    // Drain: the page asks for the token, sends it as a bearer header, and the state changes on
    // the page and in the API.
    browser.click(&format!("tr[data-backend=\"{}\"] button[data-action=\"drain\"]", a.spec())).await;
    let asked = browser.until_text("#token-form", Duration::from_secs(5), |_| true).await.is_some()
        && browser.js("const f = document.getElementById('token-form'); return !!f && f.offsetParent !== null;").await
            == true;
    assert!(asked, "no token form after a 401");
    browser.screenshot("1280-token.png").await;
    browser.type_into("#token-input", "tok").await;
    browser.click("#token-submit").await;
    let drained = browser.until_text(&row(&a.spec(), "state"), Duration::from_secs(5), |t| t == "draining").await;
    assert!(drained.is_some(), "the page does not show {} draining", a.spec());
    let api = backends(admin_addr).await;
    let state = api.as_array().unwrap().iter().find(|x| x["id"] == a.spec().as_str()).unwrap()["state"].clone();
    assert_eq!(state, "draining", "the API agrees");
    let leaked = browser.js("return document.cookie + location.href").await;
    assert!(!leaked.as_str().unwrap_or_default().contains("tok"), "the token is in a cookie or the URL: {leaked}");

    // A dead backend shows as unhealthy, with its reason, within two seconds.
    b.kill();
    let seen = browser.until_text(&row(&b.spec(), "state"), Duration::from_secs(10), |t| t == "unhealthy").await;
    let took = seen.unwrap_or_else(|| panic!("{} never showed unhealthy", b.spec()));
    assert!(took <= Duration::from_secs(2), "the page showed the dead backend after {took:?}");
    let reason = browser.text(&row(&b.spec(), "reason")).await;
    assert!(reason.starts_with("health:"), "the reason is shown: {reason}");
    browser.screenshot("1280-unhealthy.png").await;
    eprintln!("the page showed the dead backend unhealthy {took:?} after the kill");
    let problems = browser.problems().await;
    assert!(problems.is_empty(), "the browser's console: {problems:?}");

    // A phone's width: nothing wider than the screen.
    let phone = Browser::start(390, 844).await;
    phone.open(&format!("http://{admin_addr}/")).await;
    assert!(phone.until_text(&row(&c.spec(), "state"), Duration::from_secs(10), |t| t == "healthy").await.is_some());
    let fits = phone.js("return document.documentElement.scrollWidth <= window.innerWidth + 1").await;
    assert_eq!(fits, true, "the page scrolls sideways at 390 px");
    phone.screenshot("390-phone.png").await;
    assert!(phone.problems().await.is_empty());
    agent.shutdown().await;
}
