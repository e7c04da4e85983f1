//! A connection to a backend: plain TCP, or TLS over it (rustls), behind one type so that the
//! codec, the pool and the tunnels need not care, with the reads the upstream client needs. The
//! plain path keeps its direct socket reads (readiness, then a read into the buffer's spare
//! room); TLS reads go through rustls.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::io::MaybeTls;

/// A backend connection.
pub type Stream = MaybeTls<TlsStream<TcpStream>>;

impl Stream {
    /// Reads what has arrived into `buf`'s spare room, waiting when nothing has; 0 at the end.
    pub fn poll_read_buf(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        match self {
            Self::Plain(s) => loop {
                ready!(s.poll_read_ready(cx))?;
                // A read that leaves room in the buffer has drained the socket, so the readiness
                // tokio cached is stale: clear it now (by answering `WouldBlock` to `try_io`), as
                // tokio's own `poll_read` and NGINX do, rather than learn it from a read that fails. Without this, every
                // response cost one extra `recvfrom` returning EAGAIN right after the request
                // went out. Data arriving after the read raises a fresh edge-triggered event, so
                // nothing is missed.
                let room = buf.capacity() - buf.len();
                let mut short = 0;
                let read = s.try_io(Interest::READABLE, || match s.try_read_buf(buf)? {
                    n if n > 0 && n < room => {
                        short = n;
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    n => Ok(n),
                });
                match read {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => return Poll::Ready(Ok(short)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Self::Tls(s) => {
                let mut rb = ReadBuf::uninit(buf.spare_capacity_mut());
                ready!(Pin::new(s.as_mut()).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                // SAFETY: `poll_read` initialised the first `n` bytes of the spare room.
                unsafe { buf.set_len(buf.len() + n) };
                Poll::Ready(Ok(n))
            }
        }
    }

    /// Cheap check that an idle connection is still open: a read that does not wait must find
    /// nothing to read (on TLS, nothing but what rustls handles itself, such as session tickets).
    pub fn is_alive(&mut self) -> bool {
        match self {
            Self::Plain(s) => {
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Self::Tls(s) => {
                let mut probe = [0u8; 1];
                let mut rb = ReadBuf::new(&mut probe);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                matches!(Pin::new(s.as_mut()).poll_read(&mut cx, &mut rb), Poll::Pending)
            }
        }
    }
}
