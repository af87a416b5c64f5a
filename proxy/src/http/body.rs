//! Request bodies the full server forwards over HTTP/1: a body is read ahead — until it ends,
//! [`MAX_BUFFERED_BODY`] bytes are in hand, or [`BODY_READ_AHEAD`] passes — before anything goes
//! to the application, so malformed chunk framing is answered 400 with nothing forwarded. The
//! rest of a longer or slower body streams on after what was read; if its framing breaks then,
//! [`Broke`] says so, and the answer is still a 400 (the application saw an aborted request,
//! never a complete one).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};

use super::limits::{BODY_READ_AHEAD, MAX_BUFFERED_BODY};

/// A request body: the frames read ahead, then the rest of the downstream body.
pub(crate) struct ReadAhead {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<Incoming>,
    broke: Arc<AtomicBool>,
}

/// Whether the downstream body's framing broke while it streamed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Broke(Arc<AtomicBool>);

impl Broke {
    /// True once the client's body turned out malformed.
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl ReadAhead {
    /// Reads `body` until it ends, fails, [`MAX_BUFFERED_BODY`] bytes are in hand or
    /// [`BODY_READ_AHEAD`] passes. `Err` when its framing is malformed within that window.
    pub(crate) async fn read(mut body: Incoming) -> Result<(Self, Broke), hyper::Error> {
        let mut frames = VecDeque::new();
        let mut held = 0u64;
        let mut ended = body.is_end_stream();
        let deadline = tokio::time::Instant::now() + BODY_READ_AHEAD;
        while !ended && held <= MAX_BUFFERED_BODY {
            let next = http_body_util::BodyExt::frame(&mut body);
            let Ok(next) = tokio::time::timeout_at(deadline, next).await else {
                break;
            };
            match next {
                None => ended = true,
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    held += frame.data_ref().map_or(0, |d| d.len() as u64);
                    frames.push_back(frame);
                    ended = body.is_end_stream();
                }
            }
        }
        let broke = Broke::default();
        let body = Self {
            frames,
            rest: (!ended).then_some(body),
            broke: broke.0.clone(),
        };
        Ok((body, broke))
    }
}

impl hyper::body::Body for ReadAhead {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(f) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.broke.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
        let mut hint = SizeHint::new();
        hint.set_lower(held + rest.lower());
        if let Some(upper) = rest.upper() {
            hint.set_upper(held + upper);
        }
        hint
    }
}
