//! A request body that can be sent again, for retries to HTTP/2 backends: it streams the client's
//! body to the backend as it arrives (a gRPC call's body is a stream, and waiting for its end
//! could deadlock a bidirectional call) and keeps a copy of what went through, up to
//! `--retry-body-limit`. A retry gets a new body that replays the copy, then goes on with the
//! part of the client's body not read yet. Once more than the limit has gone through, the copy is
//! dropped and the request can no longer be sent again.
//!
//! Only the newest body reads: the one a failed attempt left behind (hyper may still hold it on a
//! dead stream) ends with an error on its next read, so the client's body is never read by two.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::body::BodyError;
use super::h2::H2Body;

/// What the bodies of one request share.
struct Shared {
    /// The client's body, until it ends.
    source: Option<H2Body>,
    /// What went through so far, while it fits the limit.
    kept: Vec<Bytes>,
    /// Its size.
    kept_len: usize,
    /// The client's trailers, once read.
    trailers: Option<HeaderMap>,
    /// More than the limit went through: no more replays.
    overflow: bool,
    /// The limit.
    limit: usize,
    /// The body that may read (the newest).
    generation: u64,
}

/// One attempt's view of the request body.
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    /// The next kept chunk this body sends.
    next: usize,
    /// Whether this body sent the trailers.
    trailers_sent: bool,
}

/// Makes the bodies of further attempts.
#[derive(Clone)]
pub struct Replayer(Arc<Mutex<Shared>>);

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding it leaves plain data behind: keep going with it.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn superseded() -> BodyError {
    Box::new(std::io::Error::other("the request body moved to another attempt"))
}

impl ReplayBody {
    /// The first attempt's body over `source`, keeping up to `limit` bytes for replays.
    pub fn new(source: H2Body, limit: usize) -> (Self, Replayer) {
        let shared = Arc::new(Mutex::new(Shared {
            source: Some(source),
            kept: Vec::new(),
            kept_len: 0,
            trailers: None,
            overflow: false,
            limit,
            generation: 0,
        }));
        let body = Self { shared: shared.clone(), generation: 0, next: 0, trailers_sent: false };
        (body, Replayer(shared))
    }
}

impl Replayer {
    /// A body for another attempt, replaying from the start; `None` once more than the limit went
    /// through. The bodies made before it stop reading.
    pub fn replay(&self) -> Option<ReplayBody> {
        let mut s = lock(&self.0);
        if s.overflow {
            return None;
        }
        s.generation += 1;
        Some(ReplayBody { shared: self.0.clone(), generation: s.generation, next: 0, trailers_sent: false })
    }

    /// Whether a replay is still possible.
    pub fn can_replay(&self) -> bool {
        !lock(&self.0).overflow
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let mut s = lock(&this.shared);
        if s.generation != this.generation {
            return Poll::Ready(Some(Err(superseded())));
        }
        if let Some(chunk) = s.kept.get(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        let Some(source) = s.source.as_mut() else {
            // The client's body ended in an earlier attempt: its trailers, if any, close this one.
            if this.trailers_sent {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(s.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        if !s.overflow && s.kept_len + data.len() <= s.limit {
                            s.kept_len += data.len();
                            s.kept.push(data.clone());
                            this.next = s.kept.len();
                        } else if !s.overflow {
                            s.overflow = true;
                            s.kept = Vec::new();
                        }
                        Frame::data(data)
                    }
                    Err(frame) => {
                        if let Some(t) = frame.trailers_ref() {
                            s.trailers = Some(t.clone());
                            s.source = None;
                            this.trailers_sent = true;
                        }
                        frame
                    }
                };
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.shared);
        if self.next < s.kept.len() {
            return false;
        }
        match &s.source {
            Some(source) => source.is_end_stream(),
            None => self.trailers_sent || s.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let s = lock(&self.shared);
        let kept: u64 = s.kept.iter().skip(self.next).map(|c| c.len() as u64).sum();
        match &s.source {
            Some(source) => {
                let rest = source.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + kept);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + kept);
                }
                hint
            }
            None => SizeHint::with_exact(kept),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;

    /// Test double: a client body of ready frames.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BodyError;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn source(chunks: &[&'static str], trailers: bool) -> H2Body {
        let mut frames: VecDeque<Frame<Bytes>> =
            chunks.iter().map(|c| Frame::data(Bytes::from_static(c.as_bytes()))).collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("x-checksum", "42".parse().unwrap());
            frames.push_back(Frame::trailers(t));
        }
        Frames(frames).boxed_unsync()
    }

    async fn read_all(body: ReplayBody) -> (Vec<u8>, Option<HeaderMap>) {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes().to_vec(), trailers)
    }

    #[tokio::test]
    async fn a_body_read_whole_is_sent_again_whole_with_its_trailers() {
        let (first, replayer) = ReplayBody::new(source(&["hello ", "world"], true), 1024);
        let (data, trailers) = read_all(first).await;
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-checksum"], "42");
        let again = replayer.replay().unwrap();
        assert_eq!(again.size_hint().exact(), Some(11));
        let (data, trailers) = read_all(again).await;
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-checksum"], "42");
    }

    #[tokio::test]
    async fn a_replay_takes_over_a_body_read_in_part_and_the_old_one_stops() {
        let (mut first, replayer) = ReplayBody::new(source(&["a", "b", "c"], false), 1024);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        let again = replayer.replay().unwrap();
        assert!(first.frame().await.unwrap().is_err(), "the superseded body reads no more");
        let (data, trailers) = read_all(again).await;
        assert_eq!(data, b"abc", "the copy first, then the rest of the client's body");
        assert!(trailers.is_none());
    }

    #[tokio::test]
    async fn past_the_limit_there_is_no_replay_but_the_body_goes_through() {
        let (first, replayer) = ReplayBody::new(source(&["12345", "67890", "x"], false), 8);
        assert!(replayer.can_replay());
        let (data, _) = read_all(first).await;
        assert_eq!(data, b"1234567890x");
        assert!(!replayer.can_replay());
        assert!(replayer.replay().is_none());
    }

    #[test]
    fn an_empty_body_ends_at_once_on_every_attempt() {
        let (first, replayer) = ReplayBody::new(source(&[], false), 8);
        assert!(first.is_end_stream());
        assert!(replayer.replay().unwrap().is_end_stream());
    }
}
