//! Read buffers that belong to a connection only while bytes move through it: a read borrows a
//! buffer from a small per-thread spare list just for the poll, gives it back at once when
//! nothing is ready, and the data path gives it back after writing what it read. An idle
//! connection — HTTP keep-alive or opaque TCP — holds no buffer at all, and a busy one does not
//! go through the allocator for every read.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes read at a time.
pub(crate) const CHUNK: usize = 16 * 1024;
/// Spare buffers kept per thread (so at most `MAX_SPARE × CHUNK`-ish bytes stay allocated).
pub(crate) const MAX_SPARE: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Makes sure `b` has an allocation of at least [`CHUNK`] bytes, from the spares if it has none.
pub(crate) fn take(b: &mut Vec<u8>) {
    if b.capacity() == 0 {
        *b = SPARE
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| Vec::with_capacity(CHUNK));
    }
}

/// Gives `b`'s allocation back to the spares (dropped if the spares are full or it grew large);
/// `b` is left empty with no allocation.
pub(crate) fn give(b: &mut Vec<u8>) {
    let mut b = std::mem::take(b);
    if b.capacity() < CHUNK || b.capacity() > 4 * CHUNK {
        return;
    }
    b.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < MAX_SPARE {
            spare.push(b);
        }
    });
}

/// Reads from `from`, appending to `buf`; `buf` holds an allocation only while the read is being
/// polled and after it has produced bytes. Returns the number of bytes read (0 at EOF).
pub(crate) async fn read<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    poll_fn(|cx| {
        take(buf);
        if buf.capacity() - buf.len() < CHUNK / 4 {
            buf.reserve(CHUNK);
        }
        let polled = pin!(from.read_buf(buf)).poll(cx);
        if buf.is_empty() && !matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            give(buf);
        }
        polled
    })
    .await
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn spares() -> usize {
        SPARE.with_borrow(Vec::len)
    }

    #[test]
    fn spares_are_reused_and_bounded() {
        let mut a = Vec::with_capacity(CHUNK);
        a.extend_from_slice(b"leftover");
        let ptr = a.as_ptr();
        give(&mut a);
        assert_eq!(a.capacity(), 0, "the owner keeps nothing");
        let mut b = Vec::new();
        take(&mut b);
        assert_eq!(
            (b.as_ptr(), b.len()),
            (ptr, 0),
            "the same allocation, emptied"
        );
        for _ in 0..MAX_SPARE * 2 {
            give(&mut Vec::with_capacity(CHUNK));
        }
        assert_eq!(spares(), MAX_SPARE);
        give(&mut Vec::with_capacity(8 * CHUNK));
        assert_eq!(spares(), MAX_SPARE);
    }

    #[tokio::test]
    async fn a_waiting_read_holds_no_buffer() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut buf = Vec::new();
        {
            let read = read(&mut a, &mut buf);
            let mut read = pin!(read);
            let polled = poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
        }
        assert_eq!(buf.capacity(), 0, "nothing held while waiting");
        b.write_all(b"hello").await.expect("write");
        assert_eq!(read(&mut a, &mut buf).await.expect("read"), 5);
        assert_eq!(buf, b"hello");
        drop(b);
        let mut rest = Vec::new();
        assert_eq!(read(&mut a, &mut rest).await.expect("eof"), 0);
        assert_eq!(rest.capacity(), 0);
    }
}
