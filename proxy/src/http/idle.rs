//! Idle detection for served connections: a stream wrapper stamps every read and write, and the
//! connection task asks hyper to shut down gracefully once nothing moved for the idle timeout
//! (HTTP/2 sends GOAWAY and lets streams in flight finish).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether bytes moved: every read or write bumps a counter (no clock read on the data path);
/// the idle check samples it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Activity {
    moves: Arc<AtomicU64>,
}

/// How many samples make up one idle timeout.
const SAMPLES: u32 = 8;

impl Activity {
    /// Starts tracking now.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn touch(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `timeout` (to within `timeout / 8`).
    pub(crate) async fn idle(&self, timeout: Duration) {
        let step = timeout / SAMPLES;
        let mut last = self.moves.load(Ordering::Relaxed);
        let mut quiet = 0;
        loop {
            tokio::time::sleep(step).await;
            let now = self.moves.load(Ordering::Relaxed);
            if now == last {
                quiet += 1;
                if quiet >= SAMPLES {
                    return;
                }
            } else {
                last = now;
                quiet = 0;
            }
        }
    }
}

/// A stream that stamps `activity` on every successful read or write.
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S, activity: Activity) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn movement_postpones_idleness_and_silence_ends_it() {
        let a = Activity::new();
        let t0 = tokio::time::Instant::now();
        let busy = a.clone();
        tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_secs(10)).await;
                busy.touch();
            }
        });
        a.idle(Duration::from_secs(40)).await;
        let waited = t0.elapsed();
        // Last movement at 60 s; idle 40 s later, give or take one sample (5 s).
        assert!(
            waited >= Duration::from_secs(95) && waited <= Duration::from_secs(110),
            "{waited:?}"
        );
    }
}
