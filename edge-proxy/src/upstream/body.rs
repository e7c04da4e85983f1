//! A backend's response body, streamed from the upstream connection; the connection goes back to
//! the pool when the body ends cleanly.
//!
//! A backend that stops sending mid-body (a stall, or fewer bytes than its `Content-Length` on a
//! connection it keeps open) would hold the client forever: the upstream timeout covers only the
//! head. So the body carries a progress timer: no byte for `--body-timeout` ends it with a
//! [`Stalled`] error (hyper then cuts the client's response off, never completing it) and closes
//! the backend connection; the proxy's body counts the timeout against the backend.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::codec::{BodyFraming, Chunk, ChunkedDecoder};
use super::{UpstreamConn, pool};
use crate::headers::sanitize_trailers;

/// Errors while streaming a backend's body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
enum Kind {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

/// How long a body may go without a byte.
#[derive(Debug)]
struct Progress {
    limit: Duration,
    /// When the last byte came, or when the body first had to wait for one; unset until then, so
    /// that a body already in the buffer costs no clock read.
    last: Option<Instant>,
    /// Armed only once a read had to wait, so a body that streams without pause sets no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

/// The error of a body whose backend sent nothing for `--body-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("backend sent no body byte within --body-timeout")]
pub struct Stalled;

impl Progress {
    /// Polls the stall timer; `Ready` when the body made no progress for `limit`.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = *self.last.get_or_insert_with(Instant::now) + self.limit;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx)
    }
}

/// The body of one upstream response.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<Box<UpstreamConn>>,
    kind: Kind,
    keep_alive: bool,
    progress: Progress,
}

impl UpstreamBody {
    /// Streams a body framed by `framing` from `conn` (whose buffer may already hold its start);
    /// a gap of `stall` between bytes ends it with [`Stalled`].
    pub fn new(conn: Box<UpstreamConn>, framing: BodyFraming, keep_alive: bool, stall: Duration) -> Self {
        let kind = match framing {
            BodyFraming::Length(n) => Kind::Length(n),
            BodyFraming::Chunked => Kind::Chunked(ChunkedDecoder::default()),
            BodyFraming::Close => Kind::Close,
        };
        let progress = Progress { limit: stall, last: None, sleep: None };
        let mut b = Self { conn: Some(conn), kind, keep_alive, progress };
        if matches!(b.kind, Kind::Length(0)) {
            // Nothing to read: give the connection back now, not when someone polls.
            b.finish();
        }
        b
    }

    fn finish(&mut self) {
        self.kind = Kind::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            // Bytes beyond the message would mean a confused backend: do not reuse that.
            pool::checkin(conn);
        }
    }
}

/// Frames up to this size are copied out of the read buffer instead of split off it: splitting
/// leaves the buffer shared, so the next read must allocate a fresh one, a 16 KiB malloc and free
/// per response that showed up as latency spikes; copying a few hundred bytes is cheaper.
const COPY_BELOW: usize = 8 * 1024;

/// Takes `n` bytes from the front of `buf` as a frame.
fn take(buf: &mut bytes::BytesMut, n: usize) -> Bytes {
    if n <= COPY_BELOW {
        let b = Bytes::copy_from_slice(&buf[..n]);
        bytes::Buf::advance(buf, n);
        b
    } else {
        buf.split_to(n).freeze()
    }
}

fn incomplete() -> BodyError {
    Box::new(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "backend closed the connection mid-body"))
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            match &mut this.kind {
                Kind::Done => return Poll::Ready(None),
                Kind::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Kind::Length(left) => {
                    if !conn.buf.is_empty() {
                        let n = (*left).min(conn.buf.len() as u64) as usize;
                        *left -= n as u64;
                        let data = take(&mut conn.buf, n);
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Kind::Chunked(dec) => match dec.decode(&mut conn.buf) {
                    Ok(Some(Chunk::Data(d))) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                    Ok(Some(Chunk::Trailers(mut t))) => {
                        sanitize_trailers(&mut t);
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Some(Chunk::End)) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        this.conn = None;
                        this.kind = Kind::Done;
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                },
                Kind::Close => {
                    if !conn.buf.is_empty() {
                        let n = conn.buf.len();
                        let data = take(&mut conn.buf, n);
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            // Need more bytes.
            let conn = this.conn.as_mut().expect("checked above");
            let read = match conn.poll_read_more(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    if this.progress.poll_expired(cx).is_ready() {
                        // Dropping the connection closes it; it is never reused.
                        this.conn = None;
                        this.kind = Kind::Done;
                        return Poll::Ready(Some(Err(Box::new(Stalled))));
                    }
                    return Poll::Pending;
                }
            };
            match read {
                Ok(0) => {
                    if matches!(this.kind, Kind::Close) {
                        this.keep_alive = false;
                        this.finish();
                        return Poll::Ready(None);
                    }
                    this.conn = None;
                    this.kind = Kind::Done;
                    return Poll::Ready(Some(Err(incomplete())));
                }
                Ok(_) => this.progress.last = Some(Instant::now()),
                Err(e) => {
                    this.conn = None;
                    this.kind = Kind::Done;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            Kind::Length(n) => SizeHint::with_exact(n),
            Kind::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
