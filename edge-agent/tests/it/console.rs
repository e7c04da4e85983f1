//! The operator console at `/` on the admin listener: its headers and rules, and the page itself in
//! a real browser (Debian's headless Chromium, driven over WebDriver by chromedriver) against an
//! agent with three backends. Screenshots go to `target/test-output/console/`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use crate::browser::Browser;
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
