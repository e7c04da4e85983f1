//! A connection that is either plain TCP or TLS over TCP: a client's (TLS terminated here) or a
//! backend's (TLS originated here).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Plain TCP, or TLS over it (`T`: rustls' server or client stream; boxed, since rustls' state is
/// kilobytes and most connections are plain).
#[derive(Debug)]
pub enum MaybeTls<T> {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<T>),
}

/// A client connection.
pub type ClientIo = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

impl<T: AsyncRead + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, data),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => poll_write_gathered(s, cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Gathered writes up to this size are copied into one buffer and sent with one `send`.
const GATHER_BELOW: usize = 4096;

thread_local! {
    /// The worker's buffer for gathering small vectored writes.
    static GATHER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(GATHER_BELOW));
}

/// Writes `bufs` to a plain socket. hyper hands a response over as a head and a body slice; sent
/// as they are, that is a `writev`, which goes through the kernel's file layer (`vfs_writev`,
/// the iovec copy) on every response, where the `send` a single slice gets goes straight to the
/// socket. Below [`GATHER_BELOW`] bytes, copying the slices together costs less than that path,
/// so small responses go out with one `send`; larger ones keep the `writev`, which copies nothing.
fn poll_write_gathered(s: &mut TcpStream, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut parts = bufs.iter().filter(|b| !b.is_empty());
    match (parts.next(), parts.next()) {
        (None, _) => return Pin::new(s).poll_write(cx, &[]),
        (Some(one), None) => return Pin::new(s).poll_write(cx, one),
        _ if total > GATHER_BELOW => return Pin::new(s).poll_write_vectored(cx, bufs),
        _ => {}
    }
    GATHER.with_borrow_mut(|gathered| {
        gathered.clear();
        for b in bufs {
            gathered.extend_from_slice(b);
        }
        Pin::new(s).poll_write(cx, gathered)
    })
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Small gathered writes (copied into one `send`) and large ones (a `writev`) arrive whole and
    /// in order.
    #[tokio::test]
    async fn gathered_writes_arrive_whole_and_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client: MaybeTls<tokio_rustls::client::TlsStream<TcpStream>> =
            MaybeTls::Plain(TcpStream::connect(listener.local_addr().unwrap()).await.unwrap());
        let (mut server, _) = listener.accept().await.unwrap();
        for (head, body) in [(300usize, 3usize), (200, 0), (0, 50), (100, 8000), (3000, 3000)] {
            let head_bytes: Vec<u8> = (0..head).map(|i| (i % 251) as u8).collect();
            let body_bytes: Vec<u8> = (0..body).map(|i| (i % 239) as u8).collect();
            let mut want = head_bytes.clone();
            want.extend_from_slice(&body_bytes);
            let mut sent = 0;
            while sent < want.len() {
                let (h, b) = if sent < head {
                    (&head_bytes[sent..], &body_bytes[..])
                } else {
                    (&[][..], &body_bytes[sent - head..])
                };
                sent += client.write_vectored(&[IoSlice::new(h), IoSlice::new(&[]), IoSlice::new(b)]).await.unwrap();
            }
            let mut got = vec![0u8; want.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, want, "head {head}, body {body}");
        }
    }
}
