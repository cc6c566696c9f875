//! A floor on how fast a request body arrives: a body that trickles holds what it uses (an upload session's lease,
//! a connection) as long as one that stalls, which `[uploads] body_idle_secs` alone would not end.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// The error a body ends with when it came slower than its floor.
#[derive(Debug, thiserror::Error)]
#[error("the request body came at {received} bytes in {seconds} s, under the floor of {floor} bytes a second")]
pub(crate) struct TooSlow {
    pub(crate) received: u64,
    pub(crate) seconds: u64,
    pub(crate) floor: u64,
}

/// A request body that must average at least `floor` bytes a second over each `window` of time, measured from its
/// start; one that does not ends with `TooSlow`. Silence alone is the idle timeout's to end.
pub(crate) struct MinRate {
    inner: Body,
    floor: u64,
    window: Duration,
    since: Instant,
    received: u64,
}

impl MinRate {
    pub(crate) fn new(inner: Body, floor: u64, window: Duration) -> MinRate {
        MinRate { inner, floor, window, since: Instant::now(), received: 0 }
    }
}

impl HttpBody for MinRate {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                let elapsed = this.since.elapsed();
                if this.floor > 0 && elapsed >= this.window {
                    let seconds = elapsed.as_secs();
                    if this.received < this.floor.saturating_mul(seconds) {
                        let slow = TooSlow { received: this.received, seconds, floor: this.floor };
                        return Poll::Ready(Some(Err(Box::new(slow))));
                    }
                    (this.since, this.received) = (Instant::now(), 0);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Box::new(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
