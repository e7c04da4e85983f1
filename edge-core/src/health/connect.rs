//! A probe's connection to a backend, reached as its `Reach` says: TCP, then a `LOCAL` PROXY
//! header for a backend that asks for the PROXY protocol, then TLS for one spoken to over TLS. The
//! HTTP and gRPC probes share it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ProbeError, Reach};

/// A probe's connection: plain TCP, or TLS over it.
pub(crate) enum ProbeConn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: its state is kilobytes).
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects to `addr` as `reach` says, with `tls` for a backend spoken to over TLS; `fail` makes
/// the check's own error from a reason. Returns the connection and the name to address the
/// backend by (its TLS name, else its address).
pub(crate) async fn connect(
    addr: SocketAddr,
    reach: Reach,
    tls: Option<&Arc<rustls::ClientConfig>>,
    fail: fn(String) -> ProbeError,
) -> Result<(ProbeConn, String), ProbeError> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| ProbeError::Connect(e.kind().to_string()))?;
    let _ = stream.set_nodelay(true);
    if let Some(p) = reach.proxy {
        stream.write_all(p.local_header()).await.map_err(|e| fail(e.to_string()))?;
    }
    let Some(name) = reach.tls else { return Ok((ProbeConn::Plain(stream), addr.to_string())) };
    let Some(cfg) = tls else {
        return Err(fail("no TLS settings for backends (give --backend-ca)".into()));
    };
    let server = ServerName::try_from(name.as_str().to_owned()).map_err(|e| fail(format!("tls name {name}: {e}")))?;
    let stream =
        TlsConnector::from(cfg.clone()).connect(server, stream).await.map_err(|e| fail(format!("tls: {e}")))?;
    Ok((ProbeConn::Tls(Box::new(stream)), name.as_str().to_owned()))
}

impl AsyncRead for ProbeConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ProbeConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, data),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
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
