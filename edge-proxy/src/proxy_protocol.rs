//! The PROXY protocol (HAProxy's; version 1 text, version 2 binary), parsed and built with `ppp`:
//! read from clients on listeners that ask for it (`--accept-proxy-protocol`, for an AWS NLB with
//! proxy protocol v2 on its target group), and written to backends that ask for it
//! (`,proxy=v1|v2`), so that backends see the client's address.
//!
//! A header is read by peeking, as HAProxy does: the socket is peeked until a whole header is
//! there, then exactly its bytes are consumed, so what follows (a TLS hello, a request) stays in
//! the socket for whoever reads next. A peek that finds the header incomplete clears the socket's
//! readiness, so the next wait is for new bytes, not a spin.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::time::Duration;

use edge_core::backend::ProxyProtocol;
use ppp::v2::{Builder, Command, Protocol, Version};
use ppp::{HeaderResult, PartialResult};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

/// The largest header accepted: a version 1 header is at most 107 bytes; a version 2 one carries
/// TLVs (an AWS NLB adds the VPC endpoint's id), which 1 KiB holds many times over.
const MAX_HEADER: usize = 1024;

/// The longest version 1 header, its line end included.
const V1_MAX: usize = 107;

/// A client's PROXY header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Nothing complete within the header read timeout.
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// The client sent something else, or a broken header.
    #[error("not a valid PROXY protocol header: {0}")]
    Invalid(String),
    /// The connection closed or failed first.
    #[error("connection closed before its PROXY protocol header: {0}")]
    Io(io::Error),
}

/// What a client's header said.
enum Peeked {
    /// A complete header of this many bytes, with the client's address (`None`: `LOCAL` or
    /// `UNKNOWN`, a connection of the load balancer's own, such as its health check).
    Header(usize, Option<SocketAddr>),
    /// Not a header.
    Invalid(String),
}

/// Reads the PROXY header at the start of `stream` within `limit`, consuming exactly its bytes.
/// Returns the client's address it names, or `None` for a `LOCAL` or `UNKNOWN` header.
pub async fn read_header(stream: &mut TcpStream, limit: Duration) -> Result<Option<SocketAddr>, HeaderError> {
    let peeked = tokio::time::timeout(limit, async {
        let mut buf = [MaybeUninit::<u8>::uninit(); MAX_HEADER];
        loop {
            stream.readable().await.map_err(HeaderError::Io)?;
            let r = stream.try_io(Interest::READABLE, || {
                let n = socket2::SockRef::from(&*stream).peek(&mut buf)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                // SAFETY: `peek` initialised the first `n` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                match parse(bytes) {
                    // Wait for more bytes: WouldBlock clears the readiness.
                    None if n < MAX_HEADER => Err(io::ErrorKind::WouldBlock.into()),
                    None => Ok(Peeked::Invalid(format!("longer than {MAX_HEADER} bytes"))),
                    Some(p) => Ok(p),
                }
            });
            match r {
                Ok(p) => return Ok(p),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(HeaderError::Io(e)),
            }
        }
    })
    .await
    .map_err(|_| HeaderError::Timeout(limit))??;
    match peeked {
        Peeked::Header(len, client) => {
            let mut sink = [0u8; MAX_HEADER];
            stream.read_exact(&mut sink[..len]).await.map_err(HeaderError::Io)?;
            Ok(client)
        }
        Peeked::Invalid(why) => Err(HeaderError::Invalid(why)),
    }
}

/// Parses the start of `bytes`: `None` while the header is incomplete.
fn parse(bytes: &[u8]) -> Option<Peeked> {
    // A version 1 header is one line of at most 107 bytes; ppp reads a line cut short after a
    // space as malformed, so wait for its end first.
    let v1 = b"PROXY ";
    let n = bytes.len().min(v1.len());
    if bytes[..n] == v1[..n] && !bytes.windows(2).any(|w| w == b"\r\n") {
        return (bytes.len() >= V1_MAX).then(|| Peeked::Invalid(format!("no line end within {V1_MAX} bytes")));
    }
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return None;
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            let client = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v1::Addresses::Unknown => None,
            };
            Some(Peeked::Header(h.header.len(), client))
        }
        HeaderResult::V2(Ok(h)) => {
            let client = match (h.command, h.addresses) {
                (Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            Some(Peeked::Header(h.len(), client))
        }
        HeaderResult::V1(Err(e)) => Some(Peeked::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Some(Peeked::Invalid(e.to_string())),
    }
}

/// The header that opens a connection to a backend for a client at `client` that reached `local`.
/// Mixed families (an IPv4 client through an IPv6 listener cannot happen; the reverse neither) fall
/// back to the header without addresses.
pub fn header(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let same_family = client.is_ipv4() == local.is_ipv4();
    match version {
        ProxyProtocol::V1 if same_family => ppp::v1::Addresses::from((client, local)).to_string().into_bytes(),
        ProxyProtocol::V2 if same_family => {
            Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (client, local))
                .build()
                .unwrap_or_else(|_| version.local_header().to_vec())
        }
        _ => version.local_header().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_parse_back_to_the_client() {
        for v in [ProxyProtocol::V1, ProxyProtocol::V2] {
            for (client, local) in [("203.0.113.7:51000", "10.0.0.1:443"), ("[2001:db8::7]:51000", "[2001:db8::1]:443")]
            {
                let h = header(v, addr(client), addr(local));
                let mut with_data = h.clone();
                with_data.extend_from_slice(b"GET / HTTP/1.1\r\n");
                match parse(&with_data) {
                    Some(Peeked::Header(len, got)) => assert_eq!((len, got), (h.len(), Some(addr(client))), "{v:?}"),
                    _ => panic!("{v:?} {client}: not parsed"),
                }
                // Every prefix is incomplete, never an error.
                for cut in 0..h.len() {
                    assert!(parse(&h[..cut]).is_none(), "{v:?} cut at {cut}");
                }
            }
            assert!(matches!(parse(v.local_header()), Some(Peeked::Header(_, None))));
        }
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Peeked::Invalid(_))));
        assert!(matches!(parse(b"PROXY TCP4 1.2.3.400 1.2.3.4 1 2\r\n"), Some(Peeked::Invalid(_))));
    }

    #[tokio::test]
    async fn reading_consumes_exactly_the_header_even_when_it_arrives_in_pieces() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = l.local_addr().unwrap();
        let h = header(ProxyProtocol::V2, addr("198.51.100.9:4000"), to);
        let sender = tokio::spawn(async move {
            let mut c = TcpStream::connect(to).await.unwrap();
            c.set_nodelay(true).unwrap();
            for piece in h.chunks(5) {
                c.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.write_all(b"hello").await.unwrap();
            c
        });
        let (mut s, _) = l.accept().await.unwrap();
        let got = read_header(&mut s, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, Some(addr("198.51.100.9:4000")));
        let mut rest = [0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello", "the bytes after the header stay for the next reader");
        drop(sender.await.unwrap());

        // A client that sends something else, or nothing, is refused.
        let c = tokio::spawn(async move {
            let mut c = TcpStream::connect(to).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        let (mut s, _) = l.accept().await.unwrap();
        assert!(matches!(read_header(&mut s, Duration::from_secs(5)).await, Err(HeaderError::Invalid(_))));
        c.await.unwrap();
        let c = tokio::spawn(async move {
            let _c = TcpStream::connect(to).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        });
        let (mut s, _) = l.accept().await.unwrap();
        let r = read_header(&mut s, Duration::from_millis(100)).await;
        assert!(matches!(r, Err(HeaderError::Timeout(_))), "{r:?}");
        c.await.unwrap();
    }
}
