//! UDP probe: a DNS query for the root's NS records; any answer passes.
//!
//! UDP has no handshake, so a probe needs an exchange the service understands. DNS is what most
//! UDP services behind a load balancer speak (AWS Cloud Map, Consul DNS, CoreDNS), and a DNS server
//! answers this query whatever its zones (an answer, or REFUSED). A closed port is detected at once
//! (the ICMP port unreachable turns into a refused `recv`), silence after the timeout. Other UDP
//! protocols probe a TCP or HTTP port of the backend instead (`health-check`, `health-port`).

use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::{HealthCheck, ProbeError};
use crate::util::BoxFuture;

/// The query: id 0xED6E, recursion desired, one question: `.` NS IN.
const QUERY: [u8; 17] = [0xED, 0x6E, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];

/// Passes when the backend answers a DNS query over UDP.
#[derive(Debug, Default, Clone)]
pub struct UdpCheck;

impl HealthCheck for UdpCheck {
    fn check(&self, addr: SocketAddr) -> BoxFuture<'_, Result<String, ProbeError>> {
        Box::pin(async move {
            let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
            let sock = UdpSocket::bind(local).await.map_err(|e| ProbeError::Connect(e.to_string()))?;
            // Connected, so that only the backend's answer is read and ICMP errors surface.
            sock.connect(addr).await.map_err(|e| ProbeError::Connect(e.kind().to_string()))?;
            sock.send(&QUERY).await.map_err(|e| ProbeError::Connect(e.kind().to_string()))?;
            let mut buf = [0u8; 512];
            loop {
                let n = sock.recv(&mut buf).await.map_err(|e| ProbeError::Connect(e.kind().to_string()))?;
                // Only an answer to this query counts (same id, the response bit set).
                if n >= 4 && buf[..2] == QUERY[..2] && buf[2] & 0x80 != 0 {
                    return Ok(format!("dns answer, rcode {}", buf[3] & 0x0f));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_on_a_dns_answer_fails_on_a_closed_port() {
        // Test double: a UDP server that answers the query with the response bit set (REFUSED).
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &QUERY);
            // Something unrelated first, then the answer.
            server.send_to(b"noise", from).await.unwrap();
            let mut answer = buf[..n].to_vec();
            answer[2] |= 0x80;
            answer[3] = 5;
            server.send_to(&answer, from).await.unwrap();
        });
        assert_eq!(UdpCheck.check(addr).await, Ok("dns answer, rcode 5".into()));
        let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(matches!(UdpCheck.check(closed).await, Err(ProbeError::Connect(_))));
    }
}
