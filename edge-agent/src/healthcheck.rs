//! `edge-agent health`: asks a running agent's admin listener for `/readyz` and exits 0 when it
//! is ready, 1 otherwise. It is the container's `HEALTHCHECK` (and ECS's container health check):
//! the images have no shell or curl, and this needs neither. Plain blocking std I/O with
//! timeouts: one request, no runtime needed.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::cli::HealthArgs;
use crate::config::DEFAULT_ADMIN as ADMIN;

/// Largest answer read (a page of monitor events fits).
const MAX_ANSWER: u64 = 1024 * 1024;

/// Where to ask: the admin address, with an unspecified IP (`0.0.0.0`, `::`) replaced by the
/// loopback address of its family, since that is where a listener on all addresses is reached
/// from inside the container.
pub fn target(admin: Option<SocketAddr>) -> SocketAddr {
    let a = admin.unwrap_or(ADMIN);
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), a.port()),
        _ => a,
    }
}

/// One blocking request to the admin API at `addr` within `timeout`: the status and the body.
/// `edge-agent health` and `edge-agent monitor` use it; the token goes in the bearer header.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot reach the admin API at {addr}: {e}; is the agent running with --admin {addr}?"))?;
    let io = |e: std::io::Error| format!("the admin API at {addr} did not answer: {e}");
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|()| s.write_all(body.as_bytes())).map_err(io)?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    match head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) {
        Some(status) => Ok((status, body.trim().to_string())),
        None => Err(format!("the admin API at {addr} sent no HTTP answer")),
    }
}

/// Asks `addr` for `/readyz` within `timeout`: `Ok` with the body when ready, `Err` with why not.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    match request(addr, "GET", "/readyz", None, "", timeout)? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("not ready ({status}): {body}")),
    }
}

/// `edge-agent health`: prints the verdict; 0 when ready.
pub fn main(args: &HealthArgs) -> std::process::ExitCode {
    let Some(admin) = args.admin.map_or(Some(ADMIN), |a| a.0) else {
        eprintln!("error: the admin API is off (--admin off); `edge-agent health` asks its /readyz, so enable it");
        return std::process::ExitCode::FAILURE;
    };
    match check(target(Some(admin)), args.timeout.0) {
        Ok(body) => {
            println!("ready: {body}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_addresses_are_asked_on_loopback() {
        assert_eq!(target(Some("0.0.0.0:9901".parse().unwrap())), "127.0.0.1:9901".parse().unwrap());
        assert_eq!(target(Some("[::]:9000".parse().unwrap())), "[::1]:9000".parse().unwrap());
        assert_eq!(target(Some("10.0.0.5:9901".parse().unwrap())), "10.0.0.5:9901".parse().unwrap());
        assert_eq!(target(None), ADMIN);
    }

    #[test]
    fn a_closed_port_says_where_it_asked() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let e = check(port, Duration::from_millis(500)).unwrap_err();
        assert!(e.contains(&format!("cannot reach the admin API at {port}")), "{e}");
    }
}
